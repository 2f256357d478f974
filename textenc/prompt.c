/* prompt: A1111's parse_prompt_attention (modules/prompt_parser.py), token
 * by token as its re_attention alternation matches them:
 *
 *   \( \) \[ \] \\  literal character     \  (other) dropped
 *   (  [             open                  :\s*([+-]?[.\d]+)\s*\)  weight close
 *   )  ]             close                 [^\\()\[\]:]+  :  plain text
 *
 * Plain text is split at \s*\bBREAK\b\s* into ("BREAK", -1) markers. Weights
 * are Python doubles multiplied in A1111's order. */
#include "textenc/prompt.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "textenc/text_clean.h"

#define ROUND_MULTIPLIER 1.1
#define SQUARE_MULTIPLIER (1 / 1.1)

/* A1111's weighting is quadratic in the worst case (every bracket left open
 * multiplies all later pieces). Past this many multiplications, which no
 * real prompt comes near, parsing fails instead of running for minutes. */
#define MAX_WEIGHT_MULTIPLICATIONS 100000000LL

typedef struct {
    te_prompt_attention *res;
    int cap;
    long long multiplications;
} parse_state;

static int add_piece(parse_state *st, const uint32_t *t, size_t n, double weight)
{
    te_prompt_attention *r = st->res;
    if (r->n == st->cap) {
        int cap = st->cap ? st->cap * 2 : 16;
        te_prompt_piece *p = realloc(r->pieces, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        r->pieces = p;
        st->cap = cap;
    }
    char *s = malloc(n * 4 + 1);
    if (!s)
        return -1;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)te_utf8_put(t[i], s + len);
    s[len] = 0;
    r->pieces[r->n++] = (te_prompt_piece){s, weight};
    return 0;
}

/* Multiplies the weights of the pieces from `from` on; -2 when over budget. */
static int multiply_range(parse_state *st, int from, double multiplier)
{
    te_prompt_attention *r = st->res;
    st->multiplications += r->n - from;
    if (st->multiplications > MAX_WEIGHT_MULTIPLICATIONS)
        return -2;
    for (int p = from; p < r->n; p++)
        r->pieces[p].weight *= multiplier;
    return 0;
}

static int is_break_at(const uint32_t *t, size_t n, size_t k)
{
    static const char word[] = "BREAK";
    if (k + 5 > n)
        return 0;
    for (int i = 0; i < 5; i++)
        if (t[k + (size_t)i] != (uint32_t)word[i])
            return 0;
    return (k == 0 || !te_is_python_word(t[k - 1])) && (k + 5 == n || !te_is_python_word(t[k + 5]));
}

/* re.split(r"\s*\bBREAK\b\s*", text): parts with ("BREAK", -1) between. */
static int add_text(parse_state *st, const uint32_t *t, size_t n)
{
    size_t part = 0; /* start of the current part */
    for (size_t k = 0; k < n; k++) {
        if (!is_break_at(t, n, k))
            continue;
        size_t b = k, e = k + 5;
        while (b > part && te_is_python_space(t[b - 1]))
            b--;
        while (e < n && te_is_python_space(t[e]))
            e++;
        static const uint32_t marker[] = {'B', 'R', 'E', 'A', 'K'};
        if (add_piece(st, t + part, b - part, 1.0) || add_piece(st, marker, 5, -1))
            return -1;
        part = e;
        k = e - 1;
    }
    return add_piece(st, t + part, n - part, 1.0);
}

/* The value of a Unicode decimal digit: Nd code points come in aligned runs
 * of ten, 0 to 9. */
static int digit_value(uint32_t c)
{
    uint32_t z = c;
    while (z > 0 && utf8proc_category((utf8proc_int32_t)(z - 1)) == UTF8PROC_CATEGORY_ND)
        z--;
    return (int)((c - z) % 10);
}

static int is_digit(uint32_t c)
{
    return utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ND;
}

/* `:\s*([+-]?[.\d]+)\s*\)` at t[i] == ':'. Returns the match length (0: none)
 * and the number's extent. */
static size_t match_weight(const uint32_t *t, size_t n, size_t i, size_t *num_b, size_t *num_e)
{
    size_t k = i + 1;
    while (k < n && te_is_python_space(t[k]))
        k++;
    *num_b = k;
    if (k < n && (t[k] == '+' || t[k] == '-'))
        k++;
    size_t digits = k;
    while (k < n && (t[k] == '.' || is_digit(t[k])))
        k++;
    if (k == digits)
        return 0;
    *num_e = k;
    while (k < n && te_is_python_space(t[k]))
        k++;
    if (k >= n || t[k] != ')')
        return 0;
    return k + 1 - i;
}

/* Python float() of the matched number (Unicode digits allowed). */
static int parse_weight(const uint32_t *t, size_t b, size_t e, double *w)
{
    char buf[64];
    if (e - b >= sizeof buf)
        return -1;
    size_t n = 0;
    for (size_t k = b; k < e; k++)
        buf[n++] = t[k] < 0x80 ? (char)t[k] : (char)('0' + digit_value(t[k]));
    buf[n] = 0;
    char *end;
    *w = strtod(buf, &end);
    return end == buf + n ? 0 : -1;
}

static int is_special(uint32_t c)
{
    return c == '\\' || c == '(' || c == ')' || c == '[' || c == ']' || c == ':';
}

typedef struct {
    int *v;
    int n, cap;
} int_stack;

static int stack_push(int_stack *s, int x)
{
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        int *v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

/* Length of the plain-text token at t[i]: the unmatched weight close, a lone
 * ':', ')' or ']', or a run up to the next special character. */
static size_t plain_text_length(const uint32_t *t, size_t n, size_t i, size_t weight_len)
{
    if (weight_len)
        return weight_len;
    if (t[i] == ':' || t[i] == ')' || t[i] == ']')
        return 1;
    size_t len = 0;
    while (i + len < n && !is_special(t[i + len]))
        len++;
    return len;
}

static int parse(const uint32_t *t, size_t n, parse_state *st, int_stack *round, int_stack *square,
                 fm_error *err)
{
    te_prompt_attention *res = st->res;
    size_t i = 0;
    while (i < n) {
        uint32_t c = t[i];
        size_t nb = 0, ne = 0, len = 1;
        size_t weight_len = c == ':' ? match_weight(t, n, i, &nb, &ne) : 0;
        int r = 0;
        if (c == '\\') {
            int escaped = i + 1 < n && (t[i + 1] == '(' || t[i + 1] == ')' || t[i + 1] == '[' ||
                                        t[i + 1] == ']' || t[i + 1] == '\\');
            r = add_piece(st, t + i + 1, (size_t)escaped, 1.0);
            len += (size_t)escaped;
        } else if (c == '(') {
            r = stack_push(round, res->n);
        } else if (c == '[') {
            r = stack_push(square, res->n);
        } else if (weight_len && round->n) {
            double w;
            if (parse_weight(t, nb, ne, &w))
                return core_fail(err, FM_EINPUT, "prompt: bad weight in (...:w)");
            r = multiply_range(st, round->v[--round->n], w);
            len = weight_len;
        } else if (c == ')' && round->n) {
            r = multiply_range(st, round->v[--round->n], ROUND_MULTIPLIER);
        } else if (c == ']' && square->n) {
            r = multiply_range(st, square->v[--square->n], SQUARE_MULTIPLIER);
        } else {
            len = plain_text_length(t, n, i, weight_len);
            r = add_text(st, t + i, len);
        }
        if (r)
            return core_fail(err, FM_EINPUT, "prompt: %s",
                           r == -2 ? "too many nested or unclosed brackets" : "out of memory");
        i += len;
    }
    for (int k = 0; k < round->n; k++)
        if (multiply_range(st, round->v[k], ROUND_MULTIPLIER))
            return core_fail(err, FM_EINPUT, "prompt: too many nested or unclosed brackets");
    for (int k = 0; k < square->n; k++)
        if (multiply_range(st, square->v[k], SQUARE_MULTIPLIER))
            return core_fail(err, FM_EINPUT, "prompt: too many nested or unclosed brackets");
    return 0;
}

/* Joins neighbours of exactly equal weight, left to right. */
static int merge_equal_weights(te_prompt_attention *r)
{
    int out = 0;
    for (int i = 0; i < r->n; i++) {
        if (out > 0 && r->pieces[out - 1].weight == r->pieces[i].weight) {
            te_prompt_piece *a = &r->pieces[out - 1];
            size_t la = strlen(a->text), lb = strlen(r->pieces[i].text);
            char *s = realloc(a->text, la + lb + 1);
            if (!s)
                return -1;
            memcpy(s + la, r->pieces[i].text, lb + 1);
            a->text = s;
            free(r->pieces[i].text);
        } else {
            r->pieces[out++] = r->pieces[i];
        }
    }
    r->n = out;
    return 0;
}

int te_parse_prompt_attention(const char *prompt, te_prompt_attention *out, fm_error *err)
{
    *out = (te_prompt_attention){0};
    te_cps t = {0};
    parse_state st = {out, 0, 0};
    int_stack round = {0}, square = {0};
    int rc;
    if (te_utf8_to_cps(prompt ? prompt : "", prompt ? strlen(prompt) : 0, &t)) {
        rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
        goto done;
    }
    rc = parse(t.v, t.n, &st, &round, &square, err);
    if (!rc && out->n == 0 && add_piece(&st, NULL, 0, 1.0))
        rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
    if (!rc && merge_equal_weights(out))
        rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
done:
    te_cps_free(&t);
    free(round.v);
    free(square.v);
    if (rc)
        te_prompt_attention_free(out);
    return rc;
}

void te_prompt_attention_free(te_prompt_attention *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->n; i++)
        free(a->pieces[i].text);
    free(a->pieces);
    a->pieces = NULL;
    a->n = 0;
}
