/* A1111's img2img inpainting around fm_generate (processing.py
 * StableDiffusionProcessingImg2Img.init and sample, CFGDenoiser's blend,
 * apply_overlay / uncrop), "poor man's outpainting" as one pass over the
 * whole canvas, and the 9-channel models' image conditioning. The 8-bit
 * steps are diffusion/mask.c's, byte-equal to PIL and OpenCV. */
#include "diffusion/inpaint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/mask.h"
#include "diffusion/pipeline_internal.h"

#define MAX_SIDE 16384

static int has_outpaint(const fm_params *p)
{
    return p->outpaint[0] || p->outpaint[1] || p->outpaint[2] || p->outpaint[3];
}

int df_inpaint_check(const fm_model *m, const fm_params *p, fm_error *err)
{
    int f = m->cfg.vae.latent_factor;
    if (p->mask) {
        if (!p->init_rgb) return core_fail(err, FM_EUSAGE, "--mask: needs an init image (-i)");
        if (p->mask_width <= 0 || p->mask_height <= 0 || p->mask_width > MAX_SIDE || p->mask_height > MAX_SIDE)
            return core_fail(err, FM_EUSAGE, "--mask: %dx%d pixels (1..%d a side)", p->mask_width, p->mask_height, MAX_SIDE);
    }
    if (!p->mask && !has_outpaint(p)) return 0;
    if (p->mask_blur < 0 || p->mask_blur > 256)
        return core_fail(err, FM_EUSAGE, "--mask-blur: %d is not in 0..256", p->mask_blur);
    if (p->inpaint_fill < FM_FILL_ORIGINAL || p->inpaint_fill > FM_FILL_LATENT_NOTHING)
        return core_fail(err, FM_EUSAGE, "--inpaint-fill: %d is not one of the FM_FILL_ values", p->inpaint_fill);
    if (p->inpaint_padding < 0 || p->inpaint_padding > MAX_SIDE)
        return core_fail(err, FM_EUSAGE, "--inpaint-padding: %d is not in 0..%d", p->inpaint_padding, MAX_SIDE);
    if (!(p->inpainting_mask_weight >= 0 && p->inpainting_mask_weight <= 1))
        return core_fail(err, FM_EUSAGE, "inpainting_mask_weight: must be in [0,1]");
    if (has_outpaint(p)) {
        if (!p->init_rgb) return core_fail(err, FM_EUSAGE, "--outpaint: needs an init image (-i)");
        if (p->mask) return core_fail(err, FM_EUSAGE, "--outpaint: makes its own mask (no --mask with it)");
        if (p->inpaint_only_masked) return core_fail(err, FM_EUSAGE, "--outpaint: not with --inpaint-only-masked");
        for (int i = 0; i < 4; i++) {
            if (p->outpaint[i] < 0 || p->outpaint[i] > MAX_SIDE)
                return core_fail(err, FM_EUSAGE, "--outpaint: %d is not in 0..%d", p->outpaint[i], MAX_SIDE);
            if (p->outpaint[i] % f)
                return core_fail(err, FM_EUSAGE, "--outpaint: %d is not a multiple of %d (the model's latent factor)",
                                 p->outpaint[i], f);
        }
        if ((long)p->width + p->outpaint[0] + p->outpaint[2] > MAX_SIDE ||
            (long)p->height + p->outpaint[1] + p->outpaint[3] > MAX_SIDE)
            return core_fail(err, FM_EUSAGE, "--outpaint: the canvas would be over the %d-pixel limit", MAX_SIDE);
    }
    return 0;
}

void df_inpaint_sizes(const fm_params *p, int *w, int *h, int *out_w, int *out_h)
{
    *w = p->width + p->outpaint[0] + p->outpaint[2];
    *h = p->height + p->outpaint[1] + p->outpaint[3];
    *out_w = *w;
    *out_h = *h;
    if (p->mask && p->inpaint_only_masked && p->init_rgb) {
        *out_w = p->init_width;
        *out_h = p->init_height;
    }
}

void df_inpaint_end(df_inpaint *ip)
{
    free(ip->image);
    free(ip->image_mask);
    free(ip->nmask);
    free(ip->overlay);
    free(ip->decoded);
    free(ip->concat);
    memset(ip, 0, sizeof *ip);
}

/* PIL's crop: the box may reach outside the image; that part is black. */
static void crop(uint8_t *out, const uint8_t *in, int w, int h, int ch, const int box[4])
{
    int cw = box[2] - box[0], chh = box[3] - box[1];
    memset(out, 0, (size_t)cw * chh * ch);
    for (int y = 0; y < chh; y++) {
        int sy = box[1] + y;
        if (sy < 0 || sy >= h) continue;
        for (int x = 0; x < cw; x++) {
            int sx = box[0] + x;
            if (sx >= 0 && sx < w) memcpy(out + ((size_t)y * cw + x) * ch, in + ((size_t)sy * w + sx) * ch, ch);
        }
    }
}

/* ImageDraw.rectangle((x0, y0, x1, y1), fill=0) on a white mask: both
 * corners inclusive. */
static void black_rect(uint8_t *m, int w, int h, int x0, int y0, int x1, int y1)
{
    for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < h; y++)
        for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < w; x++) m[(size_t)y * w + x] = 0;
}

/* scripts/poor_mans_outpainting.py's canvas and masks for one pass over the
 * whole canvas: the init image resized to width x height at (left, top) on
 * black; the mask white but for the original area inset by the blur on the
 * sides that grow (the script's p.mask_blur is twice its own slider, and
 * its inset that slider times two: here `blur` is the processing blur), the
 * latent mask inset by a quarter of it. */
static int outpaint_canvas(const fm_params *p, int W, int H, uint8_t **canvas, uint8_t **mask, uint8_t **lmask)
{
    int l = p->outpaint[0], t = p->outpaint[1], r = p->outpaint[2], b = p->outpaint[3], blur = p->mask_blur;
    uint8_t *img = malloc((size_t)p->width * p->height * 3);
    *canvas = calloc((size_t)W * H, 3);
    *mask = malloc((size_t)W * H);
    *lmask = malloc((size_t)W * H);
    if (!img || !*canvas || !*mask || !*lmask ||
        df_resize_image(0, img, p->width, p->height, p->init_rgb, p->init_width, p->init_height, 3)) {
        free(img);
        return -1;
    }
    for (int y = 0; y < p->height; y++)
        memcpy(*canvas + ((size_t)(y + t) * W + l) * 3, img + (size_t)y * p->width * 3, (size_t)p->width * 3);
    free(img);
    memset(*mask, 255, (size_t)W * H);
    memset(*lmask, 255, (size_t)W * H);
    black_rect(*mask, W, H, l + (l ? blur : 0), t + (t ? blur : 0), W - r - (r ? blur : 0), H - b - (b ? blur : 0));
    int q = blur / 4;
    black_rect(*lmask, W, H, l + (l ? q : 0), t + (t ? q : 0), W - r - (r ? q : 0), H - b - (b ? q : 0));
    return 0;
}

/* processing.py init() from the mask on: everything up to the VAE encode. */
static int prepare(df_inpaint *ip, const fm_params *p, const uint8_t *image, int iw, int ih, uint8_t *mask, int mw,
                   int mh, const uint8_t *latent_mask, fm_error *err)
{
    int W = ip->W, H = ip->H;
    size_t px = (size_t)W * H;
    if (p->mask_invert)
        for (size_t i = 0; i < (size_t)mw * mh; i++) mask[i] = (uint8_t)(255 - mask[i]);
    if (df_mask_blur(mask, mw, mh, p->mask_blur)) return -1;
    uint8_t *mfo = NULL; /* mask_for_overlay */
    int box[4], crop_region = 0;
    if (!(ip->image_mask = malloc(px)) || !(ip->image = malloc(px * 3))) return -1;
    if (p->inpaint_only_masked) {
        crop_region = df_mask_crop_region(mask, mw, mh, p->inpaint_padding, box);
        if (!crop_region) {
            /* A1111: "Unable to perform Inpaint Only mask because mask is
             * blank, switch to img2img mode" */
            ip->masked = 0;
            ip->out_w = W;
            ip->out_h = H;
            return df_resize_image(0, ip->image, W, H, image, iw, ih, 3);
        }
        df_expand_crop_region(box, W, H, mw, mh);
        int cw = box[2] - box[0], chh = box[3] - box[1];
        uint8_t *mc = malloc((size_t)cw * chh);
        if (!mc) return -1;
        crop(mc, mask, mw, mh, 1, box);
        int rc = df_resize_image(2, ip->image_mask, W, H, mc, cw, chh, 1);
        free(mc);
        if (rc) return -1;
        ip->paste[0] = box[0]; ip->paste[1] = box[1]; ip->paste[2] = cw; ip->paste[3] = chh;
        ip->out_w = iw;
        ip->out_h = ih;
        if (!(mfo = malloc((size_t)iw * ih))) return -1;
        if (mw == iw && mh == ih) memcpy(mfo, mask, (size_t)iw * ih);
        else if (df_resize_image(0, mfo, iw, ih, mask, mw, mh, 1)) { free(mfo); return -1; }
    } else {
        if (df_resize_image(0, ip->image_mask, W, H, mask, mw, mh, 1)) return -1;
        ip->out_w = W;
        ip->out_h = H;
        if (!(mfo = malloc(px))) return -1;
        for (size_t i = 0; i < px; i++) mfo[i] = (uint8_t)(ip->image_mask[i] * 2 > 255 ? 255 : ip->image_mask[i] * 2);
    }
    /* the overlay: the init image at the result's size */
    size_t opx = (size_t)ip->out_w * ip->out_h;
    uint8_t *base = malloc(opx * 3);
    ip->overlay = malloc(opx * 4);
    int rc = (!base || !ip->overlay) ? -1 : 0;
    if (!rc && crop_region) memcpy(base, image, opx * 3);
    else if (!rc) rc = df_resize_image(0, base, W, H, image, iw, ih, 3);
    if (!rc) df_overlay_make(ip->overlay, base, mfo, ip->out_w, ip->out_h);
    free(mfo);
    /* all black: the blend keeps the init latent everywhere and the overlay
     * covers the whole result, which is therefore the resized init image */
    ip->blank = 1;
    for (size_t i = 0; i < px && ip->blank; i++) ip->blank = (latent_mask ? latent_mask : ip->image_mask)[i] == 0;
    if (!rc && crop_region) {
        int cw = box[2] - box[0], chh = box[3] - box[1];
        uint8_t *ic = malloc((size_t)cw * chh * 3);
        if (!ic) rc = -1;
        if (!rc) crop(ic, base, iw, ih, 3, box);
        if (!rc) rc = df_resize_image(2, ip->image, W, H, ic, cw, chh, 3);
        free(ic);
    } else if (!rc) {
        memcpy(ip->image, base, px * 3);
    }
    free(base);
    if (rc) return -1;
    const uint8_t *lm = latent_mask ? latent_mask : ip->image_mask;
    if (ip->fill != FM_FILL_ORIGINAL && df_mask_fill(ip->image, lm, W, H)) return -1;
    /* the latent mask: convert('RGB').resize((lw, lh)) (bicubic), /255,
     * np.around (half to even) */
    uint8_t *lat8 = malloc((size_t)ip->lw * ip->lh);
    if (!(ip->nmask = malloc(sizeof(float) * (size_t)ip->lw * ip->lh)) || !lat8 ||
        df_pil_resize(lat8, ip->lw, ip->lh, lm, W, H, 1, DF_FILTER_BICUBIC)) {
        free(lat8);
        return -1;
    }
    for (size_t i = 0; i < (size_t)ip->lw * ip->lh; i++) ip->nmask[i] = rintf((float)lat8[i] / 255.0f);
    free(lat8);
    (void)err;
    return 0;
}

int df_inpaint_begin(fm_model *m, const fm_params *p, df_inpaint *ip, fm_params *q, fm_error *err)
{
    memset(ip, 0, sizeof *ip);
    *q = *p;
    if (!p->mask && !has_outpaint(p)) return 0;
    int rc = df_inpaint_check(m, p, err);
    if (rc) return rc;
    int f = m->cfg.vae.latent_factor;
    df_inpaint_sizes(p, &ip->W, &ip->H, &ip->out_w, &ip->out_h);
    ip->lw = ip->W / f;
    ip->lh = ip->H / f;
    ip->c = m->cfg.vae.embed_dim;
    ip->fill = p->inpaint_fill;
    ip->masked = 1;
    uint8_t *mask = NULL, *lmask = NULL, *canvas = NULL;
    const uint8_t *image = p->init_rgb;
    int iw = p->init_width, ih = p->init_height, mw = p->mask_width, mh = p->mask_height;
    if (has_outpaint(p)) {
        rc = outpaint_canvas(p, ip->W, ip->H, &canvas, &mask, &lmask);
        image = canvas;
        iw = mw = ip->W;
        ih = mh = ip->H;
    } else if ((mask = malloc((size_t)mw * mh))) {
        memcpy(mask, p->mask, (size_t)mw * mh);
    } else {
        rc = -1;
    }
    if (!rc) rc = prepare(ip, p, image, iw, ih, mask, mw, mh, lmask, err);
    free(mask);
    free(lmask);
    free(canvas);
    if (rc) {
        df_inpaint_end(ip);
        return core_fail(err, FM_EINPUT, "--mask: out of memory");
    }
    if (ip->masked && !(ip->decoded = malloc((size_t)ip->W * ip->H * 3))) {
        df_inpaint_end(ip);
        return core_fail(err, FM_EINPUT, "--mask: out of memory");
    }
    q->width = ip->W;
    q->height = ip->H;
    q->init_rgb = ip->image;
    q->init_width = ip->W;
    q->init_height = ip->H;
    q->mask = NULL;
    memset(q->outpaint, 0, sizeof q->outpaint);
    return 0;
}

/* The VAE encoding (mean x scale factor) of img [3][H][W] in [-1, 1]. */
static int encode(fm_model *m, const float *img, int H, int W, float *latent, fm_error *err)
{
    size_t lat = (size_t)m->cfg.vae.embed_dim * (H / m->cfg.vae.latent_factor) * (W / m->cfg.vae.latent_factor);
    float *logvar = malloc(sizeof(float) * lat);
    if (!logvar) return core_fail(err, FM_EINPUT, "out of memory for the inpainting conditioning");
    int rc = vae_encode(m->vae, latent, logvar, img, H, W, err);
    free(logvar);
    for (size_t i = 0; !rc && i < lat; i++) latent[i] *= m->cfg.vae.scale_factor;
    return rc;
}

int df_inpaint_conditioning(fm_model *m, const fm_params *q, df_inpaint *ip, fm_error *err)
{
    int W = q->width, H = q->height, f = m->cfg.vae.latent_factor, lw = W / f, lh = H / f, c = m->cfg.vae.embed_dim;
    size_t px = (size_t)W * H, lat = (size_t)lw * lh;
    float *img = malloc(sizeof(float) * 3 * px), *cmask = malloc(sizeof(float) * px);
    ip->concat = malloc(sizeof(float) * (1 + (size_t)c) * lat);
    if (!img || !cmask || !ip->concat) {
        free(img);
        free(cmask);
        return core_fail(err, FM_EINPUT, "out of memory for the inpainting conditioning");
    }
    const uint8_t *rgb = ip->masked ? ip->image : NULL;
    uint8_t *resized = NULL;
    if (!ip->masked && q->init_rgb) { /* img2img without a mask: the image as it is encoded */
        if (!(resized = malloc(px * 3)) || df_resize_image(0, resized, W, H, q->init_rgb, q->init_width, q->init_height, 3)) {
            free(resized);
            free(img);
            free(cmask);
            return core_fail(err, FM_EINPUT, "out of memory for the inpainting conditioning");
        }
        rgb = resized;
    }
    /* img2img_image_conditioning: source = image * 2 - 1, the mask rounded
     * (torch.round), lerp(source, source * (1 - mask), weight); txt2img:
     * a 0.5 grey image (0 after * 2 - 1) under an all-ones mask. An img2img
     * without a mask conditions on the whole image under an all-ones mask
     * (A1111's image_mask None). */
    float w = q->inpainting_mask_weight;
    for (size_t i = 0; i < px; i++) {
        float mk = ip->masked ? rintf((float)ip->image_mask[i] / 255.0f) : 1.0f;
        cmask[i] = mk;
        for (int ch = 0; ch < 3; ch++) {
            float s = rgb ? (float)rgb[i * 3 + ch] / 255.0f * 2.0f - 1.0f : 0.0f;
            float e = s * (1.0f - mk);
            img[ch * px + i] = w < 0.5f ? s + w * (e - s) : e - (e - s) * (1.0f - w);
        }
    }
    if (!rgb) memset(img, 0, sizeof(float) * 3 * px);
    int rc = encode(m, img, H, W, ip->concat + lat, err);
    /* F.interpolate(mask, latent size), mode nearest: pixel (y*f, x*f) */
    for (int y = 0; y < lh; y++)
        for (int x = 0; x < lw; x++) ip->concat[(size_t)y * lw + x] = cmask[(size_t)y * f * W + (size_t)x * f];
    free(img);
    free(cmask);
    free(resized);
    return rc;
}

void df_inpaint_fill_latent(const df_inpaint *ip, float *init, const float *noise)
{
    if (!ip->masked || (ip->fill != FM_FILL_LATENT_NOISE && ip->fill != FM_FILL_LATENT_NOTHING)) return;
    size_t lat = (size_t)ip->lw * ip->lh;
    for (int ch = 0; ch < ip->c; ch++)
        for (size_t i = 0; i < lat; i++) {
            float nm = ip->nmask[i], keep = 1.0f - nm;
            float *v = init + ch * lat + i;
            *v = ip->fill == FM_FILL_LATENT_NOISE ? *v * keep + noise[ch * lat + i] * nm : *v * keep;
        }
}

void df_inpaint_blend(const df_inpaint *ip, float *x)
{
    if (!ip || !ip->masked || !ip->init) return;
    size_t lat = (size_t)ip->lw * ip->lh;
    for (int ch = 0; ch < ip->c; ch++)
        for (size_t i = 0; i < lat; i++) {
            size_t k = ch * lat + i;
            x[k] = x[k] * ip->nmask[i] + ip->init[k] * (1.0f - ip->nmask[i]);
        }
}

int df_inpaint_finish(const df_inpaint *ip, uint8_t *rgb)
{
    size_t opx = (size_t)ip->out_w * ip->out_h;
    uint8_t *canvas = calloc(opx, 4);
    if (!canvas) return -1;
    const uint8_t *src = ip->decoded;
    uint8_t *resized = NULL;
    int x0 = 0, y0 = 0, w = ip->W, h = ip->H;
    if (ip->paste[2]) {
        /* uncrop: resize_image(1, image, w, h) pasted at (x, y) */
        x0 = ip->paste[0]; y0 = ip->paste[1]; w = ip->paste[2]; h = ip->paste[3];
        if (!(resized = malloc((size_t)w * h * 3)) || df_resize_image(1, resized, w, h, ip->decoded, ip->W, ip->H, 3)) {
            free(resized);
            free(canvas);
            return -1;
        }
        src = resized;
    }
    for (int y = 0; y < h; y++) {
        int dy = y0 + y;
        if (dy < 0 || dy >= ip->out_h) continue;
        for (int x = 0; x < w; x++) {
            int dx = x0 + x;
            if (dx < 0 || dx >= ip->out_w) continue;
            uint8_t *d = canvas + ((size_t)dy * ip->out_w + dx) * 4;
            memcpy(d, src + ((size_t)y * w + x) * 3, 3);
            d[3] = 255;
        }
    }
    df_alpha_composite(canvas, ip->overlay, ip->out_w, ip->out_h);
    for (size_t i = 0; i < opx; i++) memcpy(rgb + i * 3, canvas + i * 4, 3);
    free(resized);
    free(canvas);
    return 0;
}
