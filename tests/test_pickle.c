/* PyTorch files (weights/pickle.c, torchzip.c, torchfile.c) against what
 * torch.load returns (tests/data/README.md#pytorch-files): the real
 * structures, the refused pickles (nothing runs), hostile files. */
#include "cliutil.h"

#include "weights/pickle.h"
#include "weights/source.h"

#define PK "tests/data/pickles/"

/* Every tensor of s equals the .expect file's of path (torch.load's view,
 * made contiguous): same names, dtypes, shapes and bytes. */
static void expect_source(wt_source *s, const char *path)
{
    char exp[300];
    snprintf(exp, sizeof exp, "%s.expect.safetensors", path);
    wt_safetensors st;
    tu_open(&st, exp);
    assert_int_equal(wt_count(s), st.n_tensors);
    for (int i = 0; i < st.n_tensors; i++) {
        const wt_tensor *want = &st.tensors[i], *got = wt_at(s, i);
        assert_string_equal(got->name, want->name);
        assert_ptr_equal(wt_find(s, want->name), got);
        assert_int_equal(got->dtype, want->dtype);
        assert_int_equal(got->ndim, want->ndim);
        for (int d = 0; d < want->ndim; d++) assert_int_equal(got->shape[d], want->shape[d]);
        assert_int_equal(got->nbytes, want->nbytes);
        assert_memory_equal(got->data, want->data, want->nbytes);
    }
    wt_st_close(&st);
    wt_close(s);
}

/* path through wt_open (mapped) and wt_torch_open_mem (the fuzz target's
 * way in: the same parse on a buffer). */
static void expect_same(const char *path)
{
    fm_error err = {0};
    wt_source *s = wt_open(path, &err);
    if (!s) fail_msg("%s", err.msg);
    expect_source(s, path);
    size_t len = 0;
    uint8_t *buf = cu_slurp(path, &len);
    if (!(s = wt_torch_open_mem(buf, len, path, &err))) fail_msg("%s", err.msg);
    expect_source(s, path);
    free(buf);
}

static void test_structures(void **state)
{
    (void)state;
    static const char *files[] = {"lightning.ckpt", "bare.pt", "ema.ckpt", "embedding.pt", "embedding-ti.pt",
                                  "esrgan.pth", "protocol4.pt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[200];
        snprintf(p, sizeof p, PK "%s", files[i]);
        expect_same(p);
    }
}

/* Strided views are gathered, offset views map in place. */
static void test_views(void **state)
{
    (void)state;
    fm_error err = {0};
    wt_source *s = wt_open(PK "lightning.ckpt", &err);
    assert_non_null(s);
    const wt_tensor *f = wt_find(s, "model.f32"), *row = wt_find(s, "model.row"), *t = wt_find(s, "model.t");
    assert_non_null(f);
    assert_non_null(row);
    assert_non_null(t);
    assert_ptr_equal(row->data, (const float *)f->data + 12); /* base[2]: same storage, offset 12 */
    assert_int_equal(t->shape[0], 6);
    assert_int_equal(t->shape[1], 4);
    assert_true((const char *)t->data < (const char *)f->data || (const char *)t->data >= (const char *)f->data + f->nbytes);
    const wt_tensor *sc = wt_find(s, "model.scalar");
    assert_non_null(sc);
    assert_int_equal(sc->ndim, 0);
    assert_true(*(const float *)sc->data == 2.5f);
    wt_close(s);
}

/* Scalars beside the state dict are metadata; numpy scalars (global_step)
 * and nested objects are not. */
static void test_metadata(void **state)
{
    (void)state;
    fm_error err = {0};
    wt_source *s = wt_open(PK "lightning.ckpt", &err);
    assert_non_null(s);
    assert_string_equal(wt_meta(s, "epoch"), "3");
    assert_string_equal(wt_meta(s, "pytorch-lightning_version"), "1.4.2");
    assert_null(wt_meta(s, "global_step"));
    assert_null(wt_meta(s, "callbacks"));
    assert_null(wt_find(s, "optimizer_states.0.state.0.exp_avg")); /* inside a list: not the weights */
    wt_close(s);
    s = wt_open(PK "embedding.pt", &err);
    assert_non_null(s);
    assert_string_equal(wt_meta(s, "name"), "tiny-emb");
    assert_string_equal(wt_meta(s, "step"), "10");
    assert_string_equal(wt_meta(s, "sd_checkpoint_name"), "tiny-sd1");
    wt_close(s);
}

static void refused(const char *file, const char *want)
{
    fm_error err = {0};
    wt_source *s = wt_open(file, &err);
    assert_null(s);
    assert_int_equal(err.code, FM_EINPUT);
    if (!strstr(err.msg, want)) fail_msg("%s: got \"%s\", want \"%s\"", file, err.msg, want);
}

static void test_refused_globals(void **state)
{
    (void)state;
    refused(PK "evil-os-system.ckpt", PK "evil-os-system.ckpt: pickle calls os.system: refused");
    refused(PK "evil-posix-system.ckpt", "pickle calls posix.system: refused");
    refused(PK "evil-eval.ckpt", "pickle calls __builtin__.eval: refused");
    refused(PK "legacy.pt", "legacy format");
}

/* The CLI: exit 1, one line naming the call, and the file the pickle
 * would create (torch.load creates it: tools/ref/torch_pickles.py checks)
 * does not appear; as -m, --info, --vae, upscale -m and convert IN. */
static void test_cli_nothing_runs(void **state)
{
    (void)state;
    static const char *names[] = {"os-system", "posix-system", "eval"};
    for (int i = 0; i < 3; i++) {
        char model[200], target[200], err[2048];
        snprintf(model, sizeof model, PK "evil-%s.ckpt", names[i]);
        snprintf(target, sizeof target, "/tmp/fmimage-pwned-%s", names[i]);
        unlink(target);
        const char *args[] = {"-m", model, "a fox", "-o", "build/test-tmp/pwned.png", "-q", NULL};
        assert_int_equal(cu_run(args, err, sizeof err), 1);
        assert_non_null(strstr(err, "pickle calls "));
        assert_non_null(strstr(err, ": refused\n"));
        assert_true(strchr(err, '\n') == err + strlen(err) - 1); /* one line */
        assert_false(cu_exists(target));
        assert_false(cu_exists("build/test-tmp/pwned.png"));
        const char *info[] = {"--info", "-m", model, NULL};
        assert_int_equal(cu_run(info, err, sizeof err), 1);
        assert_false(cu_exists(target));
        /* the other options that read weight files go through the same reader */
        const char *vae[] = {"-m", "tests/data/tiny-sd1.safetensors", "--vae", model, "a fox", "-W", "64", "-H", "64",
                             "--steps", "1", "-o", "build/test-tmp/pwned.png", "-q", NULL};
        const char *up[] = {"upscale", "-m", model, "tests/data/e2e.png", "-o", "build/test-tmp/pwned.png", "-q", NULL};
        const char *conv[] = {"convert", model, "-o", "build/test-tmp/pwned.safetensors", "-q", NULL};
        const char *const *runs[] = {vae, up, conv};
        for (int r = 0; r < 3; r++) {
            assert_int_equal(cu_run(runs[r], err, sizeof err), 1);
            if (!strstr(err, "pickle calls ") || !strstr(err, ": refused\n")) fail_msg("%s: %s", runs[r][0], err);
            assert_false(cu_exists(target));
        }
        assert_false(cu_exists("build/test-tmp/pwned.png"));
        assert_false(cu_exists("build/test-tmp/pwned.safetensors"));
    }
}

/* Every truncation and many byte flips of a real file: an error of one
 * line or a source whose tensors lie inside the file, never a crash. */
static void test_hostile(void **state)
{
    (void)state;
    size_t len = 0;
    uint8_t *orig = cu_slurp(PK "lightning.ckpt", &len);
    assert_non_null(orig);
    mkdir("build/test-tmp", 0777);
    char path[100];
    snprintf(path, sizeof path, "build/test-tmp/hostile-%d.ckpt", (int)getpid());
    uint64_t x = 88172645463325252ull;
    for (size_t k = 0; k < len + 600; k++) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        if (k < len) {
            fwrite(orig, 1, k, f); /* a truncation */
        } else {
            uint8_t *c = malloc(len);
            memcpy(c, orig, len);
            for (int j = 0; j < 4; j++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                c[x % len] ^= (uint8_t)(1u << (x >> 32 & 7));
            }
            fwrite(c, 1, len, f);
            free(c);
        }
        fclose(f);
        fm_error err = {0};
        wt_source *s = wt_open(path, &err);
        if (!s) {
            assert_int_equal(err.code, FM_EINPUT);
            assert_null(strchr(err.msg, '\n'));
            continue;
        }
        for (int i = 0; i < wt_count(s); i++) {
            const wt_tensor *t = wt_at(s, i);
            volatile uint8_t sum = 0;
            for (size_t b = 0; b < t->nbytes; b++) sum ^= ((const uint8_t *)t->data)[b];
            (void)sum;
        }
        wt_close(s);
    }
    unlink(path);
    free(orig);
}

/* The interpreter alone: opcodes outside the list, bad memo, depth. */
static void test_interpreter(void **state)
{
    (void)state;
    static const struct { const char *pkl; size_t len; const char *want; } cases[] = {
        {"\x80\x02}q\x00.", 6, NULL},
        {"\x80\x02\x63os\nsystem\nq\x00.", 17, "pickle calls os.system: refused"},
        {"\x80\x04\x8c\x05posix\x8c\x06system\x93.", 18, "pickle calls posix.system: refused"},
        {"\x80\x02\x69os\nsystem\n.", 15, "opcode INST"},
        {"\x80\x02h\x05.", 5, "memo entry 5 unset"},
        {"\x80\x02}", 3, "ends without STOP"},
        {"\x80\x02K\x01.", 5, "holds a int, not a dict"},
        {"\x80\x02}(K\x01u.", 8, "odd number"},
        {"\x80\x02]q\x00" "h\x00" "a.", 9, "holds a list"}, /* a list holding itself */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wt_pk_result r;
        fm_error err = {0};
        int rc = wt_pk_parse((const uint8_t *)cases[i].pkl, cases[i].len, &r, "x.pkl", &err);
        if (!cases[i].want) {
            assert_int_equal(rc, 0);
            wt_pk_free(&r);
        } else {
            assert_int_equal(rc, FM_EINPUT);
            if (!strstr(err.msg, cases[i].want)) fail_msg("case %zu: got \"%s\", want \"%s\"", i, err.msg, cases[i].want);
        }
    }
    /* a dict holding itself 1000 times: each dict is walked once */
    size_t n = 0;
    uint8_t buf[8192];
    memcpy(buf, "\x80\x02}q\x00(", 6);
    n = 6;
    for (int i = 0; i < 1000; i++) {
        buf[n++] = 'K';
        buf[n++] = (uint8_t)i;
        buf[n++] = 'h';
        buf[n++] = 0;
    }
    buf[n++] = 'u';
    buf[n++] = '.';
    wt_pk_result r;
    fm_error err = {0};
    assert_int_equal(wt_pk_parse(buf, n, &r, "x.pkl", &err), 0);
    assert_int_equal(r.n_tensors, 0);
    wt_pk_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structures),     cmocka_unit_test(test_views),
        cmocka_unit_test(test_metadata),       cmocka_unit_test(test_refused_globals),
        cmocka_unit_test(test_cli_nothing_runs), cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_interpreter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
