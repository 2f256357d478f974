/* The ldm names of the tensors of a GGUF file.
 *
 * stable-diffusion.cpp's converter (`sd -M convert`, src/name_conversion.cpp
 * convert_tensor_name) writes the names its loader converted them to:
 *   - the U-Net and the VAE keep ldm's names (model.diffusion_model.*,
 *     first_stage_model.*);
 *   - SD 1.x's CLIP-L keeps cond_stage_model.transformer.text_model.*;
 *   - SDXL's towers lose the conditioner: embedders.0 (CLIP-L) becomes
 *     cond_stage_model.transformer.*, embedders.1 (OpenCLIP bigG)
 *     cond_stage_model.1.transformer.text_model.*;
 *   - OpenCLIP towers (SD 2.x's cond_stage_model.model.*, SDXL's bigG) are
 *     renamed to Hugging Face CLIP words (convert_open_clip_to_hf_clip_name):
 *     transformer.resblocks.N.attn.in_proj_weight becomes
 *     text_model.encoder.layers.N.self_attn.in_proj.weight (still fused),
 *     ln_final final_layer_norm, positional_embedding
 *     embeddings.position_embedding.weight, text_projection
 *     text_model.text_projection (data unchanged).
 * Files holding only a U-Net (sd.cpp's --diffusion-model files, ComfyUI-GGUF)
 * name it diffusion_model.* or without a prefix (input_blocks.*, ...).
 * This undoes all of it, so detection and the binder see ldm names. */
#include "weights/gguf.h"

#include <stdio.h>
#include <string.h>

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* open_clip's resblock words for sd.cpp's Hugging Face ones. */
static const char *const resblock_words[][2] = {
    {"self_attn.in_proj.weight", "attn.in_proj_weight"},
    {"self_attn.in_proj.bias", "attn.in_proj_bias"},
    {"self_attn.out_proj.", "attn.out_proj."},
    {"layer_norm1.", "ln_1."},
    {"layer_norm2.", "ln_2."},
    {"mlp.fc1.", "mlp.c_fc."},
    {"mlp.fc2.", "mlp.c_proj."},
};

static const char *const tower_words[][2] = {
    {"final_layer_norm.", "ln_final."},
    {"embeddings.token_embedding.weight", "token_embedding.weight"},
    {"embeddings.position_embedding.weight", "positional_embedding"},
    {"text_projection", "text_projection"},
};

/* rest (after "...text_model.") in open_clip's words, after prefix. */
static int openclip_name(char *out, size_t size, const char *prefix, const char *rest)
{
    int n;
    unsigned layer;
    int used = 0;
    if (sscanf(rest, "encoder.layers.%u.%n", &layer, &used) == 1 && used > 0) {
        const char *suffix = rest + used;
        for (size_t i = 0; i < sizeof resblock_words / sizeof resblock_words[0]; i++)
            if (starts(suffix, resblock_words[i][0])) {
                n = snprintf(out, size, "%stransformer.resblocks.%u.%s%s", prefix, layer, resblock_words[i][1],
                             suffix + strlen(resblock_words[i][0]));
                return n < 0 || (size_t)n >= size ? -1 : 0;
            }
        n = snprintf(out, size, "%stransformer.resblocks.%u.%s", prefix, layer, suffix);
        return n < 0 || (size_t)n >= size ? -1 : 0;
    }
    for (size_t i = 0; i < sizeof tower_words / sizeof tower_words[0]; i++)
        if (starts(rest, tower_words[i][0])) {
            n = snprintf(out, size, "%s%s%s", prefix, tower_words[i][1], rest + strlen(tower_words[i][0]));
            return n < 0 || (size_t)n >= size ? -1 : 0;
        }
    n = snprintf(out, size, "%s%s", prefix, rest);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int put2(char *out, size_t size, const char *a, const char *b)
{
    int n = snprintf(out, size, "%s%s", a, b);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* The roots of ldm's UNetModel (a U-Net without its prefix). */
static const char *const unet_roots[] = {"input_blocks.", "middle_block.", "output_blocks.", "time_embed.",
                                         "label_emb.", "out."};

int wt_gguf_ldm_name(char *out, size_t size, const char *name, int openclip, int sdxl)
{
    static const char TE[] = "cond_stage_model.transformer.", TE1[] = "cond_stage_model.1.transformer.";
    if (starts(name, "diffusion_model.")) return put2(out, size, "model.", name);
    for (size_t i = 0; i < sizeof unet_roots / sizeof unet_roots[0]; i++)
        if (starts(name, unet_roots[i])) return put2(out, size, "model.diffusion_model.", name);
    if (starts(name, "vae.")) return put2(out, size, "first_stage_model.", name + 4);
    if (starts(name, TE1)) {
        const char *rest = name + strlen(TE1);
        if (starts(rest, "text_model.")) return openclip_name(out, size, "conditioner.embedders.1.model.", rest + 11);
        return put2(out, size, "conditioner.embedders.1.", name + strlen("cond_stage_model.1."));
    }
    if (starts(name, "cond_stage_model.1.")) return put2(out, size, "conditioner.embedders.1.", name + 19);
    if (starts(name, TE)) {
        const char *rest = name + strlen(TE);
        if (openclip && starts(rest, "text_model.")) return openclip_name(out, size, "cond_stage_model.model.", rest + 11);
        if (sdxl) return put2(out, size, "conditioner.embedders.0.transformer.", rest);
    }
    return put2(out, size, "", name);
}
