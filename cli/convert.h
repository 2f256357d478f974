/* fmimage convert: the subcommand's options and run (cli/convert.c). */
#ifndef FM_CLI_CONVERT_H
#define FM_CLI_CONVERT_H

/* argv[0] is "convert". Returns the exit code (0, 1 input/write, 2 usage). */
int cli_convert_main(int argc, char **argv);

#endif
