#include "core/core.h"

#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#include <cpuid.h>
#endif

static const struct { const char *name; size_t size; } dtype_info[FM_DT_COUNT] = {
    [FM_DT_F32] = {"F32", 4}, [FM_DT_F16] = {"F16", 2}, [FM_DT_BF16] = {"BF16", 2},
    [FM_DT_F64] = {"F64", 8}, [FM_DT_I64] = {"I64", 8}, [FM_DT_I32] = {"I32", 4},
    [FM_DT_U8] = {"U8", 1},
    [FM_DT_Q4_0] = {"Q4_0", 0}, [FM_DT_Q4_1] = {"Q4_1", 0}, [FM_DT_Q5_0] = {"Q5_0", 0},
    [FM_DT_Q5_1] = {"Q5_1", 0}, [FM_DT_Q8_0] = {"Q8_0", 0}, [FM_DT_Q2_K] = {"Q2_K", 0},
    [FM_DT_Q3_K] = {"Q3_K", 0}, [FM_DT_Q4_K] = {"Q4_K", 0}, [FM_DT_Q5_K] = {"Q5_K", 0},
    [FM_DT_Q6_K] = {"Q6_K", 0},
};

size_t core_dtype_size(core_dtype t) { return (unsigned)t < FM_DT_COUNT ? dtype_info[t].size : 0; }
const char *core_dtype_name(core_dtype t) { return (unsigned)t < FM_DT_COUNT ? dtype_info[t].name : "?"; }

/* IEEE half -> float, exact for every input including subnormals, inf, NaN. */
float core_f16_to_f32_1(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> half, round to nearest even, overflow to inf. */
uint16_t core_f32_to_f16_1(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* subnormal half or zero */
        if (absx < 0x33000000u)
            return (uint16_t)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* half subnormal unit is 2^-24 */
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((absx - 0x38000000u) >> 13);
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) static void f16_to_f32_f16c(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = core_f16_to_f32_1(src[i]);
}
#endif

/* F16C through cpuid (clang 14's __builtin_cpu_supports has no "f16c"),
 * asked once: cpuid traps to the hypervisor in a VM, and the kernels convert
 * weights in small blocks millions of times per image. */
int core_cpu_has_f16c_avx2(void)
{
#if defined(__x86_64__)
    static _Atomic int cached = -1;
    int v = cached;
    if (v < 0) {
        unsigned a, b, c, d;
        v = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && __builtin_cpu_supports("avx2");
        cached = v;
    }
    return v;
#else
    return 0;
#endif
}

void core_f16_to_f32(float *dst, const uint16_t *src, size_t n)
{
#if defined(__x86_64__)
    if (core_cpu_has_f16c_avx2()) {
        f16_to_f32_f16c(dst, src, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = core_f16_to_f32_1(src[i]);
}

void core_bf16_to_f32(float *dst, const uint16_t *src, size_t n)
{
    /* A shift; compilers vectorise this loop at -O3. */
    uint32_t *d = (uint32_t *)dst;
    for (size_t i = 0; i < n; i++)
        d[i] = (uint32_t)src[i] << 16;
}

void core_f32_to_f16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = core_f32_to_f16_1(src[i]);
}

void core_f32_to_bf16(uint16_t *dst, const float *src, size_t n)
{
    const uint32_t *s = (const uint32_t *)src;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = s[i];
        if ((x & 0x7fffffffu) > 0x7f800000u) { /* NaN stays NaN */
            dst[i] = (uint16_t)((x >> 16) | 0x40);
            continue;
        }
        x += 0x7fff + ((x >> 16) & 1);
        dst[i] = (uint16_t)(x >> 16);
    }
}

void core_convert_to_f32(float *dst, const void *src, core_dtype t, size_t n)
{
    switch (t) {
    case FM_DT_F32: memcpy(dst, src, n * 4); break;
    case FM_DT_F16: core_f16_to_f32(dst, src, n); break;
    case FM_DT_BF16: core_bf16_to_f32(dst, src, n); break;
    /* Tensors in a file need not be aligned to their element size: memcpy. */
    case FM_DT_F64: for (size_t i = 0; i < n; i++) { double v; memcpy(&v, (const char *)src + 8 * i, 8); dst[i] = (float)v; } break;
    case FM_DT_I64: for (size_t i = 0; i < n; i++) { int64_t v; memcpy(&v, (const char *)src + 8 * i, 8); dst[i] = (float)v; } break;
    case FM_DT_I32: for (size_t i = 0; i < n; i++) { int32_t v; memcpy(&v, (const char *)src + 4 * i, 4); dst[i] = (float)v; } break;
    case FM_DT_U8: { const uint8_t *s = src; for (size_t i = 0; i < n; i++) dst[i] = (float)s[i]; } break;
    default:
        if (core_dtype_is_quant(t)) core_dequant_ref(dst, src, t, n / (size_t)core_dtype_block(t));
        else memset(dst, 0, n * 4);
        break;
    }
}
