/* The hires fix's parts against tests/data/hires/ (tools/ref/hires_refs.py;
 * tests/data/README.md#hires-fix): every A1111 latent upscale mode against
 * torch.nn.functional.interpolate (<= 1e-5), PIL's LANCZOS / NEAREST resize
 * and A1111's Lanczos / Nearest upscalers exactly, the target size and
 * step arithmetic against A1111's, the infotext fields as A1111 joins them,
 * and the library's refusals. */
#include "testutil.h"

#include "diffusion/hires.h"

#define DIR "tests/data/hires/"
#define DEMO "assets/demo/fmimage-demo.safetensors"
#define LAT_TOL 1e-5

static const char *const sizes[] = {"16x16", "12x20", "5x6", "8x8", "21x13"};

static void test_latent_modes_match_torch(void **state)
{
    (void)state;
    wt_safetensors st;
    tu_open(&st, DIR "latent.safetensors");
    const char *inputs[] = {"a", "b"};
    const int ih[] = {8, 7}, iw[] = {8, 9};
    double worst[6] = {0};
    int checked = 0;
    for (int in = 0; in < 2; in++) {
        char name[64];
        snprintf(name, sizeof name, "in.%s", inputs[in]);
        float *x = tu_f32(&st, name, NULL);
        for (int k = 0; k < 6; k++)
            for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
                int oh, ow;
                assert_int_equal(sscanf(sizes[s], "%dx%d", &oh, &ow), 2);
                snprintf(name, sizeof name, "out.%s.%d.%s", inputs[in], k, sizes[s]);
                size_t n;
                float *ref = tu_f32(&st, name, &n);
                assert_int_equal(n, (size_t)4 * oh * ow);
                float *got = malloc(sizeof(float) * n);
                assert_int_equal(df_latent_upscale((df_upscaler_kind)k, got, oh, ow, x, 4, ih[in], iw[in]), 0);
                for (size_t i = 0; i < n; i++) {
                    double d = fabs((double)got[i] - ref[i]);
                    if (d > worst[k]) worst[k] = d;
                }
                tu_assert_close(got, ref, n, LAT_TOL, name);
                checked++;
                free(got);
                core_free(ref);
            }
        core_free(x);
    }
    for (int k = 0; k < 6; k++)
        printf("# %-28s max |C - torch| = %.3g\n", df_upscaler_name((df_upscaler_kind)k), worst[k]);
    /* A1111's names, matched exactly */
    for (int k = 0; k < DF_UP_MODEL; k++) assert_int_equal(df_upscaler_kind_of(df_upscaler_name((df_upscaler_kind)k)), k);
    assert_int_equal(df_upscaler_kind_of("latent"), -1);
    assert_int_equal(df_upscaler_kind_of(NULL), DF_UP_LATENT_BILINEAR);
    assert_int_equal(checked, 60);
    wt_st_close(&st);
}

static uint8_t *u8_of(const wt_safetensors *st, const char *name, size_t *n)
{
    float *f = tu_f32(st, name, n);
    uint8_t *u = malloc(*n);
    for (size_t i = 0; i < *n; i++) u[i] = (uint8_t)f[i];
    core_free(f);
    return u;
}

/* Counts bytes equal and the largest difference. */
static void compare_u8(const uint8_t *got, const uint8_t *ref, size_t n, size_t *equal, int *maxd)
{
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)ref[i]);
        if (!d) (*equal)++;
        if (d > *maxd) *maxd = d;
    }
}

static void test_pil_and_a1111_image_upscalers(void **state)
{
    (void)state;
    wt_safetensors st;
    tu_open(&st, DIR "images.safetensors");
    const char *inputs[] = {"noise", "smooth"};
    const int outs[][2] = {{74, 58}, {100, 50}, {16, 12}, {37, 60}, {51, 29}};
    size_t total = 0, equal_pil = 0, equal_a1111 = 0;
    int maxd_pil = 0, maxd_a1111 = 0;
    for (int in = 0; in < 2; in++) {
        char name[96];
        size_t n_in;
        snprintf(name, sizeof name, "in.%s", inputs[in]);
        uint8_t *src = u8_of(&st, name, &n_in);
        assert_int_equal(n_in, 37 * 29 * 3);
        for (size_t o = 0; o < sizeof outs / sizeof *outs; o++)
            for (int lanczos = 0; lanczos < 2; lanczos++) {
                int w = outs[o][0], h = outs[o][1];
                const char *tag = lanczos ? "lanczos" : "nearest";
                size_t n;
                snprintf(name, sizeof name, "pil.%s.%s.%dx%d", tag, inputs[in], w, h);
                uint8_t *ref = u8_of(&st, name, &n), *got = malloc(n);
                assert_int_equal(n, (size_t)w * h * 3);
                assert_int_equal(df_pil_resize_rgb8(got, w, h, src, 37, 29, lanczos), 0);
                compare_u8(got, ref, n, &equal_pil, &maxd_pil);
                free(ref);
                free(got);
                snprintf(name, sizeof name, "a1111.%s.%s.%dx%d", tag, inputs[in], w, h);
                ref = u8_of(&st, name, &n);
                uint8_t *up = NULL;
                fm_error err = {0};
                assert_int_equal(df_hires_upscale_rgb(lanczos ? DF_UP_LANCZOS : DF_UP_NEAREST, NULL, src, 37, 29, w,
                                                      h, &up, &err), 0);
                compare_u8(up, ref, n, &equal_a1111, &maxd_a1111);
                total += n;
                free(ref);
                free(up);
            }
        free(src);
    }
    printf("# PIL resize: %zu of %zu bytes equal, max diff %d; A1111 resize_image: %zu of %zu equal, max diff %d\n",
           equal_pil, total, maxd_pil, equal_a1111, total, maxd_a1111);
    assert_int_equal(maxd_pil, 0);
    assert_int_equal(maxd_a1111, 0);
    wt_st_close(&st);
}

/* Tab-separated fields, empty ones kept. */
static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    char *s = line;
    while (n < max) {
        f[n++] = s;
        char *t = strchr(s, '\t');
        if (!t) break;
        *t = 0;
        s = t + 1;
    }
    char *nl = strchr(f[n - 1], '\n');
    if (nl) *nl = 0;
    return n;
}

static void test_target_and_steps_match_a1111(void **state)
{
    (void)state;
    FILE *fp = fopen(DIR "arith.tsv", "r");
    assert_non_null(fp);
    char line[512], *f[16];
    int targets = 0, steps = 0;
    while (fgets(line, sizeof line, fp)) {
        if (line[0] == '#') continue;
        int n = split_tabs(line, f, 16);
        if (!strcmp(f[0], "target")) {
            assert_int_equal(n, 11);
            df_hires_target t;
            df_hires_plan(atoi(f[1]), atoi(f[2]), strtod(f[3], NULL), atoi(f[4]), atoi(f[5]), atoi(f[6]), &t);
            if (t.upscale_w != atoi(f[7]) || t.upscale_h != atoi(f[8]) || t.truncate_x != atoi(f[9]) ||
                t.truncate_y != atoi(f[10]))
                fail_msg("target %sx%s scale %s resize %sx%s: got %dx%d crop %d,%d, A1111 %sx%s crop %s,%s", f[1], f[2],
                         f[3], f[4], f[5], t.upscale_w, t.upscale_h, t.truncate_x, t.truncate_y, f[7], f[8], f[9],
                         f[10]);
            targets++;
        } else if (!strcmp(f[0], "steps")) {
            assert_int_equal(n, 5);
            int ss, te;
            df_hires_steps(atoi(f[1]), strtod(f[2], NULL), &ss, &te);
            if (ss != atoi(f[3]) || te != atoi(f[4]))
                fail_msg("steps %s denoise %s: got %d, %d; A1111 %s, %s", f[1], f[2], ss, te, f[3], f[4]);
            steps++;
        }
    }
    fclose(fp);
    printf("# %d target sizes and %d step counts equal A1111's\n", targets, steps);
    assert_true(targets >= 80 && steps >= 80);
}

/* The value of "Key: " in the infotext's last line, up to the next ", K". */
static void test_infotext_fields_as_a1111(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_model *m = fm_model_load(DEMO, &err);
    assert_non_null(m);
    FILE *fp = fopen(DIR "infotext.tsv", "r");
    assert_non_null(fp);
    char line[2048], *f[16];
    int cases = 0;
    while (fgets(line, sizeof line, fp)) {
        if (line[0] == '#') continue;
        assert_int_equal(split_tabs(line, f, 16), 15);
        fm_params p;
        fm_params_default(m, &p);
        snprintf(p.sampler, sizeof p.sampler, "%s", f[1]);
        p.scheduler[0] = 0;
        p.prompt = f[2];
        p.negative = f[3];
        p.hires_width = atoi(f[5]);
        p.hires_height = atoi(f[6]);
        p.hires_scale = p.hires_width || p.hires_height ? 0 : strtod(f[4], NULL);
        p.hires_steps = atoi(f[7]);
        p.hires_denoise = strtod(f[8], NULL);
        p.hires_upscaler = f[9];
        snprintf(p.hires_sampler, sizeof p.hires_sampler, "%s", f[10]);
        p.hires_prompt = f[11];
        p.hires_negative = f[12];
        char *t = fm_infotext(m, &p, "fmimage-demo", NULL, &err);
        if (!t) fail_msg("%s: %s", f[0], err.msg);
        char want[256];
        snprintf(want, sizeof want, "Denoising strength: %s, ", f[13]);
        if (!strstr(t, want)) fail_msg("%s: no \"%s\" in %s", f[0], want, t);
        const char *rng = strstr(t, "RNG: NV, "), *ver = strstr(t, ", Version: ");
        assert_non_null(rng);
        assert_non_null(ver);
        rng += strlen("RNG: NV, ");
        if ((size_t)(ver - rng) != strlen(f[14]) || strncmp(rng, f[14], strlen(f[14])))
            fail_msg("%s: hires fields\n  got  %.*s\n  want %s", f[0], (int)(ver - rng), rng, f[14]);
        free(t);
        cases++;
    }
    fclose(fp);
    assert_int_equal(cases, 4);
    /* off: no hires field, no denoising strength */
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "a fox";
    char *t = fm_infotext(m, &p, "fmimage-demo", NULL, &err);
    assert_non_null(t);
    assert_null(strstr(t, "Hires"));
    assert_null(strstr(t, "Denoising"));
    free(t);
    fm_model_free(m);
}

static void expect_usage(fm_model *m, const fm_params *p, const char *prefix)
{
    fm_error err = {0};
    assert_int_equal(fm_params_check(m, p, &err), FM_EUSAGE);
    if (strncmp(err.msg, prefix, strlen(prefix))) fail_msg("want \"%s...\", got \"%s\"", prefix, err.msg);
    assert_null(strchr(err.msg, '\n'));
}

static void test_bad_hires_params_refused(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_model *m = fm_model_load(DEMO, &err);
    assert_non_null(m);
    fm_params p, q;
    fm_params_default(m, &p);
    p.prompt = "x";
    q = p;
    q.hires_scale = 1.3; /* 64 * 1.3 = 83: not a multiple of 4 */
    expect_usage(m, &q, "--hires-scale: the hires size 83x83 is not a multiple of 4");
    q = p;
    q.hires_scale = NAN;
    expect_usage(m, &q, "--hires-scale:");
    q = p;
    q.hires_scale = 2;
    q.hires_denoise = 0;
    expect_usage(m, &q, "--hires-denoise:");
    q.hires_denoise = 1.5;
    expect_usage(m, &q, "--hires-denoise:");
    q = p;
    q.hires_scale = 2;
    q.hires_upscaler = "ESRGAN_4x";
    expect_usage(m, &q, "--hires-upscaler: ESRGAN_4x: not Latent");
    q = p;
    q.hires_scale = 2;
    q.hires_steps = -1;
    expect_usage(m, &q, "--hires-steps:");
    q = p;
    q.hires_width = 1;
    expect_usage(m, &q, "--hires-width: the hires size 1x1 is under the latent factor");
    q = p;
    q.hires_scale = 2;
    snprintf(q.hires_sampler, sizeof q.hires_sampler, "no such sampler");
    expect_usage(m, &q, "--hires-sampler:");
    q = p;
    q.hires_scale = 2;
    memset(q.hires_sampler, 'a', sizeof q.hires_sampler); /* no NUL: refused, never read past */
    expect_usage(m, &q, "--hires-sampler:");
    q = p;
    q.hires_scale = 2;
    uint8_t px[3] = {0};
    q.init_rgb = px;
    q.init_width = q.init_height = 1;
    expect_usage(m, &q, "--hires-scale: the hires fix is for txt2img");
    /* sizes: off, by scale, by one side, by both (cropped) */
    int w, h;
    assert_int_equal(fm_hires_size(m, &p, &w, &h, &err), 0);
    assert_true(w == 64 && h == 64);
    q = p;
    q.hires_scale = 1.5;
    assert_int_equal(fm_hires_size(m, &q, &w, &h, &err), 0);
    assert_true(w == 96 && h == 96);
    q = p;
    q.height = 96;
    q.hires_width = 128;
    assert_int_equal(fm_hires_size(m, &q, &w, &h, &err), 0);
    assert_true(w == 128 && h == 192);
    q.hires_height = 128; /* fill 128 wide -> 128x192, crop the latent to 128x128 */
    assert_int_equal(fm_hires_size(m, &q, &w, &h, &err), 0);
    assert_true(w == 128 && h == 128);
    fm_model_free(m);
}

/* On the demo model: the hires result is the second pass over the first
 * pass's upscaled latent, so with a latent upscaler the whole run equals
 * a first pass, F.interpolate-by-C, and an img2img pass the library runs
 * from that latent; and the output is finite, the requested size, and
 * differs from a plain upscale of the first pass. */
static void test_demo_end_to_end(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_model *m = fm_model_load(DEMO, &err);
    assert_non_null(m);
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "a red fox in snow";
    p.seed = 7;
    p.steps = 3;
    p.precision = FM_PREC_FP32;
    const char *ups[] = {"Latent", "Latent (nearest-exact)", "Lanczos", "Nearest"};
    for (size_t u = 0; u < sizeof ups / sizeof *ups; u++) {
        fm_params q = p;
        q.hires_scale = 2;
        q.hires_steps = 2;
        q.hires_upscaler = ups[u];
        int w, h;
        assert_int_equal(fm_hires_size(m, &q, &w, &h, &err), 0);
        assert_true(w == 128 && h == 128);
        uint8_t *a = malloc((size_t)w * h * 3), *b = malloc((size_t)w * h * 3);
        if (fm_generate(m, &q, a, &err)) fail_msg("%s: %s", ups[u], err.msg);
        assert_int_equal(fm_generate(m, &q, b, &err), 0);
        assert_memory_equal(a, b, (size_t)w * h * 3); /* deterministic */
        q.hires_denoise = 0.3; /* a weaker second pass changes the image */
        assert_int_equal(fm_generate(m, &q, b, &err), 0);
        assert_memory_not_equal(a, b, (size_t)w * h * 3);
        free(a);
        free(b);
    }
    fm_model_free(m);
}

/* Prompt schedules in the second pass count as A1111's hires pass does
 * (get_learned_conditioning_prompt_schedules with hires_steps): an integer
 * step of the first pass's range is already past there, so
 * "[cat:dog:2]" is "dog" for the whole second pass; were the pass scheduled
 * on its own, it would be "cat" through its 2 steps. */
static void test_schedule_in_hires_pass(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_model *m = fm_model_load(DEMO, &err);
    assert_non_null(m);
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "[cat:dog:2]";
    p.seed = 11;
    p.steps = 3;
    p.precision = FM_PREC_FP32;
    p.hires_scale = 2;
    p.hires_steps = 2;
    size_t n = 128 * 128 * 3;
    uint8_t *sched = malloc(n), *dog = malloc(n), *cat = malloc(n);
    assert_int_equal(fm_generate(m, &p, sched, &err), 0);
    p.hires_prompt = "dog";
    assert_int_equal(fm_generate(m, &p, dog, &err), 0);
    p.hires_prompt = "cat";
    assert_int_equal(fm_generate(m, &p, cat, &err), 0);
    assert_memory_equal(sched, dog, n);
    assert_memory_not_equal(sched, cat, n);
    free(sched);
    free(dog);
    free(cat);
    fm_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latent_modes_match_torch),
        cmocka_unit_test(test_pil_and_a1111_image_upscalers),
        cmocka_unit_test(test_target_and_steps_match_a1111),
        cmocka_unit_test(test_infotext_fields_as_a1111),
        cmocka_unit_test(test_bad_hires_params_refused),
        cmocka_unit_test(test_demo_end_to_end),
        cmocka_unit_test(test_schedule_in_hires_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
