/* Internal to samplers/: the generator kernels behind smp_rng. */
#ifndef FM_RNG_IMPL_H
#define FM_RNG_IMPL_H

#include "samplers/samplers.h"

void smp_philox_randn(smp_rng *rng, float *out, size_t n);
void smp_mt19937_seed(smp_rng *rng, uint32_t seed);
void smp_torch_cpu_randn(smp_rng *rng, float *out, size_t n);
/* Box-Muller on 16 uniforms in place as PyTorch's AVX2 kernel does it. */
void smp_torch_normal_fill_16_avx2(float *d);

#endif
