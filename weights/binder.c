/* The weight binder (binder.h): lookups with a sticky error, the records,
 * and the arena of converted copies. */
#include "weights/binder.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Arena: 64-byte aligned pieces carved from chunks; a piece larger than a
 * chunk gets a chunk of its own, so the waste stays below one chunk. */
#define ARENA_CHUNK ((size_t)256 << 10)
#define ARENA_HEAD 64

typedef struct chunk {
    struct chunk *next;
    size_t used, cap; /* bytes after the header */
} chunk;

struct wt_weights {
    wt_binding *rec;
    int n, cap;
    chunk *chunks;
    size_t copied;
};

static void *arena_alloc(wt_weights *w, size_t bytes)
{
    bytes = (bytes + 63) & ~(size_t)63;
    chunk *c = w->chunks;
    if (!c || c->cap - c->used < bytes) {
        size_t cap = bytes > ARENA_CHUNK ? bytes : ARENA_CHUNK;
        c = fm_alloc(ARENA_HEAD + cap);
        if (!c) return NULL;
        c->used = 0;
        c->cap = cap;
        if (bytes > ARENA_CHUNK && w->chunks) {
            /* keep filling the current small chunk; the big one goes behind it */
            c->next = w->chunks->next;
            w->chunks->next = c;
        } else {
            c->next = w->chunks;
            w->chunks = c;
        }
    }
    void *p = (char *)c + ARENA_HEAD + c->used;
    c->used += bytes;
    w->copied += bytes;
    return p;
}

void wt_weights_free(wt_weights *w)
{
    if (!w) return;
    for (chunk *c = w->chunks, *next; c; c = next) {
        next = c->next;
        fm_free(c);
    }
    free(w->rec);
    free(w);
}

int wt_weights_count(const wt_weights *w) { return w ? w->n : 0; }
const wt_binding *wt_weights_at(const wt_weights *w, int i) { return &w->rec[i]; }
size_t wt_weights_copied_bytes(const wt_weights *w) { return w ? w->copied : 0; }

void wt_weights_each_mat(wt_weights *w, void (*fn)(fm_mat *m, void *arg), void *arg)
{
    for (int i = 0; w && i < w->n; i++)
        if (w->rec[i].kind == WT_SLOT_MAT) fn(w->rec[i].slot, arg);
}

static int oom(wt_binder *b)
{
    b->failed = 1;
    return fm_fail(b->err, FM_EINPUT, "%s: out of memory", b->what);
}

static void set_prefix(wt_binder *b, const char *prefix)
{
    snprintf(b->prefix, sizeof b->prefix, "%s", prefix ? prefix : "");
}

int wt_bind_begin(wt_binder *b, const wt_source *src, const char *prefix, const char *what,
                  fm_error *err)
{
    *b = (wt_binder){.src = src, .err = err, .what = what};
    set_prefix(b, prefix);
    b->w = calloc(1, sizeof *b->w);
    return b->w ? 0 : oom(b);
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
        if (b->failed && b->err && b->err->code == FM_OK) fm_fail(b->err, FM_EINPUT, "%s: load failed", b->what);
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
    return fm_fail(b->err, FM_EINPUT, "%s", why);
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

static int record(wt_binder *b, const wt_tensor *t, wt_origin origin, wt_slot_kind kind, void *slot)
{
    wt_weights *w = b->w;
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 256;
        wt_binding *r = realloc(w->rec, sizeof *r * (size_t)cap);
        if (!r) return oom(b);
        w->rec = r;
        w->cap = cap;
    }
    w->rec[w->n++] = (wt_binding){t, origin, kind, slot};
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

static const float *converted(wt_binder *b, const wt_tensor *t)
{
    float *f = arena_alloc(b->w, sizeof(float) * (size_t)wt_numel(t));
    if (!f) {
        oom(b);
        return NULL;
    }
    wt_convert_f32(f, t);
    return f;
}

void wt_bind_mat(wt_binder *b, fm_mat *m, int rows, int cols, int ndim, const int64_t *shape,
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
    if (t->dtype == FM_DT_F64) { /* the kernels read F32/F16/BF16; F64 files are rare */
        if (!(m->data = converted(b, t))) return;
        m->dtype = FM_DT_F32;
        origin = WT_CONVERTED;
    } else {
        m->data = t->data;
        m->dtype = t->dtype;
    }
    if (record(b, t, origin, WT_SLOT_MAT, m)) memset(m, 0, sizeof *m);
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
    } else {
        if (!(f = converted(b, t))) return;
        origin = WT_CONVERTED;
    }
    if (!record(b, t, origin, WT_SLOT_F32, (void *)dst)) *dst = f;
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
