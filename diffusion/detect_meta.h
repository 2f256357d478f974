/* detect_meta: the fmimage.config metadata (internal to detection). */
#ifndef FM_DETECT_META_H
#define FM_DETECT_META_H

#include "weights/config.h"
#include "weights/source.h"

/* Checks the shape-inferred cfg against the fmimage.config JSON text of st
 * and fills what shapes cannot say. Errors "PATH: fmimage.config: why". */
int df_config_apply_meta(const char *json, wt_model_config *cfg, const wt_source *st, fm_error *err);

#endif
