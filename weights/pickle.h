/* pickle: the state dict inside a PyTorch file, read by an interpreter
 * that executes nothing.
 *
 * Python's unpickler calls whatever callable a pickle names (GLOBAL +
 * REDUCE), which is how a .ckpt runs code. This one knows a fixed list of
 * names and what each builds (DESIGN.md "Weight formats"): the tensor
 * rebuilders of torch._utils, the torch.*Storage types,
 * collections.OrderedDict, and a few inert ones real checkpoints carry
 * (numpy scalars, the Lightning ModelCheckpoint callback, builtins.set)
 * whose values become opaque placeholders. Any other name is refused
 * before anything is built: "PATH: pickle calls os.system: refused". Only
 * the opcodes of protocols 0-5 that data needs are read; the others
 * (INST, OBJ, EXT*, PERSID text, ...) are refused by name.
 *
 * The result is plain data: every tensor of the state dict with its
 * storage key, offset, shape and strides (the caller maps storages), and
 * the scalar entries beside the state dict as metadata strings. */
#ifndef WT_PICKLE_H
#define WT_PICKLE_H

#include <stddef.h>
#include <stdint.h>
#include "core/core.h"
#include "weights/source.h"

typedef struct wt_pk_tensor {
    const char *name;   /* flattened key: "model.diffusion_model.out.2.bias", "string_to_param.*" */
    core_dtype dtype;
    const char *storage;   /* the storage's key: the member ARCHIVE/data/KEY */
    int64_t storage_numel; /* elements the storage declares */
    int64_t offset;        /* in elements */
    int ndim;
    int64_t shape[WT_MAX_DIMS], stride[WT_MAX_DIMS];
} wt_pk_tensor;

typedef struct wt_pk_meta {
    const char *key, *value;
} wt_pk_meta;

typedef struct wt_pk_result {
    wt_pk_tensor *tensors; /* sorted by name, no duplicates */
    int n_tensors;
    wt_pk_meta *meta;
    int n_meta;
    int skipped;           /* tensors of a dtype fmimage does not hold (bool, int8, int16) */
    char *strings;         /* storage for names, keys and values */
    size_t strings_len, strings_cap;
} wt_pk_result;

/* Runs the pickle pkl[len] and picks its state dict: the "state_dict"
 * entry of a Lightning checkpoint, ESRGAN's "params_ema" (else "params"),
 * else the top-level dict itself; nested dicts flatten to "a.b" names.
 * Errors: "PATH: why" (one line). */
int wt_pk_parse(const uint8_t *pkl, size_t len, wt_pk_result *out, const char *path, fm_error *err);
void wt_pk_free(wt_pk_result *r);

/* A PyTorch file (zip format) as a wt_source: the pickle's tensors over
 * its storages, mapped in place. */
wt_source *wt_torch_open_source(const char *path, fm_error *err);
/* The same on a buffer in memory (the fuzz target; buf must outlive the
 * source). */
wt_source *wt_torch_open_mem(const void *buf, size_t size, const char *name, fm_error *err);

#endif
