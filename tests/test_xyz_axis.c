/* X/Y/Z axis values (cli/xyz_axis.c) against tests/data/xyz_axes.tsv:
 * process_axis of A1111's scripts/xyz_grid.py run on the corpus
 * (tools/ref/xyz_ref.py). Values must be equal as doubles (ints exactly,
 * floats to the last bit: numpy's arange and linspace arithmetic), strings
 * byte for byte; what A1111 refuses (ValueError) fmimage refuses. */
#include "cliutil.h"

#include <cjson/cJSON.h>

#include "../cli/xyz_axis.c"
#include "../cli/xyz.c"
#include "../cli/xyz_ckpt.c"

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

/* Checkpoint name values against tests/data/xyz_ckpt.tsv: A1111's own
 * list_models and get_closet_checkpoint_match over a folder of empty files
 * (tools/ref/xyz_ckpt_ref.py). The same file for every name A1111 finds
 * (a .ckpt refused as a pickle), refused where it finds none. */
static void test_checkpoint_names(void **state)
{
    (void)state;
    char *text = (char *)cu_slurp("tests/data/xyz_ckpt.tsv", NULL), dir[300], cmd[1200];
    assert_non_null(text);
    cu_tempdir(dir, sizeof dir, "xyzck-names");
    char *end = strchr(text, '\n');
    *end = 0;
    cJSON *files = cJSON_Parse(strchr(text, '\t') + 1);
    assert_non_null(files);
    for (int i = 0; i < cJSON_GetArraySize(files); i++) {
        snprintf(cmd, sizeof cmd, "mkdir -p \"$(dirname '%s/%s')\" && : > '%s/%s'", dir,
                 cJSON_GetArrayItem(files, i)->valuestring, dir, cJSON_GetArrayItem(files, i)->valuestring);
        assert_int_equal(system(cmd), 0);
    }
    int cases = 0, bad = 0;
    for (char *line = end + 1; *line; cases++) {
        char *eol = strchr(line, '\n'), *tab = strchr(line, '\t');
        *eol = *tab = 0;
        cJSON *name = cJSON_Parse(line), *want = cJSON_Parse(tab + 1);
        assert_true(name && want);
        char **values = malloc(sizeof *values); /* the plan's, freed by xyz_free */
        assert_non_null(values);
        assert_non_null(values[0] = strdup(name->valuestring));
        xyz_plan p = {0};
        p.ax[0] = (xyz_axis){.used = 1, .kind = XT_CHECKPOINT, .label = "Checkpoint name", .v = {.n = 1, .str = values}};
        char why[900] = "", expect[700] = "";
        int rc = xyz_resolve_checkpoints(&p, dir, why, sizeof why), ok;
        if (cJSON_IsNull(want)) {
            ok = rc != 0 && (strstr(why, "not found in") || strstr(why, "an empty name"));
        } else {
            snprintf(expect, sizeof expect, "%s/%s", dir, want->valuestring);
            ok = strlen(expect) > 5 && !strcmp(expect + strlen(expect) - 5, ".ckpt")
                     ? rc != 0 && strstr(why, "is a pickle, not loaded") != NULL
                     : rc == 0 && !strcmp(xyz_checkpoint(&p, 0), expect);
        }
        if (!ok) {
            bad++;
            fprintf(stderr, "xyz_ckpt.tsv %s: got %s (%s), want %s\n", line, rc ? "refused" : xyz_checkpoint(&p, 0), why, tab + 1);
        }
        xyz_free(&p);
        cJSON_Delete(name);
        cJSON_Delete(want);
        line = eol + 1;
    }
    fprintf(stderr, "xyz_ckpt.tsv: %d of %d names found as A1111 finds them\n", cases - bad, cases);
    assert_int_equal(bad, 0);
    assert_true(cases >= 60);
    cJSON_Delete(files);
    free(text);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_corpus), cmocka_unit_test(test_checkpoint_names)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
