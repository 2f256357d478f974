/* source: the tensors of one weight file, whatever its format.
 *
 * A reader (safetensors today; GGUF and pickle next) maps a file, validates
 * its index, and hands out a wt_source: its tensors in name order, lookup by
 * name, and string metadata. A tensor is a view: dtype, shape and a pointer
 * into the reader's mapping. Detection and the weight binder only see this
 * interface, so a new format plugs in below them without touching the model
 * parts.
 *
 * The ops receive the wt_source itself; a reader embeds it as the first
 * member of its own struct and casts back, so the struct may be copied or
 * moved (the mapping does not move with it). */
#ifndef WT_SOURCE_H
#define WT_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include "core/core.h"

#define WT_MAX_DIMS 8

typedef struct wt_tensor {
    const char *name;
    core_dtype dtype;
    int ndim;
    int64_t shape[WT_MAX_DIMS];
    size_t nbytes;
    const void *data; /* inside the reader's mapping; not aligned in general */
} wt_tensor;

typedef struct wt_source wt_source;

typedef struct wt_source_ops {
    int (*count)(const wt_source *s);
    /* 0 <= i < count, in strcmp order of the names (prefix scans rely on it) */
    const wt_tensor *(*at)(const wt_source *s, int i);
    const wt_tensor *(*find)(const wt_source *s, const char *name); /* NULL: absent */
    const char *(*meta)(const wt_source *s, const char *key);       /* NULL: absent */
    /* Unmaps and frees a source that wt_open made (the reader's whole
     * struct); NULL for a source embedded in a caller's struct. */
    void (*close)(wt_source *s);
    /* The i-th metadata entry, any order: 0, or -1 past the last (for
     * fmimage convert, which keeps them). NULL: the format has none. */
    int (*meta_at)(const wt_source *s, int i, const char **key, const char **value);
    /* Drops t's pages from memory (a hint; t stays readable, its bytes come
     * back from the file when next touched): a LoRA merge calls it on the
     * weights it has replaced, so they stop counting in RSS. NULL: the
     * source's memory is not file-backed and stays. */
    void (*release)(const wt_source *s, const wt_tensor *t);
} wt_source_ops;

struct wt_source {
    const wt_source_ops *ops;
    const char *path; /* names the file in every message */
};

static inline int wt_count(const wt_source *s) { return s->ops->count(s); }
static inline const wt_tensor *wt_at(const wt_source *s, int i) { return s->ops->at(s, i); }
static inline const wt_tensor *wt_find(const wt_source *s, const char *name) { return s->ops->find(s, name); }
static inline const char *wt_meta(const wt_source *s, const char *key) { return s->ops->meta(s, key); }
static inline void wt_release(const wt_source *s, const wt_tensor *t)
{
    if (s->ops->release) s->ops->release(s, t);
}
/* The release op of a source whose tensors lie in a private read-only file
 * mapping [map, map + size): MADV_DONTNEED on the pages wholly inside t
 * (a later read faults them back from the page cache, unchanged); nothing
 * when t's bytes are not in the mapping. */
void wt_release_mapped(const void *map, size_t size, const wt_tensor *t);

static inline int wt_meta_at(const wt_source *s, int i, const char **key, const char **value)
{
    return s->ops->meta_at ? s->ops->meta_at(s, i, key, value) : -1;
}

/* Opens a weight file of any format fmimage reads, recognised from its
 * first bytes (not its name): safetensors or GGUF (weights/gguf.h), PyTorch
 * zip files; a directory with model_index.json is a diffusers folder
 * (weights/diffusers.h). A new format adds one
 * test of its magic here (weights/open.c) and a reader of its own.
 * Returns NULL with err = "PATH: why". wt_close frees it (NULL is fine). */
wt_source *wt_open(const char *path, fm_error *err);
void wt_close(wt_source *s);

int64_t wt_numel(const wt_tensor *t);
/* F32, F16, BF16, F64 or a quantised type: a parameter (integer buffers
 * such as position_ids are not). */
int wt_is_float(core_dtype t);

/* Is there a tensor whose name starts with prefix? */
int wt_has_prefix(const wt_source *s, const char *prefix);

/* Sets err to "PATH: why" (the one way messages about a file are made). */
int wt_fail(fm_error *err, const wt_source *s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Looks up name and checks its shape (ndim entries of shape; -1 matches any
 * size) and that it is a float tensor. Missing tensor, wrong shape or dtype:
 * error "PATH: tensor NAME: why". */
const wt_tensor *wt_require(const wt_source *s, const char *name, int ndim, const int64_t *shape,
                            fm_error *err);

/* dst[numel] = t converted to float32, whatever its alignment in the file
 * (misaligned data goes through a small stack buffer, no copy of the whole). */
void wt_convert_f32(float *dst, const wt_tensor *t);

#endif
