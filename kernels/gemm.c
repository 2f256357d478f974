/* The blocked GEMM driver and the operand packers (see gemm.h). */
#include "kernels/gemm.h"

#include <stdlib.h>
#include <string.h>
#include <omp.h>

const gemm_arch *gemm_arch_get(void)
{
#if defined(__x86_64__)
    switch (kn_isa_chosen()) {
    case FM_ISA_AVX512: return kn_has_bf16() ? &gemm_arch_avx512_bf16 : &gemm_arch_avx512;
    case FM_ISA_AVX2: return &gemm_arch_avx2;
    default: break;
    }
#endif
    return &gemm_arch_generic;
}

/* ---- packing ---- */

/* Row i (k0..k0+kc) of an kn_mat as float. */
static void mat_row_f32(float *dst, const kn_mat *m, int i, int k0, int kc)
{
    if (core_dtype_is_quant(m->dtype)) {
        kn_mat_row_range(dst, m, i, k0, kc);
        return;
    }
    size_t es = core_dtype_size(m->dtype);
    core_convert_to_f32(dst, (const char *)m->data + ((size_t)i * m->cols + k0) * es, m->dtype, (size_t)kc);
}

/* im2col columns j0..j0+nv (pixels; with folded batches, pixel j of the
 * batch-concatenated maps) for taps k0..k0+kc into one panel. */
static void pack_im2col(const gemm_operand *op, int batch, float *d, int j0, int nv, int k0, int kc,
                        int panel)
{
    const kn_conv *c = op->conv;
    int P = op->oh * op->ow, s = c->stride, h = op->h, w = op->w;
    struct run { const float *x; int oy, ox, len, at; } runs[64]; /* panel <= 64 */
    int nruns = 0;
    for (int at = 0, j = j0; at < nv;) {
        int b = j / P, p = j % P, ox = p % op->ow;
        int len = op->ow - ox < nv - at ? op->ow - ox : nv - at;
        runs[nruns++] = (struct run){op->p + (batch + b) * op->batch_stride, p / op->ow, ox, len, at};
        j += len;
        at += len;
    }
    int kk = c->kh * c->kw, ci = k0 / kk, ky = (k0 % kk) / c->kw, kx = k0 % c->kw;
    for (int k = 0; k < kc; k++) {
        float *dk = d + (size_t)k * panel;
        for (int r = 0; r < nruns; r++) {
            const struct run *u = &runs[r];
            float *o = dk + u->at;
            int iy = u->oy * s + ky - c->pad_t, len = u->len;
            if (iy < 0 || iy >= h) {
                for (int t = 0; t < len; t++) o[t] = 0.0f;
                continue;
            }
            const float *row = u->x + ((size_t)ci * h + iy) * w;
            int ix0 = u->ox * s + kx - c->pad_l; /* input column of o[0] */
            if (s == 1 && ix0 >= 0 && ix0 + len <= w) { /* interior: a plain copy */
                if (len == 32) memcpy(o, row + ix0, 32 * sizeof(float));
                else memcpy(o, row + ix0, (size_t)len * sizeof(float));
                continue;
            }
            int t0 = ix0 >= 0 ? 0 : (-ix0 + s - 1) / s;          /* first t with ix >= 0 */
            int t1 = ix0 >= w ? 0 : (w - 1 - ix0) / s + 1;       /* first t with ix >= w */
            if (t1 > len) t1 = len;
            if (t0 > t1) t0 = t1;
            for (int t = 0; t < t0; t++) o[t] = 0.0f;
            if (s == 1)
                for (int t = t0; t < t1; t++) o[t] = row[ix0 + t];
            else
                for (int t = t0; t < t1; t++) o[t] = row[ix0 + t * s];
            for (int t = t1; t < len; t++) o[t] = 0.0f;
        }
        for (int t = nv; t < panel; t++) dk[t] = 0.0f;
        if (++kx == c->kw) {
            kx = 0;
            if (++ky == c->kh) { ky = 0; ci++; }
        }
    }
}

void gemm_pack(const gemm_operand *op, int batch, int rows, float *dst, int i0, int ni, int k0,
               int kc, int panel)
{
    float tmp[32 * 512]; /* converted weight rows of one panel */
    const gemm_arch *arch = gemm_arch_get();
    for (int p0 = 0; p0 < ni; p0 += panel) {
        float *d = dst + (size_t)p0 * kc;
        int nv = ni - p0 < panel ? ni - p0 : panel;
        if (i0 + p0 + nv > rows) nv = rows - (i0 + p0) > 0 ? rows - (i0 + p0) : 0;
        switch (op->kind) {
        case OP_ROWS:
        case OP_MAT: {
            /* k outer, rows inner: contiguous stores into the panel */
            const float *src[64]; /* panel <= 64 */
            int whole = 1;          /* every row is in src (none packed slowly) */
            for (int r = 0; r < nv; r++) {
                int i = i0 + p0 + r;
                if (op->kind == OP_ROWS)
                    src[r] = op->p + batch * op->batch_stride + (ptrdiff_t)i * op->ld + k0;
                else if (op->mat->dtype == FM_DT_F32)
                    src[r] = (const float *)op->mat->data + (size_t)i * op->mat->cols + k0;
                else if ((size_t)(r + 1) * kc <= sizeof tmp / sizeof *tmp) {
                    mat_row_f32(tmp + (size_t)r * kc, op->mat, i, k0, kc);
                    src[r] = tmp + (size_t)r * kc;
                } else { /* beyond the scratch (no caller packs such slices): slowly */
                    for (int k = 0; k < kc; k++) {
                        mat_row_f32(tmp, op->mat, i, k0 + k, 1);
                        d[(size_t)k * panel + r] = tmp[0];
                    }
                    src[r] = NULL;
                    whole = 0;
                }
            }
            if (whole && arch->pack_rows) {
                arch->pack_rows(d, src, nv, kc, panel);
                break;
            }
            for (int k = 0; k < kc; k++) {
                float *dk = d + (size_t)k * panel;
                for (int r = 0; r < nv; r++)
                    if (src[r]) dk[r] = src[r][k];
                for (int r = nv; r < panel; r++) dk[r] = 0.0f;
            }
            break;
        }
        case OP_COLS: {
            int i = i0 + p0, bi = batch;
            if (op->fold) {
                bi += i / op->fold;
                i %= op->fold;
                if (nv > op->fold - i) { /* straddles two items: element by element */
                    for (int k = 0; k < kc; k++)
                        for (int r = 0; r < panel; r++) {
                            int ir = i0 + p0 + r;
                            d[(size_t)k * panel + r] = r < nv ? op->p[(batch + ir / op->fold) * op->batch_stride +
                                                                        (ptrdiff_t)(k0 + k) * op->ld + ir % op->fold] : 0.0f;
                        }
                    break;
                }
            }
            for (int k = 0; k < kc; k++) {
                const float *src = op->p + bi * op->batch_stride + (ptrdiff_t)(k0 + k) * op->ld + i;
                float *dk = d + (size_t)k * panel;
                for (int r = 0; r < nv; r++) dk[r] = src[r];
                for (int r = nv; r < panel; r++) dk[r] = 0.0f;
            }
            break;
        }
        case OP_IM2COL:
            pack_im2col(op, batch, d, i0 + p0, nv, k0, kc, panel);
            break;
        }
    }
}

/* Packed f32 panels [kc][panel] -> bf16 pair panels [(kc+1)/2][panel]. */
void gemm_panels_to_bf16(const gemm_arch *arch, uint32_t *dst, const float *src, int n_panels,
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

/* One packed f32 panel [kc][panel] -> bf16 pair rows, row r at d + r * ld:
 * each pair-row is converted whole (vectorised), then scattered down the rows. */
static void panel_to_bf16_rows(const gemm_arch *arch, uint32_t *d, size_t ld, const float *s, int kc, int panel,
                               const float *zeros)
{
    uint32_t pairs[64]; /* panel <= 64 */
    for (int k = 0; k < (kc + 1) / 2; k++) {
        const float *odd = 2 * k + 1 < kc ? s + (size_t)(2 * k + 1) * panel : zeros;
        arch->pair_bf16(pairs, s + (size_t)2 * k * panel, odd, panel);
        for (int r = 0; r < panel; r++) d[(size_t)r * ld + k] = pairs[r];
    }
}

void gemm_pack_bf16_ref(const gemm_arch *arch, const gemm_operand *op, int batch, int rows, uint32_t *dst,
                        int i0, int ni, int k0, int kc, int panel, int as_rows, float *src, const float *zeros)
{
    int n_panels = (ni + panel - 1) / panel, kc2 = (kc + 1) / 2;
    gemm_pack(op, batch, rows, src, i0, ni, k0, kc, panel);
    if (!as_rows) {
        gemm_panels_to_bf16(arch, dst, src, n_panels, kc, panel, zeros);
        return;
    }
    for (int p = 0; p < n_panels; p++)
        panel_to_bf16_rows(arch, dst + (size_t)p * kc2 * panel, (size_t)kc2, src + (size_t)p * kc * panel, kc, panel,
                           zeros);
}

size_t gemm_bf16_stage_floats(int kc, int panel)
{
    size_t chunk = (size_t)GEMM_BF16_CHUNK * panel;
    return chunk > (size_t)kc ? chunk : (size_t)kc;
}

/* Row i of a row-major or weight operand from k0: a pointer into it, or its
 * kc values converted into tmp. */
static const float *op_row_f32(const gemm_operand *op, int batch, int i, int k0, int kc, float *tmp)
{
    if (op->kind == OP_ROWS) return op->p + batch * op->batch_stride + (ptrdiff_t)i * op->ld + k0;
    if (op->mat->dtype == FM_DT_F32) return (const float *)op->mat->data + (size_t)i * op->mat->cols + k0;
    mat_row_f32(tmp, op->mat, i, k0, kc);
    return tmp;
}

void gemm_pack_bf16(const gemm_arch *arch, const gemm_operand *op, int batch, int rows, uint32_t *dst, int i0,
                    int ni, int k0, int kc, int panel, int as_rows, float *stage, const float *zeros)
{
    int kc2 = (kc + 1) / 2, padded = (ni + panel - 1) / panel * panel;
    if (as_rows && arch->row_bf16 && (op->kind == OP_ROWS || op->kind == OP_MAT)) {
        /* the row layout is each row's own order: convert row by row */
        for (int r = 0; r < padded; r++) {
            uint32_t *d = dst + (size_t)r * kc2;
            int i = i0 + r;
            if (r < ni && i < rows) arch->row_bf16(d, op_row_f32(op, batch, i, k0, kc, stage), kc);
            else memset(d, 0, sizeof(uint32_t) * kc2);
        }
        return;
    }
    for (int p0 = 0; p0 < ni; p0 += panel) {
        uint32_t *d = dst + (size_t)p0 * kc2;
        int np = ni - p0 < panel ? ni - p0 : panel;
        for (int kk = 0; kk < kc; kk += GEMM_BF16_CHUNK) { /* kk even: chunks start on a pair */
            int ch = kc - kk < GEMM_BF16_CHUNK ? kc - kk : GEMM_BF16_CHUNK;
            gemm_pack(op, batch, rows, stage, i0 + p0, np, k0 + kk, ch, panel);
            if (as_rows) panel_to_bf16_rows(arch, d + kk / 2, (size_t)kc2, stage, ch, panel, zeros);
            else gemm_panels_to_bf16(arch, d + (size_t)(kk / 2) * panel, stage, 1, ch, panel, zeros);
        }
    }
}

/* ---- driver ---- */

typedef struct tiling {
    int mt, nt;       /* task tile */
    int tm, tn;       /* tasks along M and N */
    int kc;           /* K slice: K split evenly into slices of at most arch->kc */
} tiling;

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

static tiling choose_tiling(const gemm_problem *p, const gemm_arch *a, int threads)
{
    tiling t;
    int slices = (p->K + a->kc - 1) / a->kc;
    t.kc = slices ? round_up((p->K + slices - 1) / slices, 2) : a->kc;
    /* Big tiles repack less (a task packs its A rows once per K slice and
     * its B panels once); enough tasks keep every thread busy to the end.
     * Tiles split their dimension evenly, in whole panels. */
    int m_panels = (p->M + a->mr - 1) / a->mr, n_panels = (p->N + a->nr - 1) / a->nr;
    int tm = (m_panels + a->mc / a->mr - 1) / (a->mc / a->mr), tn = (n_panels + 63) / 64;
    while ((long)tm * tn * p->batch < 4L * threads) {
        int nt = (n_panels + tn - 1) / tn, mt = (m_panels + tm - 1) / tm;
        if (nt >= 8 && nt * a->nr >= mt * a->mr) tn *= 2;
        else if (mt >= 4) tm *= 2;
        else if (nt >= 2) tn *= 2;
        else break;
    }
    if (tm > m_panels) tm = m_panels;
    if (tn > n_panels) tn = n_panels;
    t.mt = (m_panels + tm - 1) / tm * a->mr;
    t.nt = (n_panels + tn - 1) / tn * a->nr;
    t.tm = (p->M + t.mt - 1) / t.mt;
    t.tn = (p->N + t.nt - 1) / t.nt;
    return t;
}

/* Address of C[i][j] of batch item b; with folded batches column j runs over
 * the concatenated items, each c_fold columns wide. */
static float *c_at(const gemm_problem *p, int b, int i, int j)
{
    if (p->c_fold) {
        b += j / p->c_fold;
        j %= p->c_fold;
    }
    return p->c + b * p->c_batch_stride + (ptrdiff_t)i * p->ldc + j;
}

static void init_c_tile(const gemm_problem *p, int b, int m0, int mv, int n0, int nv, int nr)
{
    for (int j0 = 0; j0 < nv; j0 += nr) { /* a column chunk never crosses a batch item */
        int nj = nv - j0 < nr ? nv - j0 : nr;
        for (int i = 0; i < mv; i++) {
            float *ci = c_at(p, b, m0 + i, n0 + j0);
            float bm = p->bias_m ? p->bias_m[m0 + i] : 0.0f;
            const float *bn = p->bias_n ? p->bias_n + n0 + j0 : NULL;
            if (p->beta == 0.0f) {
                for (int j = 0; j < nj; j++) ci[j] = bm + (bn ? bn[j] : 0.0f);
            } else {
                for (int j = 0; j < nj; j++) ci[j] = p->beta * ci[j] + bm + (bn ? bn[j] : 0.0f);
            }
        }
    }
}

typedef struct gemm_bufs {
    float *a, *b;       /* f32 packed blocks (f32 mode) */
    uint32_t *a2, *b2;  /* bf16 pair blocks (bf16 mode) */
    float *zeros;
    float *stage;       /* gemm_pack_bf16's f32 staging */
} gemm_bufs;

/* An operand (weights, mostly) that several tasks would each pack is packed once
 * per call instead, shared by all threads: per K slice, all its panels, in
 * f32 or bf16 pairs. Slice k0 starts at k0 * rows_pad floats (k0/2 pairs).
 * Any operand that does not change with the batch item can be shared. */
typedef struct shared_pack {
    int on, width, rows_pad;
    float *f;
    uint32_t *u;
} shared_pack;

/* bytes; larger weights are packed per task (this bounds what a plan's
 * scratch holds for the shared packs). */
#define SHARED_MAX ((size_t)16 << 20)
#define STAGE_PANELS 8

static const float *shared_f32(const shared_pack *sp, int k0, int kc, int row0)
{
    return sp->f + (size_t)k0 * sp->rows_pad + (size_t)row0 * kc;
}
static const uint32_t *shared_bf16(const shared_pack *sp, int k0, int kc, int row0)
{
    return sp->u + (size_t)(k0 / 2) * sp->rows_pad + (size_t)row0 * ((kc + 1) / 2);
}

/* Packs this thread's share of sp (a worksharing loop: every thread of the
 * region must call it). */
static void shared_fill(const gemm_problem *p, const gemm_arch *arch, const tiling *t, const gemm_operand *op,
                        int rows, int is_a, const shared_pack *sp, gemm_bufs *bf)
{
    int panels = sp->rows_pad / sp->width, chunks = (panels + STAGE_PANELS - 1) / STAGE_PANELS;
    int slices = (p->K + t->kc - 1) / t->kc;
#pragma omp for schedule(dynamic, 1)
    for (long u = 0; u < (long)slices * chunks; u++) {
        int k0 = (int)(u / chunks) * t->kc, kc = p->K - k0 < t->kc ? p->K - k0 : t->kc;
        int p0 = (int)(u % chunks) * STAGE_PANELS, np = panels - p0 < STAGE_PANELS ? panels - p0 : STAGE_PANELS;
        int row0 = p0 * sp->width;
        if (p->bf16) {
            gemm_pack_bf16(arch, op, 0, rows, (uint32_t *)shared_bf16(sp, k0, kc, row0), row0, np * sp->width, k0,
                           kc, sp->width, is_a && arch->a_rows, bf->stage, bf->zeros);
        } else {
            gemm_pack(op, 0, rows, (float *)shared_f32(sp, k0, kc, row0), row0, np * sp->width, k0, kc, sp->width);
        }
    }
}

static void add_bias_tile(const gemm_problem *p, float *c, int m0, int mv, int n0, int nv)
{
    for (int i = 0; i < mv; i++) {
        float *ci = c + (ptrdiff_t)i * p->ldc, bm = p->bias_m ? p->bias_m[m0 + i] : 0.0f;
        if (p->bias_n)
            for (int j = 0; j < nv; j++) ci[j] += bm + p->bias_n[n0 + j];
        else
            for (int j = 0; j < nv; j++) ci[j] += bm;
    }
}

/* One task: the C tile m0..m0+mt x n0..n0+nt. Per K slice the tile's A rows
 * are packed once (kept in L2), then each NR-wide B panel is packed just
 * before use (kept in L1) and swept by every A panel. With beta 0, the first
 * slice overwrites C and the bias is added to each micro-tile after the last
 * slice, while it is in cache (C is written once, not initialised first). */
static void run_task(const gemm_problem *p, const gemm_arch *arch, const tiling *t, long task,
                     gemm_bufs *bf, const shared_pack *sa, const shared_pack *sb)
{
    int b = (int)(task / ((long)t->tm * t->tn));
    long r = task % ((long)t->tm * t->tn);
    int m0 = (int)(r / t->tn) * t->mt, n0 = (int)(r % t->tn) * t->nt;
    int mt = p->M - m0 < t->mt ? p->M - m0 : t->mt, nt = p->N - n0 < t->nt ? p->N - n0 : t->nt;
    int MR = arch->mr, NR = arch->nr, mt_pad = round_up(mt, MR);
    int direct = p->beta == 0.0f && p->K > 0, bias = p->bias_m || p->bias_n;

    if (!direct) init_c_tile(p, b, m0, mt, n0, nt, NR);
    for (int k0 = 0; k0 < p->K; k0 += t->kc) {
        int kc = p->K - k0 < t->kc ? p->K - k0 : t->kc, kc2 = (kc + 1) / 2;
        int acc = !direct || k0 > 0, last = k0 + kc >= p->K;
        const float *ap = bf->a;
        const uint32_t *ap2 = bf->a2;
        if (sa->on) {
            ap = p->bf16 ? NULL : shared_f32(sa, k0, kc, m0);
            ap2 = p->bf16 ? shared_bf16(sa, k0, kc, m0) : NULL;
        } else if (p->bf16) {
            gemm_pack_bf16(arch, &p->a, b, p->M, bf->a2, m0, mt_pad, k0, kc, MR, arch->a_rows, bf->stage, bf->zeros);
        } else {
            gemm_pack(&p->a, b, p->M, bf->a, m0, mt_pad, k0, kc, MR);
        }
        for (int j = 0; j < nt; j += NR) {
            int nv = nt - j < NR ? nt - j : NR;
            const float *bp = bf->b;
            const uint32_t *bp2 = bf->b2;
            if (sb->on) {
                bp = p->bf16 ? NULL : shared_f32(sb, k0, kc, n0 + j);
                bp2 = p->bf16 ? shared_bf16(sb, k0, kc, n0 + j) : NULL;
            } else if (p->bf16) {
                gemm_pack_bf16(arch, &p->b, b, p->N, bf->b2, n0 + j, NR, k0, kc, NR, 0, bf->stage, bf->zeros);
            } else {
                gemm_pack(&p->b, b, p->N, bf->b, n0 + j, NR, k0, kc, NR);
            }
            float *cj = c_at(p, b, m0, n0 + j);
            for (int i = 0; i < mt; i += MR) {
                int mv = mt - i < MR ? mt - i : MR;
                float *ct = cj + (ptrdiff_t)i * p->ldc;
                if (p->bf16)
                    arch->bf16(kc2, ap2 + (size_t)i * kc2, bp2, ct, p->ldc, mv, nv, acc);
                else
                    arch->f32(kc, ap + (size_t)i * kc, bp, ct, p->ldc, mv, nv, acc);
                if (direct && last && bias) add_bias_tile(p, ct, m0 + i, mv, n0 + j, nv);
            }
        }
    }
}

/* Bytes of a shared pack of op, or 0 when it is not shared. */
static size_t shared_plan(shared_pack *sp, const gemm_operand *op, int batch, int rows, int width, int K,
                          int repacks, int bf16)
{
    sp->on = 0;
    if (repacks < 2 || (op->kind != OP_MAT && batch > 1)) return 0; /* only what all tasks see alike */
    sp->width = width;
    sp->rows_pad = round_up(rows, width);
    size_t bytes = (size_t)sp->rows_pad * (bf16 ? (size_t)(K + 1) / 2 * 4 + 4 * 1 : (size_t)K * 4) + 64;
    if (bytes > SHARED_MAX) return 0;
    sp->on = 1;
    return bf16 ? (size_t)sp->rows_pad * ((size_t)K / 2 + 1) * sizeof(uint32_t)
                : (size_t)sp->rows_pad * (size_t)K * sizeof(float);
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Everything one call decides before it runs: the (possibly unfolded)
 * problem, threads, tiling, the shared packs and where each buffer lives in
 * the scratch: [shared A][shared B][slice of thread 0][slice 1]... */
typedef struct gemm_layout {
    gemm_problem q;
    const gemm_arch *arch;
    int threads, wmax;
    tiling t;
    long tasks;
    shared_pack sa, sb;
    size_t sa_bytes, sb_bytes;
    size_t a_sz, b_sz;                         /* floats of the per-task packed blocks */
    size_t off_b, off_a2, off_b2, off_zeros, off_stage, slice; /* bytes, within a slice */
    size_t total;
} gemm_layout;

/* Returns 0 when the call has nothing to compute. */
static int gemm_layout_of(const gemm_problem *p, int max_threads, gemm_layout *L)
{
    memset(L, 0, sizeof *L);
    if (p->M <= 0 || p->N <= 0 || p->batch <= 0) return 0;
    const gemm_arch *arch = gemm_arch_get();
    gemm_problem q = *p;
    if (q.bf16 && !arch->bf16) q.bf16 = 0; /* no native bf16: full precision */
#if defined(__x86_64__)
    if (q.bf16 && kn_has_amx()) arch = &gemm_arch_amx;
#endif
    if (q.c_fold && q.c_fold % arch->nr) { /* tiles would straddle items: unfold */
        q.N = q.c_fold;
        q.batch = q.N ? p->N / q.c_fold : 0;
        q.c_fold = 0;
        q.b.fold = 0;
    }
    double flops = 2.0 * q.M * q.N * (double)(q.K > 0 ? q.K : 1) * q.batch;
    L->threads = flops < 2e6 || max_threads < 1 ? 1 : max_threads;
    L->t = choose_tiling(&q, arch, L->threads);
    L->tasks = (long)L->t.tm * L->t.tn * q.batch;
    if (L->tasks <= 1) L->threads = 1;
    L->a_sz = (size_t)round_up(L->t.mt, arch->mr) * L->t.kc;
    L->b_sz = (size_t)arch->nr * L->t.kc;
    if (q.K > 0) {
        /* Measured: sharing pays in bf16 mode (half the bytes, and each
         * pack converts twice), and in f32 for F16/BF16 weights on the B side
         * (kn_linear). Other f32 operands are faster packed per task: the
         * micro-kernel then reads fresh panels from L1/L2, not a large
         * shared buffer from L3. */
        int b_converts = q.b.kind == OP_MAT && q.b.mat->dtype != FM_DT_F32;
        if (q.bf16) L->sa_bytes = shared_plan(&L->sa, &q.a, q.batch, q.M, arch->mr, q.K, L->t.tn * q.batch, 1);
        if (q.bf16 || b_converts)
            L->sb_bytes = shared_plan(&L->sb, &q.b, q.batch, q.N, arch->nr, q.K, L->t.tm * q.batch, q.bf16);
    }
    L->wmax = arch->mr > arch->nr ? arch->mr : arch->nr;
    size_t at = 0;
    if (!q.bf16) {
        at = align64(sizeof(float) * L->a_sz);
        L->off_b = at;
        at += align64(sizeof(float) * L->b_sz);
    } else { /* packed straight to pairs: no f32 blocks */
        L->off_a2 = at;
        at += align64(sizeof(uint32_t) * (L->a_sz / 2 + L->t.mt + arch->mr));
        L->off_b2 = at;
        at += align64(sizeof(uint32_t) * (L->b_sz / 2 + arch->nr));
        L->off_zeros = at;
        at += align64(sizeof(float) * L->wmax);
        L->off_stage = at;
        at += align64(sizeof(float) * gemm_bf16_stage_floats(L->t.kc, L->wmax));
    }
    L->slice = at;
    L->total = align64(L->sa_bytes) + align64(L->sb_bytes) + (size_t)L->threads * L->slice;
    L->q = q;
    L->arch = arch;
    return 1;
}

/* Bytes of scratch gemm_run_ws needs for p with up to `threads` threads
 * (0: nothing to compute). */
static size_t gemm_scratch_bytes(const gemm_problem *p, int threads)
{
    gemm_layout L;
    return gemm_layout_of(p, threads, &L) ? L.total : 0;
}

/* Runs p in caller-owned scratch (sized by gemm_scratch_bytes for
 * s->threads); -1 without touching C when s is too small. */
static int gemm_run_ws(const gemm_problem *p, const kn_scratch *s)
{
    gemm_layout L;
    if (!gemm_layout_of(p, s ? s->threads : 1, &L)) return 0;
    if (!s || !s->base || s->bytes < L.total) return -1;
    const gemm_problem *q = &L.q;
    const gemm_arch *arch = L.arch;
    char *base = s->base;
    L.sa.f = L.sa.on && !q->bf16 ? (float *)base : NULL;
    L.sa.u = L.sa.on && q->bf16 ? (uint32_t *)base : NULL;
    base += align64(L.sa_bytes);
    L.sb.f = L.sb.on && !q->bf16 ? (float *)base : NULL;
    L.sb.u = L.sb.on && q->bf16 ? (uint32_t *)base : NULL;
    base += align64(L.sb_bytes);
#pragma omp parallel num_threads(L.threads) if (L.threads > 1)
    {
        char *mine = base + (size_t)omp_get_thread_num() * L.slice;
        gemm_bufs bf = {.a = (float *)mine, .b = (float *)(mine + L.off_b)};
        if (q->bf16) {
            bf.a2 = (uint32_t *)(mine + L.off_a2);
            bf.b2 = (uint32_t *)(mine + L.off_b2);
            bf.zeros = (float *)(mine + L.off_zeros);
            memset(bf.zeros, 0, sizeof(float) * L.wmax);
            bf.stage = (float *)(mine + L.off_stage);
        }
        /* the shared packs are complete at the implicit barrier of each fill */
        if (L.sa.on) shared_fill(q, arch, &L.t, &q->a, q->M, 1, &L.sa, &bf);
        if (L.sb.on) shared_fill(q, arch, &L.t, &q->b, q->N, 0, &L.sb, &bf);
        if (arch->begin) arch->begin();
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < L.tasks; task++) run_task(q, arch, &L.t, task, &bf, &L.sa, &L.sb);
        if (arch->end) arch->end();
    }
    return 0;
}

int kn_scratch_threads(void)
{
    int t = omp_get_max_threads();
    return t > 0 ? t : 1;
}

/* One call's scratch from the heap, for the entry points without a plan.
 * Returns 0 (and fills s) or -1. */
static int scratch_alloc(kn_scratch *s, size_t bytes, int threads)
{
    s->threads = threads;
    s->bytes = bytes;
    s->base = bytes ? core_alloc(bytes) : NULL;
    return bytes && !s->base ? -1 : 0;
}

/* ---- public entry points ---- */

static gemm_problem sgemm_problem(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                                  int trans_b, float beta, float *C, int ldc)
{
    return (gemm_problem){
        .M = M, .N = N, .K = K, .batch = 1,
        .a = {.kind = OP_ROWS, .p = A, .ld = lda},
        .b = {.kind = trans_b ? OP_ROWS : OP_COLS, .p = B, .ld = ldb},
        .c = C, .ldc = ldc, .beta = beta,
    };
}

static gemm_problem linear_problem(float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    return (gemm_problem){
        .M = n, .N = w->rows, .K = w->cols, .batch = 1,
        .a = {.kind = OP_ROWS, .p = x, .ld = w->cols},
        .b = {.kind = OP_MAT, .mat = w},
        .c = y, .ldc = w->rows, .beta = 0.0f, .bias_n = bias,
        .bf16 = w->packed_kind == FM_PACKED_BF16,
    };
}

static gemm_problem conv_problem(float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w);
    int is_1x1 = c->kh == 1 && c->kw == 1 && c->stride == 1 && !c->pad_t && !c->pad_l && !c->pad_b && !c->pad_r;
    /* The batch items are concatenated along N (pixels) so that the weights
     * are packed once for all of them. */
    gemm_problem p = {
        .M = c->cout, .N = n * oh * ow, .K = c->cin * c->kh * c->kw, .batch = 1, .c_fold = oh * ow,
        .a = {.kind = OP_MAT, .mat = &c->w},
        .c = y, .ldc = (ptrdiff_t)oh * ow, .c_batch_stride = (ptrdiff_t)c->cout * oh * ow,
        .beta = 0.0f, .bias_m = c->bias,
        .bf16 = c->w.packed_kind == FM_PACKED_BF16,
    };
    if (is_1x1)
        p.b = (gemm_operand){.kind = OP_COLS, .p = x, .ld = (ptrdiff_t)h * w, .batch_stride = (ptrdiff_t)c->cin * h * w,
                             .fold = oh * ow};
    else
        p.b = (gemm_operand){.kind = OP_IM2COL, .p = x, .batch_stride = (ptrdiff_t)c->cin * h * w,
                             .conv = c, .h = h, .w = w, .oh = oh, .ow = ow, .fold = oh * ow};
    return p;
}

static size_t kn_sgemm_scratch(int M, int N, int K, int trans_b, int threads)
{
    gemm_problem p = sgemm_problem(M, N, K, NULL, K, NULL, trans_b ? K : N, trans_b, 0.0f, NULL, N);
    return gemm_scratch_bytes(&p, threads);
}

static int kn_sgemm_ws(const kn_scratch *s, int M, int N, int K, const float *A, int lda, const float *B,
                       int ldb, int trans_b, float beta, float *C, int ldc)
{
    gemm_problem p = sgemm_problem(M, N, K, A, lda, B, ldb, trans_b, beta, C, ldc);
    return gemm_run_ws(&p, s);
}

void kn_sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              int trans_b, float beta, float *C, int ldc)
{
    kn_scratch s;
    int threads = kn_scratch_threads();
    if (scratch_alloc(&s, kn_sgemm_scratch(M, N, K, trans_b, threads), threads) ||
        kn_sgemm_ws(&s, M, N, K, A, lda, B, ldb, trans_b, beta, C, ldc))
        kn_sgemm_ref(M, N, K, A, lda, B, ldb, trans_b, beta, C, ldc);
    core_free(s.base);
}

/* ---- low-rank updates at run time (kn_lowrank) ----
 * After the layer's own product: t = down x into the scratch's head, t *=
 * scale, then y += up t (the GEMM with beta 1), per update of the chain.
 * The scratch is the t of the widest update plus the largest GEMM scratch
 * of the two products. */

static size_t lowrank_t_floats(const kn_lowrank *l, size_t pixels) { return (size_t)l->down.rows * pixels; }

static kn_scratch scratch_after(const kn_scratch *s, size_t head)
{
    return (kn_scratch){(char *)s->base + head, s->bytes > head ? s->bytes - head : 0, s->threads};
}

static size_t linear_lowrank_scratch(int n, const kn_mat *w, int threads)
{
    size_t need = 0;
    for (const kn_lowrank *l = w->lowrank; l; l = l->next) {
        gemm_problem d = linear_problem(NULL, NULL, n, &l->down, NULL), u = linear_problem(NULL, NULL, n, &l->up, NULL);
        size_t g = gemm_scratch_bytes(&d, threads), gu = gemm_scratch_bytes(&u, threads);
        size_t b = align64(sizeof(float) * lowrank_t_floats(l, (size_t)n)) + (g > gu ? g : gu);
        if (b > need) need = b;
    }
    return need;
}

static int linear_lowrank_ws(const kn_scratch *s, float *y, const float *x, int n, const kn_mat *w)
{
    for (const kn_lowrank *l = w->lowrank; l; l = l->next) {
        size_t nt = lowrank_t_floats(l, (size_t)n);
        float *t = s->base;
        kn_scratch rest = scratch_after(s, align64(sizeof(float) * nt));
        gemm_problem d = linear_problem(t, x, n, &l->down, NULL);
        if (gemm_run_ws(&d, &rest)) return -1;
        for (size_t i = 0; i < nt; i++) t[i] *= l->scale;
        gemm_problem u = linear_problem(y, t, n, &l->up, NULL);
        u.beta = 1.0f;
        if (gemm_run_ws(&u, &rest)) return -1;
    }
    return 0;
}

size_t kn_linear_scratch(int n, const kn_mat *w, int threads)
{
    size_t lr = linear_lowrank_scratch(n, w, threads), main;
    if (kn_q8_applies(w)) {
        main = kn_q8_linear_scratch(n, w, threads);
    } else {
        gemm_problem p = linear_problem(NULL, NULL, n, w, NULL);
        main = gemm_scratch_bytes(&p, threads);
    }
    return main > lr ? main : lr;
}

int kn_linear_ws(const kn_scratch *s, float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    int rc;
    if (kn_q8_applies(w)) {
        rc = kn_q8_linear_ws(s, y, x, n, w, bias);
    } else {
        gemm_problem p = linear_problem(y, x, n, w, bias);
        rc = gemm_run_ws(&p, s);
    }
    return rc ? rc : linear_lowrank_ws(s, y, x, n, w);
}

void kn_linear(float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    kn_scratch s;
    int threads = kn_scratch_threads();
    if (scratch_alloc(&s, kn_linear_scratch(n, w, threads), threads) || kn_linear_ws(&s, y, x, n, w, bias)) {
        if (kn_q8_applies(w)) kn_q8_linear_ref(y, x, n, w, bias);
        else kn_linear_ref(y, x, n, w, bias);
    }
    core_free(s.base);
}

/* The convolutions of update l of c: down (c's geometry, r channels) and
 * up (1x1, r -> cout). */
static kn_conv lowrank_down_conv(const kn_conv *c, const kn_lowrank *l)
{
    kn_conv d = *c;
    d.w = l->down;
    d.bias = NULL;
    d.cout = l->down.rows;
    return d;
}

static kn_conv lowrank_up_conv(const kn_conv *c, const kn_lowrank *l)
{
    return (kn_conv){.w = l->up, .cin = l->up.cols, .cout = c->cout, .kh = 1, .kw = 1, .stride = 1};
}

static size_t conv_lowrank_scratch(const kn_conv *c, int n, int h, int w, int threads)
{
    size_t need = 0;
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w);
    for (const kn_lowrank *l = c->w.lowrank; l; l = l->next) {
        kn_conv dc = lowrank_down_conv(c, l), uc = lowrank_up_conv(c, l);
        int m = kn_conv2d_tile(&dc, n, h, w);
        gemm_problem dp = conv_problem(NULL, NULL, &dc, n, h, w), up = conv_problem(NULL, NULL, &uc, n, oh, ow);
        size_t g = m ? kn_winograd_scratch(&dc, m, n, h, w, threads) : gemm_scratch_bytes(&dp, threads);
        size_t gu = gemm_scratch_bytes(&up, threads);
        size_t b = align64(sizeof(float) * lowrank_t_floats(l, (size_t)n * oh * ow)) + (g > gu ? g : gu);
        if (b > need) need = b;
    }
    return need;
}

static int conv_lowrank_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w);
    for (const kn_lowrank *l = c->w.lowrank; l; l = l->next) {
        size_t nt = lowrank_t_floats(l, (size_t)n * oh * ow);
        float *t = s->base;
        kn_scratch rest = scratch_after(s, align64(sizeof(float) * nt));
        kn_conv dc = lowrank_down_conv(c, l), uc = lowrank_up_conv(c, l);
        int m = kn_conv2d_tile(&dc, n, h, w);
        gemm_problem dp = conv_problem(t, x, &dc, n, h, w);
        if (m ? kn_winograd_ws(&rest, t, x, &dc, m, n, h, w) : gemm_run_ws(&dp, &rest)) return -1;
        for (size_t i = 0; i < nt; i++) t[i] *= l->scale;
        gemm_problem up = conv_problem(y, t, &uc, n, oh, ow);
        up.beta = 1.0f;
        if (gemm_run_ws(&up, &rest)) return -1;
    }
    return 0;
}

/* The im2col-free AMX convolution for c, where it applies and is faster
 * than the im2col GEMM: measured (kbench, Xeon with AMX) 1.3-2.2x on maps
 * of 16x16 and larger, slower on 8x8 (a fifth of its pixels are padding
 * columns, and the weights dominate). FM_CONV_AMX=0 turns it off (A/B). */
static int conv_on_tiles(const kn_conv *c, int n, int h, int w)
{
#if defined(__x86_64__)
    const char *e = getenv("FM_CONV_AMX");
    if ((e && *e == '0') || h * w < 16 * 16) return 0;
    return kn_conv_amx_applies(c, n, h, w);
#else
    (void)c, (void)n, (void)h, (void)w;
    return 0;
#endif
}

size_t kn_conv2d_scratch(const kn_conv *c, int n, int h, int w, int threads)
{
    size_t lr = conv_lowrank_scratch(c, n, h, w, threads), main;
    int m = kn_q8_conv_applies(c) ? 0 : kn_conv2d_tile(c, n, h, w);
    if (kn_q8_conv_applies(c)) {
        main = kn_q8_conv2d_scratch(c, n, h, w, threads);
    } else if (m) {
        main = kn_winograd_scratch(c, m, n, h, w, threads);
    } else if (conv_on_tiles(c, n, h, w)) {
        main = kn_conv_amx_scratch(c, n, h, w, threads);
    } else {
        gemm_problem p = conv_problem(NULL, NULL, c, n, h, w);
        main = gemm_scratch_bytes(&p, threads);
    }
    return main > lr ? main : lr;
}

int kn_conv2d_ws(const kn_scratch *s, float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    int m = kn_q8_conv_applies(c) ? 0 : kn_conv2d_tile(c, n, h, w), rc;
    if (kn_q8_conv_applies(c)) {
        rc = kn_q8_conv2d_ws(s, y, x, c, n, h, w);
    } else if (m) {
        rc = kn_winograd_ws(s, y, x, c, m, n, h, w);
    } else if (conv_on_tiles(c, n, h, w)) {
        rc = kn_conv_amx_ws(s, y, x, c, n, h, w);
    } else {
        gemm_problem p = conv_problem(y, x, c, n, h, w);
        rc = gemm_run_ws(&p, s);
    }
    return rc ? rc : conv_lowrank_ws(s, y, x, c, n, h, w);
}

void kn_conv2d(float *y, const float *x, const kn_conv *c, int n, int h, int w)
{
    kn_scratch s;
    int threads = kn_scratch_threads();
    if (scratch_alloc(&s, kn_conv2d_scratch(c, n, h, w, threads), threads) || kn_conv2d_ws(&s, y, x, c, n, h, w)) {
        if (kn_q8_conv_applies(c)) kn_q8_conv2d_ref(y, x, c, n, h, w);
        else kn_conv2d_ref(y, x, c, n, h, w);
    }
    core_free(s.base);
}

/* Weights stay in their file dtype and are converted while packing (the
 * packed blocks are per call and bounded), so packing only records the
 * precision: no extra memory per matrix. */
int kn_mat_pack(kn_mat *m, fm_precision prec)
{
    m->packed_kind = prec == FM_PREC_BF16 ? FM_PACKED_BF16 : 0;
    return 0;
}
