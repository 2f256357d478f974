/* smp_rng: the two seed-compatible generators behind one state struct. */
#include "samplers/samplers.h"
#include "samplers/rng_impl.h"

#include <string.h>

void smp_rng_init(smp_rng *rng, fm_rng_kind kind, uint64_t seed)
{
    memset(rng, 0, sizeof *rng);
    rng->kind = kind;
    rng->seed = seed;
    rng->torch_kernel = FM_TORCH_KERNEL_AVX2;
    if (kind == FM_RNG_CPU)
        smp_mt19937_seed(rng, (uint32_t)seed);
}

void smp_rng_randn(smp_rng *rng, float *out, size_t n)
{
    if (rng->kind == FM_RNG_CPU)
        smp_torch_cpu_randn(rng, out, n);
    else
        smp_philox_randn(rng, out, n);
}

int smp_rng_noise(void *rng, float *out, size_t n, fm_error *err)
{
    (void)err;
    smp_rng_randn(rng, out, n);
    return 0;
}
