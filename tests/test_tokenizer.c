/* CLIP tokenizer and A1111 prompt weighting against the goldens made with
 * openai/CLIP + ftfy 6.3.1 and A1111's prompt_parser.py
 * (tests/data/tokenizer.tsv, tokenizer_sd2.tsv, prompt_attention.tsv; see
 * tests/data/README.md#tokenizer). */
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <time.h>

#include "textenc/prompt.h"
#include "textenc/tokenizer.h"

static te_tokenizer *g_tok;

static int setup(void **state)
{
    (void)state;
    fm_error err = {0};
    g_tok = te_tokenizer_new(&err);
    if (!g_tok)
        fprintf(stderr, "te_tokenizer_new: %s\n", err.msg);
    return g_tok ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    te_tokenizer_free(g_tok);
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
            assert_true(te_tokenize_77(g_tok, buf, pad, got, &err) >= 0);
        }
        n = te_tokenizer_encode_n(g_tok, buf, len, enc, FM_CLIP_LEN - 2, &err);
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

/* tests/data/README.md#bpe examples */
static void test_encode_examples(void **state)
{
    (void)state;
    fm_error err = {0};
    int32_t ids[16];
    assert_int_equal(te_tokenizer_encode(g_tok, "a photo", ids, 16, &err), 2);
    assert_int_equal(ids[0], 320);
    assert_int_equal(ids[1], 1125);
    assert_int_equal(te_tokenizer_encode(g_tok, "xxxxxxxxxx", ids, 16, &err), 3);
    assert_int_equal(ids[0], 32035);
    assert_int_equal(ids[1], 5675);
    assert_int_equal(ids[2], 22819);
    /* more tokens than room: the count is still the total */
    assert_int_equal(te_tokenizer_encode(g_tok, "1024x768", ids, 2, &err), 8);
    assert_int_equal(ids[0], 272);
    assert_int_equal(ids[1], 271);
    assert_int_equal(te_tokenizer_encode(g_tok, "", ids, 16, &err), 0);
    assert_int_equal(te_tokenizer_encode(g_tok, " \t\n", ids, 16, &err), 0);
}

/* Ill-formed UTF-8 becomes U+FFFD per bad byte (ids of "\xef\xbf\xbd"). */
static void test_invalid_utf8(void **state)
{
    (void)state;
    fm_error err = {0};
    int32_t ref[32], got[32];
    int nr = te_tokenizer_encode(g_tok, "a \xef\xbf\xbd b", ref, 32, &err);
    assert_true(nr > 2);
    static const char *bad[] = {"a \xff b", "a \xc3 b", "a \xed\xa0\x80 b", "a \xc0\xaf b",
                                "a \xf4\x90\x80\x80 b", "a \xe2\x82 b"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        int n = te_tokenizer_encode(g_tok, bad[k], got, 32, &err);
        assert_true(n >= nr); /* one or more U+FFFD between a and b */
        assert_int_equal(got[0], ref[0]);
        assert_int_equal(got[n - 1], ref[nr - 1]);
    }
    /* one bad byte reads exactly as one U+FFFD */
    assert_int_equal(te_tokenizer_encode(g_tok, "a \xff b", got, 32, &err), nr);
    assert_memory_equal(got, ref, (size_t)nr * sizeof *ref);
    assert_int_equal(te_tokenizer_encode(g_tok, "a \xc3 b", got, 32, &err), nr);
    assert_memory_equal(got, ref, (size_t)nr * sizeof *ref);
    /* a truncated sequence at the very end */
    assert_true(te_tokenizer_encode(g_tok, "abc\xe2\x82", got, 32, &err) >= 1);
    assert_true(te_tokenizer_encode(g_tok, "\x80\x80\x80", got, 32, &err) >= 1);
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
    int n = te_tokenizer_encode(g_tok, s, ids, FM_CLIP_LEN, &err);
    double t1 = seconds();
    assert_true(n > 100000);
    memset(s, 'x', mb);
    int m = te_tokenizer_encode(g_tok, s, ids, FM_CLIP_LEN, &err);
    double t2 = seconds();
    assert_true(m > 1000);
    printf("1 MB mixed prompt: %d tokens in %.2f s; 1 MB one-word prompt: %d tokens in %.2f s\n",
           n, t1 - t0, m, t2 - t1);
    free(s);
}

/* ---- prompt weighting ---------------------------------------------------- */

static void test_prompt_attention_golden(void **state)
{
    (void)state;
    char *text = read_text("tests/data/prompt_attention.tsv");
    char *buf = malloc(strlen(text) + 1);
    int cases = 0, bad = 0;
    char *line = strchr(text, '\n') + 1;
    while (*line) {
        char *end = strchr(line, '\n');
        *end = 0;
        const char *p = line;
        json_string(&p, buf);
        assert_int_equal(*p, '\t');
        cJSON *want = cJSON_Parse(p + 1);
        assert_non_null(want);
        te_prompt_attention got;
        fm_error err = {0};
        assert_int_equal(te_parse_prompt_attention(buf, &got, &err), 0);
        int ok = got.n == cJSON_GetArraySize(want);
        for (int i = 0; ok && i < got.n; i++) {
            cJSON *pair = cJSON_GetArrayItem(want, i);
            const char *wt = cJSON_GetArrayItem(pair, 0)->valuestring;
            double ww = cJSON_GetArrayItem(pair, 1)->valuedouble;
            ok = !strcmp(got.pieces[i].text, wt) && got.pieces[i].weight == ww;
        }
        if (!ok) {
            bad++;
            fprintf(stderr, "prompt_attention.tsv line %d: %s\n  got ", cases + 2, line);
            for (int i = 0; i < got.n; i++)
                fprintf(stderr, "[\"%s\",%.17g] ", got.pieces[i].text, got.pieces[i].weight);
            fprintf(stderr, "\n");
        }
        te_prompt_attention_free(&got);
        cJSON_Delete(want);
        cases++;
        line = end + 1;
    }
    printf("prompt_attention.tsv: %d/%d cases match\n", cases - bad, cases);
    free(buf);
    free(text);
    assert_int_equal(bad, 0);
    assert_int_equal(cases, 102);
}

static void assert_chunk_is(const te_token_chunks *c, int k, const char *plain, int pad)
{
    int32_t want[FM_CLIP_LEN];
    fm_error err = {0};
    assert_true(te_tokenize_77(g_tok, plain, pad, want, &err) >= 0);
    assert_memory_equal(c->ids[k], want, sizeof want);
}

static void assert_weights_one(const te_token_chunks *c)
{
    for (int k = 0; k < c->n_chunks; k++)
        for (int i = 0; i < FM_CLIP_LEN; i++)
            assert_true(c->weights[k][i] == 1.0f);
}

static void test_chunks_plain(void **state)
{
    (void)state;
    te_token_chunks c;
    fm_error err = {0};
    const char *prompt = "a photograph of an astronaut riding a horse, highly detailed";
    assert_int_equal(te_prompt_to_chunks(g_tok, prompt, FM_CLIP_PAD_SD1, &c, &err), 0);
    assert_int_equal(c.n_chunks, 1);
    assert_chunk_is(&c, 0, prompt, FM_CLIP_PAD_SD1);
    assert_weights_one(&c);
    te_token_chunks_free(&c);
    assert_int_equal(te_prompt_to_chunks(g_tok, prompt, FM_CLIP_PAD_OPENCLIP, &c, &err), 0);
    assert_chunk_is(&c, 0, prompt, FM_CLIP_PAD_OPENCLIP);
    te_token_chunks_free(&c);
}

static void test_chunks_empty(void **state)
{
    (void)state;
    static const char *empties[] = {"", "BREAK", "   ", "()", "[]"};
    for (size_t k = 0; k < sizeof empties / sizeof *empties; k++) {
        te_token_chunks c;
        fm_error err = {0};
        assert_int_equal(te_prompt_to_chunks(g_tok, empties[k], FM_CLIP_PAD_OPENCLIP, &c, &err), 0);
        assert_int_equal(c.n_chunks, 1);
        assert_chunk_is(&c, 0, "", FM_CLIP_PAD_OPENCLIP); /* BOS, EOS, 0... */
        assert_int_equal(c.ids[0][1], FM_CLIP_EOS);
        assert_int_equal(c.ids[0][2], 0);
        assert_weights_one(&c);
        te_token_chunks_free(&c);
    }
}

static void test_chunks_break(void **state)
{
    (void)state;
    te_token_chunks c;
    fm_error err = {0};
    assert_int_equal(te_prompt_to_chunks(g_tok, "a red fox BREAK in the snow", FM_CLIP_PAD_SD1, &c,
                                         &err), 0);
    assert_int_equal(c.n_chunks, 2);
    assert_chunk_is(&c, 0, "a red fox", FM_CLIP_PAD_SD1);
    assert_chunk_is(&c, 1, "in the snow", FM_CLIP_PAD_SD1);
    assert_weights_one(&c);
    te_token_chunks_free(&c);
    /* BREAK inside brackets is the word "break" weighted -1.1, not a marker */
    assert_int_equal(te_prompt_to_chunks(g_tok, "(a BREAK b)", FM_CLIP_PAD_SD1, &c, &err), 0);
    assert_int_equal(c.n_chunks, 1);
    assert_chunk_is(&c, 0, "a break b", FM_CLIP_PAD_SD1);
    assert_true(c.weights[0][1] == (float)1.1);
    assert_true(c.weights[0][2] == (float)(-1 * 1.1));
    te_token_chunks_free(&c);
}

static void test_chunks_weights(void **state)
{
    (void)state;
    te_token_chunks c;
    fm_error err = {0};
    assert_int_equal(te_prompt_to_chunks(g_tok, "a ((cat:1.5)) [dog] \\(x\\)", FM_CLIP_PAD_SD1, &c,
                                         &err), 0);
    assert_int_equal(c.n_chunks, 1);
    assert_chunk_is(&c, 0, "a cat dog (x)", FM_CLIP_PAD_SD1);
    /* a | cat | dog | ( x ) */
    const float want[] = {1.0f, 1.0f, (float)(1.5 * 1.1), (float)(1 / 1.1), 1.0f,
                          1.0f, 1.0f, 1.0f, 1.0f};
    for (int i = 0; i < 9; i++)
        assert_true(c.weights[0][i] == want[i]);
    for (int i = 9; i < FM_CLIP_LEN; i++)
        assert_true(c.weights[0][i] == 1.0f);
    te_token_chunks_free(&c);
}

static char *repeat(const char *word, int times)
{
    size_t n = strlen(word);
    char *s = malloc(n * (size_t)times + 1);
    for (int i = 0; i < times; i++)
        memcpy(s + n * (size_t)i, word, n);
    s[n * (size_t)times] = 0;
    return s;
}

/* 100 tokens: 75 in the first chunk, 25 in the second (154 context tokens). */
static void test_chunks_long(void **state)
{
    (void)state;
    char *prompt = repeat("cat ", 100), *first = repeat("cat ", 75), *rest = repeat("cat ", 25);
    te_token_chunks c;
    fm_error err = {0};
    assert_int_equal(te_prompt_to_chunks(g_tok, prompt, FM_CLIP_PAD_SD1, &c, &err), 0);
    assert_int_equal(c.n_chunks, 2);
    assert_int_equal(c.n_chunks * FM_CLIP_LEN, 154);
    assert_chunk_is(&c, 0, first, FM_CLIP_PAD_SD1);
    assert_chunk_is(&c, 1, rest, FM_CLIP_PAD_SD1);
    assert_weights_one(&c);
    te_token_chunks_free(&c);
    /* the golden's longest line (100 tokens) also gives 2 chunks */
    free(prompt);
    free(first);
    free(rest);
}

/* A full chunk whose last comma is at most 20 tokens back moves the words
 * after the comma to the next chunk; further back, the chunk is cut at 75. */
static void test_chunks_comma_backtrack(void **state)
{
    (void)state;
    char *cats = repeat("cat ", 70), *dogs = repeat("dog ", 10);
    char prompt[1024];
    snprintf(prompt, sizeof prompt, "%s, %s", cats, dogs);
    char first[1024];
    snprintf(first, sizeof first, "%s,", cats);
    te_token_chunks c;
    fm_error err = {0};
    assert_int_equal(te_prompt_to_chunks(g_tok, prompt, FM_CLIP_PAD_SD1, &c, &err), 0);
    assert_int_equal(c.n_chunks, 2);
    assert_chunk_is(&c, 0, first, FM_CLIP_PAD_SD1);
    assert_chunk_is(&c, 1, dogs, FM_CLIP_PAD_SD1);
    te_token_chunks_free(&c);
    free(cats);
    /* comma 30 tokens back: plain cut at 75 */
    cats = repeat("cat ", 45);
    free(dogs);
    dogs = repeat("dog ", 40);
    snprintf(prompt, sizeof prompt, "%s, %s", cats, dogs);
    assert_int_equal(te_prompt_to_chunks(g_tok, prompt, FM_CLIP_PAD_SD1, &c, &err), 0);
    assert_int_equal(c.n_chunks, 2);
    char *d29 = repeat("dog ", 29), *d11 = repeat("dog ", 11);
    snprintf(first, sizeof first, "%s, %s", cats, d29);
    assert_chunk_is(&c, 0, first, FM_CLIP_PAD_SD1);
    assert_chunk_is(&c, 1, d11, FM_CLIP_PAD_SD1);
    te_token_chunks_free(&c);
    free(cats);
    free(dogs);
    free(d29);
    free(d11);
}

static void test_chunks_pad(void **state)
{
    (void)state;
    te_token_chunks c;
    fm_error err = {0};
    assert_int_equal(te_prompt_to_chunks(g_tok, "(a fox:1.3)", FM_CLIP_PAD_OPENCLIP, &c, &err), 0);
    assert_int_equal(te_token_chunks_pad(&c, 3, FM_CLIP_PAD_OPENCLIP), 0);
    assert_int_equal(c.n_chunks, 3);
    assert_chunk_is(&c, 0, "a fox", FM_CLIP_PAD_OPENCLIP);
    assert_true(c.weights[0][1] == 1.3f);
    for (int k = 1; k < 3; k++) {
        assert_chunk_is(&c, k, "", FM_CLIP_PAD_OPENCLIP);
        for (int i = 0; i < FM_CLIP_LEN; i++)
            assert_true(c.weights[k][i] == 1.0f);
    }
    assert_int_equal(te_token_chunks_pad(&c, 2, FM_CLIP_PAD_OPENCLIP), 0); /* never shrinks */
    assert_int_equal(c.n_chunks, 3);
    te_token_chunks_free(&c);
}

/* A1111 raises on float("1.2.3"); so do we, with an error value. */
static void test_prompt_bad_weight(void **state)
{
    (void)state;
    te_prompt_attention a;
    fm_error err = {0};
    assert_int_equal(te_parse_prompt_attention("(a:1.2.3)", &a, &err), FM_EINPUT);
    fm_error err2 = {0};
    assert_int_equal(te_parse_prompt_attention("a:1.2.3)", &a, &err2), 0); /* no '(': plain text */
    assert_int_equal(a.n, 1);
    assert_string_equal(a.pieces[0].text, "a:1.2.3)");
    te_prompt_attention_free(&a);
}

/* 1 MB of weighted prompt becomes thousands of chunks without trouble. */
static void test_chunks_megabyte(void **state)
{
    (void)state;
    char *prompt = repeat("a ((red:1.2)) fox, [snow] BREAK \xc3\xa9t\xc3\xa9 \\( ", 1 << 15);
    te_token_chunks c;
    fm_error err = {0};
    double t0 = seconds();
    assert_int_equal(te_prompt_to_chunks(g_tok, prompt, FM_CLIP_PAD_SD1, &c, &err), 0);
    printf("%zu-byte weighted prompt: %d chunks in %.2f s\n", strlen(prompt), c.n_chunks,
           seconds() - t0);
    assert_int_equal(c.n_chunks, (1 << 15) + 1);
    te_token_chunks_free(&c);
    free(prompt);
    /* unclosed brackets make A1111's rule quadratic: an error, quickly */
    prompt = repeat("(a", 1 << 17);
    fm_error err2 = {0};
    t0 = seconds();
    assert_int_equal(te_prompt_to_chunks(g_tok, prompt, FM_CLIP_PAD_SD1, &c, &err2), FM_EINPUT);
    assert_non_null(strstr(err2.msg, "brackets"));
    assert_true(seconds() - t0 < 5);
    free(prompt);
    /* a thousand of them is still A1111's answer */
    prompt = repeat("(a", 1000);
    assert_int_equal(te_prompt_to_chunks(g_tok, prompt, FM_CLIP_PAD_SD1, &c, &err), 0);
    assert_int_equal(c.n_chunks, 14); /* 1000 tokens "a" */
    te_token_chunks_free(&c);
    free(prompt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_sd1),
        cmocka_unit_test(test_tokenizer_sd2),
        cmocka_unit_test(test_encode_examples),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_megabyte_prompt),
        cmocka_unit_test(test_prompt_attention_golden),
        cmocka_unit_test(test_chunks_plain),
        cmocka_unit_test(test_chunks_empty),
        cmocka_unit_test(test_chunks_break),
        cmocka_unit_test(test_chunks_weights),
        cmocka_unit_test(test_chunks_long),
        cmocka_unit_test(test_chunks_comma_backtrack),
        cmocka_unit_test(test_chunks_pad),
        cmocka_unit_test(test_prompt_bad_weight),
        cmocka_unit_test(test_chunks_megabyte),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
