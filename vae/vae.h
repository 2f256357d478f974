/* vae: the image <-> latent autoencoders.
 *
 *   - AutoencoderKL (ldm/sgm): the full VAE of every Stable Diffusion
 *     checkpoint, decoder and encoder (autoencoder_kl.c).
 *   - Tiled decoding of the KL-VAE, bounding memory for large images, and
 *     the decode's memory estimate (tiling.c).
 *   - TAESD / TAESDXL, the tiny distilled autoencoder (taesd.c).
 *
 * Tensors are batch-1 NCHW float32. KL-VAE images are in [-1, 1] (decoder
 * output not clamped); TAESD images are in [0, 1] (upstream convention,
 * decoder output not clamped either). */
#ifndef FM_VAE_H
#define FM_VAE_H

#include <stddef.h>
#include "core/core.h"
#include "weights/config.h"
#include "weights/binder.h"

/* Debug/test hook: called with every named intermediate of a forward pass
 * (KL-VAE: "dec.post_quant", "dec.conv_in", "dec.mid", "dec.up.N", "dec",
 * "enc.conv_in", "enc.down.N", "enc.mid", "enc.h", "enc.moments";
 * TAESD: "dec.after.N", "enc.after.N" with N the upstream Sequential index). */
typedef void (*vae_trace_fn)(void *user, const char *name, const float *x, int c, int h,
                                int w);

/* ---- AutoencoderKL ---- */

typedef struct vae_kl vae_kl;

/* Binds the VAE tensors cfg->prefix + "encoder.*", "decoder.*", "quant_conv.*",
 * "post_quant_conv.*" of src, each shape-checked against cfg
 * (weights/binder.h). Weights stay mapped from src (which must outlive the
 * VAE); small vectors are float32 (converted where the file is not).
 * The encoder half is optional: a file without it loads decoder-only and
 * vae_encode then fails. */
vae_kl *vae_load(const wt_source *src, const wt_vae_config *cfg, fm_precision prec,
                    fm_error *err);
/* Every tensor the VAE binds for cfg (the encoder when cfg->has_encoder),
 * in order, to fn. */
int vae_list_tensors(const wt_vae_config *cfg, wt_list_fn fn, void *user, fm_error *err);
void vae_free(vae_kl *vae);
/* The precision of the convolutions, matrix products and attention
 * (FM_PREC_BF16: bf16 dot products with float accumulation where the CPU has
 * AVX512_BF16; every other mode computes in float32). Packing only records
 * the mode, so switching costs nothing; not while a decode runs. */
void vae_set_precision(vae_kl *vae, fm_precision prec);
fm_precision vae_precision(const vae_kl *vae);
const wt_vae_config *vae_config_of(const vae_kl *vae);
/* 2^(n_levels-1): pixels per latent cell. */
int vae_latent_factor(const wt_vae_config *cfg);
int vae_has_encoder(const vae_kl *vae);
void vae_set_trace(vae_kl *vae, vae_trace_fn fn, void *user);
/* Convolutions whose im2col columns would exceed `bytes` run in row bands
 * (default 128 MB, which vae_decode_bytes assumes). Tests lower it. */
void vae_set_conv_scratch(vae_kl *vae, size_t bytes);

/* img [1][out_ch][h*f][w*f] = Decoder(post_quant_conv(z)), z [1][embed_dim][h][w]
 * already divided by scale_factor (ldm's decode(z)). Not clamped. */
int vae_decode(vae_kl *vae, float *img, const float *z, int h, int w, fm_error *err);
/* mean, logvar [1][embed_dim][H/f][W/f] of the posterior of img
 * [1][in_channels][H][W] in [-1, 1]; logvar clamped to [-30, 20]. Multiply a
 * latent by scale_factor before giving it to the U-Net. H, W multiples of f. */
int vae_encode(vae_kl *vae, float *mean, float *logvar, const float *img, int H, int W,
                  fm_error *err);

/* ---- tiled decoding (tiling.c) ---- */

typedef struct vae_tiles {
    int tile;    /* latent cells per tile side (64 = 512 px for SD) */
    int overlap; /* latent cells shared by neighbouring tiles, blended */
    /* GroupNorm statistics: 0 = each tile its own (one pass); n > 0 = n
     * extra passes that gather whole-image statistics, then every tile
     * normalises with the same ones (no tone jumps between tiles). */
    int norm_passes;
    /* The mid block (its attention is global) runs once on the whole latent
     * while h*w <= this, so it is exact; larger latents attend within each
     * tile. */
    int whole_mid_max;
} vae_tiles;

void vae_tiles_default(vae_tiles *t); /* 64, 16, 1, 128*128 */

/* Same contract as vae_decode; tiles of the latent are decoded one after
 * another and blended with feathered weights across the overlaps. */
int vae_decode_tiled(vae_kl *vae, float *img, const float *z, int h, int w,
                        const vae_tiles *tiling, fm_error *err);

/* The same decodes (tiling NULL: untiled) in a caller-owned arena of
 * vae_decode_arena_bytes bytes (64-byte aligned), so that a pipeline
 * allocates it before sampling and the decode allocates nothing. The size
 * is exact for this loaded model and precision (0 for a bad size). */
size_t vae_decode_arena_bytes(vae_kl *vae, int h, int w, const vae_tiles *tiling);
int vae_decode_in(vae_kl *vae, float *img, const float *z, int h, int w, const vae_tiles *tiling,
                     void *arena, size_t bytes, fm_error *err);

/* Peak working memory in bytes (activations and scratch, excluding the
 * weights and the caller's z and img) of decoding an h x w latent, untiled
 * (tiling NULL) or tiled. */
size_t vae_decode_bytes(const wt_vae_config *cfg, int h, int w, const vae_tiles *tiling);
/* 0 if that decode fits in budget bytes, else FM_EINPUT with a message that
 * says how much is needed and names --vae-tiling. */
int vae_check_decode_memory(const wt_vae_config *cfg, int h, int w,
                               const vae_tiles *tiling, size_t budget, fm_error *err);
/* MemAvailable of this machine in bytes (0 if unknown). */
size_t vae_memory_available(void);

/* ---- TAESD / TAESDXL (taesd.c) ---- */

typedef struct vae_taesd vae_taesd;

/* Opens path and loads it; the mapping is owned by the result. Accepts
 * upstream names (combined "encoder.N."/"decoder.N.", or a split
 * taesd_encoder/taesd_decoder file without prefix) and diffusers
 * AutoencoderTiny names ("encoder.layers.N.", "decoder.layers.N-1.").
 * A file may hold only one half. */
vae_taesd *vae_taesd_open(const char *path, fm_error *err);
void vae_taesd_free(vae_taesd *t);
int vae_taesd_has_encoder(const vae_taesd *t);
int vae_taesd_has_decoder(const vae_taesd *t);
int vae_taesd_latent_channels(const vae_taesd *t);
void vae_taesd_set_trace(vae_taesd *t, vae_trace_fn fn, void *user);

/* img [1][3][8h][8w] in [0, 1] (not clamped) from the U-Net-space latent
 * z [1][latent_ch][h][w]: no scale_factor division (TAESD's scale factor is
 * 1). img holds img_len floats and z z_len: sizes that do not fit them are
 * refused (FM_EINPUT) before anything is read or written. */
int vae_taesd_decode(vae_taesd *t, float *img, size_t img_len, const float *z, size_t z_len, int h, int w,
                    fm_error *err);
/* The same decode in a caller-owned arena of vae_taesd_decode_bytes bytes
 * (64-byte aligned): a pipeline allocates it before sampling. */
size_t vae_taesd_decode_bytes(const vae_taesd *t, int h, int w);
int vae_taesd_decode_in(vae_taesd *t, float *img, size_t img_len, const float *z, size_t z_len, int h, int w,
                       void *arena, size_t bytes, fm_error *err);
/* z [1][4][H/8][W/8] in U-Net space from img [1][3][H][W] in [0, 1]. */
int vae_taesd_encode(vae_taesd *t, float *z, const float *img, int H, int W, fm_error *err);
/* Upstream scale_latents: clamp(x / 6 + 0.5, 0, 1), only for storing
 * latents as 8-bit images; never part of decode/encode. */
void vae_taesd_scale_latents(float *y, const float *x, size_t n);

#endif
