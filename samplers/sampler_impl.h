/* Internal to samplers/: the state of one smp_sample run and the pieces the
 * k-diffusion samplers share (to_d, get_ancestral_step, model calls). */
#ifndef FM_SAMPLER_IMPL_H
#define FM_SAMPLER_IMPL_H

#include "samplers/samplers.h"

enum { FM_RUN_BUFFERS = 8 };

typedef struct smp_run {
    const smp_io *io;
    float *x;              /* the latent, updated in place */
    size_t n;
    const double *sigmas;  /* steps + 1 of them */
    int steps;
    fm_error *err;
    float *denoised;       /* the step's first model evaluation */
    float *buf[FM_RUN_BUFFERS]; /* scratch latents for the samplers' own use */
} smp_run;

/* denoised = D(x, sigma) into out. */
int smp_run_model(smp_run *r, float *out, const float *x, double sigma);
/* Step i's first evaluation: r->denoised = D(r->x, sigmas[i]), then the
 * step callback (and its cancel). */
int smp_run_denoise_step(smp_run *r, int i);
/* The next noise tensor into out. */
int smp_run_noise(smp_run *r, float *out);

/* k-diffusion get_ancestral_step: split sigma_from -> sigma_to into a
 * deterministic step down to *down and fresh noise of std *up. */
void smp_ancestral_step(double sigma_from, double sigma_to, double eta, double *down, double *up);

/* x += (x - denoised)/sigma * (sigma_to - sigma): an Euler step along
 * k-diffusion's to_d derivative. */
void smp_euler_update(float *x, const float *denoised, size_t n, double sigma, double sigma_to);
/* x += noise * scale */
void smp_add_noise(float *x, const float *noise, size_t n, double scale);

int smp_sample_euler(smp_run *r);
int smp_sample_euler_ancestral(smp_run *r);
int smp_sample_heun(smp_run *r);
int smp_sample_dpm_2(smp_run *r);
int smp_sample_dpm_2_ancestral(smp_run *r);
int smp_sample_lms(smp_run *r);
int smp_sample_dpmpp_2m(smp_run *r);
int smp_sample_dpmpp_2s_ancestral(smp_run *r);
int smp_sample_dpmpp_2m_sde(smp_run *r);
int smp_sample_dpmpp_sde(smp_run *r);
int smp_sample_lcm(smp_run *r);

#endif
