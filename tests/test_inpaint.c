/* Inpainting (issue 18) against tests/data/inpaint/ (tools/ref/inpaint_ref.py:
 * A1111's steps run by PIL 9.4 and OpenCV 4.6; tests/data/README.md#inpainting).
 * The 8-bit steps must equal the reference exactly: PIL resizes (Lanczos,
 * bicubic, A1111's resize modes 0-2), the mask blur, crop regions, the
 * overlay and its composite, masking.fill. */
#include "testutil.h"
#include "diffusion/mask.h"

#define PURE "tests/data/inpaint/pure.safetensors"
#define W 37
#define H 29

static wt_safetensors st;

static uint8_t *u8(const char *name, size_t *n)
{
    size_t k;
    float *f = tu_f32(&st, name, &k);
    uint8_t *b = malloc(k ? k : 1);
    assert_non_null(b);
    for (size_t i = 0; i < k; i++) b[i] = (uint8_t)f[i];
    core_free(f);
    if (n) *n = k;
    return b;
}

/* got must equal the golden byte for byte; says where it does not. */
static void expect(const char *name, const uint8_t *got, size_t n)
{
    size_t k;
    uint8_t *ref = u8(name, &k);
    if (k != n) fail_msg("%s: %zu bytes computed, golden has %zu", name, n, k);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != ref[i] && !bad++) first = i;
    if (bad) fail_msg("%s: %zu of %zu bytes differ, first at %zu: %d, reference %d", name, bad, n, first, got[first], ref[first]);
    free(ref);
}

static void test_resize(void **state)
{
    (void)state;
    uint8_t *img = u8("image", NULL), *mask = u8("mask", NULL);
    static const int sizes[][2] = {{24, 40}, {80, 64}, {37, 29}, {1, 1}, {5, 61}};
    char name[64];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int w = sizes[i][0], h = sizes[i][1];
        uint8_t *out = malloc((size_t)w * h * 3);
        assert_int_equal(df_pil_resize(out, w, h, img, W, H, 3, DF_FILTER_LANCZOS), 0);
        snprintf(name, sizeof name, "lanczos_rgb_%dx%d", w, h);
        expect(name, out, (size_t)w * h * 3);
        assert_int_equal(df_pil_resize(out, w, h, mask, W, H, 1, DF_FILTER_LANCZOS), 0);
        snprintf(name, sizeof name, "lanczos_l_%dx%d", w, h);
        expect(name, out, (size_t)w * h);
        free(out);
    }
    static const int lat[][2] = {{9, 7}, {10, 8}, {64, 48}};
    for (size_t i = 0; i < sizeof lat / sizeof lat[0]; i++) {
        int w = lat[i][0], h = lat[i][1];
        uint8_t *out = malloc((size_t)w * h);
        assert_int_equal(df_pil_resize(out, w, h, mask, W, H, 1, DF_FILTER_BICUBIC), 0);
        snprintf(name, sizeof name, "bicubic_l_%dx%d", w, h);
        expect(name, out, (size_t)w * h);
        free(out);
    }
    static const int rs[][2] = {{48, 32}, {32, 48}, {40, 40}};
    for (int mode = 0; mode < 3; mode++)
        for (size_t i = 0; i < 3; i++) {
            int w = rs[i][0], h = rs[i][1];
            uint8_t *out = malloc((size_t)w * h * 3);
            assert_int_equal(df_resize_image(mode, out, w, h, img, W, H, 3), 0);
            snprintf(name, sizeof name, "resize_image%d_%dx%d", mode, w, h);
            expect(name, out, (size_t)w * h * 3);
            free(out);
        }
    free(img);
    free(mask);
}

static void test_blur(void **state)
{
    (void)state;
    char name[32];
    for (int blur = 1; blur <= 11; blur += blur == 1 ? 3 : 7) {
        uint8_t *m = u8("mask", NULL);
        assert_int_equal(df_mask_blur(m, W, H, blur), 0);
        snprintf(name, sizeof name, "blur%d", blur);
        expect(name, m, (size_t)W * H);
        free(m);
    }
    uint8_t *s = u8("small", NULL); /* a kernel wider than the image */
    assert_int_equal(df_mask_blur(s, 5, 3, 4), 0);
    expect("small_blur4", s, 15);
    free(s);
    uint8_t one = 255;
    assert_int_equal(df_mask_blur(&one, 1, 1, 4), 0);
    expect("one_blur4", &one, 1);
}

static void test_crop_regions(void **state)
{
    (void)state;
    size_t n;
    float *b = tu_f32(&st, "crop_boxes", &n);
    uint8_t *masks[2] = {u8("mask", NULL), u8("blur4", NULL)};
    assert_int_equal(n, 2 * 3 * 3 * 11);
    for (size_t r = 0; r < n / 11; r++) {
        const float *row = b + r * 11;
        int box[4];
        assert_int_equal(df_mask_crop_region(masks[r / 9], W, H, (int)row[0], box), 1);
        for (int i = 0; i < 4; i++) assert_int_equal(box[i], (int)row[3 + i]);
        df_expand_crop_region(box, (int)row[1], (int)row[2], W, H);
        for (int i = 0; i < 4; i++) assert_int_equal(box[i], (int)row[7 + i]);
    }
    uint8_t black[6] = {0};
    int box[4];
    assert_int_equal(df_mask_crop_region(black, 3, 2, 8, box), 0);
    core_free(b);
    free(masks[0]);
    free(masks[1]);
}

static void test_overlay_and_fill(void **state)
{
    (void)state;
    size_t px = (size_t)W * H;
    uint8_t *img = u8("image", NULL), *mo = u8("overlay_mask", NULL), *gen = u8("generated", NULL);
    uint8_t *ov = malloc(px * 4), *dst = malloc(px * 4), *rgb = malloc(px * 3);
    df_overlay_make(ov, img, mo, W, H);
    expect("overlay", ov, px * 4);
    for (size_t i = 0; i < px; i++) {
        memcpy(dst + i * 4, gen + i * 3, 3);
        dst[i * 4 + 3] = 255;
    }
    df_alpha_composite(dst, ov, W, H);
    for (size_t i = 0; i < px; i++) memcpy(rgb + i * 3, dst + i * 4, 3);
    expect("composite", rgb, px * 3);
    char name[16];
    for (int r = 2; r <= 16; r *= r == 2 ? 2 : 4) {
        memcpy(dst, ov, px * 4);
        assert_int_equal(df_pil_gaussian_blur4(dst, W, H, (float)r), 0);
        snprintf(name, sizeof name, "gauss%d", r);
        expect(name, dst, px * 4);
    }
    uint8_t *blurred = u8("blur4", NULL), *hard = u8("mask", NULL);
    memcpy(rgb, img, px * 3);
    assert_int_equal(df_mask_fill(rgb, blurred, W, H), 0);
    expect("fill", rgb, px * 3);
    memcpy(rgb, img, px * 3);
    assert_int_equal(df_mask_fill(rgb, hard, W, H), 0);
    expect("fill_hard", rgb, px * 3);
    free(img); free(mo); free(gen); free(ov); free(dst); free(rgb); free(blurred); free(hard);
}

static int setup(void **state)
{
    (void)state;
    tu_open(&st, PURE);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    wt_st_close(&st);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_blur),
        cmocka_unit_test(test_crop_regions),
        cmocka_unit_test(test_overlay_and_fill),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
