/* CLIP tokenizer and A1111 prompt weighting against the goldens made with
 * openai/CLIP + ftfy 6.3.1 and A1111's prompt_parser.py
 * (tests/data/tokenizer.tsv, tokenizer_sd2.tsv, prompt_attention.tsv; see
 * ../shared/golden/TOKENIZER.md). */
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <time.h>

#include "textenc/prompt.h"
#include "textenc/tokenizer.h"

static fm_tokenizer *g_tok;

static int setup(void **state)
{
    (void)state;
    fm_error err = {0};
    g_tok = fm_tokenizer_new(&err);
    if (!g_tok)
        fprintf(stderr, "fm_tokenizer_new: %s\n", err.msg);
    return g_tok ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    fm_tokenizer_free(g_tok);
    return 0;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static size_t put_utf8(unsigned c, char *d)
{
    if (c < 0x80)
        return d[0] = (char)c, 1;
    if (c < 0x800)
        return d[0] = (char)(0xC0 | c >> 6), d[1] = (char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000)
        return d[0] = (char)(0xE0 | c >> 12), d[1] = (char)(0x80 | (c >> 6 & 0x3F)),
               d[2] = (char)(0x80 | (c & 0x3F)), 3;
    return d[0] = (char)(0xF0 | c >> 18), d[1] = (char)(0x80 | (c >> 12 & 0x3F)),
           d[2] = (char)(0x80 | (c >> 6 & 0x3F)), d[3] = (char)(0x80 | (c & 0x3F)), 4;
}

/* Decodes the JSON string literal at *p (which may contain \u0000, so cJSON's
 * C strings will not do) into out; returns its byte length, advances *p. */
static size_t json_string(const char **p, char *out)
{
    const char *s = *p;
    assert_int_equal(*s, '"');
    s++;
    size_t n = 0;
    while (*s != '"') {
        assert_true(*s != 0);
        if (*s != '\\') {
            out[n++] = *s++;
            continue;
        }
        s++;
        char e = *s++;
        switch (e) {
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'r': out[n++] = '\r'; break;
        case 'f': out[n++] = '\f'; break;
        case 'b': out[n++] = '\b'; break;
        case 'u': {
            unsigned c = (unsigned)strtoul((char[5]){s[0], s[1], s[2], s[3], 0}, NULL, 16);
            s += 4;
            if (c >= 0xD800 && c <= 0xDBFF) {
                assert_true(s[0] == '\\' && s[1] == 'u');
                unsigned lo = (unsigned)strtoul((char[5]){s[2], s[3], s[4], s[5], 0}, NULL, 16);
                s += 6;
                c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
            }
            n += put_utf8(c, out + n);
            break;
        }
        default: out[n++] = e; break; /* \" \\ \/ */
        }
    }
    *p = s + 1;
    out[n] = 0;
    return n;
}

/* Runs every line of a tokenizer golden file; returns the number of lines. */
static int check_tokenizer_file(const char *path, int pad)
{
    char *text = read_text(path);
    char *buf = malloc(strlen(text) + 1);
    int lines = 0, bad = 0;
    char *line = strchr(text, '\n') + 1; /* skip the header */
    while (*line) {
        char *end = strchr(line, '\n');
        *end = 0;
        const char *p = line;
        size_t len = json_string(&p, buf);
        assert_int_equal(*p, '\t');
        p++;
        int32_t want[FM_CLIP_LEN];
        for (int i = 0; i < FM_CLIP_LEN; i++) {
            char *e;
            want[i] = (int32_t)strtol(p, &e, 10);
            assert_true(e != p);
            p = *e == ',' ? e + 1 : e;
        }
        /* the public C-string path, and the length path for "\u0000" */
        fm_error err = {0};
        int32_t got[FM_CLIP_LEN], enc[FM_CLIP_LEN];
        int n;
        if (strlen(buf) == len) {
            assert_true(fm_tokenize_77(g_tok, buf, pad, got, &err) >= 0);
        }
        n = fm_tokenizer_encode_n(g_tok, buf, len, enc, FM_CLIP_LEN - 2, &err);
        assert_true(n >= 0);
        if (n > FM_CLIP_LEN - 2)
            n = FM_CLIP_LEN - 2;
        if (strlen(buf) != len) {
            got[0] = FM_CLIP_BOS;
            memcpy(got + 1, enc, (size_t)n * sizeof *enc);
            got[n + 1] = FM_CLIP_EOS;
            for (int i = n + 2; i < FM_CLIP_LEN; i++)
                got[i] = pad;
        }
        if (memcmp(got, want, sizeof got)) {
            bad++;
            fprintf(stderr, "%s line %d %s\n  got ", path, lines + 2, line);
            for (int i = 0; i < 12; i++)
                fprintf(stderr, "%d,", got[i]);
            fprintf(stderr, "\n want ");
            for (int i = 0; i < 12; i++)
                fprintf(stderr, "%d,", want[i]);
            fprintf(stderr, "\n");
        }
        lines++;
        line = end + 1;
    }
    printf("%s: %d/%d lines match\n", path, lines - bad, lines);
    free(buf);
    free(text);
    assert_int_equal(bad, 0);
    return lines;
}

static void test_tokenizer_sd1(void **state)
{
    (void)state;
    assert_int_equal(check_tokenizer_file("tests/data/tokenizer.tsv", FM_CLIP_PAD_SD1), 359);
}

static void test_tokenizer_sd2(void **state)
{
    (void)state;
    assert_int_equal(check_tokenizer_file("tests/data/tokenizer_sd2.tsv", FM_CLIP_PAD_OPENCLIP),
                     359);
}

/* TOKENIZER.md §4.3 examples */
static void test_encode_examples(void **state)
{
    (void)state;
    fm_error err = {0};
    int32_t ids[16];
    assert_int_equal(fm_tokenizer_encode(g_tok, "a photo", ids, 16, &err), 2);
    assert_int_equal(ids[0], 320);
    assert_int_equal(ids[1], 1125);
    assert_int_equal(fm_tokenizer_encode(g_tok, "xxxxxxxxxx", ids, 16, &err), 3);
    assert_int_equal(ids[0], 32035);
    assert_int_equal(ids[1], 5675);
    assert_int_equal(ids[2], 22819);
    /* more tokens than room: the count is still the total */
    assert_int_equal(fm_tokenizer_encode(g_tok, "1024x768", ids, 2, &err), 8);
    assert_int_equal(ids[0], 272);
    assert_int_equal(ids[1], 271);
    assert_int_equal(fm_tokenizer_encode(g_tok, "", ids, 16, &err), 0);
    assert_int_equal(fm_tokenizer_encode(g_tok, " \t\n", ids, 16, &err), 0);
}

/* Ill-formed UTF-8 becomes U+FFFD per bad byte (ids of "\xef\xbf\xbd"). */
static void test_invalid_utf8(void **state)
{
    (void)state;
    fm_error err = {0};
    int32_t ref[32], got[32];
    int nr = fm_tokenizer_encode(g_tok, "a \xef\xbf\xbd b", ref, 32, &err);
    assert_true(nr > 2);
    static const char *bad[] = {"a \xff b", "a \xc3 b", "a \xed\xa0\x80 b", "a \xc0\xaf b",
                                "a \xf4\x90\x80\x80 b", "a \xe2\x82 b"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        int n = fm_tokenizer_encode(g_tok, bad[k], got, 32, &err);
        assert_true(n >= nr); /* one or more U+FFFD between a and b */
        assert_int_equal(got[0], ref[0]);
        assert_int_equal(got[n - 1], ref[nr - 1]);
    }
    /* a truncated sequence at the very end */
    assert_true(fm_tokenizer_encode(g_tok, "abc\xe2\x82", got, 32, &err) >= 1);
    assert_true(fm_tokenizer_encode(g_tok, "\x80\x80\x80", got, 32, &err) >= 1);
}

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* A 1 MB prompt of mixed text, and a 1 MB single "word": no crash, linear-ish. */
static void test_megabyte_prompt(void **state)
{
    (void)state;
    const size_t mb = 1 << 20;
    char *s = malloc(mb + 1);
    static const char piece[] = "a (red:1.2) fox, caf\xc3\xa9 &amp; \xe7\x8c\xab BREAK \xff ";
    for (size_t i = 0; i < mb; i++)
        s[i] = piece[i % (sizeof piece - 1)];
    s[mb] = 0;
    fm_error err = {0};
    int32_t ids[FM_CLIP_LEN];
    double t0 = seconds();
    int n = fm_tokenizer_encode(g_tok, s, ids, FM_CLIP_LEN, &err);
    double t1 = seconds();
    assert_true(n > 100000);
    memset(s, 'x', mb);
    int m = fm_tokenizer_encode(g_tok, s, ids, FM_CLIP_LEN, &err);
    double t2 = seconds();
    assert_true(m > 1000);
    printf("1 MB mixed prompt: %d tokens in %.2f s; 1 MB one-word prompt: %d tokens in %.2f s\n",
           n, t1 - t0, m, t2 - t1);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_sd1),
        cmocka_unit_test(test_tokenizer_sd2),
        cmocka_unit_test(test_encode_examples),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_megabyte_prompt),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
