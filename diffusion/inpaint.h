/* inpaint: A1111's img2img inpainting and "poor man's" outpainting around
 * fm_generate (processing.py StableDiffusionProcessingImg2Img.init and
 * sample, CFGDenoiser's mask blend, apply_overlay), and the image
 * conditioning of 9-channel inpainting U-Nets (ldm's LatentInpaintDiffusion:
 * concat(mask, masked-image latent)). pipeline.c calls these at its hooks.
 * Not installed. */
#ifndef FM_DF_INPAINT_H
#define FM_DF_INPAINT_H

#include <stddef.h>
#include <stdint.h>

#include "fmimage.h"

typedef struct df_inpaint {
    int masked;           /* a mask is in use (blend, fill, composite) */
    int blank;            /* the mask repaints nothing: the result is `image` */
    int fill;             /* FM_FILL_* */
    int W, H, lh, lw, c;  /* the processing size, latent size, latent channels */
    int out_w, out_h;     /* the result's size */
    uint8_t *image;       /* RGB8 W x H: what the VAE encodes (resized, cropped, filled) */
    uint8_t *image_mask;  /* L8 W x H: A1111's image_mask (the conditioning's) */
    float *nmask;         /* [lh][lw]: the latent mask, 1 = repaint */
    uint8_t *overlay;     /* RGBA out_w x out_h: the original where it is kept */
    int paste[4];         /* only masked: x, y, w, h of the repainted region */
    uint8_t *decoded;     /* RGB8 W x H: the decode before the composite */
    float *concat;        /* 9-channel models: [1 + c][lh][lw], NULL otherwise */
    const float *init;    /* the init latent the blend holds to (set by the pipeline) */
} df_inpaint;

/* Checks p's mask and outpaint fields against m (FM_EUSAGE, "--mask: why"). */
int df_inpaint_check(const fm_model *m, const fm_params *p, fm_error *err);

/* The processing size (canvas with outpaint) and the result's size. */
void df_inpaint_sizes(const fm_params *p, int *w, int *h, int *out_w, int *out_h);

/* Prepares ip for p and fills *q, the parameters the pipeline runs with
 * (the canvas size; init_rgb = ip->image at W x H). With neither a mask
 * nor outpaint, ip->masked is 0 and *q = *p. */
int df_inpaint_begin(fm_model *m, const fm_params *p, df_inpaint *ip, fm_params *q, fm_error *err);
void df_inpaint_end(df_inpaint *ip);

/* 9-channel U-Nets: ip->concat for q (after df_inpaint_begin): A1111's
 * img2img_image_conditioning with a mask, txt2img_image_conditioning
 * (all-ones mask over a blank image's latent) without. */
int df_inpaint_conditioning(fm_model *m, const fm_params *q, df_inpaint *ip, fm_error *err);

/* "latent noise" / "latent nothing": init (c x lh x lw) changed in the
 * masked area, noise = the seed's first draw (A1111 draws the same). */
void df_inpaint_fill_latent(const df_inpaint *ip, float *init, const float *noise);

/* CFGDenoiser's and sample()'s blend: x = x * nmask + init * (1 - nmask). */
void df_inpaint_blend(const df_inpaint *ip, float *x);

/* apply_overlay: ip->decoded (W x H) uncropped and composited into rgb
 * (out_w x out_h). */
int df_inpaint_finish(const df_inpaint *ip, uint8_t *rgb);

#endif
