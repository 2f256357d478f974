/* The zip container of PyTorch files (torchzip.h): the end record, the
 * central directory and each member's local header, validated against the
 * file's size before any member is handed out. */
#include "weights/torchzip.h"

#include <stdlib.h>
#include <string.h>

#define ZIP_MAX_ENTRIES 1000000 /* a checkpoint has one member per storage: thousands */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const wt_zip_entry *)a)->name, ((const wt_zip_entry *)b)->name);
}

static int cmp_span(const void *a, const void *b)
{
    const wt_zip_entry *x = *(const wt_zip_entry *const *)a, *y = *(const wt_zip_entry *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* The central directory's place and size, from the end record (zip64's
 * when the classic one's fields are saturated). */
static int find_directory(const uint8_t *m, size_t size, uint64_t *cd_off, uint64_t *cd_size,
                          uint64_t *count, const char *path, fm_error *err)
{
    if (size < 22) return core_fail(err, FM_EINPUT, "%s: too short for a zip file", path);
    /* The end record is the last 22 bytes plus a comment of up to 65535. */
    size_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0;
    size_t at = size - 22 + 1;
    while (at-- > lo)
        if (rd32(m + at) == 0x06054b50 && at + 22 + rd16(m + at + 20) == size) break;
    if (at + 1 == lo || rd32(m + at) != 0x06054b50)
        return core_fail(err, FM_EINPUT, "%s: zip end record not found (truncated file?)", path);
    const uint8_t *e = m + at;
    if (rd16(e + 4) || rd16(e + 6)) return core_fail(err, FM_EINPUT, "%s: multi-part zip archives are not read", path);
    *count = rd16(e + 10);
    *cd_size = rd32(e + 12);
    *cd_off = rd32(e + 16);
    if (*count == 0xffff || *cd_size == 0xffffffff || *cd_off == 0xffffffff) {
        /* zip64: a locator just before the end record points at its record */
        if (at < 20 || rd32(m + at - 20) != 0x07064b50)
            return core_fail(err, FM_EINPUT, "%s: zip64 locator missing", path);
        uint64_t r = rd64(m + at - 20 + 8);
        if (size < 56 || r > size - 56 || rd32(m + r) != 0x06064b50)
            return core_fail(err, FM_EINPUT, "%s: zip64 end record missing or outside the file", path);
        *count = rd64(m + r + 32);
        *cd_size = rd64(m + r + 40);
        *cd_off = rd64(m + r + 48);
    }
    if (*cd_off > size || *cd_size > size - *cd_off)
        return core_fail(err, FM_EINPUT, "%s: zip central directory outside the file", path);
    if (*count > ZIP_MAX_ENTRIES || *count > *cd_size / 46)
        return core_fail(err, FM_EINPUT, "%s: zip central directory lists %llu members in %llu bytes", path,
                         (unsigned long long)*count, (unsigned long long)*cd_size);
    return 0;
}

/* zip64 extra field (id 1): the 64-bit values of the saturated fields, in
 * the order uncompressed size, compressed size, local header offset. */
static int zip64_extra(const uint8_t *x, size_t xlen, uint64_t *usize, uint64_t *csize, uint64_t *off)
{
    while (xlen >= 4) {
        uint16_t id = rd16(x), len = rd16(x + 2);
        if (len > xlen - 4) return -1;
        if (id == 1) {
            const uint8_t *p = x + 4, *end = x + 4 + len;
            uint64_t *f[3] = {usize, csize, off};
            for (int i = 0; i < 3; i++)
                if (*f[i] == 0xffffffff) {
                    if (end - p < 8) return -1;
                    *f[i] = rd64(p);
                    p += 8;
                }
            return 0;
        }
        x += 4 + len;
        xlen -= 4 + (size_t)len;
    }
    return 0;
}

int wt_zip_parse(wt_zip *z, const uint8_t *m, size_t size, const char *path, fm_error *err)
{
    memset(z, 0, sizeof *z);
    uint64_t cd_off = 0, cd_size = 0, count = 0;
    int rc = find_directory(m, size, &cd_off, &cd_size, &count, path, err);
    if (rc) return rc;
    z->entries = calloc((size_t)count + 1, sizeof *z->entries);
    z->names = malloc((size_t)cd_size + 1); /* every name is shorter than its record */
    const wt_zip_entry **by_off = malloc(sizeof *by_off * ((size_t)count + 1));
    if (!z->entries || !z->names || !by_off) {
        rc = core_fail(err, FM_EINPUT, "%s: out of memory", path);
        goto done;
    }
    const uint8_t *p = m + cd_off, *end = m + cd_off + cd_size;
    char *str = z->names;
    for (uint64_t i = 0; i < count; i++) {
        if (end - p < 46 || rd32(p) != 0x02014b50) {
            rc = core_fail(err, FM_EINPUT, "%s: zip central directory entry %llu is malformed", path, (unsigned long long)i);
            goto done;
        }
        uint16_t flags = rd16(p + 8), method = rd16(p + 10);
        uint64_t csize = rd32(p + 20), usize = rd32(p + 24), off = rd32(p + 42);
        size_t nl = rd16(p + 28), xl = rd16(p + 30), cl = rd16(p + 32);
        if ((size_t)(end - p) - 46 < nl + xl + cl) {
            rc = core_fail(err, FM_EINPUT, "%s: zip central directory entry %llu runs past the directory", path, (unsigned long long)i);
            goto done;
        }
        const char *name = (const char *)p + 46;
        if (nl == 0 || memchr(name, 0, nl)) {
            rc = core_fail(err, FM_EINPUT, "%s: zip member %llu has an empty or invalid name", path, (unsigned long long)i);
            goto done;
        }
        memcpy(str, name, nl);
        str[nl] = 0;
        wt_zip_entry *e = &z->entries[z->n];
        e->name = str;
        str += nl + 1;
        if (zip64_extra(p + 46 + nl, xl, &usize, &csize, &off)) {
            rc = core_fail(err, FM_EINPUT, "%s: zip member %.200s: malformed zip64 field", path, e->name);
            goto done;
        }
        p += 46 + nl + xl + cl;
        if (flags & 1) {
            rc = core_fail(err, FM_EINPUT, "%s: zip member %.200s is encrypted", path, e->name);
            goto done;
        }
        if (method != 0 && method != 8) {
            rc = core_fail(err, FM_EINPUT, "%s: zip member %.200s: compression method %d is not read", path, e->name, method);
            goto done;
        }
        if (method == 0 && csize != usize) {
            rc = core_fail(err, FM_EINPUT, "%s: zip member %.200s: stored with two different sizes", path, e->name);
            goto done;
        }
        /* the data follows the local header, whose own name and extra
         * lengths may differ from the directory's (torch pads there) */
        if (off > cd_off || cd_off - off < 30 || rd32(m + off) != 0x04034b50) {
            rc = core_fail(err, FM_EINPUT, "%s: zip member %.200s: local header missing", path, e->name);
            goto done;
        }
        uint64_t data = off + 30 + (uint64_t)rd16(m + off + 26) + rd16(m + off + 28);
        if (data > cd_off || csize > cd_off - data) {
            rc = core_fail(err, FM_EINPUT, "%s: zip member %.200s: data runs past the end of the archive", path, e->name);
            goto done;
        }
        e->data = m + data;
        e->size = csize;
        e->usize = usize;
        e->method = method;
        by_off[z->n] = e;
        z->n++;
    }
    /* Members must not overlap: a byte belongs to one tensor's storage. */
    qsort(by_off, (size_t)z->n, sizeof *by_off, cmp_span);
    for (int i = 1; i < z->n; i++)
        if (by_off[i - 1]->data + by_off[i - 1]->size > by_off[i]->data) {
            rc = core_fail(err, FM_EINPUT, "%s: zip members %.200s and %.200s overlap", path, by_off[i - 1]->name,
                           by_off[i]->name);
            goto done;
        }
    qsort(z->entries, (size_t)z->n, sizeof *z->entries, cmp_entry);
    for (int i = 1; i < z->n; i++)
        if (!strcmp(z->entries[i - 1].name, z->entries[i].name)) {
            rc = core_fail(err, FM_EINPUT, "%s: zip member %.200s listed twice", path, z->entries[i].name);
            goto done;
        }
done:
    free(by_off);
    if (rc) wt_zip_free(z);
    return rc;
}

void wt_zip_free(wt_zip *z)
{
    free(z->entries);
    free(z->names);
    memset(z, 0, sizeof *z);
}

const wt_zip_entry *wt_zip_find(const wt_zip *z, const char *name)
{
    wt_zip_entry key = {.name = name};
    return bsearch(&key, z->entries, (size_t)z->n, sizeof key, cmp_entry);
}
