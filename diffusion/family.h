/* family: the model families' names and defaults. */
#ifndef FM_FAMILY_H
#define FM_FAMILY_H

#include "weights/config.h"

/* The DESIGN.md "Defaults by family" row. SD 2.x depends on the prediction
 * (v: 768x768, eps: 512x512); with FM_PRED_AUTO it gives the v row, so a
 * pipeline that probes the prediction calls this again with the answer. */
void df_family_defaults(fm_family family, fm_prediction prediction, fm_model_defaults *out);

/* "sd1", "sd2", "sd-turbo", "sdxl", "demo", "unknown". */
const char *df_family_str(fm_family family);

#endif
