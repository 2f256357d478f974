/* text_clean: the text cleaning of CLIP's SimpleTokenizer.encode
 *
 *   text = ftfy.fix_text(text)
 *   text = html.unescape(html.unescape(text))
 *   text = whitespace_clean(text)      # \s+ -> ' ', strip
 *   text = text.lower()
 *
 * with ftfy 6.3.1's default passes, in the order
 * tests/data/README.md#text-cleaning lists. Unicode properties come from utf8proc. */
#include "textenc/text_clean.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static void cps_swap(te_cps *a, te_cps *b)
{
    te_cps t = *a;
    *a = *b;
    *b = t;
}

static int cps_equal(const te_cps *a, const te_cps *b)
{
    return a->n == b->n && (a->n == 0 || !memcmp(a->v, b->v, a->n * sizeof *a->v));
}

/* ---- ftfy's character fixers -------------------------------------------------- */

/* Windows-1252 for 0x80..0x9F; the 5 undefined bytes stay as themselves. */
static const uint16_t cp1252_c1[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
};

static int fix_c1_controls(const te_cps *in, te_cps *out)
{
    if (te_cps_reserve(out, in->n))
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        out->v[out->n++] = c >= 0x80 && c <= 0x9F ? cp1252_c1[c - 0x80] : c;
    }
    return 0;
}

static const char *latin_ligature(uint32_t c)
{
    switch (c) {
    case 0x0132: return "IJ";
    case 0x0133: return "ij";
    case 0x0149: return "\xCA\xBCn"; /* ʼn */
    case 0x01F1: return "DZ";
    case 0x01F2: return "Dz";
    case 0x01F3: return "dz";
    case 0x01C4: return "D\xC5\xBD"; /* DŽ */
    case 0x01C5: return "D\xC5\xBE"; /* Dž */
    case 0x01C6: return "d\xC5\xBE"; /* dž */
    case 0x01C7: return "LJ";
    case 0x01C8: return "Lj";
    case 0x01C9: return "lj";
    case 0x01CA: return "NJ";
    case 0x01CB: return "Nj";
    case 0x01CC: return "nj";
    case 0xFB00: return "ff";
    case 0xFB01: return "fi";
    case 0xFB02: return "fl";
    case 0xFB03: return "ffi";
    case 0xFB04: return "ffl";
    case 0xFB05: return "\xC5\xBFt"; /* ſt */
    case 0xFB06: return "st";
    default: return NULL;
    }
}

static int fix_latin_ligatures(const te_cps *in, te_cps *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *lig = latin_ligature(in->v[i]);
        if (lig ? te_cps_push_utf8(out, lig) : te_cps_push(out, in->v[i]))
            return -1;
    }
    return 0;
}

/* ftfy WIDTH_MAP: U+3000 -> space, U+FF01..U+FFEF -> NFKC when it differs. */
static int fix_character_width(const te_cps *in, te_cps *out)
{
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        int r;
        if (c == 0x3000) {
            r = te_cps_push(out, ' ');
        } else if (c >= 0xFF01 && c <= 0xFFEF) {
            utf8proc_int32_t buf[8];
            utf8proc_ssize_t m = utf8proc_decompose_char(
                (utf8proc_int32_t)c, buf, 8, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, NULL);
            if (m < 1 || m > 8) {
                r = te_cps_push(out, c);
            } else {
                m = utf8proc_normalize_utf32(buf, m, UTF8PROC_COMPOSE | UTF8PROC_STABLE);
                r = m < 1 ? te_cps_push(out, c)
                          : te_cps_append(out, (const uint32_t *)buf, (size_t)m);
            }
        } else {
            r = te_cps_push(out, c);
        }
        if (r)
            return -1;
    }
    return 0;
}

static int uncurl_quotes(const te_cps *in, te_cps *out)
{
    if (te_cps_reserve(out, in->n))
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B))
            c = '\'';
        else if (c >= 0x201C && c <= 0x201F)
            c = '"';
        out->v[out->n++] = c;
    }
    return 0;
}

static int fix_line_breaks(const te_cps *in, te_cps *out)
{
    if (te_cps_reserve(out, in->n))
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c == '\r' && i + 1 < in->n && in->v[i + 1] == '\n')
            continue; /* the \n follows */
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85)
            c = '\n';
        out->v[out->n++] = c;
    }
    return 0;
}

/* Python re `\d`: Unicode decimal digits. */
static int is_unicode_digit(uint32_t c)
{
    return utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ND;
}

/* ftfy ANSI_RE: \x1b\[((?:\d|;)*)([a-zA-Z]) */
static int remove_terminal_escapes(const te_cps *in, te_cps *out)
{
    if (te_cps_reserve(out, in->n))
        return -1;
    size_t i = 0;
    while (i < in->n) {
        if (in->v[i] == 0x1B && i + 1 < in->n && in->v[i + 1] == '[') {
            size_t k = i + 2;
            while (k < in->n && (in->v[k] == ';' || is_unicode_digit(in->v[k])))
                k++;
            if (k < in->n && ((in->v[k] | 0x20) >= 'a' && (in->v[k] | 0x20) <= 'z')) {
                i = k + 1;
                continue;
            }
        }
        out->v[out->n++] = in->v[i++];
    }
    return 0;
}

static int is_ftfy_control_char(uint32_t c)
{
    return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
           (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

static int remove_control_chars(const te_cps *in, te_cps *out)
{
    if (te_cps_reserve(out, in->n))
        return -1;
    for (size_t i = 0; i < in->n; i++)
        if (!is_ftfy_control_char(in->v[i]))
            out->v[out->n++] = in->v[i];
    return 0;
}

/* Unicode NFC through utf8proc. */
static int normalize_nfc(const te_cps *in, te_cps *out)
{
    if (in->n == 0)
        return 0;
    char *utf8 = malloc(in->n * 4 + 1);
    if (!utf8)
        return -1;
    size_t len = 0;
    for (size_t i = 0; i < in->n; i++)
        len += (size_t)te_utf8_put(in->v[i], utf8 + len);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)utf8, (utf8proc_ssize_t)len, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    free(utf8);
    if (m < 0)
        return -1; /* only UTF8PROC_ERROR_NOMEM can happen on valid input */
    int r = te_utf8_to_cps((const char *)nfc, (size_t)m, out);
    free(nfc);
    return r;
}

/* ---- ftfy.fix_text ---------------------------------------------------------------- */

typedef int (*fixer_fn)(const te_cps *in, te_cps *out);

/* ftfy fix_and_explain on one segment: the passes in order, repeated until
 * nothing changes. */
static int ftfy_fix_segment(te_cps *seg, int unescape_html)
{
    static const fixer_fn passes[] = {
        te_ftfy_fix_encoding, fix_c1_controls,         fix_latin_ligatures,
        fix_character_width,  uncurl_quotes,           fix_line_breaks,
        remove_terminal_escapes, remove_control_chars, normalize_nfc,
    };
    te_cps orig = {0}, tmp = {0};
    int rc = -1;
    for (int round = 0; round < 100; round++) {
        orig.n = 0;
        if (te_cps_append(&orig, seg->v, seg->n))
            goto out;
        if (unescape_html) {
            tmp.n = 0;
            if (te_ftfy_unescape_html(seg, &tmp))
                goto out;
            cps_swap(seg, &tmp);
        }
        for (size_t p = 0; p < sizeof passes / sizeof *passes; p++) {
            tmp.n = 0;
            if (passes[p](seg, &tmp))
                goto out;
            cps_swap(seg, &tmp);
        }
        if (cps_equal(seg, &orig))
            break;
    }
    rc = 0;
out:
    te_cps_free(&orig);
    te_cps_free(&tmp);
    return rc;
}

/* ftfy.fix_text: segments end after each '\n' (or 10^6 code points); HTML
 * unescaping stops for good at the first segment containing '<'. */
static int ftfy_fix_text(const te_cps *in, te_cps *out)
{
    const size_t max_segment = 1000000;
    int unescape_html = 1;
    te_cps seg = {0};
    size_t pos = 0;
    while (pos < in->n) {
        size_t end = pos;
        while (end < in->n && end - pos < max_segment && in->v[end] != '\n')
            end++;
        if (end < in->n && in->v[end] == '\n' && end - pos < max_segment)
            end++;
        seg.n = 0;
        if (te_cps_append(&seg, in->v + pos, end - pos))
            goto fail;
        for (size_t i = 0; i < seg.n && unescape_html; i++)
            if (seg.v[i] == '<')
                unescape_html = 0;
        if (ftfy_fix_segment(&seg, unescape_html) || te_cps_append(out, seg.v, seg.n))
            goto fail;
        pos = end;
    }
    te_cps_free(&seg);
    return 0;
fail:
    te_cps_free(&seg);
    return -1;
}

/* ---- whitespace and case ------------------------------------------------------------ */

/* strip, \s+ -> ' ', strip */
static int whitespace_clean(const te_cps *in, te_cps *out)
{
    size_t b = 0, e = in->n;
    while (b < e && te_is_python_space(in->v[b]))
        b++;
    while (e > b && te_is_python_space(in->v[e - 1]))
        e--;
    if (te_cps_reserve(out, e - b))
        return -1;
    for (size_t i = b; i < e; i++) {
        if (te_is_regex_space(in->v[i])) {
            while (i + 1 < e && te_is_regex_space(in->v[i + 1]))
                i++;
            out->v[out->n++] = ' ';
        } else {
            out->v[out->n++] = in->v[i];
        }
    }
    /* U+001C..U+001F never reach here (ftfy deletes them), so no second strip */
    return 0;
}

static int is_cased(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
           utf8proc_tolower((utf8proc_int32_t)c) != (utf8proc_int32_t)c ||
           utf8proc_toupper((utf8proc_int32_t)c) != (utf8proc_int32_t)c;
}

static int is_case_ignorable(uint32_t c)
{
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        break;
    }
    /* Word_Break MidLetter, MidNumLet, Single_Quote */
    static const uint32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,  0x5F4,
                                   0x2018, 0x2019, 0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55,
                                   0xFF07, 0xFF0E, 0xFF1A};
    for (size_t i = 0; i < sizeof mid / sizeof *mid; i++)
        if (c == mid[i])
            return 1;
    return 0;
}

/* Python's Final_Sigma context for U+03A3 at t[i]. */
static int is_final_sigma(const uint32_t *t, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && is_case_ignorable(t[j - 1]))
        j--;
    if (j == 0 || !is_cased(t[j - 1]))
        return 0;
    j = i + 1;
    while (j < n && is_case_ignorable(t[j]))
        j++;
    return j == n || !is_cased(t[j]);
}

/* Python str.lower: full lower-case mapping (U+0130 is the only unconditional
 * SpecialCasing entry that differs from the simple mapping) and Final_Sigma. */
static int lower_case(const te_cps *in, te_cps *out)
{
    if (te_cps_reserve(out, in->n + 16))
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c == 0x130) {
            if (te_cps_push(out, 'i') || te_cps_push(out, 0x307))
                return -1;
        } else if (c == 0x3A3) {
            if (te_cps_push(out, is_final_sigma(in->v, in->n, i) ? 0x3C2 : 0x3C3))
                return -1;
        } else if (te_cps_push(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c))) {
            return -1;
        }
    }
    return 0;
}

int te_clip_clean(const char *text, size_t len, te_cps *out)
{
    te_cps a = {0}, b = {0};
    int rc = -1;
    if (te_utf8_to_cps(text, len, &a) || ftfy_fix_text(&a, &b))
        goto done;
    a.n = 0;
    if (te_html_unescape(b.v, b.n, &a))
        goto done;
    b.n = 0;
    if (te_html_unescape(a.v, a.n, &b))
        goto done;
    a.n = 0;
    if (whitespace_clean(&b, &a) || lower_case(&a, out))
        goto done;
    rc = 0;
done:
    te_cps_free(&a);
    te_cps_free(&b);
    return rc;
}
