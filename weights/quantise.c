/* Quantising a model (quantise.h): the per-tensor rule, the converting
 * source, and the GGUF writer. */
#include "weights/quantise.h"
#include "weights/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ends(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The conv (4-D) tensors under this many elements stay float in memory. */
enum { SMALL_CONV = 1 << 14 };

core_dtype wt_quant_choice(const wt_tensor *t, core_dtype want, int ggml_rows)
{
    const char *n = t->name;
    /* in memory 1-D tensors (norm weights) stay float; a file quantises them
     * as sd.cpp does, but never the top-level DDPM buffers (alphas_cumprod) */
    if (!wt_is_float(t->dtype) || t->dtype == want || t->ndim < 1 || (!ggml_rows && t->ndim < 2) || !strchr(n, '.'))
        return t->dtype; /* 0-dim scalars (model_ema.decay) too: they have no row */
    if (ends(n, ".bias") || ends(n, ".scale") || ends(n, ".weight_scale") || strstr(n, "time_embed.") ||
        strstr(n, "label_emb.") || strstr(n, "embedding"))
        return t->dtype;
    /* In memory the text encoders stay as the file has them when quantising:
     * they run once per image and their file pages are dropped after the
     * encoding, where a quantised copy would stay resident through the
     * sampling and the decode (and is not needed for speed). */
    if (!ggml_rows && core_dtype_is_quant(want) && (!strncmp(n, "cond_stage_model.", 17) || !strncmp(n, "conditioner.", 12)))
        return t->dtype;
    int64_t blk = core_dtype_block(want);
    int64_t row = ggml_rows ? t->shape[t->ndim - 1] : (t->shape[0] ? wt_numel(t) / t->shape[0] : 0);
    if (row == 0 || row % blk) return t->dtype;
    if (!ggml_rows && t->ndim == 4 && blk > 1 && wt_numel(t) < SMALL_CONV) return t->dtype;
    return want;
}

/* ---- the converting source ---- */

typedef struct quantised {
    wt_source src;
    wt_source *inner;
    wt_tensor *tensors; /* inner's order; names point into inner */
    int n;
    void *block;        /* the converted data */
} quantised;

static const quantised *qof(const wt_source *s) { return (const quantised *)s; }
static int q_count(const wt_source *s) { return qof(s)->n; }
static const wt_tensor *q_at(const wt_source *s, int i) { return &qof(s)->tensors[i]; }

static const wt_tensor *q_find(const wt_source *s, const char *name)
{
    const wt_tensor *t = wt_find(qof(s)->inner, name);
    if (!t) return NULL;
    /* same names in the same order: find the index by bisection */
    int lo = 0, hi = qof(s)->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(qof(s)->tensors[mid].name, name);
        if (!c) return &qof(s)->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static const char *q_meta(const wt_source *s, const char *key) { return wt_meta(qof(s)->inner, key); }
static int q_meta_at(const wt_source *s, int i, const char **key, const char **value)
{
    return wt_meta_at(qof(s)->inner, i, key, value);
}

static void q_close(wt_source *s)
{
    quantised *q = (quantised *)s;
    core_free(q->block);
    free(q->tensors);
    wt_close(q->inner);
    free(q);
}

/* Only the tensors kept as they were point into inner. */
static void q_release(const wt_source *s, const wt_tensor *t)
{
    const quantised *q = qof(s);
    const wt_tensor *inner_t = wt_find(q->inner, t->name);
    if (inner_t && inner_t->data == t->data) wt_release(q->inner, inner_t);
}

static const wt_source_ops quantised_ops = {q_count, q_at, q_find, q_meta, q_close, q_meta_at, q_release};

/* t's data converted to dtype into dst (a float32 scratch of numel). */
static int convert_one(void *dst, const wt_tensor *from, core_dtype to, float *f32)
{
    size_t n = (size_t)wt_numel(from);
    wt_convert_f32(f32, from);
    switch (to) {
    case FM_DT_F32: memcpy(dst, f32, n * sizeof(float)); return 0;
    case FM_DT_F16: core_f32_to_f16(dst, f32, n); return 0;
    case FM_DT_BF16: core_f32_to_bf16(dst, f32, n); return 0;
    default: return core_quantize(dst, f32, to, n);
    }
}

wt_source *wt_quantised(wt_source *inner, core_dtype want, int ggml_rows, fm_error *err)
{
    if (want != FM_DT_F32 && want != FM_DT_F16 && want != FM_DT_BF16 && !core_dtype_is_quant(want)) {
        wt_fail(err, inner, "cannot convert to %s", core_dtype_name(want));
        wt_close(inner);
        return NULL;
    }
    quantised *q = calloc(1, sizeof *q);
    int n = wt_count(inner);
    if (q) q->tensors = malloc(sizeof *q->tensors * ((size_t)n + 1));
    if (!q || !q->tensors) goto oom;
    q->inner = inner;
    q->n = n;
    q->src = (wt_source){&quantised_ops, inner->path};
    size_t total = 0, biggest = 0;
    size_t *at = malloc(sizeof *at * ((size_t)n + 1));
    if (!at) goto oom;
    for (int i = 0; i < n; i++) {
        const wt_tensor *t = wt_at(inner, i);
        q->tensors[i] = *t;
        core_dtype to = wt_quant_choice(t, want, ggml_rows);
        at[i] = SIZE_MAX;
        if (to == t->dtype) continue;
        q->tensors[i].dtype = to;
        q->tensors[i].nbytes = core_dtype_bytes(to, (size_t)wt_numel(t));
        at[i] = total;
        total += (q->tensors[i].nbytes + 63) & ~(size_t)63;
        if ((size_t)wt_numel(t) > biggest) biggest = (size_t)wt_numel(t);
    }
    if (total && !(q->block = core_alloc(total))) {
        free(at);
        goto oom;
    }
    int failed = 0;
#pragma omp parallel
    {
        float *f32 = biggest ? malloc(biggest * sizeof(float)) : NULL;
        if (biggest && !f32) failed = 1;
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n; i++) {
            if (at[i] == SIZE_MAX || !f32) continue;
            void *dst = (char *)q->block + at[i];
            if (convert_one(dst, wt_at(inner, i), q->tensors[i].dtype, f32)) failed = 1;
            q->tensors[i].data = dst;
            /* the original is not read again: its mapped pages stop counting in RSS */
            wt_release(inner, wt_at(inner, i));
        }
        free(f32);
    }
    free(at);
    if (failed) goto oom;
    return &q->src;
oom:
    wt_fail(err, inner, "out of memory converting to %s", core_dtype_name(want));
    if (q) {
        core_free(q->block);
        free(q->tensors);
        free(q);
    }
    wt_close(inner);
    return NULL;
}

/* ---- the GGUF writer ---- */

typedef struct writer {
    FILE *f;
    int failed;
} writer;

static void w_bytes(writer *w, const void *p, size_t n)
{
    if (!w->failed && n && fwrite(p, 1, n, w->f) != n) w->failed = 1;
}

static void w_u32(writer *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, 4);
}

static void w_u64(writer *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, 8);
}

static void w_str(writer *w, const char *s)
{
    w_u64(w, strlen(s));
    w_bytes(w, s, strlen(s));
}

static void w_pad(writer *w, uint64_t *at, uint64_t align)
{
    static const uint8_t zeros[64];
    size_t n = (size_t)((align - *at % align) % align);
    w_bytes(w, zeros, n);
    *at += n;
}

enum { ALIGN = 32, KV_STRING = 8 };

int wt_gguf_write(const char *path, const wt_source *src, const char *const (*kv)[2], int n_kv, fm_error *err)
{
    int n = wt_count(src);
    for (int i = 0; i < n; i++) {
        const wt_tensor *t = wt_at(src, i);
        if (wt_gguf_type_of(t->dtype) < 0 || t->ndim > 4)
            return core_fail(err, FM_EINPUT, "%s: tensor %.200s: %s [%d dims] has no GGUF form", path, t->name,
                             core_dtype_name(t->dtype), t->ndim);
        if (t->ndim && t->shape[t->ndim - 1] % core_dtype_block(t->dtype))
            return core_fail(err, FM_EINPUT, "%s: tensor %.200s: %s rows of %lld are not whole blocks", path, t->name,
                             core_dtype_name(t->dtype), (long long)t->shape[t->ndim - 1]);
    }
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return core_fail(err, FM_EINPUT, "%s: path too long", path);
    writer w = {fopen(tmp, "wb"), 0};
    if (!w.f) return core_fail(err, FM_EINPUT, "%s: %s", tmp, strerror(errno));
    uint64_t at = 0;
    w_bytes(&w, "GGUF", 4);
    w_u32(&w, 3);
    w_u64(&w, (uint64_t)n);
    w_u64(&w, (uint64_t)n_kv);
    at = 24;
    for (int i = 0; i < n_kv; i++) {
        w_str(&w, kv[i][0]);
        w_u32(&w, KV_STRING);
        w_str(&w, kv[i][1]);
        at += 8 + strlen(kv[i][0]) + 4 + 8 + strlen(kv[i][1]);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const wt_tensor *t = wt_at(src, i);
        w_str(&w, t->name);
        /* a scalar (a checkpoint's model_ema.decay) is ggml's: one dimension of 1 */
        int ndim = t->ndim ? t->ndim : 1;
        w_u32(&w, (uint32_t)ndim);
        if (!t->ndim) w_u64(&w, 1);
        for (int d = t->ndim - 1; d >= 0; d--) w_u64(&w, (uint64_t)t->shape[d]); /* ne: fastest first */
        w_u32(&w, (uint32_t)wt_gguf_type_of(t->dtype));
        w_u64(&w, off);
        at += 8 + strlen(t->name) + 4 + 8 * (uint64_t)ndim + 4 + 8;
        off += (t->nbytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    w_pad(&w, &at, ALIGN);
    for (int i = 0; i < n; i++) {
        const wt_tensor *t = wt_at(src, i);
        w_bytes(&w, t->data, t->nbytes);
        at += t->nbytes;
        w_pad(&w, &at, ALIGN);
    }
    if (fclose(w.f) || w.failed) {
        unlink(tmp);
        return core_fail(err, FM_EINPUT, "%s: write failed", tmp);
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(e));
    }
    return 0;
}
