/* torchzip: the zip container of PyTorch's file format (torch.save since
 * torch 1.6: .ckpt, .pt, .pth, .bin).
 *
 * The archive holds ARCHIVE/data.pkl (the pickle), ARCHIVE/data/KEY (one
 * storage's raw bytes each, little-endian), ARCHIVE/version and sometimes
 * ARCHIVE/byteorder; ARCHIVE is any name (the file's stem at save time).
 * torch writes every member stored, not compressed, and pads the local
 * headers so each storage starts 64-byte aligned: the storages are read in
 * place from the mapping. Only the central directory is parsed (zip64
 * included, as files over 4 GiB need); each member's span is checked
 * against the file and against the other members. */
#ifndef WT_TORCHZIP_H
#define WT_TORCHZIP_H

#include <stddef.h>
#include <stdint.h>
#include "core/core.h"

typedef struct wt_zip_entry {
    const char *name; /* NUL-terminated copy */
    const uint8_t *data; /* inside the mapping */
    uint64_t size;       /* stored bytes (compressed size) */
    uint64_t usize;      /* uncompressed size */
    int method;          /* 0 stored, 8 deflate */
} wt_zip_entry;

typedef struct wt_zip {
    wt_zip_entry *entries; /* sorted by name */
    int n;
    char *names;
} wt_zip;

/* Parses the zip at map[size] (which stays mapped while z is used).
 * Errors: "PATH: why". */
int wt_zip_parse(wt_zip *z, const uint8_t *map, size_t size, const char *path, fm_error *err);
void wt_zip_free(wt_zip *z);
const wt_zip_entry *wt_zip_find(const wt_zip *z, const char *name);

#endif
