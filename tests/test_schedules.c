/* Discrete schedule, sigma <-> t and the six schedulers against
 * tests/data/schedules.safetensors (1e-6 relative). */
#include "testutil.h"
#include "samplers/samplers.h"

#define GOLDEN "tests/data/schedules.safetensors"
#define TOL 1e-6

static wt_safetensors st;
static smp_discrete disc;
static int n_checked;
static double worst_seen;

static int setup(void **state)
{
    (void)state;
    tu_open(&st, GOLDEN);
    /* the golden schedule is float64 from the betas (ComfyUI's way) */
    fm_error err = {0};
    return smp_discrete_init_scaled_linear(&disc, 0.00085, 0.012, 1000, &err);
}

static int teardown(void **state)
{
    (void)state;
    smp_discrete_free(&disc);
    wt_st_close(&st);
    print_message("schedules: %d tensors checked, max relative error %.3g (tolerance %g)\n",
                  n_checked, worst_seen, TOL);
    return 0;
}

/* Relative error |got - ref| / |ref| of n doubles; with floor_one the
 * denominator is max(1, |ref|) (timesteps: an index near 0 has no relative
 * precision, the F32-rounded input sigma alone moves it by 6e-8). */
static void check_err(const char *name, const double *got, size_t n, int floor_one)
{
    size_t rn;
    float *ref = tu_f32(&st, name, &rn);
    if (rn != n)
        fail_msg("%s: %zu values computed, golden has %zu", name, n, rn);
    for (size_t i = 0; i < n; i++) {
        double scale = floor_one ? fmax(1.0, fabs((double)ref[i])) : fabs((double)ref[i]);
        double e = fabs(got[i] - ref[i]) / (scale != 0 ? scale : 1.0);
        if (!(e <= TOL))
            fail_msg("%s[%zu] = %.9g, reference %.9g (relative error %.3g)", name, i, got[i],
                     (double)ref[i], e);
        if (e > worst_seen)
            worst_seen = e;
    }
    n_checked++;
    core_free(ref);
}

static void check_rel(const char *name, const double *got, size_t n)
{
    check_err(name, got, n, 0);
}

static void test_model_sigmas(void **state)
{
    (void)state;
    check_rel("sigmas", disc.sigmas, 1000);
    check_rel("log_sigmas", disc.log_sigmas, 1000);
    assert_true(fabs(smp_discrete_sigma_min(&disc) - 0.029167158) < 1e-8);
    assert_true(fabs(smp_discrete_sigma_max(&disc) - 14.614641) < 1e-5);
}

/* A1111 takes sigmas from the checkpoint's F32 alphas_cumprod buffer: the
 * tiny SD1 checkpoint and its cases file (tests/data/README.md#tiny-sd1, sched.sigmas). */
static void test_checkpoint_alphas_cumprod(void **state)
{
    (void)state;
    wt_safetensors ck, cases;
    tu_open(&ck, "tests/data/tiny-sd1.safetensors");
    tu_open(&cases, "tests/data/tiny-sd1-cases.safetensors");
    size_t n, rn;
    float *ac = tu_f32(&ck, "alphas_cumprod", &n);
    float *ref = tu_f32(&cases, "sched.sigmas", &rn);
    assert_int_equal(n, rn);
    smp_discrete ckd;
    fm_error err = {0};
    assert_int_equal(smp_discrete_init(&ckd, ac, (int)n, &err), 0);
    for (size_t i = 0; i < n; i++)
        if (!(fabs(ckd.sigmas[i] - ref[i]) <= TOL * ref[i]))
            fail_msg("sched.sigmas[%zu] = %.9g, reference %.9g", i, ckd.sigmas[i], (double)ref[i]);
    n_checked++;
    /* the golden's F32 alphas_cumprod is that buffer too, and so is the
     * F32 scaled_linear fallback */
    float *gac = tu_f32(&st, "alphas_cumprod", &rn);
    assert_int_equal(memcmp(gac, ac, n * sizeof(float)), 0);
    float mine[1000];
    assert_int_equal(n, 1000);
    smp_scaled_linear_alphas_cumprod(mine, 0.00085, 0.012, 1000);
    assert_memory_equal(mine, ac, n * sizeof(float));
    smp_discrete_free(&ckd);
    core_free(ac);
    core_free(gac);
    core_free(ref);
    wt_st_close(&ck);
    wt_st_close(&cases);
}

static void test_t_sigma(void **state)
{
    (void)state;
    size_t n;
    float *t = tu_f32(&st, "t_to_sigma.t", &n);
    double got[32];
    assert_true(n <= 32);
    for (size_t i = 0; i < n; i++)
        got[i] = smp_discrete_t_to_sigma(&disc, t[i]);
    check_rel("t_to_sigma.sigma", got, n);
    core_free(t);
    float *sigma = tu_f32(&st, "sigma_to_t.sigma", &n);
    assert_true(n <= 32);
    for (size_t i = 0; i < n; i++)
        got[i] = smp_discrete_sigma_to_t(&disc, sigma[i]);
    check_err("sigma_to_t.t", got, n, 1);
    core_free(sigma);
}

static void test_schedulers(void **state)
{
    (void)state;
    static const int steps[] = {1, 2, 4, 20, 30};
    for (int s = 0; s < FM_SCHED_COUNT; s++)
        for (int k = 0; k < 5; k++) {
            char name[64];
            snprintf(name, sizeof name, "%s.%d", smp_scheduler_name(s), steps[k]);
            double sigmas[64];
            fm_error err = {0};
            int len = smp_schedule(&disc, s, steps[k], sigmas, &err);
            assert_int_equal(len, smp_schedule_length(&disc, s, steps[k]));
            assert_true(sigmas[len - 1] == 0);
            check_rel(name, sigmas, (size_t)len);
        }
    /* the ddim_uniform quirk: 30 steps give 31 sigmas + 0 */
    assert_int_equal(smp_schedule_length(&disc, FM_SCHED_DDIM_UNIFORM, 30), 32);
}

static void test_bad_input(void **state)
{
    (void)state;
    double s[4];
    fm_error err = {0};
    assert_int_equal(smp_schedule(&disc, FM_SCHED_KARRAS, 0, s, &err), -1);
    assert_int_equal(err.code, FM_EUSAGE);
    smp_discrete bad;
    float ac[3] = {0.9f, 0.95f, 0.5f};
    fm_error err2 = {0};
    assert_int_equal(smp_discrete_init(&bad, ac, 3, &err2), FM_EINPUT);
    assert_non_null(strstr(err2.msg, "alphas_cumprod[1]"));
}

static void test_scalings(void **state)
{
    (void)state;
    smp_scalings e = smp_denoiser_scalings(FM_PRED_EPS, 2.0);
    assert_true(e.c_skip == 1 && e.c_out == -2.0 && fabs(e.c_in - 1 / sqrt(5.0)) < 1e-15);
    smp_scalings v = smp_denoiser_scalings(FM_PRED_V, 2.0);
    assert_true(fabs(v.c_skip - 0.2) < 1e-15 && fabs(v.c_out + 2 / sqrt(5.0)) < 1e-15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_sigmas),
        cmocka_unit_test(test_checkpoint_alphas_cumprod),
        cmocka_unit_test(test_t_sigma),
        cmocka_unit_test(test_schedulers),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_scalings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
