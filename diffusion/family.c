/* What a family implies beyond its tensors: its name and the DESIGN.md
 * defaults. Shared by detection, the fmimage.config check and the model. */
#include "diffusion/family.h"

#include <stdio.h>

const char *df_family_str(fm_family family)
{
    switch (family) {
    case FM_FAMILY_SD1: return "sd1";
    case FM_FAMILY_SD2: return "sd2";
    case FM_FAMILY_SD_TURBO: return "sd-turbo";
    case FM_FAMILY_SDXL: return "sdxl";
    case FM_FAMILY_DEMO: return "demo";
    default: return "unknown";
    }
}

void df_family_defaults(fm_family family, fm_prediction prediction, fm_model_defaults *out)
{
    fm_model_defaults d = {512, 512, 20, 7.0f, "dpmpp_2m", "karras"};
    if (family == FM_FAMILY_SD2 && prediction != FM_PRED_EPS) d.width = d.height = 768;
    if (family == FM_FAMILY_SDXL) d.width = d.height = 1024;
    if (family == FM_FAMILY_SD_TURBO) {
        d.steps = 1;
        d.cfg = 1.0f;
        snprintf(d.sampler, sizeof d.sampler, "euler_ancestral");
        snprintf(d.scheduler, sizeof d.scheduler, "sgm_uniform");
    }
    *out = d;
}
