/* The U-Net against the float64 goldens of the tiny SD 1.x, SD 2.x and SDXL
 * checkpoints (every intermediate the cases hold), the real checkpoints'
 * U-Net layouts, and random larger configurations. */
#include "testutil.h"
#include "unet/unet.h"

#define TOL 1e-4

/* Configurations as documented in tests/data/README.md (fmimage.config). */
static wt_unet_config base_config(void)
{
    wt_unet_config c;
    memset(&c, 0, sizeof c);
    strcpy(c.prefix, "model.diffusion_model.");
    c.in_channels = c.out_channels = 4;
    c.num_heads = c.num_head_channels = -1;
    return c;
}

static wt_unet_config tiny_sd1_config(void)
{
    wt_unet_config c = base_config();
    c.model_channels = 32;
    c.n_levels = 2, c.channel_mult[0] = 1, c.channel_mult[1] = 2;
    c.num_res_blocks = 1;
    c.transformer_depth[0] = 1; /* attention_resolutions [1] */
    c.transformer_depth_middle = 1;
    c.num_heads = 2;
    c.context_dim = 8;
    return c;
}

static wt_unet_config tiny_sd2_config(void)
{
    wt_unet_config c = base_config();
    c.model_channels = 32;
    c.n_levels = 2, c.channel_mult[0] = 1, c.channel_mult[1] = 2;
    c.num_res_blocks = 1;
    c.transformer_depth[0] = c.transformer_depth[1] = 1; /* attention_resolutions [1,2] */
    c.transformer_depth_middle = 1;
    c.num_head_channels = 16;
    c.context_dim = 32;
    c.use_linear_in_transformer = 1;
    return c;
}

static wt_unet_config tiny_sdxl_config(void)
{
    wt_unet_config c = base_config();
    c.model_channels = 32;
    c.n_levels = 3, c.channel_mult[0] = 1, c.channel_mult[1] = 2, c.channel_mult[2] = 2;
    c.num_res_blocks = 1;
    /* attention_resolutions [4,2], transformer_depth [0,1,2]; middle = depth[-1] */
    c.transformer_depth[1] = 1, c.transformer_depth[2] = 2;
    c.transformer_depth_middle = 2;
    c.num_head_channels = 16;
    c.context_dim = 64;
    c.use_linear_in_transformer = 1;
    c.adm_in_channels = 1568;
    return c;
}

/* ---- goldens ---- */

typedef struct checker {
    const wt_safetensors *cases;
    const char *prefix;              /* "unet.", "unet_ns.", ... */
    const char *tsin_name, *emb_name; /* the goldens' names for "temb_sin" and "emb" */
    int checked;
    double worst;
    char worst_name[96];
} checker;

static double max_rel_err(const float *got, const float *ref, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static void check_probe(void *user, const char *name, const float *data, int n, int c, int h, int w)
{
    checker *k = user;
    char g[96];
    if (!strcmp(name, "temb_sin"))
        snprintf(g, sizeof g, "%s%s", k->prefix, k->tsin_name);
    else if (!strcmp(name, "emb"))
        snprintf(g, sizeof g, "%s%s", k->prefix, k->emb_name);
    else if (!strcmp(name, "out"))
        snprintf(g, sizeof g, "%sout", k->prefix);
    else
        snprintf(g, sizeof g, "%sh.%s", k->prefix, name);
    const wt_st_tensor *t = wt_st_find(k->cases, g);
    if (!t) return;
    size_t numel = (size_t)n * c * h * w;
    if (t->ndim == 4)
        assert_true(t->shape[0] == n && t->shape[1] == c && t->shape[2] == h && t->shape[3] == w);
    else
        assert_int_equal((size_t)wt_st_numel(t), numel);
    float *ref = tu_f32(k->cases, g, NULL);
    double e = max_rel_err(data, ref, numel);
    print_message("    %-20s [%d,%d,%d,%d] max rel err %.2e\n", g, n, c, h, w, e);
    if (!(e <= k->worst)) {
        k->worst = e;
        snprintf(k->worst_name, sizeof k->worst_name, "%s", g);
    }
    tu_assert_close(data, ref, numel, TOL, g);
    core_free(ref);
    k->checked++;
}

/* The timesteps as float; vprobe.t is I64 at an offset not 8-aligned, so
 * it is read bytewise here (core_convert_to_f32 loads it as an int64_t). */
static float *timesteps(const wt_safetensors *cases, const char *name)
{
    const wt_st_tensor *tt = wt_st_find(cases, name);
    assert_non_null(tt);
    if (tt->dtype != FM_DT_I64) return tu_f32(cases, name, NULL);
    size_t n = (size_t)wt_st_numel(tt);
    float *t = core_alloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        memcpy(&v, (const char *)tt->data + 8 * i, 8);
        t[i] = (float)v;
    }
    return t;
}

/* Runs the U-Net on the case PREFIX{x,t,context[,y]}, checking every
 * intermediate the cases hold; *mean_diff (if non-NULL) = mean(out - x). */
static void run_case(const char *model_path, const wt_unet_config *cfg, const char *cases_path,
                       const char *prefix, const char *tsin_name, const char *emb_name,
                       int expect_checked, double *mean_diff)
{
    wt_safetensors st, cases;
    tu_open(&st, model_path);
    tu_open(&cases, cases_path);
    fm_error err = {0};
    un_model *u = un_load(&st.src, cfg, FM_PREC_FP32, &err);
    if (!u) fail_msg("%s", err.msg);

    char n[64];
    snprintf(n, sizeof n, "%sx", prefix);
    const wt_st_tensor *xt = wt_st_find(&cases, n);
    assert_non_null(xt);
    assert_int_equal(xt->ndim, 4);
    int B = (int)xt->shape[0], H = (int)xt->shape[2], W = (int)xt->shape[3];
    float *x = tu_f32(&cases, n, NULL);
    snprintf(n, sizeof n, "%st", prefix);
    float *t = timesteps(&cases, n);
    snprintf(n, sizeof n, "%scontext", prefix);
    const wt_st_tensor *ct = wt_st_find(&cases, n);
    assert_non_null(ct);
    int n_ctx = (int)ct->shape[1];
    float *ctx = tu_f32(&cases, n, NULL);
    float *y = NULL;
    if (cfg->adm_in_channels) {
        snprintf(n, sizeof n, "%sy", prefix);
        y = tu_f32(&cases, n, NULL);
    }

    checker k = {.cases = &cases, .prefix = prefix, .tsin_name = tsin_name, .emb_name = emb_name};
    un_set_probe(u, check_probe, &k);
    print_message("  %s %s (batch %d, %dx%d latent, %d tokens)\n", cases_path, prefix, B, W, H, n_ctx);
    size_t n_out = (size_t)B * cfg->out_channels * H * W;
    float *out = core_alloc(sizeof(float) * n_out);
    if (un_forward(u, out, x, B, H, W, t, ctx, n_ctx, y, &err)) fail_msg("%s", err.msg);
    print_message("  -> worst %s: %.2e (tolerance %.0e), %d tensors checked\n", k.worst_name, k.worst, TOL, k.checked);
    assert_int_equal(k.checked, expect_checked);

    /* the workspace is reused: a second call gives the same numbers */
    float *again = core_alloc(sizeof(float) * n_out);
    un_set_probe(u, NULL, NULL);
    if (un_forward(u, again, x, B, H, W, t, ctx, n_ctx, y, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(out, again, sizeof(float) * n_out);

    if (mean_diff && cfg->in_channels == cfg->out_channels) {
        double s = 0;
        for (size_t i = 0; i < n_out; i++) s += (double)out[i] - x[i];
        *mean_diff = s / (double)n_out;
    }
    core_free(again);
    core_free(out);
    core_free(x), core_free(t), core_free(ctx), core_free(y);
    un_free(u);
    wt_st_close(&cases);
    wt_st_close(&st);
}

static void test_sd1(void **state)
{
    (void)state;
    wt_unet_config c = tiny_sd1_config();
    /* temb_sin, temb, in.0-3, mid, out.0-3, out */
    run_case("tests/data/tiny-sd1.safetensors", &c, "tests/data/tiny-sd1-cases.safetensors", "unet.", "temb_sin", "temb", 12, NULL);
}

static void test_sd1_non_square(void **state)
{
    (void)state;
    wt_unet_config c = tiny_sd1_config();
    run_case("tests/data/tiny-sd1.safetensors", &c, "tests/data/tiny-sd1-cases.safetensors", "unet_ns.", "temb_sin", "temb", 1, NULL);
}

static void test_sd2(void **state)
{
    (void)state;
    wt_unet_config c = tiny_sd2_config();
    run_case("tests/data/tiny-sd2.safetensors", &c, "tests/data/sd2-cases.safetensors", "unet.", "t_emb", "emb", 12, NULL);
    run_case("tests/data/tiny-sd2.safetensors", &c, "tests/data/sd2-cases.safetensors", "unet_ns.", "t_emb", "emb", 12, NULL);
}

/* A1111's v-prediction probe: 2 context tokens, integer t = 999. */
static void test_sd2_vprobe(void **state)
{
    (void)state;
    wt_unet_config c = tiny_sd2_config();
    double score = 0;
    run_case("tests/data/tiny-sd2.safetensors", &c, "tests/data/sd2-cases.safetensors", "vprobe.", "-", "-", 1, &score);
    /* tests/data/README.md#tiny-sd2: score = mean(out - x) = -1.96633245 -> "v" (< -1) */
    wt_safetensors cases;
    tu_open(&cases, "tests/data/sd2-cases.safetensors");
    float *ref = tu_f32(&cases, "vprobe.score", NULL);
    print_message("  v-probe score %.8f, reference %.8f\n", score, ref[0]);
    assert_true(fabs(score - ref[0]) <= TOL);
    assert_true(score < -1);
    core_free(ref);
    wt_st_close(&cases);
}

static void test_sdxl(void **state)
{
    (void)state;
    wt_unet_config c = tiny_sdxl_config();
    /* t_sin, emb, in.0-5, mid, out.0-5, out */
    run_case("tests/data/tiny-sdxl.safetensors", &c, "tests/data/sdxl-cases.safetensors", "unet.", "t_sin", "emb", 16, NULL);
    run_case("tests/data/tiny-sdxl.safetensors", &c, "tests/data/sdxl-cases.safetensors", "unet_ns.", "t_sin", "emb", 16, NULL);
}

/* A config that does not fit the file says which tensor and why. */
static void test_load_errors(void **state)
{
    (void)state;
    wt_safetensors st;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    fm_error err = {0};
    wt_unet_config c = tiny_sd1_config();
    c.use_linear_in_transformer = 1;
    assert_null(un_load(&st.src, &c, FM_PREC_AUTO, &err));
    assert_int_equal(err.code, FM_EINPUT);
    assert_string_equal(err.msg, "tests/data/tiny-sd1.safetensors: tensor model.diffusion_model.input_blocks.1.1.proj_in.weight: "
                                 "shape [32,32,1,1], expected [32,32]");

    fm_error err2 = {0};
    c = tiny_sd1_config();
    c.transformer_depth[1] = 1;
    assert_null(un_load(&st.src, &c, FM_PREC_AUTO, &err2));
    assert_string_equal(err2.msg, "tests/data/tiny-sd1.safetensors: tensor model.diffusion_model.input_blocks.3.1.norm.weight: missing");

    fm_error err3 = {0};
    c = tiny_sd1_config();
    c.num_heads = 3;
    assert_null(un_load(&st.src, &c, FM_PREC_AUTO, &err3));
    assert_non_null(strstr(err3.msg, "do not split into heads"));

    fm_error err4 = {0};
    c = tiny_sd1_config();
    un_model *u = un_load(&st.src, &c, FM_PREC_AUTO, &err4);
    assert_non_null(u);
    float x[4 * 8 * 8] = {0}, t = 1, ctx[8] = {0}, out[4 * 8 * 8];
    assert_int_equal(un_forward(u, out, x, 1, 8, 8, &t, ctx, 0, NULL, &err4), FM_EINPUT);
    un_free(u);
    wt_st_close(&st);
}

/* ---- layouts of the real checkpoints ---- */

typedef struct layout {
    char **lines; /* "name\tshape" as in the TSV, minus the dtype */
    int n, cap;
} layout;

static void push_line(layout *l, const char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->lines = realloc(l->lines, sizeof(char *) * l->cap);
        assert_non_null(l->lines);
    }
    l->lines[l->n++] = strdup(s);
}

static void collect(void *user, const char *name, int ndim, const int64_t *shape)
{
    char buf[512];
    int p = snprintf(buf, sizeof buf, "%s\t", name);
    for (int i = 0; i < ndim; i++)
        p += snprintf(buf + p, sizeof buf - p, i ? ",%lld" : "%lld", (long long)shape[i]);
    push_line(user, buf);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_layout(layout *l)
{
    for (int i = 0; i < l->n; i++) free(l->lines[i]);
    free(l->lines);
}

/* The tensors the config implies are exactly the real file's U-Net tensors. */
static void check_layout(const wt_unet_config *cfg, const char *tsv, int expect_n, long long expect_params)
{
    layout got = {0}, want = {0};
    fm_error err = {0};
    assert_int_equal(un_list_tensors(cfg, collect, &got, &err), 0);
    long long params = 0;
    for (int i = 0; i < got.n; i++) {
        long long n = 1;
        for (const char *s = strchr(got.lines[i], '\t') + 1; *s;) {
            n *= strtoll(s, (char **)&s, 10);
            if (*s == ',') s++;
        }
        params += n;
    }
    FILE *f = fopen(tsv, "r");
    assert_non_null(f);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *dt = strchr(line, '\t'), *shape = dt ? strchr(dt + 1, '\t') : NULL;
        assert_non_null(shape);
        memmove(dt + 1, shape + 1, strlen(shape + 1) + 1); /* drop the dtype column */
        push_line(&want, line);
    }
    fclose(f);
    qsort(got.lines, got.n, sizeof(char *), cmp_str);
    qsort(want.lines, want.n, sizeof(char *), cmp_str);
    print_message("  %s: %d tensors, %lld parameters\n", tsv, got.n, params);
    assert_int_equal(want.n, expect_n);
    assert_int_equal(got.n, want.n);
    for (int i = 0; i < got.n; i++) assert_string_equal(got.lines[i], want.lines[i]);
    assert_true(params == expect_params);
    free_layout(&got);
    free_layout(&want);
}

static wt_unet_config sd15_config(void)
{
    wt_unet_config c = base_config();
    c.model_channels = 320;
    c.n_levels = 4;
    int mult[4] = {1, 2, 4, 4}, depth[4] = {1, 1, 1, 0};
    memcpy(c.channel_mult, mult, sizeof mult);
    memcpy(c.transformer_depth, depth, sizeof depth);
    c.transformer_depth_middle = 1;
    c.num_res_blocks = 2;
    c.num_heads = 8;
    c.context_dim = 768;
    return c;
}

static void test_real_layouts(void **state)
{
    (void)state;
    wt_unet_config sd1 = sd15_config();
    check_layout(&sd1, "tests/data/layout-sd1-unet.tsv", 686, 859520964LL);

    wt_unet_config sd2 = sd15_config();
    sd2.num_heads = -1, sd2.num_head_channels = 64;
    sd2.context_dim = 1024;
    sd2.use_linear_in_transformer = 1;
    check_layout(&sd2, "tests/data/layout-sd2-unet.tsv", 686, 865910724LL);

    wt_unet_config xl = base_config();
    xl.model_channels = 320;
    xl.n_levels = 3;
    xl.channel_mult[0] = 1, xl.channel_mult[1] = 2, xl.channel_mult[2] = 4;
    xl.transformer_depth[1] = 2, xl.transformer_depth[2] = 10;
    xl.transformer_depth_middle = 10;
    xl.num_res_blocks = 2;
    xl.num_head_channels = 64;
    xl.context_dim = 2048;
    xl.use_linear_in_transformer = 1;
    xl.adm_in_channels = 2816;
    check_layout(&xl, "tests/data/layout-sdxl-unet.tsv", 1680, 2567463684LL);

    /* activation memory of SD 1.5 at a 64x64 latent (512x512 px), CFG batch 2 */
    size_t b = un_workspace_bytes(&sd1, 2, 64, 64, 77);
    print_message("  SD 1.5 workspace, batch 2, 64x64 latent: %.1f MiB\n", b / 1048576.0);
    size_t bxl = un_workspace_bytes(&xl, 2, 128, 128, 77);
    print_message("  SDXL workspace, batch 2, 128x128 latent: %.1f MiB\n", bxl / 1048576.0);
    assert_true(b > 0 && b < (300u << 20));
}

/* ---- random models of other shapes: nothing may depend on the tiny sizes ---- */

typedef struct fake_model {
    wt_safetensors st;
    core_dtype dtype;
    uint64_t seed;
    int cap;
} fake_model;

/* Every tensor the config lists, random like the goldens' initialisation:
 * weights U(-b, b) with b = sqrt(3/fan_in), biases U(-0.1, 0.1), norm
 * weights 1 + U(-0.25, 0.25). */
static void fake_tensor(void *user, const char *name, int ndim, const int64_t *shape)
{
    fake_model *f = user;
    if (f->st.n_tensors == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 512;
        f->st.tensors = realloc(f->st.tensors, sizeof(wt_st_tensor) * f->cap);
        assert_non_null(f->st.tensors);
    }
    wt_st_tensor *t = &f->st.tensors[f->st.n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->dtype = f->dtype;
    t->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)(t->shape[i] = shape[i]);
    float *v = core_alloc(sizeof(float) * n);
    tu_fill_random(v, n, ++f->seed);
    int is_bias = strstr(name, ".bias") != NULL;
    double scale = ndim > 1 ? sqrt(3.0 * shape[0] / (double)n) : is_bias ? 0.1 : 0.25;
    for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] * scale + (ndim == 1 && !is_bias ? 1.0 : 0.0));
    t->nbytes = n * core_dtype_size(f->dtype);
    if (f->dtype == FM_DT_F32) {
        t->data = v;
        return;
    }
    uint16_t *h = core_alloc(t->nbytes);
    if (f->dtype == FM_DT_F16) core_f32_to_f16(h, v, n);
    else core_f32_to_bf16(h, v, n);
    core_free(v);
    t->data = h;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const wt_st_tensor *)a)->name, ((const wt_st_tensor *)b)->name);
}

/* The in-memory table as a wt_source (any reader's shape: src first). */
static const wt_safetensors *fake_of(const wt_source *s) { return (const wt_safetensors *)s; }
static int fake_count(const wt_source *s) { return fake_of(s)->n_tensors; }
static const wt_tensor *fake_at(const wt_source *s, int i) { return &fake_of(s)->tensors[i]; }
static const wt_tensor *fake_find(const wt_source *s, const char *name) { return wt_st_find(fake_of(s), name); }
static const char *fake_meta(const wt_source *s, const char *key) { (void)s, (void)key; return NULL; }
static const wt_source_ops fake_ops = {fake_count, fake_at, fake_find, fake_meta};

static void fake_open(fake_model *f, const wt_unet_config *cfg, core_dtype dtype)
{
    memset(f, 0, sizeof *f);
    f->dtype = dtype;
    f->st.path = "random";
    fm_error err = {0};
    assert_int_equal(un_list_tensors(cfg, fake_tensor, f, &err), 0);
    qsort(f->st.tensors, f->st.n_tensors, sizeof(wt_st_tensor), cmp_tensor);
    f->st.src = (wt_source){&fake_ops, f->st.path};
}

static void fake_close(fake_model *f)
{
    for (int i = 0; i < f->st.n_tensors; i++) {
        free((char *)f->st.tensors[i].name);
        core_free((void *)f->st.tensors[i].data);
    }
    free(f->st.tensors);
}

/* One forward of batch 2 at h x w with n_ctx tokens must be finite and
 * equal, row by row, to the two forwards of batch 1. */
static void run_random(const wt_unet_config *cfg, core_dtype dtype, int h, int w, int n_ctx)
{
    fake_model f;
    fake_open(&f, cfg, dtype);
    fm_error err = {0};
    un_model *u = un_load(&f.st.src, cfg, FM_PREC_AUTO, &err);
    if (!u) fail_msg("%s", err.msg);

    int B = 2, cin = cfg->in_channels, cout = cfg->out_channels, adm = cfg->adm_in_channels;
    size_t nx = (size_t)cin * h * w, no = (size_t)cout * h * w, nc = (size_t)n_ctx * cfg->context_dim;
    float *x = core_alloc(sizeof(float) * B * nx), *ctx = core_alloc(sizeof(float) * B * nc);
    float *y = adm ? core_alloc(sizeof(float) * B * adm) : NULL;
    float *out = core_alloc(sizeof(float) * B * no), *one = core_alloc(sizeof(float) * no);
    float t[2] = {981.0f, 3.5f};
    tu_fill_random(x, B * nx, 11);
    tu_fill_random(ctx, B * nc, 12);
    if (y) tu_fill_random(y, (size_t)B * adm, 13);

    if (un_forward(u, out, x, B, h, w, t, ctx, n_ctx, y, &err)) fail_msg("%s", err.msg);
    double sq = 0;
    for (size_t i = 0; i < B * no; i++) {
        assert_true(isfinite(out[i]));
        sq += (double)out[i] * out[i];
    }
    print_message("  random %s model, latent %dx%d, %d tokens: output rms %.3f, workspace %.1f MiB\n",
                  core_dtype_name(dtype), w, h, n_ctx, sqrt(sq / (B * no)),
                  un_workspace_bytes(cfg, B, h, w, n_ctx) / 1048576.0);
    assert_true(sq > 0);
    for (int b = 0; b < B; b++) {
        if (un_forward(u, one, x + b * nx, 1, h, w, t + b, ctx + b * nc, n_ctx, y ? y + b * adm : NULL, &err))
            fail_msg("%s", err.msg);
        tu_assert_close(one, out + b * no, no, 1e-5, "batch row vs single");
    }
    core_free(x), core_free(ctx), core_free(y), core_free(out), core_free(one);
    un_free(u);
    fake_close(&f);
}

/* SD 1.x shape in small: 4 levels [1,2,4,4], 2 res blocks, 8 heads of
 * varying width, depth per level; a latent that 8 does not divide and a
 * two-chunk prompt. */
static void test_random_sd1_like(void **state)
{
    (void)state;
    wt_unet_config c = base_config();
    c.model_channels = 32;
    c.n_levels = 4;
    int mult[4] = {1, 2, 4, 4}, depth[4] = {1, 2, 1, 0};
    memcpy(c.channel_mult, mult, sizeof mult);
    memcpy(c.transformer_depth, depth, sizeof depth);
    c.transformer_depth_middle = 1;
    c.num_res_blocks = 2;
    c.num_heads = 8;
    c.context_dim = 48;
    run_random(&c, FM_DT_F16, 9, 13, 154);
}

/* SDXL shape in small: no attention at level 0, deeper transformers below,
 * head channels, linear projections, label_emb; BF16 weights. */
static void test_random_sdxl_like(void **state)
{
    (void)state;
    wt_unet_config c = base_config();
    c.model_channels = 32;
    c.n_levels = 3;
    int mult[3] = {1, 2, 4}, depth[3] = {0, 2, 3};
    memcpy(c.channel_mult, mult, sizeof mult);
    memcpy(c.transformer_depth, depth, sizeof depth);
    c.transformer_depth_middle = 3;
    c.num_res_blocks = 2;
    c.num_head_channels = 16;
    c.context_dim = 40;
    c.use_linear_in_transformer = 1;
    c.adm_in_channels = 80;
    run_random(&c, FM_DT_BF16, 7, 5, 77);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sd1),
        cmocka_unit_test(test_sd1_non_square),
        cmocka_unit_test(test_sd2),
        cmocka_unit_test(test_sd2_vprobe),
        cmocka_unit_test(test_sdxl),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_real_layouts),
        cmocka_unit_test(test_random_sd1_like),
        cmocka_unit_test(test_random_sdxl_like),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
