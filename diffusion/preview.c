/* Live preview: see preview.h. */
#include "diffusion/preview.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/pipeline_internal.h"

int df_taesd_get(vae_taesd **slot, char **slot_path, const char *path, int latent_channels, fm_error *err)
{
    if (!*slot || strcmp(*slot_path, path)) {
        vae_taesd_free(*slot);
        free(*slot_path);
        *slot = NULL;
        if (!(*slot_path = strdup(path))) return core_fail(err, FM_EINPUT, "out of memory");
        if (!(*slot = vae_taesd_open(path, err))) return err->code;
    }
    if (!vae_taesd_has_decoder(*slot)) return core_fail(err, FM_EINPUT, "%s: no TAESD decoder in this file", path);
    if (vae_taesd_latent_channels(*slot) != latent_channels)
        return core_fail(err, FM_EINPUT, "%s: a TAESD for %d latent channels, this model has %d", path,
                         vae_taesd_latent_channels(*slot), latent_channels);
    return 0;
}

int df_preview_begin(fm_model *m, const fm_params *p, int lh, int lw, df_preview *pv, fm_error *err)
{
    memset(pv, 0, sizeof *pv);
    if (!p->preview || !p->preview_taesd) return 0;
    int rc = df_taesd_get(&m->preview_taesd, &m->preview_taesd_path, p->preview_taesd, m->cfg.vae.embed_dim, err);
    if (rc) return rc;
    size_t px = (size_t)64 * lh * lw;
    pv->bytes = vae_taesd_decode_bytes(m->preview_taesd, lh, lw);
    pv->img = core_alloc_hooked(&m->alloc, sizeof(float) * 3 * px);
    pv->rgb = core_alloc_hooked(&m->alloc, 3 * px);
    pv->arena = pv->bytes ? core_alloc_hooked(&m->alloc, pv->bytes) : NULL;
    if (!pv->img || !pv->rgb || !pv->arena) {
        df_preview_end(pv);
        return core_fail(err, FM_EINPUT, "out of memory for the live preview");
    }
    pv->p = p;
    pv->taesd = m->preview_taesd;
    pv->lh = lh;
    pv->lw = lw;
    pv->lat = (size_t)m->cfg.vae.embed_dim * lh * lw;
    pv->every = p->preview_every > 0 ? p->preview_every : 1;
    return 0;
}

int df_preview_step(void *user, int i, int steps, double sigma, const float *x, const float *denoised)
{
    (void)sigma;
    (void)x;
    df_preview *pv = user;
    if (!pv->taesd || ((i + 1) % pv->every && i + 1 != steps)) return 0;
    fm_error err = {0};
    int W = 8 * pv->lw, H = 8 * pv->lh;
    size_t px = (size_t)W * H;
    if (vae_taesd_decode_in(pv->taesd, pv->img, 3 * px, denoised, pv->lat, pv->lh, pv->lw, pv->arena, pv->bytes, &err))
        return 0;
    for (size_t k = 0; k < px; k++)
        for (int c = 0; c < 3; c++) {
            float v = pv->img[c * px + k];
            v = isfinite(v) ? (v < 0 ? 0 : v > 1 ? 1 : v) : 0;
            pv->rgb[k * 3 + c] = (uint8_t)rintf(v * 255.0f);
        }
    pv->p->preview(pv->p->preview_user, pv->rgb, W, H, i + 1, steps);
    return 0;
}

void df_preview_end(df_preview *pv)
{
    core_free(pv->img);
    core_free(pv->rgb);
    core_free(pv->arena);
    memset(pv, 0, sizeof *pv);
}
