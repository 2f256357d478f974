/* lora: adapter files read against a checkpoint, and the checkpoint seen
 * with them merged.
 *
 * An adapter file (.safetensors) holds, per layer ("module") of the model
 * it was trained for, the factors of a weight update. The key names say
 * which layer and which kind:
 *   kohya-ss / A1111  lora_unet_*, lora_te_*, lora_te1_* / lora_te2_* (SDXL),
 *                     diffusers-style (down_blocks_0_attentions_0_...) or
 *                     ldm-style (input_blocks_1_1_...) module names;
 *   PEFT / diffusers  unet.*, text_encoder.*, text_encoder_2.* with
 *                     .lora_A.weight / .lora_B.weight, or diffusers' older
 *                     .lora.down/up.weight, .lora_linear_layer.down/up.weight;
 * and the part after the module name says the kind (A1111's module types):
 *   LoRA / LoCon  lora_up, lora_down (linear, conv 3x3 or 1x1), lora_mid (CP);
 *   LoHa          hada_w1_a/b, hada_w2_a/b, Tucker hada_t1/t2;
 *   LoKr          lokr_w1 or lokr_w1_a/b, lokr_w2 or lokr_w2_a/b, lokr_t2;
 *   full / diff   diff, diff_b (a bias update);
 *   IA3           weight, on_input;
 *   OFT           oft_blocks + alpha (kohya-ss), oft_diag (LyCORIS);
 *   GLoRA         a1.weight, a2.weight, b1.weight, b2.weight, alpha;
 *   norm          w_norm, b_norm (LayerNorm / GroupNorm scale and bias);
 *   any of them   alpha, scale, dora_scale (DoRA, as A1111 applies it).
 * Module names map to the checkpoint's ldm names by A1111's rules
 * (extensions-builtin/Lora/networks.py: convert_diffusers_name_to_compvis,
 * then the ldm-name fallbacks); OpenCLIP's fused attention takes q/k/v/out
 * updates as row blocks of in_proj_weight, and only all four together, as
 * A1111 does. docs/DESIGN.md "LoRA". */
#ifndef WT_LORA_H
#define WT_LORA_H

#include "kernels/kernels.h"
#include "weights/config.h"
#include "weights/source.h"

typedef struct wt_lora wt_lora;

/* Opens path (wt_open) and maps its modules onto model's tensors.
 * Errors ("PATH: why"): not an adapter, nothing maps, a module whose
 * factors do not fit the layer (shapes, rank 0, a non-finite alpha or
 * scale, a non-float tensor), a file for SDXL on another family. */
wt_lora *wt_lora_open(const char *path, const wt_source *model, const wt_model_config *cfg, fm_error *err);
void wt_lora_close(wt_lora *l);

/* Modules that change a weight of the model. */
int wt_lora_n_modules(const wt_lora *l);
/* Keys that map to no weight (A1111 logs them as "didn't match keys"),
 * including parts no kind reads (LyCORIS' rescale). */
int wt_lora_n_unmapped(const wt_lora *l);

/* One adapter applied with its text-encoder and U-Net multipliers. */
typedef struct wt_lora_use {
    const wt_lora *lora;
    float te_mult, unet_mult;
} wt_lora_use;

/* A source that is base with uses[0..n) merged in that order (as A1111
 * applies a prompt's networks one after another): every changed weight is
 * float32, W' = W + sum_i mult_i * scale_i * delta_i, computed in float32
 * from the file's values, held in memory this source owns; every other
 * tensor is base's own. base and the adapters must outlive it.
 * prev (may be NULL): an earlier merged source of the same base; its
 * merged tensors whose contributions are unchanged are taken over instead
 * of recomputed (prev must then be closed, not used). */
wt_source *wt_merged_open(const wt_source *base, const wt_lora_use *uses, int n, wt_source *prev, fm_error *err);
/* The same, the U-Net's merged weights stored as unet_dtype: FM_DT_F32, or
 * FM_DT_BF16 for a U-Net whose kernels run in bf16 (the float32 merge
 * rounded to nearest even, which is what their packing does to a float32
 * weight: the products are the same). Text-encoder weights stay float32.
 * Either way the pages of the base weights and adapter factors merged are
 * released (wt_release) once merged.
 * spill_dir (may be NULL): a directory on a disk where the merged tensors
 * are kept in an unlinked file (O_TMPFILE, its blocks reserved first)
 * instead of anonymous memory, so that they are file pages like the
 * checkpoint's: wt_release drops them and the next read faults them back,
 * and the kernel may reclaim them. When the directory cannot take that
 * file (missing, read-only, tmpfs/ramfs, full) the merge is in memory. */
wt_source *wt_merged_open_as(const wt_source *base, const wt_lora_use *uses, int n, wt_source *prev,
                             core_dtype unet_dtype, const char *spill_dir, fm_error *err);
/* The same for a model run in full precision (--precision fp32), where a
 * float32 copy of every changed weight would double those weights' memory:
 * a weight whose updates are all LoRA/LoCon pairs over all its rows (up,
 * down, no CP core, no DoRA) stays the base's mapped tensor, and the
 * kernels compute W x + scale up (down x) from the file's factors
 * (kn_lowrank, given to the binder by wt_merged_lowrank); the rest (LoHa,
 * LoKr, full/diff, CP, DoRA, OpenCLIP's fused q/k/v rows) is merged in
 * float32 as wt_merged_open_as does (spill_dir as there). U-Net and text
 * encoders alike (the text encoders compute in float32 in every mode).
 * Equal to the float32 merge up to float32 rounding of the products. */
wt_source *wt_merged_open_lowrank(const wt_source *base, const wt_lora_use *uses, int n, wt_source *prev,
                                  const char *spill_dir, fm_error *err);
/* t's run-time updates in s (a chain), or NULL. */
const kn_lowrank *wt_merged_lowrank(const wt_source *s, const wt_tensor *t);
/* Weights of s with run-time updates. */
int wt_merged_count_lowrank(const wt_source *s);
/* Tensors of s that are merged, and how many of them were taken from prev. */
int wt_merged_count(const wt_source *s, int *reused);
/* Merged tensors of s held in its spill file (the rest are in memory). */
int wt_merged_count_spilled(const wt_source *s);
/* Is t a merged tensor (not the base file's bytes)? */
int wt_merged_is(const wt_source *s, const wt_tensor *t);

#endif
