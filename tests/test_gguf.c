/* The GGUF reader (weights/gguf.h) and the quantised types (core/quant.c):
 * files made by the gguf PyPI package (tools/ref/gguf_refs.py), dequantised
 * bit for bit as its numpy code (written from ggml's block definitions)
 * does, sd.cpp's tensor names mapped back to ldm's, and hostile files
 * refused with one line. */
#include "testutil.h"

#include "kernels/kernels.h"
#include "weights/binder.h"
#include "weights/gguf.h"
#include "weights/quantise.h"

static const char *QUANTS = "tests/data/gguf-quants.gguf";
static const char *EXPECTED = "tests/data/gguf-quants-expected.safetensors";

static const core_dtype all_quant[] = {FM_DT_Q4_0, FM_DT_Q4_1, FM_DT_Q5_0, FM_DT_Q5_1, FM_DT_Q8_0,
                                       FM_DT_Q2_K, FM_DT_Q3_K, FM_DT_Q4_K, FM_DT_Q5_K, FM_DT_Q6_K};
static const core_dtype simple_quant[] = {FM_DT_Q4_0, FM_DT_Q4_1, FM_DT_Q5_0, FM_DT_Q5_1, FM_DT_Q8_0};

static wt_source *open_ok(const char *path)
{
    fm_error err = {0};
    wt_source *s = wt_open(path, &err);
    if (!s) fail_msg("%s", err.msg);
    return s;
}

static void test_header_and_metadata(void **state)
{
    (void)state;
    wt_source *s = open_ok(QUANTS);
    assert_int_equal(wt_count(s), 20);
    static const char *const kv[][2] = {
        {"general.alignment", "64"}, {"general.architecture", "fmimage-test"},
        {"general.name", "fmimage gguf reader test"}, {"test.u8", "200"}, {"test.i8", "-100"},
        {"test.u16", "60000"}, {"test.i16", "-30000"}, {"test.u32", "4000000000"},
        {"test.i32", "-2000000000"}, {"test.f32", "0.100000001"}, {"test.bool", "true"},
        {"test.u64", "18000000000000000000"}, {"test.i64", "-9000000000000000000"},
        {"test.f64", "0.10000000000000001"}, {"test.text", "x = 1; y = \"two\""},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        const char *v = wt_meta(s, kv[i][0]);
        if (!v || strcmp(v, kv[i][1])) fail_msg("%s = %s, expected %s", kv[i][0], v ? v : "(absent)", kv[i][1]);
    }
    /* arrays (nested too) are read past, not returned */
    assert_null(wt_meta(s, "test.array_i32"));
    assert_null(wt_meta(s, "test.array_nested"));
    assert_null(wt_meta(s, "test.absent"));
    /* ne is stored fastest first: shapes come back in PyTorch order */
    const wt_tensor *t = wt_find(s, "conv.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, FM_DT_F16);
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[0], 5);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->shape[3], 3);
    assert_int_equal((uintptr_t)t->data % 64, 0); /* mapped pages + aligned offsets */
    t = wt_find(s, "r.Q4_K");
    assert_non_null(t);
    assert_int_equal(t->dtype, FM_DT_Q4_K);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], 512);
    assert_int_equal(t->nbytes, 3 * 2 * 144);
    for (int i = 1; i < wt_count(s); i++) assert_true(strcmp(wt_at(s, i - 1)->name, wt_at(s, i)->name) < 0);
    wt_close(s);
}

/* Every tensor converted to float32 equals numpy's dequantisation bitwise. */
static void test_dequant_bit_exact(void **state)
{
    (void)state;
    wt_source *s = open_ok(QUANTS);
    wt_safetensors ex;
    tu_open(&ex, EXPECTED);
    int checked = 0;
    for (int i = 0; i < ex.n_tensors; i++) {
        const wt_tensor *e = &ex.tensors[i];
        if (!strncmp(e->name, "src.", 4)) continue;
        const wt_tensor *t = wt_find(s, e->name);
        if (!t) fail_msg("%s: missing from the GGUF", e->name);
        size_t n = (size_t)wt_numel(t);
        assert_int_equal(n, (size_t)wt_numel(e));
        float *got = malloc(n * sizeof *got);
        wt_convert_f32(got, t);
        if (memcmp(got, e->data, n * sizeof(float))) {
            size_t k = 0;
            while (!memcmp(got + k, (const float *)e->data + k, 4)) k++;
            fail_msg("%s (%s): element %zu is %.9g, numpy %.9g", e->name, core_dtype_name(t->dtype), k, got[k],
                     ((const float *)e->data)[k]);
        }
        free(got);
        checked++;
    }
    assert_int_equal(checked, 3 + 5 + 10 + 2);
    wt_st_close(&ex);
    wt_close(s);
}

/* core_quantize makes the bytes numpy's quantisers made (ggml's reference
 * quantize_row_*_ref), the all-zero block included. */
static void test_quantize_bit_exact(void **state)
{
    (void)state;
    wt_source *s = open_ok(QUANTS);
    wt_safetensors ex;
    tu_open(&ex, EXPECTED);
    for (size_t i = 0; i < sizeof simple_quant / sizeof simple_quant[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "src.%s", core_dtype_name(simple_quant[i]));
        const wt_tensor *src = wt_st_find(&ex, name);
        snprintf(name, sizeof name, "q.%s", core_dtype_name(simple_quant[i]));
        const wt_tensor *q = wt_find(s, name);
        assert_non_null(src);
        assert_non_null(q);
        uint8_t *mine = malloc(q->nbytes);
        assert_int_equal(core_quantize(mine, src->data, simple_quant[i], (size_t)wt_numel(src)), 0);
        if (memcmp(mine, q->data, q->nbytes)) fail_msg("%s: quantised bytes differ from numpy's", name);
        free(mine);
    }
    wt_st_close(&ex);
    wt_close(s);
}

/* The block arithmetic and names of every type. */
static void test_dtype_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof all_quant / sizeof all_quant[0]; i++) {
        core_dtype t = all_quant[i];
        assert_true(core_dtype_is_quant(t));
        assert_int_equal(core_dtype_size(t), 0);
        assert_int_equal(core_dtype_from_name(core_dtype_name(t)), (int)t);
        assert_true(wt_is_float(t));
        assert_int_equal(core_dtype_bytes(t, 2 * (size_t)core_dtype_block(t)), 2 * core_dtype_block_bytes(t));
        const char *why;
        assert_int_equal(wt_gguf_dtype((uint32_t)wt_gguf_type_of(t), &why), (int)t);
    }
    assert_int_equal(core_dtype_from_name("q4_k"), FM_DT_Q4_K);
    assert_int_equal(core_dtype_from_name("bf16"), FM_DT_BF16);
    assert_int_equal(core_dtype_from_name("q4_k_m"), -1);
    assert_int_equal(core_dtype_block(FM_DT_F16), 1);
    assert_int_equal(core_dtype_bytes(FM_DT_F16, 10), 20);
}

/* A quantised matrix in the kernels: kn_linear (packed per tile, fp32 and
 * bf16 modes) and the conv's implicit GEMM against the reference loops on
 * the same view, and the row readers against whole dequantisation. */
static void test_quant_kernels(void **state)
{
    (void)state;
    wt_source *s = open_ok(QUANTS);
    wt_safetensors ex;
    tu_open(&ex, EXPECTED);
    for (size_t i = 0; i < sizeof all_quant / sizeof all_quant[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "r.%s", core_dtype_name(all_quant[i]));
        const wt_tensor *t = wt_find(s, name);
        const float *deq = wt_st_find(&ex, name)->data;
        kn_mat m = {.data = t->data, .dtype = t->dtype, .rows = 3, .cols = 512};
        float row[512], part[100];
        kn_mat_row(row, &m, 2);
        assert_memory_equal(row, deq + 1024, sizeof row);
        kn_mat_row_range(part, &m, 1, 250, 100); /* cuts blocks at both ends */
        assert_memory_equal(part, deq + 512 + 250, sizeof part);
        int n = 7;
        float x[7 * 512], y[7 * 3], yr[7 * 3];
        tu_fill_random(x, sizeof x / sizeof x[0], 5 + i);
        for (int prec = 0; prec < 2; prec++) {
            kn_mat_pack(&m, prec ? FM_PREC_BF16 : FM_PREC_FP32);
            kn_linear(y, x, n, &m, NULL);
            kn_linear_ref(yr, x, n, &m, NULL);
            double scale = 0;
            for (int k = 0; k < n * 3; k++) scale = fmax(scale, fabs(yr[k]));
            /* Q8_0, Q4_K, Q5_K, Q6_K: int8 products on activations quantised
             * per block (1/254 of each block's max per value): within 1% of
             * the float result */
            double tol = kn_q8_applies(&m) ? 1e-2 : prec && kn_has_bf16() ? 2e-2 : 1e-5;
            tu_assert_close(y, yr, (size_t)n * 3, tol * scale, name);
            if (kn_q8_applies(&m)) { /* and bit for bit the plain loop of that arithmetic, on every path */
                float yq[7 * 3];
                kn_q8_linear_ref(yq, x, n, &m, NULL);
                assert_memory_equal(y, yq, sizeof yq);
                static const char *const paths[] = {"scalar", "avx2", "avx-vnni", "avx512-vnni"};
                for (int p = 0; p < 4; p++) {
                    float yp[7 * 3];
                    if (kn_q8_linear_path(paths[p], yp, x, n, &m, NULL)) continue; /* not on this CPU */
                    if (memcmp(yp, yq, sizeof yq)) fail_msg("%s path %s differs from the plain loop", name, paths[p]);
                }
            }
        }
        /* a 1x1 conv and a 3x3 conv over the same blocks: 3 x [512] = [3][512][1][1] */
        if (kn_q8_applies(&m)) print_message("  %s kn_linear path here: %s\n", name, kn_q8_path_for(t->dtype));
        kn_conv c = {.w = m, .cin = 512, .cout = 3, .kh = 1, .kw = 1, .stride = 1};
        c.w.packed_kind = 0;
        float img[512 * 4], o[3 * 4], orf[3 * 4];
        tu_fill_random(img, sizeof img / sizeof img[0], 9);
        kn_conv2d(o, img, &c, 1, 2, 2);
        kn_conv2d_ref(orf, img, &c, 1, 2, 2);
        if (kn_q8_conv_applies(&c)) { /* int8 as the linear: the plain loop bit for bit, the float one within 1% */
            float oq[3 * 4], scale = 0;
            kn_q8_conv2d_ref(oq, img, &c, 1, 2, 2);
            assert_memory_equal(o, oq, sizeof oq);
            for (int k = 0; k < 12; k++) scale = fmaxf(scale, fabsf(orf[k]));
            tu_assert_close(o, orf, 12, 1e-2 * scale, name);
        } else {
            tu_assert_close(o, orf, 12, 1e-4, name);
        }
    }
    wt_st_close(&ex);
    wt_close(s);
}

/* The binder: a quantised matrix stays mapped (WT_DEQUANT_VIEW), a
 * quantised vector is dequantised into the arena. */
static void test_binder_views(void **state)
{
    (void)state;
    wt_source *s = open_ok(QUANTS);
    fm_error err = {0};
    wt_binder b;
    kn_mat m;
    const float *v = NULL;
    assert_int_equal(wt_bind_begin(&b, s, "r.", "test", &err), 0);
    do {
        wt_bind_mat(&b, &m, 3, 512, 2, (const int64_t[]){3, 512}, "Q8_0");
        wt_bind_f32(&b, &v, 2, (const int64_t[]){3, 512}, "Q4_K");
    } while (wt_bind_again(&b));
    wt_weights *w = wt_bind_end(&b);
    if (!w) fail_msg("%s", err.msg);
    assert_int_equal(wt_weights_count(w), 2);
    wt_binding r0 = wt_weights_at(w, 0), r1 = wt_weights_at(w, 1);
    assert_int_equal(r0.origin, WT_DEQUANT_VIEW);
    assert_ptr_equal(m.data, wt_find(s, "r.Q8_0")->data);
    assert_int_equal(m.dtype, FM_DT_Q8_0);
    assert_int_equal(r1.origin, WT_CONVERTED);
    wt_safetensors ex;
    tu_open(&ex, EXPECTED);
    assert_memory_equal(v, wt_st_find(&ex, "r.Q4_K")->data, 3 * 512 * sizeof(float));
    wt_st_close(&ex);
    wt_weights_free(w);
    wt_close(s);
}

/* sd.cpp's per-tensor rule (tensor_should_be_converted), with ggml's rows
 * (files) and the kernels' rows (memory). */
static void test_quant_rule(void **state)
{
    (void)state;
    static const struct { const char *name; int ndim; int64_t shape[4]; int ggml_q8, mem_q8, mem_q4k; } cases[] = {
        {"model.diffusion_model.input_blocks.1.1.proj_in.weight", 2, {320, 320}, 1, 1, 0},
        {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight", 2, {2560, 320}, 1, 1, 0},
        {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.2.weight", 2, {320, 1280}, 1, 1, 1},
        {"model.diffusion_model.input_blocks.1.0.in_layers.2.weight", 4, {320, 320, 3, 3}, 0, 1, 0},
        {"model.diffusion_model.input_blocks.4.0.in_layers.2.weight", 4, {640, 512, 3, 3}, 0, 1, 1},
        {"model.diffusion_model.input_blocks.0.0.weight", 4, {320, 4, 3, 3}, 0, 0, 0}, /* small conv */
        {"model.diffusion_model.input_blocks.1.0.in_layers.2.bias", 1, {320}, 0, 0, 0},
        {"model.diffusion_model.input_blocks.1.0.in_layers.0.weight", 1, {320}, 1, 0, 0}, /* a norm: sd.cpp converts it */
        {"alphas_cumprod", 1, {1024}, 0, 0, 0}, /* a DDPM buffer */
        {"model.diffusion_model.time_embed.0.weight", 2, {1280, 320}, 0, 0, 0},
        {"model.diffusion_model.label_emb.0.0.weight", 2, {1280, 2816}, 0, 0, 0},
        {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 2, {49408, 768}, 0, 0, 0},
        /* text encoders: sd.cpp's files quantise them; in memory they stay (their pages are dropped after encoding) */
        {"cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight", 2, {3072, 768}, 1, 0, 0},
        {"conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight", 2, {5120, 1280}, 1, 0, 0},
        {"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.ff.net.2.weight", 2, {640, 2560}, 1, 1, 1},
        {"x.weight", 2, {3, 20}, 0, 0, 0}, /* rows not whole blocks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wt_tensor t = {.name = cases[i].name, .dtype = FM_DT_F16, .ndim = cases[i].ndim};
        memcpy(t.shape, cases[i].shape, sizeof cases[i].shape);
        core_dtype g = wt_quant_choice(&t, FM_DT_Q8_0, 1), m = wt_quant_choice(&t, FM_DT_Q8_0, 0);
        core_dtype k = wt_quant_choice(&t, FM_DT_Q4_K, 0);
        if ((g == FM_DT_Q8_0) != cases[i].ggml_q8 || (m == FM_DT_Q8_0) != cases[i].mem_q8 ||
            (k == FM_DT_Q4_K) != cases[i].mem_q4k)
            fail_msg("%s: file %s, memory %s, q4_k %s", t.name, core_dtype_name(g), core_dtype_name(m), core_dtype_name(k));
    }
    wt_tensor ids = {.name = "position_ids", .dtype = FM_DT_I64, .ndim = 2, .shape = {1, 64}};
    assert_int_equal(wt_quant_choice(&ids, FM_DT_Q8_0, 0), FM_DT_I64);
}

/* ---- names ---- */

/* The sd.cpp-named file holds exactly the layout's ldm names. */
static void check_names(const char *gguf, const char *layout)
{
    wt_source *s = open_ok(gguf);
    FILE *f = fopen(layout, "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        if (!tab || line[0] == '#') continue;
        *tab = 0;
        if (!wt_find(s, line)) fail_msg("%s: %s not among the mapped names", gguf, line);
        n++;
    }
    fclose(f);
    assert_int_equal(n, wt_count(s));
    wt_close(s);
}

static void test_sdcpp_names(void **state)
{
    (void)state;
    check_names("tests/data/gguf-names-sd2.gguf", "tests/data/layouts/sd2.tsv");
    check_names("tests/data/gguf-names-sdxl.gguf", "tests/data/layouts/sdxl.tsv");
}

static void test_unet_only_names(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"input_blocks.0.0.weight", "model.diffusion_model.input_blocks.0.0.weight"},
        {"out.2.bias", "model.diffusion_model.out.2.bias"},
        {"diffusion_model.middle_block.1.norm.weight", "model.diffusion_model.middle_block.1.norm.weight"},
        {"model.diffusion_model.time_embed.0.weight", "model.diffusion_model.time_embed.0.weight"},
        {"vae.decoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight"},
        {"first_stage_model.encoder.conv_in.bias", "first_stage_model.encoder.conv_in.bias"},
        {"cond_stage_model.transformer.text_model.final_layer_norm.weight",
         "cond_stage_model.transformer.text_model.final_layer_norm.weight"},
    };
    char out[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(wt_gguf_ldm_name(out, sizeof out, cases[i][0], 0, 0), 0);
        assert_string_equal(out, cases[i][1]);
    }
    assert_int_equal(wt_gguf_ldm_name(out, sizeof out, "cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.in_proj.weight", 1, 0), 0);
    assert_string_equal(out, "cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight");
    assert_int_equal(wt_gguf_ldm_name(out, sizeof out, "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight", 0, 1), 0);
    assert_string_equal(out, "conditioner.embedders.0.transformer.text_model.encoder.layers.3.mlp.fc1.weight");
    assert_int_equal(wt_gguf_ldm_name(out, 20, "input_blocks.0.0.weight", 0, 0), -1);
}

/* ---- hostile files ---- */

typedef struct buf {
    uint8_t b[4096];
    size_t n;
} buf;

static void put(buf *o, const void *p, size_t n)
{
    assert_true(o->n + n <= sizeof o->b);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void p32(buf *o, uint32_t v) { uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)}; put(o, b, 4); }
static void p64(buf *o, uint64_t v) { p32(o, (uint32_t)v); p32(o, (uint32_t)(v >> 32)); }
static void pstr(buf *o, const char *s) { p64(o, strlen(s)); put(o, s, strlen(s)); }
static void pad(buf *o, size_t a) { while (o->n % a) o->b[o->n++] = 0; }

/* What a test file varies. */
typedef struct spec {
    uint32_t version;
    uint32_t align_type, align; /* align_type 99: no general.alignment */
    uint32_t ggml_type, ndims;
    uint64_t ne0, ne1, off1;
    const char *name1;
    int nested; /* depth of an array of arrays */
    int room;   /* data bytes beyond what the tensors need (negative: short) */
} spec;

/* header, 2 KVs (+ alignment), 2 tensors: "a" F32 [ne1][ne0] at 0, name1 at off1 */
static void build(buf *o, const spec *sp)
{
    o->n = 0;
    put(o, "GGUF", 4);
    p32(o, sp->version);
    p64(o, 2);
    p64(o, 2 + (sp->align_type != 99));
    pstr(o, "general.architecture");
    p32(o, 8);
    pstr(o, "test");
    pstr(o, "test.nested");
    p32(o, 9);
    for (int d = 0; d < sp->nested; d++) { p32(o, 9); p64(o, 1); }
    p32(o, 5);
    p64(o, 2);
    p32(o, 7);
    p32(o, 8);
    if (sp->align_type != 99) {
        pstr(o, "general.alignment");
        p32(o, sp->align_type);
        p32(o, sp->align);
        if (sp->align_type == 10) p32(o, 0);
    }
    pstr(o, "a");
    p32(o, sp->ndims);
    p64(o, sp->ne0);
    for (uint32_t d = 1; d < sp->ndims; d++) p64(o, sp->ne1);
    p32(o, sp->ggml_type);
    p64(o, 0);
    pstr(o, sp->name1);
    p32(o, 1);
    p64(o, 4);
    p32(o, 0);
    p64(o, sp->off1);
    pad(o, sp->align_type == 4 && sp->align ? sp->align : 32);
    size_t need = sp->off1 + 16 > 32 ? (size_t)sp->off1 + 16 : 48;
    size_t end = o->n + need + (size_t)(ptrdiff_t)sp->room;
    while (o->n < end) o->b[o->n++] = 0x3c;
}

static const spec good = {3, 4, 32, 0, 2, 4, 2, 32, "b", 0, 0};

/* Opens the buffer; returns the message ("" when it opened). */
static const char *try_open(const buf *o, fm_error *err)
{
    *err = (fm_error){0};
    wt_source *s = wt_gguf_open_mem(o->b, o->n, "x.gguf", err);
    if (s) {
        wt_close(s);
        return "";
    }
    assert_non_null(strstr(err->msg, "x.gguf: "));
    assert_null(strchr(err->msg, '\n'));
    assert_int_equal(err->code, FM_EINPUT);
    return err->msg;
}

static void expect(const spec *sp, const char *needle)
{
    buf o;
    build(&o, sp);
    fm_error err = {0};
    const char *msg = try_open(&o, &err);
    if (!needle) {
        if (*msg) fail_msg("refused: %s", msg);
        return;
    }
    if (!strstr(msg, needle)) fail_msg("message \"%s\", expected \"%s\"", msg, needle);
}

static void test_hostile(void **state)
{
    (void)state;
    spec s = good;
    expect(&s, NULL);
    s.version = 2; expect(&s, NULL);
    s.version = 1; expect(&s, "version 1");
    s.version = 4; expect(&s, "version 4 is not supported");
    s.version = 0x03000000; expect(&s, "big-endian");
    s = good; s.align_type = 99; expect(&s, NULL);
    s = good; s.align = 64; s.off1 = 64; expect(&s, NULL);
    s = good; s.align = 24; expect(&s, "not a power of two");
    s = good; s.align = 0; expect(&s, "not a power of two");
    s = good; s.align_type = 10; expect(&s, "not a u32");
    s = good; s.off1 = 36; expect(&s, "not a multiple of the alignment");
    s = good; s.room = -1; expect(&s, "past the end of the data section");
    s = good; s.room = 100; expect(&s, NULL); /* trailing bytes are allowed */
    s = good; s.off1 = 0; expect(&s, "overlap");
    s = good; s.name1 = "a"; expect(&s, "listed twice");
    s = good; s.name1 = ""; expect(&s, "empty name");
    s = good; s.ndims = 0; expect(&s, "0 dimensions");
    s = good; s.ndims = 5; expect(&s, "5 dimensions");
    s = good; s.ne0 = 1ull << 62; expect(&s, "shape too large");
    s = good; s.ne0 = 1ull << 40; s.ne1 = 1ull << 40; expect(&s, "shape too large");
    s = good; s.ggml_type = 99; expect(&s, "unknown ggml type 99");
    s = good; s.ggml_type = 17; expect(&s, "IQ2_XS: the IQ types are not supported");
    s = good; s.ggml_type = 9; expect(&s, "type Q8_1 is not supported");
    s = good; s.ggml_type = 12; expect(&s, "not a multiple of its block of 256");
    s = good; s.ggml_type = 8; s.ne0 = 32; s.ne1 = 1; s.off1 = 64; expect(&s, NULL);
    s.off1 = 32; expect(&s, "overlap"); /* 34 bytes of Q8_0 */
    s = good; s.nested = 7; expect(&s, NULL);
    s = good; s.nested = 8; expect(&s, "nested over 8 deep");
    s = good; s.name1 = "c\001d"; expect(&s, NULL); /* a control character in a name is kept... */

    /* every truncation of a good file is refused cleanly */
    buf o;
    build(&o, &good);
    size_t full = o.n;
    for (size_t n = 0; n < full; n++) {
        buf t = o;
        t.n = n;
        fm_error err = {0};
        if (!*try_open(&t, &err)) fail_msg("a file cut at %zu of %zu bytes opened", n, full);
    }
    /* magic, counts, lengths that claim more than the file holds */
    fm_error err = {0};
    buf t = o;
    memcpy(t.b, "GGUX", 4);
    assert_non_null(strstr(try_open(&t, &err), "not a GGUF file"));
    t = o;
    memset(t.b + 8, 0xff, 8); /* tensor count */
    if (!strstr(try_open(&t, &err), "tensors cannot fit")) fail_msg("%s", err.msg);
    t = o;
    memset(t.b + 16, 0xff, 8); /* KV count */
    assert_non_null(strstr(try_open(&t, &err), "metadata entries cannot fit"));
    t = o;
    memset(t.b + 24, 0xff, 8); /* first key's length */
    assert_non_null(strstr(try_open(&t, &err), "past the end of the file"));
    t = o;
    t.b[24 + 8 + 3] = 0; /* a NUL inside the first key */
    assert_non_null(strstr(try_open(&t, &err), "NUL"));
}

/* The message of a hostile file reaches the CLI as one line, exit 1. */
static void test_cli_message(void **state)
{
    (void)state;
    const char *bin = getenv("FM_BIN");
    if (!bin) bin = "build/fmimage";
    char path[300], cmd[800], out[2048];
    snprintf(path, sizeof path, "%s/bad.gguf", tu_dir);
    buf o;
    spec s = good;
    s.ggml_type = 23;
    build(&o, &s);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(o.b, 1, o.n, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -m '%s' 'a fox' -o '%s/x.png' 2>&1", bin, path, tu_dir);
    int code = tu_run_capture(cmd, out, sizeof out);
    assert_int_equal(code, 1);
    char want[400];
    snprintf(want, sizeof want, "fmimage: %s: tensor a: type IQ4_XS: the IQ types are not supported", path);
    if (strncmp(out, want, strlen(want)) || strchr(out, '\n') != out + strlen(out) - 1)
        fail_msg("got: %s", out);
    snprintf(path, sizeof path, "%s/x.png", tu_dir);
    struct stat sb;
    assert_int_not_equal(stat(path, &sb), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_and_metadata),
        cmocka_unit_test(test_dequant_bit_exact),
        cmocka_unit_test(test_quantize_bit_exact),
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_quant_kernels),
        cmocka_unit_test(test_binder_views),
        cmocka_unit_test(test_quant_rule),
        cmocka_unit_test(test_sdcpp_names),
        cmocka_unit_test(test_unet_only_names),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_cli_message),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
