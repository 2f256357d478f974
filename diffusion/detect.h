/* detect: which model a checkpoint holds and its complete configuration.
 *
 * The family comes from the tensor names (layouts/README.md "Telling the
 * families apart"); every hyper-parameter that the shapes determine is read
 * from the shapes (and the structure is checked on the way: every block the
 * U-Net, VAE and text towers will look up exists with a consistent shape);
 * the rest comes from __metadata__["fmimage.config"] when present, else from
 * the family's known values. A config value that contradicts the shapes is
 * an error, as is a tensor with the wrong shape. Errors read "PATH: why". */
#ifndef FM_DETECT_H
#define FM_DETECT_H

#include "weights/config.h"
#include "weights/safetensors.h"

int fm_detect_config(const fm_safetensors *st, fm_model_config *cfg, fm_error *err);

/* The DESIGN.md "Defaults by family" row. SD 2.x depends on the prediction
 * (v: 768x768, eps: 512x512); with FM_PRED_AUTO it gives the v row, so a
 * pipeline that probes the prediction calls this again with the answer. */
void fm_family_defaults(fm_family family, fm_prediction prediction, fm_model_defaults *out);

/* Elements of the floating-point tensors whose names start with prefix
 * (integer buffers such as position_ids are not parameters). */
int64_t fm_count_params(const fm_safetensors *st, const char *prefix);

/* Text for `fmimage --info`: family, prediction, the full config and the
 * parameter counts per component. malloc'd; NULL when out of memory. */
char *fm_config_describe(const fm_model_config *cfg, const fm_safetensors *st);

/* "sd1", "sd2", "sd-turbo", "sdxl", "demo", "unknown". */
const char *fm_family_str(fm_family family);

/* Internal to detection (diffusion/detect_meta.c): checks the shape-inferred
 * cfg against the fmimage.config JSON text and fills what shapes cannot say. */
int fm_config_apply_meta(const char *json, fm_model_config *cfg, const fm_safetensors *st,
                         fm_error *err);

#endif
