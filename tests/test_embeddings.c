/* Textual-inversion embeddings (issue 16 item 4) through the fmimage command
 * and the library: an embedding holding the token-embedding rows of
 * "blurry", used as the whole negative prompt, must give the golden
 * "negative blurry" images (made with the original code, tests/data/README.md)
 * within 1 LSB on >= 99% of the values; the infotext and manifest carry A1111's
 * "TI hashes"; hostile embedding files are one line, exit 1, no image. */
#include "cliutil.h"

#include "core/sha256.h"
#include "diffusion/detect.h"
#include "textenc/embedding.h"
#include "textenc/prompt.h"
#include "textenc/textenc.h"
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

/* The conditioning with embeddings against A1111's own tokenize_line,
 * EmbeddingDatabase and EmbeddingsWithFixes over the tiny SD 1.x text
 * encoder (tools/ref/embed_refs.py, tests/data/README.md#embeddings):
 * 1 vector, 12, 40 across the chunk boundary, 12 that do not fit, comma
 * back-tracking past an embedding (A1111 leaves the fix behind), BREAK, weights, a three-token name, upper case; and the
 * "TI hashes" each case gives. */
static void test_conditioning_vs_a1111(void **state)
{
    (void)state;
    wt_safetensors st, ref;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    tu_open(&ref, "tests/data/embeddings-ref.safetensors");
    fm_error err = {0};
    wt_model_config cfg;
    if (df_detect_config(&st.src, &cfg, &err)) fail_msg("%s", err.msg);
    te_encoder enc;
    if (te_encoder_load(&enc, &st.src, &cfg, &err)) fail_msg("%s", err.msg);
    te_tokenizer *tok = te_tokenizer_new(&err);
    assert_non_null(tok);
    static const char *const cases[] = {"one", "many", "case", "weighted", "boundary", "backtrack", "nofit", "break"};
    double worst = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s.prompt", cases[k]);
        const char *prompt = wt_st_meta_get(&ref, key);
        assert_non_null(prompt);
        te_embeddings db;
        int width[2] = {8, 0};
        assert_int_equal(te_embeddings_open(&db, "tests/data/embeddings", tok, 1, width, &err), 0);
        assert_int_equal(db.n, 4);
        te_token_chunks tc;
        if (te_prompt_to_chunks_emb(tok, prompt, FM_CLIP_EOS, &db, &tc, &err)) fail_msg("%s", err.msg);
        te_cond c;
        if (te_encode(&enc, &tc, 1, NULL, &c, &err)) fail_msg("%s", err.msg);
        snprintf(key, sizeof key, "%s.cond", cases[k]);
        size_t n;
        float *want = tu_f32(&ref, key, &n);
        assert_int_equal((size_t)c.n_tokens * 8, n);
        double d = 0;
        for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)c.context[i] - want[i]));
        printf("  %-10s %d chunks, %d fixes: max |diff| %.3g\n", cases[k], tc.n_chunks, tc.n_fixes, d);
        assert_true(d <= 5e-5);
        worst = fmax(worst, d);
        if (!strcmp(cases[k], "backtrack")) { /* the fix stayed behind in chunk 0, at the comma's next slot */
            assert_int_equal(tc.fixes[0].chunk, 0);
            assert_int_equal(tc.fixes[0].offset, 57);
            assert_int_equal(tc.ids[1][1], 0);
        }
        core_free(want);
        te_cond_free(&c);
        te_token_chunks_free(&tc);
        te_embeddings_free(&db);
    }
    printf("  worst %.3g (tolerance 5e-5)\n", worst);
    te_tokenizer_free(tok);
    te_encoder_free(&enc);
    wt_st_close(&ref);
    wt_st_close(&st);
}

/* The "TI hashes" fm_infotext writes equal A1111's for each case (the
 * prompt as positive, a second embedding in the negative). */
static void test_ti_hashes_vs_a1111(void **state)
{
    (void)state;
    wt_safetensors ref;
    tu_open(&ref, "tests/data/embeddings-ref.safetensors");
    fm_error err = {0};
    fm_model *m = fm_model_load("tests/data/tiny-sd1.safetensors", &err);
    if (!m) fail_msg("%s", err.msg);
    static const char *const cases[] = {"one", "many", "case", "weighted", "boundary", "backtrack", "nofit", "break"};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s.prompt", cases[k]);
        fm_params p;
        fm_params_default(m, &p);
        p.prompt = wt_st_meta_get(&ref, key);
        p.embeddings_dir = "tests/data/embeddings";
        snprintf(key, sizeof key, "%s.ti_hashes", cases[k]);
        char *h = fm_ti_hashes(m, &p, &err);
        if (!h) fail_msg("%s", err.msg);
        assert_string_equal(h, wt_st_meta_get(&ref, key));
        free(h);
    }
    /* negative after positive, as A1111 lists them (it encodes the negative first) */
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "tiv";
    p.negative = "big, tiv";
    p.embeddings_dir = "tests/data/embeddings";
    char *h = fm_ti_hashes(m, &p, &err);
    assert_non_null(h);
    assert_string_equal(h, "tiv: e98b5f0472c9, big: 43b0c027d124, tiv: e98b5f0472c9");
    free(h);
    fm_model_free(m);
    wt_st_close(&ref);
}

/* .pt embeddings go through the safe pickle reader: A1111's own save format
 * (string_to_param.*) gives tiv's vectors, and so does a ParameterDict (old
 * A1111 saves; A1111 reads its _parameters); a pickle that runs code is
 * refused in one line. */
static void test_pt_embeddings(void **state)
{
    (void)state;
    fm_error err = {0};
    te_tokenizer *tok = te_tokenizer_new(&err);
    te_embeddings db;
    int width[2] = {8, 0};
    assert_int_equal(te_embeddings_open(&db, "tests/data/embeddings-pt", tok, 1, width, &err), 0);
    assert_int_equal(db.n, 2);
    int32_t ids[8];
    int n = te_tokenizer_encode(tok, "a tiv_pt", ids, 8, &err), len;
    te_embedding *e = te_embeddings_match(&db, ids, n, 1, &len, &err);
    if (!e) fail_msg("%s", err.msg);
    wt_safetensors st;
    tu_open(&st, "tests/data/embeddings/tiv.safetensors");
    float *want = tu_f32(&st, "emb_params", NULL);
    assert_int_equal(e->n_vectors, 1);
    assert_memory_equal(e->vec[0], want, 8 * sizeof(float));
    core_free(want);
    wt_st_close(&st);
    /* A1111 reads a ParameterDict's _parameters (its torch 1.12.1 fix); so does the safe reader */
    n = te_tokenizer_encode(tok, "module", ids, 8, &err);
    te_embedding *m = te_embeddings_match(&db, ids, n, 0, &len, &err);
    if (!m) fail_msg("%s", err.msg);
    assert_memory_equal(m->vec[0], e->vec[0], 8 * sizeof(float));
    te_embeddings_free(&db);
    /* a pickle that calls os.system: refused by the reader, one line */
    char edir[300], cmd[700];
    snprintf(edir, sizeof edir, "%s/evil", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp tests/data/pickles/evil-os-system.ckpt '%s/evil.pt'", edir, edir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(te_embeddings_open(&db, edir, tok, 1, width, &err), 0);
    n = te_tokenizer_encode(tok, "evil", ids, 8, &err);
    assert_null(te_embeddings_match(&db, ids, n, 0, &len, &err));
    assert_int_equal(len, -1);
    printf("  evil.pt: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "embedding \"evil\": "));
    assert_non_null(strstr(err.msg, "refused"));
    assert_null(strchr(err.msg, '\n'));
    te_embeddings_free(&db);
    te_tokenizer_free(tok);
    /* one file on its own: what the fuzz harness drives */
    te_embedding one = {.name = "big", .path = "tests/data/embeddings/big.safetensors"};
    assert_int_equal(te_embedding_read(&one, 1, width, &err), 0);
    assert_int_equal(one.n_vectors, 40);
    assert_memory_equal(one.sha256, "43b0c027d124", 12); /* A1111's shorthash (embeddings-ref "boundary") */
    free(one.vec[0]);
}

/* SDXL: one embedding's clip_l vectors in CLIP-L, its clip_g vectors in
 * bigG (A1111's EmbeddingsWithFixes keys), against A1111's
 * FrozenCLIPEmbedderForSDXLWithCustomWords and
 * FrozenOpenCLIPEmbedder2WithCustomWords over the tiny SDXL towers
 * (embeddings-sdxl-ref.safetensors): the context and the pooled vector. */
static void test_sdxl_conditioning_vs_a1111(void **state)
{
    (void)state;
    wt_safetensors st, ref;
    tu_open(&st, "tests/data/tiny-sdxl.safetensors");
    tu_open(&ref, "tests/data/embeddings-sdxl-ref.safetensors");
    fm_error err = {0};
    wt_model_config cfg;
    if (df_detect_config(&st.src, &cfg, &err)) fail_msg("%s", err.msg);
    te_encoder enc;
    if (te_encoder_load(&enc, &st.src, &cfg, &err)) fail_msg("%s", err.msg);
    te_tokenizer *tok = te_tokenizer_new(&err);
    static const char *const cases[] = {"xl_one", "xl_many", "xl_boundary"};
    te_size_cond sizes = {64, 64, 0, 0, 64, 64};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s.prompt", cases[k]);
        te_embeddings db;
        int width[2] = {32, 32};
        assert_int_equal(te_embeddings_open(&db, "tests/data/embeddings-sdxl", tok, 2, width, &err), 0);
        te_token_chunks tc;
        if (te_prompt_to_chunks_emb(tok, wt_st_meta_get(&ref, key), FM_CLIP_EOS, &db, &tc, &err)) fail_msg("%s", err.msg);
        te_cond c;
        if (te_encode(&enc, &tc, 1, &sizes, &c, &err)) fail_msg("%s", err.msg);
        size_t n, np;
        snprintf(key, sizeof key, "%s.cond", cases[k]);
        float *want = tu_f32(&ref, key, &n);
        snprintf(key, sizeof key, "%s.pooled", cases[k]);
        float *pooled = tu_f32(&ref, key, &np);
        assert_int_equal((size_t)c.n_tokens * 64, n);
        double d = 0, dp = 0;
        for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)c.context[i] - want[i]));
        for (size_t i = 0; i < np; i++) dp = fmax(dp, fabs((double)c.y[i] - pooled[i]));
        printf("  %-11s %d chunks: context max |diff| %.3g, pooled %.3g\n", cases[k], tc.n_chunks, d, dp);
        assert_true(d <= 5e-5 && dp <= 5e-5);
        core_free(want);
        core_free(pooled);
        te_cond_free(&c);
        te_token_chunks_free(&tc);
        te_embeddings_free(&db);
    }
    te_tokenizer_free(tok);
    te_encoder_free(&enc);
    wt_st_close(&ref);
    wt_st_close(&st);
}

int main(void)
{
    cu_tempdir(dir, sizeof dir, "embeddings");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conditioning_vs_a1111),
        cmocka_unit_test(test_ti_hashes_vs_a1111),
        cmocka_unit_test(test_sdxl_conditioning_vs_a1111),
        cmocka_unit_test(test_sd1_negative_embedding),
        cmocka_unit_test(test_sdxl_negative_embedding),
        cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_pt_embeddings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
