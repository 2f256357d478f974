/* The X/Y/Z plot on the demo model: a 3x3 grid killed with SIGKILL part
 * way, then run again: the finished cells are skipped (counted), the rest
 * made, and the grid drawn (labels band on top and left, A1111's infotext
 * with the plot's fields). A Checkpoint name axis over the demo model and
 * the tiny SD 1.x golden: every cell byte for byte the single-model run,
 * each model loaded once, the combined grid across Z made of the per-Z
 * grids' pixels. Bad axes are usage errors (exit 2). */
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

/* Each cell of a Checkpoint name x Seed x CFG Scale plot equals fmimage's
 * single-image run of that checkpoint with the cell's settings, PNG bytes
 * (pixels and infotext: its Model and Model hash) included. */
static void check_cells_single(const char *out, const char *const models[2], const char *const seeds[2],
                               const char *const cfgs[2])
{
    char err[4096], one[500];
    snprintf(one, sizeof one, "%s/../single.png", out);
    for (int c = 0; c < 8; c++) {
        int ix = c % 2, iy = c / 2 % 2, iz = c / 4;
        const char *a[] = {"-m", models[ix], "a red fox", "--seed", seeds[iy], "--cfg", cfgs[iz], "--steps", "4",
                           "-W", "64", "-H", "64", "-q", "--force", "-o", one, NULL};
        assert_int_equal(cu_run(a, err, sizeof err), 0);
        char cell[500];
        snprintf(cell, sizeof cell, "%s/%05d-%s.png", out, c, seeds[iy]);
        size_t n1 = 0, n2 = 0;
        uint8_t *b1 = cu_slurp(one, &n1), *b2 = cu_slurp(cell, &n2);
        assert_non_null(b1);
        assert_non_null(b2);
        if (n1 != n2 || memcmp(b1, b2, n1)) fail_msg("%s differs from the single run of %s", cell, models[ix]);
        free(b1);
        free(b2);
    }
}

static int count_of(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p++) n++;
    return n;
}

static void test_checkpoints(void **state)
{
    (void)state;
    char dir[300], out[400], out2[400], err[16384], cmd[2000], models_dir[400];
    cu_tempdir(dir, sizeof dir, "xyzck");
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(out2, sizeof out2, "%s/out2", dir);
    snprintf(models_dir, sizeof models_dir, "%s/models", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/sub' && ln -s \"$(realpath " DEMO ")\" '%s/demo.safetensors' && "
             "ln -s \"$(realpath tests/data/tiny-sd1.safetensors)\" '%s/sub/tiny-sd1.safetensors'",
             models_dir, models_dir, models_dir);
    assert_int_equal(system(cmd), 0);
    char demo[500], tiny[500];
    snprintf(demo, sizeof demo, "%s/demo.safetensors", models_dir);
    snprintf(tiny, sizeof tiny, "%s/sub/tiny-sd1.safetensors", models_dir);
    /* "demo": a file name without extension; "tiny-sd1 [hash]": part of a title, the checksum dropped */
    const char *args[] = {"-m", DEMO, "--models-dir", models_dir, "--xyz", "X:Checkpoint name:demo,tiny-sd1 [60597167c9]",
                          "Y:Seed:1,2", "Z:CFG Scale:5,7", "a red fox", "--steps", "4", "-W", "64", "-H", "64",
                          "--seed", "9", "-v", "-o", out, NULL};
    assert_int_equal(cu_run(args, err, sizeof err), 0);
    /* the checkpoint axis is the outer loop: each model loads once */
    if (count_of(err, "fmimage: load (mapping, detection, binding)") != 2) fail_msg("wanted two loads:\n%s", err);
    const char *models[2] = {demo, tiny}, *seeds[2] = {"1", "2"}, *cfgs[2] = {"5", "7"};
    check_cells_single(out, models, seeds, cfgs);
    /* the per-Z grids have X and Y fields, the combined grid Z's too */
    char g0[500], g1[500], gz[500];
    snprintf(g0, sizeof g0, "%s/xyz_grid-0.png", out);
    snprintf(g1, sizeof g1, "%s/xyz_grid-1.png", out);
    snprintf(gz, sizeof gz, "%s/xyz_grid.png", out);
    char *p1 = cu_png_parameters(g1), *pz = cu_png_parameters(gz);
    assert_non_null(p1);
    assert_non_null(pz);
    assert_non_null(strstr(p1, "CFG scale: 7, Seed: 1,"));
    assert_non_null(strstr(p1, "Model: demo,"));
    assert_non_null(strstr(p1, ", X Type: Checkpoint name, X Values: \"demo,tiny-sd1 [60597167c9]\", Y Type: Seed"));
    assert_null(strstr(p1, "Z Type"));
    assert_non_null(strstr(pz, "CFG scale: 5, Seed: 1,"));
    assert_non_null(strstr(pz, ", Fixed Y Values: \"1, 2\", Z Type: CFG Scale, Z Values: \"5,7\""));
    free(p1);
    free(pz);
    /* the combined grid: the two per-Z grids side by side under a band of Z labels */
    fm_error e = {0};
    int sw, sh, w1, h1, gw, gh;
    uint8_t *s0 = fm_image_read(g0, &sw, &sh, &e), *s1 = fm_image_read(g1, &w1, &h1, &e), *g = fm_image_read(gz, &gw, &gh, &e);
    assert_true(s0 && s1 && g);
    assert_true(w1 == sw && h1 == sh && sw > 2 * 64 && sh > 2 * 64);
    assert_int_equal(gw, 2 * sw);
    int band = gh - sh;
    assert_true(band > 0);
    for (int iz = 0; iz < 2; iz++) {
        const uint8_t *sub = iz ? s1 : s0;
        for (int y = 0; y < sh; y++)
            assert_memory_equal(g + ((size_t)(band + y) * gw + iz * sw) * 3, sub + (size_t)y * sw * 3, (size_t)sw * 3);
        int dark = 0; /* its Z label */
        for (int y = 0; y < band; y++)
            for (int x = iz * sw; x < (iz + 1) * sw; x++) dark += g[((size_t)y * gw + x) * 3] < 100;
        assert_true(dark > 30);
    }
    assert_int_equal(g[0], 255);
    free(s0);
    free(s1);
    free(g);
    /* cells are ordinary jobs: --status, resume, shards */
    const char *status[] = {"-m", DEMO, "--models-dir", models_dir, "--xyz", "X:Checkpoint name:demo,tiny-sd1 [60597167c9]",
                            "Y:Seed:1,2", "Z:CFG Scale:5,7", "a red fox", "--steps", "4", "-W", "64", "-H", "64",
                            "--seed", "9", "--status", "-o", out, NULL};
    assert_int_equal(cu_run(status, err, sizeof err), 0);
    char cell[500];
    snprintf(cell, sizeof cell, "%s/00005-1.png", out);
    assert_int_equal(unlink(cell), 0);
    assert_int_equal(cu_run(status, err, sizeof err), 1);
    assert_int_equal(cu_run(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "fmimage: skipped 7 finished images"));
    check_cells_single(out, models, seeds, cfgs);
    for (int k = 0; k < 2; k++) {
        const char *shard[] = {"-m", DEMO, "--models-dir", models_dir, "--xyz", "X:Checkpoint name:demo,tiny-sd1 [60597167c9]",
                               "Y:Seed:1,2", "Z:CFG Scale:5,7", "a red fox", "--steps", "4", "-W", "64", "-H", "64",
                               "--seed", "9", "-q", "--shard", k ? "1/2" : "0/2", "-o", out2, NULL};
        assert_int_equal(cu_run(shard, err, sizeof err), 0);
    }
    check_cells_single(out2, models, seeds, cfgs);
    snprintf(cmd, sizeof cmd, "cmp '%s/xyz_grid.png' '%s/xyz_grid.png'", out, out2);
    assert_int_equal(system(cmd), 0);
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
        {"X:Checkpoint name:foo", "fmimage: --xyz: X:Checkpoint name: \"foo\": not found in assets/demo\n"},
        {"Y:Checkpoint name:demo,", "fmimage: --xyz: Y:Checkpoint name: \"\": an empty name\n"},
        {"X:Checkpoint name:../demo/fmimage-demo", "fmimage: --xyz: X:Checkpoint name: \"../demo/fmimage-demo\": not found in assets/demo\n"},
        {"X:Checkpoint name:README.md", "fmimage: --xyz: X:Checkpoint name: \"README.md\": not a checkpoint (.safetensors or .gguf)\n"},
        {"X:Checkpoint name:tests/data/pickles/ema.ckpt", "fmimage: --xyz: X:Checkpoint name: \"tests/data/pickles/ema.ckpt\": a pickle is not loaded (convert it to .safetensors)\n"},
        {"X:Checkpoint name:tests", "fmimage: --xyz: X:Checkpoint name: \"tests\": a folder without model_index.json\n"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *a[] = {"-m", DEMO, "--xyz", bad[i].spec, "a red fox", "-q", "-o", out, NULL};
        assert_int_equal(cu_run(a, err, sizeof err), 2);
        if (!strstr(err, bad[i].msg)) fail_msg("%s: %s", bad[i].spec, err);
    }
    /* a checkpoint that does not load: its cells fail (exit 1, saying which file), the others are made */
    char broken[400], spec[500], cell[500];
    snprintf(broken, sizeof broken, "%s/broken.safetensors", dir);
    FILE *f = fopen(broken, "w");
    assert_non_null(f);
    fputs("not a safetensors file", f);
    fclose(f);
    snprintf(spec, sizeof spec, "X:Checkpoint name:%s,fmimage-demo", broken);
    const char *a3[] = {"-m", DEMO, "--xyz", spec, "a red fox", "--steps", "2", "--seed", "5", "-q", "-o", out, NULL};
    assert_int_equal(cu_run(a3, err, sizeof err), 1);
    if (!strstr(err, "broken.safetensors: ")) fail_msg("%s", err);
    snprintf(cell, sizeof cell, "%s/00001-5.png", out);
    assert_true(cu_exists(cell));
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
        cmocka_unit_test(test_checkpoints),
        cmocka_unit_test(test_axes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
