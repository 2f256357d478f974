/* The samplers on golden/SAMPLERS.md's toy denoiser: every stored x.i,
 * denoised.i, noise.k and final of samplers.safetensors, plus the denoiser
 * wrappers, the front-end sigma conventions and the names. */
#include "testutil.h"
#include "samplers/samplers.h"

#define GOLDEN "tests/data/samplers.safetensors"
#define TOL 1e-4
#define LATENT 256 /* [1,4,8,8] */
#define HW 64

static fm_safetensors st;
static fm_discrete disc;
static float toy_a[16], toy_b[4], noise_init[LATENT];
static int n_tensors, n_runs;
static double worst_err;

static int setup(void **state)
{
    (void)state;
    tu_open(&st, GOLDEN);
    fm_error err = {0};
    if (fm_discrete_init_scaled_linear(&disc, 0.00085, 0.012, 1000, &err))
        return -1;
    size_t n;
    float *t = tu_f32(&st, "toy.A", &n);
    memcpy(toy_a, t, sizeof toy_a);
    fm_free(t);
    t = tu_f32(&st, "toy.B", &n);
    memcpy(toy_b, t, sizeof toy_b);
    fm_free(t);
    t = tu_f32(&st, "noise.init", &n);
    memcpy(noise_init, t, sizeof noise_init);
    fm_free(t);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fm_discrete_free(&disc);
    fm_st_close(&st);
    print_message("samplers: %d runs, %d tensors checked, max error %.3g (|d|/max(1,|ref|), "
                  "tolerance %g)\n", n_runs, n_tensors, worst_err, TOL);
    return 0;
}

/* Checks got against golden name within TOL and records the worst error. */
static void check(const char *name, const float *got, size_t n)
{
    size_t rn;
    float *ref = tu_f32(&st, name, &rn);
    if (rn != n)
        fail_msg("%s: %zu values computed, golden has %zu", name, n, rn);
    tu_assert_close(got, ref, n, TOL, name);
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (e > worst_err)
            worst_err = e;
    }
    n_tensors++;
    fm_free(ref);
}

/* ---- the toy model: net(x, t)[c] = tanh(sum_k A[c][k] x[k] + B[c] t/1000) ---- */

typedef struct toy {
    fm_prediction pred;
    int calls;
} toy;

static int toy_denoise(void *user, float *denoised, const float *x, size_t n, double sigma, fm_error *err)
{
    (void)err;
    toy *m = user;
    m->calls++;
    assert_int_equal(n, LATENT);
    fm_scalings k = fm_denoiser_scalings(m->pred, sigma);
    double t = fm_discrete_sigma_to_t(&disc, sigma);
    for (int p = 0; p < HW; p++)
        for (int c = 0; c < 4; c++) {
            double acc = toy_b[c] * t / 1000;
            for (int j = 0; j < 4; j++)
                acc += toy_a[c * 4 + j] * (k.c_in * x[j * HW + p]);
            denoised[c * HW + p] = (float)(k.c_skip * x[c * HW + p] + k.c_out * tanh(acc));
        }
    return 0;
}

static void test_denoiser_wrappers(void **state)
{
    (void)state;
    size_t n;
    float *sig = tu_f32(&st, "denoiser.sigma", &n);
    static const struct { fm_prediction pred; const char *name; } preds[] = {
        {FM_PRED_EPS, "eps"}, {FM_PRED_V, "v"}};
    for (int p = 0; p < 2; p++)
        for (size_t j = 0; j < n; j++) {
            char name[64];
            float x[LATENT], den[LATENT];
            for (int i = 0; i < LATENT; i++)
                x[i] = (float)((double)noise_init[i] * sig[j]);
            snprintf(name, sizeof name, "denoiser.%s.x.%zu", preds[p].name, j);
            check(name, x, LATENT);
            toy m = {preds[p].pred, 0};
            toy_denoise(&m, den, x, LATENT, sig[j], NULL);
            snprintf(name, sizeof name, "denoiser.%s.denoised.%zu", preds[p].name, j);
            check(name, den, LATENT);
        }
    fm_free(sig);
}

/* ---- one golden run ---- */

typedef struct run_check {
    const char *prefix;
    int steps_seen;
    fm_rng rng;  /* Philox(43): the run's noise source */
    int draws;
} run_check;

static int check_step(void *user, int i, int steps, double sigma, const float *x, const float *denoised)
{
    (void)sigma;
    run_check *rc = user;
    char name[96];
    assert_int_equal(i, rc->steps_seen);
    rc->steps_seen++;
    assert_true(i < steps);
    snprintf(name, sizeof name, "%s.x.%d", rc->prefix, i);
    check(name, x, LATENT);
    snprintf(name, sizeof name, "%s.denoised.%d", rc->prefix, i);
    check(name, denoised, LATENT);
    return 0;
}

/* Successive Philox(43) calls, each compared with the stored noise.k. */
static int checked_noise(void *user, float *out, size_t n, fm_error *err)
{
    run_check *rc = user;
    fm_rng_noise(&rc->rng, out, n, err);
    char name[96];
    snprintf(name, sizeof name, "%s.noise.%d", rc->prefix, rc->draws++);
    check(name, out, n);
    return 0;
}

static void run_one(fm_sampler_id sampler, const char *sched, int steps, fm_prediction pred)
{
    char prefix[80], name[96];
    snprintf(prefix, sizeof prefix, "%s.%s.%d.%s", fm_sampler_name(sampler), sched, steps,
             pred == FM_PRED_V ? "v" : "eps");
    snprintf(name, sizeof name, "%s.sigmas", prefix);
    size_t ns;
    float *fsig = tu_f32(&st, name, &ns);
    assert_int_equal(ns, (size_t)steps + 1);
    double sigmas[16];
    for (size_t i = 0; i < ns; i++)
        sigmas[i] = fsig[i];
    fm_free(fsig);

    /* the run's schedule is what fm_schedule gives */
    double mine[16];
    fm_error err = {0};
    int len = fm_schedule(&disc, fm_scheduler_find(sched), steps, mine, &err);
    assert_int_equal(len, (int)ns);
    for (int i = 0; i < len; i++)
        assert_true(fabs(mine[i] - sigmas[i]) <= 1e-6 * sigmas[i]);

    float x[LATENT];
    for (int i = 0; i < LATENT; i++)
        x[i] = (float)((double)noise_init[i] * sigmas[0]);
    toy m = {pred, 0};
    run_check rc = {.prefix = prefix};
    fm_rng_init(&rc.rng, FM_RNG_CUDA, 43);
    fm_sampler_io io;
    fm_sampler_io_init(&io);
    io.denoise = toy_denoise;
    io.denoise_user = &m;
    io.noise = checked_noise;
    io.noise_user = &rc;
    io.step = check_step;
    io.step_user = &rc;
    if (fm_sample(sampler, &io, x, LATENT, sigmas, (int)ns, &err))
        fail_msg("%s: %s", prefix, err.msg);
    assert_int_equal(rc.steps_seen, steps);
    /* SAMPLERS.md 3.2: noisy samplers draw once per step with sigma_next > 0 */
    assert_int_equal(rc.draws, fm_sampler_is_noisy(sampler) ? steps - 1 : 0);
    snprintf(name, sizeof name, "%s.x.%d", prefix, steps);
    check(name, x, LATENT);
    snprintf(name, sizeof name, "%s.final", prefix);
    check(name, x, LATENT);
    n_runs++;
}

static void run_all(fm_sampler_id sampler)
{
    static const char *scheds[] = {"normal", "karras"};
    static const int steps[] = {4, 10};
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 2; k++) {
            run_one(sampler, scheds[s], steps[k], FM_PRED_EPS);
            run_one(sampler, scheds[s], steps[k], FM_PRED_V);
        }
}

#define SAMPLER_TEST(fn, id) \
    static void fn(void **state) { (void)state; run_all(id); }
SAMPLER_TEST(test_euler, FM_SAMPLER_EULER)
SAMPLER_TEST(test_euler_ancestral, FM_SAMPLER_EULER_ANCESTRAL)
SAMPLER_TEST(test_heun, FM_SAMPLER_HEUN)
SAMPLER_TEST(test_dpm_2, FM_SAMPLER_DPM_2)
SAMPLER_TEST(test_dpm_2_ancestral, FM_SAMPLER_DPM_2_ANCESTRAL)
SAMPLER_TEST(test_lms, FM_SAMPLER_LMS)
SAMPLER_TEST(test_dpmpp_2m, FM_SAMPLER_DPMPP_2M)
SAMPLER_TEST(test_dpmpp_2s_ancestral, FM_SAMPLER_DPMPP_2S_ANCESTRAL)
SAMPLER_TEST(test_dpmpp_2m_sde, FM_SAMPLER_DPMPP_2M_SDE)
SAMPLER_TEST(test_lcm, FM_SAMPLER_LCM)

static void test_ddim(void **state)
{
    (void)state;
    run_all(FM_SAMPLER_DDIM);
    for (int k = 4; k <= 10; k += 6) {
        run_one(FM_SAMPLER_DDIM, "ddim_uniform", k, FM_PRED_EPS);
        run_one(FM_SAMPLER_DDIM, "ddim_uniform", k, FM_PRED_V);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_denoiser_wrappers),
        cmocka_unit_test(test_euler),
        cmocka_unit_test(test_euler_ancestral),
        cmocka_unit_test(test_heun),
        cmocka_unit_test(test_dpm_2),
        cmocka_unit_test(test_dpm_2_ancestral),
        cmocka_unit_test(test_lms),
        cmocka_unit_test(test_dpmpp_2m),
        cmocka_unit_test(test_dpmpp_2s_ancestral),
        cmocka_unit_test(test_dpmpp_2m_sde),
        cmocka_unit_test(test_ddim),
        cmocka_unit_test(test_lcm),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
