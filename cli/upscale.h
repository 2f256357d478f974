/* upscale: `fmimage upscale -m MODEL IMAGE -o OUT`, and the upscaling step
 * that --upscale-model adds after each generated image. */
#ifndef FM_CLI_UPSCALE_H
#define FM_CLI_UPSCALE_H

#include "fmimage.h"
#include "options.h"

/* parameters (may be NULL) with ", Postprocess upscale by: S, Postprocess
 * upscaler: NAME" appended to its last line (A1111's extras fields), or
 * those fields alone. malloc'd; NULL when out of memory. */
char *cli_upscale_params(const char *parameters, const char *name, int scale);
/* *out (malloc'd) = rgb upscaled with o's tile and overlap. */
int cli_upscale_rgb(const fm_upscaler *u, const cli_options *o, const uint8_t *rgb, int w, int h, uint8_t **out,
                    fm_error *err);
/* The `upscale` subcommand; returns the exit code. */
int cli_upscale_main(const cli_options *o);

#endif
