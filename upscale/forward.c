/* The upscaling networks' forward passes, one tile at a time, as BasicSR's
 * rrdbnet_arch.py and Real-ESRGAN's srvgg_arch.py write them. Every map
 * lives in the caller's workspace, carved in the same order by the sizing
 * walk (up_workspace_bytes) and the computing one. */
#include "upscale/upscale.h"

#include <string.h>

#define PAR_MIN 65536

/* The workspace as a bump allocator: sizing when base is NULL. */
typedef struct carve {
    char *base;
    size_t used, cap;
} carve;

static float *take(carve *c, size_t floats)
{
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    float *p = c->base && c->used + bytes <= c->cap ? (float *)(c->base + c->used) : NULL;
    c->used += bytes;
    return p;
}

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

/* --------------------------------------------------------------- pieces */

static void leaky_relu(float *x, size_t n, float slope)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        if (x[i] < 0) x[i] *= slope;
}

/* x [c][hw]: x = x if x >= 0 else a[c] x (torch.nn.PReLU, one slope per channel) */
static void prelu(float *x, const float *a, int c, size_t hw)
{
#pragma omp parallel for schedule(static) if ((size_t)c * hw > PAR_MIN)
    for (int ch = 0; ch < c; ch++) {
        float *p = x + (size_t)ch * hw, s = a[ch];
        for (size_t i = 0; i < hw; i++)
            if (p[i] < 0) p[i] *= s;
    }
}

/* y = a * s + b over n values (the dense blocks' 0.2-scaled residuals) */
static void scale_add(float *y, const float *a, float s, const float *b, size_t n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = a[i] * s + b[i];
}

/* basicsr pixel_unshuffle: y[c*u*u + i*u + j][y][x] = x[c][y*u + i][x*u + j] */
static void pixel_unshuffle(float *y, const float *x, int c, int h, int w, int u)
{
    int oh = h / u, ow = w / u;
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < u; i++)
            for (int j = 0; j < u; j++) {
                float *dst = y + ((size_t)(ch * u + i) * u + j) * oh * ow;
                for (int yy = 0; yy < oh; yy++)
                    for (int xx = 0; xx < ow; xx++)
                        dst[(size_t)yy * ow + xx] = x[((size_t)ch * h + yy * u + i) * w + xx * u + j];
            }
}

/* torch PixelShuffle(s): y[c][y*s + i][x*s + j] = x[c*s*s + i*s + j][y][x] */
static void pixel_shuffle(float *y, const float *x, int c, int h, int w, int s)
{
    int ow = w * s;
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < s; i++)
            for (int j = 0; j < s; j++) {
                const float *src = x + ((size_t)(ch * s + i) * s + j) * h * w;
                for (int yy = 0; yy < h; yy++)
                    for (int xx = 0; xx < w; xx++)
                        y[((size_t)ch * h * s + yy * s + i) * ow + xx * s + j] = src[(size_t)yy * w + xx];
            }
}

/* One walk of a forward pass: sizing (ks.base == NULL) or computing. */
typedef struct pass {
    carve ws;
    kn_scratch ks;
    int sizing, failed;
} pass;

static void conv(pass *p, float *y, const float *x, const kn_conv *c, int h, int w)
{
    if (p->sizing) {
        p->ks.bytes = zmax(p->ks.bytes, kn_conv2d_scratch(c, 1, h, w, p->ks.threads));
        return;
    }
    if (!p->failed && kn_conv2d_ws(&p->ks, y, x, c, 1, h, w)) p->failed = 1;
}

static int computing(const pass *p) { return !p->sizing && !p->failed; }

/* --------------------------------------------------------------- RRDBNet */

/* ResidualDenseBlock: x1..x4 = lrelu(conv_k(cat(x, x1, ..))) appended to
 * the running concatenation `cat` (x is its first nf channels, so each conv
 * reads a channel prefix of it); x = conv5(cat) * 0.2 + x, in place. */
static void dense_block(pass *p, const up_model *m, const kn_conv *convs, float *cat, float *x5, size_t P, int h,
                        int w)
{
    for (int k = 0; k < 4; k++) {
        float *xk = cat + (size_t)(m->nf + k * m->gc) * P;
        conv(p, xk, cat, &convs[k], h, w);
        if (computing(p)) leaky_relu(xk, (size_t)m->gc * P, 0.2f);
    }
    conv(p, x5, cat, &convs[4], h, w);
    if (computing(p)) scale_add(cat, x5, 0.2f, cat, (size_t)m->nf * P);
}

static void rrdbnet(pass *p, const up_model *m, float *out, const float *in, int h, int w)
{
    int u = m->unshuffle, H = h / u, W = w / u;
    size_t P = (size_t)H * W, nf = (size_t)m->nf;
    size_t hiP = P << (2 * m->n_up); /* pixels after the upsampling stages */
    float *folded = u > 1 ? take(&p->ws, (size_t)3 * u * u * P) : NULL;
    float *feat = take(&p->ws, nf * P);
    float *cat = take(&p->ws, (nf + 4 * (size_t)m->gc) * P); /* the trunk's running map is its first nf channels */
    float *rrdb_in = take(&p->ws, nf * P), *x5 = take(&p->ws, nf * P);
    float *a = take(&p->ws, nf * hiP), *b = take(&p->ws, nf * hiP);
    if (!p->sizing && !(a && b && feat && cat && rrdb_in && x5 && (u == 1 || folded))) p->failed = 1;

    if (computing(p) && u > 1) pixel_unshuffle(folded, in, 3, h, w, u);
    conv(p, feat, u > 1 ? folded : in, &m->first, H, W);
    if (computing(p)) memcpy(cat, feat, sizeof(float) * nf * P);
    for (int blk = 0; blk < m->n_blocks; blk++) { /* RRDB: x = rdb3(rdb2(rdb1(x))) * 0.2 + x */
        if (computing(p)) memcpy(rrdb_in, cat, sizeof(float) * nf * P);
        for (int r = 0; r < 3; r++) dense_block(p, m, &m->dense[((size_t)blk * 3 + r) * 5], cat, x5, P, H, W);
        if (computing(p)) scale_add(cat, cat, 0.2f, rrdb_in, nf * P);
    }
    conv(p, x5, cat, &m->body, H, W); /* feat = feat + conv_body(trunk) */
    if (computing(p)) kn_add(feat, feat, x5, nf * P);

    const float *cur = feat;
    for (int i = 0; i < m->n_up; i++, H *= 2, W *= 2) { /* lrelu(conv_up(nearest x2)) */
        if (computing(p)) kn_upsample_nearest(a, 2 * H, 2 * W, cur, m->nf, H, W);
        conv(p, b, a, &m->up[i], 2 * H, 2 * W);
        if (computing(p)) leaky_relu(b, nf * 4 * H * W, 0.2f);
        cur = b;
    }
    conv(p, a, cur, &m->hr, H, W); /* conv_last(lrelu(conv_hr(feat))) */
    if (computing(p)) leaky_relu(a, nf * H * W, 0.2f);
    conv(p, out, a, &m->last, H, W);
}

/* --------------------------------------------------------------- SRVGG */

/* body: conv, PReLU, (conv, PReLU) x n, conv to 3*s*s channels; then
 * PixelShuffle(s) plus the nearest-upsampled input (the net learns the
 * residual). */
static void srvgg(pass *p, const up_model *m, float *out, const float *in, int h, int w)
{
    size_t P = (size_t)h * w, nf = (size_t)m->nf;
    int s = m->scale;
    float *a = take(&p->ws, nf * P), *b = take(&p->ws, nf * P);
    float *last = take(&p->ws, (size_t)3 * s * s * P), *base = take(&p->ws, (size_t)3 * s * s * P);
    if (!p->sizing && !(a && b && last && base)) p->failed = 1;
    const float *cur = in;
    for (int i = 0; i < m->n_convs - 1; i++) {
        float *y = i % 2 ? b : a;
        conv(p, y, cur, &m->convs[i], h, w);
        if (computing(p)) prelu(y, m->prelu[i], m->nf, P);
        cur = y;
    }
    conv(p, last, cur, &m->convs[m->n_convs - 1], h, w);
    if (!computing(p)) return;
    pixel_shuffle(out, last, 3, h, w, s);
    kn_upsample_nearest(base, h * s, w * s, in, 3, h, w);
    kn_add(out, out, base, (size_t)3 * s * s * P);
}

/* --------------------------------------------------------------- entry */

static void walk(pass *p, const up_model *m, float *out, const float *in, int h, int w)
{
    if (m->arch == UP_RRDBNET) rrdbnet(p, m, out, in, h, w);
    else srvgg(p, m, out, in, h, w);
}

size_t up_workspace_bytes(const up_model *m, int h, int w)
{
    pass p = {.sizing = 1, .ks = {.threads = kn_scratch_threads()}};
    walk(&p, m, NULL, NULL, h, w);
    return p.ws.used + ((p.ks.bytes + 63) & ~(size_t)63) + 64;
}

int up_forward(const up_model *m, float *out, const float *in, int h, int w, void *ws, size_t ws_bytes,
               fm_error *err)
{
    int u = up_tile_multiple(m);
    if (h < 1 || w < 1 || h % u || w % u)
        return core_fail(err, FM_EINPUT, "upscaler: a %dx%d tile is not a positive multiple of %d", w, h, u);
    pass size = {.sizing = 1, .ks = {.threads = kn_scratch_threads()}};
    walk(&size, m, NULL, NULL, h, w);
    size_t ks_bytes = (size.ks.bytes + 63) & ~(size_t)63;
    char *base = (char *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    size_t usable = ws_bytes - (size_t)(base - (char *)ws);
    if (ws_bytes < 64 || usable < size.ws.used + ks_bytes)
        return core_fail(err, FM_EINPUT, "upscaler: workspace of %zu bytes, the tile needs %zu", ws_bytes,
                         up_workspace_bytes(m, h, w));
    pass p = {.ws = {base + ks_bytes, 0, usable - ks_bytes},
              .ks = {.base = base, .bytes = size.ks.bytes, .threads = size.ks.threads}};
    walk(&p, m, out, in, h, w);
    if (p.failed) return core_fail(err, FM_EINPUT, "upscaler: internal error: workspace plan too small");
    return 0;
}
