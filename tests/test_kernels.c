/* Every fast kernel against its reference loop on random data.
 *
 * Tolerance: |got - ref| <= tol * max(1, |ref|) element-wise (tu_assert_close).
 * FP32 kernels accumulate in float against a double reference: 2e-5 for short
 * sums, 1e-4 for the long ones (K up to a few thousand). The BF16 mode rounds
 * weights and activations to 8-bit mantissas (relative 2^-9 each): it must
 * match the reference run on bf16-rounded inputs to fp32 tolerance, and its
 * error against full precision, which grows like sqrt(K) * 2^-9 per output,
 * must stay within 3e-2 of the output RMS (measured value printed).
 *
 * The program runs once with the best ISA the CPU has, then re-runs itself
 * with FM_ISA=avx2 and FM_ISA=scalar where the CPU allows, so every
 * dispatched path is checked. */
#include "testutil.h"
#include "kernels/kernels.h"
#include "kernels/gemm.h" /* the bf16 packers, bit for bit */

#include <sys/wait.h>
#include <unistd.h>

#define TOL_SHORT 2e-5
#define TOL_LONG 1e-4
#define TOL_BF16_RMS 3e-2

static float *rnd(size_t n, uint64_t seed)
{
    float *x = core_alloc(sizeof(float) * (n ? n : 1));
    assert_non_null(x);
    tu_fill_random(x, n, seed);
    return x;
}

static float *buf(size_t n)
{
    float *x = core_alloc(sizeof(float) * (n ? n : 1));
    assert_non_null(x);
    return x;
}

/* Largest error in the tu_assert_close sense, for the log. */
static double max_rel_err(const float *got, const float *ref, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static void check(const float *got, const float *ref, size_t n, double tol, const char *what)
{
    if (getenv("FM_TEST_VERBOSE"))
        print_message("  %-48s max err %.2e (tol %.0e)\n", what, max_rel_err(got, ref, n), tol);
    tu_assert_close(got, ref, n, tol, what);
}

/* A weight matrix in the given dtype made from random floats; the float
 * values are rounded to the dtype first so the reference sees the same. */
static kn_mat make_mat(int rows, int cols, core_dtype dt, uint64_t seed)
{
    size_t n = (size_t)rows * cols;
    float *f = rnd(n, seed);
    kn_mat m = {.dtype = dt, .rows = rows, .cols = cols};
    if (dt == FM_DT_F32) {
        m.data = f;
        return m;
    }
    uint16_t *h = core_alloc(2 * n + 2);
    assert_non_null(h);
    if (dt == FM_DT_F16) core_f32_to_f16(h, f, n);
    else core_f32_to_bf16(h, f, n);
    core_free(f);
    m.data = h;
    return m;
}

static void free_mat(kn_mat *m)
{
    core_free((void *)m->data);
}

/* x rounded to bf16 (nearest even) and back, in place. */
static void round_to_bf16(float *x, size_t n)
{
    uint16_t *h = core_alloc(2 * n + 2);
    assert_non_null(h);
    core_f32_to_bf16(h, x, n);
    core_bf16_to_f32(x, h, n);
    core_free(h);
}

/* m as float32 rounded to bf16: what the BF16 mode multiplies by. */
static kn_mat bf16_rounded_copy(const kn_mat *m)
{
    size_t n = (size_t)m->rows * m->cols;
    float *f = core_alloc(sizeof(float) * n + 4);
    assert_non_null(f);
    core_convert_to_f32(f, m->data, m->dtype, n);
    round_to_bf16(f, n);
    return (kn_mat){.data = f, .dtype = FM_DT_F32, .rows = m->rows, .cols = m->cols};
}

static double rms(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / (n ? n : 1));
}

/* The BF16 mode: exact (fp32 tolerance) against the reference on bf16-rounded
 * inputs, and its error against full precision, relative to the output's RMS,
 * within TOL_BF16_RMS. */
static void check_bf16_mode(const float *got, const float *ref_rounded, const float *ref_fp32, size_t n,
                            const char *what)
{
    double worst = 0, scale = rms(ref_fp32, n);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref_fp32[i]) / scale;
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    print_message("  %-48s max err vs fp32 %.2e of output RMS (tol %.0e)\n", what, worst, TOL_BF16_RMS);
    assert_true(worst <= TOL_BF16_RMS);
    check(got, ref_rounded, n, TOL_LONG, what);
}

static const char *dt_name(core_dtype dt) { return core_dtype_name(dt); }

/* ---- GEMM ---- */

static void sgemm_case(int M, int N, int K, int trans_b, float beta, int pad)
{
    int lda = K + pad, ldb = (trans_b ? K : N) + pad, ldc = N + pad;
    float *A = rnd((size_t)M * lda, 1), *B = rnd((size_t)(trans_b ? N : K) * ldb, 2);
    float *C = rnd((size_t)M * ldc, 3), *R = buf((size_t)M * ldc);
    memcpy(R, C, sizeof(float) * M * ldc);
    kn_sgemm(M, N, K, A, lda, B, ldb, trans_b, beta, C, ldc);
    kn_sgemm_ref(M, N, K, A, lda, B, ldb, trans_b, beta, R, ldc);
    char what[96];
    snprintf(what, sizeof what, "sgemm %dx%dx%d tb%d beta%g", M, N, K, trans_b, beta);
    check(C, R, (size_t)M * ldc, K > 200 ? TOL_LONG : TOL_SHORT, what);
    core_free(A); core_free(B); core_free(C); core_free(R);
}

static void test_sgemm(void **state)
{
    (void)state;
    sgemm_case(1, 1, 1, 0, 0.0f, 0);
    sgemm_case(37, 53, 29, 0, 0.0f, 3);
    sgemm_case(37, 53, 29, 1, 1.0f, 0);
    sgemm_case(130, 67, 300, 1, 0.5f, 5);
    sgemm_case(131, 260, 77, 0, 1.0f, 1);
    sgemm_case(300, 33, 1030, 0, 0.0f, 0);
    sgemm_case(64, 1100, 40, 1, 0.0f, 0);
}

/* ---- linear ---- */

static void linear_case(int n, int in, int out, core_dtype dt, int with_bias, fm_precision prec)
{
    kn_mat w = make_mat(out, in, dt, 11);
    float *x = rnd((size_t)n * in, 12), *bias = with_bias ? rnd(out, 13) : NULL;
    float *y = buf((size_t)n * out), *r = buf((size_t)n * out);
    kn_linear_ref(r, x, n, &w, bias);
    if (prec != FM_PREC_AUTO) assert_int_equal(kn_mat_pack(&w, prec), 0);
    kn_linear(y, x, n, &w, bias);
    if (prec == FM_PREC_BF16 && kn_has_bf16()) {
        kn_mat wr = bf16_rounded_copy(&w);
        float *xr = buf((size_t)n * in), *rr = buf((size_t)n * out);
        memcpy(xr, x, sizeof(float) * n * in);
        round_to_bf16(xr, (size_t)n * in);
        kn_linear_ref(rr, xr, n, &wr, bias);
        char what[96];
        snprintf(what, sizeof what, "linear %dx%d->%d %s [bf16 mode]", n, in, out, dt_name(dt));
        check_bf16_mode(y, rr, r, (size_t)n * out, what);
        core_free(xr); core_free(rr); free_mat(&wr);
        core_free(x); core_free(bias); core_free(y); core_free(r);
        free_mat(&w);
        return;
    }
    char what[96];
    snprintf(what, sizeof what, "linear %dx%d->%d %s%s%s", n, in, out, dt_name(dt),
             with_bias ? " bias" : "", prec == FM_PREC_BF16 ? " [bf16 mode]" : prec ? " [packed]" : "");
    check(y, r, (size_t)n * out, in > 200 ? TOL_LONG : TOL_SHORT, what);
    core_free(x); core_free(bias); core_free(y); core_free(r);
    free_mat(&w);
}

static void test_linear(void **state)
{
    (void)state;
    const core_dtype dts[] = {FM_DT_F32, FM_DT_F16, FM_DT_BF16};
    for (int d = 0; d < 3; d++) {
        linear_case(1, 7, 5, dts[d], 1, FM_PREC_AUTO);
        linear_case(77, 45, 33, dts[d], 0, FM_PREC_AUTO);
        linear_case(130, 320, 97, dts[d], 1, FM_PREC_AUTO);
        linear_case(129, 321, 130, dts[d], 1, FM_PREC_FP32);
        linear_case(300, 640, 1280, dts[d], 1, FM_PREC_AUTO);
        linear_case(1000, 96, 70, dts[d], 1, FM_PREC_AUTO); /* weights shared by many row tiles */
    }
}

static void test_linear_bf16_mode(void **state)
{
    (void)state;
    linear_case(77, 45, 33, FM_DT_F32, 1, FM_PREC_BF16);
    linear_case(130, 320, 97, FM_DT_F16, 1, FM_PREC_BF16);
    linear_case(300, 1281, 133, FM_DT_BF16, 0, FM_PREC_BF16);
    linear_case(1000, 321, 70, FM_DT_F16, 1, FM_PREC_BF16);
    /* AMX's tile edges: fewer than 16 rows, columns or pairs; whole tiles;
     * several K slices */
    linear_case(1, 7, 5, FM_DT_F32, 1, FM_PREC_BF16);
    linear_case(33, 31, 17, FM_DT_F16, 0, FM_PREC_BF16);
    linear_case(64, 64, 64, FM_DT_F16, 1, FM_PREC_BF16);
    linear_case(100, 2880, 320, FM_DT_F16, 1, FM_PREC_BF16);
}

/* ---- convolution ---- */

typedef struct conv_case {
    int n, cin, cout, h, w, k, stride, pt, pl, pb, pr;
} conv_case;

static void conv_run(const conv_case *cc, core_dtype dt, int with_bias, fm_precision prec)
{
    kn_conv c = {.cin = cc->cin, .cout = cc->cout, .kh = cc->k, .kw = cc->k, .stride = cc->stride,
                 .pad_t = cc->pt, .pad_l = cc->pl, .pad_b = cc->pb, .pad_r = cc->pr};
    c.w = make_mat(cc->cout, cc->cin * cc->k * cc->k, dt, 21);
    float *bias = with_bias ? rnd(cc->cout, 22) : NULL;
    c.bias = bias;
    int oh = kn_conv_out_h(&c, cc->h), ow = kn_conv_out_w(&c, cc->w);
    size_t ny = (size_t)cc->n * cc->cout * oh * ow;
    float *x = rnd((size_t)cc->n * cc->cin * cc->h * cc->w, 23), *y = buf(ny), *r = buf(ny);
    kn_conv2d_ref(r, x, &c, cc->n, cc->h, cc->w);
    if (prec != FM_PREC_AUTO) assert_int_equal(kn_mat_pack(&c.w, prec), 0);
    kn_conv2d(y, x, &c, cc->n, cc->h, cc->w);
    if (prec == FM_PREC_BF16 && kn_has_bf16()) {
        kn_conv cr = c;
        cr.w = bf16_rounded_copy(&c.w);
        size_t nx = (size_t)cc->n * cc->cin * cc->h * cc->w;
        float *xr = buf(nx), *rr = buf(ny);
        memcpy(xr, x, sizeof(float) * nx);
        round_to_bf16(xr, nx);
        kn_conv2d_ref(rr, xr, &cr, cc->n, cc->h, cc->w);
        char what[128];
        snprintf(what, sizeof what, "conv n%d %d->%d %dx%d k%d s%d %s [bf16 mode]", cc->n, cc->cin, cc->cout,
                 cc->h, cc->w, cc->k, cc->stride, dt_name(dt));
        check_bf16_mode(y, rr, r, ny, what);
        core_free(xr); core_free(rr); free_mat(&cr.w);
        core_free(x); core_free(y); core_free(r); core_free(bias);
        free_mat(&c.w);
        return;
    }
    char what[128];
    snprintf(what, sizeof what, "conv n%d %d->%d %dx%d k%d s%d pad(%d,%d,%d,%d) %s%s", cc->n, cc->cin,
             cc->cout, cc->h, cc->w, cc->k, cc->stride, cc->pt, cc->pl, cc->pb, cc->pr, dt_name(dt),
             prec == FM_PREC_BF16 ? " [bf16 mode]" : "");
    int K = cc->cin * cc->k * cc->k;
    check(y, r, ny, K > 200 ? TOL_LONG : TOL_SHORT, what);
    core_free(x); core_free(y); core_free(r); core_free(bias);
    free_mat(&c.w);
}

static const conv_case conv_cases[] = {
    {1, 3, 5, 9, 7, 3, 1, 1, 1, 1, 1},       /* 3x3 pad 1 stride 1, tiny */
    {2, 37, 45, 19, 23, 3, 1, 1, 1, 1, 1},   /* odd channels and sizes, batch 2 */
    {1, 64, 70, 33, 31, 3, 2, 1, 1, 1, 1},   /* 3x3 stride 2 pad 1 (U-Net downsample) */
    {2, 32, 48, 16, 16, 3, 2, 0, 0, 1, 1},   /* VAE downsample: pad (0,1,0,1), stride 2 */
    {1, 19, 21, 15, 17, 3, 2, 0, 0, 1, 1},   /* same, odd */
    {2, 96, 40, 13, 11, 1, 1, 0, 0, 0, 0},   /* 1x1 */
    {1, 320, 33, 8, 8, 3, 1, 1, 1, 1, 1},    /* long K (2880), small map */
    {1, 4, 320, 32, 32, 3, 1, 1, 1, 1, 1},   /* conv_in shape */
    {1, 16, 8, 64, 64, 3, 1, 1, 1, 1, 1},    /* wide map */
    {3, 40, 24, 8, 8, 1, 1, 0, 0, 0, 0},     /* 1x1, batch folded into the pixel axis */
    {2, 24, 30, 16, 8, 3, 1, 1, 1, 1, 1},    /* 3x3, batch folded */
};

static void test_conv2d(void **state)
{
    (void)state;
    const core_dtype dts[] = {FM_DT_F32, FM_DT_F16, FM_DT_BF16};
    for (size_t i = 0; i < sizeof conv_cases / sizeof *conv_cases; i++)
        conv_run(&conv_cases[i], dts[i % 3], (int)(i % 4 != 1), FM_PREC_AUTO);
    conv_run(&conv_cases[1], FM_DT_F16, 1, FM_PREC_FP32);
    conv_run(&conv_cases[3], FM_DT_F32, 1, FM_PREC_FP32);
}

static void test_conv2d_bf16_mode(void **state)
{
    (void)state;
    conv_run(&conv_cases[1], FM_DT_F16, 1, FM_PREC_BF16);
    conv_run(&conv_cases[3], FM_DT_F32, 1, FM_PREC_BF16);
    conv_run(&conv_cases[6], FM_DT_BF16, 0, FM_PREC_BF16);
    conv_run(&conv_cases[7], FM_DT_F16, 1, FM_PREC_BF16); /* K 36: one partial AMX step */
    conv_run(&conv_cases[10], FM_DT_F32, 1, FM_PREC_BF16);
    /* the im2col-free AMX convolution (channels multiples of 32): pixel
     * blocks straddling rows and the map's end, several channel blocks,
     * long K (a 1 MiB A block holds 32 rows of 1280 channels); maps of
     * 16x16 and larger take it */
    static const conv_case on_tiles[] = {
        {2, 32, 64, 13, 21, 3, 1, 1, 1, 1, 1},
        {1, 64, 32, 7, 40, 3, 1, 1, 1, 1, 1},
        {2, 1280, 96, 16, 17, 3, 1, 1, 1, 1, 1},
    };
    conv_run(&on_tiles[0], FM_DT_F16, 1, FM_PREC_BF16);
    conv_run(&on_tiles[1], FM_DT_F32, 0, FM_PREC_BF16);
    conv_run(&on_tiles[2], FM_DT_BF16, 1, FM_PREC_BF16);
}

/* ---- caller-owned scratch ---- */

/* A call given its queried scratch computes what the allocating entry point
 * does (bit for bit: same layout, same threads); one byte less is an error
 * that leaves the output as it was, never a partial result. */
static void scratch_case(const char *what, size_t bytes, int (*run)(const kn_scratch *, void *), void *ctx,
                         float *out, const float *want, size_t n)
{
    int threads = kn_scratch_threads();
    kn_scratch s = {.base = core_alloc(bytes), .bytes = bytes, .threads = threads};
    assert_non_null(s.base);
    for (size_t i = 0; i < n; i++) out[i] = 12345.0f;
    s.bytes = bytes - 1;
    if (run(&s, ctx) != -1) fail_msg("%s: a scratch one byte short was not refused", what);
    for (size_t i = 0; i < n; i++)
        if (out[i] != 12345.0f) fail_msg("%s: a refused call wrote output %zu", what, i);
    s.bytes = bytes;
    assert_int_equal(run(&s, ctx), 0);
    if (memcmp(out, want, n * sizeof(float))) fail_msg("%s: differs from the allocating entry point", what);
    core_free(s.base);
}

typedef struct lin_ctx { float *y; const float *x; int n; const kn_mat *w; const float *b; } lin_ctx;
static int run_lin(const kn_scratch *s, void *c)
{
    lin_ctx *l = c;
    return kn_linear_ws(s, l->y, l->x, l->n, l->w, l->b);
}

typedef struct conv_ctx { float *y; const float *x; const kn_conv *c; int n, h, w; } conv_ctx;
static int run_conv(const kn_scratch *s, void *c)
{
    conv_ctx *v = c;
    return kn_conv2d_ws(s, v->y, v->x, v->c, v->n, v->h, v->w);
}

typedef struct att_ctx { float *o; const float *q, *k, *v; int b, nq, nk, heads, d; fm_precision prec; } att_ctx;
static int run_att(const kn_scratch *s, void *c)
{
    att_ctx *a = c;
    int st = a->heads * a->d;
    return kn_attention_ws(s, a->o, a->q, st, a->k, a->v, st, a->b, a->nq, a->nk, a->heads, a->d,
                           1.0f / sqrtf((float)a->d), 0, a->prec);
}

static void test_scratch(void **state)
{
    (void)state;
    int threads = kn_scratch_threads();
    const core_dtype dts[] = {FM_DT_F32, FM_DT_F16, FM_DT_BF16};
    for (int mode = 0; mode < 2; mode++)
        for (int d = 0; d < 3; d++) {
            int n = 300, in = 320, outc = 640; /* big enough for threads and shared packs */
            kn_mat w = make_mat(outc, in, dts[d], 71);
            kn_mat_pack(&w, mode ? FM_PREC_BF16 : FM_PREC_FP32);
            float *x = rnd((size_t)n * in, 72), *b = rnd(outc, 73), *y = buf((size_t)n * outc),
                  *want = buf((size_t)n * outc);
            kn_linear(want, x, n, &w, b);
            lin_ctx l = {y, x, n, &w, b};
            scratch_case("linear", kn_linear_scratch(n, &w, threads), run_lin, &l, y, want, (size_t)n * outc);
            core_free(x); core_free(b); core_free(y); core_free(want);
            free_mat(&w);

            kn_conv c = {.w = make_mat(48, 40 * 9, dts[d], 74), .cin = 40, .cout = 48, .kh = 3, .kw = 3,
                         .stride = 1, .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1};
            kn_mat_pack(&c.w, mode ? FM_PREC_BF16 : FM_PREC_FP32);
            float *cx = rnd(2 * 40 * 24 * 20, 75), *cy = buf(2 * 48 * 24 * 20), *cw = buf(2 * 48 * 24 * 20);
            kn_conv2d(cw, cx, &c, 2, 24, 20);
            conv_ctx v = {cy, cx, &c, 2, 24, 20};
            scratch_case("conv2d", kn_conv2d_scratch(&c, 2, 24, 20, threads), run_conv, &v, cy, cw,
                         2 * 48 * 24 * 20);
            core_free(cx); core_free(cy); core_free(cw);
            free_mat(&c.w);
        }
    for (int mode = 0; mode < 2; mode++) {
        fm_precision prec = mode ? FM_PREC_BF16 : FM_PREC_FP32;
        int B = 2, nq = 77, nk = 300, heads = 3, d = 40;
        size_t nqd = (size_t)B * nq * heads * d, nkd = (size_t)B * nk * heads * d;
        float *q = rnd(nqd, 81), *k = rnd(nkd, 82), *v = rnd(nkd, 83), *o = buf(nqd), *want = buf(nqd);
        kn_attention_prec(want, q, heads * d, k, v, heads * d, B, nq, nk, heads, d, 1.0f / sqrtf((float)d), 0, prec);
        att_ctx a = {o, q, k, v, B, nq, nk, heads, d, prec};
        scratch_case("attention", kn_attention_scratch(B, nq, nk, heads, d, prec, threads), run_att, &a, o, want, nqd);
        core_free(q); core_free(k); core_free(v); core_free(o); core_free(want);
    }
}

/* ---- Winograd F(4x4,3x3) and F(2x2,3x3) ---- */

/* The float32 error of the fast Winograd kernel against the direct
 * convolution in double, in the tu_assert_close sense. The transforms'
 * coefficients (up to 8 and 1/24 in F(4x4,3x3)) cost digits the direct
 * convolution keeps; the bounds are a few times the largest error measured
 * over these cases (printed). kn_winograd_ref (double) must equal the direct
 * reference to rounding. */
#define TOL_WINO2 1e-5
#define TOL_WINO4 2e-4
#define TOL_WINO_REF 1e-9

typedef struct wino_case { int n, cin, cout, h, w; } wino_case;

/* max |got - ref| / RMS(ref): the error on the scale of the output, which
 * for a Winograd convolution grows with the output's magnitude, not with
 * each element's (the transforms mix a tile's values). */
static double max_err_of_rms(const float *got, const float *ref, size_t n)
{
    double worst = 0, scale = rms(ref, n);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]) / scale;
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static const wino_case wino_cases[] = {
    {1, 3, 5, 9, 7},      /* tiny, tiles cut by both edges */
    {2, 37, 45, 19, 23},  /* odd channels and sizes, batch 2 */
    {3, 20, 17, 5, 6},    /* batch 3, fewer pixels than one lane group of tiles */
    {1, 64, 70, 33, 31},  /* output channels past a multiple of 16 */
    {2, 130, 40, 13, 11}, /* K past a GEMM panel */
    {1, 320, 33, 8, 8},   /* long K (320 channels) */
    {1, 16, 8, 64, 64},   /* wide map: several lane groups per tile row */
    {1, 4, 320, 32, 32},  /* conv_in shape */
};

static void wino_run(const wino_case *wc, int m, core_dtype dt, int with_bias, fm_precision prec)
{
    kn_conv c = {.cin = wc->cin, .cout = wc->cout, .kh = 3, .kw = 3, .stride = 1,
                 .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1};
    c.w = make_mat(wc->cout, wc->cin * 9, dt, 31);
    float *bias = with_bias ? rnd(wc->cout, 32) : NULL;
    c.bias = bias;
    assert_true(kn_winograd_applies(&c));
    size_t nx = (size_t)wc->n * wc->cin * wc->h * wc->w, ny = (size_t)wc->n * wc->cout * wc->h * wc->w;
    float *x = rnd(nx, 33), *y = buf(ny), *r = buf(ny), *wr = buf(ny);
    kn_conv2d_ref(r, x, &c, wc->n, wc->h, wc->w);
    char what[128];
    snprintf(what, sizeof what, "winograd F(%dx%d,3x3) n%d %d->%d %dx%d %s%s%s", m, m, wc->n, wc->cin, wc->cout,
             wc->h, wc->w, dt_name(dt), with_bias ? "" : " no bias", prec == FM_PREC_BF16 ? " [bf16 mode]" : "");
    if (wc->cin * wc->cout * wc->h * wc->w <= 200000) { /* the reference loop is slow */
        kn_winograd_ref(wr, x, &c, m, wc->n, wc->h, wc->w);
        tu_assert_close(wr, r, ny, TOL_WINO_REF, what);
    }
    if (prec != FM_PREC_AUTO) assert_int_equal(kn_mat_pack(&c.w, prec), 0);
    kn_winograd(y, x, &c, m, wc->n, wc->h, wc->w);
    if (prec == FM_PREC_BF16 && kn_has_bf16()) {
        double worst = max_err_of_rms(y, r, ny);
        print_message("  %-58s max err vs fp32 %.2e of output RMS (tol %.0e)\n", what, worst, TOL_BF16_RMS);
        assert_true(worst <= TOL_BF16_RMS);
    } else {
        double e = max_err_of_rms(y, r, ny);
        print_message("  %-58s max err %.2e of output RMS (tol %.0e)\n", what, e, m == 4 ? TOL_WINO4 : TOL_WINO2);
        assert_true(e <= (m == 4 ? TOL_WINO4 : TOL_WINO2));
    }
    core_free(x); core_free(y); core_free(r); core_free(wr); core_free(bias);
    free_mat(&c.w);
}

static void test_winograd(void **state)
{
    (void)state;
    const core_dtype dts[] = {FM_DT_F32, FM_DT_F16, FM_DT_BF16};
    for (int m = 4; m >= 2; m -= 2)
        for (size_t i = 0; i < sizeof wino_cases / sizeof *wino_cases; i++)
            wino_run(&wino_cases[i], m, dts[i % 3], (int)(i % 4 != 2), FM_PREC_AUTO);
    kn_conv s2 = {.cin = 4, .cout = 4, .kh = 3, .kw = 3, .stride = 2, .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1};
    kn_conv p0 = {.cin = 4, .cout = 4, .kh = 3, .kw = 3, .stride = 1, .pad_t = 2, .pad_l = 2, .pad_b = 2, .pad_r = 2};
    kn_conv k1 = {.cin = 4, .cout = 4, .kh = 1, .kw = 1, .stride = 1};
    s2.w.cols = p0.w.cols = 36;
    k1.w.cols = 4;
    assert_false(kn_winograd_applies(&s2));
    assert_false(kn_winograd_applies(&p0));
    assert_false(kn_winograd_applies(&k1));
    /* the pads of a band (kn_conv2d_rows_ws): 0 or 1 on each side */
    const int pads[][4] = {{0, 1, 0, 1}, {1, 0, 1, 0}, {0, 0, 0, 0}, {1, 1, 0, 1}, {0, 1, 1, 1}};
    for (int i = 0; i < 5; i++)
        for (int m = 4; m >= 2; m -= 2) {
            kn_conv c = {.w = make_mat(21, 19 * 9, FM_DT_F16, 61 + i), .cin = 19, .cout = 21, .kh = 3, .kw = 3,
                         .stride = 1, .pad_t = pads[i][0], .pad_l = pads[i][1], .pad_b = pads[i][2], .pad_r = pads[i][3]};
            float *bias = rnd(21, 62);
            c.bias = bias;
            int n = 2, h = 11, w = 37, oh = kn_conv_out_h(&c, h), ow = kn_conv_out_w(&c, w);
            size_t ny = (size_t)n * 21 * oh * ow;
            float *x = rnd((size_t)n * 19 * h * w, 63), *y = buf(ny), *r = buf(ny), *wr = buf(ny);
            assert_true(kn_winograd_applies(&c));
            kn_conv2d_ref(r, x, &c, n, h, w);
            kn_winograd_ref(wr, x, &c, m, n, h, w);
            tu_assert_close(wr, r, ny, TOL_WINO_REF, "winograd ref, band pads");
            kn_winograd(y, x, &c, m, n, h, w);
            double e = max_err_of_rms(y, r, ny);
            print_message("  winograd F(%dx%d,3x3) pads (%d,%d,%d,%d) 19->21 11x37 b2: max err %.2e of output RMS\n", m,
                          m, pads[i][0], pads[i][1], pads[i][2], pads[i][3], e);
            assert_true(e <= (m == 4 ? TOL_WINO4 : TOL_WINO2));
            core_free(x); core_free(y); core_free(r); core_free(wr); core_free(bias);
            free_mat(&c.w);
        }
    kn_scratch none = {0};
    float dummy = 0;
    assert_int_equal(kn_winograd_ws(&none, &dummy, &dummy, &s2, 4, 1, 4, 4), -1);
}

static void test_winograd_bf16_mode(void **state)
{
    (void)state;
    for (int m = 2; m >= 2; m -= 2) {
        wino_run(&wino_cases[1], m, FM_DT_F16, 1, FM_PREC_BF16);
        wino_run(&wino_cases[4], m, FM_DT_F32, 1, FM_PREC_BF16);
        wino_run(&wino_cases[5], m, FM_DT_BF16, 0, FM_PREC_BF16);
    }
}

/* kn_conv2d's choice: c->algo forces an algorithm where it applies, and
 * the forced Winograd call through kn_conv2d is kn_winograd bit for bit.
 * Under make test (FMIMAGE_PRECISION_CACHE=off, no FM_CONV) the automatic
 * choice times nothing and is direct. */
static void test_conv2d_algo(void **state)
{
    (void)state;
    wino_case wc = {2, 24, 40, 13, 21};
    kn_conv c = {.w = make_mat(wc.cout, wc.cin * 9, FM_DT_F16, 51), .cin = wc.cin, .cout = wc.cout, .kh = 3, .kw = 3,
                 .stride = 1, .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1};
    size_t ny = (size_t)wc.n * wc.cout * wc.h * wc.w;
    float *x = rnd((size_t)wc.n * wc.cin * wc.h * wc.w, 52), *y = buf(ny), *want = buf(ny);
    const int algos[] = {FM_CONV_WINO4, FM_CONV_WINO2}, tiles[] = {4, 2};
    for (int i = 0; i < 2; i++) {
        c.algo = algos[i];
        assert_int_equal(kn_conv2d_tile(&c, wc.n, wc.h, wc.w), tiles[i]);
        kn_conv2d(y, x, &c, wc.n, wc.h, wc.w);
        kn_winograd(want, x, &c, tiles[i], wc.n, wc.h, wc.w);
        assert_memory_equal(y, want, sizeof(float) * ny);
    }
    /* banded (tiled VAE decoding), plain and x2-upsampled input, through Winograd */
    for (int up2 = 0; up2 < 2; up2++) {
        int h = up2 ? 26 : 13, w = up2 ? 42 : 21, rows = 5, ih = up2 ? h / 2 : h, iw = up2 ? w / 2 : w;
        c.algo = FM_CONV_WINO4;
        size_t nb = (size_t)wc.cout * h * w, bytes = 0;
        for (int r0 = 0; r0 < h; r0 += rows) {
            size_t b = kn_conv2d_rows_scratch(&c, h, w, r0, r0 + rows < h ? r0 + rows : h, kn_scratch_threads());
            if (b > bytes) bytes = b;
        }
        kn_scratch ks = {.base = core_alloc(bytes), .bytes = bytes, .threads = kn_scratch_threads()};
        float *band = buf((size_t)wc.cin * w * (rows + 2) + (size_t)wc.cout * rows * w), *yb = buf(nb), *rb = buf(nb);
        assert_non_null(ks.base);
        for (int r0 = 0; r0 < h; r0 += rows)
            assert_int_equal(kn_conv2d_rows_ws(&ks, &c, yb, x, up2, h, w, r0, r0 + rows < h ? r0 + rows : h, band,
                                               band + (size_t)wc.cin * w * (rows + 2)), 0);
        kn_conv2d_rows_ref(&c, rb, x, up2, h, w, 0, h);
        double e = max_err_of_rms(yb, rb, nb);
        print_message("  winograd F(4x4,3x3) in bands of %d rows%s: max err %.2e of output RMS\n", rows,
                      up2 ? ", x2 upsampled input" : "", e);
        assert_true(e <= TOL_WINO4);
        (void)ih; (void)iw;
        core_free(ks.base); core_free(band); core_free(yb); core_free(rb);
    }
    c.algo = FM_CONV_DIRECT;
    assert_int_equal(kn_conv2d_tile(&c, wc.n, wc.h, wc.w), 0);
    kn_conv s2 = c;
    s2.stride = 2;
    s2.algo = FM_CONV_WINO4;
    assert_int_equal(kn_conv2d_tile(&s2, wc.n, wc.h, wc.w), 0); /* does not apply: direct */
    char why[400];
    kn_conv2d_choice(why, sizeof why);
    print_message("  convolutions: %s\n", why);
    const char *cache = getenv("FMIMAGE_PRECISION_CACHE");
    if (!getenv("FM_CONV") && cache && !strcmp(cache, "off")) {
        c.algo = FM_CONV_AUTO;
        assert_int_equal(kn_conv2d_tile(&c, 2, 64, 64), 0);
        assert_non_null(strstr(why, "direct"));
    }
    core_free(x); core_free(y); core_free(want);
    free_mat(&c.w);
}

typedef struct wino_ctx { float *y; const float *x; const kn_conv *c; int m, n, h, w; } wino_ctx;
static int run_wino(const kn_scratch *s, void *c)
{
    wino_ctx *v = c;
    return kn_winograd_ws(s, v->y, v->x, v->c, v->m, v->n, v->h, v->w);
}

/* Its scratch as the other kernels': exact size works and equals the
 * allocating entry point bit for bit, one byte less is refused untouched.
 * 700 -> 600 channels on 40x40 needs several output-channel blocks and
 * tile chunks (kernels/winograd.c bounds both). */
static void test_winograd_scratch(void **state)
{
    (void)state;
    const wino_case cases[] = {{2, 37, 45, 19, 23}, {1, 700, 600, 40, 40}};
    for (size_t i = 0; i < 2; i++)
        for (int m = 4; m >= 2; m -= 2) {
            const wino_case *wc = &cases[i];
            kn_conv c = {.w = make_mat(wc->cout, wc->cin * 9, FM_DT_F16, 41), .cin = wc->cin, .cout = wc->cout,
                         .kh = 3, .kw = 3, .stride = 1, .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1};
            float *bias = rnd(wc->cout, 42);
            c.bias = bias;
            size_t ny = (size_t)wc->n * wc->cout * wc->h * wc->w;
            float *x = rnd((size_t)wc->n * wc->cin * wc->h * wc->w, 43), *y = buf(ny), *want = buf(ny);
            kn_winograd(want, x, &c, m, wc->n, wc->h, wc->w);
            if (i == 1) { /* the blocked run against the direct convolution */
                float *r = buf(ny);
                kn_conv2d(r, x, &c, wc->n, wc->h, wc->w);
                double e = max_err_of_rms(want, r, ny);
                print_message("  winograd F(%dx%d,3x3) 700->600 40x40 blocked: max err vs direct %.2e of output RMS\n",
                              m, m, e);
                assert_true(e <= (m == 4 ? TOL_WINO4 : TOL_WINO2));
                core_free(r);
            }
            wino_ctx v = {y, x, &c, m, wc->n, wc->h, wc->w};
            scratch_case("winograd", kn_winograd_scratch(&c, m, wc->n, wc->h, wc->w, kn_scratch_threads()),
                         run_wino, &v, y, want, ny);
            core_free(x); core_free(y); core_free(want); core_free(bias);
            free_mat(&c.w);
        }
}

/* ---- banded convolution, GroupNorm in parts (tiled VAE decoding) ---- */

static void band_case(int cin, int cout, int h, int w, int k, int stride, int up2, int rows, core_dtype dt)
{
    int pad = k / 2;
    kn_conv c = {.w = make_mat(cout, cin * k * k, dt, 91), .cin = cin, .cout = cout, .kh = k, .kw = k,
                 .stride = stride, .pad_t = pad, .pad_l = pad, .pad_b = pad, .pad_r = pad};
    float *bias = rnd(cout, 92);
    c.bias = bias;
    int oh = kn_conv_out_h(&c, h), ow = kn_conv_out_w(&c, w), ih = up2 ? h / 2 : h, iw = up2 ? w / 2 : w;
    size_t ny = (size_t)cout * oh * ow;
    float *x = rnd((size_t)cin * ih * iw, 93), *y = buf(ny), *r = buf(ny);
    size_t band_in = (size_t)cin * w * ((size_t)(rows - 1) * stride + k), band_out = (size_t)cout * rows * ow;
    float *band = buf(band_in + band_out);
    int threads = kn_scratch_threads();
    size_t most = 0;
    for (int r0 = 0; r0 < oh; r0 += rows) {
        size_t b = kn_conv2d_rows_scratch(&c, h, w, r0, r0 + rows < oh ? r0 + rows : oh, threads);
        most = b > most ? b : most;
    }
    kn_scratch s = {.base = core_alloc(most), .bytes = most, .threads = threads};
    assert_non_null(s.base);
    for (int r0 = 0; r0 < oh; r0 += rows)
        assert_int_equal(kn_conv2d_rows_ws(&s, &c, y, x, up2, h, w, r0, r0 + rows < oh ? r0 + rows : oh, band,
                                           band + band_in), 0);
    kn_conv2d_rows_ref(&c, r, x, up2, h, w, 0, oh);
    char what[96];
    snprintf(what, sizeof what, "conv rows %d->%d %dx%d k%d s%d%s, bands of %d %s", cin, cout, h, w, k, stride,
             up2 ? " up2" : "", rows, dt_name(dt));
    check(y, r, ny, cin * k * k > 200 ? TOL_LONG : TOL_SHORT, what);
    if (!up2) { /* the whole convolution is the same thing */
        kn_conv2d_ref(r, x, &c, 1, h, w);
        check(y, r, ny, cin * k * k > 200 ? TOL_LONG : TOL_SHORT, what);
    }
    core_free(s.base); core_free(band); core_free(x); core_free(y); core_free(r); core_free(bias);
    free_mat(&c.w);
}

static void test_conv_rows(void **state)
{
    (void)state;
    band_case(8, 12, 17, 13, 3, 1, 0, 4, FM_DT_F32);  /* last band shorter */
    band_case(8, 12, 16, 14, 3, 1, 1, 5, FM_DT_F16);  /* upsampled input */
    band_case(6, 10, 15, 11, 3, 2, 0, 2, FM_DT_BF16); /* stride 2 */
    band_case(40, 24, 12, 12, 3, 1, 1, 1, FM_DT_F32); /* one row per band, long K */
    band_case(5, 7, 9, 9, 1, 1, 0, 3, FM_DT_F32);     /* 1x1 */
}

static void test_group_norm_parts(void **state)
{
    (void)state;
    const int c = 64, groups = 32, h = 13, w = 11, hw = h * w;
    float *x = rnd((size_t)c * hw, 101), *g = rnd(c, 102), *b = rnd(c, 103);
    for (int i = 0; i < c * hw; i++) x[i] = x[i] * 2.0f + 0.3f;
    /* statistics of a window, added twice (two tiles' worth) */
    double s[32] = {0}, q[32] = {0}, n[32] = {0}, rs[32] = {0}, rq[32] = {0}, rn[32] = {0};
    for (int t = 0; t < 2; t++) {
        kn_group_stats_add(s, q, n, x, c, h, w, groups, 2, 11, 1, 9);
        kn_group_stats_add_ref(rs, rq, rn, x, c, h, w, groups, 2, 11, 1, 9);
    }
    float mean[32], rstd[32];
    for (int i = 0; i < groups; i++) {
        assert_true(n[i] == rn[i] && n[i] == 2.0 * 2 * 9 * 8);
        if (fabs(s[i] - rs[i]) > 1e-9 * fmax(1, fabs(rs[i])) || fabs(q[i] - rq[i]) > 1e-9 * rq[i])
            fail_msg("group %d: sums %.17g %.17g, reference %.17g %.17g", i, s[i], q[i], rs[i], rq[i]);
        mean[i] = (float)(s[i] / n[i]);
        rstd[i] = (float)(1.0 / sqrt(q[i] / n[i] - (double)mean[i] * mean[i] + 1e-6));
    }
    float *y = buf((size_t)c * hw), *r = buf((size_t)c * hw);
    for (int silu = 0; silu < 2; silu++) {
        kn_group_norm_apply_ref(r, x, c, hw, groups, mean, rstd, g, b, silu);
        memcpy(y, x, sizeof(float) * c * hw);
        kn_group_norm_apply(y, y, c, hw, groups, mean, rstd, g, b, silu); /* in place */
        check(y, r, (size_t)c * hw, TOL_SHORT, silu ? "group_norm_apply +silu" : "group_norm_apply");
    }
    /* with the whole map's statistics it is GroupNorm itself */
    double s1[32] = {0}, q1[32] = {0}, n1[32] = {0};
    kn_group_stats_add_ref(s1, q1, n1, x, c, h, w, groups, 0, h, 0, w);
    for (int i = 0; i < groups; i++) {
        mean[i] = (float)(s1[i] / n1[i]);
        rstd[i] = (float)(1.0 / sqrt(q1[i] / n1[i] - (double)mean[i] * mean[i] + 1e-5));
    }
    kn_group_norm_apply(y, x, c, hw, groups, mean, rstd, g, b, 1);
    kn_group_norm_ref(r, x, 1, c, hw, groups, 1e-5f, g, b, 1);
    check(y, r, (size_t)c * hw, TOL_LONG, "group_norm_apply = group_norm");
    core_free(x); core_free(g); core_free(b); core_free(y); core_free(r);
}

/* ---- normalisation ---- */

static void group_norm_case(int n, int c, int hw, int groups, int silu, int in_place)
{
    size_t len = (size_t)n * c * hw;
    float *x = rnd(len, 31), *g = rnd(c, 32), *b = rnd(c, 33), *y = buf(len), *r = buf(len);
    for (size_t i = 0; i < len; i++) x[i] = x[i] * 3.0f + 0.5f; /* non-zero mean */
    kn_group_norm_ref(r, x, n, c, hw, groups, 1e-5f, g, b, silu);
    if (in_place) {
        kn_group_norm(x, x, n, c, hw, groups, 1e-5f, g, b, silu);
        memcpy(y, x, sizeof(float) * len);
    } else {
        kn_group_norm(y, x, n, c, hw, groups, 1e-5f, g, b, silu);
    }
    char what[96];
    snprintf(what, sizeof what, "group_norm n%d c%d hw%d g%d%s%s", n, c, hw, groups,
             silu ? " +silu" : "", in_place ? " in place" : "");
    check(y, r, len, TOL_SHORT, what);
    core_free(x); core_free(g); core_free(b); core_free(y); core_free(r);
}

static void test_group_norm(void **state)
{
    (void)state;
    group_norm_case(1, 32, 1, 32, 0, 0);
    group_norm_case(2, 64, 37, 32, 0, 0);
    group_norm_case(2, 64, 37, 32, 1, 1);
    group_norm_case(1, 320, 4096, 32, 1, 0);
    group_norm_case(3, 96, 17, 32, 1, 0);
}

static void test_layer_norm(void **state)
{
    (void)state;
    const int dims[] = {1, 45, 320, 768}, rows[] = {3, 77, 130, 77};
    for (int t = 0; t < 4; t++) {
        size_t len = (size_t)rows[t] * dims[t];
        float *x = rnd(len, 41), *g = rnd(dims[t], 42), *b = rnd(dims[t], 43), *y = buf(len), *r = buf(len);
        for (size_t i = 0; i < len; i++) x[i] = x[i] * 4.0f - 1.0f;
        kn_layer_norm_ref(r, x, rows[t], dims[t], g, b, 1e-5f);
        kn_layer_norm(y, x, rows[t], dims[t], g, b, 1e-5f);
        char what[64];
        snprintf(what, sizeof what, "layer_norm %dx%d", rows[t], dims[t]);
        check(y, r, len, TOL_SHORT, what);
        kn_layer_norm(x, x, rows[t], dims[t], g, b, 1e-5f); /* in place */
        check(x, r, len, TOL_SHORT, "layer_norm in place");
        core_free(x); core_free(g); core_free(b); core_free(y); core_free(r);
    }
}

/* ---- element-wise ---- */

static void unary_case(void (*fast)(float *, size_t), void (*ref)(float *, size_t), const char *name)
{
    const size_t sizes[] = {1, 15, 1000, 70001};
    for (int t = 0; t < 4; t++) {
        size_t n = sizes[t];
        float *x = rnd(n, 51), *r = buf(n);
        for (size_t i = 0; i < n; i++) x[i] *= 12.0f; /* covers saturation */
        if (n > 3) { x[0] = -100.0f; x[1] = 100.0f; x[2] = 0.0f; }
        memcpy(r, x, sizeof(float) * n);
        fast(x, n);
        ref(r, n);
        char what[64];
        snprintf(what, sizeof what, "%s n=%zu", name, n);
        check(x, r, n, TOL_SHORT, what);
        core_free(x); core_free(r);
    }
}

static void test_activations(void **state)
{
    (void)state;
    unary_case(kn_silu, kn_silu_ref, "silu");
    unary_case(kn_gelu, kn_gelu_ref, "gelu");
    unary_case(kn_quick_gelu, kn_quick_gelu_ref, "quick_gelu");

    int rows = 77, dim = 161;
    float *x = rnd((size_t)rows * 2 * dim, 52), *y = buf((size_t)rows * dim), *r = buf((size_t)rows * dim);
    for (int i = 0; i < rows * 2 * dim; i++) x[i] *= 6.0f;
    kn_geglu(y, x, rows, dim);
    kn_geglu_ref(r, x, rows, dim);
    check(y, r, (size_t)rows * dim, TOL_SHORT, "geglu 77x161");
    core_free(x); core_free(y); core_free(r);

    float *a = rnd(1000, 53), *b = rnd(1000, 54), *s = buf(1000);
    kn_add(s, a, b, 1000);
    for (int i = 0; i < 1000; i++) assert_true(s[i] == a[i] + b[i]);
    core_free(a); core_free(b); core_free(s);
}

static void test_softmax(void **state)
{
    (void)state;
    const int rows[] = {1, 13, 40}, ns[] = {1, 1100, 77};
    for (int t = 0; t < 3; t++) {
        size_t len = (size_t)rows[t] * ns[t];
        float *x = rnd(len, 61), *r = buf(len);
        for (size_t i = 0; i < len; i++) x[i] *= 20.0f;
        memcpy(r, x, sizeof(float) * len);
        kn_softmax(x, rows[t], ns[t]);
        kn_softmax_ref(r, rows[t], ns[t]);
        char what[64];
        snprintf(what, sizeof what, "softmax %dx%d", rows[t], ns[t]);
        check(x, r, len, TOL_SHORT, what);
        core_free(x); core_free(r);
    }
}

/* ---- attention ---- */

typedef struct attn_case {
    int batch, nq, nk, heads, head_dim, causal, extra_stride;
} attn_case;

static void attention_run(const attn_case *a)
{
    int dim = a->heads * a->head_dim;
    int qs = dim + a->extra_stride, kvs = dim + 2 * a->extra_stride;
    float *q = rnd((size_t)a->batch * a->nq * qs, 71), *k = rnd((size_t)a->batch * a->nk * kvs, 72);
    float *v = rnd((size_t)a->batch * a->nk * kvs, 73);
    for (size_t i = 0; i < (size_t)a->batch * a->nq * qs; i++) q[i] *= 4.0f; /* peaky softmax */
    size_t no = (size_t)a->batch * a->nq * dim;
    float *o = buf(no), *r = buf(no);
    float scale = 1.0f / sqrtf((float)a->head_dim);
    kn_attention(o, q, qs, k, v, kvs, a->batch, a->nq, a->nk, a->heads, a->head_dim, scale, a->causal);
    kn_attention_ref(r, q, qs, k, v, kvs, a->batch, a->nq, a->nk, a->heads, a->head_dim, scale, a->causal);
    char what[96];
    snprintf(what, sizeof what, "attention b%d %dx%d h%d d%d%s", a->batch, a->nq, a->nk, a->heads,
             a->head_dim, a->causal ? " causal" : "");
    check(o, r, no, TOL_SHORT, what);
    core_free(q); core_free(k); core_free(v); core_free(o); core_free(r);
}

/* BF16 mode. Two checks: against the reference run on bf16-rounded Q, K, V
 * (what remains is the rounding of the softmax weights: within 2e-2 of the
 * output RMS), and against full precision, whose error is dominated by the
 * rounding of the inputs: within 2e-2 of the largest output. */
static void attention_bf16_run(const attn_case *a)
{
    int dim = a->heads * a->head_dim;
    float *q = rnd((size_t)a->batch * a->nq * dim, 74), *k = rnd((size_t)a->batch * a->nk * dim, 75);
    float *v = rnd((size_t)a->batch * a->nk * dim, 76);
    for (size_t i = 0; i < (size_t)a->batch * a->nq * dim; i++) q[i] *= 4.0f;
    size_t no = (size_t)a->batch * a->nq * dim;
    float *o = buf(no), *r = buf(no);
    float scale = 1.0f / sqrtf((float)a->head_dim);
    kn_attention_prec(o, q, dim, k, v, dim, a->batch, a->nq, a->nk, a->heads, a->head_dim, scale, a->causal,
                      FM_PREC_BF16);
    kn_attention_ref(r, q, dim, k, v, dim, a->batch, a->nq, a->nk, a->heads, a->head_dim, scale, a->causal);
    size_t nqk = (size_t)a->batch * a->nk * dim;
    round_to_bf16(q, no);
    round_to_bf16(k, nqk);
    round_to_bf16(v, nqk);
    float *rr = buf(no);
    kn_attention_ref(rr, q, dim, k, v, dim, a->batch, a->nq, a->nk, a->heads, a->head_dim, scale, a->causal);
    double vs_fp32 = 0, vs_rounded = 0, out_max = 0, out_rms = rms(r, no);
    for (size_t i = 0; i < no; i++) out_max = fmax(out_max, fabs(r[i]));
    for (size_t i = 0; i < no; i++) {
        double d1 = fabs((double)o[i] - r[i]) / out_max, d2 = fabs((double)o[i] - rr[i]) / out_rms;
        if (!(d1 <= vs_fp32)) vs_fp32 = isnan(d1) ? INFINITY : d1;
        if (!(d2 <= vs_rounded)) vs_rounded = isnan(d2) ? INFINITY : d2;
    }
    print_message("  attention b%d %dx%d h%d d%d%s [bf16 mode]: max err vs fp32 %.2e of max |out|, "
                  "vs rounded inputs %.2e of RMS (tol 2e-2)\n", a->batch, a->nq, a->nk, a->heads,
                  a->head_dim, a->causal ? " causal" : "", vs_fp32, vs_rounded);
    assert_true(vs_fp32 <= 2e-2);
    if (kn_has_bf16()) assert_true(vs_rounded <= 2e-2); /* else full precision */
    core_free(q); core_free(k); core_free(v); core_free(o); core_free(r); core_free(rr);
}

static void test_attention_bf16_mode(void **state)
{
    (void)state;
    const attn_case cases[] = {
        {1, 1100, 1100, 2, 40, 0, 0},
        {2, 300, 77, 8, 40, 0, 0},
        {1, 513, 513, 1, 80, 1, 0},
        {1, 33, 77, 2, 7, 0, 0}, /* odd head dim and key count */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        attention_bf16_run(&cases[i]);
}

static void test_attention(void **state)
{
    (void)state;
    const attn_case cases[] = {
        {1, 1100, 1100, 2, 40, 0, 0},  /* long self-attention */
        {2, 300, 77, 8, 40, 0, 7},     /* cross-attention to 77 text tokens */
        {2, 77, 77, 3, 64, 1, 0},      /* causal text self-attention */
        {1, 1100, 1100, 1, 24, 1, 5},  /* long causal */
        {1, 130, 200, 2, 80, 1, 0},    /* causal, nq < nk */
        {1, 70, 77, 1, 160, 0, 3},
        {1, 300, 300, 1, 512, 0, 0},   /* VAE mid-block: one 512-wide head */
        {2, 33, 5, 4, 8, 0, 1},        /* tiny heads */
        {1, 1, 1, 1, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        attention_run(&cases[i]);
}

/* ---- data movement ---- */

static void test_data_movement(void **state)
{
    (void)state;
    int nc = 6, h = 5, w = 7;
    float *x = rnd((size_t)nc * h * w, 81), *y = buf((size_t)nc * 4 * h * w);
    kn_upsample_nearest(y, 2 * h, 2 * w, x, nc, h, w);
    for (int c = 0; c < nc; c++)
        for (int oy = 0; oy < 2 * h; oy++)
            for (int ox = 0; ox < 2 * w; ox++)
                assert_true(y[((size_t)c * 2 * h + oy) * 2 * w + ox] == x[((size_t)c * h + oy / 2) * w + ox / 2]);

    int n = 2, ca = 3, cb = 5, hw = 11;
    float *a = rnd((size_t)n * ca * hw, 82), *b = rnd((size_t)n * cb * hw, 83), *cat = buf((size_t)n * (ca + cb) * hw);
    kn_concat_channels(cat, a, ca, b, cb, n, hw);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < ca + cb; c++)
            for (int p = 0; p < hw; p++)
                assert_true(cat[((size_t)i * (ca + cb) + c) * hw + p] ==
                            (c < ca ? a[((size_t)i * ca + c) * hw + p] : b[((size_t)i * cb + c - ca) * hw + p]));

    float *t = buf((size_t)n * (ca + cb) * hw), *back = buf((size_t)n * (ca + cb) * hw);
    kn_nchw_to_nhwc(t, cat, n, ca + cb, hw);
    assert_true(t[(size_t)(1 * hw + 4) * (ca + cb) + 6] == cat[((size_t)1 * (ca + cb) + 6) * hw + 4]);
    kn_nhwc_to_nchw(back, t, n, ca + cb, hw);
    assert_memory_equal(back, cat, sizeof(float) * n * (ca + cb) * hw);
    {
        int tn = 2, tc = 70, thw = 33 * 35; /* not multiples of the 32 x 32 tiles */
        size_t len = (size_t)tn * tc * thw;
        float *src = rnd(len, 85), *dst = buf(len), *rt = buf(len);
        kn_nchw_to_nhwc(dst, src, tn, tc, thw);
        for (int b = 0; b < tn; b++)
            for (int ch = 0; ch < tc; ch++)
                for (int p = 0; p < thw; p++)
                    assert_true(dst[((size_t)b * thw + p) * tc + ch] == src[((size_t)b * tc + ch) * thw + p]);
        kn_nhwc_to_nchw(rt, dst, tn, tc, thw);
        assert_memory_equal(rt, src, sizeof(float) * len);
        core_free(src); core_free(dst); core_free(rt);
    }

    kn_mat m = make_mat(4, 9, FM_DT_F16, 84);
    float row[9], want[9];
    kn_mat_row(row, &m, 2);
    core_f16_to_f32(want, (const uint16_t *)m.data + 18, 9);
    assert_memory_equal(row, want, sizeof row);
    free_mat(&m);
    core_free(x); core_free(y); core_free(a); core_free(b); core_free(cat); core_free(t); core_free(back);
}

/* gemm_pack_bf16 (straight to bf16 pairs: whole rows, or f32 chunks in L1)
 * against gemm_pack_bf16_ref (a whole f32 panel, then converted), bit for
 * bit, in both layouts: F16/F32 weights, row-major and transposed floats,
 * im2col with padding and stride; odd K, a partial last panel, rows cut
 * short, a K slice that does not start at 0. */
static void test_pack_bf16(void **state)
{
    (void)state;
    const gemm_arch *base = gemm_arch_get();
    if (!base->pair_bf16) {
        print_message("  SKIPPED: no bf16 pair conversion in the %s kernels\n", kn_isa_name(kn_isa_chosen()));
        return;
    }
    gemm_arch arch = *base;
#if defined(__x86_64__)
    arch.row_bf16 = kn_isa_chosen() == FM_ISA_AVX512 ? gemm_row_bf16_avx512 : NULL;
#endif
    enum { ROWS = 45, COLS = 75, PANEL = 32, NI = 40 };
    kn_mat w16 = make_mat(ROWS, COLS, FM_DT_F16, 91), w32 = make_mat(ROWS, COLS, FM_DT_F32, 92);
    float *x = rnd((size_t)2 * 3 * 9 * 11, 93);
    kn_conv cv = {.cin = 3, .cout = 4, .kh = 3, .kw = 3, .stride = 2, .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1};
    kn_conv c1 = cv;
    c1.stride = 1;
    gemm_operand ops[] = {
        {.kind = OP_MAT, .mat = &w16},
        {.kind = OP_MAT, .mat = &w32},
        {.kind = OP_ROWS, .p = x, .ld = 29},
        {.kind = OP_COLS, .p = x, .ld = 41},
        {.kind = OP_IM2COL, .p = x, .batch_stride = 3 * 9 * 11, .conv = &cv, .h = 9, .w = 11, .oh = 5, .ow = 6, .fold = 30},
        {.kind = OP_IM2COL, .p = x, .batch_stride = 3 * 9 * 11, .conv = &c1, .h = 9, .w = 11, .oh = 9, .ow = 11, .fold = 99},
    };
    const int rows_of[] = {ROWS, ROWS, 20, 41, 60, 198}, k_of[] = {COLS, COLS, 29, 12, 27, 27};
    const int slices[][2] = {{0, 0}, {0, 17}, {4, 23}, {6, 0}}; /* k0, kc (0: the rest) */
    size_t cap = (size_t)64 * 64;
    uint32_t *got = core_alloc(4 * cap), *want = core_alloc(4 * cap);
    float *f32 = buf(cap * 2), *stage = buf(gemm_bf16_stage_floats(COLS, PANEL)), zeros[PANEL] = {0};
    assert_non_null(got);
    assert_non_null(want);
    int compared = 0;
    for (size_t o = 0; o < sizeof ops / sizeof *ops; o++)
        for (int as_rows = 0; as_rows < 2; as_rows++)
            for (size_t s = 0; s < sizeof slices / sizeof *slices; s++)
                for (int i0 = 0; i0 <= 16; i0 += 16) {
                    int k0 = slices[s][0], kc = slices[s][1] ? slices[s][1] : k_of[o] - k0;
                    if (k0 + kc > k_of[o]) continue;
                    size_t n = (size_t)(NI + PANEL - 1) / PANEL * PANEL * ((kc + 1) / 2);
                    memset(got, 0xa5, 4 * cap);
                    memset(want, 0x5a, 4 * cap);
                    gemm_pack_bf16(&arch, &ops[o], 0, rows_of[o], got, i0, NI, k0, kc, PANEL, as_rows, stage, zeros);
                    gemm_pack_bf16_ref(&arch, &ops[o], 0, rows_of[o], want, i0, NI, k0, kc, PANEL, as_rows, f32, zeros);
                    assert_memory_equal(got, want, 4 * n);
                    compared++;
                }
    print_message("  %d packings equal bit for bit\n", compared);
    core_free(got); core_free(want); core_free(f32); core_free(stage); core_free(x);
    free_mat(&w16);
    free_mat(&w32);
}

/* gemm_pack of row-major and weight operands (the vectorised transpose,
 * gemm_arch.pack_rows, where the ISA has one) against the definition
 * d[panel p][k][r] = X[i0 + p * width + r][k0 + k], zero past the rows:
 * F16/BF16/F32 weights and floats, the A and B panel widths, K slices of
 * 1, 15, 16, 17 and more taps not starting at 0, a partial last panel. */
static void test_pack_rows(void **state)
{
    (void)state;
    const gemm_arch *arch = gemm_arch_get();
    enum { ROWS = 45, COLS = 75, NI = 40 };
    kn_mat w16 = make_mat(ROWS, COLS, FM_DT_F16, 81), wb = make_mat(ROWS, COLS, FM_DT_BF16, 82),
           w32 = make_mat(ROWS, COLS, FM_DT_F32, 83);
    float *x = rnd((size_t)ROWS * 80, 84), *row = buf(COLS);
    gemm_operand ops[] = {
        {.kind = OP_MAT, .mat = &w16}, {.kind = OP_MAT, .mat = &wb}, {.kind = OP_MAT, .mat = &w32},
        {.kind = OP_ROWS, .p = x, .ld = 80},
    };
    const int widths[] = {arch->mr, arch->nr}, slices[][2] = {{0, 75}, {0, 1}, {3, 15}, {5, 16}, {7, 17}, {16, 59}};
    size_t cap = (size_t)(NI + 64) * COLS;
    float *got = buf(cap);
    int compared = 0;
    for (size_t o = 0; o < sizeof ops / sizeof *ops; o++)
        for (size_t wi = 0; wi < 2; wi++)
            for (size_t s = 0; s < sizeof slices / sizeof *slices; s++)
                for (int i0 = 0; i0 <= 16; i0 += 16) {
                    int width = widths[wi], k0 = slices[s][0], kc = slices[s][1];
                    int panels = (NI + width - 1) / width;
                    for (size_t e = 0; e < cap; e++) got[e] = NAN;
                    gemm_pack(&ops[o], 0, ROWS, got, i0, NI, k0, kc, width);
                    for (int p = 0; p < panels; p++)
                        for (int r = 0; r < width; r++) {
                            int i = i0 + p * width + r, in = p * width + r < NI && i < ROWS;
                            if (in && ops[o].kind == OP_MAT) kn_mat_row(row, ops[o].mat, i);
                            for (int k = 0; k < kc; k++) {
                                float want = !in ? 0.0f : ops[o].kind == OP_MAT ? row[k0 + k] : x[(size_t)i * 80 + k0 + k];
                                float g = got[(size_t)p * width * kc + (size_t)k * width + r];
                                if (g != want) fail_msg("op %zu width %d k0 %d kc %d i0 %d: [%d][%d][%d] %g, want %g", o,
                                                        width, k0, kc, i0, p, k, r, g, want);
                            }
                        }
                    compared++;
                }
    print_message("  %d packings equal the definition (%s)\n", compared,
                  arch->pack_rows ? "vectorised transpose" : "scalar loop");
    core_free(got); core_free(row); core_free(x);
    free_mat(&w16);
    free_mat(&wb);
    free_mat(&w32);
}

static void test_isa(void **state)
{
    (void)state;
    kn_isa isa = kn_isa_chosen();
    assert_true(kn_isa_supported(isa));
    assert_true(kn_isa_chosen() == isa);
    print_message("  kernels use %s%s\n", kn_isa_name(isa), kn_has_bf16() ? " (+bf16)" : "");
}

/* Re-runs this program with FM_ISA=name; returns its exit status. */
/* Runs this test again in a child with env var `var` set to `name`. */
static int run_with(char **argv, const char *var, const char *name)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        setenv(var, name, 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv)
{
    (void)argc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa),
        cmocka_unit_test(test_sgemm),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_linear_bf16_mode),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv2d_bf16_mode),
        cmocka_unit_test(test_pack_bf16),
        cmocka_unit_test(test_pack_rows),
        cmocka_unit_test(test_scratch),
        cmocka_unit_test(test_winograd),
        cmocka_unit_test(test_winograd_bf16_mode),
        cmocka_unit_test(test_winograd_scratch),
        cmocka_unit_test(test_conv2d_algo),
        cmocka_unit_test(test_conv_rows),
        cmocka_unit_test(test_group_norm_parts),
        cmocka_unit_test(test_group_norm),
        cmocka_unit_test(test_layer_norm),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_bf16_mode),
        cmocka_unit_test(test_data_movement),
    };
    /* The bf16 mode runs on AMX tiles where the CPU has them: say which, and
     * test the AVX-512-BF16 kernels too, with AMX turned off. */
    if (kn_has_amx()) print_message("bf16 mode: AMX-BF16 tiles\n");
    else if (!getenv("FM_AMX")) print_message("AMX kernels: skipped, not in use here (no AMX on this CPU, FM_ISA below avx512, or not granted)\n");
    int fails = cmocka_run_group_tests(tests, NULL, NULL);
    if (kn_has_amx() && !getenv("FM_ISA")) {
        print_message("== again with FM_AMX=0\n");
        fails += run_with(argv, "FM_AMX", "0") != 0;
    }
    if (!getenv("FM_ISA") && !getenv("FM_AMX")) {
        kn_isa best = kn_isa_chosen();
        for (int i = (int)best - 1; i >= FM_ISA_SCALAR; i--)
            if (kn_isa_supported((kn_isa)i)) {
                print_message("== again with FM_ISA=%s\n", kn_isa_name((kn_isa)i));
                fails += run_with(argv, "FM_ISA", kn_isa_name((kn_isa)i)) != 0;
            }
    }
    return fails ? 1 : 0;
}
