/* text_html: HTML character references, two ways: Python's html.unescape
 * (CLIP applies it twice after ftfy) and ftfy's stricter unescape_html pass
 * (only `&name;` / `&#n;` forms, plus ALL-CAPS aliases). Tables from
 * html_entities.c. */
#include "textenc/text_clean.h"

#include <stdlib.h>
#include <string.h>

#include "textenc/html_entities.h"

/* ---- HTML unescaping -------------------------------------------------------- */

static const char *html5_lookup(const char *name)
{
    int lo = 0, hi = te_html5_entities_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(name, te_html5_entities[mid].name);
        if (!c)
            return te_html5_entities[mid].value;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

static const char *ftfy_upper_lookup(const char *name)
{
    for (int i = 0; i < te_ftfy_upper_entities_count; i++)
        if (!strcmp(name, te_ftfy_upper_entities[i].name))
            return te_ftfy_upper_entities[i].value;
    return NULL;
}

static int is_ascii_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static int is_ascii_hex(uint32_t c)
{
    return is_ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static int is_ascii_alnum(uint32_t c)
{
    return is_ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int hexval(uint32_t c)
{
    return is_ascii_digit(c) ? (int)(c - '0') : (int)((c | 0x20) - 'a' + 10);
}

/* Python html._invalid_codepoints: decoded as nothing. */
static int is_html_invalid_codepoint(uint32_t n)
{
    return (n >= 0x1 && n <= 0x8) || n == 0xB || (n >= 0xE && n <= 0x1F) ||
           (n >= 0x7F && n <= 0x9F) || (n >= 0xFDD0 && n <= 0xFDEF) || (n & 0xFFFE) == 0xFFFE;
}

/* html.unescape of one numeric reference with value n (saturated above
 * U+10FFFF). */
static int push_numeric_charref(te_cps *out, uint32_t n)
{
    for (int i = 0; i < te_html_invalid_charrefs_count; i++)
        if (te_html_invalid_charrefs[i].code == n)
            return te_cps_push(out, te_html_invalid_charrefs[i].replacement);
    if ((n >= 0xD800 && n <= 0xDFFF) || n > 0x10FFFF)
        return te_cps_push(out, 0xFFFD);
    if (is_html_invalid_codepoint(n))
        return 0;
    return te_cps_push(out, n);
}

/* Python's _charref `[^\t\n\f <&#;]` */
static int is_charref_name_char(uint32_t c)
{
    return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' &&
           c != ';';
}

/* Matches Python's html._charref at in[i] == '&'. Returns the number of code
 * points consumed (0: no match) and appends the replacement. */
static size_t html_charref(const uint32_t *in, size_t n, size_t i, te_cps *out, int *oom)
{
    size_t j = i + 1;
    if (j < n && in[j] == '#') {
        int hex = j + 1 < n && (in[j + 1] == 'x' || in[j + 1] == 'X');
        size_t k = j + 1 + (size_t)hex, start = k;
        uint32_t val = 0;
        while (k < n && (hex ? is_ascii_hex(in[k]) : is_ascii_digit(in[k]))) {
            uint32_t d = hex ? (uint32_t)hexval(in[k]) : in[k] - '0';
            val = val > 0x110000 ? 0x110001 : val * (hex ? 16 : 10) + d;
            k++;
        }
        if (k == start)
            return 0; /* '#' cannot start a name either */
        if (k < n && in[k] == ';')
            k++;
        if (push_numeric_charref(out, val))
            *oom = 1;
        return k - i;
    }
    size_t k = j;
    while (k < n && k - j < 32 && is_charref_name_char(in[k]))
        k++;
    if (k == j)
        return 0;
    size_t name_len = k - j;
    if (k < n && in[k] == ';')
        k++, name_len++;
    /* the names are ASCII: only an ASCII prefix can match */
    char name[40];
    size_t ascii = 0;
    while (ascii < name_len && in[j + ascii] < 0x80) {
        name[ascii] = (char)in[j + ascii];
        ascii++;
    }
    /* the whole name, else its longest prefix of at least 2 characters */
    for (size_t x = name_len; x >= 2; x--) {
        if (x > ascii)
            continue;
        name[x] = 0;
        const char *v = html5_lookup(name);
        if (v) {
            if (te_cps_push_utf8(out, v) || te_cps_append(out, in + j + x, name_len - x))
                *oom = 1;
            return k - i;
        }
    }
    return 0;
}

int te_html_unescape(const uint32_t *in, size_t n, te_cps *out)
{
    size_t i = 0;
    int oom = 0;
    while (i < n) {
        if (in[i] == '&') {
            size_t used = html_charref(in, n, i, out, &oom);
            if (oom)
                return -1;
            if (used) {
                i += used;
                continue;
            }
        }
        if (te_cps_push(out, in[i]))
            return -1;
        i++;
    }
    return 0;
}

/* ftfy.fixes.unescape_html: `&#?[0-9A-Za-z]{1,24};` through ftfy's entity
 * table (HTML5 names with ';' plus ALL-CAPS aliases) or html.unescape for
 * complete numeric references. */
int te_ftfy_unescape_html(const te_cps *in, te_cps *out)
{
    const uint32_t *t = in->v;
    size_t n = in->n, i = 0;
    while (i < n) {
        if (t[i] == '&') {
            size_t j = i + 1 + (i + 1 < n && t[i + 1] == '#');
            size_t k = j;
            while (k < n && is_ascii_alnum(t[k]))
                k++;
            if (k > j && k - j <= 24 && k < n && t[k] == ';') {
                size_t len = k + 1 - i; /* "&...;" */
                char name[32];
                for (size_t q = 0; q < len - 1; q++)
                    name[q] = (char)t[i + 1 + q];
                name[len - 1] = 0;
                const char *v = name[0] != '#' ? html5_lookup(name) : NULL;
                if (!v && name[0] != '#')
                    v = ftfy_upper_lookup(name);
                if (v) {
                    if (te_cps_push_utf8(out, v))
                        return -1;
                    i += len;
                    continue;
                }
                if (name[0] == '#') {
                    te_cps u = {0};
                    if (te_html_unescape(t + i, len, &u)) {
                        te_cps_free(&u);
                        return -1;
                    }
                    int has_semicolon = 0;
                    for (size_t q = 0; q < u.n; q++)
                        has_semicolon |= u.v[q] == ';';
                    int r = has_semicolon ? te_cps_append(out, t + i, len)
                                          : te_cps_append(out, u.v, u.n);
                    te_cps_free(&u);
                    if (r)
                        return -1;
                    i += len;
                    continue;
                }
            }
        }
        if (te_cps_push(out, t[i]))
            return -1;
        i++;
    }
    return 0;
}

