/* Whole images through an upscaling network in overlapping tiles.
 *
 * Tiles start every tile - overlap pixels, the last one flush with the
 * image's far edge (as A1111's tiled_upscale_2 places them). Their outputs
 * are blended: inside an overlap a tile's weight ramps linearly up from near
 * its edge (see ramp), so neighbouring tiles cross-fade instead of meeting
 * at a seam; sides on the image's border keep full weight. The image is padded by
 * repeating its edge to a multiple of the network's pixel unshuffle
 * (Real-ESRGAN x2plus needs even sizes) and the padding cropped away. */
#include "upscale/upscale.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct tiling {
    int u, tile_w, tile_h, overlap; /* input pixels, multiples of u */
    int pw, ph;                     /* the padded image */
} tiling;

static int round_down(int v, int u) { return v / u * u; }
static int round_up(int v, int u) { return (v + u - 1) / u * u; }

static tiling plan(const up_model *m, int w, int h, int tile, int overlap)
{
    tiling t = {.u = up_tile_multiple(m)};
    t.pw = round_up(w, t.u);
    t.ph = round_up(h, t.u);
    int side = tile <= 0 ? (t.pw > t.ph ? t.pw : t.ph) : round_down(tile, t.u);
    if (side < t.u) side = t.u;
    t.tile_w = side < t.pw ? side : t.pw;
    t.tile_h = side < t.ph ? side : t.ph;
    int min_side = t.tile_w < t.tile_h ? t.tile_w : t.tile_h;
    t.overlap = round_down(overlap > 0 ? overlap : 0, t.u);
    if (t.overlap >= min_side) t.overlap = round_down(min_side / 2, t.u);
    return t;
}

/* Start of tile i along a side of n pixels with tiles of len (i < count). */
static int tiles_along(int n, int len, int overlap)
{
    if (len >= n) return 1;
    int step = len - overlap, count = 1;
    for (int s = step; s + len < n; s += step) count++;
    return count + 1; /* the last one flush with the far edge */
}

static int tile_start(int i, int count, int n, int len, int overlap)
{
    return i == count - 1 ? n - len : i * (len - overlap);
}

/* The blending weight at output offset q of a tile spanning [0, len) output
 * pixels whose near/far sides are inside the image or on its border. On an
 * inside side the outer quarter of the overlap (`ov` output pixels), where
 * the tile's zero padding reaches in, gets almost no weight; the weight then
 * rises linearly over the middle half to 1. The neighbour covering those
 * pixels has them deep inside, at full weight. */
static float ramp(int q, int len, int ov, int near_inside, int far_inside)
{
    if (ov <= 0) return 1;
    float r = 1, lo = ov / 4.0f, span = ov / 2.0f;
    if (near_inside) r = fminf(r, (q + 0.5f - lo) / span);
    if (far_inside) r = fminf(r, (len - q - 0.5f - lo) / span);
    return fmaxf(r, 1e-4f);
}

/* The bytes up_upscale_rgb allocates for a call (for its out-of-memory message). */
static size_t upscale_bytes(const up_model *m, int w, int h, int tile, int overlap)
{
    tiling t = plan(m, w, h, tile, overlap);
    size_t s = (size_t)m->scale, tin = (size_t)3 * t.tile_w * t.tile_h;
    size_t out_px = (size_t)t.pw * s * t.ph * s;
    return sizeof(float) * (4 * out_px + tin + tin * s * s) + up_workspace_bytes(m, t.tile_h, t.tile_w);
}

int up_upscale_rgb(const up_model *m, uint8_t *out, const uint8_t *rgb, int w, int h, int tile, int overlap,
                   up_progress_fn progress, void *user, fm_error *err)
{
    if (w < 1 || h < 1) return core_fail(err, FM_EINPUT, "upscale: empty image");
    tiling t = plan(m, w, h, tile, overlap);
    int s = m->scale, ow = t.pw * s;
    size_t out_px = (size_t)t.pw * s * t.ph * s, tin = (size_t)3 * t.tile_w * t.tile_h;
    size_t ws_bytes = up_workspace_bytes(m, t.tile_h, t.tile_w);
    float *acc = calloc(4 * out_px, sizeof(float)), *weight = acc ? acc + 3 * out_px : NULL;
    float *in = malloc(sizeof(float) * tin), *res = malloc(sizeof(float) * tin * s * s);
    void *ws = malloc(ws_bytes);
    int rc = 0;
    if (!acc || !in || !res || !ws) {
        rc = core_fail(err, FM_EINPUT, "upscale: out of memory for a %dx%d result (%zu MB)", w * s, h * s,
                       upscale_bytes(m, w, h, tile, overlap) >> 20);
        goto done;
    }
    int ny = tiles_along(t.ph, t.tile_h, t.overlap), nx = tiles_along(t.pw, t.tile_w, t.overlap);
    for (int ty = 0; ty < ny && !rc; ty++)
        for (int tx = 0; tx < nx && !rc; tx++) {
            int y0 = tile_start(ty, ny, t.ph, t.tile_h, t.overlap), x0 = tile_start(tx, nx, t.pw, t.tile_w, t.overlap);
            int th = t.tile_h, tw = t.tile_w;
            for (int c = 0; c < 3; c++) /* [3][th][tw] in [0,1], the padding repeating the edge */
                for (int y = 0; y < th; y++) {
                    int sy = y0 + y < h ? y0 + y : h - 1;
                    for (int x = 0; x < tw; x++) {
                        int sx = x0 + x < w ? x0 + x : w - 1;
                        in[((size_t)c * th + y) * tw + x] = rgb[((size_t)sy * w + sx) * 3 + c] / 255.0f;
                    }
                }
            if ((rc = up_forward(m, res, in, th, tw, ws, ws_bytes, err))) break;
            int rl = t.overlap * s, oth = th * s, otw = tw * s;
            for (int y = 0; y < oth; y++) {
                float wy = ramp(y, oth, rl, y0 > 0, y0 + th < t.ph);
                for (int x = 0; x < otw; x++) {
                    float wgt = wy * ramp(x, otw, rl, x0 > 0, x0 + tw < t.pw);
                    size_t at = (size_t)(y0 * s + y) * ow + x0 * s + x;
                    for (int c = 0; c < 3; c++) acc[c * out_px + at] += wgt * res[((size_t)c * oth + y) * otw + x];
                    weight[at] += wgt;
                }
            }
            if (progress && progress(user, ty * nx + tx + 1, nx * ny))
                rc = core_fail(err, FM_EINTERRUPT, "upscale: cancelled");
        }
    for (int y = 0; !rc && y < h * s; y++)
        for (int x = 0; x < w * s; x++) {
            size_t at = (size_t)y * ow + x;
            for (int c = 0; c < 3; c++) {
                float v = acc[c * out_px + at] / weight[at];
                v = v > 0 ? (v < 1 ? v : 1) : 0; /* NaN goes to 0 */
                out[((size_t)y * w * s + x) * 3 + c] = (uint8_t)lrintf(v * 255.0f);
            }
        }
done:
    free(acc);
    free(in);
    free(res);
    free(ws);
    return rc;
}
