/* ggml's block-quantised types: sizes, reference dequantisation, and the
 * reference quantisers of the simple types.
 *
 * Written from the GGUF/ggml type definitions (ggml-common.h's block
 * structs). Every block starts with or ends in fp16 scales; all fields are
 * read bytewise (memcpy), so a block may sit at any address. The loops keep
 * ggml's order of float operations (d * sc first, then times q; q * d + m),
 * which the numpy implementation in the gguf package (gguf/quants.py)
 * follows too: tests/test_gguf.c compares the two bit for bit. The Makefile
 * builds with -std=c11, where GCC does not contract a*b+c into an FMA, so
 * the rounding is ggml's.
 *
 *   type   block  bytes  layout
 *   Q4_0    32     18    d, qs[16]            x = (nibble - 8) * d
 *   Q4_1    32     20    d, m, qs[16]         x = nibble * d + m
 *   Q5_0    32     22    d, qh[4], qs[16]     x = (nibble | bit << 4) - 16) * d
 *   Q5_1    32     24    d, m, qh[4], qs[16]  x = (nibble | bit << 4) * d + m
 *   Q8_0    32     34    d, qs[32] int8       x = q * d
 *   Q2_K   256     84    scales[16], qs[64], d, dmin
 *   Q3_K   256    110    hmask[32], qs[64], scales[12], d
 *   Q4_K   256    144    d, dmin, scales[12], qs[128]
 *   Q5_K   256    176    d, dmin, scales[12], qh[32], qs[128]
 *   Q6_K   256    210    ql[128], qh[64], scales[16] int8, d
 * (Q4_0..Q5_1: element j < 16 is the low nibble of qs[j], element j + 16 its
 * high nibble; qh bit j is element j's fifth bit.) */
#include "core/core.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

static const struct { int block; size_t bytes; } qinfo[FM_DT_COUNT] = {
    [FM_DT_Q4_0] = {32, 18}, [FM_DT_Q4_1] = {32, 20}, [FM_DT_Q5_0] = {32, 22},
    [FM_DT_Q5_1] = {32, 24}, [FM_DT_Q8_0] = {32, 34}, [FM_DT_Q2_K] = {256, 84},
    [FM_DT_Q3_K] = {256, 110}, [FM_DT_Q4_K] = {256, 144}, [FM_DT_Q5_K] = {256, 176},
    [FM_DT_Q6_K] = {256, 210},
};

int core_dtype_block(core_dtype t)
{
    return (unsigned)t < FM_DT_COUNT && qinfo[t].block ? qinfo[t].block : 1;
}

size_t core_dtype_block_bytes(core_dtype t)
{
    return (unsigned)t < FM_DT_COUNT && qinfo[t].block ? qinfo[t].bytes : core_dtype_size(t);
}

size_t core_dtype_bytes(core_dtype t, size_t n)
{
    return n / (size_t)core_dtype_block(t) * core_dtype_block_bytes(t);
}

int core_dtype_from_name(const char *s)
{
    for (int t = 0; t < FM_DT_COUNT; t++) {
        const char *n = core_dtype_name((core_dtype)t);
        size_t i = 0;
        while (n[i] && s[i] && toupper((unsigned char)s[i]) == n[i]) i++;
        if (!n[i] && !s[i]) return t;
    }
    return -1;
}

static float f16_at(const uint8_t *p) { return core_f16_to_f32_1((uint16_t)(p[0] | p[1] << 8)); }

static void put_f16(uint8_t *p, float f)
{
    uint16_t h = core_f32_to_f16_1(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static uint32_t u32_at(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- the 32-element types ---- */

static void deq_q4_0(float *y, const uint8_t *b)
{
    float d = f16_at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0F) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void deq_q4_1(float *y, const uint8_t *b)
{
    float d = f16_at(b), m = f16_at(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0x0F) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

static void deq_q5_0(float *y, const uint8_t *b)
{
    float d = f16_at(b);
    uint32_t qh = u32_at(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int h0 = (int)(qh >> j & 1) << 4, h1 = (int)(qh >> (j + 16) & 1) << 4;
        y[j] = (float)(((qs[j] & 0x0F) | h0) - 16) * d;
        y[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
    }
}

static void deq_q5_1(float *y, const uint8_t *b)
{
    float d = f16_at(b), m = f16_at(b + 2);
    uint32_t qh = u32_at(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int h0 = (int)(qh >> j & 1) << 4, h1 = (int)(qh >> (j + 16) & 1) << 4;
        y[j] = (float)((qs[j] & 0x0F) | h0) * d + m;
        y[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
    }
}

static void deq_q8_0(float *y, const uint8_t *b)
{
    float d = f16_at(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* ---- the 256-element K types ---- */

static void deq_q2_k(float *y, const uint8_t *b)
{
    const uint8_t *scales = b, *qs = b + 16;
    float d = f16_at(b + 80), dmin = f16_at(b + 82);
    for (int e = 0; e < 256; e++) {
        int half = e / 128, shift = 2 * (e % 128 / 32), byte = e % 32;
        uint8_t sc = scales[e / 16];
        float dl = d * (float)(sc & 0x0F), ml = dmin * (float)(sc >> 4);
        y[e] = dl * (float)(qs[half * 32 + byte] >> shift & 3) - ml;
    }
}

static void deq_q3_k(float *y, const uint8_t *b)
{
    const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
    float d = f16_at(b + 108);
    for (int e = 0; e < 256; e++) {
        int i = e / 16;
        int lo = i < 8 ? sc[i] & 0x0F : sc[i - 8] >> 4;
        int hi = sc[8 + i % 4] >> (2 * (i / 4)) & 3;
        float dl = d * (float)((lo | hi << 4) - 32);
        int half = e / 128, shift = 2 * (e % 128 / 32), byte = e % 32;
        int q = (qs[half * 32 + byte] >> shift & 3) - ((hmask[byte] >> (e / 32) & 1) ? 0 : 4);
        y[e] = dl * (float)q;
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block. */
void core_scale_min_k4(int j, const uint8_t *s, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

static void deq_q4_k(float *y, const uint8_t *b)
{
    float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4, *qs = b + 16;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        core_scale_min_k4(j, scales, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int e = j * 32 + l;
            int q = qs[e / 64 * 32 + l] >> (4 * (j & 1)) & 0x0F;
            y[e] = d1 * (float)q - m1;
        }
    }
}

static void deq_q5_k(float *y, const uint8_t *b)
{
    float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + 48;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        core_scale_min_k4(j, scales, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int e = j * 32 + l;
            int q = (qs[e / 64 * 32 + l] >> (4 * (j & 1)) & 0x0F) | (qh[l] >> j & 1) << 4;
            y[e] = d1 * (float)q - m1;
        }
    }
}

static void deq_q6_k(float *y, const uint8_t *b)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *scales = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    for (int e = 0; e < 256; e++) {
        int half = e / 128, r = e % 128;
        int lo = ql[half * 64 + r % 64] >> (4 * (r / 64)) & 0x0F;
        int hi = qh[half * 32 + r % 32] >> (2 * (r / 32)) & 3;
        y[e] = d * (float)scales[e / 16] * (float)((lo | hi << 4) - 32);
    }
}

void core_dequant_ref(float *dst, const void *src, core_dtype t, size_t nblocks)
{
    void (*one)(float *, const uint8_t *) = NULL;
    switch (t) {
    case FM_DT_Q4_0: one = deq_q4_0; break;
    case FM_DT_Q4_1: one = deq_q4_1; break;
    case FM_DT_Q5_0: one = deq_q5_0; break;
    case FM_DT_Q5_1: one = deq_q5_1; break;
    case FM_DT_Q8_0: one = deq_q8_0; break;
    case FM_DT_Q2_K: one = deq_q2_k; break;
    case FM_DT_Q3_K: one = deq_q3_k; break;
    case FM_DT_Q4_K: one = deq_q4_k; break;
    case FM_DT_Q5_K: one = deq_q5_k; break;
    case FM_DT_Q6_K: one = deq_q6_k; break;
    default: memset(dst, 0, nblocks * sizeof(float)); return;
    }
    size_t be = (size_t)core_dtype_block(t), bb = core_dtype_block_bytes(t);
    for (size_t i = 0; i < nblocks; i++) one(dst + i * be, (const uint8_t *)src + i * bb);
}

/* ---- quantisers (ggml's quantize_row_*_ref) ---- */

/* The element of largest magnitude (the first of equals), with its sign. */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void minmax(const float *x, int n, float *lo, float *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (x[j] < *lo) *lo = x[j];
        if (x[j] > *hi) *hi = x[j];
    }
}

static int clamp_q(float v, int top) /* (int8_t) truncation, then MIN(top) */
{
    int q = (int)v;
    return q > top ? top : q < 0 ? 0 : q;
}

static void q_q8_0(uint8_t *b, const float *x)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

static void q_q4_0(uint8_t *b, const float *x)
{
    float d = signed_absmax(x, 32) / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < 16; j++)
        b[2 + j] = (uint8_t)(clamp_q(x[j] * id + 8.5f, 15) | clamp_q(x[j + 16] * id + 8.5f, 15) << 4);
}

static void q_q4_1(uint8_t *b, const float *x)
{
    float lo, hi;
    minmax(x, 32, &lo, &hi);
    float d = (hi - lo) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    put_f16(b + 2, lo);
    for (int j = 0; j < 16; j++)
        b[4 + j] = (uint8_t)(clamp_q((x[j] - lo) * id + 0.5f, 15) | clamp_q((x[j + 16] - lo) * id + 0.5f, 15) << 4);
}

static void q_q5(uint8_t *qh_out, uint8_t *qs, const int *q)
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0F) | (q[j + 16] & 0x0F) << 4);
        qh |= (uint32_t)(q[j] >> 4 & 1) << j | (uint32_t)(q[j + 16] >> 4 & 1) << (j + 16);
    }
    for (int i = 0; i < 4; i++) qh_out[i] = (uint8_t)(qh >> (8 * i));
}

static void q_q5_0(uint8_t *b, const float *x)
{
    float d = signed_absmax(x, 32) / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = clamp_q(x[j] * id + 16.5f, 31);
    put_f16(b, d);
    q_q5(b + 2, b + 6, q);
}

static void q_q5_1(uint8_t *b, const float *x)
{
    float lo, hi;
    minmax(x, 32, &lo, &hi);
    float d = (hi - lo) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = clamp_q((x[j] - lo) * id + 0.5f, 31);
    put_f16(b, d);
    put_f16(b + 2, lo);
    q_q5(b + 4, b + 8, q);
}

/* ---- quantisers of the K types ----
 * Not ggml's (which searches scales to minimise the weighted error): the
 * plain range fit, each sub-block's scale (and min) from its own extremes,
 * the block's super-scales from the largest of those, everything rounded to
 * nearest from the fp16 values the block stores. The format is ggml's, so
 * any reader dequantises these blocks; only the choice of scales differs
 * (about 10-20% larger RMS error than ggml's search on Gaussian data). */

static int round_clamp(float v, int lo, int hi)
{
    int q = (int)roundf(v);
    return q < lo ? lo : q > hi ? hi : q;
}

/* Per sub-block of len elements: scale = (max - min') / levels and min =
 * -min' with min' = min(0, min), the affine fit x = scale * q - min. */
static void range_fit(const float *x, int len, int levels, float *scale, float *min)
{
    float lo, hi;
    minmax(x, len, &lo, &hi);
    if (lo > 0) lo = 0;
    if (hi < lo) hi = lo;
    *scale = (hi - lo) / (float)levels;
    *min = -lo;
}

/* Quantised 6-bit (or 4-bit) scale of v against the stored super-scale D. */
static int sub_scale(float v, float D, int top) { return D > 0 ? round_clamp(v / D, 0, top) : 0; }

static void q_affine_k(const float *x, int subs, int len, int levels, int scale_top, float *D, float *M, int *sc,
                       int *mn, uint8_t *q)
{
    float scale[16], min[16], smax = 0, mmax = 0;
    for (int j = 0; j < subs; j++) {
        range_fit(x + j * len, len, levels, &scale[j], &min[j]);
        smax = fmaxf(smax, scale[j]);
        mmax = fmaxf(mmax, min[j]);
    }
    *D = core_f16_to_f32_1(core_f32_to_f16_1(smax / (float)scale_top));
    *M = core_f16_to_f32_1(core_f32_to_f16_1(mmax / (float)scale_top));
    for (int j = 0; j < subs; j++) {
        sc[j] = sub_scale(scale[j], *D, scale_top);
        mn[j] = sub_scale(min[j], *M, scale_top);
        float dl = *D * (float)sc[j], ml = *M * (float)mn[j];
        for (int l = 0; l < len; l++) {
            int e = j * len + l;
            q[e] = (uint8_t)(dl > 0 ? round_clamp((x[e] + ml) / dl, 0, levels) : 0);
        }
    }
}

/* The 12 scale bytes of Q4_K / Q5_K: the inverse of scale_min_k4. */
static void pack_scales_k4(uint8_t *s, const int *sc, const int *m)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | (m[j + 4] & 0x0F) << 4);
    }
}

static void q_q4_k(uint8_t *b, const float *x)
{
    float D, M;
    int sc[8], m[8];
    uint8_t q[256];
    q_affine_k(x, 8, 32, 15, 63, &D, &M, sc, m, q);
    put_f16(b, D);
    put_f16(b + 2, M);
    pack_scales_k4(b + 4, sc, m);
    memset(b + 16, 0, 128);
    for (int e = 0; e < 256; e++) b[16 + e / 64 * 32 + e % 32] |= (uint8_t)(q[e] << (4 * (e / 32 & 1)));
}

static void q_q5_k(uint8_t *b, const float *x)
{
    float D, M;
    int sc[8], m[8];
    uint8_t q[256];
    q_affine_k(x, 8, 32, 31, 63, &D, &M, sc, m, q);
    put_f16(b, D);
    put_f16(b + 2, M);
    pack_scales_k4(b + 4, sc, m);
    memset(b + 16, 0, 160);
    for (int e = 0; e < 256; e++) {
        b[48 + e / 64 * 32 + e % 32] |= (uint8_t)((q[e] & 0x0F) << (4 * (e / 32 & 1)));
        b[16 + e % 32] |= (uint8_t)((q[e] >> 4) << (e / 32));
    }
}

static void q_q2_k(uint8_t *b, const float *x)
{
    float D, M;
    int sc[16], m[16];
    uint8_t q[256];
    q_affine_k(x, 16, 16, 3, 15, &D, &M, sc, m, q);
    for (int j = 0; j < 16; j++) b[j] = (uint8_t)(sc[j] | m[j] << 4);
    memset(b + 16, 0, 64);
    for (int e = 0; e < 256; e++) b[16 + e / 128 * 32 + e % 32] |= (uint8_t)(q[e] << (2 * (e % 128 / 32)));
    put_f16(b + 80, D);
    put_f16(b + 82, M);
}

/* Symmetric sub-blocks of 16 (Q3_K: q in [-4, 3], Q6_K: [-32, 31]): scale =
 * max |x| / qmax, scales quantised against D = max scale / scale_top. */
static float q_symmetric_k(const float *x, int qmax, int scale_top, int *sc, int *q, int qlo, int qhi)
{
    float scale[16], smax = 0;
    for (int j = 0; j < 16; j++) {
        float amax = 0;
        for (int l = 0; l < 16; l++) amax = fmaxf(amax, fabsf(x[j * 16 + l]));
        scale[j] = amax / (float)qmax;
        smax = fmaxf(smax, scale[j]);
    }
    float D = core_f16_to_f32_1(core_f32_to_f16_1(smax / (float)scale_top));
    for (int j = 0; j < 16; j++) {
        sc[j] = sub_scale(scale[j], D, scale_top);
        float dl = D * (float)sc[j];
        for (int l = 0; l < 16; l++) q[j * 16 + l] = dl > 0 ? round_clamp(x[j * 16 + l] / dl, qlo, qhi) : 0;
    }
    return D;
}

static void q_q3_k(uint8_t *b, const float *x)
{
    int sc[16], q[256];
    float D = q_symmetric_k(x, 3, 31, sc, q, -4, 3);
    memset(b, 0, 108);
    uint8_t *hmask = b, *qs = b + 32, *s = b + 96;
    for (int e = 0; e < 256; e++) {
        int v = q[e] + 4; /* 0..7: two low bits, and the high bit set means "no -4" */
        qs[e / 128 * 32 + e % 32] |= (uint8_t)((v & 3) << (2 * (e % 128 / 32)));
        hmask[e % 32] |= (uint8_t)((v >> 2) << (e / 32));
    }
    for (int i = 0; i < 16; i++) {
        int v = sc[i] + 32; /* 6 bits, stored as value + 32 */
        s[i < 8 ? i : i - 8] |= (uint8_t)((v & 0x0F) << (i < 8 ? 0 : 4));
        s[8 + i % 4] |= (uint8_t)((v >> 4) << (2 * (i / 4)));
    }
    put_f16(b + 108, D);
}

static void q_q6_k(uint8_t *b, const float *x)
{
    int sc[16], q[256];
    float D = q_symmetric_k(x, 31, 127, sc, q, -32, 31);
    memset(b, 0, 192);
    uint8_t *ql = b, *qh = b + 128;
    for (int e = 0; e < 256; e++) {
        int v = q[e] + 32, half = e / 128, r = e % 128;
        ql[half * 64 + r % 64] |= (uint8_t)((v & 0x0F) << (4 * (r / 64)));
        qh[half * 32 + r % 32] |= (uint8_t)((v >> 4) << (2 * (r / 32)));
    }
    for (int j = 0; j < 16; j++) b[192 + j] = (uint8_t)(int8_t)sc[j];
    put_f16(b + 208, D);
}

int core_quantize(void *dst, const float *src, core_dtype t, size_t n)
{
    void (*one)(uint8_t *, const float *) = NULL;
    switch (t) {
    case FM_DT_Q2_K: one = q_q2_k; break;
    case FM_DT_Q3_K: one = q_q3_k; break;
    case FM_DT_Q4_K: one = q_q4_k; break;
    case FM_DT_Q5_K: one = q_q5_k; break;
    case FM_DT_Q6_K: one = q_q6_k; break;
    case FM_DT_Q4_0: one = q_q4_0; break;
    case FM_DT_Q4_1: one = q_q4_1; break;
    case FM_DT_Q5_0: one = q_q5_0; break;
    case FM_DT_Q5_1: one = q_q5_1; break;
    case FM_DT_Q8_0: one = q_q8_0; break;
    default: return -1;
    }
    size_t be = (size_t)core_dtype_block(t), bb = core_dtype_block_bytes(t);
    for (size_t i = 0; i < n / be; i++) one((uint8_t *)dst + i * bb, src + i * be);
    return 0;
}
