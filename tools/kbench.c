/* kbench: a short micro-benchmark of the kernels on representative SD 1.5
 * shapes. Prints the machine's FP32 peak (an FMA loop), the GEMM engine on a
 * large square, and GFLOP/s with the fraction of that peak for each shape,
 * in fp32 and in the bf16 mode. Threads: OMP_NUM_THREADS, default 2.
 *   kbench [repeats]       (default 3)
 *   kbench repeats conv    only the 3x3 convolutions, direct vs Winograd
 *   kbench repeats q8      Q8_0 int8 products against F16 weights in fp32 / bf16
 *   kbench repeats qk      Q4_K / Q6_K int8 against F16 bf16 and Q4_K dequantised to bf16
 * Each line gives the median wall-clock time and, because the machine may be
 * shared, the least CPU time per thread: what the run takes with the cores to
 * itself. The fraction of peak is computed from the latter. */
#include "kernels/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include "clocks.h"
#include "fma_peak.h"

static float *rnd(size_t n, unsigned seed)
{
    float *x = core_alloc(sizeof(float) * n);
    if (!x) { fprintf(stderr, "kbench: out of memory\n"); exit(1); }
    uint64_t s = seed * 6364136223846793005ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    return x;
}


typedef void (*bench_fn)(void *ctx);

typedef struct timing { double wall, cpu; } timing; /* median wall; least CPU time per thread */

static void sort(double *t, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (t[j] < t[i]) { double s = t[i]; t[i] = t[j]; t[j] = s; }
}

static timing median_time(bench_fn f, void *ctx, int reps)
{
    double w[16], c[16];
    f(ctx); /* warm up */
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu_now();
        f(ctx);
        w[r] = now() - t0;
        c[r] = (cpu_now() - c0) / omp_get_max_threads();
    }
    sort(w, reps);
    sort(c, reps);
    return (timing){w[reps / 2], c[0]}; /* others' load only ever adds CPU time */
}

typedef struct { float *y, *x; kn_conv c; int n, h, w; } conv_ctx;
static void run_conv(void *p) { conv_ctx *c = p; kn_conv2d(c->y, c->x, &c->c, c->n, c->h, c->w); }

typedef struct { float *y, *x; kn_mat w; int n; const float *bias; } lin_ctx;
static void run_lin(void *p) { lin_ctx *c = p; kn_linear(c->y, c->x, c->n, &c->w, c->bias); }

typedef struct { float *o, *q, *k, *v; int n, heads, d; fm_precision prec; } att_ctx;
static void run_att(void *p)
{
    att_ctx *c = p;
    int dim = c->heads * c->d;
    kn_attention_prec(c->o, c->q, dim, c->k, c->v, dim, 1, c->n, c->n, c->heads, c->d,
                      1.0f / sqrtf((float)c->d), 0, c->prec);
}

typedef struct { float *a, *b, *c; int n; } sq_ctx;
static void run_sq(void *p) { sq_ctx *s = p; kn_sgemm(s->n, s->n, s->n, s->a, s->n, s->b, s->n, 0, 0.0f, s->c, s->n); }

static uint16_t *to_f16(const float *f, size_t n)
{
    uint16_t *h = core_alloc(2 * n);
    core_f32_to_f16(h, f, n);
    return h;
}

static int g_reps = 3;

static void report(const char *what, double flops, timing t, double peak)
{
    double g = flops / t.wall * 1e-9, gc = flops / t.cpu * 1e-9;
    printf("%-42s %7.1f ms %7.1f GFLOP/s | %7.1f ms %7.1f GFLOP/s %5.1f%%\n", what, t.wall * 1e3, g,
           t.cpu * 1e3, gc, 100.0 * gc / peak);
}

/* 3x3 pad 1 conv, ch -> ch on an hw x hw map, F16 weights. */
static void bench_conv(int ch, int hw, int n, int bf16, double peak)
{
    conv_ctx cv = {.n = n, .h = hw, .w = hw};
    cv.c = (kn_conv){.cin = ch, .cout = ch, .kh = 3, .kw = 3, .stride = 1, .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1};
    size_t nw = (size_t)ch * ch * 9, nx = (size_t)n * ch * hw * hw;
    float *wf = rnd(nw, 4);
    cv.c.w = (kn_mat){.data = to_f16(wf, nw), .dtype = FM_DT_F16, .rows = ch, .cols = ch * 9};
    cv.c.bias = rnd(ch, 5);
    kn_mat_pack(&cv.c.w, bf16 ? FM_PREC_BF16 : FM_PREC_FP32);
    cv.x = rnd(nx, 6);
    cv.y = core_alloc(sizeof(float) * nx);
    char what[96];
    snprintf(what, sizeof what, "conv3x3 %d->%d %dx%d b%d F16 w, %s", ch, ch, hw, hw, n, bf16 ? "bf16" : "fp32");
    report(what, 2.0 * nw * hw * hw * n, median_time(run_conv, &cv, g_reps), peak);
    core_free((void *)cv.c.w.data); core_free(wf); core_free((void *)cv.c.bias); core_free(cv.x); core_free(cv.y);
}

/* ---- 3x3 convolutions: direct against Winograd, side by side ---- */

static double cpu_per_thread(void) { return cpu_now() / omp_get_max_threads(); }

static double median(double *t, int n)
{
    sort(t, n);
    return t[n / 2];
}

/* One real 3x3 pad-1 convolution shape in each algorithm, the algorithms
 * alternating within each repetition (a load from others weighs on all
 * alike), on one planned scratch as the U-Net and VAE run them. Prints the
 * median CPU time per thread of each and its effective FLOP/s: the direct
 * convolution's FLOPs over the time. */
static void bench_wino(const char *what, int cin, int cout, int ih, int iw, int n, int bf16, double peak, int reps)
{
    static const int algos[] = {FM_CONV_DIRECT, FM_CONV_WINO4, FM_CONV_WINO2};
    static const char *const names[] = {"direct", "F(4x4,3x3)", "F(2x2,3x3)"};
    kn_conv c = {.cin = cin, .cout = cout, .kh = 3, .kw = 3, .stride = 1, .pad_t = 1, .pad_l = 1, .pad_b = 1,
                 .pad_r = 1};
    size_t nw = (size_t)cout * cin * 9, nx = (size_t)n * cin * ih * iw, ny = (size_t)n * cout * ih * iw;
    float *wf = rnd(nw, 21);
    c.w = (kn_mat){.data = to_f16(wf, nw), .dtype = FM_DT_F16, .rows = cout, .cols = cin * 9};
    float *bias = rnd(cout, 22), *x = rnd(nx, 23), *y = core_alloc(sizeof(float) * ny);
    c.bias = bias;
    kn_mat_pack(&c.w, bf16 ? FM_PREC_BF16 : FM_PREC_FP32);
    int threads = kn_scratch_threads();
    size_t bytes = 0;
    for (int a = 0; a < 3; a++) {
        c.algo = algos[a];
        size_t b = kn_conv2d_scratch(&c, n, ih, iw, threads);
        if (b > bytes) bytes = b;
    }
    kn_scratch s = {.base = core_alloc(bytes), .bytes = bytes, .threads = threads};
    if (!s.base || !y) { fprintf(stderr, "kbench: out of memory\n"); exit(1); }
    double t[3][16], flops = 2.0 * nw * ih * iw * n;
    for (int r = -1; r < reps; r++) /* r = -1: warm-up */
        for (int a = 0; a < 3; a++) {
            c.algo = algos[a];
            double c0 = cpu_per_thread();
            if (kn_conv2d_ws(&s, y, x, &c, n, ih, iw)) { fprintf(stderr, "kbench: scratch refused\n"); exit(1); }
            if (r >= 0) t[a][r] = cpu_per_thread() - c0;
        }
    double d = median(t[0], reps);
    printf("%-30s %s", what, bf16 ? "bf16" : "fp32");
    for (int a = 0; a < 3; a++) {
        double m = a ? median(t[a], reps) : d, g = flops / m * 1e-9;
        printf(" | %s %8.1f ms %6.0f GF/s %4.0f%% %5.2fx", names[a], m * 1e3, g, 100.0 * g / peak, d / m);
    }
    printf("\n");
    core_free(s.base); core_free((void *)c.w.data); core_free(wf); core_free(bias); core_free(x); core_free(y);
}

static void bench_wino_all(double peak, int reps)
{
    printf("3x3 pad-1 convolutions, direct vs Winograd: median CPU time per thread of %d runs, effective "
           "GFLOP/s (direct-convolution FLOPs / time), %% of the FP32 FMA peak, speed-up over direct\n", reps);
    for (int prec = 0; prec < 2; prec++) {
        if (prec && !kn_has_bf16()) break;
        /* SD 1.5 U-Net at a 64x64 latent, batch 2 (CFG): its four levels */
        bench_wino("unet 320->320 64x64 b2", 320, 320, 64, 64, 2, prec, peak, reps);
        bench_wino("unet 640->320 64x64 b2", 640, 320, 64, 64, 2, prec, peak, reps);
        bench_wino("unet 640->640 32x32 b2", 640, 640, 32, 32, 2, prec, peak, reps);
        bench_wino("unet 1280->1280 16x16 b2", 1280, 1280, 16, 16, 2, prec, peak, reps);
        bench_wino("unet 1280->1280 8x8 b2", 1280, 1280, 8, 8, 2, prec, peak, reps);
        /* the VAE decoder of a 512x512 image: its four resolutions, whole
         * and in the bands it runs them in (vae/autoencoder_kl.c: the
         * im2col of a band within 32 Mi floats) */
        bench_wino("vae 512->512 64x64", 512, 512, 64, 64, 1, prec, peak, reps);
        bench_wino("vae 512->512 128x128", 512, 512, 128, 128, 1, prec, peak, reps);
        bench_wino("vae 512->512 band 59x128", 512, 512, 59, 128, 1, prec, peak, reps);
        bench_wino("vae 512->512 band 32x256", 512, 512, 32, 256, 1, prec, peak, reps);
        bench_wino("vae 512->256 band 32x256", 512, 256, 32, 256, 1, prec, peak, reps);
        bench_wino("vae 256->256 256x256", 256, 256, 256, 256, 1, prec, peak, reps);
        bench_wino("vae 128->128 512x512", 128, 128, 512, 512, 1, prec, peak, reps);
    }
}

/* ---- int8 GEMMs on quantised weights against the F16 weights' fp32 and bf16 modes ---- */

/* One way to run a layer: its weights as dtype (F16, or quantised from the
 * same random floats by core_quantize), the precision kn_mat_pack records,
 * and for K-quants whether the int8 GEMM runs (else the float GEMM
 * dequantises them per tile: FM_KQUANT_INT8=0). */
typedef struct bench_mode {
    const char *name;
    core_dtype dtype;
    fm_precision prec;
    int int8;
} bench_mode;

/* One convolution (k x k, pad k/2) or, with k = 0, a linear of hw tokens
 * (cin -> cout), in each mode (the algorithm kn_conv2d picks), the modes
 * alternating within each repetition on one planned scratch. Prints the
 * median CPU time per thread and the ratio to mode base's. */
static void bench_modes(const char *what, int cin, int cout, int k, int hw, int n, int reps, const bench_mode *modes,
                        int nm, int base)
{
    int K = cin * (k ? k * k : 1), pad = k / 2;
    kn_conv c = {.cin = cin, .cout = cout, .kh = k ? k : 1, .kw = k ? k : 1, .stride = 1,
                 .pad_t = pad, .pad_l = pad, .pad_b = pad, .pad_r = pad};
    size_t nw = (size_t)cout * K, npx = k ? (size_t)n * hw * hw : (size_t)hw, nx = npx * cin, ny = npx * cout;
    float *wf = rnd(nw, 31), *bias = rnd(cout, 32), *x = rnd(nx, 33), *y = core_alloc(sizeof(float) * ny);
    kn_mat mats[8];
    if (!y || nm > 8) { fprintf(stderr, "kbench: out of memory\n"); exit(1); }
    for (int m = 0; m < nm; m++) {
        void *d = modes[m].dtype == FM_DT_F16 ? to_f16(wf, nw) : core_alloc(core_dtype_bytes(modes[m].dtype, nw));
        if (!d || (modes[m].dtype != FM_DT_F16 && core_quantize(d, wf, modes[m].dtype, nw))) {
            fprintf(stderr, "kbench: out of memory\n");
            exit(1);
        }
        mats[m] = (kn_mat){.data = d, .dtype = modes[m].dtype, .rows = cout, .cols = K};
        kn_mat_pack(&mats[m], modes[m].prec);
    }
    int threads = kn_scratch_threads();
    size_t bytes = 0;
    for (int m = 0; m < nm; m++) {
        setenv("FM_KQUANT_INT8", modes[m].int8 ? "1" : "0", 1);
        c.w = mats[m];
        size_t b = k ? kn_conv2d_scratch(&c, n, hw, hw, threads) : kn_linear_scratch(hw, &mats[m], threads);
        if (b > bytes) bytes = b;
    }
    kn_scratch s = {.base = core_alloc(bytes), .bytes = bytes, .threads = threads};
    if (!s.base) { fprintf(stderr, "kbench: out of memory\n"); exit(1); }
    double t[8][16];
    for (int r = -1; r < reps; r++) /* r = -1: warm-up */
        for (int m = 0; m < nm; m++) {
            setenv("FM_KQUANT_INT8", modes[m].int8 ? "1" : "0", 1);
            c.w = mats[m];
            double c0 = cpu_per_thread();
            int rc = k ? kn_conv2d_ws(&s, y, x, &c, n, hw, hw) : kn_linear_ws(&s, y, x, hw, &mats[m], bias);
            if (rc) { fprintf(stderr, "kbench: scratch refused\n"); exit(1); }
            if (r >= 0) t[m][r] = cpu_per_thread() - c0;
        }
    unsetenv("FM_KQUANT_INT8");
    double flops = 2.0 * nw * npx, tb = median(t[base], reps);
    printf("%-34s", what);
    for (int m = 0; m < nm; m++) {
        double md = m == base ? tb : median(t[m], reps);
        printf(" | %s %8.1f ms %6.0f GF/s %5.2fx", modes[m].name, md * 1e3, flops / md * 1e-9, md / tb);
    }
    printf("\n");
    for (int m = 0; m < nm; m++) core_free((void *)mats[m].data);
    core_free(s.base); core_free(wf); core_free(bias); core_free(x); core_free(y);
}

static const bench_mode q8_modes[] = {
    {"F16 fp32", FM_DT_F16, FM_PREC_FP32, 0}, {"F16 bf16", FM_DT_F16, FM_PREC_BF16, 0},
    {"Q8_0 int8", FM_DT_Q8_0, FM_PREC_BF16, 1}};

static void bench_q8(const char *what, int cin, int cout, int k, int hw, int n, int reps)
{
    bench_modes(what, cin, cout, k, hw, n, reps, q8_modes, 3, 1);
}

static void bench_q8_all(int reps)
{
    printf("Q8_0 int8 (path %s) vs F16 weights in fp32 and bf16 modes%s: median CPU time per thread of %d runs, "
           "GFLOP/s, time / the bf16 mode's\n", kn_q8_path(), kn_has_amx() ? " (AMX tiles)" : "", reps);
    /* SDXL's U-Net at a 128x128 latent (1024x1024), batch 1 */
    bench_q8("sdxl conv3x3 320->320 128x128", 320, 320, 3, 128, 1, reps);
    bench_q8("sdxl conv3x3 640->640 64x64", 640, 640, 3, 64, 1, reps);
    bench_q8("sdxl conv3x3 1280->1280 32x32", 1280, 1280, 3, 32, 1, reps);
    bench_q8("sdxl linear 4096 tok 640->640", 640, 640, 0, 4096, 1, reps);
    bench_q8("sdxl linear 1024 tok 1280->5120", 1280, 5120, 0, 1024, 1, reps);
    bench_q8("sdxl linear 77 tok 2048->1280", 2048, 1280, 0, 77, 1, reps);
}

/* K-quants: F16 in bf16 mode, Q4_K dequantised per tile in bf16 mode (the
 * path before the int8 GEMM), Q4_K and Q6_K in int8. Only layers whose K
 * is a multiple of 256 are K-quants in a file (the others stay F16). */
static const bench_mode qk_modes[] = {
    {"F16 bf16", FM_DT_F16, FM_PREC_BF16, 0}, {"Q4_K deq bf16", FM_DT_Q4_K, FM_PREC_BF16, 0},
    {"Q4_K int8", FM_DT_Q4_K, FM_PREC_BF16, 1}, {"Q6_K int8", FM_DT_Q6_K, FM_PREC_BF16, 1}};

static void bench_qk(const char *what, int cin, int cout, int k, int hw, int n, int reps)
{
    bench_modes(what, cin, cout, k, hw, n, reps, qk_modes, 4, 0);
}

static void bench_qk_all(int reps)
{
    printf("Q4_K / Q6_K int8 (path %s) vs F16 in bf16 mode and Q4_K dequantised to bf16: median CPU time per "
           "thread of %d runs, GFLOP/s, time / the F16 bf16 mode's\n", kn_q8_path_for(FM_DT_Q4_K), reps);
    /* SD 1.5 at a 64x64 latent (512x512) and SDXL at 128x128, batch 1 */
    bench_qk("sd1 conv3x3 1280->1280 16x16", 1280, 1280, 3, 16, 1, reps);
    bench_qk("sd1 linear 256 tok 1280->10240", 1280, 10240, 0, 256, 1, reps);
    bench_qk("sd1 linear 77 tok 768->1280", 768, 1280, 0, 77, 1, reps);
    bench_qk("sdxl conv3x3 1280->1280 32x32", 1280, 1280, 3, 32, 1, reps);
    bench_qk("sdxl linear 1024 tok 1280->5120", 1280, 5120, 0, 1024, 1, reps);
    bench_qk("sdxl linear 1024 tok 5120->1280", 5120, 1280, 0, 1024, 1, reps);
    bench_qk("sdxl linear 77 tok 2048->1280", 2048, 1280, 0, 77, 1, reps);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 3;
    int conv_only = argc > 2 && !strcmp(argv[2], "conv"); /* kbench N conv: only direct vs Winograd */
    int gemm_only = argc > 2 && !strcmp(argv[2], "gemm"); /* kbench N gemm: only the GEMM-engine rows */
    if (reps < 1) reps = 1;
    if (reps > 15) reps = 15;
    g_reps = reps;
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(2);
    printf("kernels: %s%s%s, %d threads\n", kn_isa_name(kn_isa_chosen()), kn_has_bf16() ? " +bf16" : "",
           kn_has_amx() ? " +amx" : "", omp_get_max_threads());
    double peak = fma_peak_gflops();
    if (peak <= 0) peak = 1.0; /* no SIMD: percentages are then plain GFLOP/s */
    printf("FP32 FMA peak (CPU time, all threads): %.1f GFLOP/s\n", peak);
    if (conv_only) {
        bench_wino_all(peak, reps);
        return 0;
    }
    if (argc > 2 && !strcmp(argv[2], "q8")) { /* kbench N q8: Q8_0 int8 against F16 fp32 / bf16 */
        bench_q8_all(reps);
        return 0;
    }
    if (argc > 2 && !strcmp(argv[2], "qk")) { /* kbench N qk: Q4_K / Q6_K int8 against F16 bf16, Q4_K dequantised */
        bench_qk_all(reps);
        return 0;
    }
    printf("%-42s %26s | %s\n", "", "wall clock", "CPU time / threads, % of peak");

    sq_ctx sq = {.n = 1536};
    sq.a = rnd((size_t)sq.n * sq.n, 1); sq.b = rnd((size_t)sq.n * sq.n, 2); sq.c = rnd((size_t)sq.n * sq.n, 3);
    report("sgemm 1536^3", 2.0 * sq.n * sq.n * sq.n, median_time(run_sq, &sq, reps), peak);
    core_free(sq.a); core_free(sq.b); core_free(sq.c);

    for (int prec = 0; prec < 2; prec++) {
        const char *mode = prec ? "bf16" : "fp32";
        if (prec && !kn_has_bf16()) {
            printf("bf16 mode: no native bf16 on this CPU (falls back to fp32)\n");
            break;
        }
        bench_conv(320, 64, 2, prec, peak);  /* U-Net level 1, batch 2 (CFG) */
        bench_conv(1280, 16, 2, prec, peak); /* U-Net level 3: the weights dominate */
        bench_conv(128, 256, 1, prec, peak); /* VAE decoder, last levels */
        char what[96];
        float *wf;

        /* linear 8192 tokens x 320 -> 1280 */
        lin_ctx ln = {.n = 8192};
        wf = rnd((size_t)1280 * 320, 7);
        ln.w = (kn_mat){.data = to_f16(wf, (size_t)1280 * 320), .dtype = FM_DT_F16, .rows = 1280, .cols = 320};
        kn_mat_pack(&ln.w, prec ? FM_PREC_BF16 : FM_PREC_FP32);
        ln.bias = rnd(1280, 8);
        ln.x = rnd((size_t)8192 * 320, 9); ln.y = core_alloc(sizeof(float) * 8192 * 1280);
        snprintf(what, sizeof what, "linear 8192x320->1280 F16 w, %s", mode);
        report(what, 2.0 * 8192 * 320 * 1280, median_time(run_lin, &ln, reps), peak);
        core_free((void *)ln.w.data); core_free(wf); core_free((void *)ln.bias); core_free(ln.x); core_free(ln.y);
    }

    if (gemm_only) return 0;
    att_ctx at = {.n = 4096, .heads = 8, .d = 40};
    size_t na = (size_t)at.n * at.heads * at.d;
    at.q = rnd(na, 10); at.k = rnd(na, 11); at.v = rnd(na, 12); at.o = core_alloc(sizeof(float) * na);
    report("attention 4096x4096 8 heads x 40, fp32", 4.0 * at.n * at.n * at.heads * at.d,
           median_time(run_att, &at, reps), peak);
    if (kn_has_bf16()) {
        at.prec = FM_PREC_BF16;
        report("attention 4096x4096 8 heads x 40, bf16", 4.0 * at.n * at.n * at.heads * at.d,
               median_time(run_att, &at, reps), peak);
    }
    core_free(at.q); core_free(at.k); core_free(at.v); core_free(at.o);
    bench_wino_all(peak, reps);
    return 0;
}
