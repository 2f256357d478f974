/* What autoencoder_kl.c shares with tiling.c: the model's structure, the
 * forward pass's run state (workspace slots, planning mode, GroupNorm
 * statistics shared between tiles). Not a public header. */
#ifndef FM_VAE_KL_INTERNAL_H
#define FM_VAE_KL_INTERNAL_H

#include "kernels/kernels.h"
#include "vae/vae.h"
#include "weights/binder.h"

#define VAE_GROUPS 32
#define VAE_EPS 1e-6f

typedef struct vae_norm {
    const float *gamma, *beta;
    int c;
} vae_norm;

/* ldm ResnetBlock without timestep embedding. */
typedef struct vae_resblock {
    int cin, cout, has_nin;
    vae_norm norm1, norm2;
    kn_conv conv1, conv2, nin_shortcut;
} vae_resblock;

/* ldm AttnBlock: single-head self-attention over the h*w positions. */
typedef struct vae_attn {
    int c;
    vae_norm norm;
    kn_mat q, k, v, proj_out;
    const float *bq, *bk, *bv, *bproj;
} vae_attn;

typedef struct vae_mid {
    vae_resblock block_1, block_2;
    vae_attn attn_1;
} vae_mid;

/* One resolution: its ResnetBlocks, then an optional Down/Upsample conv. */
typedef struct vae_level {
    int n_blocks;
    vae_resblock *block;
    int has_resample;
    kn_conv resample;
} vae_level;

typedef struct vae_encoder {
    kn_conv conv_in;
    vae_level down[FM_MAX_LEVELS];
    vae_mid mid;
    vae_norm norm_out;
    kn_conv conv_out, quant_conv;
} vae_encoder;

typedef struct vae_decoder {
    kn_conv post_quant_conv, conv_in;
    vae_mid mid;
    vae_level up[FM_MAX_LEVELS];
    vae_norm norm_out;
    kn_conv conv_out;
} vae_decoder;

struct vae_kl {
    wt_vae_config cfg;
    int has_encoder, has_weights;
    vae_encoder enc;
    vae_decoder dec;
    wt_weights *weights; /* the binding records and any converted copies */
    size_t conv_scratch; /* floats; VAE_DEFAULT_CONV_SCRATCH */
    fm_precision prec;   /* of the large matrices and the attention (vae_set_precision) */
    vae_trace_fn trace;
    void *trace_user;
};

/* Whole-image GroupNorm statistics for tiled decoding. Every GroupNorm call
 * of one decode has an index (its call order); `collect` adds each tile's
 * own cells (its core) to sum/sumsq, `shared` normalises with mean/rstd
 * instead of the tile's own statistics. */
typedef struct vae_norm_share {
    int collect, shared;
    int call, n_calls;
    double *sum, *sumsq, *count; /* [n_calls][VAE_GROUPS] */
    float *mean, *rstd;          /* [n_calls][VAE_GROUPS] */
    int tile_h, tile_w;          /* the tile's latent size */
    int core_y0, core_y1, core_x0, core_x1; /* the tile's own latent cells, tile-relative */
} vae_norm_share;

/* X, A, B: feature maps; BAND: row bands of a convolution's input and output. */
enum { VAE_SLOT_X = 0, VAE_SLOT_A, VAE_SLOT_B, VAE_SLOT_BAND, VAE_SLOTS };

/* A convolution whose im2col columns would exceed this many floats runs in
 * row bands (128 MB: the kernels' scratch stays bounded at any image size). */
#define VAE_DEFAULT_CONV_SCRATCH ((size_t)32 << 20)

/* A caller-owned block that a decode carves everything from (64-byte
 * aligned pieces). With base NULL it only counts: planning takes exactly
 * what the run takes, so the size is the code path itself. */
typedef struct vae_arena {
    char *base;
    size_t cap, used, peak;
} vae_arena;

/* bytes (rounded up to 64) from a; NULL when counting, or when a is full. */
void *vae_take(vae_arena *a, size_t bytes);

/* A forward pass. In planning mode nothing is computed: the pass only
 * records how many floats each workspace slot needs and the largest kernel
 * scratch of its calls; then the slots and the scratch are taken from an
 * arena, and the computing pass allocates nothing. */
typedef struct vae_run {
    const vae_kl *vae;
    int planning, overflow;
    int from_mid; /* decode input is the mid block's output, not z */
    float *buf[VAE_SLOTS];
    size_t cap[VAE_SLOTS], need[VAE_SLOTS];
    size_t kernel_bytes;   /* the largest scratch of one kernel call */
    kn_scratch ks;         /* that scratch, in the arena */
    vae_norm_share *norms; /* NULL: every GroupNorm uses its own statistics */
    int trace;
} vae_run;

/* Structure only (no weights) from cfg, for planning. */
int vae_build(vae_kl *vae, const wt_vae_config *cfg, fm_error *err);
/* Number of GroupNorm calls in one decode. */
int vae_decoder_norm_calls(const wt_vae_config *cfg);
/* Plans an h x w decode and takes its slots and scratch from a (a counting
 * arena: only counts). 0, or an error when a is too small. */
int vae_run_take_decode(vae_run *r, const vae_kl *vae, int h, int w, int from_mid, vae_arena *a, fm_error *err);
/* Decoder forward on r's workspace; 0 or an error. */
int vae_decode_with(vae_run *r, float *img, const float *z, int h, int w, fm_error *err);
/* The decoder's latent-resolution part (post_quant_conv, conv_in, mid
 * block) on its own: mid [C][h][w] from z, in memory taken from a and
 * given back after (with a counting arena: only counts). */
int vae_decode_trunk(const vae_kl *vae, float *mid, const float *z, int h, int w, vae_arena *a, fm_error *err);

/* "vae WHAT: bad size" / "no model" checks of the public entry points. */
int vae_check_size(const vae_kl *vae, int h, int w, const char *what, fm_error *err);
/* An untiled decode of h x w in arena a (counting arena: only counts). */
int vae_decode_untiled(vae_kl *vae, float *img, const float *z, int h, int w, vae_arena *a, fm_error *err);

#endif
