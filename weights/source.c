/* What every weight-file reader shares: lookups over a wt_source and the
 * checked, float32 view of its tensors. */
#include "weights/source.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int64_t wt_numel(const wt_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int wt_is_float(core_dtype t)
{
    return t == FM_DT_F32 || t == FM_DT_F16 || t == FM_DT_BF16 || t == FM_DT_F64 || core_dtype_is_quant(t);
}

int wt_has_prefix(const wt_source *s, const char *prefix)
{
    size_t len = strlen(prefix);
    int lo = 0, hi = wt_count(s); /* first name >= prefix */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(wt_at(s, mid)->name, prefix) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < wt_count(s) && !strncmp(wt_at(s, lo)->name, prefix, len);
}

int wt_fail(fm_error *err, const wt_source *s, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return core_fail(err, FM_EINPUT, "%s: %s", s->path, why);
}

/* "[a,b,c]" into buf. */
static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

const wt_tensor *wt_require(const wt_source *s, const char *name, int ndim, const int64_t *shape,
                            fm_error *err)
{
    const wt_tensor *t = wt_find(s, name);
    if (!t) {
        wt_fail(err, s, "tensor %.200s: missing", name);
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = shape[i] < 0 || shape[i] == t->shape[i];
    if (!ok) {
        char want[128], have[128];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(have, sizeof have, t->ndim, t->shape);
        wt_fail(err, s, "tensor %.200s: shape %s, expected %s", name, have, want);
        return NULL;
    }
    if (!wt_is_float(t->dtype)) {
        wt_fail(err, s, "tensor %.200s: dtype %s is not a float type", name, core_dtype_name(t->dtype));
        return NULL;
    }
    return t;
}

void wt_convert_f32(float *dst, const wt_tensor *t)
{
    size_t n = (size_t)wt_numel(t), es = core_dtype_size(t->dtype);
    if (core_dtype_is_quant(t->dtype) || (uintptr_t)t->data % es == 0) { /* blocks are read bytewise */
        core_convert_to_f32(dst, t->data, t->dtype, n);
        return;
    }
    /* safetensors does not align tensors: widen from aligned pieces. */
    uint64_t buf[1024];
    size_t per = sizeof buf / es;
    for (size_t i = 0; i < n; i += per) {
        size_t k = n - i < per ? n - i : per;
        memcpy(buf, (const char *)t->data + i * es, k * es);
        core_convert_to_f32(dst + i, buf, t->dtype, k);
    }
}

void wt_release_mapped(const void *map, size_t size, const wt_tensor *t)
{
    uintptr_t lo = (uintptr_t)t->data, hi = lo + t->nbytes, at = (uintptr_t)map;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (lo < at || hi > at + size) return; /* not this file's bytes */
    lo = (lo + page - 1) / page * page;
    hi = hi / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}
