/* The int8 GEMM on K-quant weights (Q4_K, Q5_K, Q6_K; kernels/q8_gemm.c),
 * linears and convolutions:
 * - every path (scalar, avx2, avx-vnni, avx512-vnni, whichever this CPU
 *   runs) and the kn_linear / kn_conv2d entry points equal the plain loop
 *   (kn_q8_*_ref: activations quantised per 256 values along K as ggml's
 *   q8_K, the exact integer sums per super-block times the scales) bit for
 *   bit, on shapes that cut the panels (16 columns) and row blocks (4 and 2
 *   rows) unevenly, convs whose super-blocks straddle input channels, and
 *   blocks of zeros, of tiny values, with a NaN and with rounding ties;
 * - the plain loop equals, within float rounding (1e-5 of the sum of the
 *   terms' magnitudes), the double-precision dot product of the weights as
 *   ggml dequantises them (core_dequant_ref) with the activations as this
 *   file quantises and dequantises them from ggml's quantize_row_q8_K_ref;
 * - and stays within 3% of the output scale of the product of the same
 *   weights with the unquantised activations (the error q8_K allows). */
#include "testutil.h"

#include "kernels/kernels.h"

static const char *const PATHS[] = {"scalar", "avx2", "avx-vnni", "avx512-vnni", "amx-int8"};
enum { N_PATHS = sizeof PATHS / sizeof PATHS[0], QKK = 256 };
static const core_dtype TYPES[] = {FM_DT_Q4_K, FM_DT_Q5_K, FM_DT_Q6_K};
enum { N_TYPES = sizeof TYPES / sizeof TYPES[0] };

/* Random weights [rows][cols] of type t (ggml's quantiser, core_quantize). */
static void *random_k(core_dtype t, int rows, int cols, uint64_t seed)
{
    size_t n = (size_t)rows * cols;
    float *f = malloc(n * sizeof(float));
    void *q = malloc(core_dtype_bytes(t, n));
    assert_non_null(f);
    assert_non_null(q);
    tu_fill_random(f, n, seed);
    assert_int_equal(core_quantize(q, f, t, n), 0);
    free(f);
    return q;
}

static float *dequantised(core_dtype t, const void *q, int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    float *f = malloc(n * sizeof(float));
    assert_non_null(f);
    core_dequant_ref(f, q, t, n / QKK);
    return f;
}

/* ggml's quantize_row_q8_K_ref, then dequantised: xq[j] = d * q[j]. */
static void q8k_roundtrip(float *xq, const float *x, int k)
{
    for (int b = 0; b < k; b += QKK) {
        float amax = 0, max = 0;
        for (int j = 0; j < QKK; j++)
            if (fabsf(x[b + j]) > amax) amax = fabsf(x[b + j]), max = x[b + j];
        if (amax == 0) {
            for (int j = 0; j < QKK; j++) xq[b + j] = 0;
            continue;
        }
        float iscale = -127.0f / max, d = 1 / iscale;
        for (int j = 0; j < QKK; j++) {
            int v = (int)nearbyintf(iscale * x[b + j]); /* half to even, as ggml's nearest_int */
            xq[b + j] = d * (float)(v < 127 ? v : 127);
        }
    }
}

/* y [n][rows] against the double dot of w [rows][K] and x [n][K] (each
 * column already q8_K-dequantised): within tol of sum |w x|. */
static void assert_double_dot(const float *y, const float *x, const float *w, const float *bias, int n, int rows,
                              int K, double tol, const char *what)
{
    for (int p = 0; p < n; p++)
        for (int o = 0; o < rows; o++) {
            double dot = bias ? bias[o] : 0, mag = bias ? fabs(bias[o]) : 0;
            for (int k = 0; k < K; k++) {
                dot += (double)w[(size_t)o * K + k] * x[(size_t)p * K + k];
                mag += fabs((double)w[(size_t)o * K + k] * x[(size_t)p * K + k]);
            }
            if (fabs(y[(size_t)p * rows + o] - dot) > tol * mag + 1e-30)
                fail_msg("%s: output (%d, %d) %.9g, the double dot %.9g (bound %.3g)", what, p, o,
                         y[(size_t)p * rows + o], dot, tol * mag);
        }
}

/* y [n][rows] = x [n][K] . w^T + bias in double (the float reference on
 * unquantised activations; kn_linear_ref dequantises per value, too slow). */
static void float_product(float *y, const float *x, const float *w, const float *bias, int n, int rows, int K)
{
    for (int p = 0; p < n; p++)
        for (int o = 0; o < rows; o++) {
            double dot = bias ? bias[o] : 0;
            for (int k = 0; k < K; k++) dot += (double)w[(size_t)o * K + k] * x[(size_t)p * K + k];
            y[(size_t)p * rows + o] = (float)dot;
        }
}

static double max_abs(const float *y, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(y[i]));
    return m;
}

/* Every path against the plain loop (bit for bit); 1 when some path ran. */
static void linear_paths_equal(const float *ref, float *got, const float *x, int n, const kn_mat *m, const float *bias,
                               int verbose)
{
    size_t ny = (size_t)n * m->rows;
    kn_linear(got, x, n, m, bias);
    if (memcmp(got, ref, ny * sizeof(float))) fail_msg("kn_linear (%s) differs from the plain loop", core_dtype_name(m->dtype));
    for (int p = 0; p < N_PATHS; p++) {
        memset(got, 0, ny * sizeof(float));
        if (kn_q8_linear_path(PATHS[p], got, x, n, m, bias)) {
            if (verbose) print_message("  path %s (%s): not on this CPU, skipped\n", PATHS[p], core_dtype_name(m->dtype));
            continue;
        }
        if (memcmp(got, ref, ny * sizeof(float)))
            fail_msg("%s linear %dx%dx%d: path %s differs from the plain loop", core_dtype_name(m->dtype), n, m->rows,
                     m->cols, PATHS[p]);
    }
}

static void test_linear_paths(void **state)
{
    (void)state;
    static const struct { int n, rows, cols; } cases[] = {
        {1, 3, 256}, {7, 5, 512}, {16, 4, 256}, {17, 9, 768}, {33, 67, 1280}, {77, 130, 2048}, {300, 6, 256},
    };
    for (int t = 0; t < N_TYPES; t++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            int n = cases[c].n, rows = cases[c].rows, cols = cases[c].cols;
            void *q = random_k(TYPES[t], rows, cols, 100 + c + 10 * t);
            kn_mat m = {.data = q, .dtype = TYPES[t], .rows = rows, .cols = cols};
            assert_true(kn_q8_applies(&m));
            size_t nx = (size_t)n * cols, ny = (size_t)n * rows;
            float *x = malloc(nx * sizeof(float)), *bias = malloc(rows * sizeof(float)), *xq = malloc(nx * sizeof(float));
            float *ref = malloc(ny * sizeof(float)), *got = malloc(ny * sizeof(float)), *fl = malloc(ny * sizeof(float));
            tu_fill_random(x, nx, 7 + c);
            tu_fill_random(bias, rows, 9 + c);
            if (nx >= 4 * QKK) { /* blocks of zeros, of tiny values (iscale infinite), with a NaN, with ties */
                for (int j = 0; j < QKK; j++) x[j] = 0.0f, x[QKK + j] = j % 2 ? 1e-40f : -3e-39f;
                x[2 * QKK + 5] = NAN;
                for (int j = 0; j < QKK; j++) x[3 * QKK + j] = (float)(j % 100 - 50) / 2.0f + 0.25f;
                x[3 * QKK + 255] = -127.0f / 2.0f; /* the block's max: iscale = 2, the others k + 0.5 */
            }
            kn_q8_linear_ref(ref, x, n, &m, bias);
            linear_paths_equal(ref, got, x, n, &m, bias, c == 0);
            if (nx >= 4 * QKK) { /* the bounds on finite inputs */
                x[2 * QKK + 5] = 0.5f;
                kn_q8_linear_ref(ref, x, n, &m, bias);
                linear_paths_equal(ref, got, x, n, &m, bias, 0);
            }
            float *wd = dequantised(TYPES[t], q, rows, cols);
            q8k_roundtrip(xq, x, (int)nx);
            assert_double_dot(ref, xq, wd, bias, n, rows, cols, 1e-5, core_dtype_name(TYPES[t]));
            float_product(fl, x, wd, bias, n, rows, cols);
            tu_assert_close(ref, fl, ny, 3e-2 * max_abs(fl, ny), "q8_K linear vs float");
            free(q), free(x), free(xq), free(bias), free(ref), free(got), free(fl), free(wd);
        }
    for (int t = 0; t < N_TYPES; t++)
        print_message("  %s path here: %s\n", core_dtype_name(TYPES[t]), kn_q8_path_for(TYPES[t]));
}

/* x [n][cin][h][w] to im2col rows [n*oh*ow][cin*kh*kw] in the weight's order. */
static float *im2col(const float *x, const kn_conv *c, int n, int h, int w)
{
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w), K = c->cin * c->kh * c->kw;
    float *col = malloc((size_t)n * oh * ow * K * sizeof(float));
    assert_non_null(col);
    for (int i = 0; i < n; i++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int k = 0; k < K; k++) {
                    int ci = k / (c->kh * c->kw), ky = k / c->kw % c->kh, kx = k % c->kw;
                    int iy = oy * c->stride - c->pad_t + ky, ix = ox * c->stride - c->pad_l + kx;
                    col[(((size_t)i * oh + oy) * ow + ox) * K + k] =
                        iy >= 0 && iy < h && ix >= 0 && ix < w ? x[(((size_t)i * c->cin + ci) * h + iy) * w + ix] : 0;
                }
    return col;
}

static void test_conv_paths(void **state)
{
    (void)state;
    static const struct { int n, cin, cout, k, stride, pad, h, w; } cases[] = {
        {1, 256, 5, 3, 1, 1, 7, 9},   /* 2304 = 9 super-blocks straddling channels */
        {2, 256, 67, 3, 1, 1, 6, 5},  /* two images, rows not a multiple of 4 */
        {1, 256, 8, 3, 2, 1, 9, 9},   /* stride 2 (a downsampler) */
        {2, 512, 33, 1, 1, 0, 5, 7},  /* 1x1 */
        {1, 256, 6, 3, 1, 1, 5, 20},  /* panels inside an output row and across rows */
        {2, 256, 8, 3, 1, 1, 4, 32},  /* every panel inside a row, both edges padded */
    };
    for (int t = 0; t < N_TYPES; t++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            kn_conv cv = {.cin = cases[c].cin, .cout = cases[c].cout, .kh = cases[c].k, .kw = cases[c].k,
                          .stride = cases[c].stride, .pad_t = cases[c].pad, .pad_l = cases[c].pad,
                          .pad_b = cases[c].pad, .pad_r = cases[c].pad};
            int K = cv.cin * cv.kh * cv.kw, n = cases[c].n, h = cases[c].h, w = cases[c].w;
            void *q = random_k(TYPES[t], cv.cout, K, 200 + c + 10 * t);
            cv.w = (kn_mat){.data = q, .dtype = TYPES[t], .rows = cv.cout, .cols = K};
            assert_true(kn_q8_conv_applies(&cv));
            float *bias = malloc(cv.cout * sizeof(float));
            tu_fill_random(bias, cv.cout, 3 + c);
            cv.bias = bias;
            int oh = kn_conv_out_h(&cv, h), ow = kn_conv_out_w(&cv, w), np = n * oh * ow;
            size_t nx = (size_t)n * cv.cin * h * w, ny = (size_t)np * cv.cout;
            float *x = malloc(nx * sizeof(float)), *ref = malloc(ny * sizeof(float)), *got = malloc(ny * sizeof(float));
            float *fl = malloc(ny * sizeof(float));
            tu_fill_random(x, nx, 11 + c);
            kn_q8_conv2d_ref(ref, x, &cv, n, h, w);
            kn_conv2d(got, x, &cv, n, h, w);
            assert_memory_equal(got, ref, ny * sizeof(float));
            for (int p = 0; p < N_PATHS; p++) {
                memset(got, 0, ny * sizeof(float));
                if (kn_q8_conv2d_path(PATHS[p], got, x, &cv, n, h, w)) continue;
                if (memcmp(got, ref, ny * sizeof(float)))
                    fail_msg("%s conv case %zu: path %s differs from the plain loop", core_dtype_name(TYPES[t]), c, PATHS[p]);
            }
            /* the double dot on the im2col columns: ref is [n][cout][oh*ow], the check wants [pixel][cout] */
            float *col = im2col(x, &cv, n, h, w), *wd = dequantised(TYPES[t], q, cv.cout, K);
            float *colq = malloc((size_t)np * K * sizeof(float)), *yt = malloc(ny * sizeof(float));
            q8k_roundtrip(colq, col, np * K);
            for (int p = 0; p < np; p++)
                for (int o = 0; o < cv.cout; o++)
                    yt[(size_t)p * cv.cout + o] = ref[((size_t)(p / (oh * ow)) * cv.cout + o) * oh * ow + p % (oh * ow)];
            assert_double_dot(yt, colq, wd, bias, np, cv.cout, K, 1e-5, "conv");
            float_product(fl, col, wd, bias, np, cv.cout, K);
            tu_assert_close(yt, fl, ny, 3e-2 * max_abs(fl, ny), "q8_K conv vs float");
            free(q), free(bias), free(x), free(ref), free(got), free(fl), free(col), free(wd), free(colq), free(yt);
        }
}

/* A plan's scratch that is one byte short is refused, output untouched. */
static void test_scratch_short(void **state)
{
    (void)state;
    void *q = random_k(FM_DT_Q4_K, 4, 256, 5);
    kn_conv cv = {.w = {.data = q, .dtype = FM_DT_Q4_K, .rows = 4, .cols = 256}, .cin = 256, .cout = 4,
                  .kh = 1, .kw = 1, .stride = 1};
    float x[256 * 4], y[4 * 4];
    tu_fill_random(x, 256 * 4, 1);
    size_t need = kn_q8_conv2d_scratch(&cv, 1, 2, 2, 2);
    kn_scratch s = {.base = core_alloc(need), .bytes = need - 1, .threads = 2};
    memset(y, 0x7f, sizeof y);
    assert_int_equal(kn_q8_conv2d_ws(&s, y, x, &cv, 1, 2, 2), -1);
    assert_true(y[0] != 0 && y[15] != 0);
    s.bytes = need;
    assert_int_equal(kn_q8_conv2d_ws(&s, y, x, &cv, 1, 2, 2), 0);
    core_free(s.base);
    free(q);
}

/* K not a multiple of 256 (a file cannot hold it, but a matrix view can):
 * not the int8 GEMM. */
static void test_applies(void **state)
{
    (void)state;
    kn_mat m = {.dtype = FM_DT_Q4_K, .rows = 2, .cols = 320};
    assert_false(kn_q8_applies(&m));
    m.cols = 512;
    assert_true(kn_q8_applies(&m));
    m.dtype = FM_DT_Q3_K;
    assert_false(kn_q8_applies(&m));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_paths),
        cmocka_unit_test(test_conv_paths),
        cmocka_unit_test(test_scratch_short),
        cmocka_unit_test(test_applies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
