/* A PyTorch file (zip format) as a wt_source: the zip's directory, the
 * pickle's state dict (pickle.c) and, for each tensor, its storage member
 * checked to hold every element the view reaches. A contiguous view is the
 * storage's bytes in place; a strided one (rare in a state dict) is
 * gathered into a copy of its own. */
#include "weights/pickle.h"
#include "weights/torchzip.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define PKL_MAX (1u << 30) /* a deflated data.pkl inflates to at most this */

typedef struct wt_torchfile {
    wt_source src; /* first: the ops cast back */
    char *path;
    void *map;
    size_t map_size;
    int mapped; /* map is this reader's mmap of the file (else the caller's buffer) */
    wt_zip zip;
    wt_pk_result pk;
    uint8_t *inflated; /* data.pkl when it was deflated */
    wt_tensor *tensors;
    int n;
    void **copies; /* gathered strided tensors */
    int n_copies;
} wt_torchfile;

static const wt_torchfile *of(const wt_source *s) { return (const wt_torchfile *)s; }
static int tf_count(const wt_source *s) { return of(s)->n; }
static const wt_tensor *tf_at(const wt_source *s, int i) { return &of(s)->tensors[i]; }

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const wt_tensor *)a)->name, ((const wt_tensor *)b)->name);
}

static const wt_tensor *tf_find(const wt_source *s, const char *name)
{
    wt_tensor key = {.name = name};
    return bsearch(&key, of(s)->tensors, (size_t)of(s)->n, sizeof key, cmp_name);
}

static const char *tf_meta(const wt_source *s, const char *key)
{
    const wt_pk_result *r = &of(s)->pk;
    for (int i = 0; i < r->n_meta; i++)
        if (!strcmp(r->meta[i].key, key)) return r->meta[i].value;
    return NULL;
}

static void tf_free(wt_torchfile *t)
{
    if (t->mapped) munmap(t->map, t->map_size);
    wt_zip_free(&t->zip);
    wt_pk_free(&t->pk);
    for (int i = 0; i < t->n_copies; i++) free(t->copies[i]);
    free(t->copies);
    free(t->inflated);
    free(t->tensors);
    free(t->path);
    free(t);
}

static void tf_close(wt_source *s) { tf_free((wt_torchfile *)s); }

static int tf_meta_at(const wt_source *s, int i, const char **key, const char **value)
{
    const wt_pk_result *r = &of(s)->pk;
    if (i < 0 || i >= r->n_meta) return -1;
    *key = r->meta[i].key;
    *value = r->meta[i].value;
    return 0;
}

static void tf_release(const wt_source *s, const wt_tensor *t) { wt_release_mapped(of(s)->map, of(s)->map_size, t); }
static const wt_source_ops tf_ops = {tf_count, tf_at, tf_find, tf_meta, tf_close, tf_meta_at, tf_release};
static const wt_source_ops tf_mem_ops = {tf_count, tf_at, tf_find, tf_meta, tf_close, tf_meta_at, NULL};

/* The archive's directory name: the first member's, as torch reads it. */
static const wt_zip_entry *find_pickle(const wt_zip *z, char *dir, size_t n)
{
    for (int i = 0; i < z->n; i++) {
        const char *name = z->entries[i].name, *slash = strchr(name, '/');
        if (slash && !strcmp(slash, "/data.pkl") && (size_t)(slash - name) < n) {
            memcpy(dir, name, (size_t)(slash - name));
            dir[slash - name] = 0;
            return &z->entries[i];
        }
    }
    return NULL;
}

static int inflate_pickle(wt_torchfile *t, const wt_zip_entry *e, fm_error *err)
{
    if (e->usize > PKL_MAX) return core_fail(err, FM_EINPUT, "%s: data.pkl inflates to %llu bytes", t->path, (unsigned long long)e->usize);
    t->inflated = malloc(e->usize ? (size_t)e->usize : 1);
    if (!t->inflated) return core_fail(err, FM_EINPUT, "%s: out of memory", t->path);
    z_stream zs = {0};
    if (inflateInit2(&zs, -15) != Z_OK) return core_fail(err, FM_EINPUT, "%s: zlib: cannot inflate", t->path);
    int rc = Z_OK;
    const uint8_t *in = e->data;
    uint64_t left = e->size;
    zs.next_out = t->inflated;
    zs.avail_out = (uInt)e->usize;
    while (rc == Z_OK) {
        uInt take = left > (1u << 30) ? (1u << 30) : (uInt)left;
        zs.next_in = (Bytef *)in;
        zs.avail_in = take;
        rc = inflate(&zs, Z_FINISH);
        in += take - zs.avail_in;
        left -= take - zs.avail_in;
        if (rc == Z_BUF_ERROR && left) rc = Z_OK;
    }
    uint64_t got = zs.total_out;
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || got != e->usize)
        return core_fail(err, FM_EINPUT, "%s: data.pkl: deflate stream is corrupt", t->path);
    return 0;
}

/* Elements of the view and the last element it reaches (+1), checked
 * against overflow. */
static int view_extent(const wt_pk_tensor *p, uint64_t *numel, uint64_t *reach)
{
    uint64_t n = 1, r = (uint64_t)p->offset;
    for (int i = 0; i < p->ndim; i++) {
        uint64_t d = (uint64_t)p->shape[i], s = (uint64_t)p->stride[i];
        if (d && n > (UINT64_MAX >> 4) / d) return -1;
        n *= d;
        if (d && s > (UINT64_MAX >> 4) / d) return -1;
        r += (d ? d - 1 : 0) * s;
        if (r > (UINT64_MAX >> 4)) return -1;
    }
    *numel = n;
    *reach = n ? r + 1 : 0;
    return 0;
}

static int is_contiguous(const wt_pk_tensor *p)
{
    int64_t want = 1;
    for (int i = p->ndim - 1; i >= 0; i--) {
        if (p->shape[i] != 1 && p->stride[i] != want) return 0;
        want *= p->shape[i];
    }
    return 1;
}

/* dst = the strided view, element by element (an odometer over the dims). */
static void gather(uint8_t *dst, const uint8_t *base, const wt_pk_tensor *p, size_t es, uint64_t numel)
{
    int64_t idx[WT_MAX_DIMS] = {0};
    for (uint64_t k = 0; k < numel; k++) {
        int64_t off = p->offset;
        for (int i = 0; i < p->ndim; i++) off += idx[i] * p->stride[i];
        memcpy(dst + k * es, base + (size_t)off * es, es);
        for (int i = p->ndim - 1; i >= 0 && ++idx[i] == p->shape[i]; i--) idx[i] = 0;
    }
}

static int bind_tensor(wt_torchfile *t, const char *dir, const wt_pk_tensor *p, wt_tensor *o, fm_error *err)
{
    char member[600];
    snprintf(member, sizeof member, "%s/data/%.300s", dir, p->storage);
    const wt_zip_entry *e = wt_zip_find(&t->zip, member);
    if (!e) return core_fail(err, FM_EINPUT, "%s: tensor %.200s: storage %.100s missing", t->path, p->name, p->storage);
    if (e->method != 0)
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: storage %.100s is compressed (torch stores them uncompressed)",
                         t->path, p->name, p->storage);
    size_t es = core_dtype_size(p->dtype);
    uint64_t numel, reach;
    if (view_extent(p, &numel, &reach))
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: shape too large", t->path, p->name);
    if ((uint64_t)p->storage_numel > e->size / es)
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: storage %.100s holds %llu bytes, declares %lld elements of %zu",
                         t->path, p->name, p->storage, (unsigned long long)e->size, (long long)p->storage_numel, es);
    if (reach > (uint64_t)p->storage_numel)
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: view reaches element %llu of a storage of %lld", t->path,
                         p->name, (unsigned long long)reach, (long long)p->storage_numel);
    o->name = p->name;
    o->dtype = p->dtype;
    o->ndim = p->ndim;
    memcpy(o->shape, p->shape, sizeof o->shape);
    o->nbytes = (size_t)numel * es;
    if (numel == 0 || is_contiguous(p)) {
        o->data = e->data + (size_t)p->offset * es;
        return 0;
    }
    uint8_t *copy = malloc(o->nbytes);
    if (!copy) return core_fail(err, FM_EINPUT, "%s: tensor %.200s: out of memory", t->path, p->name);
    t->copies[t->n_copies++] = copy;
    gather(copy, e->data, p, es, numel);
    o->data = copy;
    return 0;
}

static int tf_open(wt_torchfile *t, const char *path, fm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0) {
        close(fd);
        return core_fail(err, FM_EINPUT, "%s: not a regular file", path);
    }
    t->map_size = (size_t)sb.st_size;
    t->map = mmap(NULL, t->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (t->map == MAP_FAILED) {
        t->map = NULL;
        return core_fail(err, FM_EINPUT, "%s: cannot map: %s", path, strerror(errno));
    }
    t->mapped = 1;
    return 0;
}

/* The archive at t->map: zip directory, pickle, tensors over the storages. */
static int tf_parse(wt_torchfile *t, const char *path, fm_error *err)
{
    int rc = wt_zip_parse(&t->zip, t->map, t->map_size, path, err);
    if (rc) return rc;
    char dir[256];
    const wt_zip_entry *pk = find_pickle(&t->zip, dir, sizeof dir);
    if (!pk) return core_fail(err, FM_EINPUT, "%s: a zip file without ARCHIVE/data.pkl: not a PyTorch file", path);
    char bo[300];
    snprintf(bo, sizeof bo, "%s/byteorder", dir);
    const wt_zip_entry *b = wt_zip_find(&t->zip, bo);
    if (b && b->method == 0 && !(b->size == 6 && !memcmp(b->data, "little", 6)))
        return core_fail(err, FM_EINPUT, "%s: saved big-endian: not read", path);
    const uint8_t *pkl = pk->data;
    size_t pkl_len = (size_t)pk->size;
    if (pk->method == 8) {
        if ((rc = inflate_pickle(t, pk, err))) return rc;
        pkl = t->inflated;
        pkl_len = (size_t)pk->usize;
    }
    if ((rc = wt_pk_parse(pkl, pkl_len, &t->pk, path, err))) return rc;
    t->tensors = calloc((size_t)t->pk.n_tensors + 1, sizeof *t->tensors);
    t->copies = calloc((size_t)t->pk.n_tensors + 1, sizeof *t->copies);
    if (!t->tensors || !t->copies) return core_fail(err, FM_EINPUT, "%s: out of memory", path);
    for (int i = 0; i < t->pk.n_tensors; i++) {
        if ((rc = bind_tensor(t, dir, &t->pk.tensors[i], &t->tensors[i], err))) return rc;
        t->n++;
    }
    return 0;
}

/* Names in messages come from the file: keep it one line. */
static void one_line(fm_error *err)
{
    if (!err) return;
    for (char *c = err->msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
}

/* buf NULL: map the file at path; else read the archive in buf[size]. */
static wt_source *tf_source(const char *path, const void *buf, size_t size, fm_error *err)
{
    wt_torchfile *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(path))) {
        free(t);
        core_fail(err, FM_EINPUT, "%s: out of memory", path);
        return NULL;
    }
    t->src = (wt_source){buf ? &tf_mem_ops : &tf_ops, t->path};
    t->map = (void *)buf;
    t->map_size = size;
    if ((buf ? 0 : tf_open(t, path, err)) || tf_parse(t, path, err)) {
        one_line(err);
        tf_free(t);
        return NULL;
    }
    return &t->src;
}

wt_source *wt_torch_open_source(const char *path, fm_error *err) { return tf_source(path, NULL, 0, err); }

wt_source *wt_torch_open_mem(const void *buf, size_t size, const char *name, fm_error *err)
{
    return tf_source(name, buf, size, err);
}
