/* binder: the one place where a model part's named parameters meet the
 * tensors of a source.
 *
 * A part walks its constructor (ldm's __init__, layer by layer) and asks
 * for each parameter by name and expected shape:
 *   wt_bind_mat  a weight matrix, a view of the file's tensor in its own
 *                dtype (F32/F16/BF16 and the quantised types are read by
 *                the kernels in place; F64 gets a float32 copy);
 *   wt_bind_f32  a float32 tensor (biases, norms, embeddings): the file's
 *                bytes in place when they already are aligned float32, else
 *                a converted copy.
 * Copies live in one arena per part (wt_weights), freed with the part.
 *
 * A part binds in a loop, walking twice: the first walk measures (finds
 * every tensor and error, sizes the arena and the records), the second
 * binds into exactly that much memory:
 *     wt_bind_begin(&b, src, prefix, "U-Net", err);
 *     do build(&b, part); while (wt_bind_again(&b));
 *     part->weights = wt_bind_end(&b);      (NULL: err says why)
 * The walk must not depend on what the first pass put into the part (it
 * puts nothing useful there) and must make the same calls both times.
 *
 * The error is sticky: the first missing or mis-shaped tensor sets err to
 * "PATH: tensor NAME: shape [have], expected [want]" (or "...: missing"),
 * and every later call does nothing, so a part binds without checking each
 * call and asks once at the end (wt_bind_end).
 *
 * List mode (wt_list_begin) runs the same walk without a source: each
 * parameter goes to a callback with its name and shape, for --info, for
 * tests and test models, and for matching a delta file against the part.
 *
 * Every bound parameter leaves a record (wt_binding): which tensor, how its
 * data was made (wt_origin) and where in the part it went (the slot). That
 * is the seam for the next kinds of parameter: "this tensor plus a low-rank
 * delta" (LoRA/LyCORIS: compute W + BA into the arena, repoint the slot)
 * and "a dequantising view" (GGUF: the slot keeps the quantised data and a
 * dtype the kernels dequantise: WT_DEQUANT_VIEW). The first is LoRA's
 * (weights/lora.h): a part bound to a merged source gets WT_PLUS_DELTA
 * records for the merged tensors; the second is GGUF's. */
#ifndef WT_BINDER_H
#define WT_BINDER_H

#include "kernels/kernels.h"
#include "weights/source.h"

#define WT_NAME_MAX 256 /* real tensor names are far shorter */

typedef enum {
    WT_FROM_FILE = 0, /* the file's bytes in place */
    WT_CONVERTED,     /* converted into the arena (dtype the kernels cannot read as stored) */
    WT_PLUS_DELTA,    /* file tensor + LoRA delta, float32 owned by the merged source (weights/lora.h) */
    WT_DEQUANT_VIEW,  /* quantised bytes in place (GGUF Q8_0, Q4_K, ...), dequantised by the kernels */
} wt_origin;

typedef enum { WT_SLOT_MAT, WT_SLOT_F32 } wt_slot_kind;

typedef struct wt_binding {
    const wt_tensor *tensor; /* the source's tensor (its name, shape, dtype) */
    wt_origin origin;
    wt_slot_kind kind;
    void *slot;              /* kn_mat * or const float ** inside the part */
} wt_binding;

/* What a loaded part keeps: the arena of copies and the records. */
typedef struct wt_weights wt_weights;

void wt_weights_free(wt_weights *w);
int wt_weights_count(const wt_weights *w);
wt_binding wt_weights_at(const wt_weights *w, int i);
/* fn on every bound matrix (e.g. to set its precision). */
void wt_weights_each_mat(wt_weights *w, void (*fn)(kn_mat *m, void *arg), void *arg);
/* Bytes of converted copies (for tests and --info). */
size_t wt_weights_copied_bytes(const wt_weights *w);

typedef void (*wt_list_fn)(void *user, const char *name, int ndim, const int64_t *shape);

/* The walk's state; lives on the loader's stack. */
typedef struct wt_binder {
    const wt_source *src;  /* NULL in list mode */
    wt_list_fn list;
    void *list_user;
    fm_error *err;
    const char *what;      /* "U-Net", "vae", ...: names the part in out-of-memory messages */
    char prefix[128];      /* prepended to every name */
    int failed;
    int measuring;         /* first pass of binding mode */
    wt_weights *w;
} wt_binder;

/* Binding mode; every name gets prefix prepended. Returns 0, or an error
 * (out of memory) after which b is failed and wt_bind_end returns NULL. */
int wt_bind_begin(wt_binder *b, const wt_source *src, const char *prefix, const char *what,
                  fm_error *err);
/* After a walk: 1 when the part must walk again (the measuring pass is
 * done, the binding pass comes); 0 after the binding pass, in list mode,
 * or once the walk failed. */
int wt_bind_again(wt_binder *b);
/* List mode: fn(user, name, ndim, shape) for every parameter instead. */
void wt_list_begin(wt_binder *b, wt_list_fn fn, void *user, const char *prefix, const char *what,
                   fm_error *err);
/* Binding mode: the part's weights, or NULL with err set (the first cause).
 * List mode: NULL; b->failed says whether the walk failed. */
wt_weights *wt_bind_end(wt_binder *b);

static inline int wt_bind_ok(const wt_binder *b) { return !b->failed; }
/* Fails the walk with a message of the part's own (a config it cannot build). */
int wt_bind_fail(wt_binder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* m [rows][cols] from the tensor stored with shape[ndim] (a conv's
 * [cout][cin][k][k] is the matrix [cout][cin*k*k]). On failure m is zeroed
 * but for rows and cols. */
void wt_bind_mat(wt_binder *b, kn_mat *m, int rows, int cols, int ndim, const int64_t *shape,
                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* *dst = float32 data of the tensor with shape[ndim] (NULL on failure). */
void wt_bind_f32(wt_binder *b, const float **dst, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The 1-D case: *dst = float32 [n]. */
void wt_bind_vec(wt_binder *b, const float **dst, int n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The source's tensor of that (prefixed) name, NULL when absent or in list
 * mode; for parts whose layout varies (a 1x1 conv stored as a linear). */
const wt_tensor *wt_bind_peek(const wt_binder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
