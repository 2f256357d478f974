/* k-diffusion sample_lms: linear multistep in sigma over the last <= 4
 * derivatives d = (x - D)/s. The coefficients integrate Lagrange basis
 * polynomials exactly (k-diffusion uses scipy quad on the same polynomial). */
#include "samplers/sampler_impl.h"

#include <string.h>

enum { LMS_ORDER = 4 };

/* int_{s_i}^{s_{i+1}} prod_{k != j, k < order} (tau - s_{i-k}) / (s_{i-j} - s_{i-k}) dtau */
static double lms_coeff(int order, const double *s, int i, int j)
{
    double poly[LMS_ORDER] = {1}; /* coefficients of tau^0.. */
    int degree = 0;
    for (int k = 0; k < order; k++) {
        if (k == j)
            continue;
        double root = s[i - k], scale = 1 / (s[i - j] - s[i - k]);
        for (int p = degree + 1; p >= 0; p--) {
            double shifted = p > 0 ? poly[p - 1] : 0, kept = p <= degree ? poly[p] : 0;
            poly[p] = (shifted - root * kept) * scale;
        }
        degree++;
    }
    double a = s[i], b = s[i + 1], integral = 0, pa = a, pb = b;
    for (int p = 0; p <= degree; p++, pa *= a, pb *= b)
        integral += poly[p] * (pb - pa) / (p + 1);
    return integral;
}

int smp_sample_lms(smp_run *r)
{
    float *ds[LMS_ORDER] = {r->buf[0], r->buf[1], r->buf[2], r->buf[3]}; /* ds[0] newest */
    for (int i = 0; i < r->steps; i++) {
        double s = r->sigmas[i];
        int rc = smp_run_denoise_step(r, i);
        if (rc)
            return rc;
        float *oldest = ds[LMS_ORDER - 1];
        memmove(ds + 1, ds, (LMS_ORDER - 1) * sizeof ds[0]);
        ds[0] = oldest;
        for (size_t k = 0; k < r->n; k++)
            ds[0][k] = (float)(((double)r->x[k] - r->denoised[k]) / s);
        int order = i + 1 < LMS_ORDER ? i + 1 : LMS_ORDER;
        double c[LMS_ORDER];
        for (int j = 0; j < order; j++)
            c[j] = lms_coeff(order, r->sigmas, i, j);
        for (size_t k = 0; k < r->n; k++) {
            double dx = 0;
            for (int j = 0; j < order; j++)
                dx += c[j] * ds[j][k];
            r->x[k] = (float)(r->x[k] + dx);
        }
    }
    return 0;
}
