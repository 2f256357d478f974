/* Run-time choice of the instruction set: decided once per process from the
 * CPU and FM_ISA, cached in a function-local static (the only state kept). */
#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#endif

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

#if defined(__x86_64__) && defined(__linux__)
/* CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE. */
static int cpu_has_amx_bf16(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (d >> 22 & 1) && (d >> 24 & 1);
}
#endif

/* AMX-BF16 tiles usable: the CPU has them, the kernels run AVX-512 with
 * bf16, FM_AMX is not "0", and Linux granted this process the tile state
 * (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, asked once). */
int kn_has_amx(void)
{
#if defined(__x86_64__) && defined(__linux__)
    static int cached = -1; /* -1 = not asked yet; racing threads ask alike */
    int v = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (v < 0) {
        const char *env = getenv("FM_AMX");
        v = 0;
        if (kn_has_bf16() && cpu_has_amx_bf16() && !(env && !strcmp(env, "0")))
            v = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELEASE);
    }
    return v;
#else
    return 0;
#endif
}

/* AMX-INT8 tiles usable (the Q8_0 GEMM): CPUID leaf 7 EDX bit 25, with the
 * tile state kn_has_amx asked for (so FM_AMX=0 turns these off too). Asked
 * once: CPUID traps to the hypervisor in a VM. */
int kn_has_amx_int8(void)
{
#if defined(__x86_64__) && defined(__linux__)
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (v < 0) {
        unsigned a, b, c, d;
        v = kn_has_amx() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 25 & 1);
        __atomic_store_n(&cached, v, __ATOMIC_RELEASE);
    }
    return v;
#else
    return 0;
#endif
}
