/* The fmimage command line with prompt schedules, AND and styles: the
 * hostile prompts of issue 19 refuse their own job with one line (exit 1),
 * the other jobs are made; the infotext holds the prompt as written (with
 * its schedules), or the styled prompt with --style. */
#include "testutil.h"
#include "cliutil.h"

#define MODEL "tests/data/tiny-sd1.safetensors"

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_hostile_prompt_file(void **state)
{
    (void)state;
    char dir[300], pf[400], out[400], err[8192];
    cu_tempdir(dir, sizeof dir, "psched");
    snprintf(pf, sizeof pf, "%s/prompts.txt", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    FILE *f = fopen(pf, "w");
    assert_non_null(f);
    fputs("a [red:blue:2] fox AND a [cat|dog] :0.5\n", f);
    fputs("[a:b:1e309]\n", f);
    for (int i = 0; i < 10000; i++) fputc('[', f);
    fputc('a', f);
    for (int i = 0; i < 10000; i++) fputc(']', f);
    fputc('\n', f);
    for (int i = 0; i < 1000; i++) fputs("a AND ", f);
    fputs("b\n", f);
    fputs("a [unbalanced ((b] c:d:3] | x\n", f);
    fclose(f);
    const char *args[] = {"-m", MODEL, "--prompt-file", pf, "-W", "32", "-H", "32", "--steps", "2", "-q", "-o", out, NULL};
    int code = cu_run(args, err, sizeof err);
    assert_int_equal(code, 1);
    assert_int_equal(count_lines(err, "fmimage: "), 3);
    assert_non_null(strstr(err, ":2: prompt: a [from:to:when] step is not a finite number"));
    assert_non_null(strstr(err, ":3: prompt: brackets nested more than 256 deep"));
    assert_non_null(strstr(err, ":4: prompt: more than 64 AND parts"));
    /* jobs 1 and 5 made; an unbalanced prompt is A1111's literal text */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls '%s'/*.png | wc -l) -eq 2", out);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_infotext_and_styles(void **state)
{
    (void)state;
    char dir[300], csv[400], a[400], b[400], err[4096];
    cu_tempdir(dir, sizeof dir, "psched2");
    snprintf(csv, sizeof csv, "%s/styles.csv", dir);
    snprintf(a, sizeof a, "%s/a.png", dir);
    snprintf(b, sizeof b, "%s/b.png", dir);
    FILE *f = fopen(csv, "w");
    fputs("name,prompt,negative_prompt\nphoto,\"a photo of {prompt}\",blurry\nart,oil painting,ugly\n", f);
    fclose(f);
    const char *p = "a [red:blue:0.5] fox AND [cat|dog] :0.7";
    const char *args[] = {"-m", MODEL, p, "-W", "32", "-H", "32", "--steps", "3", "--seed", "1", "-q", "-o", a, NULL};
    assert_int_equal(cu_run(args, err, sizeof err), 0);
    size_t tlen = 0;
    char *t = (char *)cu_slurp(a, &tlen);
    assert_non_null(t);
    assert_non_null(memmem(t, tlen, p, strlen(p))); /* the prompt as written */
    free(t);
    const char *args2[] = {"-m", MODEL, "fox", "-n", "dark", "--styles-file", csv, "--style", "photo", "--style", "art",
                           "-W", "32", "-H", "32", "--steps", "2", "-q", "-o", b, NULL};
    assert_int_equal(cu_run(args2, err, sizeof err), 0);
    t = (char *)cu_slurp(b, &tlen);
    assert_non_null(t);
    const char *want = "a photo of fox, oil painting\nNegative prompt: dark, blurry, ugly\n";
    assert_non_null(memmem(t, tlen, want, strlen(want)));
    free(t);
    const char *args3[] = {"-m", MODEL, "fox", "--styles-file", csv, "--style", "nope", "-q", "-o", b, "--force", NULL};
    assert_int_equal(cu_run(args3, err, sizeof err), 2);
    assert_non_null(strstr(err, "fmimage: --style: nope: no such style in"));
    const char *args4[] = {"-m", MODEL, "fox", "--style", "photo", "-q", NULL};
    assert_int_equal(cu_run(args4, err, sizeof err), 2);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_prompt_file),
        cmocka_unit_test(test_infotext_and_styles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
