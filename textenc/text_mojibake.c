/* text_mojibake: ftfy 6.3.1's fix_encoding, the repair of UTF-8 that was
 * decoded with a single-byte codec ("cafÃ©" -> "café"). Port of
 * fix_encoding_and_explain / _fix_encoding_one_step_and_explain:
 *
 *   repeat until nothing changes:
 *     ASCII, or no badness match            -> done
 *     for each codec (latin-1, sloppy-windows-1252, ...) the text fits in:
 *       encode; restore_byte_a0; replace_lossy_sequences (sloppy codecs);
 *       decode as UTF-8 (with CESU-8 / Java-null variants) -> done if valid
 *     decode_inconsistent_utf8 (mojibake islands)
 *     latin-1 text with C1 controls -> windows-1252
 *     remaining C1 controls -> fix_c1_controls
 *
 * The badness heuristic and codec tables are data generated from ftfy itself
 * (mojibake_tables.c). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "textenc/mojibake_tables.h"
#include "textenc/text_clean.h"

/* ---- the badness heuristic (ftfy.badness.is_bad) --------------------------- */

static int in_ranges(const te_cp_range *r, int n, uint32_t c)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c < r[mid].lo)
            hi = mid - 1;
        else if (c > r[mid].hi)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static int elem_matches(const te_bad_elem *e, uint32_t c)
{
    switch (e->kind) {
    case BE_SET: return in_ranges(e->ranges, e->n_ranges, c);
    case BE_NOT_SET: return !in_ranges(e->ranges, e->n_ranges, c);
    case BE_SPACE: return te_is_python_space(c);
    case BE_WORD: return te_is_python_word(c);
    case BE_ANY: return c != '\n';
    default: return 0;
    }
}

static int branch_matches(const te_bad_elem *e, int ne, const uint32_t *t, size_t n, size_t pos)
{
    if (ne == 0)
        return 1;
    if (e->kind == BE_START)
        return pos == 0 && branch_matches(e + 1, ne - 1, t, n, pos);
    if (pos < n && elem_matches(e, t[pos]) && branch_matches(e + 1, ne - 1, t, n, pos + 1))
        return 1;
    return e->optional && branch_matches(e + 1, ne - 1, t, n, pos);
}

/* Does every branch need a non-ASCII character (an element whose set has
 * only non-ASCII members)? Then runs of ASCII longer than a branch can be
 * skipped. */
static int branches_need_non_ascii(int *max_len)
{
    int all = 1;
    *max_len = 0;
    for (int b = 0; b < te_badness_branches_count; b++) {
        const te_bad_branch *br = &te_badness_branches[b];
        int need = 0;
        for (int k = 0; k < br->n; k++) {
            const te_bad_elem *e = &br->elems[k];
            need |= e->kind == BE_SET && !e->optional && e->n_ranges > 0 && e->ranges[0].lo >= 0x80;
        }
        all &= need;
        if (br->n > *max_len)
            *max_len = br->n;
    }
    return all;
}

static int is_bad(const uint32_t *t, size_t n)
{
    int max_len;
    int skip_ascii = branches_need_non_ascii(&max_len);
    size_t next_non_ascii = 0;
    for (size_t pos = 0; pos < n; pos++) {
        if (skip_ascii) {
            if (next_non_ascii < pos)
                next_non_ascii = pos;
            while (next_non_ascii < n && t[next_non_ascii] < 0x80)
                next_non_ascii++;
            if (next_non_ascii == n)
                return 0;
            /* a match starting at pos ends before pos + max_len */
            if (next_non_ascii >= pos + (size_t)max_len)
                pos = next_non_ascii + 1 - (size_t)max_len;
        }
        for (int b = 0; b < te_badness_branches_count; b++)
            if (branch_matches(te_badness_branches[b].elems, te_badness_branches[b].n, t, n, pos))
                return 1;
    }
    return 0;
}

/* ---- single-byte codecs ------------------------------------------------------ */

static int cmp_entry(const void *a, const void *b)
{
    const te_charmap_entry *x = a, *y = b;
    return x->cp < y->cp ? -1 : x->cp > y->cp;
}

/* The byte that encodes c in this codec, or -1. */
static int encode_char(const te_charmap *cm, uint32_t c)
{
    if (c < 0x80 && c != 0x1A)
        return (int)c;
    te_charmap_entry key = {c, 0};
    const te_charmap_entry *e = bsearch(&key, cm->encode, 129, sizeof key, cmp_entry);
    return e ? e->byte : -1;
}

/* text.encode(codec) if every character fits; else NULL. */
static unsigned char *encode_text(const te_charmap *cm, const uint32_t *t, size_t n)
{
    unsigned char *bytes = malloc(n + 1);
    if (!bytes)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int b = encode_char(cm, t[i]);
        if (b < 0) {
            free(bytes);
            return NULL;
        }
        bytes[i] = (unsigned char)b;
    }
    return bytes;
}

static int possible_encoding(const te_charmap *cm, const uint32_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (encode_char(cm, t[i]) < 0)
            return 0;
    return 1;
}

/* ---- byte-level repairs -------------------------------------------------------- */

/* A byte class as (lo, hi) pairs ending with (0, 0). */
typedef const unsigned char *bclass;

static int in_bclass(bclass c, unsigned char b)
{
    for (; c[0] || c[1]; c += 2)
        if (b >= c[0] && b <= c[1])
            return 1;
    return 0;
}

/* Does the sequence of byte classes pat[0..np) match at s[i]? */
static int bytes_match(const bclass *pat, int np, const unsigned char *s, size_t n, size_t i)
{
    if (i + (size_t)np > n)
        return 0;
    for (int k = 0; k < np; k++)
        if (!in_bclass(pat[k], s[i + (size_t)k]))
            return 0;
    return 1;
}

#define BC(...) ((const unsigned char[]){__VA_ARGS__, 0, 0})

/* chardata.ALTERED_UTF8_RE: UTF-8 sequences whose 0xA0 byte became a space.
 * Returns the length of the alternative matching at s[i], 0 if none. */
static int altered_utf8_at(const unsigned char *s, size_t n, size_t i)
{
    const bclass sp = BC(' ', ' '), cont = BC(0x80, 0xBF),
                 cont_no_a0 = BC(0x80, 0x84, 0x86, 0x9F, 0xA1, 0xBF);
    const bclass alt[6][4] = {
        {BC(0xC2, 0xC3, 0xC5, 0xC5, 0xCE, 0xCE, 0xD0, 0xD0, 0xD9, 0xD9), sp},
        {BC(0xE2, 0xE3), sp, cont_no_a0},
        {BC(0xE0, 0xE3), cont_no_a0, sp},
        {BC(0xF0, 0xF0), sp, cont, cont},
        {BC(0xF0, 0xF0), cont, sp, cont},
        {BC(0xF0, 0xF0), cont, cont, sp},
    };
    static const int len[6] = {2, 3, 3, 4, 4, 4};
    for (int a = 0; a < 6; a++)
        if (bytes_match(alt[a], len[a], s, n, i))
            return len[a];
    return 0;
}

static int has_altered_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (altered_utf8_at(s, n, i))
            return 1;
    return 0;
}

static int starts_with(const unsigned char *s, size_t n, size_t i, const char *lit)
{
    size_t l = strlen(lit);
    return i + l <= n && !memcmp(s + i, lit, l);
}

/* fixes.restore_byte_a0: "Ã " before a word is "à " (A_GRAVE_WORD_RE, except
 * the Portuguese "às", "àquele"...), then spaces inside ALTERED_UTF8_RE
 * matches become 0xA0. *s is replaced (it may grow by one byte per "Ã "). */
static int restore_byte_a0(unsigned char **s, size_t *n)
{
    unsigned char *in = *s, *out = malloc(*n * 2 + 1);
    if (!out)
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < *n; i++) {
        out[m++] = in[i];
        if (in[i] == 0xC3 && i + 1 < *n && in[i + 1] == ' ' && !starts_with(in, *n, i + 2, " ") &&
            !starts_with(in, *n, i + 2, "quele") && !starts_with(in, *n, i + 2, "quela") &&
            !starts_with(in, *n, i + 2, "quilo") && !starts_with(in, *n, i + 2, "s "))
            out[m++] = 0xA0; /* the space stays after it */
    }
    for (size_t i = 0; i < m;) {
        int len = altered_utf8_at(out, m, i);
        if (!len) {
            i++;
            continue;
        }
        for (int k = 0; k < len; k++)
            if (out[i + (size_t)k] == ' ')
                out[i + (size_t)k] = 0xA0;
        i += (size_t)len;
    }
    free(in);
    *s = out;
    *n = m;
    return 0;
}

/* chardata.LOSSY_UTF8_RE: UTF-8 sequences with a byte lost to 0x1A ("?"). */
static int lossy_utf8_at(const unsigned char *s, size_t n, size_t i)
{
    const bclass sub = BC(0x1A, 0x1A), sub_q = BC(0x1A, 0x1A, '?', '?'),
                 sub_cont = BC(0x1A, 0x1A, 0x80, 0xBF),
                 sub_q_cont = BC(0x1A, 0x1A, '?', '?', 0x80, 0xBF),
                 ed = BC(0xED, 0xED), lead3 = BC(0xE0, 0xEF), lead4 = BC(0xF0, 0xF4);
    const bclass alt[10][6] = {
        {BC(0xC2, 0xDF), sub},
        {BC(0xC2, 0xC3), BC('?', '?')},
        {ed, BC(0xA0, 0xAF), sub_q, ed, BC(0xB0, 0xBF), sub_q_cont},
        {ed, BC(0xA0, 0xAF), sub_q_cont, ed, BC(0xB0, 0xBF), sub_q},
        {lead3, sub_q, sub_cont},
        {lead3, sub_cont, sub_q},
        {lead4, sub_q, sub_cont, sub_cont},
        {lead4, sub_cont, sub_q, sub_cont},
        {lead4, sub_cont, sub_cont, sub_q},
        {sub},
    };
    static const int len[10] = {2, 2, 6, 6, 3, 3, 4, 4, 4, 1};
    for (int a = 0; a < 10; a++)
        if (bytes_match(alt[a], len[a], s, n, i))
            return len[a];
    return 0;
}

/* fixes.replace_lossy_sequences: each match becomes the UTF-8 of U+FFFD. */
static int replace_lossy_sequences(unsigned char **s, size_t *n)
{
    unsigned char *in = *s, *out = malloc(*n * 3 + 1);
    if (!out)
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < *n;) {
        int len = lossy_utf8_at(in, *n, i);
        if (len) {
            memcpy(out + m, "\xEF\xBF\xBD", 3);
            m += 3;
            i += (size_t)len;
        } else {
            out[m++] = in[i++];
        }
    }
    free(in);
    *s = out;
    *n = m;
    return 0;
}

/* Strict UTF-8 plus ftfy's "utf-8-variants": C0 80 is U+0000 and a CESU-8
 * surrogate pair is one supplementary character. Returns 0, 1 if the bytes
 * are not (variant) UTF-8, -1 on memory failure. */
static int decode_utf8_variants(const unsigned char *s, size_t n, te_cps *out)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80) {
            cp = c, len = 1;
        } else if (c == 0xC0 && i + 1 < n && s[i + 1] == 0x80) {
            cp = 0, len = 2;
        } else if (c == 0xED && i + 5 < n && s[i + 1] >= 0xA0 && s[i + 1] <= 0xAF &&
                   (s[i + 2] & 0xC0) == 0x80 && s[i + 3] == 0xED && s[i + 4] >= 0xB0 &&
                   s[i + 4] <= 0xBF && (s[i + 5] & 0xC0) == 0x80) {
            cp = 0x10000 + ((uint32_t)(s[i + 1] & 0x0F) << 16) +
                 ((uint32_t)(s[i + 2] & 0x3F) << 10) + ((uint32_t)(s[i + 4] & 0x0F) << 6) +
                 (s[i + 5] & 0x3F);
            len = 6;
        } else {
            int need;
            uint32_t min;
            if (c >= 0xC2 && c <= 0xDF)
                need = 1, cp = c & 0x1F, min = 0x80;
            else if (c >= 0xE0 && c <= 0xEF)
                need = 2, cp = c & 0x0F, min = 0x800;
            else if (c >= 0xF0 && c <= 0xF4)
                need = 3, cp = c & 0x07, min = 0x10000;
            else
                return 1;
            if (i + (size_t)need >= n)
                return 1;
            for (int k = 1; k <= need; k++) {
                if ((s[i + (size_t)k] & 0xC0) != 0x80)
                    return 1;
                cp = cp << 6 | (s[i + (size_t)k] & 0x3F);
            }
            if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return 1;
            len = (size_t)need + 1;
        }
        if (te_cps_push(out, cp))
            return -1;
        i += len;
    }
    return 0;
}

/* Encode with one codec, repair, decode as UTF-8. 0: fixed into out; 1: not
 * applicable; -1: memory. */
static int try_charmap(const te_charmap *cm, const uint32_t *t, size_t n, te_cps *out)
{
    unsigned char *bytes = encode_text(cm, t, n);
    if (!bytes)
        return -1;
    size_t len = n;
    int rc = 0;
    if (strcmp(cm->name, "macroman") && has_altered_utf8(bytes, len))
        rc = restore_byte_a0(&bytes, &len);
    if (!rc && cm->sloppy)
        rc = replace_lossy_sequences(&bytes, &len);
    if (!rc) {
        size_t mark = out->n;
        rc = decode_utf8_variants(bytes, len, out);
        if (rc)
            out->n = mark;
    }
    free(bytes);
    return rc;
}

/* ---- decode_inconsistent_utf8 ------------------------------------------------------ */

static uint32_t clue_mask(uint32_t c)
{
    int lo = 0, hi = te_utf8_clue_classes_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c < te_utf8_clue_classes[mid].cp)
            hi = mid - 1;
        else if (c > te_utf8_clue_classes[mid].cp)
            lo = mid + 1;
        else
            return te_utf8_clue_classes[mid].mask;
    }
    return 0;
}

static int continuations(const uint32_t *t, size_t n, size_t i, int k)
{
    if (i + (size_t)k > n)
        return 0;
    for (int j = 0; j < k; j++)
        if (!(clue_mask(t[i + (size_t)j]) & U8_CONTINUATION))
            return 0;
    return 1;
}

/* chardata.UTF8_DETECTOR_RE at t[i]: length of the match, 0 if none. */
static size_t utf8_detector_at(const uint32_t *t, size_t n, size_t i)
{
    if (i > 0 && (clue_mask(t[i - 1]) & U8_CONTINUATION_STRICT))
        return 0;
    size_t k = i;
    while (k < n) {
        uint32_t m = clue_mask(t[k]);
        if ((m & U8_FIRST_OF_2) && continuations(t, n, k + 1, 1))
            k += 2;
        else if ((m & U8_FIRST_OF_3) && continuations(t, n, k + 1, 2))
            k += 3;
        else if ((m & U8_FIRST_OF_4) && continuations(t, n, k + 1, 3))
            k += 4;
        else
            break;
    }
    return k - i;
}

/* fixes.decode_inconsistent_utf8: fix each UTF-8-looking island (shorter than
 * the whole text) that looks bad on its own. */
static int decode_inconsistent_utf8(const uint32_t *t, size_t n, te_cps *out)
{
    for (size_t i = 0; i < n;) {
        size_t len = utf8_detector_at(t, n, i);
        if (!len) {
            if (te_cps_push(out, t[i]))
                return -1;
            i++;
            continue;
        }
        if (len < n && is_bad(t + i, len)) {
            te_cps island = {0};
            int rc = te_cps_append(&island, t + i, len) || te_ftfy_fix_encoding(&island, out);
            te_cps_free(&island);
            if (rc)
                return -1;
        } else if (te_cps_append(out, t + i, len)) {
            return -1;
        }
        i += len;
    }
    return 0;
}

/* ---- one step, and the loop ------------------------------------------------------------ */

static int is_ascii(const uint32_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (t[i] > 0x7F)
            return 0;
    return 1;
}

static int has_c1(const uint32_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (t[i] >= 0x80 && t[i] <= 0x9F)
            return 1;
    return 0;
}

static int cps_same(const te_cps *a, const uint32_t *t, size_t n)
{
    return a->n == n && (n == 0 || !memcmp(a->v, t, n * sizeof *t));
}

/* _fix_encoding_one_step_and_explain: out = the text after one step. */
static int fix_encoding_step(const uint32_t *t, size_t n, te_cps *out)
{
    if (n == 0 || is_ascii(t, n) || !is_bad(t, n))
        return te_cps_append(out, t, n);
    int latin1_possible = 0;
    for (int e = 0; e < FM_N_CHARMAPS; e++) {
        const te_charmap *cm = &te_charmaps[e];
        if (!possible_encoding(cm, t, n))
            continue;
        latin1_possible |= e == 0; /* "latin-1" comes first */
        int rc = try_charmap(cm, t, n, out);
        if (rc <= 0)
            return rc;
    }
    te_cps tmp = {0};
    int rc = decode_inconsistent_utf8(t, n, &tmp);
    if (rc || !cps_same(&tmp, t, n)) {
        if (!rc)
            rc = te_cps_append(out, tmp.v, tmp.n);
        te_cps_free(&tmp);
        return rc;
    }
    te_cps_free(&tmp);
    /* ftfy's test for "windows-1252" in the list of possible codecs never
     * succeeds (the list names "sloppy-windows-1252"), so latin-1 text is
     * re-decoded as strict windows-1252 when that works */
    if (latin1_possible) {
        size_t mark = out->n;
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++) {
            uint32_t c = t[i] < 0x100 ? te_windows_1252[t[i]] : 0xFFFFFFFFu;
            ok = c != 0xFFFFFFFFu;
            if (ok && te_cps_push(out, c))
                return -1;
        }
        if (ok && memcmp(out->v + mark, t, n * sizeof *t))
            return 0;
        out->n = mark;
    }
    if (has_c1(t, n)) {
        for (size_t i = 0; i < n; i++) {
            uint32_t c = t[i];
            if (c >= 0x80 && c <= 0x9F)
                c = te_charmaps[1].decode[c]; /* sloppy-windows-1252 */
            if (te_cps_push(out, c))
                return -1;
        }
        return 0;
    }
    return te_cps_append(out, t, n);
}

int te_ftfy_fix_encoding(const te_cps *in, te_cps *out)
{
    te_cps cur = {0}, next = {0};
    int rc = te_cps_append(&cur, in->v, in->n);
    while (!rc) {
        next.n = 0;
        rc = fix_encoding_step(cur.v, cur.n, &next);
        if (rc || cps_same(&next, cur.v, cur.n))
            break;
        te_cps t = cur;
        cur = next;
        next = t;
    }
    if (!rc)
        rc = te_cps_append(out, cur.v, cur.n);
    te_cps_free(&cur);
    te_cps_free(&next);
    return rc;
}
