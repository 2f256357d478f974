/* detect: which model a checkpoint holds and its complete configuration.
 *
 * The family comes from the tensor names (layouts/README.md "Telling the
 * families apart"); every hyper-parameter that the shapes determine is read
 * from the few tensors that show it (the structure: levels, blocks, widths,
 * depths, and that they agree); the rest comes from
 * __metadata__["fmimage.config"] when present, else from the family's known
 * values. A config value that contradicts the shapes is an error. Every
 * other tensor is checked against the config when the parts bind it
 * (weights/binder.h), so the checkpoint's names are walked once per part,
 * not twice. Errors read "PATH: why". */
#ifndef FM_DETECT_H
#define FM_DETECT_H

#include "diffusion/family.h"
#include "weights/config.h"
#include "weights/source.h"

int df_detect_config(const wt_source *st, wt_model_config *cfg, fm_error *err);

/* Elements of the floating-point tensors whose names start with prefix
 * (integer buffers such as position_ids are not parameters). */
int64_t df_count_params(const wt_source *st, const char *prefix);

/* Of st's tensors, how many the U-Net, VAE and text towers of cfg bind
 * (*bound) and how many they need that st lacks (*absent); 0, or an error
 * for a config the parts cannot build (diffusion/bound.c). */
int df_count_bound(const wt_model_config *cfg, const wt_source *st, int64_t *bound, int64_t *absent);

/* Text for `fmimage --info`: family, prediction, the full config and the
 * parameter counts per component. malloc'd; NULL when out of memory. */
char *df_config_describe(const wt_model_config *cfg, const wt_source *st);

#endif
