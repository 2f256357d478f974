/* vae_taesd_decode checks the sizes of the buffers it is given before it
 * reads or writes them (item 1 of issue 14: a latent factor 4 model handed
 * TAESD a buffer for 4x, TAESD wrote 8x into it). */
#include "testutil.h"
#include "vae/vae.h"

#define TAESD "tests/data/taesd-weights.safetensors"

static void test_decode_refuses_small_buffers(void **state)
{
    (void)state;
    fm_error err = {0};
    vae_taesd *t = vae_taesd_open(TAESD, &err);
    if (!t) fail_msg("%s", err.msg);
    int h = 4, w = 6, ch = vae_taesd_latent_channels(t);
    size_t z_len = (size_t)ch * h * w, img_len = (size_t)3 * 64 * h * w;
    float *z = calloc(z_len, sizeof(float)), *img = malloc(sizeof(float) * img_len);
    assert_non_null(z);
    assert_non_null(img);
    /* the image a factor-4 pipeline would have sized: a quarter of it */
    for (size_t i = 0; i < img_len; i++) img[i] = -7.0f;
    assert_int_equal(vae_taesd_decode(t, img, img_len / 4, z, z_len, h, w, &err), FM_EINPUT);
    assert_non_null(strstr(err.msg, "taesd decode: a 48x32 image does not fit the"));
    for (size_t i = 0; i < img_len; i++) assert_true(img[i] == -7.0f);
    fm_error e2 = {0};
    assert_int_equal(vae_taesd_decode(t, img, img_len, z, z_len - 1, h, w, &e2), FM_EINPUT);
    assert_non_null(strstr(e2.msg, "taesd decode: a 6x4 latent of 4 channels is more than the 95 values given"));
    fm_error e3 = {0};
    assert_int_equal(vae_taesd_decode(t, img, img_len, z, z_len, h, w, &e3), 0);
    free(z);
    free(img);
    vae_taesd_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_decode_refuses_small_buffers)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
