/* Plain reference loops: the contract of every fast kernel, kept for tests. */
#include "kernels/kernels.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Weight element (r, c) as float. */
static float mat_at(const kn_mat *m, int r, int c)
{
    size_t i = (size_t)r * m->cols + c;
    switch (m->dtype) {
    case FM_DT_F16: return core_f16_to_f32_1(((const uint16_t *)m->data)[i]);
    case FM_DT_BF16: {
        uint32_t b = (uint32_t)((const uint16_t *)m->data)[i] << 16;
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    default:
        if (core_dtype_is_quant(m->dtype)) { /* the element's block, dequantised */
            float v;
            kn_mat_row_range(&v, m, r, c, 1);
            return v;
        }
        return ((const float *)m->data)[i];
    }
}

void kn_mat_row(float *dst, const kn_mat *m, int r)
{
    core_convert_to_f32(dst, (const char *)m->data + core_dtype_bytes(m->dtype, (size_t)r * m->cols),
                      m->dtype, (size_t)m->cols);
}

void kn_mat_row_range(float *dst, const kn_mat *m, int r, int k0, int kc)
{
    int blk = core_dtype_block(m->dtype);
    const char *row = (const char *)m->data + core_dtype_bytes(m->dtype, (size_t)r * m->cols);
    if (blk == 1) {
        core_convert_to_f32(dst, row + (size_t)k0 * core_dtype_size(m->dtype), m->dtype, (size_t)kc);
        return;
    }
    size_t bb = core_dtype_block_bytes(m->dtype);
    float tmp[256];
    for (int k = k0; k < k0 + kc;) {
        int b = k / blk, in = k % blk, n = blk - in < k0 + kc - k ? blk - in : k0 + kc - k;
        if (in == 0 && n == blk) {
            core_dequant_ref(dst + (k - k0), row + (size_t)b * bb, m->dtype, 1);
        } else { /* a block the range cuts */
            core_dequant_ref(tmp, row + (size_t)b * bb, m->dtype, 1);
            memcpy(dst + (k - k0), tmp + in, sizeof(float) * (size_t)n);
        }
        k += n;
    }
}

void kn_linear_ref(float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < w->rows; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int k = 0; k < w->cols; k++)
                acc += (double)x[(size_t)i * w->cols + k] * mat_at(w, o, k);
            y[(size_t)i * w->rows + o] = (float)acc;
        }
    for (const kn_lowrank *l = w->lowrank; l; l = l->next) /* y += scale up (down x) */
        for (int i = 0; i < n; i++)
            for (int o = 0; o < w->rows; o++) {
                double acc = 0;
                for (int r = 0; r < l->down.rows; r++) {
                    double t = 0;
                    for (int k = 0; k < w->cols; k++) t += (double)x[(size_t)i * w->cols + k] * mat_at(&l->down, r, k);
                    acc += t * mat_at(&l->up, o, r);
                }
                y[(size_t)i * w->rows + o] += (float)(l->scale * acc);
            }
}

void kn_sgemm_ref(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  int trans_b, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++)
                acc += (double)A[(size_t)i * lda + k] *
                       (trans_b ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)acc + (beta != 0.0f ? beta * *c : 0.0f);
        }
}

/* Row `row` of the kernel matrix m (cin x kh x kw taps, c's geometry) dotted
 * with the input window of output pixel (oy, ox) of batch item b. */
static double conv_window_dot(const float *x, const kn_conv *c, const kn_mat *m, int row, int b, int oy, int ox,
                              int h, int w)
{
    double acc = 0.0;
    for (int ci = 0; ci < c->cin; ci++)
        for (int ky = 0; ky < c->kh; ky++) {
            int iy = oy * c->stride + ky - c->pad_t;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < c->kw; kx++) {
                int ix = ox * c->stride + kx - c->pad_l;
                if (ix < 0 || ix >= w) continue;
                acc += (double)x[(((size_t)b * c->cin + ci) * h + iy) * w + ix] *
                       mat_at(m, row, (ci * c->kh + ky) * c->kw + kx);
            }
        }
    return acc;
}

void kn_conv2d_ref(float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w);
    for (int b = 0; b < n; b++)
        for (int co = 0; co < c->cout; co++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    y[(((size_t)b * c->cout + co) * oh + oy) * ow + ox] =
                        (float)((c->bias ? c->bias[co] : 0.0) + conv_window_dot(x, c, &c->w, co, b, oy, ox, h, w));
    for (const kn_lowrank *l = c->w.lowrank; l; l = l->next) /* y += scale up (down x), per rank */
        for (int b = 0; b < n; b++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    for (int r = 0; r < l->down.rows; r++) {
                        double t = conv_window_dot(x, c, &l->down, r, b, oy, ox, h, w);
                        for (int co = 0; co < c->cout; co++)
                            y[(((size_t)b * c->cout + co) * oh + oy) * ow + ox] +=
                                (float)(l->scale * t * mat_at(&l->up, co, r));
                    }
}

void kn_group_norm_ref(float *y, const float *x, int n, int c, int hw, int groups, float eps,
                       const float *gamma, const float *beta, int fuse_silu)
{
    int cg = c / groups;
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            const float *xg = x + ((size_t)b * c + (size_t)g * cg) * hw;
            float *yg = y + ((size_t)b * c + (size_t)g * cg) * hw;
            size_t m = (size_t)cg * hw;
            double mean = 0, var = 0;
            for (size_t i = 0; i < m; i++) mean += xg[i];
            mean /= m;
            for (size_t i = 0; i < m; i++) var += (xg[i] - mean) * (xg[i] - mean);
            var /= m;
            double inv = 1.0 / sqrt(var + eps);
            for (int ci = 0; ci < cg; ci++) {
                int ch = g * cg + ci;
                for (int i = 0; i < hw; i++) {
                    float v = (float)((xg[(size_t)ci * hw + i] - mean) * inv) * gamma[ch] + beta[ch];
                    if (fuse_silu) v = v / (1.0f + expf(-v));
                    yg[(size_t)ci * hw + i] = v;
                }
            }
        }
}

/* The fallback of kn_attention when its scratch runs out, so it works
 * without memory too: the scores are kept when a row of them can be
 * allocated, else recomputed in each pass (float accumulation of the output). */
static double ref_score(const float *qi, const float *k, int kv_stride, int head_dim, size_t row, int hd,
                        float scale)
{
    const float *kj = k + row * kv_stride + (size_t)hd * head_dim;
    double d = 0;
    for (int e = 0; e < head_dim; e++) d += (double)qi[e] * kj[e];
    return d * scale;
}

void kn_attention_ref(float *out, const float *q, int q_stride, const float *k, const float *v,
                      int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                      float scale, int causal)
{
    double *s = nk > 0 ? malloc(sizeof(double) * (size_t)nk) : NULL;
    for (int b = 0; b < batch; b++)
        for (int hd = 0; hd < heads; hd++)
            for (int i = 0; i < nq; i++) {
                const float *qi = q + ((size_t)b * nq + i) * q_stride + (size_t)hd * head_dim;
                float *o = out + ((size_t)b * nq + i) * ((size_t)heads * head_dim) + (size_t)hd * head_dim;
                if (nk <= 0) {
                    for (int e = 0; e < head_dim; e++) o[e] = 0.0f;
                    continue;
                }
                double mx = -DBL_MAX, sum = 0;
                int last = causal ? (i < nk ? i : nk - 1) : nk - 1;
                if (s) {
                    for (int j = 0; j <= last; j++) {
                        s[j] = ref_score(qi, k, kv_stride, head_dim, (size_t)b * nk + j, hd, scale);
                        if (s[j] > mx) mx = s[j];
                    }
                    for (int j = 0; j <= last; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
                    for (int e = 0; e < head_dim; e++) {
                        double acc = 0;
                        for (int j = 0; j <= last; j++)
                            acc += s[j] * v[((size_t)b * nk + j) * kv_stride + (size_t)hd * head_dim + e];
                        o[e] = (float)(acc / sum);
                    }
                    continue;
                }
                for (int j = 0; j <= last; j++) {
                    double sj = ref_score(qi, k, kv_stride, head_dim, (size_t)b * nk + j, hd, scale);
                    if (sj > mx) mx = sj;
                }
                for (int j = 0; j <= last; j++)
                    sum += exp(ref_score(qi, k, kv_stride, head_dim, (size_t)b * nk + j, hd, scale) - mx);
                for (int e = 0; e < head_dim; e++) o[e] = 0.0f;
                for (int j = 0; j <= last; j++) {
                    double p = exp(ref_score(qi, k, kv_stride, head_dim, (size_t)b * nk + j, hd, scale) - mx) / sum;
                    const float *vj = v + ((size_t)b * nk + j) * kv_stride + (size_t)hd * head_dim;
                    for (int e = 0; e < head_dim; e++) o[e] = (float)(o[e] + p * vj[e]);
                }
            }
    free(s);
}

void kn_layer_norm_ref(float *y, const float *x, int rows, int dim, const float *gamma,
                       const float *beta, float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        double mean = 0, var = 0;
        for (int i = 0; i < dim; i++) mean += xr[i];
        mean /= dim;
        for (int i = 0; i < dim; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= dim;
        double inv = 1.0 / sqrt(var + eps);
        for (int i = 0; i < dim; i++)
            y[(size_t)r * dim + i] = (float)((xr[i] - mean) * inv * gamma[i] + beta[i]);
    }
}

void kn_silu_ref(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] / (1.0 + exp(-(double)x[i])));
}

static double gelu_d(double v) { return 0.5 * v * (1.0 + erf(v * 0.70710678118654752440)); }

void kn_gelu_ref(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)gelu_d(x[i]);
}

void kn_quick_gelu_ref(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] / (1.0 + exp(-1.702 * (double)x[i])));
}

void kn_geglu_ref(float *y, const float *x, int rows, int dim)
{
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++) {
            const float *a = x + (size_t)r * 2 * dim;
            y[(size_t)r * dim + i] = (float)(a[i] * gelu_d(a[dim + i]));
        }
}

void kn_softmax_ref(float *x, int rows, int n)
{
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * n;
        double mx = -DBL_MAX, sum = 0;
        for (int i = 0; i < n; i++) if (xr[i] > mx) mx = xr[i];
        for (int i = 0; i < n; i++) sum += exp(xr[i] - mx);
        for (int i = 0; i < n; i++) xr[i] = (float)(exp(xr[i] - mx) / sum);
    }
}

void kn_conv2d_rows_ref(const kn_conv *c, float *y, const float *x, int up2, int h, int w, int r0, int r1)
{
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w), sh = up2 ? h / 2 : h, sw = up2 ? w / 2 : w;
    for (int co = 0; co < c->cout; co++)
        for (int oy = r0; oy < r1; oy++)
            for (int ox = 0; ox < ow; ox++) {
                double acc = c->bias ? c->bias[co] : 0.0;
                for (int ci = 0; ci < c->cin; ci++)
                    for (int ky = 0; ky < c->kh; ky++)
                        for (int kx = 0; kx < c->kw; kx++) {
                            int iy = oy * c->stride + ky - c->pad_t, ix = ox * c->stride + kx - c->pad_l;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                            if (up2) iy /= 2, ix /= 2;
                            acc += (double)x[((size_t)ci * sh + iy) * sw + ix] *
                                   mat_at(&c->w, co, (ci * c->kh + ky) * c->kw + kx);
                        }
                y[((size_t)co * oh + oy) * ow + ox] = (float)acc;
            }
}

void kn_group_norm_apply_ref(float *y, const float *x, int c, int hw, int groups, const float *mean,
                             const float *rstd, const float *gamma, const float *beta, int silu)
{
    int cg = c / groups;
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < hw; i++) {
            int g = ch / cg;
            double v = ((double)x[(size_t)ch * hw + i] - mean[g]) * rstd[g] * gamma[ch] + beta[ch];
            if (silu) v = v / (1.0 + exp(-v));
            y[(size_t)ch * hw + i] = (float)v;
        }
}

void kn_group_stats_add_ref(double *sum, double *sumsq, double *count, const float *x, int c, int h,
                            int w, int groups, int y0, int y1, int x0, int x1)
{
    int cg = c / groups;
    for (int ch = 0; ch < c; ch++)
        for (int yy = y0; yy < y1; yy++)
            for (int xx = x0; xx < x1; xx++) {
                double v = x[((size_t)ch * h + yy) * w + xx];
                sum[ch / cg] += v;
                sumsq[ch / cg] += v * v;
                count[ch / cg] += 1;
            }
}
