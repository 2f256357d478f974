/* Conditioning as A1111 builds it (modules/sd_hijack_clip.py, sd_emphasis.py
 * "Original", sd_models_xl.py) on top of sgm's GeneralConditioner for SDXL. */
#include "textenc/textenc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int te_encoder_load(te_encoder *enc, const wt_source *src, const wt_model_config *cfg,
                         fm_error *err)
{
    memset(enc, 0, sizeof *enc);
    if (cfg->n_text < 1 || cfg->n_text > 2)
        return core_fail(err, FM_EINPUT, "%d text encoders in the config, expected 1 or 2", cfg->n_text);
    for (int i = 0; i < cfg->n_text; i++) {
        if (!(enc->towers[i] = te_tower_load(src, &cfg->text[i], err))) {
            te_encoder_free(enc);
            return err ? err->code : FM_EINPUT;
        }
        enc->n_towers++;
        enc->context_dim += cfg->text[i].width;
    }
    int wants_pooled = cfg->family == FM_FAMILY_SDXL || cfg->unet.adm_in_channels > 0;
    if (wants_pooled) {
        enc->pooled_dim = cfg->text[cfg->n_text - 1].projection_dim;
        if (enc->pooled_dim <= 0) {
            te_encoder_free(enc);
            return core_fail(err, FM_EINPUT, "the U-Net takes a pooled text vector, the last text encoder has no projection");
        }
    }
    const char *bad = NULL;
    if (cfg->unet.context_dim > 0 && cfg->unet.context_dim != enc->context_dim)
        bad = "context";
    else if (cfg->unet.adm_in_channels > 0 && cfg->unet.adm_in_channels != enc->pooled_dim + FM_SIZE_EMB_TOTAL)
        bad = "ADM vector";
    if (bad) {
        int c = core_fail(err, FM_EINPUT, "text encoders give a %s of %d values, the U-Net expects %d", bad,
                        bad[0] == 'c' ? enc->context_dim : enc->pooled_dim + FM_SIZE_EMB_TOTAL,
                        bad[0] == 'c' ? cfg->unet.context_dim : cfg->unet.adm_in_channels);
        te_encoder_free(enc);
        return c;
    }
    return 0;
}

void te_encoder_free(te_encoder *enc)
{
    for (int i = 0; i < enc->n_towers; i++)
        te_tower_free(enc->towers[i]);
    memset(enc, 0, sizeof *enc);
}

void te_size_embedding(float *out, const te_size_cond *s)
{
    const int v[6] = {s->orig_h, s->orig_w, s->crop_top, s->crop_left, s->target_h, s->target_w};
    const int half = FM_SIZE_EMB_DIM / 2;
    for (int k = 0; k < 6; k++)
        for (int i = 0; i < half; i++) {
            double arg = v[k] * exp(-log(10000.0) * i / half);
            out[k * FM_SIZE_EMB_DIM + i] = (float)cos(arg);
            out[k * FM_SIZE_EMB_DIM + half + i] = (float)sin(arg);
        }
}

/* A1111 "Original" emphasis on one chunk's output z [77][dim] with weights
 * [77]: z *= w per token, then z *= mean_before / mean_after. All weights
 * 1.0 leave z untouched (bit for bit). */
static void te_emphasis_apply(float *z, int dim, const float *weights)
{
    int plain = 1;
    for (int p = 0; p < FM_CLIP_LEN; p++)
        plain &= weights[p] == 1.0f;
    if (plain)
        return;
    size_t n = (size_t)FM_CLIP_LEN * dim;
    double before = 0, after = 0;
    for (size_t i = 0; i < n; i++)
        before += z[i];
    for (int p = 0; p < FM_CLIP_LEN; p++)
        for (int d = 0; d < dim; d++) {
            float *e = &z[(size_t)p * dim + d];
            *e *= weights[p];
            after += *e;
        }
    /* "restoring original mean is likely not correct, but it seems to work
     * well to prevent artifacts" (A1111). A zero mean would make it 0/0. */
    if (after == 0)
        return;
    float ratio = (float)(before / after);
    for (size_t i = 0; i < n; i++)
        z[i] *= ratio;
}

/* The chunk ids with the tower's padding: A1111 overwrites everything after
 * the first EOS with id_pad (0 for OpenCLIP; 49407 for CLIP, where it is
 * what the tokenizer put there anyway). */
static void repad(int32_t (*dst)[FM_CLIP_LEN], const te_token_chunks *tok, int pad)
{
    for (int c = 0; c < tok->n_chunks; c++) {
        int after_eos = 0;
        for (int p = 0; p < FM_CLIP_LEN; p++) {
            dst[c][p] = after_eos ? pad : tok->ids[c][p];
            after_eos |= tok->ids[c][p] == FM_CLIP_EOS;
        }
    }
}

static int cond_alloc(te_cond *out, const te_encoder *enc, int n_chunks, fm_error *err)
{
    memset(out, 0, sizeof *out);
    out->n_tokens = n_chunks * FM_CLIP_LEN;
    out->context_dim = enc->context_dim;
    out->adm_dim = enc->pooled_dim ? enc->pooled_dim + FM_SIZE_EMB_TOTAL : 0;
    out->context = core_calloc(sizeof(float) * (size_t)out->n_tokens * out->context_dim);
    if (out->adm_dim)
        out->y = core_calloc(sizeof(float) * (size_t)out->adm_dim);
    if (!out->context || (out->adm_dim && !out->y)) {
        te_cond_free(out);
        return core_fail(err, FM_EINPUT, "text conditioning: out of memory");
    }
    return 0;
}

/* One tower's share: context columns [col, col+W) of every token, and the
 * pooled vector of the first chunk when pooled is non-NULL. */
static int encode_tower(const te_tower *t, int tower, const te_token_chunks *tok, int clip_skip, te_cond *out,
                        int col, float *pooled, fm_error *err)
{
    const wt_text_config *cfg = te_tower_config(t);
    int W = cfg->width, nc = tok->n_chunks, layer, final_ln;
    if (te_output_layer(cfg, clip_skip, &layer, &final_ln, err))
        return err ? err->code : FM_EUSAGE;
    int32_t (*ids)[FM_CLIP_LEN] = malloc(sizeof(*ids) * (size_t)nc);
    float *z = core_alloc(sizeof(float) * (size_t)nc * FM_CLIP_LEN * W);
    float *pool_all = pooled ? core_alloc(sizeof(float) * (size_t)nc * cfg->projection_dim) : NULL;
    int rc = 0;
    if (!ids || !z || (pooled && !pool_all)) {
        rc = core_fail(err, FM_EINPUT, "text conditioning: out of memory");
        goto done;
    }
    repad(ids, tok, cfg->pad_token);
    if ((rc = te_tower_forward_fixed(t, (const int32_t(*)[FM_CLIP_LEN])ids, nc, tok->fixes, tok->n_fixes, tower, layer,
                                     final_ln, z, pool_all, err)))
        goto done;
    for (int c = 0; c < nc; c++) {
        float *zc = z + (size_t)c * FM_CLIP_LEN * W;
        if (tok->weights)
            te_emphasis_apply(zc, W, tok->weights[c]);
        for (int p = 0; p < FM_CLIP_LEN; p++)
            memcpy(out->context + ((size_t)c * FM_CLIP_LEN + p) * out->context_dim + col,
                   zc + (size_t)p * W, sizeof(float) * W);
    }
    if (pooled) /* A1111 takes the first chunk's (zs[0].pooled) */
        memcpy(pooled, pool_all, sizeof(float) * cfg->projection_dim);
done:
    free(ids);
    core_free(z);
    core_free(pool_all);
    return rc;
}

static int need_sizes(const te_encoder *enc, const te_size_cond *sizes, fm_error *err)
{
    if (enc->pooled_dim && !sizes)
        return core_fail(err, FM_EINPUT, "SDXL conditioning needs the image size");
    return 0;
}

int te_encode(const te_encoder *enc, const te_token_chunks *tok, int clip_skip,
                   const te_size_cond *sizes, te_cond *out, fm_error *err)
{
    memset(out, 0, sizeof *out);
    if (tok->n_chunks < 1)
        return core_fail(err, FM_EINPUT, "text conditioning: no token chunks");
    if (need_sizes(enc, sizes, err) || cond_alloc(out, enc, tok->n_chunks, err))
        return err ? err->code : FM_EINPUT;
    int col = 0;
    for (int i = 0; i < enc->n_towers; i++) {
        int pools = enc->pooled_dim && i == enc->n_towers - 1;
        int rc = encode_tower(enc->towers[i], i, tok, clip_skip, out, col, pools ? out->y : NULL, err);
        if (rc) {
            te_cond_free(out);
            return rc;
        }
        col += te_tower_config(enc->towers[i])->width;
    }
    if (out->y)
        te_size_embedding(out->y + enc->pooled_dim, sizes);
    return 0;
}

int te_encode_zero(const te_encoder *enc, int n_chunks, const te_size_cond *sizes, te_cond *out,
                        fm_error *err)
{
    memset(out, 0, sizeof *out);
    if (n_chunks < 1)
        return core_fail(err, FM_EINPUT, "text conditioning: no token chunks");
    if (need_sizes(enc, sizes, err) || cond_alloc(out, enc, n_chunks, err))
        return err ? err->code : FM_EINPUT;
    if (out->y)
        te_size_embedding(out->y + enc->pooled_dim, sizes);
    return 0;
}

void te_cond_free(te_cond *c)
{
    core_free(c->context);
    core_free(c->y);
    memset(c, 0, sizeof *c);
}
