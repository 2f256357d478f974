/* dpm_2_ancestral adds noise only after a DPM-Solver-2 step, i.e. when
 * sigma_down != 0, as k-diffusion's sample_dpm_2_ancestral does (its
 * `if sigma_down == 0: Euler ... else: DPM-2 ...; x += noise * s_noise *
 * sigma_up`, the noise line inside the else branch). With eta > 1
 * get_ancestral_step clamps sigma_up to sigma_{i+1}, so sigma_down is 0 on
 * a step whose sigma_{i+1} is still > 0: no noise there.
 *
 * The expected values are derived by hand from k-diffusion's equations for
 * a linear denoiser D(x, sigma) = x / 2: the Euler step to 0 is
 * x + (x - D) / sigma * (0 - sigma) = D = x / 2, exact in binary floating
 * point, so three such steps give x0 / 8 and no noise is ever drawn. */
#include "testutil.h"
#include "samplers/samplers.h"

#define N 16

static int halve(void *user, float *denoised, const float *x, size_t n, double sigma, fm_error *err)
{
    (void)user, (void)sigma, (void)err;
    for (size_t i = 0; i < n; i++) denoised[i] = x[i] * 0.5f;
    return 0;
}

static int ones(void *user, float *out, size_t n, fm_error *err)
{
    (void)err;
    ++*(int *)user;
    for (size_t i = 0; i < n; i++) out[i] = 1.0f;
    return 0;
}

static int run(double eta, const double *sigmas, int ns, float *x, int *draws)
{
    smp_io io;
    smp_io_init(&io);
    io.eta = eta;
    io.denoise = halve;
    io.noise = ones;
    io.noise_user = draws;
    fm_error err = {0};
    return smp_sample(FM_SAMPLER_DPM_2_ANCESTRAL, &io, x, N, sigmas, ns, &err);
}

/* eta 10: sigma_up = min(s_next, 10 s_next sqrt(s^2 - s_next^2) / s) =
 * s_next, sigma_down = 0 on every step. */
static void test_no_noise_when_sigma_down_is_zero(void **state)
{
    (void)state;
    static const double sigmas[] = {2.0, 1.0, 0.5, 0.0};
    float x[N];
    for (int i = 0; i < N; i++) x[i] = (float)(i - 7) * 0.75f;
    int draws = 0;
    assert_int_equal(run(10.0, sigmas, 4, x, &draws), 0);
    assert_int_equal(draws, 0);
    for (int i = 0; i < N; i++) assert_float_equal(x[i], (float)(i - 7) * 0.75f / 8, 0);
}

/* eta 1: sigma_down != 0 while s_next > 0 (the DPM-2 branch), so one draw
 * per step but the last, sigma_up = sqrt(s_next^2 (s^2 - s_next^2) / s^2). */
static void test_noise_after_dpm2_steps(void **state)
{
    (void)state;
    static const double sigmas[] = {2.0, 1.0, 0.5, 0.0};
    float x[N];
    for (int i = 0; i < N; i++) x[i] = 1.0f;
    int draws = 0;
    assert_int_equal(run(1.0, sigmas, 4, x, &draws), 0);
    assert_int_equal(draws, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_noise_when_sigma_down_is_zero),
        cmocka_unit_test(test_noise_after_dpm2_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
