/* unet_model: the U-Net's parameters as ldm structures them (private to unet/).
 * unet_load.c fills them from a checkpoint, unet.c runs them. */
#ifndef FM_UNET_MODEL_H
#define FM_UNET_MODEL_H

#include "kernels/kernels.h"
#include "unet/unet.h"
#include "weights/binder.h"

/* GroupNorm32 (ResBlocks, out: eps 1e-5) and the SpatialTransformer's norm (1e-6). */
#define UN_GROUPS 32
#define UN_RES_EPS 1e-5f
#define UN_ST_EPS 1e-6f
#define UN_LN_EPS 1e-5f

typedef struct un_norm {
    const float *gamma, *beta; /* float32 copies */
} un_norm;

typedef struct un_linear {
    kn_mat w;
    const float *bias; /* NULL when the layer has none */
} un_linear;

/* ResBlock (use_scale_shift_norm False, no up/down). */
typedef struct un_resblock {
    int cin, cout;
    un_norm in_norm;    /* in_layers.0 */
    kn_conv in_conv;    /* in_layers.2, 3x3 */
    un_linear emb_proj; /* emb_layers.1, applied to SiLU(emb) */
    un_norm out_norm;   /* out_layers.0 */
    kn_conv out_conv;   /* out_layers.3, 3x3 */
    int has_skip;
    kn_conv skip;       /* skip_connection, 1x1, when cin != cout */
} un_resblock;

/* CrossAttention: to_q/to_k/to_v without bias, to_out.0 with. */
typedef struct un_attention {
    kn_mat to_q, to_k, to_v;
    un_linear to_out;
} un_attention;

typedef struct un_transformer_block {
    un_norm norm1, norm2, norm3;
    un_attention attn1, attn2;  /* self, cross */
    un_linear ff_proj, ff_out;  /* ff.net.0.proj (GEGLU, C -> 8C), ff.net.2 (4C -> C) */
} un_transformer_block;

/* SpatialTransformer; proj_in/proj_out are 1x1 convs (SD 1.x) or linears,
 * the same matrix either way since the tokens are channels-last. */
typedef struct un_spatial_transformer {
    int c, heads, dim_head, depth;
    un_norm norm;
    un_linear proj_in, proj_out;
    un_transformer_block *blocks;
} un_spatial_transformer;

/* One TimestepEmbedSequential of input_blocks / middle_block / output_blocks. */
typedef struct un_block {
    int has_conv, has_res, has_attn, has_res2, has_upsample;
    kn_conv conv;               /* input_blocks.0 conv_in, or Downsample op */
    un_resblock res;
    un_spatial_transformer attn;
    un_resblock res2;           /* middle block's second ResBlock */
    kn_conv upsample;           /* Upsample conv (after nearest resize) */
    int cout;
} un_block;

struct un_model {
    wt_unet_config cfg;
    int time_dim;               /* time_embed_dim = 4 * model_channels */
    un_linear time_embed0, time_embed2;
    int has_label;
    un_linear label_emb0, label_emb2;
    int n_in, n_out;
    un_block *in, *out;
    un_block mid;
    un_norm out_norm;           /* out.0 */
    kn_conv out_conv;           /* out.2 */

    wt_weights *weights;        /* the binding records and any converted copies */
    fm_precision prec;          /* of every matrix and attention (un_set_precision) */

    /* activation workspace; grows when a call needs more */
    void *ws;
    size_t ws_bytes;

    un_probe_fn probe;
    void *probe_user;
};


/* Activation workspace of one forward, in floats per region. */
typedef struct un_plan {
    size_t small;   /* timestep embeddings, per-ResBlock emb projection */
    size_t ctx;     /* cross-attention keys (and as much again for values) */
    size_t skips;   /* every input block's output, kept for the skips */
    size_t act;     /* each of the two ping-pong activations */
    size_t scratch; /* per-block temporaries (concat, norms, attention, FF) */
} un_plan;

void un_plan_workspace(const wt_unet_config *cfg, int batch, int h, int w, int n_ctx, un_plan *p);
size_t un_plan_bytes(const un_plan *p);
/* Bytes of kernel scratch one forward of u needs with `threads` threads:
 * the largest of every kn_linear / kn_conv2d / kn_attention call it makes
 * (the same walk as the forward, on the loaded blocks and their dtypes). */
size_t un_plan_kernel_bytes(const un_model *u, int batch, int h, int w, int n_ctx, int threads);

/* FeedForward rows per chunk for n tokens: the GEGLU hidden [rows][12C]
 * then fits where the attention's q, k, v, o [n][4C] were. */
static inline size_t un_ff_rows(size_t n) { return (n + 2) / 3; }

#endif
