/* The updates of adapter modules (A1111's calc_updown of each module type)
 * and the source that shows a checkpoint with them merged.
 *
 * Arithmetic follows A1111 in float32 (a float32 model in torch): the
 * factors' product, times scale, DoRA's renormalisation, times the
 * multiplier, added to the weight; networks one after another. Products of
 * factors run through kn_sgemm (float32 with float32 accumulation, like
 * torch's matmul); the small contractions (CP/Tucker cores) accumulate in
 * double and round once. */
#include "weights/lora_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "kernels/kernels.h"

/* t as float32, allocated (core_free). */
static float *f32(const wt_tensor *t)
{
    size_t n = (size_t)wt_numel(t);
    float *f = core_alloc(sizeof(float) * (n ? n : 1));
    if (f) wt_convert_f32(f, t);
    return f;
}

static int64_t dim0(const wt_tensor *t) { return t->ndim ? t->shape[0] : 1; }
static int64_t rest(const wt_tensor *t) { return dim0(t) ? wt_numel(t) / dim0(t) : 0; }

/* c[m][n] = a[m][k] . b[k][n] */
static void matmul(float *c, const float *a, const float *b, int64_t m, int64_t k, int64_t n)
{
    kn_sgemm((int)m, (int)n, (int)k, a, (int)k, b, (int)n, 0, 0.0f, c, (int)n);
}

/* lyco_helpers.make_weight_cp: t [a][b][kk], wa [a][O], wb [b][I] ->
 * out [O][I][kk] = sum_ij t[i][j][q] wb[j][I] wa[i][O]. */
static void weight_cp(float *out, const float *t, const float *wa, const float *wb, int64_t a, int64_t b,
                      int64_t kk, int64_t O, int64_t I)
{
    for (int64_t o = 0; o < O; o++)
        for (int64_t in = 0; in < I; in++)
            for (int64_t q = 0; q < kk; q++) {
                double s = 0;
                for (int64_t i = 0; i < a; i++) {
                    double si = 0;
                    for (int64_t j = 0; j < b; j++) si += (double)t[(i * b + j) * kk + q] * wb[j * I + in];
                    s += si * wa[i * O + o];
                }
                out[(o * I + in) * kk + q] = (float)s;
            }
}

/* rebuild_cp_decomposition: mid [n][m][kk], up [O][n], down [m][I] ->
 * out [O][I][kk]. */
static void rebuild_cp(float *out, const float *mid, const float *up, const float *down, int64_t n, int64_t m,
                       int64_t kk, int64_t O, int64_t I)
{
    for (int64_t o = 0; o < O; o++)
        for (int64_t in = 0; in < I; in++)
            for (int64_t q = 0; q < kk; q++) {
                double s = 0;
                for (int64_t a = 0; a < n; a++) {
                    double sa = 0;
                    for (int64_t b = 0; b < m; b++) sa += (double)mid[(a * m + b) * kk + q] * down[b * I + in];
                    s += sa * up[o * n + a];
                }
                out[(o * I + in) * kk + q] = (float)s;
            }
}

static int lora_updown(const wt_lora_module *m, float *out)
{
    const wt_tensor *up = m->part[WT_LP_UP], *down = m->part[WT_LP_DOWN], *mid = m->part[WT_LP_MID];
    float *u = f32(up), *d = f32(down), *c = mid ? f32(mid) : NULL;
    int rc = (!u || !d || (mid && !c)) ? -1 : 0;
    if (!rc && mid)
        rebuild_cp(out, c, u, d, mid->shape[0], mid->shape[1], mid->shape[2] * mid->shape[3], dim0(up), rest(down));
    else if (!rc)
        matmul(out, u, d, dim0(up), dim0(down), rest(down));
    core_free(u);
    core_free(d);
    core_free(c);
    return rc;
}

/* One Hadamard factor: wa @ wb, or the Tucker form with t. */
static int hada_factor(const wt_tensor *wa, const wt_tensor *wb, const wt_tensor *t, float *out)
{
    float *a = f32(wa), *b = f32(wb), *c = t ? f32(t) : NULL;
    int rc = (!a || !b || (t && !c)) ? -1 : 0;
    if (!rc && t)
        weight_cp(out, c, a, b, t->shape[0], t->shape[1], t->shape[2] * t->shape[3], wa->shape[1], wb->shape[1]);
    else if (!rc)
        matmul(out, a, b, dim0(wa), dim0(wb), rest(wb));
    core_free(a);
    core_free(b);
    core_free(c);
    return rc;
}

static int hada_updown(const wt_lora_module *m, size_t n, float *out)
{
    float *u2 = core_alloc(sizeof(float) * n);
    int rc = u2 ? 0 : -1;
    if (!rc) rc = hada_factor(m->part[WT_LP_HADA_W1A], m->part[WT_LP_HADA_W1B], m->part[WT_LP_HADA_T1], out);
    if (!rc) rc = hada_factor(m->part[WT_LP_HADA_W2A], m->part[WT_LP_HADA_W2B], m->part[WT_LP_HADA_T2], u2);
    for (size_t i = 0; !rc && i < n; i++) out[i] *= u2[i];
    core_free(u2);
    return rc;
}

/* One Kronecker factor [rows][cols][kk]: w, or wa @ wb, or cp(t, wa, wb). */
static float *lokr_factor(const wt_tensor *w, const wt_tensor *wa, const wt_tensor *wb, const wt_tensor *t,
                          int64_t *rows, int64_t *cols, int64_t *kk)
{
    *kk = 1;
    if (w) {
        *rows = w->shape[0];
        *cols = w->shape[1];
        if (w->ndim == 4) *kk = w->shape[2] * w->shape[3];
        return f32(w);
    }
    float *a = f32(wa), *b = f32(wb), *c = t ? f32(t) : NULL, *out = NULL;
    if (t) {
        *rows = wa->shape[1];
        *cols = wb->shape[1];
        *kk = t->shape[2] * t->shape[3];
    } else {
        *rows = wa->shape[0];
        *cols = wb->shape[1];
    }
    if (a && b && (!t || c) && (out = core_alloc(sizeof(float) * (size_t)(*rows * *cols * *kk)))) {
        if (t) weight_cp(out, c, a, b, t->shape[0], t->shape[1], *kk, *rows, *cols);
        else matmul(out, a, b, *rows, wa->shape[1], *cols);
    }
    core_free(a);
    core_free(b);
    core_free(c);
    return out;
}

static int lokr_updown(const wt_lora_module *m, float *out)
{
    const wt_tensor *const *p = m->part;
    int64_t a, b, k1, c, d, kk;
    float *w1 = lokr_factor(p[WT_LP_LOKR_W1], p[WT_LP_LOKR_W1A], p[WT_LP_LOKR_W1B], NULL, &a, &b, &k1);
    float *w2 = lokr_factor(p[WT_LP_LOKR_W2], p[WT_LP_LOKR_W2A], p[WT_LP_LOKR_W2B], p[WT_LP_LOKR_T2], &c, &d, &kk);
    int rc = w1 && w2 ? 0 : -1;
    /* torch.kron(w1[:, :, None, None], w2): [a*c][b*d][kk] */
    for (int64_t i1 = 0; !rc && i1 < a; i1++)
        for (int64_t i2 = 0; i2 < c; i2++)
            for (int64_t j1 = 0; j1 < b; j1++) {
                float s = w1[i1 * b + j1];
                float *o = out + ((i1 * c + i2) * (b * d) + j1 * d) * kk;
                const float *x = w2 + i2 * d * kk;
                for (int64_t q = 0; q < d * kk; q++) o[q] = s * x[q];
            }
    core_free(w1);
    core_free(w2);
    return rc;
}

/* IA3: W * w, w per row (on_input: per column). */
static int ia3_updown(const wt_lora_module *m, const float *orig, float *out)
{
    float *w = f32(m->part[WT_LP_IA3_W]);
    if (!w) return -1;
    for (int i = 0; i < m->rows; i++)
        for (int j = 0; j < m->cols; j++) {
            size_t k = (size_t)i * m->cols + j;
            out[k] = orig[k] * w[m->ia3_on_input ? j : i];
        }
    core_free(w);
    return 0;
}

/* GLoRA: b2 @ b1 + (W @ a2) @ a1, products in torch's order. */
static int glora_updown(const wt_lora_module *m, const float *orig, float *out)
{
    const wt_tensor *const *p = m->part;
    int64_t o = m->rows, in = m->cols, ra = p[WT_LP_GLORA_A1]->shape[0], rb = p[WT_LP_GLORA_B1]->shape[0];
    float *a1 = f32(p[WT_LP_GLORA_A1]), *a2 = f32(p[WT_LP_GLORA_A2]), *b1 = f32(p[WT_LP_GLORA_B1]),
          *b2 = f32(p[WT_LP_GLORA_B2]), *wa = core_alloc(sizeof(float) * (size_t)(o * ra)),
          *wa1 = core_alloc(sizeof(float) * (size_t)(o * in));
    int rc = a1 && a2 && b1 && b2 && wa && wa1 ? 0 : -1;
    if (!rc) {
        matmul(out, b2, b1, o, rb, in);
        matmul(wa, orig, a2, o, in, ra);
        matmul(wa1, wa, a1, o, ra, in);
        for (int64_t k = 0; k < o * in; k++) out[k] += wa1[k];
    }
    core_free(a1);
    core_free(a2);
    core_free(b1);
    core_free(b2);
    core_free(wa);
    core_free(wa1);
    return rc;
}

/* a [n][n] := a^-1 by Gauss-Jordan with partial pivoting (double). -1
 * when singular (I - Q for a skew Q never is). */
static int invert(double *a, int n)
{
    double *inv = calloc((size_t)n * n, sizeof *inv);
    if (!inv) return -1;
    for (int i = 0; i < n; i++) inv[i * n + i] = 1;
    for (int col = 0; col < n; col++) {
        int piv = col;
        for (int r = col + 1; r < n; r++)
            if (fabs(a[r * n + col]) > fabs(a[piv * n + col])) piv = r;
        if (a[piv * n + col] == 0) { free(inv); return -1; }
        for (int j = 0; j < n; j++) {
            double t = a[col * n + j]; a[col * n + j] = a[piv * n + j]; a[piv * n + j] = t;
            t = inv[col * n + j]; inv[col * n + j] = inv[piv * n + j]; inv[piv * n + j] = t;
        }
        double d = a[col * n + col];
        for (int j = 0; j < n; j++) a[col * n + j] /= d, inv[col * n + j] /= d;
        for (int r = 0; r < n; r++) {
            double f = a[r * n + col];
            if (r == col || f == 0) continue;
            for (int j = 0; j < n; j++) a[r * n + j] -= f * a[col * n + j], inv[r * n + j] -= f * inv[col * n + j];
        }
    }
    memcpy(a, inv, sizeof *a * (size_t)n * n);
    free(inv);
    return 0;
}

/* kohya's oft_blocks B [k][n][n] -> R: Q = B - B^T scaled so that ||Q||
 * (all blocks) is at most the constraint, R = (I + Q)(I - Q)^-1 per block. */
static int oft_cayley(float *r, const float *b, int k, int n, float constraint)
{
    size_t nn = (size_t)n * n;
    double norm = 0, *q = malloc(sizeof *q * nn * (size_t)k), *ip = malloc(sizeof *ip * nn), *im = malloc(sizeof *im * nn);
    int rc = q && ip && im ? 0 : -1;
    for (int64_t x = 0; !rc && x < k; x++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                float v = b[(x * n + i) * n + j] - b[(x * n + j) * n + i];
                q[(x * n + i) * n + j] = v;
                norm += (double)v * v;
            }
    float nq = (float)sqrt(norm), cl = nq < constraint ? nq : constraint;
    float f = (cl + 1e-8f) / (nq + 1e-8f);
    for (int x = 0; !rc && x < k; x++) {
        const double *qx = q + (size_t)x * nn;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double v = (float)qx[i * n + j] * f; /* block_Q * factor, in float32 */
                ip[i * n + j] = (i == j) + v;
                im[i * n + j] = (i == j) - v;
            }
        if (invert(im, n)) { rc = -1; break; }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double acc = 0;
                for (int t = 0; t < n; t++) acc += ip[i * n + t] * im[t * n + j];
                r[((size_t)x * n + i) * n + j] = (float)acc;
            }
    }
    free(q);
    free(ip);
    free(im);
    return rc;
}

/* OFT: row block x of W becomes R_x^T W_x (einsum 'k n m, k n ... -> k m
 * ...'); the update is that minus W. */
static int oft_updown(const wt_lora_module *m, const float *orig, float *out)
{
    int k = m->oft_blocks, n = m->oft_size, cols = m->cols;
    const wt_tensor *b = m->part[m->part[WT_LP_OFT_BLOCKS] ? WT_LP_OFT_BLOCKS : WT_LP_OFT_DIAG];
    float *r = f32(b);
    if (!r) return -1;
    float *q = NULL;
    if (m->part[WT_LP_OFT_BLOCKS]) {
        if (!(q = core_alloc(sizeof(float) * (size_t)k * n * n)) || oft_cayley(q, r, k, n, m->oft_constraint)) {
            core_free(q);
            core_free(r);
            return -1;
        }
        core_free(r);
        r = q;
    }
    for (int x = 0; x < k; x++)
        for (int mo = 0; mo < n; mo++)
            for (int c = 0; c < cols; c++) {
                double acc = 0;
                for (int j = 0; j < n; j++) acc += (double)r[((size_t)x * n + j) * n + mo] * orig[((size_t)x * n + j) * cols + c];
                size_t o = ((size_t)x * n + mo) * cols + c;
                out[o] = (float)acc - orig[o];
            }
    core_free(r);
    return 0;
}

/* NetworkModule.apply_weight_decompose: W + updown rescaled so each input
 * column's norm (over outputs and kernel taps) becomes dora_scale's, as
 * torch broadcasts dora_scale [1][in] (per input) or [out][1]. */
static int dora(const wt_lora_module *m, const float *orig, float *ud)
{
    const wt_tensor *d = m->part[WT_LP_DORA];
    int64_t rows = m->rows, cols = m->cols, in = m->target->ndim == 4 ? m->target->shape[1] : cols;
    int64_t kk = cols / in;
    int per_in = d->ndim >= 2 && d->shape[0] == 1 && wt_numel(d) == in;
    float *s = f32(d), *norm = malloc(sizeof(float) * (size_t)in);
    int rc = s && norm ? 0 : -1;
    for (int64_t j = 0; !rc && j < in; j++) {
        double acc = 0;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t q = 0; q < kk; q++) {
                float v = ud[i * cols + j * kk + q] + orig[i * cols + j * kk + q];
                acc += (double)v * v;
            }
        norm[j] = (float)sqrt(acc);
    }
    for (int64_t i = 0; !rc && i < rows; i++)
        for (int64_t j = 0; j < in; j++) {
            float f = (per_in ? s[j] : s[i]) / norm[j];
            for (int64_t q = 0; q < kk; q++) {
                size_t k = (size_t)(i * cols + j * kk + q);
                ud[k] = (ud[k] + orig[k]) * f - orig[k];
            }
        }
    core_free(s);
    free(norm);
    return rc;
}

/* The module's update for its rows of target, float32 [rows*cols], as
 * A1111's calc_updown + finalize_updown give it for multiplier mult: orig
 * is the current value of those rows (DoRA normalises against it). 0, or
 * -1 when out of memory. */
static int lora_module_updown(const wt_lora_module *m, const float *orig, float mult, float *out)
{
    size_t n = (size_t)m->rows * (size_t)m->cols;
    int rc;
    switch (m->kind) {
    case WT_LK_LORA: rc = lora_updown(m, out); break;
    case WT_LK_HADA: rc = hada_updown(m, n, out); break;
    case WT_LK_LOKR: rc = lokr_updown(m, out); break;
    case WT_LK_IA3: rc = ia3_updown(m, orig, out); break;
    case WT_LK_GLORA: rc = glora_updown(m, orig, out); break;
    case WT_LK_OFT: rc = oft_updown(m, orig, out); break;
    case WT_LK_NORM:
        wt_convert_f32(out, m->part[WT_LP_W_NORM]);
        rc = 0;
        break;
    default:
        wt_convert_f32(out, m->part[WT_LP_DIFF]);
        rc = 0;
    }
    if (rc) return rc;
    /* finalize_updown: * calc_scale(), DoRA, * multiplier() */
    for (size_t i = 0; i < n; i++) out[i] *= m->scale;
    if (m->part[WT_LP_DORA] && dora(m, orig, out)) return -1;
    for (size_t i = 0; i < n; i++) out[i] *= mult;
    return 0;
}

/* ---- the merged source ---- */

/* An unlinked file that holds merged tensors (wt_merged_open_as'
 * spill_dir): its pages are file pages, so a merged weight is released
 * (madvise) and faulted back like the checkpoint's own, instead of being
 * anonymous memory for as long as the set is in use. Shared by the sources
 * that took tensors over from the one that wrote it; each tensor's region
 * starts on a page and is whole pages. */
typedef struct spill {
    int fd;
    unsigned char *map;
    size_t size, used;
    int refs;
} spill;

typedef struct merged_tensor {
    wt_tensor t;      /* the base tensor's name and shape, F32 or BF16, data = the merge */
    void *data;
    spill *store;     /* data's file, or NULL: data is core_alloc'd */
    char *sig;        /* what made it: "path|module|mult;..." per contribution */
} merged_tensor;

/* A weight left as the base's, with the updates the kernels apply at run
 * time (wt_merged_open_lowrank). */
typedef struct lowrank_tensor {
    const wt_tensor *t; /* the base's */
    kn_lowrank *chain;  /* [n], chained in order */
} lowrank_tensor;

typedef struct wt_merged {
    wt_source src;
    const wt_source *base;
    merged_tensor *v; /* sorted by name */
    int n, reused;
    lowrank_tensor *lr; /* sorted by name */
    int n_lr;
} wt_merged;

static const wt_source_ops merged_ops;

static size_t page_round(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

/* A spill of size bytes in dir, or NULL (the caller keeps the merge in
 * anonymous memory): dir does not take an unlinked file (O_TMPFILE), is
 * memory itself (tmpfs, ramfs: nothing would be saved), or has no room for
 * size bytes (reserved here, so that writing through the mapping cannot
 * fault on a full disk). One reference, the caller's. */
static spill *spill_open(const char *dir, size_t size)
{
#ifdef O_TMPFILE
    struct statfs fs;
    if (!dir || !size || statfs(dir, &fs) || (unsigned long)fs.f_type == 0x01021994UL /* TMPFS_MAGIC */ ||
        (unsigned long)fs.f_type == 0x858458f6UL /* RAMFS_MAGIC */)
        return NULL;
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return NULL;
    spill *sp = calloc(1, sizeof *sp);
    void *map = MAP_FAILED;
    if (sp && !posix_fallocate(fd, 0, (off_t)size)) map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        free(sp);
        close(fd);
        return NULL;
    }
    *sp = (spill){fd, map, size, 0, 1};
    return sp;
#else
    (void)dir;
    (void)size;
    return NULL;
#endif
}

static void spill_unref(spill *sp)
{
    if (sp && !--sp->refs) {
        munmap(sp->map, sp->size);
        close(sp->fd);
        free(sp);
    }
}

/* The next n bytes of sp (whole pages), a reference for the tensor. */
static void *spill_take(spill *sp, size_t n)
{
    void *at = sp->map + sp->used;
    sp->used += page_round(n);
    sp->refs++;
    return at;
}

/* mt's pages out of this process (they stay in the file). */
static void spill_release(const merged_tensor *mt) { madvise(mt->data, page_round(mt->t.nbytes), MADV_DONTNEED); }

/* mt's merge no longer wanted by anyone: its blocks freed, its reference dropped. */
static void spill_drop(merged_tensor *mt)
{
    spill_release(mt);
    fallocate(mt->store->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              (off_t)((unsigned char *)mt->data - mt->store->map), (off_t)page_round(mt->t.nbytes));
    spill_unref(mt->store);
}

static int cmp_name(const void *key, const void *elt) { return strcmp(key, ((const merged_tensor *)elt)->t.name); }

static merged_tensor *merged_find(const wt_merged *s, const char *name)
{
    return s->n ? bsearch(name, s->v, (size_t)s->n, sizeof *s->v, cmp_name) : NULL;
}

static int op_count(const wt_source *s) { return wt_count(((const wt_merged *)s)->base); }
static const wt_tensor *op_at(const wt_source *s, int i)
{
    const wt_merged *m = (const wt_merged *)s;
    const wt_tensor *t = wt_at(m->base, i);
    const merged_tensor *mt = merged_find(m, t->name);
    return mt ? &mt->t : t;
}
static const wt_tensor *op_find(const wt_source *s, const char *name)
{
    const wt_merged *m = (const wt_merged *)s;
    const merged_tensor *mt = merged_find(m, name);
    return mt ? &mt->t : wt_find(m->base, name);
}
static const char *op_meta(const wt_source *s, const char *key) { return wt_meta(((const wt_merged *)s)->base, key); }
static void op_close(wt_source *s)
{
    wt_merged *m = (wt_merged *)s;
    for (int i = 0; i < m->n; i++) {
        if (m->v[i].store && m->v[i].data) spill_drop(&m->v[i]);
        else if (!m->v[i].store) core_free(m->v[i].data);
        free(m->v[i].sig);
    }
    free(m->v);
    for (int i = 0; i < m->n_lr; i++) free(m->lr[i].chain);
    free(m->lr);
    free(m);
}

/* A merged tensor's pages are dropped when they are a spill's (anonymous
 * memory has nowhere to be read back from); the others are the base's. */
static void op_release(const wt_source *s, const wt_tensor *t)
{
    const wt_merged *m = (const wt_merged *)s;
    const merged_tensor *mt = merged_find(m, t->name);
    if (!mt) wt_release(m->base, t);
    else if (mt->store && mt->data) spill_release(mt);
}

static const wt_source_ops merged_ops = {op_count, op_at, op_find, op_meta, op_close, NULL, op_release};

int wt_merged_is(const wt_source *s, const wt_tensor *t)
{
    if (!s || s->ops != &merged_ops) return 0;
    const merged_tensor *mt = merged_find((const wt_merged *)s, t->name);
    return mt && &mt->t == t;
}

const kn_lowrank *wt_merged_lowrank(const wt_source *s, const wt_tensor *t)
{
    if (!s || s->ops != &merged_ops) return NULL;
    const wt_merged *m = (const wt_merged *)s;
    for (int lo = 0, hi = m->n_lr; lo < hi;) { /* bsearch by name */
        int mid = (lo + hi) / 2, c = strcmp(t->name, m->lr[mid].t->name);
        if (!c) return m->lr[mid].t == t ? m->lr[mid].chain : NULL;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

int wt_merged_count_lowrank(const wt_source *s)
{
    return s && s->ops == &merged_ops ? ((const wt_merged *)s)->n_lr : 0;
}

int wt_merged_count(const wt_source *s, int *reused)
{
    const wt_merged *m = (const wt_merged *)s;
    if (reused) *reused = m->reused;
    return m->n;
}

/* One contribution: module mod of use u to a weight (or, bias, its bias). */
typedef struct contrib {
    const wt_tensor *target;
    int use, mod, bias;
} contrib;

static int cmp_contrib(const void *a, const void *b)
{
    const contrib *x = a, *y = b;
    int c = strcmp(x->target->name, y->target->name);
    if (c) return c;
    if (x->use != y->use) return x->use - y->use;
    return x->mod - y->mod;
}

static char *signature(const contrib *c, int n, const wt_lora_use *uses)
{
    size_t cap = 256, len = 0;
    char *s = malloc(cap);
    for (int i = 0; s && i < n; i++) {
        const wt_lora_use *u = &uses[c[i].use];
        const wt_lora_module *m = &u->lora->mods[c[i].mod];
        float mult = m->te ? u->te_mult : u->unet_mult;
        size_t need = strlen(u->lora->src->path) + strlen(m->key) + 64;
        if (len + need >= cap) {
            char *t = realloc(s, cap = 2 * (len + need));
            if (!t) { free(s); return NULL; }
            s = t;
        }
        len += (size_t)snprintf(s + len, cap - len, "%s|%s|%d|%a;", u->lora->src->path, m->key, c[i].bias, mult);
    }
    return s;
}

/* The merge of the contributions c[0..n) to one tensor, in float32, into
 * acc [numel]. */
static int merge_f32(float *acc, const contrib *c, int n, const wt_lora_use *uses)
{
    size_t total = (size_t)wt_numel(c[0].target);
    wt_convert_f32(acc, c[0].target);
    float *tmp = NULL;
    size_t tmp_n = 0;
    for (int i = 0; i < n; i++) {
        const wt_lora_use *u = &uses[c[i].use];
        const wt_lora_module *m = &u->lora->mods[c[i].mod];
        float mult = m->te ? u->te_mult : u->unet_mult;
        if (c[i].bias) { /* ex_bias: diff_b or b_norm times the multiplier */
            float *b = f32(wt_lora_bias_part(m));
            if (!b) { core_free(tmp); return -1; }
            for (size_t k = 0; k < total; k++) acc[k] += b[k] * mult;
            core_free(b);
            continue;
        }
        size_t k0 = (size_t)m->row0 * m->cols, nk = (size_t)m->rows * m->cols;
        if (nk > tmp_n) {
            core_free(tmp);
            if (!(tmp = core_alloc(sizeof(float) * nk))) return -1;
            tmp_n = nk;
        }
        if (lora_module_updown(m, acc + k0, mult, tmp)) { core_free(tmp); return -1; }
        for (size_t k = 0; k < nk; k++) acc[k0 + k] += tmp[k];
    }
    core_free(tmp);
    return 0;
}

/* mt->data: the float32 merge (merge_f32), stored in mt->t.dtype, in sp
 * (then released once written) or, sp NULL, in memory. BF16 is that merge
 * rounded to nearest even, the rounding the kernels' bf16 mode applies to
 * float32 weights as it packs them, done once here instead: the same
 * products, in half the memory. The float32 buffer of a BF16 tensor is one
 * tensor's (scratch), not the model's. */
static int merge_one(merged_tensor *mt, const contrib *c, int n, const wt_lora_use *uses, spill *sp)
{
    size_t total = (size_t)wt_numel(c[0].target);
    int bf16 = mt->t.dtype == FM_DT_BF16;
    mt->store = sp;
    mt->data = sp ? spill_take(sp, mt->t.nbytes) : core_alloc(mt->t.nbytes ? mt->t.nbytes : 1);
    if (!mt->data) return -1;
    float *acc = bf16 ? core_alloc(sizeof(float) * (total ? total : 1)) : mt->data;
    int rc = acc ? merge_f32(acc, c, n, uses) : -1;
    if (!rc && bf16) core_f32_to_bf16(mt->data, acc, total);
    if (bf16) core_free(acc);
    if (!rc && sp) spill_release(mt);
    return rc;
}

/* The pages of what merged_one read, dropped once the merge holds their
 * value: the base weight and the modules' factors (file-backed mappings:
 * read again from the file should a later merge need them). */
static void release_inputs(const wt_source *base, const contrib *c, int n, const wt_lora_use *uses)
{
    wt_release(base, c[0].target);
    for (int i = 0; i < n; i++) {
        const wt_lora *l = uses[c[i].use].lora;
        const wt_lora_module *m = &l->mods[c[i].mod];
        for (int p = 0; p < WT_LP_COUNT; p++)
            if (m->part[p]) wt_release(l->src, m->part[p]);
    }
}

/* Can the kernels apply factor f (a LoRA's up or down) as a matrix in place? */
static int factor_in_place(const wt_tensor *f)
{
    size_t align = f->dtype == FM_DT_F32 ? 4 : 2;
    return (f->dtype == FM_DT_F32 || f->dtype == FM_DT_F16 || f->dtype == FM_DT_BF16) &&
           (uintptr_t)f->data % align == 0;
}

/* Can contributions c[0..n) to one weight run at run time (kn_lowrank)?
 * Plain LoRA/LoCon pairs over all its rows (not OpenCLIP's fused q/k/v
 * blocks): a CP core,
 * DoRA's renormalisation (it needs the merged weight's norms), LoHa, LoKr,
 * full and bias updates are no low-rank product and are merged. A
 * convolution's down has the layer's kernel; its up is 1x1. */
static int runs_lowrank(const contrib *c, int n, const wt_lora_use *uses)
{
    for (int i = 0; i < n; i++) {
        const wt_lora_module *m = &uses[c[i].use].lora->mods[c[i].mod];
        const wt_tensor *t = m->target, *up = m->part[WT_LP_UP], *down = m->part[WT_LP_DOWN];
        size_t nl = strlen(t->name);
        /* a text encoder's weight without ".weight" (text_projection) is
         * read by rows, not through kn_linear */
        if (m->te && (nl < 7 || strcmp(t->name + nl - 7, ".weight"))) return 0;
        if (c[i].bias || m->kind != WT_LK_LORA || m->part[WT_LP_MID] || m->part[WT_LP_DORA]) return 0;
        if (m->row0 || m->rows != dim0(t) || !factor_in_place(up) || !factor_in_place(down)) return 0;
        if (dim0(up) != dim0(t) || rest(up) != dim0(down) || rest(down) != rest(t)) return 0;
        int conv = t->ndim == 4 && t->shape[2] * t->shape[3] > 1;
        if (conv && (down->ndim != 4 || down->shape[1] != t->shape[1] || down->shape[2] != t->shape[2] ||
                     down->shape[3] != t->shape[3]))
            return 0;
    }
    return 1;
}

static kn_mat factor_mat(const wt_tensor *f)
{
    return (kn_mat){.data = f->data, .dtype = f->dtype, .rows = (int)dim0(f), .cols = (int)rest(f)};
}

/* The chain of updates c[0..n) to one weight: scale = calc_scale() times
 * the multiplier, as finalize_updown applies them. */
static int lowrank_one(lowrank_tensor *lt, const contrib *c, int n, const wt_lora_use *uses)
{
    lt->t = c[0].target;
    if (n < 1 || !(lt->chain = calloc((size_t)n, sizeof *lt->chain))) return -1;
    for (int i = 0; i < n; i++) {
        const wt_lora_use *u = &uses[c[i].use];
        const wt_lora_module *m = &u->lora->mods[c[i].mod];
        lt->chain[i] = (kn_lowrank){factor_mat(m->part[WT_LP_DOWN]), factor_mat(m->part[WT_LP_UP]),
                                    m->scale * (m->te ? u->te_mult : u->unet_mult), i + 1 < n ? &lt->chain[i + 1] : NULL};
    }
    return 0;
}

static wt_source *merged_open(const wt_source *base, const wt_lora_use *uses, int n_uses, wt_source *prev_src,
                              core_dtype unet_dtype, int lowrank, const char *spill_dir, fm_error *err);

wt_source *wt_merged_open(const wt_source *base, const wt_lora_use *uses, int n_uses, wt_source *prev_src,
                          fm_error *err)
{
    return merged_open(base, uses, n_uses, prev_src, FM_DT_F32, 0, NULL, err);
}

wt_source *wt_merged_open_as(const wt_source *base, const wt_lora_use *uses, int n_uses, wt_source *prev_src,
                             core_dtype unet_dtype, const char *spill_dir, fm_error *err)
{
    return merged_open(base, uses, n_uses, prev_src, unet_dtype, 0, spill_dir, err);
}

wt_source *wt_merged_open_lowrank(const wt_source *base, const wt_lora_use *uses, int n_uses, wt_source *prev_src,
                                  const char *spill_dir, fm_error *err)
{
    return merged_open(base, uses, n_uses, prev_src, FM_DT_F32, 1, spill_dir, err);
}

int wt_merged_count_spilled(const wt_source *s)
{
    const wt_merged *m = s && s->ops == &merged_ops ? (const wt_merged *)s : NULL;
    int n = 0;
    for (int i = 0; m && i < m->n; i++) n += m->v[i].store != NULL;
    return n;
}

/* Two passes over the contributions grouped by weight: the first decides
 * each weight's way (run time, taken over from prev, or merged) and sums
 * the bytes to merge, so that one spill of that size can be made; the
 * second merges. */
static wt_source *merged_open(const wt_source *base, const wt_lora_use *uses, int n_uses, wt_source *prev_src,
                              core_dtype unet_dtype, int lowrank, const char *spill_dir, fm_error *err)
{
    wt_merged *prev = prev_src && prev_src->ops == &merged_ops ? (wt_merged *)prev_src : NULL;
    wt_merged *s = calloc(1, sizeof *s);
    spill *sp = NULL;
    int nc = 0;
    for (int u = 0; u < n_uses; u++)
        for (int i = 0; i < uses[u].lora->n_mods; i++) nc += 1 + (wt_lora_bias_part(&uses[u].lora->mods[i]) != NULL);
    contrib *c = malloc(sizeof *c * (size_t)(nc ? nc : 1));
    int *from = malloc(sizeof *from * (size_t)(nc ? nc : 1)); /* s->v[k]'s contributions: c[from[k]..] */
    if (!s || !c || !from || !(s->v = calloc((size_t)(nc ? nc : 1), sizeof *s->v)) ||
        !(s->lr = calloc((size_t)(nc ? nc : 1), sizeof *s->lr)))
        goto oom;
    s->src = (wt_source){&merged_ops, base->path};
    s->base = base;
    nc = 0;
    for (int u = 0; u < n_uses; u++)
        for (int i = 0; i < uses[u].lora->n_mods; i++) {
            const wt_lora_module *m = &uses[u].lora->mods[i];
            c[nc++] = (contrib){m->target, u, i, 0};
            if (wt_lora_bias_part(m)) c[nc++] = (contrib){m->target_bias, u, i, 1};
        }
    qsort(c, (size_t)nc, sizeof *c, cmp_contrib);
    size_t to_merge = 0;
    for (int i = 0; i < nc;) {
        int j = i + 1;
        while (j < nc && c[j].target == c[i].target) j++;
        if (lowrank && runs_lowrank(c + i, j - i, uses)) {
            if (lowrank_one(&s->lr[s->n_lr++], c + i, j - i, uses)) goto oom;
            i = j;
            continue;
        }
        from[s->n] = i;
        merged_tensor *mt = &s->v[s->n++];
        const wt_lora_module *m0 = &uses[c[i].use].lora->mods[c[i].mod];
        mt->t = *c[i].target;
        /* the text encoders compute in float32 whatever the U-Net's mode, and
         * so do biases and norms (bf16 packs matrices only) */
        mt->t.dtype = m0->te || unet_dtype != FM_DT_BF16 || mt->t.ndim < 2 ? FM_DT_F32 : FM_DT_BF16;
        mt->t.nbytes = core_dtype_bytes(mt->t.dtype, (size_t)wt_numel(c[i].target));
        if (!(mt->sig = signature(c + i, j - i, uses))) goto oom;
        merged_tensor *old = prev ? merged_find(prev, mt->t.name) : NULL;
        if (old && old->data && old->sig && old->t.dtype == mt->t.dtype && !strcmp(old->sig, mt->sig)) {
            mt->data = old->data; /* unchanged: taken over (with its spill reference), not recomputed */
            mt->store = old->store;
            old->data = NULL;
            old->store = NULL;
            s->reused++;
        } else {
            to_merge += page_round(mt->t.nbytes);
        }
        mt->t.data = mt->data;
        i = j;
    }
    sp = spill_open(spill_dir, to_merge);
    for (int k = 0; k < s->n; k++) {
        merged_tensor *mt = &s->v[k];
        if (mt->data) continue;
        int i = from[k], j = i + 1;
        while (j < nc && c[j].target == c[i].target) j++;
        if (merge_one(mt, c + i, j - i, uses, sp)) goto oom;
        release_inputs(base, c + i, j - i, uses);
        mt->t.data = mt->data;
    }
    if (sp) mprotect(sp->map, sp->size, PROT_READ); /* weights, read-only as the checkpoint's */
    spill_unref(sp); /* the tensors hold theirs */
    free(from);
    free(c);
    return &s->src;
oom:
    free(from);
    free(c);
    if (s && s->v) op_close(&s->src);
    else free(s);
    spill_unref(sp);
    core_fail(err, FM_EINPUT, "LoRA merge: out of memory");
    return NULL;
}
