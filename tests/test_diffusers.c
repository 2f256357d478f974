/* diffusers folders (weights/diffusers.c) against diffusers itself
 * (tests/data/README.md#diffusers-folders): the tiny SD 1.x, 2.x and SDXL
 * folders made by diffusers 0.27.2 must give, tensor for tensor (name,
 * dtype, shape, bytes), what diffusers' conversion scripts make of them;
 * the folder must draw the image its `fmimage convert` single file draws;
 * hostile folders are one line, exit 1, no image. */
#include "cliutil.h"

#include "core/sha256.h"
#include "diffusion/detect.h"
#include "textenc/textenc.h"
#include "weights/source.h"

static char dir[256];
static const char *const families[] = {"sd1", "sd2", "sdxl"};

static int setup(void **state)
{
    (void)state;
    cu_tempdir(dir, sizeof dir, "diffusers");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) ? -1 : 0;
}

/* Every line of FAMILY.ldm.tsv is a tensor of the folder's source with that
 * dtype, shape and sha256, and the source has no others. */
static void test_tensors_equal_diffusers_conversion(void **state)
{
    (void)state;
    for (int fi = 0; fi < 3; fi++) {
        char folder[200], tsv[200];
        snprintf(folder, sizeof folder, "tests/data/diffusers/%s", families[fi]);
        snprintf(tsv, sizeof tsv, "tests/data/diffusers/%s.ldm.tsv", families[fi]);
        fm_error err = {0};
        wt_source *s = wt_open(folder, &err);
        if (!s) fail_msg("%s", err.msg);
        FILE *f = fopen(tsv, "r");
        assert_non_null(f);
        char line[1024];
        int n = 0;
        while (fgets(line, sizeof line, f)) {
            if (line[0] == '#') continue;
            char name[512], dtype[32], shape[128], hex[65];
            if (sscanf(line, "%511[^\t]\t%31[^\t]\t%127[^\t]\t%64s", name, dtype, shape, hex) != 4) fail_msg("bad line %s", line);
            const wt_tensor *t = wt_find(s, name);
            if (!t) fail_msg("%s: %s missing", families[fi], name);
            const char *want = !strcmp(dtype, "float16") ? "F16" : !strcmp(dtype, "float32") ? "F32" : !strcmp(dtype, "int64") ? "I64" : dtype;
            if (strcmp(core_dtype_name(t->dtype), want)) fail_msg("%s: dtype %s, diffusers %s", name, core_dtype_name(t->dtype), dtype);
            char have[128];
            size_t o = (size_t)snprintf(have, sizeof have, "[");
            for (int d = 0; d < t->ndim; d++) o += (size_t)snprintf(have + o, sizeof have - o, d ? ",%lld" : "%lld", (long long)t->shape[d]);
            snprintf(have + o, sizeof have - o, "]");
            if (strcmp(have, shape)) fail_msg("%s: shape %s, diffusers %s", name, have, shape);
            char h[65];
            core_sha256_hex(t->data, t->nbytes, h);
            if (strcmp(h, hex)) fail_msg("%s: %s: bytes differ from diffusers' conversion", families[fi], name);
            n++;
        }
        fclose(f);
        printf("  %s: %d tensors equal to diffusers' conversion\n", families[fi], n);
        assert_int_equal(wt_count(s), n);
        assert_non_null(wt_meta(s, "fmimage.config"));
        wt_close(s);
    }
}

static uint8_t *draw(const char *model, const char *name)
{
    const char *args[] = {"-m", model, "a red fox in snow", "--seed", "42", "-W", "64", "-H", "64", "--sampler", "euler",
                          "--steps", "4", "--precision", "fp32", NULL};
    return cu_draw64(dir, name, args);
}

/* The folder and the single file `fmimage convert` makes of it (whose
 * tensors the test above proves equal to diffusers' script's) draw the
 * same image. */
static void test_folder_image_equals_converted_file(void **state)
{
    (void)state;
    for (int fi = 0; fi < 3; fi++) {
        char folder[200], one[400], err[1024], name[64];
        snprintf(folder, sizeof folder, "tests/data/diffusers/%s/", families[fi]);
        snprintf(one, sizeof one, "%s/%s.safetensors", dir, families[fi]);
        const char *conv[] = {"convert", folder, "-o", one, "-q", NULL};
        if (cu_run(conv, err, sizeof err)) fail_msg("convert %s: %s", folder, err);
        snprintf(name, sizeof name, "dir-%s", families[fi]);
        uint8_t *a = draw(folder, name);
        snprintf(name, sizeof name, "one-%s", families[fi]);
        uint8_t *b = draw(one, name);
        assert_memory_equal(a, b, 64 * 64 * 3);
        free(a);
        free(b);
    }
}

/* The conditioning fmimage computes from a folder is what diffusers'
 * pipelines compute (FAMILY.cond.safetensors): the choice of hidden state
 * and final norm per tower, the concatenation, the pooled vector. */
static void test_text_matches_diffusers(void **state)
{
    (void)state;
    for (int fi = 0; fi < 3; fi++) {
        char folder[200], ref[200];
        snprintf(folder, sizeof folder, "tests/data/diffusers/%s", families[fi]);
        snprintf(ref, sizeof ref, "tests/data/diffusers/%s.cond.safetensors", families[fi]);
        fm_error err = {0};
        wt_source *s = wt_open(folder, &err);
        if (!s) fail_msg("%s", err.msg);
        wt_model_config cfg;
        if (df_detect_config(s, &cfg, &err)) fail_msg("%s", err.msg);
        te_encoder enc;
        if (te_encoder_load(&enc, s, &cfg, &err)) fail_msg("%s", err.msg);
        wt_safetensors r;
        tu_open(&r, ref);
        const wt_tensor *ids = wt_st_find(&r, "tokens"), *ctx = wt_st_find(&r, "context"), *pooled = wt_st_find(&r, "pooled");
        assert_non_null(ids);
        assert_non_null(ctx);
        int32_t tok[1][FM_CLIP_LEN];
        float w[1][FM_CLIP_LEN];
        memcpy(tok[0], ids->data, sizeof tok[0]);
        for (int i = 0; i < FM_CLIP_LEN; i++) w[0][i] = 1.0f;
        te_token_chunks chunks = {.n_chunks = 1, .ids = tok, .weights = w};
        te_size_cond sizes = {64, 64, 0, 0, 64, 64};
        te_cond c;
        if (te_encode(&enc, &chunks, 1, &sizes, &c, &err)) fail_msg("%s", err.msg);
        size_t n = (size_t)wt_numel(ctx);
        assert_int_equal((size_t)c.n_tokens * (size_t)c.context_dim, n);
        float *want = malloc(n * sizeof *want);
        wt_convert_f32(want, ctx);
        double worst = 0;
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)c.context[i] - want[i]));
        double worst_pooled = 0;
        if (pooled) {
            float p[64];
            assert_true(wt_numel(pooled) <= 64 && c.adm_dim >= wt_numel(pooled));
            wt_convert_f32(p, pooled);
            for (int64_t i = 0; i < wt_numel(pooled); i++) worst_pooled = fmax(worst_pooled, fabs((double)c.y[i] - p[i]));
        }
        printf("  %s: context max |fmimage - diffusers| %.3g, pooled %.3g\n", families[fi], worst, worst_pooled);
        assert_true(worst < 1e-4 && worst_pooled < 1e-4);
        free(want);
        te_cond_free(&c);
        wt_st_close(&r);
        te_encoder_free(&enc);
        wt_close(s);
    }
}

/* ---- hostile folders ---- */

static void sh(const char *fmt, const char *a, const char *b)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd)) fail_msg("%s failed", cmd);
}

/* A copy of the sd1 folder at dir/NAME. */
static void copy_sd1(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
    sh("cp -r tests/data/diffusers/sd1 '%s'%s", out, "");
}

static void write_text(const char *folder, const char *rel, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", folder, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* fmimage on folder: exit 1, one line containing want, no image. */
static void refused(const char *folder, const char *want)
{
    char out[400], err[4096];
    snprintf(out, sizeof out, "%s/refused.png", dir);
    const char *args[] = {"-m", folder, "x", "-W", "64", "-H", "64", "--steps", "1", "-o", out, NULL};
    int code = cu_run(args, err, sizeof err);
    if (code != 1 || !strstr(err, want)) fail_msg("%s: exit %d, want '%s': %s", folder, code, want, err);
    assert_int_equal(strchr(err, '\n') - err + 1, (long)strlen(err)); /* one line */
    assert_false(cu_exists(out));
}

/* The hub's other names for the same files: the `fp16` variant
 * (diffusion_pytorch_model.fp16.safetensors, model.fp16.safetensors, as
 * stabilityai/stable-diffusion-2-1 ships them) and a tokenizer/ folder
 * beside the parts (not read): the same tensors. */
static void test_variant_names(void **state)
{
    (void)state;
    char d[300];
    copy_sd1(d, sizeof d, "variant");
    sh("cd '%s' && mv vae/diffusion_pytorch_model.safetensors vae/diffusion_pytorch_model.fp16.safetensors && "
       "mv text_encoder/model.safetensors text_encoder/model.fp16.safetensors && mkdir tokenizer && "
       "echo '{}' > tokenizer/vocab.json && echo '#version: 0.2' > tokenizer/merges.txt%s", d, "");
    fm_error err = {0};
    wt_source *a = wt_open("tests/data/diffusers/sd1", &err), *b = a ? wt_open(d, &err) : NULL;
    if (!a || !b) fail_msg("%s", err.msg);
    assert_int_equal(wt_count(a), wt_count(b));
    for (int i = 0; i < wt_count(a); i++) {
        const wt_tensor *x = wt_at(a, i), *y = wt_at(b, i);
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->nbytes, y->nbytes);
        if (memcmp(x->data, y->data, x->nbytes)) fail_msg("%s differs", x->name);
    }
    wt_close(a);
    wt_close(b);
}

#define SHARD "unet/diffusion_pytorch_model-00001-of-00002.safetensors"
#define INDEX "unet/diffusion_pytorch_model.safetensors.index.json"

static void test_hostile(void **state)
{
    (void)state;
    char d[300];
    copy_sd1(d, sizeof d, "no-index");
    sh("rm '%s/model_index.json'%s", d, "");
    refused(d, "is a directory (no model_index.json");

    copy_sd1(d, sizeof d, "bad-json");
    write_text(d, INDEX, "{\"weight_map\": {");
    refused(d, "not a JSON object");

    copy_sd1(d, sizeof d, "no-map");
    write_text(d, INDEX, "{\"metadata\": {}}");
    refused(d, "no weight_map");

    copy_sd1(d, sizeof d, "dotdot");
    write_text(d, INDEX, "{\"weight_map\": {\"conv_in.weight\": \"../../../etc/passwd\"}}");
    refused(d, "is not a file name");

    copy_sd1(d, sizeof d, "missing-shard");
    sh("rm '%s/%s'", d, SHARD);
    refused(d, "missing (listed in");

    copy_sd1(d, sizeof d, "symlink-out");
    sh("mv '%s/" SHARD "' '%s/../outside.safetensors'", d, d); /* beside the folder, not in it */
    sh("ln -s \"$(realpath '%s/../outside.safetensors')\" '%s/" SHARD "'", d, d);
    refused(d, "leads outside the model folder");

    copy_sd1(d, sizeof d, "part-symlink-out");
    sh("mv '%s/vae' '%s/../vae-outside'", d, d);
    sh("ln -s ../vae-outside '%s/vae'%s", d, "");
    refused(d, "leads outside the model folder");

    copy_sd1(d, sizeof d, "unlisted");
    sh("/usr/bin/python3 -c \"import json,sys; p=sys.argv[1]; j=json.load(open(p)); "
       "k=sorted(j['weight_map'])[0]; del j['weight_map'][k]; json.dump(j, open(p,'w'))\" '%s/%s'", d, INDEX);
    refused(d, "not listed for this shard");

    copy_sd1(d, sizeof d, "listed-absent");
    sh("/usr/bin/python3 -c \"import json,sys; p=sys.argv[1]; j=json.load(open(p)); "
       "j['weight_map']['no.such.weight']='diffusion_pytorch_model-00001-of-00002.safetensors'; json.dump(j, open(p,'w'))\" '%s/%s'",
       d, INDEX);
    refused(d, "tensor no.such.weight: missing");

    copy_sd1(d, sizeof d, "listed-twice");
    sh("/usr/bin/python3 -c \"import json,sys; p=sys.argv[1]; j=json.load(open(p)); k,v=sorted(j['weight_map'].items())[0]; "
       "t=json.dumps(j).replace('\\\"weight_map\\\": {', '\\\"weight_map\\\": {%%s: %%s, ' %% (json.dumps(k), json.dumps(v)), 1); "
       "open(p,'w').write(t)\" '%s/%s'", d, INDEX);
    refused(d, ": listed twice");

    copy_sd1(d, sizeof d, "no-unet-config");
    sh("rm '%s/unet/config.json'%s", d, "");
    refused(d, "missing (a diffusers unet needs its config)");

    copy_sd1(d, sizeof d, "no-vae");
    write_text(d, "model_index.json", "{\"_class_name\": \"StableDiffusionPipeline\", \"unet\": [\"diffusers\", \"UNet2DConditionModel\"], "
                                      "\"text_encoder\": [\"transformers\", \"CLIPTextModel\"]}");
    refused(d, "no vae");

    copy_sd1(d, sizeof d, "bad-layout");
    sh("sed -i 's/\"layers_per_block\": 2/\"layers_per_block\": 1/' '%s/unet/config.json'%s", d, "");
    refused(d, "not a name of this part");

    copy_sd1(d, sizeof d, "no-weights");
    sh("rm '%s/vae/diffusion_pytorch_model.safetensors'%s", d, "");
    refused(d, "no weights");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensors_equal_diffusers_conversion),
        cmocka_unit_test(test_folder_image_equals_converted_file),
        cmocka_unit_test(test_text_matches_diffusers),
        cmocka_unit_test(test_variant_names),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
