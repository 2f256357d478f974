/* The GGUF reader (gguf.h): a bounds-checked cursor over the mapping, every
 * count, length, type, shape, offset and the alignment checked before the
 * index is built; then the tensors renamed to ldm names and sorted. */
#include "weights/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { GGUF_MAX_DIMS = 4, GGUF_MAX_NESTING = 8, GGUF_DEFAULT_ALIGNMENT = 32 };
/* A key or a tensor name longer than this is no real file's (ggml's own
 * limit on names is 64 bytes; keys are short dotted words). */
enum { GGUF_MAX_KEY = 65535, GGUF_MAX_NAME = 255 };

enum {
    KV_U8 = 0, KV_I8, KV_U16, KV_I16, KV_U32, KV_I32, KV_F32, KV_BOOL, KV_STRING, KV_ARRAY,
    KV_U64, KV_I64, KV_F64, KV_TYPES
};
static const char *const kv_type_names[KV_TYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};
static const uint8_t kv_scalar_size[KV_TYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

typedef struct gguf_meta {
    const char *key, *value; /* value: strings as they are, numbers as text, NULL for arrays */
} gguf_meta;

typedef struct wt_gguf {
    wt_source src;
    char *path;
    const uint8_t *base;
    size_t size;
    void *map; /* NULL for a buffer in memory */
    wt_tensor *tensors; /* sorted by (ldm) name */
    int n_tensors;
    gguf_meta *meta;
    int n_meta;
    struct chunk *strings; /* names, keys and values, in chunks that never move */
} wt_gguf;

/* ---- the types ---- */

static const struct { const char *name; int dtype; } ggml_types[] = {
    [0] = {"F32", FM_DT_F32},     [1] = {"F16", FM_DT_F16},     [2] = {"Q4_0", FM_DT_Q4_0},
    [3] = {"Q4_1", FM_DT_Q4_1},   [4] = {"Q4_2", -1},           [5] = {"Q4_3", -1},
    [6] = {"Q5_0", FM_DT_Q5_0},   [7] = {"Q5_1", FM_DT_Q5_1},   [8] = {"Q8_0", FM_DT_Q8_0},
    [9] = {"Q8_1", -1},           [10] = {"Q2_K", FM_DT_Q2_K},  [11] = {"Q3_K", FM_DT_Q3_K},
    [12] = {"Q4_K", FM_DT_Q4_K},  [13] = {"Q5_K", FM_DT_Q5_K},  [14] = {"Q6_K", FM_DT_Q6_K},
    [15] = {"Q8_K", -1},          [16] = {"IQ2_XXS", -1},       [17] = {"IQ2_XS", -1},
    [18] = {"IQ3_XXS", -1},       [19] = {"IQ1_S", -1},         [20] = {"IQ4_NL", -1},
    [21] = {"IQ3_S", -1},         [22] = {"IQ2_S", -1},         [23] = {"IQ4_XS", -1},
    [24] = {"I8", -1},            [25] = {"I16", -1},           [26] = {"I32", FM_DT_I32},
    [27] = {"I64", FM_DT_I64},    [28] = {"F64", FM_DT_F64},    [29] = {"IQ1_M", -1},
    [30] = {"BF16", FM_DT_BF16},  [31] = {"Q4_0_4_4", -1},      [32] = {"Q4_0_4_8", -1},
    [33] = {"Q4_0_8_8", -1},      [34] = {"TQ1_0", -1},         [35] = {"TQ2_0", -1},
    [36] = {"IQ4_NL_4_4", -1},    [37] = {"IQ4_NL_4_8", -1},    [38] = {"IQ4_NL_8_8", -1},
    [39] = {"MXFP4", -1},         [40] = {"NVFP4", -1},         [41] = {"Q1_0", -1},
};
enum { N_GGML_TYPES = sizeof ggml_types / sizeof ggml_types[0] };

int wt_gguf_dtype(uint32_t ggml_type, const char **why)
{
    static const char *const unknown = "unknown ggml type";
    if (ggml_type >= N_GGML_TYPES || !ggml_types[ggml_type].name) {
        *why = unknown;
        return -1;
    }
    if (ggml_types[ggml_type].dtype < 0) {
        *why = ggml_types[ggml_type].name;
        return -1;
    }
    return ggml_types[ggml_type].dtype;
}

int wt_gguf_type_of(core_dtype t)
{
    for (int i = 0; i < N_GGML_TYPES; i++)
        if (ggml_types[i].name && ggml_types[i].dtype == (int)t) return i;
    return -1;
}

/* ---- the cursor ---- */

typedef struct cursor {
    const uint8_t *p;
    size_t at, size;
    const char *path;
    fm_error *err;
    int failed;
} cursor;

static int cfail(cursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfail(cursor *c, const char *fmt, ...)
{
    if (c->failed) return -1;
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    c->failed = 1;
    core_fail(c->err, FM_EINPUT, "%s: %s", c->path, why);
    return -1;
}

static size_t left(const cursor *c) { return c->size - c->at; }

static int take(cursor *c, void *out, size_t n, const char *what)
{
    if (c->failed) return -1;
    if (left(c) < n) return cfail(c, "truncated in %s (at byte %zu of %zu)", what, c->at, c->size);
    if (out) memcpy(out, c->p + c->at, n);
    c->at += n;
    return 0;
}

static uint64_t le(const uint8_t *b, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static int u32(cursor *c, uint32_t *v, const char *what)
{
    uint8_t b[4] = {0};
    if (take(c, b, 4, what)) return -1;
    *v = (uint32_t)le(b, 4);
    return 0;
}

static int u64(cursor *c, uint64_t *v, const char *what)
{
    uint8_t b[8] = {0};
    if (take(c, b, 8, what)) return -1;
    *v = le(b, 8);
    return 0;
}

/* A gguf string: u64 length, then that many bytes (no NUL inside).
 * *s points into the mapping, not terminated. */
static int gstring(cursor *c, const char **s, size_t *len, size_t max, int nul_ok, const char *what)
{
    uint64_t n;
    if (u64(c, &n, what)) return -1;
    if (n > left(c)) return cfail(c, "%s: length %" PRIu64 " past the end of the file", what, n);
    if (n > max) return cfail(c, "%s: length %" PRIu64 " over the limit of %zu", what, n, max);
    *s = (const char *)c->p + c->at;
    *len = (size_t)n;
    if (!nul_ok && memchr(*s, 0, *len)) return cfail(c, "%s: contains a NUL byte", what);
    c->at += (size_t)n;
    return 0;
}

/* ---- the index's own strings ---- */

/* Strings are kept in chunks allocated as they fill, so what is allocated
 * follows what the file really holds, not what its counts claim. */
typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    char text[];
} chunk;

static const char *keep(wt_gguf *g, const char *s, size_t n)
{
    chunk *k = g->strings;
    if (!k || k->cap - k->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        if (!(k = malloc(sizeof *k + cap))) return NULL;
        *k = (chunk){g->strings, 0, cap};
        g->strings = k;
    }
    char *d = k->text + k->used;
    memcpy(d, s, n);
    d[n] = 0;
    k->used += n + 1;
    return d;
}

/* ---- metadata ---- */

/* Skips (validating) one value of type t; nested arrays to GGUF_MAX_NESTING. */
static int skip_value(cursor *c, uint32_t t, int depth, const char *key)
{
    if (t >= KV_TYPES) return cfail(c, "metadata %.100s: unknown value type %u", key, t);
    if (t == KV_STRING) {
        const char *s;
        size_t n;
        return gstring(c, &s, &n, SIZE_MAX, 1, "metadata string");
    }
    if (t != KV_ARRAY) return take(c, NULL, kv_scalar_size[t], "metadata value");
    if (depth >= GGUF_MAX_NESTING) return cfail(c, "metadata %.100s: arrays nested over %d deep", key, GGUF_MAX_NESTING);
    uint32_t et;
    uint64_t count;
    if (u32(c, &et, "array type") || u64(c, &count, "array count")) return -1;
    if (et >= KV_TYPES) return cfail(c, "metadata %.100s: unknown array element type %u", key, et);
    if (et == KV_STRING || et == KV_ARRAY) {
        /* each element takes at least 8 bytes (a length or a type + count) */
        if (count > left(c) / (et == KV_STRING ? 8 : 12))
            return cfail(c, "metadata %.100s: array of %" PRIu64 " elements past the end of the file", key, count);
        for (uint64_t i = 0; i < count; i++)
            if (skip_value(c, et, depth + 1, key)) return -1;
        return 0;
    }
    if (count > left(c) / kv_scalar_size[et])
        return cfail(c, "metadata %.100s: array of %" PRIu64 " %s past the end of the file", key, count, kv_type_names[et]);
    c->at += (size_t)(count * kv_scalar_size[et]);
    return 0;
}

/* A scalar as decimal text into buf. */
static void scalar_text(char *buf, size_t len, uint32_t t, const uint8_t *b)
{
    uint64_t v = le(b, kv_scalar_size[t]);
    switch (t) {
    case KV_U8: case KV_U16: case KV_U32: case KV_U64: snprintf(buf, len, "%" PRIu64, v); break;
    case KV_I8: snprintf(buf, len, "%d", (int8_t)v); break;
    case KV_I16: snprintf(buf, len, "%d", (int16_t)v); break;
    case KV_I32: snprintf(buf, len, "%" PRId32, (int32_t)v); break;
    case KV_I64: snprintf(buf, len, "%" PRId64, (int64_t)v); break;
    case KV_BOOL: snprintf(buf, len, "%s", v ? "true" : "false"); break;
    case KV_F32: { uint32_t u = (uint32_t)v; float f; memcpy(&f, &u, 4); snprintf(buf, len, "%.9g", f); break; }
    case KV_F64: { double d; memcpy(&d, &v, 8); snprintf(buf, len, "%.17g", d); break; }
    default: buf[0] = 0; break;
    }
}

static int parse_kv(wt_gguf *g, cursor *c, uint32_t *alignment)
{
    const char *k;
    size_t kn;
    uint32_t t;
    if (gstring(c, &k, &kn, GGUF_MAX_KEY, 0, "metadata key") || u32(c, &t, "metadata type")) return -1;
    gguf_meta *m = &g->meta[g->n_meta];
    if (!(m->key = keep(g, k, kn))) return cfail(c, "out of memory");
    if (t >= KV_TYPES) return cfail(c, "metadata %.100s: unknown value type %u", m->key, t);
    size_t start = c->at;
    if (skip_value(c, t, 0, m->key)) return -1;
    if (t == KV_STRING) {
        m->value = keep(g, (const char *)c->p + start + 8, c->at - start - 8);
    } else if (t != KV_ARRAY) {
        char buf[64];
        scalar_text(buf, sizeof buf, t, c->p + start);
        m->value = keep(g, buf, strlen(buf));
    }
    if (t != KV_ARRAY && !m->value) return cfail(c, "out of memory");
    if (!strcmp(m->key, "general.alignment")) {
        if (t != KV_U32) return cfail(c, "general.alignment is a %s, not a u32", kv_type_names[t]);
        uint32_t a = (uint32_t)le(c->p + start, 4);
        if (a == 0 || (a & (a - 1))) return cfail(c, "general.alignment %u is not a power of two", a);
        *alignment = a;
    }
    g->n_meta++;
    return 0;
}

/* ---- tensor infos ---- */

static int parse_tensor_info(wt_gguf *g, cursor *c, wt_tensor *t, uint64_t *offset)
{
    const char *nm;
    size_t nl;
    uint32_t nd, type;
    if (gstring(c, &nm, &nl, GGUF_MAX_NAME, 0, "tensor name")) return -1;
    if (!(t->name = keep(g, nm, nl))) return cfail(c, "out of memory");
    if (nl == 0) return cfail(c, "a tensor with an empty name");
    if (u32(c, &nd, "tensor dimensions")) return -1;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return cfail(c, "tensor %.200s: %u dimensions (1 to %d)", t->name, nd, GGUF_MAX_DIMS);
    uint64_t ne[GGUF_MAX_DIMS], numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if (u64(c, &ne[d], "tensor shape")) return -1;
        if (ne[d] > INT64_MAX || (ne[d] && numel > (UINT64_MAX / 8) / ne[d]))
            return cfail(c, "tensor %.200s: shape too large", t->name);
        numel *= ne[d];
    }
    if (u32(c, &type, "tensor type") || u64(c, offset, "tensor offset")) return -1;
    const char *why;
    int dt = wt_gguf_dtype(type, &why);
    if (dt < 0) {
        if (!strncmp(why, "IQ", 2))
            return cfail(c, "tensor %.200s: type %s: the IQ types are not supported (use Q4_K, Q5_K, Q6_K or Q8_0)", t->name, why);
        if (why[0] == 'u') return cfail(c, "tensor %.200s: unknown ggml type %u", t->name, type);
        return cfail(c, "tensor %.200s: type %s is not supported", t->name, why);
    }
    t->dtype = (core_dtype)dt;
    int blk = core_dtype_block(t->dtype);
    if (ne[0] % (uint64_t)blk)
        return cfail(c, "tensor %.200s: %s rows of %" PRIu64 " elements, not a multiple of its block of %d",
                     t->name, why = core_dtype_name(t->dtype), ne[0], blk);
    t->ndim = (int)nd;
    for (uint32_t d = 0; d < nd; d++) t->shape[d] = (int64_t)ne[nd - 1 - d]; /* PyTorch order */
    t->nbytes = (size_t)(numel / (uint64_t)blk * core_dtype_block_bytes(t->dtype));
    return 0;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const gguf_meta *)a)->key, ((const gguf_meta *)b)->key);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const wt_tensor *)a)->name, ((const wt_tensor *)b)->name);
}

static int cmp_span(const void *a, const void *b)
{
    const wt_tensor *x = *(const wt_tensor *const *)a, *y = *(const wt_tensor *const *)b;
    uintptr_t p = (uintptr_t)x->data, q = (uintptr_t)y->data;
    return p < q ? -1 : p > q;
}

/* Renames every tensor to its ldm name (gguf_names.c) and sorts. */
static int rename_all(wt_gguf *g, cursor *c)
{
    int openclip = 0, sdxl = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        const char *n = g->tensors[i].name;
        if (!strncmp(n, "cond_stage_model.1.", 19)) sdxl = 1;
        else if (!strncmp(n, "cond_stage_model.transformer.", 29) && strstr(n, ".self_attn.in_proj.")) openclip = 1;
    }
    for (int i = 0; i < g->n_tensors; i++) {
        char buf[GGUF_MAX_NAME + 64];
        wt_tensor *t = &g->tensors[i];
        if (wt_gguf_ldm_name(buf, sizeof buf, t->name, openclip, sdxl))
            return cfail(c, "tensor %.200s: name too long", t->name);
        if (strcmp(buf, t->name) && !(t->name = keep(g, buf, strlen(buf))))
            return cfail(c, "out of memory");
    }
    qsort(g->tensors, (size_t)g->n_tensors, sizeof *g->tensors, cmp_name);
    for (int i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i - 1].name, g->tensors[i].name))
            return cfail(c, "tensor %.200s: listed twice", g->tensors[i].name);
    return 0;
}

static int parse(wt_gguf *g, fm_error *err)
{
    cursor c = {.p = g->base, .size = g->size, .path = g->path, .err = err};
    uint32_t magic = 0, version = 0;
    uint64_t nt = 0, nkv = 0;
    if (g->size < 24) return cfail(&c, "too short for a GGUF file (%zu bytes)", g->size);
    u32(&c, &magic, "magic");
    if (memcmp(g->base, "GGUF", 4)) {
        if (!memcmp(g->base, "FUGG", 4)) return cfail(&c, "a big-endian GGUF file: not supported");
        return cfail(&c, "not a GGUF file");
    }
    u32(&c, &version, "version");
    if (version == 1) return cfail(&c, "GGUF version 1 (32-bit counts) is not supported: convert it again");
    if (version == 0x03000000 || version == 0x02000000) return cfail(&c, "a big-endian GGUF file: not supported");
    if (version != 2 && version != 3) return cfail(&c, "GGUF version %u is not supported (2 or 3)", version);
    u64(&c, &nt, "tensor count");
    u64(&c, &nkv, "metadata count");
    /* A KV takes at least 8 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8. */
    if (nkv > left(&c) / 13) return cfail(&c, "%" PRIu64 " metadata entries cannot fit in the file", nkv);
    if (nt > left(&c) / 33) return cfail(&c, "%" PRIu64 " tensors cannot fit in the file", nt);
    if (nt > INT32_MAX / 2 || nkv > INT32_MAX / 2) return cfail(&c, "too many entries");
    g->meta = calloc((size_t)nkv + 1, sizeof *g->meta);
    g->tensors = calloc((size_t)nt + 1, sizeof *g->tensors);
    uint64_t *offs = calloc((size_t)nt + 1, sizeof *offs);
    if (!g->meta || !g->tensors || !offs) {
        free(offs);
        return cfail(&c, "out of memory");
    }
    uint32_t alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < nkv && !c.failed; i++) parse_kv(g, &c, &alignment);
    qsort(g->meta, (size_t)g->n_meta, sizeof *g->meta, cmp_key);
    for (int i = 1; i < g->n_meta && !c.failed; i++)
        if (!strcmp(g->meta[i - 1].key, g->meta[i].key)) cfail(&c, "metadata %.100s: listed twice", g->meta[i].key);
    for (uint64_t i = 0; i < nt && !c.failed; i++)
        if (!parse_tensor_info(g, &c, &g->tensors[i], &offs[i])) g->n_tensors++;
    if (c.failed) { free(offs); return -1; }
    size_t data = (c.at + alignment - 1) / alignment * alignment;
    if (data > g->size && nt) { free(offs); return cfail(&c, "data section starts past the end of the file"); }
    size_t data_len = data <= g->size ? g->size - data : 0;
    for (int i = 0; i < g->n_tensors; i++) {
        wt_tensor *t = &g->tensors[i];
        if (offs[i] % alignment) {
            cfail(&c, "tensor %.200s: offset %" PRIu64 " is not a multiple of the alignment %u", t->name, offs[i], alignment);
            free(offs);
            return -1;
        }
        if (offs[i] > data_len || t->nbytes > data_len - offs[i]) {
            cfail(&c, "tensor %.200s: data [%" PRIu64 ", +%zu) past the end of the data section (%zu bytes)", t->name,
                  offs[i], t->nbytes, data_len);
            free(offs);
            return -1;
        }
        t->data = g->base + data + offs[i];
    }
    free(offs);
    /* Spans must not overlap (empty tensors take no room); checked under
     * the file's own names, before renaming. */
    const wt_tensor **by_off = malloc(sizeof *by_off * ((size_t)g->n_tensors + 1));
    if (!by_off) return cfail(&c, "out of memory");
    int m = 0;
    for (int i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].nbytes) by_off[m++] = &g->tensors[i];
    qsort(by_off, (size_t)m, sizeof *by_off, cmp_span);
    for (int i = 1; i < m && !c.failed; i++)
        if ((const uint8_t *)by_off[i - 1]->data + by_off[i - 1]->nbytes > (const uint8_t *)by_off[i]->data)
            cfail(&c, "tensors %.200s and %.200s overlap", by_off[i - 1]->name, by_off[i]->name);
    free(by_off);
    if (c.failed) return -1;
    return rename_all(g, &c);
}

/* ---- the source ---- */

static const wt_gguf *of(const wt_source *s) { return (const wt_gguf *)s; }
static int src_count(const wt_source *s) { return of(s)->n_tensors; }
static const wt_tensor *src_at(const wt_source *s, int i) { return &of(s)->tensors[i]; }

static const wt_tensor *src_find(const wt_source *s, const char *name)
{
    wt_tensor key = {.name = name};
    return bsearch(&key, of(s)->tensors, (size_t)of(s)->n_tensors, sizeof key, cmp_name);
}

static const char *src_meta(const wt_source *s, const char *key)
{
    gguf_meta k = {.key = key};
    const gguf_meta *m = bsearch(&k, of(s)->meta, (size_t)of(s)->n_meta, sizeof k, cmp_key);
    return m ? m->value : NULL;
}

/* Every metadata value, as text (numbers in decimal), for fmimage convert. */
static int src_meta_at(const wt_source *s, int i, const char **key, const char **value)
{
    if (i < 0 || i >= of(s)->n_meta) return -1;
    *key = of(s)->meta[i].key;
    *value = of(s)->meta[i].value;
    return 0;
}

static void gguf_free(wt_gguf *g)
{
    if (g->map) munmap(g->map, g->size);
    free(g->tensors);
    free(g->meta);
    for (chunk *k = g->strings, *next; k; k = next) {
        next = k->next;
        free(k);
    }
    free(g->path);
    free(g);
}

static void src_close(wt_source *s) { gguf_free((wt_gguf *)s); }
static void src_release(const wt_source *s, const wt_tensor *t) { wt_release_mapped(of(s)->map, of(s)->size, t); }
static const wt_source_ops gguf_ops = {src_count, src_at, src_find, src_meta, src_close, src_meta_at, src_release};

/* Names and values in a message come from the file: keep it one line. */
static void one_line(fm_error *err)
{
    if (!err) return;
    for (char *c = err->msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
}

static wt_source *finish(wt_gguf *g, fm_error *err)
{
    g->src = (wt_source){&gguf_ops, g->path};
    if (parse(g, err)) {
        one_line(err);
        gguf_free(g);
        return NULL;
    }
    return &g->src;
}

wt_source *wt_gguf_open_mem(const void *buf, size_t size, const char *name, fm_error *err)
{
    wt_gguf *g = calloc(1, sizeof *g);
    if (g) g->path = strdup(name);
    if (!g || !g->path) {
        free(g);
        core_fail(err, FM_EINPUT, "%s: out of memory", name);
        return NULL;
    }
    g->base = buf;
    g->size = size;
    return finish(g, err);
}

wt_source *wt_gguf_open(const char *path, fm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size < 24) {
        int e = errno;
        int reg = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
        close(fd);
        if (!reg) core_fail(err, FM_EINPUT, "%s: not a regular file", path);
        else if (sb.st_size < 24) core_fail(err, FM_EINPUT, "%s: too short for a GGUF file (%lld bytes)", path, (long long)sb.st_size);
        else core_fail(err, FM_EINPUT, "%s: %s", path, strerror(e));
        return NULL;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        core_fail(err, FM_EINPUT, "%s: cannot map: %s", path, strerror(errno));
        return NULL;
    }
    wt_gguf *g = calloc(1, sizeof *g);
    if (g) g->path = strdup(path);
    if (!g || !g->path) {
        free(g);
        munmap(map, (size_t)sb.st_size);
        core_fail(err, FM_EINPUT, "%s: out of memory", path);
        return NULL;
    }
    g->map = map;
    g->base = map;
    g->size = (size_t)sb.st_size;
    return finish(g, err);
}
