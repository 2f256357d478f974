/* fm_rng: the two seed-compatible generators behind one state struct. */
#include "samplers/samplers.h"
#include "samplers/rng_impl.h"

#include <string.h>

void fm_rng_init(fm_rng *rng, fm_rng_kind kind, uint64_t seed)
{
    memset(rng, 0, sizeof *rng);
    rng->kind = kind;
    rng->seed = seed;
    rng->torch_kernel = FM_TORCH_KERNEL_AVX2;
    if (kind == FM_RNG_CPU)
        fm_mt19937_seed(rng, (uint32_t)seed);
}

void fm_rng_randn(fm_rng *rng, float *out, size_t n)
{
    if (rng->kind == FM_RNG_CPU)
        fm_torch_cpu_randn(rng, out, n);
    else
        fm_philox_randn(rng, out, n);
}

int fm_rng_noise(void *rng, float *out, size_t n, fm_error *err)
{
    (void)err;
    fm_rng_randn(rng, out, n);
    return 0;
}
