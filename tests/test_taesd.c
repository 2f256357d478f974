/* TAESD against tests/data/taesd.safetensors (1e-4 x max(1, |ref|)), with the
 * upstream combined names of the golden weights, the diffusers
 * AutoencoderTiny names (a copy renamed through assets/taesd/NAMES.tsv) and
 * a split upstream decoder file (prefix stripped). */
#include <unistd.h>

#include "testutil.h"
#include "vae/vae.h"

#define TOL 1e-4
#define WEIGHTS "tests/data/taesd-weights.safetensors"

typedef struct fixture {
    wt_safetensors cases;
    vae_taesd *taesd;
} fixture;

static int setup(void **state)
{
    static fixture fx;
    fm_error err = {0};
    *state = &fx;
    if (wt_st_open(&fx.cases, "tests/data/taesd.safetensors", &err)) return -1;
    fx.taesd = vae_taesd_open(WEIGHTS, &err);
    if (!fx.taesd) fprintf(stderr, "%s\n", err.msg);
    return fx.taesd ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    vae_taesd_free(fx->taesd);
    wt_st_close(&fx->cases);
    return 0;
}

static double rel_err(const float *got, const float *ref, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

/* Every traced "dec.after.N" / "enc.after.N" with a golden, whole or as the
 * stored channel slice ".chA_B". */
typedef struct tracer {
    const wt_safetensors *cases;
    int n, bad;
    double worst;
} tracer;

static void on_trace(void *user, const char *name, const float *x, int c, int h, int w)
{
    tracer *t = user;
    const wt_st_tensor *g = wt_st_find(t->cases, name);
    int c0 = 0, c1 = c - 1;
    char sliced[64];
    for (int a = 0; !g && a < 1; a++)
        for (int b = 0; !g && b < c; b++) {
            snprintf(sliced, sizeof sliced, "%s.ch%d_%d", name, a, b);
            if ((g = wt_st_find(t->cases, sliced))) c1 = b;
        }
    if (!g) return;
    size_t plane = (size_t)h * w, n = (size_t)(c1 - c0 + 1) * plane;
    if ((size_t)wt_st_numel(g) != n) {
        t->bad = 1;
        return;
    }
    fm_error err = {0};
    float *ref = wt_st_to_f32(g, &err);
    double e = rel_err(x + c0 * plane, ref, n);
    printf("    %-22s max rel err %.3g\n", g->name, e);
    if (!(e <= t->worst)) t->worst = e;
    t->n++;
    core_free(ref);
}

static float *decode(vae_taesd *t, const wt_safetensors *cases, const char *zname, int *H, int *W)
{
    const wt_st_tensor *zt = wt_st_find(cases, zname);
    assert_non_null(zt);
    int h = (int)zt->shape[2], w = (int)zt->shape[3];
    float *z = tu_f32(cases, zname, NULL);
    float *img = core_alloc(sizeof(float) * 3 * 64 * (size_t)h * w);
    fm_error err = {0};
    assert_int_equal(vae_taesd_decode(t, img, (size_t)3 * 64 * h * w, z, (size_t)vae_taesd_latent_channels(t) * h * w, h,
                                     w, &err), 0);
    core_free(z);
    *H = 8 * h;
    *W = 8 * w;
    return img;
}

static float *encode(vae_taesd *t, const float *img, int H, int W)
{
    float *z = core_alloc(sizeof(float) * 4 * (size_t)(H / 8) * (W / 8));
    fm_error err = {0};
    assert_int_equal(vae_taesd_encode(t, z, img, H, W, &err), 0);
    return z;
}

static void check(const wt_safetensors *cases, const char *name, const float *got, size_t n)
{
    float *ref = tu_f32(cases, name, NULL);
    printf("    %-22s max rel err %.3g\n", name, rel_err(got, ref, n));
    core_free(ref);
    tu_check(cases, name, got, n, TOL);
}

static void test_decoder(void **state)
{
    fixture *fx = *state;
    assert_int_equal(vae_taesd_latent_channels(fx->taesd), 4);
    tracer tr = {.cases = &fx->cases};
    vae_taesd_set_trace(fx->taesd, on_trace, &tr);
    int H, W;
    float *img = decode(fx->taesd, &fx->cases, "dec.z", &H, &W);
    vae_taesd_set_trace(fx->taesd, NULL, NULL);
    assert_int_equal(H, 64);
    assert_false(tr.bad);
    assert_int_equal(tr.n, 9); /* after 0, 2, 5, 7, 10, 12, 15, 17, 18 (after 19 is dec.out) */
    assert_true(tr.worst <= TOL);
    check(&fx->cases, "dec.out", img, 3 * (size_t)H * W);
    core_free(img);
    img = decode(fx->taesd, &fx->cases, "dec_ns.z", &H, &W);
    assert_int_equal(W, 80);
    check(&fx->cases, "dec_ns.out", img, 3 * (size_t)H * W);
    core_free(img);
}

static void test_encoder_and_round_trip(void **state)
{
    fixture *fx = *state;
    float *img = tu_f32(&fx->cases, "enc.img", NULL);
    tracer tr = {.cases = &fx->cases};
    vae_taesd_set_trace(fx->taesd, on_trace, &tr);
    float *z = encode(fx->taesd, img, 64, 64);
    vae_taesd_set_trace(fx->taesd, NULL, NULL);
    assert_false(tr.bad);
    assert_int_equal(tr.n, 4); /* after 1, 5, 9, 13 (enc.after.14 is enc.out, stored as such) */
    assert_true(tr.worst <= TOL);
    check(&fx->cases, "enc.out", z, 4 * 8 * 8);
    float scaled[4 * 8 * 8];
    vae_taesd_scale_latents(scaled, z, 4 * 8 * 8);
    check(&fx->cases, "enc.scaled", scaled, 4 * 8 * 8);
    float *rt = core_alloc(sizeof(float) * 3 * 64 * 64);
    fm_error err = {0};
    assert_int_equal(vae_taesd_decode(fx->taesd, rt, 3 * 64 * 64, z, 4 * 8 * 8, 8, 8, &err), 0);
    check(&fx->cases, "rt.out", rt, 3 * 64 * 64);
    core_free(rt);
    core_free(z);
    core_free(img);
}

/* ---- writing renamed copies of the golden weights ---- */

typedef struct rename_rule {
    char from[96], to[96];
} rename_rule;

/* NAMES.tsv: upstream_name, diffusers_name, shape. */
static int read_names(rename_rule *rules, int max)
{
    FILE *fp = fopen("assets/taesd/NAMES.tsv", "r");
    assert_non_null(fp);
    char line[512];
    int n = 0;
    assert_non_null(fgets(line, sizeof line, fp));
    assert_non_null(strstr(line, "upstream_name\tdiffusers_name\tshape"));
    while (n < max && fgets(line, sizeof line, fp)) {
        char shape[64];
        if (sscanf(line, "%95[^\t]\t%95[^\t]\t%63s", rules[n].from, rules[n].to, shape) == 3) n++;
    }
    fclose(fp);
    return n;
}

/* Writes the tensors of src whose name a rule maps (to = NULL: drop) to a
 * temporary safetensors file; returns its path (static storage). */
static const char *write_renamed(const wt_safetensors *src, const rename_rule *rules, int n)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/fm_taesd_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t cap = 1 << 16, len = 0, off = 0;
    char *hdr = malloc(cap);
    len += (size_t)snprintf(hdr + len, cap - len, "{");
    for (int i = 0; i < n; i++) {
        const wt_st_tensor *t = wt_st_find(src, rules[i].from);
        assert_non_null(t);
        len += (size_t)snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", len > 1 ? "," : "",
                                rules[i].to, core_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            len += (size_t)snprintf(hdr + len, cap - len, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        off += t->nbytes;
        assert_true(len < cap - 512);
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    uint64_t hl = len;
    assert_int_equal(write(fd, &hl, 8), 8);
    assert_int_equal(write(fd, hdr, len), (ssize_t)len);
    for (int i = 0; i < n; i++) {
        const wt_st_tensor *t = wt_st_find(src, rules[i].from);
        assert_int_equal(write(fd, t->data, t->nbytes), (ssize_t)t->nbytes);
    }
    close(fd);
    free(hdr);
    return path;
}

static void test_diffusers_names(void **state)
{
    fixture *fx = *state;
    static rename_rule rules[200];
    int n = read_names(rules, 200);
    assert_int_equal(n, 134);
    wt_safetensors src;
    tu_open(&src, WEIGHTS);
    const char *path = write_renamed(&src, rules, n);
    wt_st_close(&src);
    fm_error err = {0};
    vae_taesd *t = vae_taesd_open(path, &err);
    unlink(path);
    if (!t) fail_msg("%s", err.msg);
    assert_true(vae_taesd_has_encoder(t) && vae_taesd_has_decoder(t));
    int H, W;
    float *a = decode(t, &fx->cases, "dec.z", &H, &W), *b = decode(fx->taesd, &fx->cases, "dec.z", &H, &W);
    assert_memory_equal(a, b, sizeof(float) * 3 * H * W);
    check(&fx->cases, "dec.out", a, 3 * (size_t)H * W);
    float *img = tu_f32(&fx->cases, "enc.img", NULL);
    float *z = encode(t, img, 64, 64);
    check(&fx->cases, "enc.out", z, 4 * 8 * 8);
    core_free(z);
    core_free(img);
    core_free(a);
    core_free(b);
    vae_taesd_free(t);
}

/* taesd_decoder.* as published: the decoder's keys without prefix. */
static void test_split_decoder_file(void **state)
{
    fixture *fx = *state;
    static rename_rule rules[200];
    int n = read_names(rules, 200), k = 0;
    for (int i = 0; i < n; i++)
        if (!strncmp(rules[i].from, "decoder.", 8)) {
            rename_rule r;
            memcpy(r.from, rules[i].from, sizeof r.from);
            memcpy(r.to, rules[i].from + 8, sizeof r.to - 8);
            r.to[sizeof r.to - 8] = 0;
            rules[k++] = r;
        }
    assert_int_equal(k, 67);
    wt_safetensors src;
    tu_open(&src, WEIGHTS);
    const char *path = write_renamed(&src, rules, k);
    wt_st_close(&src);
    fm_error err = {0};
    vae_taesd *t = vae_taesd_open(path, &err);
    unlink(path);
    if (!t) fail_msg("%s", err.msg);
    assert_true(vae_taesd_has_decoder(t));
    assert_false(vae_taesd_has_encoder(t));
    int H, W;
    float *img = decode(t, &fx->cases, "dec_ns.z", &H, &W);
    check(&fx->cases, "dec_ns.out", img, 3 * (size_t)H * W);
    float z[4 * 8 * 8];
    fm_error err2 = {0};
    assert_int_equal(vae_taesd_encode(t, z, img, 64, 64, &err2), FM_EINPUT);
    assert_non_null(strstr(err2.msg, "no encoder"));
    core_free(img);
    vae_taesd_free(t);
}

static void test_not_taesd(void **state)
{
    (void)state;
    fm_error err = {0};
    assert_null(vae_taesd_open("tests/data/tiny-sd1-cases.safetensors", &err));
    assert_int_equal(err.code, FM_EINPUT);
    assert_non_null(strstr(err.msg, "not a TAESD file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decoder),
        cmocka_unit_test(test_encoder_and_round_trip),
        cmocka_unit_test(test_diffusers_names),
        cmocka_unit_test(test_split_decoder_file),
        cmocka_unit_test(test_not_taesd),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
