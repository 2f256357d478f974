/* st_write: writing safetensors files (tools and tests). The header lists
 * the tensors in the order given, data spans contiguous in that order, the
 * header padded with spaces to 8 bytes. The file appears under its name only
 * when complete: it is written to "PATH.tmp-PID" and renamed.
 *
 * Streaming use (tensors too large to hold at once):
 *   tl_st_writer *w = tl_st_writer_begin(path, entries, n, meta, n_meta, &err);
 *   for each i: tl_st_writer_put(w, i, bytes, &err);   (tensors not put stay zero)
 *   tl_st_writer_finish(w, &err);                        (or tl_st_writer_abort(w))
 * Tensors never put cost no disk space (the file is sparse). */
#ifndef FM_ST_WRITE_H
#define FM_ST_WRITE_H

#include "weights/safetensors.h"

typedef struct tl_st_entry {
    const char *name;
    core_dtype dtype;
    int ndim;                      /* 0 = scalar */
    int64_t shape[FM_ST_MAX_DIMS];
    const void *data;              /* tl_st_write only; NULL = all zeros */
} tl_st_entry;

typedef struct tl_st_writer tl_st_writer;

/* Bytes of one entry's data (numel x element size). */
size_t tl_st_entry_nbytes(const tl_st_entry *e);

tl_st_writer *tl_st_writer_begin(const char *path, const tl_st_entry *entries, int n,
                                 const wt_st_meta *meta, int n_meta, fm_error *err);
/* Writes entry i's tl_st_entry_nbytes bytes. */
int tl_st_writer_put(tl_st_writer *w, int i, const void *data, fm_error *err);
/* Writes len bytes of entry i starting at byte offset within its data. */
int tl_st_writer_put_part(tl_st_writer *w, int i, size_t offset, const void *data, size_t len,
                          fm_error *err);
/* Completes the file and renames it into place; frees w in every case. */
int tl_st_writer_finish(tl_st_writer *w, fm_error *err);
/* Removes the temporary file and frees w. */
void tl_st_writer_abort(tl_st_writer *w);

/* The whole file at once from entries with their data. */
int tl_st_write(const char *path, const tl_st_entry *entries, int n, const wt_st_meta *meta,
                int n_meta, fm_error *err);

#endif
