/* Run-time choice of the instruction set: decided once per process from the
 * CPU and FM_ISA, cached in a function-local static (the only state kept). */
#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>

static const char *const isa_names[] = {"scalar", "avx2", "avx512"};

const char *kn_isa_name(kn_isa isa)
{
    return (unsigned)isa <= FM_ISA_AVX512 ? isa_names[isa] : "?";
}

int kn_isa_supported(kn_isa isa)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    switch (isa) {
    case FM_ISA_SCALAR: return 1;
    case FM_ISA_AVX2:
        return __builtin_cpu_supports("fma") && core_cpu_has_f16c_avx2(); /* core's cpuid probe */
    case FM_ISA_AVX512:
        return kn_isa_supported(FM_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
    }
    return 0;
#else
    return isa == FM_ISA_SCALAR;
#endif
}

static kn_isa choose_isa(void)
{
    kn_isa best = FM_ISA_SCALAR;
    for (int i = FM_ISA_AVX512; i > FM_ISA_SCALAR; i--)
        if (kn_isa_supported((kn_isa)i)) {
            best = (kn_isa)i;
            break;
        }
    const char *want = getenv("FM_ISA");
    if (want)
        for (int i = FM_ISA_SCALAR; i <= FM_ISA_AVX512; i++)
            if (!strcmp(want, isa_names[i]) && i < (int)best)
                best = (kn_isa)i;
    return best;
}

kn_isa kn_isa_chosen(void)
{
    /* -1 = not decided yet; racing threads compute the same value. */
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (v < 0) {
        v = (int)choose_isa();
        __atomic_store_n(&cached, v, __ATOMIC_RELEASE);
    }
    return (kn_isa)v;
}

int kn_has_bf16(void)
{
#if defined(__x86_64__)
    return kn_isa_chosen() == FM_ISA_AVX512 && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}
