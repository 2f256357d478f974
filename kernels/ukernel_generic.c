/* Portable C micro-kernel (any CPU; also what FM_ISA=scalar selects). */
#include "kernels/gemm.h"

#include <string.h>

enum { G_MR = 4, G_NR = 16 };

static void ukernel_generic(int kc, const float *A, const float *B, float *C, ptrdiff_t ldc, int mv, int nv)
{
    float acc[G_MR][G_NR];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < kc; k++, A += G_MR, B += G_NR)
        for (int r = 0; r < G_MR; r++)
            for (int c = 0; c < G_NR; c++)
                acc[r][c] += A[r] * B[c];
    for (int r = 0; r < mv; r++)
        for (int c = 0; c < nv; c++)
            C[r * ldc + c] += acc[r][c];
}

const gemm_arch fm_gemm_arch_generic = {
    .isa = FM_ISA_SCALAR, .mr = G_MR, .nr = G_NR, .mc = 64, .kc = 256,
    .f32 = ukernel_generic, .bf16 = NULL, .pair_bf16 = NULL,
};
