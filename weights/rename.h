/* rename: tensor names of other programs' files as the ldm names the parts
 * bind. diffusers' AutoencoderKL (a standalone VAE such as
 * vae-ft-mse-840000 or sdxl-vae-fp16-fix in its diffusers form, and the vae/
 * part of a diffusers folder) follows diffusers'
 * scripts/convert_diffusers_to_original_stable_diffusion.py
 * (vae_conversion_map, vae_conversion_map_attn, reshape_weight_for_sd).
 * The one mapping of these names: --vae FILE (compose.c's wt_part_view)
 * and the folder reader (diffusers.c) both call it. */
#ifndef WT_RENAME_H
#define WT_RENAME_H

#include "weights/source.h"

#include <stddef.h>

/* Does name look like a diffusers AutoencoderKL tensor (down_blocks,
 * up_blocks, mid_block, conv_norm_out)? */
int wt_vae_is_diffusers(const char *name);

/* The checkpoint name (first_stage_model.encoder.*, .decoder.*,
 * .quant_conv.*, .post_quant_conv.*) of the diffusers VAE tensor t (bare
 * or under vae.) into name, and into *o t's view with ldm's shape: the mid
 * attention's q/k/v/proj_out weights, Linear [C, C] in diffusers, are 1x1
 * convs [C, C, 1, 1] in ldm (same bytes). For a VAE of n_levels resolution
 * levels: diffusers numbers the decoder's up_blocks in the reverse of ldm's
 * up (up_blocks.i is up.(n_levels-1-i); the script writes 3-i for SD's
 * four). Returns 1, 0 when t is not a tensor of such a VAE, -1 when name is
 * too small. */
int wt_vae_diffusers_tensor(const wt_tensor *t, int n_levels, char *name, size_t size, wt_tensor *o);

#endif
