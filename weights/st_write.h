/* st_write: writing safetensors files (fmimage convert, tools and tests). The header lists
 * the tensors in the order given, data spans contiguous in that order, the
 * header padded with spaces to 8 bytes. The file appears under its name only
 * when complete: it is written to "PATH.tmp-PID" and renamed.
 *
 * Streaming use (tensors too large to hold at once):
 *   wt_st_writer *w = wt_st_writer_begin(path, entries, n, meta, n_meta, &err);
 *   for each i: wt_st_writer_put(w, i, bytes, &err);   (tensors not put stay zero)
 *   wt_st_writer_finish(w, &err);                        (or wt_st_writer_abort(w))
 * Tensors never put cost no disk space (the file is sparse). */
#ifndef WT_ST_WRITE_H
#define WT_ST_WRITE_H

#include "weights/safetensors.h"

typedef struct wt_st_entry {
    const char *name;
    core_dtype dtype;
    int ndim;                      /* 0 = scalar */
    int64_t shape[FM_ST_MAX_DIMS];
    const void *data;              /* wt_st_write only; NULL = all zeros */
} wt_st_entry;

typedef struct wt_st_writer wt_st_writer;

/* Bytes of one entry's data (numel x element size). */

wt_st_writer *wt_st_writer_begin(const char *path, const wt_st_entry *entries, int n,
                                 const wt_st_meta *meta, int n_meta, fm_error *err);
/* Writes entry i's wt_st_entry_nbytes bytes. */
int wt_st_writer_put(wt_st_writer *w, int i, const void *data, fm_error *err);
/* Writes len bytes of entry i starting at byte offset within its data. */
int wt_st_writer_put_part(wt_st_writer *w, int i, size_t offset, const void *data, size_t len,
                          fm_error *err);
/* Completes the file and renames it into place; frees w in every case. */
int wt_st_writer_finish(wt_st_writer *w, fm_error *err);
/* Removes the temporary file and frees w. */
void wt_st_writer_abort(wt_st_writer *w);

/* The whole file at once from entries with their data. */
int wt_st_write(const char *path, const wt_st_entry *entries, int n, const wt_st_meta *meta,
                int n_meta, fm_error *err);

#endif
