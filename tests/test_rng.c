/* Both generators against tests/data/rng.safetensors, bit for bit. */
#include "testutil.h"
#include "samplers/samplers.h"

#define GOLDEN "tests/data/rng.safetensors"

static wt_safetensors st;

static int setup(void **state)
{
    (void)state;
    tu_open(&st, GOLDEN);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    wt_st_close(&st);
    return 0;
}

/* Golden tensor name must equal got bit for bit. */
static void assert_bits(const char *name, const float *got, size_t n)
{
    const wt_st_tensor *t = wt_st_find(&st, name);
    if (!t)
        fail_msg("golden tensor %s missing", name);
    assert_int_equal(t->dtype, FM_DT_F32);
    assert_int_equal((size_t)wt_st_numel(t), n);
    const float *ref = t->data;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof(float)) != 0)
            fail_msg("%s: element %zu is %.9g, reference %.9g", name, i, (double)got[i], (double)ref[i]);
}

static void assert_close_abs(const char *name, const float *got, size_t n, double tol, double *worst)
{
    const wt_st_tensor *t = wt_st_find(&st, name);
    if (!t)
        fail_msg("golden tensor %s missing", name);
    assert_int_equal((size_t)wt_st_numel(t), n);
    const float *ref = t->data;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= tol))
            fail_msg("%s: element %zu is %.9g, reference %.9g", name, i, (double)got[i], (double)ref[i]);
        if (d > *worst)
            *worst = d;
    }
}

static const uint64_t seeds[] = {0, 1, 42, 12345, 4294967295u};
static const struct { const char *name; size_t n; } shapes[] = {
    {"1x4x8x8", 256}, {"1x4x64x64", 16384}, {"4", 4}, {"1x4x8x13", 416}, {"2x4x5x7", 280},
    {"1x3x5", 15}, {"15", 15}, {"16", 16}, {"17", 17},
};

static int n_checked;

static void check_first_calls(const char *kind_name, fm_rng_kind kind, smp_torch_kernel kernel,
                              int n_shapes, int exact, double *worst)
{
    char name[64];
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++)
        for (int k = 0; k < n_shapes; k++) {
            smp_rng rng;
            smp_rng_init(&rng, kind, seeds[s]);
            rng.torch_kernel = kernel;
            float *out = malloc(shapes[k].n * sizeof(float));
            smp_rng_randn(&rng, out, shapes[k].n);
            snprintf(name, sizeof name, "%s.s%llu.%s", kind_name, (unsigned long long)seeds[s],
                     shapes[k].name);
            if (exact)
                assert_bits(name, out, shapes[k].n);
            else
                assert_close_abs(name, out, shapes[k].n, 1e-5, worst);
            n_checked++;
            free(out);
        }
}

static void check_successive(const char *kind_name, fm_rng_kind kind, smp_torch_kernel kernel,
                             int exact, double *worst)
{
    char name[64];
    smp_rng rng;
    smp_rng_init(&rng, kind, 42);
    rng.torch_kernel = kernel;
    float out[256];
    for (int call = 1; call <= 3; call++) {
        smp_rng_randn(&rng, out, 256);
        snprintf(name, sizeof name, "%s.s42.call%d.1x4x8x8", kind_name, call);
        if (exact)
            assert_bits(name, out, 256);
        else
            assert_close_abs(name, out, 256, 1e-5, worst);
        n_checked++;
    }
    if (kind != FM_RNG_CPU)
        return;
    static const struct { const char *shape; size_t n; } seq[] = {
        {"3", 3}, {"1x3x5", 15}, {"16", 16}, {"5", 5}, {"1x4x8x8", 256}, {"1", 1},
    };
    smp_rng_init(&rng, kind, 42);
    rng.torch_kernel = kernel;
    for (int call = 0; call < 6; call++) {
        smp_rng_randn(&rng, out, seq[call].n);
        snprintf(name, sizeof name, "%s.s42.seq.call%d.%s", kind_name, call + 1, seq[call].shape);
        if (exact)
            assert_bits(name, out, seq[call].n);
        else
            assert_close_abs(name, out, seq[call].n, 1e-5, worst);
        n_checked++;
    }
}

static void test_philox(void **state)
{
    (void)state;
    n_checked = 0;
    check_first_calls("philox", FM_RNG_CUDA, FM_TORCH_KERNEL_DEFAULT, 5, 1, NULL);
    check_successive("philox", FM_RNG_CUDA, FM_TORCH_KERNEL_DEFAULT, 1, NULL);
    assert_int_equal(n_checked, 28);
    print_message("philox: %d tensors bit-exact\n", n_checked);
}

static void test_philox_docstring(void **state)
{
    (void)state;
    /* A1111 rng_philox.py docstring: Generator(0).randn((3, 4)) starts so. */
    smp_rng rng;
    smp_rng_init(&rng, FM_RNG_CUDA, 0);
    float out[12];
    smp_rng_randn(&rng, out, 12);
    assert_true(out[0] == -0.9246624f && out[1] == -0.42534396f);
    assert_true(out[2] == -2.6438458f && out[3] == 0.14518388f);
}

static void test_torch_cpu(void **state)
{
    (void)state;
    n_checked = 0;
    check_first_calls("cpu", FM_RNG_CPU, FM_TORCH_KERNEL_DEFAULT, 9, 1, NULL);
    check_successive("cpu", FM_RNG_CPU, FM_TORCH_KERNEL_DEFAULT, 1, NULL);
    assert_int_equal(n_checked, 54);
    print_message("cpu: %d tensors bit-exact\n", n_checked);
}

static void test_torch_cpu_avx2(void **state)
{
    (void)state;
    n_checked = 0;
    check_first_calls("cpu_avx2", FM_RNG_CPU, FM_TORCH_KERNEL_AVX2, 9, 1, NULL);
    check_successive("cpu_avx2", FM_RNG_CPU, FM_TORCH_KERNEL_AVX2, 1, NULL);
    assert_int_equal(n_checked, 54);
    print_message("cpu_avx2: %d tensors bit-exact\n", n_checked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox),
        cmocka_unit_test(test_philox_docstring),
        cmocka_unit_test(test_torch_cpu),
        cmocka_unit_test(test_torch_cpu_avx2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
