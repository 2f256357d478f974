/* The safetensors writer and the random-checkpoint generator. */
#include "testutil.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/lib/randckpt.h"

static void test_round_trip(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tu_dir);
    const float f[6] = {1, -2, 3.5f, 0, 1e-3f, 65504};
    const uint16_t h[3] = {0x3c00, 0xc000, 0x7bff};
    const int64_t ids[4] = {0, 1, 2, 76};
    const double scalar = 4.25;
    tl_st_entry e[] = {
        {"w \"quoted\"\n", FM_DT_F32, 2, {2, 3}, f},
        {"half", FM_DT_F16, 1, {3}, h},
        {"ids", FM_DT_I64, 2, {1, 4}, ids},
        {"scalar", FM_DT_F64, 0, {0}, &scalar},
        {"zeros", FM_DT_BF16, 1, {5}, NULL},
        {"empty", FM_DT_F32, 2, {0, 7}, NULL},
    };
    wt_st_meta meta[] = {{"fmimage.config", "{\"family\": \"sd1\"}"}, {"note", "tab\there\\"}};
    fm_error err = {0};
    if (tl_st_write(path, e, 6, meta, 2, &err)) fail_msg("%s", err.msg);

    wt_safetensors st;
    tu_open(&st, path);
    assert_int_equal(st.n_tensors, 6);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | ((const uint8_t *)st.map)[i];
    assert_int_equal(hlen % 8, 0);
    assert_string_equal(wt_st_meta_get(&st, "fmimage.config"), "{\"family\": \"sd1\"}");
    assert_string_equal(wt_st_meta_get(&st, "note"), "tab\there\\");
    const wt_st_tensor *t = wt_st_find(&st, "w \"quoted\"\n");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_memory_equal(t->data, f, sizeof f);
    t = wt_st_find(&st, "half");
    assert_int_equal(t->dtype, FM_DT_F16);
    assert_memory_equal(t->data, h, sizeof h);
    t = wt_st_find(&st, "ids");
    assert_int_equal(t->dtype, FM_DT_I64);
    assert_memory_equal(t->data, ids, sizeof ids);
    t = wt_st_find(&st, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_memory_equal(t->data, &scalar, 8);
    t = wt_st_find(&st, "zeros");
    for (int i = 0; i < 10; i++) assert_int_equal(((const uint8_t *)t->data)[i], 0);
    t = wt_st_find(&st, "empty");
    assert_int_equal(t->nbytes, 0);
    assert_int_equal(t->shape[1], 7);
    wt_st_close(&st);

    /* No temporary file is left behind; a failed write leaves nothing. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    struct stat sb;
    assert_int_not_equal(stat(tmp, &sb), 0);
    snprintf(path, sizeof path, "%s/no-such-tu_dir/x.safetensors", tu_dir);
    fm_error err2 = {0};
    assert_int_equal(tl_st_write(path, e, 6, NULL, 0, &err2), FM_EINPUT);
    assert_non_null(strstr(err2.msg, "No such file or directory"));
    assert_int_not_equal(stat(path, &sb), 0);
}

static void test_unaligned_tensors(void **state)
{
    (void)state;
    /* safetensors packs tensors without alignment: a 1-element F16 moves
     * the following F64/I64/I32 tensors off their natural alignment. */
    char path[512];
    snprintf(path, sizeof path, "%s/unaligned.safetensors", tu_dir);
    const uint16_t one = 0x3c00;
    const double d[3] = {1.5, -2.25, 1e10};
    const int64_t l[2] = {-5, 1LL << 40};
    const int32_t i32[2] = {7, -9};
    tl_st_entry e[] = {
        {"a", FM_DT_F16, 1, {1}, &one},
        {"b", FM_DT_F64, 1, {3}, d},
        {"c", FM_DT_F16, 1, {1}, &one},
        {"d", FM_DT_I64, 1, {2}, l},
        {"e", FM_DT_F16, 1, {1}, &one},
        {"f", FM_DT_I32, 1, {2}, i32},
    };
    fm_error err = {0};
    if (tl_st_write(path, e, 6, NULL, 0, &err)) fail_msg("%s", err.msg);
    wt_safetensors st;
    tu_open(&st, path);
    assert_int_not_equal((uintptr_t)wt_st_find(&st, "b")->data % 8, 0);
    float *b = tu_f32(&st, "b", NULL), *dd = tu_f32(&st, "d", NULL), *f = tu_f32(&st, "f", NULL);
    assert_true(b[0] == 1.5f && b[1] == -2.25f && b[2] == 1e10f);
    assert_true(dd[0] == -5.0f && dd[1] == (float)(1LL << 40));
    assert_true(f[0] == 7.0f && f[1] == -9.0f);
    core_free(b);
    core_free(dd);
    core_free(f);
    wt_st_close(&st);
}

static const char layout_text[] =
    "alphas_cumprod\tF32\t1000\n"
    "betas\tF32\t1000\n"
    "cond.position_ids\tI64\t1,77\n"
    "cond.token_embedding.weight\tF16\t100,16\n"
    "denoiser.sigmas\tF32\t1000\n"
    "log_one_minus_alphas_cumprod\tF32\t1000\n"
    "logit_scale\tF16\t\n"
    "model.conv.bias\tF16\t64\n"
    "model.conv.weight\tF16\t64,32,3,3\n"
    "model.norm.weight\tF32\t64\n"
    "model_ema.num_updates\tI32\t\n"
    "posterior_log_variance_clipped\tF32\t1000\n"
    "posterior_mean_coef1\tF32\t1000\n"
    "posterior_mean_coef2\tF32\t1000\n"
    "posterior_variance\tF32\t1000\n"
    "sqrt_alphas_cumprod\tF32\t1000\n"
    "sqrt_recipm1_alphas_cumprod\tF32\t1000\n";

static void write_layout(char *path, size_t len)
{
    snprintf(path, len, "%s/small.tsv", tu_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(layout_text, f);
    fclose(f);
}

static void test_random_checkpoint(void **state)
{
    (void)state;
    char tsv[512], out[512], out2[512];
    write_layout(tsv, sizeof tsv);
    snprintf(out, sizeof out, "%s/rand.safetensors", tu_dir);
    snprintf(out2, sizeof out2, "%s/rand-bf16.safetensors", tu_dir);
    tl_layout layout;
    fm_error err = {0};
    if (tl_layout_read(&layout, tsv, &err)) fail_msg("%s", err.msg);
    assert_int_equal(layout.n, 17);
    tl_randckpt_opts o = {.seed = 7, .float_dtype = -1};
    if (tl_randckpt_write(&layout, out, &o, &err)) fail_msg("%s", err.msg);
    o.float_dtype = FM_DT_BF16;
    if (tl_randckpt_write(&layout, out2, &o, &err)) fail_msg("%s", err.msg);
    tl_layout_free(&layout);

    wt_safetensors st, ref, st2;
    tu_open(&st, out);
    tu_open(&st2, out2);
    /* The DDPM buffers equal ldm's (stored in the golden tiny-sd1). */
    tu_open(&ref, "tests/data/tiny-sd1.safetensors");
    static const char *const sched[] = {"alphas_cumprod", "betas", "log_one_minus_alphas_cumprod",
                                        "posterior_log_variance_clipped", "posterior_mean_coef1",
                                        "posterior_mean_coef2", "posterior_variance", "sqrt_alphas_cumprod",
                                        "sqrt_recipm1_alphas_cumprod"};
    for (size_t i = 0; i < sizeof sched / sizeof sched[0]; i++) {
        size_t n;
        float *got = tu_f32(&st, sched[i], &n);
        assert_int_equal(n, 1000);
        tu_check(&ref, sched[i], got, n, 1e-6);
        core_free(got);
    }
    wt_st_close(&ref);
    /* sgm's ascending sigmas (layouts/README.md: 0.029167 ... 14.614641). */
    float *sig = tu_f32(&st, "denoiser.sigmas", NULL);
    assert_float_equal(sig[0], 0.029167, 1e-6);
    assert_float_equal(sig[999], 14.614641, 1e-5);
    core_free(sig);

    const wt_st_tensor *t = wt_st_find(&st, "cond.position_ids");
    assert_int_equal(t->dtype, FM_DT_I64);
    for (int i = 0; i < 77; i++) {
        int64_t v;
        memcpy(&v, (const char *)t->data + 8 * i, 8);
        assert_int_equal(v, i);
    }
    /* Conv weight: U(-b, b), b = sqrt(3 / (32*3*3)); variance b^2/3. */
    size_t n;
    float *w = tu_f32(&st, "model.conv.weight", &n);
    double b = sqrt(3.0 / 288), sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(fabsf(w[i]) <= b * 1.001);
        sum += w[i];
        sq += (double)w[i] * w[i];
    }
    assert_true(fabs(sum / n) < 0.05 * b);
    assert_float_equal(sq / n, b * b / 3, 0.1 * b * b / 3);
    /* BF16 file: same values rounded, integers untouched. */
    assert_int_equal(wt_st_find(&st2, "model.conv.weight")->dtype, FM_DT_BF16);
    assert_int_equal(wt_st_find(&st2, "cond.position_ids")->dtype, FM_DT_I64);
    float *w2 = tu_f32(&st2, "model.conv.weight", NULL);
    tu_assert_close(w2, w, n, 1e-2, "bf16 conv weight");
    core_free(w2);
    core_free(w);
    float *norm = tu_f32(&st, "model.norm.weight", &n);
    for (size_t i = 0; i < n; i++) assert_true(norm[i] >= 0.9f && norm[i] <= 1.1f);
    core_free(norm);
    float *ls = tu_f32(&st, "logit_scale", NULL);
    assert_float_equal(ls[0], log(100.0), 5e-3);
    core_free(ls);
    float *emb = tu_f32(&st, "cond.token_embedding.weight", &n);
    double es = 0;
    for (size_t i = 0; i < n; i++) es += (double)emb[i] * emb[i];
    assert_float_equal(sqrt(es / n), 0.02, 0.004);
    core_free(emb);
    wt_st_close(&st2);

    /* The tool writes the same file from the same seed. */
    const char *tools = getenv("FM_TOOLS");
    if (tools) {
        char cmd[1600], out3[512];
        snprintf(out3, sizeof out3, "%s/tool.safetensors", tu_dir);
        snprintf(cmd, sizeof cmd, "'%s/mkckpt' '%s' '%s' --seed 7", tools, tsv, out3);
        assert_int_equal(system(cmd), 0);
        wt_safetensors st3;
        tu_open(&st3, out3);
        assert_int_equal(st3.map_size, st.map_size);
        assert_memory_equal(st3.map, st.map, st.map_size);
        wt_st_close(&st3);
        snprintf(cmd, sizeof cmd, "'%s/mkckpt' '%s' '%s' --dtype F8 2>/dev/null", tools, tsv, out3);
        int rc = system(cmd);
        assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    }
    wt_st_close(&st);
}

static void test_layout_errors(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/bad.tsv", tu_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("a\tF32\t3\nb\tF32\t3,x\n", f);
    fclose(f);
    tl_layout layout;
    fm_error err = {0};
    assert_int_equal(tl_layout_read(&layout, path, &err), FM_EINPUT);
    char want[600];
    snprintf(want, sizeof want, "%s:2: bad shape", path);
    assert_string_equal(err.msg, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_unaligned_tensors),
        cmocka_unit_test(test_random_checkpoint),
        cmocka_unit_test(test_layout_errors),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
