/* Portable C micro-kernel (any CPU; also what FM_ISA=scalar selects). */
#include "kernels/gemm.h"

#include <math.h>
#include <string.h>

enum { G_MR = 4, G_NR = 16 };

static void ukernel_generic(int kc, const float *A, const float *B, float *C, ptrdiff_t ldc, int mv, int nv, int acc)
{
    float sum[G_MR][G_NR];
    memset(sum, 0, sizeof sum);
    for (int k = 0; k < kc; k++, A += G_MR, B += G_NR)
        for (int r = 0; r < G_MR; r++)
            for (int c = 0; c < G_NR; c++)
                sum[r][c] += A[r] * B[c];
    for (int r = 0; r < mv; r++)
        for (int c = 0; c < nv; c++)
            C[r * ldc + c] = (acc ? C[r * ldc + c] : 0.0f) + sum[r][c];
}

static void softmax_cols_generic(float *st, int kb, float scale, float *m, float *l, float *corr)
{
    for (int c = 0; c < G_NR; c++) {
        float mx = m[c];
        for (int j = 0; j < kb; j++) mx = fmaxf(mx, st[j * G_NR + c] * scale);
        float sum = 0;
        for (int j = 0; j < kb; j++) {
            float p = expf(st[j * G_NR + c] * scale - mx);
            st[j * G_NR + c] = p;
            sum += p;
        }
        corr[c] = expf(m[c] - mx);
        l[c] = l[c] * corr[c] + sum;
        m[c] = mx;
    }
}

static void sigmoid_gate_generic(float *y, const float *x, size_t n, float beta)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-beta * x[i]));
}

static void gelu_generic(float *y, const float *x, const float *mul, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        y[i] = mul ? g * mul[i] : g;
    }
}

static void affine_generic(float *y, const float *x, size_t n, float mean, float s, float t, int silu)
{
    for (size_t i = 0; i < n; i++) {
        float v = (x[i] - mean) * s + t;
        y[i] = silu ? v / (1.0f + expf(-v)) : v;
    }
}

const gemm_arch gemm_arch_generic = {
    .isa = FM_ISA_SCALAR, .mr = G_MR, .nr = G_NR, .mc = 64, .kc = 256,
    .f32 = ukernel_generic, .bf16 = NULL, .pair_bf16 = NULL, .softmax_cols = softmax_cols_generic,
    .sigmoid_gate = sigmoid_gate_generic, .gelu = gelu_generic, .affine = affine_generic,
};
