/* fm_upscaler: an upscaling model file opened and bound (upscale/), and
 * whole images upscaled in tiles. */
#include "fmimage.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/core.h"
#include "upscale/upscale.h"
#include "weights/source.h"

#define MAX_OUT_SIDE 65536
#define DEFAULT_TILE 192 /* A1111's ESRGAN_tile */
#define DEFAULT_OVERLAP 8 /* A1111's ESRGAN_tile_overlap */

struct fm_upscaler {
    wt_source *src; /* the mapped file; the model's weights are views into it */
    up_model *model;
    char what[160];
};

fm_upscaler *fm_upscaler_load(const char *path, fm_error *err)
{
    core_error_clear(err);
    if (!path) {
        core_fail(err, FM_EUSAGE, "--upscale-model: no path given");
        return NULL;
    }
    fm_upscaler *u = calloc(1, sizeof *u);
    if (!u) {
        core_fail(err, FM_EINPUT, "out of memory");
        return NULL;
    }
    if (!(u->src = wt_open(path, err)) || !(u->model = up_load(u->src, err))) {
        fm_upscaler_free(u);
        return NULL;
    }
    const up_model *m = u->model;
    if (m->arch == UP_RRDBNET)
        snprintf(u->what, sizeof u->what, "RRDBNet x%d (%d blocks, %d features, growth %d)", m->scale, m->n_blocks,
                 m->nf, m->gc);
    else
        snprintf(u->what, sizeof u->what, "SRVGGNetCompact x%d (%d convolutions, %d features)", m->scale, m->n_convs,
                 m->nf);
    return u;
}

void fm_upscaler_free(fm_upscaler *u)
{
    if (!u) return;
    up_free(u->model);
    wt_close(u->src);
    free(u);
}

int fm_upscaler_scale(const fm_upscaler *u) { return u ? u->model->scale : 0; }

const char *fm_upscaler_describe(const fm_upscaler *u) { return u ? u->what : ""; }

int fm_upscale(const fm_upscaler *u, const uint8_t *rgb, int width, int height, uint8_t *out,
               const fm_upscale_opts *opts, fm_error *err)
{
    core_error_clear(err);
    if (!u || !rgb || !out) return core_fail(err, FM_EUSAGE, "fm_upscale: no model, image or output");
    if (width < 1 || height < 1) return core_fail(err, FM_EINPUT, "upscale: empty image");
    int s = u->model->scale;
    if (width > MAX_OUT_SIDE / s || height > MAX_OUT_SIDE / s)
        return core_fail(err, FM_EINPUT, "upscale: %dx%d times %d is over the %d-pixel limit", width, height, s,
                         MAX_OUT_SIDE);
    fm_upscale_opts o = opts ? *opts : (fm_upscale_opts){0};
    int tile = o.tile == 0 ? DEFAULT_TILE : o.tile < 0 ? 0 : o.tile;
    int overlap = o.overlap == 0 ? DEFAULT_OVERLAP : o.overlap < 0 ? 0 : o.overlap;
    return up_upscale_rgb(u->model, out, rgb, width, height, tile, overlap, (up_progress_fn)o.progress,
                          o.progress_user, err);
}
