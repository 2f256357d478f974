/* The samplers on the toy denoiser (tests/data/README.md#samplers): every stored x.i,
 * denoised.i, noise.k and final of samplers.safetensors, plus the denoiser
 * wrappers, the front-end sigma conventions and the names. */
#include "testutil.h"
#include "samplers/samplers.h"

#define GOLDEN "tests/data/samplers.safetensors"
#define TOL 1e-4
#define LATENT 256 /* [1,4,8,8] */
#define HW 64

static wt_safetensors st;
static smp_discrete disc;
static float toy_a[16], toy_b[4], noise_init[LATENT];
static int n_tensors, n_runs;
static double worst_err;

static int setup(void **state)
{
    (void)state;
    tu_open(&st, GOLDEN);
    fm_error err = {0};
    if (smp_discrete_init_scaled_linear(&disc, 0.00085, 0.012, 1000, &err))
        return -1;
    size_t n;
    float *t = tu_f32(&st, "toy.A", &n);
    memcpy(toy_a, t, sizeof toy_a);
    core_free(t);
    t = tu_f32(&st, "toy.B", &n);
    memcpy(toy_b, t, sizeof toy_b);
    core_free(t);
    t = tu_f32(&st, "noise.init", &n);
    memcpy(noise_init, t, sizeof noise_init);
    core_free(t);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    smp_discrete_free(&disc);
    wt_st_close(&st);
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
    core_free(ref);
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
    smp_scalings k = smp_denoiser_scalings(m->pred, sigma);
    double t = smp_discrete_sigma_to_t(&disc, sigma);
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
    core_free(sig);
}

/* ---- one golden run ---- */

typedef struct run_check {
    const char *prefix;
    int steps_seen;
    smp_rng rng;  /* Philox(43): the run's noise source */
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
    smp_rng_noise(&rc->rng, out, n, err);
    char name[96];
    snprintf(name, sizeof name, "%s.noise.%d", rc->prefix, rc->draws++);
    check(name, out, n);
    return 0;
}

static void run_one(smp_id sampler, const char *sched, int steps, fm_prediction pred)
{
    char prefix[80], name[96];
    snprintf(prefix, sizeof prefix, "%s.%s.%d.%s", smp_name(sampler), sched, steps,
             pred == FM_PRED_V ? "v" : "eps");
    snprintf(name, sizeof name, "%s.sigmas", prefix);
    size_t ns;
    float *fsig = tu_f32(&st, name, &ns);
    assert_int_equal(ns, (size_t)steps + 1);
    double sigmas[16];
    for (size_t i = 0; i < ns; i++)
        sigmas[i] = fsig[i];
    core_free(fsig);

    /* the run's schedule is what smp_schedule gives */
    double mine[16];
    fm_error err = {0};
    int len = smp_schedule(&disc, smp_scheduler_find(sched), steps, mine, &err);
    assert_int_equal(len, (int)ns);
    for (int i = 0; i < len; i++)
        assert_true(fabs(mine[i] - sigmas[i]) <= 1e-6 * sigmas[i]);

    float x[LATENT];
    for (int i = 0; i < LATENT; i++)
        x[i] = (float)((double)noise_init[i] * sigmas[0]);
    toy m = {pred, 0};
    run_check rc = {.prefix = prefix};
    smp_rng_init(&rc.rng, FM_RNG_CUDA, 43);
    smp_io io;
    smp_io_init(&io);
    io.denoise = toy_denoise;
    io.denoise_user = &m;
    io.noise = checked_noise;
    io.noise_user = &rc;
    io.step = check_step;
    io.step_user = &rc;
    if (smp_sample(sampler, &io, x, LATENT, sigmas, (int)ns, &err))
        fail_msg("%s: %s", prefix, err.msg);
    assert_int_equal(rc.steps_seen, steps);
    /* tests/data/README.md#samplers: noisy samplers draw once per step with sigma_next > 0 */
    assert_int_equal(rc.draws, smp_is_noisy(sampler) ? steps - 1 : 0);
    snprintf(name, sizeof name, "%s.x.%d", prefix, steps);
    check(name, x, LATENT);
    snprintf(name, sizeof name, "%s.final", prefix);
    check(name, x, LATENT);
    n_runs++;
}

static void run_all(smp_id sampler)
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


/* ---- what the goldens do not cover ---- */

static int run_plain(smp_id sampler, double eta, const double *sigmas, int ns, float *x,
                     int *draws)
{
    toy m = {FM_PRED_EPS, 0};
    smp_rng rng;
    smp_rng_init(&rng, FM_RNG_CUDA, 43);
    smp_io io;
    smp_io_init(&io);
    io.eta = eta;
    io.denoise = toy_denoise;
    io.denoise_user = &m;
    io.noise = smp_rng_noise;
    io.noise_user = &rng;
    for (int i = 0; i < LATENT; i++)
        x[i] = (float)((double)noise_init[i] * sigmas[0]);
    fm_error err = {0};
    int rc = smp_sample(sampler, &io, x, LATENT, sigmas, ns, &err);
    if (draws)
        *draws = (int)rng.offset;
    return rc;
}

/* With eta = 0 both are DPM-Solver++(2S) with the midpoint in t, so they
 * must agree; with eta = 1 dpmpp_sde draws twice per step with sigma_next > 0. */
static void test_dpmpp_sde(void **state)
{
    (void)state;
    double sigmas[11];
    fm_error err = {0};
    int ns = smp_schedule(&disc, FM_SCHED_KARRAS, 10, sigmas, &err);
    float a[LATENT], b[LATENT];
    assert_int_equal(run_plain(FM_SAMPLER_DPMPP_SDE, 0, sigmas, ns, a, NULL), 0);
    assert_int_equal(run_plain(FM_SAMPLER_DPMPP_2S_ANCESTRAL, 0, sigmas, ns, b, NULL), 0);
    tu_assert_close(a, b, LATENT, 1e-6, "dpmpp_sde vs dpmpp_2s_ancestral at eta 0");
    int draws = 0;
    assert_int_equal(run_plain(FM_SAMPLER_DPMPP_SDE, 1, sigmas, ns, a, &draws), 0);
    assert_int_equal(draws, 2 * 9);
    int moved = 0;
    for (int i = 0; i < LATENT; i++) {
        assert_true(isfinite(a[i]));
        moved += fabs(a[i] - b[i]) > 1e-3;
    }
    assert_true(moved > LATENT / 2); /* the noise did something */
}

static int cancel_at_2(void *user, int i, int steps, double sigma, const float *x, const float *den)
{
    (void)steps, (void)sigma, (void)x, (void)den;
    *(int *)user = i;
    return i == 2;
}

typedef struct progress_log {
    int calls, last, cancel_at;
} progress_log;

static int log_progress(void *user, int step, int steps)
{
    progress_log *p = user;
    assert_int_equal(steps, 10);
    assert_int_equal(step, p->last + 1);
    p->last = step;
    p->calls++;
    return step == p->cancel_at;
}

static void test_progress(void **state)
{
    (void)state;
    double sigmas[11];
    fm_error err = {0};
    int ns = smp_schedule(&disc, FM_SCHED_KARRAS, 10, sigmas, &err);
    for (int s = 0; s < FM_SAMPLER_COUNT; s++) {
        float x[LATENT] = {0};
        toy m = {FM_PRED_EPS, 0};
        smp_rng rng;
        smp_rng_init(&rng, FM_RNG_CUDA, 1);
        progress_log log = {0, 0, -1};
        smp_io io;
        smp_io_init(&io);
        io.denoise = toy_denoise;
        io.denoise_user = &m;
        io.noise = smp_rng_noise;
        io.noise_user = &rng;
        io.progress = log_progress;
        io.progress_user = &log;
        assert_int_equal(smp_sample(s, &io, x, LATENT, sigmas, ns, &err), 0);
        assert_int_equal(log.calls, 10);
        /* cancelling after step 3 stops before step 4 calls the model */
        progress_log stop = {0, 0, 3};
        io.progress_user = &stop;
        toy probe = {FM_PRED_EPS, 0};
        io.denoise_user = &probe;
        fm_error e2 = {0};
        assert_int_equal(smp_sample(s, &io, x, LATENT, sigmas, ns, &e2), FM_EINTERRUPT);
        assert_string_equal(e2.msg, "sampler: cancelled after step 3 of 10");
        assert_int_equal(stop.calls, 3);
        assert_true(probe.calls >= 3 && probe.calls <= 3 * 2);
    }
}

static int failing_model(void *user, float *den, const float *x, size_t n, double s, fm_error *err)
{
    (void)user, (void)den, (void)x, (void)n, (void)s;
    return core_fail(err, FM_EINPUT, "unet: NaN in the output");
}

static void test_cancel_and_errors(void **state)
{
    (void)state;
    double sigmas[11];
    fm_error err = {0};
    int ns = smp_schedule(&disc, FM_SCHED_NORMAL, 10, sigmas, &err);
    float x[LATENT] = {0};
    toy m = {FM_PRED_EPS, 0};
    int last = -1;
    smp_io io;
    smp_io_init(&io);
    io.denoise = toy_denoise;
    io.denoise_user = &m;
    io.step = cancel_at_2;
    io.step_user = &last;
    assert_int_equal(smp_sample(FM_SAMPLER_HEUN, &io, x, LATENT, sigmas, ns, &err), FM_EINTERRUPT);
    assert_int_equal(last, 2);
    assert_string_equal(err.msg, "sampler: cancelled at step 3 of 10");

    fm_error e2 = {0};
    assert_int_equal(smp_sample(FM_SAMPLER_EULER_ANCESTRAL, &io, x, LATENT, sigmas, ns, &e2), FM_EUSAGE);
    assert_string_equal(e2.msg, "sampler euler_ancestral: needs a noise source");

    fm_error e3 = {0};
    io.step = NULL;
    io.denoise = failing_model;
    assert_int_equal(smp_sample(FM_SAMPLER_EULER, &io, x, LATENT, sigmas, ns, &e3), FM_EINPUT);
    assert_string_equal(e3.msg, "unet: NaN in the output"); /* the first cause wins */

    fm_error e4 = {0};
    double bad[3] = {1, 0, 0};
    assert_int_equal(smp_sample(FM_SAMPLER_EULER, &io, x, LATENT, bad, 3, &e4), FM_EUSAGE);
    fm_error e5 = {0};
    assert_int_equal(smp_sample(FM_SAMPLER_COUNT, &io, x, LATENT, sigmas, ns, &e5), FM_EUSAGE);
}

/* tests/data/README.md#front-end-conventions: dpm_2* get the schedule for steps + 1 minus its
 * next-to-last sigma; the others get smp_schedule unchanged. */
static void test_front_end_sigmas(void **state)
{
    (void)state;
    fm_error err = {0};
    double plain[12];
    int n_plain = smp_schedule(&disc, FM_SCHED_KARRAS, 10, plain, &err);
    int n;
    double *s = smp_sigmas(&disc, FM_SAMPLER_EULER, FM_SCHED_KARRAS, 10, &n, &err);
    assert_non_null(s);
    assert_int_equal(n, n_plain);
    assert_memory_equal(s, plain, sizeof(double) * (size_t)n);
    free(s);

    double longer[13];
    int n_longer = smp_schedule(&disc, FM_SCHED_KARRAS, 11, longer, &err);
    s = smp_sigmas(&disc, FM_SAMPLER_DPM_2_ANCESTRAL, FM_SCHED_KARRAS, 10, &n, &err);
    assert_non_null(s);
    assert_int_equal(n, 11);
    assert_int_equal(n_longer, 12);
    assert_memory_equal(s, longer, sizeof(double) * 10);
    assert_true(s[9] == longer[9] && s[10] == 0);
    free(s);

    s = smp_sigmas(&disc, FM_SAMPLER_DPM_2, FM_SCHED_NORMAL, 0, &n, &err);
    assert_null(s);
    assert_int_equal(err.code, FM_EUSAGE);
}

/* ---- names ---- */

static void expect_sampler(const char *name, const char *sampler, const char *scheduler)
{
    char s[32] = "x", sch[32] = "x";
    fm_error err = {0};
    if (fm_sampler_resolve(name, s, sch, &err))
        fail_msg("%s: %s", name, err.msg);
    assert_string_equal(s, sampler);
    assert_string_equal(sch, scheduler);
}

static void test_sampler_names(void **state)
{
    (void)state;
    expect_sampler("dpmpp_2m", "dpmpp_2m", "");
    expect_sampler("DPM++ 2M", "dpmpp_2m", "");
    expect_sampler("DPM++ 2M Karras", "dpmpp_2m", "karras");
    expect_sampler("dpm++ 2m karras", "dpmpp_2m", "karras");
    expect_sampler("Euler a", "euler_ancestral", "");
    expect_sampler("EULER_ANCESTRAL", "euler_ancestral", "");
    expect_sampler("  Euler  ", "euler", "");
    expect_sampler("DPM2 a Karras", "dpm_2_ancestral", "karras");
    expect_sampler("DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "exponential");
    expect_sampler("DPM++ SDE Karras", "dpmpp_sde", "karras");
    expect_sampler("DPM++ 2S a", "dpmpp_2s_ancestral", "");
    expect_sampler("LMS Karras", "lms", "karras");
    expect_sampler("k_euler_a", "euler_ancestral", "");
    expect_sampler("DDIM", "ddim", "");
    expect_sampler("lcm", "lcm", "");
    char s[32];
    fm_error err = {0};
    assert_int_equal(fm_sampler_resolve("dpmpp_2m", s, NULL, &err), 0);
    assert_int_equal(fm_sampler_resolve("DPM++ 3M", s, NULL, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "sampler \"DPM++ 3M\": unknown; valid: euler (Euler), "));
    assert_non_null(strstr(err.msg, "dpmpp_2m (DPM++ 2M)"));
    assert_non_null(strstr(err.msg, "lcm (LCM)"));
    fm_error e2 = {0};
    assert_int_equal(fm_sampler_resolve("Karras", s, NULL, &e2), FM_EUSAGE);
    fm_error e3 = {0};
    assert_int_equal(fm_sampler_resolve("Heun Simple", s, NULL, &e3), FM_EUSAGE);
}

static void test_scheduler_names(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"normal", "normal"}, {"discrete", "normal"}, {"Uniform", "normal"}, {"Normal", "normal"},
        {"Karras", "karras"}, {"EXPONENTIAL", "exponential"}, {"SGM Uniform", "sgm_uniform"},
        {"sgm_uniform", "sgm_uniform"}, {"Simple", "simple"}, {"DDIM", "ddim_uniform"},
        {"ddim_uniform", "ddim_uniform"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        fm_error err = {0};
        assert_int_equal(fm_scheduler_resolve(cases[i][0], out, &err), 0);
        assert_string_equal(out, cases[i][1]);
    }
    char out[32];
    fm_error err = {0};
    assert_int_equal(fm_scheduler_resolve("beta", out, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "scheduler \"beta\": unknown; valid: normal (Uniform), karras (Karras)"));
}

/* fm_sampler_list, the labels for the infotext and the tables agree. */
static void test_list_and_labels(void **state)
{
    (void)state;
    char expect[1024] = "";
    size_t used = 0;
    for (int s = 0; s < FM_SAMPLER_COUNT; s++)
        used += (size_t)snprintf(expect + used, sizeof expect - used, "%s\t%s\n", smp_name(s),
                                 smp_label(s));
    for (int s = 0; s < FM_SCHED_COUNT; s++)
        used += (size_t)snprintf(expect + used, sizeof expect - used, "%s\t%s\n",
                                 smp_scheduler_name(s), smp_scheduler_label(s));
    assert_string_equal(fm_sampler_list(), expect);
    for (int s = 0; s < FM_SAMPLER_COUNT; s++) {
        assert_int_equal(smp_find(smp_name(s)), s);
        char out[32];
        fm_error err = {0};
        assert_int_equal(fm_sampler_resolve(smp_label(s), out, NULL, &err), 0);
        assert_string_equal(out, smp_name(s));
    }
    assert_string_equal(smp_label(FM_SAMPLER_DPMPP_2M), "DPM++ 2M");
    assert_string_equal(smp_scheduler_label(FM_SCHED_KARRAS), "Karras");
    assert_string_equal(smp_scheduler_label(FM_SCHED_NORMAL), "Uniform");
    assert_int_equal(smp_default_scheduler(FM_SAMPLER_DPMPP_2M), FM_SCHED_KARRAS);
    assert_int_equal(smp_default_scheduler(FM_SAMPLER_DPMPP_2M_SDE), FM_SCHED_EXPONENTIAL);
    assert_int_equal(smp_find("Euler"), -1);
    assert_null(smp_name(FM_SAMPLER_COUNT));
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
        cmocka_unit_test(test_dpmpp_sde),
        cmocka_unit_test(test_cancel_and_errors),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_front_end_sigmas),
        cmocka_unit_test(test_sampler_names),
        cmocka_unit_test(test_scheduler_names),
        cmocka_unit_test(test_list_and_labels),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
