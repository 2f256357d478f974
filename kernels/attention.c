/* Attention (first version: online softmax, a row at a time). */
#include "kernels/kernels.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
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
