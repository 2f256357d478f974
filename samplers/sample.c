/* smp_sample: one sampler run. Owns the scratch latents, calls the model and
 * the noise source, reports steps; the equations live in the family files. */
#include "samplers/sampler_impl.h"

#include <math.h>
#include <stdlib.h>

void smp_io_init(smp_io *io)
{
    *io = (smp_io){.eta = 1, .s_noise = 1};
}

int smp_run_model(smp_run *r, float *out, const float *x, double sigma)
{
    int rc = r->io->denoise(r->io->denoise_user, out, x, r->n, sigma, r->err);
    if (rc)
        return core_fail(r->err, rc, "sampler: the model failed at sigma %g", sigma);
    return 0;
}

/* Reports that `done` steps are complete. */
static int report_progress(smp_run *r, int done)
{
    if (r->io->progress && r->io->progress(r->io->progress_user, done, r->steps))
        return core_fail(r->err, FM_EINTERRUPT, "sampler: cancelled after step %d of %d", done, r->steps);
    return 0;
}

int smp_run_denoise_step(smp_run *r, int i)
{
    /* step i starting = step i-1 complete, whichever sampler is running */
    int rc = i > 0 ? report_progress(r, i) : 0;
    if (rc)
        return rc;
    rc = smp_run_model(r, r->denoised, r->x, r->sigmas[i]);
    if (rc)
        return rc;
    if (r->io->step && r->io->step(r->io->step_user, i, r->steps, r->sigmas[i], r->x, r->denoised))
        return core_fail(r->err, FM_EINTERRUPT, "sampler: cancelled at step %d of %d", i + 1, r->steps);
    return 0;
}

int smp_run_noise(smp_run *r, float *out)
{
    int rc = r->io->noise(r->io->noise_user, out, r->n, r->err);
    if (rc)
        return core_fail(r->err, rc, "sampler: the noise source failed");
    return 0;
}

void smp_ancestral_step(double sigma_from, double sigma_to, double eta, double *down, double *up)
{
    if (eta == 0) {
        *down = sigma_to;
        *up = 0;
        return;
    }
    *up = fmin(sigma_to, eta * sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
                                    (sigma_from * sigma_from)));
    *down = sqrt(sigma_to * sigma_to - *up * *up);
}

void smp_euler_update(float *x, const float *denoised, size_t n, double sigma, double sigma_to)
{
    double dt = sigma_to - sigma;
    for (size_t k = 0; k < n; k++) {
        double d = ((double)x[k] - denoised[k]) / sigma;
        x[k] = (float)(x[k] + d * dt);
    }
}

void smp_add_noise(float *x, const float *noise, size_t n, double scale)
{
    for (size_t k = 0; k < n; k++)
        x[k] = (float)(x[k] + noise[k] * scale);
}

static int (*const sampler_fns[FM_SAMPLER_COUNT])(smp_run *) = {
    [FM_SAMPLER_EULER] = smp_sample_euler,
    [FM_SAMPLER_EULER_ANCESTRAL] = smp_sample_euler_ancestral,
    [FM_SAMPLER_HEUN] = smp_sample_heun,
    [FM_SAMPLER_DPM_2] = smp_sample_dpm_2,
    [FM_SAMPLER_DPM_2_ANCESTRAL] = smp_sample_dpm_2_ancestral,
    [FM_SAMPLER_LMS] = smp_sample_lms,
    [FM_SAMPLER_DPMPP_2M] = smp_sample_dpmpp_2m,
    [FM_SAMPLER_DPMPP_2S_ANCESTRAL] = smp_sample_dpmpp_2s_ancestral,
    [FM_SAMPLER_DPMPP_2M_SDE] = smp_sample_dpmpp_2m_sde,
    [FM_SAMPLER_DPMPP_SDE] = smp_sample_dpmpp_sde,
    [FM_SAMPLER_DDIM] = smp_sample_euler, /* ComfyUI maps ddim to sample_euler */
    [FM_SAMPLER_LCM] = smp_sample_lcm,
};

size_t smp_sample_work_floats(size_t n) { return (FM_RUN_BUFFERS + 1) * n; }

static int check_sigmas(const double *sigmas, int n_sigmas, fm_error *err)
{
    if (n_sigmas < 2)
        return core_fail(err, FM_EUSAGE, "sampler: %d sigmas, need at least 2", n_sigmas);
    for (int i = 0; i < n_sigmas; i++) {
        if (!(sigmas[i] >= 0) || !isfinite(sigmas[i]))
            return core_fail(err, FM_EUSAGE, "sampler: sigma %d is %g", i, sigmas[i]);
        if (i < n_sigmas - 1 && sigmas[i] == 0)
            return core_fail(err, FM_EUSAGE, "sampler: sigma %d is 0 before the last step", i);
    }
    return 0;
}

int smp_sample(smp_id sampler, const smp_io *io, float *x, size_t n,
              const double *sigmas, int n_sigmas, fm_error *err)
{
    if ((unsigned)sampler >= FM_SAMPLER_COUNT)
        return core_fail(err, FM_EUSAGE, "sampler %d: unknown", (int)sampler);
    if (!io || !io->denoise)
        return core_fail(err, FM_EUSAGE, "sampler %s: no denoiser", smp_name(sampler));
    if (smp_is_noisy(sampler) && !io->noise)
        return core_fail(err, FM_EUSAGE, "sampler %s: needs a noise source", smp_name(sampler));
    int rc = check_sigmas(sigmas, n_sigmas, err);
    if (rc)
        return rc;
    smp_run r = {.io = io, .x = x, .n = n, .sigmas = sigmas, .steps = n_sigmas - 1, .err = err};
    float *all = io->work, *own = NULL;
    if (!all && !(all = own = core_alloc(smp_sample_work_floats(n) * sizeof(float))))
        return core_fail(err, FM_EINPUT, "sampler: out of memory for %d latents of %zu values",
                       FM_RUN_BUFFERS + 1, n);
    r.denoised = all;
    for (int b = 0; b < FM_RUN_BUFFERS; b++)
        r.buf[b] = all + (size_t)(b + 1) * n;
    rc = sampler_fns[sampler](&r);
    if (!rc)
        rc = report_progress(&r, r.steps);
    core_free(own);
    return rc;
}

double *smp_sigmas(const smp_discrete *d, smp_id sampler, smp_scheduler_id sched,
                          int steps, int *n_sigmas, fm_error *err)
{
    if (steps < 1) {
        core_fail(err, FM_EUSAGE, "steps %d: must be at least 1", steps);
        return NULL;
    }
    int discard = smp_discards_penultimate_sigma(sampler);
    int len = smp_schedule_length(d, sched, steps + discard);
    double *s = malloc((size_t)(len > 0 ? len : 1) * sizeof(double));
    if (!s) {
        core_fail(err, FM_EINPUT, "sampler: out of memory");
        return NULL;
    }
    len = smp_schedule(d, sched, steps + discard, s, err);
    if (len < 0) {
        free(s);
        return NULL;
    }
    if (discard && len >= 3) {
        s[len - 2] = s[len - 1];
        len--;
    }
    *n_sigmas = len;
    return s;
}
