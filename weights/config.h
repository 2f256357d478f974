/* config: everything that shapes a model, as plain structs. Filled by model
 * detection (from tensor names/shapes, the file's `fmimage.config` metadata,
 * and the family's known values); read by the text encoders, the U-Net and
 * the VAE. Field names follow the ldm/sgm constructor arguments. */
#ifndef FM_CONFIG_H
#define FM_CONFIG_H

#include "fmimage.h"

#define FM_MAX_LEVELS 8

typedef struct wt_unet_config {
    char prefix[64];              /* "model.diffusion_model." */
    int in_channels, out_channels, model_channels;
    int n_levels;                 /* len(channel_mult) */
    int channel_mult[FM_MAX_LEVELS];
    int num_res_blocks;           /* per level */
    /* Transformer blocks per level (0 = no SpatialTransformer at that level),
     * i.e. transformer_depth[l] where ds = 2^l is in attention_resolutions. */
    int transformer_depth[FM_MAX_LEVELS];
    int transformer_depth_middle; /* 0 = middle block without attention (never in SD) */
    int num_heads;                /* -1 when num_head_channels is used */
    int num_head_channels;        /* -1 when num_heads is used */
    int context_dim;
    int use_linear_in_transformer;/* linear proj_in/out (SD 2.x, SDXL) vs 1x1 conv (SD 1.x) */
    int adm_in_channels;          /* label_emb input (SDXL 2816), 0 = none */
} wt_unet_config;

typedef struct wt_vae_config {
    char prefix[64];              /* "first_stage_model." */
    int ch, n_levels, ch_mult[FM_MAX_LEVELS], num_res_blocks;
    int z_channels, embed_dim, in_channels, out_ch, double_z;
    float scale_factor;           /* 0.18215 (SD 1/2), 0.13025 (SDXL) */
    int latent_factor;            /* 2^(n_levels-1) */
    int has_encoder;              /* encoder.* and quant_conv present (needed for img2img only) */
} wt_vae_config;

typedef enum { FM_TEXT_CLIP = 0, FM_TEXT_OPENCLIP } wt_text_kind;

typedef struct wt_text_config {
    /* "cond_stage_model.transformer.text_model." (SD 1, HF names),
     * "cond_stage_model.model." (SD 2, open_clip names),
     * "conditioner.embedders.0.model." (SD-Turbo),
     * "conditioner.embedders.{0.transformer.text_model.,1.model.}" (SDXL) */
    char prefix[96];
    wt_text_kind kind;
    int width, layers, heads, vocab_size, max_length, intermediate_size;
    int act_quick_gelu;           /* 1 quick_gelu (CLIP), 0 exact GELU (OpenCLIP) */
    int pad_token;                /* 49407 (CLIP), 0 (OpenCLIP) */
    int projection_dim;           /* text_projection width, 0 if none */
    /* Which hidden state conditions the U-Net: 0 = last layer + final LN
     * (SD 1.x), 1 = penultimate layer (SD 2.x: then ln_final; SDXL: raw). */
    int penultimate;
    int final_ln_on_output;       /* apply the final LN to the chosen layer */
    float layer_norm_eps;
} wt_text_config;

typedef struct wt_model_config {
    fm_family family;
    fm_prediction prediction;     /* AUTO = not known from the file */
    wt_unet_config unet;
    wt_vae_config vae;
    int n_text;                   /* 1, or 2 for SDXL */
    wt_text_config text[2];
    double linear_start, linear_end;
    int timesteps;
    fm_model_defaults defaults;   /* by family, or the demo model's "defaults" */
    char vocabulary[1024];        /* demo model: words it understands, "" otherwise */
} wt_model_config;

#endif
