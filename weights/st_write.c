#include "weights/st_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct wt_st_writer {
    char *path, *tmp;
    int fd, n;
    uint64_t data_start, data_len;
    uint64_t *begin;   /* per entry, relative to the data section */
    size_t *nbytes;
};

/* A growing string for the JSON header. */
typedef struct text {
    char *s;
    size_t len, cap;
    int oom;
} text;

static void text_put(text *t, const char *s, size_t n)
{
    if (t->oom) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1) cap *= 2;
        char *p = realloc(t->s, cap);
        if (!p) { t->oom = 1; return; }
        t->s = p;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = 0;
}

static void text_printf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text *t, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) text_put(t, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void text_json_string(text *t, const char *s)
{
    text_put(t, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            text_put(t, e, 2);
        } else if (c < 0x20) {
            text_printf(t, "\\u%04x", c);
        } else {
            text_put(t, (const char *)&c, 1);
        }
    }
    text_put(t, "\"", 1);
}

static size_t wt_st_entry_nbytes(const wt_st_entry *e)
{
    size_t n = core_dtype_size(e->dtype);
    for (int i = 0; i < e->ndim; i++) n *= (size_t)e->shape[i];
    return n;
}

static void writer_free(wt_st_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    free(w->path);
    free(w->tmp);
    free(w->begin);
    free(w->nbytes);
    free(w);
}

static int write_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len) {
        ssize_t k = pwrite(fd, p, len > (1u << 30) ? (1u << 30) : len, (off_t)off);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        len -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int build_header(text *h, wt_st_writer *w, const wt_st_entry *e, int n, const wt_st_meta *meta,
                        int n_meta)
{
    text_put(h, "{", 1);
    int first = 1;
    if (n_meta > 0) {
        text_put(h, "\"__metadata__\":{", 16);
        for (int i = 0; i < n_meta; i++) {
            if (i) text_put(h, ",", 1);
            text_json_string(h, meta[i].key);
            text_put(h, ":", 1);
            text_json_string(h, meta[i].value);
        }
        text_put(h, "}", 1);
        first = 0;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (e[i].ndim < 0 || e[i].ndim > FM_ST_MAX_DIMS || e[i].dtype < 0 || e[i].dtype >= FM_DT_COUNT)
            return -1;
        for (int d = 0; d < e[i].ndim; d++)
            if (e[i].shape[d] < 0) return -1;
        w->begin[i] = off;
        w->nbytes[i] = wt_st_entry_nbytes(&e[i]);
        if (!first) text_put(h, ",", 1);
        first = 0;
        text_json_string(h, e[i].name);
        text_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", core_dtype_name(e[i].dtype));
        for (int d = 0; d < e[i].ndim; d++)
            text_printf(h, d ? ",%lld" : "%lld", (long long)e[i].shape[d]);
        text_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                    (unsigned long long)(off + w->nbytes[i]));
        off += w->nbytes[i];
    }
    text_put(h, "}", 1);
    while (h->len % 8) text_put(h, " ", 1);
    w->data_len = off;
    return 0;
}

wt_st_writer *wt_st_writer_begin(const char *path, const wt_st_entry *entries, int n,
                                 const wt_st_meta *meta, int n_meta, fm_error *err)
{
    wt_st_writer *w = calloc(1, sizeof *w);
    if (!w) { core_fail(err, FM_EINPUT, "%s: out of memory", path); return NULL; }
    w->fd = -1;
    w->n = n;
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 32);
    w->begin = calloc((size_t)n + 1, sizeof *w->begin);
    w->nbytes = calloc((size_t)n + 1, sizeof *w->nbytes);
    text h = {0};
    if (!w->path || !w->tmp || !w->begin || !w->nbytes) {
        core_fail(err, FM_EINPUT, "%s: out of memory", path);
        goto fail;
    }
    if (build_header(&h, w, entries, n, meta, n_meta)) {
        core_fail(err, FM_EINPUT, "%s: invalid tensor entry (dtype, rank or negative size)", path);
        goto fail;
    }
    if (h.oom) { core_fail(err, FM_EINPUT, "%s: out of memory", path); goto fail; }
    sprintf(w->tmp, "%s.tmp-%ld", path, (long)getpid());
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        core_fail(err, FM_EINPUT, "%s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    w->data_start = 8 + h.len;
    if (write_all(w->fd, len8, 8, 0) || write_all(w->fd, h.s, h.len, 8)) {
        core_fail(err, FM_EINPUT, "%s: %s", w->tmp, strerror(errno));
        free(h.s);
        wt_st_writer_abort(w);
        return NULL;
    }
    free(h.s);
    return w;
fail:
    free(h.s);
    writer_free(w);
    return NULL;
}

int wt_st_writer_put(wt_st_writer *w, int i, const void *data, fm_error *err)
{
    if (i < 0 || i >= w->n) return core_fail(err, FM_EINPUT, "%s: no tensor %d", w->path, i);
    if (write_all(w->fd, data, w->nbytes[i], w->data_start + w->begin[i]))
        return core_fail(err, FM_EINPUT, "%s: %s", w->tmp, strerror(errno));
    return 0;
}

int wt_st_writer_put_part(wt_st_writer *w, int i, size_t offset, const void *data, size_t len,
                          fm_error *err)
{
    if (i < 0 || i >= w->n || offset > w->nbytes[i] || len > w->nbytes[i] - offset)
        return core_fail(err, FM_EINPUT, "%s: write outside tensor %d", w->path, i);
    if (write_all(w->fd, data, len, w->data_start + w->begin[i] + offset))
        return core_fail(err, FM_EINPUT, "%s: %s", w->tmp, strerror(errno));
    return 0;
}

int wt_st_writer_finish(wt_st_writer *w, fm_error *err)
{
    /* ftruncate extends with a hole: unwritten tensors read as zeros. */
    /* fsync before the rename: the name never points at a file the disk
     * does not hold yet */
    if (ftruncate(w->fd, (off_t)(w->data_start + w->data_len)) || fsync(w->fd) || close(w->fd)) {
        w->fd = -1;
        int rc = core_fail(err, FM_EINPUT, "%s: %s", w->tmp, strerror(errno));
        wt_st_writer_abort(w);
        return rc;
    }
    w->fd = -1;
    if (rename(w->tmp, w->path)) {
        int rc = core_fail(err, FM_EINPUT, "%s: %s", w->path, strerror(errno));
        wt_st_writer_abort(w);
        return rc;
    }
    writer_free(w);
    return 0;
}

void wt_st_writer_abort(wt_st_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    unlink(w->tmp);
    writer_free(w);
}

int wt_st_write(const char *path, const wt_st_entry *entries, int n, const wt_st_meta *meta,
                int n_meta, fm_error *err)
{
    wt_st_writer *w = wt_st_writer_begin(path, entries, n, meta, n_meta, err);
    if (!w) return err ? err->code : FM_EINPUT;
    for (int i = 0; i < n; i++)
        if (entries[i].data && wt_st_entry_nbytes(&entries[i])) {
            int rc = wt_st_writer_put(w, i, entries[i].data, err);
            if (rc) { wt_st_writer_abort(w); return rc; }
        }
    return wt_st_writer_finish(w, err);
}
