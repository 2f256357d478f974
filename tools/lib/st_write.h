/* st_write: writing safetensors files (tools and tests). The header lists
 * the tensors in the order given, data spans contiguous in that order, the
 * header padded with spaces to 8 bytes. The file appears under its name only
 * when complete: it is written to "PATH.tmp-PID" and renamed.
 *
 * Streaming use (tensors too large to hold at once):
 *   fm_st_writer *w = fm_st_writer_begin(path, entries, n, meta, n_meta, &err);
 *   for each i: fm_st_writer_put(w, i, bytes, &err);   (tensors not put stay zero)
 *   fm_st_writer_finish(w, &err);                        (or fm_st_writer_abort(w))
 * Tensors never put cost no disk space (the file is sparse). */
#ifndef FM_ST_WRITE_H
#define FM_ST_WRITE_H

#include "weights/safetensors.h"

typedef struct fm_st_entry {
    const char *name;
    fm_dtype dtype;
    int ndim;                      /* 0 = scalar */
    int64_t shape[FM_ST_MAX_DIMS];
    const void *data;              /* fm_st_write only; NULL = all zeros */
} fm_st_entry;

typedef struct fm_st_writer fm_st_writer;

/* Bytes of one entry's data (numel x element size). */
size_t fm_st_entry_nbytes(const fm_st_entry *e);

fm_st_writer *fm_st_writer_begin(const char *path, const fm_st_entry *entries, int n,
                                 const fm_st_meta *meta, int n_meta, fm_error *err);
/* Writes entry i's fm_st_entry_nbytes bytes. */
int fm_st_writer_put(fm_st_writer *w, int i, const void *data, fm_error *err);
/* Writes len bytes of entry i starting at byte offset within its data. */
int fm_st_writer_put_part(fm_st_writer *w, int i, size_t offset, const void *data, size_t len,
                          fm_error *err);
/* Completes the file and renames it into place; frees w in every case. */
int fm_st_writer_finish(fm_st_writer *w, fm_error *err);
/* Removes the temporary file and frees w. */
void fm_st_writer_abort(fm_st_writer *w);

/* The whole file at once from entries with their data. */
int fm_st_write(const char *path, const fm_st_entry *entries, int n, const fm_st_meta *meta,
                int n_meta, fm_error *err);

#endif
