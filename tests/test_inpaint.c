/* Inpainting (issue 18) against tests/data/inpaint/ (tools/ref/inpaint_ref.py:
 * A1111's steps run by PIL 9.4 and OpenCV 4.6; tests/data/README.md#inpainting).
 * The 8-bit steps must equal the reference exactly: PIL resizes (Lanczos,
 * bicubic, A1111's resize modes 0-2), the mask blur, crop regions, the
 * overlay and its composite, masking.fill. The 9-channel U-Net forward
 * within 1e-4 of ldm's UNetModel in float64 (unet9.safetensors); the masked
 * pipeline's invariants on tiny-sd1 (pixels the overlay covers are the
 * original's, an all-black mask changes nothing, sizes); the full-size
 * sd1-inpainting layout binds and runs; hostile masks refused or handled
 * as A1111 handles them. */
#include "cliutil.h"
#include "diffusion/detect.h"
#include "diffusion/inpaint.h"
#include "diffusion/mask.h"
#include "diffusion/pipeline_internal.h"
#include "tools/lib/randckpt.h"

#define PURE "tests/data/inpaint/pure.safetensors"
#define W 37
#define H 29

static wt_safetensors st;

static uint8_t *u8(const char *name, size_t *n)
{
    size_t k;
    float *f = tu_f32(&st, name, &k);
    uint8_t *b = malloc(k ? k : 1);
    assert_non_null(b);
    for (size_t i = 0; i < k; i++) b[i] = (uint8_t)f[i];
    core_free(f);
    if (n) *n = k;
    return b;
}

/* got must equal the golden byte for byte; says where it does not. */
static void expect(const char *name, const uint8_t *got, size_t n)
{
    size_t k;
    uint8_t *ref = u8(name, &k);
    if (k != n) fail_msg("%s: %zu bytes computed, golden has %zu", name, n, k);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != ref[i] && !bad++) first = i;
    if (bad) fail_msg("%s: %zu of %zu bytes differ, first at %zu: %d, reference %d", name, bad, n, first, got[first], ref[first]);
    free(ref);
}

static void test_resize(void **state)
{
    (void)state;
    uint8_t *img = u8("image", NULL), *mask = u8("mask", NULL);
    static const int sizes[][2] = {{24, 40}, {80, 64}, {37, 29}, {1, 1}, {5, 61}};
    char name[64];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int w = sizes[i][0], h = sizes[i][1];
        uint8_t *out = malloc((size_t)w * h * 3);
        assert_int_equal(df_pil_resize(out, w, h, img, W, H, 3, DF_FILTER_LANCZOS), 0);
        snprintf(name, sizeof name, "lanczos_rgb_%dx%d", w, h);
        expect(name, out, (size_t)w * h * 3);
        assert_int_equal(df_pil_resize(out, w, h, mask, W, H, 1, DF_FILTER_LANCZOS), 0);
        snprintf(name, sizeof name, "lanczos_l_%dx%d", w, h);
        expect(name, out, (size_t)w * h);
        free(out);
    }
    static const int lat[][2] = {{9, 7}, {10, 8}, {64, 48}};
    for (size_t i = 0; i < sizeof lat / sizeof lat[0]; i++) {
        int w = lat[i][0], h = lat[i][1];
        uint8_t *out = malloc((size_t)w * h);
        assert_int_equal(df_pil_resize(out, w, h, mask, W, H, 1, DF_FILTER_BICUBIC), 0);
        snprintf(name, sizeof name, "bicubic_l_%dx%d", w, h);
        expect(name, out, (size_t)w * h);
        free(out);
    }
    static const int rs[][2] = {{48, 32}, {32, 48}, {40, 40}};
    for (int mode = 0; mode < 3; mode++)
        for (size_t i = 0; i < 3; i++) {
            int w = rs[i][0], h = rs[i][1];
            uint8_t *out = malloc((size_t)w * h * 3);
            assert_int_equal(df_resize_image(mode, out, w, h, img, W, H, 3), 0);
            snprintf(name, sizeof name, "resize_image%d_%dx%d", mode, w, h);
            expect(name, out, (size_t)w * h * 3);
            free(out);
        }
    free(img);
    free(mask);
}

static void test_blur(void **state)
{
    (void)state;
    char name[32];
    for (int blur = 1; blur <= 11; blur += blur == 1 ? 3 : 7) {
        uint8_t *m = u8("mask", NULL);
        assert_int_equal(df_mask_blur(m, W, H, blur), 0);
        snprintf(name, sizeof name, "blur%d", blur);
        expect(name, m, (size_t)W * H);
        free(m);
    }
    uint8_t *s = u8("small", NULL); /* a kernel wider than the image */
    assert_int_equal(df_mask_blur(s, 5, 3, 4), 0);
    expect("small_blur4", s, 15);
    free(s);
    uint8_t one = 255;
    assert_int_equal(df_mask_blur(&one, 1, 1, 4), 0);
    expect("one_blur4", &one, 1);
}

static void test_crop_regions(void **state)
{
    (void)state;
    size_t n;
    float *b = tu_f32(&st, "crop_boxes", &n);
    uint8_t *masks[2] = {u8("mask", NULL), u8("blur4", NULL)};
    assert_int_equal(n, 2 * 3 * 3 * 11);
    for (size_t r = 0; r < n / 11; r++) {
        const float *row = b + r * 11;
        int box[4];
        assert_int_equal(df_mask_crop_region(masks[r / 9], W, H, (int)row[0], box), 1);
        for (int i = 0; i < 4; i++) assert_int_equal(box[i], (int)row[3 + i]);
        df_expand_crop_region(box, (int)row[1], (int)row[2], W, H);
        for (int i = 0; i < 4; i++) assert_int_equal(box[i], (int)row[7 + i]);
    }
    uint8_t black[6] = {0};
    int box[4];
    assert_int_equal(df_mask_crop_region(black, 3, 2, 8, box), 0);
    core_free(b);
    free(masks[0]);
    free(masks[1]);
}

static void test_overlay_and_fill(void **state)
{
    (void)state;
    size_t px = (size_t)W * H;
    uint8_t *img = u8("image", NULL), *mo = u8("overlay_mask", NULL), *gen = u8("generated", NULL);
    uint8_t *ov = malloc(px * 4), *dst = malloc(px * 4), *rgb = malloc(px * 3);
    df_overlay_make(ov, img, mo, W, H);
    expect("overlay", ov, px * 4);
    for (size_t i = 0; i < px; i++) {
        memcpy(dst + i * 4, gen + i * 3, 3);
        dst[i * 4 + 3] = 255;
    }
    df_alpha_composite(dst, ov, W, H);
    for (size_t i = 0; i < px; i++) memcpy(rgb + i * 3, dst + i * 4, 3);
    expect("composite", rgb, px * 3);
    char name[16];
    for (int r = 2; r <= 16; r *= r == 2 ? 2 : 4) {
        memcpy(dst, ov, px * 4);
        assert_int_equal(df_pil_gaussian_blur4(dst, W, H, (float)r), 0);
        snprintf(name, sizeof name, "gauss%d", r);
        expect(name, dst, px * 4);
    }
    uint8_t *blurred = u8("blur4", NULL), *hard = u8("mask", NULL);
    memcpy(rgb, img, px * 3);
    assert_int_equal(df_mask_fill(rgb, blurred, W, H), 0);
    expect("fill", rgb, px * 3);
    memcpy(rgb, img, px * 3);
    assert_int_equal(df_mask_fill(rgb, hard, W, H), 0);
    expect("fill_hard", rgb, px * 3);
    free(img); free(mo); free(gen); free(ov); free(dst); free(rgb); free(blurred); free(hard);
}


/* ---- the 9-channel U-Net ---- */

#define UNET9 "tests/data/inpaint/unet9.safetensors"

/* base (a tiny checkpoint) with ref's conv_in: a 9-channel U-Net. Its
 * config is the file's with in_channels 9, or config when base has none. */
static void write_tiny9_from(const char *out, const char *base_path, const char *ref_path, const char *config)
{
    wt_safetensors base, ref;
    tu_open(&base, base_path);
    tu_open(&ref, ref_path);
    tl_st_entry *e = cu_st_entries(&base);
    const wt_st_tensor *w = wt_st_find(&ref, "conv_in");
    assert_non_null(w);
    for (int i = 0; i < base.n_tensors; i++)
        if (!strcmp(e[i].name, "model.diffusion_model.input_blocks.0.0.weight")) {
            e[i].dtype = w->dtype;
            e[i].ndim = w->ndim;
            memcpy(e[i].shape, w->shape, sizeof w->shape);
            e[i].data = w->data;
        }
    const char *cfg = config ? config : wt_st_meta_get(&base, "fmimage.config");
    assert_non_null(cfg);
    char *c9 = strdup(cfg), *at = strstr(c9, "\"in_channels\":4");
    if (!config) {
        assert_non_null(at);
        at[strlen("\"in_channels\":")] = '9';
    }
    wt_st_meta meta = {"fmimage.config", c9};
    fm_error err = {0};
    if (tl_st_write(out, e, base.n_tensors, &meta, 1, &err)) fail_msg("%s", err.msg);
    free(c9);
    free(e);
    wt_st_close(&base);
    wt_st_close(&ref);
}

static void write_tiny9(const char *out) { write_tiny9_from(out, "tests/data/tiny-sd1.safetensors", UNET9, NULL); }

static void test_unet9_forward(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/tiny9.safetensors", tu_dir);
    write_tiny9(path);
    fm_error err = {0};
    fm_model *m = fm_model_load(path, &err);
    if (!m) fail_msg("%s", err.msg);
    assert_int_equal(m->cfg.unet.in_channels, 9);
    wt_safetensors ref;
    tu_open(&ref, UNET9);
    float *x = tu_f32(&ref, "x", NULL), *t = tu_f32(&ref, "t", NULL), *ctx = tu_f32(&ref, "context", NULL);
    size_t n;
    float *want = tu_f32(&ref, "out", &n), *out = malloc(sizeof(float) * n);
    if (un_prepare(m->unet, 2, 8, 8, 77, NULL, &err)) fail_msg("%s", err.msg);
    if (un_forward(m->unet, out, x, 2, 8, 8, t, ctx, 77, NULL, &err)) fail_msg("%s", err.msg);
    tu_assert_close(out, want, n, 1e-4, "unet9.out");
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)out[i] - want[i]) / fmax(1.0, fabs((double)want[i])));
    print_message("unet9: worst relative error %.3g over %zu outputs (tolerance 1e-4)\n", worst, n);
    /* end to end with a 9-channel model: masked img2img and txt2img run */
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "a red fox";
    p.width = p.height = 16;
    p.steps = 2;
    uint8_t rgb[16 * 16 * 3], init[16 * 16 * 3], mask[16 * 16] = {0};
    for (size_t i = 0; i < sizeof init; i++) init[i] = (uint8_t)(i * 7);
    for (int y = 4; y < 12; y++) memset(mask + y * 16 + 4, 255, 8);
    assert_int_equal(fm_generate(m, &p, rgb, &err), 0);
    p.init_rgb = init;
    p.init_width = p.init_height = 16;
    p.mask = mask;
    p.mask_width = p.mask_height = 16;
    if (fm_generate(m, &p, rgb, &err)) fail_msg("%s", err.msg);
    char *info = fm_infotext(m, &p, "tiny9", NULL, &err);
    assert_non_null(strstr(info, "Denoising strength: 0.75, Conditional mask weight: 1, "));
    assert_non_null(strstr(info, "Mask blur: 4"));
    free(info);
    core_free(x); core_free(t); core_free(ctx); core_free(want); free(out);
    wt_st_close(&ref);
    fm_model_free(m);
}

/* The 9-channel U-Net of SD 2.x (512-inpainting-ema: ldm's UNetModel) and
 * of SDXL inpainting (sgm's, with label_emb's y) on tiny-sd2 / tiny-sdxl
 * with a 9-input conv_in, against tools/ref/inpaint_unet_ref.py --family
 * sd2|sdxl in float64 (tolerance 1e-4, relative above 1). An SD 2.x
 * inpainting U-Net is eps without the v probe, as A1111 runs it
 * (v2-inpainting-inference.yaml). */
static void unet9_family(const char *base, const char *ref_path, const char *config, fm_family family)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tiny9-%s.safetensors", tu_dir, fm_family_name(family));
    write_tiny9_from(path, base, ref_path, config);
    fm_error err = {0};
    fm_model *m = fm_model_load(path, &err);
    if (!m) fail_msg("%s", err.msg);
    assert_int_equal(fm_model_family(m), family);
    assert_int_equal(m->cfg.unet.in_channels, 9);
    assert_int_equal(m->prediction, FM_PRED_EPS);
    assert_int_equal(m->prediction_probed, 0);
    wt_safetensors ref;
    tu_open(&ref, ref_path);
    size_t n, nctx;
    float *x = tu_f32(&ref, "x", NULL), *t = tu_f32(&ref, "t", NULL), *ctx = tu_f32(&ref, "context", &nctx);
    float *y = family == FM_FAMILY_SDXL ? tu_f32(&ref, "y", NULL) : NULL;
    float *want = tu_f32(&ref, "out", &n), *out = malloc(sizeof(float) * n);
    if (un_prepare(m->unet, 2, 8, 8, 77, NULL, &err)) fail_msg("%s", err.msg);
    if (un_forward(m->unet, out, x, 2, 8, 8, t, ctx, 77, y, &err)) fail_msg("%s", err.msg);
    tu_assert_close(out, want, n, 1e-4, ref_path);
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)out[i] - want[i]) / fmax(1.0, fabs((double)want[i])));
    print_message("%s: worst relative error %.3g over %zu outputs (tolerance 1e-4)\n", ref_path, worst, n);
    /* masked img2img and txt2img run; A1111 writes Conditional mask weight
     * for SDXL inpainting only in img2img (its conditioning key is crossattn) */
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "a red fox";
    p.width = p.height = 32;
    p.steps = 1;
    static uint8_t rgb[32 * 32 * 3], init[32 * 32 * 3], mask[32 * 32];
    for (size_t i = 0; i < sizeof init; i++) init[i] = (uint8_t)(i * 7);
    memset(mask, 255, sizeof mask / 2);
    if (fm_generate(m, &p, rgb, &err)) fail_msg("%s", err.msg);
    char *info = fm_infotext(m, &p, "tiny9", NULL, &err);
    assert_true((strstr(info, "Conditional mask weight") != NULL) == (family != FM_FAMILY_SDXL));
    free(info);
    p.init_rgb = init;
    p.init_width = p.init_height = 32;
    p.mask = mask;
    p.mask_width = p.mask_height = 32;
    if (fm_generate(m, &p, rgb, &err)) fail_msg("%s", err.msg);
    info = fm_infotext(m, &p, "tiny9", NULL, &err);
    assert_non_null(strstr(info, "Conditional mask weight: 1"));
    free(info);
    core_free(x); core_free(t); core_free(ctx); core_free(y); core_free(want); free(out);
    (void)nctx;
    wt_st_close(&ref);
    fm_model_free(m);
    unlink(path);
}

static void test_unet9_sd2_sdxl_forward(void **state)
{
    (void)state;
    /* tests/data/README.md#tiny-sd2's config; no prediction: eps must come
     * from the 9 inputs */
    static const char *const sd2 =
        "{\"family\": \"sd2\", \"unet\": {\"num_heads\": -1, \"num_head_channels\": 16}, "
        "\"text\": {\"kind\": \"openclip\", \"width\": 32, \"layers\": 3, \"heads\": 2}}";
    unet9_family("tests/data/tiny-sd2.safetensors", "tests/data/inpaint/unet9-sd2.safetensors", sd2, FM_FAMILY_SD2);
    unet9_family("tests/data/tiny-sdxl.safetensors", "tests/data/inpaint/unet9-sdxl.safetensors", NULL, FM_FAMILY_SDXL);
}

/* The published layouts of 512-inpainting-ema and SDXL inpainting 0.1
 * (tests/data/layouts/{sd2,sdxl}-inpainting.tsv: conv_in [320, 9, 3, 3])
 * as all-zero sparse files: detected as their family with 9 inputs, SD 2.x
 * as eps with the 512 defaults; conv_in of 8 or 10 inputs refused. */
static void test_full_sd2_sdxl_inpainting_detected(void **state)
{
    (void)state;
    static const struct { const char *layout; fm_family family; int width; } rows[] = {
        {"tests/data/layouts/sd2-inpainting.tsv", FM_FAMILY_SD2, 512},
        {"tests/data/layouts/sdxl-inpainting.tsv", FM_FAMILY_SDXL, 1024},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        char path[512];
        snprintf(path, sizeof path, "%s/full9.safetensors", tu_dir);
        tl_layout layout;
        fm_error err = {0};
        if (tl_layout_read(&layout, rows[r].layout, &err)) fail_msg("%s", err.msg);
        tl_randckpt_opts o = {.seed = 18, .float_dtype = -1, .zeros = 1};
        if (tl_randckpt_write(&layout, path, &o, &err)) fail_msg("%s", err.msg);
        tl_layout_free(&layout);
        wt_safetensors st;
        wt_model_config cfg;
        tu_open(&st, path);
        if (df_detect_config(&st.src, &cfg, &err)) fail_msg("%s: %s", rows[r].layout, err.msg);
        wt_st_close(&st);
        assert_int_equal(cfg.family, rows[r].family);
        assert_int_equal(cfg.unet.in_channels, 9);
        assert_int_equal(cfg.unet.model_channels, 320);
        assert_int_equal(cfg.prediction, FM_PRED_EPS);
        assert_int_equal(cfg.defaults.width, rows[r].width);
        /* hostile: a conv_in of 10 or 8 inputs is neither model: one line */
        for (int64_t bad = 8; bad <= 10; bad += 2) {
            if (tl_layout_read(&layout, rows[r].layout, &err)) fail_msg("%s", err.msg);
            for (int i = 0; i < layout.n; i++)
                if (!strcmp(layout.entries[i].name, "model.diffusion_model.input_blocks.0.0.weight"))
                    layout.entries[i].shape[1] = bad;
            if (tl_randckpt_write(&layout, path, &o, &err)) fail_msg("%s", err.msg);
            tl_layout_free(&layout);
            core_error_clear(&err);
            tu_open(&st, path);
            assert_int_equal(df_detect_config(&st.src, &cfg, &err), FM_EINPUT);
            wt_st_close(&st);
            assert_non_null(strstr(err.msg, "an inpainting U-Net takes 9"));
            assert_null(strchr(err.msg, '\n'));
        }
        unlink(path);
    }
}

/* The published inpainting layout (conv_in [320, 9, 3, 3]) as a random
 * full-size file (1.7 GB of F16, in the test's directory): detected as SD 1.x with 9 U-Net inputs, bound, and one
 * masked step at 64x64 runs. */
static void test_full_sd1_inpainting(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/sd1-inpainting.safetensors", tu_dir);
    tl_layout layout;
    fm_error err = {0};
    if (tl_layout_read(&layout, "tests/data/layouts/sd1-inpainting.tsv", &err)) fail_msg("%s", err.msg);
    tl_randckpt_opts o = {.seed = 18, .float_dtype = -1};
    if (tl_randckpt_write(&layout, path, &o, &err)) fail_msg("%s", err.msg);
    tl_layout_free(&layout);
    fm_model *m = fm_model_load(path, &err);
    if (!m) fail_msg("%s", err.msg);
    assert_int_equal(fm_model_family(m), FM_FAMILY_SD1);
    assert_int_equal(m->cfg.unet.in_channels, 9);
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "x";
    p.width = p.height = 64;
    p.steps = 1;
    p.cfg = 1;
    static uint8_t rgb[64 * 64 * 3], init[64 * 64 * 3], mask[64 * 64];
    memset(init, 200, sizeof init);
    memset(mask, 255, sizeof mask / 2);
    p.init_rgb = init;
    p.init_width = p.init_height = 64;
    p.mask = mask;
    p.mask_width = p.mask_height = 64;
    if (fm_generate(m, &p, rgb, &err)) fail_msg("%s", err.msg);
    /* the unmasked lower half is the original's (the overlay is opaque
     * there, 8 rows past the blur) */
    for (size_t i = 64 * 48 * 3; i < sizeof rgb; i++) assert_int_equal(rgb[i], 200);
    fm_model_free(m);
    unlink(path);
}

/* ---- the masked pipeline on tiny-sd1 ---- */

static fm_model *tiny(void)
{
    fm_error err = {0};
    fm_model *m = fm_model_load("tests/data/tiny-sd1.safetensors", &err);
    if (!m) fail_msg("%s", err.msg);
    return m;
}

static void masked_params(fm_model *m, fm_params *p, const uint8_t *init, int iw, int ih, const uint8_t *mask, int mw, int mh)
{
    fm_params_default(m, p);
    p->prompt = "a red fox";
    p->width = p->height = 32;
    p->steps = 3;
    p->init_rgb = init;
    p->init_width = iw;
    p->init_height = ih;
    p->mask = mask;
    p->mask_width = mw;
    p->mask_height = mh;
}

static void test_pipeline_invariants(void **state)
{
    (void)state;
    fm_model *m = tiny();
    fm_error err = {0};
    enum { S = 32 };
    static uint8_t init[S * S * 3], mask[S * S], rgb[S * S * 3], mfo[S * S], blurred[S * S];
    for (size_t i = 0; i < sizeof init; i++) init[i] = (uint8_t)((i * 37) ^ (i >> 5));
    for (int y = 8; y < 20; y++) memset(mask + y * S + 10, 255, 12);
    fm_params p;
    for (int fill = FM_FILL_ORIGINAL; fill <= FM_FILL_LATENT_NOTHING; fill++) {
        masked_params(m, &p, init, S, S, mask, S, S);
        p.inpaint_fill = fill;
        p.mask_blur = 2;
        if (fm_generate(m, &p, rgb, &err)) fail_msg("%s", err.msg);
        /* where mask_for_overlay (the blurred mask x 2) is 0, the overlay is
         * opaque: the original's pixels exactly */
        memcpy(blurred, mask, sizeof mask);
        df_mask_blur(blurred, S, S, 2);
        size_t kept = 0, changed = 0;
        for (size_t i = 0; i < S * S; i++) {
            mfo[i] = blurred[i];
            if (!mfo[i]) {
                kept++;
                if (memcmp(rgb + i * 3, init + i * 3, 3)) fail_msg("fill %d: pixel %zu outside the mask changed", fill, i);
            } else if (mask[i] && memcmp(rgb + i * 3, init + i * 3, 3)) {
                changed++;
            }
        }
        assert_true(kept > 300);
        assert_true(changed > 100); /* the masked area was repainted */
    }
    /* all black: the image unchanged (A1111 blends the init latent back
     * everywhere and the overlay covers it all) */
    static uint8_t black[S * S];
    masked_params(m, &p, init, S, S, black, S, S);
    if (fm_generate(m, &p, rgb, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(rgb, init, sizeof init);
    /* only masked: the result has the init image's size (48x40 here) */
    static uint8_t big[48 * 40 * 3], bigmask[48 * 40], out[48 * 40 * 3];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 13);
    for (int y = 10; y < 18; y++) memset(bigmask + y * 48 + 20, 255, 6);
    masked_params(m, &p, big, 48, 40, bigmask, 48, 40);
    p.inpaint_only_masked = 1;
    p.inpaint_padding = 4;
    int ow, oh;
    assert_int_equal(fm_output_size(m, &p, &ow, &oh, &err), 0);
    assert_int_equal(ow, 48);
    assert_int_equal(oh, 40);
    if (fm_generate(m, &p, out, &err)) fail_msg("%s", err.msg);
    /* rows past the blur's reach (mask rows 10..17, radius 10) are the original's */
    assert_memory_equal(out + 30 * 48 * 3, big + 30 * 48 * 3, 10 * 48 * 3);
    assert_memory_not_equal(out + 12 * 48 * 3, big + 12 * 48 * 3, 48 * 3);
    char *info = fm_infotext(m, &p, "tiny", NULL, &err);
    assert_non_null(strstr(info, "Size: 32x32, "));
    assert_non_null(strstr(info, "Mask blur: 4, Inpaint area: Only masked, Masked area padding: 4, Version"));
    free(info);
    /* outpaint: the canvas is (32+4+8) x (32+0+2), the old area kept
     * (inset by the blur on the sides that grow) */
    fm_params q;
    fm_params_default(m, &q);
    q.prompt = "x";
    q.width = q.height = 32;
    q.steps = 2;
    q.init_rgb = init;
    q.init_width = q.init_height = S;
    q.inpaint_fill = FM_FILL_FILL;
    q.outpaint[0] = 4; q.outpaint[2] = 8; q.outpaint[3] = 2;
    assert_int_equal(fm_output_size(m, &q, &ow, &oh, &err), 0);
    assert_int_equal(ow, 44);
    assert_int_equal(oh, 34);
    static uint8_t canvas[44 * 34 * 3];
    if (fm_generate(m, &q, canvas, &err)) fail_msg("%s", err.msg);
    info = fm_infotext(m, &q, "tiny", NULL, &err);
    assert_non_null(strstr(info, "Size: 44x34, "));
    assert_non_null(strstr(info, "Masked content: fill"));
    free(info);
    q.outpaint[0] = 3; /* not a multiple of the latent factor 2 */
    assert_int_equal(fm_generate(m, &q, canvas, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "--outpaint: 3 is not a multiple of 2"));
    fm_model_free(m);
}

/* Hostile masks: each handled as A1111 does, or refused in one line. */
static void test_hostile_masks(void **state)
{
    (void)state;
    fm_model *m = tiny();
    fm_error err = {0};
    enum { S = 32 };
    static uint8_t init[S * S * 3], rgb[S * S * 3], small[7 * 5];
    memset(init, 90, sizeof init);
    fm_params p;
    /* another size: resized as A1111 resizes it (Lanczos to width x height) */
    memset(small, 255, sizeof small);
    masked_params(m, &p, init, S, S, small, 7, 5);
    if (fm_generate(m, &p, rgb, &err)) fail_msg("7x5 mask: %s", err.msg);
    /* 1x1 white: everything repainted */
    uint8_t one = 255;
    masked_params(m, &p, init, S, S, &one, 1, 1);
    if (fm_generate(m, &p, rgb, &err)) fail_msg("1x1 mask: %s", err.msg);
    /* 1x1 with only masked: the crop region is the whole 1x1 mask */
    p.inpaint_only_masked = 1;
    if (fm_generate(m, &p, rgb, &err)) fail_msg("1x1 only masked: %s", err.msg);
    /* absurd sizes, no init image, bad fields */
    masked_params(m, &p, init, S, S, &one, 100000, 1);
    assert_int_equal(fm_generate(m, &p, rgb, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "--mask: 100000x1 pixels"));
    masked_params(m, &p, init, S, S, &one, 0, 1);
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    masked_params(m, &p, NULL, 0, 0, &one, 1, 1);
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "--mask: needs an init image"));
    masked_params(m, &p, init, S, S, &one, 1, 1);
    p.mask_blur = -1;
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    p.mask_blur = 4;
    p.inpaint_fill = 9;
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    p.inpaint_fill = 0;
    p.outpaint[1] = 2;
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "makes its own mask"));
    fm_model_free(m);
}

/* fm_mask_read: alpha when an RGBA file's alpha is not all opaque, else the
 * luminance (PIL's convert("L")). */
static void test_mask_read(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/m.png", tu_dir);
    uint8_t px[2 * 3] = {255, 0, 0, 10, 200, 30};
    fm_error err = {0};
    assert_int_equal(fm_png_write(path, px, 2, 1, NULL, &err), 0);
    int w, h;
    uint8_t *m = fm_mask_read(path, &w, &h, &err);
    assert_non_null(m);
    assert_int_equal(w, 2);
    assert_int_equal((int)m[0], (255 * 19595 + 0x8000) >> 16);
    assert_int_equal((int)m[1], (10 * 19595 + 200 * 38470 + 30 * 7471 + 0x8000) >> 16);
    free(m);
    assert_null(fm_mask_read("tests/data/no-such.png", &w, &h, &err));
}

static int setup(void **state)
{
    tu_open(&st, PURE);
    return tu_make_dir(state);
}

static int teardown(void **state)
{
    wt_st_close(&st);
    return tu_remove_dir(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_blur),
        cmocka_unit_test(test_crop_regions),
        cmocka_unit_test(test_overlay_and_fill),
        cmocka_unit_test(test_mask_read),
        cmocka_unit_test(test_unet9_forward),
        cmocka_unit_test(test_pipeline_invariants),
        cmocka_unit_test(test_hostile_masks),
        cmocka_unit_test(test_full_sd1_inpainting),
        cmocka_unit_test(test_unet9_sd2_sdxl_forward),
        cmocka_unit_test(test_full_sd2_sdxl_inpainting_detected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
