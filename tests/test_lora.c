/* LoRA / LyCORIS (issue 16): merged weights against A1111's own merge
 * (tests/data/lora-ref.safetensors, tools/ref/lora_refs.py), images with
 * the adapters against images of the reference-merged checkpoints, prompt
 * tags as A1111 parses them, Lora hashes, reapplying, hostile files. */
#include "testutil.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "diffusion/detect.h"
#include "diffusion/lora.h"
#include "fmimage.h"
#include "kernels/kernels.h"
#include "tools/lib/randckpt.h"
#include "tools/lib/st_write.h"
#include "weights/lora.h"
#include "weights/lora_internal.h"

#define DATA "tests/data/"
#define LDIR DATA "lora"
#define REF DATA "lora-ref.safetensors"

typedef struct use {
    const char *adapter;
    float te, unet;
} use;

typedef struct lcase {
    const char *name, *base;
    int n;
    use uses[2];
} lcase;

static const lcase cases[] = {
    {"sd1_locon", DATA "tiny-sd1.safetensors", 1, {{"sd1_locon", 0.8f, 0.8f}}},
    {"sd1_loha", DATA "tiny-sd1.safetensors", 1, {{"sd1_loha", 0.5f, 1.0f}}},
    {"sd1_lokr", DATA "tiny-sd1.safetensors", 1, {{"sd1_lokr", 1.0f, 1.0f}}},
    {"sd1_full", DATA "tiny-sd1.safetensors", 1, {{"sd1_full", 0.7f, 0.7f}}},
    {"sd1_dora", DATA "tiny-sd1.safetensors", 1, {{"sd1_dora", 0.9f, 0.9f}}},
    {"sd1_peft", DATA "tiny-sd1.safetensors", 1, {{"sd1_peft", 1.0f, 1.0f}}},
    {"sd1_stack", DATA "tiny-sd1.safetensors", 2, {{"sd1_locon", 0.8f, 0.8f}, {"sd1_loha", 0.5f, 1.0f}}},
    {"sdxl_lora", DATA "tiny-sdxl.safetensors", 1, {{"sdxl_lora", 0.8f, 0.8f}}},
    {"sd1_ia3", DATA "tiny-sd1.safetensors", 1, {{"sd1_ia3", 0.8f, 0.6f}}},
    {"sd1_oft", DATA "tiny-sd1.safetensors", 1, {{"sd1_oft", 0.7f, 0.9f}}},
    {"sd1_glora", DATA "tiny-sd1.safetensors", 1, {{"sd1_glora", 1.0f, 0.8f}}},
    {"sd1_norm", DATA "tiny-sd1.safetensors", 1, {{"sd1_norm", 0.5f, 1.0f}}},
    {"sd1_lyco_stack", DATA "tiny-sd1.safetensors", 2, {{"sd1_oft", 0.7f, 0.9f}, {"sd1_ia3", 0.8f, 0.6f}}},
    /* the spellings LCM-LoRA, SDXL-Lightning and older diffusers files come in */
    {"sd1_lcm", DATA "tiny-sd1.safetensors", 1, {{"sd1_lcm", 1.0f, 1.0f}}},
    {"sd1_diffusers_old", DATA "tiny-sd1.safetensors", 1, {{"sd1_diffusers_old", 0.9f, 0.7f}}},
    {"sdxl_lcm", DATA "tiny-sdxl.safetensors", 1, {{"sdxl_lcm", 1.0f, 0.8f}}},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static void adapter_path(char *out, size_t n, const char *name) { snprintf(out, n, LDIR "/%s.safetensors", name); }

/* The case's base checkpoint (its config detected) and its adapters opened
 * as uses with the case's multipliers. */
static wt_source *open_case(const lcase *lc, wt_model_config *cfg, wt_lora *l[2], wt_lora_use uses[2])
{
    fm_error err = {0};
    wt_source *base = wt_open(lc->base, &err);
    assert_non_null(base);
    assert_int_equal(df_detect_config(base, cfg, &err), 0);
    for (int i = 0; i < lc->n; i++) {
        char path[256];
        adapter_path(path, sizeof path, lc->uses[i].adapter);
        l[i] = wt_lora_open(path, base, cfg, &err);
        if (!l[i]) fail_msg("%s: %s", lc->name, err.msg);
        uses[i] = (wt_lora_use){l[i], lc->uses[i].te, lc->uses[i].unet};
    }
    return base;
}

/* ---- merged weights: A1111's merge, 1e-6 of the tensor's largest value ---- */

static void test_merged_weights(void **state)
{
    (void)state;
    wt_safetensors ref;
    tu_open(&ref, REF);
    for (int c = 0; c < N_CASES; c++) {
        const lcase *lc = &cases[c];
        fm_error err = {0};
        wt_model_config cfg;
        wt_lora *l[2] = {0};
        wt_lora_use uses[2];
        wt_source *base = open_case(lc, &cfg, l, uses);
        wt_source *m = wt_merged_open(base, uses, lc->n, NULL, &err);
        assert_non_null(m);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s/", lc->name);
        int n_ref = 0;
        double worst = 0;
        for (int i = 0; i < ref.n_tensors; i++) {
            const wt_tensor *rt = &ref.tensors[i];
            if (strncmp(rt->name, prefix, strlen(prefix))) continue;
            n_ref++;
            const char *name = rt->name + strlen(prefix);
            const wt_tensor *t = wt_find(m, name);
            assert_non_null(t);
            if (!wt_merged_is(m, t)) fail_msg("%s: %s not merged", lc->name, name);
            assert_int_equal(t->dtype, FM_DT_F32);
            size_t n = (size_t)wt_numel(rt);
            assert_int_equal((size_t)wt_numel(t), n);
            float *r = malloc(sizeof(float) * n);
            wt_convert_f32(r, rt);
            const float *g = t->data;
            double amax = 0, emax = 0;
            for (size_t k = 0; k < n; k++) amax = fmax(amax, fabs(r[k]));
            for (size_t k = 0; k < n; k++) emax = fmax(emax, fabs((double)g[k] - r[k]));
            if (emax > 1e-6 * amax) fail_msg("%s: %s: max error %g, %g of the largest value", lc->name, name, emax, emax / amax);
            worst = fmax(worst, emax / amax);
            free(r);
        }
        int reused;
        assert_int_equal(wt_merged_count(m, &reused), n_ref); /* no other tensor changed */
        if (getenv("FM_TEST_VERBOSE")) fprintf(stderr, "%s: %d tensors, worst %.3g relative\n", lc->name, n_ref, worst);
        wt_close(m);
        for (int i = 0; i < lc->n; i++) wt_lora_close(l[i]);
        wt_close(base);
    }
    wt_st_close(&ref);
}

/* ---- the bf16 store: the float32 merge rounded, and the base released ---- */

static int is_text_encoder(const char *name)
{
    return !strncmp(name, "cond_stage_model.", 17) || !strncmp(name, "conditioner.embedders.", 22);
}

/* wt_merged_open_as(BF16): each U-Net tensor is exactly the float32 merge
 * rounded to nearest even (what the bf16 kernels' packing does to it), each
 * text-encoder tensor the float32 merge itself; the base tensors the merge
 * released (their pages dropped) still read back as the file's bytes. */
static void test_merged_bf16(void **state)
{
    (void)state;
    for (int c = 0; c < N_CASES; c++) {
        const lcase *lc = &cases[c];
        fm_error err = {0};
        wt_source *base = wt_open(lc->base, &err);
        assert_non_null(base);
        wt_model_config cfg;
        assert_int_equal(df_detect_config(base, &cfg, &err), 0);
        /* a copy of the base bytes, to check the released pages come back */
        size_t total = 0;
        for (int i = 0; i < wt_count(base); i++) total += wt_at(base, i)->nbytes;
        char *copy = malloc(total ? total : 1), *w = copy;
        for (int i = 0; i < wt_count(base); i++, w += wt_at(base, i - 1)->nbytes)
            memcpy(w, wt_at(base, i)->data, wt_at(base, i)->nbytes);
        wt_lora *l[2] = {0};
        wt_lora_use uses[2];
        for (int i = 0; i < lc->n; i++) {
            char path[256];
            adapter_path(path, sizeof path, lc->uses[i].adapter);
            l[i] = wt_lora_open(path, base, &cfg, &err);
            if (!l[i]) fail_msg("%s: %s", lc->name, err.msg);
            uses[i] = (wt_lora_use){l[i], lc->uses[i].te, lc->uses[i].unet};
        }
        wt_source *f = wt_merged_open(base, uses, lc->n, NULL, &err);
        wt_source *h = wt_merged_open_as(base, uses, lc->n, NULL, FM_DT_BF16, NULL, &err);
        assert_non_null(f);
        assert_non_null(h);
        int n_f = wt_merged_count(f, NULL), n_bf16 = 0, n_te = 0, n_vec = 0;
        assert_int_equal(wt_merged_count(h, NULL), n_f);
        for (int i = 0; i < wt_count(f); i++) {
            const wt_tensor *tf = wt_at(f, i), *th = wt_find(h, tf->name);
            assert_non_null(th);
            assert_int_equal(wt_merged_is(f, tf), wt_merged_is(h, th));
            if (!wt_merged_is(f, tf)) continue;
            size_t n = (size_t)wt_numel(tf);
            if (is_text_encoder(tf->name)) {
                assert_int_equal(th->dtype, FM_DT_F32);
                assert_memory_equal(th->data, tf->data, n * sizeof(float));
                n_te++;
            } else if (tf->ndim < 2) { /* biases and norms: float32 in bf16 mode too */
                assert_int_equal(th->dtype, FM_DT_F32);
                assert_memory_equal(th->data, tf->data, n * sizeof(float));
                n_vec++;
            } else {
                assert_int_equal(th->dtype, FM_DT_BF16);
                assert_int_equal(th->nbytes, n * 2);
                uint16_t *want = malloc(n * 2);
                core_f32_to_bf16(want, tf->data, n);
                if (memcmp(want, th->data, n * 2)) fail_msg("%s: %s: not the float32 merge rounded", lc->name, tf->name);
                free(want);
                n_bf16++;
            }
        }
        assert_true(n_bf16 + n_vec > 0);
        w = copy;
        for (int i = 0; i < wt_count(base); i++) {
            const wt_tensor *t = wt_at(base, i);
            if (memcmp(w, t->data, t->nbytes)) fail_msg("%s: %s changed after its release", lc->name, t->name);
            w += t->nbytes;
        }
        if (getenv("FM_TEST_VERBOSE"))
            fprintf(stderr, "%s: %d bf16 U-Net tensors, %d float32 text-encoder tensors\n", lc->name, n_bf16, n_te);
        free(copy);
        wt_close(h);
        wt_close(f);
        for (int i = 0; i < lc->n; i++) wt_lora_close(l[i]);
        wt_close(base);
    }
}

/* ---- merged tensors in a file (spill_dir) ---- */

/* Equal tensors of two merged sources, or the name of the first that differs. */
static const char *first_difference(const wt_source *a, const wt_source *b)
{
    for (int i = 0; i < wt_count(a); i++) {
        const wt_tensor *ta = wt_at(a, i), *tb = wt_find(b, ta->name);
        if (!tb || ta->dtype != tb->dtype || ta->nbytes != tb->nbytes || memcmp(ta->data, tb->data, ta->nbytes))
            return ta->name;
    }
    return NULL;
}

/* wt_merged_open_as with a spill directory: the same bytes as the merge in
 * memory, every merged tensor in the file; released pages read back the
 * same; a later set takes unchanged tensors over from the file (and keeps
 * them once the earlier source is closed); a directory that is memory
 * (/dev/shm, tmpfs) or missing gives the merge in memory. */
static void test_merged_spill(void **state)
{
    (void)state;
    /* a directory on a disk: under tu_dir, or the working directory when
     * $TMPDIR is a tmpfs */
    char spill[512];
    struct statfs fs;
    snprintf(spill, sizeof spill, "%s/spill-XXXXXX", tu_dir);
    if (!statfs(tu_dir, &fs) && (unsigned long)fs.f_type == 0x01021994UL) snprintf(spill, sizeof spill, ".fm-spill-XXXXXX");
    assert_non_null(mkdtemp(spill));
    for (int c = 0; c < N_CASES; c++) {
        const lcase *lc = &cases[c];
        fm_error err = {0};
        wt_model_config cfg;
        wt_lora *l[2] = {0};
        wt_lora_use uses[2];
        wt_source *base = open_case(lc, &cfg, l, uses);
        for (int dt = 0; dt < 2; dt++) {
            core_dtype type = dt ? FM_DT_BF16 : FM_DT_F32;
            wt_source *mem = wt_merged_open_as(base, uses, lc->n, NULL, type, NULL, &err);
            wt_source *file = wt_merged_open_as(base, uses, lc->n, NULL, type, spill, &err);
            assert_non_null(mem);
            assert_non_null(file);
            int n = wt_merged_count(mem, NULL);
            assert_int_equal(wt_merged_count_spilled(mem), 0);
            assert_int_equal(wt_merged_count_spilled(file), n);
            const char *d = first_difference(mem, file);
            if (d) fail_msg("%s: %s differs in the file", lc->name, d);
            for (int i = 0; i < wt_count(file); i++) wt_release(file, wt_at(file, i));
            if ((d = first_difference(mem, file))) fail_msg("%s: %s differs after its release", lc->name, d);
            /* the same set again: everything taken over from the file */
            wt_source *again = wt_merged_open_as(base, uses, lc->n, file, type, spill, &err);
            assert_non_null(again);
            int reused;
            assert_int_equal(wt_merged_count(again, &reused), n);
            assert_int_equal(reused, n);
            assert_int_equal(wt_merged_count_spilled(again), n);
            wt_close(file);
            if ((d = first_difference(mem, again))) fail_msg("%s: %s differs once taken over", lc->name, d);
            wt_close(again);
            const char *not_disk[] = {"/dev/shm", "/nonexistent-fmimage-dir"};
            for (int k = 0; k < 2; k++) {
                struct stat sb;
                if (!k && stat(not_disk[k], &sb)) continue;
                wt_source *m2 = wt_merged_open_as(base, uses, lc->n, NULL, type, not_disk[k], &err);
                assert_non_null(m2);
                assert_int_equal(wt_merged_count_spilled(m2), 0);
                if ((d = first_difference(mem, m2))) fail_msg("%s: %s differs in memory", lc->name, d);
                wt_close(m2);
            }
            wt_close(mem);
        }
        for (int i = 0; i < lc->n; i++) wt_lora_close(l[i]);
        wt_close(base);
    }
    /* nothing is left in the directory: the file was never linked */
    DIR *dir = opendir(spill);
    assert_non_null(dir);
    for (struct dirent *e; (e = readdir(dir));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) fail_msg("%s left in %s", e->d_name, spill);
    closedir(dir);
    assert_int_equal(rmdir(spill), 0);
}

/* ---- fp32: LoRA pairs applied at run time == the float32 merge ---- */

/* Layer outputs for random x: the base weight with its run-time updates
 * (wt_merged_open_lowrank) against the float32-merged weight
 * (wt_merged_open), through the fast kernels and the reference loops.
 * Tolerance 1e-5 of the output's largest value (float32 rounding of the
 * two products against one). Returns the worst relative difference. */
static double layer_difference(const wt_tensor *base_w, const kn_lowrank *chain, const wt_tensor *merged_w)
{
    kn_mat a = {.data = base_w->data, .dtype = base_w->dtype, .rows = (int)base_w->shape[0],
                .cols = (int)(wt_numel(base_w) / base_w->shape[0]), .lowrank = chain};
    kn_mat b = {.data = merged_w->data, .dtype = FM_DT_F32, .rows = a.rows, .cols = a.cols};
    int conv = base_w->ndim == 4 && base_w->shape[2] * base_w->shape[3] > 1;
    int k = conv ? (int)base_w->shape[2] : 1, cin = (int)(a.cols / (k * k)), hw = 6;
    size_t nx = conv ? (size_t)2 * cin * hw * hw : (size_t)5 * a.cols;
    size_t ny = conv ? (size_t)2 * a.rows * hw * hw : (size_t)5 * a.rows;
    float *x = malloc(sizeof(float) * nx), *ya = malloc(sizeof(float) * ny), *yb = malloc(sizeof(float) * ny),
          *yr = malloc(sizeof(float) * ny);
    uint32_t seed = 7;
    for (size_t i = 0; i < nx; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / 16777216.0f * 2.0f - 1.0f;
    }
    if (conv) {
        kn_conv ca = {.w = a, .cin = cin, .cout = a.rows, .kh = k, .kw = k, .stride = 1,
                      .pad_t = k / 2, .pad_l = k / 2, .pad_b = k / 2, .pad_r = k / 2};
        kn_conv cb = ca;
        cb.w = b;
        kn_conv2d(ya, x, &ca, 2, hw, hw);
        kn_conv2d_ref(yr, x, &ca, 2, hw, hw);
        kn_conv2d(yb, x, &cb, 2, hw, hw);
    } else {
        kn_linear(ya, x, 5, &a, NULL);
        kn_linear_ref(yr, x, 5, &a, NULL);
        kn_linear(yb, x, 5, &b, NULL);
    }
    double amax = 0, emax = 0;
    for (size_t i = 0; i < ny; i++) amax = fmax(amax, fabs(yb[i]));
    for (size_t i = 0; i < ny; i++) emax = fmax(emax, fmax(fabs((double)ya[i] - yb[i]), fabs((double)yr[i] - yb[i])));
    free(x);
    free(ya);
    free(yb);
    free(yr);
    return amax > 0 ? emax / amax : emax;
}

static void test_lowrank_fp32(void **state)
{
    (void)state;
    for (int c = 0; c < N_CASES; c++) {
        const lcase *lc = &cases[c];
        fm_error err = {0};
        wt_model_config cfg;
        wt_lora *l[2] = {0};
        wt_lora_use uses[2];
        wt_source *base = open_case(lc, &cfg, l, uses);
        wt_source *f = wt_merged_open(base, uses, lc->n, NULL, &err);
        wt_source *r = wt_merged_open_lowrank(base, uses, lc->n, NULL, NULL, &err);
        assert_non_null(f);
        assert_non_null(r);
        int n_lr = 0;
        double worst = 0;
        for (int i = 0; i < wt_count(r); i++) {
            const wt_tensor *t = wt_at(r, i), *tf = wt_find(f, t->name);
            const kn_lowrank *chain = wt_merged_lowrank(r, t);
            if (wt_merged_is(r, t)) assert_true(wt_merged_is(f, tf)); /* the rest: merged as before */
            if (!chain) continue;
            n_lr++;
            assert_false(wt_merged_is(r, t));
            assert_ptr_equal(t, wt_find(base, t->name)); /* the base's mapped tensor */
            assert_true(wt_merged_is(f, tf));
            double d = layer_difference(t, chain, tf);
            if (d > 1e-5) fail_msg("%s: %s: run-time LoRA differs from the merge by %g of the largest output", lc->name, t->name, d);
            worst = fmax(worst, d);
        }
        assert_int_equal(n_lr, wt_merged_count_lowrank(r));
        assert_int_equal(wt_merged_count(r, NULL) + n_lr, wt_merged_count(f, NULL));
        /* LoRA/LoCon/PEFT pairs run at run time; LoHa, LoKr, full, DoRA merge */
        int pairs = !strcmp(lc->name, "sd1_locon") || !strcmp(lc->name, "sd1_peft") || !strcmp(lc->name, "sdxl_lora");
        if (pairs) assert_true(n_lr > 0);
        if (!strcmp(lc->name, "sd1_loha") || !strcmp(lc->name, "sd1_lokr") || !strcmp(lc->name, "sd1_full") ||
            !strcmp(lc->name, "sd1_dora"))
            assert_int_equal(n_lr, 0);
        if (getenv("FM_TEST_VERBOSE")) fprintf(stderr, "%s: %d run-time layers, worst %.3g relative\n", lc->name, n_lr, worst);
        wt_close(r);
        wt_close(f);
        for (int i = 0; i < lc->n; i++) wt_lora_close(l[i]);
        wt_close(base);
    }
}

/* ---- images: <lora> on the file == the reference-merged checkpoint ---- */

/* base with the case's reference tensors in place of its own, under tu_dir. */
static void write_merged_ckpt(const lcase *lc, char *out, size_t out_size)
{
    wt_safetensors base, ref;
    tu_open(&base, lc->base);
    tu_open(&ref, REF);
    tl_st_entry *e = calloc((size_t)base.n_tensors, sizeof *e);
    char name[320];
    /* widest elements first: every tensor's data then starts aligned to its
     * element size (the kernels read F32 weights in place) */
    int n = 0;
    for (size_t es = 8; es >= 1; es /= 2)
    for (int i = 0; i < base.n_tensors; i++) {
        const wt_tensor *t = &base.tensors[i];
        snprintf(name, sizeof name, "%s/%s", lc->name, t->name);
        const wt_tensor *r = wt_st_find(&ref, name);
        const wt_tensor *src = r ? r : t;
        if (core_dtype_size(src->dtype) != es) continue;
        e[n] = (tl_st_entry){t->name, src->dtype, src->ndim, {0}, src->data};
        memcpy(e[n].shape, src->shape, sizeof e[n].shape);
        n++;
    }
    assert_int_equal(n, base.n_tensors);
    snprintf(out, out_size, "%s/%s-merged.safetensors", tu_dir, lc->name);
    fm_error err = {0};
    if (tl_st_write(out, e, base.n_tensors, base.meta, base.n_meta, &err)) fail_msg("%s", err.msg);
    free(e);
    wt_st_close(&base);
    wt_st_close(&ref);
}

static uint8_t *render_at(fm_model *m, const char *prompt, const fm_lora *loras, int n_loras, const char *lora_dir,
                          fm_precision prec, fm_error *err)
{
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = prompt;
    p.negative = "blurry";
    p.width = p.height = 64;
    p.steps = 3;
    p.seed = 7;
    p.precision = prec;
    p.loras = loras;
    p.n_loras = n_loras;
    p.lora_dir = lora_dir;
    uint8_t *rgb = malloc(64 * 64 * 3);
    if (fm_generate(m, &p, rgb, err)) {
        free(rgb);
        return NULL;
    }
    return rgb;
}

static uint8_t *render(fm_model *m, const char *prompt, const fm_lora *loras, int n_loras, const char *lora_dir,
                       fm_error *err)
{
    return render_at(m, prompt, loras, n_loras, lora_dir, FM_PREC_FP32, err);
}

/* >= 99% of the values within 1 LSB; returns how many are exactly equal. */
static size_t compare_images(const char *what, const uint8_t *a, const uint8_t *b)
{
    size_t n = 64 * 64 * 3, close = 0, same = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - b[i]);
        close += d <= 1;
        same += d == 0;
    }
    if (close * 100 < n * 99) fail_msg("%s: only %zu of %zu values within 1 LSB", what, close, n);
    if (getenv("FM_TEST_VERBOSE")) fprintf(stderr, "%s: %zu/%zu equal, %zu within 1\n", what, same, n, close);
    return same;
}

static void test_images_match_reference_merge(void **state)
{
    (void)state;
    for (int c = 0; c < N_CASES; c++) {
        const lcase *lc = &cases[c];
        char merged[512], paths[2][256];
        write_merged_ckpt(lc, merged, sizeof merged);
        fm_lora loras[2];
        for (int i = 0; i < lc->n; i++) {
            adapter_path(paths[i], sizeof paths[i], lc->uses[i].adapter);
            loras[i] = (fm_lora){paths[i], lc->uses[i].te, lc->uses[i].unet};
        }
        fm_error err = {0};
        fm_model *a = fm_model_load(lc->base, &err), *b = fm_model_load(merged, &err);
        assert_non_null(a);
        assert_non_null(b);
        uint8_t *ia = render(a, "a red fox", loras, lc->n, NULL, &err);
        if (!ia) fail_msg("%s: %s", lc->name, err.msg);
        uint8_t *ib = render(b, "a red fox", NULL, 0, NULL, &err);
        assert_non_null(ib);
        compare_images(lc->name, ia, ib);
        fm_lora_info li;
        fm_model_lora_info(a, &li);
        assert_int_equal(li.files, lc->n);
        assert_true(li.tensors > 0);
        free(ia);
        free(ib);
        fm_model_free(a);
        fm_model_free(b);
        unlink(merged);
    }
}

/* --precision bf16: the adapters merged in float32 and stored as bf16 give
 * the image of the reference's float32-merged checkpoint run in bf16 (the
 * issue's rule: merged in at least fp32 before any bf16 packing). */
static void test_images_bf16_merge(void **state)
{
    (void)state;
    if (!kn_has_bf16()) skip(); /* bf16 falls back to fp32: the test above */
    for (int c = 0; c < N_CASES; c++) {
        const lcase *lc = &cases[c];
        char merged[512], paths[2][256];
        write_merged_ckpt(lc, merged, sizeof merged);
        fm_lora loras[2];
        for (int i = 0; i < lc->n; i++) {
            adapter_path(paths[i], sizeof paths[i], lc->uses[i].adapter);
            loras[i] = (fm_lora){paths[i], lc->uses[i].te, lc->uses[i].unet};
        }
        fm_error err = {0};
        fm_model *a = fm_model_load(lc->base, &err), *b = fm_model_load(merged, &err);
        assert_non_null(a);
        assert_non_null(b);
        uint8_t *ia = render_at(a, "a red fox", loras, lc->n, NULL, FM_PREC_BF16, &err);
        if (!ia) fail_msg("%s: %s", lc->name, err.msg);
        uint8_t *ib = render_at(b, "a red fox", NULL, 0, NULL, FM_PREC_BF16, &err);
        assert_non_null(ib);
        char what[96];
        snprintf(what, sizeof what, "%s bf16", lc->name);
        compare_images(what, ia, ib);
        free(ia);
        free(ib);
        fm_model_free(a);
        fm_model_free(b);
        unlink(merged);
    }
}

/* ---- prompt tags ---- */

static void test_tags(void **state)
{
    (void)state;
    fm_error err = {0};
    df_lora_list l;
    assert_int_equal(df_lora_parse("a <lora:x:0.5> b<lora:y:0.5:0.25>,<hypernet:h:1> c", &l, &err), 0);
    assert_string_equal(l.prompt, "a  b, c");
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0].name, "x");
    assert_true(l.v[0].te == 0.5f && l.v[0].unet == 0.5f);
    assert_true(l.v[1].te == 0.5f && l.v[1].unet == 0.25f);
    df_lora_list_free(&l);
    /* named forms; unet defaults to te; a lone name is 1 */
    assert_int_equal(df_lora_parse("<lora:x:unet=0.3><lyco:y:te=0.2><lora:z>", &l, &err), 0);
    assert_int_equal(l.n, 3);
    assert_true(l.v[0].te == 1.0f && l.v[0].unet == 0.3f);
    assert_true(l.v[1].te == 0.2f && l.v[1].unet == 0.2f);
    df_lora_list_free(&l);
    assert_int_equal(df_lora_parse("<lora:z:1>", &l, &err), 0);
    assert_true(l.n == 1 && l.v[0].te == 1.0f);
    df_lora_list_free(&l);
    /* not tags: kept as text */
    assert_int_equal(df_lora_parse("<lora> <lora:> <:x> <a b:1> <lora:x:1", &l, &err), 0);
    assert_string_equal(l.prompt, "<lora> <lora:> <:x> <a b:1> <lora:x:1");
    assert_int_equal(l.n, 0);
    df_lora_list_free(&l);
    assert_int_not_equal(df_lora_parse("<lora:x:abc>", &l, &err), 0);
    assert_non_null(strstr(err.msg, "not a number"));
}

static void test_tags_in_prompt(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_model *m = fm_model_load(DATA "tiny-sd1.safetensors", &err);
    assert_non_null(m);
    fm_lora explicit = {LDIR "/sd1_locon.safetensors", 0.8f, 0.8f};
    uint8_t *a = render(m, "a red fox", &explicit, 1, NULL, &err);
    uint8_t *b = render(m, "a red <lora:sd1_locon:0.8>fox", NULL, 0, LDIR, &err);
    uint8_t *c = render(m, "a red <lora:fox_style:0.8>fox", NULL, 0, LDIR, &err); /* ss_output_name */
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_memory_equal(a, b, 64 * 64 * 3);
    assert_memory_equal(a, c, 64 * 64 * 3);
    assert_null(render(m, "a <lora:nope:1>", NULL, 0, LDIR, &err));
    assert_string_equal(err.msg, "lora \"nope\": not found in " LDIR);
    free(a);
    free(b);
    free(c);
    fm_model_free(m);
}

/* A batch whose lines change the set: each image equals a fresh model's,
 * and tensors whose contributions did not change are kept. */
static void test_reapply(void **state)
{
    (void)state;
    fm_error err = {0};
    fm_model *m = fm_model_load(DATA "tiny-sd1.safetensors", &err);
    assert_non_null(m);
    const char *prompts[] = {"fox <lora:sd1_locon:0.8>", "fox <lora:sd1_locon:0.8><lora:sd1_loha:0.5:1>",
                             "fox", "fox <lora:sd1_locon:0.8>"};
    uint8_t *img[4];
    fm_lora_info info[4];
    for (int i = 0; i < 4; i++) {
        img[i] = render(m, prompts[i], NULL, 0, LDIR, &err);
        assert_non_null(img[i]);
        fm_model_lora_info(m, &info[i]);
    }
    assert_memory_equal(img[0], img[3], 64 * 64 * 3);
    assert_true(info[1].reused > 0); /* locon's layers that loha does not touch */
    assert_int_equal(info[2].files, 0);
    fm_model *fresh = fm_model_load(DATA "tiny-sd1.safetensors", &err);
    uint8_t *f = render(fresh, prompts[1], NULL, 0, LDIR, &err);
    assert_memory_equal(f, img[1], 64 * 64 * 3);
    uint8_t *plain = render(fresh, "fox", NULL, 0, LDIR, &err);
    assert_memory_equal(plain, img[2], 64 * 64 * 3);
    for (int i = 0; i < 4; i++) free(img[i]);
    free(f);
    free(plain);
    fm_model_free(fresh);
    fm_model_free(m);
}

/* FMIMAGE_LORA_SPILL: =off keeps the merge in memory, =DIR puts every
 * merged tensor in a file there (LoHa: merged in fp32 and bf16 alike); the
 * images are the same bytes. */
static void test_spill_setting(void **state)
{
    (void)state;
    fm_precision prec = kn_has_bf16() ? FM_PREC_BF16 : FM_PREC_FP32;
    fm_error err = {0};
    char spill[512];
    snprintf(spill, sizeof spill, "%s/spill-env", tu_dir);
    assert_int_equal(mkdir(spill, 0755), 0);
    const char *values[] = {"off", spill};
    uint8_t *img[2];
    fm_lora_info info[2];
    for (int i = 0; i < 2; i++) {
        setenv("FMIMAGE_LORA_SPILL", values[i], 1);
        fm_model *m = fm_model_load(DATA "tiny-sd1.safetensors", &err);
        assert_non_null(m);
        img[i] = render_at(m, "fox <lora:sd1_loha:0.5:1>", NULL, 0, LDIR, prec, &err);
        if (!img[i]) fail_msg("%s", err.msg);
        fm_model_lora_info(m, &info[i]);
        fm_model_free(m);
    }
    unsetenv("FMIMAGE_LORA_SPILL");
    assert_true(info[0].tensors > 0);
    assert_int_equal(info[0].in_file, 0);
    assert_int_equal(info[1].in_file, info[1].tensors);
    assert_memory_equal(img[0], img[1], 64 * 64 * 3);
    free(img[0]);
    free(img[1]);
    assert_int_equal(rmdir(spill), 0); /* empty: the file was never linked */
}

/* ---- hashes ---- */

static void test_lora_hashes(void **state)
{
    (void)state;
    wt_safetensors ref;
    tu_open(&ref, REF);
    const char *h1 = wt_st_meta_get(&ref, "hash/sd1_locon"), *h2 = wt_st_meta_get(&ref, "hash/sd1_loha");
    assert_non_null(h1);
    fm_error err = {0};
    fm_model *m = fm_model_load(DATA "tiny-sd1.safetensors", &err);
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "fox <lora:sd1_locon:0.8> <lora:sd1_loha:0.5:1> <lora:sd1_locon:1>";
    p.lora_dir = LDIR;
    char want[128];
    snprintf(want, sizeof want, "sd1_locon: %s, sd1_loha: %s", h1, h2);
    char *h = fm_lora_hashes(&p, &err);
    assert_non_null(h);
    assert_string_equal(h, want);
    free(h);
    char *info = fm_infotext(m, &p, "tiny", NULL, &err);
    assert_non_null(info);
    snprintf(want, sizeof want, "Lora hashes: \"sd1_locon: %s, sd1_loha: %s\", Version: ", h1, h2);
    assert_non_null(strstr(info, want));
    assert_non_null(strstr(info, "fox <lora:sd1_locon:0.8>")); /* the tags stay in the prompt text */
    free(info);
    fm_model_free(m);
    wt_st_close(&ref);
}

/* ---- hostile files: one line, exit 1, nothing written ---- */

static void put_adapter(const char *file, const tl_st_entry *e, int n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/loras/%s", tu_dir, file);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/loras", tu_dir);
    mkdir(dir, 0755);
    fm_error err = {0};
    if (tl_st_write(path, e, n, NULL, 0, &err)) fail_msg("%s", err.msg);
}

static void test_hostile(void **state)
{
    (void)state;
    static float z[64 * 64], nan1 = NAN;
    tl_st_entry shape[] = {
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight", FM_DT_F32, 2, {4, 32}, z},
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight", FM_DT_F32, 2, {64, 4}, z}};
    tl_st_entry rank0[] = {
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight", FM_DT_F32, 2, {0, 32}, z},
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight", FM_DT_F32, 2, {32, 0}, z}};
    tl_st_entry nan_alpha[] = {
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.alpha", FM_DT_F32, 0, {0}, &nan1},
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight", FM_DT_F32, 2, {4, 32}, z},
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight", FM_DT_F32, 2, {32, 4}, z}};
    tl_st_entry nothing[] = {{"lora_unet_no_such_layer.lora_down.weight", FM_DT_F32, 2, {4, 32}, z},
                             {"lora_unet_no_such_layer.lora_up.weight", FM_DT_F32, 2, {32, 4}, z}};
    tl_st_entry not_lora[] = {{"model.diffusion_model.out.2.weight", FM_DT_F32, 1, {4}, z}};
    static uint8_t no = 0;
    tl_st_entry ia3_conv[] = {{"lora_unet_input_blocks_1_0_in_layers_2.weight", FM_DT_F32, 1, {32}, z},
                              {"lora_unet_input_blocks_1_0_in_layers_2.on_input", FM_DT_U8, 0, {0}, &no}};
    tl_st_entry ia3_flag[] = {{"lora_unet_input_blocks_1_1_proj_in.weight", FM_DT_F32, 1, {32}, z}};
    tl_st_entry oft_fit[] = {
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.oft_blocks", FM_DT_F32, 3, {5, 8, 8}, z},
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.alpha", FM_DT_F32, 0, {0}, z}};
    tl_st_entry norm_linear[] = {
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.w_norm", FM_DT_F32, 1, {32}, z},
        {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.b_norm", FM_DT_F32, 1, {32}, z}};
    put_adapter("ia3conv.safetensors", ia3_conv, 2);
    put_adapter("ia3flag.safetensors", ia3_flag, 1);
    put_adapter("oftfit.safetensors", oft_fit, 2);
    put_adapter("normlinear.safetensors", norm_linear, 2);
    put_adapter("shape.safetensors", shape, 2);
    put_adapter("rank0.safetensors", rank0, 2);
    put_adapter("nan.safetensors", nan_alpha, 3);
    put_adapter("nothing.safetensors", nothing, 2);
    put_adapter("notlora.safetensors", not_lora, 1);
    char cmd[1024], sdxl[512];
    snprintf(sdxl, sizeof sdxl, "cp " LDIR "/sdxl_lora.safetensors %s/loras/xl.safetensors", tu_dir);
    assert_int_equal(system(sdxl), 0);
    static const struct { const char *name, *why; } cases_[] = {
        {"shape", "does not fit model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight [32, 32]"},
        {"rank0", "empty (rank 0)"},
        {"nan", "alpha is NaN"},
        {"nothing", "none of its 1 modules maps to a layer of this SD 1.x model"},
        {"notlora", "not an adapter file"},
        {"xl", "a LoRA for SDXL (it has lora_te2_ keys), the model is SD 1.x"},
        {"ia3conv", "IA3 on model.diffusion_model.input_blocks.1.0.in_layers.2.weight, not a linear layer"},
        {"ia3flag", "on_input missing"},
        {"oftfit", "oft_blocks [5, 8, 8] does not fit model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight [32, 32]"},
        {"normlinear", "w_norm/b_norm for model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight, not a norm layer"},
    };
    const char *bin = getenv("FM_BIN") ? getenv("FM_BIN") : "build/fmimage";
    for (size_t i = 0; i < sizeof cases_ / sizeof cases_[0]; i++) {
        char out[4096], png[600];
        snprintf(png, sizeof png, "%s/out-%s.png", tu_dir, cases_[i].name);
        snprintf(cmd, sizeof cmd, "%s -m " DATA "tiny-sd1.safetensors -q --steps 1 -W 64 -H 64 --seed 1 "
                 "--lora-dir %s/loras -o %s 'fox <lora:%s:1>' 2>&1", bin, tu_dir, png, cases_[i].name);
        int st = tu_run_capture(cmd, out, sizeof out);
        if (st != 1) fail_msg("%s: exit %d: %s", cases_[i].name, st, out);
        if (!strstr(out, cases_[i].why) || strncmp(out, "fmimage: ", 9) || strchr(out, '\n') != out + strlen(out) - 1)
            fail_msg("%s: %s", cases_[i].name, out);
        assert_int_not_equal(access(png, F_OK), 0);
    }
    /* an unknown name, and -v's count of unmapped keys */
    char out[4096];
    snprintf(cmd, sizeof cmd, "%s -m " DATA "tiny-sd1.safetensors -q --steps 1 -W 64 -H 64 --seed 1 "
             "--lora-dir %s/loras -o %s/x.png 'fox <lora:missing:1>' 2>&1", bin, tu_dir, tu_dir);
    assert_int_equal(tu_run_capture(cmd, out, sizeof out), 1);
    char want[600];
    snprintf(want, sizeof want, "fmimage: lora \"missing\": not found in %s/loras\n", tu_dir);
    assert_string_equal(out, want);
    snprintf(cmd, sizeof cmd, "%s -m " DATA "tiny-sd1.safetensors -v --steps 1 -W 64 -H 64 --seed 1 "
             "--lora-dir " LDIR " -o %s/v.png 'fox <lora:sd1_locon:1>' 2>&1", bin, tu_dir);
    assert_int_equal(tu_run_capture(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "fmimage: lora: 1 file, 7 modules merged into 7 tensors"));
    assert_non_null(strstr(out, "; 2 keys unmapped"));
}

/* ---- published spellings over the full-size layouts: every key maps ---- */

/* A resnet layer's diffusers name (diffusers' original-checkpoint converter). */
static const char *resnet_layer(const char *ldm)
{
    static const char *const names[][2] = {
        {"in_layers.2", "conv1"}, {"out_layers.3", "conv2"}, {"emb_layers.1", "time_emb_proj"},
        {"skip_connection", "conv_shortcut"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(ldm, names[i][0])) return names[i][1];
    return NULL;
}

/* The diffusers module name (dots) of an ldm U-Net layer ("input_blocks.4.1.
 * proj_in"), SD's 2 layers a level as every SD 1.x/2.x/SDXL U-Net has, if it
 * is one of LCM-LoRA's target types; 0 otherwise. Written from diffusers'
 * layout, not from fmimage's (A1111's) reverse arithmetic. */
static int diffusers_name(const char *ldm, char *out, size_t n)
{
    int i, j, at = -1;
    const char *r = NULL;
    if (sscanf(ldm, "input_blocks.%d.%d.%n", &i, &j, &at) == 2 && at > 0 && i > 0) {
        r = ldm + at;
        if (i % 3 == 0) return !strcmp(r, "op") && snprintf(out, n, "down_blocks.%d.downsamplers.0.conv", i / 3 - 1) > 0;
        if (j == 1) return snprintf(out, n, "down_blocks.%d.attentions.%d.%s", (i - 1) / 3, (i - 1) % 3, r) > 0;
        return resnet_layer(r) && snprintf(out, n, "down_blocks.%d.resnets.%d.%s", (i - 1) / 3, (i - 1) % 3, resnet_layer(r)) > 0;
    }
    if (sscanf(ldm, "middle_block.%d.%n", &i, &at) == 1 && at > 0) {
        r = ldm + at;
        if (i == 1) return snprintf(out, n, "mid_block.attentions.0.%s", r) > 0;
        return resnet_layer(r) && snprintf(out, n, "mid_block.resnets.%d.%s", i / 2, resnet_layer(r)) > 0;
    }
    if (sscanf(ldm, "output_blocks.%d.%d.%n", &i, &j, &at) == 2 && at > 0) {
        r = ldm + at;
        if (j == 0) return resnet_layer(r) && snprintf(out, n, "up_blocks.%d.resnets.%d.%s", i / 3, i % 3, resnet_layer(r)) > 0;
        if (!strcmp(r, "conv")) return snprintf(out, n, "up_blocks.%d.upsamplers.0.conv", i / 3) > 0;
        return snprintf(out, n, "up_blocks.%d.attentions.%d.%s", i / 3, i % 3, r) > 0;
    }
    return 0;
}

typedef struct published {
    char kohya[WT_NAME_MAX], ldm[WT_NAME_MAX];
} published;

/* One spelling of a rank-1 all-zero LoRA on every LCM target layer of a
 * layout: kohya's diffusers names (LCM-LoRA, SDXL-Lightning as published),
 * PEFT (unet.*.lora_A/B), diffusers <= 0.23 (unet.*.lora.down/up). */
static int published_adapter(const tl_layout *L, int spelling, const char *path, published *mods)
{
    static const char *const parts[][2] = {{".lora_down.weight", ".lora_up.weight"},
                                           {".lora_A.weight", ".lora_B.weight"},
                                           {".lora.down.weight", ".lora.up.weight"}};
    static const char unet[] = "model.diffusion_model.";
    tl_st_entry *e = calloc((size_t)L->n * 2, sizeof *e);
    char(*names)[WT_NAME_MAX + 32] = calloc((size_t)L->n * 2, sizeof *names);
    int n_mods = 0, n = 0;
    for (int t = 0; t < L->n; t++) {
        const tl_st_entry *w = &L->entries[t];
        size_t len = strlen(w->name);
        char ldm[WT_NAME_MAX], dif[WT_NAME_MAX - 16];
        if (strncmp(w->name, unet, sizeof unet - 1) || len < 7 || strcmp(w->name + len - 7, ".weight") ||
            (w->ndim != 2 && w->ndim != 4))
            continue;
        snprintf(ldm, sizeof ldm, "%.*s", (int)(len - 7 - (sizeof unet - 1)), w->name + sizeof unet - 1);
        if (!diffusers_name(ldm, dif, sizeof dif)) continue;
        published *m = &mods[n_mods++];
        snprintf(m->kohya, sizeof m->kohya, "lora_unet_%s", dif);
        for (char *c = m->kohya; *c; c++)
            if (*c == '.') *c = '_';
        snprintf(m->ldm, sizeof m->ldm, "%s", w->name);
        for (int up = 0; up < 2; up++) {
            if (spelling == 0) snprintf(names[n], sizeof names[n], "%s%s", m->kohya, parts[0][up]);
            else snprintf(names[n], sizeof names[n], "unet.%s%s", dif, parts[spelling][up]);
            tl_st_entry *f = &e[n];
            f->name = names[n++];
            f->dtype = FM_DT_F16;
            f->ndim = w->ndim; /* down [1, in(, kh, kw)], up [out, 1(, 1, 1)] */
            for (int d = 0; d < w->ndim; d++) f->shape[d] = up ? (d ? 1 : w->shape[0]) : (d ? w->shape[d] : 1);
        }
    }
    fm_error err = {0};
    if (tl_st_write(path, e, n, NULL, 0, &err)) fail_msg("%s", err.msg);
    free(names);
    free(e);
    return n_mods;
}

/* The size of the safetensors file that holds mods[0..n) (kohya names, the
 * layout's shapes) as rank-64 F16 factors and an F16 alpha, safetensors'
 * way: a JSON header with metadata meta (or none), tensors in name order
 * (all of one dtype), padded with spaces to 8 bytes. */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static long long published_file_size(const tl_layout *L, const published *mods, int n, const char *meta)
{
    char **keys = calloc((size_t)n * 3, sizeof *keys);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            static const char *const part[] = {".alpha", ".lora_down.weight", ".lora_up.weight"};
            keys[3 * i + k] = malloc(WT_NAME_MAX + 32);
            snprintf(keys[3 * i + k], WT_NAME_MAX + 32, "%s%s|%d", mods[i].kohya, part[k], i);
        }
    qsort(keys, (size_t)n * 3, sizeof *keys, cmp_str);
    long long off = 0, header = 2 + (meta ? (long long)strlen(meta) + 17 : 0); /* {} and "__metadata__":META, */
    for (int e = 0; e < 3 * n; e++) {
        char *bar = strrchr(keys[e], '|'), shape[64] = "", json[WT_NAME_MAX + 160];
        const published *m = &mods[atoi(bar + 1)];
        *bar = 0;
        const tl_st_entry *w = NULL;
        for (int t = 0; t < L->n && !w; t++)
            if (!strcmp(L->entries[t].name, m->ldm)) w = &L->entries[t];
        long long numel = 1;
        if (strstr(keys[e], ".lora_down.")) { /* [64, in(, kh, kw)] */
            numel = 64LL * w->shape[1] * (w->ndim == 4 ? w->shape[2] * w->shape[3] : 1);
            if (w->ndim == 4) snprintf(shape, sizeof shape, "64,%lld,%lld,%lld", (long long)w->shape[1], (long long)w->shape[2], (long long)w->shape[3]);
            else snprintf(shape, sizeof shape, "64,%lld", (long long)w->shape[1]);
        } else if (strstr(keys[e], ".lora_up.")) { /* [out, 64(, 1, 1)] */
            numel = 64LL * w->shape[0];
            snprintf(shape, sizeof shape, w->ndim == 4 ? "%lld,64,1,1" : "%lld,64", (long long)w->shape[0]);
        }
        header += snprintf(json, sizeof json, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[%s],\"data_offsets\":[%lld,%lld]}",
                           e ? "," : "", keys[e], shape, off, off + 2 * numel);
        off += 2 * numel;
        free(keys[e]);
    }
    free(keys);
    return 8 + (header + 7) / 8 * 8 + off;
}

static void test_published_key_lists(void **state)
{
    (void)state;
    /* size: the published LCM-LoRA file for the layout, bytes
     * (latent-consistency/lcm-lora-sdv1-5 and lcm-lora-sdxl,
     * pytorch_lora_weights.safetensors, as the Hugging Face listing gives
     * them); meta: the safetensors metadata that makes the size match */
    static const struct { const char *layout, *unmapped; long long size; const char *meta; } layouts[] = {
        {DATA "layouts/sd1.tsv", NULL, 134621556, "{\"format\":\"pt\"}"},
        {DATA "layouts/sd2.tsv", NULL, 0, NULL},
        /* A1111 puts up level 0's upsampler at output_blocks_2_1_conv, SD 1.x's place;
         * SDXL's level 0 has attentions there: unmapped in A1111, so here too. */
        {DATA "layouts/sdxl.tsv", "lora_unet_up_blocks_0_upsamplers_0_conv", 393854592, NULL},
    };
    for (size_t li = 0; li < sizeof layouts / sizeof layouts[0]; li++) {
        fm_error err = {0};
        tl_layout L;
        if (tl_layout_read(&L, layouts[li].layout, &err)) fail_msg("%s", err.msg);
        char ckpt[512], path[512];
        snprintf(ckpt, sizeof ckpt, "%s/zeros.safetensors", tu_dir);
        tl_randckpt_opts o = {.float_dtype = -1, .zeros = 1};
        if (tl_randckpt_write(&L, ckpt, &o, &err)) fail_msg("%s", err.msg);
        wt_source *base = wt_open(ckpt, &err);
        assert_non_null(base);
        wt_model_config cfg;
        assert_int_equal(df_detect_config(base, &cfg, &err), 0);
        published *mods = calloc((size_t)L.n, sizeof *mods);
        for (int spelling = 0; spelling < 3; spelling++) {
            snprintf(path, sizeof path, "%s/published.safetensors", tu_dir);
            int n = published_adapter(&L, spelling, path, mods);
            wt_lora *l = wt_lora_open(path, base, &cfg, &err);
            if (!l) fail_msg("%s spelling %d: %s", layouts[li].layout, spelling, err.msg);
            int want_unmapped = 0;
            for (int i = 0; i < n; i++)
                if (layouts[li].unmapped && !strcmp(mods[i].kohya, layouts[li].unmapped)) want_unmapped += 2;
            for (int k = 0; k < wt_lora_n_modules(l); k++) {
                const wt_lora_module *m = &l->mods[k];
                int found = 0;
                for (int i = 0; i < n && !found; i++)
                    if (!strcmp(mods[i].kohya, m->key)) {
                        found = 1;
                        if (strcmp(m->target->name, mods[i].ldm))
                            fail_msg("%s: %s -> %s, not %s", layouts[li].layout, m->key, m->target->name, mods[i].ldm);
                    }
                if (!found) fail_msg("%s: module %s not in the file", layouts[li].layout, m->key);
            }
            printf("%s spelling %d: %d modules, %d mapped, %d keys unmapped\n", layouts[li].layout, spelling, n,
                   wt_lora_n_modules(l), wt_lora_n_unmapped(l));
            assert_int_equal(wt_lora_n_unmapped(l), want_unmapped);
            assert_int_equal(wt_lora_n_modules(l), n - want_unmapped / 2);
            assert_true(n > 100);
            /* the key list (names, shapes) as rank 64 is the published file, to the byte */
            if (spelling == 0 && layouts[li].size) {
                long long size = published_file_size(&L, mods, n, layouts[li].meta);
                printf("%s: as rank-64 F16 with alpha: %lld bytes, the published LCM-LoRA %lld\n", layouts[li].layout,
                       size, layouts[li].size);
                assert_true(size == layouts[li].size);
            }
            wt_lora_close(l);
        }
        free(mods);
        wt_close(base);
        unlink(ckpt);
        unlink(path);
        tl_layout_free(&L);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merged_weights),
        cmocka_unit_test(test_images_match_reference_merge),
        cmocka_unit_test(test_merged_bf16),
        cmocka_unit_test(test_merged_spill),
        cmocka_unit_test(test_images_bf16_merge),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_tags_in_prompt),
        cmocka_unit_test(test_reapply),
        cmocka_unit_test(test_spill_setting),
        cmocka_unit_test(test_lora_hashes),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_lowrank_fp32),
        cmocka_unit_test(test_published_key_lists),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
