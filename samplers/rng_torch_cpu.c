/* PyTorch's CPU generator as torch.manual_seed(s); torch.randn(shape) uses it
 * for float32 (tests/data/README.md#rng): MT19937, then
 *   n >= 16: normal_fill (float uniforms, Box-Muller per 16-value block, the
 *            ragged tail redrawn as one more block),
 *   n <  16: normal_distribution<double> per value, whose second Box-Muller
 *            value stays cached in the generator across calls. */
#include "samplers/rng_impl.h"

#include <math.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif

enum { MT_N = 624, MT_M = 397 };

void smp_mt19937_seed(smp_rng *rng, uint32_t seed)
{
    rng->mt[0] = seed;
    for (int j = 1; j < MT_N; j++)
        rng->mt[j] = 1812433253u * (rng->mt[j - 1] ^ (rng->mt[j - 1] >> 30)) + (uint32_t)j;
    rng->mti = MT_N;
    rng->has_cached_normal = 0;
}

static void mt_twist(uint32_t *mt)
{
    for (int k = 0; k < MT_N; k++) {
        uint32_t y = (mt[k] & 0x80000000u) | (mt[(k + 1) % MT_N] & 0x7FFFFFFFu);
        mt[k] = mt[(k + MT_M) % MT_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908B0DFu : 0u);
    }
}

static uint32_t mt_next(smp_rng *rng)
{
    if (rng->mti >= MT_N) {
        mt_twist(rng->mt);
        rng->mti = 0;
    }
    uint32_t y = rng->mt[rng->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C5680u;
    y ^= (y << 15) & 0xEFC60000u;
    y ^= y >> 18;
    return y;
}

/* 24 random bits -> [0, 1), exact. */
static float uniform_float(smp_rng *rng)
{
    return (float)((double)(mt_next(rng) & 0xFFFFFFu) * 0x1p-24);
}

/* 53 random bits of (first draw << 32 | second draw) -> [0, 1), exact. */
static double uniform_double(smp_rng *rng)
{
    uint64_t hi = mt_next(rng), lo = mt_next(rng);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * 0x1p-53;
}

/* at::normal_distribution<double> with mean 0, std 1. */
static double normal_double(smp_rng *rng)
{
    if (rng->has_cached_normal) {
        rng->has_cached_normal = 0;
        return rng->cached_normal;
    }
    double u1 = uniform_double(rng);
    double u2 = uniform_double(rng);
    double r = sqrt(-2.0 * log(1.0 - u2));
    double theta = 2.0 * M_PI * u1;
    rng->cached_normal = r * sin(theta);
    rng->has_cached_normal = 1;
    return r * cos(theta);
}

/* normal_fill_16: Box-Muller on 16 uniforms in place, float libm. */
static void normal_fill_16(float *d)
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

static void normal_fill(smp_rng *rng, float *d, size_t n)
{
    void (*fill16)(float *) =
        rng->torch_kernel == FM_TORCH_KERNEL_AVX2 ? smp_torch_normal_fill_16_avx2 : normal_fill_16;
    for (size_t i = 0; i < n; i++)
        d[i] = uniform_float(rng);
    for (size_t i = 0; i + 16 <= n; i += 16)
        fill16(d + i);
    if (n % 16 != 0) {
        for (size_t i = n - 16; i < n; i++)
            d[i] = uniform_float(rng);
        fill16(d + n - 16);
    }
}

void smp_torch_cpu_randn(smp_rng *rng, float *out, size_t n)
{
    if (n >= 16) {
        normal_fill(rng, out, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (float)normal_double(rng);
}
