/* The DPM-Solver++ family of k-diffusion: sample_dpmpp_2m,
 * sample_dpmpp_2s_ancestral, sample_dpmpp_2m_sde (midpoint) and
 * sample_dpmpp_sde. They step in t = -ln(sigma) with data prediction D:
 * a step from s to s' maps x -> (s'/s) x - expm1(-h) D, h = ln(s/s').
 * The SDE variants draw their noise from the injected source (k-diffusion
 * defaults to a Brownian tree there, so A1111/ComfyUI images differ). */
#include "samplers/sampler_impl.h"

#include <math.h>
#include <string.h>

/* out = (s_to/s) x - expm1(-h) D with h = ln(s/s_to): exact first-order
 * DPM-Solver++ step from s to s_to. */
static void dpm_solver_step(float *out, const float *x, const float *D, size_t n, double s, double s_to)
{
    double ratio = s_to / s, coef = -expm1(log(ratio));
    for (size_t k = 0; k < n; k++)
        out[k] = (float)(ratio * x[k] + coef * D[k]);
}

/* D' = (1 + 1/2r) D_i - (1/2r) D_{i-1}, r = h_{i-1}/h_i; first step and the
 * step to 0 use D_i alone. */
int smp_sample_dpmpp_2m(smp_run *r)
{
    float *old = r->buf[0], *D = r->buf[1];
    for (int i = 0; i < r->steps; i++) {
        double s = r->sigmas[i], s_next = r->sigmas[i + 1];
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        if (i == 0 || s_next == 0) {
            dpm_solver_step(r->x, r->x, r->denoised, r->n, s, s_next);
        } else {
            double h = log(s / s_next), h_last = log(r->sigmas[i - 1] / s), half_r = 1 / (2 * (h_last / h));
            for (size_t k = 0; k < r->n; k++)
                D[k] = (float)((1 + half_r) * r->denoised[k] - half_r * old[k]);
            dpm_solver_step(r->x, r->x, D, r->n, s, s_next);
        }
        memcpy(old, r->denoised, r->n * sizeof(float));
    }
    return 0;
}

/* Towards s_down: half a step in t to s_m, D(x2, s_m), the full step with
 * that; then x += noise s_noise s_up while s_{i+1} > 0. */
int smp_sample_dpmpp_2s_ancestral(smp_run *r)
{
    float *noise = r->buf[0], *x2 = r->buf[1], *den2 = r->buf[2];
    for (int i = 0; i < r->steps; i++) {
        double s = r->sigmas[i], s_next = r->sigmas[i + 1], down, up;
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        smp_ancestral_step(s, s_next, r->io->eta, &down, &up);
        if (down == 0) {
            smp_euler_update(r->x, r->denoised, r->n, s, down);
        } else {
            double t = -log(s), h = -log(down) - t, s_mid = exp(-(t + h / 2));
            dpm_solver_step(x2, r->x, r->denoised, r->n, s, s_mid);
            if ((rc = smp_run_model(r, den2, x2, s_mid)))
                return rc;
            dpm_solver_step(r->x, r->x, den2, r->n, s, down);
        }
        if (s_next > 0) {
            if ((rc = smp_run_noise(r, noise)))
                return rc;
            smp_add_noise(r->x, noise, r->n, r->io->s_noise * up);
        }
    }
    return 0;
}

/* h = ln(s_i/s_{i+1}), eta_h = eta h:
 * x = (s_{i+1}/s_i) e^{-eta_h} x + (1 - e^{-h-eta_h}) D_i
 *   + 0.5 (1 - e^{-h-eta_h}) (h/h_last) (D_i - D_{i-1})      (midpoint)
 *   + noise s_{i+1} sqrt(1 - e^{-2 eta_h}) s_noise. */
int smp_sample_dpmpp_2m_sde(smp_run *r)
{
    float *noise = r->buf[0], *old = r->buf[1];
    double eta = r->io->eta, h_last = 0;
    int have_old = 0;
    for (int i = 0; i < r->steps; i++) {
        double s = r->sigmas[i], s_next = r->sigmas[i + 1];
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        if (s_next == 0) {
            memcpy(r->x, r->denoised, r->n * sizeof(float));
        } else {
            double h = log(s / s_next), eta_h = eta * h;
            double decay = s_next / s * exp(-eta_h), gain = -expm1(-h - eta_h);
            double corr = have_old ? 0.5 * gain * (h / h_last) : 0;
            for (size_t k = 0; k < r->n; k++) {
                double xk = decay * r->x[k] + gain * r->denoised[k];
                if (have_old)
                    xk += corr * ((double)r->denoised[k] - old[k]);
                r->x[k] = (float)xk;
            }
            if (eta != 0) {
                if ((rc = smp_run_noise(r, noise)))
                    return rc;
                smp_add_noise(r->x, noise, r->n, s_next * sqrt(-expm1(-2 * eta_h)) * r->io->s_noise);
            }
            h_last = h;
        }
        memcpy(old, r->denoised, r->n * sizeof(float));
        have_old = 1;
    }
    return 0;
}

/* Ancestral DPM-Solver++ from s to s_to: the deterministic step to s_down
 * using D, then noise of std s_up (one draw). */
static int ancestral_dpm_step(smp_run *r, float *out, const float *x, const float *D, double s,
                              double s_to, float *noise)
{
    double down, up;
    smp_ancestral_step(s, s_to, r->io->eta, &down, &up);
    dpm_solver_step(out, x, D, r->n, s, down);
    int rc = smp_run_noise(r, noise);
    if (rc)
        return rc;
    smp_add_noise(out, noise, r->n, r->io->s_noise * up);
    return 0;
}

/* sample_dpmpp_sde, r = 1/2: an ancestral half step (in t) to s_mid,
 * D(x2, s_mid), then the ancestral full step with D' = (1 - 1/2r) D_i +
 * (1/2r) D(x2) = D(x2). Two noise draws per step; Euler on the step to 0. */
int smp_sample_dpmpp_sde(smp_run *r)
{
    const double ratio = 0.5, fac = 1 / (2 * ratio);
    float *noise = r->buf[0], *x2 = r->buf[1], *den2 = r->buf[2], *D = r->buf[3];
    for (int i = 0; i < r->steps; i++) {
        double s = r->sigmas[i], s_next = r->sigmas[i + 1];
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        if (s_next == 0) {
            smp_euler_update(r->x, r->denoised, r->n, s, s_next);
            continue;
        }
        double t = -log(s), h = -log(s_next) - t, s_mid = exp(-(t + h * ratio));
        if ((rc = ancestral_dpm_step(r, x2, r->x, r->denoised, s, s_mid, noise)))
            return rc;
        if ((rc = smp_run_model(r, den2, x2, s_mid)))
            return rc;
        for (size_t k = 0; k < r->n; k++)
            D[k] = (float)((1 - fac) * r->denoised[k] + fac * den2[k]);
        if ((rc = ancestral_dpm_step(r, r->x, r->x, D, s, s_next, noise)))
            return rc;
    }
    return 0;
}
