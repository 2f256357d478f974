/* The fmimage command line with Dynamic Prompts templates: --combinatorial
 * makes one job per expansion in dynamicprompts' order (the list
 * tests/data/wildcards.tsv holds for the template, from
 * tools/ref/wildcards_ref.py), resumable; random mode puts the drawn text in
 * the infotext, and that text with the image's seed makes the same image;
 * bad templates fail their own job with one line (exit 1). */
#include "testutil.h"
#include "cliutil.h"

#include <cjson/cJSON.h>

#define MODEL "tests/data/tiny-sd1.safetensors"
#define WCDIR "tests/data/wildcards"

/* The expansions the reference lists for template t (a cJSON array). */
static cJSON *reference(const char *t)
{
    char *text = (char *)cu_slurp("tests/data/wildcards.tsv", NULL);
    assert_non_null(text);
    cJSON *found = NULL;
    for (char *line = text; *line && !found;) {
        char *end = strchr(line, '\n'), *tab = strchr(line, '\t');
        *end = *tab = 0;
        cJSON *k = cJSON_Parse(line);
        if (k && !strcmp(k->valuestring, t)) found = cJSON_Parse(tab + 1);
        cJSON_Delete(k);
        line = end + 1;
    }
    free(text);
    assert_non_null(found);
    return found;
}

static char *manifest_field(const char *manifest, int n, const char *key)
{
    const char *line = manifest;
    for (int i = 0; i < n; i++) line = strchr(line, '\n') + 1;
    const char *end = strchr(line, '\n');
    char *copy = strndup(line, (size_t)(end - line));
    cJSON *j = cJSON_Parse(copy);
    free(copy);
    cJSON *v = cJSON_GetObjectItem(j, key);
    char *s = v && cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
    cJSON_Delete(j);
    return s;
}

static void test_combinatorial(void **state)
{
    (void)state;
    char dir[300], out[400], err[4096], cmd[800];
    cu_tempdir(dir, sizeof dir, "wildcards");
    snprintf(out, sizeof out, "%s/out", dir);
    const char *t = "__colors__ {a|b}";
    cJSON *want = reference(t);
    int n = cJSON_GetArraySize(want);
    assert_int_equal(n, 8);
    const char *args[] = {"-m", MODEL, t, "--combinatorial", "--wildcards-dir", WCDIR, "-W", "32", "-H", "32",
                          "--steps", "2", "--seed", "10", "-q", "-o", out, NULL};
    assert_int_equal(cu_run(args, err, sizeof err), 0);
    char *m = cu_manifests(out, NULL);
    assert_non_null(m);
    for (int i = 0; i < n; i++) {
        char *p = manifest_field(m, i, "prompt"), *file = manifest_field(m, i, "file"), name[64];
        assert_string_equal(p, cJSON_GetArrayItem(want, i)->valuestring);
        snprintf(name, sizeof name, "%05d-%d.png", i, 10 + i);
        assert_string_equal(file, name);
        free(p);
        free(file);
    }
    free(m);
    /* the same run again: every image finished, nothing made */
    const char *again[] = {"-m", MODEL, t, "--combinatorial", "--wildcards-dir", WCDIR, "-W", "32", "-H", "32",
                           "--steps", "2", "--seed", "10", "-o", out, NULL};
    assert_int_equal(cu_run(again, err, sizeof err), 0);
    assert_non_null(strstr(err, "fmimage: skipped 8 finished images"));
    cJSON_Delete(want);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_random_reproducible(void **state)
{
    (void)state;
    char dir[300], out[400], one[400], png[500], err[4096], cmd[800];
    cu_tempdir(dir, sizeof dir, "wildcards2");
    snprintf(out, sizeof out, "%s/out", dir);
    const char *t = "a photo of a __animals__, {day|night}, {1-2$$ and $$__colors/warm__|__colors/cool__}";
    cJSON *want = reference(t);
    const char *args[] = {"-m", MODEL, t, "--wildcards-dir", WCDIR, "--batch-count", "4", "-W", "32", "-H", "32",
                          "--steps", "2", "--seed", "100", "-q", "-o", out, NULL};
    assert_int_equal(cu_run(args, err, sizeof err), 0);
    for (int i = 0; i < 4; i++) {
        snprintf(png, sizeof png, "%s/%05d-%d.png", out, i, 100 + i);
        char *params = cu_png_parameters(png);
        assert_non_null(params);
        char *nl = strchr(params, '\n');
        *nl = 0;
        int listed = 0;
        for (int k = 0; k < cJSON_GetArraySize(want); k++)
            listed |= !strcmp(params, cJSON_GetArrayItem(want, k)->valuestring);
        if (!listed) fail_msg("image %d: \"%s\" is not an expansion of the template", i, params);
        /* the PNG's own prompt and seed make the same image */
        char seed[16];
        snprintf(seed, sizeof seed, "%d", 100 + i);
        snprintf(one, sizeof one, "%s/again-%d.png", dir, i);
        const char *a1[] = {"-m", MODEL, params, "-W", "32", "-H", "32", "--steps", "2", "--seed", seed, "-q", "-o", one, NULL};
        assert_int_equal(cu_run(a1, err, sizeof err), 0);
        size_t la = 0, lb = 1;
        uint8_t *x = cu_slurp(png, &la), *y = cu_slurp(one, &lb);
        assert_true(la == lb && !memcmp(x, y, la));
        free(x);
        free(y);
        free(params);
    }
    /* the same seeds draw the same prompts: a rerun skips all four */
    const char *again[] = {"-m", MODEL, t, "--wildcards-dir", WCDIR, "--batch-count", "4", "-W", "32", "-H", "32",
                           "--steps", "2", "--seed", "100", "-o", out, NULL};
    assert_int_equal(cu_run(again, err, sizeof err), 0);
    assert_non_null(strstr(err, "fmimage: skipped 4 finished images"));
    cJSON_Delete(want);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_hostile(void **state)
{
    (void)state;
    char dir[300], pf[400], out[400], err[8192], cmd[800];
    cu_tempdir(dir, sizeof dir, "wildcards3");
    snprintf(pf, sizeof pf, "%s/prompts.txt", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    FILE *f = fopen(pf, "w");
    assert_non_null(f);
    fputs("a {red|green} fox\n", f);
    fputs("a {red|green fox\n", f);
    fputs("__self__\n", f);
    fputs("__nope__ fox\n", f);
    for (int i = 0; i < 10000; i++) fputc('{', f);
    for (int i = 0; i < 10000; i++) fputc('}', f);
    fputc('\n', f);
    for (int i = 0; i < 20; i++) fputs("{a|b|c}", f);
    fputs("\n", f);
    fclose(f);
    for (int comb = 0; comb < 2; comb++) {
        const char *args[] = {"-m", MODEL, "--prompt-file", pf, "--wildcards-dir", WCDIR, "-W", "32", "-H", "32",
                              "--steps", "2", "--seed", "1", "-q", "-o", out, comb ? "--combinatorial" : NULL, NULL};
        assert_int_equal(cu_run(args, err, sizeof err), 1);
        assert_int_equal(count(err, "fmimage: "), comb ? 5 : 4);
        assert_int_equal(count(err, "\n"), comb ? 5 : 4);
        assert_non_null(strstr(err, ":2: prompt: '{' without a matching '}' at character 3"));
        assert_non_null(strstr(err, ":3: __self__: the wildcard includes itself (__self__ -> __self__)"));
        assert_non_null(strstr(err, ":4: __nope__: "));
        assert_non_null(strstr(err, ":5: prompt: '{' nested more than 100 deep"));
        if (comb) assert_non_null(strstr(err, ":6: more than 10000 prompts (the --combinatorial limit)"));
        /* line 1's images made (2 with --combinatorial), and line 6's draw without */
        snprintf(cmd, sizeof cmd, "test $(ls '%s'/*.png | wc -l) -eq %d", out, comb ? 2 : 2);
        assert_int_equal(system(cmd), 0);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
        assert_int_equal(system(cmd), 0);
    }
    /* the command line's own template: exit 1 before the model loads, no file */
    snprintf(out, sizeof out, "%s/x.png", dir);
    const char *a1[] = {"-m", MODEL, "x __loop_a__", "--wildcards-dir", WCDIR, "-q", "-o", out, NULL};
    assert_int_equal(cu_run(a1, err, sizeof err), 1);
    assert_string_equal(err, "fmimage: __loop_a__: the wildcard includes itself (__loop_a__ -> __loop_b__ -> __loop_a__)\n");
    assert_false(cu_exists(out));
    const char *a3[] = {"-m", MODEL, "a ${kind} fox", "--wildcards-dir", WCDIR, "-q", "-o", out, NULL};
    assert_int_equal(cu_run(a3, err, sizeof err), 1);
    assert_string_equal(err, "fmimage: ${kind}: the variable is not set\n");
    assert_false(cu_exists(out));
    const char *a4[] = {"-m", MODEL, "${a=${a}} ${a}", "-q", "-o", out, NULL};
    assert_int_equal(cu_run(a4, err, sizeof err), 1);
    assert_string_equal(err, "fmimage: ${a}: the variable's value uses itself\n");
    assert_false(cu_exists(out));
    const char *a2[] = {"-m", MODEL, "__colors__", "-q", "-o", out, NULL};
    assert_int_equal(cu_run(a2, err, sizeof err), 1);
    assert_string_equal(err, "fmimage: __colors__: no --wildcards-dir given\n");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_combinatorial),
        cmocka_unit_test(test_random_reproducible),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
