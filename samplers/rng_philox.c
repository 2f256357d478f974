/* A1111's "NV" generator (modules/rng_philox.py): Philox 4x32-10 with
 * counter (offset, 0, element, 0), key = seed, and a Box-Muller transform on
 * the first two output words, imitating torch.randn(device='cuda').
 * tests/data/README.md#rng describes it down to the rounding. */
#include "samplers/rng_impl.h"

#include <math.h>

/* numpy evaluates u = r*a + a/2 as two roundings; a fused multiply-add would
 * change the last bit of u, so contraction is off for this file whatever
 * the compiler's default. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

typedef struct { uint32_t c[4]; } philox_block;

static philox_block philox_round(philox_block x, uint32_t k0, uint32_t k1)
{
    uint64_t p0 = (uint64_t)x.c[0] * PHILOX_M0;
    uint64_t p1 = (uint64_t)x.c[2] * PHILOX_M1;
    philox_block y = {{
        (uint32_t)(p1 >> 32) ^ x.c[1] ^ k0,
        (uint32_t)p1,
        (uint32_t)(p0 >> 32) ^ x.c[3] ^ k1,
        (uint32_t)p0,
    }};
    return y;
}

static philox_block philox4x32_10(philox_block counter, uint32_t k0, uint32_t k1)
{
    for (int round = 0; round < 10; round++) {
        counter = philox_round(counter, k0, k1);
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    return counter;
}

/* Box-Muller in double from two uint32, one rounding to float at the end.
 * The constants are numpy float32 scalars widened to double: 2^-32, and
 * float32(2^-32 * 2pi) (bits 0x30C90FDB). */
static float box_muller(uint32_t r0, uint32_t r1)
{
    const double a = (double)2.3283064e-10f;
    const double b = (double)(float)(2.3283064e-10 * 6.2831855);
    double u = (double)r0 * a + a / 2;
    double v = (double)r1 * b + b / 2;
    return (float)(sqrt(-2.0 * log(u)) * sin(v));
}

void smp_philox_randn(smp_rng *rng, float *out, size_t n)
{
    uint32_t k0 = (uint32_t)rng->seed, k1 = (uint32_t)(rng->seed >> 32);
    uint32_t c0 = (uint32_t)rng->offset;
    for (size_t i = 0; i < n; i++) {
        philox_block ctr = {{c0, 0, (uint32_t)i, 0}};
        philox_block r = philox4x32_10(ctr, k0, k1);
        out[i] = box_muller(r.c[0], r.c[1]);
    }
    rng->offset++;
}
