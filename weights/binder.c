/* The weight binder (binder.h): lookups with a sticky error, the records,
 * and the arena of converted copies. */
#include "weights/binder.h"
#include "weights/lora.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The walk runs twice: a measuring pass finds every tensor (and every
 * error) and adds up the copies and records, then the binding pass fills
 * one arena block and one record array of exactly that size. So the copies
 * cost what they are, with no per-copy allocation. */

/* A record: the tensor, and the slot pointer with the origin (bits 0-1) and
 * the slot kind (bit 2) in its low bits (slots are pointer-aligned). */
typedef struct packed_binding {
    const wt_tensor *tensor;
    uintptr_t slot;
} packed_binding;

struct wt_weights {
    packed_binding *rec;
    int n, cap;
    char *arena;       /* one block, 64-byte aligned pieces */
    size_t used, size; /* bytes */
};

static size_t piece(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

static void *arena_alloc(wt_weights *w, size_t bytes)
{
    bytes = piece(bytes);
    if (w->size - w->used < bytes) return NULL; /* the measuring pass said otherwise: a bug */
    void *p = w->arena + w->used;
    w->used += bytes;
    return p;
}

void wt_weights_free(wt_weights *w)
{
    if (!w) return;
    core_free(w->arena);
    free(w->rec);
    free(w);
}

int wt_weights_count(const wt_weights *w) { return w ? w->n : 0; }

wt_binding wt_weights_at(const wt_weights *w, int i)
{
    const packed_binding *r = &w->rec[i];
    return (wt_binding){r->tensor, (wt_origin)(r->slot & 3), (wt_slot_kind)(r->slot >> 2 & 1),
                        (void *)(r->slot & ~(uintptr_t)7)};
}

size_t wt_weights_copied_bytes(const wt_weights *w) { return w ? w->used : 0; }

void wt_weights_each_mat(wt_weights *w, void (*fn)(kn_mat *m, void *arg), void *arg)
{
    for (int i = 0; w && i < w->n; i++) {
        wt_binding r = wt_weights_at(w, i);
        if (r.kind == WT_SLOT_MAT) fn(r.slot, arg);
    }
}

static int oom(wt_binder *b)
{
    b->failed = 1;
    return core_fail(b->err, FM_EINPUT, "%s: out of memory", b->what);
}

static void set_prefix(wt_binder *b, const char *prefix)
{
    snprintf(b->prefix, sizeof b->prefix, "%s", prefix ? prefix : "");
}

int wt_bind_begin(wt_binder *b, const wt_source *src, const char *prefix, const char *what,
                  fm_error *err)
{
    *b = (wt_binder){.src = src, .err = err, .what = what, .measuring = 1};
    set_prefix(b, prefix);
    b->w = calloc(1, sizeof *b->w);
    return b->w ? 0 : oom(b);
}

int wt_bind_again(wt_binder *b)
{
    if (!b->measuring || b->failed || !b->src) return 0;
    wt_weights *w = b->w;
    b->measuring = 0;
    w->size = w->used;
    w->used = 0;
    w->cap = w->n;
    w->n = 0;
    if ((w->size && !(w->arena = core_alloc(w->size))) ||
        (w->cap && !(w->rec = malloc(sizeof *w->rec * (size_t)w->cap)))) {
        oom(b);
        return 0;
    }
    return 1;
}

void wt_list_begin(wt_binder *b, wt_list_fn fn, void *user, const char *prefix, const char *what,
                   fm_error *err)
{
    *b = (wt_binder){.list = fn, .list_user = user, .err = err, .what = what};
    set_prefix(b, prefix);
}

wt_weights *wt_bind_end(wt_binder *b)
{
    wt_weights *w = b->w;
    b->w = NULL;
    if (b->failed || !b->src) {
        wt_weights_free(w);
        if (b->failed && b->err && b->err->code == FM_OK) core_fail(b->err, FM_EINPUT, "%s: load failed", b->what);
        return NULL;
    }
    if (b->measuring) { /* the part did not walk again: nothing was bound */
        wt_weights_free(w);
        wt_bind_fail(b, "%s: internal error: binding walk not repeated", b->what);
        return NULL;
    }
    return w;
}

int wt_bind_fail(wt_binder *b, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    b->failed = 1;
    return core_fail(b->err, FM_EINPUT, "%s", why);
}

/* prefix + formatted name; 0, or -1 (and the walk failed) when too long. */
static int vname(wt_binder *b, char *out, const char *fmt, va_list ap)
{
    size_t pl = strlen(b->prefix);
    memcpy(out, b->prefix, pl);
    int n = vsnprintf(out + pl, WT_NAME_MAX - pl, fmt, ap);
    if (n < 0 || (size_t)n >= WT_NAME_MAX - pl) {
        if (!b->failed) wt_bind_fail(b, "%s: tensor name %.100s... too long", b->src ? b->src->path : b->what, out);
        return -1;
    }
    return 0;
}

/* Counts (measuring) or stores one record. */
static int record(wt_binder *b, const wt_tensor *t, wt_origin origin, wt_slot_kind kind, void *slot)
{
    wt_weights *w = b->w;
    if (b->measuring) {
        w->n++;
        return 0;
    }
    if (w->n == w->cap || ((uintptr_t)slot & 7)) { /* the walks differ, or a slot the bits would clobber: a bug */
        wt_bind_fail(b, "%s: internal error: the binding walk changed", b->what);
        return -1;
    }
    w->rec[w->n++] = (packed_binding){t, (uintptr_t)slot | (uintptr_t)origin | (uintptr_t)kind << 2};
    return 0;
}

/* The checked tensor, or NULL (failed, or list mode: listed). */
static const wt_tensor *take(wt_binder *b, int ndim, const int64_t *shape, const char *fmt, va_list ap)
{
    char name[WT_NAME_MAX];
    if (b->failed || vname(b, name, fmt, ap)) return NULL;
    if (!b->src) {
        b->list(b->list_user, name, ndim, shape);
        return NULL;
    }
    const wt_tensor *t = wt_require(b->src, name, ndim, shape, b->err);
    if (!t) b->failed = 1;
    return t;
}

/* t as float32 in the arena; measuring: only its size is counted (and a
 * non-NULL stand-in returned, never stored in the part). */
static const float *converted(wt_binder *b, const wt_tensor *t)
{
    size_t bytes = sizeof(float) * (size_t)wt_numel(t);
    if (b->measuring) {
        b->w->used += piece(bytes);
        return (const float *)t->data;
    }
    float *f = arena_alloc(b->w, bytes);
    if (!f) {
        wt_bind_fail(b, "%s: internal error: the binding walk changed", b->what);
        return NULL;
    }
    wt_convert_f32(f, t);
    return f;
}

/* Is a float tensor's first element at a multiple of its element size? */
static int elem_aligned(const wt_tensor *t)
{
    uintptr_t a = (uintptr_t)t->data;
    switch (t->dtype) {
    case FM_DT_F32: return a % sizeof(float) == 0;
    case FM_DT_F16:
    case FM_DT_BF16: return a % sizeof(uint16_t) == 0;
    default: return 1; /* quantised blocks are byte streams */
    }
}

void wt_bind_mat(wt_binder *b, kn_mat *m, int rows, int cols, int ndim, const int64_t *shape,
                 const char *fmt, ...)
{
    memset(m, 0, sizeof *m);
    m->rows = rows;
    m->cols = cols;
    va_list ap;
    va_start(ap, fmt);
    const wt_tensor *t = take(b, ndim, shape, fmt, ap);
    va_end(ap);
    if (!t) return;
    wt_origin origin = WT_FROM_FILE;
    /* The kernels read F32/F16/BF16; F64 files are rare. safetensors packs
     * tensors without padding, so a float tensor after an odd-sized one
     * (mixed F16/F32 files) sits off its natural alignment: reading it in
     * place is a misaligned load (UB, UBSan flags it), so it is copied too. */
    if (t->dtype == FM_DT_F64 || !elem_aligned(t)) {
        if (!(m->data = converted(b, t))) return;
        m->dtype = FM_DT_F32;
        origin = WT_CONVERTED;
    } else {
        m->data = t->data;
        m->dtype = t->dtype;
        if (wt_merged_is(b->src, t)) origin = WT_PLUS_DELTA; /* a LoRA merge the source owns */
        /* quantised: the blocks stay mapped, the kernels dequantise them */
        if (core_dtype_is_quant(t->dtype)) origin = WT_DEQUANT_VIEW;
    }
    m->lowrank = wt_merged_lowrank(b->src, t); /* a LoRA applied at run time */
    if (record(b, t, origin, WT_SLOT_MAT, m) || b->measuring) { /* measuring binds nothing */
        m->data = NULL;
        m->dtype = FM_DT_F32;
        m->lowrank = NULL;
    }
}

static void bind_f32(wt_binder *b, const float **dst, int ndim, const int64_t *shape, const char *fmt,
                     va_list ap)
{
    *dst = NULL;
    const wt_tensor *t = take(b, ndim, shape, fmt, ap);
    if (!t) return;
    const float *f;
    wt_origin origin = WT_FROM_FILE;
    if (t->dtype == FM_DT_F32 && (uintptr_t)t->data % sizeof(float) == 0) {
        f = t->data;
        if (wt_merged_is(b->src, t)) origin = WT_PLUS_DELTA;
    } else {
        if (!(f = converted(b, t))) return;
        origin = WT_CONVERTED;
    }
    if (!record(b, t, origin, WT_SLOT_F32, (void *)dst) && !b->measuring) *dst = f;
}

void wt_bind_f32(wt_binder *b, const float **dst, int ndim, const int64_t *shape, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bind_f32(b, dst, ndim, shape, fmt, ap);
    va_end(ap);
}

void wt_bind_vec(wt_binder *b, const float **dst, int n, const char *fmt, ...)
{
    int64_t shape[1] = {n};
    va_list ap;
    va_start(ap, fmt);
    bind_f32(b, dst, 1, shape, fmt, ap);
    va_end(ap);
}

const wt_tensor *wt_bind_peek(const wt_binder *b, const char *fmt, ...)
{
    if (!b->src || b->failed) return NULL;
    char name[WT_NAME_MAX];
    size_t pl = strlen(b->prefix);
    memcpy(name, b->prefix, pl);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name + pl, WT_NAME_MAX - pl, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= WT_NAME_MAX - pl) return NULL;
    return wt_find(b->src, name);
}
