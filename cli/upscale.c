#include "upscale.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "output.h"
#include "progress.h"

char *cli_upscale_params(const char *parameters, const char *name, int scale)
{
    const char *sep = parameters && *parameters ? ", " : "";
    size_t n = (parameters ? strlen(parameters) : 0) + strlen(name) + 96;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%sPostprocess upscale by: %d, Postprocess upscaler: %s", parameters ? parameters : "", sep, scale, name);
    return s;
}

int cli_upscale_rgb(const fm_upscaler *u, const cli_options *o, const uint8_t *rgb, int w, int h, uint8_t **out,
                    fm_error *err)
{
    int s = fm_upscaler_scale(u);
    *out = NULL;
    if ((size_t)w * s > 65536 || (size_t)h * s > 65536)
        return fm_upscale(u, rgb, w, h, NULL, NULL, err) ? err->code : FM_EINPUT; /* the library words the refusal */
    if (!(*out = malloc((size_t)w * s * h * s * 3))) {
        snprintf(err->msg, sizeof err->msg, "upscale: out of memory for a %dx%d image", w * s, h * s);
        err->code = FM_EINPUT;
        return FM_EINPUT;
    }
    fm_upscale_opts opts = {.tile = o->upscale_tile, .overlap = o->upscale_overlap};
    int rc = fm_upscale(u, rgb, w, h, *out, &opts, err);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* IN-xS.png in the current directory. */
static void default_output(const char *in, int scale, char *buf, size_t n)
{
    char stem[PATH_MAX];
    out_file_stem(in, stem, sizeof stem);
    if (snprintf(buf, n, "%.*s-x%d.png", (int)(n > 32 ? n - 32 : 0), stem, scale) < 0) buf[0] = 0;
}

int cli_upscale_main(const cli_options *o)
{
    fm_error err = {0};
    int w = 0, h = 0, rc = 0;
    uint8_t *rgb = NULL, *big = NULL;
    char *in_params = NULL, *params = NULL, out_path[PATH_MAX], name[256], sha[65];
    fm_upscaler *u = fm_upscaler_load(o->model, &err);
    if (!u) goto fail;
    if (!(rgb = fm_image_read(o->init_image, &w, &h, &err))) goto fail;
    int s = fm_upscaler_scale(u);
    if (o->output) snprintf(out_path, sizeof out_path, "%s", o->output);
    else default_output(o->init_image, s, out_path, sizeof out_path);
    const char *what;
    out_kind kind = out_path_kind(out_path, &what);
    if (kind == OUT_OTHER) {
        snprintf(err.msg, sizeof err.msg, "%.400s: not a regular file (%s)", out_path, what);
        goto fail;
    }
    if (kind != OUT_ABSENT && !o->force) {
        snprintf(err.msg, sizeof err.msg, "%.400s: exists (use --force to overwrite)", out_path);
        goto fail;
    }
    /* A PNG keeps its generation parameters, the upscale appended. */
    char in_sha[65];
    const char *why;
    if (!out_png_complete(o->init_image, &in_params, in_sha, &why)) in_params = NULL;
    out_file_stem(o->model, name, sizeof name);
    if (!(params = cli_upscale_params(in_params, name, s))) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        goto fail;
    }
    double t0 = cli_now();
    if (cli_upscale_rgb(u, o, rgb, w, h, &big, &err)) goto fail;
    if (o->verbose)
        fprintf(stderr, "fmimage: upscale: %s, %dx%d -> %dx%d in %.2f s\n", fm_upscaler_describe(u), w, h, w * s,
                h * s, cli_now() - t0);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", out_path);
    char *slash = strrchr(dir, '/');
    if (slash) slash[slash == dir ? 1 : 0] = 0;
    else snprintf(dir, sizeof dir, ".");
    out_temp t;
    if (out_temp_write(&t, dir, big, w * s, h * s, o->metadata ? params : NULL, sha, &err) ||
        out_temp_commit(&t, out_path, o->force, &err))
        goto fail;
    if (!o->quiet) fprintf(stderr, "fmimage: wrote %s (%dx%d)\n", out_path, w * s, h * s);
    goto done;
fail:
    fprintf(stderr, "fmimage: %s\n", err.msg);
    rc = err.code == FM_EUSAGE ? 2 : err.code == FM_EINTERRUPT ? 130 : 1;
done:
    free(big);
    free(rgb);
    free(in_params);
    free(params);
    fm_upscaler_free(u);
    return rc;
}
