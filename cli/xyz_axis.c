/* xyz_axis: X/Y/Z axis values (cli/xyz_axis.h). The four range patterns
 * are xyz_grid.py's re_range, re_range_count, re_range_float and
 * re_range_count_float, matched whole with POSIX extended regexes (\s as
 * [[:space:]], \d as [0-9]; the float patterns' unescaped '.' stays "any
 * character", as in A1111, so `1x5-3` is a range whose start fails float()). */
#include "xyz_axis.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static int xa_fail(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    for (char *p = why; *p; p++)
        if ((unsigned char)*p < 0x20) *p = '?';
    return -1;
}

void xa_free(xa_values *v)
{
    for (int i = 0; v->str && i < v->n; i++) free(v->str[i]);
    free(v->str);
    free(v->num);
    v->str = NULL;
    v->num = NULL;
    v->n = 0;
}

static int py_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31); }

static char *strip_dup(const char *s, size_t n)
{
    while (n && py_space((unsigned char)*s)) s++, n--;
    while (n && py_space((unsigned char)s[n - 1])) n--;
    return strndup(s, n);
}

/* csv.reader(StringIO(text)) (excel dialect, not strict), every record's
 * fields in order, each stripped (csv_string_to_list_strip). */
static int csv_fields(const char *text, char ***out, int *n_out)
{
    char **v = NULL;
    int n = 0;
    core_strbuf f = {0};
    enum { START_RECORD, START_FIELD, IN_FIELD, IN_QUOTED, QUOTE_IN_QUOTED } st = START_RECORD;
    int have_field = 0;
    for (const char *p = text;; p++) {
        char c = *p;
        int end = !c;
        int save = 0, end_record = 0;
        switch (st) {
        case START_RECORD:
            if (end) goto done;
            if (c == '\n' || c == '\r') continue; /* an empty line is an empty record */
            st = START_FIELD;
            /* fall through */
        case START_FIELD:
            if (end || c == '\n' || c == '\r') { save = end_record = 1; break; }
            if (c == '"') { st = IN_QUOTED; have_field = 1; break; }
            if (c == ',') { save = 1; break; }
            core_sb_append(&f, p, 1);
            have_field = 1;
            st = IN_FIELD;
            break;
        case IN_FIELD:
            if (end || c == '\n' || c == '\r') { save = end_record = 1; break; }
            if (c == ',') { save = 1; st = START_FIELD; break; }
            core_sb_append(&f, p, 1);
            break;
        case IN_QUOTED:
            if (end) { save = end_record = 1; break; } /* not strict: the field as read */
            if (c == '"') st = QUOTE_IN_QUOTED;
            else core_sb_append(&f, p, 1);
            break;
        case QUOTE_IN_QUOTED:
            if (c == '"') { core_sb_append(&f, p, 1); st = IN_QUOTED; break; }
            if (c == ',') { save = 1; st = START_FIELD; break; }
            if (end || c == '\n' || c == '\r') { save = end_record = 1; break; }
            core_sb_append(&f, p, 1); /* text after the closing quote joins the field */
            st = IN_FIELD;
            break;
        }
        if (save) {
            char *raw = core_sb_take(&f);
            char *s = raw ? strip_dup(raw, strlen(raw)) : NULL;
            free(raw);
            char **nv = s ? realloc(v, sizeof *nv * (size_t)(n + 1)) : NULL;
            if (!nv) { free(s); goto oom; }
            v = nv;
            v[n++] = s;
            have_field = 0;
            if (st != IN_FIELD || c == ',') st = c == ',' ? START_FIELD : st;
        }
        if (end_record) st = START_RECORD;
        if (end) break;
    }
done:
    (void)have_field;
    free(core_sb_take(&f));
    *out = v;
    *n_out = n;
    return 0;
oom:
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
    free(core_sb_take(&f));
    return -1;
}

/* Python int(s): white space, a sign, digits with single '_' between them. */
static int py_int(const char *s, double *v)
{
    const char *p = s;
    while (py_space((unsigned char)*p)) p++;
    char buf[64];
    size_t n = 0;
    if (*p == '+' || *p == '-') buf[n++] = *p++;
    if (!(*p >= '0' && *p <= '9')) return -1;
    while ((*p >= '0' && *p <= '9') || (*p == '_' && p[1] >= '0' && p[1] <= '9' && p[-1] != '_')) {
        if (*p != '_') {
            if (n >= 20) return -1; /* past int64: refused */
            buf[n++] = *p;
        }
        p++;
    }
    while (py_space((unsigned char)*p)) p++;
    if (*p) return -1;
    buf[n] = 0;
    errno = 0;
    long long x = strtoll(buf, NULL, 10);
    if (errno) return -1;
    *v = (double)x;
    return 0;
}

/* Python float(s) for finite decimals (digits with '_', a '.', an
 * exponent); inf and nan are refused. */
static int py_float(const char *s, double *v)
{
    const char *p = s;
    while (py_space((unsigned char)*p)) p++;
    char buf[128];
    size_t n = 0;
    int digits = 0;
    if (*p == '+' || *p == '-') buf[n++] = *p++;
    for (int part = 0; part < 2; part++) {
        if (part == 1) {
            if (*p != '.') break;
            buf[n++] = *p++;
        }
        const char *d0 = p;
        while ((*p >= '0' && *p <= '9') || (*p == '_' && p > d0 && p[-1] != '_' && p[1] >= '0' && p[1] <= '9')) {
            if (n >= sizeof buf - 8) return -1;
            if (*p != '_') buf[n++] = *p, digits++;
            p++;
        }
    }
    if (!digits) return -1;
    if (*p == 'e' || *p == 'E') {
        buf[n++] = *p++;
        if (*p == '+' || *p == '-') buf[n++] = *p++;
        const char *d0 = p;
        while ((*p >= '0' && *p <= '9') || (*p == '_' && p > d0 && p[-1] != '_' && p[1] >= '0' && p[1] <= '9')) {
            if (n >= sizeof buf - 2) return -1;
            if (*p != '_') buf[n++] = *p;
            p++;
        }
        if (p == d0) return -1;
    }
    while (py_space((unsigned char)*p)) p++;
    if (*p) return -1;
    buf[n] = 0;
    *v = strtod(buf, NULL);
    return isfinite(*v) ? 0 : -1;
}

static const char *const PAT_RANGE =
    "^[[:space:]]*([+-]?[[:space:]]*[0-9]+)[[:space:]]*-[[:space:]]*([+-]?[[:space:]]*[0-9]+)"
    "([[:space:]]*\\(([+-][0-9]+)[[:space:]]*\\))?[[:space:]]*$";
static const char *const PAT_COUNT =
    "^[[:space:]]*([+-]?[[:space:]]*[0-9]+)[[:space:]]*-[[:space:]]*([+-]?[[:space:]]*[0-9]+)"
    "([[:space:]]*\\[([0-9]+)[[:space:]]*])?[[:space:]]*$";
static const char *const PAT_RANGE_F =
    "^[[:space:]]*([+-]?[[:space:]]*[0-9]+(.[0-9]*)?)[[:space:]]*-[[:space:]]*([+-]?[[:space:]]*[0-9]+(.[0-9]*)?)"
    "([[:space:]]*\\(([+-][0-9]+(.[0-9]*)?)[[:space:]]*\\))?[[:space:]]*$";
static const char *const PAT_COUNT_F =
    "^[[:space:]]*([+-]?[[:space:]]*[0-9]+(.[0-9]*)?)[[:space:]]*-[[:space:]]*([+-]?[[:space:]]*[0-9]+(.[0-9]*)?)"
    "([[:space:]]*\\[([0-9]+(.[0-9]*)?)[[:space:]]*])?[[:space:]]*$";

/* Groups (start, end, step or count) of pattern pat on s: 1 if it matches
 * whole, with g[k] malloc'd (NULL: the optional group absent). */
static int match3(const char *pat, const int idx[3], const char *s, char *g[3])
{
    regex_t re;
    if (regcomp(&re, pat, REG_EXTENDED)) return -1;
    regmatch_t m[10];
    int ok = regexec(&re, s, 10, m, 0) == 0;
    regfree(&re);
    g[0] = g[1] = g[2] = NULL;
    if (!ok) return 0;
    for (int k = 0; k < 3; k++)
        if (m[idx[k]].rm_so >= 0) g[k] = strndup(s + m[idx[k]].rm_so, (size_t)(m[idx[k]].rm_eo - m[idx[k]].rm_so));
    return 1;
}

static int push_num(xa_values *o, double x)
{
    if (o->n >= XA_MAX_VALUES) return -2;
    double *v = realloc(o->num, sizeof *v * (size_t)(o->n + 1));
    if (!v) return -1;
    o->num = v;
    v[o->n++] = x;
    return 0;
}

/* np.linspace(start, stop, num) (numpy 1.24, endpoint): i * step + start,
 * step = (stop - start) / (num - 1), the last one stop itself. */
static int linspace(xa_values *o, double start, double stop, long long num, int truncate)
{
    if (num > XA_MAX_VALUES) return -2;
    double div = (double)(num - 1), delta = stop - start, step = div > 0 ? delta / div : NAN;
    for (long long i = 0; i < num; i++) {
        double y;
        if (div > 0 && step == 0) y = (double)i / div * delta + start;
        else if (div > 0) y = (double)i * step + start;
        else y = (double)i * delta + start;
        if (i == num - 1 && num > 1) y = stop;
        int rc = push_num(o, truncate ? trunc(y) : y);
        if (rc) return rc;
    }
    return 0;
}

/* np.arange(start, stop, step) for floats: ceil((stop - start) / step)
 * values start + i * delta, delta = (start + step) - start (numpy's fill). */
static int arange(xa_values *o, double start, double stop, double step)
{
    if (step == 0) return -3;
    double len = ceil((stop - start) / step);
    if (!(len > 0)) return 0;
    if (len > XA_MAX_VALUES) return -2;
    double delta = (start + step) - start;
    for (long long i = 0; i < (long long)len; i++) {
        int rc = push_num(o, i == 0 ? start : i == 1 ? start + step : start + (double)i * delta);
        if (rc) return rc;
    }
    return 0;
}

static int field_values(xa_type type, const char *val, xa_values *o, char *why, size_t why_len)
{
    static const int ri[3] = {1, 2, 4}, rf[3] = {1, 3, 6};
    char *g[3];
    int rc = 0, m;
    double a, b, c;
    if (type == XA_INT) {
        if ((m = match3(PAT_RANGE, ri, val, g)) == 1) {
            if (py_int(g[0], &a) || py_int(g[1], &b) || (g[2] && py_int(g[2], &c))) rc = -4;
            else {
                if (!g[2]) c = 1;
                if (c == 0) rc = -3;
                else if (fabs((b + 1 - a) / c) > XA_MAX_VALUES) rc = -2;
                else
                    for (double x = a; !rc && (c > 0 ? x < b + 1 : x > b + 1); x += c) rc = push_num(o, x);
            }
        } else if (m == 0 && (m = match3(PAT_COUNT, ri, val, g)) == 1) {
            if (py_int(g[0], &a) || py_int(g[1], &b) || (g[2] && py_int(g[2], &c))) rc = -4;
            else rc = linspace(o, a, b, g[2] ? (long long)c : 1, 1);
        } else if (m == 0) {
            rc = py_int(val, &a) ? -4 : push_num(o, a);
        } else {
            rc = -1;
        }
    } else {
        if ((m = match3(PAT_RANGE_F, rf, val, g)) == 1) {
            if (py_float(g[0], &a) || py_float(g[1], &b) || (g[2] && py_float(g[2], &c))) rc = -4;
            else rc = arange(o, a, b + (g[2] ? c : 1), g[2] ? c : 1);
        } else if (m == 0 && (m = match3(PAT_COUNT_F, rf, val, g)) == 1) {
            if (py_float(g[0], &a) || py_float(g[1], &b) || (g[2] && py_int(g[2], &c))) rc = -4;
            else rc = linspace(o, a, b, g[2] ? (long long)c : 1, 0);
        } else if (m == 0) {
            rc = py_float(val, &a) ? -4 : push_num(o, a);
        } else {
            rc = -1;
        }
    }
    if (m == 1)
        for (int k = 0; k < 3; k++) free(g[k]);
    if (rc == -4) return xa_fail(why, why_len, "\"%s\": not %s (A1111: ValueError)", val, type == XA_INT ? "an integer" : "a finite number");
    if (rc == -3) return xa_fail(why, why_len, "\"%s\": the step is 0", val);
    if (rc == -2) return xa_fail(why, why_len, "\"%s\": more than %d values", val, XA_MAX_VALUES);
    if (rc) return xa_fail(why, why_len, "out of memory");
    return 0;
}

int xa_parse(xa_type type, const char *text, xa_values *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof *out);
    char **f;
    int n;
    if (csv_fields(text, &f, &n)) return xa_fail(why, why_len, "out of memory");
    int rc = 0;
    if (type == XA_STR) {
        out->str = f;
        out->n = n;
        return 0;
    }
    for (int i = 0; i < n && !rc; i++) rc = field_values(type, f[i], out, why, why_len);
    for (int i = 0; i < n; i++) free(f[i]);
    free(f);
    if (rc) xa_free(out);
    return rc;
}
