#include "weights/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { const char *name; core_dtype dtype; } dtypes[] = {
    {"F32", FM_DT_F32}, {"F16", FM_DT_F16}, {"BF16", FM_DT_BF16}, {"F64", FM_DT_F64},
    {"I64", FM_DT_I64}, {"I32", FM_DT_I32}, {"U8", FM_DT_U8},
    {"BOOL", FM_DT_U8}, /* one byte, 0 or 1 (IA3's on_input) */
};

static int parse_dtype(const char *s, core_dtype *out)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(s, dtypes[i].name)) {
            *out = dtypes[i].dtype;
            return 0;
        }
    return -1;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const wt_st_tensor *)a)->name, ((const wt_st_tensor *)b)->name);
}

static int cmp_span(const void *a, const void *b)
{
    const wt_st_tensor *x = *(const wt_st_tensor *const *)a, *y = *(const wt_st_tensor *const *)b;
    uintptr_t p = (uintptr_t)x->data, q = (uintptr_t)y->data;
    return p < q ? -1 : p > q;
}

/* A JSON number that is a non-negative integer below 2^53. */
static int json_size(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* Parse one tensor entry; name storage is appended to *str. */
static int parse_tensor(wt_st_tensor *t, const cJSON *e, const uint8_t *data, size_t data_len,
                        const char *path, fm_error *err)
{
    const char *nm = t->name;
    if (!cJSON_IsObject(e))
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: entry is not an object", path, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of))
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: needs dtype, shape and data_offsets", path, nm);
    if (parse_dtype(dt->valuestring, &t->dtype))
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: unknown dtype %.20s", path, nm, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > FM_ST_MAX_DIMS)
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: %d dimensions (at most %d)", path, nm, nd, FM_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (json_size(cJSON_GetArrayItem(sh, i), &d))
            return core_fail(err, FM_EINPUT, "%s: tensor %.200s: shape entry %d is not a non-negative integer", path, nm, i);
        if (d != 0 && numel > UINT64_MAX / 8 / d)
            return core_fail(err, FM_EINPUT, "%s: tensor %.200s: shape too large", path, nm);
        numel *= d;
        t->shape[i] = (int64_t)d;
    }
    uint64_t b, en;
    if (cJSON_GetArraySize(of) != 2 || json_size(cJSON_GetArrayItem(of, 0), &b) ||
        json_size(cJSON_GetArrayItem(of, 1), &en) || en < b)
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: data_offsets is not [begin, end] with begin <= end", path, nm);
    if (en > data_len)
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: data_offsets [%llu, %llu] past the end of the data section (%zu bytes)",
                       path, nm, (unsigned long long)b, (unsigned long long)en, data_len);
    if (numel * core_dtype_size(t->dtype) != en - b)
        return core_fail(err, FM_EINPUT, "%s: tensor %.200s: shape needs %llu bytes, span has %llu", path,
                       nm, (unsigned long long)(numel * core_dtype_size(t->dtype)),
                       (unsigned long long)(en - b));
    t->nbytes = (size_t)(en - b);
    t->data = data + b;
    return 0;
}

static int parse_metadata(wt_safetensors *st, const cJSON *m, char **str, const char *path, fm_error *err)
{
    if (!cJSON_IsObject(m))
        return core_fail(err, FM_EINPUT, "%s: __metadata__ is not an object", path);
    int n = cJSON_GetArraySize(m);
    st->meta = calloc((size_t)n + 1, sizeof *st->meta);
    if (!st->meta) return core_fail(err, FM_EINPUT, "%s: out of memory", path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, m) {
        if (!cJSON_IsString(kv))
            return core_fail(err, FM_EINPUT, "%s: __metadata__ value of %.100s is not a string", path, kv->string);
        wt_st_meta *e = &st->meta[st->n_meta++];
        size_t kl = strlen(kv->string) + 1, vl = strlen(kv->valuestring) + 1;
        memcpy(*str, kv->string, kl); e->key = *str; *str += kl;
        memcpy(*str, kv->valuestring, vl); e->value = *str; *str += vl;
    }
    return 0;
}

static int parse_header(wt_safetensors *st, const char *json, size_t json_len, const uint8_t *data,
                        size_t data_len, const char *path, fm_error *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, json_len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return core_fail(err, FM_EINPUT, "%s: header is not valid JSON (at byte %zu)", path, 8 + at);
    }
    int rc = 0;
    /* Writers pad the header with spaces to an 8-byte boundary; anything
     * else after the object is garbage. */
    for (const char *q = end; q < json + json_len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            rc = core_fail(err, FM_EINPUT, "%s: header has data after the JSON object (at byte %zu)",
                         path, 8 + (size_t)(q - json));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        rc = core_fail(err, FM_EINPUT, "%s: header is not a JSON object", path);
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    /* Names, keys and values are all shorter than the header itself. */
    st->strings = malloc(json_len + 16);
    st->tensors = calloc((size_t)n + 1, sizeof *st->tensors);
    if (!st->strings || !st->tensors) {
        rc = core_fail(err, FM_EINPUT, "%s: out of memory", path);
        goto done;
    }
    char *str = st->strings;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if (st->meta) { rc = core_fail(err, FM_EINPUT, "%s: two __metadata__ entries", path); goto done; }
            if ((rc = parse_metadata(st, e, &str, path, err))) goto done;
            continue;
        }
        wt_st_tensor *t = &st->tensors[st->n_tensors];
        size_t l = strlen(e->string) + 1;
        memcpy(str, e->string, l);
        t->name = str;
        str += l;
        if ((rc = parse_tensor(t, e, data, data_len, path, err))) goto done;
        st->n_tensors++;
    }
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_tensor_name);
    for (int i = 1; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i - 1].name, st->tensors[i].name)) {
            rc = core_fail(err, FM_EINPUT, "%s: tensor %.200s: listed twice", path, st->tensors[i].name);
            goto done;
        }
    /* Spans must not overlap (empty tensors take no room). */
    const wt_st_tensor **by_off = malloc(sizeof *by_off * ((size_t)st->n_tensors + 1));
    if (!by_off) { rc = core_fail(err, FM_EINPUT, "%s: out of memory", path); goto done; }
    int m = 0;
    for (int i = 0; i < st->n_tensors; i++)
        if (st->tensors[i].nbytes) by_off[m++] = &st->tensors[i];
    qsort(by_off, (size_t)m, sizeof *by_off, cmp_span);
    for (int i = 1; i < m; i++)
        if ((const uint8_t *)by_off[i - 1]->data + by_off[i - 1]->nbytes > (const uint8_t *)by_off[i]->data) {
            rc = core_fail(err, FM_EINPUT, "%s: tensors %.200s and %.200s overlap", path, by_off[i - 1]->name, by_off[i]->name);
            break;
        }
    free(by_off);
done:
    cJSON_Delete(root);
    return rc;
}

static int st_open(wt_safetensors *st, const char *path, fm_error *err);

/* The wt_source face of an open file (st->src is its first member). */
static const wt_safetensors *of(const wt_source *s) { return (const wt_safetensors *)s; }
static int src_count(const wt_source *s) { return of(s)->n_tensors; }
static const wt_tensor *src_at(const wt_source *s, int i) { return &of(s)->tensors[i]; }
static const wt_tensor *src_find(const wt_source *s, const char *name) { return wt_st_find(of(s), name); }
static const char *src_meta(const wt_source *s, const char *key) { return wt_st_meta_get(of(s), key); }
static int src_meta_at(const wt_source *s, int i, const char **key, const char **value)
{
    if (i < 0 || i >= of(s)->n_meta) return -1;
    *key = of(s)->meta[i].key;
    *value = of(s)->meta[i].value;
    return 0;
}
static void src_release(const wt_source *s, const wt_tensor *t) { wt_release_mapped(of(s)->map, of(s)->map_size, t); }
static const wt_source_ops st_ops = {src_count, src_at, src_find, src_meta, NULL, src_meta_at, src_release};

static void src_close_owned(wt_source *s)
{
    wt_st_close((wt_safetensors *)s);
    free(s);
}
static const wt_source_ops st_owned_ops = {src_count, src_at, src_find, src_meta, src_close_owned, src_meta_at,
                                           src_release};

/* Names and values in a message come from the file: keep it one line. */
static void one_line(fm_error *err)
{
    if (!err) return;
    for (char *c = err->msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
}

int wt_st_open(wt_safetensors *st, const char *path, fm_error *err)
{
    int rc = st_open(st, path, err);
    if (rc) one_line(err);
    return rc;
}

static int st_open(wt_safetensors *st, const char *path, fm_error *err)
{
    memset(st, 0, sizeof *st);
    /* O_NONBLOCK: a FIFO given as model must not hang the open. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(e));
    }
    if (S_ISDIR(sb.st_mode)) { close(fd); return core_fail(err, FM_EINPUT, "%s: is a directory", path); }
    if (!S_ISREG(sb.st_mode)) { close(fd); return core_fail(err, FM_EINPUT, "%s: not a regular file", path); }
    if (sb.st_size < 8) { close(fd); return core_fail(err, FM_EINPUT, "%s: too short for a safetensors file (%lld bytes)", path, (long long)sb.st_size); }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return core_fail(err, FM_EINPUT, "%s: cannot map: %s", path, strerror(errno));
    st->map = map;
    st->map_size = size;
    st->path = strdup(path);
    st->src = (wt_source){&st_ops, st->path};
    const uint8_t *p = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    int rc;
    if (hlen > FM_ST_MAX_HEADER)
        rc = core_fail(err, FM_EINPUT, "%s: header length %llu over the %u-byte limit", path, (unsigned long long)hlen, FM_ST_MAX_HEADER);
    else if (hlen > size - 8)
        rc = core_fail(err, FM_EINPUT, "%s: header length %llu past end of file (%zu bytes)", path, (unsigned long long)hlen, size);
    else if (hlen < 2)
        rc = core_fail(err, FM_EINPUT, "%s: header too short", path);
    else
        rc = parse_header(st, (const char *)p + 8, (size_t)hlen, p + 8 + hlen, size - 8 - (size_t)hlen, path, err);
    if (rc) wt_st_close(st);
    return rc;
}

void wt_st_close(wt_safetensors *st)
{
    if (st->map) munmap(st->map, st->map_size);
    free(st->tensors);
    free(st->meta);
    free(st->strings);
    free(st->path);
    memset(st, 0, sizeof *st);
}

wt_source *wt_st_open_source(const char *path, fm_error *err)
{
    wt_safetensors *st = malloc(sizeof *st);
    if (!st) {
        core_fail(err, FM_EINPUT, "%s: out of memory", path);
        return NULL;
    }
    if (wt_st_open(st, path, err)) {
        free(st);
        return NULL;
    }
    st->src.ops = &st_owned_ops;
    return &st->src;
}

const wt_st_tensor *wt_st_find(const wt_safetensors *st, const char *name)
{
    wt_st_tensor key = {.name = name};
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof key, cmp_tensor_name);
}

const char *wt_st_meta_get(const wt_safetensors *st, const char *key)
{
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[i].key, key)) return st->meta[i].value;
    return NULL;
}

float *wt_st_to_f32(const wt_st_tensor *t, fm_error *err)
{
    size_t n = (size_t)wt_st_numel(t);
    float *f = core_alloc(n * sizeof(float));
    if (!f) {
        core_fail(err, FM_EINPUT, "tensor %.200s: out of memory", t->name);
        return NULL;
    }
    wt_convert_f32(f, t);
    return f;
}
