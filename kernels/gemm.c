/* The blocked GEMM driver and the operand packers (see gemm.h). */
#include "kernels/gemm.h"

#include <stdlib.h>
#include <string.h>
#include <omp.h>

const gemm_arch *gemm_arch_get(void)
{
#if defined(__x86_64__)
    switch (fm_kernel_isa()) {
    case FM_ISA_AVX512: return fm_kernel_has_bf16() ? &fm_gemm_arch_avx512_bf16 : &fm_gemm_arch_avx512;
    case FM_ISA_AVX2: return &fm_gemm_arch_avx2;
    default: break;
    }
#endif
    return &fm_gemm_arch_generic;
}

/* ---- packing ---- */

/* Row i (k0..k0+kc) of an fm_mat as float. */
static void mat_row_f32(float *dst, const fm_mat *m, int i, int k0, int kc)
{
    size_t es = fm_dtype_size(m->dtype);
    fm_convert_to_f32(dst, (const char *)m->data + ((size_t)i * m->cols + k0) * es, m->dtype, (size_t)kc);
}

/* One output row's worth (n pixels) of im2col for kernel tap k, from pixel j0. */
static void im2col_row(float *dst, const gemm_operand *op, const float *x, int k, int j0, int n)
{
    const fm_conv *c = op->conv;
    int kk = c->kh * c->kw, ci = k / kk, ky = (k % kk) / c->kw, kx = k % c->kw, s = c->stride;
    const float *xc = x + (size_t)ci * op->h * op->w;
    int oy = j0 / op->ow, ox = j0 % op->ow;
    while (n > 0) {
        int len = op->ow - ox < n ? op->ow - ox : n; /* run within output row oy */
        int iy = oy * s + ky - c->pad_t;
        if (iy < 0 || iy >= op->h) {
            memset(dst, 0, sizeof(float) * len);
        } else {
            const float *row = xc + (size_t)iy * op->w;
            int ix0 = ox * s + kx - c->pad_l; /* input column of dst[0] */
            /* valid t: 0 <= ix0 + t*s < w */
            int t0 = ix0 >= 0 ? 0 : (-ix0 + s - 1) / s;
            int t1 = ix0 >= op->w ? 0 : (op->w - 1 - ix0) / s + 1; /* first invalid past the end */
            if (t1 > len) t1 = len;
            if (t0 > t1) t0 = t1;
            for (int t = 0; t < t0; t++) dst[t] = 0.0f;
            if (s == 1)
                memcpy(dst + t0, row + ix0 + t0, sizeof(float) * (t1 - t0));
            else
                for (int t = t0; t < t1; t++) dst[t] = row[ix0 + t * s];
            for (int t = t1; t < len; t++) dst[t] = 0.0f;
        }
        dst += len;
        n -= len;
        ox = 0;
        oy++;
    }
}

void gemm_pack(const gemm_operand *op, int batch, int rows, float *dst, int i0, int ni, int k0,
               int kc, int panel)
{
    float tmp[512];
    for (int p0 = 0; p0 < ni; p0 += panel) {
        float *d = dst + (size_t)p0 * kc;
        int nv = ni - p0 < panel ? ni - p0 : panel;
        if (i0 + p0 + nv > rows) nv = rows - (i0 + p0) > 0 ? rows - (i0 + p0) : 0;
        switch (op->kind) {
        case OP_ROWS:
        case OP_MAT:
            for (int r = 0; r < nv; r++) {
                int i = i0 + p0 + r;
                for (int k1 = 0; k1 < kc; k1 += 512) {
                    int n = kc - k1 < 512 ? kc - k1 : 512;
                    const float *src;
                    if (op->kind == OP_ROWS) {
                        src = op->p + batch * op->batch_stride + (ptrdiff_t)i * op->ld + k0 + k1;
                    } else {
                        mat_row_f32(tmp, op->mat, i, k0 + k1, n);
                        src = tmp;
                    }
                    for (int k = 0; k < n; k++) d[(size_t)(k1 + k) * panel + r] = src[k];
                }
            }
            if (nv < panel)
                for (int k = 0; k < kc; k++)
                    memset(d + (size_t)k * panel + nv, 0, sizeof(float) * (panel - nv));
            break;
        case OP_COLS:
            for (int k = 0; k < kc; k++) {
                const float *src = op->p + batch * op->batch_stride + (ptrdiff_t)(k0 + k) * op->ld + i0 + p0;
                memcpy(d + (size_t)k * panel, src, sizeof(float) * nv);
                memset(d + (size_t)k * panel + nv, 0, sizeof(float) * (panel - nv));
            }
            break;
        case OP_IM2COL: {
            const float *x = op->p + batch * op->batch_stride;
            for (int k = 0; k < kc; k++) {
                im2col_row(d + (size_t)k * panel, op, x, k0 + k, i0 + p0, nv);
                memset(d + (size_t)k * panel + nv, 0, sizeof(float) * (panel - nv));
            }
            break;
        }
        }
    }
}

/* Packed f32 panels [kc][panel] -> bf16 pair panels [(kc+1)/2][panel]. */
static void panels_to_bf16(const gemm_arch *arch, uint32_t *dst, const float *src, int n_panels,
                           int kc, int panel, const float *zeros)
{
    int kc2 = (kc + 1) / 2;
    for (int p = 0; p < n_panels; p++) {
        const float *s = src + (size_t)p * kc * panel;
        uint32_t *d = dst + (size_t)p * kc2 * panel;
        for (int k = 0; k < kc2; k++) {
            const float *odd = 2 * k + 1 < kc ? s + (size_t)(2 * k + 1) * panel : zeros;
            arch->pair_bf16(d + (size_t)k * panel, s + (size_t)2 * k * panel, odd, panel);
        }
    }
}

/* ---- driver ---- */

typedef struct tiling {
    int mt, nt;       /* task tile */
    int tm, tn;       /* tasks along M and N */
} tiling;

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

static tiling choose_tiling(const gemm_problem *p, const gemm_arch *a, int threads)
{
    tiling t;
    t.mt = round_up(p->M, a->mr);
    if (t.mt > 4 * a->mc) t.mt = 4 * a->mc;
    t.nt = round_up(p->N, a->nr);
    if (t.nt > 24 * a->nr) t.nt = 24 * a->nr;
    for (;;) {
        t.tm = (p->M + t.mt - 1) / t.mt;
        t.tn = (p->N + t.nt - 1) / t.nt;
        long tasks = (long)t.tm * t.tn * p->batch;
        if (tasks >= 4L * threads) break;
        /* split the larger side, keeping panels whole */
        if (t.nt >= t.mt && t.nt > 4 * a->nr) t.nt = round_up(t.nt / 2, a->nr);
        else if (t.mt > 2 * a->mr) t.mt = round_up(t.mt / 2, a->mr);
        else if (t.nt > a->nr) t.nt = round_up(t.nt / 2, a->nr);
        else break;
    }
    return t;
}

static void init_c_tile(const gemm_problem *p, float *c, int m0, int mv, int n0, int nv)
{
    for (int i = 0; i < mv; i++) {
        float *ci = c + (ptrdiff_t)i * p->ldc;
        float bm = p->bias_m ? p->bias_m[m0 + i] : 0.0f;
        if (p->beta == 0.0f) {
            if (p->bias_n) for (int j = 0; j < nv; j++) ci[j] = p->bias_n[n0 + j] + bm;
            else for (int j = 0; j < nv; j++) ci[j] = bm;
        } else {
            if (p->beta != 1.0f) for (int j = 0; j < nv; j++) ci[j] *= p->beta;
            if (p->bias_n) for (int j = 0; j < nv; j++) ci[j] += p->bias_n[n0 + j];
            if (bm != 0.0f) for (int j = 0; j < nv; j++) ci[j] += bm;
        }
    }
}

typedef struct gemm_bufs {
    float *a, *b;       /* f32 packed blocks */
    uint32_t *a2, *b2;  /* bf16 pair blocks */
    float *zeros;
} gemm_bufs;

static void run_task(const gemm_problem *p, const gemm_arch *arch, const tiling *t, long task,
                     gemm_bufs *bf)
{
    int b = (int)(task / ((long)t->tm * t->tn));
    long r = task % ((long)t->tm * t->tn);
    int m0 = (int)(r / t->tn) * t->mt, n0 = (int)(r % t->tn) * t->nt;
    int mt = p->M - m0 < t->mt ? p->M - m0 : t->mt, nt = p->N - n0 < t->nt ? p->N - n0 : t->nt;
    float *c = p->c + b * p->c_batch_stride + (ptrdiff_t)m0 * p->ldc + n0;
    int MR = arch->mr, NR = arch->nr;

    init_c_tile(p, c, m0, mt, n0, nt);
    for (int k0 = 0; k0 < p->K; k0 += arch->kc) {
        int kc = p->K - k0 < arch->kc ? p->K - k0 : arch->kc, kc2 = (kc + 1) / 2;
        int nt_pad = round_up(nt, NR);
        gemm_pack(&p->b, b, p->N, bf->b, n0, nt_pad, k0, kc, NR);
        if (p->bf16) panels_to_bf16(arch, bf->b2, bf->b, nt_pad / NR, kc, NR, bf->zeros);
        for (int i0 = 0; i0 < mt; i0 += arch->mc) {
            int mc = mt - i0 < arch->mc ? mt - i0 : arch->mc, mc_pad = round_up(mc, MR);
            gemm_pack(&p->a, b, p->M, bf->a, m0 + i0, mc_pad, k0, kc, MR);
            if (p->bf16) panels_to_bf16(arch, bf->a2, bf->a, mc_pad / MR, kc, MR, bf->zeros);
            for (int j = 0; j < nt; j += NR) {
                int nv = nt - j < NR ? nt - j : NR;
                for (int i = 0; i < mc; i += MR) {
                    int mv = mc - i < MR ? mc - i : MR;
                    float *ct = c + (ptrdiff_t)(i0 + i) * p->ldc + j;
                    if (p->bf16)
                        arch->bf16(kc2, bf->a2 + (size_t)i * kc2, bf->b2 + (size_t)j * kc2, ct, p->ldc, mv, nv);
                    else
                        arch->f32(kc, bf->a + (size_t)i * kc, bf->b + (size_t)j * kc, ct, p->ldc, mv, nv);
                }
            }
        }
    }
}

void gemm_run(const gemm_problem *p)
{
    if (p->M <= 0 || p->N <= 0 || p->batch <= 0) return;
    const gemm_arch *arch = gemm_arch_get();
    gemm_problem q = *p;
    if (q.bf16 && !arch->bf16) q.bf16 = 0; /* no native bf16: full precision */
    double flops = 2.0 * q.M * q.N * (double)(q.K > 0 ? q.K : 1) * q.batch;
    int threads = flops < 2e6 ? 1 : omp_get_max_threads();
    tiling t = choose_tiling(&q, arch, threads);
    long tasks = (long)t.tm * t.tn * q.batch;
    int kc = arch->kc;
    size_t a_sz = (size_t)round_up(arch->mc, arch->mr) * kc, b_sz = (size_t)round_up(t.nt, arch->nr) * kc;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && tasks > 1)
    {
        gemm_bufs bf = {0};
        bf.a = fm_alloc(sizeof(float) * a_sz);
        bf.b = fm_alloc(sizeof(float) * b_sz);
        if (q.bf16) {
            bf.a2 = fm_alloc(sizeof(uint32_t) * (a_sz / 2 + arch->mc + arch->mr));
            bf.b2 = fm_alloc(sizeof(uint32_t) * (b_sz / 2 + t.nt + arch->nr));
            bf.zeros = fm_calloc(sizeof(float) * (arch->nr > arch->mr ? arch->nr : arch->mr));
        }
        int ok = bf.a && bf.b && (!q.bf16 || (bf.a2 && bf.b2 && bf.zeros));
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < tasks; task++)
            if (ok) run_task(&q, arch, &t, task, &bf);
        fm_free(bf.a); fm_free(bf.b); fm_free(bf.a2); fm_free(bf.b2); fm_free(bf.zeros);
    }
    (void)failed; /* the API has no error path; out of memory leaves C incomplete */
}

/* ---- public entry points ---- */

void fm_sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              int trans_b, float beta, float *C, int ldc)
{
    gemm_problem p = {
        .M = M, .N = N, .K = K, .batch = 1,
        .a = {.kind = OP_ROWS, .p = A, .ld = lda},
        .b = {.kind = trans_b ? OP_ROWS : OP_COLS, .p = B, .ld = ldb},
        .c = C, .ldc = ldc, .beta = beta,
    };
    gemm_run(&p);
}

void fm_linear(float *y, const float *x, int n, const fm_mat *w, const float *bias)
{
    gemm_problem p = {
        .M = n, .N = w->rows, .K = w->cols, .batch = 1,
        .a = {.kind = OP_ROWS, .p = x, .ld = w->cols},
        .b = {.kind = OP_MAT, .mat = w},
        .c = y, .ldc = w->rows, .beta = 0.0f, .bias_n = bias,
        .bf16 = w->packed_kind == FM_PACKED_BF16,
    };
    gemm_run(&p);
}

void fm_conv2d(float *y, const float *x, const fm_conv *c, int n, int h, int w)
{
    int oh = fm_conv_out_h(c, h), ow = fm_conv_out_w(c, w);
    int is_1x1 = c->kh == 1 && c->kw == 1 && c->stride == 1 && !c->pad_t && !c->pad_l && !c->pad_b && !c->pad_r;
    gemm_problem p = {
        .M = c->cout, .N = oh * ow, .K = c->cin * c->kh * c->kw, .batch = n,
        .a = {.kind = OP_MAT, .mat = &c->w},
        .c = y, .ldc = (ptrdiff_t)oh * ow, .c_batch_stride = (ptrdiff_t)c->cout * oh * ow,
        .beta = 0.0f, .bias_m = c->bias,
        .bf16 = c->w.packed_kind == FM_PACKED_BF16,
    };
    if (is_1x1)
        p.b = (gemm_operand){.kind = OP_COLS, .p = x, .ld = (ptrdiff_t)h * w, .batch_stride = (ptrdiff_t)c->cin * h * w};
    else
        p.b = (gemm_operand){.kind = OP_IM2COL, .p = x, .batch_stride = (ptrdiff_t)c->cin * h * w,
                             .conv = c, .h = h, .w = w, .oh = oh, .ow = ow};
    gemm_run(&p);
}

/* Weights stay in their file dtype and are converted while packing (the
 * packed blocks are per call and bounded), so packing only records the
 * precision: no extra memory per matrix. */
int fm_mat_pack(fm_mat *m, fm_precision prec)
{
    m->packed_kind = prec == FM_PREC_BF16 ? FM_PACKED_BF16 : 0;
    return 0;
}

void fm_mat_release(fm_mat *m)
{
    fm_free(m->packed);
    m->packed = NULL;
    m->packed_kind = 0;
}
