/* The 8-bit image steps of A1111's inpainting, in the integer arithmetic of
 * the libraries A1111 runs them with (PIL 9.x Resample.c, BoxBlur.c,
 * Paste.c, AlphaComposite.c, Convert.c; OpenCV 4.x's bit-exact 8-bit
 * GaussianBlur), so that every byte equals A1111's. Written from those
 * algorithms' definitions; tests/test_inpaint.c holds them to references
 * made by the libraries themselves. */
#include "diffusion/mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- PIL resize ---- */

#define PIL_PRECISION_BITS (32 - 8 - 2)

static double sinc(double x)
{
    if (x == 0.0) return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0; }

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* One axis' taps, as PIL's precompute_coeffs + normalize_coeffs_8bpc:
 * per output sample, the first input index, the count and ksize
 * fixed-point weights. Returns ksize, 0 when out of memory. */
static int pil_coeffs(int in_size, double in0, double in1, int out_size, df_filter f, int **bounds, int **kk)
{
    double support0 = f == DF_FILTER_LANCZOS ? 3.0 : 2.0;
    double scale = (in1 - in0) / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = support0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *pre = malloc(sizeof(double) * (size_t)ksize * out_size);
    *bounds = malloc(sizeof(int) * 2 * (size_t)out_size);
    *kk = malloc(sizeof(int) * (size_t)ksize * out_size);
    if (!pre || !*bounds || !*kk) {
        free(pre);
        free(*bounds);
        free(*kk);
        *bounds = *kk = NULL;
        return 0;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = pre + (size_t)xx * ksize;
        int x = 0;
        for (; x < xmax; x++) {
            double w = (f == DF_FILTER_LANCZOS ? lanczos : bicubic)((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        (*bounds)[xx * 2] = xmin;
        (*bounds)[xx * 2 + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)ksize * out_size; i++)
        (*kk)[i] = pre[i] < 0 ? (int)(-0.5 + pre[i] * (1 << PIL_PRECISION_BITS))
                              : (int)(0.5 + pre[i] * (1 << PIL_PRECISION_BITS));
    free(pre);
    return ksize;
}

static uint8_t clip8(int v)
{
    if (v >= (1 << PIL_PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PIL_PRECISION_BITS);
}

/* PIL's ImagingResample with a box (x0, y0, x1, y1) of the input. */
static int pil_resize_box(uint8_t *out, int out_w, int out_h, const uint8_t *in, int in_w, int in_h, int ch,
                          df_filter f, const double box[4])
{
    int need_h = out_w != in_w || box[0] != 0 || box[2] != out_w;
    int need_v = out_h != in_h || box[1] != 0 || box[3] != out_h;
    int *bh = NULL, *kh = NULL, *bv = NULL, *kv = NULL;
    int ksh = pil_coeffs(in_w, box[0], box[2], out_w, f, &bh, &kh);
    int ksv = pil_coeffs(in_h, box[1], box[3], out_h, f, &bv, &kv);
    uint8_t *tmp = NULL;
    int rc = -1;
    if (!ksh || !ksv) goto done;
    int y_first = bv[0], y_last = bv[out_h * 2 - 2] + bv[out_h * 2 - 1];
    const uint8_t *src = in;
    int src_h = in_h;
    if (need_h) {
        for (int i = 0; i < out_h; i++) bv[i * 2] -= y_first;
        int th = y_last - y_first;
        if (!(tmp = malloc((size_t)out_w * (th > 0 ? th : 1) * ch))) goto done;
        for (int yy = 0; yy < th; yy++)
            for (int xx = 0; xx < out_w; xx++) {
                int xmin = bh[xx * 2], xmax = bh[xx * 2 + 1];
                const int *k = kh + (size_t)xx * ksh;
                for (int c = 0; c < ch; c++) {
                    int ss = 1 << (PIL_PRECISION_BITS - 1);
                    for (int x = 0; x < xmax; x++) ss += in[((size_t)(yy + y_first) * in_w + x + xmin) * ch + c] * k[x];
                    tmp[((size_t)yy * out_w + xx) * ch + c] = clip8(ss);
                }
            }
        src = tmp;
        src_h = th;
    }
    (void)src_h;
    if (need_v) {
        for (int yy = 0; yy < out_h; yy++) {
            int ymin = bv[yy * 2], ymax = bv[yy * 2 + 1];
            const int *k = kv + (size_t)yy * ksv;
            for (int xx = 0; xx < out_w; xx++)
                for (int c = 0; c < ch; c++) {
                    int ss = 1 << (PIL_PRECISION_BITS - 1);
                    for (int y = 0; y < ymax; y++) ss += src[((size_t)(y + ymin) * out_w + xx) * ch + c] * k[y];
                    out[((size_t)yy * out_w + xx) * ch + c] = clip8(ss);
                }
        }
    } else {
        memcpy(out, src, (size_t)out_w * out_h * ch);
    }
    rc = 0;
done:
    free(bh);
    free(kh);
    free(bv);
    free(kv);
    free(tmp);
    return rc;
}

int df_pil_resize(uint8_t *out, int out_w, int out_h, const uint8_t *in, int in_w, int in_h, int ch, df_filter f)
{
    double box[4] = {0, 0, in_w, in_h};
    if (out_w == in_w && out_h == in_h) {
        memcpy(out, in, (size_t)in_w * in_h * ch);
        return 0;
    }
    return pil_resize_box(out, out_w, out_h, in, in_w, in_h, ch, f, box);
}

/* Image.paste(src, (x, y)) without a mask: the overlapping part is copied. */
static void paste(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh, int x, int y, int ch)
{
    for (int r = 0; r < sh; r++) {
        int dy = y + r;
        if (dy < 0 || dy >= dh) continue;
        for (int c = 0; c < sw; c++) {
            int dx = x + c;
            if (dx >= 0 && dx < dw) memcpy(dst + ((size_t)dy * dw + dx) * ch, src + ((size_t)r * sw + c) * ch, ch);
        }
    }
}

int df_resize_image(int mode, uint8_t *out, int w, int h, const uint8_t *in, int in_w, int in_h, int ch)
{
    if (mode == 0) return df_pil_resize(out, w, h, in, in_w, in_h, ch, DF_FILTER_LANCZOS);
    /* ratios compared in double, as Python's float division */
    double ratio = (double)w / h, src_ratio = (double)in_w / in_h;
    int src_w, src_h;
    if (mode == 1) {
        src_w = ratio > src_ratio ? w : (int)((long long)in_w * h / in_h);
        src_h = ratio <= src_ratio ? h : (int)((long long)in_h * w / in_w);
    } else {
        src_w = ratio < src_ratio ? w : (int)((long long)in_w * h / in_h);
        src_h = ratio >= src_ratio ? h : (int)((long long)in_h * w / in_w);
    }
    if (src_w < 1 || src_h < 1) return -1; /* PIL refuses a zero size too */
    uint8_t *resized = malloc((size_t)src_w * src_h * ch);
    if (!resized || df_pil_resize(resized, src_w, src_h, in, in_w, in_h, ch, DF_FILTER_LANCZOS)) {
        free(resized);
        return -1;
    }
    memset(out, 0, (size_t)w * h * ch);
    paste(out, w, h, resized, src_w, src_h, w / 2 - src_w / 2, h / 2 - src_h / 2, ch);
    int rc = 0;
    if (mode == 2 && ratio < src_ratio) {
        /* the rows above and below: the resized image's first and last
         * rows stretched (a resize from a zero-height box, with PIL's
         * default filter, bicubic: A1111 names none there) */
        int fill_h = h / 2 - src_h / 2;
        uint8_t *band = fill_h > 0 ? malloc((size_t)w * fill_h * ch) : NULL;
        if (fill_h > 0 && !band) rc = -1;
        if (band) {
            double top[4] = {0, 0, w, 0}, bottom[4] = {0, src_h, w, src_h};
            rc = pil_resize_box(band, w, fill_h, resized, src_w, src_h, ch, DF_FILTER_BICUBIC, top);
            if (!rc) paste(out, w, h, band, w, fill_h, 0, 0, ch);
            if (!rc) rc = pil_resize_box(band, w, fill_h, resized, src_w, src_h, ch, DF_FILTER_BICUBIC, bottom);
            if (!rc) paste(out, w, h, band, w, fill_h, 0, fill_h + src_h, ch);
        }
        free(band);
    } else if (mode == 2 && ratio > src_ratio) {
        int fill_w = w / 2 - src_w / 2;
        uint8_t *band = fill_w > 0 ? malloc((size_t)fill_w * h * ch) : NULL;
        if (fill_w > 0 && !band) rc = -1;
        if (band) {
            double left[4] = {0, 0, 0, h}, right[4] = {src_w, 0, src_w, h};
            rc = pil_resize_box(band, fill_w, h, resized, src_w, src_h, ch, DF_FILTER_BICUBIC, left);
            if (!rc) paste(out, w, h, band, fill_w, h, 0, 0, ch);
            if (!rc) rc = pil_resize_box(band, fill_w, h, resized, src_w, src_h, ch, DF_FILTER_BICUBIC, right);
            if (!rc) paste(out, w, h, band, fill_w, h, fill_w + src_w, 0, ch);
        }
        free(band);
    }
    free(resized);
    return rc;
}

/* ---- OpenCV's bit-exact GaussianBlur of 8-bit data ---- */

/* getGaussianKernelBitExact then getGaussianKernelFixedPoint_ED: the
 * kernel in 8.8 fixed point, rounded with error diffusion from the ends
 * so that it sums to exactly 256. */
static void cv_kernel_fixed(int *k, int n, double sigma)
{
    double scale2x = -0.125 / (sigma * sigma), sum = 0;
    int n2 = (n - 1) / 2;
    double *v = malloc(sizeof(double) * (size_t)(n2 + 1));
    if (!v) { memset(k, 0, sizeof(int) * (size_t)n); k[n2] = 256; return; }
    for (int i = 0, x = 1 - n; i < n2; i++, x += 2) {
        v[i] = exp((double)(x * x) * scale2x);
        sum += v[i];
    }
    sum = sum * 2 + 1;
    double mul = 1.0 / sum, err = 0;
    int total = 0;
    for (int i = 0; i < n2; i++) {
        double adj = v[i] * mul * 256.0 + err;
        int v0 = (int)lrint(adj);
        err = adj - v0;
        k[i] = k[n - 1 - i] = v0;
        total += v0;
    }
    k[n2] = 256 - 2 * total;
    free(v);
}

/* cv::borderInterpolate with BORDER_REFLECT_101. */
static int reflect101(int p, int len)
{
    if (len == 1) return 0;
    while (p < 0 || p >= len) p = p < 0 ? -p : 2 * (len - 1) - p;
    return p;
}

/* One 1-D pass along rows (horizontal) or columns. */
static int cv_blur_pass(uint8_t *m, int w, int h, int blur, int vertical)
{
    int n = 2 * (int)(2.5 * blur + 0.5) + 1, r = n / 2, len = vertical ? h : w, lines = vertical ? w : h;
    int *k = malloc(sizeof(int) * (size_t)n);
    uint8_t *line = malloc((size_t)len);
    if (!k || !line) { free(k); free(line); return -1; }
    cv_kernel_fixed(k, n, blur);
    for (int l = 0; l < lines; l++) {
        size_t step = vertical ? (size_t)w : 1, base = vertical ? (size_t)l : (size_t)l * w;
        for (int i = 0; i < len; i++) line[i] = m[base + i * step];
        for (int i = 0; i < len; i++) {
            int acc = 0;
            for (int j = 0; j < n; j++) acc += k[j] * line[reflect101(i - r + j, len)];
            int v = (acc + 128) >> 8;
            m[base + i * step] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
    free(k);
    free(line);
    return 0;
}

int df_mask_blur(uint8_t *mask, int w, int h, int blur)
{
    if (blur <= 0) return 0;
    return cv_blur_pass(mask, w, h, blur, 0) || cv_blur_pass(mask, w, h, blur, 1) ? -1 : 0;
}

/* ---- crop region (masking.py) ---- */

int df_mask_crop_region(const uint8_t *mask, int w, int h, int pad, int box[4])
{
    int x1 = w, y1 = h, x2 = 0, y2 = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (mask[(size_t)y * w + x]) {
                if (x < x1) x1 = x;
                if (x + 1 > x2) x2 = x + 1;
                if (y < y1) y1 = y;
                if (y + 1 > y2) y2 = y + 1;
            }
    if (x2 == 0) return 0;
    box[0] = x1 - pad > 0 ? x1 - pad : 0;
    box[1] = y1 - pad > 0 ? y1 - pad : 0;
    box[2] = x2 + pad < w ? x2 + pad : w;
    box[3] = y2 + pad < h ? y2 + pad : h;
    return 1;
}

/* Python's // on ints (floor division). */
static int floordiv2(int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

void df_expand_crop_region(int box[4], int proc_w, int proc_h, int image_w, int image_h)
{
    int x1 = box[0], y1 = box[1], x2 = box[2], y2 = box[3];
    double ratio_crop = (double)(x2 - x1) / (y2 - y1), ratio_proc = (double)proc_w / proc_h;
    if (ratio_crop > ratio_proc) {
        double desired = (x2 - x1) / ratio_proc;
        int diff = (int)(desired - (y2 - y1));
        y1 -= floordiv2(diff);
        y2 += diff - floordiv2(diff);
        if (y2 >= image_h) { int d = y2 - image_h; y2 -= d; y1 -= d; }
        if (y1 < 0) { y2 -= y1; y1 = 0; }
        if (y2 >= image_h) y2 = image_h;
    } else {
        double desired = (y2 - y1) * ratio_proc;
        int diff = (int)(desired - (x2 - x1));
        x1 -= floordiv2(diff);
        x2 += diff - floordiv2(diff);
        if (x2 >= image_w) { int d = x2 - image_w; x2 -= d; x1 -= d; }
        if (x1 < 0) { x2 -= x1; x1 = 0; }
        if (x2 >= image_w) x2 = image_w;
    }
    box[0] = x1; box[1] = y1; box[2] = x2; box[3] = y2;
}

/* ---- paste, premultiplied alpha, alpha_composite (PIL) ---- */

static unsigned div255(unsigned v)
{
    unsigned t = v + 128;
    return ((t >> 8) + t) >> 8;
}

/* Image.new('RGBa').paste(rgb as RGBa, mask=m): premultiplied RGBa with
 * alpha m (PIL's BLEND over zeros). */
static void paste_rgba_premul(uint8_t *rgba, const uint8_t *rgb, const uint8_t *m, int w, int h)
{
    for (size_t i = 0; i < (size_t)w * h; i++) {
        unsigned a = m[i];
        for (int c = 0; c < 3; c++) rgba[i * 4 + c] = (uint8_t)div255(rgb[i * 3 + c] * a);
        rgba[i * 4 + 3] = (uint8_t)div255(255 * a);
    }
}

/* convert('RGBa' -> 'RGBA'): PIL 9's rgbA2rgba. */
static void unpremultiply(uint8_t *rgba, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned a = rgba[i * 4 + 3];
        if (a == 255 || a == 0) continue;
        for (int c = 0; c < 3; c++) {
            unsigned v = 255u * rgba[i * 4 + c] / a;
            rgba[i * 4 + c] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

void df_overlay_make(uint8_t *rgba, const uint8_t *rgb, const uint8_t *overlay_mask, int w, int h)
{
    size_t n = (size_t)w * h;
    uint8_t *inv = malloc(n);
    if (inv) {
        for (size_t i = 0; i < n; i++) inv[i] = (uint8_t)(255 - overlay_mask[i]);
        paste_rgba_premul(rgba, rgb, inv, w, h);
        free(inv);
    } else {
        /* same result without the buffer */
        for (size_t i = 0; i < n; i++) {
            unsigned a = 255u - overlay_mask[i];
            for (int c = 0; c < 3; c++) rgba[i * 4 + c] = (uint8_t)div255(rgb[i * 3 + c] * a);
            rgba[i * 4 + 3] = (uint8_t)div255(255 * a);
        }
    }
    unpremultiply(rgba, n);
}

void df_alpha_composite(uint8_t *dst, const uint8_t *src, int w, int h)
{
    const unsigned pb = 7;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        const uint8_t *s = src + i * 4;
        uint8_t *d = dst + i * 4;
        if (s[3] == 0) continue;
        unsigned blend = d[3] * (255u - s[3]), outa255 = s[3] * 255u + blend;
        unsigned coef1 = s[3] * 255u * 255u * (1u << pb) / outa255, coef2 = 255u * (1u << pb) - coef1;
        for (int c = 0; c < 3; c++) {
            unsigned t = s[c] * coef1 + d[c] * coef2 + (0x80u << pb);
            d[c] = (uint8_t)((((t >> 8) + t) >> 8) >> pb);
        }
        unsigned a = outa255 + 0x80;
        d[3] = (uint8_t)(((a >> 8) + a) >> 8);
    }
}

/* ---- PIL GaussianBlur (three box blurs, BoxBlur.c) ---- */

/* ImagingLineBoxBlur32 over one line of 4-byte pixels, stride in pixels. */
static void box_line(uint8_t *out, const uint8_t *in, int len, int radius, unsigned ww, unsigned fw)
{
    int lastx = len - 1, edge_a = radius + 1 < len ? radius + 1 : len, edge_b = len - radius - 1 > 0 ? len - radius - 1 : 0;
    for (int c = 0; c < 4; c++) {
#define IN(x) ((unsigned)in[(size_t)(x) * 4 + c])
#define SAVE(x, bulk) out[(size_t)(x) * 4 + c] = (uint8_t)(((bulk) + (1u << 23)) >> 24)
        unsigned acc = IN(0) * (unsigned)(radius + 1), bulk;
        for (int x = 0; x < edge_a - 1; x++) acc += IN(x);
        acc += IN(lastx) * (unsigned)(radius - edge_a + 1);
        if (edge_a <= edge_b) {
            for (int x = 0; x < edge_a; x++) {
                acc += IN(x + radius) - IN(0);
                bulk = acc * ww + (IN(0) + IN(x + radius + 1)) * fw;
                SAVE(x, bulk);
            }
            for (int x = edge_a; x < edge_b; x++) {
                acc += IN(x + radius) - IN(x - radius - 1);
                bulk = acc * ww + (IN(x - radius - 1) + IN(x + radius + 1)) * fw;
                SAVE(x, bulk);
            }
            for (int x = edge_b; x <= lastx; x++) {
                acc += IN(lastx) - IN(x - radius - 1);
                bulk = acc * ww + (IN(x - radius - 1) + IN(lastx)) * fw;
                SAVE(x, bulk);
            }
        } else {
            for (int x = 0; x < edge_b; x++) {
                acc += IN(x + radius) - IN(0);
                bulk = acc * ww + (IN(0) + IN(x + radius + 1)) * fw;
                SAVE(x, bulk);
            }
            for (int x = edge_b; x < edge_a; x++) {
                acc += IN(lastx) - IN(0);
                bulk = acc * ww + (IN(0) + IN(lastx)) * fw;
                SAVE(x, bulk);
            }
            for (int x = edge_a; x <= lastx; x++) {
                acc += IN(lastx) - IN(x - radius - 1);
                bulk = acc * ww + (IN(x - radius - 1) + IN(lastx)) * fw;
                SAVE(x, bulk);
            }
        }
#undef IN
#undef SAVE
    }
}

/* ImagingHorizontalBoxBlur in place over lines of `len` pixels; `vertical`
 * walks columns instead (PIL transposes; the arithmetic is the same). */
static int box_pass(uint8_t *img, int w, int h, float fr, int vertical)
{
    int radius = (int)fr;
    unsigned ww = (unsigned)((float)(1 << 24) / (fr * 2 + 1));
    unsigned fw = ((1u << 24) - (unsigned)(radius * 2 + 1) * ww) / 2;
    int len = vertical ? h : w, lines = vertical ? w : h;
    uint8_t *in = malloc((size_t)len * 4), *out = malloc((size_t)len * 4);
    if (!in || !out) { free(in); free(out); return -1; }
    for (int l = 0; l < lines; l++) {
        for (int i = 0; i < len; i++)
            memcpy(in + (size_t)i * 4, img + (vertical ? ((size_t)i * w + l) : ((size_t)l * w + i)) * 4, 4);
        box_line(out, in, len, radius, ww, fw);
        for (int i = 0; i < len; i++)
            memcpy(img + (vertical ? ((size_t)i * w + l) : ((size_t)l * w + i)) * 4, out + (size_t)i * 4, 4);
    }
    free(in);
    free(out);
    return 0;
}

int df_pil_gaussian_blur4(uint8_t *rgba, int w, int h, float radius)
{
    /* ImagingGaussianBlur's box radius, in float as PIL computes it */
    const int passes = 3;
    float sigma2 = radius * radius / passes;
    float L = (float)sqrt(12.0 * sigma2 + 1.0);
    float l = floorf((float)((L - 1.0) / 2.0));
    float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
    a /= 6 * (sigma2 - (l + 1) * (l + 1));
    float r = l + a;
    for (int i = 0; i < passes; i++)
        if (box_pass(rgba, w, h, r, 0)) return -1;
    for (int i = 0; i < passes; i++)
        if (box_pass(rgba, w, h, r, 1)) return -1;
    return 0;
}

int df_mask_fill(uint8_t *rgb, const uint8_t *mask, int w, int h)
{
    static const struct { int radius, repeats; } layers[] = {{256, 1}, {64, 1}, {16, 2}, {4, 4}, {2, 2}, {0, 1}};
    size_t n = (size_t)w * h;
    uint8_t *masked = malloc(n * 4), *blurred = malloc(n * 4), *mod = calloc(n, 4), *inv = malloc(n);
    int rc = (!masked || !blurred || !mod || !inv) ? -1 : 0;
    if (!rc) {
        for (size_t i = 0; i < n; i++) inv[i] = (uint8_t)(255 - mask[i]);
        paste_rgba_premul(masked, rgb, inv, w, h);
    }
    for (size_t li = 0; !rc && li < sizeof layers / sizeof layers[0]; li++) {
        memcpy(blurred, masked, n * 4);
        if (layers[li].radius) rc = df_pil_gaussian_blur4(blurred, w, h, (float)layers[li].radius);
        unpremultiply(blurred, n);
        for (int k = 0; !rc && k < layers[li].repeats; k++) df_alpha_composite(mod, blurred, w, h);
    }
    for (size_t i = 0; !rc && i < n; i++) memcpy(rgb + i * 3, mod + i * 4, 3);
    free(masked);
    free(blurred);
    free(mod);
    free(inv);
    return rc;
}
