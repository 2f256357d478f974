/* AVX2+FMA micro-kernel: 6 rows x 16 columns (12 ymm accumulators). Built
 * for the target whatever -march says; used only when the CPU has it. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include "kernels/gemm.h"

#include <immintrin.h>
#include "kernels/vexp.h"

enum { V_MR = 6, V_NR = 16 };

static void ukernel_avx2(int kc, const float *A, const float *B, float *C, ptrdiff_t ldc, int mv, int nv, int acc)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < kc; k++, A += V_MR, B += V_NR) {
        __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8), a;
#define ROW(r)                                                   \
        a = _mm256_broadcast_ss(A + r);                          \
        c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);               \
        c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    if (mv == V_MR && nv == V_NR && !acc) {
#define ST0(r) _mm256_storeu_ps(C + r * ldc, c##r##0); _mm256_storeu_ps(C + r * ldc + 8, c##r##1);
        ST0(0) ST0(1) ST0(2) ST0(3) ST0(4) ST0(5)
#undef ST0
        return;
    }
    if (mv == V_MR && nv == V_NR) {
#define ST(r)                                                                              \
        _mm256_storeu_ps(C + r * ldc, _mm256_add_ps(_mm256_loadu_ps(C + r * ldc), c##r##0)); \
        _mm256_storeu_ps(C + r * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(C + r * ldc + 8), c##r##1));
        ST(0) ST(1) ST(2) ST(3) ST(4) ST(5)
#undef ST
        return;
    }
    float t[V_MR][V_NR];
#define TS(r) _mm256_storeu_ps(t[r], c##r##0); _mm256_storeu_ps(t[r] + 8, c##r##1);
    TS(0) TS(1) TS(2) TS(3) TS(4) TS(5)
#undef TS
    for (int r = 0; r < mv; r++)
        for (int c = 0; c < nv; c++) C[r * ldc + c] = (acc ? C[r * ldc + c] : 0.0f) + t[r][c];
}

static void softmax_cols_avx2(float *st, int kb, float scale, float *m, float *l, float *corr)
{
    __m256 vs = _mm256_set1_ps(scale);
    for (int v = 0; v < V_NR; v += 8) {
        __m256 mold = _mm256_loadu_ps(m + v), mx = mold;
        for (int j = 0; j < kb; j++) mx = _mm256_max_ps(mx, _mm256_mul_ps(_mm256_load_ps(st + j * V_NR + v), vs));
        __m256 sum = _mm256_setzero_ps();
        for (int j = 0; j < kb; j++) {
            __m256 p = kn_exp256(_mm256_fmsub_ps(_mm256_load_ps(st + j * V_NR + v), vs, mx));
            _mm256_store_ps(st + j * V_NR + v, p);
            sum = _mm256_add_ps(sum, p);
        }
        __m256 cr = kn_exp256(_mm256_sub_ps(mold, mx));
        _mm256_storeu_ps(corr + v, cr);
        _mm256_storeu_ps(l + v, _mm256_fmadd_ps(_mm256_loadu_ps(l + v), cr, sum));
        _mm256_storeu_ps(m + v, mx);
    }
}

/* erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
static inline __m256 erf256(__m256 x)
{
    __m256 signbit = _mm256_set1_ps(-0.0f), ax = _mm256_andnot_ps(signbit, x);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(ax, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    p = _mm256_mul_ps(p, t);
    __m256 y = _mm256_fnmadd_ps(p, kn_exp256(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), ax), ax)), _mm256_set1_ps(1.0f));
    return _mm256_or_ps(y, _mm256_and_ps(signbit, x));
}

static inline __m256 sigmoid_gate256(__m256 x, __m256 nbeta)
{
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), kn_exp256(_mm256_mul_ps(nbeta, x))));
}

static inline __m256 gelu256(__m256 v)
{
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v),
                         _mm256_add_ps(_mm256_set1_ps(1.0f), erf256(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f)))));
}

/* Loads n < 8 floats into a zero-padded vector, and stores them back. */
static inline __m256 load_tail(const float *x, size_t n)
{
    float t[8] = {0};
    for (size_t i = 0; i < n; i++) t[i] = x[i];
    return _mm256_loadu_ps(t);
}
static inline void store_tail(float *y, __m256 v, size_t n)
{
    float t[8];
    _mm256_storeu_ps(t, v);
    for (size_t i = 0; i < n; i++) y[i] = t[i];
}

static void sigmoid_gate_avx2(float *y, const float *x, size_t n, float beta)
{
    __m256 nb = _mm256_set1_ps(-beta);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, sigmoid_gate256(_mm256_loadu_ps(x + i), nb));
    if (i < n) store_tail(y + i, sigmoid_gate256(load_tail(x + i, n - i), nb), n - i);
}

static void gelu_avx2(float *y, const float *x, const float *mul, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = gelu256(_mm256_loadu_ps(x + i));
        _mm256_storeu_ps(y + i, mul ? _mm256_mul_ps(g, _mm256_loadu_ps(mul + i)) : g);
    }
    if (i < n) {
        __m256 g = gelu256(load_tail(x + i, n - i));
        store_tail(y + i, mul ? _mm256_mul_ps(g, load_tail(mul + i, n - i)) : g, n - i);
    }
}

static void affine_avx2(float *y, const float *x, size_t n, float mean, float s, float t, int silu)
{
    __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(s), vt = _mm256_set1_ps(t), nb = _mm256_set1_ps(-1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vs, vt);
        _mm256_storeu_ps(y + i, silu ? sigmoid_gate256(v, nb) : v);
    }
    if (i < n) {
        __m256 v = _mm256_fmadd_ps(_mm256_sub_ps(load_tail(x + i, n - i), vm), vs, vt);
        store_tail(y + i, silu ? sigmoid_gate256(v, nb) : v, n - i);
    }
}

const gemm_arch gemm_arch_avx2 = {
    .isa = FM_ISA_AVX2, .mr = V_MR, .nr = V_NR, .mc = 192, .kc = 320,
    .f32 = ukernel_avx2, .bf16 = NULL, .pair_bf16 = NULL, .softmax_cols = softmax_cols_avx2,
    .sigmoid_gate = sigmoid_gate_avx2, .gelu = gelu_avx2, .affine = affine_avx2,
};
#endif
