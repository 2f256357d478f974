/* The pickle interpreter of pickle.h: a stack machine over plain values
 * that knows a fixed list of callables and executes none of them.
 *
 * Values live in one arena freed after the parse; the result is copied
 * out as plain data. Every opcode creates at most one value and consumes
 * at least one byte, and the arena is capped in proportion to the pickle's
 * length, so a hostile pickle costs bounded memory and time. */
#include "weights/pickle.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pv_kind { PV_MARK, PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_BYTES, PV_TUPLE, PV_LIST,
               PV_DICT, PV_GLOBAL, PV_STORAGE, PV_TENSOR, PV_OPAQUE };

static const char *const kind_name[] = {"mark", "None", "bool", "int", "float", "str", "bytes", "tuple",
                                        "list", "dict", "global", "storage", "tensor", "object"};

/* What a known global builds when called. */
enum g_kind { G_ODICT, G_PARAMDICT, G_REBUILD_V2, G_REBUILD, G_PARAM, G_STORAGE, G_INERT };

static const struct known_global {
    const char *name;
    enum g_kind kind;
    int dtype; /* G_STORAGE: core_dtype, or -1 for a type fmimage does not hold */
} globals[] = {
    {"collections.OrderedDict", G_ODICT, 0},
    {"torch.nn.modules.container.ParameterDict", G_PARAMDICT, 0}, /* original textual inversion */
    {"torch._utils._rebuild_tensor_v2", G_REBUILD_V2, 0},
    {"torch._utils._rebuild_tensor", G_REBUILD, 0},
    {"torch._utils._rebuild_parameter", G_PARAM, 0},
    {"torch._utils._rebuild_parameter_with_state", G_PARAM, 0},
    {"torch.FloatStorage", G_STORAGE, FM_DT_F32},
    {"torch.HalfStorage", G_STORAGE, FM_DT_F16},
    {"torch.BFloat16Storage", G_STORAGE, FM_DT_BF16},
    {"torch.DoubleStorage", G_STORAGE, FM_DT_F64},
    {"torch.LongStorage", G_STORAGE, FM_DT_I64},
    {"torch.IntStorage", G_STORAGE, FM_DT_I32},
    {"torch.ByteStorage", G_STORAGE, FM_DT_U8},
    {"torch.BoolStorage", G_STORAGE, -1},
    {"torch.CharStorage", G_STORAGE, -1},
    {"torch.ShortStorage", G_STORAGE, -1},
    /* inert: values beside the weights (global_step as a numpy scalar,
     * Lightning's callback state, sets); they become opaque objects */
    {"numpy.core.multiarray.scalar", G_INERT, 0},
    {"numpy.core.multiarray._reconstruct", G_INERT, 0},
    {"numpy.dtype", G_INERT, 0},
    {"numpy.ndarray", G_INERT, 0},
    {"_codecs.encode", G_INERT, 0},
    {"builtins.set", G_INERT, 0},
    {"__builtin__.set", G_INERT, 0},
    {"torch.float16", G_INERT, 0},
    {"torch.float32", G_INERT, 0},
    {"torch.bfloat16", G_INERT, 0},
    {"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", G_INERT, 0},
};

typedef struct pv pv;

typedef struct pk_tens {
    pv *storage;
    int64_t offset;
    int ndim;
    int64_t shape[WT_MAX_DIMS], stride[WT_MAX_DIMS];
} pk_tens;

typedef struct pk_stor {
    int dtype; /* -1: not held */
    const char *key;
    size_t keylen;
    int64_t numel;
} pk_stor;

struct pv {
    uint8_t kind;
    uint8_t module;  /* a dict made by ParameterDict: BUILD brings its _parameters */
    uint8_t visited; /* flattened already */
    union {
        int64_t i;
        double f;
        struct { const char *s; size_t len; } str;
        struct { pv **v; uint32_t n, cap; } seq; /* a dict holds key, value pairs */
        int g;                                   /* index into globals[] */
        pk_stor *st;
        pk_tens *t;
    } u;
};

typedef struct chunk {
    struct chunk *next;
    size_t used, size;
    max_align_t data[];
} chunk;

typedef struct vm {
    const uint8_t *p, *end, *start;
    const char *path;
    fm_error *err;
    chunk *arena;
    size_t arena_total, arena_cap;
    pv **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    pv **memo;
    size_t memo_cap, memo_count, memo_limit;
} vm;

static int fail(vm *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(vm *m, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return core_fail(m->err, FM_EINPUT, "%s: pickle: %s", m->path, why);
}

static size_t at_byte(const vm *m) { return (size_t)(m->p - m->start); }

static void *arena_get(vm *m, size_t bytes)
{
    bytes = (bytes + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    chunk *c = m->arena;
    if (!c || c->size - c->used < bytes) {
        /* chunks from 4 KiB doubling to 1 MiB: an embedding's few values
         * take one page, a checkpoint's thousands a few chunks */
        size_t grow = c ? (c->size < (1u << 19) ? 2 * c->size : (1u << 20)) : 4096;
        size_t size = bytes > grow ? bytes : grow;
        if (m->arena_total + size > m->arena_cap) return NULL;
        c = malloc(sizeof *c + size);
        if (!c) return NULL;
        c->next = m->arena;
        c->used = 0;
        c->size = size;
        m->arena = c;
        m->arena_total += size;
    }
    void *p = (char *)c->data + c->used;
    c->used += bytes;
    return p;
}

static int oom(vm *m) { return fail(m, "too large (memory for its values exhausted at byte %zu)", at_byte(m)); }

static pv *new_value(vm *m, int kind)
{
    pv *v = arena_get(m, sizeof *v);
    if (v) {
        memset(v, 0, sizeof *v);
        v->kind = (uint8_t)kind;
    }
    return v;
}

static int push(vm *m, pv *v)
{
    if (!v) return oom(m);
    if (m->sp == m->stack_cap) {
        size_t cap = m->stack_cap ? 2 * m->stack_cap : 256;
        pv **s = realloc(m->stack, cap * sizeof *s);
        if (!s) return oom(m);
        m->stack = s;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = v;
    return 0;
}

static pv *pop(vm *m)
{
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (m->sp <= floor) return NULL;
    return m->stack[--m->sp];
}

static pv *top(vm *m)
{
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    return m->sp > floor ? m->stack[m->sp - 1] : NULL;
}

static int push_mark(vm *m)
{
    if (m->n_marks == m->marks_cap) {
        size_t cap = m->marks_cap ? 2 * m->marks_cap : 64;
        size_t *s = realloc(m->marks, cap * sizeof *s);
        if (!s) return oom(m);
        m->marks = s;
        m->marks_cap = cap;
    }
    m->marks[m->n_marks++] = m->sp;
    return 0;
}

/* The items since the last MARK: *items points into the stack (valid
 * until the next push), the mark is removed. */
static int pop_mark(vm *m, pv ***items, size_t *n)
{
    if (!m->n_marks) return fail(m, "no MARK before byte %zu", at_byte(m));
    size_t at = m->marks[--m->n_marks];
    *items = m->stack ? m->stack + at : NULL; /* MARK on an empty stack */
    *n = m->sp - at;
    m->sp = at;
    return 0;
}

static int seq_add(vm *m, pv *s, pv *v)
{
    if (s->u.seq.n == s->u.seq.cap) {
        if (s->u.seq.cap >= UINT32_MAX / 2) return oom(m);
        uint32_t cap = s->u.seq.cap ? 2 * s->u.seq.cap : 8;
        pv **a = arena_get(m, cap * sizeof *a);
        if (!a) return oom(m);
        if (s->u.seq.n) memcpy(a, s->u.seq.v, s->u.seq.n * sizeof *a);
        s->u.seq.v = a;
        s->u.seq.cap = cap;
    }
    s->u.seq.v[s->u.seq.n++] = v;
    return 0;
}

static pv *new_seq(vm *m, int kind, pv **items, size_t n)
{
    pv *s = new_value(m, kind);
    if (!s || n > UINT32_MAX / 2) return NULL;
    if (n) {
        s->u.seq.v = arena_get(m, n * sizeof *items);
        if (!s->u.seq.v) return NULL;
        memcpy(s->u.seq.v, items, n * sizeof *items);
    }
    s->u.seq.n = s->u.seq.cap = (uint32_t)n;
    return s;
}

static int need(vm *m, size_t n, const char *what)
{
    if ((size_t)(m->end - m->p) < n) return fail(m, "%s runs past the end (at byte %zu)", what, at_byte(m));
    return 0;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A text line (protocol 0 argument), without its newline. */
static int line(vm *m, const char **s, size_t *len, const char *what)
{
    const uint8_t *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (!nl) return fail(m, "%s without a newline (at byte %zu)", what, at_byte(m));
    *s = (const char *)m->p;
    *len = (size_t)(nl - m->p);
    m->p = nl + 1;
    return 0;
}

static int push_str(vm *m, int kind, size_t len)
{
    if ((size_t)(m->end - m->p) < len) return fail(m, "string of %zu bytes runs past the end (at byte %zu)", len, at_byte(m));
    pv *v = new_value(m, kind);
    if (!v) return oom(m);
    v->u.str.s = (const char *)m->p;
    v->u.str.len = len;
    m->p += len;
    return push(m, v);
}

static int push_int(vm *m, int64_t i)
{
    pv *v = new_value(m, PV_INT);
    if (v) v->u.i = i;
    return push(m, v);
}

/* LONG1/LONG4: two's complement, little-endian; wider than 64 bits is an
 * opaque number (no tensor field can be that large). */
static int push_long(vm *m, size_t n)
{
    if ((size_t)(m->end - m->p) < n) return fail(m, "LONG runs past the end (at byte %zu)", at_byte(m));
    if (n > 8) {
        m->p += n;
        return push(m, new_value(m, PV_OPAQUE));
    }
    uint64_t u = n ? le(m->p, (int)n) : 0;
    if (n && n < 8 && (m->p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
    m->p += n;
    return push_int(m, (int64_t)u);
}

/* Protocol 0 INT/LONG: decimal text ("01"/"00" are True/False). */
static int push_text_int(vm *m, const char *what)
{
    const char *s = NULL;
    size_t len = 0;
    if (line(m, &s, &len, what)) return 1;
    char buf[32];
    if (len && s[len - 1] == 'L') len--;
    if (len == 0 || len >= sizeof buf) return push(m, new_value(m, PV_OPAQUE));
    memcpy(buf, s, len);
    buf[len] = 0;
    char *e;
    long long v = strtoll(buf, &e, 10);
    if (*e) return fail(m, "%s argument is not a number (at byte %zu)", what, at_byte(m));
    return push_int(m, v);
}

static int memo_put(vm *m, uint64_t idx)
{
    pv *v = top(m);
    if (!v) return fail(m, "PUT on an empty stack (at byte %zu)", at_byte(m));
    if (idx > m->memo_limit) return fail(m, "memo index %llu too large (at byte %zu)", (unsigned long long)idx, at_byte(m));
    if (idx >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 256;
        while (cap <= idx) cap *= 2;
        pv **a = realloc(m->memo, cap * sizeof *a);
        if (!a) return oom(m);
        memset(a + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *a);
        m->memo = a;
        m->memo_cap = cap;
    }
    if (!m->memo[idx]) m->memo_count++;
    m->memo[idx] = v;
    return 0;
}

static int memo_get(vm *m, uint64_t idx)
{
    if (idx >= m->memo_cap || !m->memo[idx])
        return fail(m, "memo entry %llu unset (at byte %zu)", (unsigned long long)idx, at_byte(m));
    return push(m, m->memo[idx]);
}

/* GLOBAL module.name: a known one, else refused by name. */
static int push_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl)
{
    char full[256];
    snprintf(full, sizeof full, "%.*s.%.*s", (int)(ml < 120 ? ml : 120), mod, (int)(nl < 120 ? nl : 120), name);
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        if (strlen(globals[i].name) == ml + 1 + nl && !strcmp(globals[i].name, full)) {
            pv *v = new_value(m, PV_GLOBAL);
            if (v) v->u.g = (int)i;
            return push(m, v);
        }
    return core_fail(m->err, FM_EINPUT, "%s: pickle calls %s: refused", m->path, full);
}

static int is_str(const pv *v, const char *s)
{
    return v && v->kind == PV_STR && v->u.str.len == strlen(s) && !memcmp(v->u.str.s, s, v->u.str.len);
}

static const pv *dict_get(const pv *d, const char *key)
{
    for (uint32_t i = 0; i + 1 < d->u.seq.n; i += 2)
        if (is_str(d->u.seq.v[i], key)) return d->u.seq.v[i + 1];
    return NULL;
}

/* ("storage", StorageType, key, location, numel[, view]) -> a storage. */
static int persistent_load(vm *m, pv *pid)
{
    pv **a = pid->kind == PV_TUPLE ? pid->u.seq.v : NULL;
    if (!a || pid->u.seq.n < 5 || !is_str(a[0], "storage") || a[1]->kind != PV_GLOBAL ||
        globals[a[1]->u.g].kind != G_STORAGE || a[2]->kind != PV_STR || a[4]->kind != PV_INT || a[4]->u.i < 0)
        return fail(m, "persistent id is not a torch storage (at byte %zu)", at_byte(m));
    pv *v = new_value(m, PV_STORAGE);
    pk_stor *st = arena_get(m, sizeof *st);
    if (!v || !st) return oom(m);
    st->dtype = globals[a[1]->u.g].dtype;
    st->key = a[2]->u.str.s;
    st->keylen = a[2]->u.str.len;
    st->numel = a[4]->u.i;
    v->u.st = st;
    return push(m, v);
}

static int int_tuple(const pv *t, int64_t *out, int max)
{
    if (t->kind != PV_TUPLE || t->u.seq.n > (uint32_t)max) return -1;
    for (uint32_t i = 0; i < t->u.seq.n; i++) {
        if (t->u.seq.v[i]->kind != PV_INT || t->u.seq.v[i]->u.i < 0) return -1;
        out[i] = t->u.seq.v[i]->u.i;
    }
    return (int)t->u.seq.n;
}

/* _rebuild_tensor(_v2)(storage, offset, size, stride, ...) */
static pv *rebuild_tensor(vm *m, const pv *args)
{
    if (args->kind != PV_TUPLE || args->u.seq.n < 4) return NULL;
    pv **a = args->u.seq.v;
    if (a[0]->kind != PV_STORAGE || a[1]->kind != PV_INT || a[1]->u.i < 0) return NULL;
    pk_tens t = {.storage = a[0], .offset = a[1]->u.i};
    int nd = int_tuple(a[2], t.shape, WT_MAX_DIMS);
    if (nd < 0 || int_tuple(a[3], t.stride, WT_MAX_DIMS) != nd) return NULL;
    t.ndim = nd;
    pv *v = new_value(m, PV_TENSOR);
    pk_tens *tp = arena_get(m, sizeof *tp);
    if (!v || !tp) return NULL;
    *tp = t;
    v->u.t = tp;
    return v;
}

static int call(vm *m, pv *fn, pv *args, const char *op)
{
    if (fn->kind == PV_OPAQUE) return push(m, new_value(m, PV_OPAQUE));
    if (fn->kind != PV_GLOBAL) return fail(m, "%s calls a %s (at byte %zu)", op, kind_name[fn->kind], at_byte(m));
    const struct known_global *g = &globals[fn->u.g];
    pv *r;
    switch (g->kind) {
    case G_ODICT:
    case G_PARAMDICT:
        r = new_value(m, PV_DICT);
        if (r) r->module = g->kind == G_PARAMDICT;
        return push(m, r);
    case G_REBUILD_V2:
    case G_REBUILD:
        if (!(r = rebuild_tensor(m, args)))
            return fail(m, "%s with malformed arguments (at byte %zu)", g->name, at_byte(m));
        return push(m, r);
    case G_PARAM: /* a Parameter is its tensor */
        if (args->kind != PV_TUPLE || args->u.seq.n < 1 ||
            (args->u.seq.v[0]->kind != PV_TENSOR && args->u.seq.v[0]->kind != PV_OPAQUE))
            return fail(m, "%s with malformed arguments (at byte %zu)", g->name, at_byte(m));
        return push(m, args->u.seq.v[0]);
    case G_STORAGE:
    case G_INERT: break;
    }
    return push(m, new_value(m, PV_OPAQUE));
}

static int set_items(vm *m, pv *d, pv **items, size_t n)
{
    if (n % 2) return fail(m, "SETITEMS with an odd number of items (at byte %zu)", at_byte(m));
    if (d->kind == PV_OPAQUE) return 0;
    if (d->kind != PV_DICT) return fail(m, "SETITEM on a %s (at byte %zu)", kind_name[d->kind], at_byte(m));
    for (size_t i = 0; i < n; i++)
        if (seq_add(m, d, items[i])) return 1;
    return 0;
}

/* BUILD: state for an object. Only a ParameterDict's state matters (its
 * _parameters are the entries); a state dict's _metadata and the inert
 * objects' state are dropped. */
static int build(vm *m, pv *obj, pv *state)
{
    if (obj->kind == PV_DICT && obj->module && state->kind == PV_DICT) {
        const pv *params = dict_get(state, "_parameters");
        if (params && params->kind == PV_DICT)
            return set_items(m, obj, params->u.seq.v, params->u.seq.n);
        return 0;
    }
    if (obj->kind == PV_DICT || obj->kind == PV_OPAQUE || obj->kind == PV_TENSOR) return 0;
    return fail(m, "BUILD on a %s (at byte %zu)", kind_name[obj->kind], at_byte(m));
}

static const char *opname(int op)
{
    switch (op) {
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 'P': return "PERSID";
    case 0x82: case 0x83: case 0x84: return "EXT";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return "unknown";
    }
}

/* One opcode; 1 = error, 0 = go on, 2 = STOP with the result on top. */
static int step(vm *m)
{
    int op = *m->p++;
    pv *a, *b, *c, **items = NULL;
    size_t n = 0;
    const char *s = NULL, *s2 = NULL;
    size_t len = 0, len2 = 0;
    switch (op) {
    case 0x80: /* PROTO */
        if (need(m, 1, "PROTO")) return 1;
        if (*m->p > 5) return fail(m, "protocol %d is not read", *m->p);
        m->p++;
        return 0;
    case 0x95: /* FRAME: a length hint; the data follows inline */
        if (need(m, 8, "FRAME")) return 1;
        m->p += 8;
        return 0;
    case '.': return 2;
    case '(': return push_mark(m);
    case '0': /* POP */
        if (pop(m)) return 0;
        return pop_mark(m, &items, &n);
    case '1': return pop_mark(m, &items, &n);
    case '2':
        if (!(a = top(m))) return fail(m, "DUP on an empty stack (at byte %zu)", at_byte(m));
        return push(m, a);
    case 'N': return push(m, new_value(m, PV_NONE));
    case 0x88: case 0x89:
        if ((a = new_value(m, PV_BOOL))) a->u.i = op == 0x88;
        return push(m, a);
    case 'J':
        if (need(m, 4, "BININT")) return 1;
        m->p += 4;
        return push_int(m, (int32_t)(uint32_t)le(m->p - 4, 4));
    case 'K':
        if (need(m, 1, "BININT1")) return 1;
        return push_int(m, *m->p++);
    case 'M':
        if (need(m, 2, "BININT2")) return 1;
        m->p += 2;
        return push_int(m, (int64_t)le(m->p - 2, 2));
    case 0x8a:
        if (need(m, 1, "LONG1")) return 1;
        n = *m->p++;
        return push_long(m, n);
    case 0x8b:
        if (need(m, 4, "LONG4")) return 1;
        m->p += 4;
        n = (size_t)le(m->p - 4, 4);
        return push_long(m, n);
    case 'I': return push_text_int(m, "INT");
    case 'L': return push_text_int(m, "LONG");
    case 'G': {
        if (need(m, 8, "BINFLOAT")) return 1;
        uint64_t u = 0;
        for (int i = 0; i < 8; i++) u = u << 8 | m->p[i]; /* big-endian */
        m->p += 8;
        if ((a = new_value(m, PV_FLOAT))) memcpy(&a->u.f, &u, sizeof u);
        return push(m, a);
    }
    case 'F':
        if (line(m, &s, &len, "FLOAT")) return 1;
        if ((a = new_value(m, PV_FLOAT))) {
            char buf[64];
            snprintf(buf, sizeof buf, "%.*s", (int)(len < 63 ? len : 63), s);
            a->u.f = strtod(buf, NULL);
        }
        return push(m, a);
    case 'X': case 'T': case 'B':
        if (need(m, 4, "string length")) return 1;
        m->p += 4;
        return push_str(m, op == 'B' ? PV_BYTES : PV_STR, (size_t)le(m->p - 4, 4));
    case 0x8c: case 'U': case 'C':
        if (need(m, 1, "string length")) return 1;
        n = *m->p++;
        return push_str(m, op == 'C' ? PV_BYTES : PV_STR, n);
    case 0x8d: case 0x8e: case 0x96:
        if (need(m, 8, "string length")) return 1;
        m->p += 8;
        {
            uint64_t l = le(m->p - 8, 8);
            if (l > (uint64_t)(m->end - m->p)) return fail(m, "string runs past the end (at byte %zu)", at_byte(m));
            return push_str(m, op == 0x8d ? PV_STR : PV_BYTES, (size_t)l);
        }
    case 'V': case 'S': /* protocol 0 text: kept raw (keys are plain ASCII) */
        if (line(m, &s, &len, op == 'V' ? "UNICODE" : "STRING")) return 1;
        if (op == 'S' && len >= 2 && (s[0] == '\'' || s[0] == '"')) s++, len -= 2;
        if ((a = new_value(m, PV_STR))) a->u.str.s = s, a->u.str.len = len;
        return push(m, a);
    case ')': return push(m, new_seq(m, PV_TUPLE, NULL, 0));
    case 't':
        if (pop_mark(m, &items, &n)) return 1;
        return push(m, new_seq(m, PV_TUPLE, items, n));
    case 0x85: case 0x86: case 0x87: {
        size_t k = (size_t)(op - 0x84);
        size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
        if (m->sp - floor < k) return fail(m, "TUPLE%zu on a short stack (at byte %zu)", k, at_byte(m));
        m->sp -= k;
        return push(m, new_seq(m, PV_TUPLE, m->stack + m->sp, k));
    }
    case ']': return push(m, new_seq(m, PV_LIST, NULL, 0));
    case 'l':
        if (pop_mark(m, &items, &n)) return 1;
        return push(m, new_seq(m, PV_LIST, items, n));
    case '}': return push(m, new_seq(m, PV_DICT, NULL, 0));
    case 'd':
        if (pop_mark(m, &items, &n)) return 1;
        if (n % 2) return fail(m, "DICT with an odd number of items (at byte %zu)", at_byte(m));
        return push(m, new_seq(m, PV_DICT, items, n));
    case 0x8f: return push(m, new_value(m, PV_OPAQUE)); /* EMPTY_SET */
    case 'a':
        if (!(b = pop(m)) || !(a = top(m))) return fail(m, "APPEND on a short stack (at byte %zu)", at_byte(m));
        if (a->kind == PV_LIST) return seq_add(m, a, b);
        if (a->kind == PV_OPAQUE) return 0;
        return fail(m, "APPEND to a %s (at byte %zu)", kind_name[a->kind], at_byte(m));
    case 'e': case 0x90: /* APPENDS, ADDITEMS */
        if (pop_mark(m, &items, &n)) return 1;
        if (!(a = top(m))) return fail(m, "APPENDS without a list (at byte %zu)", at_byte(m));
        if (a->kind == PV_OPAQUE) return 0;
        if (a->kind != PV_LIST || op == 0x90) return fail(m, "APPENDS to a %s (at byte %zu)", kind_name[a->kind], at_byte(m));
        for (size_t i = 0; i < n; i++)
            if (seq_add(m, a, items[i])) return 1;
        return 0;
    case 0x91: /* FROZENSET */
        if (pop_mark(m, &items, &n)) return 1;
        return push(m, new_value(m, PV_OPAQUE));
    case 's':
        if (!(c = pop(m)) || !(b = pop(m)) || !(a = top(m))) return fail(m, "SETITEM on a short stack (at byte %zu)", at_byte(m));
        {
            pv *kv[2] = {b, c};
            return set_items(m, a, kv, 2);
        }
    case 'u':
        if (pop_mark(m, &items, &n)) return 1;
        if (!(a = top(m))) return fail(m, "SETITEMS without a dict (at byte %zu)", at_byte(m));
        return set_items(m, a, items, n);
    case 'c':
        if (line(m, &s, &len, "GLOBAL") || line(m, &s2, &len2, "GLOBAL")) return 1;
        return push_global(m, s, len, s2, len2);
    case 0x93:
        if (!(b = pop(m)) || !(a = pop(m)) || a->kind != PV_STR || b->kind != PV_STR)
            return fail(m, "STACK_GLOBAL without two strings (at byte %zu)", at_byte(m));
        return push_global(m, a->u.str.s, a->u.str.len, b->u.str.s, b->u.str.len);
    case 'R':
        if (!(b = pop(m)) || !(a = pop(m))) return fail(m, "REDUCE on a short stack (at byte %zu)", at_byte(m));
        return call(m, a, b, "REDUCE");
    case 0x81:
        if (!(b = pop(m)) || !(a = pop(m))) return fail(m, "NEWOBJ on a short stack (at byte %zu)", at_byte(m));
        return call(m, a, b, "NEWOBJ");
    case 0x92:
        if (!(c = pop(m)) || !(b = pop(m)) || !(a = pop(m))) return fail(m, "NEWOBJ_EX on a short stack (at byte %zu)", at_byte(m));
        return call(m, a, b, "NEWOBJ_EX");
    case 'b':
        if (!(b = pop(m)) || !(a = top(m))) return fail(m, "BUILD on a short stack (at byte %zu)", at_byte(m));
        return build(m, a, b);
    case 'Q':
        if (!(a = pop(m))) return fail(m, "BINPERSID on an empty stack (at byte %zu)", at_byte(m));
        return persistent_load(m, a);
    case 'q':
        if (need(m, 1, "BINPUT")) return 1;
        return memo_put(m, *m->p++);
    case 'r':
        if (need(m, 4, "LONG_BINPUT")) return 1;
        m->p += 4;
        return memo_put(m, le(m->p - 4, 4));
    case 0x94: return memo_put(m, m->memo_count);
    case 'h':
        if (need(m, 1, "BINGET")) return 1;
        return memo_get(m, *m->p++);
    case 'j':
        if (need(m, 4, "LONG_BINGET")) return 1;
        m->p += 4;
        return memo_get(m, le(m->p - 4, 4));
    case 'p': case 'g': {
        if (line(m, &s, &len, op == 'p' ? "PUT" : "GET")) return 1;
        char buf[24];
        if (len == 0 || len >= sizeof buf) return fail(m, "memo index of %zu characters (at byte %zu)", len, at_byte(m));
        memcpy(buf, s, len);
        buf[len] = 0;
        char *e;
        unsigned long long idx = strtoull(buf, &e, 10);
        if (*e || buf[0] == '-') return fail(m, "memo index is not a number (at byte %zu)", at_byte(m));
        return op == 'p' ? memo_put(m, idx) : memo_get(m, idx);
    }
    default:
        m->p--;
        return fail(m, "opcode %s (0x%02x) at byte %zu is not read", opname(op), op, at_byte(m));
    }
}

/* ---- the state dict out of the result ---- */

typedef struct flat {
    vm *m;
    wt_pk_result *r;
    size_t cap_t, cap_m;
    size_t *name_off; /* offsets into r->strings until it stops growing */
    size_t *key_off, *meta_off;
    int rc;
} flat;

/* Appends s[len] and a NUL to the strings; its offset, or (size_t)-1. */
static size_t put_string(wt_pk_result *r, const char *s, size_t len)
{
    if (r->strings_len + len + 1 > r->strings_cap) {
        size_t cap = r->strings_cap ? r->strings_cap : 4096;
        while (cap < r->strings_len + len + 1) cap *= 2;
        char *p = realloc(r->strings, cap);
        if (!p) return (size_t)-1;
        r->strings = p;
        r->strings_cap = cap;
    }
    size_t off = r->strings_len;
    memcpy(r->strings + off, s, len);
    r->strings[off + len] = 0;
    r->strings_len += len + 1;
    return off;
}

/* A dict key as text: str keys as they are, int keys in decimal. */
static int key_text(const pv *k, char *buf, size_t n, const char **s, size_t *len)
{
    if (k->kind == PV_STR) {
        *s = k->u.str.s;
        *len = k->u.str.len;
        return 0;
    }
    if (k->kind == PV_INT) {
        *len = (size_t)snprintf(buf, n, "%" PRId64, k->u.i);
        *s = buf;
        return 0;
    }
    return -1;
}

#define NAME_MAX_LEN 1024

static int add_tensor(flat *f, const char *name, size_t len, const pk_tens *t)
{
    wt_pk_result *r = f->r;
    const pk_stor *st = t->storage->u.st;
    if (st->dtype < 0) {
        r->skipped++;
        return 0;
    }
    if ((size_t)r->n_tensors == f->cap_t) {
        size_t cap = f->cap_t ? 2 * f->cap_t : 256;
        wt_pk_tensor *a = realloc(r->tensors, cap * sizeof *a);
        size_t *o = realloc(f->name_off, 2 * cap * sizeof *o);
        if (a) r->tensors = a;
        if (o) f->name_off = o;
        if (!a || !o) return oom(f->m);
        f->cap_t = cap;
    }
    size_t no = put_string(r, name, len), ko = put_string(r, st->key, st->keylen);
    if (no == (size_t)-1 || ko == (size_t)-1) return oom(f->m);
    wt_pk_tensor *o = &r->tensors[r->n_tensors];
    memset(o, 0, sizeof *o);
    o->dtype = (core_dtype)st->dtype;
    o->storage_numel = st->numel;
    o->offset = t->offset;
    o->ndim = t->ndim;
    memcpy(o->shape, t->shape, sizeof o->shape);
    memcpy(o->stride, t->stride, sizeof o->stride);
    f->name_off[2 * r->n_tensors] = no;
    f->name_off[2 * r->n_tensors + 1] = ko;
    r->n_tensors++;
    return 0;
}

/* Tensors of d under prefix[plen]; nested dicts add "key." (each dict is
 * walked once, so shared or cyclic dicts cost nothing more). */
static int flatten(flat *f, pv *d, char *prefix, size_t plen, int depth)
{
    if (d->visited || depth > 16) return 0;
    d->visited = 1;
    for (uint32_t i = 0; i + 1 < d->u.seq.n; i += 2) {
        char num[32];
        const char *k = NULL;
        size_t kl = 0;
        pv *v = d->u.seq.v[i + 1];
        if ((v->kind != PV_TENSOR && v->kind != PV_DICT) || key_text(d->u.seq.v[i], num, sizeof num, &k, &kl)) continue;
        if (plen + kl + 2 > NAME_MAX_LEN)
            return fail(f->m, "key %.100s... longer than %d bytes", prefix, NAME_MAX_LEN);
        memcpy(prefix + plen, k, kl);
        if (v->kind == PV_TENSOR) {
            if (add_tensor(f, prefix, plen + kl, v->u.t)) return 1;
        } else {
            prefix[plen + kl] = '.';
            if (flatten(f, v, prefix, plen + kl + 1, depth + 1)) return 1;
        }
    }
    return 0;
}

/* The scalar entries of the top-level dict as metadata strings. */
static int add_meta(flat *f, const pv *root)
{
    wt_pk_result *r = f->r;
    for (uint32_t i = 0; i + 1 < root->u.seq.n; i += 2) {
        const pv *k = root->u.seq.v[i], *v = root->u.seq.v[i + 1];
        char buf[64];
        const char *s = buf;
        size_t len = 0;
        if (k->kind != PV_STR) continue;
        switch (v->kind) {
        case PV_STR: s = v->u.str.s; len = v->u.str.len < 65536 ? v->u.str.len : 65536; break;
        case PV_INT: len = (size_t)snprintf(buf, sizeof buf, "%" PRId64, v->u.i); break;
        case PV_FLOAT: len = (size_t)snprintf(buf, sizeof buf, "%.17g", v->u.f); break;
        case PV_BOOL: len = (size_t)snprintf(buf, sizeof buf, "%s", v->u.i ? "True" : "False"); break;
        default: continue;
        }
        if ((size_t)r->n_meta == f->cap_m) {
            size_t cap = f->cap_m ? 2 * f->cap_m : 16;
            wt_pk_meta *a = realloc(r->meta, cap * sizeof *a);
            size_t *o = realloc(f->meta_off, 2 * cap * sizeof *o);
            if (a) r->meta = a;
            if (o) f->meta_off = o;
            if (!a || !o) return oom(f->m);
            f->cap_m = cap;
        }
        size_t ko = put_string(r, k->u.str.s, k->u.str.len < 1024 ? k->u.str.len : 1024);
        size_t vo = put_string(r, s, len);
        if (ko == (size_t)-1 || vo == (size_t)-1) return oom(f->m);
        f->meta_off[2 * r->n_meta] = ko;
        f->meta_off[2 * r->n_meta + 1] = vo;
        r->n_meta++;
    }
    return 0;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const wt_pk_tensor *)a)->name, ((const wt_pk_tensor *)b)->name);
}

static int extract(vm *m, pv *root, wt_pk_result *r)
{
    if (root->kind != PV_DICT)
        return core_fail(m->err, FM_EINPUT, "%s: the pickle holds a %s, not a dict of tensors", m->path, kind_name[root->kind]);
    pv *sd = root;
    static const char *const nested[] = {"state_dict", "params_ema", "params"};
    for (size_t i = 0; i < 3 && sd == root; i++) {
        const pv *v = dict_get(root, nested[i]);
        if (v && v->kind == PV_DICT) sd = (pv *)v;
    }
    flat f = {.m = m, .r = r};
    char *prefix = malloc(NAME_MAX_LEN);
    int rc = prefix ? 0 : oom(m);
    if (!rc) rc = flatten(&f, sd, prefix, 0, 0);
    if (!rc) rc = add_meta(&f, root);
    free(prefix);
    if (!rc) { /* the strings stopped growing: offsets become pointers */
        for (int i = 0; i < r->n_tensors; i++) {
            r->tensors[i].name = r->strings + f.name_off[2 * i];
            r->tensors[i].storage = r->strings + f.name_off[2 * i + 1];
        }
        for (int i = 0; i < r->n_meta; i++) {
            r->meta[i].key = r->strings + f.meta_off[2 * i];
            r->meta[i].value = r->strings + f.meta_off[2 * i + 1];
        }
        if (r->n_tensors) qsort(r->tensors, (size_t)r->n_tensors, sizeof *r->tensors, cmp_tensor);
        for (int i = 1; i < r->n_tensors && !rc; i++)
            if (!strcmp(r->tensors[i - 1].name, r->tensors[i].name))
                rc = core_fail(m->err, FM_EINPUT, "%s: tensor %.200s listed twice", m->path, r->tensors[i].name);
    }
    free(f.name_off);
    free(f.meta_off);
    return rc;
}

int wt_pk_parse(const uint8_t *pkl, size_t len, wt_pk_result *out, const char *path, fm_error *err)
{
    memset(out, 0, sizeof *out);
    vm m = {.p = pkl, .end = pkl + len, .start = pkl, .path = path, .err = err};
    /* every byte makes at most a few values: 64 bytes of values per byte
     * of pickle, plus room for the small ones */
    m.arena_cap = (len < ((size_t)1 << 40) ? len : ((size_t)1 << 40)) * 64 + (16u << 20);
    m.memo_limit = 2 * (uint64_t)len + 16;
    int rc = 0;
    for (;;) {
        if (m.p >= m.end) {
            rc = fail(&m, "ends without STOP");
            break;
        }
        rc = step(&m);
        if (rc == 2) {
            pv *root = pop(&m);
            rc = root ? extract(&m, root, out) : fail(&m, "STOP on an empty stack");
            break;
        }
        if (rc) break;
    }
    while (m.arena) {
        chunk *c = m.arena;
        m.arena = c->next;
        free(c);
    }
    free(m.stack);
    free(m.marks);
    free(m.memo);
    if (rc) wt_pk_free(out);
    return rc ? FM_EINPUT : 0;
}

void wt_pk_free(wt_pk_result *r)
{
    free(r->tensors);
    free(r->meta);
    free(r->strings);
    memset(r, 0, sizeof *r);
}
