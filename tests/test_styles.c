/* --styles-file / --style (cli/styles.c) against tests/data/styles_ref.tsv:
 * A1111's modules/styles.py run on tests/data/styles.csv
 * (tools/ref/styles.py). Every case must match byte for byte. */
#include "cliutil.h"

#include <cjson/cJSON.h>

#include "../cli/styles.c"

static void test_a1111_styles(void **state)
{
    (void)state;
    sty_db db;
    char why[200];
    assert_int_equal(sty_load("tests/data/styles.csv", &db, why, sizeof why), 0);
    assert_int_equal(db.n, 12);
    char *text = (char *)cu_slurp("tests/data/styles_ref.tsv", NULL);
    assert_non_null(text);
    int cases = 0, bad = 0;
    for (char *line = strchr(text, '\n') + 1; *line;) {
        char *end = strchr(line, '\n');
        *end = 0;
        cJSON *f[4];
        char *s = line;
        for (int k = 0; k < 4; k++) {
            char *tab = k < 3 ? strchr(s, '\t') : NULL;
            if (tab) *tab = 0;
            f[k] = cJSON_Parse(s);
            assert_non_null(f[k]);
            s = tab ? tab + 1 : s;
        }
        const sty_style *st[8];
        int n = cJSON_GetArraySize(f[0]);
        for (int k = 0; k < n; k++) {
            st[k] = sty_find(&db, cJSON_GetArrayItem(f[0], k)->valuestring);
            assert_non_null(st[k]);
        }
        char *p = sty_apply(st, n, f[1]->valuestring, 0), *ng = sty_apply(st, n, f[2]->valuestring, 1);
        if (strcmp(p, cJSON_GetArrayItem(f[3], 0)->valuestring) || strcmp(ng, cJSON_GetArrayItem(f[3], 1)->valuestring)) {
            bad++;
            fprintf(stderr, "styles_ref.tsv case %d: got \"%s\" / \"%s\"\n", cases + 1, p, ng);
        }
        free(p);
        free(ng);
        for (int k = 0; k < 4; k++) cJSON_Delete(f[k]);
        cases++;
        line = end + 1;
    }
    fprintf(stderr, "styles_ref.tsv: %d of %d cases match A1111\n", cases - bad, cases);
    assert_int_equal(bad, 0);
    assert_true(cases >= 80);
    /* A1111 reads a missing column as None and fails; fmimage takes "" */
    assert_string_equal(sty_find(&db, "short")->negative, "");
    sty_free(&db);
    free(text);
}

static void test_bad_files(void **state)
{
    (void)state;
    sty_db db;
    char why[200], path[300];
    assert_int_equal(sty_load("/nonexistent/styles.csv", &db, why, sizeof why), -1);
    snprintf(path, sizeof path, "%s/nohdr.csv", tu_dir);
    FILE *f = fopen(path, "w");
    fputs("a,b\n1,2\n", f);
    fclose(f);
    assert_int_equal(sty_load(path, &db, why, sizeof why), -1);
    assert_non_null(strstr(why, "header"));
    snprintf(path, sizeof path, "%s/old.csv", tu_dir);
    f = fopen(path, "w");
    fputs("name,text\n#skipped,x\nold,\"unclosed\n", f);
    fclose(f);
    assert_int_equal(sty_load(path, &db, why, sizeof why), 0);
    assert_int_equal(db.n, 1);
    assert_string_equal(db.s[0].prompt, "unclosed\n");
    sty_free(&db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a1111_styles),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
