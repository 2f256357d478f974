/* The KL-VAE against the tiny SD 1.x and SDXL goldens (every vae.* tensor
 * and intermediate, 1e-4 x max(1, |ref|)), tiled against untiled decoding,
 * and the memory estimate. */
#include <unistd.h>

#include "testutil.h"
#include "vae/vae.h"

#define TOL 1e-4

/* The "vae" configs of tests/data/README.md (fmimage.config of each file). */
static void tiny_config(wt_vae_config *cfg, float scale_factor)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->prefix, "first_stage_model.");
    cfg->ch = 32;
    cfg->n_levels = 2;
    cfg->ch_mult[0] = 1;
    cfg->ch_mult[1] = 2;
    cfg->num_res_blocks = 1;
    cfg->z_channels = 4;
    cfg->embed_dim = 4;
    cfg->in_channels = 3;
    cfg->out_ch = 3;
    cfg->double_z = 1;
    cfg->scale_factor = scale_factor;
}

/* SD 1.x/2.x/SDXL full size: ch 128, ch_mult [1,2,4,4], 2 res blocks. */
static void sd_config(wt_vae_config *cfg)
{
    tiny_config(cfg, 0.18215f);
    cfg->ch = 128;
    cfg->n_levels = 4;
    cfg->ch_mult[0] = 1;
    cfg->ch_mult[1] = 2;
    cfg->ch_mult[2] = 4;
    cfg->ch_mult[3] = 4;
    cfg->num_res_blocks = 2;
}

/* Compares every traced intermediate that has a golden (cases prefix +
 * name, or an alias) and remembers the worst relative error of each. */
typedef struct tracer {
    const wt_safetensors *cases;
    const char *prefix;
    const char *alias_from, *alias_to; /* e.g. "dec.post_quant" -> "post_quant" */
    int n;
    char name[16][128];
    double worst[16];
    int bad_size;
} tracer;

static double rel_err(const float *got, const float *ref, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static void on_trace(void *user, const char *name, const float *x, int c, int h, int w)
{
    tracer *t = user;
    char golden[128];
    if (t->alias_from && !strcmp(name, t->alias_from)) name = t->alias_to;
    snprintf(golden, sizeof golden, "%s%s", t->prefix, name);
    const wt_st_tensor *g = wt_st_find(t->cases, golden);
    if (!g || t->n == 16) return;
    if (wt_st_numel(g) != (int64_t)c * h * w) {
        t->bad_size = 1;
        return;
    }
    fm_error err = {0};
    float *ref = wt_st_to_f32(g, &err);
    snprintf(t->name[t->n], sizeof t->name[0], "%s", golden);
    t->worst[t->n++] = rel_err(x, ref, (size_t)c * h * w);
    core_free(ref);
}

static void tracer_assert(const tracer *t, int expected)
{
    assert_false(t->bad_size);
    for (int i = 0; i < t->n; i++) {
        printf("    %-24s max rel err %.3g\n", t->name[i], t->worst[i]);
        if (!(t->worst[i] <= TOL)) fail_msg("%s: relative error %.3g > %.3g", t->name[i], t->worst[i], TOL);
    }
    assert_int_equal(t->n, expected);
}

typedef struct fixture {
    wt_safetensors model, cases;
    vae_kl *vae;
} fixture;

static int open_fixture(fixture *fx, const char *model, const char *cases, float scale)
{
    fm_error err = {0};
    if (wt_st_open(&fx->model, model, &err) || wt_st_open(&fx->cases, cases, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    wt_vae_config cfg;
    tiny_config(&cfg, scale);
    fx->vae = vae_load(&fx->model.src, &cfg, FM_PREC_FP32, &err);
    if (!fx->vae) fprintf(stderr, "%s\n", err.msg);
    return fx->vae ? 0 : -1;
}

static int setup_sd1(void **state)
{
    static fixture fx;
    *state = &fx;
    return open_fixture(&fx, "tests/data/tiny-sd1.safetensors", "tests/data/tiny-sd1-cases.safetensors", 0.18215f);
}

static int setup_sdxl(void **state)
{
    static fixture fx;
    *state = &fx;
    return open_fixture(&fx, "tests/data/tiny-sdxl.safetensors", "tests/data/sdxl-cases.safetensors", 0.13025f);
}

static int teardown(void **state)
{
    fixture *fx = *state;
    vae_free(fx->vae);
    wt_st_close(&fx->model);
    wt_st_close(&fx->cases);
    return 0;
}

static const wt_st_tensor *golden(const fixture *fx, const char *name)
{
    const wt_st_tensor *t = wt_st_find(&fx->cases, name);
    if (!t) fail_msg("golden %s missing", name);
    return t;
}

/* Decodes golden zname (divided by divide) and checks it against outname. */
static void check_decode(fixture *fx, tracer *tr, const char *zname, const char *outname, float divide)
{
    const wt_st_tensor *zt = golden(fx, zname);
    int h = (int)zt->shape[2], w = (int)zt->shape[3], f = vae_latent_factor(vae_config_of(fx->vae));
    size_t nz;
    float *z = tu_f32(&fx->cases, zname, &nz);
    for (size_t i = 0; i < nz; i++) z[i] /= divide;
    float *img = core_alloc(sizeof(float) * 3 * (size_t)h * w * f * f);
    vae_set_trace(fx->vae, tr ? on_trace : NULL, tr);
    fm_error err = {0};
    assert_int_equal(vae_decode(fx->vae, img, z, h, w, &err), 0);
    vae_set_trace(fx->vae, NULL, NULL);
    size_t n;
    float *ref = tu_f32(&fx->cases, outname, &n);
    assert_int_equal(n, 3 * (size_t)h * w * f * f);
    printf("    %-24s max rel err %.3g\n", outname, rel_err(img, ref, n));
    tu_assert_close(img, ref, n, TOL, outname);
    core_free(ref);
    core_free(img);
    core_free(z);
}

static void check_encode(fixture *fx, tracer *tr, const char *imgname, const char *prefix)
{
    const wt_st_tensor *it = golden(fx, imgname);
    int H = (int)it->shape[2], W = (int)it->shape[3], f = vae_latent_factor(vae_config_of(fx->vae));
    float *img = tu_f32(&fx->cases, imgname, NULL);
    size_t nl = 4 * (size_t)(H / f) * (W / f);
    float *mean = core_alloc(sizeof(float) * nl), *logvar = core_alloc(sizeof(float) * nl);
    vae_set_trace(fx->vae, tr ? on_trace : NULL, tr);
    fm_error err = {0};
    assert_int_equal(vae_encode(fx->vae, mean, logvar, img, H, W, &err), 0);
    vae_set_trace(fx->vae, NULL, NULL);
    char name[64];
    float *ref;
    snprintf(name, sizeof name, "%s.mean", prefix);
    ref = tu_f32(&fx->cases, name, NULL);
    printf("    %-24s max rel err %.3g\n", name, rel_err(mean, ref, nl));
    core_free(ref);
    tu_check(&fx->cases, name, mean, nl, TOL);
    snprintf(name, sizeof name, "%s.logvar", prefix);
    ref = tu_f32(&fx->cases, name, NULL);
    printf("    %-24s max rel err %.3g\n", name, rel_err(logvar, ref, nl));
    core_free(ref);
    tu_check(&fx->cases, name, logvar, nl, TOL);
    core_free(mean);
    core_free(logvar);
    core_free(img);
}

static void test_sd1_decode(void **state)
{
    fixture *fx = *state;
    assert_int_equal(vae_latent_factor(vae_config_of(fx->vae)), 2);
    tracer tr = {.cases = &fx->cases, .prefix = "vae."};
    check_decode(fx, &tr, "vae.z", "vae.dec", 1.0f);
    /* post_quant, conv_in, mid, up.1, up.0, dec */
    tracer_assert(&tr, 6);
}

static void test_sd1_encode(void **state)
{
    fixture *fx = *state;
    assert_true(vae_has_encoder(fx->vae));
    tracer tr = {.cases = &fx->cases, .prefix = "vae."};
    check_encode(fx, &tr, "vae.img", "vae.enc");
    /* conv_in, down.0, down.1, mid, h, moments */
    tracer_assert(&tr, 6);
}

static void test_sd1_non_square(void **state)
{
    fixture *fx = *state;
    check_decode(fx, NULL, "vae_ns.z", "vae_ns.dec", 1.0f);
    check_encode(fx, NULL, "vae_ns.img", "vae_ns.enc");
}

/* The pipeline's convention: the sampler's latent divided by scale_factor. */
static void test_sd1_e2e_decode(void **state)
{
    fixture *fx = *state;
    check_decode(fx, NULL, "e2e.x_final", "e2e.dec", vae_config_of(fx->vae)->scale_factor);
    check_decode(fx, NULL, "e2e2.x_final", "e2e2.dec", vae_config_of(fx->vae)->scale_factor);
}

static void test_sdxl_decode(void **state)
{
    fixture *fx = *state;
    tracer tr = {.cases = &fx->cases, .prefix = "vae.", .alias_from = "dec.post_quant", .alias_to = "post_quant"};
    check_decode(fx, &tr, "vae.z", "vae.dec", 1.0f);
    tracer_assert(&tr, 2); /* post_quant, dec */
    check_decode(fx, NULL, "e2e.x_final", "e2e.decoded", vae_config_of(fx->vae)->scale_factor);
    check_decode(fx, NULL, "e2ez.x_final", "e2ez.decoded", vae_config_of(fx->vae)->scale_factor);
}

/* Convolutions in row bands (forced by a tiny scratch limit: one or a few
 * output rows per band) give the same results. */
static void test_banded_convolutions(void **state)
{
    fixture *fx = *state;
    vae_set_conv_scratch(fx->vae, 16 << 10);
    check_decode(fx, NULL, "vae.z", "vae.dec", 1.0f);
    check_decode(fx, NULL, "vae_ns.z", "vae_ns.dec", 1.0f);
    check_encode(fx, NULL, "vae.img", "vae.enc");
    check_encode(fx, NULL, "vae_ns.img", "vae_ns.enc");
    vae_set_conv_scratch(fx->vae, 128 << 20);
}

static double psnr(const float *a, const float *b, size_t n, double range)
{
    double se = 0;
    for (size_t i = 0; i < n; i++) se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return 10 * log10(range * range / (se / n));
}

/* A 96x96 latent (192x192 px at latent factor 2) as 3x3 tiles of 48 with
 * overlap >= 16, against the untiled decode. (Larger latents make the
 * untiled reference's global attention too slow for a unit test, above
 * all under the sanitizers.) */
static void test_tiled_matches_untiled(void **state)
{
    fixture *fx = *state;
    int h = 96, w = 96, f = 2;
    size_t nz = 4 * (size_t)h * w, ni = 3 * (size_t)h * w * f * f;
    float *z = core_alloc(sizeof(float) * nz), *full = core_alloc(sizeof(float) * ni),
          *tiled = core_alloc(sizeof(float) * ni);
    /* smooth structure plus noise, at the e2e latents' scale (x/0.18215) */
    tu_fill_random(z, nz, 7);
    for (int c = 0; c < 4; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                z[((size_t)c * h + y) * w + x] =
                    (float)(3.0 * sin(0.05 * x + c) * cos(0.07 * y) + 2.0 * z[((size_t)c * h + y) * w + x]);
    fm_error err = {0};
    assert_int_equal(vae_decode(fx->vae, full, z, h, w, &err), 0);
    vae_tiles t;
    vae_tiles_default(&t);
    t.tile = 48;
    t.overlap = 16;
    assert_int_equal(vae_decode_tiled(fx->vae, tiled, z, h, w, &t, &err), 0);
    double p_shared = psnr(tiled, full, ni, 2.0);
    t.whole_mid_max = 0;
    assert_int_equal(vae_decode_tiled(fx->vae, tiled, z, h, w, &t, &err), 0);
    double p_tile_attn = psnr(tiled, full, ni, 2.0);
    printf("    tiled (3x3 tiles) vs untiled 192x192 px: PSNR %.2f dB (whole mid, shared GroupNorm stats), "
           "%.2f dB (per-tile attention)\n", p_shared, p_tile_attn);
    assert_true(p_shared >= 40.0);
    /* a latent no bigger than a tile decodes exactly as untiled */
    assert_int_equal(vae_decode_tiled(fx->vae, tiled, z, 32, 32, &t, &err), 0);
    assert_int_equal(vae_decode(fx->vae, full, z, 32, 32, &err), 0);
    assert_memory_equal(tiled, full, sizeof(float) * 3 * 64 * 64);
    core_free(z);
    core_free(full);
    core_free(tiled);
}

static void test_memory_estimate(void **state)
{
    (void)state;
    wt_vae_config sd;
    sd_config(&sd);
    assert_int_equal(vae_latent_factor(&sd), 8);
    size_t full512 = vae_decode_bytes(&sd, 64, 64, NULL);
    size_t full1024 = vae_decode_bytes(&sd, 128, 128, NULL);
    vae_tiles t;
    vae_tiles_default(&t);
    size_t tiled1024 = vae_decode_bytes(&sd, 128, 128, &t);
    size_t tiled4096 = vae_decode_bytes(&sd, 512, 512, &t);
    printf("    SD decode working memory: 512x512 %zu MB, 1024x1024 %zu MB, tiled 1024x1024 %zu MB, "
           "tiled 4096x4096 %zu MB\n", full512 >> 20, full1024 >> 20, tiled1024 >> 20, tiled4096 >> 20);
    /* three activation slots: the 512x512x256 upsampled map (256 MB) and two
     * 128-channel maps, plus the row bands and the kernels' scratch (a few
     * MB: the implicit GEMM never holds im2col columns, so the estimate no
     * longer counts them) */
    assert_true(full512 >= (size_t)512 << 20);
    assert_true(full1024 > 3 * full512);
    assert_true(tiled1024 < full512 + ((size_t)64 << 20));
    assert_true(tiled4096 < full512 + ((size_t)64 << 20));
    fm_error err = {0};
    assert_int_equal(vae_check_decode_memory(&sd, 128, 128, NULL, full1024 - 1, &err), FM_EINPUT);
    assert_non_null(strstr(err.msg, "--vae-tiling"));
    assert_non_null(strstr(err.msg, "1024x1024"));
    fm_error ok = {0};
    assert_int_equal(vae_check_decode_memory(&sd, 128, 128, &t, full1024 - 1, &ok), 0);
    fm_error err2 = {0};
    assert_int_equal(vae_check_decode_memory(&sd, 128, 128, &t, 1 << 20, &err2), FM_EINPUT);
    assert_non_null(strstr(err2.msg, "--vae-tiling"));
    assert_true(vae_memory_available() > 0);
}

/* A full-size SD VAE with random F16 weights in the real tensor layout
 * (first_stage_model.* of golden layouts/sd1.tsv; SD 2.x and SDXL have the
 * identical layout): loads with every shape checked, decodes 64x64 px and
 * encodes it back to finite values. */
static void test_full_size_layout(void **state)
{
    (void)state;
    FILE *fp = fopen("tests/data/layout-sd1-vae.tsv", "r");
    assert_non_null(fp);
    static char names[300][96];
    static int64_t shapes[300][4];
    int nd[300], n = 0;
    char line[256];
    while (n < 300 && fgets(line, sizeof line, fp)) {
        char dt[8], shp[64];
        assert_int_equal(sscanf(line, "%95s %7s %63s", names[n], dt, shp), 3);
        nd[n] = 0;
        for (char *tok = strtok(shp, ","); tok; tok = strtok(NULL, ",")) shapes[n][nd[n]++] = atoll(tok);
        n++;
    }
    fclose(fp);
    assert_int_equal(n, 248);
    char path[] = "/tmp/fm_vae_full_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t cap = 1 << 16, len = 0, off = 0;
    char *hdr = malloc(cap);
    len += (size_t)snprintf(hdr, cap, "{");
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        len += (size_t)snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[", i ? "," : "", names[i]);
        for (int d = 0; d < nd[i]; d++) {
            len += (size_t)snprintf(hdr + len, cap - len, "%s%lld", d ? "," : "", (long long)shapes[i][d]);
            numel *= (size_t)shapes[i][d];
        }
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + 2 * numel);
        off += 2 * numel;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    FILE *out = fdopen(fd, "wb");
    uint64_t hl = len;
    fwrite(&hl, 8, 1, out);
    fwrite(hdr, 1, len, out);
    free(hdr);
    for (int i = 0; i < n; i++) {
        size_t numel = 1, fan_in = 1;
        for (int d = 0; d < nd[i]; d++) numel *= (size_t)shapes[i][d];
        for (int d = 1; d < nd[i]; d++) fan_in *= (size_t)shapes[i][d];
        int is_bias = strstr(names[i], ".bias") != NULL;
        float *v = malloc(sizeof(float) * numel);
        uint16_t *h16 = malloc(2 * numel);
        tu_fill_random(v, numel, (uint64_t)i + 1);
        for (size_t k = 0; k < numel; k++)
            v[k] = nd[i] == 4 ? v[k] * sqrtf(3.0f / fan_in) : is_bias ? 0.1f * v[k] : 1.0f + 0.1f * v[k];
        core_f32_to_f16(h16, v, numel);
        fwrite(h16, 2, numel, out);
        free(v);
        free(h16);
    }
    fclose(out);
    wt_safetensors st;
    tu_open(&st, path);
    unlink(path);
    wt_vae_config cfg;
    sd_config(&cfg);
    fm_error err = {0};
    vae_kl *vae = vae_load(&st.src, &cfg, FM_PREC_AUTO, &err);
    if (!vae) fail_msg("%s", err.msg);
    assert_true(vae_has_encoder(vae));
    float z[4 * 8 * 8], mean[4 * 8 * 8], logvar[4 * 8 * 8];
    float *img = malloc(sizeof(float) * 3 * 64 * 64);
    tu_fill_random(z, 4 * 8 * 8, 3);
    assert_int_equal(vae_decode(vae, img, z, 8, 8, &err), 0);
    for (int i = 0; i < 3 * 64 * 64; i++) assert_true(isfinite(img[i]));
    assert_int_equal(vae_encode(vae, mean, logvar, img, 64, 64, &err), 0);
    for (int i = 0; i < 4 * 8 * 8; i++) assert_true(isfinite(mean[i]) && isfinite(logvar[i]));
    free(img);
    vae_free(vae);
    wt_st_close(&st);
}

static void test_errors(void **state)
{
    fixture *fx = *state;
    wt_vae_config cfg;
    tiny_config(&cfg, 0.18215f);
    cfg.ch_mult[1] = 4; /* 128 channels where the file has 64 */
    fm_error err = {0};
    assert_null(vae_load(&fx->model.src, &cfg, FM_PREC_FP32, &err));
    assert_int_equal(err.code, FM_EINPUT);
    assert_non_null(strstr(err.msg, "shape"));
    tiny_config(&cfg, 0.18215f);
    cfg.latent_factor = 8;
    fm_error err2 = {0};
    assert_null(vae_load(&fx->model.src, &cfg, FM_PREC_FP32, &err2));
    assert_non_null(strstr(err2.msg, "latent factor"));
    float img[3 * 6 * 6] = {0}, lat[4 * 9];
    fm_error err3 = {0};
    assert_int_equal(vae_encode(fx->vae, lat, lat, img, 5, 6, &err3), FM_EINPUT);
    fm_error err4 = {0};
    assert_int_equal(vae_decode(fx->vae, img, lat, 0, 3, &err4), FM_EINPUT);
}

int main(void)
{
    const struct CMUnitTest sd1[] = {
        cmocka_unit_test(test_sd1_decode),
        cmocka_unit_test(test_sd1_encode),
        cmocka_unit_test(test_sd1_non_square),
        cmocka_unit_test(test_sd1_e2e_decode),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_banded_convolutions),
        cmocka_unit_test(test_tiled_matches_untiled),
    };
    const struct CMUnitTest sdxl[] = {
        cmocka_unit_test(test_sdxl_decode),
    };
    const struct CMUnitTest other[] = {
        cmocka_unit_test(test_memory_estimate),
        cmocka_unit_test(test_full_size_layout),
    };
    int fails = cmocka_run_group_tests_name("vae sd1", sd1, setup_sd1, teardown);
    fails += cmocka_run_group_tests_name("vae sdxl", sdxl, setup_sdxl, teardown);
    fails += cmocka_run_group_tests_name("vae memory", other, NULL, NULL);
    return fails;
}
