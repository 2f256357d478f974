/* kernels-private: the packed, blocked GEMM engine behind kn_sgemm,
 * kn_linear, kn_conv2d and kn_attention.
 *
 * C[M][N] += A[M][K] . B[K][N] is computed BLIS-style. The C matrix is cut
 * into tasks (tiles of at most MC rows, split evenly, run by OpenMP threads
 * with dynamic scheduling; tiles are disjoint, so no false sharing). Per task
 * and per KC slice of K, the tile's A rows are packed into MR-high panels
 * (panel[k][MR], kept in L2), then each NR-wide B panel (panel[k][NR]) is
 * packed just before use (kept in L1) and swept by every A panel with a
 * register-blocked micro-kernel. Packing gathers from whatever the operand
 * really is (a row-major matrix, a transposed one, an F16/BF16 weight matrix,
 * or an implicit im2col of a feature map), so nothing larger than a packed
 * block is materialised per thread; weight operands that several tasks would
 * repack are packed once per call and shared (at most 16 MiB). All of it
 * lives in caller-owned scratch (kn_scratch): the shared packs, then one
 * slice per thread; the driver allocates nothing. */
#ifndef FM_KERNELS_GEMM_H
#define FM_KERNELS_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include "kernels/kernels.h"

/* C[mr][nr] (+)= Ap . Bp over kc (accumulating when acc, else overwriting);
 * only the first mv rows and nv columns of the tile are inside C. */
typedef void (*gemm_ukernel_f32)(int kc, const float *Ap, const float *Bp, float *C, ptrdiff_t ldc,
                               int mv, int nv, int acc);
/* The same with bf16 pairs: Ap [kc2][MR] and Bp [kc2][NR], each uint32 holding
 * (k even, k odd) as bf16, accumulated in float. */
typedef void (*gemm_ukernel_bf16)(int kc2, const uint32_t *Ap, const uint32_t *Bp, float *C,
                                ptrdiff_t ldc, int mv, int nv, int acc);
/* Two packed f32 rows (k even, k odd) of n floats -> n bf16 pairs. */
typedef void (*gemm_pair_bf16_fn)(uint32_t *dst, const float *k0, const float *k1, int n);
/* n consecutive floats (k0, k1, ...) -> (n + 1) / 2 bf16 pairs, the partner
 * of an odd last k zero; rounds exactly as pair_bf16. */
typedef void (*gemm_row_bf16_fn)(uint32_t *dst, const float *src, int n);

typedef struct gemm_arch {
    kn_isa isa;
    int mr, nr, mc, kc;
    gemm_ukernel_f32 f32;
    gemm_ukernel_bf16 bf16;    /* NULL: no native bf16 dot product */
    gemm_pair_bf16_fn pair_bf16;
    /* A panels in bf16 are rows [mr][kc2] (pairs contiguous along K) instead
     * of [kc2][mr]: AMX's A-tile layout (panels_to_bf16_rows in gemm.c). */
    int a_rows;
    gemm_row_bf16_fn row_bf16; /* for a_rows archs: packs A rows straight to pairs */
    /* Called by each thread before its first and after its last micro-kernel
     * call of a GEMM (AMX: load and release the tile configuration); or NULL. */
    void (*begin)(void), (*end)(void);
    /* One online-softmax step over a block of scores st [kb][NR] (one column
     * per query): with s = scale * st, m = max(m, max_j s), st = exp(s - m),
     * l = l * corr + sum_j st, where corr = exp(m_old - m_new) is returned. */
    void (*softmax_cols)(float *st, int kb, float scale, float *m, float *l, float *corr);
    /* A panel from rows: d[k][panel] = src[r][k] for r < nv, 0 for nv <= r
     * < panel, k < kc (the transpose gemm_pack does for row-major and weight
     * operands; vectorised where the ISA allows), or NULL: a scalar loop. */
    void (*pack_rows)(float *d, const float *const *src, int nv, int kc, int panel);

    /* Element-wise, vectorised where the ISA allows (y may equal x):
     * x * sigmoid(beta * x) (SiLU: beta 1, quick GELU: 1.702) */
    void (*sigmoid_gate)(float *y, const float *x, size_t n, float beta);
    /* gelu(x) (exact erf form, |error| < 2e-7 |x|), times mul[i] if mul */
    void (*gelu)(float *y, const float *x, const float *mul, size_t n);
    /* (x - mean) * s + t, then SiLU if silu */
    void (*affine)(float *y, const float *x, size_t n, float mean, float s, float t, int silu);
} gemm_arch;

/* The micro-kernels of the ISA kn_isa_chosen() chose (never NULL). */
const gemm_arch *gemm_arch_get(void);

/* Micro-kernel sets, one per ISA file. */
extern const gemm_arch gemm_arch_generic;
#if defined(__x86_64__)
extern const gemm_arch gemm_arch_avx2;
extern const gemm_arch gemm_arch_avx512;
extern const gemm_arch gemm_arch_avx512_bf16;
/* An AMX tile configuration (palette 1) as LDTILECFG reads it. Keep one as
 * a constant in memory: GCC's _tile_loadconfig tells the compiler it reads
 * only a pointer's worth of bytes, so one built on the stack may lose its
 * stores. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} kn_amx_tile_config;

/* AMX-BF16, for bf16 problems of the driver only (kn_has_amx). */
extern const gemm_arch gemm_arch_amx;
/* The AVX-512 set's f32 pairs -> bf16 pairs conversion (also AMX's). */
void gemm_pair_bf16_avx512(uint32_t *dst, const float *k0, const float *k1, int n);
void gemm_row_bf16_avx512(uint32_t *dst, const float *src, int n);
#endif

/* ---- operands ---- */

typedef enum {
    OP_ROWS,    /* X[i][k] = p[i*ld + k], float */
    OP_COLS,    /* X[i][k] = p[k*ld + i], float */
    OP_MAT,     /* X[i][k] = mat(i, k), any kn_mat dtype */
    OP_IM2COL,  /* X[k][j] of a convolution's im2col (B side only) */
} gemm_op_kind;

typedef struct gemm_operand {
    gemm_op_kind kind;
    const float *p;
    ptrdiff_t ld;
    ptrdiff_t batch_stride; /* floats between batch items */
    const kn_mat *mat;
    const kn_conv *conv;    /* OP_IM2COL: geometry */
    int h, w, oh, ow;
    int fold;               /* B side: columns are batch items of `fold` columns each, concatenated (0: no) */
} gemm_operand;

typedef struct gemm_problem {
    int M, N, K, batch;
    gemm_operand a;  /* M x K */
    gemm_operand b;  /* K x N (the packer sees it as N x K "rows" for OP_ROWS/OP_MAT) */
    float *c;
    ptrdiff_t ldc, c_batch_stride;
    int c_fold;          /* C columns are batch items of c_fold columns each (0: no); must match b.fold */
    float beta;
    const float *bias_m; /* added to row i of C, or NULL */
    const float *bias_n; /* added to column j of C, or NULL */
    int bf16;            /* round A and B to bf16, dot in bf16, accumulate in float */
} gemm_problem;

/* Packs rows i0..i0+ni of op (as an ni x kc slice from k0) into panels of
 * width `panel`, zero-padding past `rows`. Used by attention too. */
void gemm_pack(const gemm_operand *op, int batch, int rows, float *dst, int i0, int ni, int k0,
               int kc, int panel);

/* Packed f32 panels [kc][panel] -> bf16 pair panels [(kc+1)/2][panel];
 * zeros: `panel` zero floats (the partner of an odd last k). */
void gemm_panels_to_bf16(const gemm_arch *arch, uint32_t *dst, const float *src, int n_panels,
                         int kc, int panel, const float *zeros);

/* Rows i0..i0+ni of op (an ni x kc slice from k0) straight into bf16 pair
 * panels of width `panel`, zero-padding past `rows`: [panel][(kc+1)/2] per
 * panel when as_rows (AMX's A tiles), else [(kc+1)/2][panel]. Rows of a
 * row-major or weight operand convert whole into the row layout; otherwise
 * GEMM_BF16_CHUNK taps at a time are gathered in f32 into `stage` (in L1)
 * and converted, never a whole f32 panel. stage: gemm_bf16_stage_floats;
 * zeros: `panel` zero floats. Bit for bit gemm_pack_bf16_ref. */
#define GEMM_BF16_CHUNK 16
size_t gemm_bf16_stage_floats(int kc, int panel);
void gemm_pack_bf16(const gemm_arch *arch, const gemm_operand *op, int batch, int rows, uint32_t *dst, int i0,
                    int ni, int k0, int kc, int panel, int as_rows, float *stage, const float *zeros);
/* The reference: gemm_pack to f32 panels (src: ni x kc floats), then convert. */
void gemm_pack_bf16_ref(const gemm_arch *arch, const gemm_operand *op, int batch, int rows, uint32_t *dst,
                        int i0, int ni, int k0, int kc, int panel, int as_rows, float *src, const float *zeros);

/* 3x3 stride-1 pad-1 convolutions on AMX tiles without im2col (conv_amx.c):
 * bf16 mode, AMX usable, cin and cout multiples of 32, not quantised
 * weights. _ws returns -1 when it does not apply or the scratch is short. */
int kn_conv_amx_applies(const kn_conv *c, int n, int h, int w);
size_t kn_conv_amx_scratch(const kn_conv *c, int n, int h, int w, int threads);
int kn_conv_amx_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int n, int h, int w);

/* precision flags kept in kn_mat.packed_kind */
#define FM_PACKED_BF16 1

#endif
