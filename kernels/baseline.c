/* First-generation kernels: correct, parallel, cache-aware enough to run the
 * tiny models quickly. The performance work replaces these behind the same
 * API (kernels.h); the reference loops stay as their contract. */
#include "kernels/kernels.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int fm_mat_pack(fm_mat *m, fm_precision prec)
{
    (void)m;
    (void)prec;
    return 0;
}

void fm_mat_release(fm_mat *m)
{
    fm_free(m->packed);
    m->packed = NULL;
    m->packed_kind = 0;
}

/* Rows r0..r0+nr of m as float32 into dst [nr][cols]. */
static void mat_rows_f32(float *dst, const fm_mat *m, int r0, int nr)
{
    size_t es = fm_dtype_size(m->dtype);
    fm_convert_to_f32(dst, (const char *)m->data + (size_t)r0 * m->cols * es, m->dtype,
                      (size_t)nr * m->cols);
}

void fm_sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              int trans_b, float beta, float *C, int ldc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f)
            memset(c, 0, sizeof(float) * N);
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
        const float *a = A + (size_t)i * lda;
        if (trans_b) {
            for (int j = 0; j < N; j++) {
                const float *b = B + (size_t)j * ldb;
                float acc = 0;
                for (int k = 0; k < K; k++) acc += a[k] * b[k];
                c[j] += acc;
            }
        } else {
            for (int k = 0; k < K; k++) {
                float av = a[k];
                const float *b = B + (size_t)k * ldb;
                for (int j = 0; j < N; j++) c[j] += av * b[j];
            }
        }
    }
}

#define LIN_ROWS 16 /* weight rows converted at a time, per thread */

void fm_linear(float *y, const float *x, int n, const fm_mat *w, const float *bias)
{
    int out = w->rows, in = w->cols;
#pragma omp parallel
    {
        float *wt = malloc(sizeof(float) * LIN_ROWS * in);
#pragma omp for schedule(static)
        for (int o0 = 0; o0 < out; o0 += LIN_ROWS) {
            int nr = out - o0 < LIN_ROWS ? out - o0 : LIN_ROWS;
            mat_rows_f32(wt, w, o0, nr);
            for (int i = 0; i < n; i++) {
                const float *xi = x + (size_t)i * in;
                for (int r = 0; r < nr; r++) {
                    const float *wr = wt + (size_t)r * in;
                    float acc = 0;
                    for (int k = 0; k < in; k++) acc += xi[k] * wr[k];
                    y[(size_t)i * out + o0 + r] = acc + (bias ? bias[o0 + r] : 0.0f);
                }
            }
        }
        free(wt);
    }
}

/* im2col for one image: col [cin*kh*kw][oh*ow]. */
static void im2col(float *col, const float *x, const fm_conv *c, int h, int w, int oh, int ow)
{
    int K = c->cin * c->kh * c->kw;
#pragma omp parallel for schedule(static)
    for (int kk = 0; kk < K; kk++) {
        int ci = kk / (c->kh * c->kw), ky = (kk / c->kw) % c->kh, kx = kk % c->kw;
        float *dst = col + (size_t)kk * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            int iy = oy * c->stride + ky - c->pad_t;
            for (int ox = 0; ox < ow; ox++) {
                int ix = ox * c->stride + kx - c->pad_l;
                dst[oy * ow + ox] = (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                        ? x[((size_t)ci * h + iy) * w + ix] : 0.0f;
            }
        }
    }
}

void fm_conv2d(float *y, const float *x, const fm_conv *c, int n, int h, int w)
{
    int oh = fm_conv_out_h(c, h), ow = fm_conv_out_w(c, w), K = c->cin * c->kh * c->kw;
    size_t P = (size_t)oh * ow;
    int is_1x1 = c->kh == 1 && c->kw == 1 && c->stride == 1 && !c->pad_t && !c->pad_l && !c->pad_b && !c->pad_r;
    float *wf = c->w.dtype == FM_DT_F32 ? NULL : malloc(sizeof(float) * (size_t)c->cout * K);
    float *col = is_1x1 ? NULL : malloc(sizeof(float) * (size_t)K * P);
    if (wf) mat_rows_f32(wf, &c->w, 0, c->cout);
    const float *W = wf ? wf : c->w.data;
    for (int b = 0; b < n; b++) {
        const float *xb = x + (size_t)b * c->cin * h * w;
        float *yb = y + (size_t)b * c->cout * P;
        if (!is_1x1) im2col(col, xb, c, h, w, oh, ow);
        fm_sgemm(c->cout, (int)P, K, W, K, is_1x1 ? xb : col, (int)P, 0, 0.0f, yb, (int)P);
        if (c->bias)
#pragma omp parallel for schedule(static)
            for (int co = 0; co < c->cout; co++)
                for (size_t p = 0; p < P; p++) yb[co * P + p] += c->bias[co];
    }
    free(col);
    free(wf);
}

void fm_group_norm(float *y, const float *x, int n, int c, int hw, int groups, float eps,
                   const float *gamma, const float *beta, int fuse_silu)
{
    int cg = c / groups;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            size_t off = ((size_t)b * c + (size_t)g * cg) * hw, m = (size_t)cg * hw;
            const float *xg = x + off;
            float *yg = y + off;
            double sum = 0, sq = 0;
            for (size_t i = 0; i < m; i++) sum += xg[i];
            double mean = sum / m;
            for (size_t i = 0; i < m; i++) sq += (xg[i] - mean) * (xg[i] - mean);
            float inv = (float)(1.0 / sqrt(sq / m + eps)), mf = (float)mean;
            for (int ci = 0; ci < cg; ci++) {
                float s = inv * gamma[g * cg + ci], t = beta[g * cg + ci];
                float *yr = yg + (size_t)ci * hw;
                const float *xr = xg + (size_t)ci * hw;
                for (int i = 0; i < hw; i++) {
                    float v = (xr[i] - mf) * s + t;
                    yr[i] = fuse_silu ? v / (1.0f + expf(-v)) : v;
                }
            }
        }
}

/* Online-softmax attention, one query row at a time per thread. */
void fm_attention(float *out, const float *q, int q_stride, const float *k, const float *v,
                  int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                  float scale, int causal)
{
#pragma omp parallel
    {
        float *s = malloc(sizeof(float) * (size_t)nk);
        float *acc = malloc(sizeof(float) * (size_t)head_dim);
#pragma omp for schedule(static) collapse(3)
        for (int b = 0; b < batch; b++)
            for (int hd = 0; hd < heads; hd++)
                for (int i = 0; i < nq; i++) {
                    const float *qi = q + ((size_t)b * nq + i) * q_stride + (size_t)hd * head_dim;
                    const float *kb = k + (size_t)b * nk * kv_stride + (size_t)hd * head_dim;
                    const float *vb = v + (size_t)b * nk * kv_stride + (size_t)hd * head_dim;
                    int last = causal ? (i < nk ? i : nk - 1) : nk - 1;
                    float mx = -FLT_MAX, sum = 0;
                    for (int j = 0; j <= last; j++) {
                        const float *kj = kb + (size_t)j * kv_stride;
                        float d = 0;
                        for (int e = 0; e < head_dim; e++) d += qi[e] * kj[e];
                        s[j] = d * scale;
                        mx = s[j] > mx ? s[j] : mx;
                    }
                    memset(acc, 0, sizeof(float) * head_dim);
                    for (int j = 0; j <= last; j++) {
                        float p = expf(s[j] - mx);
                        sum += p;
                        const float *vj = vb + (size_t)j * kv_stride;
                        for (int e = 0; e < head_dim; e++) acc[e] += p * vj[e];
                    }
                    float *o = out + ((size_t)b * nq + i) * ((size_t)heads * head_dim) + (size_t)hd * head_dim;
                    for (int e = 0; e < head_dim; e++) o[e] = acc[e] / sum;
                }
        free(s);
        free(acc);
    }
}
