/* Textual-inversion embeddings (issue 16 item 4) through the fmimage command
 * and the library: an embedding holding the token-embedding rows of
 * "blurry", used as the whole negative prompt, must give the golden
 * "negative blurry" images (made with the original code, tests/data/README.md)
 * within 1 LSB on >= 99% of the values; the infotext and manifest carry A1111's
 * "TI hashes"; hostile embedding files are one line, exit 1, no image. */
#include "cliutil.h"

#include "core/sha256.h"
#include "textenc/tokenizer.h"

static char dir[256];

/* The rows of the checkpoint's token embedding for the tokens of word. */
static float *token_rows(const char *ckpt, const char *tensor, const char *word, int *n, int *width)
{
    fm_error err = {0};
    te_tokenizer *tok = te_tokenizer_new(&err);
    assert_non_null(tok);
    int32_t ids[16];
    *n = te_tokenizer_encode(tok, word, ids, 16, &err);
    assert_true(*n >= 1 && *n <= 16);
    te_tokenizer_free(tok);
    wt_safetensors st;
    tu_open(&st, ckpt);
    const wt_st_tensor *t = wt_st_find(&st, tensor);
    assert_non_null(t);
    size_t total;
    float *all = tu_f32(&st, tensor, &total);
    *width = (int)t->shape[1];
    float *v = malloc(sizeof *v * (size_t)*n * *width);
    for (int i = 0; i < *n; i++) memcpy(v + (size_t)i * *width, all + (size_t)ids[i] * *width, sizeof *v * *width);
    core_free(all);
    wt_st_close(&st);
    return v;
}

static void write_emb(const char *path, const tl_st_entry *e, int n)
{
    fm_error err = {0};
    if (tl_st_write(path, e, n, NULL, 0, &err)) fail_msg("%s", err.msg);
}

static void sha12(const char *path, char out[13])
{
    size_t len = 0;
    uint8_t *b = cu_slurp(path, &len);
    assert_non_null(b);
    char hex[65];
    core_sha256_hex(b, len, hex);
    free(b);
    memcpy(out, hex, 12);
    out[12] = 0;
}

static void expect_golden(const char *const *args, const char *out, const char *golden)
{
    char err[4096];
    int code = cu_run(args, err, sizeof err);
    if (code) fail_msg("exit %d: %s", code, err);
    double share = cu_png_within_1(out, golden);
    printf("  %s vs %s: %.4f%% of values within 1 LSB\n", out, golden, share * 100);
    assert_true(share >= 0.99);
}

static void test_sd1_negative_embedding(void **state)
{
    (void)state;
    char edir[300], path[400], out[300];
    snprintf(edir, sizeof edir, "%s/sd1emb", dir);
    mkdir(edir, 0777);
    snprintf(path, sizeof path, "%s/MyNeg.safetensors", edir);
    int n, w;
    float *v = token_rows("tests/data/tiny-sd1.safetensors",
                          "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "blurry", &n, &w);
    tl_st_entry e[] = {{"emb_params", FM_DT_F32, 2, {n, w}, v}};
    write_emb(path, e, 1);
    free(v);
    snprintf(out, sizeof out, "%s/sd1.png", dir);
    /* the name matches case-insensitively: A1111 compares tokens */
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox in snow", "-n", "myneg",
                          "--embeddings-dir", edir, "--seed", "7", "-W", "64", "-H", "64", "--sampler",
                          "DPM++ 2M Karras", "--steps", "8", "--cfg", "5", "-q", "--precision", "fp32", "-o", out, NULL};
    expect_golden(args, out, "tests/data/e2e_dpmpp2m_karras.png");
    char *params = cu_png_parameters(out), want[200], h[13];
    sha12(path, h);
    snprintf(want, sizeof want, ", TI hashes: \"MyNeg: %s\", Version: ", h);
    assert_non_null(params);
    if (!strstr(params, want)) fail_msg("%s\nlacks %s", params, want);
    free(params);
}

static void test_sdxl_negative_embedding(void **state)
{
    (void)state;
    char edir[300], path[400], out[300];
    snprintf(edir, sizeof edir, "%s/sdxlemb", dir);
    mkdir(edir, 0777);
    snprintf(path, sizeof path, "%s/neg.safetensors", edir);
    int n, wl, wg;
    float *l = token_rows("tests/data/tiny-sdxl.safetensors",
                          "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", "blurry",
                          &n, &wl);
    float *g = token_rows("tests/data/tiny-sdxl.safetensors", "conditioner.embedders.1.model.token_embedding.weight",
                          "blurry", &n, &wg);
    tl_st_entry e[] = {{"clip_g", FM_DT_F32, 2, {n, wg}, g}, {"clip_l", FM_DT_F32, 2, {n, wl}, l}};
    write_emb(path, e, 2);
    free(l);
    free(g);
    snprintf(out, sizeof out, "%s/sdxl.png", dir);
    const char *args[] = {"-m", "tests/data/tiny-sdxl.safetensors", "a red fox in snow", "-n", "neg",
                          "--embeddings-dir", edir, "--seed", "42", "-W", "64", "-H", "64", "--sampler", "euler",
                          "--scheduler", "normal", "--steps", "6", "--cfg", "7.5", "-q", "--precision", "fp32", "-o",
                          out, NULL};
    expect_golden(args, out, "tests/data/sdxl-e2e.png");
}

/* One line, exit 1, no image, for each bad file the prompt names. */
static void expect_refused(const char *name, const tl_st_entry *e, int n, const char *model, const char *why)
{
    char edir[300], path[400], out[400], err[4096];
    snprintf(edir, sizeof edir, "%s/bad-%s", dir, name);
    mkdir(edir, 0777);
    snprintf(path, sizeof path, "%s/%s.safetensors", edir, name);
    write_emb(path, e, n);
    snprintf(out, sizeof out, "%s/bad-%s.png", dir, name);
    const char *args[] = {"-m", model, "a fox", "-n", name, "--embeddings-dir", edir, "--steps", "1",
                          "-W", "64", "-H", "64", "-q", "-o", out, NULL};
    int code = cu_run(args, err, sizeof err);
    printf("  %s: exit %d: %s", name, code, err);
    assert_int_equal(code, 1);
    assert_non_null(strstr(err, why));
    assert_non_null(strstr(err, "fmimage: embedding \""));
    assert_ptr_equal(strchr(err, '\n'), err + strlen(err) - 1); /* one line */
    assert_false(cu_exists(out));
}

static void test_hostile_files(void **state)
{
    (void)state;
    static float v16[2 * 16], v8[3 * 8], nanv[8];
    for (int i = 0; i < 8; i++) nanv[i] = i == 5 ? NAN : 1;
    const char *sd1 = "tests/data/tiny-sd1.safetensors";
    expect_refused("wide", (tl_st_entry[]){{"emb_params", FM_DT_F32, 2, {2, 16}, v16}}, 1, sd1,
                   "vector width 16, the model's text encoder takes 8");
    expect_refused("empty", (tl_st_entry[]){{"emb_params", FM_DT_F32, 2, {0, 8}, v8}}, 1, sd1, "no vectors");
    expect_refused("nan", (tl_st_entry[]){{"emb_params", FM_DT_F32, 2, {1, 8}, nanv}}, 1, sd1, "NaN");
    expect_refused("xl", (tl_st_entry[]){{"clip_g", FM_DT_F32, 2, {1, 16}, v16}, {"clip_l", FM_DT_F32, 2, {3, 8}, v8}},
                   2, sd1, "clip_l has 3 vectors, clip_g 1");
    expect_refused("xl1", (tl_st_entry[]){{"clip_g", FM_DT_F32, 2, {1, 16}, v16}, {"clip_l", FM_DT_F32, 2, {1, 8}, v8}},
                   2, sd1, "an SDXL embedding (clip_l + clip_g), the model has one text encoder");
    expect_refused("two", (tl_st_entry[]){{"a", FM_DT_F32, 2, {1, 8}, v8}, {"b", FM_DT_F32, 2, {1, 8}, v8}}, 2, sd1,
                   "multiple terms");
    expect_refused("sd1onxl", (tl_st_entry[]){{"emb_params", FM_DT_F32, 2, {3, 8}, v8}}, 1,
                   "tests/data/tiny-sdxl.safetensors", "clip_l + clip_g");
}

int main(void)
{
    cu_tempdir(dir, sizeof dir, "embeddings");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sd1_negative_embedding),
        cmocka_unit_test(test_sdxl_negative_embedding),
        cmocka_unit_test(test_hostile_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
