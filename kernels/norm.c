/* GroupNorm (+SiLU). */
#include "kernels/kernels.h"
#include <math.h>
#include <stdlib.h>
void fm_group_norm(float *y, const float *x, int n, int c, int hw, int groups, float eps,
                   const float *gamma, const float *beta, int fuse_silu)
{
    int cg = c / groups;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            size_t off = ((size_t)b * c + (size_t)g * cg) * hw, m = (size_t)cg * hw;
            const float *xg = x + off;
            float *yg = y + off;
            double sum = 0, sq = 0;
            for (size_t i = 0; i < m; i++) sum += xg[i];
            double mean = sum / m;
            for (size_t i = 0; i < m; i++) sq += (xg[i] - mean) * (xg[i] - mean);
            float inv = (float)(1.0 / sqrt(sq / m + eps)), mf = (float)mean;
            for (int ci = 0; ci < cg; ci++) {
                float s = inv * gamma[g * cg + ci], t = beta[g * cg + ci];
                float *yr = yg + (size_t)ci * hw;
                const float *xr = xg + (size_t)ci * hw;
                for (int i = 0; i < hw; i++) {
                    float v = (xr[i] - mf) * s + t;
                    yr[i] = fuse_silu ? v / (1.0f + expf(-v)) : v;
                }
            }
        }
}
