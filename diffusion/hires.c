/* The hires fix as A1111's txt2img does it (modules/processing.py
 * StableDiffusionProcessingTxt2Img.init / calculate_target_resolution /
 * sample / sample_hr_pass; tests/data/README.md#hires-fix). */
#include "diffusion/hires.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diffusion/pipeline_internal.h"

static const char *const kind_names[] = {
    "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
    "Latent (nearest)", "Latent (nearest-exact)", "Lanczos", "Nearest",
};

int df_upscaler_kind_of(const char *name)
{
    if (!name) return DF_UP_LATENT_BILINEAR;
    for (int i = 0; i < (int)(sizeof kind_names / sizeof *kind_names); i++)
        if (!strcmp(name, kind_names[i])) return i;
    return -1;
}

const char *df_upscaler_name(df_upscaler_kind kind)
{
    return kind >= 0 && kind < DF_UP_MODEL ? kind_names[kind] : "";
}

static int is_latent(df_upscaler_kind k) { return k <= DF_UP_LATENT_NEAREST_EXACT; }

/* calculate_target_resolution (Python ints: // floors; int() truncates). */
void df_hires_plan(int width, int height, double scale, int rx, int ry, int f, df_hires_target *t)
{
    memset(t, 0, sizeof *t);
    if (rx == 0 && ry == 0) {
        t->upscale_w = (int)(width * scale);
        t->upscale_h = (int)(height * scale);
    } else if (ry == 0) {
        t->upscale_w = rx;
        t->upscale_h = (int)((long long)rx * height / width);
    } else if (rx == 0) {
        t->upscale_w = (int)((long long)ry * width / height);
        t->upscale_h = ry;
    } else {
        double src_ratio = (double)width / height, dst_ratio = (double)rx / ry;
        if (src_ratio < dst_ratio) {
            t->upscale_w = rx;
            t->upscale_h = (int)((long long)rx * height / width);
        } else {
            t->upscale_w = (int)((long long)ry * width / height);
            t->upscale_h = ry;
        }
        /* non-negative here: the chosen side is the larger fill */
        t->truncate_x = (t->upscale_w - rx) / f;
        t->truncate_y = (t->upscale_h - ry) / f;
    }
    /* sample_hr_pass: the latent is upscale/f, then cropped by truncate */
    t->width = (t->upscale_w / f - t->truncate_x) * f;
    t->height = (t->upscale_h / f - t->truncate_y) * f;
}

/* setup_img2img_steps(p, steps) with steps given (the hr pass always gives
 * it): steps = int(steps / min(denoise, 0.999)), t_enc = steps - 1. */
void df_hires_steps(int hr_steps, double denoise, int *sigma_steps, int *t_enc)
{
    *sigma_steps = denoise > 0 ? (int)(hr_steps / fmin(denoise, 0.999)) : 0;
    *t_enc = hr_steps - 1;
}

int df_hires_resolve(const fm_model *m, const fm_params *p, df_hires *h, fm_error *err)
{
    memset(h, 0, sizeof *h);
    if (!p) return 0;
    int sized = p->hires_width > 0 || p->hires_height > 0;
    if (!(p->hires_scale > 0) && !sized) {
        if (p->hires_scale < 0 || isnan(p->hires_scale))
            return core_fail(err, FM_EUSAGE, "--hires-scale: must be a positive number");
        if (p->hires_width < 0 || p->hires_height < 0)
            return core_fail(err, FM_EUSAGE, "--hires-width: must be positive");
        return 0;
    }
    if (p->init_rgb) return core_fail(err, FM_EUSAGE, "--hires-scale: the hires fix is for txt2img (not with -i)");
    if (!isfinite(p->hires_scale) || p->hires_scale < 0 || p->hires_scale > 16)
        return core_fail(err, FM_EUSAGE, "--hires-scale: must be in (0,16]");
    if (p->hires_width < 0 || p->hires_height < 0 || p->hires_width > 16384 || p->hires_height > 16384)
        return core_fail(err, FM_EUSAGE, "--hires-width: must be 0..16384 pixels");
    if (!(p->hires_denoise > 0 && p->hires_denoise <= 1))
        return core_fail(err, FM_EUSAGE, "--hires-denoise: must be in (0,1]");
    if (p->hires_steps < 0 || p->hires_steps > 1000)
        return core_fail(err, FM_EUSAGE, "--hires-steps: %d is not in 0..1000", p->hires_steps);
    if (p->width <= 0 || p->height <= 0) return 0; /* fm_params_check names it */
    int kind = df_upscaler_kind_of(p->hires_upscaler);
    if (kind < 0) {
        if (!p->hires_model)
            return core_fail(err, FM_EUSAGE,
                             "--hires-upscaler: %s: not Latent, Latent (antialiased), Latent (bicubic), Latent "
                             "(bicubic antialiased), Latent (nearest), Latent (nearest-exact), Lanczos, Nearest or "
                             "an upscaling model file",
                             p->hires_upscaler);
        kind = DF_UP_MODEL;
    }
    if (!m->cfg.vae.has_encoder && !is_latent(kind))
        return core_fail(err, FM_EUSAGE, "--hires-upscaler: %s needs the VAE encoder, this model has none",
                         kind == DF_UP_MODEL ? p->hires_upscaler : kind_names[kind]);
    int f = m->cfg.vae.latent_factor;
    h->kind = kind;
    h->upscaler_name = kind == DF_UP_MODEL ? p->hires_upscaler : kind_names[kind];
    df_hires_plan(p->width, p->height, p->hires_scale, p->hires_width, p->hires_height, f, &h->target);
    const df_hires_target *t = &h->target;
    const char *opt = sized ? "--hires-width" : "--hires-scale";
    if (t->upscale_w < f || t->upscale_h < f || t->width < f || t->height < f)
        return core_fail(err, FM_EUSAGE, "%s: the hires size %dx%d is under the latent factor %d", opt, t->upscale_w,
                         t->upscale_h, f);
    if (t->upscale_w > 16384 || t->upscale_h > 16384)
        return core_fail(err, FM_EUSAGE, "%s: the hires size %dx%d is over the 16384-pixel limit", opt,
                         t->upscale_w, t->upscale_h);
    if (t->upscale_w % f || t->upscale_h % f)
        return core_fail(err, FM_EUSAGE, "%s: the hires size %dx%d is not a multiple of %d (the model's latent factor)",
                         opt, t->upscale_w, t->upscale_h, f);
    h->steps = p->hires_steps ? p->hires_steps : p->steps;
    if (p->hires_sampler[0] || !memchr(p->hires_sampler, 0, sizeof p->hires_sampler)) {
        char s[32], sch[32];
        if (!memchr(p->hires_sampler, 0, sizeof p->hires_sampler))
            return core_fail(err, FM_EUSAGE, "--hires-sampler: not a string of at most 31 bytes");
        fm_error e = {0};
        if (fm_sampler_resolve(p->hires_sampler, s, sch, &e))
            return core_fail(err, FM_EUSAGE, "--hires-sampler: %s", e.msg);
    }
    h->on = 1;
    return 0;
}

int fm_hires_size(const fm_model *m, const fm_params *p, int *width, int *height, fm_error *err)
{
    core_error_clear(err);
    if (!m || !p) return core_fail(err, FM_EUSAGE, "fm_hires_size: no model or no parameters");
    df_hires h;
    int rc = df_hires_resolve(m, p, &h, err);
    if (rc) return rc;
    *width = h.on ? h.target.width : p->width;
    *height = h.on ? h.target.height : p->height;
    return 0;
}

/* ---- image upscalers ---- */

/* Upscaler.upscale's do_upscale: one round of the upscaler at `scale`. */
static int upscale_round(df_upscaler_kind kind, const fm_upscaler *model, double scale, const uint8_t *in, int iw,
                         int ih, uint8_t **out, int *ow, int *oh, fm_error *err)
{
    if (kind == DF_UP_MODEL) {
        int s = fm_upscaler_scale(model);
        *ow = iw * s;
        *oh = ih * s;
        if (!(*out = malloc((size_t)*ow * *oh * 3))) return core_fail(err, FM_EINPUT, "upscale: out of memory");
        return fm_upscale(model, in, iw, ih, *out, NULL, err);
    }
    *ow = (int)(iw * scale);
    *oh = (int)(ih * scale);
    if (*ow < 1 || *oh < 1 || *ow > 65536 || *oh > 65536)
        return core_fail(err, FM_EINPUT, "upscale: %dx%d is no image size", *ow, *oh);
    if (!(*out = malloc((size_t)*ow * *oh * 3))) return core_fail(err, FM_EINPUT, "upscale: out of memory");
    if (df_pil_resize_rgb8(*out, *ow, *oh, in, iw, ih, kind == DF_UP_LANCZOS))
        return core_fail(err, FM_EINPUT, "upscale: out of memory");
    return 0;
}

/* img (owned) replaced by its LANCZOS resize to w x h when it differs. */
static int lanczos_to(uint8_t **img, int *iw, int *ih, int w, int h, fm_error *err)
{
    if (*iw == w && *ih == h) return 0;
    uint8_t *o = malloc((size_t)w * h * 3);
    if (!o || df_pil_resize_rgb8(o, w, h, *img, *iw, *ih, 1)) {
        free(o);
        return core_fail(err, FM_EINPUT, "upscale: out of memory");
    }
    free(*img);
    *img = o;
    *iw = w;
    *ih = h;
    return 0;
}

int df_hires_upscale_rgb(df_upscaler_kind kind, const fm_upscaler *model, const uint8_t *in, int iw, int ih, int w,
                         int h, uint8_t **out, fm_error *err)
{
    *out = NULL;
    int cw = iw, ch = ih, rc = 0;
    uint8_t *cur = malloc((size_t)iw * ih * 3);
    if (!cur) return core_fail(err, FM_EINPUT, "upscale: out of memory");
    memcpy(cur, in, (size_t)iw * ih * 3);
    /* resize_image's resize(): the upscaler only when enlarging */
    double scale = fmax((double)w / iw, (double)h / ih);
    if (scale > 1.0) {
        int dest_w = (int)(floor(iw * scale / 8) * 8), dest_h = (int)(floor(ih * scale / 8) * 8);
        for (int round = 0; round < 3 && !rc; round++) {
            uint8_t *next = NULL;
            int nw, nh;
            rc = upscale_round(kind, model, scale, cur, cw, ch, &next, &nw, &nh, err);
            if (rc) {
                free(next);
                break;
            }
            int same = nw == cw && nh == ch;
            free(cur);
            cur = next;
            cw = nw;
            ch = nh;
            if (same || (cw >= dest_w && ch >= dest_h)) break;
        }
        if (!rc) rc = lanczos_to(&cur, &cw, &ch, dest_w, dest_h, err);
    }
    if (!rc) rc = lanczos_to(&cur, &cw, &ch, w, h, err);
    if (rc) {
        free(cur);
        return rc;
    }
    *out = cur;
    return 0;
}

/* ---- the two passes ---- */

/* The first pass's image as sample_hr_pass makes it: clamp((x + 1) / 2)
 * * 255, truncated by astype(np.uint8). */
static void to_u8_truncated(uint8_t *rgb, const float *img, int w, int h)
{
    size_t px = (size_t)w * h;
    for (size_t i = 0; i < px; i++)
        for (int c = 0; c < 3; c++) {
            float v = (img[c * px + i] + 1.0f) / 2.0f;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            rgb[i * 3 + c] = (uint8_t)(255.0f * v);
        }
}

/* The upscaled image through the VAE encoder: image / 255 * 2 - 1, the
 * posterior's mean times the scale factor (as fmimage's img2img). */
static int encode_rgb(fm_model *m, const uint8_t *rgb, int w, int h, float *latent, fm_error *err)
{
    int f = m->cfg.vae.latent_factor;
    size_t px = (size_t)w * h, lat = (size_t)m->cfg.vae.embed_dim * (h / f) * (w / f);
    float *img = malloc(sizeof(float) * 3 * px), *logvar = malloc(sizeof(float) * lat);
    int rc = (!img || !logvar) ? core_fail(err, FM_EINPUT, "out of memory for the hires encode") : 0;
    for (size_t i = 0; !rc && i < px; i++)
        for (int c = 0; c < 3; c++) img[c * px + i] = 2.0f * ((float)rgb[i * 3 + c] / 255.0f) - 1.0f;
    if (!rc) rc = vae_encode(m->vae, latent, logvar, img, h, w, err);
    for (size_t i = 0; !rc && i < lat; i++) latent[i] *= m->cfg.vae.scale_factor;
    free(img);
    free(logvar);
    return rc;
}

/* samples[:, :, ty//2 : H - (ty+1)//2, tx//2 : W - (tx+1)//2] */
static void crop_latent(float *out, const float *in, int c, int h, int w, int tx, int ty)
{
    int y0 = ty / 2, x0 = tx / 2, oh = h - ty, ow = w - tx;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < oh; y++)
            memcpy(out + ((size_t)ch * oh + y) * ow, in + ((size_t)ch * h + y + y0) * w + x0, sizeof(float) * ow);
}

static double clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int df_hires_generate(fm_model *m, const fm_params *p, const df_hires *h, uint8_t *rgb, fm_error *err)
{
    int f = m->cfg.vae.latent_factor, c = m->cfg.unet.in_channels;
    const df_hires_target *t = &h->target;
    int lh = p->height / f, lw = p->width / f, uh = t->upscale_h / f, uw = t->upscale_w / f;
    size_t n1 = (size_t)c * lh * lw, nu = (size_t)c * uh * uw, n2 = (size_t)c * (t->height / f) * (t->width / f);
    float *x1 = NULL, *up = malloc(sizeof(float) * nu), *x2 = malloc(sizeof(float) * n2), *img = NULL;
    uint8_t *small = NULL, *big = NULL;
    int rc = (!up || !x2) ? core_fail(err, FM_EINPUT, "out of memory for the hires fix") : 0;
    if (!rc && is_latent(h->kind)) {
        /* the first pass's latent, interpolated */
        if (!(x1 = malloc(sizeof(float) * n1))) rc = core_fail(err, FM_EINPUT, "out of memory");
        if (!rc) rc = df_run_pass(m, p, NULL, x1, NULL, NULL, err);
        double t0 = clock_now();
        if (!rc && df_latent_upscale(h->kind, up, uh, uw, x1, c, lh, lw))
            rc = core_fail(err, FM_EINPUT, "out of memory for the latent upscale");
        if (!rc && p->stage) p->stage(p->stage_user, "hires upscale", clock_now() - t0);
    } else if (!rc) {
        /* the first pass decoded, upscaled as an image, encoded again */
        size_t px = (size_t)p->width * p->height;
        if (!(img = malloc(sizeof(float) * 3 * px)) || !(small = malloc(px * 3)))
            rc = core_fail(err, FM_EINPUT, "out of memory");
        if (!rc) rc = df_run_pass(m, p, NULL, NULL, NULL, img, err);
        double t0 = clock_now();
        if (!rc) {
            to_u8_truncated(small, img, p->width, p->height);
            rc = df_hires_upscale_rgb(h->kind, p->hires_model, small, p->width, p->height, t->upscale_w,
                                      t->upscale_h, &big, err);
        }
        if (!rc) rc = encode_rgb(m, big, t->upscale_w, t->upscale_h, up, err);
        if (!rc && p->stage) p->stage(p->stage_user, "hires upscale", clock_now() - t0);
    }
    if (!rc) {
        crop_latent(x2, up, c, uh, uw, t->truncate_x, t->truncate_y);
        fm_params p2 = *p;
        p2.width = t->width;
        p2.height = t->height;
        p2.steps = h->steps;
        p2.strength = (float)p->hires_denoise;
        if (p->hires_prompt && p->hires_prompt[0]) p2.prompt = p->hires_prompt;
        if (p->hires_negative && p->hires_negative[0]) p2.negative = p->hires_negative;
        if (p->hires_sampler[0]) memcpy(p2.sampler, p->hires_sampler, sizeof p2.sampler);
        p2.hires_scale = 0;
        p2.hires_width = p2.hires_height = 0;
        df_pass pass = {x2, 0, 0, df_total_steps(p), t->upscale_w, t->upscale_h};
        df_hires_steps(h->steps, p->hires_denoise, &pass.sigma_steps, &pass.t_enc);
        rc = df_run_pass(m, &p2, &pass, NULL, rgb, NULL, err);
    }
    free(x1);
    free(up);
    free(x2);
    free(img);
    free(small);
    free(big);
    return rc;
}
