/* kernels: the compute shared by the text encoders, the U-Net and the VAEs.
 *
 * Layout conventions
 *   - Feature maps are NCHW float32, as in PyTorch (and the goldens).
 *   - Token sequences are [batch][tokens][dim] float32, row-major.
 *   - Weights stay in the checkpoint's dtype (F32/F16/BF16), mapped from the
 *     file; an kn_mat records the precision its products run in (kn_mat_pack).
 *
 * Every fast kernel kn_X has a plain loop kn_X_ref beside it with the same
 * contract; tests compare the two on random data. Kernels parallelise with
 * OpenMP internally; callers never open parallel regions around them.
 */
#ifndef FM_KERNELS_H
#define FM_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "core/core.h"

/* A weight matrix [rows][cols], rows = output features. */
typedef struct kn_lowrank kn_lowrank;

typedef struct kn_mat {
    const void *data;  /* row-major, dtype below; not owned */
    core_dtype dtype;    /* FM_DT_F32, FM_DT_F16, FM_DT_BF16 or a quantised type
                            (rows of whole blocks, dequantised while packing) */
    int rows, cols;
    int packed_kind;   /* kernel-private: the precision kn_mat_pack recorded */
    const kn_lowrank *lowrank; /* updates applied at run time, or NULL; not owned */
} kn_mat;

/* A low-rank update of a weight W [rows][cols] applied at run time instead
 * of merged into it (a LoRA in --precision fp32): the layer computes
 * W x + scale * up (down x), which is (W + scale up down) x in exact
 * arithmetic; the rounding differs from the merged weight's at float32's
 * level. A linear's down is [r][cols]; a convolution's down is a
 * convolution with the layer's kernel, stride and padding to r channels,
 * its up a 1x1 [rows][r]. Both run in full precision whatever W's mode;
 * next chains the updates of several adapters, applied in order. */
struct kn_lowrank {
    kn_mat down, up;
    float scale;
    const kn_lowrank *next;
};

/* Sets the precision m's products run in (FM_PREC_AUTO/FP32 keep full
 * precision); may be called again to change it. Returns 0.
 *
 * Current implementation: no copy is made (memory cost 0). The kernels
 * convert F16/BF16 weights while packing per-call blocks (bounded scratch per
 * thread), so the file mapping stays the only copy; kn_mat_pack just records
 * the precision. FM_PREC_BF16: kn_linear / kn_conv2d round weights and
 * activations to bf16 and use vdpbf16ps dot products with float
 * accumulation (about 2x faster; error about 2^-9 sqrt(K) relative to the
 * output scale, see tests/test_kernels.c); on CPUs without AVX512_BF16 it
 * computes in full precision. FM_PREC_F16 computes in full precision. */
int kn_mat_pack(kn_mat *m, fm_precision prec);

/* Caller-owned scratch for the fast kernels. A plan (the U-Net's workspace,
 * the VAE's arena) asks each call shape how many bytes it needs for a given
 * number of threads (kn_X_scratch), keeps the largest, allocates once before
 * the first step, and hands the same block to every call (kn_X_ws): nothing
 * is allocated inside a forward pass. Inside, a call carves its shared
 * panels and one slice per OpenMP thread. base is 64-byte aligned. */
typedef struct kn_scratch {
    void *base;
    size_t bytes;
    int threads; /* the thread count the sizes were asked for (>= 1) */
} kn_scratch;

/* The thread count a plan sizes scratch for: OpenMP's current maximum. */
int kn_scratch_threads(void);

/* The kn_X_ws kernels return 0, or -1 without touching the output when s is
 * smaller than kn_X_scratch says (a plan that missed a call shape: an
 * error, never skipped work). The plain kn_X entry points allocate their
 * scratch per call (text encoders, tests, tools) and compute with the
 * reference loop when that allocation fails: slower, never wrong. */

/* Q8_0 weights, and Q4_K / Q5_K / Q6_K weights with K a multiple of 256
 * (kn_q8_applies, kn_q8_conv_applies; FM_KQUANT_INT8=0 turns the K-quants
 * off): kn_linear and kn_conv2d quantise the activations (a linear's rows,
 * a convolution's im2col columns, K = cin*kh*kw) per block along K as ggml
 * does (q8_0 per 32 for Q8_0, q8_K per 256 for the K-quants) and run int8
 * dot products (AMX-INT8 for Q8_0 only, AVX-512 VNNI, AVX-VNNI, AVX2, or
 * scalar: the same bits on each; kernels/q8_gemm.c). kn_q8_linear_ref and
 * kn_q8_conv2d_ref are that arithmetic in plain loops; kn_linear_ref and
 * kn_conv2d_ref stay the float references of the dequantised weights.
 * kn_q8_*_path run a named path ("scalar", "avx2", "avx-vnni",
 * "avx512-vnni", "amx-int8"; -1 when the CPU lacks it or has no kernels
 * for the weight type), for tests; kn_q8_path names the one Q8_0 weights
 * use, kn_q8_path_for the one weights of type t use. */
int kn_q8_applies(const kn_mat *w);
size_t kn_q8_linear_scratch(int n, const kn_mat *w, int threads);
int kn_q8_linear_ws(const kn_scratch *s, float *y, const float *x, int n, const kn_mat *w, const float *bias);
void kn_q8_linear_ref(float *y, const float *x, int n, const kn_mat *w, const float *bias);
int kn_q8_linear_path(const char *path, float *y, const float *x, int n, const kn_mat *w, const float *bias);
const char *kn_q8_path(void);
const char *kn_q8_path_for(core_dtype t);

/* y[n][w->rows] = x[n][w->cols] . W^T + bias (bias may be NULL). */
void kn_linear(float *y, const float *x, int n, const kn_mat *w, const float *bias);
void kn_linear_ref(float *y, const float *x, int n, const kn_mat *w, const float *bias);
size_t kn_linear_scratch(int n, const kn_mat *w, int threads);
int kn_linear_ws(const kn_scratch *s, float *y, const float *x, int n, const kn_mat *w, const float *bias);

/* C[M][N] = A[M][K] . B + beta*C, with B [K][N] (trans_b 0) or [N][K] (trans_b 1);
 * all float32 with leading dimensions lda, ldb, ldc. Blocked and packed
 * (kernels/gemm.h), AVX-512 / AVX2 micro-kernels chosen at run time. */
void kn_sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              int trans_b, float beta, float *C, int ldc);
void kn_sgemm_ref(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  int trans_b, float beta, float *C, int ldc);

/* 2-D convolution. Weight as a matrix [cout][cin*kh*kw] (PyTorch order). */
typedef struct kn_conv {
    kn_mat w;
    const float *bias; /* [cout] or NULL */
    int cin, cout, kh, kw, stride;
    int pad_t, pad_l, pad_b, pad_r; /* zero padding */
    int algo; /* kn_conv_algo: 0 lets kn_conv2d choose per call shape (kn_conv2d_algo) */
} kn_conv;

/* How kn_conv2d computes a convolution: the direct implicit GEMM, or
 * Winograd F(2x2,3x3) / F(4x4,3x3) (3x3 stride 1, pads 0 or 1, only). */
typedef enum { FM_CONV_AUTO = 0, FM_CONV_DIRECT, FM_CONV_WINO2, FM_CONV_WINO4 } kn_conv_algo;

static inline int kn_conv_out_h(const kn_conv *c, int h) { return (h + c->pad_t + c->pad_b - c->kh) / c->stride + 1; }
static inline int kn_conv_out_w(const kn_conv *c, int w) { return (w + c->pad_l + c->pad_r - c->kw) / c->stride + 1; }

/* y [n][cout][oh][ow] = conv(x [n][cin][h][w]). An implicit GEMM: im2col
 * columns are gathered into the GEMM's packed panels on the fly (nothing
 * larger than KC x NR floats per thread), and the weights are packed once for
 * all n images. */
void kn_conv2d(float *y, const float *x, const kn_conv *c, int n, int h, int w);
void kn_conv2d_ref(float *y, const float *x, const kn_conv *c, int n, int h, int w);
size_t kn_conv2d_scratch(const kn_conv *c, int n, int h, int w, int threads);
int kn_conv2d_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int n, int h, int w);

int kn_q8_conv_applies(const kn_conv *c);
size_t kn_q8_conv2d_scratch(const kn_conv *c, int n, int h, int w, int threads);
int kn_q8_conv2d_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int n, int h, int w);
void kn_q8_conv2d_ref(float *y, const float *x, const kn_conv *c, int n, int h, int w);
int kn_q8_conv2d_path(const char *path, float *y, const float *x, const kn_conv *c, int n, int h, int w);

/* Winograd F(m x m, 3 x 3), m = 4 or 2, for the 3x3 stride-1 convolutions
 * with pads of 0 or 1 (kn_winograd_applies: pad 1, and the bands of
 * kn_conv2d_rows_ws): the same contract as kn_conv2d (bias
 * included, any weight dtype, the bf16 mode of c->w), 4x (m = 4) or 2.25x
 * (m = 2) fewer multiplications, float32 error a few times the direct
 * convolution's (kernels/winograd.c; measured in tests/test_kernels.c).
 * kn_winograd_ws returns -1 for a convolution it does not apply to.
 * kn_winograd_ref is the same algorithm in plain loops (double inside). */
int kn_winograd_applies(const kn_conv *c);
size_t kn_winograd_scratch(const kn_conv *c, int m, int n, int h, int w, int threads);
int kn_winograd_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int m, int n, int h, int w);
void kn_winograd(float *y, const float *x, const kn_conv *c, int m, int n, int h, int w);
void kn_winograd_ref(float *y, const float *x, const kn_conv *c, int m, int n, int h, int w);
/* The Winograd tile kn_conv2d uses for c on n images of h x w: 4 or 2, or
 * 0 for the direct convolution. c->algo forces one (where it applies);
 * FM_CONV_AUTO: a rule of shape classes, used when a timing at the first
 * call measured Winograd faster on this machine (kernels/winograd.c);
 * FM_CONV=direct|winograd|winograd2 in the environment overrides it. */
int kn_conv2d_tile(const kn_conv *c, int n, int h, int w);
/* What FM_CONV_AUTO decided on this machine, in one line for -v (the
 * decision is made at the first call of this or of kn_conv2d_tile). */
void kn_conv2d_choice(char *why, size_t size);

/* Output rows [r0, r1) of conv c on one image x [cin][h][w] into y
 * [cout][oh][ow], or on x [cin][h/2][w/2] upsampled x2 nearest when up2
 * (h, w are then the upsampled size, which is never whole in memory). The
 * input rows those outputs read are copied into band_in (the zero padding
 * outside the input becomes the band's own), the band's output goes to
 * band_out, then to its rows of y. band_in: cin * w * ((r1-r0-1) * stride
 * + kh) floats, band_out: cout * (r1-r0) * ow. */
size_t kn_conv2d_rows_scratch(const kn_conv *c, int h, int w, int r0, int r1, int threads);
int kn_conv2d_rows_ws(const kn_scratch *s, const kn_conv *c, float *y, const float *x, int up2, int h, int w,
                      int r0, int r1, float *band_in, float *band_out);
void kn_conv2d_rows_ref(const kn_conv *c, float *y, const float *x, int up2, int h, int w, int r0, int r1);

/* GroupNorm over x [n][c][hw]; gamma/beta [c]; optional SiLU afterwards.
 * y may equal x. */
void kn_group_norm(float *y, const float *x, int n, int c, int hw, int groups, float eps,
                   const float *gamma, const float *beta, int fuse_silu);
void kn_group_norm_ref(float *y, const float *x, int n, int c, int hw, int groups, float eps,
                       const float *gamma, const float *beta, int fuse_silu);

/* GroupNorm with given statistics (whole-image ones, gathered over tiles):
 * y = (x - mean[g]) * rstd[g] * gamma + beta over x [c][hw], then SiLU if
 * silu. y may equal x. */
void kn_group_norm_apply(float *y, const float *x, int c, int hw, int groups, const float *mean,
                         const float *rstd, const float *gamma, const float *beta, int silu);
void kn_group_norm_apply_ref(float *y, const float *x, int c, int hw, int groups, const float *mean,
                             const float *rstd, const float *gamma, const float *beta, int silu);
/* Adds the cells [y0,y1) x [x0,x1) of x [c][h][w] to the per-group sums
 * sum[g], sumsq[g] and count[g] (double, so that many tiles add up). */
void kn_group_stats_add(double *sum, double *sumsq, double *count, const float *x, int c, int h, int w,
                        int groups, int y0, int y1, int x0, int x1);
void kn_group_stats_add_ref(double *sum, double *sumsq, double *count, const float *x, int c, int h,
                            int w, int groups, int y0, int y1, int x0, int x1);

/* LayerNorm over the last dim of x [rows][dim]. y may equal x. */
void kn_layer_norm(float *y, const float *x, int rows, int dim, const float *gamma,
                   const float *beta, float eps);
void kn_layer_norm_ref(float *y, const float *x, int rows, int dim, const float *gamma,
                       const float *beta, float eps);

/* Element-wise, in place. */
void kn_silu(float *x, size_t n);
void kn_gelu(float *x, size_t n);       /* exact erf GELU */
void kn_quick_gelu(float *x, size_t n); /* x * sigmoid(1.702 x) */
/* GEGLU: x [rows][2*dim] = [a | gate] -> y [rows][dim] = a * gelu(gate). */
void kn_geglu(float *y, const float *x, int rows, int dim);
/* Softmax along each row of x [rows][n], in place. */
void kn_softmax(float *x, int rows, int n);
/* Reference loops of the above (double precision inside). */
void kn_silu_ref(float *x, size_t n);
void kn_gelu_ref(float *x, size_t n);
void kn_quick_gelu_ref(float *x, size_t n);
void kn_geglu_ref(float *y, const float *x, int rows, int dim);
void kn_softmax_ref(float *x, int rows, int n);
/* y[i] = a[i] + b[i] (y may alias a or b). */
void kn_add(float *y, const float *a, const float *b, size_t n);

/* Multi-head scaled-dot-product attention, never materialising the full
 * [nq][nk] score matrix (online softmax over key blocks).
 *   q: [batch][nq] rows of q_stride floats; head h uses columns h*head_dim..
 *   k, v: [batch][nk] rows of kv_stride floats, same head columns
 *   out: [batch][nq][heads*head_dim]
 * causal: key j > query i is masked. */
void kn_attention(float *out, const float *q, int q_stride, const float *k, const float *v,
                  int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                  float scale, int causal);
/* The same in a given precision: FM_PREC_BF16 rounds Q, K, V and the softmax
 * weights to bf16 for vdpbf16ps dot products (float accumulation and
 * softmax); full precision where the CPU lacks AVX512_BF16. */
void kn_attention_prec(float *out, const float *q, int q_stride, const float *k, const float *v,
                       int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                       float scale, int causal, fm_precision prec);
void kn_attention_ref(float *out, const float *q, int q_stride, const float *k, const float *v,
                      int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                      float scale, int causal);
size_t kn_attention_scratch(int batch, int nq, int nk, int heads, int head_dim, fm_precision prec,
                            int threads);
int kn_attention_ws(const kn_scratch *s, float *out, const float *q, int q_stride, const float *k,
                    const float *v, int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                    float scale, int causal, fm_precision prec);

/* Nearest-neighbour resize of x [nc][h][w] to [nc][oh][ow] (PyTorch
 * 'nearest': src = floor(dst * in / out)); oh = 2h, ow = 2w is the U-Net's x2. */
void kn_upsample_nearest(float *y, int oh, int ow, const float *x, int nc, int h, int w);

/* y [n][ca+cb][hw] = cat(a [n][ca][hw], b [n][cb][hw]) along channels. */
void kn_concat_channels(float *y, const float *a, int ca, const float *b, int cb, int n, int hw);

/* [n][c][hw] <-> [n][hw][c] */
void kn_nchw_to_nhwc(float *y, const float *x, int n, int c, int hw);
void kn_nhwc_to_nchw(float *y, const float *x, int n, int c, int hw);

/* The instruction set the fast kernels use: the best the CPU runs, chosen once
 * per process; FM_ISA=scalar|avx2|avx512 in the environment can lower it (tests
 * use this to check every path). Portable builds rely on it; -march=native
 * builds too, so one binary never assumes an ISA. */
typedef enum { FM_ISA_SCALAR = 0, FM_ISA_AVX2, FM_ISA_AVX512 } kn_isa;
kn_isa kn_isa_chosen(void);
int kn_isa_supported(kn_isa isa); /* this CPU can run it */
const char *kn_isa_name(kn_isa isa);
/* Whether kn_mat_pack(m, FM_PREC_BF16) uses native bf16 dot products here. */
int kn_has_bf16(void);
/* AMX-BF16 tiles in use for bf16 GEMMs and convolutions (FM_AMX=0 turns them off). */
int kn_has_amx(void);
/* AMX-INT8 tiles in use for the Q8_0 GEMM (with kn_has_amx). */
int kn_has_amx_int8(void);
/* Bumped whenever a kernel change moves the fp32/bf16 speed ratio, so the
 * measured precision choice cached by an older build of the same release is
 * timed again (2: the bf16 packer and the im2col-free AMX 3x3 convolution;
 * 3: the vectorised row packer and Winograd F(2x2,3x3) on 512 channels;
 * 4: the probe's fp32 convolution is the faster of direct and Winograd). */
#define KN_KERNELS_REVISION 4

/* Row r of a weight matrix as float32 (e.g. an embedding lookup). */
void kn_mat_row(float *dst, const kn_mat *m, int r);
/* Elements k0..k0+kc of row r as float32, any dtype (quantised blocks the
 * range cuts are dequantised whole and the part copied). */
void kn_mat_row_range(float *dst, const kn_mat *m, int r, int k0, int kc);

#endif
