/* fm_convert: any weight file fmimage reads (safetensors, PyTorch pickle,
 * GGUF, diffusers folder) written as one safetensors file with the names the
 * binder reads (ldm's), its metadata kept; or, for an OUT ending in .gguf,
 * as a GGUF file the way stable-diffusion.cpp's `-M convert` writes one:
 * the names as they are (ldm's; sd.cpp renames only with --convert-name),
 * each tensor's type chosen by sd.cpp's rule (weights/quantise.h, ggml's
 * rows), and the metadata as string KVs (sd.cpp writes none).
 *
 * Tensors stream from the source's mapping to the writer (weights/st_write.c,
 * temp file + rename): a tensor whose dtype stays is copied as it is, a
 * converted one goes through float32 in blocks, so memory stays small
 * whatever the model's size. F32 -> F16/BF16 rounds to nearest even, as
 * torch's .half()/.bfloat16() do; integer tensors (position_ids) are never
 * converted. */
#include "fmimage.h"
#include "weights/quantise.h"
#include "weights/source.h"
#include "weights/st_write.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BLOCK 65536 /* elements converted at a time */

static int parse_type(const char *type, int *dtype, fm_error *err)
{
    *dtype = -1;
    if (!type || !*type || !strcmp(type, "keep")) return 0;
    if (!strcmp(type, "f32")) *dtype = FM_DT_F32;
    else if (!strcmp(type, "f16")) *dtype = FM_DT_F16;
    else if (!strcmp(type, "bf16")) *dtype = FM_DT_BF16;
    else return core_fail(err, FM_EUSAGE, "--type: %s: one of f16, bf16, f32 for safetensors (quantised types: write OUT.gguf)", type);
    return 0;
}

static int ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && !strcmp(s + a - b, tail);
}

/* The float tensors change dtype; the rest stay. */
static core_dtype target(const wt_tensor *t, int dtype)
{
    return dtype >= 0 && wt_is_float(t->dtype) ? (core_dtype)dtype : t->dtype;
}

/* Tensor i of the writer from t, converted to dt block by block. */
static int put_converted(wt_st_writer *w, int i, const wt_tensor *t, core_dtype dt, void *buf, float *f32,
                         fm_error *err)
{
    size_t n = (size_t)wt_numel(t), es_in = core_dtype_size(t->dtype), es_out = core_dtype_size(dt);
    for (size_t at = 0; at < n; at += BLOCK) {
        size_t k = n - at < BLOCK ? n - at : BLOCK;
        wt_tensor piece = *t;
        piece.ndim = 1;
        piece.shape[0] = (int64_t)k;
        piece.data = (const char *)t->data + at * es_in;
        wt_convert_f32(f32, &piece);
        const void *out = f32;
        if (dt == FM_DT_F16) core_f32_to_f16(buf, f32, k), out = buf;
        else if (dt == FM_DT_BF16) core_f32_to_bf16(buf, f32, k), out = buf;
        int rc = wt_st_writer_put_part(w, i, at * es_out, out, k * es_out, err);
        if (rc) return rc;
    }
    return 0;
}

static int write_source(const wt_source *src, const char *out, int dtype, fm_error *err)
{
    int n = wt_count(src), n_meta = 0;
    const char *k, *v;
    while (wt_meta_at(src, n_meta, &k, &v) == 0) n_meta++;
    wt_st_entry *e = calloc((size_t)n + 1, sizeof *e);
    wt_st_meta *meta = calloc((size_t)n_meta + 1, sizeof *meta);
    uint16_t *buf = malloc(BLOCK * sizeof *buf);
    float *f32 = malloc(BLOCK * sizeof *f32);
    int rc = 0;
    if (!e || !meta || !buf || !f32) {
        rc = core_fail(err, FM_EINPUT, "%s: out of memory", out);
        goto done;
    }
    int n_kept = 0;
    for (int i = 0; i < n_meta; i++) /* a GGUF array has no text value: not kept */
        if (!wt_meta_at(src, i, &meta[n_kept].key, &meta[n_kept].value) && meta[n_kept].value) n_kept++;
    n_meta = n_kept;
    for (int i = 0; i < n; i++) {
        const wt_tensor *t = wt_at(src, i);
        e[i].name = t->name;
        e[i].dtype = target(t, dtype);
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
    }
    wt_st_writer *w = wt_st_writer_begin(out, e, n, meta, n_meta, err);
    if (!w) {
        rc = err && err->code ? err->code : FM_EINPUT;
        goto done;
    }
    for (int i = 0; i < n && !rc; i++) {
        const wt_tensor *t = wt_at(src, i);
        if (!t->nbytes) continue;
        rc = e[i].dtype == t->dtype ? wt_st_writer_put(w, i, t->data, err)
                                    : put_converted(w, i, t, e[i].dtype, buf, f32, err);
    }
    if (rc) wt_st_writer_abort(w);
    else rc = wt_st_writer_finish(w, err);
done:
    free(e);
    free(meta);
    free(buf);
    free(f32);
    return rc;
}

/* The GGUF --type: any type the loader's --type takes; NULL/"keep": -1. */
static int parse_gguf_type(const char *type, int *dtype, fm_error *err)
{
    *dtype = -1;
    if (!type || !*type || !strcmp(type, "keep")) return 0;
    int t = core_dtype_from_name(type);
    if (t < 0 || (t != FM_DT_F32 && t != FM_DT_F16 && t != FM_DT_BF16 && !core_dtype_is_quant((core_dtype)t)))
        return core_fail(err, FM_EUSAGE, "--type: %.40s is not f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, "
                         "q3_k, q4_k, q5_k or q6_k", type);
    *dtype = t;
    return 0;
}

/* src (closed here) converted by sd.cpp's rule with ggml's rows, as GGUF. */
static int write_gguf(wt_source *src, const char *out, int dtype, fm_error *err)
{
    if (dtype >= 0 && !(src = wt_quantised(src, (core_dtype)dtype, 1, err))) return err && err->code ? err->code : FM_EINPUT;
    int n_meta = 0;
    const char *k, *v;
    while (wt_meta_at(src, n_meta, &k, &v) == 0) n_meta++;
    const char *(*kv)[2] = calloc((size_t)n_meta + 1, sizeof *kv);
    int rc;
    if (!kv) rc = core_fail(err, FM_EINPUT, "%s: out of memory", out);
    else {
        int n_kv = 0;
        for (int i = 0; i < n_meta; i++) {
            wt_meta_at(src, i, &kv[n_kv][0], &kv[n_kv][1]);
            /* the writer's own alignment is a u32, not this text */
            if (kv[n_kv][0] && kv[n_kv][1] && strcmp(kv[n_kv][0], "general.alignment")) n_kv++;
        }
        rc = wt_gguf_write(out, src, (const char *const(*)[2])kv, n_kv, err);
    }
    free(kv);
    wt_close(src);
    return rc;
}

int fm_convert(const char *in, const char *out, const char *type, int overwrite, fm_error *err)
{
    core_error_clear(err);
    if (!in || !out) return core_fail(err, FM_EUSAGE, "convert: needs an input and -o OUTPUT");
    int gguf = ends_with(out, ".gguf"), dtype;
    int rc = gguf ? parse_gguf_type(type, &dtype, err) : parse_type(type, &dtype, err);
    if (rc) return rc;
    struct stat sb;
    if (!overwrite && lstat(out, &sb) == 0)
        return core_fail(err, FM_EUSAGE, "%s: exists (--force overwrites it)", out);
    wt_source *src = wt_open(in, err);
    if (!src) return err && err->code ? err->code : FM_EINPUT;
    if (gguf) return write_gguf(src, out, dtype, err);
    rc = write_source(src, out, dtype, err);
    wt_close(src);
    return rc;
}
