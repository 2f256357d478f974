/* Winograd convolution F(m x m, 3 x 3) for 3x3 stride-1 convolutions (pads 0 or 1)
 * (m = 4, or 2): the output is cut into m x m tiles; each tile's
 * (m+2) x (m+2) input patch d and each 3x3 kernel g are transformed
 * (V = B^T d B, U = G g G^T), the products of the transforms summed over the
 * input channels are, per transform point p, one matrix product
 *     M[p][cout][tiles] = U[p][cout][cin] . V[p][cin][tiles]
 * run by the GEMM engine's micro-kernels on its packed panel formats
 * (kernels/gemm.h; fp32, or bf16 pairs in the bf16 mode), and
 * y = A^T M A + bias per tile. F(4,3) multiplies 36 times per
 * tile where the direct convolution multiplies 144 (4x fewer FLOPs; F(2,3):
 * 2.25x), at the price of the transforms and of a larger error: the
 * transforms' coefficients up to 8 and 1/24 cost some float32 digits
 * (tests/test_kernels.c measures both against the direct reference).
 *
 * Memory: all of it in the caller's scratch (kn_winograd_scratch): U for a
 * block of output channels (shared), and per thread V and M for a chunk of
 * tiles and the GEMM's packing slices, each bounded (WINO_U_MAX,
 * WINO_VM_MAX). When the output channels need several blocks the input
 * transform is redone per block (a few percent of the work). */
#include "kernels/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#include <stdio.h>

#define LANES 16
#define WINO_MIN_CH 128      /* the measured shape classes (rule_tile) */
#define WINO_MIN_CH_BF16 512
#define WINO_U_MAX ((size_t)16 << 20)  /* bytes of transformed weights held at once */

typedef float wv __attribute__((vector_size(LANES * sizeof(float))));

typedef struct wino_tf {
    void (*input)(int m, const wv *d, float *v, size_t p_stride);
    void (*weight)(int m, const wv *g, float *u, size_t p_stride);
    void (*output)(int m, const float *mp, size_t p_stride, float bias, wv *y);
} wino_tf;

#define WT(name) name##_generic
#include "kernels/winograd_tf.h"
#undef WT
#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define WT(name) name##_avx2
#include "kernels/winograd_tf.h"
#undef WT
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#define WT(name) name##_avx512
#include "kernels/winograd_tf.h"
#undef WT
#pragma GCC pop_options
#endif

static const wino_tf *tf_get(void)
{
#if defined(__x86_64__)
    switch (kn_isa_chosen()) {
    case FM_ISA_AVX512: return &wino_tf_avx512;
    case FM_ISA_AVX2: return &wino_tf_avx2;
    default: break;
    }
#endif
    return &wino_tf_generic;
}

int kn_winograd_applies(const kn_conv *c)
{
    /* pads of 0 as well as 1: the bands of a banded convolution (kn_conv2d_rows_ws) have the zero rows
     * outside the input as their own padding and none inside it */
    int pads_ok = c->pad_t >= 0 && c->pad_t <= 1 && c->pad_l >= 0 && c->pad_l <= 1 && c->pad_b >= 0 &&
                  c->pad_b <= 1 && c->pad_r >= 0 && c->pad_r <= 1;
    return c->kh == 3 && c->kw == 3 && c->stride == 1 && pads_ok && c->cin > 0 && c->cout > 0 &&
           c->w.cols == c->cin * 9;
}

/* ---- the plan of one call ---- */

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* One parallel region per call. The threads transform a block of weights
 * together, straight into the GEMM engine's packed A panels (per point, per
 * K slice, MR rows each: U is packed once per call, not per product), then
 * each thread takes whole chunks of tiles (one or two NR-wide B panels) and
 * runs them alone start to end: input transform (written as packed B
 * panels), the engine's micro-kernel over every point, K slice and row
 * panel, output transform. Barriers only between weight blocks: on a
 * shared machine a thread waiting for a descheduled peer costs more than
 * the uneven last chunk. */
typedef struct wino_plan {
    const gemm_arch *arch;
    int m, a, P;          /* tile, patch side m + 2, transform points a^2 */
    int oh, ow;           /* output size */
    int th, tw, T;        /* tiles per column, per row, in all (all images) */
    int cb, tb;           /* output channels per block; tiles per chunk (whole NR panels, whole lane groups) */
    int kcs, slices;      /* K slice (even) and their count */
    int rows_pad;         /* cb rounded up to MR */
    int bf16;
    size_t u_p;           /* 4-byte words of packed U per point */
    size_t u_bytes;       /* shared: packed U of one block */
    size_t v_off, v2_off, m_off, blk_off, tmp_off, zero_off, slice; /* per thread slice */
    size_t total;
    int threads;
} wino_plan;

static int slice_kc(const wino_plan *L, int cin, int s) { return s < L->slices - 1 ? L->kcs : cin - s * L->kcs; }
static int words(const wino_plan *L, int kc) { return L->bf16 ? (kc + 1) / 2 : kc; }

static void plan_of(wino_plan *L, const kn_conv *c, int m, int n, int h, int w, int threads)
{
    memset(L, 0, sizeof *L);
    const gemm_arch *arch = gemm_arch_get();
    L->arch = arch;
    L->m = m;
    L->a = m + 2;
    L->P = L->a * L->a;
    L->oh = kn_conv_out_h(c, h);
    L->ow = kn_conv_out_w(c, w);
    L->th = (L->oh + m - 1) / m;
    L->tw = (L->ow + m - 1) / m;
    L->T = n * L->th * L->tw;
    L->threads = threads > 0 ? threads : 1;
    L->bf16 = c->w.packed_kind == FM_PACKED_BF16 && arch->bf16 != NULL;
    L->slices = (c->cin + arch->kc - 1) / arch->kc;
    L->kcs = round_up((c->cin + L->slices - 1) / L->slices, 2);
    L->slices = (c->cin + L->kcs - 1) / L->kcs;
    size_t per_row = (size_t)L->P * c->cin * sizeof(float);
    int cb = (int)(WINO_U_MAX / per_row);
    cb = cb >= c->cout ? c->cout : cb < arch->mr ? arch->mr : cb / arch->mr * arch->mr;
    if (cb > c->cout) cb = c->cout;
    L->cb = cb;
    L->rows_pad = round_up(cb, arch->mr);
    /* up to 4 panels per chunk (each packed A panel then serves 4 B
     * panels: measured 1.3x over 1 on the U-Net's 320-channel level), fewer
     * when the threads would not get two chunks each */
    int panel = round_up(arch->nr > LANES ? arch->nr : LANES, arch->nr), np = 4;
    while (np > 1 && (long)L->T < 2L * L->threads * np * panel) np /= 2;
    L->tb = panel * np;
    size_t wsum = 0;
    for (int s = 0; s < L->slices; s++) wsum += (size_t)words(L, slice_kc(L, c->cin, s));
    L->u_p = wsum * L->rows_pad;
    L->u_bytes = align64((size_t)L->P * L->u_p * 4);
    size_t at = 0;
    L->v_off = at;
    at += align64((size_t)L->P * c->cin * L->tb * sizeof(float));
    L->v2_off = at;
    if (L->bf16) at += align64((size_t)L->P * ((c->cin + 1) / 2) * L->tb * sizeof(uint32_t));
    L->m_off = at;
    at += align64((size_t)L->P * cb * L->tb * sizeof(float));
    L->blk_off = at;
    at += align64(sizeof(float) * LANES * LANES * 9);
    L->tmp_off = at;
    at += align64(sizeof(float) * 36 * LANES);
    L->zero_off = at;
    at += align64(sizeof(float) * L->tb);
    L->slice = at;
    L->total = L->u_bytes + L->slice * L->threads;
}

size_t kn_winograd_scratch(const kn_conv *c, int m, int n, int h, int w, int threads)
{
    if (!kn_winograd_applies(c) || (m != 2 && m != 4) || n <= 0 || kn_conv_out_h(c, h) <= 0 ||
        kn_conv_out_w(c, w) <= 0)
        return 0;
    wino_plan L;
    plan_of(&L, c, m, n, h, w, threads);
    return L.total;
}

/* ---- the weights: transformed into packed A panels ---- */

static uint16_t to_bf16(float f) /* nearest even, as the engine's pair_bf16 */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Zeros the parts of the packed U no weight lands in and the micro-kernel
 * still reads: the rows past cb of the last row panel, and in bf16 the
 * partner of an odd last k. Points [p0, p1). */
static void u_zero_pad(const wino_plan *L, const kn_conv *c, uint32_t *u, int p)
{
    int MR = L->arch->mr, panels = L->rows_pad / MR;
    size_t off = 0;
    for (int s = 0; s < L->slices; s++) {
        int kc = slice_kc(L, c->cin, s), kw = words(L, kc);
        uint32_t *base = u + (size_t)p * L->u_p + off;
        if (L->cb % MR) memset(base + (size_t)(panels - 1) * MR * kw, 0, sizeof(uint32_t) * MR * kw);
        if (L->bf16 && kc % 2)
            for (int i = 0; i < panels; i++) memset(base + (size_t)i * MR * kw + (size_t)(kw - 1) * MR, 0, 4 * MR);
        off += (size_t)kw * L->rows_pad;
    }
}

/* The packed U of output channels co0 + r0 .. + 16 (of the block at co0),
 * input channels ci0 .. + 16: those weights converted to float (blk), each
 * input channel's 16 kernels transformed on the 16 lanes (tmp [P][16]),
 * each value put where the engine's packing would put it. */
static void weight_block(const wino_plan *L, const wino_tf *tf, const kn_conv *c, uint32_t *u, float *blk,
                         float *tmp, int co0, int cb, int r0, int ci0)
{
    int MR = L->arch->mr, nr = cb - r0 < LANES ? cb - r0 : LANES, nc = c->cin - ci0 < LANES ? c->cin - ci0 : LANES;
    for (int l = 0; l < nr; l++) kn_mat_row_range(blk + (size_t)l * LANES * 9, &c->w, co0 + r0 + l, ci0 * 9, nc * 9);
    for (int k = 0; k < nc; k++) {
        wv g[9];
        for (int j = 0; j < 9; j++)
            for (int l = 0; l < LANES; l++) g[j][l] = l < nr ? blk[(size_t)l * LANES * 9 + k * 9 + j] : 0.0f;
        tf->weight(L->m, g, tmp, LANES);
        int ci = ci0 + k, s = ci / L->kcs, kk = ci - s * L->kcs, kc = slice_kc(L, c->cin, s), kw = words(L, kc);
        size_t off = (size_t)s * words(L, L->kcs) * L->rows_pad;
        for (int l = 0; l < nr; l++) {
            int row = r0 + l, i = row / MR, within = row % MR;
            for (int p = 0; p < L->P; p++) {
                uint32_t *panel = u + (size_t)p * L->u_p + off + (size_t)i * MR * kw;
                float v = tmp[p * LANES + l];
                if (L->bf16)
                    ((uint16_t *)(panel + (size_t)(kk / 2) * MR + within))[kk % 2] = to_bf16(v);
                else
                    memcpy(panel + (size_t)kk * MR + within, &v, 4);
            }
        }
    }
}

/* ---- the input: transformed into packed B panels ---- */

/* V[p][panel][ci][NR] for the tiles [t0, t0 + tn) of x [n][cin][h][w]. */
static void input_transform(const wino_plan *L, const wino_tf *tf, const kn_conv *c, float *v, const float *x,
                            int h, int w, int t0, int tn)
{
    int m = L->m, a = L->a, per_img = L->th * L->tw, NR = L->arch->nr;
    size_t p_stride = (size_t)c->cin * L->tb;
    for (int g0 = 0; g0 < L->tb; g0 += LANES)
        for (int ci = 0; ci < c->cin; ci++) {
            wv d[36];
            float *dst = v + (size_t)(g0 / NR) * c->cin * NR + (size_t)ci * NR + g0 % NR;
            int t = t0 + g0, b = t / per_img, ty = t % per_img / L->tw, tx = t % L->tw;
            int y0 = ty * m - c->pad_t, x0 = tx * m - c->pad_l;
            if (g0 + LANES <= tn && tx + LANES <= L->tw && y0 >= 0 && y0 + a <= h && x0 >= 0 &&
                x0 + (LANES - 1) * m + a <= w) { /* 16 tiles of one tile row, inside the image */
                const float *img = x + ((size_t)b * c->cin + ci) * h * w + (size_t)y0 * w + x0;
                for (int r = 0; r < a; r++)
                    for (int q = 0; q < a; q++)
                        for (int l = 0; l < LANES; l++) d[r * a + q][l] = img[(size_t)r * w + l * m + q];
                tf->input(m, d, dst, p_stride);
                continue;
            }
            for (int l = 0; l < LANES; l++) {
                t = t0 + g0 + l;
                if (g0 + l >= tn) {
                    for (int e = 0; e < a * a; e++) d[e][l] = 0.0f;
                    continue;
                }
                b = t / per_img, ty = t % per_img / L->tw, tx = t % L->tw;
                const float *img = x + ((size_t)b * c->cin + ci) * h * w;
                y0 = ty * m - c->pad_t, x0 = tx * m - c->pad_l;
                for (int r = 0; r < a; r++) {
                    int iy = y0 + r;
                    if (iy < 0 || iy >= h) {
                        for (int q = 0; q < a; q++) d[r * a + q][l] = 0.0f;
                        continue;
                    }
                    const float *row = img + (size_t)iy * w;
                    for (int q = 0; q < a; q++) {
                        int ix = x0 + q;
                        d[r * a + q][l] = ix >= 0 && ix < w ? row[ix] : 0.0f;
                    }
                }
            }
            tf->input(m, d, dst, p_stride);
        }
}

/* The bf16 mode: V's panels as bf16 pairs [p][panel][(cin+1)/2][NR]. */
static void input_to_bf16(const wino_plan *L, const kn_conv *c, uint32_t *v2, const float *v, const float *zeros)
{
    int NR = L->arch->nr, k2n = (c->cin + 1) / 2;
    for (int p = 0; p < L->P; p++)
        for (int j = 0; j < L->tb / NR; j++) {
            const float *src = v + (size_t)p * c->cin * L->tb + (size_t)j * c->cin * NR;
            uint32_t *dst = v2 + (size_t)p * k2n * L->tb + (size_t)j * k2n * NR;
            for (int k = 0; k < k2n; k++)
                L->arch->pair_bf16(dst + (size_t)k * NR, src + (size_t)2 * k * NR,
                                   2 * k + 1 < c->cin ? src + (size_t)(2 * k + 1) * NR : zeros, NR);
        }
}

/* M[p][co][tile] = U[p] . V[p] for the block's cb output channels: the
 * engine's micro-kernel on the packed panels. */
static void products(const wino_plan *L, const kn_conv *c, const uint32_t *u, const float *v, const uint32_t *v2,
                     float *mo, int cb)
{
    const gemm_arch *arch = L->arch;
    int MR = arch->mr, NR = arch->nr, k2n = (c->cin + 1) / 2;
    for (int p = 0; p < L->P; p++) {
        const uint32_t *up = u + (size_t)p * L->u_p;
        float *mp = mo + (size_t)p * L->cb * L->tb;
        size_t off = 0;
        for (int s = 0; s < L->slices; s++) {
            int k0 = s * L->kcs, kc = slice_kc(L, c->cin, s), kw = words(L, kc);
            for (int j = 0; j < L->tb / NR; j++)
                for (int i = 0; i < cb; i += MR) {
                    const uint32_t *ap = up + off + (size_t)(i / MR) * MR * kw;
                    float *ct = mp + (size_t)i * L->tb + (size_t)j * NR;
                    int mv = cb - i < MR ? cb - i : MR;
                    if (L->bf16)
                        arch->bf16(kw, ap, v2 + (size_t)p * k2n * L->tb + (size_t)j * k2n * NR + (size_t)(k0 / 2) * NR,
                                   ct, L->tb, mv, NR, s > 0);
                    else
                        arch->f32(kc, (const float *)ap, v + (size_t)p * c->cin * L->tb + (size_t)j * c->cin * NR +
                                                             (size_t)k0 * NR,
                                  ct, L->tb, mv, NR, s > 0);
                }
            off += (size_t)kw * L->rows_pad;
        }
    }
}

/* y of the output channels [co0, co0 + cb), tiles [t0, t0 + tn), from M. */
static void output_transform(const wino_plan *L, const wino_tf *tf, const kn_conv *c, float *y, const float *mo,
                             int co0, int cb, int t0, int tn)
{
    int m = L->m, per_img = L->th * L->tw, h = L->oh, w = L->ow;
    size_t p_stride = (size_t)L->cb * L->tb;
    for (int r = 0; r < cb; r++)
        for (int g0 = 0; g0 < tn; g0 += LANES) {
            int co = co0 + r;
            wv o[16];
            tf->output(m, mo + (size_t)r * L->tb + g0, p_stride, c->bias ? c->bias[co] : 0.0f, o);
            for (int l = 0; l < LANES && g0 + l < tn; l++) {
                int t = t0 + g0 + l, b = t / per_img, ty = t % per_img / L->tw, tx = t % L->tw;
                float *img = y + ((size_t)b * c->cout + co) * h * w;
                int oy = ty * m, ox = tx * m, nh = h - oy < m ? h - oy : m, nw = w - ox < m ? w - ox : m;
                for (int i = 0; i < nh; i++)
                    for (int j = 0; j < nw; j++) img[(size_t)(oy + i) * w + ox + j] = o[i * m + j][l];
            }
        }
}

int kn_winograd_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int m, int n, int h, int w)
{
    if (!kn_winograd_applies(c) || (m != 2 && m != 4)) return -1;
    if (n <= 0 || kn_conv_out_h(c, h) <= 0 || kn_conv_out_w(c, w) <= 0) return 0;
    wino_plan L;
    plan_of(&L, c, m, n, h, w, s ? s->threads : 1);
    if (!s || !s->base || s->bytes < L.total) return -1;
    const wino_tf *tf = tf_get();
    uint32_t *u = s->base;
    char *slices = (char *)s->base + L.u_bytes;
    int chunks = (L.T + L.tb - 1) / L.tb;
#pragma omp parallel num_threads(L.threads) if (L.threads > 1)
    {
        char *mine = slices + (size_t)omp_get_thread_num() * L.slice;
        float *v = (float *)(mine + L.v_off), *mo = (float *)(mine + L.m_off);
        float *blk = (float *)(mine + L.blk_off), *tmp = (float *)(mine + L.tmp_off), *zeros = (float *)(mine + L.zero_off);
        uint32_t *v2 = (uint32_t *)(mine + L.v2_off);
        memset(zeros, 0, sizeof(float) * L.tb);
        for (int co0 = 0; co0 < c->cout; co0 += L.cb) {
            int cb = c->cout - co0 < L.cb ? c->cout - co0 : L.cb;
            int rgroups = (cb + LANES - 1) / LANES, cgroups = (c->cin + LANES - 1) / LANES;
            wino_plan B = L; /* this block's row padding */
            B.cb = cb;
#pragma omp for schedule(static)
            for (int p = 0; p < L.P; p++) u_zero_pad(&B, c, u, p);
#pragma omp for schedule(static)
            for (long job = 0; job < (long)rgroups * cgroups; job++)
                weight_block(&L, tf, c, u, blk, tmp, co0, cb, (int)(job / cgroups) * LANES, (int)(job % cgroups) * LANES);
            /* (the loop's barrier: U is whole) */
#pragma omp for schedule(dynamic, 1)
            for (int k = 0; k < chunks; k++) {
                int t0 = k * L.tb, tn = L.T - t0 < L.tb ? L.T - t0 : L.tb;
                input_transform(&L, tf, c, v, x, h, w, t0, tn);
                if (L.bf16) input_to_bf16(&L, c, v2, v, zeros);
                products(&L, c, u, v, v2, mo, cb);
                output_transform(&L, tf, c, y, mo, co0, cb, t0, tn);
            }
        }
    }
    return 0;
}

void kn_winograd(float *y, const float *x, const kn_conv *c, int m, int n, int h, int w)
{
    int threads = kn_scratch_threads();
    size_t bytes = kn_winograd_scratch(c, m, n, h, w, threads);
    kn_scratch s = {.base = bytes ? core_alloc(bytes) : NULL, .bytes = bytes, .threads = threads};
    if (!s.base || kn_winograd_ws(&s, y, x, c, m, n, h, w)) kn_winograd_ref(y, x, c, m, n, h, w);
    core_free(s.base);
}

/* ---- the choice ---- */

/* Whether Winograd pays on this machine is measured, never assumed per ISA:
 * at the first 3x3 convolution planned in the process (kn_conv2d_scratch:
 * before any sampling, so the probe's allocations are not the sampler's),
 * one thread times the direct convolution and F(4x4,3x3) on a U-Net-like
 * shape, alternating, the least of PROBE_REPS each. FM_CONV=direct or
 * FM_CONV=winograd / winograd2 (tests, benchmarks) decides without timing;
 * FMIMAGE_PRECISION_CACHE=off ("time nothing", as make test sets it) means
 * direct.
 * The decision is kept in a function-local static like kn_isa_chosen's,
 * set once (compare-and-swap: every caller sees the first decision, so a
 * plan's scratch and its calls always agree). */
enum { PROBE_C = 160, PROBE_SIDE = 64, PROBE_REPS = 2 }; /* about 0.1 s of one core in all */
#define WINO_MARGIN 1.10 /* Winograd must measure this much faster to be used */

typedef enum { POL_DIRECT = 0, POL_MEASURED, POL_FORCE4, POL_FORCE2, POL_UNMEASURED, POL_OFF } wino_policy_kind;

static double thread_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* direct time / Winograd time on the probe shape, or 0 when it could not run. */
static double probe_speedup(void)
{
    int C = PROBE_C, S = PROBE_SIDE;
    size_t nw = (size_t)C * C * 9, nx = (size_t)C * S * S;
    kn_conv c = {.cin = C, .cout = C, .kh = 3, .kw = 3, .stride = 1, .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1};
    uint16_t *wt = core_alloc(sizeof(uint16_t) * nw);
    float *x = core_alloc(sizeof(float) * nx), *y = core_alloc(sizeof(float) * nx), *bias = core_alloc(sizeof(float) * C);
    c.algo = FM_CONV_DIRECT;
    c.w = (kn_mat){.data = wt, .dtype = FM_DT_F16, .rows = C, .cols = C * 9};
    size_t bd = kn_conv2d_scratch(&c, 1, S, S, 1), bw = kn_winograd_scratch(&c, 4, 1, S, S, 1);
    kn_scratch ks = {.base = core_alloc(bd > bw ? bd : bw), .bytes = bd > bw ? bd : bw, .threads = 1};
    double best[2] = {1e30, 1e30};
    if (wt && x && y && bias && ks.base) {
        uint64_t st = 0x5eed;
        for (size_t i = 0; i < nw; i++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            wt[i] = core_f32_to_f16_1(((float)(st >> 40) * (1.0f / 16777216.0f) - 0.5f) * 0.04f);
        }
        for (size_t i = 0; i < nx; i++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            x[i] = (float)(st >> 40) * (1.0f / 16777216.0f) - 0.5f;
        }
        for (int i = 0; i < C; i++) bias[i] = 0.01f * (float)(i % 7);
        c.bias = bias;
        for (int r = 0; r < PROBE_REPS; r++)
            for (int k = 0; k < 2; k++) {
                double t0 = thread_seconds();
                int rc = k ? kn_winograd_ws(&ks, y, x, &c, 4, 1, S, S) : kn_conv2d_ws(&ks, y, x, &c, 1, S, S);
                double t = thread_seconds() - t0;
                if (rc) best[k] = 0;
                else if (t < best[k]) best[k] = t;
            }
    }
    core_free(wt); core_free(x); core_free(y); core_free(bias); core_free(ks.base);
    return best[0] < 1e30 && best[1] > 0 && best[1] < 1e30 && best[0] > 0 ? best[0] / best[1] : 0;
}

/* policy kind in the low 4 bits, the measured speed-up x 1000 above */
static int decide_policy(void)
{
    const char *env = getenv("FM_CONV");
    if (env && !strcmp(env, "direct")) return POL_DIRECT;
    if (env && (!strcmp(env, "winograd") || !strcmp(env, "winograd4"))) return POL_FORCE4;
    if (env && !strcmp(env, "winograd2")) return POL_FORCE2;
    /* "times nothing", as for --precision auto: the tests' convolutions are then the direct ones */
    const char *cache = getenv("FMIMAGE_PRECISION_CACHE");
    if (cache && !strcmp(cache, "off")) return POL_OFF;
    double sp = probe_speedup();
    if (!(sp > 0)) return POL_UNMEASURED;
    int milli = sp > 100 ? 100000 : (int)(sp * 1000 + 0.5);
    return (milli << 4) | (sp >= WINO_MARGIN ? POL_MEASURED : POL_DIRECT);
}

static int policy(void)
{
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (v < 0) {
        int want = decide_policy(), expected = -1;
        __atomic_compare_exchange_n(&cached, &expected, want, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        v = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    }
    return v;
}

/* The shape classes Winograd is used for when it measured faster (the
 * rule the probe validates; kbench's direct-vs-Winograd rows are where it
 * comes from), in fp32, with channels many enough that the transforms (per
 * tile and channel) stay small beside the products (per tile and channel
 * pair):
 *   - F(4x4,3x3) with enough tiles that every thread gets several whole
 *     chunks, where its transformed weights fit one block (36 points);
 *   - else F(2x2,3x3) where its weights (16 points) fit one block, on at
 *     least 24 chunks of 32 2x2 tiles per thread: the VAE decoder's
 *     512-channel maps of 128x128 and 256x256 (in bands of 59x128 and
 *     32x256 rows: 1.20-1.42x the direct speed in fp32 on Zen 5, kbench,
 *     where F(4x4,3x3) over several weight blocks measured 0.86-1.36x), and
 *     SD 1.5's 640->320 at 64x64 (1.04x); 512 channels at 64x64 measured
 *     no faster (1.02x, fewer tiles).
 * More weight blocks redo the input transform each and U then streams from
 * memory. In the bf16 mode F(4x4,3x3) loses too much of bf16's 8-bit
 * mantissa (tests/test_kernels.c: 0.33 of the output RMS); F(2x2,3x3) is
 * used there only from 512 input and output channels on the same tile
 * counts (the VAE decoder's 512-channel bands: 1.08-1.23x the direct bf16
 * speed on Zen 5, kbench; it measured slower than direct on 640 -> 320,
 * 640 and 512 -> 256 channels), and keeps the images >= 35 dB from fp32. */
static int rule_tile(const kn_conv *c, int n, int h, int w)
{
    int bf16 = c->w.packed_kind == FM_PACKED_BF16 && kn_has_bf16();
    int min_ch = bf16 ? WINO_MIN_CH_BF16 : WINO_MIN_CH;
    if (c->cin < min_ch || c->cout < min_ch) return 0;
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w), threads = kn_scratch_threads();
    size_t pair = (size_t)c->cin * c->cout * sizeof(float);
    long tiles4 = (long)n * ((oh + 3) / 4) * ((ow + 3) / 4), tiles2 = (long)n * ((oh + 1) / 2) * ((ow + 1) / 2);
    if (!bf16 && 36 * pair <= WINO_U_MAX) return tiles4 >= 4L * 32 * threads ? 4 : 0;
    if (16 * pair <= WINO_U_MAX && tiles2 >= 24L * 32 * threads) return 2;
    return 0;
}

static int auto_tile(const kn_conv *c, int n, int h, int w)
{
    int pol = policy() & 15;
    switch (pol) {
    case POL_FORCE4: /* F(4x4,3x3) in the bf16 mode breaks its error bound: F(2x2,3x3) there */
        return c->w.packed_kind == FM_PACKED_BF16 && kn_has_bf16() ? 2 : 4;
    case POL_FORCE2: return 2;
    case POL_MEASURED: return rule_tile(c, n, h, w);
    default: return 0;
    }
}

int kn_conv2d_tile(const kn_conv *c, int n, int h, int w)
{
    if (!kn_winograd_applies(c)) return 0;
    switch (c->algo) {
    case FM_CONV_DIRECT: return 0;
    case FM_CONV_WINO2: return 2;
    case FM_CONV_WINO4: return 4;
    default: return auto_tile(c, n, h, w);
    }
}

void kn_conv2d_choice(char *why, size_t size)
{
    int pol = policy(), kind = pol & 15;
    double sp = (pol >> 4) / 1000.0;
    if (!why || !size) return;
    switch (kind) {
    case POL_FORCE4:
        snprintf(why, size, "Winograd F(4x4,3x3) for every 3x3 stride-1 convolution, F(2x2,3x3) in bf16 (FM_CONV)");
        break;
    case POL_FORCE2: snprintf(why, size, "Winograd F(2x2,3x3) for every 3x3 stride-1 convolution (FM_CONV)"); break;
    case POL_UNMEASURED: snprintf(why, size, "direct (the Winograd timing could not run)"); break;
    case POL_OFF: snprintf(why, size, "direct (not measured: FMIMAGE_PRECISION_CACHE=off)"); break;
    case POL_MEASURED:
        snprintf(why, size,
                 "Winograd for fp32 3x3 convolutions of >= %d channels: F(4x4,3x3) where its transformed "
                 "weights fit %zu MiB, on >= %d tiles, else F(2x2,3x3) where its fit, on >= %d tiles; in bf16 "
                 "F(2x2,3x3) there from %d channels; direct elsewhere (F(4x4,3x3) measured %.2fx the direct "
                 "speed on this CPU; needs %.2fx)",
                 WINO_MIN_CH, WINO_U_MAX >> 20, 4 * 32 * kn_scratch_threads(), 24 * 32 * kn_scratch_threads(),
                 WINO_MIN_CH_BF16, sp, WINO_MARGIN);
        break;
    default:
        if (sp > 0)
            snprintf(why, size, "direct (Winograd F(4x4,3x3) measured %.2fx the direct speed on this CPU; needs %.2fx)",
                     sp, WINO_MARGIN);
        else snprintf(why, size, "direct (FM_CONV=direct)");
        break;
    }
}

/* ---- the reference: the same algorithm in plain loops (double inside) ---- */

static const double BT2[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double AT2[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
static const double BT4[6][6] = {{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                 {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const double G4[6][3] = {{1.0 / 4, 0, 0},          {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
static const double AT4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};

static double bt_at(int m, int i, int j) { return m == 2 ? BT2[i][j] : BT4[i][j]; }
static double g_at(int m, int i, int j) { return m == 2 ? G2[i][j] : G4[i][j]; }
static double at_at(int m, int i, int j) { return m == 2 ? AT2[i][j] : AT4[i][j]; }

void kn_winograd_ref(float *y, const float *x, const kn_conv *c, int m, int n, int h, int w)
{
    int a = m + 2, oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w), th = (oh + m - 1) / m, tw = (ow + m - 1) / m;
    float *row = malloc(sizeof(float) * (size_t)c->w.cols);
    if (!row) { /* no memory for a weight row: the direct reference computes the same convolution */
        kn_conv2d_ref(y, x, c, n, h, w);
        return;
    }
    for (int b = 0; b < n; b++)
        for (int co = 0; co < c->cout; co++) {
            kn_mat_row_range(row, &c->w, co, 0, c->w.cols);
            for (int ty = 0; ty < th; ty++)
                for (int tx = 0; tx < tw; tx++) {
                    double M[6][6] = {{0}};
                    for (int ci = 0; ci < c->cin; ci++) {
                        double d[6][6], V[6][6], U[6][6], t[6][6];
                        for (int i = 0; i < a; i++)
                            for (int j = 0; j < a; j++) {
                                int iy = ty * m - c->pad_t + i, ix = tx * m - c->pad_l + j;
                                d[i][j] = iy >= 0 && iy < h && ix >= 0 && ix < w
                                              ? x[(((size_t)b * c->cin + ci) * h + iy) * w + ix] : 0.0;
                            }
                        for (int i = 0; i < a; i++) /* t = B^T d */
                            for (int j = 0; j < a; j++) {
                                t[i][j] = 0;
                                for (int k = 0; k < a; k++) t[i][j] += bt_at(m, i, k) * d[k][j];
                            }
                        for (int i = 0; i < a; i++) /* V = t B */
                            for (int j = 0; j < a; j++) {
                                V[i][j] = 0;
                                for (int k = 0; k < a; k++) V[i][j] += t[i][k] * bt_at(m, j, k);
                            }
                        const float *g = row + (size_t)ci * 9;
                        for (int i = 0; i < a; i++) /* U = G g G^T */
                            for (int j = 0; j < a; j++) {
                                U[i][j] = 0;
                                for (int k = 0; k < 3; k++)
                                    for (int l = 0; l < 3; l++) U[i][j] += g_at(m, i, k) * g[k * 3 + l] * g_at(m, j, l);
                            }
                        for (int i = 0; i < a; i++)
                            for (int j = 0; j < a; j++) M[i][j] += U[i][j] * V[i][j];
                    }
                    for (int i = 0; i < m; i++) /* Y = A^T M A + bias */
                        for (int j = 0; j < m; j++) {
                            int oy = ty * m + i, ox = tx * m + j;
                            if (oy >= oh || ox >= ow) continue;
                            double s = c->bias ? c->bias[co] : 0.0;
                            for (int k = 0; k < a; k++)
                                for (int l = 0; l < a; l++) s += at_at(m, i, k) * M[k][l] * at_at(m, j, l);
                            y[(((size_t)b * c->cout + co) * oh + oy) * ow + ox] = (float)s;
                        }
                }
        }
    free(row);
}
