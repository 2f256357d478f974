/* Dynamic Prompts templates (cli/wildcards.c) against
 * tests/data/wildcards.tsv: dynamicprompts' CombinatorialPromptGenerator run
 * on the corpus with tests/data/wildcards/ (tools/ref/wildcards_ref.py).
 * --combinatorial must give the same prompts in the same order, and refuse
 * what it refuses (variables, wrap commands and their errors included);
 * random mode must be a function of the seed whose every choice is one of
 * those prompts. Hostile templates fail with one message. */
#include "cliutil.h"

#include <cjson/cJSON.h>

#include "../cli/wildcards.c"

#define WCDIR "tests/data/wildcards"

static int in_list(const wc_list *l, const char *s)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return 1;
    return 0;
}

static void test_corpus(void **state)
{
    (void)state;
    char *text = (char *)cu_slurp("tests/data/wildcards.tsv", NULL);
    assert_non_null(text);
    int cases = 0, bad = 0, refused = 0, prompts = 0, draws = 0;
    for (char *line = text; *line;) {
        char *end = strchr(line, '\n'), *tab = strchr(line, '\t');
        *end = 0;
        *tab = 0;
        cJSON *t = cJSON_Parse(line), *want = cJSON_Parse(tab + 1);
        assert_non_null(t);
        assert_non_null(want);
        wc_list got;
        char why[300] = "";
        int rc = wc_expand_all(t->valuestring, WCDIR, WC_MAX_PROMPTS, &got, why, sizeof why);
        int ok;
        if (cJSON_IsString(want)) {
            ok = rc != 0 && why[0] && !strchr(why, '\n');
            refused += ok;
        } else {
            ok = rc == 0 && got.n == cJSON_GetArraySize(want);
            for (int i = 0; ok && i < got.n; i++) ok = !strcmp(got.v[i], cJSON_GetArrayItem(want, i)->valuestring);
            prompts += ok ? got.n : 0;
            /* random mode: deterministic, and each draw a listed prompt. A
             * ${name=!value} is the value's first prompt in the list but a
             * random one in a draw: those draws are among the prompts with
             * the value evaluated at each use (=! read as =), one choice for
             * all uses being one of its combinations. setter.txt holds =!. */
            wc_list lazy = {0}, *allowed = &got;
            if (ok && strstr(t->valuestring, "=!")) {
                char *l = strdup(t->valuestring);
                for (char *q = l; (q = strstr(q, "=!")); q++) memmove(q + 1, q + 2, strlen(q + 2) + 1);
                if (wc_expand_all(l, WCDIR, WC_MAX_PROMPTS, &lazy, why, sizeof why)) allowed = NULL;
                else allowed = &lazy;
                free(l);
            }
            /* a =! value that uses a variable reads it where it is set */
            if (strstr(t->valuestring, "__setter__") || strstr(t->valuestring, "=!${") || strstr(t->valuestring, "=!!"))
                allowed = NULL; /* =!!x: the value is !x, no lazy reading */
            for (uint64_t seed = 0; ok && seed < 8; seed++) {
                char *a = wc_expand_random(t->valuestring, WCDIR, seed * 7919, why, sizeof why);
                char *b = wc_expand_random(t->valuestring, WCDIR, seed * 7919, why, sizeof why);
                ok = a && b && !strcmp(a, b) && (!allowed || allowed->n == 0 || in_list(allowed, a));
                if (!ok) fprintf(stderr, "  random draw %s for seed %llu\n", a ? a : why, (unsigned long long)seed);
                free(a);
                free(b);
                draws++;
            }
            wc_list_free(&lazy);
        }
        if (!ok) {
            bad++;
            fprintf(stderr, "wildcards.tsv case %d %s: rc %d (%s), %d prompts\n", cases + 1, line, rc, why,
                    rc ? 0 : got.n);
        }
        if (!rc) wc_list_free(&got);
        cJSON_Delete(t);
        cJSON_Delete(want);
        cases++;
        line = end + 1;
    }
    fprintf(stderr, "wildcards.tsv: %d of %d templates match dynamicprompts (%d refused alike, %d prompts, %d random draws)\n",
            cases - bad, cases, refused, prompts, draws);
    assert_int_equal(bad, 0);
    assert_true(cases >= 100);
    free(text);
}

/* The random choice spreads over the options and follows the weights. */
static void test_random_spread(void **state)
{
    (void)state;
    int count[3] = {0};
    char why[300];
    for (uint64_t seed = 0; seed < 3000; seed++) {
        char *s = wc_expand_random("{a|b|2::c}", NULL, seed, why, sizeof why);
        assert_non_null(s);
        count[s[0] - 'a']++;
        free(s);
    }
    /* expected 750 / 750 / 1500: within 5 sigma */
    assert_true(abs(count[0] - 750) < 120 && abs(count[1] - 750) < 120 && abs(count[2] - 1500) < 140);
    char *s = wc_expand_random("no template here", NULL, 1, why, sizeof why);
    assert_string_equal(s, "no template here");
    free(s);
}

static void expect_fail_in(const char *tmpl, const char *needle, int random_too)
{
    wc_list l;
    char why[300] = "";
    int rc = wc_expand_all(tmpl, WCDIR, WC_MAX_PROMPTS, &l, why, sizeof why);
    if (rc == 0) wc_list_free(&l);
    if (rc == 0 || !strstr(why, needle)) fail_msg("%.60s: rc %d, \"%s\" (wanted \"%s\")", tmpl, rc, why, needle);
    assert_null(strchr(why, '\n'));
    if (!random_too) return;
    char *s = wc_expand_random(tmpl, WCDIR, 5, why, sizeof why);
    if (s || !strstr(why, needle)) fail_msg("%.60s random: \"%s\"", tmpl, s ? s : why);
}

static void expect_fail(const char *tmpl, const char *needle) { expect_fail_in(tmpl, needle, 1); }

static void test_hostile(void **state)
{
    (void)state;
    expect_fail("a {b|c", "without a matching '}'");
    expect_fail("__self__", "includes itself");
    expect_fail("x __loop_a__", "includes itself");
    expect_fail("__nope__", "no such wildcard file");
    expect_fail("__../secret__", "a path inside --wildcards-dir");
    /* 10^4 nested braces: refused at depth 100, no recursion deeper */
    char *deep = malloc(20001 + 1);
    memset(deep, '{', 10000);
    memset(deep + 10000, '}', 10000);
    deep[20000] = 0;
    expect_fail(deep, "nested more than 100 deep");
    /* 2^40 combinations: the limit, said so */
    char big[400] = "";
    for (int i = 0; i < 40; i++) strcat(big, "{a|b}");
    expect_fail_in(big, "the --combinatorial limit", 0);
    expect_fail_in("{20$$a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q|r|s|t|u|v}", "--combinatorial limit", 0);
    char why[300];
    char *s = wc_expand_random(big, NULL, 3, why, sizeof why); /* one draw is cheap */
    assert_non_null(s);
    assert_int_equal(strlen(s), 40);
    free(s);
    free(deep);
    /* variables and wrap */
    expect_fail("a ${nope} b", "${nope}: the variable is not set");
    expect_fail("{x|${nope}}", "${nope}: the variable is not set"); /* every seed, not only those drawing it */
    expect_fail("${a=${a}} ${a}", "${a}: the variable's value uses itself");
    expect_fail("${a=${b}}${b={x|${a}}} ${a}", "the variable's value uses itself");
    expect_fail("${a=!${a}} ${a}", "${a}: the variable is not set");
    expect_fail("${a=x}", "${a=...} alone gives no prompt");
    expect_fail("{${a=x}|y}", "without '}'");
    expect_fail("%{a ... b$$x", "'%{' without '$$' and '}'");
    for (int k = 0; k < 2; k++) { /* 10^4 nested ${a:...} and %{...$$...} */
        const char *open = k ? "%{" : "${a:", *close = k ? "$$x}" : "}";
        char *d = malloc(10000 * (strlen(open) + strlen(close)) + 1), *q = d;
        for (int i = 0; i < 10000; i++) q = stpcpy(q, open);
        for (int i = 0; i < 10000; i++) q = stpcpy(q, close);
        expect_fail(d, "nested more than 100 deep");
        free(d);
    }
    /* 2^30 uses of c through a chain of variables: the limit, said so */
    char chain[2000] = "";
    for (int i = 0; i < 30; i++) sprintf(chain + strlen(chain), "${v%d=${v%d}${v%d}}", i, i + 1, i + 1);
    strcat(chain, "${v30=c} ${v0}");
    expect_fail(chain, "more than 100000 variable uses");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_random_spread),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
