/* `fmimage upscale` and --upscale-model as a user runs them: the file the
 * library's fm_upscale makes, the parameters kept and extended as A1111's
 * extras do, refusals as one line with nothing written, and resume of a
 * batch whose images are upscaled. */
#include "cliutil.h"

#define X4 "tests/data/upscale/rrdb-x4.safetensors"
#define VGG "tests/data/upscale/srvgg-x4.safetensors"
#define IN_PNG "tests/data/e2e.png" /* 64x64, with generation parameters */
#define DEMO "assets/demo/fmimage-demo.safetensors" /* named: a sanitizer build's binary is not beside it */

static void test_upscale_file(void **state)
{
    (void)state;
    char dir[256], out[320], err[2048];
    cu_tempdir(dir, sizeof dir, "upscale");
    snprintf(out, sizeof out, "%s/big.png", dir);
    const char *args[] = {"upscale", "-m", X4, IN_PNG, "-o", out, "-q", NULL};
    assert_int_equal(cu_run(args, err, sizeof err), 0);

    /* the same bytes as the library with its defaults */
    fm_error e = {0};
    int w, h, ow, oh;
    uint8_t *in = fm_image_read(IN_PNG, &w, &h, &e), *got = fm_image_read(out, &ow, &oh, &e);
    assert_non_null(in);
    assert_non_null(got);
    assert_int_equal(ow, 4 * w);
    assert_int_equal(oh, 4 * h);
    fm_upscaler *u = fm_upscaler_load(X4, &e);
    uint8_t *want = malloc((size_t)ow * oh * 3);
    assert_int_equal(fm_upscale(u, in, w, h, want, NULL, &e), 0);
    assert_memory_equal(got, want, (size_t)ow * oh * 3);

    /* the input's parameters stay, the upscale is appended to their last line */
    char *before = cu_png_parameters(IN_PNG), *after = cu_png_parameters(out);
    assert_non_null(after);
    assert_int_equal(strncmp(after, before ? before : "", before ? strlen(before) : 0), 0);
    assert_non_null(strstr(after, "Postprocess upscale by: 4, Postprocess upscaler: rrdb-x4"));
    assert_null(strchr(after + (before ? strlen(before) : 0), '\n'));

    /* an existing output is kept without --force, replaced with it */
    struct stat st0, st1;
    assert_int_equal(stat(out, &st0), 0);
    const char *again[] = {"upscale", "-m", VGG, IN_PNG, "-o", out, NULL};
    assert_int_equal(cu_run(again, err, sizeof err), 1);
    assert_non_null(strstr(err, "exists (use --force to overwrite)"));
    assert_int_equal(stat(out, &st1), 0);
    assert_int_equal(st0.st_ino, st1.st_ino);
    const char *force[] = {"upscale", "-m", VGG, "-i", IN_PNG, "-o", out, "--force", "-q", NULL};
    assert_int_equal(cu_run(force, err, sizeof err), 0);

    free(before);
    free(after);
    free(in);
    free(got);
    free(want);
    fm_upscaler_free(u);
}

/* One line each, the right exit code, no file. */
static void test_refusals(void **state)
{
    (void)state;
    char dir[256], out[320], err[2048];
    cu_tempdir(dir, sizeof dir, "upscale-bad");
    snprintf(out, sizeof out, "%s/x.png", dir);
    static const struct {
        const char *args[8];
        int code;
        const char *msg;
    } cases[] = {
        {{"upscale", IN_PNG, NULL}, 2, "upscale: needs -m UPSCALER"},
        {{"upscale", "-m", X4, NULL}, 2, "upscale: no image given"},
        {{"upscale", "-m", X4, IN_PNG, "extra.png", NULL}, 2, "extra.png: unexpected argument"},
        {{"upscale", "-m", "tests/data/tiny-sd1.safetensors", IN_PNG, NULL}, 1, "not an upscaling model"},
        {{"upscale", "-m", X4, "tests/data/README.md", NULL}, 1, "README.md"},
        {{"upscale", "-m", X4, IN_PNG, "--upscale-tile", "-3", NULL}, 2, "--upscale-tile: must be an integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *args[12];
        int n = 0;
        for (; cases[i].args[n]; n++) args[n] = cases[i].args[n];
        args[n++] = "-o";
        args[n++] = out;
        args[n] = NULL;
        assert_int_equal(cu_run(args, err, sizeof err), cases[i].code);
        if (!strstr(err, cases[i].msg)) fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].msg);
        assert_int_equal(strncmp(err, "fmimage: ", 9), 0);
        assert_ptr_equal(strchr(err, '\n'), err + strlen(err) - 1);
        assert_false(cu_exists(out));
    }
}

/* --upscale-model after generating: the upscaled image, its infotext, and a
 * second run that finds both images finished; a run with another
 * upscaler replaces them. */
static void test_generate_then_upscale(void **state)
{
    (void)state;
    char dir[256], err[4096], png[400];
    cu_tempdir(dir, sizeof dir, "gen-upscale");
    const char *args[] = {"a red circle", "-m", DEMO, "--seed", "5", "--steps", "2", "--batch-count", "2", "-o", dir,
                          "--upscale-model", VGG, "-q", NULL};
    assert_int_equal(cu_run(args, err, sizeof err), 0);
    snprintf(png, sizeof png, "%s/00000-5.png", dir);
    fm_error e = {0};
    int w, h;
    uint8_t *rgb = fm_image_read(png, &w, &h, &e);
    assert_non_null(rgb);
    assert_int_equal(w, 256); /* the demo model's 64 x 4 */
    free(rgb);
    char *params = cu_png_parameters(png);
    assert_non_null(strstr(params, "Size: 64x64"));
    assert_non_null(strstr(params, "Postprocess upscale by: 4, Postprocess upscaler: srvgg-x4"));
    free(params);
    assert_int_equal(cu_run(args, err, sizeof err), 0);
    const char *again[] = {"a red circle", "-m", DEMO, "--seed", "5", "--steps", "2", "--batch-count", "2", "-o", dir,
                           "--upscale-model", VGG, NULL};
    assert_int_equal(cu_run(again, err, sizeof err), 0);
    assert_non_null(strstr(err, "skipped 2 finished images"));
    const char *other[] = {"a red circle", "-m", DEMO, "--seed", "5", "--steps", "2", "--batch-count", "2", "-o", dir,
                           "--upscale-model", X4, NULL};
    assert_int_equal(cu_run(other, err, sizeof err), 0);
    assert_non_null(strstr(err, "replaced (parameters changed)"));
    const char *missing[] = {"x", "-m", DEMO, "--upscale-model", "tests/data/nope.safetensors", "-o", png, "--force", NULL};
    assert_int_equal(cu_run(missing, err, sizeof err), 1);
    assert_non_null(strstr(err, "nope.safetensors"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upscale_file),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_generate_then_upscale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
