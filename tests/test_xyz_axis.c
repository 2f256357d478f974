/* X/Y/Z axis values (cli/xyz_axis.c) against tests/data/xyz_axes.tsv:
 * process_axis of A1111's scripts/xyz_grid.py run on the corpus
 * (tools/ref/xyz_ref.py). Values must be equal as doubles (ints exactly,
 * floats to the last bit: numpy's arange and linspace arithmetic), strings
 * byte for byte; what A1111 refuses (ValueError) fmimage refuses. */
#include "cliutil.h"

#include <cjson/cJSON.h>

#include "../cli/xyz_axis.c"

static void test_corpus(void **state)
{
    (void)state;
    char *text = (char *)cu_slurp("tests/data/xyz_axes.tsv", NULL);
    assert_non_null(text);
    int cases = 0, bad = 0, refused = 0, values = 0;
    for (char *line = text; *line;) {
        char *end = strchr(line, '\n'), *t1 = strchr(line, '\t'), *t2 = strchr(t1 + 1, '\t');
        *end = *t1 = *t2 = 0;
        xa_type type = !strcmp(line, "int") ? XA_INT : !strcmp(line, "float") ? XA_FLOAT : XA_STR;
        cJSON *in = cJSON_Parse(t1 + 1), *want = cJSON_Parse(t2 + 1);
        assert_non_null(in);
        assert_non_null(want);
        xa_values v;
        char why[300] = "";
        int rc = xa_parse(type, in->valuestring, &v, why, sizeof why), ok;
        if (cJSON_IsString(want)) { /* "error" or "nonfinite": refused */
            ok = rc != 0 && why[0] && !strchr(why, '\n');
            refused += ok;
        } else {
            ok = rc == 0 && v.n == cJSON_GetArraySize(want);
            for (int i = 0; ok && i < v.n; i++) {
                cJSON *w = cJSON_GetArrayItem(want, i);
                ok = type == XA_STR ? !strcmp(v.str[i], w->valuestring) : v.num[i] == w->valuedouble;
                if (!ok && type != XA_STR) fprintf(stderr, "  value %d: %.17g, want %.17g\n", i, v.num[i], w->valuedouble);
            }
            values += ok ? v.n : 0;
        }
        if (!ok) {
            bad++;
            fprintf(stderr, "xyz_axes.tsv case %d %s %s: rc %d (%s) n %d\n", cases + 1, line, t1 + 1, rc, why, rc ? 0 : v.n);
        }
        if (!rc) xa_free(&v);
        cJSON_Delete(in);
        cJSON_Delete(want);
        cases++;
        line = end + 1;
    }
    fprintf(stderr, "xyz_axes.tsv: %d of %d axes match A1111's process_axis (%d refused alike, %d values)\n",
            cases - bad, cases, refused, values);
    assert_int_equal(bad, 0);
    assert_true(cases >= 300);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_corpus)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
