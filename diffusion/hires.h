/* hires: A1111's "Hires. fix" (modules/processing.py
 * StableDiffusionProcessingTxt2Img): a first pass at width x height, an
 * upscale (of the latent, or of the decoded image then VAE-encoded), and an
 * img2img second pass at the new size. The pieces are here so that tests
 * check each one against its reference (tests/data/README.md#hires-fix):
 *
 *   df_hires_plan         calculate_target_resolution: the target size and
 *                         the latent crop (hr_resize_x/y, hr_scale)
 *   df_hires_steps        setup_img2img_steps(p, steps) as the hr pass calls
 *                         it: the schedule length and t_enc
 *   df_latent_upscale     torch.nn.functional.interpolate on a latent, the
 *                         modes of A1111's shared.latent_upscale_modes
 *   df_pil_resize_rgb8    PIL Image.resize (LANCZOS, NEAREST) on RGB8
 *   df_hires_upscale_rgb  images.resize_image(0, ..., upscaler_name): the
 *                         Lanczos / Nearest / model upscaler, then LANCZOS
 *                         to the exact size */
#ifndef FM_HIRES_H
#define FM_HIRES_H

#include <stddef.h>
#include <stdint.h>

#include "fmimage.h"

typedef enum {
    DF_UP_LATENT_BILINEAR = 0, /* "Latent" */
    DF_UP_LATENT_BILINEAR_AA,  /* "Latent (antialiased)" */
    DF_UP_LATENT_BICUBIC,      /* "Latent (bicubic)" */
    DF_UP_LATENT_BICUBIC_AA,   /* "Latent (bicubic antialiased)" */
    DF_UP_LATENT_NEAREST,      /* "Latent (nearest)" */
    DF_UP_LATENT_NEAREST_EXACT,/* "Latent (nearest-exact)" */
    DF_UP_LANCZOS,             /* "Lanczos": PIL on the decoded image */
    DF_UP_NEAREST,             /* "Nearest" */
    DF_UP_MODEL                /* an upscaling model (fm_params.hires_model) */
} df_upscaler_kind;

/* The kind A1111 names `name` (exact, case-sensitive as A1111 matches it);
 * -1 for a name that is none of the built-in ones. */
int df_upscaler_kind_of(const char *name);
/* A1111's name of a built-in kind ("Latent (bicubic antialiased)"). */
const char *df_upscaler_name(df_upscaler_kind kind);

/* calculate_target_resolution for a first pass of width x height. */
typedef struct df_hires_target {
    int upscale_w, upscale_h;   /* hr_upscale_to_x/y: the upscale's size */
    int truncate_x, truncate_y; /* latent columns / rows cropped after it */
    int width, height;          /* the second pass's (and the output's) size */
} df_hires_target;
void df_hires_plan(int width, int height, double scale, int resize_x, int resize_y, int latent_factor,
                   df_hires_target *t);

/* setup_img2img_steps(p, steps=hr_steps): the schedule has *sigma_steps
 * steps, the pass runs the last t_enc + 1 = hr_steps of them. */
void df_hires_steps(int hr_steps, double denoise, int *sigma_steps, int *t_enc);

/* out [c][oh][ow] = F.interpolate(in [c][ih][iw], size=(oh, ow), mode)
 * (align_corners=False, the antialias flag of the mode). kind is one of the
 * six latent kinds. Returns -1 (out of memory) or 0. */
int df_latent_upscale(df_upscaler_kind kind, float *out, int oh, int ow, const float *in, int c, int ih, int iw);

/* PIL's Image.resize((ow, oh), LANCZOS or NEAREST) on RGB8 (8-bit fixed
 * point as Pillow's Resample.c computes it). Returns -1 (memory) or 0. */
int df_pil_resize_rgb8(uint8_t *out, int ow, int oh, const uint8_t *in, int iw, int ih, int lanczos);

/* images.resize_image(0, im, w, h, upscaler_name) for the image kinds:
 * Upscaler.upscale's loop (at most 3 rounds of the upscaler until the
 * multiple-of-8 size is reached), then LANCZOS to exactly w x h. *out is
 * malloc'd. model is used for DF_UP_MODEL. */
int df_hires_upscale_rgb(df_upscaler_kind kind, const fm_upscaler *model, const uint8_t *in, int iw, int ih,
                         int w, int h, uint8_t **out, fm_error *err);

/* fm_params' hires fields resolved: on/off, the target, the steps. */
typedef struct df_hires {
    int on;
    df_upscaler_kind kind;
    const char *upscaler_name;  /* for the infotext */
    df_hires_target target;
    int steps;                  /* the second pass's steps (hires_steps or steps) */
} df_hires;
/* Checks and resolves p's hires fields for model m (FM_EUSAGE with
 * "--hires-...: why"); h->on = 0 when the hires fix is off. */
int df_hires_resolve(const fm_model *m, const fm_params *p, df_hires *h, fm_error *err);

/* fm_generate with the hires fix on: rgb gets target.width x height. */
int df_hires_generate(fm_model *m, const fm_params *p, const df_hires *h, uint8_t *rgb, fm_error *err);

#endif
