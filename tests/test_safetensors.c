/* The safetensors loader on the golden checkpoint. */
#include "testutil.h"

static void test_opens_tiny_sd1(void **state)
{
    (void)state;
    wt_safetensors st;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    assert_int_equal(st.n_tensors, 381);
    const wt_st_tensor *t = wt_st_find(&st, "cond_stage_model.transformer.text_model.embeddings.position_ids");
    assert_non_null(t);
    assert_int_equal(t->dtype, FM_DT_I64);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], 77);
    assert_int_equal(((const int64_t *)t->data)[76], 76);
    assert_non_null(wt_st_meta_get(&st, "fmimage.config"));
    fm_error err = {0};
    int64_t want[] = {49408, 8};
    assert_non_null(wt_require(&st.src, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 2, want, &err));
    int64_t wrong[] = {49408, 9};
    assert_null(wt_require(&st.src, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 2, wrong, &err));
    assert_int_equal(err.code, FM_EINPUT);
    assert_non_null(strstr(err.msg, "shape [49408,8], expected [49408,9]"));
    wt_st_close(&st);
}

static void test_missing_file(void **state)
{
    (void)state;
    wt_safetensors st;
    fm_error err = {0};
    assert_int_equal(wt_st_open(&st, "tests/data/no-such-file.safetensors", &err), FM_EINPUT);
    assert_string_equal(err.msg, "tests/data/no-such-file.safetensors: No such file or directory");
    fm_error err2 = {0};
    assert_int_equal(wt_st_open(&st, "tests/data", &err2), FM_EINPUT);
    assert_string_equal(err2.msg, "tests/data: is a directory");
}

static void test_f16_round_trip(void **state)
{
    (void)state;
    /* Every finite half converts to float and back unchanged. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        float f = core_f16_to_f32_1((uint16_t)h);
        assert_int_equal(core_f32_to_f16_1(f), h);
        float v;
        uint16_t hh = (uint16_t)h;
        core_f16_to_f32(&v, &hh, 1);
        assert_true(v == f || (v != v && f != f));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_tiny_sd1),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_f16_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
