/* The int8 GEMM on Q8_0 weights behind kn_linear and kn_conv2d, as ggml
 * computes a Q8_0 product: every activation vector (a linear's input row,
 * or a convolution's im2col column, K = cin*kh*kw in the weight row's own
 * PyTorch order) is quantised per block of 32 along K to Q8_0
 * (d = max|x| / 127 kept as fp16, q = round(x / d)), so its blocks line up
 * with the weight row's blocks (a block may straddle input channels: both
 * sides cut K the same way), and
 *     y[o][p] = bias[o] + sum over blocks b, in order, of
 *               (float)(sum_j qw[o][b][j] qx[p][b][j]) * (dw[o][b] * dx[p][b]).
 * The integer sums are exact and each output's float sum runs over the
 * blocks in the same order on every path, so the AMX-INT8, AVX-512 VNNI,
 * AVX-VNNI and AVX2 kernels equal the plain loop (path "scalar") bit for bit
 * (tests/test_q8_gemm.c, tests/test_gguf.c).
 *
 * Blocking of the fast paths. Columns are packed 16 at a time into panels:
 * per block, the 16 columns' int8 values interleaved by 4 ([8][16][4], the
 * operand order of vpdpbusd: one 32-bit lane = 4 consecutive K values of one
 * column), their 16 scales and 16 corrections (below). A micro-kernel keeps
 * one int32 lane per (row, column): a block's 8 vpdpbusd steps each
 * broadcast 4 weight bytes of a row, so a lane ends the block holding that
 * row's exact dot with that column; the lane is then scaled and added to its
 * float accumulator, in block order, with no horizontal sums. vpdpbusd
 * multiplies unsigned by signed bytes: the weights are offset to
 * w + 128 (0..255) and each lane starts from the column block's correction
 * -128 * sum_j qx_j, which makes the lane exactly sum_j w_j qx_j. The AVX2
 * path (vpmaddubsw, no VNNI) takes |w| and x with w's sign instead (no
 * correction; the 16-bit pairs cannot saturate: 2 * 128 * 127 < 32767).
 * AMX-INT8 multiplies signed by signed on 32 x 32 tiles per block (below).
 * A thread packs a chunk of panels (about 1 MiB, so it stays in L2) and runs
 * every row block over it; when there are fewer chunks than threads (a
 * linear on few tokens) the rows are split across threads too.
 *
 * K-quant weights (Q4_K, Q5_K, Q6_K: super-blocks of 256 values, K a
 * multiple of 256) run on the same driver, panels and im2col gathers, with
 * ggml's q8_K activations: per 256 values along K, iscale = -127 / x_m (x_m
 * the first value of largest magnitude), q = round-half-even(iscale * x)
 * clamped to +-127, d = 1 / iscale kept as float, and the 16 sums of each
 * 16 values (ggml's quantize_row_q8_K_ref). A weight super-block holds
 * unsigned values u (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63), a scale sc[g] and
 * a min mn[g] per 16-value group g (Q4_K / Q5_K: the 6-bit scale and min of
 * the 32-value sub-block, so w = d sc u - dmin mn; Q6_K: w = d sc (u - 32),
 * so mn = 32 sc), and ggml's vec_dot_q4_K_q8_K / q5_K / q6_K are, per
 * super-block b, in order, with the exact integers
 *     S = sum_g sc[g] sum_{j in g} u_j q_j,   M = sum_g mn[g] bsum_g(q):
 *     Q4_K, Q5_K: y += (float)S * (d_w d_x) - (float)M * (dmin_w d_x)
 *     Q6_K:       y += (float)(S - M) * (d_w d_x).
 * The fast paths decode a block of weight rows once per chunk of panels
 * (kq_decode: the 256 bytes u, the group scales and mins as int32, d and
 * dmin as float) and multiply unsigned weights by signed activations
 * directly (vpdpbusd, or vpmaddubsw's 16-bit pairs, which cannot saturate:
 * 2 * 63 * 127 < 32767), one int32 lane per (row, column) per group, times
 * the group's scale (vpmulld) into S; M is an int16-pair product of the
 * mins with the panel's block sums (vpdpwssd / vpmaddwd). */
#include "kernels/kernels.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum {
    QK = 32,             /* values per block */
    QB = 34,             /* bytes of a Q8_0 weight block: fp16 scale, 32 int8 */
    PW = 16,             /* columns per panel */
    P_Q = 0,             /* panel block layout: int8 [8][PW][4] */
    P_CORR = QK * PW,    /* int32 [PW]: -128 * sum of the column's block */
    P_D = P_CORR + 4 * PW, /* float [PW]: the column's block scale */
    PB = P_D + 4 * PW,   /* bytes per panel per block */
    CHUNK_BYTES = 1 << 20,
    TILE_ROWS = 32,      /* the micro-kernels' output: [TILE_ROWS][2 * PW] floats */
    QKK = 256,           /* values per K-quant super-block (and q8_K activation block) */
    GK = 16,             /* values per group (one scale, one block sum) */
    NG = QKK / GK,
    PK_Q = 0,            /* K panel block layout: int8 [QKK / 4][PW][4] */
    PK_BS = QKK * PW,    /* int16 [NG / 2][PW][2]: the column's group sums, paired */
    PK_D = PK_BS + 2 * NG * PW, /* float [PW]: the column's d */
    PBK = PK_D + 4 * PW, /* bytes per panel per super-block */
    D_Q = 0,             /* a decoded weight super-block: uint8 u[QKK] */
    D_SC = QKK,          /* int32 [NG]: scale per group */
    D_MN = D_SC + 4 * NG, /* int32 [NG / 2]: the mins of groups 2i, 2i+1 as an int16 pair */
    D_D = D_MN + 2 * NG, /* float d, then float dmin */
    DB = 384,            /* bytes per decoded super-block (D_D + 8, rounded to 64) */
    KQ_MR = 4,           /* rows decoded at once: the most rows a K micro-kernel takes */
};

/* What the weight rows hold: Q8_0 blocks, or K-quant super-blocks with two
 * scales (Q4_K, Q5_K) or one (Q6_K). */
typedef enum { FMT_Q8_0, FMT_K_MIN, FMT_K6, N_FORMATS } q8_format;

static int fmt_block(q8_format f) { return f == FMT_Q8_0 ? QK : QKK; }
static size_t fmt_panel_block(q8_format f) { return f == FMT_Q8_0 ? PB : PBK; }

/* One quantised activation block. */
typedef struct q8_act {
    float d;
    int8_t q[QK];
} q8_act;

/* roundf(v) for |v| <= 127, inline (the hot loops must not call libm):
 * truncation, then away from zero when the dropped part is at least a half
 * (v - trunc(v) is exact here). */
static inline int round_q(float v)
{
    int t = (int)v;
    float f = v - (float)t;
    return t + (f >= 0.5f) - (f <= -0.5f);
}

/* ggml's quantize_row_q8_0 for one block. Values are clamped to +-127
 * before rounding, which changes no finite result (|x| * (1/d) exceeds 127
 * only by rounding) and keeps the infinite 1/d of a block of tiny values
 * (below 127 * 2^-128) defined. */
static void quantise_act(q8_act *a, const float *x)
{
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) {
        float v = fabsf(x[j]);
        amax = v > amax ? v : amax;
    }
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    /* ggml keeps the activation scale as fp16 too (block_q8_0) */
    a->d = core_f16_to_f32_1(core_f32_to_f16_1(d));
    for (int j = 0; j < QK; j++) {
        float v = x[j] * id;
        v = v > 127.0f ? 127.0f : v;
        v = v >= -127.0f ? v : -127.0f; /* and NaN */
        a->q[j] = (int8_t)round_q(v);
    }
}

static float w_scale(const uint8_t *b) { return core_f16_to_f32_1((uint16_t)(b[0] | b[1] << 8)); }

/* ---- where the columns come from, and where the outputs go ---- */

/* The GEMM's N columns of K = w->cols values: column p is x + p*K (a
 * linear's rows), or the im2col column of output pixel p of conv over
 * images x [n][cin][h][w]. Output (o, p) is y[o*so + p*sp], with the conv's
 * pixels of image p / fold at y + (p / fold) * fold_stride. */
typedef struct q8_problem {
    q8_format fmt;
    const kn_mat *w;
    const float *bias;
    const float *x;
    const kn_conv *conv; /* NULL for a linear */
    int h, wd, oh, ow;
    int N;
    float *y;
    size_t so, sp, fold, fold_stride;
} q8_problem;

static float *out_at(const q8_problem *P, int o, int p)
{
    size_t img = (size_t)p / P->fold, r = (size_t)p % P->fold;
    return P->y + img * P->fold_stride + r * P->sp + (size_t)o * P->so;
}

/* Values k0..k0+QK of column p. */
static void gather_block(const q8_problem *P, int p, int k0, float *v)
{
    if (!P->conv) {
        memcpy(v, P->x + (size_t)p * P->w->cols + k0, QK * sizeof(float));
        return;
    }
    const kn_conv *c = P->conv;
    int ohw = P->oh * P->ow, img = p / ohw, oy = (p % ohw) / P->ow, ox = p % P->ow, taps = c->kh * c->kw;
    const float *xi = P->x + (size_t)img * c->cin * P->h * P->wd;
    for (int j = 0; j < QK; j++) {
        int k = k0 + j, ci = k / taps, ky = k % taps / c->kw, kx = k % c->kw;
        int iy = oy * c->stride - c->pad_t + ky, ix = ox * c->stride - c->pad_l + kx;
        v[j] = iy >= 0 && iy < P->h && ix >= 0 && ix < P->wd ? xi[((size_t)ci * P->h + iy) * P->wd + ix] : 0.0f;
    }
}

/* ---- the plain loop ---- */

static void q8_gemm_ref(const q8_problem *P, q8_act *col, float *v)
{
    int nb = P->w->cols / QK;
    const uint8_t *wd = P->w->data;
    for (int p = 0; p < P->N; p++) {
        for (int b = 0; b < nb; b++) {
            gather_block(P, p, b * QK, v);
            quantise_act(&col[b], v);
        }
        for (int o = 0; o < P->w->rows; o++) {
            const uint8_t *wr = wd + (size_t)o * nb * QB;
            float sum = 0.0f;
            for (int b = 0; b < nb; b++) {
                const int8_t *qw = (const int8_t *)(wr + (size_t)b * QB + 2);
                int32_t dot = 0;
                for (int j = 0; j < QK; j++) dot += (int32_t)qw[j] * col[b].q[j];
                sum += (float)dot * (w_scale(wr + (size_t)b * QB) * col[b].d);
            }
            *out_at(P, o, p) = sum + (P->bias ? P->bias[o] : 0.0f);
        }
    }
}


/* ---- K-quants: the weight super-block's integers, q8_K, the plain loop ---- */

/* One super-block's values as the math above reads them. */
typedef struct kq_block {
    uint8_t u[QKK];
    int sc[NG], mn[NG];
    float d, dmin;
} kq_block;

/* ggml's block_q4_K / block_q5_K / block_q6_K layouts (core/quant.c's
 * table): Q4_K d, dmin, scales[12], qs[128]; Q5_K d, dmin, scales[12],
 * qh[32], qs[128]; Q6_K ql[128], qh[64], int8 scales[16], d. The value
 * loops run over the 32 bytes of a quarter at a time (so the compiler
 * vectorises them: the fast paths decode every weight row once per chunk
 * of columns). */
static void kq_unpack(core_dtype t, const uint8_t *b, kq_block *o)
{
    if (t == FM_DT_Q6_K) {
        for (int h = 0; h < 2; h++) { /* 128 values: ql[64] low nibbles, qh[32] 2-bit pairs */
            const uint8_t *ql = b + h * 64, *qh = b + 128 + h * 32;
            uint8_t *u = o->u + h * 128;
            for (int l = 0; l < 32; l++) {
                u[l] = (uint8_t)((ql[l] & 0x0F) | (qh[l] & 3) << 4);
                u[l + 32] = (uint8_t)((ql[l + 32] & 0x0F) | (qh[l] >> 2 & 3) << 4);
                u[l + 64] = (uint8_t)((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4);
                u[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (qh[l] >> 6) << 4);
            }
        }
        for (int g = 0; g < NG; g++) o->sc[g] = (int8_t)b[192 + g], o->mn[g] = 32 * o->sc[g];
        o->d = o->dmin = w_scale(b + 208);
        return;
    }
    const uint8_t *qs = b + (t == FM_DT_Q5_K ? 48 : 16), *qh = b + 16;
    for (int c = 0; c < 4; c++) { /* sub-blocks 2c (low nibbles) and 2c+1 (high) share 32 bytes */
        uint8_t *u = o->u + c * 64;
        for (int l = 0; l < 32; l++) {
            u[l] = qs[c * 32 + l] & 0x0F;
            u[l + 32] = qs[c * 32 + l] >> 4;
        }
        if (t == FM_DT_Q5_K)
            for (int l = 0; l < 32; l++) {
                u[l] |= (uint8_t)((qh[l] >> (2 * c) & 1) << 4);
                u[l + 32] |= (uint8_t)((qh[l] >> (2 * c + 1) & 1) << 4);
            }
    }
    for (int j = 0; j < 8; j++) {
        int sc, m;
        core_scale_min_k4(j, b + 4, &sc, &m);
        o->sc[2 * j] = o->sc[2 * j + 1] = sc;
        o->mn[2 * j] = o->mn[2 * j + 1] = m;
    }
    o->d = w_scale(b);
    o->dmin = w_scale(b + 2);
}

/* One q8_K activation block. */
typedef struct q8k_act {
    float d;
    int8_t q[QKK];
    int16_t bsum[NG];
} q8k_act;

/* ggml's nearest_int for |v| <= 127: adding 1.5 * 2^23 rounds to an integer
 * (half to even), subtracting it again is exact. */
static inline int round_even(float v) { return (int)((v + 12582912.0f) - 12582912.0f); }

/* One value of q8_K: clamped to +-127 before rounding, which changes no
 * finite result (ggml clamps after rounding; |iscale x| exceeds 127 only by
 * rounding) and sends a NaN (and the infinite iscale of a block of tiny
 * values) to a defined value on every path. */
static inline int8_t quantise_k_value(float x, float iscale)
{
    float v = x * iscale;
    v = v > 127.0f ? 127.0f : v;
    v = v >= -127.0f ? v : -127.0f;
    return (int8_t)round_even(v);
}

/* ggml's quantize_row_q8_K_ref for one block of QKK values. */
static void quantise_act_k(q8k_act *a, const float *x)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QKK; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    float iscale = amax != 0.0f ? -127.0f / max : 0.0f;
    a->d = amax != 0.0f ? 1.0f / iscale : 0.0f;
    for (int j = 0; j < QKK; j++) a->q[j] = quantise_k_value(x[j], iscale);
    for (int g = 0; g < NG; g++) {
        int sum = 0;
        for (int j = 0; j < GK; j++) sum += a->q[g * GK + j];
        a->bsum[g] = (int16_t)sum;
    }
}

static void kq_gemm_ref(const q8_problem *P, q8k_act *col, float *v)
{
    int nb = P->w->cols / QKK;
    size_t bb = core_dtype_block_bytes(P->w->dtype);
    const uint8_t *wd = P->w->data;
    kq_block wb;
    for (int p = 0; p < P->N; p++) {
        for (int b = 0; b < nb; b++) {
            for (int i = 0; i < QKK / QK; i++) gather_block(P, p, b * QKK + i * QK, v + i * QK);
            quantise_act_k(&col[b], v);
        }
        for (int o = 0; o < P->w->rows; o++) {
            float sum = 0.0f;
            for (int b = 0; b < nb; b++) {
                kq_unpack(P->w->dtype, wd + ((size_t)o * nb + b) * bb, &wb);
                const q8k_act *a = &col[b];
                int32_t S = 0, M = 0;
                for (int g = 0; g < NG; g++) {
                    int32_t dot = 0;
                    for (int j = g * GK; j < (g + 1) * GK; j++) dot += (int32_t)wb.u[j] * a->q[j];
                    S += wb.sc[g] * dot;
                    M += wb.mn[g] * a->bsum[g];
                }
                if (P->fmt == FMT_K6) sum += (float)(S - M) * (wb.d * a->d);
                else sum += (float)S * (wb.d * a->d) - (float)M * (wb.dmin * a->d);
            }
            *out_at(P, o, p) = sum + (P->bias ? P->bias[o] : 0.0f);
        }
    }
}

/* The fast paths' weight rows: rows [o, o + mr) decoded into dec (stride
 * nb * DB), the layout the K micro-kernels read. */
static void kq_decode(const q8_problem *P, int o, int mr, uint8_t *dec)
{
    int nb = P->w->cols / QKK;
    size_t bb = core_dtype_block_bytes(P->w->dtype);
    const uint8_t *wd = P->w->data;
    kq_block wb;
    for (int r = 0; r < mr; r++)
        for (int b = 0; b < nb; b++) {
            uint8_t *db = dec + ((size_t)r * nb + b) * DB;
            kq_unpack(P->w->dtype, wd + ((size_t)(o + r) * nb + b) * bb, &wb);
            memcpy(db + D_Q, wb.u, QKK);
            int32_t sc[NG], mn[NG / 2];
            for (int g = 0; g < NG; g++) sc[g] = wb.sc[g];
            for (int i = 0; i < NG / 2; i++) mn[i] = (int32_t)((uint32_t)(uint16_t)wb.mn[2 * i] | (uint32_t)wb.mn[2 * i + 1] << 16);
            memcpy(db + D_SC, sc, sizeof sc);
            memcpy(db + D_MN, mn, sizeof mn);
            memcpy(db + D_D, &wb.d, 4);
            memcpy(db + D_D + 4, &wb.dmin, 4);
        }
}

/* ---- panels ---- */

/* The values k0 .. k0+QK of columns p0 .. p0+PW into v[value][column]
 * (columns past N are zero): a conv's taps walk (ci, ky, kx) in the weight
 * row's order, 16 columns per tap. */
static void gather_panel_block(const q8_problem *P, int p0, int k0, float v[QK][PW])
{
    if (!P->conv) {
        for (int j = 0; j < PW; j++) {
            const float *xj = P->x + (size_t)(p0 + j) * P->w->cols + k0;
            for (int i = 0; i < QK; i++) v[i][j] = p0 + j < P->N ? xj[i] : 0.0f;
        }
        return;
    }
    const kn_conv *c = P->conv;
    int ohw = P->oh * P->ow, taps = c->kh * c->kw, iy0[PW], ix0[PW];
    const float *img[PW];
    for (int j = 0; j < PW; j++) {
        int p = p0 + j < P->N ? p0 + j : 0;
        img[j] = P->x + (size_t)(p / ohw) * c->cin * P->h * P->wd;
        iy0[j] = p0 + j < P->N ? (p % ohw) / P->ow * c->stride - c->pad_t : -(1 << 28); /* past N: never inside */
        ix0[j] = p % P->ow * c->stride - c->pad_l;
    }
    int ci = k0 / taps, ky = k0 % taps / c->kw, kx = k0 % c->kw;
    for (int i = 0; i < QK; i++) {
        size_t plane = (size_t)ci * P->h * P->wd;
        for (int j = 0; j < PW; j++) {
            int iy = iy0[j] + ky, ix = ix0[j] + kx;
            v[i][j] = (unsigned)iy < (unsigned)P->h && (unsigned)ix < (unsigned)P->wd
                          ? img[j][plane + (size_t)iy * P->wd + ix] : 0.0f;
        }
        if (++kx == c->kw) {
            kx = 0;
            if (++ky == c->kh) ky = 0, ci++;
        }
    }
}

/* Panel of columns p0 .. p0+PW: quantise_act on each column, written as
 * loops over the 16 columns (which the compiler vectorises), then the bytes
 * interleaved by 4. */
static void pack_panel(const q8_problem *P, int p0, uint8_t *pan)
{
    int nb = P->w->cols / QK;
    float v[QK][PW], amax[PW], id[PW];
    int8_t q[QK][PW];
    for (int b = 0; b < nb; b++) {
        uint8_t *pb = pan + (size_t)b * PB;
        int32_t *corr = (int32_t *)(pb + P_CORR);
        float *d = (float *)(pb + P_D);
        gather_panel_block(P, p0, b * QK, v);
        for (int j = 0; j < PW; j++) amax[j] = 0.0f;
        for (int i = 0; i < QK; i++)
            for (int j = 0; j < PW; j++) {
                float a = fabsf(v[i][j]);
                amax[j] = a > amax[j] ? a : amax[j];
            }
        for (int j = 0; j < PW; j++) {
            float dj = amax[j] / 127.0f;
            id[j] = dj != 0.0f ? 1.0f / dj : 0.0f;
            d[j] = core_f16_to_f32_1(core_f32_to_f16_1(dj));
            corr[j] = 0;
        }
        for (int i = 0; i < QK; i++)
            for (int j = 0; j < PW; j++) {
                float x = v[i][j] * id[j];
                x = x > 127.0f ? 127.0f : x;
                x = x >= -127.0f ? x : -127.0f;
                q[i][j] = (int8_t)round_q(x);
                corr[j] -= 128 * q[i][j];
            }
        for (int k4 = 0; k4 < QK / 4; k4++)
            for (int j = 0; j < PW; j++)
                for (int t = 0; t < 4; t++) pb[P_Q + k4 * PW * 4 + j * 4 + t] = (uint8_t)q[4 * k4 + t][j];
    }
}

/* K panel of columns p0 .. p0+PW, one super-block: v [QKK][PW] values to
 * q8_K as quantise_act_k per column (loops over the 16 columns, which the
 * compiler vectorises with the same IEEE operations), the bytes interleaved
 * by 4, the group sums paired by 2. */
static inline __attribute__((always_inline)) void quantise_panel_k(float v[QKK][PW], uint8_t *pb)
{
    float amax[PW], max[PW], is[PW], *d = (float *)(pb + PK_D);
    int8_t q[QKK][PW];
    int16_t *bs = (int16_t *)(pb + PK_BS);
    for (int j = 0; j < PW; j++) amax[j] = max[j] = 0.0f;
    for (int i = 0; i < QKK; i++)
        for (int j = 0; j < PW; j++) {
            float a = fabsf(v[i][j]);
            int more = a > amax[j];
            amax[j] = more ? a : amax[j];
            max[j] = more ? v[i][j] : max[j];
        }
    for (int j = 0; j < PW; j++) {
        is[j] = amax[j] != 0.0f ? -127.0f / max[j] : 0.0f;
        d[j] = amax[j] != 0.0f ? 1.0f / is[j] : 0.0f;
    }
    for (int i = 0; i < QKK; i++)
        for (int j = 0; j < PW; j++) q[i][j] = quantise_k_value(v[i][j], is[j]);
    for (int g = 0; g < NG; g++)
        for (int j = 0; j < PW; j++) {
            int sum = 0;
            for (int i = g * GK; i < (g + 1) * GK; i++) sum += q[i][j];
            bs[(g / 2) * PW * 2 + j * 2 + g % 2] = (int16_t)sum;
        }
    for (int k4 = 0; k4 < QKK / 4; k4++)
        for (int j = 0; j < PW; j++)
            for (int t = 0; t < 4; t++) pb[PK_Q + k4 * PW * 4 + j * 4 + t] = (uint8_t)q[4 * k4 + t][j];
}

static void pack_panel_k(const q8_problem *P, int p0, uint8_t *pan)
{
    float v[QKK][PW];
    for (int b = 0; b < P->w->cols / QKK; b++) {
        for (int i = 0; i < QKK / QK; i++) gather_panel_block(P, p0, b * QKK + i * QK, &v[i * QK]);
        quantise_panel_k(v, pan + (size_t)b * PBK);
    }
}

/* ---- micro-kernels: out[r][0 .. 16*np) for rows w .. w+mr (row stride ws
 * bytes) over np panels (stride ps bytes), nb blocks ---- */

#if defined(__x86_64__)
/* A weight block's fp16 scale, converted in-line (F16C; exact, as
 * core_f16_to_f32_1): a call here would spill every accumulator. */
#define W_SCALE(b) _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((b)[0] | (b)[1] << 8)))

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* AVX-512 VNNI: up to 4 rows x 2 panels (8 float and 8 int32 accumulators). */
#define MK512_BODY(MR, NP)                                                                              \
    __m512 f[MR][NP];                                                                                   \
    for (int r = 0; r < MR; r++)                                                                        \
        for (int v = 0; v < NP; v++) f[r][v] = _mm512_setzero_ps();                                     \
    for (int b = 0; b < nb; b++) {                                                                      \
        __m512i acc[MR][NP];                                                                            \
        for (int v = 0; v < NP; v++) {                                                                  \
            __m512i c0 = _mm512_loadu_si512(pan + v * ps + (size_t)b * PB + P_CORR);                    \
            for (int r = 0; r < MR; r++) acc[r][v] = c0;                                                \
        }                                                                                               \
        const uint8_t *wb = w + (size_t)b * QB + 2;                                                     \
        for (int k4 = 0; k4 < QK / 4; k4++) {                                                           \
            __m512i a[NP];                                                                              \
            for (int v = 0; v < NP; v++) a[v] = _mm512_loadu_si512(pan + v * ps + (size_t)b * PB + k4 * 64); \
            for (int r = 0; r < MR; r++) {                                                              \
                __m512i wv = _mm512_set1_epi32((int)(load_u32(wb + r * ws + k4 * 4) ^ 0x80808080u));    \
                for (int v = 0; v < NP; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], wv, a[v]);      \
            }                                                                                           \
        }                                                                                               \
        for (int r = 0; r < MR; r++) {                                                                  \
            __m512 dw = _mm512_set1_ps(W_SCALE(w + r * ws + (size_t)b * QB));                           \
            for (int v = 0; v < NP; v++) {                                                              \
                __m512 dx = _mm512_loadu_ps((const float *)(pan + v * ps + (size_t)b * PB + P_D));                        \
                __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][v]), _mm512_mul_ps(dw, dx));          \
                f[r][v] = _mm512_add_ps(f[r][v], t);                                                    \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    for (int r = 0; r < MR; r++)                                                                        \
        for (int v = 0; v < NP; v++) _mm512_storeu_ps(out + r * 2 * PW + v * PW, f[r][v]);

#define MK_ARGS const uint8_t *w, size_t ws, int nb, const uint8_t *pan, size_t ps, float *out
#define T512 __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
T512 static void mk512_4x2(MK_ARGS) { MK512_BODY(4, 2) }
T512 static void mk512_4x1(MK_ARGS) { MK512_BODY(4, 1) }
T512 static void mk512_1x2(MK_ARGS) { MK512_BODY(1, 2) }
T512 static void mk512_1x1(MK_ARGS) { MK512_BODY(1, 1) }

/* The AVX-512 packer: pack_panel's arithmetic on 16 columns per vector
 * (the same IEEE operations, so the same bits: max, divisions, vcvtps2ph
 * rounding to nearest even as core_f32_to_f16_1, the clamps ordered so a
 * NaN ends at -127 as there, round_q's truncate-and-adjust). The 16 columns
 * of a stride-1 convolution's panel that lie in one output row read each
 * tap as one masked load (lanes outside the image masked to zero). */
#define T512P __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl")))
T512P static int gather_row_segment(const q8_problem *P, int p0, int k0, __m512 v[QK])
{
    const kn_conv *c = P->conv;
    int ohw = P->oh * P->ow;
    if (c->stride != 1 || p0 + PW > P->N || p0 / ohw != (p0 + PW - 1) / ohw ||
        (p0 % ohw) / P->ow != (p0 % ohw + PW - 1) / P->ow)
        return 0;
    int taps = c->kh * c->kw, oy = (p0 % ohw) / P->ow, ox0 = p0 % P->ow;
    const float *img = P->x + (size_t)(p0 / ohw) * c->cin * P->h * P->wd;
    int ci = k0 / taps, ky = k0 % taps / c->kw, kx = k0 % c->kw;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int i = 0; i < QK; i++) {
        int iy = oy - c->pad_t + ky, ix = ox0 - c->pad_l + kx;
        if ((unsigned)iy >= (unsigned)P->h) {
            v[i] = _mm512_setzero_ps();
        } else {
            __m512i col = _mm512_add_epi32(lane, _mm512_set1_epi32(ix));
            __mmask16 in = _mm512_cmpge_epi32_mask(col, _mm512_setzero_si512()) &
                           _mm512_cmplt_epi32_mask(col, _mm512_set1_epi32(P->wd));
            const float *row = img + ((size_t)ci * P->h + iy) * P->wd;
            v[i] = _mm512_maskz_loadu_ps(in, row + ix); /* masked lanes are never read */
        }
        if (++kx == c->kw) {
            kx = 0;
            if (++ky == c->kh) ky = 0, ci++;
        }
    }
    return 1;
}

T512P static void pack_panel_512(const q8_problem *P, int p0, uint8_t *pan)
{
    int nb = P->w->cols / QK;
    float vs[QK][PW];
    __m512 v[QK];
    const __m512 half = _mm512_set1_ps(0.5f), top = _mm512_set1_ps(127.0f), bottom = _mm512_set1_ps(-127.0f);
    for (int b = 0; b < nb; b++) {
        uint8_t *pb = pan + (size_t)b * PB;
        if (!P->conv || !gather_row_segment(P, p0, b * QK, v)) {
            gather_panel_block(P, p0, b * QK, vs);
            for (int i = 0; i < QK; i++) v[i] = _mm512_loadu_ps(vs[i]);
        }
        __m512 amax = _mm512_setzero_ps();
        for (int i = 0; i < QK; i++) amax = _mm512_max_ps(_mm512_abs_ps(v[i]), amax);
        __m512 d = _mm512_div_ps(amax, top);
        __mmask16 nz = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_OQ);
        __m512 id = _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), d);
        _mm512_storeu_ps(pb + P_D, _mm512_cvtph_ps(_mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        __m512i sum = _mm512_setzero_si512();
        __m128i q[4];
        for (int i = 0; i < QK; i++) {
            __m512 x = _mm512_mul_ps(v[i], id);
            x = _mm512_min_ps(top, x);    /* 127 < x ? 127 : x (NaN stays) */
            x = _mm512_max_ps(x, bottom); /* x > -127 ? x : -127 (NaN -> -127) */
            __m512i t = _mm512_cvttps_epi32(x);
            __m512 f = _mm512_sub_ps(x, _mm512_cvtepi32_ps(t));
            t = _mm512_mask_add_epi32(t, _mm512_cmp_ps_mask(f, half, _CMP_GE_OQ), t, _mm512_set1_epi32(1));
            t = _mm512_mask_sub_epi32(t, _mm512_cmp_ps_mask(f, _mm512_sub_ps(_mm512_setzero_ps(), half), _CMP_LE_OQ), t,
                                      _mm512_set1_epi32(1));
            sum = _mm512_add_epi32(sum, t);
            q[i % 4] = _mm512_cvtepi32_epi8(t);
            if (i % 4 == 3) { /* 4 values x 16 columns -> [16][4] */
                __m128i a = _mm_unpacklo_epi8(q[0], q[1]), bb = _mm_unpackhi_epi8(q[0], q[1]);
                __m128i c = _mm_unpacklo_epi8(q[2], q[3]), dd = _mm_unpackhi_epi8(q[2], q[3]);
                uint8_t *o = pb + P_Q + (i / 4) * PW * 4;
                _mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(a, c));
                _mm_storeu_si128((__m128i *)(o + 16), _mm_unpackhi_epi16(a, c));
                _mm_storeu_si128((__m128i *)(o + 32), _mm_unpacklo_epi16(bb, dd));
                _mm_storeu_si128((__m128i *)(o + 48), _mm_unpackhi_epi16(bb, dd));
            }
        }
        _mm512_storeu_si512(pb + P_CORR, _mm512_mullo_epi32(sum, _mm512_set1_epi32(-128)));
    }
}

/* The K packer on AVX-512: the stride-1 convolution's in-row panels
 * gathered as in pack_panel_512, the same quantiser compiled for AVX-512. */
T512P static void pack_panel_k512(const q8_problem *P, int p0, uint8_t *pan)
{
    float v[QKK][PW];
    __m512 r[QK];
    for (int b = 0; b < P->w->cols / QKK; b++) {
        for (int i = 0; i < QKK / QK; i++) {
            int k0 = b * QKK + i * QK;
            if (P->conv && gather_row_segment(P, p0, k0, r))
                for (int t = 0; t < QK; t++) _mm512_storeu_ps(v[i * QK + t], r[t]);
            else
                gather_panel_block(P, p0, k0, &v[i * QK]);
        }
        quantise_panel_k(v, pan + (size_t)b * PBK);
    }
}

/* K micro-kernels on AVX-512 VNNI: up to 4 rows x 2 panels of decoded rows
 * (w, stride ws) over nb super-blocks; G values per group (Q6_K 16, Q4_K /
 * Q5_K 32: two groups share a scale, so their lanes are scaled together);
 * SINGLE: Q6_K's (S - M) d, else S d - M dmin. */
static inline int32_t load_i32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline float load_f32(const uint8_t *p)
{
    float v;
    memcpy(&v, p, 4);
    return v;
}

#define MK512K_BODY(MR, NP, G, SINGLE)                                                                  \
    __m512 f[MR][NP];                                                                                   \
    for (int r = 0; r < MR; r++)                                                                        \
        for (int v = 0; v < NP; v++) f[r][v] = _mm512_setzero_ps();                                     \
    for (int b = 0; b < nb; b++) {                                                                      \
        const uint8_t *pb = pan + (size_t)b * PBK, *wb = w + (size_t)b * DB;                            \
        __m512i S[MR][NP], acc[MR][NP];                                                                 \
        for (int r = 0; r < MR; r++)                                                                    \
            for (int v = 0; v < NP; v++) S[r][v] = _mm512_setzero_si512();                              \
        for (int g = 0; g < QKK / G; g++) {                                                             \
            for (int r = 0; r < MR; r++)                                                                \
                for (int v = 0; v < NP; v++) acc[r][v] = _mm512_setzero_si512();                        \
            for (int k4 = g * G / 4; k4 < (g + 1) * G / 4; k4++) {                                      \
                __m512i a[NP];                                                                          \
                for (int v = 0; v < NP; v++) a[v] = _mm512_loadu_si512(pb + v * ps + PK_Q + k4 * 64);   \
                for (int r = 0; r < MR; r++) {                                                          \
                    __m512i wv = _mm512_set1_epi32((int)load_u32(wb + r * ws + D_Q + k4 * 4));          \
                    for (int v = 0; v < NP; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], wv, a[v]);  \
                }                                                                                       \
            }                                                                                           \
            for (int r = 0; r < MR; r++) {                                                              \
                __m512i sc = _mm512_set1_epi32(load_i32(wb + r * ws + D_SC + g * (G / GK) * 4));        \
                for (int v = 0; v < NP; v++) S[r][v] = _mm512_add_epi32(S[r][v], _mm512_mullo_epi32(acc[r][v], sc)); \
            }                                                                                           \
        }                                                                                               \
        for (int r = 0; r < MR; r++)                                                                    \
            for (int v = 0; v < NP; v++) acc[r][v] = _mm512_setzero_si512();                            \
        for (int i = 0; i < NG / 2; i++) {                                                              \
            __m512i bs[NP];                                                                             \
            for (int v = 0; v < NP; v++) bs[v] = _mm512_loadu_si512(pb + v * ps + PK_BS + i * 64);      \
            for (int r = 0; r < MR; r++) {                                                              \
                __m512i mn = _mm512_set1_epi32(load_i32(wb + r * ws + D_MN + i * 4));                   \
                for (int v = 0; v < NP; v++) acc[r][v] = _mm512_dpwssd_epi32(acc[r][v], mn, bs[v]);     \
            }                                                                                           \
        }                                                                                               \
        for (int r = 0; r < MR; r++) {                                                                  \
            __m512 dw = _mm512_set1_ps(load_f32(wb + r * ws + D_D));                                    \
            __m512 dm = _mm512_set1_ps(load_f32(wb + r * ws + D_D + 4));                                \
            (void)dm;                                                                                   \
            for (int v = 0; v < NP; v++) {                                                              \
                __m512 dx = _mm512_loadu_ps((const float *)(pb + v * ps + PK_D)), t;                    \
                if (SINGLE)                                                                             \
                    t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(S[r][v], acc[r][v])), _mm512_mul_ps(dw, dx)); \
                else                                                                                    \
                    t = _mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(S[r][v]), _mm512_mul_ps(dw, dx)), \
                                      _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][v]), _mm512_mul_ps(dm, dx))); \
                f[r][v] = _mm512_add_ps(f[r][v], t);                                                    \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    for (int r = 0; r < MR; r++)                                                                        \
        for (int v = 0; v < NP; v++) _mm512_storeu_ps(out + r * 2 * PW + v * PW, f[r][v]);

T512 static void mk512k_4x2(MK_ARGS) { MK512K_BODY(4, 2, 32, 0) }
T512 static void mk512k_1x2(MK_ARGS) { MK512K_BODY(1, 2, 32, 0) }
T512 static void mk512k_4x1(MK_ARGS) { MK512K_BODY(4, 1, 32, 0) }
T512 static void mk512k_1x1(MK_ARGS) { MK512K_BODY(1, 1, 32, 0) }
T512 static void mk512k6_4x2(MK_ARGS) { MK512K_BODY(4, 2, 16, 1) }
T512 static void mk512k6_1x2(MK_ARGS) { MK512K_BODY(1, 2, 16, 1) }
T512 static void mk512k6_4x1(MK_ARGS) { MK512K_BODY(4, 1, 16, 1) }
T512 static void mk512k6_1x1(MK_ARGS) { MK512K_BODY(1, 1, 16, 1) }

/* 256-bit: up to 2 rows x 1 panel (two 8-column halves). STEP(acc, wv, a)
 * adds one 4-value step of one row to a lane vector. */
#define MK256_BODY(MR, CORR, STEP)                                                                      \
    __m256 f[MR][2];                                                                                    \
    for (int r = 0; r < MR; r++) f[r][0] = f[r][1] = _mm256_setzero_ps();                               \
    for (int b = 0; b < nb; b++) {                                                                      \
        __m256i acc[MR][2];                                                                             \
        for (int h = 0; h < 2; h++) {                                                                   \
            __m256i c0 = CORR ? _mm256_loadu_si256((const __m256i *)(pan + (size_t)b * PB + P_CORR + h * 32)) \
                              : _mm256_setzero_si256();                                                 \
            for (int r = 0; r < MR; r++) acc[r][h] = c0;                                                \
        }                                                                                               \
        const uint8_t *wb = w + (size_t)b * QB + 2;                                                     \
        for (int k4 = 0; k4 < QK / 4; k4++) {                                                           \
            __m256i a0 = _mm256_loadu_si256((const __m256i *)(pan + (size_t)b * PB + k4 * 64));         \
            __m256i a1 = _mm256_loadu_si256((const __m256i *)(pan + (size_t)b * PB + k4 * 64 + 32));    \
            for (int r = 0; r < MR; r++) {                                                              \
                __m256i wv = _mm256_set1_epi32((int)load_u32(wb + r * ws + k4 * 4));                    \
                STEP(acc[r][0], wv, a0);                                                                \
                STEP(acc[r][1], wv, a1);                                                                \
            }                                                                                           \
        }                                                                                               \
        __m256 dx0 = _mm256_loadu_ps((const float *)(pan + (size_t)b * PB + P_D));                      \
        __m256 dx1 = _mm256_loadu_ps((const float *)(pan + (size_t)b * PB + P_D + 32));                 \
        for (int r = 0; r < MR; r++) {                                                                  \
            __m256 dw = _mm256_set1_ps(W_SCALE(w + r * ws + (size_t)b * QB));                           \
            f[r][0] = _mm256_add_ps(f[r][0], _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][0]), _mm256_mul_ps(dw, dx0))); \
            f[r][1] = _mm256_add_ps(f[r][1], _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][1]), _mm256_mul_ps(dw, dx1))); \
        }                                                                                               \
    }                                                                                                   \
    for (int r = 0; r < MR; r++) {                                                                      \
        _mm256_storeu_ps(out + r * 2 * PW, f[r][0]);                                                    \
        _mm256_storeu_ps(out + r * 2 * PW + 8, f[r][1]);                                                \
    }

/* AVX-VNNI: weights offset to unsigned, lanes start from the correction. */
#define STEP_AVXVNNI(acc, wv, a) acc = _mm256_dpbusd_avx_epi32(acc, _mm256_xor_si256(wv, _mm256_set1_epi8((char)0x80)), a)
/* AVX2: |w| times x with w's sign, pairs to int32. */
#define STEP_AVX2(acc, wv, a)                                                                           \
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv),        \
                                                                       _mm256_sign_epi8(a, wv)),        \
                                                  _mm256_set1_epi16(1)))

#define TVNNI __attribute__((target("avx2,f16c,avxvnni")))
#define TAVX2 __attribute__((target("avx2,f16c")))
TVNNI static void mkvnni_2(MK_ARGS) { (void)ps; MK256_BODY(2, 1, STEP_AVXVNNI) }
TVNNI static void mkvnni_1(MK_ARGS) { (void)ps; MK256_BODY(1, 1, STEP_AVXVNNI) }
TAVX2 static void mkavx2_2(MK_ARGS) { (void)ps; MK256_BODY(2, 0, STEP_AVX2) }
TAVX2 static void mkavx2_1(MK_ARGS) { (void)ps; MK256_BODY(1, 0, STEP_AVX2) }

/* K micro-kernels on 256 bits: up to 2 rows x 1 panel (two 8-column
 * halves), groups of G as MK512K_BODY. STEP(acc, wv, a) adds 4 unsigned
 * weight bytes times 4 signed activation bytes per lane, MSTEP(acc, mn, bs)
 * an int16-pair product. */
#define MK256K_BODY(MR, G, SINGLE, STEP, MSTEP)                                                         \
    __m256 f[MR][2];                                                                                    \
    for (int r = 0; r < MR; r++) f[r][0] = f[r][1] = _mm256_setzero_ps();                               \
    for (int b = 0; b < nb; b++) {                                                                      \
        const uint8_t *pb = pan + (size_t)b * PBK, *wb = w + (size_t)b * DB;                            \
        __m256i S[MR][2], acc[MR][2];                                                                   \
        for (int r = 0; r < MR; r++) S[r][0] = S[r][1] = _mm256_setzero_si256();                        \
        for (int g = 0; g < QKK / G; g++) {                                                             \
            for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();                \
            for (int k4 = g * G / 4; k4 < (g + 1) * G / 4; k4++) {                                      \
                __m256i a0 = _mm256_loadu_si256((const __m256i *)(pb + PK_Q + k4 * 64));                \
                __m256i a1 = _mm256_loadu_si256((const __m256i *)(pb + PK_Q + k4 * 64 + 32));           \
                for (int r = 0; r < MR; r++) {                                                          \
                    __m256i wv = _mm256_set1_epi32((int)load_u32(wb + r * ws + D_Q + k4 * 4));          \
                    STEP(acc[r][0], wv, a0);                                                            \
                    STEP(acc[r][1], wv, a1);                                                            \
                }                                                                                       \
            }                                                                                           \
            for (int r = 0; r < MR; r++) {                                                              \
                __m256i sc = _mm256_set1_epi32(load_i32(wb + r * ws + D_SC + g * (G / GK) * 4));        \
                S[r][0] = _mm256_add_epi32(S[r][0], _mm256_mullo_epi32(acc[r][0], sc));                 \
                S[r][1] = _mm256_add_epi32(S[r][1], _mm256_mullo_epi32(acc[r][1], sc));                 \
            }                                                                                           \
        }                                                                                               \
        for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();                    \
        for (int i = 0; i < NG / 2; i++) {                                                              \
            __m256i bs0 = _mm256_loadu_si256((const __m256i *)(pb + PK_BS + i * 64));                   \
            __m256i bs1 = _mm256_loadu_si256((const __m256i *)(pb + PK_BS + i * 64 + 32));              \
            for (int r = 0; r < MR; r++) {                                                              \
                __m256i mn = _mm256_set1_epi32(load_i32(wb + r * ws + D_MN + i * 4));                   \
                MSTEP(acc[r][0], mn, bs0);                                                              \
                MSTEP(acc[r][1], mn, bs1);                                                              \
            }                                                                                           \
        }                                                                                               \
        for (int r = 0; r < MR; r++) {                                                                  \
            __m256 dw = _mm256_set1_ps(load_f32(wb + r * ws + D_D));                                    \
            __m256 dm = _mm256_set1_ps(load_f32(wb + r * ws + D_D + 4));                                \
            (void)dm;                                                                                   \
            for (int h = 0; h < 2; h++) {                                                               \
                __m256 dx = _mm256_loadu_ps((const float *)(pb + PK_D + h * 32)), t;                    \
                if (SINGLE)                                                                             \
                    t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(S[r][h], acc[r][h])), _mm256_mul_ps(dw, dx)); \
                else                                                                                    \
                    t = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(S[r][h]), _mm256_mul_ps(dw, dx)), \
                                      _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][h]), _mm256_mul_ps(dm, dx))); \
                f[r][h] = _mm256_add_ps(f[r][h], t);                                                    \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    for (int r = 0; r < MR; r++) {                                                                      \
        _mm256_storeu_ps(out + r * 2 * PW, f[r][0]);                                                    \
        _mm256_storeu_ps(out + r * 2 * PW + 8, f[r][1]);                                                \
    }

#define STEPK_AVXVNNI(acc, wv, a) acc = _mm256_dpbusd_avx_epi32(acc, wv, a)
#define MSTEP_AVXVNNI(acc, mn, bs) acc = _mm256_dpwssd_avx_epi32(acc, mn, bs)
#define STEPK_AVX2(acc, wv, a) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(wv, a), _mm256_set1_epi16(1)))
#define MSTEP_AVX2(acc, mn, bs) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(mn, bs))
TVNNI static void mkvnnik_2(MK_ARGS) { (void)ps; MK256K_BODY(2, 32, 0, STEPK_AVXVNNI, MSTEP_AVXVNNI) }
TVNNI static void mkvnnik_1(MK_ARGS) { (void)ps; MK256K_BODY(1, 32, 0, STEPK_AVXVNNI, MSTEP_AVXVNNI) }
TVNNI static void mkvnnik6_2(MK_ARGS) { (void)ps; MK256K_BODY(2, 16, 1, STEPK_AVXVNNI, MSTEP_AVXVNNI) }
TVNNI static void mkvnnik6_1(MK_ARGS) { (void)ps; MK256K_BODY(1, 16, 1, STEPK_AVXVNNI, MSTEP_AVXVNNI) }
TAVX2 static void mkavx2k_2(MK_ARGS) { (void)ps; MK256K_BODY(2, 32, 0, STEPK_AVX2, MSTEP_AVX2) }
TAVX2 static void mkavx2k_1(MK_ARGS) { (void)ps; MK256K_BODY(1, 32, 0, STEPK_AVX2, MSTEP_AVX2) }
TAVX2 static void mkavx2k6_2(MK_ARGS) { (void)ps; MK256K_BODY(2, 16, 1, STEPK_AVX2, MSTEP_AVX2) }
TAVX2 static void mkavx2k6_1(MK_ARGS) { (void)ps; MK256K_BODY(1, 16, 1, STEPK_AVX2, MSTEP_AVX2) }

/* AMX-INT8 (TDPBSSD, signed x signed): 32 rows x 2 panels per call, four
 * 16 x 16 int32 tiles (tmm0-3) made afresh for each block of 32: the A
 * tiles (tmm4-5) are 16 weight rows' 32 int8 straight from the Q8_0 blocks
 * (row stride ws, no packing), the B tiles (tmm6-7) a panel's [8][16][4]
 * block, which is AMX's B layout as it is. Each block's tiles go to memory
 * and are scaled and added to out's float sums in block order, as on the
 * other paths. */
#define TAMX __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")))
enum { AMX_MR = 32 };

static const kn_amx_tile_config amx_int8_tiles = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, QK, QK, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, QK / 4, QK / 4},
};

TAMX static void amx_int8_begin(void) { _tile_loadconfig(&amx_int8_tiles); }
TAMX static void amx_int8_end(void) { _tile_release(); }

TAMX static void mkamx_32x2(MK_ARGS)
{
    int32_t c[4][16][16] __attribute__((aligned(64)));
    for (int i = 0; i < AMX_MR * 2 * PW; i++) out[i] = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = w + (size_t)b * QB, *pb = pan + (size_t)b * PB;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        _tile_loadd(4, wb + 2, ws);
        _tile_loadd(5, wb + 16 * ws + 2, ws);
        _tile_loadd(6, pb + P_Q, PW * 4);
        _tile_loadd(7, pb + ps + P_Q, PW * 4);
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
        _tile_stored(0, c[0], 64);
        _tile_stored(1, c[1], 64);
        _tile_stored(2, c[2], 64);
        _tile_stored(3, c[3], 64);
        __m512 dx0 = _mm512_loadu_ps((const float *)(pb + P_D)), dx1 = _mm512_loadu_ps((const float *)(pb + ps + P_D));
        for (int r = 0; r < AMX_MR; r++) {
            __m512 dw = _mm512_set1_ps(W_SCALE(wb + (size_t)r * ws));
            const int32_t(*cr)[16] = c[(r / 16) * 2];
            float *o = out + r * 2 * PW;
            __m512 t0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cr[r % 16])), _mm512_mul_ps(dw, dx0));
            __m512 t1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[(r / 16) * 2 + 1][r % 16])),
                                      _mm512_mul_ps(dw, dx1));
            _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), t0));
            _mm512_storeu_ps(o + PW, _mm512_add_ps(_mm512_loadu_ps(o + PW), t1));
        }
    }
}

/* 32 rows of one panel: the AVX-512 VNNI kernel 4 rows at a time. */
TAMX static void mkamx_32x1(MK_ARGS)
{
    for (int r = 0; r < AMX_MR; r += 4) mk512_4x1(w + (size_t)r * ws, ws, nb, pan, ps, out + r * 2 * PW);
}

#endif

typedef void (*mk_fn)(const uint8_t *w, size_t ws, int nb, const uint8_t *pan, size_t ps, float *out);

/* A path's kernels for one weight format: micro-kernels for [full rows]
 * [full panels], [1 row][full], [full][1 panel], [1][1] (mr rows, np panels
 * at most; none: the path does not run that format), and the packer. */
typedef void (*pack_fn)(const q8_problem *P, int p0, uint8_t *pan);

typedef struct q8_kernels {
    int mr, np;
    mk_fn k[4];
    pack_fn pack;
    int rest;                   /* the path for fewer rows than mr, or 0: one at a time */
    void (*begin)(void), (*end)(void); /* per thread around the kernels, or NULL */
} q8_kernels;

typedef struct q8_path {
    const char *name, *cpu;
    q8_kernels f[N_FORMATS];
} q8_path;

enum { PATH_AVX512_VNNI = 3 };
static const q8_path paths[] = {
    {.name = "scalar"},
#if defined(__x86_64__)
    {.name = "avx2", .cpu = "avx2",
     .f = {{.mr = 2, .np = 1, .k = {mkavx2_2, mkavx2_1}, .pack = pack_panel},
           {.mr = 2, .np = 1, .k = {mkavx2k_2, mkavx2k_1}, .pack = pack_panel_k},
           {.mr = 2, .np = 1, .k = {mkavx2k6_2, mkavx2k6_1}, .pack = pack_panel_k}}},
    {.name = "avx-vnni", .cpu = "avxvnni",
     .f = {{.mr = 2, .np = 1, .k = {mkvnni_2, mkvnni_1}, .pack = pack_panel},
           {.mr = 2, .np = 1, .k = {mkvnnik_2, mkvnnik_1}, .pack = pack_panel_k},
           {.mr = 2, .np = 1, .k = {mkvnnik6_2, mkvnnik6_1}, .pack = pack_panel_k}}},
    [PATH_AVX512_VNNI] = {.name = "avx512-vnni", .cpu = "avx512vnni",
     .f = {{.mr = 4, .np = 2, .k = {mk512_4x2, mk512_1x2, mk512_4x1, mk512_1x1}, .pack = pack_panel_512},
           {.mr = 4, .np = 2, .k = {mk512k_4x2, mk512k_1x2, mk512k_4x1, mk512k_1x1}, .pack = pack_panel_k512},
           {.mr = 4, .np = 2, .k = {mk512k6_4x2, mk512k6_1x2, mk512k6_4x1, mk512k6_1x1}, .pack = pack_panel_k512}}},
    /* K-quants have no AMX kernels: on an AMX CPU they take avx512-vnni */
    {.name = "amx-int8", .cpu = "amxint8",
     .f = {{.mr = AMX_MR, .np = 2, .k = {mkamx_32x2, NULL, mkamx_32x1}, .pack = pack_panel_512,
            .rest = PATH_AVX512_VNNI, .begin = amx_int8_begin, .end = amx_int8_end}}},
#endif
};
enum { N_PATHS = sizeof paths / sizeof paths[0] };

static int path_runs(int i)
{
#if defined(__x86_64__)
    if (!paths[i].cpu) return 1;
    if (!core_cpu_has_f16c_avx2()) return 0;
    if (!strcmp(paths[i].cpu, "avxvnni")) return __builtin_cpu_supports("avxvnni");
    if (!strcmp(paths[i].cpu, "amxint8")) return path_runs(i - 1) && kn_has_amx_int8();
    if (!strcmp(paths[i].cpu, "avx512vnni"))
        return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw");
    return 1;
#else
    return i == 0;
#endif
}

/* Path i runs weights of format f here. */
static int path_serves(int i, q8_format f) { return path_runs(i) && (i == 0 || paths[i].f[f].k[0]); }

/* The best path the chosen ISA allows for format f (FM_ISA lowers it as
 * for the GEMM): AMX-INT8 (Q8_0 only; FM_AMX=0 turns it off) or AVX-512
 * VNNI under avx512, AVX-VNNI or AVX2 under avx2, else scalar. */
static int choose_path(q8_format f)
{
    kn_isa isa = kn_isa_chosen();
    int best = 0;
    for (int i = 1; i < N_PATHS; i++) {
        int allowed = paths[i].f[FMT_Q8_0].mr >= 4 ? isa == FM_ISA_AVX512 : isa >= FM_ISA_AVX2;
        if (allowed && path_serves(i, f)) best = i;
    }
    return best;
}

static q8_format format_of(core_dtype t)
{
    return t == FM_DT_Q8_0 ? FMT_Q8_0 : t == FM_DT_Q6_K ? FMT_K6 : FMT_K_MIN;
}

const char *kn_q8_path(void) { return paths[choose_path(FMT_Q8_0)].name; }
const char *kn_q8_path_for(core_dtype t) { return paths[choose_path(format_of(t))].name; }

/* ---- the blocked driver ---- */

typedef struct q8_layout {
    int nb, npanels, chunk_panels, nchunks, rows_per, nsplit, threads;
    size_t panel_bytes, decoded_bytes, slice_bytes;
} q8_layout;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* A thread's slice: its chunk of panels, the micro-kernels' output tile
 * and (K-quants) the decoded weight rows. */
static q8_layout layout_of(q8_format f, int N, const kn_mat *w, int threads)
{
    q8_layout L = {.nb = w->cols / fmt_block(f), .npanels = (N + PW - 1) / PW, .threads = threads > 0 ? threads : 1};
    L.panel_bytes = (size_t)L.nb * fmt_panel_block(f);
    size_t fit = CHUNK_BYTES / L.panel_bytes;
    L.chunk_panels = fit < 2 ? 2 : fit > 16 ? 16 : (int)fit & ~1;
    if (L.chunk_panels > L.npanels) L.chunk_panels = L.npanels > 0 ? L.npanels : 1;
    L.nchunks = (L.npanels + L.chunk_panels - 1) / L.chunk_panels;
    L.nsplit = 1;
    if (L.nchunks < 2 * L.threads) {
        int want = (2 * L.threads + L.nchunks - 1) / L.nchunks, most = (w->rows + 15) / 16;
        L.nsplit = want < most ? want : most;
    }
    if (L.nsplit < 1) L.nsplit = 1;
    L.rows_per = ((w->rows + L.nsplit - 1) / L.nsplit + 31) & ~31; /* whole AMX row blocks */
    L.decoded_bytes = f == FMT_Q8_0 ? 0 : (size_t)KQ_MR * L.nb * DB;
    L.slice_bytes = align64((size_t)L.chunk_panels * L.panel_bytes) + align64(TILE_ROWS * 2 * PW * sizeof(float)) +
                    L.decoded_bytes;
    return L;
}

static size_t ref_scratch(q8_format f, int K)
{
    size_t act = f == FMT_Q8_0 ? (size_t)(K / QK) * sizeof(q8_act) : (size_t)(K / QKK) * sizeof(q8k_act);
    return align64(act) + QKK * sizeof(float);
}

static size_t fast_scratch(q8_format f, int N, const kn_mat *w, int threads)
{
    q8_layout L = layout_of(f, N, w, threads);
    size_t fast = (size_t)L.threads * L.slice_bytes, ref = ref_scratch(f, w->cols);
    return fast > ref ? fast : ref;
}

/* Rows [o0, o1) over the packed chunk starting at column p0 (np panels);
 * dec: the thread's decoded rows (K-quants). */
static void run_rows(const q8_problem *P, int path, const uint8_t *pan, size_t ps, int np, int p0, int o0,
                     int o1, float *tile, uint8_t *dec)
{
    const q8_kernels *k = &paths[path].f[P->fmt];
    int nb = P->w->cols / fmt_block(P->fmt);
    size_t ws = P->fmt == FMT_Q8_0 ? (size_t)nb * QB : (size_t)nb * DB;
    for (int o = o0; o < o1;) {
        if (o1 - o < k->mr && k->rest) {
            run_rows(P, k->rest, pan, ps, np, p0, o, o1, tile, dec);
            return;
        }
        int mr = o1 - o >= k->mr ? k->mr : 1;
        const uint8_t *wr = (const uint8_t *)P->w->data + (size_t)o * ws;
        if (P->fmt != FMT_Q8_0) {
            kq_decode(P, o, mr, dec);
            wr = dec;
        }
        for (int v = 0; v < np;) {
            int nv = np - v >= k->np ? k->np : 1;
            mk_fn fn = k->k[(mr == 1) + 2 * (nv == 1 && k->np > 1)];
            fn(wr, ws, nb, pan + (size_t)v * ps, ps, tile);
            int nj = P->N - (p0 + v * PW) < nv * PW ? P->N - (p0 + v * PW) : nv * PW;
            float *col[2 * PW]; /* the columns' outputs in row o: the divisions once per tile */
            for (int j = 0; j < nj; j++) col[j] = out_at(P, o, p0 + v * PW + j);
            for (int r = 0; r < mr; r++) {
                float b = P->bias ? P->bias[o + r] : 0.0f;
                size_t off = (size_t)r * P->so;
                for (int j = 0; j < nj; j++) col[j][off] = tile[r * 2 * PW + j] + b;
            }
            v += nv;
        }
        o += mr;
    }
}

static void q8_gemm_fast(const q8_problem *P, int path, void *base, int threads)
{
    const q8_kernels *k = &paths[path].f[P->fmt];
    q8_layout L = layout_of(P->fmt, P->N, P->w, threads);
    int items = L.nchunks * L.nsplit;
    double flops = 2.0 * P->N * P->w->rows * (double)P->w->cols;
#pragma omp parallel num_threads(L.threads) if (L.threads > 1 && flops > 2e6)
    {
        uint8_t *slice = (uint8_t *)base + (size_t)omp_get_thread_num() * L.slice_bytes;
        float *tile = (float *)(slice + align64((size_t)L.chunk_panels * L.panel_bytes));
        uint8_t *dec = (uint8_t *)tile + align64(TILE_ROWS * 2 * PW * sizeof(float));
        int packed = -1;
        if (k->begin) k->begin();
#pragma omp for schedule(static)
        for (int it = 0; it < items; it++) {
            int chunk = it / L.nsplit, split = it % L.nsplit;
            int pan0 = chunk * L.chunk_panels, np = L.npanels - pan0 < L.chunk_panels ? L.npanels - pan0 : L.chunk_panels;
            if (packed != chunk) {
                for (int v = 0; v < np; v++) k->pack(P, (pan0 + v) * PW, slice + (size_t)v * L.panel_bytes);
                packed = chunk;
            }
            int o0 = split * L.rows_per, o1 = o0 + L.rows_per < P->w->rows ? o0 + L.rows_per : P->w->rows;
            if (o0 < o1) run_rows(P, path, slice, L.panel_bytes, np, pan0 * PW, o0, o1, tile, dec);
        }
        if (k->end) k->end();
    }
}

/* Runs P on path i in scratch base (NULL: allocates it); -1 without memory. */
static int q8_gemm_run(const q8_problem *P, int i, void *base, int threads)
{
    void *own = NULL;
    if (!base) {
        base = own = core_alloc(i ? fast_scratch(P->fmt, P->N, P->w, threads) : ref_scratch(P->fmt, P->w->cols));
        if (!base) return -1;
    }
    if (i) {
        q8_gemm_fast(P, i, base, threads);
    } else if (P->fmt == FMT_Q8_0) {
        q8_gemm_ref(P, base, (float *)((char *)base + align64((size_t)(P->w->cols / QK) * sizeof(q8_act))));
    } else {
        kq_gemm_ref(P, base, (float *)((char *)base + align64((size_t)(P->w->cols / QKK) * sizeof(q8k_act))));
    }
    core_free(own);
    return 0;
}

static int path_index(const char *name, q8_format f)
{
    for (int i = 0; i < N_PATHS; i++)
        if (!strcmp(paths[i].name, name)) return path_serves(i, f) ? i : -1;
    return -1;
}

/* ---- linears ---- */

/* FM_KQUANT_INT8=0 sends K-quant weights to the float GEMM, which
 * dequantises them per tile (A/B in kbench). */
int kn_q8_applies(const kn_mat *w)
{
    if (w->cols <= 0) return 0;
    if (w->dtype == FM_DT_Q8_0) return w->cols % QK == 0;
    if (w->dtype != FM_DT_Q4_K && w->dtype != FM_DT_Q5_K && w->dtype != FM_DT_Q6_K) return 0;
    const char *e = getenv("FM_KQUANT_INT8");
    return w->cols % QKK == 0 && !(e && *e == '0');
}

static q8_problem linear_problem(float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    return (q8_problem){.fmt = format_of(w->dtype), .w = w, .bias = bias, .x = x, .N = n, .y = y, .so = 1,
                        .sp = (size_t)w->rows, .fold = (size_t)n > 0 ? (size_t)n : 1, .fold_stride = 0};
}

size_t kn_q8_linear_scratch(int n, const kn_mat *w, int threads) { return fast_scratch(format_of(w->dtype), n, w, threads); }

int kn_q8_linear_ws(const kn_scratch *s, float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    if (!s || !s->base || s->bytes < kn_q8_linear_scratch(n, w, s->threads)) return -1;
    q8_problem P = linear_problem(y, x, n, w, bias);
    return q8_gemm_run(&P, choose_path(P.fmt), s->base, s->threads);
}

int kn_q8_linear_path(const char *path, float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    q8_problem P = linear_problem(y, x, n, w, bias);
    int i = path_index(path, P.fmt);
    return i < 0 ? -1 : q8_gemm_run(&P, i, NULL, kn_scratch_threads());
}

void kn_q8_linear_ref(float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    q8_problem P = linear_problem(y, x, n, w, bias);
    if (q8_gemm_run(&P, 0, NULL, 1)) kn_linear_ref(y, x, n, w, bias); /* no memory: the float reference */
}

/* ---- convolutions ---- */

int kn_q8_conv_applies(const kn_conv *c)
{
    return kn_q8_applies(&c->w) && c->w.cols == c->cin * c->kh * c->kw && c->w.rows == c->cout;
}

static q8_problem conv_problem(float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w);
    size_t ohw = (size_t)oh * ow;
    return (q8_problem){.fmt = format_of(c->w.dtype), .w = &c->w, .bias = c->bias, .x = x, .conv = c, .h = h,
                        .wd = w, .oh = oh, .ow = ow, .N = n * oh * ow, .y = y, .so = ohw, .sp = 1,
                        .fold = ohw ? ohw : 1, .fold_stride = (size_t)c->cout * ohw};
}

size_t kn_q8_conv2d_scratch(const kn_conv *c, int n, int h, int w, int threads)
{
    return fast_scratch(format_of(c->w.dtype), n * kn_conv_out_h(c, h) * kn_conv_out_w(c, w), &c->w, threads);
}

int kn_q8_conv2d_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    if (!s || !s->base || s->bytes < kn_q8_conv2d_scratch(c, n, h, w, s->threads)) return -1;
    q8_problem P = conv_problem(y, x, c, n, h, w);
    return q8_gemm_run(&P, choose_path(P.fmt), s->base, s->threads);
}

int kn_q8_conv2d_path(const char *path, float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    q8_problem P = conv_problem(y, x, c, n, h, w);
    int i = path_index(path, P.fmt);
    return i < 0 ? -1 : q8_gemm_run(&P, i, NULL, kn_scratch_threads());
}

void kn_q8_conv2d_ref(float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    q8_problem P = conv_problem(y, x, c, n, h, w);
    if (q8_gemm_run(&P, 0, NULL, 1)) kn_conv2d_ref(y, x, c, n, h, w);
}
