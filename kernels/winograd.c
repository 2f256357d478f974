/* Winograd convolution F(m x m, 3 x 3) for 3x3 stride-1 pad-1 convolutions
 * (m = 4, or 2): the output is cut into m x m tiles; each tile's
 * (m+2) x (m+2) input patch d and each 3x3 kernel g are transformed
 * (V = B^T d B, U = G g G^T), the products of the transforms summed over the
 * input channels are, per transform point p, one matrix product
 *     M[p][cout][tiles] = U[p][cout][cin] . V[p][cin][tiles]
 * run on the GEMM engine (kernels/gemm.c; fp32, or bf16 pairs in the bf16
 * mode), and y = A^T M A + bias per tile. F(4,3) multiplies 36 times per
 * tile where the direct convolution multiplies 144 (4x fewer FLOPs; F(2,3):
 * 2.25x), at the price of the transforms and of a larger error: the
 * transforms' coefficients up to 8 and 1/24 cost some float32 digits
 * (tests/test_kernels.c measures both against the direct reference).
 *
 * Memory: all of it in the caller's scratch (kn_winograd_scratch): U for a
 * block of output channels, V and M for a chunk of tiles, each bounded (see
 * WINO_U_MAX, WINO_VM_MAX), and the GEMM's own packing slices. When the
 * output channels need several blocks and the tiles several chunks, the
 * input transform is redone per block (a few percent of the work). */
#include "kernels/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>

#define LANES 16
#define WINO_U_MAX ((size_t)16 << 20)  /* bytes of transformed weights held at once */
#define WINO_VM_MAX ((size_t)16 << 20) /* bytes of transformed input + products per tile chunk */

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
    return c->kh == 3 && c->kw == 3 && c->stride == 1 && c->pad_t == 1 && c->pad_l == 1 && c->pad_b == 1 &&
           c->pad_r == 1 && c->cin > 0 && c->cout > 0 && c->w.cols == c->cin * 9;
}

/* ---- the plan of one call ---- */

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

typedef struct wino_plan {
    int m, a, P;          /* tile, patch side m + 2, transform points a^2 */
    int th, tw, T;        /* tiles per column, per row, in all (all images) */
    int cb, tb;           /* output channels per block, tiles per chunk (a multiple of LANES) */
    int ldu;              /* U row stride: cin rounded up to LANES */
    size_t u_off, v_off, m_off, row_off, gemm_off, row_bytes, total;
    int threads;
    int bf16;
} wino_plan;

static gemm_problem wino_gemm(const wino_plan *L, const kn_conv *c, const float *u, const float *v, float *mo,
                              int cb, int tn)
{
    return (gemm_problem){
        .M = cb, .N = tn, .K = c->cin, .batch = L->P,
        .a = {.kind = OP_ROWS, .p = u, .ld = L->ldu, .batch_stride = (ptrdiff_t)L->cb * L->ldu},
        .b = {.kind = OP_COLS, .p = v, .ld = L->tb, .batch_stride = (ptrdiff_t)c->cin * L->tb},
        .c = mo, .ldc = L->tb, .c_batch_stride = (ptrdiff_t)L->cb * L->tb,
        .beta = 0.0f, .bf16 = L->bf16,
    };
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

static void plan_of(wino_plan *L, const kn_conv *c, int m, int n, int h, int w, int threads)
{
    memset(L, 0, sizeof *L);
    L->m = m;
    L->a = m + 2;
    L->P = L->a * L->a;
    L->th = (h + m - 1) / m;
    L->tw = (w + m - 1) / m;
    L->T = n * L->th * L->tw;
    L->ldu = round_up(c->cin, LANES);
    L->threads = threads > 0 ? threads : 1;
    L->bf16 = c->w.packed_kind == FM_PACKED_BF16 && kn_has_bf16();
    size_t per_row = (size_t)L->P * L->ldu * sizeof(float);
    int cb = (int)(WINO_U_MAX / per_row);
    cb = cb >= c->cout ? c->cout : cb < 16 ? 16 : cb / 16 * 16;
    if (cb > c->cout) cb = c->cout;
    L->cb = cb;
    size_t per_tile = (size_t)L->P * (c->cin + cb) * sizeof(float);
    int tb = (int)(WINO_VM_MAX / per_tile) / LANES * LANES;
    if (tb < LANES) tb = LANES;
    if (tb > round_up(L->T, LANES)) tb = round_up(L->T, LANES);
    L->tb = tb;
    L->row_bytes = align64(sizeof(float) * (size_t)L->ldu * 9);
    size_t at = 0;
    L->u_off = at;
    at += align64((size_t)L->P * cb * L->ldu * sizeof(float));
    L->v_off = at;
    at += align64((size_t)L->P * c->cin * tb * sizeof(float));
    L->m_off = at;
    at += align64((size_t)L->P * cb * tb * sizeof(float));
    L->row_off = at;
    at += L->row_bytes * L->threads;
    L->gemm_off = at;
    /* the GEMM's scratch for each block and chunk size the call can take */
    int last_cb = c->cout % cb ? c->cout % cb : cb, last_tb = L->T % tb ? L->T % tb : tb;
    if (last_tb > L->T) last_tb = L->T;
    int tn_full = tb < L->T ? tb : L->T;
    size_t g = 0;
    int cbs[2] = {cb, last_cb}, tns[2] = {tn_full, last_tb};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            gemm_problem p = wino_gemm(L, c, NULL, NULL, NULL, cbs[i], tns[j]);
            g = max_size(g, gemm_scratch_bytes(&p, L->threads));
        }
    L->total = at + g;
}

size_t kn_winograd_scratch(const kn_conv *c, int m, int n, int h, int w, int threads)
{
    if (!kn_winograd_applies(c) || (m != 2 && m != 4) || n <= 0 || h <= 0 || w <= 0) return 0;
    wino_plan L;
    plan_of(&L, c, m, n, h, w, threads);
    return L.total;
}

/* ---- the three transforms ---- */

/* U[p][co - co0][ci] for the output channels [co0, co0 + cb). */
static void weight_transform(const wino_plan *L, const wino_tf *tf, const kn_conv *c, float *u, char *rows,
                             int co0, int cb)
{
    size_t p_stride = (size_t)L->cb * L->ldu;
#pragma omp parallel for schedule(static) num_threads(L->threads) if (L->threads > 1 && cb > 1)
    for (int r = 0; r < cb; r++) {
        float *row = (float *)(rows + (size_t)omp_get_thread_num() * L->row_bytes);
        kn_mat_row_range(row, &c->w, co0 + r, 0, c->w.cols);
        for (int ci0 = 0; ci0 < L->ldu; ci0 += LANES) {
            wv g[9];
            for (int j = 0; j < 9; j++)
                for (int l = 0; l < LANES; l++) g[j][l] = ci0 + l < c->cin ? row[(size_t)(ci0 + l) * 9 + j] : 0.0f;
            tf->weight(L->m, g, u + (size_t)r * L->ldu + ci0, p_stride);
        }
    }
}

/* V[p][ci][t - t0] for the tiles [t0, t0 + tn) of x [n][cin][h][w]. */
static void input_transform(const wino_plan *L, const wino_tf *tf, const kn_conv *c, float *v, const float *x,
                            int h, int w, int t0, int tn)
{
    int m = L->m, a = L->a, per_img = L->th * L->tw;
    size_t p_stride = (size_t)c->cin * L->tb;
    int groups = (tn + LANES - 1) / LANES;
#pragma omp parallel for schedule(static) num_threads(L->threads) if (L->threads > 1)
    for (long job = 0; job < (long)c->cin * groups; job++) {
        int ci = (int)(job / groups), g0 = (int)(job % groups) * LANES;
        wv d[36];
        for (int l = 0; l < LANES; l++) {
            int t = t0 + g0 + l;
            if (g0 + l >= tn) {
                for (int e = 0; e < a * a; e++) d[e][l] = 0.0f;
                continue;
            }
            int b = t / per_img, ty = t % per_img / L->tw, tx = t % L->tw;
            const float *img = x + ((size_t)b * c->cin + ci) * h * w;
            int y0 = ty * m - 1, x0 = tx * m - 1;
            for (int r = 0; r < a; r++) {
                int iy = y0 + r;
                if (iy < 0 || iy >= h) {
                    for (int q = 0; q < a; q++) d[r * a + q][l] = 0.0f;
                    continue;
                }
                const float *row = img + (size_t)iy * w;
                if (x0 >= 0 && x0 + a <= w) {
                    for (int q = 0; q < a; q++) d[r * a + q][l] = row[x0 + q];
                } else {
                    for (int q = 0; q < a; q++) {
                        int ix = x0 + q;
                        d[r * a + q][l] = ix >= 0 && ix < w ? row[ix] : 0.0f;
                    }
                }
            }
        }
        tf->input(m, d, v + (size_t)ci * L->tb + g0, p_stride);
    }
}

/* y rows of the output channels [co0, co0 + cb), tiles [t0, t0 + tn), from M. */
static void output_transform(const wino_plan *L, const wino_tf *tf, const kn_conv *c, float *y, const float *mo,
                             int h, int w, int co0, int cb, int t0, int tn)
{
    int m = L->m, per_img = L->th * L->tw;
    size_t p_stride = (size_t)L->cb * L->tb;
    int groups = (tn + LANES - 1) / LANES;
#pragma omp parallel for schedule(static) num_threads(L->threads) if (L->threads > 1)
    for (long job = 0; job < (long)cb * groups; job++) {
        int r = (int)(job / groups), g0 = (int)(job % groups) * LANES, co = co0 + r;
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
    if (n <= 0 || h <= 0 || w <= 0) return 0;
    wino_plan L;
    plan_of(&L, c, m, n, h, w, s ? s->threads : 1);
    if (!s || !s->base || s->bytes < L.total) return -1;
    const wino_tf *tf = tf_get();
    char *base = s->base;
    float *u = (float *)(base + L.u_off), *v = (float *)(base + L.v_off), *mo = (float *)(base + L.m_off);
    kn_scratch gs = {.base = base + L.gemm_off, .bytes = s->bytes - L.gemm_off, .threads = L.threads};
    int v_valid = -1; /* the chunk V holds */
    for (int co0 = 0; co0 < c->cout; co0 += L.cb) {
        int cb = c->cout - co0 < L.cb ? c->cout - co0 : L.cb;
        weight_transform(&L, tf, c, u, base + L.row_off, co0, cb);
        for (int t0 = 0; t0 < L.T; t0 += L.tb) {
            int tn = L.T - t0 < L.tb ? L.T - t0 : L.tb;
            if (v_valid != t0) input_transform(&L, tf, c, v, x, h, w, t0, tn);
            v_valid = t0;
            gemm_problem p = wino_gemm(&L, c, u, v, mo, cb, tn);
            if (gemm_run_ws(&p, &gs)) return -1; /* cannot happen: sized above */
            output_transform(&L, tf, c, y, mo, h, w, co0, cb, t0, tn);
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
    int a = m + 2, th = (h + m - 1) / m, tw = (w + m - 1) / m;
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
                                int iy = ty * m - 1 + i, ix = tx * m - 1 + j;
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
                            if (oy >= h || ox >= w) continue;
                            double s = c->bias ? c->bias[co] : 0.0;
                            for (int k = 0; k < a; k++)
                                for (int l = 0; l < a; l++) s += at_at(m, i, k) * M[k][l] * at_at(m, j, l);
                            y[(((size_t)b * c->cout + co) * h + oy) * w + ox] = (float)s;
                        }
                }
        }
    free(row);
}
