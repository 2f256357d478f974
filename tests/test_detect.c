/* Model detection: the tiny goldens (expected values from tests/data/README.md:
 * #tiny-sd1, #tiny-sd2, #tiny-sdxl) and
 * sparse full-size files made from the real layouts (expected values and
 * parameter counts from layouts/README.md). */
#include "testutil.h"

#include <unistd.h>

#include "diffusion/detect.h"
#include "tools/lib/randckpt.h"

static void detect(const char *path, wt_safetensors *st, wt_model_config *cfg)
{
    fm_error err = {0};
    tu_open(st, path);
    if (df_detect_config(&st->src, cfg, &err)) fail_msg("%s", err.msg);
}

static void assert_ints(const int *got, const int *want, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("%s[%d] is %d, expected %d", what, i, got[i], want[i]);
}

static void assert_tiny_vae(const wt_vae_config *v, float scale_factor)
{
    assert_string_equal(v->prefix, "first_stage_model.");
    assert_int_equal(v->ch, 32);
    assert_int_equal(v->n_levels, 2);
    assert_ints(v->ch_mult, (const int[]){1, 2}, 2, "vae.ch_mult");
    assert_int_equal(v->num_res_blocks, 1);
    assert_int_equal(v->z_channels, 4);
    assert_int_equal(v->embed_dim, 4);
    assert_int_equal(v->in_channels, 3);
    assert_int_equal(v->out_ch, 3);
    assert_int_equal(v->double_z, 1);
    assert_int_equal(v->latent_factor, 2);
    assert_int_equal(v->has_encoder, 1);
    assert_float_equal(v->scale_factor, scale_factor, 1e-7);
}

static void assert_schedule(const wt_model_config *cfg)
{
    assert_float_equal(cfg->linear_start, 0.00085, 1e-12);
    assert_float_equal(cfg->linear_end, 0.012, 1e-12);
    assert_int_equal(cfg->timesteps, 1000);
}

static void test_tiny_sd1(void **state)
{
    (void)state;
    wt_safetensors st;
    wt_model_config cfg;
    detect("tests/data/tiny-sd1.safetensors", &st, &cfg);
    assert_int_equal(cfg.family, FM_FAMILY_SD1);
    assert_int_equal(cfg.prediction, FM_PRED_EPS);
    const wt_unet_config *u = &cfg.unet;
    assert_string_equal(u->prefix, "model.diffusion_model.");
    assert_int_equal(u->in_channels, 4);
    assert_int_equal(u->out_channels, 4);
    assert_int_equal(u->model_channels, 32);
    assert_int_equal(u->n_levels, 2);
    assert_ints(u->channel_mult, (const int[]){1, 2}, 2, "channel_mult");
    assert_int_equal(u->num_res_blocks, 1);
    /* attention_resolutions [1], transformer_depth [1,1]: level 0 only, and the middle. */
    assert_ints(u->transformer_depth, (const int[]){1, 0}, 2, "transformer_depth");
    assert_int_equal(u->transformer_depth_middle, 1);
    assert_int_equal(u->num_heads, 2);
    assert_int_equal(u->num_head_channels, -1);
    assert_int_equal(u->context_dim, 8);
    assert_int_equal(u->use_linear_in_transformer, 0);
    assert_int_equal(u->adm_in_channels, 0);
    assert_tiny_vae(&cfg.vae, 0.18215f);
    assert_int_equal(cfg.n_text, 1);
    const wt_text_config *t = &cfg.text[0];
    assert_string_equal(t->prefix, "cond_stage_model.transformer.text_model.");
    assert_int_equal(t->kind, FM_TEXT_CLIP);
    assert_int_equal(t->width, 8);
    assert_int_equal(t->layers, 2);
    assert_int_equal(t->heads, 2);
    assert_int_equal(t->vocab_size, 49408);
    assert_int_equal(t->max_length, 77);
    assert_int_equal(t->intermediate_size, 32);
    assert_int_equal(t->act_quick_gelu, 1);
    assert_int_equal(t->pad_token, 49407);
    assert_int_equal(t->projection_dim, 0);
    assert_int_equal(t->penultimate, 0);
    assert_int_equal(t->final_ln_on_output, 1);
    assert_float_equal(t->layer_norm_eps, 1e-5, 1e-12);
    assert_schedule(&cfg);
    /* DESIGN.md "Defaults by family", sd1 row. */
    assert_int_equal(cfg.defaults.width, 512);
    assert_int_equal(cfg.defaults.steps, 20);
    assert_string_equal(cfg.defaults.sampler, "dpmpp_2m");
    assert_string_equal(cfg.vocabulary, "");
    char *d = df_config_describe(&cfg, &st.src);
    assert_non_null(d);
    assert_non_null(strstr(d, "family: sd1\n"));
    assert_non_null(strstr(d, "prediction: eps\n"));
    free(d);
    /* --info: the parts' lists (binder list mode) against the file; all but
     * ldm's 12 DDPM schedule buffers and CLIP's position_ids are bound. */
    fm_error err = {0};
    fm_model *m = fm_model_load("tests/data/tiny-sd1.safetensors", &err);
    if (!m) fail_msg("%s", err.msg);
    d = fm_model_describe(m, &err);
    assert_non_null(d);
    if (!strstr(d, "tensors: 381 in the file, 368 bound by the parts, 13 other\n")) fail_msg("%s", d);
    free(d);
    fm_model_free(m);
    wt_st_close(&st);
}

static void test_tiny_sd2_without_metadata(void **state)
{
    (void)state;
    wt_safetensors st;
    wt_model_config cfg;
    detect("tests/data/tiny-sd2.safetensors", &st, &cfg);
    assert_null(wt_st_meta_get(&st, "fmimage.config"));
    assert_int_equal(cfg.family, FM_FAMILY_SD2);
    assert_int_equal(cfg.prediction, FM_PRED_AUTO); /* v, but only the probe can tell */
    const wt_unet_config *u = &cfg.unet;
    assert_int_equal(u->model_channels, 32);
    assert_int_equal(u->n_levels, 2);
    assert_ints(u->channel_mult, (const int[]){1, 2}, 2, "channel_mult");
    assert_int_equal(u->num_res_blocks, 1);
    assert_ints(u->transformer_depth, (const int[]){1, 1}, 2, "transformer_depth");
    assert_int_equal(u->transformer_depth_middle, 1);
    assert_int_equal(u->context_dim, 32);
    assert_int_equal(u->use_linear_in_transformer, 1);
    assert_int_equal(u->num_heads, -1); /* head width is SD 2.x's 64 (the tiny file's 16 is not in it) */
    assert_tiny_vae(&cfg.vae, 0.18215f);
    const wt_text_config *t = &cfg.text[0];
    assert_string_equal(t->prefix, "cond_stage_model.model.");
    assert_int_equal(t->kind, FM_TEXT_OPENCLIP);
    assert_int_equal(t->width, 32);
    assert_int_equal(t->layers, 3);
    assert_int_equal(t->vocab_size, 49408);
    assert_int_equal(t->max_length, 77);
    assert_int_equal(t->intermediate_size, 128);
    assert_int_equal(t->projection_dim, 32);
    assert_int_equal(t->act_quick_gelu, 0);
    assert_int_equal(t->pad_token, 0);
    assert_int_equal(t->penultimate, 1);
    assert_int_equal(t->final_ln_on_output, 1);
    assert_schedule(&cfg);
    assert_int_equal(cfg.defaults.width, 768);
    wt_st_close(&st);
}

static void test_tiny_sdxl(void **state)
{
    (void)state;
    wt_safetensors st;
    wt_model_config cfg;
    detect("tests/data/tiny-sdxl.safetensors", &st, &cfg);
    assert_int_equal(cfg.family, FM_FAMILY_SDXL);
    assert_int_equal(cfg.prediction, FM_PRED_EPS);
    const wt_unet_config *u = &cfg.unet;
    assert_int_equal(u->model_channels, 32);
    assert_int_equal(u->n_levels, 3);
    assert_ints(u->channel_mult, (const int[]){1, 2, 2}, 3, "channel_mult");
    assert_int_equal(u->num_res_blocks, 1);
    assert_ints(u->transformer_depth, (const int[]){0, 1, 2}, 3, "transformer_depth");
    assert_int_equal(u->transformer_depth_middle, 2);
    assert_int_equal(u->num_head_channels, 16);
    assert_int_equal(u->num_heads, -1);
    assert_int_equal(u->context_dim, 64);
    assert_int_equal(u->use_linear_in_transformer, 1);
    assert_int_equal(u->adm_in_channels, 1568);
    assert_tiny_vae(&cfg.vae, 0.13025f);
    assert_int_equal(cfg.n_text, 2);
    const wt_text_config *a = &cfg.text[0], *b = &cfg.text[1];
    assert_string_equal(a->prefix, "conditioner.embedders.0.transformer.text_model.");
    assert_int_equal(a->kind, FM_TEXT_CLIP);
    assert_int_equal(a->width, 32);
    assert_int_equal(a->layers, 3);
    assert_int_equal(a->heads, 2);
    assert_int_equal(a->intermediate_size, 128);
    assert_int_equal(a->act_quick_gelu, 1);
    assert_int_equal(a->pad_token, 49407);
    assert_int_equal(a->penultimate, 1); /* layer "hidden", layer_idx 2 of 3 */
    assert_int_equal(a->final_ln_on_output, 0);
    assert_string_equal(b->prefix, "conditioner.embedders.1.model.");
    assert_int_equal(b->kind, FM_TEXT_OPENCLIP);
    assert_int_equal(b->width, 32);
    assert_int_equal(b->layers, 2);
    assert_int_equal(b->heads, 2);
    assert_int_equal(b->projection_dim, 32);
    assert_int_equal(b->act_quick_gelu, 0);
    assert_int_equal(b->pad_token, 0);
    assert_int_equal(b->penultimate, 1); /* penultimate, legacy false: no ln_final */
    assert_int_equal(b->final_ln_on_output, 0);
    assert_schedule(&cfg);
    assert_int_equal(cfg.defaults.width, 1024);
    wt_st_close(&st);
}

/* ---- full-size layouts, as sparse all-zero files ---- */

typedef struct full_case {
    const char *layout;
    fm_family family;
    int64_t unet, vae, text0, text1; /* layouts/README.md "Counts" */
    int n_tensors;
} full_case;

/* The layout's file, without the tensors whose names start with drop (NULL: none). */
static void make_sparse_without(const char *layout_name, const char *drop, char *out, size_t len)
{
    char tsv[256];
    snprintf(tsv, sizeof tsv, "tests/data/layouts/%s.tsv", layout_name);
    snprintf(out, len, "%s/%s.safetensors", tu_dir, layout_name);
    tl_layout layout;
    fm_error err = {0};
    if (tl_layout_read(&layout, tsv, &err)) fail_msg("%s", err.msg);
    int kept = 0;
    for (int i = 0; i < layout.n; i++)
        if (!drop || strncmp(layout.entries[i].name, drop, strlen(drop))) layout.entries[kept++] = layout.entries[i];
    layout.n = kept;
    tl_randckpt_opts o = {.float_dtype = -1, .zeros = 1};
    if (tl_randckpt_write(&layout, out, &o, &err)) fail_msg("%s", err.msg);
    tl_layout_free(&layout);
}

static void make_sparse(const char *layout_name, char *out, size_t len) { make_sparse_without(layout_name, NULL, out, len); }

static void check_full(const full_case *c, wt_model_config *cfg)
{
    char path[512];
    make_sparse(c->layout, path, sizeof path);
    wt_safetensors st;
    detect(path, &st, cfg);
    assert_int_equal(st.n_tensors, c->n_tensors);
    assert_int_equal(cfg->family, c->family);
    assert_int_equal(df_count_params(&st.src, cfg->unet.prefix), c->unet);
    assert_int_equal(df_count_params(&st.src, cfg->vae.prefix), c->vae);
    assert_int_equal(df_count_params(&st.src, cfg->text[0].prefix), c->text0);
    if (c->text1) assert_int_equal(df_count_params(&st.src, cfg->text[1].prefix), c->text1);
    char *d = df_config_describe(cfg, &st.src);
    assert_non_null(d);
    char line[64];
    snprintf(line, sizeof line, "family: %s\n", df_family_str(c->family));
    assert_non_null(strstr(d, line));
    free(d);
    wt_st_close(&st);
    unlink(path);
    /* The common VAE: ch 128, ch_mult [1,2,4,4], 2 res blocks, z 4, double_z. */
    assert_int_equal(cfg->vae.ch, 128);
    assert_ints(cfg->vae.ch_mult, (const int[]){1, 2, 4, 4}, 4, "vae.ch_mult");
    assert_int_equal(cfg->vae.n_levels, 4);
    assert_int_equal(cfg->vae.num_res_blocks, 2);
    assert_int_equal(cfg->vae.z_channels, 4);
    assert_int_equal(cfg->vae.double_z, 1);
    assert_int_equal(cfg->vae.latent_factor, 8);
    assert_int_equal(cfg->unet.model_channels, 320);
    assert_int_equal(cfg->unet.num_res_blocks, 2);
}

static void test_full_sd1(void **state)
{
    (void)state;
    wt_model_config cfg;
    check_full(&(full_case){"sd1", FM_FAMILY_SD1, 859520964, 83653863, 123060480, 0, 1145}, &cfg);
    assert_ints(cfg.unet.channel_mult, (const int[]){1, 2, 4, 4}, 4, "channel_mult");
    assert_ints(cfg.unet.transformer_depth, (const int[]){1, 1, 1, 0}, 4, "transformer_depth");
    assert_int_equal(cfg.unet.transformer_depth_middle, 1);
    assert_int_equal(cfg.unet.num_heads, 8);
    assert_int_equal(cfg.unet.context_dim, 768);
    assert_int_equal(cfg.unet.use_linear_in_transformer, 0);
    assert_int_equal(cfg.text[0].width, 768);
    assert_int_equal(cfg.text[0].layers, 12);
    assert_int_equal(cfg.text[0].heads, 12);
    assert_int_equal(cfg.text[0].intermediate_size, 3072);
    assert_int_equal(cfg.prediction, FM_PRED_EPS);
}

static void test_full_sd2(void **state)
{
    (void)state;
    wt_model_config cfg;
    check_full(&(full_case){"sd2", FM_FAMILY_SD2, 865910724, 83653863, 354032641, 0, 1242}, &cfg);
    assert_int_equal(cfg.unet.num_head_channels, 64);
    assert_int_equal(cfg.unet.context_dim, 1024);
    assert_int_equal(cfg.unet.use_linear_in_transformer, 1);
    assert_int_equal(cfg.text[0].kind, FM_TEXT_OPENCLIP);
    assert_int_equal(cfg.text[0].width, 1024);
    assert_int_equal(cfg.text[0].layers, 24);
    assert_int_equal(cfg.text[0].heads, 16);
    assert_int_equal(cfg.text[0].projection_dim, 1024);
    assert_int_equal(cfg.text[0].penultimate, 1);
    assert_int_equal(cfg.text[0].final_ln_on_output, 1);
    assert_int_equal(cfg.prediction, FM_PRED_AUTO);
}

/* SD 2.x converted from a diffusers folder by diffusers' script: OpenCLIP-H
 * with 23 layers (the folder's), which A1111 runs all of (its 24-layer model
 * stops before the missing last one). */
static void test_full_sd2_from_diffusers(void **state)
{
    (void)state;
    char path[512];
    make_sparse_without("sd2", "cond_stage_model.model.transformer.resblocks.23.", path, sizeof path);
    wt_safetensors st;
    wt_model_config cfg;
    detect(path, &st, &cfg);
    assert_int_equal(cfg.family, FM_FAMILY_SD2);
    assert_int_equal(cfg.text[0].layers, 23);
    assert_int_equal(cfg.text[0].penultimate, 0);
    assert_int_equal(cfg.text[0].final_ln_on_output, 1);
    wt_st_close(&st);
    unlink(path);
}

static void test_full_sdturbo(void **state)
{
    (void)state;
    wt_model_config cfg;
    check_full(&(full_case){"sdturbo", FM_FAMILY_SD_TURBO, 865910724, 83653863, 354032641, 0, 1229}, &cfg);
    assert_string_equal(cfg.text[0].prefix, "conditioner.embedders.0.model.");
    assert_int_equal(cfg.text[0].layers, 24);
    assert_int_equal(cfg.prediction, FM_PRED_EPS);
    assert_int_equal(cfg.timesteps, 1000); /* denoiser.sigmas [1000] */
    assert_int_equal(cfg.defaults.steps, 1);
    assert_string_equal(cfg.defaults.sampler, "euler_ancestral");
    assert_string_equal(cfg.defaults.scheduler, "sgm_uniform");
}

static void test_full_sdxl(void **state)
{
    (void)state;
    wt_model_config cfg;
    check_full(&(full_case){"sdxl", FM_FAMILY_SDXL, 2567463684, 83653863, 123060480, 694659841, 2515}, &cfg);
    assert_int_equal(cfg.unet.n_levels, 3);
    assert_ints(cfg.unet.channel_mult, (const int[]){1, 2, 4}, 3, "channel_mult");
    assert_ints(cfg.unet.transformer_depth, (const int[]){0, 2, 10}, 3, "transformer_depth");
    assert_int_equal(cfg.unet.transformer_depth_middle, 10);
    assert_int_equal(cfg.unet.context_dim, 2048);
    assert_int_equal(cfg.unet.adm_in_channels, 2816);
    assert_int_equal(cfg.text[1].width, 1280);
    assert_int_equal(cfg.text[1].layers, 32);
    assert_int_equal(cfg.text[1].heads, 20);
    assert_int_equal(cfg.text[1].projection_dim, 1280);
    assert_float_equal(cfg.vae.scale_factor, 0.13025f, 1e-7);
}

/* ---- fmimage.config fills what shapes cannot say ---- */

/* src rewritten with __metadata__["fmimage.config"] = config, then detected. */
static int detect_with_config(const char *src, const char *config, wt_model_config *cfg, fm_error *err)
{
    wt_safetensors st;
    tu_open(&st, src);
    tl_st_entry *e = calloc((size_t)st.n_tensors, sizeof *e);
    for (int i = 0; i < st.n_tensors; i++) {
        const wt_st_tensor *t = &st.tensors[i];
        e[i] = (tl_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(e[i].shape, t->shape, sizeof t->shape);
    }
    char out[512];
    snprintf(out, sizeof out, "%s/with-config.safetensors", tu_dir);
    wt_st_meta meta = {"fmimage.config", config};
    if (tl_st_write(out, e, st.n_tensors, &meta, 1, err)) fail_msg("%s", err->msg);
    free(e);
    wt_st_close(&st);
    tu_open(&st, out);
    int rc = df_detect_config(&st.src, cfg, err);
    wt_st_close(&st);
    unlink(out);
    return rc;
}

static void test_sd2_config(void **state)
{
    (void)state;
    wt_model_config cfg;
    fm_error err = {0};
    /* tests/data/README.md#tiny-sd2's config (not stored in the file). */
    const char *v = "{\"family\":\"sd2\",\"prediction\":\"v\",\"unet\":{\"model_channels\":32,\"channel_mult\":[1,2],"
                    "\"num_res_blocks\":1,\"attention_resolutions\":[1,2],\"transformer_depth\":[1,1],\"num_heads\":-1,"
                    "\"num_head_channels\":16,\"context_dim\":32,\"use_linear_in_transformer\":true},"
                    "\"text\":{\"kind\":\"openclip\",\"width\":32,\"layers\":3,\"heads\":2,\"act\":\"gelu\","
                    "\"projection_dim\":32,\"pad_token\":0,\"layer\":\"penultimate\"}}";
    if (detect_with_config("tests/data/tiny-sd2.safetensors", v, &cfg, &err)) fail_msg("%s", err.msg);
    assert_int_equal(cfg.prediction, FM_PRED_V);
    assert_int_equal(cfg.unet.num_head_channels, 16);
    assert_int_equal(cfg.text[0].heads, 2);
    assert_int_equal(cfg.text[0].final_ln_on_output, 1);
    assert_int_equal(cfg.defaults.width, 768);
    if (detect_with_config("tests/data/tiny-sd2.safetensors", "{\"prediction\":\"eps\"}", &cfg, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(cfg.prediction, FM_PRED_EPS);
    assert_int_equal(cfg.defaults.width, 512); /* the 512-base row */
}

static void test_demo_config(void **state)
{
    (void)state;
    wt_model_config cfg;
    fm_error err = {0};
    const char *demo = "{\"family\":\"demo\",\"defaults\":{\"width\":64,\"height\":64,\"steps\":12,\"cfg\":4.5,"
                       "\"sampler\":\"euler\",\"scheduler\":\"normal\"},\"vocabulary\":[\"red\",\"circle\"]}";
    if (detect_with_config("tests/data/tiny-sd1.safetensors", demo, &cfg, &err)) fail_msg("%s", err.msg);
    assert_int_equal(cfg.family, FM_FAMILY_DEMO);
    assert_int_equal(cfg.defaults.width, 64);
    assert_int_equal(cfg.defaults.height, 64);
    assert_int_equal(cfg.defaults.steps, 12);
    assert_float_equal(cfg.defaults.cfg, 4.5, 1e-6);
    assert_string_equal(cfg.defaults.sampler, "euler");
    assert_string_equal(cfg.defaults.scheduler, "normal");
    assert_string_equal(cfg.vocabulary, "red, circle");
    assert_int_equal(cfg.text[0].final_ln_on_output, 1); /* the SD 1.x network it is */
    const char *sd1 = "{\"family\":\"sd1\",\"defaults\":{\"width\":128,\"height\":96},\"vocabulary\":\"a b\"}";
    if (detect_with_config("tests/data/tiny-sd1.safetensors", sd1, &cfg, &err)) fail_msg("%s", err.msg);
    assert_int_equal(cfg.family, FM_FAMILY_SD1);
    assert_int_equal(cfg.defaults.width, 128);
    assert_int_equal(cfg.defaults.height, 96);
    assert_int_equal(cfg.defaults.steps, 20);
    assert_string_equal(cfg.vocabulary, "a b");
    assert_int_equal(detect_with_config("tests/data/tiny-sd1.safetensors", "{\"defaults\":{\"steps\":0}}", &cfg, &err),
                     FM_EINPUT);
    assert_non_null(strstr(err.msg, "fmimage.config: defaults: size 512x512 or steps 0 out of range"));
}

static void test_family_defaults(void **state)
{
    (void)state;
    /* DESIGN.md "Defaults by family". */
    static const struct { fm_family f; fm_prediction p; int size, steps; float cfg; const char *sampler, *scheduler; } rows[] = {
        {FM_FAMILY_SD1, FM_PRED_EPS, 512, 20, 7, "dpmpp_2m", "karras"},
        {FM_FAMILY_SD2, FM_PRED_V, 768, 20, 7, "dpmpp_2m", "karras"},
        {FM_FAMILY_SD2, FM_PRED_EPS, 512, 20, 7, "dpmpp_2m", "karras"},
        {FM_FAMILY_SD_TURBO, FM_PRED_EPS, 512, 1, 1, "euler_ancestral", "sgm_uniform"},
        {FM_FAMILY_SDXL, FM_PRED_EPS, 1024, 20, 7, "dpmpp_2m", "karras"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        fm_model_defaults d;
        df_family_defaults(rows[i].f, rows[i].p, &d);
        assert_int_equal(d.width, rows[i].size);
        assert_int_equal(d.height, rows[i].size);
        assert_int_equal(d.steps, rows[i].steps);
        assert_float_equal(d.cfg, rows[i].cfg, 0);
        assert_string_equal(d.sampler, rows[i].sampler);
        assert_string_equal(d.scheduler, rows[i].scheduler);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_sd1),
        cmocka_unit_test(test_tiny_sd2_without_metadata),
        cmocka_unit_test(test_tiny_sdxl),
        cmocka_unit_test(test_full_sd1),
        cmocka_unit_test(test_full_sd2),
        cmocka_unit_test(test_full_sd2_from_diffusers),
        cmocka_unit_test(test_full_sdturbo),
        cmocka_unit_test(test_full_sdxl),
        cmocka_unit_test(test_sd2_config),
        cmocka_unit_test(test_demo_config),
        cmocka_unit_test(test_family_defaults),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
