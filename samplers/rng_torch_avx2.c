/* PyTorch's normal_fill_16_AVX2 in scalar float: the same uniforms as the
 * default kernel, but log and sincos from avx_mathfun.h (Cephes polynomials
 * in float32, after Pommier's sse_mathfun) instead of libm, and theta as a
 * float product. PyTorch's AVX2 objects are built with -mfma and GCC
 * contracts the intrinsics' mul+add pairs into FMAs; FUSED() marks those
 * pairs (GCC fuses a product into the add that is its only use, in
 * statement order), everything else is rounded separately. Bit-exact with
 * the golden cpu_avx2 tensors; without the fusions 0.24 ulp-scale
 * differences (2.4e-7) appear. */
#include "samplers/rng_impl.h"

#include <float.h>
#include <math.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* a*b + c as GCC emits it from the intrinsics: one rounding. */
#define FUSED(a, b, c) fmaf((a), (b), (c))

/* log256_ps for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
 * log(1+f) ~ f - f^2/2 + f^3 P(f), plus e ln 2 in two parts. */
static float cephes_logf(float x)
{
    static const float p[9] = {7.0376836292E-2f,  -1.1514610310E-1f, 1.1676998740E-1f,
                               -1.2420140846E-1f, +1.4249322787E-1f, -1.6668057665E-1f,
                               +2.0000714765E-1f, -2.4999993993E-1f, +3.3333331174E-1f};
    const float q1 = -2.12194440e-4f, q2 = 0.693359375f, sqrth = 0.707106781186547524f;
    if (!(x > 0))
        return NAN;
    x = fmaxf(x, FLT_MIN);
    uint32_t bits = bits_of(x);
    float e = (float)((int32_t)(bits >> 23) - 0x7f) + 1.0f;
    float f = float_of((bits & ~0x7f800000u) | bits_of(0.5f)); /* [0.5, 1) */
    if (f < sqrth) {
        e -= 1.0f;
        f = (f - 1.0f) + f;
    } else {
        f = f - 1.0f;
    }
    float z = f * f;
    float y = p[0];
    for (int k = 1; k < 9; k++)
        y = FUSED(y, f, p[k]);
    y = y * f;
    y = FUSED(y, z, e * q1);
    y = FUSED(-z, 0.5f, y);
    return FUSED(e, q2, f + y);
}

/* sincos256_ps: reduce by multiples of pi/4 (three-part Cody-Waite), then
 * the Cephes sine and cosine polynomials on [-pi/4, pi/4]. */
static void cephes_sincosf(float x, float *s, float *c)
{
    const float dp1 = -0.78515625f, dp2 = -2.4187564849853515625e-4f, dp3 = -3.77489497744594108e-8f;
    const float sp0 = -1.9515295891E-4f, sp1 = 8.3321608736E-3f, sp2 = -1.6666654611E-1f;
    const float cp0 = 2.443315711809948E-005f, cp1 = -1.388731625493765E-003f,
                cp2 = 4.166664568298827E-002f;
    const float four_over_pi = 1.27323954473516f;
    uint32_t sign_sin = bits_of(x) & 0x80000000u;
    x = fabsf(x);
    int32_t j = (int32_t)(x * four_over_pi);
    j = (j + 1) & ~1;
    float y = (float)j;
    sign_sin ^= (uint32_t)(j & 4) << 29;
    uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
    int sine_poly_for_sin = (j & 2) == 0;

    x = FUSED(y, dp1, x);
    x = FUSED(y, dp2, x);
    x = FUSED(y, dp3, x);
    float z = x * x;

    float yc = FUSED(cp0, z, cp1);
    yc = FUSED(yc, z, cp2);
    yc = yc * z;
    yc = FUSED(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;

    float ys = FUSED(sp0, z, sp1);
    ys = FUSED(ys, z, sp2);
    ys = ys * z;
    ys = FUSED(ys, x, x);

    /* the vector code selects with masks and adds +0 from the other lane */
    float sin_v = sine_poly_for_sin ? 0.0f + ys : yc + 0.0f;
    float cos_v = sine_poly_for_sin ? yc + 0.0f : 0.0f + ys;
    *s = float_of(bits_of(sin_v) ^ sign_sin);
    *c = float_of(bits_of(cos_v) ^ sign_cos);
}

void smp_torch_normal_fill_16_avx2(float *d)
{
    const float two_pi = (float)(2.0 * M_PI);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float radius = sqrtf(-2.0f * cephes_logf(u1));
        float s, c;
        cephes_sincosf(two_pi * u2, &s, &c);
        d[j] = radius * c;
        d[j + 8] = radius * s;
    }
}
