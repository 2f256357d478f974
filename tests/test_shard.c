/* --shard auto and the default thread count (issue 20, item 1): K and N
 * from the variables Slurm array tasks, Kubernetes Indexed Jobs and users
 * set, as the schedulers document them, and the CPUs granted through
 * affinity, cgroup v1/v2 quotas and SLURM_CPUS_PER_TASK (a fake /proc and
 * /sys/fs/cgroup under a temporary root). */
#include "testutil.h"

#include <sys/stat.h>

#include "../cli/shard.c"

/* The environment a test sets: NAME=VALUE strings, NULL-terminated. */
static const char *const *fake_env;

static const char *env_lookup(const char *name)
{
    size_t n = strlen(name);
    for (const char *const *e = fake_env; e && *e; e++)
        if (!strncmp(*e, name, n) && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

/* shard_auto under env; returns 0 with k/n, or -1 with why. */
static int resolve(const char *const *env, int n_given, int *k, int *n, char *why)
{
    fake_env = env;
    *k = *n = -1;
    return shard_auto(n_given, env_lookup, k, n, why, 200);
}

static void expect_shard(const char *const *env, int n_given, int k_want, int n_want)
{
    int k, n;
    char why[200] = "";
    if (resolve(env, n_given, &k, &n, why)) fail_msg("refused: %s", why);
    assert_int_equal(k, k_want);
    assert_int_equal(n, n_want);
}

static void expect_refused(const char *const *env, int n_given, const char *needle)
{
    int k, n;
    char why[200] = "";
    assert_int_equal(resolve(env, n_given, &k, &n, why), -1);
    if (!strstr(why, needle)) fail_msg("'%s' lacks '%s'", why, needle);
}

static void test_slurm_array(void **state)
{
    (void)state;
    /* sbatch --array=0-3, task 2: Slurm sets ID, COUNT, MIN, MAX, STEP. */
    expect_shard((const char *[]){"SLURM_ARRAY_TASK_ID=2", "SLURM_ARRAY_TASK_COUNT=4", "SLURM_ARRAY_TASK_MIN=0",
                                  "SLURM_ARRAY_TASK_MAX=3", "SLURM_ARRAY_TASK_STEP=1", NULL},
                 0, 2, 4);
    /* --array=1-8: ids start at 1, K = id - min. */
    expect_shard((const char *[]){"SLURM_ARRAY_TASK_ID=1", "SLURM_ARRAY_TASK_MIN=1", "SLURM_ARRAY_TASK_MAX=8", NULL},
                 0, 0, 8);
    /* Only the count (older Slurm lacks MIN/MAX in some paths). */
    expect_shard((const char *[]){"SLURM_ARRAY_TASK_ID=5", "SLURM_ARRAY_TASK_COUNT=6", NULL}, 0, 5, 6);
    /* --array=0-15:4: ids 0, 4, 8, 12 are shards 0..3 of 4. */
    expect_shard((const char *[]){"SLURM_ARRAY_TASK_ID=8", "SLURM_ARRAY_TASK_COUNT=4", "SLURM_ARRAY_TASK_MIN=0",
                                  "SLURM_ARRAY_TASK_MAX=12", "SLURM_ARRAY_TASK_STEP=4", NULL},
                 0, 2, 4);
    /* --array=1,3,8: three tasks whose ids are no range. */
    expect_refused((const char *[]){"SLURM_ARRAY_TASK_ID=3", "SLURM_ARRAY_TASK_COUNT=3", "SLURM_ARRAY_TASK_MIN=1",
                                    "SLURM_ARRAY_TASK_MAX=8", NULL},
                   0, "not one range");
    expect_refused((const char *[]){"SLURM_ARRAY_TASK_ID=3", NULL}, 0, "array's size is not set");
    expect_refused((const char *[]){"SLURM_ARRAY_TASK_ID=9", "SLURM_ARRAY_TASK_COUNT=4", NULL}, 0, "not in the array");
    /* auto/N must agree with the array. */
    expect_shard((const char *[]){"SLURM_ARRAY_TASK_ID=1", "SLURM_ARRAY_TASK_COUNT=4", NULL}, 4, 1, 4);
    expect_refused((const char *[]){"SLURM_ARRAY_TASK_ID=1", "SLURM_ARRAY_TASK_COUNT=4", NULL}, 3,
                   "--shard auto/3: the environment says 4 shards");
}

static void test_kubernetes_indexed_job(void **state)
{
    (void)state;
    /* Kubernetes sets JOB_COMPLETION_INDEX only; the count comes from
     * auto/N or FMIMAGE_SHARD_COUNT (examples/kubernetes/indexed-job.yaml). */
    expect_shard((const char *[]){"JOB_COMPLETION_INDEX=3", "FMIMAGE_SHARD_COUNT=4", NULL}, 0, 3, 4);
    expect_shard((const char *[]){"JOB_COMPLETION_INDEX=0", NULL}, 4, 0, 4);
    expect_shard((const char *[]){"JOB_COMPLETION_INDEX=2", "FMIMAGE_SHARD_COUNT=4", NULL}, 4, 2, 4);
    expect_refused((const char *[]){"JOB_COMPLETION_INDEX=2", NULL}, 0, "completions are not given");
    expect_refused((const char *[]){"JOB_COMPLETION_INDEX=4", "FMIMAGE_SHARD_COUNT=4", NULL}, 0,
                   "not below the completions count");
    expect_refused((const char *[]){"JOB_COMPLETION_INDEX=x", "FMIMAGE_SHARD_COUNT=4", NULL}, 0, "not an index");
}

static void test_plain_and_none(void **state)
{
    (void)state;
    expect_shard((const char *[]){"FMIMAGE_SHARD=1/3", NULL}, 0, 1, 3);
    /* FMIMAGE_SHARD, set by the user, wins over a scheduler's variables. */
    expect_shard((const char *[]){"FMIMAGE_SHARD=0/2", "SLURM_ARRAY_TASK_ID=3", "SLURM_ARRAY_TASK_COUNT=4", NULL},
                 0, 0, 2);
    expect_refused((const char *[]){"FMIMAGE_SHARD=3/3", NULL}, 0, "FMIMAGE_SHARD: must be K/N");
    expect_refused((const char *[]){NULL}, 0, "--shard auto: no shard in the environment");
    expect_refused((const char *[]){"SLURM_ARRAY_TASK_ID=", NULL}, 0, "no shard in the environment");
}

/* ---- granted CPUs ---- */

static char root[256];

static void put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0777);
            *p = '/';
        }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_granted_cpus(void **state)
{
    (void)state;
    const char *src;
    snprintf(root, sizeof root, "build/test-tmp/shard-XXXXXX");
    mkdir("build", 0777);
    mkdir("build/test-tmp", 0777);
    assert_non_null(mkdtemp(root));
    fake_env = (const char *[]){NULL};
    /* No cgroup files: the affinity mask decides. */
    assert_int_equal(shard_granted_cpus(root, 6, env_lookup, &src), 6);
    assert_string_equal(src, "CPU affinity");
    /* cgroup v2: 1.5 CPUs of quota round up to 2; "max" is no limit. */
    put("proc/self/cgroup", "0::/kubepods/pod1/c1\n");
    put("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "150000 100000\n");
    assert_int_equal(shard_granted_cpus(root, 64, env_lookup, &src), 2);
    assert_string_equal(src, "cgroup CPU quota");
    put("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "max 100000\n");
    assert_int_equal(shard_granted_cpus(root, 64, env_lookup, &src), 64);
    /* A parent's quota binds its children. */
    put("sys/fs/cgroup/kubepods/pod1/cpu.max", "300000 100000\n");
    assert_int_equal(shard_granted_cpus(root, 64, env_lookup, &src), 3);
    /* The affinity mask is smaller still. */
    assert_int_equal(shard_granted_cpus(root, 2, env_lookup, &src), 2);
    assert_string_equal(src, "CPU affinity");
    /* cgroup v1: cfs quota over period in the cpu controller's hierarchy. */
    put("proc/self/cgroup", "12:memory:/slurm/uid_0/job_7\n4:cpu,cpuacct:/slurm/uid_0/job_7\n");
    put("sys/fs/cgroup/cpu,cpuacct/slurm/uid_0/job_7/cpu.cfs_quota_us", "400000\n");
    put("sys/fs/cgroup/cpu,cpuacct/slurm/uid_0/job_7/cpu.cfs_period_us", "100000\n");
    assert_int_equal(shard_granted_cpus(root, 64, env_lookup, &src), 4);
    put("sys/fs/cgroup/cpu,cpuacct/slurm/uid_0/job_7/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(shard_granted_cpus(root, 64, env_lookup, &src), 64);
    /* SLURM_CPUS_PER_TASK (sbatch --cpus-per-task) bounds it too. */
    fake_env = (const char *[]){"SLURM_CPUS_PER_TASK=3", NULL};
    assert_int_equal(shard_granted_cpus(root, 64, env_lookup, &src), 3);
    assert_string_equal(src, "SLURM_CPUS_PER_TASK");
    fake_env = (const char *[]){"SLURM_CPUS_PER_TASK=junk", NULL};
    assert_int_equal(shard_granted_cpus(root, 8, env_lookup, &src), 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slurm_array),
        cmocka_unit_test(test_kubernetes_indexed_job),
        cmocka_unit_test(test_plain_and_none),
        cmocka_unit_test(test_granted_cpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
