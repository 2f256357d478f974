/* The pieces tiled and banded decoding is made of: a convolution over a
 * band of output rows (optionally of a x2 nearest-upsampled input), and
 * GroupNorm split into gathering statistics and applying given ones. */
#include "kernels/gemm.h"

#include <string.h>

#define PAR_MIN 65536

/* The band's own convolution: c with the padding that falls outside the
 * input rows [*start, *start + *rows) made the band's padding. */
static kn_conv band_conv(const kn_conv *c, int h, int r0, int r1, int *start, int *rows)
{
    int first = r0 * c->stride - c->pad_t, end = (r1 - 1) * c->stride - c->pad_t + c->kh;
    kn_conv b = *c;
    b.pad_t = first < 0 ? -first : 0;
    b.pad_b = end > h ? end - h : 0;
    *start = first < 0 ? 0 : first;
    *rows = (end > h ? h : end) - *start;
    return b;
}

size_t kn_conv2d_rows_scratch(const kn_conv *c, int h, int w, int r0, int r1, int threads)
{
    int start, rows;
    kn_conv b = band_conv(c, h, r0, r1, &start, &rows);
    return kn_conv2d_scratch(&b, 1, rows, w, threads);
}

int kn_conv2d_rows_ws(const kn_scratch *s, const kn_conv *c, float *y, const float *x, int up2, int h, int w,
                      int r0, int r1, float *band_in, float *band_out)
{
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w), start, rows;
    kn_conv b = band_conv(c, h, r0, r1, &start, &rows);
    if (s->bytes < kn_conv2d_scratch(&b, 1, rows, w, s->threads)) return -1;
    if (up2) {
        int sw = w / 2;
#pragma omp parallel for schedule(static) if ((size_t)c->cin * rows * w > PAR_MIN)
        for (int ch = 0; ch < c->cin; ch++)
            for (int i = 0; i < rows; i++) {
                const float *src = x + ((size_t)ch * (h / 2) + (start + i) / 2) * sw;
                float *dst = band_in + ((size_t)ch * rows + i) * w;
                for (int xx = 0; xx < w; xx++) dst[xx] = src[xx / 2];
            }
    } else {
        for (int ch = 0; ch < c->cin; ch++)
            memcpy(band_in + (size_t)ch * rows * w, x + ((size_t)ch * h + start) * w, sizeof(float) * rows * w);
    }
    if (kn_conv2d_ws(s, band_out, band_in, &b, 1, rows, w)) return -1;
    for (int ch = 0; ch < c->cout; ch++)
        memcpy(y + ((size_t)ch * oh + r0) * ow, band_out + (size_t)ch * (r1 - r0) * ow,
               sizeof(float) * (size_t)(r1 - r0) * ow);
    return 0;
}

void kn_group_norm_apply(float *y, const float *x, int c, int hw, int groups, const float *mean,
                         const float *rstd, const float *gamma, const float *beta, int silu)
{
    const gemm_arch *a = gemm_arch_get();
    int cg = c / groups;
#pragma omp parallel for schedule(static) if ((size_t)c * hw > PAR_MIN)
    for (int ch = 0; ch < c; ch++) {
        int g = ch / cg;
        a->affine(y + (size_t)ch * hw, x + (size_t)ch * hw, (size_t)hw, mean[g], rstd[g] * gamma[ch], beta[ch], silu);
    }
}

void kn_group_stats_add(double *sum, double *sumsq, double *count, const float *x, int c, int h, int w,
                        int groups, int y0, int y1, int x0, int x1)
{
    int cg = c / groups;
#pragma omp parallel for schedule(static) if ((size_t)c * (y1 - y0) * (x1 - x0) > PAR_MIN)
    for (int g = 0; g < groups; g++) {
        double s = 0, q = 0;
        for (int ch = g * cg; ch < (g + 1) * cg; ch++)
            for (int yy = y0; yy < y1; yy++) {
                const float *row = x + ((size_t)ch * h + yy) * w;
                for (int xx = x0; xx < x1; xx++) {
                    s += row[xx];
                    q += (double)row[xx] * row[xx];
                }
            }
        sum[g] += s;
        sumsq[g] += q;
        count[g] += (double)cg * (y1 - y0) * (x1 - x0);
    }
}
