/* The weight binder (weights/binder.h) over a safetensors source: views in
 * place, converted copies, the sticky first error, list mode, the records. */
#include "testutil.h"

#include "diffusion/detect.h"
#include "textenc/textenc.h"
#include "tools/lib/st_write.h"
#include "unet/unet.h"
#include "vae/vae.h"
#include "weights/binder.h"

static char path[300];

static int make_file(void **state)
{
    if (tu_make_dir(state)) return -1;
    snprintf(path, sizeof path, "%s/w.safetensors", tu_dir);
    /* mat32 [4][3] F32, mat16 [4][3] F16, mat64 [2][2] F64, vec16 [3] F16,
     * vec32 [3] F32 (at byte 176 of the data: aligned), conv [2][1][3][3] */
    static float m32[12], c32[18], v32[3] = {1, 2, 3};
    static uint16_t m16[12], v16[3];
    static double m64[4] = {1.5, -2, 0.25, 8};
    for (int i = 0; i < 12; i++) m32[i] = (float)i - 5;
    for (int i = 0; i < 18; i++) c32[i] = (float)i / 4;
    core_f32_to_f16(m16, m32, 12);
    core_f32_to_f16(v16, v32, 3);
    tl_st_entry e[] = {
        {"p.conv.weight", FM_DT_F32, 4, {2, 1, 3, 3}, c32},
        {"p.mat16", FM_DT_F16, 2, {4, 3}, m16},
        {"p.mat32", FM_DT_F32, 2, {4, 3}, m32},
        {"p.mat64", FM_DT_F64, 2, {2, 2}, m64},
        {"p.vec32", FM_DT_F32, 1, {3}, v32},
        {"p.vec16", FM_DT_F16, 1, {3}, v16},
        {"p.ids", FM_DT_I64, 1, {3}, NULL},
    };
    fm_error err = {0};
    return tl_st_write(path, e, (int)(sizeof e / sizeof e[0]), NULL, 0, &err);
}

static int remove_file(void **state) { return tu_remove_dir(state); }

static void test_views_and_copies(void **state)
{
    (void)state;
    wt_safetensors st;
    tu_open(&st, path);
    fm_error err = {0};
    wt_binder b;
    assert_int_equal(wt_bind_begin(&b, &st.src, "p.", "test", &err), 0);
    kn_mat m32, m16, m64, conv;
    const float *v16, *v32;
    int walks = 0;
    do {
        walks++;
        wt_bind_mat(&b, &m32, 4, 3, 2, (const int64_t[]){4, 3}, "mat32");
        wt_bind_mat(&b, &m16, 4, 3, 2, (const int64_t[]){4, 3}, "mat16");
        wt_bind_mat(&b, &m64, 2, 2, 2, (const int64_t[]){2, 2}, "mat64");
        wt_bind_mat(&b, &conv, 2, 9, 4, (const int64_t[]){2, 1, 3, 3}, "conv.weight");
        wt_bind_vec(&b, &v16, 3, "vec16");
        wt_bind_vec(&b, &v32, 3, "vec%d", 32);
        if (walks == 1) assert_null(m32.data), assert_null(v32); /* measuring binds nothing */
    } while (wt_bind_again(&b));
    assert_int_equal(walks, 2);
    wt_weights *w = wt_bind_end(&b);
    if (!w) fail_msg("%s", err.msg);

    /* F32 and F16 matrices are the file's bytes; F64 is converted. */
    assert_ptr_equal(m32.data, wt_st_find(&st, "p.mat32")->data);
    assert_int_equal(m32.dtype, FM_DT_F32);
    assert_ptr_equal(m16.data, wt_st_find(&st, "p.mat16")->data);
    assert_int_equal(m16.dtype, FM_DT_F16);
    assert_int_equal(m64.dtype, FM_DT_F32);
    assert_true(((const float *)m64.data)[0] == 1.5f && ((const float *)m64.data)[3] == 8.0f);
    assert_int_equal(conv.rows, 2);
    assert_int_equal(conv.cols, 9);
    /* Vectors: aligned F32 in place, F16 widened into the arena. */
    assert_int_equal((uintptr_t)wt_st_find(&st, "p.vec32")->data % 4, 0);
    assert_ptr_equal(v32, wt_st_find(&st, "p.vec32")->data);
    assert_true(v16[0] == 1 && v16[1] == 2 && v16[2] == 3);
    assert_true(v32[0] == 1 && v32[1] == 2 && v32[2] == 3);

    /* One record per parameter, with its origin and slot. */
    assert_int_equal(wt_weights_count(w), 6);
    wt_binding r = wt_weights_at(w, 2);
    assert_string_equal(r.tensor->name, "p.mat64");
    assert_int_equal(r.origin, WT_CONVERTED);
    assert_int_equal(r.kind, WT_SLOT_MAT);
    assert_ptr_equal(r.slot, &m64);
    assert_int_equal(wt_weights_at(w, 0).origin, WT_FROM_FILE);
    assert_int_equal(wt_weights_at(w, 0).kind, WT_SLOT_MAT);
    assert_int_equal(wt_weights_at(w, 4).kind, WT_SLOT_F32);
    assert_ptr_equal(wt_weights_at(w, 4).slot, &v16);
    assert_int_equal(wt_weights_at(w, 4).origin, WT_CONVERTED);
    assert_int_equal(wt_weights_at(w, 5).origin, WT_FROM_FILE);
    assert_ptr_equal(wt_weights_at(w, 5).slot, &v32);
    /* exactly the two converted pieces (F64 [2][2], F16 [3]), 64-byte rounded */
    assert_int_equal(wt_weights_copied_bytes(w), 128);
    wt_weights_free(w);
    wt_st_close(&st);
}

/* The first failure wins and names the file, the tensor and both shapes;
 * later calls do nothing. */
static void test_sticky_error(void **state)
{
    (void)state;
    wt_safetensors st;
    tu_open(&st, path);
    fm_error err = {0};
    wt_binder b;
    assert_int_equal(wt_bind_begin(&b, &st.src, "p.", "test", &err), 0);
    kn_mat m;
    const float *v = (const float *)&m;
    wt_bind_mat(&b, &m, 3, 4, 2, (const int64_t[]){3, 4}, "mat32");
    char want[400];
    snprintf(want, sizeof want, "%s: tensor p.mat32: shape [4,3], expected [3,4]", path);
    assert_string_equal(err.msg, want);
    assert_null(m.data);
    wt_bind_vec(&b, &v, 3, "absent");
    assert_null(v);
    assert_string_equal(err.msg, want);
    assert_null(wt_bind_end(&b));
    assert_int_equal(err.code, FM_EINPUT);

    fm_error e2 = {0};
    assert_int_equal(wt_bind_begin(&b, &st.src, "p.", "test", &e2), 0);
    wt_bind_vec(&b, &v, 3, "absent");
    snprintf(want, sizeof want, "%s: tensor p.absent: missing", path);
    assert_string_equal(e2.msg, want);
    assert_null(wt_bind_end(&b));

    fm_error e3 = {0};
    assert_int_equal(wt_bind_begin(&b, &st.src, "p.", "test", &e3), 0);
    wt_bind_vec(&b, &v, 3, "ids");
    snprintf(want, sizeof want, "%s: tensor p.ids: dtype I64 is not a float type", path);
    assert_string_equal(e3.msg, want);
    assert_null(wt_bind_end(&b));
    wt_st_close(&st);
}

typedef struct listed {
    int n;
    char names[8][64];
    int64_t last_shape[4];
} listed;

static void on_tensor(void *user, const char *name, int ndim, const int64_t *shape)
{
    listed *l = user;
    snprintf(l->names[l->n++], 64, "%s", name);
    for (int i = 0; i < ndim && i < 4; i++) l->last_shape[i] = shape[i];
}

static void test_list_mode(void **state)
{
    (void)state;
    listed l = {0};
    fm_error err = {0};
    wt_binder b;
    wt_list_begin(&b, on_tensor, &l, "q.", "test", &err);
    kn_mat m;
    const float *v;
    wt_bind_mat(&b, &m, 8, 18, 4, (const int64_t[]){8, 2, 3, 3}, "conv.weight");
    wt_bind_vec(&b, &v, 8, "conv.bias");
    assert_null(wt_bind_peek(&b, "conv.weight"));
    assert_null(wt_bind_end(&b));
    assert_false(b.failed);
    assert_int_equal(err.code, FM_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.names[0], "q.conv.weight");
    assert_string_equal(l.names[1], "q.conv.bias");
    assert_int_equal(l.last_shape[0], 8);
    assert_int_equal(m.rows, 8);
    assert_null(m.data);
}

/* List mode against real files: every tensor a part lists is in the file
 * with that shape, and together the parts list every float tensor of the
 * file (nothing the file holds goes unbound, nothing is bound twice). */
typedef struct coverage {
    const wt_safetensors *st;
    unsigned char *seen; /* per tensor of st */
    int listed, missing, twice;
    char first_missing[256];
} coverage;

static void cover(void *user, const char *name, int ndim, const int64_t *shape)
{
    coverage *c = user;
    const wt_st_tensor *t = wt_st_find(c->st, name);
    c->listed++;
    int ok = t && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        if (!c->missing++) snprintf(c->first_missing, sizeof c->first_missing, "%s", name);
        return;
    }
    if (c->seen[t - c->st->tensors]++) c->twice++;
}

static void check_coverage(const char *path, int head_channels)
{
    wt_safetensors st;
    tu_open(&st, path);
    wt_model_config cfg;
    fm_error err = {0};
    if (df_detect_config(&st.src, &cfg, &err)) fail_msg("%s", err.msg);
    if (head_channels) cfg.unet.num_head_channels = head_channels;
    coverage c = {.st = &st, .seen = calloc((size_t)st.n_tensors + 1, 1)};
    if (un_list_tensors(&cfg.unet, cover, &c, &err) || vae_list_tensors(&cfg.vae, cover, &c, &err))
        fail_msg("%s", err.msg);
    for (int i = 0; i < cfg.n_text; i++)
        if (te_tower_list_tensors(&cfg.text[i], cover, &c, &err)) fail_msg("%s", err.msg);
    if (c.missing) fail_msg("%s: %d listed tensors not in the file, the first %s", path, c.missing, c.first_missing);
    assert_int_equal(c.twice, 0);
    int unbound = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const wt_st_tensor *t = &st.tensors[i];
        /* buffers: the schedule, position_ids, logit_scale are not parameters of a part */
        int buffer = !strchr(t->name, '.') || strstr(t->name, "position_ids") || strstr(t->name, "logit_scale") ||
                     !strncmp(t->name, "denoiser.", 9);
        if (!c.seen[i] && wt_is_float(t->dtype) && !buffer) {
            if (!unbound++) print_message("  %s: not bound: %s\n", path, t->name);
        }
    }
    print_message("  %s: the parts list %d of its %d tensors, %d parameters unbound\n", path, c.listed,
                  st.n_tensors, unbound);
    assert_int_equal(unbound, 0);
    free(c.seen);
    wt_st_close(&st);
}

static void test_list_covers_the_files(void **state)
{
    (void)state;
    check_coverage("tests/data/tiny-sd1.safetensors", 0);
    /* the tiny SD 2 file has no fmimage.config; its heads are 16 wide (test_unet) */
    check_coverage("tests/data/tiny-sd2.safetensors", 16);
    check_coverage("tests/data/tiny-sdxl.safetensors", 0);
}

/* Mixed F16/F32 files: a 1-element F16 leaves the next F32 matrix 2 bytes
 * off its alignment. The binder copies it into the arena (the kernels would
 * otherwise do misaligned float loads, which UBSan flags) with the same values,
 * and keeps an aligned F32 matrix in place. */
static void test_unaligned_f32_matrix(void **state)
{
    (void)state;
    char upath[320];
    snprintf(upath, sizeof upath, "%s/mixed.safetensors", tu_dir);
    static const float m[6] = {1.5f, -2, 3.25f, 4, -5.5f, 6};
    const uint16_t one = 0x3c00;
    tl_st_entry e[] = {
        {"p.a", FM_DT_F16, 1, {1}, &one},
        {"p.m", FM_DT_F32, 2, {2, 3}, m},
        {"p.z", FM_DT_F32, 2, {2, 3}, m},
    };
    fm_error err = {0};
    if (tl_st_write(upath, e, 3, NULL, 0, &err)) fail_msg("%s", err.msg);
    wt_safetensors st;
    tu_open(&st, upath);
    const wt_tensor *tm = wt_st_find(&st, "p.m"), *tz = wt_st_find(&st, "p.z");
    assert_int_not_equal((uintptr_t)tm->data % 4, 0); /* the case this guards */
    wt_binder b;
    assert_int_equal(wt_bind_begin(&b, &st.src, "p.", "test", &err), 0);
    kn_mat mm, mz;
    do {
        wt_bind_mat(&b, &mm, 2, 3, 2, (const int64_t[]){2, 3}, "m");
        wt_bind_mat(&b, &mz, 2, 3, 2, (const int64_t[]){2, 3}, "z");
    } while (wt_bind_again(&b));
    wt_weights *w = wt_bind_end(&b);
    if (!w) fail_msg("%s", err.msg);
    assert_int_equal(mm.dtype, FM_DT_F32);
    assert_int_equal((uintptr_t)mm.data % 4, 0);
    assert_ptr_not_equal(mm.data, tm->data);
    assert_memory_equal(mm.data, m, sizeof m);
    assert_int_equal(wt_weights_at(w, 0).origin, WT_CONVERTED);
    /* p.z: 1 F16 + 6 F32 = 26 bytes in, also off by 2 */
    assert_int_equal((uintptr_t)tz->data % 4 != 0, wt_weights_at(w, 1).origin == WT_CONVERTED);
    assert_memory_equal(mz.data, m, sizeof m);
    wt_weights_free(w);
    wt_st_close(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_and_copies),
        cmocka_unit_test(test_unaligned_f32_matrix),
        cmocka_unit_test(test_sticky_error),
        cmocka_unit_test(test_list_mode),
        cmocka_unit_test(test_list_covers_the_files),
    };
    return cmocka_run_group_tests(tests, make_file, remove_file);
}
