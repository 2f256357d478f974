/* The live preview during sampling (fm_params.preview, A1111's "Live
 * previews" with TAESD): the sampler's denoised latent decoded by a TAESD
 * decoder every preview_every steps, into buffers planned before the first
 * step. Also the one TAESD opener both decoders (final and preview) use.
 * Not installed. */
#ifndef FM_DIFFUSION_PREVIEW_H
#define FM_DIFFUSION_PREVIEW_H

#include "fmimage.h"
#include "vae/vae.h"

/* *slot holds the decoder of *slot_path; it is replaced by path's when
 * that differs. Checks that the file has a decoder for latent_channels. */
int df_taesd_get(vae_taesd **slot, char **slot_path, const char *path, int latent_channels, fm_error *err);

typedef struct df_preview {
    const fm_params *p;
    vae_taesd *taesd;
    int lh, lw, every;
    size_t lat;       /* floats of the decoded latent */
    float *img;       /* [3][8lh][8lw] */
    uint8_t *rgb;     /* [8lh][8lw][3] */
    void *arena;
    size_t bytes;
} df_preview;

/* Plans pv for a latent of lh x lw; pv->taesd stays NULL (no preview)
 * unless p asks for one. */
int df_preview_begin(fm_model *m, const fm_params *p, int lh, int lw, df_preview *pv, fm_error *err);
/* An smp_step_fn (user = df_preview): decodes and calls p->preview on the
 * steps it is due; never cancels (a failed decode shows nothing). */
int df_preview_step(void *user, int i, int steps, double sigma, const float *x, const float *denoised);
void df_preview_end(df_preview *pv);

#endif
