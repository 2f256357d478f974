/* A1111's prompt schedules (modules/prompt_parser.py): its lark grammar
 *
 *   start:       (prompt | /[][():]/+)*
 *   prompt:      (emphasized | scheduled | alternate | plain | WHITESPACE)*
 *   emphasized:  "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
 *   scheduled:   "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
 *   alternate:   "[" prompt ("|" [prompt])+ "]"
 *   plain:       /([^\\\[\]():|]|\\.)+/
 *
 * read as what it means for the output text. Emphasis keeps its brackets in
 * the text, so at the top level a "(" or an emphasis "[" gives the same
 * text as the literal characters the start rule also allows; only the "["
 * groups that are scheduled or alternate change the text. A "[" at the top
 * level whose group is a valid construct is one (the outer group wins, as
 * lark resolves "a[b:[c:d:2]:1]e"); otherwise it is a literal character.
 * Inside a group every bracket must form a valid group itself and ':' and
 * '|' may only separate the group's parts. A '|' outside any alternate, or
 * a backslash at the end or before a newline, is a parse error: the
 * schedule is then the prompt itself for every step.
 *
 * Each group's validity is computed once per position (memo), so the work
 * is linear in the prompt for each nesting level. */
#include "textenc/prompt_schedule.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- AND ---- */

static int is_word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* Python's \s on ASCII (and the C1 separator bytes it also counts). */
static int is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* The byte length of a decimal digit at s (Python's \\d: any Unicode Nd
 * code point), 0 if none; *value gets its value. Nd code points come in
 * aligned runs of ten, 0 to 9. */
static size_t digit_at(const char *s, size_t n, int *value)
{
    if (!n) return 0;
    unsigned char c = (unsigned char)s[0];
    if (c < 0x80) {
        if (!is_digit(c)) return 0;
        *value = c - '0';
        return 1;
    }
    utf8proc_int32_t cp;
    utf8proc_ssize_t len = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (len <= 0 || utf8proc_category(cp) != UTF8PROC_CATEGORY_ND) return 0;
    utf8proc_int32_t z = cp;
    while (z > 0 && utf8proc_category(z - 1) == UTF8PROC_CATEGORY_ND) z--;
    *value = (int)((cp - z) % 10);
    return (size_t)len;
}

/* Length of [-+]?(\d+\.?|\d*\.\d+) at s (re_weight's number), 0 if none;
 * ascii (>= n + 1 bytes) gets it with ASCII digits, for strtod. */
static size_t weight_number(const char *s, size_t n, char *ascii)
{
    size_t i = 0, o = 0, d;
    int v;
    if (i < n && (s[i] == '-' || s[i] == '+')) ascii[o++] = s[i++];
    size_t int_digits = 0;
    while ((d = digit_at(s + i, n - i, &v))) {
        ascii[o++] = (char)('0' + v);
        i += d;
        int_digits++;
    }
    size_t end = int_digits ? i : 0, end_o = o;
    if (i < n && s[i] == '.') {
        size_t j = i + 1, p = o + 1, frac = 0;
        ascii[o] = '.';
        while ((d = digit_at(s + j, n - j, &v))) {
            ascii[p++] = (char)('0' + v);
            j += d;
            frac++;
        }
        if (frac || int_digits) end = j, end_o = p;
    }
    ascii[end ? end_o : 0] = 0;
    return end;
}

/* re_weight = ^((?:\s|.)*?)(?:\s*:\s*(NUM))?\s*$ on part [0, n): the
 * shortest text after which the rest is an optional weight and spaces
 * (the weight's digits are what the number scan takes: spaces must
 * follow, so a shorter number never fits where the longest does not). */
static int split_weight(const char *s, size_t n, size_t *text_len, double *weight)
{
    char *ascii = malloc(n + 1);
    if (!ascii) return -1;
    *text_len = n;
    *weight = 1.0;
    for (size_t e = 0; e <= n; e++) {
        size_t i = e;
        while (i < n && is_space((unsigned char)s[i])) i++;
        if (i < n && s[i] == ':') {
            size_t j = i + 1;
            while (j < n && is_space((unsigned char)s[j])) j++;
            size_t len = weight_number(s + j, n - j, ascii);
            size_t t = j + len;
            while (len && t < n && is_space((unsigned char)s[t])) t++;
            if (len && t == n) {
                *text_len = e;
                *weight = strtod(ascii, NULL);
                break;
            }
        }
        if (i == n) {
            *text_len = e;
            break;
        }
    }
    free(ascii);
    return 0;
}

void te_and_split_free(te_and_split *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->parts[i].text);
    free(s->parts);
    s->parts = NULL;
    s->n = 0;
}

static int add_part(te_and_split *out, const char *s, size_t n, fm_error *err)
{
    if (out->n >= TE_MAX_AND_PARTS)
        return core_fail(err, FM_EINPUT, "prompt: more than %d AND parts", TE_MAX_AND_PARTS);
    size_t tl;
    double w;
    char *t = split_weight(s, n, &tl, &w) ? NULL : malloc(tl + 1);
    if (!t) return core_fail(err, FM_EINPUT, "prompt: out of memory");
    memcpy(t, s, tl);
    t[tl] = 0;
    out->parts[out->n].text = t;
    out->parts[out->n].weight = w;
    out->n++;
    return 0;
}

int te_prompt_and_split(const char *prompt, te_and_split *out, fm_error *err)
{
    memset(out, 0, sizeof *out);
    if (!(out->parts = calloc(TE_MAX_AND_PARTS, sizeof *out->parts)))
        return core_fail(err, FM_EINPUT, "prompt: out of memory");
    size_t n = strlen(prompt), start = 0;
    for (size_t i = 0; i + 3 <= n; i++) {
        if (memcmp(prompt + i, "AND", 3)) continue;
        if (i > 0 && is_word_byte((unsigned char)prompt[i - 1])) continue;
        if (i + 3 < n && is_word_byte((unsigned char)prompt[i + 3])) continue;
        int rc = add_part(out, prompt + start, i - start, err);
        if (rc) {
            te_and_split_free(out);
            return rc;
        }
        start = i + 3;
        i += 2;
    }
    int rc = add_part(out, prompt + start, n - start, err);
    if (rc) te_and_split_free(out);
    return rc;
}

/* ---- the schedule grammar ---- */

enum { G_UNKNOWN = 0, G_INVALID, G_EMPH, G_SCHED, G_ALT, G_PAREN };

typedef struct {
    const char *s;
    size_t n;
    int steps, int_offset;
    double flt_offset;
    int32_t *end;    /* per '[' or '(' position: one past its closer */
    uint8_t *kind;   /* G_* */
    int32_t *colon1, *colon2; /* G_SCHED: the separators (colon1 -1: [to:when]) */
    int32_t *when;   /* G_SCHED: min(steps, int(v)) */
    int too_deep, not_finite;
} grammar;

/* Length of lark's SIGNED_NUMBER at s: [+-]? (FLOAT | INT),
 * FLOAT = INT EXP | DECIMAL EXP?, DECIMAL = INT "." INT? | "." INT. */
static size_t lark_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    size_t d0 = i;
    while (i < n && is_digit((unsigned char)s[i])) i++;
    int int_digits = i > d0;
    int decimal = 0;
    if (i < n && s[i] == '.') {
        size_t j = i + 1, f0 = j;
        while (j < n && is_digit((unsigned char)s[j])) j++;
        if (int_digits || j > f0) {
            decimal = 1;
            i = j;
        }
    }
    if (!int_digits && !decimal) return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < n && (s[j] == '+' || s[j] == '-')) j++;
        size_t e0 = j;
        while (j < n && is_digit((unsigned char)s[j])) j++;
        if (j > e0) i = j;
    }
    return i;
}

/* The "when" of a scheduled group: [a, b) must be \s* NUMBER \s*. Returns
 * 0 and the step, or -1 when it is not a number. */
static int parse_when(grammar *g, size_t a, size_t b, int32_t *when)
{
    while (a < b && is_space((unsigned char)g->s[a])) a++;
    size_t len = lark_number(g->s + a, b - a);
    if (!len) return -1;
    size_t t = a + len;
    while (t < b && is_space((unsigned char)g->s[t])) t++;
    if (t != b) return -1;
    char *buf = malloc(len + 1);
    if (!buf) return -1;
    memcpy(buf, g->s + a, len);
    buf[len] = 0;
    double v = strtod(buf, NULL);
    int fraction = memchr(buf, '.', len) != NULL;
    free(buf);
    if (fraction) v = (v - g->flt_offset) * g->steps;
    else v = v - g->int_offset;
    if (!isfinite(v)) {
        g->not_finite = 1;
        return -1;
    }
    /* min(steps, int(v)); anything below 1 is never reached alike */
    *when = v >= g->steps ? g->steps : v <= 0 ? 0 : (int32_t)v;
    return 0;
}

static int32_t group(grammar *g, size_t i, int depth);

/* Validates the group opening at i ('[' or '('): memoised. Returns one past
 * its closer, or -1. */
static int32_t group(grammar *g, size_t i, int depth)
{
    if (g->kind[i] != G_UNKNOWN) return g->kind[i] == G_INVALID ? -1 : g->end[i];
    if (depth > TE_SCHEDULE_MAX_DEPTH) {
        g->too_deep = 1;
        return -1;
    }
    const char *s = g->s;
    char open = s[i], close = open == '[' ? ']' : ')';
    int colons = 0, pipes = 0;
    int32_t c1 = -1, c2 = -1;
    size_t j = i + 1;
    int32_t result = -1;
    while (j < g->n) {
        char c = s[j];
        if (c == close) {
            result = (int32_t)(j + 1);
            break;
        }
        if (c == '[' || c == '(') {
            int32_t e = group(g, j, depth + 1);
            if (e < 0) break;
            j = (size_t)e;
            continue;
        }
        if (c == ']' || c == ')') break;
        if (c == ':') {
            colons++;
            if (colons == 1) c1 = (int32_t)j;
            else if (colons == 2) c2 = (int32_t)j;
        } else if (c == '|') {
            pipes++;
        } else if (c == '\\') {
            if (j + 1 >= g->n || s[j + 1] == '\n') break;
            j++;
        }
        j++;
    }
    uint8_t kind = G_INVALID;
    if (result >= 0) {
        size_t closer = (size_t)result - 1;
        if (open == '(') {
            if (!pipes && colons <= 1) kind = G_PAREN;
        } else if (!pipes && !colons) {
            kind = G_EMPH;
        } else if (pipes && !colons) {
            kind = G_ALT;
        } else if (!pipes && (colons == 1 || colons == 2)) {
            int32_t last = colons == 2 ? c2 : c1;
            if (parse_when(g, (size_t)last + 1, closer, &g->when[i]) == 0) {
                kind = G_SCHED;
                if (colons == 2) {
                    g->colon1[i] = c1;
                    g->colon2[i] = c2;
                } else {
                    g->colon1[i] = -1;
                    g->colon2[i] = c1;
                }
            }
        }
    }
    g->kind[i] = kind;
    g->end[i] = kind == G_INVALID ? -1 : result;
    return g->end[i];
}

/* ---- output ---- */

/* What to do with the steps of the groups in the parse tree. */
typedef struct {
    int *whens;
    int n_whens, cap_whens;
    int has_alt, oom;
} collect;

static void render(const grammar *g, size_t a, size_t b, int step, core_strbuf *out, collect *col, int top);

/* A scheduled or alternate group at i, at step. */
static void render_group(const grammar *g, size_t i, int step, core_strbuf *out, collect *col)
{
    size_t closer = (size_t)g->end[i] - 1;
    if (g->kind[i] == G_SCHED) {
        if (col) {
            if (g->when[i] >= 1) {
                if (col->n_whens == col->cap_whens) {
                    int cap = col->cap_whens ? col->cap_whens * 2 : 16;
                    int *w = realloc(col->whens, sizeof(int) * (size_t)cap);
                    if (!w) col->oom = 1;
                    else {
                        col->whens = w;
                        col->cap_whens = cap;
                    }
                }
                if (!col->oom) col->whens[col->n_whens++] = g->when[i];
            }
            /* both parts hold groups whose steps count */
            if (g->colon1[i] >= 0) render(g, i + 1, (size_t)g->colon1[i], step, NULL, col, 0);
            size_t a2 = g->colon1[i] >= 0 ? (size_t)g->colon1[i] + 1 : i + 1;
            render(g, a2, (size_t)g->colon2[i], step, NULL, col, 0);
            return;
        }
        if (step <= g->when[i]) {
            if (g->colon1[i] >= 0) render(g, i + 1, (size_t)g->colon1[i], step, out, NULL, 0);
        } else {
            size_t a2 = g->colon1[i] >= 0 ? (size_t)g->colon1[i] + 1 : i + 1;
            render(g, a2, (size_t)g->colon2[i], step, out, NULL, 0);
        }
        return;
    }
    /* alternate: the options are the parts between the group's own '|' */
    int n_opt = 1;
    for (size_t j = i + 1; j < closer;) {
        char c = g->s[j];
        if (c == '[' || c == '(') {
            j = (size_t)g->end[j];
            continue;
        }
        if (c == '\\') j++;
        else if (c == '|') n_opt++;
        j++;
    }
    if (col) col->has_alt = 1;
    int want = col ? -1 : (step - 1) % n_opt;
    int k = 0;
    size_t a = i + 1;
    for (size_t j = i + 1; j <= closer;) {
        char c = g->s[j];
        if (j < closer && (c == '[' || c == '(')) {
            j = (size_t)g->end[j];
            continue;
        }
        if (j == closer || c == '|') {
            if (col) render(g, a, j, step, NULL, col, 0);
            else if (k == want) {
                render(g, a, j, step, out, NULL, 0);
                return;
            }
            k++;
            a = j + 1;
        } else if (c == '\\') {
            j++;
        }
        j++;
    }
}

/* Writes the text of [a, b) at step (out), or collects its groups' steps
 * (col). top: the start rule, where an invalid '[' is a literal. */
static void render(const grammar *g, size_t a, size_t b, int step, core_strbuf *out, collect *col, int top)
{
    size_t run = a;
    for (size_t j = a; j < b;) {
        char c = g->s[j];
        if (c == '\\') {
            j += 2;
            continue;
        }
        if (c == '[' && g->kind[j] != G_INVALID && (g->kind[j] == G_SCHED || g->kind[j] == G_ALT)) {
            if (out) core_sb_append(out, g->s + run, j - run);
            render_group(g, j, step, out, col);
            j = (size_t)g->end[j];
            run = j;
            continue;
        }
        /* emphasis and literal brackets are text; groups inside an emphasis
         * are met as the scan goes on */
        (void)top;
        j++;
    }
    if (out) core_sb_append(out, g->s + run, b - run);
}

static int cmp_int(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

void te_schedule_free(te_schedule *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->e[i].text);
    free(s->e);
    s->e = NULL;
    s->n = 0;
}

static int single_entry(const char *prompt, int steps, te_schedule *out, fm_error *err)
{
    out->e = calloc(1, sizeof *out->e);
    if (!out->e || !(out->e[0].text = strdup(prompt))) {
        free(out->e);
        out->e = NULL;
        return core_fail(err, FM_EINPUT, "prompt: out of memory");
    }
    out->e[0].end_at_step = steps;
    out->n = 1;
    return 0;
}

/* The top level: marks which '[' are groups. Returns 0, or -1 for a parse
 * error (the whole prompt is then its own schedule). */
static int parse_top(grammar *g)
{
    for (size_t j = 0; j < g->n;) {
        char c = g->s[j];
        if (c == '\\') {
            if (j + 1 >= g->n || g->s[j + 1] == '\n') return -1;
            j += 2;
            continue;
        }
        if (c == '|') return -1;
        if (c == '[') {
            int32_t e = group(g, j, 1);
            if (g->too_deep || g->not_finite) return -1;
            if (e >= 0) {
                /* inside a valid group every '|' and '\' is accounted for */
                j = (size_t)e;
                continue;
            }
            /* a literal '[': its would-be contents are top level again */
            g->kind[j] = G_INVALID;
        }
        j++;
    }
    return 0;
}

int te_prompt_schedule(const char *prompt, int steps, int hires_steps, te_schedule *out, fm_error *err)
{
    memset(out, 0, sizeof *out);
    grammar g = {0};
    g.s = prompt;
    g.n = strlen(prompt);
    g.steps = hires_steps > 0 ? hires_steps : steps;
    g.int_offset = hires_steps > 0 ? steps : 0;
    g.flt_offset = hires_steps > 0 ? 1.0 : 0.0;
    if (g.steps < 1) return core_fail(err, FM_EUSAGE, "prompt schedule: steps must be at least 1");
    size_t n = g.n ? g.n : 1;
    g.end = malloc(sizeof(int32_t) * n);
    g.kind = calloc(n, 1);
    g.colon1 = malloc(sizeof(int32_t) * n);
    g.colon2 = malloc(sizeof(int32_t) * n);
    g.when = malloc(sizeof(int32_t) * n);
    int rc = 0;
    collect col = {0};
    if (!g.end || !g.kind || !g.colon1 || !g.colon2 || !g.when) {
        rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
        goto done;
    }
    /* A '[' met again at the top level after its enclosing literal '['
     * was given up is re-validated from its memo: same answer. */
    if (parse_top(&g)) {
        if (g.too_deep)
            rc = core_fail(err, FM_EINPUT, "prompt: brackets nested more than %d deep", TE_SCHEDULE_MAX_DEPTH);
        else if (g.not_finite)
            rc = core_fail(err, FM_EINPUT, "prompt: a [from:to:when] step is not a finite number");
        else
            rc = single_entry(prompt, g.steps, out, err);
        goto done;
    }
    render(&g, 0, g.n, 0, NULL, &col, 1);
    if (col.oom) {
        rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
        goto done;
    }
    /* sorted(set([steps] + whens + (range(1, steps+1) if alternate))) */
    int cap = col.n_whens + 1 + (col.has_alt ? g.steps : 0);
    int *t = malloc(sizeof(int) * (size_t)cap), nt = 0;
    if (!t) {
        rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
        goto done;
    }
    t[nt++] = g.steps;
    for (int i = 0; i < col.n_whens; i++) t[nt++] = col.whens[i];
    if (col.has_alt)
        for (int i = 1; i <= g.steps; i++) t[nt++] = i;
    qsort(t, (size_t)nt, sizeof(int), cmp_int);
    int u = 0;
    for (int i = 0; i < nt; i++)
        if (!u || t[u - 1] != t[i]) t[u++] = t[i];
    out->e = calloc((size_t)u, sizeof *out->e);
    if (!out->e) rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
    for (int i = 0; !rc && i < u; i++) {
        core_strbuf b = {0};
        render(&g, 0, g.n, t[i], &b, NULL, 1);
        char *text = core_sb_take(&b);
        if (!text) {
            rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
            break;
        }
        out->e[i].end_at_step = t[i];
        out->e[i].text = text;
        out->n = i + 1;
    }
    free(t);
    if (rc) te_schedule_free(out);
done:
    free(col.whens);
    free(g.end);
    free(g.kind);
    free(g.colon1);
    free(g.colon2);
    free(g.when);
    return rc;
}

int te_schedule_index(const te_schedule *s, int step)
{
    for (int i = 0; i < s->n; i++)
        if (step <= s->e[i].end_at_step) return i;
    return 0;
}
