/* ComfyUI sample_lcm: jump to the model's prediction, then re-noise to the
 * next sigma (noise_scaling: x = D + s_{i+1} noise). */
#include "samplers/sampler_impl.h"

#include <string.h>

int smp_sample_lcm(smp_run *r)
{
    float *noise = r->buf[0];
    for (int i = 0; i < r->steps; i++) {
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        memcpy(r->x, r->denoised, r->n * sizeof(float));
        if (r->sigmas[i + 1] > 0) {
            if ((rc = smp_run_noise(r, noise)))
                return rc;
            smp_add_noise(r->x, noise, r->n, r->sigmas[i + 1]);
        }
    }
    return 0;
}
