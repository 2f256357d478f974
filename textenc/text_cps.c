/* text_cps: growable code point arrays, UTF-8 conversion and the whitespace
 * and word classes of Python's re and regex modules. */
#include "textenc/text_clean.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- code point buffers ------------------------------------------------ */

int te_cps_reserve(te_cps *b, size_t extra)
{
    if (b->n + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra)
        cap *= 2;
    uint32_t *v = realloc(b->v, cap * sizeof *v);
    if (!v)
        return -1;
    b->v = v;
    b->cap = cap;
    return 0;
}

int te_cps_push(te_cps *b, uint32_t c)
{
    if (te_cps_reserve(b, 1))
        return -1;
    b->v[b->n++] = c;
    return 0;
}

int te_cps_append(te_cps *b, const uint32_t *c, size_t n)
{
    if (te_cps_reserve(b, n))
        return -1;
    if (n)
        memcpy(b->v + b->n, c, n * sizeof *c);
    b->n += n;
    return 0;
}

int te_cps_push_utf8(te_cps *b, const char *s)
{
    return te_utf8_to_cps(s, strlen(s), b);
}

void te_cps_free(te_cps *b)
{
    free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}

/* ---- UTF-8 ---------------------------------------------------------------- */

int te_utf8_to_cps(const char *str, size_t len, te_cps *out)
{
    const unsigned char *s = (const unsigned char *)str;
    if (te_cps_reserve(out, len))
        return -1;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        int need;
        uint32_t cp, min;
        if (c < 0x80) {
            out->v[out->n++] = c;
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            out->v[out->n++] = 0xFFFD;
            i++;
            continue;
        }
        int ok = i + (size_t)need < len;
        for (int k = 1; ok && k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                ok = 0;
            else
                cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (!ok || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            out->v[out->n++] = 0xFFFD;
            i++;
            continue;
        }
        out->v[out->n++] = cp;
        i += (size_t)need + 1;
    }
    return 0;
}

int te_utf8_put(uint32_t c, char *d)
{
    if (c < 0x80) {
        d[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        d[0] = (char)(0xC0 | c >> 6);
        d[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        d[0] = (char)(0xE0 | c >> 12);
        d[1] = (char)(0x80 | (c >> 6 & 0x3F));
        d[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | c >> 18);
    d[1] = (char)(0x80 | (c >> 12 & 0x3F));
    d[2] = (char)(0x80 | (c >> 6 & 0x3F));
    d[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- Unicode classes -------------------------------------------------------- */

int te_is_regex_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Python str.isspace (used by str.strip): White_Space plus U+001C..U+001F. */
int te_is_python_space(uint32_t c)
{
    return te_is_regex_space(c) || (c >= 0x1C && c <= 0x1F);
}

int te_is_python_word(uint32_t c)
{
    if (c == '_')
        return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

