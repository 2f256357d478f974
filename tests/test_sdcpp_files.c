/* GGUF files made by stable-diffusion.cpp itself (tests/data/sdcpp,
 * tests/data/README.md#stable-diffusioncpp-files) and fmimage convert's GGUF
 * output against them:
 *   - sd.cpp's F16 file of tiny-sd1 holds exactly the F16 cast's tensors and
 *     draws exactly its image; its Q8_0/Q4_0/Q4_K files draw within the
 *     issue's PSNR of it;
 *   - `fmimage convert --type q8_0` writes sd.cpp's Q8_0 bytes for every
 *     tensor, and picks sd.cpp's type for every tensor at every type;
 *   - sd.cpp's --convert-name names of tiny-sd2 and tiny-sdxl map back to
 *     the checkpoints' names;
 *   - safetensors -> GGUF F16 -> image is exact, -> GGUF Q8_0 within 30 dB. */
#include "cliutil.h"

#include "weights/source.h"

#define SDCPP "tests/data/sdcpp/"

static char dir[256];
static char f16_plain[300], f16_cfg[300];

/* tiny-sd1 with every F32 tensor cast to F16 (as torch's .half(): round to
 * nearest even), with or without its fmimage.config. */
static void write_f16(const char *out, int with_config)
{
    fm_error err = {0};
    wt_safetensors st;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    tl_st_entry *e = cu_st_entries(&st);
    void **bufs = calloc((size_t)(unsigned)st.n_tensors + 1, sizeof *bufs);
    for (int i = 0; i < st.n_tensors; i++) {
        const wt_tensor *t = &st.tensors[i];
        int64_t ne = wt_numel(t);
        if (t->dtype != FM_DT_F32 || ne <= 0 || ne > (1 << 26)) continue;
        size_t n = (size_t)ne;
        float *f = malloc(n * sizeof *f);
        uint16_t *h = malloc(n * sizeof *h);
        wt_convert_f32(f, t);
        core_f32_to_f16(h, f, n);
        free(f);
        bufs[i] = h;
        e[i].dtype = FM_DT_F16;
        e[i].data = h;
    }
    if (tl_st_write(out, e, st.n_tensors, with_config ? st.meta : NULL, with_config ? st.n_meta : 0, &err))
        fail_msg("%s", err.msg);
    for (int i = 0; i < st.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(e);
    wt_st_close(&st);
}

static int setup(void **state)
{
    (void)state;
    cu_tempdir(dir, sizeof dir, "sdcpp");
    snprintf(f16_plain, sizeof f16_plain, "%s/tiny-sd1-f16.safetensors", dir);
    snprintf(f16_cfg, sizeof f16_cfg, "%s/tiny-sd1-f16-config.safetensors", dir);
    write_f16(f16_plain, 0);
    write_f16(f16_cfg, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) ? -1 : 0;
}

static wt_source *open_ok(const char *path)
{
    fm_error err = {0};
    wt_source *s = wt_open(path, &err);
    if (!s) fail_msg("%s", err.msg);
    return s;
}

/* The e2e golden's settings (seed 42, euler, 6 steps, CFG 7.5) on model, fp32. */
static uint8_t *draw(const char *model, const char *name)
{
    const char *args[] = {"-m", model, "a red fox in snow", "--seed", "42", "-W", "64", "-H", "64", "--sampler", "euler",
                          "--steps", "6", "--cfg", "7.5", "--precision", "fp32", NULL};
    return cu_draw64(dir, name, args);
}

/* sd.cpp leaves out the DDPM buffers it recomputes, position_ids and
 * OpenCLIP's logit_scale (none of them used). */
static int sdcpp_drops(const char *name)
{
    return (!strchr(name, '.') && strcmp(name, "alphas_cumprod")) || strstr(name, "position_ids") != NULL ||
           strstr(name, "logit_scale") != NULL;
}

static void test_f16_file(void **state)
{
    (void)state;
    wt_source *g = open_ok(SDCPP "tiny-sd1.f16.gguf"), *s = open_ok(f16_plain);
    int dropped = 0;
    for (int i = 0; i < wt_count(s); i++) {
        const wt_tensor *t = wt_at(s, i), *u = wt_find(g, t->name);
        if (!u) {
            if (!sdcpp_drops(t->name)) fail_msg("%s: not in sd.cpp's file", t->name);
            dropped++;
            continue;
        }
        assert_int_equal(u->dtype, t->dtype);
        assert_int_equal(u->ndim, t->ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(u->shape[d], t->shape[d]);
        if (u->nbytes != t->nbytes || memcmp(u->data, t->data, t->nbytes)) fail_msg("%s: bytes differ", t->name);
    }
    assert_int_equal(wt_count(g) + dropped, wt_count(s));
    printf("  sd.cpp F16: %d tensors equal to the F16 cast (%d it leaves out)\n", wt_count(g), dropped);
    wt_close(g);
    wt_close(s);
    uint8_t *a = draw(SDCPP "tiny-sd1.f16.gguf", "sdcpp-f16"), *b = draw(f16_plain, "st-f16");
    assert_memory_equal(a, b, 64 * 64 * 3);
    static const char *const q[] = {"q8_0", "q4_0", "q4_k"};
    static const double floor_db[] = {30, 20, 20};
    for (int i = 0; i < 3; i++) {
        char path[200];
        snprintf(path, sizeof path, SDCPP "tiny-sd1.%s.gguf", q[i]);
        uint8_t *c = draw(path, q[i]);
        double p = cu_psnr8(c, b, 64 * 64 * 3);
        printf("  sd.cpp %s vs F16: %.2f dB\n", q[i], p);
        assert_true(p >= floor_db[i]);
        free(c);
    }
    free(a);
    free(b);
}

/* fmimage convert picks sd.cpp's type per tensor; Q8_0 (ggml's reference
 * quantiser, as sd.cpp uses it) gives its bytes. sd.cpp quantises the
 * other types through ggml's weighted search with unit weights (an
 * imatrix of ones), which fmimage does not do: bytes are counted only. */
static void test_convert_matches_sdcpp(void **state)
{
    (void)state;
    static const char *const types[] = {"f16", "q8_0", "q4_0", "q4_k"};
    for (int ti = 0; ti < 4; ti++) {
        char out[400], ref[200], err[1024];
        snprintf(out, sizeof out, "%s/fm.%s.gguf", dir, types[ti]);
        snprintf(ref, sizeof ref, SDCPP "tiny-sd1.%s.gguf", types[ti]);
        const char *args[] = {"convert", f16_plain, "-o", out, "--type", types[ti], "-q", NULL};
        if (cu_run(args, err, sizeof err)) fail_msg("%s", err);
        wt_source *a = open_ok(ref), *b = open_ok(out);
        int same = 0;
        for (int i = 0; i < wt_count(a); i++) {
            const wt_tensor *t = wt_at(a, i), *u = wt_find(b, t->name);
            if (!u) fail_msg("%s: %s missing", out, t->name);
            if (u->dtype != t->dtype)
                fail_msg("%s: %s: fmimage %s, sd.cpp %s", types[ti], t->name, core_dtype_name(u->dtype), core_dtype_name(t->dtype));
            same += u->nbytes == t->nbytes && !memcmp(u->data, t->data, t->nbytes);
        }
        printf("  convert --type %s: %d/%d tensors of sd.cpp's type, %d byte-identical\n", types[ti], wt_count(a),
               wt_count(a), same);
        if (ti < 2) assert_int_equal(same, wt_count(a));
        wt_close(a);
        wt_close(b);
    }
}

/* sd.cpp's --convert-name names map back to the checkpoint's. */
static void test_convert_name_names(void **state)
{
    (void)state;
    static const char *const m[][2] = {{SDCPP "names-tiny-sd2.gguf", "tests/data/tiny-sd2.safetensors"},
                                       {SDCPP "names-tiny-sdxl.gguf", "tests/data/tiny-sdxl.safetensors"}};
    for (int k = 0; k < 2; k++) {
        wt_source *g = open_ok(m[k][0]), *s = open_ok(m[k][1]);
        int dropped = 0;
        for (int i = 0; i < wt_count(g); i++)
            if (!wt_find(s, wt_at(g, i)->name)) fail_msg("%s: %s is no name of %s", m[k][0], wt_at(g, i)->name, m[k][1]);
        for (int i = 0; i < wt_count(s); i++)
            if (!wt_find(g, wt_at(s, i)->name)) {
                if (!sdcpp_drops(wt_at(s, i)->name)) fail_msg("%s: %s not written by sd.cpp", m[k][1], wt_at(s, i)->name);
                dropped++;
            }
        printf("  %s: %d names mapped back (%d left out by sd.cpp)\n", m[k][0], wt_count(g), dropped);
        wt_close(g);
        wt_close(s);
    }
}

/* safetensors -> GGUF -> image. */
static void test_roundtrip(void **state)
{
    (void)state;
    char f16[400], q8[400], err[1024];
    snprintf(f16, sizeof f16, "%s/rt-f16.gguf", dir);
    snprintf(q8, sizeof q8, "%s/rt-q8_0.gguf", dir);
    const char *a1[] = {"convert", f16_cfg, "-o", f16, "-q", NULL};
    const char *a2[] = {"convert", "tests/data/tiny-sd1.safetensors", "-o", q8, "--type", "q8_0", "-q", NULL};
    if (cu_run(a1, err, sizeof err) || cu_run(a2, err, sizeof err)) fail_msg("%s", err);
    wt_source *s = open_ok(q8);
    assert_non_null(wt_meta(s, "fmimage.config")); /* metadata kept */
    wt_close(s);
    uint8_t *ref = draw("tests/data/tiny-sd1.safetensors", "rt-f32"), *a = draw(f16_cfg, "rt-st16"), *b = draw(f16, "rt-g16"),
            *c = draw(q8, "rt-q8");
    assert_memory_equal(a, b, 64 * 64 * 3);
    double p = cu_psnr8(c, ref, 64 * 64 * 3);
    printf("  safetensors F32 -> GGUF Q8_0: %.2f dB\n", p);
    assert_true(p >= 30);
    free(ref);
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_file),
        cmocka_unit_test(test_convert_matches_sdcpp),
        cmocka_unit_test(test_convert_name_names),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
