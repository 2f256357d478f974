/* The samplers layer as the pipeline will drive it, against the tiny SD1
 * end-to-end runs (tests/data/README.md#a1111-txt2img): sigmas from the checkpoint's
 * alphas_cumprod, U-Net timesteps, the initial noise of both generators, and
 * each recorded step replayed through smp_sample with the recorded denoised. */
#include "testutil.h"
#include "samplers/samplers.h"

#define LATENT (4 * 32 * 32)

static wt_safetensors ck, cases;
static smp_discrete disc;

static int setup(void **state)
{
    (void)state;
    tu_open(&ck, "tests/data/tiny-sd1.safetensors");
    tu_open(&cases, "tests/data/tiny-sd1-cases.safetensors");
    size_t n;
    float *ac = tu_f32(&ck, "alphas_cumprod", &n);
    fm_error err = {0};
    int rc = smp_discrete_init(&disc, ac, (int)n, &err);
    core_free(ac);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    smp_discrete_free(&disc);
    wt_st_close(&ck);
    wt_st_close(&cases);
    return 0;
}

typedef struct replay {
    const char *prefix;
    int calls;
} replay;

/* The model's part: the recorded CFG-combined denoised of each step. */
static int replay_denoise(void *user, float *denoised, const float *x, size_t n, double sigma,
                          fm_error *err)
{
    (void)x, (void)sigma, (void)err;
    replay *r = user;
    char name[64];
    snprintf(name, sizeof name, "%s.denoised.%d", r->prefix, r->calls++);
    size_t rn;
    float *ref = tu_f32(&cases, name, &rn);
    assert_int_equal(rn, n);
    memcpy(denoised, ref, n * sizeof(float));
    core_free(ref);
    return 0;
}

static int check_x(void *user, int i, int steps, double sigma, const float *x, const float *den)
{
    (void)steps, (void)sigma, (void)den;
    replay *r = user;
    char name[64];
    snprintf(name, sizeof name, "%s.x.%d", r->prefix, i);
    /* 1e-4, not the e2e trajectory's 1e-3 (tests/data/README.md#tolerances):
     * the recorded denoised is replayed, so there is no U-Net error to absorb */
    tu_check(&cases, name, x, LATENT, 1e-4);
    return 0;
}

static void run_case(const char *prefix, const char *sampler_label, const char *scheduler_label,
                     int steps, fm_rng_kind kind, uint64_t seed)
{
    char sampler[32], implied[32], scheduler[32], name[64];
    fm_error err = {0};
    assert_int_equal(fm_sampler_resolve(sampler_label, sampler, implied, &err), 0);
    assert_int_equal(fm_scheduler_resolve(scheduler_label, scheduler, &err), 0);
    smp_id sid = smp_find(sampler);
    int ns;
    double *sigmas = smp_sigmas(&disc, sid, smp_scheduler_find(scheduler), steps, &ns, &err);
    assert_non_null(sigmas);
    assert_int_equal(ns, steps + 1);
    float got[16], t[16];
    for (int i = 0; i < ns; i++)
        got[i] = (float)sigmas[i];
    snprintf(name, sizeof name, "%s.sigmas", prefix);
    tu_check(&cases, name, got, (size_t)ns, 1e-6);
    for (int i = 0; i < steps; i++)
        t[i] = (float)smp_discrete_sigma_to_t(&disc, sigmas[i]);
    snprintf(name, sizeof name, "%s.t", prefix);
    tu_check(&cases, name, t, (size_t)steps, 1e-6);

    /* initial latent: the image's generator, first call, x = noise * sigma_0 */
    float *x = core_alloc(LATENT * sizeof(float));
    smp_rng rng;
    smp_rng_init(&rng, kind, seed);
    smp_rng_randn(&rng, x, LATENT);
    snprintf(name, sizeof name, "%s.noise", prefix);
    size_t rn;
    float *ref = tu_f32(&cases, name, &rn);
    assert_int_equal(rn, LATENT);
    assert_memory_equal(x, ref, LATENT * sizeof(float));
    core_free(ref);
    for (int i = 0; i < LATENT; i++)
        x[i] = (float)(x[i] * sigmas[0]);

    replay r = {prefix, 0};
    smp_io io;
    smp_io_init(&io);
    io.denoise = replay_denoise;
    io.denoise_user = &r;
    io.noise = smp_rng_noise;
    io.noise_user = &rng;
    io.step = check_x;
    io.step_user = &r;
    assert_int_equal(smp_sample(sid, &io, x, LATENT, sigmas, ns, &err), 0);
    snprintf(name, sizeof name, "%s.x_final", prefix);
    tu_check(&cases, name, x, LATENT, 1e-4);
    core_free(x);
    free(sigmas);
}

static void test_e2e_euler_philox(void **state)
{
    (void)state;
    run_case("e2e", "Euler", "Uniform", 6, FM_RNG_CUDA, 42);
}

static void test_e2e2_dpmpp_2m_karras(void **state)
{
    (void)state;
    run_case("e2e2", "DPM++ 2M", "karras", 8, FM_RNG_CUDA, 7);
}

static void test_e2e3_euler_cpu(void **state)
{
    (void)state;
    run_case("e2e3", "euler", "normal", 6, FM_RNG_CPU, 42);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e2e_euler_philox),
        cmocka_unit_test(test_e2e2_dpmpp_2m_karras),
        cmocka_unit_test(test_e2e3_euler_cpu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
