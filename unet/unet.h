/* unet: the diffusion U-Net of SD 1.x, SD 2.x / SD-Turbo and SDXL (ldm/sgm
 * UNetModel), one implementation driven by wt_unet_config.
 *
 * Weights stay mapped from the checkpoint in its dtype (F16 files stay F16);
 * only biases and norm parameters of non-F32 files are copied to float32.
 * Activations and the kernels' scratch live in a workspace owned by the
 * un_model, allocated by un_prepare (or the first call for a given
 * (batch, h, w, n_ctx)) and reused while the size fits, so one un_model must
 * not run two forwards at the same time. */
#ifndef FM_UNET_H
#define FM_UNET_H

#include <stddef.h>
#include <stdint.h>
#include "core/core.h"
#include "weights/config.h"
#include "weights/source.h"

typedef struct un_model un_model;

/* Binds every model.diffusion_model tensor the config implies
 * (weights/binder.h); a missing tensor or a wrong shape fails with
 * "PATH: tensor NAME: why". src must outlive the un_model. */
un_model *un_load(const wt_source *src, const wt_unet_config *cfg, fm_precision prec,
                      fm_error *err);
void un_free(un_model *u);

/* The precision of the matrix products and attention (FM_PREC_BF16: bf16
 * dot products with float accumulation where the CPU has AVX512_BF16; every
 * other mode computes in float32). Packing only records the mode, so
 * switching costs nothing; not while a forward runs. */
void un_set_precision(un_model *u, fm_precision prec);
fm_precision un_precision(const un_model *u);

/* out [batch][out_channels][h][w] = eps / v prediction for
 *   x       [batch][in_channels][h][w] (already scaled by c_in),
 *   t       [batch] timesteps, fractional allowed,
 *   context [batch][n_ctx][context_dim] (n_ctx = 77 x prompt chunks),
 *   y       [batch][adm_in_channels] (SDXL's ADM vector) or NULL without label_emb.
 * Any h, w >= 1: where a level's size is odd, the upsample back to it takes
 * the size of the skip connection (as diffusers does). Returns 0 or an error. */
int un_forward(un_model *u, float *out, const float *x, int batch, int h, int w,
                    const float *t, const float *context, int n_ctx, const float *y,
                    fm_error *err);

/* Allocates (through hook, which may be NULL) the workspace a forward of
 * this size needs: activations and the kernels' scratch. A forward of that
 * size (or smaller) then allocates nothing, so a sampler loop calls this
 * once before its first step and any allocation failure is found there. */
int un_prepare(un_model *u, int batch, int h, int w, int n_ctx, const core_alloc_hook *hook, fm_error *err);
/* The bytes un_prepare allocates for that size (0 for a bad size). */
size_t un_prepare_bytes(const un_model *u, int batch, int h, int w, int n_ctx);

/* Bytes of activation workspace a forward of this size allocates (the
 * skip connections, the working buffers and the attention scratch; the
 * kernels' scratch, a few MB at most, comes on top). */
size_t un_workspace_bytes(const wt_unet_config *cfg, int batch, int h, int w, int n_ctx);

/* Intermediates for tests and debugging: called (when set) with
 *   "temb_sin" [batch][model_channels]   sinusoidal timestep embedding
 *   "emb"      [batch][4*model_channels] time_embed (+ label_emb) output
 *   "in.N", "mid", "out.N"               output of input_blocks[N], the middle
 *                                        block, output_blocks[N] (NCHW)
 *   "out"                                the final output
 * with shape [n][c][h][w] (h = w = 1 for vectors). The data is only valid
 * during the call. */
typedef void (*un_probe_fn)(void *user, const char *name, const float *data, int n, int c,
                                 int h, int w);
void un_set_probe(un_model *u, un_probe_fn fn, void *user);

/* Every tensor the config implies, in load order (name with the config's
 * prefix, shape as stored). For checking a layout or building a test model
 * without loading one. Returns 0, or an error for an impossible config. */
typedef void (*un_tensor_fn)(void *user, const char *name, int ndim, const int64_t *shape);
int un_list_tensors(const wt_unet_config *cfg, un_tensor_fn fn, void *user,
                         fm_error *err);

#endif
