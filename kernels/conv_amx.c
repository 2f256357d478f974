/* 3x3 stride-1 pad-1 convolution straight on AMX-BF16 tiles, without im2col
 * (the bf16 mode on CPUs with AMX; see kn_conv_amx_applies).
 *
 * The input is converted once per call to bf16 channel pairs, each pair a
 * zero-bordered plane of (h + 2) x (w + 2) dwords (channel 2c, 2c + 1).
 * Output pixels are indexed by q = oy * (w + 2) + ox over the padded width,
 * so tap (ky, kx) of the 16 pixels q..q+15 is the 16 consecutive dwords at
 * q + ky * (w + 2) + kx of every plane: one B tile (16 channel pairs x 16
 * pixels) is a strided load from the planes, with no gather. Two of every
 * w + 2 pixels are the padding columns; they are computed and dropped.
 *
 * K runs tap-major: A rows are [tap][channel pair] per output channel,
 * packed per task from the F16/F32 weights into a block of MB output
 * channels kept in L2. Each 32 x 32 C block (channels x pixels, four fp32
 * tiles) sweeps all 9 taps x cin/32 steps of 16 pairs, then leaves through a
 * local buffer into y with the bias (skipping the padding columns). Tasks
 * are (image, channel block, run of pixel blocks). */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c,amx-tile,amx-bf16")
#include "kernels/gemm.h"

#include <immintrin.h>
#include <string.h>
#include <omp.h>

enum { T = 16, BLK = 32, A_BLOCK_BYTES = 1 << 20 };

typedef struct amx_conv_geom {
    int cin2, k2;     /* channel pairs; pairs per A row (9 taps) */
    int wp, P;        /* padded width; output pixels over the padded width */
    size_t plane;     /* dwords per pair plane (with slack for the last tiles' reads) */
    int mb;           /* output channels per A block */
    int mblocks, qblocks, qrun; /* task grid: channel blocks, 32-pixel blocks, blocks per task */
    long tasks;
    size_t x_dwords, slice; /* converted input; bytes per thread */
} amx_conv_geom;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static void geom_of(const kn_conv *c, int n, int h, int w, int threads, amx_conv_geom *g)
{
    g->cin2 = c->cin / 2;
    g->k2 = 9 * g->cin2;
    g->wp = w + 2;
    g->P = h * g->wp;
    /* the last block reads up to 31 pixels past P, shifted by up to 2 rows + 2 */
    g->plane = ((size_t)(h + 2) * g->wp + BLK + 2 + 15) / 16 * 16;
    int mb = A_BLOCK_BYTES / (g->k2 * 4) / BLK * BLK;
    g->mb = mb < BLK ? BLK : mb > c->cout ? c->cout : mb;
    g->mblocks = (c->cout + g->mb - 1) / g->mb;
    g->qblocks = (g->P + BLK - 1) / BLK;
    long per = (long)n * g->mblocks * g->qblocks / (4L * threads);
    g->qrun = per < 1 ? 1 : per > 64 ? 64 : (int)per;
    g->tasks = (long)n * g->mblocks * ((g->qblocks + g->qrun - 1) / g->qrun);
    g->x_dwords = (size_t)n * g->cin2 * g->plane;
    g->slice = align64(sizeof(uint32_t) * (size_t)g->mb * g->k2) + align64(sizeof(float) * 9 * (size_t)c->cin) +
               align64(sizeof(float) * BLK * BLK);
}

int kn_conv_amx_applies(const kn_conv *c, int n, int h, int w)
{
    (void)n;
    return c->w.packed_kind == FM_PACKED_BF16 && kn_has_amx() && c->kh == 3 && c->kw == 3 && c->stride == 1 &&
           c->pad_t == 1 && c->pad_l == 1 && c->pad_b == 1 && c->pad_r == 1 && c->cin % BLK == 0 &&
           c->cout % BLK == 0 && !core_dtype_is_quant(c->w.dtype) && h > 0 && w > 0;
}

size_t kn_conv_amx_scratch(const kn_conv *c, int n, int h, int w, int threads)
{
    amx_conv_geom g;
    geom_of(c, n, h, w, threads, &g);
    return align64(sizeof(uint32_t) * g.x_dwords) + (size_t)threads * g.slice;
}

/* Image b's channels -> zero-bordered bf16 pair planes. */
static void convert_input(uint32_t *xp, const float *x, const kn_conv *c, int n, int h, int w,
                          const amx_conv_geom *g)
{
#pragma omp for schedule(static)
    for (long u = 0; u < (long)n * g->cin2; u++) {
        uint32_t *d = xp + (size_t)u * g->plane;
        const float *x0 = x + (size_t)(u / g->cin2) * c->cin * h * w + (size_t)(2 * (u % g->cin2)) * h * w;
        memset(d, 0, sizeof(uint32_t) * g->plane);
        for (int y = 0; y < h; y++)
            gemm_pair_bf16_avx512(d + (size_t)(y + 1) * g->wp + 1, x0 + (size_t)y * w, x0 + (size_t)(h + y) * w, w);
    }
}

/* Weight rows m0..m0+mb as A rows [tap][channel pair]: a weight row is
 * [channel][tap], so each 16 pairs of one tap are two stride-18 gathers. */
static void pack_weights(uint32_t *a, float *row, const kn_conv *c, int m0, int mb, const amx_conv_geom *g)
{
    const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(18));
    float ev[T], od[T];
    for (int r = 0; r < mb; r++) {
        kn_mat_row(row, &c->w, m0 + r);
        uint32_t *ar = a + (size_t)r * g->k2;
        for (int t = 0; t < 9; t++)
            for (int c2 = 0; c2 < g->cin2; c2 += T) {
                const float *base = row + (size_t)2 * c2 * 9 + t;
                _mm512_storeu_ps(ev, _mm512_i32gather_ps(idx, base, 4));
                _mm512_storeu_ps(od, _mm512_i32gather_ps(idx, base + 9, 4));
                gemm_pair_bf16_avx512(ar + t * g->cin2 + c2, ev, od, T);
            }
    }
}

/* C block (32 channels x 32 pixels from q0) of image xb over all of K. */
static void block_product(float *local, const uint32_t *a, const uint32_t *xb, int q0, const amx_conv_geom *g)
{
    size_t as = sizeof(uint32_t) * g->k2, bs = sizeof(uint32_t) * g->plane;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int t = 0; t < 9; t++) {
        const uint32_t *at = a + t * g->cin2, *bt = xb + q0 + (t / 3) * g->wp + t % 3;
        for (int c2 = 0; c2 < g->cin2; c2 += T) {
            const uint32_t *b = bt + (size_t)c2 * g->plane;
            _tile_loadd(4, at + c2, as);
            _tile_loadd(5, at + (size_t)T * g->k2 + c2, as);
            _tile_loadd(6, b, bs);
            _tile_loadd(7, b + T, bs);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    size_t cs = BLK * sizeof(float);
    _tile_stored(0, local, cs);
    _tile_stored(1, local + T, cs);
    _tile_stored(2, local + T * BLK, cs);
    _tile_stored(3, local + T * BLK + T, cs);
}

/* The block's real pixels (not padding columns, not past P) into y + bias. */
static void block_store(float *yb, const float *local, const float *bias, int o0, int q0, int w,
                        const amx_conv_geom *g)
{
    size_t hw = (size_t)(g->P / g->wp) * w;
    for (int q = q0; q < q0 + BLK && q < g->P;) {
        int oy = q / g->wp, ox = q % g->wp, len = g->wp - ox;
        if (len > q0 + BLK - q) len = q0 + BLK - q;
        int valid = ox < w ? (w - ox < len ? w - ox : len) : 0;
        for (int r = 0; r < BLK && valid; r++) {
            float *dst = yb + (o0 + r) * hw + (size_t)oy * w + ox, bv = bias ? bias[o0 + r] : 0.0f;
            const float *src = local + r * BLK + (q - q0);
            for (int j = 0; j < valid; j++) dst[j] = src[j] + bv;
        }
        q += len;
    }
}

int kn_conv_amx_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    if (!kn_conv_amx_applies(c, n, h, w)) return -1;
    int threads = s ? s->threads : 1;
    amx_conv_geom g;
    geom_of(c, n, h, w, threads, &g);
    if (!s || !s->base || s->bytes < kn_conv_amx_scratch(c, n, h, w, threads)) return -1;
    uint32_t *xp = s->base;
    char *slices = (char *)s->base + align64(sizeof(uint32_t) * g.x_dwords);
    long runs = (g.qblocks + g.qrun - 1) / g.qrun;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        char *mine = slices + (size_t)omp_get_thread_num() * g.slice;
        uint32_t *a = (uint32_t *)mine;
        float *row = (float *)(mine + align64(sizeof(uint32_t) * (size_t)g.mb * g.k2));
        float *local = row + align64(sizeof(float) * 9 * (size_t)c->cin) / sizeof(float);
        convert_input(xp, x, c, n, h, w, &g); /* ends with a barrier */
        gemm_arch_amx.begin();
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < g.tasks; task++) {
            int b = (int)(task / (g.mblocks * runs)), mbk = (int)(task / runs % g.mblocks);
            int qb0 = (int)(task % runs) * g.qrun, qb1 = qb0 + g.qrun < g.qblocks ? qb0 + g.qrun : g.qblocks;
            int m0 = mbk * g.mb, mb = c->cout - m0 < g.mb ? c->cout - m0 : g.mb;
            const uint32_t *xb = xp + (size_t)b * g.cin2 * g.plane;
            float *yb = y + (size_t)b * c->cout * h * w;
            pack_weights(a, row, c, m0, mb, &g);
            for (int qb = qb0; qb < qb1; qb++)
                for (int r = 0; r < mb; r += BLK) {
                    block_product(local, a + (size_t)r * g.k2, xb, qb * BLK, &g);
                    block_store(yb, local, c->bias, m0 + r, qb * BLK, w, &g);
                }
        }
        gemm_arch_amx.end();
    }
    return 0;
}
#endif
