/* fmimage convert (weights/convert.c, cli/convert.c) and images from a
 * .ckpt, against torch (tests/data/README.md#pytorch-files): the fp16
 * checkpoint tiny-sd1-f16.ckpt holds torch's .half() of tiny-sd1. */
#include "cliutil.h"

#include "weights/quantise.h"
#include "weights/source.h"

#define CKPT "tests/data/pickles/tiny-sd1-f16.ckpt"

static char dir[200];

static int setup(void **state)
{
    (void)state;
    cu_tempdir(dir, sizeof dir, "convert");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

/* a and b hold the same tensors: names, dtypes, shapes, bytes. */
static void same_tensors(const char *a, const char *b)
{
    fm_error err = {0};
    wt_source *x = wt_open(a, &err), *y = x ? wt_open(b, &err) : NULL;
    if (!x || !y) fail_msg("%s", err.msg);
    assert_int_equal(wt_count(x), wt_count(y));
    for (int i = 0; i < wt_count(x); i++) {
        const wt_tensor *s = wt_at(x, i), *t = wt_at(y, i);
        assert_string_equal(s->name, t->name);
        assert_int_equal(s->dtype, t->dtype);
        assert_int_equal(s->ndim, t->ndim);
        for (int d = 0; d < s->ndim; d++) assert_int_equal(s->shape[d], t->shape[d]);
        assert_int_equal(s->nbytes, t->nbytes);
        if (memcmp(s->data, t->data, s->nbytes)) fail_msg("tensor %s differs", s->name);
    }
    wt_close(x);
    wt_close(y);
}

static int convert(const char *in, const char *out, const char *type, char *err, size_t n)
{
    const char *args[] = {"convert", in, "-o", out, "-q", type ? "--type" : NULL, type, NULL};
    return cu_run(args, err, n);
}

/* .ckpt -> safetensors keeps every tensor bit for bit, and the scalars
 * beside the state dict as metadata. */
static void test_ckpt_roundtrip(void **state)
{
    (void)state;
    char out[300], err[1024];
    snprintf(out, sizeof out, "%s/from-ckpt.safetensors", dir);
    assert_int_equal(convert(CKPT, out, NULL, err, sizeof err), 0);
    same_tensors(CKPT, out);
    fm_error e = {0};
    wt_source *s = wt_open(out, &e);
    assert_non_null(s);
    assert_string_equal(wt_meta(s, "epoch"), "0");
    assert_non_null(wt_meta(s, "fmimage.config"));
    wt_close(s);
    /* and through the same path again (safetensors -> safetensors) */
    char again[300];
    snprintf(again, sizeof again, "%s/again.safetensors", dir);
    assert_int_equal(convert(out, again, NULL, err, sizeof err), 0);
    same_tensors(out, again);
}

/* --type f16 of the fp32 model equals torch's .half() of it. */
static void test_type_f16_is_torch_half(void **state)
{
    (void)state;
    char out[300], err[1024];
    snprintf(out, sizeof out, "%s/f16.safetensors", dir);
    assert_int_equal(convert("tests/data/tiny-sd1.safetensors", out, "f16", err, sizeof err), 0);
    same_tensors(CKPT, out);
    /* --type f32 widens them back: exact, so f16 again gives the same bytes */
    char f32[300], f16[300];
    snprintf(f32, sizeof f32, "%s/f32.safetensors", dir);
    snprintf(f16, sizeof f16, "%s/f16-again.safetensors", dir);
    assert_int_equal(convert(CKPT, f32, "f32", err, sizeof err), 0);
    assert_int_equal(convert(f32, f16, "f16", err, sizeof err), 0);
    same_tensors(CKPT, f16);
}

/* The image from the .ckpt equals the image from the same tensors in a
 * safetensors file, pixel for pixel. */
static void test_ckpt_image(void **state)
{
    (void)state;
    char st[300], a[300], b[300], err[1024];
    snprintf(st, sizeof st, "%s/img.safetensors", dir);
    snprintf(a, sizeof a, "%s/ckpt.png", dir);
    snprintf(b, sizeof b, "%s/st.png", dir);
    assert_int_equal(convert("tests/data/tiny-sd1.safetensors", st, "f16", err, sizeof err), 0);
    const char *run_a[] = {"-m", CKPT, "a red fox", "-W", "64", "-H", "64", "--steps", "4", "--seed", "7",
                           "--precision", "fp32", "-q", "-o", a, NULL};
    const char *run_b[] = {"-m", st, "a red fox", "-W", "64", "-H", "64", "--steps", "4", "--seed", "7",
                           "--precision", "fp32", "-q", "-o", b, NULL};
    assert_int_equal(cu_run(run_a, err, sizeof err), 0);
    assert_int_equal(cu_run(run_b, err, sizeof err), 0);
    fm_error e = {0};
    int wa, ha, wb, hb;
    uint8_t *pa = fm_image_read(a, &wa, &ha, &e), *pb = fm_image_read(b, &wb, &hb, &e);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_int_equal(wa, wb);
    assert_int_equal(ha, hb);
    assert_memory_equal(pa, pb, (size_t)wa * ha * 3);
    free(pa);
    free(pb);
}

/* safetensors -> GGUF Q8_0 -> image, for each family's tiny model: within
 * the 30 dB of the float32 checkpoint's image (euler, 4 steps). */
static void test_q8_0_roundtrip_each_family(void **state)
{
    (void)state;
    static const char *const families[] = {"sd1", "sd2", "sdxl"};
    for (int fi = 0; fi < 3; fi++) {
        char st[300], gguf[300], err[1024], name[64];
        snprintf(st, sizeof st, "tests/data/tiny-%s.safetensors", families[fi]);
        if (fi == 1) { /* tiny-sd2 with its config (the file has none: its heads cannot be told) */
            snprintf(st, sizeof st, "%s/tiny-sd2.safetensors", dir);
            cu_write_tiny_sd2(st);
        }
        snprintf(gguf, sizeof gguf, "%s/tiny-%s.q8_0.gguf", dir, families[fi]);
        if (convert(st, gguf, "q8_0", err, sizeof err)) fail_msg("convert %s: %s", st, err);
        uint8_t *img[2];
        for (int k = 0; k < 2; k++) {
            const char *args[] = {"-m", k ? gguf : st, "a red fox", "-W", "64", "-H", "64", "--steps", "4", "--seed", "7",
                                  "--sampler", "euler", "--precision", "fp32", NULL};
            snprintf(name, sizeof name, "%s-%s", families[fi], k ? "q8_0" : "f32");
            img[k] = cu_draw64(dir, name, args);
        }
        double db = cu_psnr8(img[1], img[0], 64 * 64 * 3);
        printf("  %s: safetensors F32 -> GGUF Q8_0: %.2f dB\n", families[fi], db);
        assert_true(db >= 30);
        free(img[0]);
        free(img[1]);
    }
}

/* A scalar (full checkpoints carry model_ema.decay, shape []) is written to
 * GGUF as ggml writes one: one dimension of 1, the same bytes. */
static void test_gguf_scalar(void **state)
{
    (void)state;
    char st[300], gg[300];
    snprintf(st, sizeof st, "%s/scalar.safetensors", dir);
    snprintf(gg, sizeof gg, "%s/scalar.gguf", dir);
    static const char header[] = "{\"model_ema.decay\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}";
    uint64_t hn = sizeof header - 1;
    float decay = 0.9999f;
    FILE *f = fopen(st, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(&hn, 8, 1, f), 1);
    assert_int_equal(fwrite(header, 1, hn, f), hn);
    assert_int_equal(fwrite(&decay, 4, 1, f), 1);
    assert_int_equal(fclose(f), 0);
    fm_error e = {0};
    wt_source *s = wt_open(st, &e);
    if (!s) fail_msg("%s", e.msg);
    assert_int_equal(wt_at(s, 0)->ndim, 0);
    if (wt_gguf_write(gg, s, NULL, 0, &e)) fail_msg("%s", e.msg);
    wt_close(s);
    wt_source *g = wt_open(gg, &e);
    if (!g) fail_msg("%s", e.msg);
    const wt_tensor *t = wt_find(g, "model_ema.decay");
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 1);
    assert_int_equal(t->dtype, FM_DT_F32);
    assert_memory_equal(t->data, &decay, 4);
    wt_close(g);
}

static int dir_entries(const char *d)
{
    DIR *h = opendir(d);
    int n = 0;
    for (struct dirent *e; h && (e = readdir(h));) n += e->d_name[0] != '.';
    if (h) closedir(h);
    return n;
}

/* Refusals: one line, the right exit code, and no file (not even a
 * temporary one) left behind. */
static void test_refusals(void **state)
{
    (void)state;
    char d[300], out[400], err[1024];
    snprintf(d, sizeof d, "%s/refuse", dir);
    mkdir(d, 0777);
    snprintf(out, sizeof out, "%s/x.safetensors", d);
    assert_int_equal(convert("tests/data/pickles/evil-os-system.ckpt", out, NULL, err, sizeof err), 1);
    assert_non_null(strstr(err, "pickle calls os.system: refused"));
    assert_int_equal(dir_entries(d), 0);
    assert_int_equal(convert("tests/data/no-such.ckpt", out, NULL, err, sizeof err), 1);
    assert_int_equal(dir_entries(d), 0);
    assert_int_equal(convert(CKPT, out, "q4_k", err, sizeof err), 2);
    assert_non_null(strstr(err, "--type: q4_k"));
    char gguf[400];
    snprintf(gguf, sizeof gguf, "%s/x.gguf", d);
    assert_int_equal(convert(CKPT, gguf, "iq2_xs", err, sizeof err), 2);
    assert_non_null(strstr(err, "--type: iq2_xs is not"));
    assert_int_equal(convert("tests/data/pickles/evil-os-system.ckpt", gguf, "q8_0", err, sizeof err), 1);
    assert_int_equal(dir_entries(d), 0);
    /* an existing output stays as it is without --force */
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    fputs("keep", f);
    fclose(f);
    assert_int_equal(convert(CKPT, out, NULL, err, sizeof err), 2);
    assert_non_null(strstr(err, "exists (--force overwrites it)"));
    char buf[16];
    cu_slurp_into(out, buf, sizeof buf);
    assert_string_equal(buf, "keep");
    const char *force[] = {"convert", CKPT, "-o", out, "--force", "-q", NULL};
    assert_int_equal(cu_run(force, err, sizeof err), 0);
    same_tensors(CKPT, out);
    assert_int_equal(dir_entries(d), 1);
    /* usage */
    const char *none[] = {"convert", CKPT, NULL};
    assert_int_equal(cu_run(none, err, sizeof err), 2);
    assert_non_null(strstr(err, "fmimage: convert: no output"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ckpt_roundtrip),
        cmocka_unit_test(test_type_f16_is_torch_half),
        cmocka_unit_test(test_ckpt_image),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_gguf_scalar),
        cmocka_unit_test(test_q8_0_roundtrip_each_family),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
