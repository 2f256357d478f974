/* textenc: the text transformers and the conditioning they give the U-Net.
 *
 * Two towers share one transformer (pre-LN, causal, no padding mask):
 *   - CLIP with Hugging Face CLIPTextModel names (SD 1.x, SDXL encoder 0),
 *     quick_gelu, separate q/k/v projections, final_layer_norm;
 *   - OpenCLIP with open_clip names (SD 2.x, SD-Turbo, SDXL encoder 1),
 *     exact GELU, fused in_proj [q;k;v], ln_final, text_projection [in,out].
 * Big matrices stay in the mapped checkpoint (its own dtype); the token
 * embedding is read row by row. Input is textenc/tokens.h's chunks.
 *
 * The conditioning follows A1111: each 77-token chunk is encoded on its own,
 * emphasis weights scale the embeddings and the chunk's mean is restored, the
 * chunks are concatenated along the sequence; SDXL concatenates both towers
 * along features and builds the ADM vector y from bigG's pooled output of the
 * first chunk and the size embeddings. */
#ifndef FM_TEXTENC_H
#define FM_TEXTENC_H

#include <stdint.h>
#include "core/core.h"
#include "weights/config.h"
#include "weights/binder.h"
#include "textenc/tokens.h"

/* ---- one tower ---- */

typedef struct te_tower te_tower;

/* Binds every tensor of the tower named by cfg (prefix, kind, sizes) and
 * keeps views into src, which must outlive the tower. Errors name the tensor. */
te_tower *te_tower_load(const wt_source *src, const wt_text_config *cfg, fm_error *err);
/* Every tensor the tower binds, in order, to fn (list mode of the binder). */
int te_tower_list_tensors(const wt_text_config *cfg, wt_list_fn fn, void *user, fm_error *err);
void te_tower_free(te_tower *t);
const wt_text_config *te_tower_config(const te_tower *t);

/* Runs n sequences of 77 ids (ids[n][77], each in [0, vocab_size)).
 *   hidden [n][77][width] (may be NULL): the residual stream after the first
 *     `layer` layers (0 = the embeddings, as HF hidden_states[layer]), with
 *     the final LayerNorm applied when final_ln;
 *   pooled [n][projection_dim] (may be NULL; needs a text_projection):
 *     final LN of the last layer's output at the EOS position (first argmax
 *     of the ids, as open_clip) @ text_projection.
 * Only the layers needed are run. Returns 0 or an error code. */
int te_tower_forward(const te_tower *t, const int32_t (*ids)[FM_CLIP_LEN], int n, int layer,
                          int final_ln, float *hidden, float *pooled, fm_error *err);

/* The same with textual-inversion embeddings placed by the prompt
 * (textenc/tokens.h te_token_fix; chunk = sequence index): tower picks each
 * fix's vec[tower] (SDXL: 0 CLIP-L, 1 bigG). */
int te_tower_forward_fixed(const te_tower *t, const int32_t (*ids)[FM_CLIP_LEN], int n,
                           const te_token_fix *fixes, int n_fixes, int tower, int layer, int final_ln,
                           float *hidden, float *pooled, fm_error *err);

/* The hidden state that conditions the U-Net for this config:
 *   penultimate = 0 (SD 1.x): A1111 clip skip N >= 1, the output of layer
 *     L-N (0-based; N = 1 is the last layer) through the final LayerNorm;
 *   penultimate = 1 (SD 2.x with ln_final, SDXL raw): layer L-2, clip skip
 *     not applied (A1111 ignores it for OpenCLIP and, by default, SDXL).
 * Sets *layer (HF hidden_states index) and *final_ln. */
int te_output_layer(const wt_text_config *cfg, int clip_skip, int *layer, int *final_ln, fm_error *err);

/* ---- the model's text side: one tower, or SDXL's two ---- */

typedef struct te_encoder {
    int n_towers;               /* 1, or 2 for SDXL (CLIP-L then bigG) */
    te_tower *towers[2];
    int context_dim;            /* sum of the towers' widths */
    int pooled_dim;             /* SDXL: bigG's projection_dim; 0 when the U-Net takes no pooled vector */
} te_encoder;

/* Loads cfg->text[0 .. cfg->n_text-1] from st. An SDXL model (family, or
 * unet.adm_in_channels > 0) takes the pooled vector from its last tower. */
int te_encoder_load(te_encoder *enc, const wt_source *src, const wt_model_config *cfg,
                         fm_error *err);
void te_encoder_free(te_encoder *enc);

/* SDXL size conditioning (sgm ConcatTimestepEmbedderND, A1111's order). */
typedef struct te_size_cond {
    int orig_h, orig_w, crop_top, crop_left, target_h, target_w;
} te_size_cond;

#define FM_SIZE_EMB_DIM 256           /* per number */
#define FM_SIZE_EMB_TOTAL (6 * 256)

/* out[1536]: for v in (orig_h, orig_w, crop_top, crop_left, target_h,
 * target_w), [cos(v f_i), sin(v f_i)], f_i = 10000^(-i/128), i < 128. */
void te_size_embedding(float *out, const te_size_cond *s);

/* The conditioning of one prompt. */
typedef struct te_cond {
    int n_tokens;     /* n_chunks * 77 */
    int context_dim;
    float *context;   /* [n_tokens][context_dim] cross-attention context */
    int adm_dim;      /* 0, or SDXL's pooled_dim + 1536 */
    float *y;         /* [adm_dim] ADM vector, NULL when adm_dim = 0 */
} te_cond;

/* Encodes tok (ids are re-padded per tower: after the first EOS every id
 * becomes the tower's pad_token, as A1111 does for OpenCLIP), applies the
 * A1111 emphasis per chunk and tower, concatenates. sizes is needed for
 * SDXL only (may be NULL otherwise). */
int te_encode(const te_encoder *enc, const te_token_chunks *tok, int clip_skip,
                   const te_size_cond *sizes, te_cond *out, fm_error *err);

/* A1111's SDXL empty negative prompt: context and pooled zero (n_chunks
 * chunks), the size embeddings kept. */
int te_encode_zero(const te_encoder *enc, int n_chunks, const te_size_cond *sizes,
                        te_cond *out, fm_error *err);
void te_cond_free(te_cond *c);

#endif
