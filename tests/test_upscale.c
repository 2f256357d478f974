/* The upscaling networks against tests/data/upscale/ (BasicSR's RRDBNet and
 * Real-ESRGAN's SRVGGNetCompact run in float64 on tiny random models; see
 * tests/data/README.md#upscaling-models): one forward pass within 1e-4,
 * the old ESRGAN names equal to BasicSR's, the RGB8 path within 1 LSB of
 * the reference rounded, tiles >= 45 dB from one whole pass, the published
 * full-size layouts bound from random files, hostile files refused. */
#include <unistd.h>

#include "testutil.h"
#include "tools/lib/randckpt.h"
#include "upscale/upscale.h"

#define TOL 1e-4
#define DIR "tests/data/upscale/"
#define IN_H 20
#define IN_W 28

typedef struct net {
    const char *file, *ref;
    up_arch arch;
    int scale;
} net;

static const net nets[] = {
    {DIR "rrdb-x4.safetensors", "rrdb-x4.output", UP_RRDBNET, 4},
    {DIR "esrgan-old-x4.safetensors", "rrdb-x4.output", UP_RRDBNET, 4},
    {DIR "rrdb-x2.safetensors", "rrdb-x2.output", UP_RRDBNET, 2},
    {DIR "srvgg-x4.safetensors", "srvgg-x4.output", UP_SRVGG, 4},
};

static up_model *load(const char *path, wt_source **src)
{
    fm_error err = {0};
    *src = wt_open(path, &err);
    up_model *m = *src ? up_load(*src, &err) : NULL;
    if (!m) fail_msg("%s", err.msg);
    return m;
}

static float *forward(const up_model *m, const float *in, int h, int w)
{
    size_t bytes = up_workspace_bytes(m, h, w), n = (size_t)3 * h * w * m->scale * m->scale;
    void *ws = malloc(bytes);
    float *out = malloc(n * sizeof(float));
    fm_error err = {0};
    assert_int_equal(up_forward(m, out, in, h, w, ws, bytes, &err), 0);
    free(ws);
    return out;
}

static void test_forward_matches_reference(void **state)
{
    (void)state;
    wt_safetensors cases;
    tu_open(&cases, DIR "cases.safetensors");
    size_t n_in;
    float *in = tu_f32(&cases, "input", &n_in);
    assert_int_equal(n_in, 3 * IN_H * IN_W);
    for (size_t i = 0; i < sizeof nets / sizeof *nets; i++) {
        wt_source *src;
        up_model *m = load(nets[i].file, &src);
        assert_int_equal(m->arch, nets[i].arch);
        assert_int_equal(m->scale, nets[i].scale);
        float *out = forward(m, in, IN_H, IN_W);
        size_t n = 3 * (size_t)IN_H * IN_W * m->scale * m->scale;
        tu_check(&cases, nets[i].ref, out, n, TOL);
        free(out);
        up_free(m);
        wt_close(src);
    }
    core_free(in);
    wt_st_close(&cases);
}

static void test_old_names_equal_new(void **state)
{
    (void)state;
    float in[3 * 8 * 12];
    tu_fill_random(in, sizeof in / sizeof *in, 5);
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) in[i] = 0.5f + 0.5f * in[i];
    wt_source *a_src, *b_src;
    up_model *a = load(nets[0].file, &a_src), *b = load(nets[1].file, &b_src);
    float *ya = forward(a, in, 8, 12), *yb = forward(b, in, 8, 12);
    assert_memory_equal(ya, yb, sizeof(float) * 3 * 32 * 48);
    free(ya);
    free(yb);
    up_free(a);
    up_free(b);
    wt_close(a_src);
    wt_close(b_src);
}

/* fm_upscale untiled vs the reference output clamped and rounded. */
static void test_rgb_within_one_lsb(void **state)
{
    (void)state;
    wt_safetensors cases;
    tu_open(&cases, DIR "cases.safetensors");
    size_t n_in;
    float *in = tu_f32(&cases, "input", &n_in);
    uint8_t rgb[IN_H * IN_W * 3];
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < IN_H * IN_W; p++) rgb[p * 3 + c] = (uint8_t)lrintf(in[c * IN_H * IN_W + p] * 255);
    for (size_t i = 0; i < sizeof nets / sizeof *nets; i++) {
        fm_error err = {0};
        fm_upscaler *u = fm_upscaler_load(nets[i].file, &err);
        assert_non_null(u);
        int s = fm_upscaler_scale(u), oh = IN_H * s, ow = IN_W * s;
        uint8_t *out = malloc((size_t)oh * ow * 3);
        fm_upscale_opts whole = {.tile = -1};
        assert_int_equal(fm_upscale(u, rgb, IN_W, IN_H, out, &whole, &err), 0);
        size_t n;
        float *ref = tu_f32(&cases, nets[i].ref, &n);
        size_t close = 0;
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < oh * ow; p++) {
                float v = ref[(size_t)c * oh * ow + p];
                int want = (int)lrintf((v < 0 ? 0 : v > 1 ? 1 : v) * 255);
                close += abs(out[(size_t)p * 3 + c] - want) <= 1;
            }
        assert_true(close >= n * 99 / 100);
        core_free(ref);
        free(out);
        fm_upscaler_free(u);
    }
    core_free(in);
    wt_st_close(&cases);
}

static double psnr(const uint8_t *a, const uint8_t *b, size_t n)
{
    double se = 0;
    for (size_t i = 0; i < n; i++) se += (double)(a[i] - b[i]) * (a[i] - b[i]);
    return se == 0 ? INFINITY : 10 * log10(255.0 * 255.0 * n / se);
}

/* A smooth test picture: gradients and a few rings. */
static void picture(uint8_t *rgb, int w, int h)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double r = hypot(x - w / 3.0, y - h / 2.0);
            rgb[(y * w + x) * 3 + 0] = (uint8_t)(255.0 * x / (w - 1));
            rgb[(y * w + x) * 3 + 1] = (uint8_t)(127.5 + 127.5 * sin(r / 3));
            rgb[(y * w + x) * 3 + 2] = (uint8_t)(255.0 * y / (h - 1));
        }
}

static void test_tiles_match_whole(void **state)
{
    (void)state;
    enum { W = 70, H = 46 };
    uint8_t rgb[W * H * 3];
    picture(rgb, W, H);
    for (size_t i = 0; i < sizeof nets / sizeof *nets; i++) {
        fm_error err = {0};
        fm_upscaler *u = fm_upscaler_load(nets[i].file, &err);
        assert_non_null(u);
        int s = fm_upscaler_scale(u);
        size_t n = (size_t)W * s * H * s * 3;
        uint8_t *whole = malloc(n), *tiled = malloc(n);
        fm_upscale_opts one = {.tile = -1}, tiles = {.tile = 24, .overlap = 8};
        assert_int_equal(fm_upscale(u, rgb, W, H, whole, &one, &err), 0);
        assert_int_equal(fm_upscale(u, rgb, W, H, tiled, &tiles, &err), 0);
        double db = psnr(whole, tiled, n);
        print_message("%s: tiles of 24 (overlap 8) vs whole: %.1f dB\n", nets[i].file, db);
        assert_true(db >= 45);
        free(whole);
        free(tiled);
        fm_upscaler_free(u);
    }
}

/* The published networks' tensor lists, random weights: they bind, the
 * structure read from the names is the published one, and a small tile runs. */
static void test_full_size_layouts(void **state)
{
    static const struct {
        const char *layout;
        up_arch arch;
        int scale, blocks_or_convs;
    } cases[] = {
        {"realesrgan-x4plus", UP_RRDBNET, 4, 23},
        {"realesrgan-x2plus", UP_RRDBNET, 2, 23},
        {"realesrgan-x4plus-anime-6b", UP_RRDBNET, 4, 6},
        {"realesr-general-x4v3", UP_SRVGG, 4, 34},
        {"realesr-animevideov3", UP_SRVGG, 4, 18},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char layout_path[256], file[512];
        snprintf(layout_path, sizeof layout_path, "tests/data/layouts/%s.tsv", cases[i].layout);
        snprintf(file, sizeof file, "%s/%s.safetensors", tu_dir, cases[i].layout);
        fm_error err = {0};
        tl_layout lay;
        assert_int_equal(tl_layout_read(&lay, layout_path, &err), 0);
        tl_randckpt_opts o = {.seed = 1, .float_dtype = FM_DT_F16};
        assert_int_equal(tl_randckpt_write(&lay, file, &o, &err), 0);
        tl_layout_free(&lay);
        wt_source *src;
        up_model *m = load(file, &src);
        assert_int_equal(m->arch, cases[i].arch);
        assert_int_equal(m->scale, cases[i].scale);
        assert_int_equal(m->arch == UP_RRDBNET ? m->n_blocks : m->n_convs, cases[i].blocks_or_convs);
        assert_int_equal(m->nf, 64);
        float in[3 * 8 * 8];
        tu_fill_random(in, sizeof in / sizeof *in, 3);
        float *out = forward(m, in, 8, 8);
        for (int k = 0; k < 3 * 64 * m->scale * m->scale; k++) assert_true(isfinite(out[k]));
        free(out);
        up_free(m);
        wt_close(src);
        unlink(file);
    }
}

/* A file written with the tensors given, then up_load's message. */
static void refused(const tl_st_entry *e, int n, const char *want)
{
    char path[512];
    snprintf(path, sizeof path, "%s/hostile.safetensors", tu_dir);
    fm_error err = {0};
    assert_int_equal(tl_st_write(path, e, n, NULL, 0, &err), 0);
    fm_upscaler *u = fm_upscaler_load(path, &err);
    assert_null(u);
    assert_int_equal(err.code, FM_EINPUT);
    if (!strstr(err.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, want);
    assert_null(strchr(err.msg, '\n'));
    unlink(path);
}

static void test_hostile_files(void **state)
{
    (void)state;
    fm_error err = {0};
    assert_null(fm_upscaler_load("tests/data/tiny-sd1.safetensors", &err));
    assert_non_null(strstr(err.msg, "not an upscaling model"));

    tl_st_entry first = {"conv_first.weight", FM_DT_F32, 4, {8, 5, 3, 3}, NULL};
    tl_st_entry grow = {"body.0.rdb1.conv1.weight", FM_DT_F32, 4, {4, 8, 3, 3}, NULL};
    tl_st_entry two[] = {first, grow};
    refused(two, 2, "5 input channels");
    two[0].shape[1] = 3;
    refused(two, 2, "cannot tell the upsampling stages"); /* no conv_up1, conv_up2 */
    tl_st_entry one[] = {{"conv_first.weight", FM_DT_F32, 2, {8, 3}, NULL}};
    refused(one, 1, "not a 3x3 convolution");
    /* a dense layer whose input width does not follow the growth rule */
    tl_st_entry net[] = {
        {"conv_first.weight", FM_DT_F32, 4, {8, 3, 3, 3}, NULL},   {"conv_first.bias", FM_DT_F32, 1, {8}, NULL},
        {"body.0.rdb1.conv1.weight", FM_DT_F32, 4, {4, 8, 3, 3}, NULL},
        {"body.0.rdb1.conv2.weight", FM_DT_F32, 4, {4, 9, 3, 3}, NULL},
        {"conv_up1.weight", FM_DT_F32, 4, {8, 8, 3, 3}, NULL},     {"conv_up2.weight", FM_DT_F32, 4, {8, 8, 3, 3}, NULL},
        {"conv_last.weight", FM_DT_F32, 4, {3, 8, 3, 3}, NULL},
    };
    refused(net, (int)(sizeof net / sizeof *net), "body.0.rdb1.conv1.bias");
    tl_st_entry vgg[] = {{"body.0.weight", FM_DT_F32, 4, {8, 3, 3, 3}, NULL},
                         {"body.2.weight", FM_DT_F32, 4, {40, 8, 3, 3}, NULL}};
    refused(vgg, 2, "without PReLU");
    tl_st_entry vgg2[] = {{"body.0.weight", FM_DT_F32, 4, {8, 3, 3, 3}, NULL}, {"body.1.weight", FM_DT_F32, 1, {8}, NULL},
                          {"body.2.weight", FM_DT_F32, 4, {40, 8, 3, 3}, NULL}};
    refused(vgg2, 3, "not 3 x scale^2");
}

static void test_bad_calls(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_upscaler *u = fm_upscaler_load(nets[2].file, &err); /* x2: tiles must be even */
    assert_non_null(u);
    uint8_t rgb[7 * 5 * 3] = {0}, out[14 * 10 * 3];
    assert_int_equal(fm_upscale(u, rgb, 7, 5, out, NULL, &err), 0); /* odd sizes are padded */
    assert_int_not_equal(fm_upscale(u, rgb, 0, 5, out, NULL, &err), 0);
    assert_int_not_equal(fm_upscale(u, rgb, 40000, 5, out, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "limit"));
    assert_int_equal(fm_upscale(NULL, rgb, 7, 5, out, NULL, &err), FM_EUSAGE);
    wt_source *src;
    up_model *m = load(nets[2].file, &src);
    float in[3 * 5 * 7] = {0}, y[3 * 10 * 14];
    char ws[64];
    err = (fm_error){0};
    assert_int_not_equal(up_forward(m, y, in, 5, 7, ws, sizeof ws, &err), 0); /* odd tile */
    assert_non_null(strstr(err.msg, "multiple of 2"));
    err = (fm_error){0};
    assert_int_not_equal(up_forward(m, y, in, 6, 8, ws, sizeof ws, &err), 0); /* workspace too small */
    if (!strstr(err.msg, "workspace")) fail_msg("%s", err.msg);
    up_free(m);
    wt_close(src);
    fm_upscaler_free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference), cmocka_unit_test(test_old_names_equal_new),
        cmocka_unit_test(test_rgb_within_one_lsb),        cmocka_unit_test(test_tiles_match_whole),
        cmocka_unit_test(test_full_size_layouts),         cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_bad_calls),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
