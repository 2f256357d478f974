/* Internal to samplers/: the generator kernels behind fm_rng. */
#ifndef FM_RNG_IMPL_H
#define FM_RNG_IMPL_H

#include "samplers/samplers.h"

void fm_philox_randn(fm_rng *rng, float *out, size_t n);
void fm_mt19937_seed(fm_rng *rng, uint32_t seed);
void fm_torch_cpu_randn(fm_rng *rng, float *out, size_t n);
/* Box-Muller on 16 uniforms in place as PyTorch's AVX2 kernel does it. */
void fm_torch_normal_fill_16_avx2(float *d);

#endif
