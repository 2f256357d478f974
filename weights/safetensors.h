/* safetensors: a checkpoint file mapped read-only, its header validated
 * completely before any tensor is handed out.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
 * then the data section; offsets are relative to its start.
 *
 * An open file is a wt_source (weights/source.h): &st->src is what
 * detection and the weight binder read. */
#ifndef FM_SAFETENSORS_H
#define FM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "core/core.h"
#include "weights/source.h"

#define FM_ST_MAX_DIMS WT_MAX_DIMS
#define FM_ST_MAX_HEADER (100u << 20) /* 100 MiB of JSON is far beyond any real file */

typedef wt_tensor wt_st_tensor; /* data points inside the mapping */

typedef struct wt_st_meta {
    const char *key, *value;
} wt_st_meta;

typedef struct wt_safetensors {
    wt_source src; /* first: the source ops cast it back to the file */
    char *path;
    void *map;
    size_t map_size;
    wt_st_tensor *tensors; /* sorted by name */
    int n_tensors;
    wt_st_meta *meta;
    int n_meta;
    char *strings; /* storage for names, keys and values */
} wt_safetensors;

/* Maps and validates path. On failure st is left closed and err says
 * "PATH: why". */
int wt_st_open(wt_safetensors *st, const char *path, fm_error *err);
void wt_st_close(wt_safetensors *st);
/* The same, allocated: the source's close op frees it (for wt_open). */
wt_source *wt_st_open_source(const char *path, fm_error *err);

const wt_st_tensor *wt_st_find(const wt_safetensors *st, const char *name);
/* Value of a __metadata__ key, or NULL. */
const char *wt_st_meta_get(const wt_safetensors *st, const char *key);
static inline int64_t wt_st_numel(const wt_st_tensor *t) { return wt_numel(t); }
/* The tensor converted to a newly allocated float32 array (core_free). */
float *wt_st_to_f32(const wt_st_tensor *t, fm_error *err);

#endif
