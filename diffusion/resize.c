/* Image resize for img2img, as A1111's "Just resize" (PIL LANCZOS): a
 * separable Lanczos-3 filter whose support widens by the scale factor when
 * shrinking, so downscaling averages instead of aliasing. */
#include "diffusion/pipeline_internal.h"

#include <math.h>
#include <stdlib.h>

static double sinc(double x)
{
    if (x == 0) return 1;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x) { return (x > -3 && x < 3) ? sinc(x) * sinc(x / 3) : 0; }

/* Resample n_lines lines of `in` (length in_len, stride between samples
 * `step`, between lines `line_step`) to out_len samples. */
static int resample_axis(float *out, const float *in, int in_len, int out_len, int n_lines,
                         size_t in_step, size_t in_line, size_t out_step, size_t out_line)
{
    double scale = (double)in_len / out_len, fscale = scale > 1 ? scale : 1;
    double support = 3 * fscale;
    int taps = (int)ceil(support) * 2 + 1;
    double *w = malloc(sizeof(double) * (size_t)taps);
    if (!w) return -1;
    for (int o = 0; o < out_len; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)floor(center - support), hi = (int)ceil(center + support);
        if (lo < 0) lo = 0;
        if (hi > in_len) hi = in_len;
        double total = 0;
        for (int i = lo; i < hi; i++) total += w[i - lo] = lanczos3((i + 0.5 - center) / fscale);
        for (int l = 0; l < n_lines; l++) {
            double acc = 0;
            for (int i = lo; i < hi; i++) acc += w[i - lo] * in[l * in_line + (size_t)i * in_step];
            out[l * out_line + (size_t)o * out_step] = (float)(total != 0 ? acc / total : 0);
        }
    }
    free(w);
    return 0;
}

int df_resize_rgb_to_nchw(float *out, int out_w, int out_h, const uint8_t *rgb, int in_w, int in_h)
{
    /* Work in [0,255] floats: planes [3][in_h][in_w] -> [3][in_h][out_w] -> [3][out_h][out_w]. */
    size_t in_px = (size_t)in_w * in_h;
    float *planes = malloc(sizeof(float) * 3 * in_px);
    float *mid = malloc(sizeof(float) * 3 * (size_t)in_h * out_w);
    int rc = -1;
    if (planes && mid) {
        for (size_t p = 0; p < in_px; p++)
            for (int c = 0; c < 3; c++) planes[c * in_px + p] = rgb[p * 3 + c];
        rc = resample_axis(mid, planes, in_w, out_w, 3 * in_h, 1, (size_t)in_w, 1, (size_t)out_w);
        if (!rc)
            for (int c = 0; c < 3 && !rc; c++)
                rc = resample_axis(out + (size_t)c * out_h * out_w, mid + (size_t)c * in_h * out_w, in_h,
                                   out_h, out_w, (size_t)out_w, 1, (size_t)out_w, 1);
        /* PIL rounds and clamps to 8 bits; A1111 then maps to [-1, 1]. */
        for (size_t i = 0; !rc && i < 3 * (size_t)out_w * out_h; i++) {
            float v = rintf(out[i]);
            v = v < 0 ? 0 : v > 255 ? 255 : v;
            out[i] = v / 127.5f - 1.0f;
        }
    }
    free(planes);
    free(mid);
    return rc;
}
