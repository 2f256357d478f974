/* fma_peak: the machine's FP32 FMA peak, for the benchmarks' "% of peak".
 * Header-only, included by tools/kbench.c and tools/bench.c. Needs
 * kernels/kernels.h, <omp.h>, <time.h> and <immintrin.h> included first. */
#ifndef FM_TOOLS_FMA_PEAK_H
#define FM_TOOLS_FMA_PEAK_H

#if defined(__x86_64__)
/* Independent FMA chains: 2 * lanes * 12 chains flops per iteration. */
__attribute__((target("avx512f"))) static float fma_loop_512(long iters)
{
    __m512 c[12], a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
    for (int i = 0; i < 12; i++) c[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < iters; k++)
        for (int i = 0; i < 12; i++) c[i] = _mm512_fmadd_ps(c[i], a, b);
    for (int i = 1; i < 12; i++) c[0] = _mm512_add_ps(c[0], c[i]);
    return _mm512_reduce_add_ps(c[0]);
}
__attribute__((target("avx2,fma"))) static float fma_loop_256(long iters)
{
    __m256 c[12], a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(0.9999999f);
    for (int i = 0; i < 12; i++) c[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < iters; k++)
        for (int i = 0; i < 12; i++) c[i] = _mm256_fmadd_ps(c[i], a, b);
    for (int i = 1; i < 12; i++) c[0] = _mm256_add_ps(c[0], c[i]);
    float t[8];
    _mm256_storeu_ps(t, c[0]);
    return t[0];
}
#endif

static double fma_peak_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* FP32 FMA GFLOP/s of all threads in CPU time (best of 3); 0 without SIMD. */
static double fma_peak_gflops(void)
{
    long iters = 10000000;
    int lanes = kn_isa_chosen() == FM_ISA_AVX512 ? 16 : kn_isa_chosen() == FM_ISA_AVX2 ? 8 : 0;
    if (!lanes) return 0;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double c0 = fma_peak_cpu_now();
        volatile float sink = 0;
        float part = 0;
#pragma omp parallel reduction(+ : part)
        {
#if defined(__x86_64__)
            part += lanes == 16 ? fma_loop_512(iters) : fma_loop_256(iters);
#endif
        }
        sink = part;
        (void)sink;
        double c = (fma_peak_cpu_now() - c0) / omp_get_max_threads();
        double g = 2.0 * lanes * 12 * iters * omp_get_max_threads() / c * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

#endif
