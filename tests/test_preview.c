/* The live preview (fm_params.preview, issue 21 item 2: A1111's TAESD live
 * preview): on the tiny SD 1.x golden model with Euler, whose last step
 * lands on its denoised prediction, the last preview must equal the TAESD
 * decode (vae/, checked against upstream TAESD in test_taesd) of the final
 * latent within 1 LSB on >= 99% of the values; previews come every
 * preview_every steps and at the last; the image fm_generate returns is
 * the same bytes with and without a preview. */
#include "cliutil.h"

#include "diffusion/pipeline_internal.h"
#include "vae/vae.h"

#define TINY_SD1 "tests/data/tiny-sd1.safetensors"
#define TAESD "tests/data/taesd-weights.safetensors"

typedef struct seen {
    int calls, steps[64], w, h;
    uint8_t *last;
} seen;

static void on_preview(void *user, const uint8_t *rgb, int w, int h, int step, int steps)
{
    seen *s = user;
    (void)steps;
    if (s->calls < 64) s->steps[s->calls] = step;
    s->calls++;
    s->w = w;
    s->h = h;
    free(s->last);
    s->last = malloc((size_t)w * h * 3);
    memcpy(s->last, rgb, (size_t)w * h * 3);
}

static void params(const fm_model *m, fm_params *p)
{
    fm_params_default(m, p);
    p->prompt = "a red fox in snow";
    p->width = p->height = 64;
    p->steps = 7;
    p->seed = 42;
    p->cfg = 5;
    snprintf(p->sampler, sizeof p->sampler, "euler");
    snprintf(p->scheduler, sizeof p->scheduler, "normal");
    p->precision = FM_PREC_FP32;
}

static void test_preview_is_taesd_of_denoised(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_model *m = fm_model_load(TINY_SD1, &err);
    if (!m) fail_msg("%s", err.msg);
    fm_params p;
    params(m, &p);
    uint8_t *plain = malloc(64 * 64 * 3), *with = malloc(64 * 64 * 3);
    assert_int_equal(fm_generate(m, &p, plain, &err), 0);
    seen s = {0};
    p.preview_taesd = TAESD;
    p.preview_every = 3;
    p.preview = on_preview;
    p.preview_user = &s;
    if (fm_generate(m, &p, with, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(plain, with, 64 * 64 * 3); /* the preview changes nothing */
    assert_int_equal(s.calls, 3);                  /* steps 3, 6 and the last, 7 */
    assert_int_equal(s.steps[0], 3);
    assert_int_equal(s.steps[1], 6);
    assert_int_equal(s.steps[2], 7);
    int f = fm_model_latent_factor(m), lh = 64 / f, lw = 64 / f;
    assert_int_equal(s.w, 8 * lw);
    assert_int_equal(s.h, 8 * lh);
    /* the reference: the final latent through TAESD */
    size_t n = (size_t)m->cfg.vae.embed_dim * lh * lw, px = (size_t)64 * lh * lw;
    float *x = malloc(sizeof *x * (size_t)m->cfg.unet.out_channels * lh * lw), *img = malloc(sizeof *img * 3 * px);
    fm_params q;
    params(m, &q);
    assert_int_equal(df_sample_latent(m, &q, x, &err), 0);
    vae_taesd *t = vae_taesd_open(TAESD, &err);
    assert_non_null(t);
    assert_int_equal(vae_taesd_decode(t, img, 3 * px, x, n, lh, lw, &err), 0);
    size_t close = 0;
    for (size_t k = 0; k < px; k++)
        for (int c = 0; c < 3; c++) {
            float v = img[c * px + k];
            int want = (int)rintf((v < 0 ? 0 : v > 1 ? 1 : v) * 255.0f), got = s.last[k * 3 + c];
            close += abs(want - got) <= 1;
        }
    double share = (double)close / (3.0 * px);
    printf("  last preview vs TAESD(final latent): %.4f%% of values within 1 LSB\n", share * 100);
    assert_true(share >= 0.99);
    vae_taesd_free(t);
    free(x);
    free(img);
    free(s.last);
    free(plain);
    free(with);
    fm_model_free(m);
}

static void test_bad_preview_file_is_an_error(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_model *m = fm_model_load(TINY_SD1, &err);
    assert_non_null(m);
    fm_params p;
    params(m, &p);
    seen s = {0};
    p.preview_taesd = TINY_SD1; /* not a TAESD */
    p.preview = on_preview;
    p.preview_user = &s;
    uint8_t *rgb = malloc(64 * 64 * 3);
    assert_int_not_equal(fm_generate(m, &p, rgb, &err), 0);
    printf("  %s\n", err.msg);
    assert_true(err.msg[0] != 0);
    assert_int_equal(s.calls, 0);
    free(rgb);
    fm_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preview_is_taesd_of_denoised),
        cmocka_unit_test(test_bad_preview_file_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
