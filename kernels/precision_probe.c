/* kn_precision_probe: the real kernels (kn_conv2d_ws, kn_linear_ws,
 * kn_attention_ws) on shapes a U-Net spends its time in: the convolution
 * at its 64x64 level's size, the linear and the attention smaller than its
 * own so that the whole probe stays under half a second: the blocking, the
 * packing and the micro-kernels are the same, so the fp32 : bf16 ratio is
 * the U-Net's. The fp32 convolution is timed as
 * the faster of the direct one and Winograd F(4x4,3x3) (kn_winograd_ws),
 * since fp32's 3x3 convolutions may run either (kernels/winograd.c decides
 * per shape) while bf16's stay direct: bf16 has to beat fp32's best, so
 * auto never picks it where fp32 with Winograd would be the faster. */
#include "kernels/precision_probe.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"

enum {
    CONV_C = 320, CONV_SIDE = 64, /* 256 F(4x4) tiles: as many as the U-Net's 64x64 level gives Winograd */
    LIN_N = 1024, LIN_IN = 320, LIN_OUT = 1280,
    ATT_N = 1024, ATT_HEADS = 4, ATT_DIM = 40, ATT_W = ATT_HEADS * ATT_DIM
};

static const char *const shape_names[FM_PROBE_SHAPES] = {"conv 3x3", "linear", "attention"};

const char *kn_probe_shape_name(kn_probe_shape s)
{
    return (unsigned)s < FM_PROBE_SHAPES ? shape_names[s] : "?";
}

/* The operands of every shape, allocated together. */
typedef struct probe_data {
    uint16_t *conv_w, *lin_w;       /* F16, as checkpoints ship them */
    float *bias, *x, *y, *q, *k, *v;
    kn_conv conv;
    kn_mat lin;
    kn_scratch s;
} probe_data;

/* Uniform in [-1, 1) from a 64-bit LCG: the values only need to be
 * ordinary numbers (no denormals, no zeros the kernels could skip). */
static float next_value(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static void fill(float *p, size_t n, float scale, uint64_t *state)
{
    for (size_t i = 0; i < n; i++) p[i] = next_value(state) * scale;
}

static void fill_f16(uint16_t *p, size_t n, float scale, uint64_t *state)
{
    for (size_t i = 0; i < n; i++) p[i] = core_f32_to_f16_1(next_value(state) * scale);
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* The scratch the largest call needs on one thread, in either mode. */
static size_t scratch_bytes(probe_data *d)
{
    size_t bytes = 0;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        fm_precision prec = bf16 ? FM_PREC_BF16 : FM_PREC_FP32;
        kn_mat_pack(&d->conv.w, prec);
        kn_mat_pack(&d->lin, prec);
        bytes = max_size(bytes, kn_conv2d_scratch(&d->conv, 1, CONV_SIDE, CONV_SIDE, 1));
        if (!bf16) bytes = max_size(bytes, kn_winograd_scratch(&d->conv, 4, 1, CONV_SIDE, CONV_SIDE, 1));
        bytes = max_size(bytes, kn_linear_scratch(LIN_N, &d->lin, 1));
        bytes = max_size(bytes, kn_attention_scratch(1, ATT_N, ATT_N, ATT_HEADS, ATT_DIM, prec, 1));
    }
    return bytes;
}

static void probe_free(probe_data *d)
{
    core_free(d->conv_w);
    core_free(d->lin_w);
    core_free(d->bias);
    core_free(d->x);
    core_free(d->y);
    core_free(d->q);
    core_free(d->k);
    core_free(d->v);
    core_free(d->s.base);
}

static int probe_init(probe_data *d)
{
    memset(d, 0, sizeof *d);
    size_t conv_k = (size_t)CONV_C * 9, px = (size_t)CONV_SIDE * CONV_SIDE;
    size_t x_n = max_size((size_t)CONV_C * px, (size_t)LIN_N * LIN_IN);
    size_t y_n = max_size(max_size((size_t)CONV_C * px, (size_t)LIN_N * LIN_OUT), (size_t)ATT_N * ATT_W);
    size_t qkv = (size_t)ATT_N * ATT_W;
    d->conv_w = core_alloc(sizeof(uint16_t) * CONV_C * conv_k);
    d->lin_w = core_alloc(sizeof(uint16_t) * LIN_OUT * LIN_IN);
    d->bias = core_alloc(sizeof(float) * LIN_OUT);
    d->x = core_alloc(sizeof(float) * x_n);
    d->y = core_alloc(sizeof(float) * y_n);
    d->q = core_alloc(sizeof(float) * qkv);
    d->k = core_alloc(sizeof(float) * qkv);
    d->v = core_alloc(sizeof(float) * qkv);
    if (!d->conv_w || !d->lin_w || !d->bias || !d->x || !d->y || !d->q || !d->k || !d->v) return -1;
    uint64_t state = 0x5eed;
    fill_f16(d->conv_w, (size_t)CONV_C * conv_k, 0.02f, &state);
    fill_f16(d->lin_w, (size_t)LIN_OUT * LIN_IN, 0.05f, &state);
    fill(d->bias, LIN_OUT, 0.1f, &state);
    fill(d->x, x_n, 1.0f, &state);
    fill(d->q, qkv, 1.0f, &state);
    fill(d->k, qkv, 1.0f, &state);
    fill(d->v, qkv, 1.0f, &state);
    d->conv = (kn_conv){.w = {.data = d->conv_w, .dtype = FM_DT_F16, .rows = CONV_C, .cols = (int)conv_k},
                        .bias = d->bias, .cin = CONV_C, .cout = CONV_C, .kh = 3, .kw = 3, .stride = 1,
                        .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1, .algo = FM_CONV_DIRECT};
    d->lin = (kn_mat){.data = d->lin_w, .dtype = FM_DT_F16, .rows = LIN_OUT, .cols = LIN_IN};
    d->s.threads = 1;
    d->s.bytes = scratch_bytes(d);
    d->s.base = core_alloc(d->s.bytes);
    return d->s.base ? 0 : -1;
}

static double thread_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One run of shape s in the given mode (winograd: the fp32 convolution as
 * F(4x4,3x3)): its CPU seconds, or -1 when the kernel refused the scratch
 * (it would be a planning bug). */
static double run_once(probe_data *d, kn_probe_shape s, int bf16, int winograd)
{
    fm_precision prec = bf16 ? FM_PREC_BF16 : FM_PREC_FP32;
    kn_mat_pack(&d->conv.w, prec);
    kn_mat_pack(&d->lin, prec);
    double t0 = thread_seconds();
    int rc = 0;
    switch (s) {
    case FM_PROBE_CONV:
        rc = winograd ? kn_winograd_ws(&d->s, d->y, d->x, &d->conv, 4, 1, CONV_SIDE, CONV_SIDE)
                      : kn_conv2d_ws(&d->s, d->y, d->x, &d->conv, 1, CONV_SIDE, CONV_SIDE);
        break;
    case FM_PROBE_LINEAR: rc = kn_linear_ws(&d->s, d->y, d->x, LIN_N, &d->lin, d->bias); break;
    default:
        rc = kn_attention_ws(&d->s, d->y, d->q, ATT_W, d->k, d->v, ATT_W, 1, ATT_N, ATT_N, ATT_HEADS, ATT_DIM,
                             0.158f, 0, prec);
        break;
    }
    double t = thread_seconds() - t0;
    return rc ? -1.0 : t;
}

int kn_precision_probe(kn_probe_times *t, int reps)
{
    probe_data d;
    int rc = probe_init(&d);
    kn_probe_times best;
    for (int s = 0; s < FM_PROBE_SHAPES; s++) best.fp32[s] = best.bf16[s] = 1e30;
    for (int r = 0; !rc && r < (reps > 0 ? reps : 1); r++)
        for (int s = 0; !rc && s < FM_PROBE_SHAPES; s++)
            for (int mode = 0; !rc && mode < 3; mode++) { /* fp32, bf16, fp32 conv as Winograd */
                if (mode == 2 && s != FM_PROBE_CONV) break;
                double sec = run_once(&d, (kn_probe_shape)s, mode == 1, mode == 2);
                double *slot = mode == 1 ? &best.bf16[s] : &best.fp32[s];
                if (sec < 0) rc = -1;
                else if (sec < *slot) *slot = sec;
            }
    probe_free(&d);
    if (!rc) *t = best;
    return rc;
}
