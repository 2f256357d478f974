/* The hires fix's resamplers: torch.nn.functional.interpolate on latents
 * (the index and weight rules of ATen's CPU UpSample kernels, written from
 * their definitions) and PIL's Image.resize on RGB8 (Pillow's Resample.c
 * 8-bit fixed point and Geometry.c's nearest scaling). */
#include "diffusion/hires.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- torch interpolate ---- */

/* Keys cubic convolution, A = -0.75 (upsample_bicubic2d). */
static void cubic_coeffs(float t, float w[4])
{
    const float A = -0.75f;
    float x1 = t + 1, x2 = t, x3 = 1 - t, x4 = 2 - t;
    w[0] = ((A * x1 - 5 * A) * x1 + 8 * A) * x1 - 4 * A;
    w[1] = ((A + 2) * x2 - (A + 3)) * x2 * x2 + 1;
    w[2] = ((A + 2) * x3 - (A + 3)) * x3 * x3 + 1;
    w[3] = ((A * x4 - 5 * A) * x4 + 8 * A) * x4 - 4 * A;
}

/* The antialiased kernels' filters: triangle, and cubic with a = -0.5 (as
 * PIL's bicubic). */
static float aa_linear(float x)
{
    x = fabsf(x);
    return x < 1 ? 1 - x : 0;
}

static float aa_cubic(float x)
{
    const float a = -0.5f;
    x = fabsf(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

/* One axis's taps: for output o, n[o] weights w[o*taps ..] on inputs
 * idx[o*taps ..]. */
typedef struct axis {
    int taps;
    int *idx;
    float *w;
} axis;

static int axis_alloc(axis *a, int out, int taps)
{
    a->taps = taps;
    a->idx = calloc((size_t)out * taps, sizeof *a->idx);
    a->w = calloc((size_t)out * taps, sizeof *a->w);
    return a->idx && a->w ? 0 : -1;
}

static void axis_free(axis *a)
{
    free(a->idx);
    free(a->w);
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* area_pixel_compute_scale with align_corners = False and a given size. */
static float torch_scale(int in, int out) { return (float)in / (float)out; }

static int axis_build(axis *a, df_upscaler_kind kind, int in, int out)
{
    float scale = torch_scale(in, out);
    if (kind == DF_UP_LATENT_BILINEAR_AA || kind == DF_UP_LATENT_BICUBIC_AA) {
        /* _compute_weights_aa: the filter widened by the scale when
         * shrinking, cut at the borders and renormalised */
        int interp = kind == DF_UP_LATENT_BICUBIC_AA ? 4 : 2;
        float support = scale >= 1 ? interp * 0.5f * scale : interp * 0.5f;
        int taps = (int)ceilf(support) * 2 + 1;
        if (axis_alloc(a, out, taps)) return -1;
        for (int o = 0; o < out; o++) {
            float center = scale * (o + 0.5f), total = 0, invscale = scale >= 1 ? 1.0f / scale : 1.0f;
            int xmin = (int)(center - support + 0.5f), xmax = (int)(center + support + 0.5f);
            if (xmin < 0) xmin = 0;
            if (xmax > in) xmax = in;
            float *w = a->w + (size_t)o * taps;
            int *ix = a->idx + (size_t)o * taps;
            for (int j = 0; j < xmax - xmin && j < taps; j++) {
                float x = (j + xmin - center + 0.5f) * invscale;
                w[j] = interp == 4 ? aa_cubic(x) : aa_linear(x);
                ix[j] = xmin + j;
                total += w[j];
            }
            for (int j = 0; j < xmax - xmin && j < taps; j++)
                if (total != 0) w[j] /= total;
        }
        return 0;
    }
    if (kind == DF_UP_LATENT_BICUBIC) {
        if (axis_alloc(a, out, 4)) return -1;
        for (int o = 0; o < out; o++) {
            float src = scale * (o + 0.5f) - 0.5f, f = floorf(src);
            int i0 = (int)f;
            cubic_coeffs(src - f, a->w + (size_t)o * 4);
            for (int j = 0; j < 4; j++) a->idx[(size_t)o * 4 + j] = clampi(i0 - 1 + j, 0, in - 1);
        }
        return 0;
    }
    if (kind == DF_UP_LATENT_BILINEAR) {
        if (axis_alloc(a, out, 2)) return -1;
        for (int o = 0; o < out; o++) {
            float src = scale * (o + 0.5f) - 0.5f;
            if (src < 0) src = 0;
            int i0 = (int)src, off = i0 < in - 1 ? 1 : 0;
            float l1 = src - (float)i0;
            l1 = l1 < 0 ? 0 : l1 > 1 ? 1 : l1;
            a->idx[o * 2] = i0;
            a->idx[o * 2 + 1] = i0 + off;
            a->w[o * 2] = 1 - l1;
            a->w[o * 2 + 1] = l1;
        }
        return 0;
    }
    /* nearest: floor(o * scale); nearest-exact: floor((o + 0.5) * scale) */
    if (axis_alloc(a, out, 1)) return -1;
    for (int o = 0; o < out; o++) {
        int i;
        if (in == out) i = o;
        else if (kind == DF_UP_LATENT_NEAREST) i = out == 2 * in ? o >> 1 : (int)floorf((float)o * scale);
        else i = (int)floorf(((float)o + 0.5f) * scale);
        a->idx[o] = i < in - 1 ? i : in - 1;
        a->w[o] = 1;
    }
    return 0;
}

int df_latent_upscale(df_upscaler_kind kind, float *out, int oh, int ow, const float *in, int c, int ih, int iw)
{
    if (kind > DF_UP_LATENT_NEAREST_EXACT) return -1;
    axis ax = {0}, ay = {0};
    float *mid = malloc(sizeof(float) * (size_t)c * ih * ow);
    int rc = (!mid || axis_build(&ax, kind, iw, ow) || axis_build(&ay, kind, ih, oh)) ? -1 : 0;
    /* width first, then height: the separable kernels' order */
    for (int ch = 0; !rc && ch < c; ch++) {
        for (int y = 0; y < ih; y++) {
            const float *row = in + ((size_t)ch * ih + y) * iw;
            float *dst = mid + ((size_t)ch * ih + y) * ow;
            for (int x = 0; x < ow; x++) {
                float acc = 0;
                for (int j = 0; j < ax.taps; j++) acc += ax.w[x * ax.taps + j] * row[ax.idx[x * ax.taps + j]];
                dst[x] = acc;
            }
        }
        for (int y = 0; y < oh; y++) {
            float *dst = out + ((size_t)ch * oh + y) * ow;
            for (int x = 0; x < ow; x++) {
                float acc = 0;
                for (int j = 0; j < ay.taps; j++)
                    acc += ay.w[y * ay.taps + j] * mid[((size_t)ch * ih + ay.idx[y * ay.taps + j]) * ow + x];
                dst[x] = acc;
            }
        }
    }
    axis_free(&ax);
    axis_free(&ay);
    free(mid);
    return rc;
}

/* ---- PIL Image.resize on RGB8 ---- */

#define PIL_PRECISION_BITS (32 - 8 - 2)

static double pil_sinc(double x)
{
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double pil_lanczos(double x) { return (-3.0 <= x && x < 3.0) ? pil_sinc(x) * pil_sinc(x / 3) : 0.0; }

/* precompute_coeffs + normalize_coeffs_8bpc for one axis. */
static int pil_coeffs(int in, int out, int **bounds, int32_t **kk, int *ksize)
{
    double scale = (double)in / out, filterscale = scale < 1.0 ? 1.0 : scale, support = 3.0 * filterscale;
    int ks = (int)ceil(support) * 2 + 1;
    double *pre = malloc(sizeof(double) * (size_t)out * ks);
    *bounds = malloc(sizeof(int) * 2 * (size_t)out);
    *kk = malloc(sizeof(int32_t) * (size_t)out * ks);
    if (!pre || !*bounds || !*kk) {
        free(pre);
        return -1;
    }
    for (int xx = 0; xx < out; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        xmax -= xmin;
        double *k = pre + (size_t)xx * ks;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = pil_lanczos((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ks; x++) k[x] = 0;
        (*bounds)[xx * 2] = xmin;
        (*bounds)[xx * 2 + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out * ks; i++)
        (*kk)[i] = (int32_t)(pre[i] < 0 ? -0.5 + pre[i] * (1 << PIL_PRECISION_BITS)
                                        : 0.5 + pre[i] * (1 << PIL_PRECISION_BITS));
    free(pre);
    *ksize = ks;
    return 0;
}

static uint8_t pil_clip8(int32_t v)
{
    v >>= PIL_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One pass over n lines: out line l, sample o = sum_k in[l][bounds + k] * kk.
 * Strides in bytes of RGB pixels. */
static void pil_pass(uint8_t *out, const uint8_t *in, int n_lines, int out_len, size_t in_px_step, size_t in_line,
                     size_t out_px_step, size_t out_line, const int *bounds, const int32_t *kk, int ks)
{
    for (int l = 0; l < n_lines; l++)
        for (int o = 0; o < out_len; o++) {
            int xmin = bounds[o * 2], xmax = bounds[o * 2 + 1];
            const int32_t *k = kk + (size_t)o * ks;
            int32_t s0 = 1 << (PIL_PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xmax; x++) {
                const uint8_t *p = in + l * in_line + (size_t)(x + xmin) * in_px_step;
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            uint8_t *q = out + l * out_line + (size_t)o * out_px_step;
            q[0] = pil_clip8(s0);
            q[1] = pil_clip8(s1);
            q[2] = pil_clip8(s2);
        }
}

static int pil_lanczos_resize(uint8_t *out, int ow, int oh, const uint8_t *in, int iw, int ih)
{
    int *bh = NULL, *bv = NULL, kh = 0, kv = 0;
    int32_t *kkh = NULL, *kkv = NULL;
    uint8_t *tmp = NULL;
    int rc = pil_coeffs(iw, ow, &bh, &kkh, &kh) || pil_coeffs(ih, oh, &bv, &kkv, &kv) ? -1 : 0;
    if (!rc) {
        int need_h = ow != iw, need_v = oh != ih;
        /* the horizontal pass covers only the rows the vertical one reads */
        int first = bv[0], last = bv[oh * 2 - 2] + bv[oh * 2 - 1];
        const uint8_t *src = in;
        int src_rows = ih;
        if (need_h) {
            if (need_v)
                for (int i = 0; i < oh; i++) bv[i * 2] -= first;
            else
                first = 0, last = ih;
            if (!(tmp = malloc((size_t)ow * 3 * (last - first)))) rc = -1;
            if (!rc)
                pil_pass(tmp, in + (size_t)first * iw * 3, last - first, ow, 3, (size_t)iw * 3, 3, (size_t)ow * 3, bh,
                         kkh, kh);
            src = tmp;
            src_rows = last - first;
        }
        if (!rc && need_v) /* columns: a "line" is a column, samples are rows */
            pil_pass(out, src, ow, oh, (size_t)ow * 3, 3, (size_t)ow * 3, 3, bv, kkv, kv);
        else if (!rc)
            memcpy(out, src, (size_t)ow * 3 * (need_h ? (size_t)src_rows : (size_t)oh));
    }
    free(bh);
    free(bv);
    free(kkh);
    free(kkv);
    free(tmp);
    return rc;
}

/* Geometry.c ImagingScaleAffine for resize(NEAREST): source coordinate
 * (o + 0.5) * in / out, stepped in doubles and truncated. */
static int pil_nearest_index(int o_count, int in, int *tab)
{
    double a = (double)in / o_count, xo = a * 0.5;
    for (int o = 0; o < o_count; o++) {
        int xi = xo < 0.0 ? -1 : (int)xo;
        tab[o] = xi < 0 ? 0 : xi >= in ? in - 1 : xi;
        xo += a;
    }
    return 0;
}

int df_pil_resize_rgb8(uint8_t *out, int ow, int oh, const uint8_t *in, int iw, int ih, int lanczos)
{
    if (ow == iw && oh == ih) {
        memcpy(out, in, (size_t)iw * ih * 3);
        return 0;
    }
    if (lanczos) return pil_lanczos_resize(out, ow, oh, in, iw, ih);
    int *tx = malloc(sizeof(int) * (size_t)ow), *ty = malloc(sizeof(int) * (size_t)oh);
    if (!tx || !ty) {
        free(tx);
        free(ty);
        return -1;
    }
    pil_nearest_index(ow, iw, tx);
    pil_nearest_index(oh, ih, ty);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) memcpy(out + ((size_t)y * ow + x) * 3, in + ((size_t)ty[y] * iw + tx[x]) * 3, 3);
    free(tx);
    free(ty);
    return 0;
}
