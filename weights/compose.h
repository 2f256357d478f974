/* compose: several weight files presented as one source.
 *
 * stable-diffusion.cpp runs a GGUF holding only a U-Net with the VAE and the
 * text encoders from other files (--vae, --clip_l, --clip_g); a diffusers
 * folder is one file per part. wt_compose unites sources: their tensors in
 * one name-ordered list, a name present in several taken from the LAST
 * (so --vae replaces a VAE baked into the checkpoint); metadata from the
 * first source that has the key. wt_part_view renames a part file's
 * tensors to the ldm names its role has in a checkpoint and drops the rest.
 * Both own the sources they are given (closed with them, also on failure). */
#ifndef WT_COMPOSE_H
#define WT_COMPOSE_H

#include "weights/source.h"

wt_source *wt_compose(wt_source *const *parts, int n, fm_error *err);

typedef enum {
    WT_PART_VAE,    /* first_stage_model.*: ldm names, bare (encoder.*, decoder.*,
                       quant_conv.*, post_quant_conv.*) or under vae. */
    WT_PART_CLIP_L, /* CLIP ViT-L/14 text model: HF CLIPTextModel names (text_model.*),
                       bare or under any of the checkpoints' prefixes */
    WT_PART_CLIP_G, /* OpenCLIP ViT-bigG/14 text tower: open_clip names (model.*,
                       conditioner.embedders.1.model.*), sd.cpp's, or Hugging Face
                       CLIPTextModelWithProjection's (q/k/v fused into in_proj,
                       text_projection transposed: copies) */
} wt_part;

/* src's tensors of that role under the ldm names of a checkpoint of the
 * family (sdxl: SDXL's conditioner.embedders.N, else SD 1.x's
 * cond_stage_model). A file with none of them is an error naming the role. */
wt_source *wt_part_view(wt_source *src, wt_part role, int sdxl, fm_error *err);

/* src's tensors renamed by fn, which gets each tensor and a copy of it to
 * change (its shape, keeping the element count: a reshape) and writes the
 * new name: 1 keeps it, 0 drops it, -1 name too long, -2 a name this part
 * cannot have (an error naming the tensor). Names given twice are an
 * error. kv[n_kv] (copied) are metadata entries of its own, looked up
 * before src's. Owns src (closed with it, also on failure). */
typedef int (*wt_rename_fn)(void *ctx, const wt_tensor *t, char *name, size_t size, wt_tensor *out);
wt_source *wt_renamed(wt_source *src, wt_rename_fn fn, void *ctx, const char *const (*kv)[2], int n_kv, fm_error *err);

#endif
