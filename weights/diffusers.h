/* diffusers: a Hugging Face diffusers pipeline folder as one source with
 * ldm's names.
 *
 * DIR/model_index.json names the parts; unet/, vae/, text_encoder/ (and
 * text_encoder_2/ for SDXL) each hold config.json and the weights:
 * diffusion_pytorch_model.safetensors / model.safetensors, their shards
 * listed by an *.safetensors.index.json, or PyTorch .bin files (read by the
 * safe pickle reader). Names are converted at load as diffusers' own
 * scripts/convert_diffusers_to_original_stable_diffusion.py and
 * convert_diffusers_to_original_sdxl.py convert them, for any number of
 * levels and resnets the configs give (the scripts hard-code SD's): the
 * U-Net's blocks to input_blocks / middle_block / output_blocks, the VAE's
 * to encoder.down / decoder.up (its mid attention's linears reshaped to
 * 1x1 convs; rename.h's mapping, the one --vae uses), CLIP-L kept under cond_stage_model.transformer (SDXL:
 * conditioner.embedders.0.transformer), OpenCLIP towers (SD 2.x's
 * text_encoder, SDXL's text_encoder_2) renamed to open_clip's with q/k/v
 * concatenated into in_proj and text_projection transposed.
 *
 * The folder's configs become an fmimage.config metadata entry (family,
 * prediction, heads, text towers, VAE scale, betas), so detection reads a
 * folder as it reads a checkpoint. Every file must be a regular file
 * inside DIR (no "..", no symlink leading out); a missing part, shard or
 * tensor, or a hostile index, is an error naming the file. */
#ifndef WT_DIFFUSERS_H
#define WT_DIFFUSERS_H

#include "weights/source.h"

/* Is path a directory with a model_index.json? */
int wt_is_diffusers_dir(const char *path);

wt_source *wt_diffusers_open(const char *dir, fm_error *err);

/* Where a folder's files come from: the disk (wt_diffusers_open) or memory
 * (tests/fuzz/fuzz_diffusers.c, which so runs the same reader on configs,
 * indexes and names without a file system). rel is a path inside the
 * folder ("unet/config.json"), path "DIR/rel", the name every message
 * gives the file. Each sets err ("PATH: why") when it fails. */
typedef struct wt_df_files {
    const char *dir; /* the folder as the user gave it */
    void *ctx;
    /* 1: rel is a regular file in the folder; 0: absent; -1: error */
    int (*exists)(void *ctx, const char *rel, const char *path, fm_error *err);
    /* its bytes (at most max, else an error) into *buf (malloc'd) and *n: 0, or -1 */
    int (*read)(void *ctx, const char *rel, const char *path, size_t max, char **buf, size_t *n, fm_error *err);
    /* the weight file rel as a source (wt_close frees it), or NULL */
    wt_source *(*open)(void *ctx, const char *rel, const char *path, fm_error *err);
} wt_df_files;

wt_source *wt_diffusers_open_files(const wt_df_files *fs, fm_error *err);

#endif
