/* Inpainting and outpainting as a user runs them on the demo model (latent
 * factor 4): the commands of README's "Editing and upscaling" work, the
 * result equals the library's, an all-black mask says so and changes
 * nothing, refusals are one line with the right exit code and no file. */
#include "cliutil.h"

#define DEMO "assets/demo/fmimage-demo.safetensors" /* named: a sanitizer build's binary is not beside it */

static void write_mask(const char *path, int w, int h, int black)
{
    uint8_t *rgb = calloc((size_t)w * h, 3);
    assert_non_null(rgb);
    for (int y = h / 4; !black && y < h * 3 / 4; y++) memset(rgb + ((size_t)y * w + w / 4) * 3, 255, (size_t)(w / 2) * 3);
    fm_error e = {0};
    assert_int_equal(fm_png_write(path, rgb, w, h, NULL, &e), 0);
    free(rgb);
}

static void test_inpaint_commands(void **state)
{
    (void)state;
    char dir[256], base[320], mask[320], black[320], out[320], err[2048];
    cu_tempdir(dir, sizeof dir, "inpaint");
    snprintf(base, sizeof base, "%s/base.png", dir);
    snprintf(mask, sizeof mask, "%s/mask.png", dir);
    snprintf(black, sizeof black, "%s/black.png", dir);
    snprintf(out, sizeof out, "%s/out.png", dir);
    const char *gen[] = {"-m", DEMO, "a red fox", "--seed", "1", "-o", base, "-q", NULL};
    assert_int_equal(cu_run(gen, err, sizeof err), 0);
    write_mask(mask, 64, 64, 0);
    write_mask(black, 40, 24, 1); /* another size, all black */
    const char *inp[] = {"-m", DEMO, "a blue bird", "-i", base, "--mask", mask, "--seed", "2", "-o", out, "-q", NULL};
    assert_int_equal(cu_run(inp, err, sizeof err), 0);
    char *params = cu_png_parameters(out);
    assert_non_null(params);
    assert_non_null(strstr(params, "Denoising strength: 0.75, RNG: NV, Mask blur: 4, Version"));
    free(params);
    /* the library's bytes for the same parameters */
    fm_error e = {0};
    fm_model *m = fm_model_load(DEMO, &e);
    assert_non_null(m);
    fm_params p;
    fm_params_default(m, &p);
    int w, h, mw, mh, ow, oh;
    uint8_t *init = fm_image_read(base, &w, &h, &e), *mk = fm_mask_read(mask, &mw, &mh, &e);
    uint8_t *got = fm_image_read(out, &ow, &oh, &e);
    p.prompt = "a blue bird";
    p.seed = 2;
    p.init_rgb = init;
    p.init_width = w;
    p.init_height = h;
    p.mask = mk;
    p.mask_width = mw;
    p.mask_height = mh;
    uint8_t *want = malloc((size_t)p.width * p.height * 3);
    assert_int_equal(fm_generate(m, &p, want, &e), 0);
    assert_int_equal(ow, p.width);
    assert_memory_equal(got, want, (size_t)ow * oh * 3);
    free(got);
    /* all black: said so, the image unchanged */
    unlink(out);
    const char *blk[] = {"-m", DEMO, "x", "-i", base, "--mask", black, "-o", out, "-q", NULL};
    assert_int_equal(cu_run(blk, err, sizeof err), 0);
    assert_non_null(strstr(err, "the mask is all black: nothing to repaint, the image is unchanged"));
    got = fm_image_read(out, &ow, &oh, &e);
    assert_memory_equal(got, init, (size_t)w * h * 3);
    free(got);
    /* outpaint: (64 + 16 + 8) x (64 + 4) */
    unlink(out);
    const char *op[] = {"-m", DEMO, "x", "-i", base, "--outpaint", "16,4,8,0", "-o", out, "-q", NULL};
    assert_int_equal(cu_run(op, err, sizeof err), 0);
    got = fm_image_read(out, &ow, &oh, &e);
    assert_int_equal(ow, 88);
    assert_int_equal(oh, 68);
    free(got);
    params = cu_png_parameters(out);
    assert_non_null(strstr(params, "Size: 88x68"));
    assert_non_null(strstr(params, "Masked content: fill"));
    free(params);
    /* only masked, inverted, latent noise */
    unlink(out);
    const char *om[] = {"-m", DEMO, "x", "-i", base, "--mask", mask, "--mask-invert", "--inpaint-only-masked",
                        "--inpaint-padding", "8", "--inpaint-fill", "latent-noise", "-o", out, "-q", NULL};
    assert_int_equal(cu_run(om, err, sizeof err), 0);
    params = cu_png_parameters(out);
    assert_non_null(strstr(params, "Mask mode: Inpaint not masked, Mask blur: 4, Inpaint area: Only masked, "
                                   "Masked area padding: 8, Masked content: latent noise, Version"));
    free(params);
    free(init);
    free(mk);
    free(want);
    fm_model_free(m);
}

/* One line each, the right exit code, no file. */
static void test_inpaint_refusals(void **state)
{
    (void)state;
    char dir[256], base[320], mask[320], out[320], err[2048];
    cu_tempdir(dir, sizeof dir, "inpaint-bad");
    snprintf(base, sizeof base, "%s/base.png", dir);
    snprintf(mask, sizeof mask, "%s/mask.png", dir);
    snprintf(out, sizeof out, "%s/x.png", dir);
    write_mask(base, 64, 64, 0);
    write_mask(mask, 64, 64, 0);
    const struct {
        const char *args[12];
        int code;
        const char *msg;
    } cases[] = {
        {{"x", "--mask", mask, NULL}, 2, "--mask: needs an init image (-i)"},
        {{"x", "-i", base, "--mask", "tests/data/README.md", NULL}, 1, "README.md: not a PNG or JPEG image"},
        {{"x", "-i", base, "--mask", mask, "--mask-blur", "-1", NULL}, 2, "--mask-blur: must be 0..256 pixels"},
        {{"x", "-i", base, "--mask", mask, "--inpaint-fill", "blur", NULL}, 2, "--inpaint-fill: must be original"},
        {{"x", "-i", base, "--outpaint", "4,4,4", NULL}, 2, "--outpaint: must be L,T,R,B"},
        {{"x", "-i", base, "--outpaint", "6,0,0,0", NULL}, 2, "--outpaint: 6 is not a multiple of 4"},
        {{"x", "-i", base, "--outpaint", "4,0,0,0", "--mask", mask, NULL}, 2, "--outpaint: makes its own mask"},
        {{"x", "-i", base, "--outpaint", "16384,0,0,0", NULL}, 2, "over the 16384-pixel limit"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *args[20] = {"-m", DEMO};
        int n = 2;
        for (int k = 0; cases[i].args[k]; k++) args[n++] = cases[i].args[k];
        args[n++] = "-o";
        args[n++] = out;
        args[n++] = "-q";
        args[n] = NULL;
        assert_int_equal(cu_run(args, err, sizeof err), cases[i].code);
        if (!strstr(err, cases[i].msg)) fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].msg);
        assert_int_equal(strncmp(err, "fmimage: ", 9), 0);
        assert_ptr_equal(strchr(err, '\n'), err + strlen(err) - 1);
        assert_false(cu_exists(out));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inpaint_commands),
        cmocka_unit_test(test_inpaint_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
