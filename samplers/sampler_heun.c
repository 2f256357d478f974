/* The second-order k-diffusion samplers that take a trial Euler step and
 * re-evaluate the model there: sample_heun (trapezoid), sample_dpm_2 and
 * sample_dpm_2_ancestral (midpoint in log sigma). s_churn = 0. */
#include "samplers/sampler_impl.h"

#include <math.h>

/* to_d derivative of one element */
static double deriv(float x, float denoised, double sigma)
{
    return ((double)x - denoised) / sigma;
}

/* x2 = x + d (s_to - s), written to x2 */
static void trial_step(float *x2, const float *x, const float *denoised, size_t n, double s, double s_to)
{
    for (size_t k = 0; k < n; k++)
        x2[k] = (float)(x[k] + deriv(x[k], denoised[k], s) * (s_to - s));
}

/* x2 = x + d (s2 - s); d2 = (x2 - D(x2, s2)) / s2; x += d2 (s_to - s), the
 * DPM-2 midpoint step (s2 the log-sigma midpoint of s and s_to). */
static int midpoint_step(smp_run *r, double s, double s_to)
{
    float *x2 = r->buf[1], *den2 = r->buf[2];
    double s2 = exp(log(s) + 0.5 * (log(s_to) - log(s)));
    trial_step(x2, r->x, r->denoised, r->n, s, s2);
    int rc = smp_run_model(r, den2, x2, s2);
    if (rc)
        return rc;
    for (size_t k = 0; k < r->n; k++)
        r->x[k] = (float)(r->x[k] + deriv(x2[k], den2[k], s2) * (s_to - s));
    return 0;
}

/* x2 = x + d (s_{i+1} - s_i); x += (d + d2)/2 (s_{i+1} - s_i), d2 at x2;
 * plain Euler on the step to 0. */
int smp_sample_heun(smp_run *r)
{
    float *x2 = r->buf[1], *den2 = r->buf[2];
    for (int i = 0; i < r->steps; i++) {
        double s = r->sigmas[i], s_next = r->sigmas[i + 1];
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        if (s_next == 0) {
            smp_euler_update(r->x, r->denoised, r->n, s, s_next);
            continue;
        }
        trial_step(x2, r->x, r->denoised, r->n, s, s_next);
        if ((rc = smp_run_model(r, den2, x2, s_next)))
            return rc;
        for (size_t k = 0; k < r->n; k++) {
            double d = deriv(r->x[k], r->denoised[k], s), d2 = deriv(x2[k], den2[k], s_next);
            r->x[k] = (float)(r->x[k] + (d + d2) / 2 * (s_next - s));
        }
    }
    return 0;
}

int smp_sample_dpm_2(smp_run *r)
{
    for (int i = 0; i < r->steps; i++) {
        double s = r->sigmas[i], s_next = r->sigmas[i + 1];
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        if (s_next == 0)
            smp_euler_update(r->x, r->denoised, r->n, s, s_next);
        else if ((rc = midpoint_step(r, s, s_next)))
            return rc;
    }
    return 0;
}

/* Euler to 0 when s_down is 0; otherwise dpm_2 towards s_down, then x +=
 * noise s_noise s_up. k-diffusion adds the noise in the DPM-2 branch only,
 * so a step whose s_down is 0 while s_{i+1} > 0 (eta > 1) draws none. */
int smp_sample_dpm_2_ancestral(smp_run *r)
{
    float *noise = r->buf[0];
    for (int i = 0; i < r->steps; i++) {
        double s = r->sigmas[i], s_next = r->sigmas[i + 1], down, up;
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        smp_ancestral_step(s, s_next, r->io->eta, &down, &up);
        if (down == 0) {
            smp_euler_update(r->x, r->denoised, r->n, s, down);
            continue;
        }
        if ((rc = midpoint_step(r, s, down)) || (rc = smp_run_noise(r, noise)))
            return rc;
        smp_add_noise(r->x, noise, r->n, r->io->s_noise * up);
    }
    return 0;
}
