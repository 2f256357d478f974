/* k-diffusion sample_euler (s_churn = 0) and sample_euler_ancestral.
 * d = (x - D(x, s_i)) / s_i. */
#include "samplers/sampler_impl.h"

/* x += d (s_{i+1} - s_i) */
int smp_sample_euler(smp_run *r)
{
    for (int i = 0; i < r->steps; i++) {
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        smp_euler_update(r->x, r->denoised, r->n, r->sigmas[i], r->sigmas[i + 1]);
    }
    return 0;
}

/* x += d (s_down - s_i); then x += noise s_noise s_up while s_{i+1} > 0 */
int smp_sample_euler_ancestral(smp_run *r)
{
    float *noise = r->buf[0];
    for (int i = 0; i < r->steps; i++) {
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        double down, up;
        smp_ancestral_step(r->sigmas[i], r->sigmas[i + 1], r->io->eta, &down, &up);
        smp_euler_update(r->x, r->denoised, r->n, r->sigmas[i], down);
        if (r->sigmas[i + 1] > 0) {
            if ((rc = smp_run_noise(r, noise)))
                return rc;
            smp_add_noise(r->x, noise, r->n, r->io->s_noise * up);
        }
    }
    return 0;
}
