/* k-diffusion's CompVisDenoiser (eps) and CompVisVDenoiser (v) scalings,
 * sigma_data = 1: denoised = c_skip x + c_out net(c_in x, t). */
#include "samplers/samplers.h"

#include <math.h>

smp_scalings smp_denoiser_scalings(fm_prediction pred, double sigma)
{
    double s2p1 = sigma * sigma + 1;
    smp_scalings k;
    k.c_in = 1 / sqrt(s2p1);
    if (pred == FM_PRED_V) {
        k.c_skip = 1 / s2p1;
        k.c_out = -sigma / sqrt(s2p1);
    } else {
        k.c_skip = 1;
        k.c_out = -sigma;
    }
    return k;
}
