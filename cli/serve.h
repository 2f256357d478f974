/* fmimage serve: the subcommand's options and run (cli/serve.c). */
#ifndef FM_CLI_SERVE_H
#define FM_CLI_SERVE_H

/* argv[0] is "serve"; demo_model (may be NULL) serves when no model is
 * named. Returns the exit code (0 after SIGINT/SIGTERM, 1
 * cannot start, 2 usage). */
int cli_serve_main(int argc, char **argv, const char *demo_model);

#endif
