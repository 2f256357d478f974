/* Prompt-file batches through the fmimage command (issue 6, issue 9):
 * sharding gives the same bytes as one run, reruns skip finished images,
 * bad lines fail alone, and a batch killed at random moments leaves no
 * partial file and completes to identical bytes when rerun. */
#include "cliutil.h"

#include <cjson/cJSON.h>

static const char *prompt_file =
    "a red fox in snow\n"
    "--prompt \"a blue bird, small\" --negative_prompt blurry --seed 1234 --steps 3 --n_iter 2\n"
    "# a comment, skipped\n"
    "\n"
    "--prompt a cat --colour red\n"
    "un renard roux dans la neige \xe2\x9d\x84 \xe7\x8b\x90\xe7\x8b\xb8\n";
/* Jobs: line 1 -> j0; line 2 -> j1, j2 (seeds 1234, 1235); line 5 is bad and
 * holds j3; line 6 -> j4. */
static const char *expected[] = {"00000-100.png", "00001-1234.png", "00002-1235.png", "00004-104.png"};
enum { N_EXPECTED = 4 };

static char root[256], pf_path[300];

static int run_batch(const char *out_dir, const char *shard, char *err, size_t n)
{
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "--prompt-file", pf_path, "--seed", "100",
                          "-W", "32", "-H", "32", "--steps", "4", "--sampler", "euler", "-q",
                          "-o", out_dir, "--shard", shard, NULL};
    return cu_run(args, err, n);
}

static int count_manifest_lines(const char *dir, int check_files)
{
    size_t len;
    char *text = cu_manifests(dir, &len);
    if (!text) return 0;
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), n++) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(j, "file");
        assert_true(cJSON_IsString(file));
        if (check_files) {
            char png[500];
            snprintf(png, sizeof png, "%s/%s", dir, file->valuestring);
            int w, h;
            fm_error e = {0};
            uint8_t *rgb = fm_image_read(png, &w, &h, &e);
            if (!rgb) fail_msg("manifest names %s, which is not a complete PNG: %s", png, e.msg);
            free(rgb);
        }
        cJSON_Delete(j);
    }
    free(text);
    return n;
}

static void assert_same_set(const char *a, const char *b)
{
    for (int i = 0; i < N_EXPECTED; i++) {
        char pa[400], pb[400];
        snprintf(pa, sizeof pa, "%s/%s", a, expected[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, expected[i]);
        size_t la = 0, lb = 0;
        uint8_t *da = cu_slurp(pa, &la), *db = cu_slurp(pb, &lb);
        if (!da || !db) fail_msg("missing %s or %s", pa, pb);
        if (la != lb || memcmp(da, db, la)) fail_msg("%s and %s differ", pa, pb);
        free(da);
        free(db);
    }
}

static void assert_no_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int pngs = 0;
    while ((e = readdir(d))) {
        if (strstr(e->d_name, ".tmp-") || !strncmp(e->d_name, ".fmimage-", 9)) fail_msg("%s/%s left behind", dir, e->d_name);
        pngs += strstr(e->d_name, ".png") != NULL;
    }
    closedir(d);
    assert_true(pngs <= N_EXPECTED);
}

static char whole[300];

static void test_unsharded_run(void **state)
{
    (void)state;
    char err[4096];
    snprintf(whole, sizeof whole, "%s/whole", root);
    assert_int_equal(run_batch(whole, "0/1", err, sizeof err), 1); /* the bad line */
    char want[400];
    snprintf(want, sizeof want, "fmimage: %s:5: unknown option --colour", pf_path);
    if (!strstr(err, want)) fail_msg("stderr lacks '%s': %s", want, err);
    for (int i = 0; i < N_EXPECTED; i++) {
        char p[400];
        snprintf(p, sizeof p, "%s/%s", whole, expected[i]);
        if (!cu_exists(p)) fail_msg("%s missing", p);
        char *params = cu_png_parameters(p);
        assert_non_null(params);
        free(params);
    }
    assert_int_equal(count_manifest_lines(whole, 1), N_EXPECTED);
    /* Rerun: everything exists, nothing is regenerated or listed twice. */
    struct stat before, after;
    char p0[400];
    snprintf(p0, sizeof p0, "%s/%s", whole, expected[0]);
    stat(p0, &before);
    assert_int_equal(run_batch(whole, "0/1", err, sizeof err), 1);
    stat(p0, &after);
    assert_true(before.st_mtim.tv_sec == after.st_mtim.tv_sec && before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
    assert_int_equal(count_manifest_lines(whole, 1), N_EXPECTED);
}

static void test_shards_make_the_same_set(void **state)
{
    (void)state;
    char err[4096], sharded[300];
    snprintf(sharded, sizeof sharded, "%s/sharded", root);
    run_batch(sharded, "0/2", err, sizeof err);
    run_batch(sharded, "1/2", err, sizeof err);
    assert_same_set(whole, sharded);
    assert_int_equal(count_manifest_lines(sharded, 1), N_EXPECTED);
}

static void test_killed_batch_completes(void **state)
{
    (void)state;
    char killed[300], err[4096];
    snprintf(killed, sizeof killed, "%s/killed", root);
    /* How long an uninterrupted run takes, to place the kills inside it. */
    char timing[300];
    snprintf(timing, sizeof timing, "%s/timing", root);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run_batch(timing, "0/1", err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double total = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    srand(12345);
    for (int k = 0; k < 10; k++) {
        const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "--prompt-file", pf_path, "--seed", "100",
                              "-W", "32", "-H", "32", "--steps", "4", "--sampler", "euler", "-q", "-o", killed, NULL};
        pid_t pid = cu_spawn(args, NULL, NULL);
        useconds_t delay = (useconds_t)((double)rand() / RAND_MAX * total * 1e6);
        usleep(delay);
        kill(pid, SIGKILL);
        cu_wait(pid);
        /* Whatever the moment: every listed image is complete. */
        count_manifest_lines(killed, 1);
    }
    run_batch(killed, "0/1", err, sizeof err);
    assert_no_temporaries(killed);
    assert_same_set(whole, killed);
    assert_int_equal(count_manifest_lines(killed, 1), N_EXPECTED);
}

static void test_sigint_exits_130(void **state)
{
    (void)state;
    char out[300];
    snprintf(out, sizeof out, "%s/sigint", root);
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a long run", "--seed", "5", "-W", "64",
                          "-H", "64", "--steps", "1000", "--batch-count", "3", "-q", "-o", out, NULL};
    pid_t pid = cu_spawn(args, NULL, NULL);
    usleep(700 * 1000);
    kill(pid, SIGINT);
    assert_int_equal(cu_wait(pid), 130);
    assert_no_temporaries(out);
}

int main(void)
{
    cu_tempdir(root, sizeof root, "batch");
    snprintf(pf_path, sizeof pf_path, "%s/prompts.txt", root);
    FILE *f = fopen(pf_path, "w");
    fputs(prompt_file, f);
    fclose(f);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsharded_run),
        cmocka_unit_test(test_shards_make_the_same_set),
        cmocka_unit_test(test_killed_batch_completes),
        cmocka_unit_test(test_sigint_exits_130),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
