/* samplers: seed-compatible noise, sigma schedules, the parameterisation
 * wrappers and the k-diffusion samplers, plus their ComfyUI/A1111 names.
 *
 * The layers, from the bottom:
 *   smp_rng        A1111's Philox "NV" generator or PyTorch's CPU generator,
 *                 bit-exact including successive calls (tests/data/README.md#rng).
 *   smp_discrete   a model's discrete schedule (sigmas from alphas_cumprod),
 *                 sigma <-> fractional timestep, and the six schedulers
 *                 (tests/data/README.md#schedules).
 *   smp_denoiser_scalings   c_skip/c_out/c_in of k-diffusion's CompVis
 *                 (eps) and CompVisV (v) denoisers.
 *   smp_sample     one sampler run over a denoiser callback, k-diffusion's
 *                 sampling.py equations (tests/data/README.md#sampler-update-rules).
 *   smp_sigmas   the front-end convention layer
 *                 (tests/data/README.md#front-end-conventions):
 *                 the sigmas a UI would hand the sampler, including the
 *                 "discard next-to-last sigma" of dpm_2 / dpm_2_ancestral.
 *                 smp_sample itself never alters the sigmas it is given.
 *
 * The pipeline supplies the denoiser (U-Net + CFG + parameterisation);
 * latents are float32, schedules and scalars double. */
#ifndef FM_SAMPLERS_H
#define FM_SAMPLERS_H

#include <stddef.h>
#include <stdint.h>
#include "core/core.h"

/* ---------------------------------------------------------------- RNG -- */

/* Which of PyTorch's CPU normal_fill kernels to imitate for >= 16 values
 * (they differ in the last bits): AVX2 = normal_fill_16_AVX2 (avx_mathfun
 * polynomials; what PyTorch runs on AVX2-only x86 CPUs, i.e. most desktops,
 * and what the tiny SD1 cases' e2e3 noise came from) is smp_rng_init's
 * choice; DEFAULT = the scalar libm kernel (PyTorch's DEFAULT and AVX512
 * dispatch, non-x86). Both bit-exact against tests/data/rng.safetensors. */
typedef enum { FM_TORCH_KERNEL_DEFAULT = 0, FM_TORCH_KERNEL_AVX2 } smp_torch_kernel;

typedef struct smp_rng {
    fm_rng_kind kind;     /* FM_RNG_CUDA (Philox) or FM_RNG_CPU (MT19937) */
    uint64_t seed;
    /* Philox: counter word 0, +1 per randn call whatever its size */
    uint64_t offset;
    /* MT19937 */
    uint32_t mt[624];
    int mti;
    int has_cached_normal; /* torch's cached second Box-Muller value (< 16 path) */
    double cached_normal;
    smp_torch_kernel torch_kernel;
} smp_rng;

/* A freshly seeded generator: `torch.manual_seed(seed)` / `Generator(seed)`.
 * torch_kernel is set to FM_TORCH_KERNEL_AVX2; change it after init. */
void smp_rng_init(smp_rng *rng, fm_rng_kind kind, uint64_t seed);
/* One randn call of n values (torch.randn(shape).flatten(), n = numel). */
void smp_rng_randn(smp_rng *rng, float *out, size_t n);

/* ----------------------------------------------------------- schedule -- */

/* A model's discrete noise schedule: sigma_i = sqrt((1 - ac_i) / ac_i). */
typedef struct smp_discrete {
    int n;               /* timesteps, 1000 for every SD model */
    double *sigmas;      /* [n], increasing */
    double *log_sigmas;  /* [n] */
} smp_discrete;

/* From the checkpoint's F32 alphas_cumprod[n] (what A1111's CompVisDenoiser
 * uses: sigma_min 0.02916753 for SD 1.x). */
int smp_discrete_init(smp_discrete *d, const float *alphas_cumprod, int n, fm_error *err);
/* ldm's scaled_linear betas = linspace(sqrt(start), sqrt(end), n)^2 and
 * alphas_cumprod = cumprod(1 - betas), kept in float64 as ComfyUI's
 * ModelSamplingDiscrete and tests/data/schedules.safetensors do (sigma_min
 * 0.029167158 for SD 1.x). */
int smp_discrete_init_scaled_linear(smp_discrete *d, double linear_start, double linear_end, int n,
                                   fm_error *err);
/* The same alphas_cumprod rounded to F32, as ldm's register_schedule (SD 1/2
 * buffers) and A1111's SDXL LegacyDDPMDiscretization store it: for a file
 * without an alphas_cumprod tensor, smp_discrete_init on this gives A1111's
 * sigmas. */
void smp_scaled_linear_alphas_cumprod(float *alphas_cumprod, double linear_start, double linear_end,
                                     int n);
void smp_discrete_free(smp_discrete *d);
double smp_discrete_sigma_min(const smp_discrete *d);
double smp_discrete_sigma_max(const smp_discrete *d);
/* Fractional timestep in [0, n-1] -> sigma by log-sigma interpolation. */
double smp_discrete_t_to_sigma(const smp_discrete *d, double t);
/* sigma -> fractional timestep (k-diffusion, quantize=False): what the U-Net
 * is fed. Clamped to [0, n-1]. */
double smp_discrete_sigma_to_t(const smp_discrete *d, double sigma);

typedef enum {
    FM_SCHED_NORMAL = 0,   /* k-diffusion get_sigmas (ComfyUI normal, A1111 Uniform) */
    FM_SCHED_KARRAS,
    FM_SCHED_EXPONENTIAL,
    FM_SCHED_SGM_UNIFORM,
    FM_SCHED_SIMPLE,
    FM_SCHED_DDIM_UNIFORM,
    FM_SCHED_COUNT
} smp_scheduler_id;

/* Number of sigmas (trailing 0 included) the scheduler gives for steps:
 * steps + 1, except ddim_uniform which can give more (30 steps -> 32). */
int smp_schedule_length(const smp_discrete *d, smp_scheduler_id s, int steps);
/* Writes smp_schedule_length() sigmas, decreasing, ending with 0. Returns
 * that count, or -1 with err set (FM_EUSAGE: steps < 1, unknown scheduler). */
int smp_schedule(const smp_discrete *d, smp_scheduler_id s, int steps, double *sigmas, fm_error *err);

/* ---------------------------------------------------- parameterisation -- */

/* denoised = c_skip * x + c_out * net(c_in * x, sigma_to_t(sigma)).
 * eps (CompVisDenoiser): c_skip 1, c_out -sigma, c_in 1/sqrt(sigma^2+1).
 * v (CompVisVDenoiser): c_skip 1/(sigma^2+1), c_out -sigma/sqrt(sigma^2+1),
 * c_in 1/sqrt(sigma^2+1). (sigma_data = 1.) */
typedef struct smp_scalings {
    double c_skip, c_out, c_in;
} smp_scalings;
smp_scalings smp_denoiser_scalings(fm_prediction pred, double sigma);

/* ------------------------------------------------------------ samplers -- */

typedef enum {
    FM_SAMPLER_EULER = 0,
    FM_SAMPLER_EULER_ANCESTRAL,
    FM_SAMPLER_HEUN,
    FM_SAMPLER_DPM_2,
    FM_SAMPLER_DPM_2_ANCESTRAL,
    FM_SAMPLER_LMS,
    FM_SAMPLER_DPMPP_2M,
    FM_SAMPLER_DPMPP_2S_ANCESTRAL,
    FM_SAMPLER_DPMPP_2M_SDE,
    FM_SAMPLER_DPMPP_SDE,
    FM_SAMPLER_DDIM,  /* ComfyUI's ddim: exactly euler */
    FM_SAMPLER_LCM,
    FM_SAMPLER_COUNT
} smp_id;

/* The model at noise level sigma: writes denoised[n] for x[n]. Returns 0 or
 * an error code (err set). */
typedef int (*smp_denoise_fn)(void *user, float *denoised, const float *x, size_t n, double sigma,
                             fm_error *err);
/* The next standard-normal tensor of n values (ancestral and SDE noise). */
typedef int (*smp_noise_fn)(void *user, float *out, size_t n, fm_error *err);
/* k-diffusion's callback: after the first model evaluation of step i
 * (0-based, of steps), with x at the start of the step and that denoised.
 * Return non-zero to cancel: smp_sample then fails with FM_EINTERRUPT. */
typedef int (*smp_step_fn)(void *user, int i, int steps, double sigma, const float *x,
                          const float *denoised);

typedef struct smp_io {
    smp_denoise_fn denoise;
    void *denoise_user;
    smp_noise_fn noise;     /* required by the noisy samplers (smp_is_noisy) */
    void *noise_user;
    smp_step_fn step;       /* optional */
    void *step_user;
    /* optional, fmimage.h's: progress(user, k, steps) once step k (1-based)
     * is complete; non-zero cancels (FM_EINTERRUPT). */
    fm_progress_fn progress;
    void *progress_user;
    double eta, s_noise;   /* 1 and 1 after smp_io_init (A1111/ComfyUI defaults) */
    /* optional: smp_sample_work_floats(n) floats for the samplers' own
     * latents, planned by the caller so that smp_sample allocates nothing
     * (NULL: smp_sample allocates them before the first step) */
    float *work;
} smp_io;

/* Floats of smp_io.work for latents of n values (any sampler). */
size_t smp_sample_work_floats(size_t n);

void smp_io_init(smp_io *io);

/* An smp_noise_fn drawing successive randn calls from the smp_rng* user, as
 * A1111 does with the image's generator after the initial latent. */
int smp_rng_noise(void *rng, float *out, size_t n, fm_error *err);

/* Runs sampler over sigmas[0..n_sigmas-1] (decreasing, normally ending with
 * 0), updating x[n] in place from the start latent to the sample. Steps =
 * n_sigmas - 1. The start latent is the caller's
 * (tests/data/README.md#front-end-conventions): A1111
 * and k-diffusion use noise * sigmas[0] (img2img: init + noise * sigmas[0]);
 * ComfyUI uses noise * sqrt(1 + sigmas[0]^2) when sigmas[0] is sigma_max.
 * The noisy samplers draw one tensor per step with sigmas[i+1] > 0
 * (dpmpp_sde two; dpm_2_ancestral one per step whose sigma_down != 0, as
 * k-diffusion), the first after the initial noise: with smp_rng_noise on
 * the image's generator that is A1111's sequence. dpmpp_2m_sde and dpmpp_sde
 * default to a Brownian tree in k-diffusion/ComfyUI; that noise is not
 * reproduced (tests/data/README.md#sampler-update-rules). */
int smp_sample(smp_id sampler, const smp_io *io, float *x, size_t n,
              const double *sigmas, int n_sigmas, fm_error *err);

/* The sigmas a front end hands the sampler: smp_schedule for steps, except
 * for the samplers with discard_next_to_last_sigma (dpm_2, dpm_2_ancestral;
 * A1111 and ComfyUI alike), which get the schedule for steps + 1 without its
 * second-to-last sigma. Returns a malloc'd array (free()) and its length in
 * *n_sigmas, or NULL with err set. */
double *smp_sigmas(const smp_discrete *d, smp_id sampler, smp_scheduler_id sched,
                          int steps, int *n_sigmas, fm_error *err);

/* --------------------------------------------------------------- names -- */

/* ComfyUI name ("dpmpp_2m"), or NULL for an id out of range. */
const char *smp_name(smp_id s);
/* A1111 label for the infotext "Sampler:" field ("DPM++ 2M"). */
const char *smp_label(smp_id s);
const char *smp_scheduler_name(smp_scheduler_id s);
/* A1111 "Schedule type:" label ("Karras"; "Uniform" for normal). */
const char *smp_scheduler_label(smp_scheduler_id s);
/* Exact ComfyUI names (as fm_sampler_resolve writes them); -1 if unknown. */
int smp_find(const char *comfy_name);
int smp_scheduler_find(const char *comfy_name);
/* Draws noise during sampling (needs smp_io.noise). */
int smp_is_noisy(smp_id s);
/* A1111's "Automatic" schedule type of the sampler (its table). */
smp_scheduler_id smp_default_scheduler(smp_id s);
/* The pair a caller's sampler and scheduler names mean, as A1111's
 * get_sampler_and_scheduler decides it: a scheduler suffix of the sampler
 * label wins ("DPM++ 2M Karras"), then the scheduler name; a NULL, "" or
 * "automatic" scheduler is the sampler's smp_default_scheduler.
 * Returns 0, or FM_EUSAGE with err set for an unknown name. */
int smp_pair(const char *sampler, const char *scheduler, smp_id *sampler_out,
                    smp_scheduler_id *scheduler_out, fm_error *err);
/* Schedule computed for steps + 1, next-to-last sigma dropped. */
int smp_discards_penultimate_sigma(smp_id s);

#endif
