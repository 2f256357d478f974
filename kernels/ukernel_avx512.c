/* AVX-512 micro-kernels: 12 rows x 32 columns (24 zmm accumulators), in
 * float (vfmadd) and in bf16 pairs (vdpbf16ps, when the CPU has AVX512_BF16).
 * Built for the target whatever -march says; used only when the CPU has it. */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")
#include "kernels/gemm.h"

#include <immintrin.h>
#include "kernels/vexp.h"

enum { Z_MR = 12, Z_NR = 32 };

#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* Adds the accumulators to C, masking rows >= mv and columns >= nv. */
#define STORE_TILE()                                                                      \
    do {                                                                                  \
        if (mv == Z_MR && nv == Z_NR && !acc) {                                           \
            _Pragma("GCC unroll 12") for (int r = 0; r < Z_MR; r++) {                     \
                _mm512_storeu_ps(C + r * ldc, c[r][0]);                                   \
                _mm512_storeu_ps(C + r * ldc + 16, c[r][1]);                              \
            }                                                                             \
        } else if (mv == Z_MR && nv == Z_NR) {                                                   \
            _Pragma("GCC unroll 12") for (int r = 0; r < Z_MR; r++) {                     \
                float *cr = C + r * ldc;                                                  \
                _mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), c[r][0]));        \
                _mm512_storeu_ps(cr + 16, _mm512_add_ps(_mm512_loadu_ps(cr + 16), c[r][1])); \
            }                                                                             \
        } else {                                                                          \
            __mmask16 m0 = nv >= 16 ? 0xffff : (__mmask16)((1u << nv) - 1);               \
            __mmask16 m1 = nv >= 32 ? 0xffff : nv > 16 ? (__mmask16)((1u << (nv - 16)) - 1) : 0; \
            _Pragma("GCC unroll 12") for (int r = 0; r < Z_MR; r++) {                     \
                if (r >= mv) break;                                                       \
                float *cr = C + r * ldc;                                                  \
                _mm512_mask_storeu_ps(cr, m0, acc ? _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), c[r][0]) : c[r][0]); \
                _mm512_mask_storeu_ps(cr + 16, m1,                                        \
                                      acc ? _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), c[r][1]) : c[r][1]); \
            }                                                                             \
        }                                                                                 \
    } while (0)

/* C rows are often a whole feature-map row apart (same cache set): fetch the
 * tile while the k loop runs instead of stalling at the end. */
#define PREFETCH_C()                                                        \
    do {                                                                    \
        if (acc)                                                            \
            for (int r = 0; r < mv; r++) {                                  \
                _mm_prefetch((const char *)(C + r * ldc), _MM_HINT_T0);      \
                _mm_prefetch((const char *)(C + r * ldc + 16), _MM_HINT_T0); \
            }                                                               \
    } while (0)

static void ukernel_f32(int kc, const float *A, const float *B, float *C, ptrdiff_t ldc, int mv, int nv, int acc)
{
    __m512 c[Z_MR][2];
    _Pragma("GCC unroll 12") for (int r = 0; r < Z_MR; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    PREFETCH_C();
    for (int k = 0; k < kc; k++, A += Z_MR, B += Z_NR) {
        __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
        _Pragma("GCC unroll 12") for (int r = 0; r < Z_MR; r++) {
            __m512 a = _mm512_set1_ps(A[r]);
            c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
        }
    }
    STORE_TILE();
}

static void ukernel_bf16(int kc2, const uint32_t *A, const uint32_t *B, float *C, ptrdiff_t ldc, int mv, int nv, int acc)
{
    __m512 c[Z_MR][2];
    _Pragma("GCC unroll 12") for (int r = 0; r < Z_MR; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    PREFETCH_C();
    for (int k = 0; k < kc2; k++, A += Z_MR, B += Z_NR) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(B), b1 = (__m512bh)_mm512_load_si512(B + 16);
        _Pragma("GCC unroll 12") for (int r = 0; r < Z_MR; r++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[r]);
            c[r][0] = _mm512_dpbf16_ps(c[r][0], a, b0);
            c[r][1] = _mm512_dpbf16_ps(c[r][1], a, b1);
        }
    }
    STORE_TILE();
}

/* Round to bf16, nearest even (NaN is not expected in activations). */
static inline __m512i round_bf16(__m512 x)
{
    __m512i i = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(i, 16), _mm512_set1_epi32(1));
    return _mm512_srli_epi32(_mm512_add_epi32(i, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
}

void gemm_pair_bf16_avx512(uint32_t *dst, const float *k0, const float *k1, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i lo = round_bf16(_mm512_loadu_ps(k0 + i)), hi = round_bf16(_mm512_loadu_ps(k1 + i));
        _mm512_storeu_si512(dst + i, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512i lo = round_bf16(_mm512_maskz_loadu_ps(m, k0 + i)), hi = round_bf16(_mm512_maskz_loadu_ps(m, k1 + i));
        _mm512_mask_storeu_epi32(dst + i, m, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
}

/* n consecutive floats -> (n + 1) / 2 bf16 pairs (k even low, k odd high: on
 * little-endian, just the bf16 values in order), an odd last pair's high half
 * zero. Rounds as gemm_pair_bf16_avx512. */
void gemm_row_bf16_avx512(uint32_t *dst, const float *src, int n)
{
    uint16_t *d = (uint16_t *)dst;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtepi32_epi16(round_bf16(_mm512_loadu_ps(src + i))));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_cvtepi32_storeu_epi16(d + i, m, round_bf16(_mm512_maskz_loadu_ps(m, src + i)));
    }
    if (n & 1) d[n] = 0;
}

static void softmax_cols_avx512(float *st, int kb, float scale, float *m, float *l, float *corr)
{
    __m512 vs = _mm512_set1_ps(scale);
    for (int v = 0; v < Z_NR; v += 16) {
        __m512 mold = _mm512_loadu_ps(m + v), mx = mold;
        for (int j = 0; j < kb; j++) mx = _mm512_max_ps(mx, _mm512_mul_ps(_mm512_load_ps(st + j * Z_NR + v), vs));
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j < kb; j++) {
            __m512 p = kn_exp512(_mm512_fmsub_ps(_mm512_load_ps(st + j * Z_NR + v), vs, mx));
            _mm512_store_ps(st + j * Z_NR + v, p);
            sum = _mm512_add_ps(sum, p);
        }
        __m512 cr = kn_exp512(_mm512_sub_ps(mold, mx));
        _mm512_storeu_ps(corr + v, cr);
        _mm512_storeu_ps(l + v, _mm512_fmadd_ps(_mm512_loadu_ps(l + v), cr, sum));
        _mm512_storeu_ps(m + v, mx);
    }
}

/* Transposes 16 vectors in place: r[i] lane j <- r[j] lane i. */
static inline void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) { /* 2x2 blocks of floats */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* 4x4 blocks */
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    /* now r[4a + b] holds rows 4a..4a+3, column b of each 128-bit lane: swap the 128-bit lanes */
    for (int a = 0; a < 4; a++) { /* lanes (0,1) and (2,3) of rows a and a + 4, 8, 12 */
        t[a] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0x88);       /* lanes 0,2 of r[a], 0,2 of r[a+4] */
        t[a + 4] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0xdd);   /* lanes 1,3 */
        t[a + 8] = _mm512_shuffle_f32x4(r[a + 8], r[a + 12], 0x88);
        t[a + 12] = _mm512_shuffle_f32x4(r[a + 8], r[a + 12], 0xdd);
    }
    for (int a = 0; a < 4; a++) {
        r[a] = _mm512_shuffle_f32x4(t[a], t[a + 8], 0x88);
        r[a + 8] = _mm512_shuffle_f32x4(t[a], t[a + 8], 0xdd);
        r[a + 4] = _mm512_shuffle_f32x4(t[a + 4], t[a + 12], 0x88);
        r[a + 12] = _mm512_shuffle_f32x4(t[a + 4], t[a + 12], 0xdd);
    }
}

/* gemm_arch.pack_rows: 16 rows x 16 k at a time, loaded as rows, transposed
 * in registers and stored as 16 panel rows (masked to the panel's width). */
static void pack_rows_avx512(float *d, const float *const *src, int nv, int kc, int panel)
{
    for (int r0 = 0; r0 < panel; r0 += 16) {
        int nr = panel - r0 < 16 ? panel - r0 : 16;
        __mmask16 rm = (__mmask16)((1u << nr) - 1);
        for (int k0 = 0; k0 < kc; k0 += 16) {
            int nk = kc - k0 < 16 ? kc - k0 : 16;
            __mmask16 km = (__mmask16)((1u << nk) - 1);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < nr && r0 + i < nv ? _mm512_maskz_loadu_ps(km, src[r0 + i] + k0) : _mm512_setzero_ps();
            transpose16(r);
            for (int j = 0; j < nk; j++) _mm512_mask_storeu_ps(d + (size_t)(k0 + j) * panel + r0, rm, r[j]);
        }
    }
}

/* erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
static inline __m512 erf512(__m512 x)
{
    __m512 ax = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(ax, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    __m512 y = _mm512_fnmadd_ps(p, kn_exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), ax), ax)), _mm512_set1_ps(1.0f));
    __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}

static inline __m512 sigmoid_gate512(__m512 x, __m512 nbeta)
{
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), kn_exp512(_mm512_mul_ps(nbeta, x))));
}

static inline __mmask16 tail_mask(size_t left) { return left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1); }

static void sigmoid_gate_avx512(float *y, const float *x, size_t n, float beta)
{
    __m512 nb = _mm512_set1_ps(-beta);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, sigmoid_gate512(_mm512_maskz_loadu_ps(m, x + i), nb));
    }
}

static void gelu_avx512(float *y, const float *x, const float *mul, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 g = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v),
                                 _mm512_add_ps(_mm512_set1_ps(1.0f), erf512(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)))));
        if (mul) g = _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, mul + i));
        _mm512_mask_storeu_ps(y + i, m, g);
    }
}

static void affine_avx512(float *y, const float *x, size_t n, float mean, float s, float t, int silu)
{
    __m512 vm = _mm512_set1_ps(mean), vs = _mm512_set1_ps(s), vt = _mm512_set1_ps(t), nb = _mm512_set1_ps(-1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm), vs, vt);
        if (silu) v = sigmoid_gate512(v, nb);
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

const gemm_arch gemm_arch_avx512 = {
    .isa = FM_ISA_AVX512, .mr = Z_MR, .nr = Z_NR, .mc = 384, .kc = 320,
    .f32 = ukernel_f32, .bf16 = NULL, .pair_bf16 = gemm_pair_bf16_avx512,
    .softmax_cols = softmax_cols_avx512, .pack_rows = pack_rows_avx512,
    .sigmoid_gate = sigmoid_gate_avx512, .gelu = gelu_avx512, .affine = affine_avx512,
};

/* Same micro-kernels with the bf16 one, for CPUs with AVX512_BF16. */
const gemm_arch gemm_arch_avx512_bf16 = {
    .isa = FM_ISA_AVX512, .mr = Z_MR, .nr = Z_NR, .mc = 384, .kc = 320,
    .f32 = ukernel_f32, .bf16 = ukernel_bf16, .pair_bf16 = gemm_pair_bf16_avx512,
    .softmax_cols = softmax_cols_avx512, .pack_rows = pack_rows_avx512,
    .sigmoid_gate = sigmoid_gate_avx512, .gelu = gelu_avx512, .affine = affine_avx512,
};
#endif
