/* upscale: image super-resolution networks, read from their weight files.
 *
 *   RRDBNet          ESRGAN (old "model.N" names), Real-ESRGAN x4plus,
 *                    x2plus and anime_6B (BasicSR names: conv_first, body.N.rdbK,
 *                    conv_up1/2, conv_hr, conv_last)
 *   SRVGGNetCompact  realesr-general-x4v3, realesr-animevideov3 (body.N)
 *
 * The network and its sizes are read from the tensor names and shapes; the
 * scale comes from the network (upsampling stages, pixel shuffle, pixel
 * unshuffle), never from the file name.
 *
 * up_forward runs one tile, float32 [3][h][w] in [0,1] to [3][h*s][w*s],
 * in a workspace the caller sized with up_workspace_bytes for that tile
 * (nothing is allocated inside). up_upscale_rgb (upscale/tiles.c) upscales
 * a whole RGB8 image in overlapping tiles blended linearly across the
 * overlap, so an image of any size runs in one tile's memory. */
#ifndef UP_UPSCALE_H
#define UP_UPSCALE_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "kernels/kernels.h"
#include "weights/binder.h"
#include "weights/source.h"

typedef enum { UP_RRDBNET, UP_SRVGG } up_arch;

#define UP_MAX_UP 4 /* RRDBNet nearest x2 stages (x16 at most) */

typedef struct up_model {
    up_arch arch;
    int scale;   /* output pixels per input pixel, per side */
    int nf;      /* feature channels */
    int out_ch;
    /* RRDBNet */
    int unshuffle;  /* 1, or 2 / 4: the x2 / x1 variants fold the input into 4x / 16x the channels */
    int n_blocks;   /* RRDBs in the trunk */
    int gc;         /* growth channels of each dense layer */
    int n_up;       /* nearest x2 + conv + LeakyReLU stages */
    kn_conv first, body, up[UP_MAX_UP], hr, last;
    kn_conv *dense; /* [n_blocks][3 RDBs][5 convs] */
    /* SRVGGNetCompact */
    int n_convs;         /* every conv of body, the first and the last included */
    kn_conv *convs;      /* [n_convs] */
    const float **prelu; /* [n_convs - 1]: the slopes after every conv but the last */
    wt_weights *weights;
} up_model;

/* Binds the network the source holds (names optionally under "params_ema.",
 * "params." or "module."); NULL with err "PATH: why" when it is none of the
 * above or a tensor is missing or mis-shaped. */
up_model *up_load(const wt_source *src, fm_error *err);
void up_free(up_model *m);

/* The input side lengths a tile must be a multiple of (the pixel unshuffle). */
static inline int up_tile_multiple(const up_model *m) { return m->arch == UP_RRDBNET ? m->unshuffle : 1; }

size_t up_workspace_bytes(const up_model *m, int h, int w);
/* out [out_ch][h*scale][w*scale] = network(in [3][h][w]); ws from
 * up_workspace_bytes(m, h, w). */
int up_forward(const up_model *m, float *out, const float *in, int h, int w, void *ws, size_t ws_bytes,
               fm_error *err);

/* Tiled upscaling of rgb [h][w][3] into out [h*s][w*s][3]. tile: input
 * pixels per tile side (0 = the whole image), overlap: input pixels shared
 * by neighbouring tiles. progress (may be NULL) gets (done, total) tiles and
 * cancels with non-zero (FM_EINTERRUPT). */
typedef int (*up_progress_fn)(void *user, int done, int total);
int up_upscale_rgb(const up_model *m, uint8_t *out, const uint8_t *rgb, int w, int h, int tile, int overlap,
                   up_progress_fn progress, void *user, fm_error *err);

#endif
