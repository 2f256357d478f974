/* Many machines through the fmimage command (issue 20): --shard auto as a
 * Kubernetes Indexed Job runs it (JOB_COMPLETION_INDEX plus the completions
 * count examples/kubernetes/indexed-job.yaml gives), per-shard manifests
 * under manifest.d/ merged by every reader, --status, and --only-missing
 * shared by racing processes. The tiny SD 1.x model at 32x32. The real Slurm
 * run is tests/slurm/test_slurm.sh (make test-slurm). */
#include "cliutil.h"

#include <cjson/cJSON.h>

#define MODEL "tests/data/tiny-sd1.safetensors"
#define JOBS 8

static char root[256];

typedef struct outcome {
    int code;
    char out[16384], err[16384];
} outcome;

/* fmimage with the batch's settings and extra (NULL-terminated); env
 * (NAME=VALUE strings, NULL-terminated) is set for it only. */
static pid_t start(const char *dir, const char *const *extra, const char *const *env, const char *tag)
{
    const char *args[40] = {"-m", MODEL, "a fox in snow", "-W", "32", "-H", "32", "--steps", "2", "--sampler", "euler",
                            "--seed", "40", "--batch-count", "8", "-o", dir};
    int n = 17;
    for (int i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    char names[8][64];
    int k = 0;
    for (; env && env[k]; k++) {
        const char *eq = strchr(env[k], '=');
        snprintf(names[k], sizeof names[k], "%.*s", (int)(eq - env[k]), env[k]);
        setenv(names[k], eq + 1, 1);
    }
    char out[400], err[400];
    snprintf(out, sizeof out, "%s/out-%s", root, tag);
    snprintf(err, sizeof err, "%s/err-%s", root, tag);
    pid_t pid = cu_spawn(args, out, err);
    while (k-- > 0) unsetenv(names[k]);
    return pid;
}

static void finish(pid_t pid, const char *tag, outcome *o)
{
    o->code = cu_wait(pid);
    char path[400];
    snprintf(path, sizeof path, "%s/out-%s", root, tag);
    cu_slurp_into(path, o->out, sizeof o->out);
    snprintf(path, sizeof path, "%s/err-%s", root, tag);
    cu_slurp_into(path, o->err, sizeof o->err);
}

static void run(const char *dir, const char *const *extra, const char *const *env, outcome *o)
{
    finish(start(dir, extra, env, "run"), "run", o);
}

static void fresh(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", root, name); }

static char whole[300];

/* dir holds the 8 images of the unsharded run, byte for byte, and its
 * manifests list each exactly once with its digest (lines == 8). */
static void assert_whole_set(const char *dir)
{
    for (int j = 0; j < JOBS; j++) {
        char a[400], b[400];
        snprintf(a, sizeof a, "%s/%05d-%d.png", whole, j, 40 + j);
        snprintf(b, sizeof b, "%s/%05d-%d.png", dir, j, 40 + j);
        size_t la = 0, lb = 0;
        uint8_t *da = cu_slurp(a, &la), *db = cu_slurp(b, &lb);
        if (!da || !db) fail_msg("%s or %s missing", a, b);
        if (la != lb || memcmp(da, db, la)) fail_msg("%s differs from the unsharded run's", b);
        free(da);
        free(db);
    }
    size_t len;
    char *text = cu_manifests(dir, &len);
    assert_non_null(text);
    int lines = 0, seen[JOBS] = {0};
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("not JSON: %s", line);
        const cJSON *job = cJSON_GetObjectItemCaseSensitive(j, "job");
        assert_true(cJSON_IsNumber(job) && job->valueint >= 0 && job->valueint < JOBS);
        if (seen[job->valueint]++) fail_msg("job %d listed twice in %s", job->valueint, dir);
        assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "seq")));
        cJSON_Delete(j);
    }
    free(text);
    assert_int_equal(lines, JOBS);
}

static void test_unsharded_reference(void **state)
{
    (void)state;
    fresh(whole, sizeof whole, "whole");
    outcome o;
    run(whole, (const char *[]){"-q", NULL}, NULL, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_whole_set(whole);
    /* An unsharded run keeps its one DIR/manifest.jsonl. */
    char p[400];
    snprintf(p, sizeof p, "%s/manifest.d", whole);
    assert_false(cu_exists(p));
    run(whole, (const char *[]){"--status", NULL}, NULL, &o);
    assert_int_equal(o.code, 0);
    if (!strstr(o.out, "shard 0/1: 8 done, 0 missing, 0 broken\ntotal: 8 jobs, 8 done, 0 missing, 0 broken\n"))
        fail_msg("--status printed: %s", o.out);
}

/* The fields of examples/kubernetes/indexed-job.yaml the feature reads. */
static int yaml_int(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p) fail_msg("indexed-job.yaml lacks %s", key);
    p += strlen(key);
    while (*p == ' ' || *p == '"') p++;
    return atoi(p);
}

static void test_kubernetes_indexed_job(void **state)
{
    (void)state;
    char *yaml = (char *)cu_slurp("examples/kubernetes/indexed-job.yaml", NULL);
    assert_non_null(yaml);
    assert_non_null(strstr(yaml, "completionMode: Indexed"));
    assert_non_null(strstr(yaml, "\"--shard\", \"auto\""));
    int completions = yaml_int(yaml, "\n  completions:");
    const char *count = strstr(yaml, "name: FMIMAGE_SHARD_COUNT");
    assert_non_null(count);
    int shard_count = yaml_int(count, "value:");
    assert_int_equal(completions, 4);
    assert_int_equal(shard_count, completions);
    free(yaml);
    /* Each pod as the Job starts it: its JOB_COMPLETION_INDEX and the
     * manifest's FMIMAGE_SHARD_COUNT, all at once on one directory. */
    char dir[300], idx[4][40], cnt[40], tag[4][8];
    fresh(dir, sizeof dir, "k8s");
    snprintf(cnt, sizeof cnt, "FMIMAGE_SHARD_COUNT=%d", shard_count);
    pid_t pids[4];
    for (int k = 0; k < completions; k++) {
        snprintf(idx[k], sizeof idx[k], "JOB_COMPLETION_INDEX=%d", k);
        snprintf(tag[k], sizeof tag[k], "pod%d", k);
        pids[k] = start(dir, (const char *[]){"-q", "--shard", "auto", NULL}, (const char *[]){idx[k], cnt, NULL}, tag[k]);
    }
    for (int k = 0; k < completions; k++) {
        outcome o;
        finish(pids[k], tag[k], &o);
        if (o.code) fail_msg("pod %d: exit %d: %s", k, o.code, o.err);
    }
    assert_whole_set(dir);
    for (int k = 0; k < completions; k++) {
        char p[400];
        snprintf(p, sizeof p, "%s/manifest.d/%d-of-4.jsonl", dir, k);
        if (!cu_exists(p)) fail_msg("%s missing", p);
    }
    outcome o;
    run(dir, (const char *[]){"--status", NULL}, NULL, &o);
    assert_int_equal(o.code, 0);
    /* N of the status: the manifests' (4), jobs j mod 4. */
    if (!strstr(o.out, "shard 3/4: 2 done, 0 missing, 0 broken\ntotal: 8 jobs, 8 done"))
        fail_msg("--status printed: %s", o.out);
    /* The index without the count is refused in one line, exit 2. */
    run(dir, (const char *[]){"--shard", "auto", NULL}, (const char *[]){"JOB_COMPLETION_INDEX=1", NULL}, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: JOB_COMPLETION_INDEX: the Job's completions are not given "
                               "(--shard auto/N or FMIMAGE_SHARD_COUNT)\n");
    /* auto/N gives it. */
    run(dir, (const char *[]){"-q", "--shard", "auto/4", NULL}, (const char *[]){"JOB_COMPLETION_INDEX=1", NULL}, &o);
    assert_int_equal(o.code, 0);
    assert_whole_set(dir);
}

static void test_shard_auto_without_environment(void **state)
{
    (void)state;
    char dir[300];
    fresh(dir, sizeof dir, "noenv");
    outcome o;
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("JOB_COMPLETION_INDEX");
    unsetenv("FMIMAGE_SHARD");
    run(dir, (const char *[]){"--shard", "auto", NULL}, NULL, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: --shard auto: no shard in the environment (SLURM_ARRAY_TASK_ID, "
                               "JOB_COMPLETION_INDEX or FMIMAGE_SHARD)\n");
    assert_false(cu_exists(dir));
    /* --array=1,3,8 is no range of shards. */
    run(dir, (const char *[]){"--shard", "auto", NULL},
        (const char *[]){"SLURM_ARRAY_TASK_ID=3", "SLURM_ARRAY_TASK_COUNT=3", "SLURM_ARRAY_TASK_MIN=1",
                         "SLURM_ARRAY_TASK_MAX=8", NULL},
        &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: SLURM_ARRAY_TASK_ID: the array's ids are not one range (use --array=0-N-1)\n");
    /* --status without the run's seed cannot name the files. */
    const char *args[] = {"-m", MODEL, "a fox", "--batch-count", "2", "-o", dir, "--status", NULL};
    char err[1024];
    assert_int_equal(cu_run(args, err, sizeof err), 2);
    assert_string_equal(err, "fmimage: --status: needs the run's --seed (jobs without their own seed are named by it)\n");
    assert_false(cu_exists(dir));
}

/* Copies the reference set's files named by j into dir (a half-done run). */
static void copy_job(const char *dir, int j)
{
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/%05d-%d.png", whole, j, 40 + j);
    snprintf(b, sizeof b, "%s/%05d-%d.png", dir, j, 40 + j);
    size_t len = 0;
    uint8_t *d = cu_slurp(a, &len);
    assert_non_null(d);
    FILE *f = fopen(b, "wb");
    assert_non_null(f);
    fwrite(d, 1, len, f);
    fclose(f);
    free(d);
}

static void test_status_and_only_missing(void **state)
{
    (void)state;
    char dir[300], p[400];
    fresh(dir, sizeof dir, "partial");
    outcome o;
    /* Shards 0 and 2 of 4 ran, 1 and 3 did not. */
    run(dir, (const char *[]){"-q", "--shard", "0/4", NULL}, NULL, &o);
    assert_int_equal(o.code, 0);
    run(dir, (const char *[]){"-q", "--shard", "2/4", NULL}, NULL, &o);
    assert_int_equal(o.code, 0);
    /* One image of shard 0 cut short, as a failing disk would. */
    snprintf(p, sizeof p, "%s/00004-44.png", dir);
    assert_int_equal(truncate(p, 100), 0);
    run(dir, (const char *[]){"--status", NULL}, NULL, &o);
    assert_int_equal(o.code, 1);
    if (!strstr(o.out, "missing 00001-41.png (shard 1/4)\n") ||
        !strstr(o.out, "broken 00004-44.png (shard 0/4): not a complete PNG\n") ||
        !strstr(o.out, "shard 0/4: 1 done, 0 missing, 1 broken\nshard 1/4: 0 done, 2 missing, 0 broken\n"
                       "shard 2/4: 2 done, 0 missing, 0 broken\nshard 3/4: 0 done, 2 missing, 0 broken\n"
                       "total: 8 jobs, 3 done, 4 missing, 1 broken\n"))
        fail_msg("--status printed: %s", o.out);
    /* --status made and changed nothing. */
    assert_int_equal(o.err[0], 0);
    /* Three processes at once, --only-missing, 3 shards of a different N:
     * the five unfinished jobs are made once each. */
    pid_t a = start(dir, (const char *[]){"--shard", "0/3", "--only-missing", NULL}, NULL, "m0");
    pid_t b = start(dir, (const char *[]){"--shard", "1/3", "--only-missing", NULL}, NULL, "m1");
    pid_t c = start(dir, (const char *[]){"--shard", "2/3", "--only-missing", NULL}, NULL, "m2");
    outcome oa, ob, oc;
    finish(a, "m0", &oa);
    finish(b, "m1", &ob);
    finish(c, "m2", &oc);
    if (oa.code || ob.code || oc.code) fail_msg("exit %d %d %d: %s %s %s", oa.code, ob.code, oc.code, oa.err, ob.err, oc.err);
    int made = 0;
    for (const char *s = oa.err; (s = strstr(s, " 2 steps ")); s++) made++;
    for (const char *s = ob.err; (s = strstr(s, " 2 steps ")); s++) made++;
    for (const char *s = oc.err; (s = strstr(s, " 2 steps ")); s++) made++;
    if (made < 5) fail_msg("%d images made, 5 unfinished: %s %s %s", made, oa.err, ob.err, oc.err);
    assert_whole_set(dir);
    run(dir, (const char *[]){"--status", NULL}, NULL, &o);
    assert_int_equal(o.code, 0);
    /* No claim or temporary file is left. */
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, ".fmimage-", 9)) fail_msg("%s/%s left", dir, e->d_name);
    closedir(d);
    /* A set whose files were made elsewhere, not listed: --only-missing
     * reads them (claimed) and lists them, making nothing. */
    char bare[300];
    fresh(bare, sizeof bare, "bare");
    mkdir(bare, 0777);
    for (int j = 0; j < JOBS; j++) copy_job(bare, j);
    run(bare, (const char *[]){"--only-missing", NULL}, NULL, &o);
    assert_int_equal(o.code, 0);
    if (strstr(o.err, " 2 steps ")) fail_msg("made an image: %s", o.err);
    assert_whole_set(bare);
}

/* A planted link as a shard's manifest or as manifest.d is refused, and
 * nothing is written through it. */
static void test_manifest_d_links_refused(void **state)
{
    (void)state;
    char dir[300], p[700], target[400];
    fresh(dir, sizeof dir, "links");
    mkdir(dir, 0777);
    snprintf(target, sizeof target, "%s/elsewhere", root);
    mkdir(target, 0777);
    snprintf(p, sizeof p, "%s/manifest.d", dir);
    assert_int_equal(symlink(target, p), 0);
    outcome o;
    run(dir, (const char *[]){"-q", "--shard", "1/2", NULL}, NULL, &o);
    assert_int_equal(o.code, 1);
    if (!strstr(o.err, "manifest.d: not a directory (refused)")) fail_msg("stderr: %s", o.err);
    snprintf(p, sizeof p, "%s/1-of-2.jsonl", target);
    assert_false(cu_exists(p));
    /* A reader (an unsharded run) refuses it too. */
    run(dir, (const char *[]){"-q", NULL}, NULL, &o);
    assert_int_equal(o.code, 1);
    snprintf(p, sizeof p, "%s/manifest.d", dir);
    unlink(p);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/manifest.d/0-of-2.jsonl", dir);
    snprintf(target, sizeof target, "%s/elsewhere/victim", root);
    FILE *f = fopen(target, "w");
    fputs("x\n", f);
    fclose(f);
    assert_int_equal(symlink(target, p), 0);
    run(dir, (const char *[]){"-q", "--shard", "0/2", NULL}, NULL, &o);
    assert_int_equal(o.code, 1);
    if (!strstr(o.err, "0-of-2.jsonl: a symbolic link (refused)")) fail_msg("stderr: %s", o.err);
    size_t len;
    char *t = (char *)cu_slurp(target, &len);
    assert_string_equal(t, "x\n");
    free(t);
}

int main(void)
{
    cu_tempdir(root, sizeof root, "shard");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsharded_reference),
        cmocka_unit_test(test_kubernetes_indexed_job),
        cmocka_unit_test(test_shard_auto_without_environment),
        cmocka_unit_test(test_status_and_only_missing),
        cmocka_unit_test(test_manifest_d_links_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
