#include "tools/lib/randckpt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- layout TSV ---- */

static int parse_layout_line(tl_st_entry *e, char *line, const char *path, int lineno, fm_error *err)
{
    char *tab1 = strchr(line, '\t');
    char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
    if (!tab2 || tab1 == line)
        return core_fail(err, FM_EINPUT, "%s:%d: expected name<TAB>dtype<TAB>shape", path, lineno);
    *tab1 = *tab2 = 0;
    e->name = line;
    int found = 0;
    for (int t = 0; t < FM_DT_COUNT; t++)
        if (!strcmp(tab1 + 1, core_dtype_name((core_dtype)t))) {
            e->dtype = (core_dtype)t;
            found = 1;
        }
    if (!found) return core_fail(err, FM_EINPUT, "%s:%d: unknown dtype %.20s", path, lineno, tab1 + 1);
    e->ndim = 0;
    char *s = tab2 + 1;
    while (*s) {
        if (e->ndim == FM_ST_MAX_DIMS)
            return core_fail(err, FM_EINPUT, "%s:%d: more than %d dimensions", path, lineno, FM_ST_MAX_DIMS);
        char *end;
        errno = 0;
        long long d = strtoll(s, &end, 10);
        if (end == s || d < 0 || errno || (*end && *end != ','))
            return core_fail(err, FM_EINPUT, "%s:%d: bad shape", path, lineno);
        e->shape[e->ndim++] = d;
        s = *end ? end + 1 : end;
    }
    return 0;
}

int tl_layout_read(tl_layout *layout, const char *path, fm_error *err)
{
    memset(layout, 0, sizeof *layout);
    FILE *f = fopen(path, "rb");
    if (!f) return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    size_t k;
    while (buf && (k = fread(buf + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) {
            char *p = realloc(buf, 2 * cap + 1);
            if (!p) { free(buf); buf = NULL; break; }
            buf = p;
            cap *= 2;
        }
    }
    int rd_err = ferror(f);
    fclose(f);
    if (!buf) return core_fail(err, FM_EINPUT, "%s: out of memory", path);
    if (rd_err) { free(buf); return core_fail(err, FM_EINPUT, "%s: read error", path); }
    buf[len] = 0;
    int lines = 1;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    layout->entries = calloc((size_t)lines, sizeof *layout->entries);
    layout->strings = buf;
    if (!layout->entries) { tl_layout_free(layout); return core_fail(err, FM_EINPUT, "%s: out of memory", path); }
    char *line = buf;
    for (int lineno = 1; line && *line; lineno++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (*line) {
            int rc = parse_layout_line(&layout->entries[layout->n], line, path, lineno, err);
            if (rc) { tl_layout_free(layout); return rc; }
            layout->n++;
        }
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

void tl_layout_free(tl_layout *layout)
{
    free(layout->entries);
    free(layout->strings);
    memset(layout, 0, sizeof *layout);
}

/* ---- values ---- */

typedef struct rng { uint64_t s; } rng;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(rng *r) /* [0, 1) */
{
    return (double)(splitmix64(&r->s) >> 11) / 9007199254740992.0;
}

static double rng_normal(rng *r)
{
    double u = rng_uniform(r), v = rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(2.0 * M_PI * v);
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

typedef enum { V_ZERO, V_CONST, V_UNIFORM, V_NORMAL, V_ARANGE, V_SCHEDULE } value_kind;

typedef struct value_rule {
    value_kind kind;
    double center, scale; /* CONST: center; UNIFORM: center + U(-scale, scale); NORMAL: N(0, scale^2) */
    int schedule;         /* index into schedule_names, or -1 for denoiser.sigmas */
} value_rule;

static const char *const schedule_names[] = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
};
#define N_SCHEDULE ((int)(sizeof schedule_names / sizeof schedule_names[0]))

static value_rule rule_for(const tl_st_entry *e)
{
    const char *n = e->name;
    for (int i = 0; i < N_SCHEDULE; i++)
        if (!strcmp(n, schedule_names[i])) return (value_rule){V_SCHEDULE, 0, 0, i};
    if (!strcmp(n, "denoiser.sigmas")) return (value_rule){V_SCHEDULE, 0, 0, -1};
    if (!strcmp(n, "model_ema.decay")) return (value_rule){V_CONST, 0.9999, 0, 0};
    if (ends_with(n, "position_ids")) return (value_rule){V_ARANGE, 0, 0, 0};
    if (e->dtype == FM_DT_I64 || e->dtype == FM_DT_I32 || e->dtype == FM_DT_U8)
        return (value_rule){V_ZERO, 0, 0, 0};
    if (ends_with(n, "logit_scale")) return (value_rule){V_CONST, log(100.0), 0, 0};
    if (strstr(n, "token_embedding")) return (value_rule){V_NORMAL, 0, 0.02, 0};
    if (strstr(n, "position_embedding") || strstr(n, "positional_embedding"))
        return (value_rule){V_NORMAL, 0, 0.01, 0};
    if (e->ndim >= 2) {
        /* text_projection is used as x @ P, i.e. [in, out]; everything else is [out, in, ...]. */
        double fan_in = 1;
        if (ends_with(n, "text_projection"))
            fan_in = (double)e->shape[0];
        else
            for (int d = 1; d < e->ndim; d++) fan_in *= (double)e->shape[d];
        return (value_rule){V_UNIFORM, 0, sqrt(3.0 / fmax(fan_in, 1.0)), 0};
    }
    if (e->ndim == 1 && ends_with(n, ".weight")) return (value_rule){V_UNIFORM, 1.0, 0.1, 0}; /* norms */
    if (e->ndim == 1) return (value_rule){V_UNIFORM, 0, 0.05, 0};                           /* biases */
    return (value_rule){V_ZERO, 0, 0, 0};
}

/* The 12 ldm DDPM.register_schedule buffers, or sgm's ascending sigmas. */
static double schedule_value(int which, int i, int T)
{
    const double ls = 0.00085, le = 0.012;
    double ac = 1, ac_prev = 1, beta = 0;
    for (int k = 0; k <= i; k++) {
        double r = T > 1 ? sqrt(ls) + (sqrt(le) - sqrt(ls)) * k / (T - 1) : sqrt(ls);
        beta = r * r;
        ac_prev = ac;
        ac *= 1 - beta;
    }
    double pv = beta * (1 - ac_prev) / (1 - ac);
    switch (which) {
    case -1: return sqrt((1 - ac) / ac);
    case 0: return beta;
    case 1: return ac;
    case 2: return ac_prev;
    case 3: return sqrt(ac);
    case 4: return sqrt(1 - ac);
    case 5: return log(1 - ac);
    case 6: return sqrt(1 / ac);
    case 7: return sqrt(1 / ac - 1);
    case 8: return pv;
    case 9: return log(fmax(pv, 1e-20));
    case 10: return beta * sqrt(ac_prev) / (1 - ac);
    case 11: return (1 - ac_prev) * sqrt(1 - beta) / (1 - ac);
    }
    return 0;
}

static void store(void *dst, core_dtype dt, const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case FM_DT_F32: ((float *)dst)[i] = (float)v[i]; break;
        case FM_DT_F64: ((double *)dst)[i] = v[i]; break;
        case FM_DT_F16: ((uint16_t *)dst)[i] = core_f32_to_f16_1((float)v[i]); break;
        case FM_DT_BF16: { float f = (float)v[i]; core_f32_to_bf16((uint16_t *)dst + i, &f, 1); } break;
        case FM_DT_I64: ((int64_t *)dst)[i] = (int64_t)v[i]; break;
        case FM_DT_I32: ((int32_t *)dst)[i] = (int32_t)v[i]; break;
        case FM_DT_U8: ((uint8_t *)dst)[i] = (uint8_t)v[i]; break;
        default: break;
        }
    }
}

#define CHUNK 65536

static int write_tensor(tl_st_writer *w, int idx, const tl_st_entry *e, uint64_t seed, double *vals,
                        void *bytes, fm_error *err)
{
    value_rule r = rule_for(e);
    if (r.kind == V_ZERO) return 0; /* the file is zero where nothing is written */
    rng g = {seed ^ name_hash(e->name)};
    size_t numel = 1;
    for (int d = 0; d < e->ndim; d++) numel *= (size_t)e->shape[d];
    int64_t last = e->ndim ? e->shape[e->ndim - 1] : 1;
    size_t es = core_dtype_size(e->dtype);
    for (size_t at = 0; at < numel; at += CHUNK) {
        size_t n = numel - at < CHUNK ? numel - at : CHUNK;
        for (size_t i = 0; i < n; i++) {
            size_t k = at + i;
            switch (r.kind) {
            case V_CONST: vals[i] = r.center; break;
            case V_UNIFORM: vals[i] = r.center + r.scale * (2 * rng_uniform(&g) - 1); break;
            case V_NORMAL: vals[i] = r.scale * rng_normal(&g); break;
            case V_ARANGE: vals[i] = (double)(last ? (int64_t)k % last : 0); break;
            case V_SCHEDULE: vals[i] = schedule_value(r.schedule, (int)k, (int)numel); break;
            default: vals[i] = 0;
            }
        }
        store(bytes, e->dtype, vals, n);
        int rc = tl_st_writer_put_part(w, idx, at * es, bytes, n * es, err);
        if (rc) return rc;
    }
    return 0;
}

int tl_randckpt_write(const tl_layout *layout, const char *out, const tl_randckpt_opts *opts,
                      fm_error *err)
{
    tl_st_entry *e = malloc(sizeof *e * ((size_t)layout->n + 1));
    if (!e) return core_fail(err, FM_EINPUT, "%s: out of memory", out);
    for (int i = 0; i < layout->n; i++) {
        e[i] = layout->entries[i];
        int is_float = e[i].dtype == FM_DT_F32 || e[i].dtype == FM_DT_F16 ||
                       e[i].dtype == FM_DT_BF16 || e[i].dtype == FM_DT_F64;
        if (is_float && opts->float_dtype >= 0) e[i].dtype = (core_dtype)opts->float_dtype;
    }
    wt_st_meta meta = {"fmimage.config", opts->config};
    tl_st_writer *w = tl_st_writer_begin(out, e, layout->n, &meta, opts->config ? 1 : 0, err);
    if (!w) { free(e); return err ? err->code : FM_EINPUT; }
    int rc = 0;
    if (!opts->zeros) {
        double *vals = malloc(CHUNK * sizeof *vals);
        void *bytes = malloc(CHUNK * 8);
        if (!vals || !bytes) rc = core_fail(err, FM_EINPUT, "%s: out of memory", out);
        for (int i = 0; !rc && i < layout->n; i++)
            rc = write_tensor(w, i, &e[i], opts->seed, vals, bytes, err);
        free(vals);
        free(bytes);
    }
    free(e);
    if (rc) { tl_st_writer_abort(w); return rc; }
    return tl_st_writer_finish(w, err);
}
