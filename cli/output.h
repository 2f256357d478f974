/* output: where images go and how they get there. Every PNG is written to a
 * temporary file in its directory, fsync'ed and renamed into place, so no
 * reader ever sees half an image; manifest lines are appended with one
 * write() on an O_APPEND descriptor after the PNG is in place. */
#ifndef FM_CLI_OUTPUT_H
#define FM_CLI_OUTPUT_H

#include <stdint.h>
#include "fmimage.h"

/* Writes path atomically (temp + fsync + rename + directory fsync). With
 * no_clobber, an existing file is an error. sha256_hex (may be NULL) gets the
 * digest of the bytes written. */
int out_write_png(const char *path, const uint8_t *rgb, int width, int height,
                  const char *parameters, int no_clobber, char sha256_hex[65], fm_error *err);

/* Creates dir (and parents) if missing. */
int out_make_dir(const char *dir, fm_error *err);

/* Removes temporary files left in dir by processes that no longer exist. */
void out_remove_stale_temps(const char *dir);

/* The set of file names already listed in DIR/manifest.jsonl. */
typedef struct out_manifest {
    char **files;
    int n, cap;
} out_manifest;
int out_manifest_load(out_manifest *m, const char *dir);
int out_manifest_has(const out_manifest *m, const char *file);
void out_manifest_free(out_manifest *m);
/* Appends one line (a JSON object, newline added) to DIR/manifest.jsonl. */
int out_manifest_append(const char *dir, const char *json, fm_error *err);

/* SHA-256 of a whole file as hex. */
int out_file_sha256(const char *path, char hex[65], fm_error *err);
/* A1111's model hash: the first 10 hex digits of the file's SHA-256, cached
 * by (path, size, mtime) in $XDG_CACHE_HOME/fmimage/hashes.tsv. */
int out_model_hash(const char *path, char hash10[11], fm_error *err);

#endif
