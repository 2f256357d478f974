/* AVX2+FMA micro-kernel: 6 rows x 16 columns (12 ymm accumulators). Built
 * for the target whatever -march says; used only when the CPU has it. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include "kernels/gemm.h"

#include <immintrin.h>
#include "kernels/vexp.h"

enum { V_MR = 6, V_NR = 16 };

static void ukernel_avx2(int kc, const float *A, const float *B, float *C, ptrdiff_t ldc, int mv, int nv)
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
        for (int c = 0; c < nv; c++) C[r * ldc + c] += t[r][c];
}

static void softmax_cols_avx2(float *st, int kb, float scale, float *m, float *l, float *corr)
{
    __m256 vs = _mm256_set1_ps(scale);
    for (int v = 0; v < V_NR; v += 8) {
        __m256 mold = _mm256_loadu_ps(m + v), mx = mold;
        for (int j = 0; j < kb; j++) mx = _mm256_max_ps(mx, _mm256_mul_ps(_mm256_load_ps(st + j * V_NR + v), vs));
        __m256 sum = _mm256_setzero_ps();
        for (int j = 0; j < kb; j++) {
            __m256 p = fm_exp256(_mm256_fmsub_ps(_mm256_load_ps(st + j * V_NR + v), vs, mx));
            _mm256_store_ps(st + j * V_NR + v, p);
            sum = _mm256_add_ps(sum, p);
        }
        __m256 cr = fm_exp256(_mm256_sub_ps(mold, mx));
        _mm256_storeu_ps(corr + v, cr);
        _mm256_storeu_ps(l + v, _mm256_fmadd_ps(_mm256_loadu_ps(l + v), cr, sum));
        _mm256_storeu_ps(m + v, mx);
    }
}

const gemm_arch fm_gemm_arch_avx2 = {
    .isa = FM_ISA_AVX2, .mr = V_MR, .nr = V_NR, .mc = 120, .kc = 320,
    .f32 = ukernel_avx2, .bf16 = NULL, .pair_bf16 = NULL, .softmax_cols = softmax_cols_avx2,
};
#endif
