/* Flash-style multi-head attention on the GEMM micro-kernels.
 *
 * Per (batch, head), K and V are packed once as A-side panels: K as [key][dim]
 * rows, V transposed as [dim][key] rows. Then per block of NR queries (the
 * micro-kernel's vector width), scores are computed transposed,
 * S^T [keys][queries] = K . Q^T, so that the online softmax runs down columns
 * (one vector lane per query, no horizontal reductions) and P^T is already
 * the packed B operand of O^T += V^T . P^T. Memory: the packed K/V (about the
 * size of K and V) plus per thread a block of KB x NR scores; never nq x nk. */
#include "kernels/gemm.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define KB_TARGET 256 /* keys per block */

typedef struct attn_job {
    const float *q, *k, *v;
    float *out;
    int q_stride, kv_stride, batch, nq, nk, heads, d;
    float scale;
    int causal;
    const gemm_arch *arch;
    int nk_pad, d_pad, kb;   /* keys rounded to MR, dims rounded to MR, keys per block */
    float *kp;               /* packed K and V^T for every (batch, head) */
    int bf16;                /* also as bf16 pairs, and the products in bf16 */
    uint32_t *kp2;
    const float *zeros;
} attn_job;

static size_t kv_pack_size(const attn_job *j) { return (size_t)j->nk_pad * j->d + (size_t)j->d_pad * j->nk; }
static size_t kv_pack_size2(const attn_job *j)
{
    return (size_t)j->nk_pad * ((j->d + 1) / 2) + (size_t)j->d_pad * ((j->nk + 1) / 2);
}

static void pack_kv(const attn_job *j, int b, int h)
{
    const gemm_arch *a = j->arch;
    float *kp = j->kp + ((size_t)b * j->heads + h) * kv_pack_size(j), *vp = kp + (size_t)j->nk_pad * j->d;
    size_t off = (size_t)b * j->nk * j->kv_stride + (size_t)h * j->d;
    gemm_operand k = {.kind = OP_ROWS, .p = j->k + off, .ld = j->kv_stride};
    gemm_operand vt = {.kind = OP_COLS, .p = j->v + off, .ld = j->kv_stride};
    gemm_pack(&k, 0, j->nk, kp, 0, j->nk_pad, 0, j->d, a->mr);     /* [key panel][d][MR] */
    if (j->nk > 0)
        gemm_pack(&vt, 0, j->d, vp, 0, j->d_pad, 0, j->nk, a->mr); /* [dim panel][nk][MR] */
    if (j->bf16) {
        uint32_t *kp2 = j->kp2 + ((size_t)b * j->heads + h) * kv_pack_size2(j);
        uint32_t *vp2 = kp2 + (size_t)j->nk_pad * ((j->d + 1) / 2);
        gemm_panels_to_bf16(a, kp2, kp, j->nk_pad / a->mr, j->d, a->mr, j->zeros);
        gemm_panels_to_bf16(a, vp2, vp, j->d_pad / a->mr, j->nk, a->mr, j->zeros);
    }
}

typedef struct attn_scratch {
    float *qt, *st, *ot, *m, *l, *corr;
    uint32_t *qt2, *pt2; /* bf16 mode: Q^T and P^T as pairs */
} attn_scratch;

/* Queries q0..q0+NR of (b, h). */
static void attend_block(const attn_job *j, int b, int h, int q0, attn_scratch *s)
{
    const gemm_arch *a = j->arch;
    int MR = a->mr, NR = a->nr, d = j->d;
    int qv = j->nq - q0 < NR ? j->nq - q0 : NR;
    const float *kp = j->kp + ((size_t)b * j->heads + h) * kv_pack_size(j), *vp = kp + (size_t)j->nk_pad * d;
    gemm_operand q = {.kind = OP_ROWS, .p = j->q + (size_t)b * j->nq * j->q_stride + (size_t)h * d, .ld = j->q_stride};
    gemm_pack(&q, 0, j->nq, s->qt, q0, NR, 0, d, NR); /* Q^T block [d][NR] */
    int d2 = (d + 1) / 2, nk2 = (j->nk + 1) / 2;
    const uint32_t *kp2 = NULL, *vp2 = NULL;
    if (j->bf16) {
        kp2 = j->kp2 + ((size_t)b * j->heads + h) * kv_pack_size2(j);
        vp2 = kp2 + (size_t)j->nk_pad * d2;
        gemm_panels_to_bf16(a, s->qt2, s->qt, 1, d, NR, j->zeros);
    }
    memset(s->ot, 0, sizeof(float) * j->d_pad * NR);
    for (int c = 0; c < NR; c++) { s->m[c] = -FLT_MAX; s->l[c] = 0.0f; }

    /* causal: the last key any query of this block sees */
    int key_end = j->nk;
    if (j->causal && q0 + qv < key_end) key_end = q0 + qv;
    for (int j0 = 0; j0 < key_end; j0 += j->kb) {
        int kb = key_end - j0 < j->kb ? key_end - j0 : j->kb;
        if (j->bf16) {
            for (int i = 0; i < kb; i += MR)
                a->bf16(d2, kp2 + (size_t)(j0 + i) * d2, s->qt2, s->st + (size_t)i * NR, NR, kb - i < MR ? kb - i : MR, NR, 0);
        } else {
            for (int i = 0; i < kb; i += MR)
                a->f32(d, kp + (size_t)(j0 + i) * d, s->qt, s->st + (size_t)i * NR, NR, kb - i < MR ? kb - i : MR, NR, 0);
        }
        if (j->causal && j0 + kb - 1 > q0) /* keys past a query's own position */
            for (int r = 0; r < kb; r++)
                for (int c = 0; c < NR; c++)
                    if (j0 + r > q0 + c) s->st[r * NR + c] = -FLT_MAX;
        a->softmax_cols(s->st, kb, j->scale, s->m, s->l, s->corr);
        for (int e = 0; e < j->d_pad; e++)
            for (int c = 0; c < NR; c++) s->ot[e * NR + c] *= s->corr[c];
        if (j->bf16) { /* j0 is even (kb is), so key pairs line up */
            gemm_panels_to_bf16(a, s->pt2, s->st, 1, kb, NR, j->zeros);
            for (int e = 0; e < d; e += MR)
                a->bf16((kb + 1) / 2, vp2 + (size_t)e * nk2 + (size_t)(j0 / 2) * MR, s->pt2, s->ot + (size_t)e * NR, NR,
                        d - e < MR ? d - e : MR, NR, 1);
        } else {
            for (int e = 0; e < d; e += MR)
                a->f32(kb, vp + (size_t)e * j->nk + (size_t)j0 * MR, s->st, s->ot + (size_t)e * NR, NR,
                       d - e < MR ? d - e : MR, NR, 1);
        }
    }
    int od = j->heads * d;
    for (int c = 0; c < qv; c++) {
        float inv = 1.0f / s->l[c], *o = j->out + ((size_t)b * j->nq + q0 + c) * od + (size_t)h * d;
        for (int e = 0; e < d; e++) o[e] = s->ot[e * NR + c] * inv;
    }
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* The job, its thread count and where its buffers live in the scratch:
 * [packed K/V^T][bf16 pairs][slice of thread 0][slice 1]... */
typedef struct attn_layout {
    attn_job j;
    int threads;
    size_t kp_bytes, kp2_bytes, slice, total;
} attn_layout;

/* Returns 0 when there is nothing to attend over (no queries, or no keys). */
static int attn_layout_of(attn_layout *L, int batch, int nq, int nk, int heads, int head_dim,
                          fm_precision prec, int max_threads)
{
    memset(L, 0, sizeof *L);
    if (batch <= 0 || nq <= 0 || heads <= 0 || head_dim <= 0 || nk <= 0) return 0;
    const gemm_arch *a = gemm_arch_get();
    attn_job *j = &L->j;
    *j = (attn_job){
        .batch = batch, .nq = nq, .nk = nk, .heads = heads, .d = head_dim, .arch = a,
        .nk_pad = (nk + a->mr - 1) / a->mr * a->mr, .d_pad = (head_dim + a->mr - 1) / a->mr * a->mr,
        .kb = KB_TARGET / a->mr * a->mr / 2 * 2,
        .bf16 = prec == FM_PREC_BF16 && a->bf16,
    };
    size_t bh = (size_t)batch * heads, NR = (size_t)a->nr;
    double work = 4.0 * nq * nk * head_dim * (double)bh;
    L->threads = work < 2e6 || max_threads < 1 ? 1 : max_threads;
    L->kp_bytes = align64(sizeof(float) * kv_pack_size(j) * bh);
    L->kp2_bytes = j->bf16 ? align64(sizeof(uint32_t) * kv_pack_size2(j) * bh) : 0;
    size_t d2 = (size_t)(head_dim + 1) / 2, kb2 = (size_t)(j->kb + 1) / 2;
    L->slice = align64(sizeof(float) * ((size_t)head_dim * NR + (size_t)j->kb * NR + (size_t)j->d_pad * NR +
                                        3 * 64 + (d2 + kb2) * NR));
    L->total = L->kp_bytes + L->kp2_bytes + (size_t)L->threads * L->slice;
    return 1;
}

size_t kn_attention_scratch(int batch, int nq, int nk, int heads, int head_dim, fm_precision prec,
                            int threads)
{
    attn_layout L;
    return attn_layout_of(&L, batch, nq, nk, heads, head_dim, prec, threads) ? L.total : 0;
}

/* softmax over nothing: define the output as zero */
static void attention_no_keys(float *out, int batch, int nq, int heads, int head_dim)
{
    for (size_t i = 0; i < (size_t)batch * nq; i++)
        memset(out + i * heads * head_dim, 0, sizeof(float) * heads * head_dim);
}

int kn_attention_ws(const kn_scratch *s, float *out, const float *q, int q_stride, const float *k,
                    const float *v, int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                    float scale, int causal, fm_precision prec)
{
    if (batch <= 0 || nq <= 0 || heads <= 0 || head_dim <= 0) return 0;
    if (nk <= 0) {
        attention_no_keys(out, batch, nq, heads, head_dim);
        return 0;
    }
    attn_layout L;
    attn_layout_of(&L, batch, nq, nk, heads, head_dim, prec, s ? s->threads : 1);
    if (!s || !s->base || s->bytes < L.total) return -1;
    static const float zeros[64];
    attn_job j = L.j;
    j.q = q, j.k = k, j.v = v, j.out = out;
    j.q_stride = q_stride, j.kv_stride = kv_stride, j.scale = scale, j.causal = causal;
    j.zeros = zeros;
    char *base = s->base;
    j.kp = (float *)base;
    j.kp2 = j.bf16 ? (uint32_t *)(base + L.kp_bytes) : NULL;
    base += L.kp_bytes + L.kp2_bytes;
    const gemm_arch *a = j.arch;
    int qblocks = (nq + a->nr - 1) / a->nr, bh = batch * heads;
    long tasks = (long)bh * qblocks;
#pragma omp parallel num_threads(L.threads) if (L.threads > 1)
    {
#pragma omp for schedule(static)
        for (int t = 0; t < bh; t++) pack_kv(&j, t / heads, t % heads);
        int NR = a->nr;
        attn_scratch sc;
        size_t d2 = (size_t)(head_dim + 1) / 2;
        float *mem = (float *)(base + (size_t)omp_get_thread_num() * L.slice);
        sc.qt = mem;
        sc.st = sc.qt + (size_t)head_dim * NR;
        sc.ot = sc.st + (size_t)j.kb * NR;
        sc.m = sc.ot + (size_t)j.d_pad * NR;
        sc.l = sc.m + 64;
        sc.corr = sc.l + 64;
        sc.qt2 = (uint32_t *)(sc.corr + 64);
        sc.pt2 = sc.qt2 + d2 * NR;
#pragma omp for schedule(dynamic, 4)
        for (long t = 0; t < tasks; t++) {
            int bhi = (int)(t / qblocks), qb = (int)(t % qblocks);
            attend_block(&j, bhi / heads, bhi % heads, qb * NR, &sc);
        }
    }
    return 0;
}

void kn_attention(float *out, const float *q, int q_stride, const float *k, const float *v,
                  int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                  float scale, int causal)
{
    kn_attention_prec(out, q, q_stride, k, v, kv_stride, batch, nq, nk, heads, head_dim, scale,
                      causal, FM_PREC_FP32);
}

void kn_attention_prec(float *out, const float *q, int q_stride, const float *k, const float *v,
                       int kv_stride, int batch, int nq, int nk, int heads, int head_dim,
                       float scale, int causal, fm_precision prec)
{
    int threads = kn_scratch_threads();
    size_t bytes = kn_attention_scratch(batch, nq, nk, heads, head_dim, prec, threads);
    kn_scratch s = {.base = bytes ? core_alloc(bytes) : NULL, .bytes = bytes, .threads = threads};
    if ((bytes && !s.base) ||
        kn_attention_ws(&s, out, q, q_stride, k, v, kv_stride, batch, nq, nk, heads, head_dim, scale, causal, prec))
        kn_attention_ref(out, q, q_stride, k, v, kv_stride, batch, nq, nk, heads, head_dim, scale, causal);
    core_free(s.base);
}
