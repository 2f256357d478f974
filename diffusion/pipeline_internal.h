/* What the pipeline's files share: the loaded model. Not installed. */
#ifndef FM_PIPELINE_INTERNAL_H
#define FM_PIPELINE_INTERNAL_H

#include "fmimage.h"
#include "core/core.h"
#include "diffusion/lora.h"
#include "diffusion/precision.h"
#include "weights/config.h"
#include "weights/source.h"
#include "samplers/samplers.h"
#include "textenc/textenc.h"
#include "textenc/tokenizer.h"
#include "unet/unet.h"
#include "vae/vae.h"

struct fm_model {
    wt_source *src;             /* the mapped checkpoint (wt_open); every part keeps views into it */
    wt_model_config cfg;
    fm_prediction prediction;   /* resolved: eps or v */
    int prediction_probed;      /* 1 when decided by the A1111 probe */
    te_tokenizer *tokenizer;
    te_encoder text;
    un_model *unet;
    vae_kl *vae;
    smp_discrete schedule;
    /* TAESD decoder, opened on first use and kept for the next images */
    vae_taesd *taesd;
    char *taesd_path;
    vae_taesd *preview_taesd;   /* fm_params.preview_taesd's, kept likewise */
    char *preview_taesd_path;
    /* what fm_generate allocates before the first step (the U-Net workspace,
     * the sampler's latents, the decoder's arena) goes through this hook:
     * tests count those allocations or make one fail */
    core_alloc_hook alloc;
    /* what --precision auto means on this machine, decided at first use */
    df_prec_auto prec_auto;
    /* LoRA (diffusion/lora.c): the adapters merged now; the text encoders
     * and the U-Net are bound to lora.merged when it is set */
    df_lora_state lora;
    /* --vae (fm_load_options.vae): A1111's "VAE" (base name) and "VAE hash" */
    char *vae_name;
    char vae_hash[11];
};

/* The precision fm_generate computes in for a requested one: BF16 is bf16
 * where the kernels have native bf16 products, float32 elsewhere; AUTO is
 * m's measured choice (df_prec_auto_resolve, decided at the first call);
 * FP32 and F16 are float32 (F16 weights always multiply with float32
 * accumulation). */
fm_precision df_precision_resolve(fm_model *m, fm_precision requested);

/* PIL-style Lanczos resize of RGB8 to out [3][out_h][out_w] in [-1, 1]. */
int df_resize_rgb_to_nchw(float *out, int out_w, int out_h, const uint8_t *rgb, int in_w, int in_h);

/* fm_generate up to the decode: x [in_channels][height/f][width/f] gets the
 * sampled latent (tests compare it with reference runs). */
int df_sample_latent(fm_model *m, const fm_params *p, float *x, fm_error *err);

/* hires fix (diffusion/hires.c): a second pass that starts from a given
 * latent, as A1111's sample_img2img(p, x, noise, steps=hr_steps). */
typedef struct df_pass {
    const float *init_latent; /* [in_channels][height/f][width/f] of p's size */
    int sigma_steps;          /* the schedule is smp_sigmas(sigma_steps) ... */
    int t_enc;                /* ... of which the last t_enc + 1 steps run */
    int first_pass_steps;     /* prompt schedules: the first pass's total steps */
    int cond_width, cond_height; /* SDXL size conditioning; 0 = p's size */
} df_pass;
/* A1111's total_steps of p's sampler (second-order samplers count 2 per step). */
int df_total_steps(const fm_params *p);
/* One pass (pass NULL: txt2img or p's img2img): the latent into x_out, the
 * decoded image into rgb and/or img [3][H][W] in [-1, 1]; each may be NULL. */
int df_run_pass(fm_model *m, const fm_params *p, const df_pass *pass, float *x_out, uint8_t *rgb, float *img,
                fm_error *err);

#endif
