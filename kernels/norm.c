/* GroupNorm (+ fused SiLU) and LayerNorm: statistics in 16 independent float
 * lanes (vectorised by the compiler, combined in double), the normalisation
 * and SiLU by the ISA's vectorised affine kernel. One pass to read the
 * statistics, one to write: the SiLU costs no extra pass over memory. */
#include "kernels/gemm.h"

#include <math.h>

#define PAR_MIN 65536

/* Mean and variance of x[0..n) (two-pass). */
static void mean_var(const float *x, size_t n, float *mean, float *var)
{
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[i + l];
    double s = 0;
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; i < n; i++) s += x[i];
    float m = (float)(s / (double)n);
    float sq[16] = {0};
    for (i = 0; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            float d = x[i + l] - m;
            sq[l] += d * d;
        }
    double v = 0;
    for (int l = 0; l < 16; l++) v += sq[l];
    for (; i < n; i++) v += (double)(x[i] - m) * (x[i] - m);
    *mean = m;
    *var = (float)(v / (double)n);
}

void kn_group_norm(float *y, const float *x, int n, int c, int hw, int groups, float eps,
                   const float *gamma, const float *beta, int fuse_silu)
{
    const gemm_arch *a = gemm_arch_get();
    int cg = c / groups;
#pragma omp parallel for schedule(dynamic, 1) collapse(2) if ((size_t)n * c * hw > PAR_MIN)
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            size_t off = ((size_t)b * c + (size_t)g * cg) * hw;
            float mean, var;
            mean_var(x + off, (size_t)cg * hw, &mean, &var);
            float inv = 1.0f / sqrtf(var + eps);
            for (int ci = 0; ci < cg; ci++) {
                int ch = g * cg + ci;
                a->affine(y + off + (size_t)ci * hw, x + off + (size_t)ci * hw, (size_t)hw, mean,
                          inv * gamma[ch], beta[ch], fuse_silu);
            }
        }
}

void kn_layer_norm(float *y, const float *x, int rows, int dim, const float *gamma,
                   const float *beta, float eps)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * dim > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        float mean, var;
        mean_var(xr, (size_t)dim, &mean, &var);
        float inv = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < dim; i++) yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
    }
}
