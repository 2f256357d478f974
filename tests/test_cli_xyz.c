/* The X/Y/Z plot on the demo model: a 3x3 grid killed with SIGKILL part
 * way, then run again: the finished cells are skipped (counted), the rest
 * made, and the grid drawn (labels band on top and left, A1111's infotext
 * with the plot's fields). Bad axes are usage errors (exit 2). */
#include "testutil.h"
#include "cliutil.h"

#define DEMO "assets/demo/fmimage-demo.safetensors"

static int count_pngs(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '^0.*\\.png$' > '%s/.count'", dir, dir);
    if (system(cmd) == -1) return -1;
    char path[600], buf[32] = "";
    snprintf(path, sizeof path, "%s/.count", dir);
    cu_slurp_into(path, buf, sizeof buf);
    unlink(path);
    return atoi(buf);
}

static void test_kill_and_resume(void **state)
{
    (void)state;
    char dir[300], out[400], err[8192], errpath[500], grid[500], want[64];
    cu_tempdir(dir, sizeof dir, "xyz");
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    snprintf(grid, sizeof grid, "%s/xyz_grid-0.png", out);
    const char *args[] = {"-m", DEMO, "--xyz", "X:Seed:1-3", "Y:CFG Scale:5,7,9", "a red fox in the snow",
                          "--steps", "60", "-q", "-o", out, NULL};
    pid_t pid = cu_spawn(args, NULL, errpath);
    /* kill -9 once some cells are finished and before the last (waits up to
     * 10 minutes: a sanitizer build on a loaded machine makes a cell in ~30 s) */
    int made = 0;
    for (int t = 0; t < 60000 && made < 3; t++) {
        usleep(10000);
        mkdir(out, 0777);
        made = count_pngs(out);
    }
    kill(pid, SIGKILL);
    assert_int_equal(cu_wait(pid), 128 + SIGKILL);
    made = count_pngs(out);
    fprintf(stderr, "killed with %d of 9 cells finished\n", made);
    assert_true(made >= 3 && made < 9);
    assert_false(cu_exists(grid));
    /* again: the finished cells skipped, the rest made, the grid drawn */
    const char *again[] = {"-m", DEMO, "--xyz", "X:Seed:1-3", "--xyz", "Y:CFG Scale:5,7,9", "a red fox in the snow",
                           "--steps", "60", "-o", out, NULL};
    assert_int_equal(cu_run(again, err, sizeof err), 0);
    snprintf(want, sizeof want, "fmimage: skipped %d finished image%s", made, made == 1 ? "" : "s");
    if (!strstr(err, want)) fail_msg("wanted \"%s\" in:\n%s", want, err);
    assert_int_equal(count_pngs(out), 9);
    size_t n = 0;
    char *m = cu_manifests(out, &n);
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += m[i] == '\n';
    assert_int_equal(lines, 9); /* one line per cell, none twice */
    free(m);
    /* the grid: 3 x 3 cells of 64 px plus a band on top and on the left */
    fm_error e = {0};
    int gw, gh;
    uint8_t *g = fm_image_read(grid, &gw, &gh, &e);
    assert_non_null(g);
    assert_true(gw > 3 * 64 && gh > 3 * 64);
    int pad_left = gw - 3 * 64, pad_top = gh - 3 * 64;
    assert_int_equal(pad_left, 64 * 3 / 4);
    /* some dark (text) pixels in both bands, the corner white */
    int dark_top = 0, dark_left = 0;
    for (int y = 0; y < pad_top; y++)
        for (int x = pad_left; x < gw; x++) dark_top += g[((size_t)y * gw + x) * 3] < 100;
    for (int y = pad_top; y < gh; y++)
        for (int x = 0; x < pad_left; x++) dark_left += g[((size_t)y * gw + x) * 3] < 100;
    assert_true(dark_top > 30 && dark_left > 30);
    assert_int_equal(g[0], 255);
    /* cell (1, 2) in place: the grid holds 00007-2.png at column 1, row 2 */
    char cell[500];
    snprintf(cell, sizeof cell, "%s/00007-2.png", out);
    int cw, ch;
    uint8_t *c = fm_image_read(cell, &cw, &ch, &e);
    assert_non_null(c);
    for (int y = 0; y < 64; y++)
        assert_memory_equal(g + ((size_t)(pad_top + 2 * 64 + y) * gw + pad_left + 64) * 3, c + (size_t)y * 64 * 3, 64 * 3);
    free(c);
    free(g);
    char *params = cu_png_parameters(grid);
    assert_non_null(params);
    assert_non_null(strstr(params, "CFG scale: 5, Seed: 1,"));
    assert_non_null(strstr(params, ", Script: X/Y/Z plot, X Type: Seed, X Values: 1-3, Fixed X Values: \"1, 2, 3\", "
                                   "Y Type: CFG Scale, Y Values: \"5,7,9\""));
    free(params);
    /* a third run makes nothing */
    assert_int_equal(cu_run(again, err, sizeof err), 0);
    assert_non_null(strstr(err, "fmimage: skipped 9 finished images"));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_axes(void **state)
{
    (void)state;
    char dir[300], out[400], err[4096];
    cu_tempdir(dir, sizeof dir, "xyz2");
    snprintf(out, sizeof out, "%s/out", dir);
    /* Prompt S/R and Steps: cell prompts and steps in the manifest */
    const char *a1[] = {"-m", DEMO, "--xyz", "X:Prompt S/R:red,blue", "--xyz", "Y:Steps:2-4 (+2)", "a red fox", "-q",
                        "--seed", "3", "-o", out, NULL};
    assert_int_equal(cu_run(a1, err, sizeof err), 0);
    char *m = cu_manifests(out, NULL);
    assert_non_null(m);
    const char *order[] = {"\"prompt\":\"a red fox\"", "\"prompt\":\"a blue fox\""};
    const char *p = m;
    for (int k = 0; k < 4; k++) {
        p = strstr(p, order[k % 2]);
        assert_non_null(p);
        const char *steps = strstr(p, k < 2 ? "\"steps\":2," : "\"steps\":4,");
        const char *eol = strchr(p, '\n');
        assert_true(steps && steps < eol);
        p = eol;
    }
    free(m);
    struct { const char *spec, *msg; } bad[] = {
        {"X:Nope:1", "fmimage: --xyz: \"X:Nope:1\": not AXIS:TYPE:VALUES"},
        {"X:Steps:1-10 (+0)", "fmimage: --xyz: X:Steps: \"1-10 (+0)\": the step is 0\n"},
        {"X:CFG Scale:abc", "fmimage: --xyz: X:CFG Scale: \"abc\": not a finite number (A1111: ValueError)\n"},
        {"X:Steps:0-2", "fmimage: --xyz: X:Steps: 0 is out of range\n"},
        {"X:Prompt S/R:green,blue", "fmimage: --xyz: X:Prompt S/R: \"green\" is not in the prompt or the negative prompt\n"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *a[] = {"-m", DEMO, "--xyz", bad[i].spec, "a red fox", "-q", "-o", out, NULL};
        assert_int_equal(cu_run(a, err, sizeof err), 2);
        if (!strstr(err, bad[i].msg)) fail_msg("%s: %s", bad[i].spec, err);
    }
    const char *a2[] = {"-m", DEMO, "--xyz", "X:Seed:1,2", "--xyz", "X:Steps:2", "a red fox", "-q", "-o", out, NULL};
    assert_int_equal(cu_run(a2, err, sizeof err), 2);
    assert_non_null(strstr(err, "fmimage: --xyz: X: given twice"));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_and_resume),
        cmocka_unit_test(test_axes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
