/* The hires fix from the command line on the demo model (latent factor 4):
 * each upscaler kind makes a PNG of the hires size whose parameters carry
 * A1111's Hires fields; the same run through the library gives the same
 * bytes; the tiny SD1 golden matches A1111's hires fix end to end; an upscaling model file works as --hires-upscaler; bad options are
 * one line, exit 2, and no file. */
#include "cliutil.h"

#define DEMO "assets/demo/fmimage-demo.safetensors" /* named: a sanitizer build's binary is not beside it */
#define X2 "tests/data/upscale/rrdb-x2.safetensors"

static void test_hires_cli_matches_library(void **state)
{
    (void)state;
    char dir[256], out[320], err[2048];
    cu_tempdir(dir, sizeof dir, "hires");
    const char *ups[] = {"Latent (bicubic)", "Lanczos", X2};
    for (size_t u = 0; u < sizeof ups / sizeof *ups; u++) {
        snprintf(out, sizeof out, "%s/h%zu.png", dir, u);
        const char *args[] = {"-m", DEMO, "a red fox", "--seed", "3", "--steps", "3", "--hires-scale", "2",
                              "--hires-steps", "2", "--hires-denoise", "0.6", "--hires-upscaler", ups[u],
                              "--precision", "fp32", "-o", out, "-q", NULL};
        if (cu_run(args, err, sizeof err)) fail_msg("%s: %s", ups[u], err);
        fm_error e = {0};
        int w, h;
        uint8_t *got = fm_image_read(out, &w, &h, &e);
        assert_non_null(got);
        assert_true(w == 128 && h == 128);
        char *params = cu_png_parameters(out);
        assert_non_null(params);
        char want[256];
        snprintf(want, sizeof want, "Size: 64x64, ");
        assert_non_null(strstr(params, want));
        assert_non_null(strstr(params, "Denoising strength: 0.6, "));
        snprintf(want, sizeof want, "Hires upscale: 2, Hires steps: 2, Hires upscaler: %s, ",
                 u == 2 ? "rrdb-x2" : ups[u]);
        if (!strstr(params, want)) fail_msg("no \"%s\" in %s", want, params);
        /* the library with the same parameters */
        fm_model *m = fm_model_load(DEMO, &e);
        assert_non_null(m);
        fm_upscaler *model = u == 2 ? fm_upscaler_load(X2, &e) : NULL;
        fm_params p;
        fm_params_default(m, &p);
        p.prompt = "a red fox";
        p.seed = 3;
        p.steps = 3;
        p.precision = FM_PREC_FP32;
        p.hires_scale = 2;
        p.hires_steps = 2;
        p.hires_denoise = 0.6;
        p.hires_upscaler = u == 2 ? "rrdb-x2" : ups[u];
        p.hires_model = model;
        uint8_t *lib = malloc((size_t)w * h * 3);
        assert_int_equal(fm_generate(m, &p, lib, &e), 0);
        assert_memory_equal(got, lib, (size_t)w * h * 3);
        free(lib);
        free(got);
        free(params);
        fm_upscaler_free(model);
        fm_model_free(m);
    }
}

/* End to end on the tiny SD1 golden in fp32 against A1111's hires fix run in
 * float64 on the original ldm / k-diffusion / CLIP code
 * (tools/ref/a1111_hires.py over tools/ref/a1111_e2e.py; the cases are
 * tests/data/hires/e2e_cases.json): >= 99% of the bytes within 1 LSB. */
static void test_hires_e2e_golden(void **state)
{
    (void)state;
    static const struct {
        const char *png, *prompt, *negative, *seed, *steps, *cfg, *sampler, *scheduler, *scale, *hr_steps,
            *denoise, *upscaler;
    } cases[] = {
        {"e2e_latent.png", "a red fox in snow", "", "42", "4", "7.5", "euler", "normal", "2", "3", "0.7", "Latent"},
        {"e2e_lanczos.png", "a red fox in snow", "blurry", "7", "4", "5", "dpmpp_2m", "karras", "1.5", "0", "0.6",
         "Lanczos"},
        {"e2e_bicubic_aa.png", "a red fox in [snow:grass:0.5]", "", "3", "3", "7", "euler_ancestral", "normal", "2",
         "2", "0.45", "Latent (bicubic antialiased)"},
    };
    char dir[256], out[320], ref[320], err[2048];
    cu_tempdir(dir, sizeof dir, "hires-e2e");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(out, sizeof out, "%s/%s", dir, cases[i].png);
        snprintf(ref, sizeof ref, "tests/data/hires/%s", cases[i].png);
        const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", cases[i].prompt, "-n", cases[i].negative,
                              "-W", "64", "-H", "64", "--seed", cases[i].seed, "--steps", cases[i].steps, "--cfg",
                              cases[i].cfg, "--sampler", cases[i].sampler, "--scheduler", cases[i].scheduler,
                              "--hires-scale", cases[i].scale, "--hires-steps", cases[i].hr_steps, "--hires-denoise",
                              cases[i].denoise, "--hires-upscaler", cases[i].upscaler, "--precision", "fp32", "-q",
                              "-o", out, NULL};
        if (cu_run(args, err, sizeof err)) fail_msg("%s: %s", cases[i].png, err);
        fm_error e = {0};
        int w, h, rw, rh;
        uint8_t *got = fm_image_read(out, &w, &h, &e), *want = fm_image_read(ref, &rw, &rh, &e);
        assert_non_null(got);
        assert_non_null(want);
        assert_true(w == rw && h == rh);
        size_t n = (size_t)w * h * 3, within = 0, exact = 0;
        int maxd = 0;
        for (size_t k = 0; k < n; k++) {
            int d = abs((int)got[k] - (int)want[k]);
            within += d <= 1;
            exact += d == 0;
            if (d > maxd) maxd = d;
        }
        printf("# %s %dx%d: %.4f%% within 1 LSB, %.4f%% exact, max diff %d\n", cases[i].png, w, h,
               100.0 * within / n, 100.0 * exact / n, maxd);
        assert_true(within >= 0.99 * n);
        free(got);
        free(want);
    }
}

static void expect_refused(const char *const *args, int code, const char *msg)
{
    char err[2048];
    assert_int_equal(cu_run(args, err, sizeof err), code);
    if (!strstr(err, msg)) fail_msg("want \"%s\", got \"%s\"", msg, err);
    assert_int_equal(strchr(err, '\n') - err, (long)strlen(err) - 1); /* one line */
}

static void test_hires_cli_refusals(void **state)
{
    (void)state;
    char dir[256], out[320];
    cu_tempdir(dir, sizeof dir, "hires-bad");
    snprintf(out, sizeof out, "%s/x.png", dir);
    const char *a1[] = {"-m", DEMO, "x", "--hires-scale", "1.3", "-o", out, NULL};
    expect_refused(a1, 2, "fmimage: --hires-scale: the hires size 83x83 is not a multiple of 4");
    const char *a2[] = {"-m", DEMO, "x", "--hires-scale", "0", "-o", out, NULL};
    expect_refused(a2, 2, "fmimage: --hires-scale: must be a number in (0,16]");
    const char *a3[] = {"-m", DEMO, "x", "--hires-steps", "3", "-o", out, NULL};
    expect_refused(a3, 2, "fmimage: --hires-steps: the hires options need --hires-scale");
    const char *a4[] = {"-m", DEMO, "x", "--hires-scale", "2", "--hires-upscaler", "R-ESRGAN 4x+", "-o", out, NULL};
    expect_refused(a4, 2, "fmimage: --hires-upscaler: R-ESRGAN 4x+: not Latent");
    const char *a5[] = {"-m", DEMO, "x", "--hires-scale", "2", "--hires-denoise", "nan", "-o", out, NULL};
    expect_refused(a5, 2, "fmimage: --hires-denoise: must be in (0,1]");
    const char *a6[] = {"-m", DEMO, "x", "--hires-scale", "2", "--hires-width", "128", "-o", out, NULL};
    expect_refused(a6, 2, "exclude each other");
    const char *a7[] = {"-m", DEMO, "x", "--hires-scale", "2", "--hires-upscaler", "tests/data/hires/arith.tsv",
                        "-o", out, NULL};
    char err[2048];
    assert_int_equal(cu_run(a7, err, sizeof err), 1); /* a file that is no upscaling model */
    assert_non_null(strstr(err, "arith.tsv"));
    assert_false(cu_exists(out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hires_cli_matches_library),
        cmocka_unit_test(test_hires_cli_refusals),
        cmocka_unit_test(test_hires_e2e_golden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
