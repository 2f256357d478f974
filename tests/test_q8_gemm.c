/* The int8 GEMM on Q8_0 weights (kernels/q8_gemm.c), linears and
 * convolutions: every path (scalar, avx2, avx-vnni, avx512-vnni, whichever
 * this CPU runs) and the kn_linear / kn_conv2d entry points equal the plain
 * loop of the same arithmetic (kn_q8_*_ref: activations quantised per block
 * of 32 along K as ggml's q8_0, int32 dot per block times the two scales)
 * bit for bit; and that arithmetic stays within 2% of the output scale of
 * the float reference on the dequantised weights (kn_*_ref), the error
 * q8_0 activations allow (half a step of max|x|/127 per value). Shapes cut
 * the panels (16 columns) and row blocks (4 rows) unevenly, and the convs'
 * K blocks straddle input channels (cin * 9 values per row); blocks of
 * zeros, of subnormals, with a NaN and with rounding ties check the
 * vectorised quantisers against the scalar one. */
#include "testutil.h"

#include "kernels/kernels.h"

static const char *const PATHS[] = {"scalar", "avx2", "avx-vnni", "avx512-vnni", "amx-int8"};
enum { N_PATHS = sizeof PATHS / sizeof PATHS[0] };

/* Random Q8_0 weights [rows][cols] (ggml's quantiser, core_quantize). */
static void *random_q8(int rows, int cols, uint64_t seed)
{
    size_t n = (size_t)rows * cols;
    float *f = malloc(n * sizeof(float));
    void *q = malloc(core_dtype_bytes(FM_DT_Q8_0, n));
    assert_non_null(f);
    assert_non_null(q);
    tu_fill_random(f, n, seed);
    assert_int_equal(core_quantize(q, f, FM_DT_Q8_0, n), 0);
    free(f);
    return q;
}

static double max_abs(const float *y, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(y[i]));
    return m;
}

static void test_linear_paths(void **state)
{
    (void)state;
    static const struct { int n, rows, cols; } cases[] = {
        {1, 3, 32}, {7, 5, 64}, {16, 4, 320}, {33, 67, 96}, {77, 640, 320}, {300, 9, 2048},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = cases[c].n, rows = cases[c].rows, cols = cases[c].cols;
        void *q = random_q8(rows, cols, 100 + c);
        kn_mat m = {.data = q, .dtype = FM_DT_Q8_0, .rows = rows, .cols = cols};
        assert_true(kn_q8_applies(&m));
        size_t ny = (size_t)n * rows;
        float *x = malloc((size_t)n * cols * sizeof(float)), *bias = malloc(rows * sizeof(float));
        float *ref = malloc(ny * sizeof(float)), *got = malloc(ny * sizeof(float)), *fl = malloc(ny * sizeof(float));
        tu_fill_random(x, (size_t)n * cols, 7 + c);
        tu_fill_random(bias, rows, 9 + c);
        if (n * cols >= 4 * 32) { /* blocks of zeros, of tiny values (1/d infinite), with a NaN, with ties */
            for (int j = 0; j < 32; j++) x[j] = 0.0f, x[32 + j] = j % 2 ? 1e-40f : -3e-39f;
            x[64 + 5] = NAN;
            for (int j = 0; j < 32; j++) x[96 + j] = (float)(j - 16) * 127.0f / 16.0f / 2.0f; /* q = +-x.5 */
        }
        kn_q8_linear_ref(ref, x, n, &m, bias);
        kn_linear(got, x, n, &m, bias);
        assert_memory_equal(got, ref, ny * sizeof(float));
        for (int p = 0; p < N_PATHS; p++) {
            memset(got, 0, ny * sizeof(float));
            if (kn_q8_linear_path(PATHS[p], got, x, n, &m, bias)) { /* not on this CPU */
                if (c == 0) print_message("  path %s: not on this CPU\n", PATHS[p]);
                continue;
            }
            if (memcmp(got, ref, ny * sizeof(float)))
                fail_msg("linear %dx%dx%d: path %s differs from the plain loop", n, rows, cols, PATHS[p]);
        }
        if (n * cols >= 4 * 32) { /* the float bound on finite inputs */
            x[64 + 5] = 0.5f;
            kn_q8_linear_ref(ref, x, n, &m, bias);
        }
        kn_linear_ref(fl, x, n, &m, bias);
        tu_assert_close(ref, fl, ny, 2e-2 * max_abs(fl, ny), "q8_0 linear vs float");
        free(q), free(x), free(bias), free(ref), free(got), free(fl);
    }
    print_message("  Q8_0 path here: %s\n", kn_q8_path());
}

static void test_conv_paths(void **state)
{
    (void)state;
    static const struct { int n, cin, cout, k, stride, pad, h, w; } cases[] = {
        {1, 32, 5, 3, 1, 1, 7, 9},   /* 288 = 9 blocks straddling channels */
        {2, 64, 67, 3, 1, 1, 12, 5}, /* two images, rows not a multiple of 4 */
        {1, 32, 8, 3, 2, 1, 9, 9},   /* stride 2 (a downsampler) */
        {1, 32, 4, 3, 1, 0, 6, 6},   /* no padding */
        {2, 96, 33, 1, 1, 0, 5, 7},  /* 1x1 */
        {1, 320, 320, 3, 1, 1, 8, 8},
        {1, 32, 6, 3, 1, 1, 5, 20},  /* panels inside an output row and across rows */
        {2, 64, 8, 3, 1, 1, 4, 32},  /* every panel inside a row, both edges padded */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kn_conv cv = {.cin = cases[c].cin, .cout = cases[c].cout, .kh = cases[c].k, .kw = cases[c].k,
                      .stride = cases[c].stride, .pad_t = cases[c].pad, .pad_l = cases[c].pad,
                      .pad_b = cases[c].pad, .pad_r = cases[c].pad};
        int K = cv.cin * cv.kh * cv.kw, n = cases[c].n, h = cases[c].h, w = cases[c].w;
        void *q = random_q8(cv.cout, K, 200 + c);
        cv.w = (kn_mat){.data = q, .dtype = FM_DT_Q8_0, .rows = cv.cout, .cols = K};
        assert_true(kn_q8_conv_applies(&cv));
        float *bias = malloc(cv.cout * sizeof(float));
        tu_fill_random(bias, cv.cout, 3 + c);
        cv.bias = bias;
        size_t nx = (size_t)n * cv.cin * h * w, ny = (size_t)n * cv.cout * kn_conv_out_h(&cv, h) * kn_conv_out_w(&cv, w);
        float *x = malloc(nx * sizeof(float)), *ref = malloc(ny * sizeof(float)), *got = malloc(ny * sizeof(float));
        float *fl = malloc(ny * sizeof(float));
        tu_fill_random(x, nx, 11 + c);
        kn_q8_conv2d_ref(ref, x, &cv, n, h, w);
        kn_conv2d(got, x, &cv, n, h, w);
        assert_memory_equal(got, ref, ny * sizeof(float));
        for (int p = 0; p < N_PATHS; p++) {
            memset(got, 0, ny * sizeof(float));
            if (kn_q8_conv2d_path(PATHS[p], got, x, &cv, n, h, w)) continue;
            if (memcmp(got, ref, ny * sizeof(float))) fail_msg("conv case %zu: path %s differs from the plain loop", c, PATHS[p]);
        }
        kn_conv2d_ref(fl, x, &cv, n, h, w);
        tu_assert_close(ref, fl, ny, 2e-2 * max_abs(fl, ny), "q8_0 conv vs float");
        free(q), free(bias), free(x), free(ref), free(got), free(fl);
    }
}

/* A plan's scratch that is one byte short is refused, output untouched. */
static void test_scratch_short(void **state)
{
    (void)state;
    void *q = random_q8(4, 64, 5);
    kn_conv cv = {.w = {.data = q, .dtype = FM_DT_Q8_0, .rows = 4, .cols = 64}, .cin = 64, .cout = 4,
                  .kh = 1, .kw = 1, .stride = 1};
    float x[64 * 4], y[4 * 4];
    tu_fill_random(x, 64 * 4, 1);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_paths),
        cmocka_unit_test(test_conv_paths),
        cmocka_unit_test(test_scratch_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
