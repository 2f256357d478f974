/* PyTorch's normal_fill_16_AVX2 (aten/src/ATen/native/cpu/DistributionTemplates /
 * avx_mathfun.h) emulated in scalar float: Cephes log and sincos polynomials.
 * Not yet bit-exact: placeholder using libm until emulated. */
#include "samplers/rng_impl.h"

#include <math.h>

void fm_torch_normal_fill_16_avx2(float *d);

void fm_torch_normal_fill_16_avx2(float *d)
{
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float radius = sqrtf(-2.0f * logf(u1));
        float theta = (float)(2.0 * M_PI * (double)u2);
        d[j] = radius * cosf(theta);
        d[j + 8] = radius * sinf(theta);
    }
}
