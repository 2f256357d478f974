/* wildcards: Dynamic Prompts templates (cli/wildcards.h). The grammar is
 * dynamicprompts' parser/parse.py (pyparsing), read as the parser it builds
 * behaves: tabs expanded to 8 columns first (pyparsing's parse_string does),
 * '#' starts a comment to the end of the line anywhere (prompt.ignore), the
 * text around a comment joined by one space (its literal tokens are joined
 * by " "), an option's leading white space dropped and its trailing kept.
 * Expansion follows samplers/combinatorial.py: a sequence is the product of
 * its parts (the first varies slowest); {N$$...} takes ordered selections
 * of N different options (get_value_combinations), expands each, drops
 * repeated texts and keeps selections that still have N, each result once. */
#include "wildcards.h"

#include "core/core.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { N_LIT, N_SEQ, N_VAR, N_WILD, N_SET, N_GET, N_WRAP } wc_kind;

typedef struct wc_node {
    wc_kind kind;
    char *text;             /* LIT: the text; WILD: the name; SET, GET: the variable */
    struct wc_node **kid;   /* SEQ: its parts; VAR: its options; SET: the value;
                               GET: the default (none: n 0); WRAP: wrapper, inner */
    char **key;             /* VAR: each option's source (options compare by it) */
    double *weight;         /* VAR */
    int n, lo, hi;          /* VAR: lo..hi options per result; SET: lo immediate (=!), hi keep (?=) */
    char *sep;              /* VAR */
} wc_node;

/* A wildcard file's values, read once per run of an expansion. */
typedef struct wc_file {
    char *name;
    char **v;
    int n;
    int checked; /* every value parsed and its wildcards found, no cycle */
} wc_file;

/* A variable set by ${name=value} for the rest of its prompt: a value
 * evaluated where it is used, or (=!) the text it gave once where set. */
typedef struct wc_binding {
    const char *name;
    const wc_node *value;
    const char *text;
    char *own; /* text when this binding made it */
    struct wc_binding *up;
} wc_binding;

typedef struct wc_ctx {
    const char *dir;
    char *why;
    size_t why_len;
    int failed;
    int max;              /* most results any one list may hold */
    long long work;       /* selections tried: bounds the time a template can take */
    wc_file **files;      /* pointers: a file stays put while the list grows */
    int n_files;
    const char *stack[WC_MAX_DEPTH + 1]; /* wildcards being expanded */
    int depth;
    wc_binding *env;                     /* the variables in scope, innermost first */
    const char *using[WC_MAX_DEPTH + 1]; /* variables whose values are being evaluated */
    int n_using;
    long long uses;                      /* variable uses evaluated (WC_MAX_USES; check's file cache) */
    uint64_t rng;
} wc_ctx;

/* selections tried per allowed prompt: 2e7 for --combinatorial's 10000 */
#define WC_WORK_PER_PROMPT 2000LL

static int wc_fail(wc_ctx *c, const char *fmt, ...)
{
    if (c->failed) return -1;
    c->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, c->why_len, fmt, ap);
    va_end(ap);
    /* one line: a name may hold a newline or a control character */
    for (char *p = c->why; *p; p++)
        if ((unsigned char)*p < 0x20) *p = '?';
    return -1;
}

static int oom(wc_ctx *c) { return wc_fail(c, "out of memory"); }

int wc_is_template(const char *s) { return strchr(s, '{') || strstr(s, "__"); }

/* ---- nodes ---- */

static void node_free(wc_node *n)
{
    if (!n) return;
    for (int i = 0; i < n->n; i++) {
        node_free(n->kid[i]);
        if (n->key) free(n->key[i]);
    }
    free(n->kid);
    free(n->key);
    free(n->weight);
    free(n->text);
    free(n->sep);
    free(n);
}

static wc_node *node_new(wc_ctx *c, wc_kind k)
{
    wc_node *n = calloc(1, sizeof *n);
    if (!n) oom(c);
    else n->kind = k;
    return n;
}

static int node_add(wc_ctx *c, wc_node *n, wc_node *kid)
{
    wc_node **k = realloc(n->kid, sizeof *k * (size_t)(n->n + 1));
    if (!k) return oom(c);
    n->kid = k;
    k[n->n++] = kid;
    return 0;
}

/* ---- parser ---- */

typedef struct wc_parser {
    wc_ctx *c;
    const char *s;
    size_t pos;
    int depth;
    const char *what; /* "the prompt" or a wildcard file's name, for messages */
} wc_parser;

/* Python's str.expandtabs(8): columns count characters, \n and \r restart. */
static char *expand_tabs(const char *s)
{
    core_strbuf b = {0};
    size_t col = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '\t') {
            size_t n = 8 - col % 8;
            for (size_t i = 0; i < n; i++) core_sb_append(&b, " ", 1);
            col += n;
            continue;
        }
        core_sb_append(&b, p, 1);
        if (*p == '\n' || *p == '\r') col = 0;
        else if (((unsigned char)*p & 0xC0) != 0x80) col++;
    }
    return core_sb_take(&b);
}

static int is_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }
static void skip_ws(wc_parser *p) { while (is_ws(p->s[p->pos])) p->pos++; }
static int at(const wc_parser *p, const char *t) { return !strncmp(p->s + p->pos, t, strlen(t)); }

/* pyparsing's ignore("#" + restOfLine) before each element: white space
 * then '#' to the end of the line (the newline stays), again and again.
 * White space not followed by '#' stays. Returns 1 if it skipped one. */
static int skip_comments(wc_parser *p)
{
    int skipped = 0;
    for (;;) {
        size_t i = p->pos;
        while (is_ws(p->s[i])) i++;
        if (p->s[i] != '#') return skipped;
        while (p->s[i] && p->s[i] != '\n') i++;
        p->pos = i;
        skipped = 1;
    }
}

static int syntax(wc_parser *p, const char *msg)
{
    return wc_fail(p->c, "%s: %s at character %zu", p->what, msg, p->pos + 1);
}

/* pp.common.integer: digits. Returns 1 and the value (clamped), or 0. */
static int integer_at(wc_parser *p, int *v)
{
    size_t i = p->pos;
    long long x = 0;
    while (p->s[i] >= '0' && p->s[i] <= '9') {
        if (x < 1000000000LL) x = x * 10 + (p->s[i] - '0');
        i++;
    }
    if (i == p->pos) return 0;
    *v = (int)(x > 1000000000LL ? 1000000000LL : x);
    p->pos = i;
    return 1;
}

/* The bound expression {L-H$$ or {N$$, then an optional SEP$$ (a run of
 * printable ASCII or spaces without '$', '{', '}'). Leaves pos alone when
 * there is none. */
static void parse_bound(wc_parser *p, wc_node *v)
{
    size_t start = p->pos;
    int lo = 1, hi = v->n, a, b, has_a = integer_at(p, &a);
    if (p->s[p->pos] == '-') {
        p->pos++;
        int has_b = integer_at(p, &b);
        if (!has_a && !has_b) { p->pos = start; return; }
        lo = has_a ? a : 1;
        hi = has_b ? b : -1; /* -1: as many as there are options */
    } else if (has_a) {
        lo = hi = a;
    } else {
        return;
    }
    if (!at(p, "$$")) { p->pos = start; return; }
    p->pos += 2;
    v->lo = lo;
    v->hi = hi;
    size_t s0 = p->pos, i = s0;
    while (p->s[i] >= 32 && p->s[i] <= 126 && p->s[i] != '$' && p->s[i] != '{' && p->s[i] != '}') i++;
    if (i > s0 && !strncmp(p->s + i, "$$", 2)) {
        v->sep = strndup(p->s + s0, i - s0);
        p->pos = i + 2;
    }
}

/* An option's weight: (pp.common.real | pp.common.integer) "::". */
static double parse_weight(wc_parser *p)
{
    const char *s = p->s + p->pos;
    size_t i = 0;
    if (s[i] == '+' || s[i] == '-') i++;
    size_t d0 = i;
    while (s[i] >= '0' && s[i] <= '9') i++;
    size_t int_digits = i - d0;
    int real = 0;
    if (s[i] == '.') {
        size_t f0 = ++i;
        while (s[i] >= '0' && s[i] <= '9') i++;
        real = int_digits || i > f0;
    }
    if (!real) { /* the integer form has no sign */
        if (d0 != 0 || !int_digits) return 1;
        i = d0 + int_digits;
    }
    if (strncmp(s + i, "::", 2)) return 1;
    double w = strtod(s, NULL);
    p->pos += i + 2;
    return w;
}

static wc_node *parse_seq(wc_parser *p, int in_variant);

static int enter(wc_parser *p)
{
    if (++p->depth <= WC_MAX_DEPTH) return 0;
    return syntax(p, "'{' nested more than " "100" " deep");
}

static int var_name_char(char ch, int first)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_' || ch == '-' || (!first && ch >= '0' && ch <= '9');
}

/* ${name=value}, ${name=!value}, ${name?=value} (top level only),
 * ${name} and ${name:default}; the value and default are variant options'
 * syntax (no '|'). */
static wc_node *parse_variable(wc_parser *p, int may_set)
{
    size_t open = p->pos;
    if (enter(p)) return NULL;
    p->pos += 2;
    skip_ws(p);
    size_t n0 = p->pos;
    while (var_name_char(p->s[p->pos], p->pos == n0)) p->pos++;
    if (p->pos == n0) { syntax(p, "${ without a variable name"); return NULL; }
    size_t n1 = p->pos;
    skip_ws(p);
    int keep = p->s[p->pos] == '?' && p->s[p->pos + 1] == '=';
    int set = may_set && (keep || p->s[p->pos] == '=');
    wc_node *v = node_new(p->c, set ? N_SET : N_GET);
    if (!v) return NULL;
    if (!(v->text = strndup(p->s + n0, n1 - n0))) { oom(p->c); node_free(v); return NULL; }
    if (set) {
        p->pos += keep ? 2 : 1;
        v->hi = keep;
        if (p->s[p->pos] == '!') { p->pos++; v->lo = 1; }
    }
    if (set || p->s[p->pos] == ':') {
        if (!set) p->pos++;
        skip_ws(p);
        wc_node *val = parse_seq(p, 1);
        if (!val || node_add(p->c, v, val)) { node_free(val); node_free(v); if (!p->c->failed) oom(p->c); return NULL; }
    }
    if (p->s[p->pos] != '}') {
        if (!p->c->failed) {
            p->pos = open;
            syntax(p, may_set ? "'${' without '}' (${name}, ${name:default}, ${name=value})"
                              : "'${' without '}' (${name} or ${name:default}; set variables outside {...})");
        }
        node_free(v);
        return NULL;
    }
    p->pos++;
    p->depth--;
    return v;
}

/* %{wrapper$$inner} */
static wc_node *parse_wrap(wc_parser *p)
{
    size_t open = p->pos;
    if (enter(p)) return NULL;
    p->pos += 2;
    skip_ws(p);
    wc_node *w = node_new(p->c, N_WRAP), *k = w ? parse_seq(p, 1) : NULL;
    if (k && node_add(p->c, w, k)) { node_free(k); k = NULL; }
    if (k && at(p, "$$")) {
        p->pos += 2;
        skip_ws(p);
        k = parse_seq(p, 1);
        if (k && node_add(p->c, w, k)) { node_free(k); k = NULL; }
        if (k && p->s[p->pos] == '}') {
            p->pos++;
            p->depth--;
            return w;
        }
    }
    if (!p->c->failed) {
        p->pos = open;
        syntax(p, "'%{' without '$$' and '}' (%{wrapper$$inner})");
    }
    node_free(w);
    return NULL;
}

static wc_node *parse_variant(wc_parser *p)
{
    size_t open = p->pos;
    if (enter(p)) return NULL;
    p->pos++;
    wc_node *v = node_new(p->c, N_VAR);
    if (!v) return NULL;
    v->lo = v->hi = 1;
    skip_comments(p);
    skip_ws(p);
    if (p->s[p->pos] == '~' || p->s[p->pos] == '!' || p->s[p->pos] == '@') p->pos++; /* sampler: one mode per run */
    v->n = 0;
    parse_bound(p, v);
    skip_comments(p);
    skip_ws(p);
    if (!v->sep && !(v->sep = strdup(","))) { oom(p->c); node_free(v); return NULL; }
    for (;;) {
        skip_comments(p);
        skip_ws(p);
        skip_comments(p);
        double w = parse_weight(p);
        size_t k0 = p->pos;
        wc_node *o = parse_seq(p, 1);
        if (!o) { node_free(v); return NULL; }
        char **key = realloc(v->key, sizeof *key * (size_t)(v->n + 1));
        double *wt = key ? realloc(v->weight, sizeof *wt * (size_t)(v->n + 1)) : NULL;
        if (key) v->key = key;
        if (wt) v->weight = wt;
        char *ks = wt ? strndup(p->s + k0, p->pos - k0) : NULL;
        if (!ks || node_add(p->c, v, o)) {
            free(ks);
            node_free(o);
            node_free(v);
            oom(p->c);
            return NULL;
        }
        v->key[v->n - 1] = ks;
        v->weight[v->n - 1] = w;
        if (p->s[p->pos] == '|') { p->pos++; continue; }
        if (p->s[p->pos] == '}') { p->pos++; break; }
        p->pos = open;
        syntax(p, "'{' without a matching '}'");
        node_free(v);
        return NULL;
    }
    /* VariantCommand.__post_init__: the bounds sorted, at least 0 */
    if (v->hi < 0) v->hi = v->n;
    if (v->lo > v->hi) { int t = v->lo; v->lo = v->hi; v->hi = t; }
    if (v->lo < 0) v->lo = 0;
    p->depth--;
    return v;
}

/* __name__ (an optional sampler character after the opening "__"). */
static wc_node *parse_wildcard(wc_parser *p)
{
    size_t open = p->pos;
    p->pos += 2;
    if (p->s[p->pos] == '~' || p->s[p->pos] == '!' || p->s[p->pos] == '@') p->pos++;
    size_t n0 = p->pos;
    while (p->s[p->pos] && !at(p, "__") && !strchr("#{$%()", p->s[p->pos])) p->pos++;
    if (p->pos == n0 || !at(p, "__")) {
        if (p->s[p->pos] == '(' || p->s[p->pos] == '{' || p->s[p->pos] == '$')
            syntax(p, "wildcard variables, variants and variables in wildcard names are not supported");
        else {
            p->pos = open;
            syntax(p, "\"__\" that does not start a __name__ wildcard");
        }
        return NULL;
    }
    wc_node *w = node_new(p->c, N_WILD);
    if (w && !(w->text = strndup(p->s + n0, p->pos - n0))) { oom(p->c); node_free(w); return NULL; }
    p->pos += 2;
    return w;
}

/* A prompt (or, in_variant, one option): literals, variants and wildcards,
 * up to '|' or '}' in a variant, the end at the top. */
static wc_node *parse_seq(wc_parser *p, int in_variant)
{
    wc_node *seq = node_new(p->c, N_SEQ);
    if (!seq) return NULL;
    core_strbuf lit = {0};
    int in_lit = 0, commented = 0;
    for (;;) {
        if (skip_comments(p)) commented = 1;
        char ch = p->s[p->pos];
        int end = !ch || (in_variant && (ch == '|' || ch == '}' || at(p, "$$")));
        int stop = end || ch == '{' || ch == '$' || ch == '%' || at(p, "__");
        if (!stop) {
            size_t s0 = p->pos;
            while (p->s[p->pos] && !strchr("#{$%", p->s[p->pos]) && !at(p, "__") &&
                   !(in_variant && (p->s[p->pos] == '|' || p->s[p->pos] == '}')))
                p->pos++;
            if (in_lit && commented) core_sb_append(&lit, " ", 1);
            core_sb_append(&lit, p->s + s0, p->pos - s0);
            in_lit = 1;
            commented = 0;
            continue;
        }
        if (in_lit) { /* the literal run ends */
            wc_node *l = node_new(p->c, N_LIT);
            char *t = core_sb_take(&lit);
            if (!l || !t || node_add(p->c, seq, l)) {
                free(t);
                node_free(l);
                goto bad_oom;
            }
            l->text = t;
            in_lit = 0;
        }
        commented = 0;
        if (end) break;
        wc_node *k = NULL;
        if (ch == '{') k = parse_variant(p);
        else if (ch == '_') k = parse_wildcard(p);
        else if (at(p, "${")) k = parse_variable(p, !in_variant);
        else if (at(p, "%{")) k = parse_wrap(p);
        else syntax(p, ch == '$' ? "'$' outside {N$$...} (Dynamic Prompts syntax)" : "'%' (Dynamic Prompts syntax)");
        if (!k || node_add(p->c, seq, k)) {
            node_free(k);
            node_free(seq);
            free(core_sb_take(&lit));
            if (!p->c->failed) oom(p->c);
            return NULL;
        }
    }
    if (!in_variant && p->s[p->pos]) { node_free(seq); syntax(p, "unexpected text"); return NULL; }
    return seq;
bad_oom:
    node_free(seq);
    oom(p->c);
    return NULL;
}

static wc_node *parse(wc_ctx *c, const char *text, const char *what)
{
    char *s = expand_tabs(text);
    if (!s) { oom(c); return NULL; }
    wc_parser p = {c, s, 0, 0, what};
    wc_node *n = parse_seq(&p, 0);
    free(s);
    if (n && n->n == 1 && n->kid[0]->kind == N_SET) { /* dynamicprompts cannot sample that */
        wc_fail(c, "%s: ${%s=...} alone gives no prompt", what, n->kid[0]->text);
        node_free(n);
        return NULL;
    }
    return n;
}

/* ---- wildcard files ---- */

/* Python's str.strip() for the ASCII white space a text file holds. */
static int py_space(unsigned char ch) { return ch == ' ' || (ch >= 9 && ch <= 13) || (ch >= 28 && ch <= 31); }

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* WildcardTextFile.get_values, then WildcardManager's dict.fromkeys
 * (dedup) and sorted(): lines (universal newlines) stripped, blank ones and
 * those starting with '#' left out, each value once, in code point order. */
static int read_values(wc_ctx *c, const char *name, wc_file *f)
{
    if (!c->dir) return wc_fail(c, "__%s__: no --wildcards-dir given", name);
    if (name[0] == '/' || strstr(name, "..") || strchr(name, '\\'))
        return wc_fail(c, "__%s__: a wildcard name is a path inside --wildcards-dir", name);
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s.txt", c->dir, name) >= (int)sizeof path)
        return wc_fail(c, "__%s__: path too long", name);
    FILE *fp = fopen(path, "rb");
    if (!fp) return wc_fail(c, "__%s__: %s: %s", name, path, errno == ENOENT ? "no such wildcard file" : strerror(errno));
    core_strbuf b = {0};
    char buf[8192];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, fp)) > 0) core_sb_append(&b, buf, got);
    int err = ferror(fp);
    fclose(fp);
    char *all = core_sb_take(&b);
    if (!all) return oom(c);
    if (err) { free(all); return wc_fail(c, "__%s__: %s: read error", name, path); }
    f->v = NULL;
    f->n = 0;
    for (char *s = all; *s;) {
        char *e = s;
        while (*e && *e != '\n' && *e != '\r') e++;
        char *next = *e == '\r' && e[1] == '\n' ? e + 2 : *e ? e + 1 : e;
        while (s < e && py_space((unsigned char)*s)) s++;
        while (e > s && py_space((unsigned char)e[-1])) e--;
        if (e > s && *s != '#') {
            char *v = strndup(s, (size_t)(e - s));
            char **nv = v ? realloc(f->v, sizeof *nv * (size_t)(f->n + 1)) : NULL;
            if (!nv) { free(v); free(all); return oom(c); }
            f->v = nv;
            f->v[f->n++] = v;
        }
        s = next;
    }
    free(all);
    qsort(f->v, (size_t)f->n, sizeof *f->v, cmp_str);
    int m = 0;
    for (int i = 0; i < f->n; i++) {
        if (m && !strcmp(f->v[m - 1], f->v[i])) free(f->v[i]);
        else f->v[m++] = f->v[i];
    }
    f->n = m;
    if (!m) return wc_fail(c, "__%s__: %s has no values", name, path);
    return 0;
}

static wc_file *wildcard_file(wc_ctx *c, const char *name)
{
    for (int i = 0; i < c->n_files; i++)
        if (!strcmp(c->files[i]->name, name)) return c->files[i];
    wc_file *f = calloc(1, sizeof *f);
    if (!f) { oom(c); return NULL; }
    if (read_values(c, name, f)) { free(f); return NULL; }
    wc_file **nf = realloc(c->files, sizeof *nf * (size_t)(c->n_files + 1));
    if (nf) c->files = nf;
    if (!nf || !(f->name = strdup(name))) {
        for (int i = 0; i < f->n; i++) free(f->v[i]);
        free(f->v);
        free(f);
        oom(c);
        return NULL;
    }
    c->files[c->n_files++] = f;
    return f;
}

/* Enters wildcard name (cycle and depth checked); leave with pop. */
static wc_file *push(wc_ctx *c, const char *name)
{
    for (int i = 0; i < c->depth; i++)
        if (!strcmp(c->stack[i], name)) {
            core_strbuf b = {0};
            for (int k = i; k < c->depth; k++) {
                core_sb_puts(&b, "__");
                core_sb_puts(&b, c->stack[k]);
                core_sb_puts(&b, "__ -> ");
            }
            char *chain = core_sb_take(&b);
            wc_fail(c, "__%s__: the wildcard includes itself (%s__%s__)", name, chain ? chain : "", name);
            free(chain);
            return NULL;
        }
    if (c->depth >= WC_MAX_DEPTH) {
        wc_fail(c, "__%s__: wildcards nested more than 100 deep", name);
        return NULL;
    }
    wc_file *f = wildcard_file(c, name);
    if (f) c->stack[c->depth++] = f->name;
    return f;
}

static void pop(wc_ctx *c) { c->depth--; }

static void files_free(wc_ctx *c)
{
    for (int i = 0; i < c->n_files; i++) {
        for (int k = 0; k < c->files[i]->n; k++) free(c->files[i]->v[k]);
        free(c->files[i]->v);
        free(c->files[i]->name);
        free(c->files[i]);
    }
    free(c->files);
}

/* A variant whose only option is a wildcard stands for the wildcard's
 * values as options (samplers/utils.py wildcard_to_variant). */
static int is_wildcard_variant(const wc_node *v)
{
    if (v->n != 1) return 0;
    const wc_node *o = v->kid[0];
    return o->kind == N_WILD || (o->kind == N_SEQ && o->n == 1 && o->kid[0]->kind == N_WILD);
}

static const wc_node *the_wildcard(const wc_node *v)
{
    const wc_node *o = v->kid[0];
    return o->kind == N_WILD ? o : o->kid[0];
}

/* The variant of a wildcard's values (parsed), bounds clamped to their
 * number. NULL with c failed. */
static wc_node *values_variant(wc_ctx *c, const wc_node *v, wc_file *f)
{
    wc_node *nv = node_new(c, N_VAR);
    if (!nv) return NULL;
    nv->lo = v->lo < f->n ? v->lo : f->n;
    nv->hi = v->hi < f->n ? v->hi : f->n;
    if (!(nv->sep = strdup(v->sep)) || !(nv->key = calloc((size_t)f->n, sizeof *nv->key)) ||
        !(nv->weight = calloc((size_t)f->n, sizeof *nv->weight))) {
        node_free(nv);
        oom(c);
        return NULL;
    }
    for (int i = 0; i < f->n; i++) {
        wc_node *o = parse(c, f->v[i], f->name);
        if (!o || node_add(c, nv, o)) { node_free(o); node_free(nv); if (!c->failed) oom(c); return NULL; }
        if (!(nv->key[i] = strdup(f->v[i]))) { node_free(nv); oom(c); return NULL; }
        nv->weight[i] = 1;
    }
    return nv;
}

/* ---- variables ---- */

/* Variable uses evaluated in one expansion (or one check, then one draw):
 * values that use variables twice double with each level, and every use is
 * evaluated where it is. */
#define WC_MAX_USES 100000

/* The bindings of seq's ${name=value} parts, made in order in the scope
 * around seq (SamplingContext.process_variable_assignments: =! values are
 * evaluated there, ?= keeps a value set outside), then put in scope (a later
 * one of a name hides an earlier). *saved is the scope to restore with
 * unbind. immediate evaluates a =! value to its text. */
typedef char *(*wc_immediate)(wc_ctx *c, const wc_node *value);

static wc_binding *lookup(const wc_binding *b, const char *name)
{
    for (; b; b = b->up)
        if (!strcmp(b->name, name)) return (wc_binding *)b;
    return NULL;
}

static void unbind(wc_ctx *c, wc_binding *b, int n, wc_binding *saved)
{
    for (int i = 0; i < n; i++) free(b[i].own);
    free(b);
    c->env = saved;
}

static int bind(wc_ctx *c, const wc_node *seq, wc_immediate immediate, wc_binding **out, int *n_out)
{
    int n = 0;
    *out = NULL;
    *n_out = 0;
    for (int i = 0; i < seq->n; i++) n += seq->kid[i]->kind == N_SET;
    if (!n) return 0;
    wc_binding *b = calloc((size_t)n, sizeof *b);
    if (!b) return oom(c);
    int k = 0;
    for (int i = 0; i < seq->n; i++) {
        const wc_node *set = seq->kid[i];
        if (set->kind != N_SET) continue;
        wc_binding *outer = set->hi ? lookup(c->env, set->text) : NULL;
        b[k].name = set->text;
        if (outer) {
            b[k].value = outer->value;
            b[k].text = outer->text;
        } else if (set->lo) {
            if (!(b[k].own = immediate(c, set->kid[0]))) { unbind(c, b, k, c->env); return -1; }
            b[k].text = b[k].own;
        } else {
            b[k].value = set->kid[0];
        }
        k++;
    }
    for (int i = 0; i < n; i++) b[i].up = i ? &b[i - 1] : c->env;
    *out = b;
    *n_out = n;
    c->env = &b[n - 1];
    return 0;
}

static int is_empty(const wc_node *n) { return n->kind == N_SEQ && n->n == 0; }

/* What a use ${name} / ${name:default} stands for: *text, or *value to
 * evaluate in the scope of the use with the variable marked in use (leave
 * with c->n_using--). An empty value counts as none (dynamicprompts tests
 * the command's truth); a value that uses itself is refused. */
static int use(wc_ctx *c, const wc_node *get, const wc_node **value, const char **text)
{
    if (++c->uses > WC_MAX_USES) return wc_fail(c, "${%s}: more than %d variable uses", get->text, WC_MAX_USES);
    const wc_binding *b = lookup(c->env, get->text);
    *value = NULL;
    *text = NULL;
    if (b && b->text) { *text = b->text; return 0; }
    *value = b ? b->value : get->n ? get->kid[0] : NULL;
    if (!*value || is_empty(*value))
        return wc_fail(c, "${%s}: the variable is not set%s", get->text, b ? " (its value is empty)" : get->n ? " and its default is empty" : "");
    for (int i = 0; i < c->n_using; i++)
        if (!strcmp(c->using[i], get->text)) return wc_fail(c, "${%s}: the variable's value uses itself", get->text);
    if (c->n_using >= WC_MAX_DEPTH) return wc_fail(c, "${%s}: variables nested more than 100 deep", get->text);
    c->using[c->n_using++] = get->text;
    return 0;
}

/* split_wrapper_string: the first run of ellipsis characters (U+1801,
 * U+2026, U+22EE-U+22F1, U+FE19) or of three dots or more. Returns its
 * start and sets *end, or NULL. */
static size_t ellipsis_at(const unsigned char *s)
{
    if (s[0] == 0xE1 && s[1] == 0xA0 && s[2] == 0x81) return 3;
    if (s[0] == 0xE2 && s[1] == 0x80 && s[2] == 0xA6) return 3;
    if (s[0] == 0xE2 && s[1] == 0x8B && s[2] >= 0xAE && s[2] <= 0xB1) return 3;
    if (s[0] == 0xEF && s[1] == 0xB8 && s[2] == 0x99) return 3;
    return 0;
}

static const char *wrap_marker(const char *s, const char **end)
{
    for (const char *p = s; *p; p++) {
        const unsigned char *u = (const unsigned char *)p;
        size_t n = ellipsis_at(u), len = 0;
        if (n) {
            while ((n = ellipsis_at(u + len))) len += n;
        } else if (!strncmp(p, "...", 3)) {
            while (p[len] == '.') len++;
        }
        if (len) { *end = p + len; return p; }
    }
    return NULL;
}

/* wrapper's text around inner: split at the marker, or inner after it. */
static char *wrapped(const char *wrapper, const char *inner)
{
    const char *end, *m = wrap_marker(wrapper, &end);
    if (!m) m = end = wrapper + strlen(wrapper);
    core_strbuf b = {0};
    core_sb_append(&b, wrapper, (size_t)(m - wrapper));
    core_sb_puts(&b, inner);
    core_sb_puts(&b, end);
    return core_sb_take(&b);
}

/* ---- lists of results ---- */

static void list_clear(wc_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void wc_list_free(wc_list *l) { list_clear(l); }

static int list_push(wc_ctx *c, wc_list *l, char *s)
{
    if (!s) return oom(c);
    if (l->n >= c->max) {
        free(s);
        return wc_fail(c, "more than %d prompts (the --combinatorial limit)", c->max);
    }
    char **v = realloc(l->v, sizeof *v * (size_t)(l->n + 1));
    if (!v) { free(s); return oom(c); }
    l->v = v;
    v[l->n++] = s;
    return 0;
}

/* SamplingResult.joined: one part as it is; several joined by sep, then
 * one leading and one trailing sep removed. */
static char *joined(char **parts, int n, const char *sep)
{
    if (n == 1) return strdup(parts[0]);
    core_strbuf b = {0};
    for (int i = 0; i < n; i++) {
        if (i) core_sb_puts(&b, sep);
        core_sb_puts(&b, parts[i]);
    }
    char *s = core_sb_take(&b);
    size_t ls = strlen(sep);
    if (s && ls) {
        size_t len = strlen(s);
        if (len >= ls && !strncmp(s, sep, ls)) memmove(s, s + ls, (len -= ls) + 1);
        if (len >= ls && !strcmp(s + len - ls, sep)) s[len - ls] = 0;
    }
    return s;
}

/* A set of strings (the "seen" set of _get_variant), open addressing. */
typedef struct wc_set {
    char **slot;
    size_t cap, n;
} wc_set;

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* 1 if s was added, 0 if there, -1 on memory (s is the set's when added) */
static int set_add(wc_set *t, char *s)
{
    if (2 * (t->n + 1) > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **ns = calloc(cap, sizeof *ns);
        if (!ns) return -1;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slot[i]) {
                size_t j = fnv(t->slot[i]) & (cap - 1);
                while (ns[j]) j = (j + 1) & (cap - 1);
                ns[j] = t->slot[i];
            }
        free(t->slot);
        t->slot = ns;
        t->cap = cap;
    }
    size_t j = fnv(s) & (t->cap - 1);
    for (; t->slot[j]; j = (j + 1) & (t->cap - 1))
        if (!strcmp(t->slot[j], s)) return 0;
    t->slot[j] = s;
    t->n++;
    return 1;
}

static void set_free(wc_set *t)
{
    for (size_t i = 0; i < t->cap; i++) free(t->slot[i]);
    free(t->slot);
}

/* ---- combinatorial ---- */

static int expand(wc_ctx *c, const wc_node *n, wc_list *out);

/* The results of one ordered selection sel[0..k) of v's options: the
 * product of their expansions (the first slowest), repeated texts dropped
 * (dedupe), kept when k remain and not seen before. */
typedef struct wc_sel {
    const wc_node *v;
    wc_list *opt;       /* each option's expansions */
    int *sel, k;
    char **parts;
    wc_set seen;
    wc_list *out;
} wc_sel;

static int sel_product(wc_ctx *c, wc_sel *s, int i)
{
    if (i < s->k) {
        const wc_list *l = &s->opt[s->sel[i]];
        for (int j = 0; j < l->n; j++) {
            s->parts[i] = l->v[j];
            if (sel_product(c, s, i + 1)) return -1;
        }
        return 0;
    }
    if (++c->work > WC_WORK_PER_PROMPT * c->max)
        return wc_fail(c, "more than %lld selections to try (the --combinatorial limit)", WC_WORK_PER_PROMPT * c->max);
    int m = 0;
    char *uniq[WC_MAX_DEPTH + 1];
    for (int a = 0; a < s->k; a++) {
        int dup = 0;
        for (int b = 0; b < m && !dup; b++) dup = !strcmp(uniq[b], s->parts[a]);
        if (!dup) uniq[m++] = s->parts[a];
    }
    if (m != s->k) return 0;
    /* the seen key: each text with its length, so no two tuples collide */
    core_strbuf key = {0};
    for (int a = 0; a < m; a++) {
        char len[24];
        snprintf(len, sizeof len, "%zu:", strlen(uniq[a]));
        core_sb_puts(&key, len);
        core_sb_puts(&key, uniq[a]);
    }
    char *ks = core_sb_take(&key);
    if (!ks) return oom(c);
    int added = set_add(&s->seen, ks);
    if (added < 0) { free(ks); return oom(c); }
    if (!added) { free(ks); return 0; }
    return list_push(c, s->out, joined(uniq, m, s->v->sep));
}

/* get_value_combinations(k): for each option, the selections of k-1 from
 * the options that differ from it. */
static int selections(wc_ctx *c, wc_sel *s, const int *avail, int n_avail, int depth)
{
    if (depth == s->k) return sel_product(c, s, 0);
    int *rest = malloc(sizeof *rest * (size_t)(n_avail ? n_avail : 1));
    if (!rest) return oom(c);
    for (int i = 0; i < n_avail && !c->failed; i++) {
        int m = 0;
        for (int j = 0; j < n_avail; j++)
            if (strcmp(s->v->key[avail[j]], s->v->key[avail[i]])) rest[m++] = avail[j];
        s->sel[depth] = avail[i];
        if (++c->work > WC_WORK_PER_PROMPT * c->max)
            wc_fail(c, "more than %lld selections to try (the --combinatorial limit)", WC_WORK_PER_PROMPT * c->max);
        else selections(c, s, rest, m, depth + 1);
    }
    free(rest);
    return c->failed ? -1 : 0;
}

static int expand_variant(wc_ctx *c, const wc_node *v, wc_list *out)
{
    if (is_wildcard_variant(v)) {
        const wc_node *w = the_wildcard(v);
        wc_file *f = push(c, w->text);
        if (!f) return -1;
        wc_node *nv = values_variant(c, v, f);
        int rc = nv ? expand_variant(c, nv, out) : -1;
        node_free(nv);
        pop(c);
        return rc;
    }
    int n = v->n, lo = v->lo < n ? v->lo : n, hi = v->hi < n ? v->hi : n;
    if (hi > WC_MAX_DEPTH) return wc_fail(c, "{%d$$...}: more than %d options per prompt", hi, WC_MAX_DEPTH);
    wc_list *opt = calloc((size_t)n, sizeof *opt);
    int *avail = malloc(sizeof *avail * (size_t)n), *sel = malloc(sizeof *sel * (size_t)(hi + 1));
    char **parts = malloc(sizeof *parts * (size_t)(hi + 1));
    int rc = opt && avail && sel && parts ? 0 : oom(c);
    for (int i = 0; i < n && !rc; i++) {
        avail[i] = i;
        rc = expand(c, v->kid[i], &opt[i]);
    }
    wc_sel s = {v, opt, sel, 0, parts, {0}, out};
    for (int k = lo; k <= hi && !rc; k++) {
        s.k = k;
        rc = selections(c, &s, avail, n, 0);
    }
    set_free(&s.seen);
    for (int i = 0; opt && i < n; i++) list_clear(&opt[i]);
    free(opt);
    free(avail);
    free(sel);
    free(parts);
    return rc;
}

/* =! in --combinatorial: the value's first prompt */
static char *first_expansion(wc_ctx *c, const wc_node *value)
{
    wc_list l = {0};
    if (expand(c, value, &l)) return NULL;
    char *s = NULL;
    if (!l.n) wc_fail(c, "${...=!...}: the value gives no prompt");
    else s = l.v[0], l.v[0] = NULL;
    list_clear(&l);
    return s;
}

static int expand_sequence(wc_ctx *c, const wc_node *n, wc_list *out);

/* WrapCommand: each wrapper's prompt around each inner prompt */
static int expand_wrap(wc_ctx *c, const wc_node *n, wc_list *out)
{
    if (is_empty(n->kid[0]) || is_empty(n->kid[1])) return 0; /* sample_prompts of nothing */
    wc_list w = {0}, in = {0};
    int rc = expand(c, n->kid[0], &w) || expand(c, n->kid[1], &in) ? -1 : 0;
    for (int i = 0; i < w.n && !rc; i++)
        for (int k = 0; k < in.n && !rc; k++) rc = list_push(c, out, wrapped(w.v[i], in.v[k]));
    list_clear(&w);
    list_clear(&in);
    return rc;
}

static int expand(wc_ctx *c, const wc_node *n, wc_list *out)
{
    if (c->failed) return -1;
    switch (n->kind) {
    case N_LIT: return list_push(c, out, strdup(n->text));
    case N_SEQ: {
        wc_binding *saved = c->env, *b;
        int nb;
        if (bind(c, n, first_expansion, &b, &nb)) return -1;
        int rc = expand_sequence(c, n, out);
        unbind(c, b, nb, saved);
        return rc;
    }
    case N_SET: return 0; /* bound by its sequence */
    case N_GET: {
        const wc_node *v;
        const char *t;
        if (use(c, n, &v, &t)) return -1;
        if (t) return list_push(c, out, strdup(t));
        int rc = expand(c, v, out);
        c->n_using--;
        return rc;
    }
    case N_WRAP: return expand_wrap(c, n, out);
    case N_VAR: return expand_variant(c, n, out);
    case N_WILD: {
        wc_file *f = push(c, n->text);
        if (!f) return -1;
        int rc = 0;
        for (int i = 0; i < f->n && !rc; i++) {
            wc_node *v = parse(c, f->v[i], f->name);
            rc = v ? expand(c, v, out) : -1;
            node_free(v);
        }
        pop(c);
        return rc;
    }
    }
    return -1;
}

/* A sequence's parts (its variables bound): the product, the first
 * varying slowest. */
static int expand_sequence(wc_ctx *c, const wc_node *n, wc_list *out)
{
    {
        wc_list acc = {0};
        if (list_push(c, &acc, strdup(""))) return -1;
        for (int i = 0; i < n->n; i++) {
            wc_list part = {0}, next = {0};
            if (n->kid[i]->kind == N_SET) continue;
            if (expand(c, n->kid[i], &part)) { list_clear(&acc); list_clear(&part); return -1; }
            if ((long long)acc.n * part.n > c->max) {
                list_clear(&acc);
                list_clear(&part);
                return wc_fail(c, "more than %d prompts (the --combinatorial limit)", c->max);
            }
            for (int a = 0; a < acc.n && !c->failed; a++)
                for (int b = 0; b < part.n && !c->failed; b++) {
                    size_t la = strlen(acc.v[a]), lb = strlen(part.v[b]);
                    char *s = malloc(la + lb + 1);
                    if (s) {
                        memcpy(s, acc.v[a], la);
                        memcpy(s + la, part.v[b], lb + 1);
                    }
                    list_push(c, &next, s);
                }
            list_clear(&acc);
            list_clear(&part);
            acc = next;
            if (c->failed) { list_clear(&acc); return -1; }
        }
        for (int i = 0; i < acc.n; i++)
            if (list_push(c, out, acc.v[i])) {
                for (int k = i + 1; k < acc.n; k++) free(acc.v[k]);
                free(acc.v);
                return -1;
            }
        free(acc.v);
        return 0;
    }
}

int wc_expand_all(const char *tmpl, const char *dir, int max, wc_list *out, char *why, size_t why_len)
{
    wc_ctx c = {.dir = dir, .why = why, .why_len = why_len, .max = max};
    out->v = NULL;
    out->n = 0;
    wc_node *n = parse(&c, tmpl, "prompt");
    int rc = n ? expand(&c, n, out) : -1;
    node_free(n);
    files_free(&c);
    if (rc) list_clear(out);
    return rc;
}

/* ---- random ---- */

/* Every wildcard reachable from n exists and parses, and none includes
 * itself: checked before drawing, so a bad template fails for every seed. */
static int check(wc_ctx *c, const wc_node *n);

/* =! while checking: the value checked, its text not known yet */
static char *check_immediate(wc_ctx *c, const wc_node *value)
{
    if (check(c, value)) return NULL;
    char *s = strdup("");
    if (!s) oom(c);
    return s;
}

static int check(wc_ctx *c, const wc_node *n)
{
    if (c->failed) return -1;
    if (n->kind == N_SEQ) {
        wc_binding *saved = c->env, *b;
        int nb, rc = bind(c, n, check_immediate, &b, &nb);
        for (int i = 0; i < n->n && !rc; i++)
            if (n->kid[i]->kind != N_SET) rc = check(c, n->kid[i]);
        unbind(c, b, nb, saved);
        return rc;
    }
    if (n->kind == N_GET) {
        const wc_node *v;
        const char *t;
        if (use(c, n, &v, &t)) return -1;
        int rc = v ? check(c, v) : 0;
        if (v) c->n_using--;
        return rc;
    }
    for (int i = 0; i < n->n; i++)
        if (check(c, n->kid[i])) return -1;
    if (n->kind != N_WILD) return 0;
    wc_file *f = push(c, n->text);
    if (!f) return -1;
    int rc = 0;
    if (!f->checked) {
        long long uses = c->uses;
        for (int i = 0; i < f->n && !rc; i++) {
            wc_node *v = parse(c, f->v[i], f->name);
            rc = v ? check(c, v) : -1;
            node_free(v);
        }
        /* values that use variables are checked again in each scope */
        if (!rc && c->uses == uses) f->checked = 1;
    }
    pop(c);
    return rc;
}

/* Redraws (of any variant) one random draw may take in all. */
#define WC_RANDOM_REDRAWS 10000

/* splitmix64 (Vigna): the stream every random choice is drawn from. */
static uint64_t next_u64(wc_ctx *c)
{
    uint64_t z = (c->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double uniform(wc_ctx *c) { return (double)(next_u64(c) >> 11) * 0x1p-53; }
static int below(wc_ctx *c, int n) { return (int)(uniform(c) * n); }

static char *sample(wc_ctx *c, const wc_node *n);

static char *sample_variant(wc_ctx *c, const wc_node *v)
{
    if (is_wildcard_variant(v)) {
        wc_file *f = push(c, the_wildcard(v)->text);
        if (!f) return NULL;
        wc_node *nv = values_variant(c, v, f);
        char *s = nv ? sample_variant(c, nv) : NULL;
        node_free(nv);
        pop(c);
        return s;
    }
    int n = v->n, lo = v->lo < n ? v->lo : n, hi = v->hi < n ? v->hi : n;
    if (hi > WC_MAX_DEPTH) { wc_fail(c, "{%d$$...}: more than %d options per prompt", hi, WC_MAX_DEPTH); return NULL; }
    int *cand = malloc(sizeof *cand * (size_t)(n ? n : 1));
    char **parts = calloc((size_t)hi + 1, sizeof *parts);
    if (!cand || !parts) { free(cand); free(parts); oom(c); return NULL; }
    char *res = NULL;
    /* A draw whose options expand to repeated texts is drawn again (the
     * combinatorial list has no such result); after 100 the last stands. */
    for (int attempt = 0; attempt < 100 && !res && !c->failed; attempt++) {
        int k = lo + below(c, hi - lo + 1), m = n, got = 0;
        for (int i = 0; i < n; i++) cand[i] = i;
        while (got < k && m > 0) {
            double total = 0, r;
            for (int i = 0; i < m; i++) total += v->weight[cand[i]] > 0 ? v->weight[cand[i]] : 0;
            int pick = m - 1;
            if (total > 0) {
                r = uniform(c) * total;
                for (int i = 0; i < m; i++) {
                    double w = v->weight[cand[i]] > 0 ? v->weight[cand[i]] : 0;
                    if (r < w) { pick = i; break; }
                    r -= w;
                }
            } else {
                pick = below(c, m);
            }
            int chosen = cand[pick], mm = 0;
            for (int i = 0; i < m; i++)
                if (strcmp(v->key[cand[i]], v->key[chosen])) cand[mm++] = cand[i];
            m = mm;
            char *s = sample(c, v->kid[chosen]);
            if (!s) break;
            int dup = 0;
            for (int i = 0; i < got && !dup; i++) dup = !strcmp(parts[i], s);
            if (dup) free(s);
            else parts[got++] = s;
        }
        /* the redraws of nested variants multiply: past a budget for the
         * whole draw the first draw stands */
        int last = attempt == 99 || ++c->work > WC_RANDOM_REDRAWS;
        if (!c->failed && (got == k || last)) res = joined(parts, got, v->sep);
        if (!c->failed && !res && last) oom(c);
        for (int i = 0; i < got; i++) free(parts[i]);
        memset(parts, 0, sizeof *parts * ((size_t)hi + 1));
    }
    free(cand);
    free(parts);
    return res;
}

static char *sample(wc_ctx *c, const wc_node *n)
{
    if (c->failed) return NULL;
    switch (n->kind) {
    case N_LIT: {
        char *s = strdup(n->text);
        if (!s) oom(c);
        return s;
    }
    case N_SEQ: {
        wc_binding *saved = c->env, *bd;
        int nb;
        if (bind(c, n, sample, &bd, &nb)) return NULL;
        core_strbuf b = {0};
        char *s = NULL;
        int i = 0;
        for (; i < n->n; i++) {
            if (n->kid[i]->kind == N_SET) continue;
            if (!(s = sample(c, n->kid[i]))) break;
            core_sb_puts(&b, s);
            free(s);
        }
        s = core_sb_take(&b);
        if (i < n->n) { free(s); s = NULL; }
        else if (!s) oom(c);
        unbind(c, bd, nb, saved);
        return s;
    }
    case N_SET: return NULL; /* bound by its sequence */
    case N_GET: {
        const wc_node *v;
        const char *t;
        if (use(c, n, &v, &t)) return NULL;
        char *s = t ? strdup(t) : sample(c, v);
        if (v) c->n_using--;
        if (!s && !c->failed) oom(c);
        return s;
    }
    case N_WRAP: { /* RandomSampler: one wrapper around one inner */
        char *w = sample(c, n->kid[0]), *in = w ? sample(c, n->kid[1]) : NULL;
        char *s = in ? wrapped(w, in) : NULL;
        if (in && !s) oom(c);
        free(w);
        free(in);
        return s;
    }
    case N_VAR: return sample_variant(c, n);
    case N_WILD: {
        wc_file *f = push(c, n->text);
        if (!f) return NULL;
        wc_node *v = parse(c, f->v[below(c, f->n)], f->name);
        char *s = v ? sample(c, v) : NULL;
        node_free(v);
        pop(c);
        return s;
    }
    }
    return NULL;
}

char *wc_expand_random(const char *tmpl, const char *dir, uint64_t seed, char *why, size_t why_len)
{
    wc_ctx c = {.dir = dir, .why = why, .why_len = why_len, .max = WC_MAX_PROMPTS, .rng = seed};
    wc_node *n = parse(&c, tmpl, "prompt");
    int ok = n && !check(&c, n);
    c.uses = 0; /* the draw's own uses */
    char *s = ok ? sample(&c, n) : NULL;
    node_free(n);
    files_free(&c);
    if (!s && !c.failed) wc_fail(&c, "out of memory");
    return s;
}
