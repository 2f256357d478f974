/* fm_generate: prompt -> conditioning -> noise -> sampler loop over the
 * U-Net with classifier-free guidance -> VAE (or TAESD) decode -> RGB8.
 * A1111 txt2img/img2img semantics (tests/data/README.md#a1111-txt2img). */
#include "diffusion/pipeline_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diffusion/embeddings.h"
#include "diffusion/hires.h"
#include "diffusion/infotext.h"
#include "diffusion/inpaint.h"
#include "diffusion/preview.h"
#include "kernels/kernels.h"
#include "textenc/prompt.h"
#include "textenc/prompt_schedule.h"

#define MAX_SIDE 16384

void fm_params_default(const fm_model *m, fm_params *p)
{
    memset(p, 0, sizeof *p);
    const fm_model_defaults *d = &m->cfg.defaults;
    p->prompt = "";
    p->negative = "";
    p->width = d->width;
    p->height = d->height;
    p->steps = d->steps;
    p->cfg = d->cfg;
    snprintf(p->sampler, sizeof p->sampler, "%s", d->sampler);
    snprintf(p->scheduler, sizeof p->scheduler, "%s", d->scheduler);
    p->rng = FM_RNG_CUDA;
    p->clip_skip = 1;
    p->strength = 0.75f;
    /* inpainting: A1111's defaults */
    p->mask_blur = 4;
    p->inpaint_padding = 32;
    p->inpainting_mask_weight = 1.0f;
    p->hires_denoise = 0.7; /* A1111's txt2img default for the hires fix */
}

int fm_params_set_sampler(fm_params *p, const char *sampler, const char *scheduler, fm_error *err)
{
    if (!scheduler) scheduler = sampler && smp_find(sampler) < 0 ? "automatic" : p->scheduler;
    smp_id s;
    smp_scheduler_id sch;
    int rc = smp_pair(sampler ? sampler : p->sampler, scheduler, &s, &sch, err);
    if (rc) return rc;
    snprintf(p->sampler, sizeof p->sampler, "%s", smp_name(s));
    snprintf(p->scheduler, sizeof p->scheduler, "%s", smp_scheduler_name(sch));
    return 0;
}

static int check_side(const char *opt, int v, int factor, fm_error *err)
{
    if (v <= 0) return core_fail(err, FM_EUSAGE, "%s: must be positive", opt);
    if (v > MAX_SIDE) return core_fail(err, FM_EUSAGE, "%s: %d is over the %d-pixel limit", opt, v, MAX_SIDE);
    if (v % factor) return core_fail(err, FM_EUSAGE, "%s: %d is not a multiple of %d (the model's latent factor)", opt, v, factor);
    return 0;
}

/* p's sampler and scheduler as ids. Both names sit in the caller's fixed
 * arrays: one with no NUL inside its array is refused, never read past. */
static int param_names(const fm_params *p, smp_id *s, smp_scheduler_id *sch, fm_error *err)
{
    if (!memchr(p->sampler, 0, sizeof p->sampler))
        return core_fail(err, FM_EUSAGE, "--sampler: not a string of at most %zu bytes", sizeof p->sampler - 1);
    if (!memchr(p->scheduler, 0, sizeof p->scheduler))
        return core_fail(err, FM_EUSAGE, "--scheduler: not a string of at most %zu bytes", sizeof p->scheduler - 1);
    return smp_pair(p->sampler, p->scheduler, s, sch, err);
}

/* fm_params_check, also giving the sampler and scheduler it resolved. Every
 * check runs in turn; the first failure is the answer. */
static int check_params(const fm_model *m, const fm_params *p, smp_id *s, smp_scheduler_id *sch,
                        fm_error *err)
{
    if (!m || !p) return core_fail(err, FM_EUSAGE, "fm_params_check: no model or no parameters");
    int factor = m->cfg.vae.latent_factor, rc;
    /* TAESD's decoder always upsamples by 8: any other factor would decode
     * a latent into an image of another size than the one asked for. */
    if (p->taesd_path && factor != 8)
        return core_fail(err, FM_EUSAGE, "--taesd: TAESD decodes by 8, this model's latent factor is %d", factor);
    if ((rc = check_side("--width", p->width, factor, err)) || (rc = check_side("--height", p->height, factor, err)))
        return rc;
    if (p->steps < 1 || p->steps > 1000) return core_fail(err, FM_EUSAGE, "--steps: %d is not in 1..1000", p->steps);
    if (!isfinite(p->cfg)) return core_fail(err, FM_EUSAGE, "--cfg: must be a finite number");
    if (p->seed > 0xffffffffu) return core_fail(err, FM_EUSAGE, "--seed: over 4294967295");
    if (p->clip_skip < 1) return core_fail(err, FM_EUSAGE, "--clip-skip: must be at least 1");
    if ((rc = param_names(p, s, sch, err))) return rc;
    if (p->init_rgb && !(p->strength > 0 && p->strength <= 1))
        return core_fail(err, FM_EUSAGE, "--strength: must be in (0,1]");
    if (p->init_rgb && (p->init_width <= 0 || p->init_height <= 0))
        return core_fail(err, FM_EUSAGE, "--init-image: empty image");
    if (!p->prompt) return core_fail(err, FM_EUSAGE, "prompt: missing");
    return df_inpaint_check(m, p, err); /* mask and outpaint fields */
}

int fm_params_check(const fm_model *m, const fm_params *p, fm_error *err)
{
    core_error_clear(err);
    smp_id s;
    smp_scheduler_id sch;
    df_hires h; /* hires fix: its fields too */
    int rc = check_params(m, p, &s, &sch, err);
    return rc ? rc : df_hires_resolve(m, p, &h, err);
}

/* ---- conditioning: A1111's prompt schedules and AND ---- */

/* One conditioning that changes over the denoiser calls: an AND part of the
 * prompt (with its weight) or the negative prompt. */
typedef struct sched_cond {
    te_schedule s;
    int *cond;       /* [s.n]: the entry's index in conds.table */
    double weight;
} sched_cond;

/* Every distinct text of the schedules is encoded once, before step 1;
 * the denoiser picks entries by its call count (A1111's CFGDenoiser.step). */
typedef struct conds {
    sched_cond parts[TE_MAX_AND_PARTS];
    int n_parts;
    sched_cond neg;
    int has_uncond;  /* the uncond is evaluated (not: cfg 1 with one part of weight 1) */
    te_cond *table;
    char **texts;
    int n_table;
    /* hires: the second pass's schedules count on from the first pass's
     * total steps; SDXL's size conditioning is the upscale's size */
    int first_pass_steps, size_w, size_h;
} conds;

static void conds_free(conds *c)
{
    for (int i = 0; i < c->n_parts; i++) {
        te_schedule_free(&c->parts[i].s);
        free(c->parts[i].cond);
    }
    te_schedule_free(&c->neg.s);
    free(c->neg.cond);
    for (int i = 0; i < c->n_table; i++) {
        te_cond_free(&c->table[i]);
        free(c->texts[i]);
    }
    free(c->table);
    free(c->texts);
}

/* A1111's total_steps: its second-order samplers count two denoiser calls
 * per step (sd_samplers_common.SamplerData.total_steps). */
static int schedule_steps(smp_id sampler, int steps)
{
    switch (sampler) {
    case FM_SAMPLER_HEUN:
    case FM_SAMPLER_DPM_2:
    case FM_SAMPLER_DPM_2_ANCESTRAL:
    case FM_SAMPLER_DPMPP_2S_ANCESTRAL:
    case FM_SAMPLER_DPMPP_SDE: return steps * 2;
    default: return steps;
    }
}

/* The table index of text, adding it (unencoded) when new. */
static int table_slot(conds *c, const char *text, int from, int cap, fm_error *err)
{
    for (int i = from; i < c->n_table; i++)
        if (!strcmp(c->texts[i], text)) return i;
    if (c->n_table >= cap) return core_fail(err, FM_EINPUT, "prompt: too many scheduled prompts"), -1;
    if (!(c->texts[c->n_table] = strdup(text))) return core_fail(err, FM_EINPUT, "prompt: out of memory"), -1;
    return c->n_table++;
}

/* from: the first table entry sc may share (the negative prompt's own
 * entries stay apart for SDXL's zero rule). */
static int schedule_cond(conds *c, sched_cond *sc, const char *text, int steps, int from, int cap, fm_error *err)
{
    int rc = c->first_pass_steps ? te_prompt_schedule(text, c->first_pass_steps, steps, &sc->s, err)
                                 : te_prompt_schedule(text, steps, 0, &sc->s, err);
    if (rc) return rc;
    if (!(sc->cond = malloc(sizeof(int) * (size_t)sc->s.n))) return core_fail(err, FM_EINPUT, "prompt: out of memory");
    for (int i = 0; i < sc->s.n; i++)
        if ((sc->cond[i] = table_slot(c, sc->s.e[i].text, from, cap, err)) < 0) return err->code;
    return 0;
}

static int encode_prompts(fm_model *m, const fm_params *p, smp_id sampler, conds *c, fm_error *err)
{
    te_and_split and = {0};
    int steps = schedule_steps(sampler, p->steps), rc = te_prompt_and_split(p->prompt, &and, err);
    if (rc) return rc;
    c->n_parts = and.n;
    c->has_uncond = !(p->cfg == 1.0f && and.n == 1 && and.parts[0].weight == 1.0);
    /* at most steps + 1 entries per schedule */
    int cap = (and.n + 1) * (steps + 1);
    c->table = calloc((size_t)cap, sizeof *c->table);
    c->texts = calloc((size_t)cap, sizeof *c->texts);
    if (!c->table || !c->texts) rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
    for (int i = 0; !rc && i < and.n; i++) {
        c->parts[i].weight = and.parts[i].weight;
        rc = schedule_cond(c, &c->parts[i], and.parts[i].text, steps, 0, cap, err);
    }
    te_and_split_free(&and);
    int first_neg = c->n_table;
    if (!rc && c->has_uncond) rc = schedule_cond(c, &c->neg, p->negative ? p->negative : "", steps, first_neg, cap, err);
    if (rc) return rc;
    /* A1111's SDXL rule: an empty negative is zero conditioning. */
    int zero_negative = m->cfg.family == FM_FAMILY_SDXL && c->has_uncond && c->neg.s.n == 1 && !c->neg.s.e[0].text[0];
    int pad = FM_CLIP_EOS; /* te_encode re-pads per tower */
    te_token_chunks *tc = calloc((size_t)c->n_table, sizeof *tc);
    if (!tc) return core_fail(err, FM_EINPUT, "prompt: out of memory");
    /* CFG batches the conds and the uncond: all need the same number of chunks */
    int n = 1;
    te_embeddings emb; /* textual inversion: the names under p->embeddings_dir */
    if ((rc = df_embeddings_open(m, p->embeddings_dir, p->embeddings_confined, &emb, err))) {
        free(tc);
        return rc;
    }
    for (int i = 0; !rc && i < c->n_table; i++) {
        rc = te_prompt_to_chunks_emb(m->tokenizer, c->texts[i], pad, &emb, &tc[i], err);
        if (!rc && tc[i].n_chunks > FM_MAX_PROMPT_CHUNKS)
            rc = core_fail(err, FM_EINPUT, "%s: %d chunks of %d tokens, more than the %d allowed",
                         i < first_neg ? "prompt" : "negative prompt", tc[i].n_chunks, FM_PROMPT_CHUNK_TOKENS,
                         FM_MAX_PROMPT_CHUNKS);
        if (!rc && tc[i].n_chunks > n) n = tc[i].n_chunks;
    }
    for (int i = 0; !rc && i < c->n_table; i++) rc = te_token_chunks_pad(&tc[i], n, pad);
    if (rc && err->code == FM_OK) rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
    int sh = c->size_h ? c->size_h : p->height, sw = c->size_w ? c->size_w : p->width;
    te_size_cond sizes = {sh, sw, 0, 0, sh, sw};
    for (int i = 0; !rc && i < c->n_table; i++)
        rc = zero_negative && i >= first_neg ? te_encode_zero(&m->text, n, &sizes, &c->table[i], err)
                                              : te_encode(&m->text, &tc[i], p->clip_skip, &sizes, &c->table[i], err);
    for (int i = 0; i < c->n_table; i++) te_token_chunks_free(&tc[i]);
    free(tc);
    te_embeddings_free(&emb);
    return rc;
}

/* ---- the denoiser: U-Net + parameterisation + CFG ---- */

typedef struct denoiser {
    fm_model *m;
    int batch;             /* [part 0 .. part n-1; uncond], A1111's order; no uncond at cfg 1 alone */
    int c, h, w;
    float cfg;
    fm_prediction prediction;
    const conds *cd;
    int call;              /* denoiser calls so far: A1111's CFGDenoiser.step */
    float *context, *y;    /* [batch][n_ctx][dim], [batch][adm] */
    int n_ctx;
    float *x_in, *out;     /* [batch][c][h][w] */
    float *work;           /* the sampler's latents (smp_sample_work_floats) */
    float t[TE_MAX_AND_PARTS + 1];
    const df_inpaint *ip;  /* inpainting: the blend and the 9-channel conditioning; may be NULL */
} denoiser;

/* Batch row b gets the conditioning sc picks at this call. */
static void load_cond(denoiser *d, int b, const sched_cond *sc)
{
    const te_cond *tc = &d->cd->table[sc->cond[te_schedule_index(&sc->s, d->call)]];
    size_t ctx = (size_t)d->n_ctx * tc->context_dim;
    memcpy(d->context + ctx * b, tc->context, sizeof(float) * ctx);
    if (d->y) memcpy(d->y + (size_t)tc->adm_dim * b, tc->y, sizeof(float) * tc->adm_dim);
}

static int denoise_cfg(denoiser *d, float *denoised, const float *x, size_t n, double sigma, fm_error *err);

/* Inpainting: A1111's CFGDenoiser blends the denoised latent with the init
 * latent outside the mask after every call (mask_before_denoising off). */
static int denoise(void *user, float *denoised, const float *x, size_t n, double sigma, fm_error *err)
{
    denoiser *d = user;
    int rc = denoise_cfg(d, denoised, x, n, sigma, err);
    if (!rc) df_inpaint_blend(d->ip, denoised);
    return rc;
}

static int denoise_cfg(denoiser *d, float *denoised, const float *x, size_t n, double sigma, fm_error *err)
{
    const conds *cd = d->cd;
    smp_scalings s = smp_denoiser_scalings(d->prediction, sigma);
    double t = smp_discrete_sigma_to_t(&d->m->schedule, sigma);
    for (int b = 0; b < cd->n_parts; b++) load_cond(d, b, &cd->parts[b]);
    if (cd->has_uncond) load_cond(d, cd->n_parts, &cd->neg);
    d->call++;
    size_t n_in = (size_t)d->c * d->h * d->w; /* n, plus a 9-channel model's conditioning */
    for (int b = 0; b < d->batch; b++) {
        d->t[b] = (float)t;
        for (size_t i = 0; i < n; i++) d->x_in[b * n_in + i] = (float)(x[i] * s.c_in);
        if (n_in > n) memcpy(d->x_in + b * n_in + n, d->ip->concat, sizeof(float) * (n_in - n));
    }
    int rc = un_forward(d->m->unet, d->out, d->x_in, d->batch, d->h, d->w, d->t, d->context,
                             d->n_ctx, d->y, err);
    if (rc) return rc;
    float c_skip = (float)s.c_skip, c_out = (float)s.c_out, cfg = d->cfg;
    if (!cd->has_uncond) {
        for (size_t i = 0; i < n; i++) denoised[i] = x[i] * c_skip + d->out[i] * c_out;
        return 0;
    }
    const float *uncond = d->out + n * cd->n_parts;
    if (cd->n_parts == 1 && cd->parts[0].weight == 1.0) {
        const float *cond = d->out;
        for (size_t i = 0; i < n; i++) {
            float dc = x[i] * c_skip + cond[i] * c_out;
            float du = x[i] * c_skip + uncond[i] * c_out;
            denoised[i] = du + (dc - du) * cfg;
        }
        return 0;
    }
    /* CFGDenoiser.combine_denoised: uncond + sum_k (cond_k - uncond) * (w_k * cfg) */
    for (size_t i = 0; i < n; i++) denoised[i] = x[i] * c_skip + uncond[i] * c_out;
    for (int k = 0; k < cd->n_parts; k++) {
        const float *cond = d->out + n * k;
        float scale = (float)(cd->parts[k].weight * (double)cfg);
        for (size_t i = 0; i < n; i++) {
            float du = x[i] * c_skip + uncond[i] * c_out;
            float dc = x[i] * c_skip + cond[i] * c_out;
            denoised[i] += (dc - du) * scale;
        }
    }
    return 0;
}

static int denoiser_init(denoiser *d, fm_model *m, const fm_params *p, const conds *c, int lh, int lw, fm_error *err)
{
    memset(d, 0, sizeof *d);
    d->m = m;
    d->cd = c;
    d->batch = c->n_parts + (c->has_uncond ? 1 : 0);
    d->c = m->cfg.unet.in_channels;
    d->h = lh;
    d->w = lw;
    d->cfg = p->cfg;
    d->prediction = p->prediction != FM_PRED_AUTO ? p->prediction : m->prediction;
    const te_cond *c0 = &c->table[0];
    d->n_ctx = c0->n_tokens;
    size_t ctx = (size_t)c0->n_tokens * c0->context_dim, lat = (size_t)d->c * lh * lw;
    const core_alloc_hook *hook = &m->alloc;
    d->context = core_alloc_hooked(hook, sizeof(float) * ctx * d->batch);
    d->x_in = core_alloc_hooked(hook, sizeof(float) * lat * d->batch);
    d->out = core_alloc_hooked(hook, sizeof(float) * (size_t)m->cfg.unet.out_channels * lh * lw * d->batch);
    if (c0->adm_dim) d->y = core_alloc_hooked(hook, sizeof(float) * (size_t)c0->adm_dim * d->batch);
    d->work = core_alloc_hooked(hook, sizeof(float) * smp_sample_work_floats(lat));
    if (!d->context || !d->x_in || !d->out || (c0->adm_dim && !d->y) || !d->work)
        return core_fail(err, FM_EINPUT, "out of memory for the sampler");
    /* everything the U-Net needs, before the first step */
    if (un_prepare(m->unet, d->batch, lh, lw, d->n_ctx, hook, err)) return FM_EINPUT;
    return 0;
}

static void denoiser_free(denoiser *d)
{
    core_free(d->context);
    core_free(d->y);
    core_free(d->x_in);
    core_free(d->out);
    core_free(d->work);
}

/* ---- memory ---- */

static size_t memory_budget(const fm_params *p)
{
    return p->memory_limit ? p->memory_limit : vae_memory_available();
}

/* Refuses, before the first step, a size whose U-Net activations or VAE
 * decode would not fit: the OS would otherwise kill the process mid-run.
 * An unknown budget (0) refuses nothing. */
static int check_memory(const fm_model *m, const fm_params *p, int batch, int lh, int lw, int n_ctx,
                        fm_error *err)
{
    size_t budget = memory_budget(p);
    if (!budget) return 0;
    size_t need = un_prepare_bytes(m->unet, batch, lh, lw, n_ctx);
    if (need > budget)
        return core_fail(err, FM_EINPUT,
                       "%dx%d needs %zu MB of U-Net activations, more than the %zu MB available: use a smaller size",
                       p->width, p->height, need >> 20, budget >> 20);
    if (p->taesd_path) return 0;
    vae_tiles tiling;
    vae_tiles_default(&tiling);
    return vae_check_decode_memory(&m->cfg.vae, lh, lw, p->vae_tiling ? &tiling : NULL, budget, err);
}

/* ---- latents in and out ---- */

/* img2img: the init image resized, encoded, latent = mean x scale factor. */
static int encode_init_image(fm_model *m, const fm_params *p, float *latent, fm_error *err)
{
    int W = p->width, H = p->height, f = m->cfg.vae.latent_factor;
    size_t lat = (size_t)m->cfg.vae.embed_dim * (H / f) * (W / f);
    float *img = malloc(sizeof(float) * 3 * (size_t)W * H), *logvar = malloc(sizeof(float) * lat);
    int rc = (!img || !logvar) ? core_fail(err, FM_EINPUT, "out of memory for the init image") : 0;
    if (!rc && df_resize_rgb_to_nchw(img, W, H, p->init_rgb, p->init_width, p->init_height))
        rc = core_fail(err, FM_EINPUT, "out of memory resizing the init image");
    if (!rc) rc = vae_encode(m->vae, latent, logvar, img, H, W, err);
    if (!rc)
        for (size_t i = 0; i < lat; i++) latent[i] *= m->cfg.vae.scale_factor;
    free(img);
    free(logvar);
    return rc;
}

static uint8_t to_u8(float v)
{
    /* clamp((x+1)/2, 0, 1) * 255, rounded half to even (numpy np.round). */
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    return (uint8_t)rintf(v * 255.0f);
}

/* The decoder's memory, allocated before sampling so that a failure is
 * found before the first step and the decode allocates nothing. */
typedef struct decode_plan {
    float *img, *z;     /* [3][H][W]; the VAE's input z = x / scale_factor */
    void *arena;
    size_t bytes;
    vae_tiles tiling;
    const vae_tiles *t; /* &tiling, or NULL untiled */
} decode_plan;

static int decode_prepare(fm_model *m, const fm_params *p, int lh, int lw, decode_plan *dp, fm_error *err)
{
    memset(dp, 0, sizeof *dp);
    const core_alloc_hook *hook = &m->alloc;
    size_t px = (size_t)p->width * p->height, lat = (size_t)m->cfg.vae.embed_dim * lh * lw;
    if (p->taesd_path) {
        int rc = df_taesd_get(&m->taesd, &m->taesd_path, p->taesd_path, m->cfg.vae.embed_dim, err);
        if (rc) return rc;
        dp->bytes = vae_taesd_decode_bytes(m->taesd, lh, lw);
    } else {
        vae_tiles_default(&dp->tiling);
        dp->t = p->vae_tiling ? &dp->tiling : NULL; /* check_memory has checked the budget */
        dp->bytes = vae_decode_arena_bytes(m->vae, lh, lw, dp->t);
        if (!(dp->z = core_alloc_hooked(hook, sizeof(float) * lat)))
            return core_fail(err, FM_EINPUT, "out of memory for the decoder");
    }
    if (!dp->bytes) return core_fail(err, FM_EINPUT, "decoder: cannot decode a %dx%d latent", lw, lh);
    if (!(dp->img = core_alloc_hooked(hook, sizeof(float) * 3 * px)))
        return core_fail(err, FM_EINPUT, "out of memory for a %dx%d image", p->width, p->height);
    if (!(dp->arena = core_alloc_hooked(hook, dp->bytes)))
        return core_fail(err, FM_EINPUT, "out of memory for %zu MB of decoder activations", dp->bytes >> 20);
    return 0;
}

static void decode_release(decode_plan *dp)
{
    core_free(dp->img);
    core_free(dp->z);
    core_free(dp->arena);
}

/* Whether a weight belongs to one of the text encoders (their ldm prefixes). */
static int is_text_encoder(const fm_model *m, const char *name)
{
    for (int i = 0; i < m->cfg.n_text; i++)
        if (!strncmp(name, m->cfg.text[i].prefix, strlen(m->cfg.text[i].prefix))) return 1;
    return 0;
}

/* Drops the file pages (wt_release) of the text encoders' weights (text_only)
 * or of every weight but the VAE's (ldm names), so that the next phase's
 * memory is not added on top of them in the peak RSS; the next image faults
 * them back from the page cache (a LoRA merge's from its unlinked file).
 * Copies in memory (a --type conversion, a merge without a spill file) stay. */
static void release_pages(const fm_model *m, int text_only)
{
    const wt_source *s = m->lora.merged ? m->lora.merged : m->src;
    for (int i = 0; i < wt_count(s); i++) {
        const wt_tensor *t = wt_at(s, i);
        if (text_only ? is_text_encoder(m, t->name) : strncmp(t->name, "first_stage_model.", 18) != 0)
            wt_release(s, t);
    }
}

/* Decodes latent x [c][lh][lw] (n floats) into rgb [H][W][3]. */
static int decode_latent(fm_model *m, const fm_params *p, const float *x, size_t n, int lh, int lw,
                         const decode_plan *dp, uint8_t *rgb, fm_error *err)
{
    int W = p->width, H = p->height;
    size_t px = (size_t)W * H, lat = (size_t)m->cfg.vae.embed_dim * lh * lw;
    if (lat > n) return core_fail(err, FM_EINPUT, "decode: the VAE takes %d latent channels, the U-Net gives fewer",
                                m->cfg.vae.embed_dim);
    float *img = dp->img;
    int rc = 0, taesd = p->taesd_path != NULL;
    release_pages(m, 0); /* the U-Net and the text encoders are done with this image */
    if (taesd) {
        rc = vae_taesd_decode_in(m->taesd, img, 3 * px, x, n, lh, lw, dp->arena, dp->bytes, err);
    } else {
        float inv = 1.0f / m->cfg.vae.scale_factor;
        for (size_t i = 0; i < lat; i++) dp->z[i] = x[i] * inv;
        rc = vae_decode_in(m->vae, img, dp->z, lh, lw, dp->t, dp->arena, dp->bytes, err);
    }
    for (size_t i = 0; !rc && i < 3 * px; i++)
        if (!isfinite(img[i])) rc = core_fail(err, FM_EINPUT, "the image came out NaN or infinite (bad weights?): not written");
    for (size_t i = 0; !rc && i < px; i++)
        for (int c = 0; c < 3; c++) {
            float v = img[c * px + i];
            rgb[i * 3 + c] = to_u8(taesd ? v : (v + 1.0f) * 0.5f);
        }
    return rc;
}

/* The mode the kernels compute in for a requested one. AUTO is the fastest
 * mode on this machine among those that keep the final image >= 35 dB PSNR
 * from float32 (bf16: see tests/test_precision.c and docs/DESIGN.md),
 * measured once per model (diffusion/precision.c); F16 weights are already
 * multiplied with float32 accumulation in fp32 mode, so f16 is fp32. */
fm_precision df_precision_resolve(fm_model *m, fm_precision requested)
{
    switch (requested) {
    case FM_PREC_AUTO: return df_prec_auto_resolve(&m->prec_auto);
    case FM_PREC_BF16: return kn_has_bf16() ? FM_PREC_BF16 : FM_PREC_FP32;
    default: return FM_PREC_FP32;
    }
}

/* The U-Net and the VAE compute in the requested mode; the text encoders
 * (small, and the conditioning every step depends on) stay float32. */
static void use_precision(fm_model *m, fm_precision requested)
{
    fm_precision prec = df_precision_resolve(m, requested);
    if (un_precision(m->unet) != prec) un_set_precision(m->unet, prec);
    if (vae_precision(m->vae) != prec) vae_set_precision(m->vae, prec);
}

/* ---- stage timings (fm_params.stage) ---- */

static double stage_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Reports a stage that began at `start` and succeeded (rc 0). */
static void stage_end(const fm_params *p, int rc, const char *stage, double start)
{
    if (!rc && p->stage) p->stage(p->stage_user, stage, stage_clock() - start);
}

/* Everything up to the decode: the sampled latent x [in_channels][H/f][W/f];
 * with dp, the decoder's memory is allocated too, before the first step. */
static int sample_latent(fm_model *m, const fm_params *p, const df_pass *pass, float *x, decode_plan *dp,
                         df_inpaint *ip, fm_error *err)
{
    smp_id sampler;
    smp_scheduler_id sched;
    int rc = check_params(m, p, &sampler, &sched, err);
    if (rc) return rc;
    /* LoRA: the set's merge (kept from the last call when it is the same),
     * and the prompt without its extra-network tags */
    char *lora_prompt = NULL;
    if ((rc = df_lora_apply(m, p, &lora_prompt, err))) return rc;
    fm_params untagged = *p;
    untagged.prompt = lora_prompt;
    use_precision(m, p->precision);
    int f = m->cfg.vae.latent_factor, lh = p->height / f, lw = p->width / f;
    size_t n = (size_t)m->cfg.unet.out_channels * lh * lw; /* the latent (a 9-channel U-Net's output) */
    conds c = {0};
    denoiser d = {0};
    float *init = NULL;
    double *sigmas = NULL;
    int n_sigmas = 0;
    double t = stage_clock();
    if (pass) {
        c.first_pass_steps = pass->first_pass_steps;
        c.size_w = pass->cond_width;
        c.size_h = pass->cond_height;
    }
    rc = encode_prompts(m, &untagged, sampler, &c, err);
    stage_end(p, rc, "text encode", t);
    if (!rc) release_pages(m, 1); /* the conditioning is made: the sampling's peak holds the U-Net only */
    t = stage_clock();
    if (!rc) rc = check_memory(m, p, c.n_parts + c.has_uncond, lh, lw, c.table[0].n_tokens, err);
    if (!rc && dp) rc = decode_prepare(m, p, lh, lw, dp, err);
    if (!rc) rc = denoiser_init(&d, m, p, &c, lh, lw, err);
    df_inpaint none = {0}; /* no mask: every inpaint hook is a no-op */
    if (!ip) ip = &none;
    d.ip = ip;
    /* 9-channel inpainting models: concat(mask, masked-image latent) */
    if (!rc && m->cfg.unet.in_channels > m->cfg.unet.out_channels) rc = df_inpaint_conditioning(m, p, ip, err);
    if (!rc && !(sigmas = smp_sigmas(&m->schedule, sampler, sched, pass ? pass->sigma_steps : p->steps, &n_sigmas, err)))
        rc = err->code ? err->code : FM_EINPUT;
    stage_end(p, rc, "plan", t);
    /* img2img: A1111 runs the last int(strength * steps) + 1 steps of the
     * schedule from the init latent noised to that sigma. */
    int first = 0;
    if (!rc && pass && pass->init_latent) { /* hires: the upscaled latent, t_enc from the pass */
        first = n_sigmas - 1 - (pass->t_enc + 1);
        if (first < 0) first = 0;
        if (!(init = malloc(sizeof(float) * n))) rc = core_fail(err, FM_EINPUT, "out of memory");
        else memcpy(init, pass->init_latent, sizeof(float) * n);
    } else if (!rc && p->init_rgb) {
        int t_enc = (int)(fminf(p->strength, 0.999f) * p->steps);
        first = n_sigmas - 1 - (t_enc + 1);
        if (first < 0) first = 0;
        if (!(init = malloc(sizeof(float) * n))) rc = core_fail(err, FM_EINPUT, "out of memory");
        t = stage_clock();
        if (!rc) rc = encode_init_image(m, p, init, err);
        stage_end(p, rc, "init encode", t);
    }
    smp_rng rng;
    smp_rng_init(&rng, p->rng, p->seed);
    if (!rc) {
        t = stage_clock();
        smp_rng_randn(&rng, x, n);
        if (init) df_inpaint_fill_latent(ip, init, x); /* "latent noise" takes this draw */
        ip->init = init;
        double s0 = sigmas[first];
        for (size_t i = 0; i < n; i++) x[i] = (float)((init ? init[i] : 0.0f) + x[i] * s0);
        smp_io io;
        smp_io_init(&io);
        io.denoise = denoise;
        io.denoise_user = &d;
        io.noise = smp_rng_noise;
        io.noise_user = &rng;
        io.progress = p->progress;
        io.progress_user = p->progress_user;
        io.work = d.work;
        df_preview pv;
        rc = df_preview_begin(m, p, lh, lw, &pv, err);
        if (pv.taesd) {
            io.step = df_preview_step;
            io.step_user = &pv;
        }
        if (!rc) rc = smp_sample(sampler, &io, x, n, sigmas + first, n_sigmas - first, err);
        df_preview_end(&pv);
        if (!rc) df_inpaint_blend(ip, x); /* sample(): the samples blended once more */
        ip->init = NULL;
        stage_end(p, rc, "sampling", t);
    }
    free(sigmas);
    free(init);
    denoiser_free(&d);
    conds_free(&c);
    free(lora_prompt);
    return rc;
}

int df_sample_latent(fm_model *m, const fm_params *p, float *x, fm_error *err)
{
    df_inpaint ip;
    fm_params q;
    int rc = df_inpaint_begin(m, p, &ip, &q, err);
    if (!rc) rc = sample_latent(m, &q, NULL, x, NULL, &ip, err);
    df_inpaint_end(&ip);
    return rc;
}

int fm_output_size(const fm_model *m, const fm_params *p, int *width, int *height, fm_error *err)
{
    core_error_clear(err);
    int rc = fm_params_check(m, p, err), w, h;
    if (rc) return rc;
    df_inpaint_sizes(p, &w, &h, width, height);
    df_hires hires; /* txt2img only (refused with an init image): the second pass's size */
    if ((rc = df_hires_resolve(m, p, &hires, err))) return rc;
    if (hires.on) {
        *width = hires.target.width;
        *height = hires.target.height;
    }
    return 0;
}

int df_total_steps(const fm_params *p)
{
    smp_id s;
    smp_scheduler_id sch;
    fm_error e = {0};
    return param_names(p, &s, &sch, &e) ? p->steps : schedule_steps(s, p->steps);
}

/* One pass: sampled latent into x (may be NULL), decoded into rgb and/or
 * img [3][H][W] in [-1, 1] (each may be NULL). */
int df_run_pass(fm_model *m, const fm_params *p, const df_pass *pass, float *x_out, uint8_t *rgb, float *img,
                fm_error *err)
{
    if (m->cfg.unet.in_channels > m->cfg.unet.out_channels) /* its conditioning image would be per pass */
        return core_fail(err, FM_EUSAGE, "hires fix: not supported with an inpainting (9-channel) model");
    int f = m->cfg.vae.latent_factor, lh = p->height / f, lw = p->width / f;
    size_t n = (size_t)m->cfg.unet.out_channels * lh * lw, px = (size_t)p->width * p->height;
    float *x = core_alloc_hooked(&m->alloc, sizeof(float) * n);
    if (!x) return core_fail(err, FM_EINPUT, "out of memory");
    decode_plan dp = {0};
    int decode = rgb || img;
    uint8_t *tmp = decode && !rgb ? malloc(px * 3) : NULL;
    int rc = decode && !rgb && !tmp ? core_fail(err, FM_EINPUT, "out of memory") : 0;
    if (!rc) rc = sample_latent(m, p, pass, x, decode ? &dp : NULL, NULL, err);
    double t = stage_clock();
    if (!rc && decode) {
        rc = decode_latent(m, p, x, n, lh, lw, &dp, rgb ? rgb : tmp, err);
        stage_end(p, rc, "decode", t);
    }
    if (!rc && img)
        for (size_t i = 0; i < 3 * px; i++) img[i] = p->taesd_path ? dp.img[i] * 2 - 1 : dp.img[i];
    if (!rc && x_out) memcpy(x_out, x, sizeof(float) * n);
    decode_release(&dp);
    free(tmp);
    core_free(x);
    return rc;
}

int fm_generate(fm_model *m, const fm_params *p, uint8_t *rgb, fm_error *err)
{
    core_error_clear(err);
    int rc = fm_params_check(m, p, err);
    if (rc) return rc;
    if (!rgb) return core_fail(err, FM_EUSAGE, "fm_generate: no output buffer");
    df_hires hires; /* hires fix (diffusion/hires.c) */
    if ((rc = df_hires_resolve(m, p, &hires, err))) return rc;
    if (hires.on) return df_hires_generate(m, p, &hires, rgb, err);
    /* inpainting / outpainting: q is what runs (the canvas, the prepared
     * init image); the result is composited into rgb at the end */
    df_inpaint ip;
    fm_params qp;
    if ((rc = df_inpaint_begin(m, p, &ip, &qp, err))) return rc;
    const fm_params *q = &qp;
    int f = m->cfg.vae.latent_factor, lh = q->height / f, lw = q->width / f;
    size_t n = (size_t)m->cfg.unet.out_channels * lh * lw;
    float *x = ip.blank ? NULL : core_alloc_hooked(&m->alloc, sizeof(float) * n);
    if (!ip.blank && !x) rc = core_fail(err, FM_EINPUT, "out of memory");
    decode_plan dp = {0};
    if (!rc && !ip.blank) rc = sample_latent(m, q, NULL, x, &dp, &ip, err);
    double t = stage_clock();
    if (!rc && !ip.blank) rc = decode_latent(m, q, x, n, lh, lw, &dp, ip.masked ? ip.decoded : rgb, err);
    stage_end(p, rc, "decode", t);
    /* an all-black mask repaints nothing: the overlay covers everything */
    if (!rc && ip.masked && ip.blank) memcpy(ip.decoded, ip.image, (size_t)ip.W * ip.H * 3);
    if (!rc && ip.masked && df_inpaint_finish(&ip, rgb)) rc = core_fail(err, FM_EINPUT, "out of memory for the composite");
    decode_release(&dp);
    core_free(x);
    df_inpaint_end(&ip);
    return rc;
}

char *fm_ti_hashes(const fm_model *m, const fm_params *p, fm_error *err)
{
    smp_id s;
    smp_scheduler_id sch;
    core_error_clear(err);
    if (!m || !p || param_names(p, &s, &sch, err)) {
        if (!err || !err->code) core_fail(err, FM_EUSAGE, "fm_ti_hashes: no model or parameters");
        return NULL;
    }
    return df_ti_hashes(m, p->prompt, p->negative, schedule_steps(s, p->steps), p->embeddings_dir,
                        p->embeddings_confined, err);
}

char *fm_infotext(const fm_model *m, const fm_params *p, const char *model_name, const char *model_hash,
                  fm_error *err)
{
    core_error_clear(err);
    smp_id s;
    smp_scheduler_id sch;
    if (!p || !p->prompt) {
        core_fail(err, FM_EUSAGE, "prompt: missing");
        return NULL;
    }
    if (param_names(p, &s, &sch, err)) return NULL;
    char *lora_hashes = fm_lora_hashes(p, err); /* LoRA: "Lora hashes" */
    if (!lora_hashes) return NULL;
    char *ti_hashes = m ? fm_ti_hashes(m, p, err) : strdup(""); /* embeddings: "TI hashes" */
    if (!ti_hashes) {
        free(lora_hashes);
        return NULL;
    }
    df_infotext_fields f = {
        .prompt = p->prompt, .negative = p->negative, .steps = p->steps,
        .sampler_label = smp_label(s),
        .schedule_label = smp_scheduler_label(sch),
        .cfg = p->cfg, .seed = p->seed, .width = p->width, .height = p->height,
        .model_hash = model_hash, .model_name = model_name,
        .denoising_strength = p->init_rgb ? p->strength : -1.0f, .clip_skip = p->clip_skip,
        .rng_label = p->rng == FM_RNG_CPU ? "CPU" : "NV"};
    f.lora_hashes = lora_hashes;
    f.ti_hashes = ti_hashes;
    f.vae_name = fm_model_vae(m, &f.vae_hash);
    /* inpainting: the processing size (the canvas when outpainting) and
     * A1111's inpaint fields */
    int out_w, out_h;
    df_inpaint_sizes(p, &f.width, &f.height, &out_w, &out_h);
    /* A1111 writes the weight when is_using_inpainting_conditioning: any
     * run of an ldm inpainting model (conditioning key hybrid), but for
     * SDXL inpainting (key crossattn) only img2img, whose
     * inpainting_image_conditioning sets it */
    f.cond_mask = m && m->cfg.unet.in_channels > m->cfg.unet.out_channels &&
                  (m->cfg.family != FM_FAMILY_SDXL || p->init_rgb);
    f.cond_mask_weight = p->inpainting_mask_weight;
    if (p->init_rgb && (p->mask || p->outpaint[0] || p->outpaint[1] || p->outpaint[2] || p->outpaint[3])) {
        static const char *content[] = {NULL, "fill", "latent noise", "latent nothing"};
        f.inpaint = 1;
        f.mask_invert = p->mask && p->mask_invert;
        f.mask_blur = p->mask_blur;
        f.only_masked = p->mask && p->inpaint_only_masked;
        f.padding = p->inpaint_padding;
        f.masked_content = p->inpaint_fill >= 0 && p->inpaint_fill <= 3 ? content[p->inpaint_fill] : NULL;
    }
    df_hires h; /* hires fix: A1111's Hires fields and Denoising strength */
    char hires_upscale[32] = "", hires_resize[32] = "", hires_sampler[64] = "";
    if (m && !df_hires_resolve(m, p, &h, NULL) && h.on) {
        f.denoising_strength = (float)p->hires_denoise;
        f.denoising_strength_d = p->hires_denoise;
        if (p->hires_width || p->hires_height) {
            snprintf(hires_resize, sizeof hires_resize, "%dx%d", p->hires_width, p->hires_height);
            f.hires_resize = hires_resize;
        } else {
            df_format_double(hires_upscale, sizeof hires_upscale, p->hires_scale);
            f.hires_upscale = hires_upscale;
        }
        f.hires_steps = p->hires_steps;
        f.hires_upscaler = h.upscaler_name;
        smp_id hs;
        smp_scheduler_id hsch;
        fm_params hp = *p;
        memcpy(hp.sampler, p->hires_sampler, sizeof hp.sampler);
        if (p->hires_sampler[0] && !param_names(&hp, &hs, &hsch, NULL) && hs != s) {
            snprintf(hires_sampler, sizeof hires_sampler, "%s", smp_label(hs));
            f.hires_sampler = hires_sampler;
        }
        if (p->hires_prompt && p->hires_prompt[0] && strcmp(p->hires_prompt, p->prompt)) f.hires_prompt = p->hires_prompt;
        if (p->hires_negative && p->hires_negative[0] && strcmp(p->hires_negative, p->negative ? p->negative : ""))
            f.hires_negative = p->hires_negative;
    }
    char *t = df_infotext_format(&f);
    free(lora_hashes);
    free(ti_hashes);
    if (!t) core_fail(err, FM_EINPUT, "out of memory");
    return t;
}
