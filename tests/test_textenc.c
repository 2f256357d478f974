/* The text towers and the conditioning against the goldens (tiny SD 1.x,
 * SD 2.x and SDXL; tests/data/README.md#tiny-sd1, #tiny-sd2, #tiny-sdxl): every hidden
 * state within 5e-5 * max(1, |ref|), and A1111 emphasis checked against an
 * independent implementation of its formula. */
#include "testutil.h"

#include "textenc/textenc.h"

#define TOL 5e-5

/* Max of |got - ref| / max(1, |ref|); printed so the report can quote it. */
static double check_close(const float *got, const float *ref, size_t n, const char *what)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        worst = isnan(d) || d > worst ? (isnan(d) ? INFINITY : d) : worst;
    }
    print_message("  %-34s max err %.3g\n", what, worst);
    tu_assert_close(got, ref, n, TOL, what);
    return worst;
}

/* Golden tensor `name` (or its row block [off, off+n)) against got. */
static void check_golden(const wt_safetensors *st, const char *name, size_t off, const float *got, size_t n,
                         const char *what)
{
    size_t rn;
    float *ref = tu_f32(st, name, &rn);
    assert_true(off + n <= rn);
    check_close(got, ref + off, n, what ? what : name);
    core_free(ref);
}

/* I32 token ids [rows][77] of a cases file. */
static int32_t (*golden_ids(const wt_safetensors *st, const char *name, int *rows))[FM_CLIP_LEN]
{
    const wt_st_tensor *t = wt_st_find(st, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, FM_DT_I32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], FM_CLIP_LEN);
    *rows = (int)t->shape[0];
    int32_t (*ids)[FM_CLIP_LEN] = malloc(t->nbytes);
    memcpy(ids, t->data, t->nbytes);
    return ids;
}

/* ---- configs, from tests/data/README.md ---- */

static wt_text_config clip_config(const char *prefix, int width, int layers, int penultimate, int final_ln)
{
    wt_text_config c = {0};
    snprintf(c.prefix, sizeof c.prefix, "%s", prefix);
    c.kind = FM_TEXT_CLIP;
    c.width = width;
    c.layers = layers;
    c.heads = 2;
    c.vocab_size = 49408;
    c.max_length = 77;
    c.intermediate_size = 4 * width;
    c.act_quick_gelu = 1;
    c.pad_token = 49407;
    c.penultimate = penultimate;
    c.final_ln_on_output = final_ln;
    c.layer_norm_eps = 1e-5f;
    return c;
}

static wt_text_config openclip_config(const char *prefix, int layers, int final_ln)
{
    wt_text_config c = {0};
    snprintf(c.prefix, sizeof c.prefix, "%s", prefix);
    c.kind = FM_TEXT_OPENCLIP;
    c.width = 32;
    c.layers = layers;
    c.heads = 2;
    c.vocab_size = 49408;
    c.max_length = 77;
    c.intermediate_size = 128;
    c.act_quick_gelu = 0;
    c.pad_token = 0;
    c.projection_dim = 32;
    c.penultimate = 1;
    c.final_ln_on_output = final_ln;
    c.layer_norm_eps = 1e-5f;
    return c;
}

/* tests/data/README.md#tiny-sd1: width 8, 2 layers, last layer + final LN. */
static wt_text_config sd1_config(void)
{
    return clip_config("cond_stage_model.transformer.text_model.", 8, 2, 0, 1);
}

/* tests/data/README.md#tiny-sd2: OpenCLIP 32 wide, 3 layers, penultimate + ln_final. */
static wt_text_config sd2_config(void) { return openclip_config("cond_stage_model.model.", 3, 1); }

/* tests/data/README.md#tiny-sdxl: CLIP-L style (3 layers) and bigG style (2 layers), both
 * penultimate without a final LN; bigG gives the pooled vector. */
static wt_model_config sdxl_config(void)
{
    wt_model_config m = {0};
    m.family = FM_FAMILY_SDXL;
    m.n_text = 2;
    m.text[0] = clip_config("conditioner.embedders.0.transformer.text_model.", 32, 3, 1, 0);
    m.text[1] = openclip_config("conditioner.embedders.1.model.", 2, 0);
    m.unet.context_dim = 64;
    m.unet.adm_in_channels = 1568;
    return m;
}

static te_tower *load_tower(const wt_safetensors *st, const wt_text_config *cfg)
{
    fm_error err = {0};
    te_tower *t = te_tower_load(&st->src, cfg, &err);
    if (!t)
        fail_msg("%s", err.msg);
    return t;
}

/* Runs the tower to hidden state `layer` (with or without the final LN) and
 * compares it to the golden tensor. */
static void check_hidden(const te_tower *t, const wt_safetensors *cases, int32_t (*ids)[FM_CLIP_LEN],
                         int n, int layer, int final_ln, const char *golden)
{
    int W = te_tower_config(t)->width;
    size_t count = (size_t)n * FM_CLIP_LEN * W;
    float *h = core_alloc(sizeof(float) * count);
    fm_error err = {0};
    if (te_tower_forward(t, (const int32_t(*)[FM_CLIP_LEN])ids, n, layer, final_ln, h, NULL, &err))
        fail_msg("%s", err.msg);
    check_golden(cases, golden, 0, h, count, NULL);
    core_free(h);
}

/* ---- SD 1.x ---- */

static void test_sd1_tower(void **state)
{
    (void)state;
    wt_safetensors st, cases;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    tu_open(&cases, "tests/data/tiny-sd1-cases.safetensors");
    wt_text_config cfg = sd1_config();
    te_tower *t = load_tower(&st, &cfg);
    int n;
    int32_t (*ids)[FM_CLIP_LEN] = golden_ids(&cases, "textenc.tokens", &n);
    assert_int_equal(n, 3);

    check_hidden(t, &cases, ids, n, 0, 0, "textenc.hidden_states.0");
    check_hidden(t, &cases, ids, n, 1, 0, "textenc.hidden_states.1");
    check_hidden(t, &cases, ids, n, 2, 0, "textenc.hidden_states.2");
    check_hidden(t, &cases, ids, n, 1, 0, "textenc.penultimate");

    /* A1111 clip skip 1 = last_hidden_state, clip skip 2 = LN(hidden_states[-2]) */
    const char *golden[3] = {NULL, "textenc.last_hidden", "textenc.penultimate_ln"};
    for (int skip = 1; skip <= 2; skip++) {
        int layer, final_ln;
        fm_error err = {0};
        assert_int_equal(te_output_layer(&cfg, skip, &layer, &final_ln, &err), 0);
        assert_int_equal(layer, 3 - skip);
        assert_int_equal(final_ln, 1);
        check_hidden(t, &cases, ids, n, layer, final_ln, golden[skip]);
    }
    /* one sequence at a time gives the same as the batch */
    float h[FM_CLIP_LEN * 8];
    fm_error err = {0};
    assert_int_equal(te_tower_forward(t, (const int32_t(*)[FM_CLIP_LEN])&ids[2], 1, 2, 1, h, NULL, &err), 0);
    check_golden(&cases, "textenc.last_hidden", 2 * FM_CLIP_LEN * 8, h, FM_CLIP_LEN * 8, "last_hidden[2] alone");

    free(ids);
    te_tower_free(t);
    wt_st_close(&cases);
    wt_st_close(&st);
}

/* A one-chunk, weight-1 prompt made of golden ids. */
static te_token_chunks plain_chunks(int32_t (*ids)[FM_CLIP_LEN], float (*w)[FM_CLIP_LEN], int n)
{
    for (int c = 0; c < n; c++)
        for (int p = 0; p < FM_CLIP_LEN; p++)
            w[c][p] = 1.0f;
    return (te_token_chunks){.n_chunks = n, .ids = ids, .weights = w};
}

static void test_sd1_conditioning(void **state)
{
    (void)state;
    wt_safetensors st, cases;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    tu_open(&cases, "tests/data/tiny-sd1-cases.safetensors");
    wt_model_config m = {0};
    m.family = FM_FAMILY_SD1;
    m.n_text = 1;
    m.text[0] = sd1_config();
    m.unet.context_dim = 8;
    te_encoder enc;
    fm_error err = {0};
    if (te_encoder_load(&enc, &st.src, &m, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(enc.context_dim, 8);
    assert_int_equal(enc.pooled_dim, 0);

    int n;
    int32_t (*ids)[FM_CLIP_LEN] = golden_ids(&cases, "textenc.tokens", &n);
    float w[1][FM_CLIP_LEN];
    const size_t per = FM_CLIP_LEN * 8;
    for (int b = 0; b < n; b++)
        for (int skip = 1; skip <= 2; skip++) {
            te_token_chunks tok = plain_chunks(&ids[b], w, 1);
            te_cond c;
            assert_int_equal(te_encode(&enc, &tok, skip, NULL, &c, &err), 0);
            assert_int_equal(c.n_tokens, 77);
            assert_int_equal(c.adm_dim, 0);
            assert_null(c.y);
            char what[64];
            snprintf(what, sizeof what, "sd1 cond prompt %d clip skip %d", b, skip);
            check_golden(&cases, skip == 1 ? "textenc.last_hidden" : "textenc.penultimate_ln", b * per,
                         c.context, per, what);
            te_cond_free(&c);
        }
    /* clip skip beyond the layers is a usage error */
    te_token_chunks tok = plain_chunks(&ids[0], w, 1);
    te_cond c;
    assert_int_equal(te_encode(&enc, &tok, 3, NULL, &c, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "clip skip 3"));
    assert_null(c.context);

    free(ids);
    te_encoder_free(&enc);
    wt_st_close(&cases);
    wt_st_close(&st);
}

/* ---- SD 2.x ---- */

static void test_sd2_tower(void **state)
{
    (void)state;
    wt_safetensors st, cases;
    tu_open(&st, "tests/data/tiny-sd2.safetensors");
    tu_open(&cases, "tests/data/sd2-cases.safetensors");
    wt_text_config cfg = sd2_config();
    te_tower *t = load_tower(&st, &cfg);
    int n;
    int32_t (*ids)[FM_CLIP_LEN] = golden_ids(&cases, "textenc.tokens", &n);
    assert_int_equal(n, 2);

    check_hidden(t, &cases, ids, n, 0, 0, "textenc.embed");
    check_hidden(t, &cases, ids, n, 1, 0, "textenc.hidden.0");
    check_hidden(t, &cases, ids, n, 2, 0, "textenc.hidden.1");
    check_hidden(t, &cases, ids, n, 3, 0, "textenc.hidden.2");
    check_hidden(t, &cases, ids, n, 3, 1, "textenc.last_ln");

    int layer, final_ln;
    fm_error err = {0};
    assert_int_equal(te_output_layer(&cfg, 1, &layer, &final_ln, &err), 0);
    assert_int_equal(layer, 2);
    assert_int_equal(final_ln, 1);
    check_hidden(t, &cases, ids, n, layer, final_ln, "textenc.penultimate_ln");

    float pooled[2 * 32];
    assert_int_equal(te_tower_forward(t, (const int32_t(*)[FM_CLIP_LEN])ids, n, 0, 0, NULL, pooled, &err), 0);
    check_golden(&cases, "textenc.pooled", 0, pooled, 2 * 32, NULL);

    /* The conditioning of a plain prompt is exactly penultimate_ln. */
    wt_model_config m = {0};
    m.family = FM_FAMILY_SD2;
    m.n_text = 1;
    m.text[0] = cfg;
    m.unet.context_dim = 32;
    te_encoder enc;
    if (te_encoder_load(&enc, &st.src, &m, &err))
        fail_msg("%s", err.msg);
    float w[1][FM_CLIP_LEN];
    for (int b = 0; b < n; b++) {
        te_token_chunks tok = plain_chunks(&ids[b], w, 1);
        te_cond c;
        assert_int_equal(te_encode(&enc, &tok, 1, NULL, &c, &err), 0);
        char what[64];
        snprintf(what, sizeof what, "sd2 cond prompt %d", b);
        check_golden(&cases, "textenc.penultimate_ln", (size_t)b * 77 * 32, c.context, 77 * 32, what);
        te_cond_free(&c);
    }
    te_encoder_free(&enc);

    free(ids);
    te_tower_free(t);
    wt_st_close(&cases);
    wt_st_close(&st);
}

/* ---- SDXL ---- */

static void test_sdxl_towers(void **state)
{
    (void)state;
    wt_safetensors st, cases;
    tu_open(&st, "tests/data/tiny-sdxl.safetensors");
    tu_open(&cases, "tests/data/sdxl-cases.safetensors");
    wt_model_config m = sdxl_config();
    te_tower *t0 = load_tower(&st, &m.text[0]), *t1 = load_tower(&st, &m.text[1]);
    int n0, n1;
    int32_t (*ids0)[FM_CLIP_LEN] = golden_ids(&cases, "te0.tokens", &n0);
    int32_t (*ids1)[FM_CLIP_LEN] = golden_ids(&cases, "te1.tokens", &n1);
    assert_int_equal(n0, 2);
    assert_int_equal(n1, 2);

    char name[32];
    for (int k = 0; k <= 3; k++) {
        snprintf(name, sizeof name, "te0.hidden.%d", k);
        check_hidden(t0, &cases, ids0, n0, k, 0, name);
    }
    check_hidden(t0, &cases, ids0, n0, 3, 1, "te0.last_ln");
    int layer, final_ln;
    fm_error err = {0};
    assert_int_equal(te_output_layer(&m.text[0], 1, &layer, &final_ln, &err), 0);
    assert_int_equal(layer, 2);
    assert_int_equal(final_ln, 0);
    check_hidden(t0, &cases, ids0, n0, layer, final_ln, "te0.penultimate");

    assert_int_equal(te_output_layer(&m.text[1], 1, &layer, &final_ln, &err), 0);
    assert_int_equal(layer, 1);
    assert_int_equal(final_ln, 0);
    check_hidden(t1, &cases, ids1, n1, layer, final_ln, "te1.penultimate");
    check_hidden(t1, &cases, ids1, n1, 2, 0, "te1.last");

    /* hidden and pooled from one pass */
    float h[2 * 77 * 32], pooled[2 * 32];
    assert_int_equal(te_tower_forward(t1, (const int32_t(*)[FM_CLIP_LEN])ids1, 2, 1, 0, h, pooled, &err), 0);
    check_golden(&cases, "te1.penultimate", 0, h, 2 * 77 * 32, "te1.penultimate (with pooled)");
    check_golden(&cases, "te1.pooled", 0, pooled, 2 * 32, NULL);
    /* the CLIP-L tower has no projection */
    assert_int_equal(te_tower_forward(t0, (const int32_t(*)[FM_CLIP_LEN])ids0, 2, 2, 0, h, pooled, &err), FM_EINPUT);

    free(ids0);
    free(ids1);
    te_tower_free(t0);
    te_tower_free(t1);
    wt_st_close(&cases);
    wt_st_close(&st);
}

static void test_sdxl_conditioning(void **state)
{
    (void)state;
    wt_safetensors st, cases;
    tu_open(&st, "tests/data/tiny-sdxl.safetensors");
    tu_open(&cases, "tests/data/sdxl-cases.safetensors");
    wt_model_config m = sdxl_config();
    te_encoder enc;
    fm_error err = {0};
    if (te_encoder_load(&enc, &st.src, &m, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(enc.context_dim, 64);
    assert_int_equal(enc.pooled_dim, 32);

    int n;
    int32_t (*ids)[FM_CLIP_LEN] = golden_ids(&cases, "te0.tokens", &n); /* padded with 49407 */
    const te_size_cond square = {64, 64, 0, 0, 64, 64};

    float size_emb[FM_SIZE_EMB_TOTAL];
    te_size_embedding(size_emb, &square);
    check_golden(&cases, "cond.size_emb", 0, size_emb, FM_SIZE_EMB_TOTAL, NULL);

    float w[1][FM_CLIP_LEN];
    for (int b = 0; b < n; b++) {
        te_token_chunks tok = plain_chunks(&ids[b], w, 1);
        te_cond c;
        assert_int_equal(te_encode(&enc, &tok, 1, &square, &c, &err), 0);
        assert_int_equal(c.n_tokens, 77);
        assert_int_equal(c.context_dim, 64);
        assert_int_equal(c.adm_dim, 1568);
        char what[64];
        snprintf(what, sizeof what, "cond.context[%d]", b);
        check_golden(&cases, "cond.context", (size_t)b * 77 * 64, c.context, 77 * 64, what);
        snprintf(what, sizeof what, "cond.vector[%d]", b);
        check_golden(&cases, "cond.vector", (size_t)b * 1568, c.y, 1568, what);
        /* the OpenCLIP padding (0) in the input gives the same: each tower
         * re-pads after the first EOS */
        int n1;
        int32_t (*ids1)[FM_CLIP_LEN] = golden_ids(&cases, "te1.tokens", &n1);
        te_token_chunks tok1 = plain_chunks(&ids1[b], w, 1);
        te_cond c1;
        assert_int_equal(te_encode(&enc, &tok1, 1, &square, &c1, &err), 0);
        assert_memory_equal(c1.context, c.context, sizeof(float) * 77 * 64);
        assert_memory_equal(c1.y, c.y, sizeof(float) * 1568);
        te_cond_free(&c1);
        free(ids1);
        te_cond_free(&c);
    }

    /* non-square sizes: checks the h/w and top/left order */
    size_t ns;
    float *sizes = tu_f32(&cases, "cond_ns.sizes", &ns);
    assert_int_equal(ns, 6);
    const te_size_cond nonsq = {(int)sizes[0], (int)sizes[1], (int)sizes[2],
                                (int)sizes[3], (int)sizes[4], (int)sizes[5]};
    core_free(sizes);
    te_token_chunks tok = plain_chunks(&ids[1], w, 1); /* "a dog" */
    te_cond c;
    assert_int_equal(te_encode(&enc, &tok, 1, &nonsq, &c, &err), 0);
    check_golden(&cases, "cond_ns.vector", 0, c.y, 1568, NULL);
    te_cond_free(&c);

    /* A1111's empty negative */
    assert_int_equal(te_encode_zero(&enc, 1, &square, &c, &err), 0);
    assert_int_equal(c.n_tokens, 77);
    check_golden(&cases, "condz.context", 0, c.context, 77 * 64, NULL);
    check_golden(&cases, "condz.vector", 0, c.y, 1568, NULL);
    te_cond_free(&c);

    /* SDXL needs the sizes */
    assert_int_equal(te_encode(&enc, &tok, 1, NULL, &c, &err), FM_EINPUT);

    free(ids);
    te_encoder_free(&enc);
    wt_st_close(&cases);
    wt_st_close(&st);
}

/* ---- A1111 emphasis ---- */

/* sd_emphasis.EmphasisOriginal, written out in double: z*w per token, then
 * times mean(z) / mean(z*w). */
static void expected_emphasis(double *out, const float *z, const float *w, int dim)
{
    double m0 = 0, m1 = 0;
    size_t n = (size_t)FM_CLIP_LEN * dim;
    for (size_t i = 0; i < n; i++) {
        m0 += z[i];
        out[i] = (double)z[i] * w[i / dim];
        m1 += out[i];
    }
    for (size_t i = 0; i < n; i++)
        out[i] *= m0 / m1;
}

static void check_emphasised(const float *got, int ld, const float *z, const float *w, int dim, const char *what)
{
    double *e = malloc(sizeof(double) * FM_CLIP_LEN * dim);
    float *g = malloc(sizeof(float) * FM_CLIP_LEN * dim), *ef = malloc(sizeof(float) * FM_CLIP_LEN * dim);
    expected_emphasis(e, z, w, dim);
    for (int p = 0; p < FM_CLIP_LEN; p++)
        for (int d = 0; d < dim; d++) {
            g[p * dim + d] = got[(size_t)p * ld + d];
            ef[p * dim + d] = (float)e[p * dim + d];
        }
    check_close(g, ef, (size_t)FM_CLIP_LEN * dim, what);
    free(e);
    free(g);
    free(ef);
}

static void some_weights(float w[FM_CLIP_LEN], int seed)
{
    for (int p = 0; p < FM_CLIP_LEN; p++)
        w[p] = 1.0f;
    w[1] = 1.1f;                      /* (red) */
    w[2 + seed] = 1.21f;              /* ((fox)) */
    w[4] = seed ? 1.5f : 0.9090909f;  /* (x:1.5) or [x] */
    w[5] = 0.5f;
}

static void test_emphasis_sd1(void **state)
{
    (void)state;
    wt_safetensors st, cases;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    tu_open(&cases, "tests/data/tiny-sd1-cases.safetensors");
    wt_model_config m = {0};
    m.family = FM_FAMILY_SD1;
    m.n_text = 1;
    m.text[0] = sd1_config();
    te_encoder enc;
    fm_error err = {0};
    if (te_encoder_load(&enc, &st.src, &m, &err))
        fail_msg("%s", err.msg);
    int n;
    int32_t (*ids)[FM_CLIP_LEN] = golden_ids(&cases, "textenc.tokens", &n);
    float *golden = tu_f32(&cases, "textenc.last_hidden", NULL);
    const size_t per = FM_CLIP_LEN * 8;

    /* weight 1.0 everywhere is exactly the unweighted output */
    float (*w)[FM_CLIP_LEN] = malloc(sizeof(*w) * 2);
    float *plain = core_alloc(sizeof(float) * per);
    assert_int_equal(te_tower_forward(enc.towers[0], (const int32_t(*)[FM_CLIP_LEN])&ids[2], 1, 2, 1, plain,
                                           NULL, &err), 0);
    te_token_chunks tok = plain_chunks(&ids[2], w, 1);
    te_cond c;
    assert_int_equal(te_encode(&enc, &tok, 1, NULL, &c, &err), 0);
    assert_memory_equal(c.context, plain, sizeof(float) * per);
    te_cond_free(&c);
    tok.weights = NULL; /* no weights at all: the same */
    assert_int_equal(te_encode(&enc, &tok, 1, NULL, &c, &err), 0);
    assert_memory_equal(c.context, plain, sizeof(float) * per);
    te_cond_free(&c);

    /* two chunks ("a red fox in snow" | the astronaut), weighted: the mean
     * is restored per chunk, the chunks follow each other (154 tokens) */
    int32_t two[2][FM_CLIP_LEN];
    memcpy(two[0], ids[0], sizeof two[0]);
    memcpy(two[1], ids[2], sizeof two[1]);
    some_weights(w[0], 0);
    some_weights(w[1], 1);
    tok = (te_token_chunks){.n_chunks = 2, .ids = two, .weights = w};
    assert_int_equal(te_encode(&enc, &tok, 1, NULL, &c, &err), 0);
    assert_int_equal(c.n_tokens, 154);
    check_emphasised(c.context, 8, golden, w[0], 8, "sd1 emphasis chunk 0 vs golden");
    check_emphasised(c.context + per, 8, golden + 2 * per, w[1], 8, "sd1 emphasis chunk 1 vs golden");
    /* the same formula on our own unweighted output, tightly */
    double worst = 0;
    double *e = malloc(sizeof(double) * per);
    expected_emphasis(e, plain, w[1], 8);
    for (size_t i = 0; i < per; i++)
        worst = fmax(worst, fabs(c.context[per + i] - e[i]) / fmax(1.0, fabs(e[i])));
    print_message("  %-34s max err %.3g\n", "sd1 emphasis vs own unweighted", worst);
    assert_true(worst < 1e-6);
    /* and it really changed something */
    assert_true(fabs(c.context[per + 2 * 8] - plain[2 * 8]) > 1e-3);
    te_cond_free(&c);

    free(e);
    free(w);
    core_free(plain);
    core_free(golden);
    free(ids);
    te_encoder_free(&enc);
    wt_st_close(&cases);
    wt_st_close(&st);
}

/* SDXL: A1111 applies the emphasis to each tower's output separately. */
static void test_emphasis_sdxl(void **state)
{
    (void)state;
    wt_safetensors st, cases;
    tu_open(&st, "tests/data/tiny-sdxl.safetensors");
    tu_open(&cases, "tests/data/sdxl-cases.safetensors");
    wt_model_config m = sdxl_config();
    te_encoder enc;
    fm_error err = {0};
    if (te_encoder_load(&enc, &st.src, &m, &err))
        fail_msg("%s", err.msg);
    int n;
    int32_t (*ids)[FM_CLIP_LEN] = golden_ids(&cases, "te0.tokens", &n);
    float *z0 = tu_f32(&cases, "te0.penultimate", NULL), *z1 = tu_f32(&cases, "te1.penultimate", NULL);
    float w[1][FM_CLIP_LEN];
    some_weights(w[0], 0);
    te_token_chunks tok = {.n_chunks = 1, .ids = ids, .weights = w};
    const te_size_cond square = {64, 64, 0, 0, 64, 64};
    te_cond c;
    assert_int_equal(te_encode(&enc, &tok, 1, &square, &c, &err), 0);
    check_emphasised(c.context, 64, z0, w[0], 32, "sdxl emphasis CLIP-L half");
    check_emphasised(c.context + 32, 64, z1, w[0], 32, "sdxl emphasis bigG half");
    /* the pooled vector is not weighted */
    check_golden(&cases, "cond.vector", 0, c.y, 1568, "sdxl weighted: cond.vector");
    te_cond_free(&c);
    core_free(z0);
    core_free(z1);
    free(ids);
    te_encoder_free(&enc);
    wt_st_close(&cases);
    wt_st_close(&st);
}

/* ---- errors ---- */

static void test_load_errors(void **state)
{
    (void)state;
    wt_safetensors st;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    fm_error err = {0};
    wt_text_config cfg = sd1_config();
    cfg.width = 16;
    assert_null(te_tower_load(&st.src, &cfg, &err));
    assert_int_equal(err.code, FM_EINPUT);
    assert_non_null(strstr(err.msg, "token_embedding.weight: shape [49408,8], expected [49408,16]"));

    err = (fm_error){0};
    cfg = sd1_config();
    cfg.layers = 3;
    assert_null(te_tower_load(&st.src, &cfg, &err));
    assert_non_null(strstr(err.msg, "encoder.layers.2.layer_norm1.weight: missing"));

    err = (fm_error){0};
    cfg = sd1_config();
    cfg.kind = FM_TEXT_OPENCLIP; /* open_clip names in an HF file */
    assert_null(te_tower_load(&st.src, &cfg, &err));
    assert_non_null(strstr(err.msg, "cond_stage_model.transformer.text_model.token_embedding.weight: missing"));

    err = (fm_error){0};
    cfg = sd1_config();
    cfg.heads = 3;
    assert_null(te_tower_load(&st.src, &cfg, &err));
    assert_non_null(strstr(err.msg, "heads"));

    /* ids outside the vocabulary */
    err = (fm_error){0};
    cfg = sd1_config();
    te_tower *t = load_tower(&st, &cfg);
    int32_t ids[1][FM_CLIP_LEN] = {{49406, 49408}};
    float h[FM_CLIP_LEN * 8];
    assert_int_equal(te_tower_forward(t, (const int32_t(*)[FM_CLIP_LEN])ids, 1, 2, 1, h, NULL, &err), FM_EINPUT);
    assert_non_null(strstr(err.msg, "token id 49408"));
    te_tower_free(t);

    /* the text side must fit the U-Net */
    err = (fm_error){0};
    wt_model_config m = {0};
    m.family = FM_FAMILY_SD1;
    m.n_text = 1;
    m.text[0] = sd1_config();
    m.unet.context_dim = 768;
    te_encoder enc;
    assert_int_equal(te_encoder_load(&enc, &st.src, &m, &err), FM_EINPUT);
    assert_non_null(strstr(err.msg, "context of 8 values, the U-Net expects 768"));
    wt_st_close(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sd1_tower),
        cmocka_unit_test(test_sd1_conditioning),
        cmocka_unit_test(test_sd2_tower),
        cmocka_unit_test(test_sdxl_towers),
        cmocka_unit_test(test_sdxl_conditioning),
        cmocka_unit_test(test_emphasis_sd1),
        cmocka_unit_test(test_emphasis_sdxl),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
