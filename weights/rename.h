/* rename: tensor names of other programs' files as the ldm names the parts
 * bind. diffusers' AutoencoderKL (a standalone VAE such as
 * vae-ft-mse-840000 or sdxl-vae-fp16-fix in its diffusers form) follows
 * diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
 * (vae_conversion_map, vae_conversion_map_attn, reshape_weight_for_sd). */
#ifndef WT_RENAME_H
#define WT_RENAME_H

#include <stddef.h>

/* Does name look like a diffusers AutoencoderKL tensor (down_blocks,
 * up_blocks, mid_block, conv_norm_out)? */
int wt_vae_is_diffusers(const char *name);

/* The ldm name (encoder.*, decoder.*, quant_conv.*, post_quant_conv.*, no
 * first_stage_model. prefix) of the diffusers VAE tensor name, for a VAE of
 * n_levels resolution levels (diffusers numbers the decoder's up_blocks in
 * the reverse of ldm's up: up_blocks.i is up.(n_levels-1-i); the script
 * writes 3-i for SD's four). *to_conv is set when the tensor is a mid
 * attention q/k/v/proj weight that diffusers keeps as a Linear [C, C] and
 * ldm as a 1x1 conv [C, C, 1, 1] (same bytes). Returns 1, 0 when the name
 * is not a VAE tensor, -1 when out is too small. */
int wt_vae_diffusers_name(char *out, size_t size, const char *name, int n_levels, int *to_conv);

#endif
