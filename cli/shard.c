#include "shard.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHARDS 1000000

/* A whole number in lo..hi, nothing else in s. */
static int whole(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int refuse(char *why, size_t n, const char *msg) { snprintf(why, n, "%s", msg); return -1; }

/* K/N from "K/N". */
static int parse_pair(const char *s, long *k, long *n)
{
    const char *slash = s ? strchr(s, '/') : NULL;
    char kbuf[24];
    if (!slash || slash - s >= (long)sizeof kbuf) return -1;
    snprintf(kbuf, sizeof kbuf, "%.*s", (int)(slash - s), s);
    return whole(kbuf, 0, MAX_SHARDS - 1, k) || whole(slash + 1, 1, MAX_SHARDS, n) || *k >= *n ? -1 : 0;
}

/* A Slurm array: ids MIN, MIN+STEP, ..., MAX (--array=0-15:4 has STEP 4);
 * a list such as --array=1,3,8 has no K/N (its ids are no range). */
static int slurm_shard(shard_env_fn env, long *k, long *n, char *why, size_t wn)
{
    long id, min = 0, max = -1, count = -1, step = 1;
    if (whole(env("SLURM_ARRAY_TASK_ID"), 0, LONG_MAX / 2, &id))
        return refuse(why, wn, "SLURM_ARRAY_TASK_ID: not a task id");
    const char *s;
    if ((s = env("SLURM_ARRAY_TASK_MIN")) && whole(s, 0, LONG_MAX / 2, &min))
        return refuse(why, wn, "SLURM_ARRAY_TASK_MIN: not a task id");
    if ((s = env("SLURM_ARRAY_TASK_MAX")) && whole(s, 0, LONG_MAX / 2, &max))
        return refuse(why, wn, "SLURM_ARRAY_TASK_MAX: not a task id");
    if ((s = env("SLURM_ARRAY_TASK_COUNT")) && whole(s, 1, MAX_SHARDS, &count))
        return refuse(why, wn, "SLURM_ARRAY_TASK_COUNT: not a task count");
    if ((s = env("SLURM_ARRAY_TASK_STEP")) && whole(s, 1, LONG_MAX / 2, &step))
        return refuse(why, wn, "SLURM_ARRAY_TASK_STEP: not a step");
    if (max < 0 && count < 0)
        return refuse(why, wn, "SLURM_ARRAY_TASK_ID: the array's size is not set (SLURM_ARRAY_TASK_COUNT or _MAX)");
    if (max < 0) max = min + (count - 1) * step;
    if (max < min || (max - min) % step || id < min || id > max || (id - min) % step)
        return refuse(why, wn, "SLURM_ARRAY_TASK_ID: not in the array's range");
    long span = (max - min) / step + 1;
    if (count < 0) count = span;
    if (count != span || span > MAX_SHARDS)
        return refuse(why, wn, "SLURM_ARRAY_TASK_ID: the array's ids are not one range (use --array=0-N-1)");
    *k = (id - min) / step;
    *n = count;
    return 0;
}

int shard_auto(int n_given, shard_env_fn env, int *k_out, int *n_out, char *why, size_t wn)
{
    long k, n;
    const char *s;
    if ((s = env("FMIMAGE_SHARD")) && *s) {
        if (parse_pair(s, &k, &n)) return refuse(why, wn, "FMIMAGE_SHARD: must be K/N with 0 <= K < N");
    } else if ((s = env("SLURM_ARRAY_TASK_ID")) && *s) {
        if (slurm_shard(env, &k, &n, why, wn)) return -1;
    } else if ((s = env("JOB_COMPLETION_INDEX")) && *s) {
        if (whole(s, 0, MAX_SHARDS - 1, &k)) return refuse(why, wn, "JOB_COMPLETION_INDEX: not an index");
        const char *c = env("FMIMAGE_SHARD_COUNT");
        if (n_given) n = n_given;
        else if (!c || !*c)
            return refuse(why, wn, "JOB_COMPLETION_INDEX: the Job's completions are not given "
                                 "(--shard auto/N or FMIMAGE_SHARD_COUNT)");
        else if (whole(c, 1, MAX_SHARDS, &n))
            return refuse(why, wn, "FMIMAGE_SHARD_COUNT: must be 1..1000000");
        if (k >= n) return refuse(why, wn, "JOB_COMPLETION_INDEX: not below the completions count");
    } else {
        return refuse(why, wn, "--shard auto: no shard in the environment (SLURM_ARRAY_TASK_ID, "
                             "JOB_COMPLETION_INDEX or FMIMAGE_SHARD)");
    }
    /* auto/N states what the job was submitted with: a scheduler that
     * disagrees means the two were not written together. */
    if (n_given && n != n_given) {
        snprintf(why, wn, "--shard auto/%d: the environment says %ld shards", n_given, n);
        return -1;
    }
    *k_out = (int)k;
    *n_out = (int)n;
    return 0;
}

/* ---- CPUs ---- */

static int read_small(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t r = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[r] = 0;
    return 0;
}

/* ceil(quota / period) from "QUOTA PERIOD" (v2 cpu.max); 0 = no limit. */
static long quota_cpus(long quota, long period)
{
    if (quota <= 0 || period <= 0) return 0;
    return (quota + period - 1) / period;
}

static long v2_limit(const char *dir)
{
    char path[PATH_MAX + 16], buf[128];
    snprintf(path, sizeof path, "%s/cpu.max", dir);
    long q, p;
    if (read_small(path, buf, sizeof buf) || sscanf(buf, "%ld %ld", &q, &p) != 2) return 0;
    return quota_cpus(q, p);
}

static long v1_limit(const char *dir)
{
    char path[PATH_MAX + 32], buf[64];
    long q, p;
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    if (read_small(path, buf, sizeof buf) || sscanf(buf, "%ld", &q) != 1) return 0;
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    if (read_small(path, buf, sizeof buf) || sscanf(buf, "%ld", &p) != 1) return 0;
    return quota_cpus(q, p);
}

/* The smallest limit of the cgroup at base/path and its ancestors (a
 * parent's quota binds its children too). */
static long tree_limit(const char *base, const char *path, long (*limit)(const char *))
{
    char dir[PATH_MAX];
    long best = 0;
    if (snprintf(dir, sizeof dir, "%s%s", base, path) >= (int)sizeof dir) return 0;
    size_t stop = strlen(base);
    for (;;) {
        long l = limit(dir);
        if (l && (!best || l < best)) best = l;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < stop) break;
        *slash = 0;
    }
    return best;
}

/* Whether the comma list has the controller "cpu" (v1 "4:cpu,cpuacct:/x"). */
static int has_cpu_controller(const char *list, size_t n)
{
    for (const char *p = list; p < list + n;) {
        const char *comma = memchr(p, ',', (size_t)(list + n - p));
        size_t len = comma ? (size_t)(comma - p) : (size_t)(list + n - p);
        if (len == 3 && !strncmp(p, "cpu", 3)) return 1;
        p += len + 1;
    }
    return 0;
}

static long cgroup_limit(const char *root)
{
    char path[PATH_MAX], line[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long best = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        const char *cg = c2 + 1;
        if (!strcmp(cg, "/")) cg = "";
        long l = 0;
        char base[PATH_MAX];
        if (c2 == c1 + 1) { /* "0::/path": the unified hierarchy */
            snprintf(base, sizeof base, "%s/sys/fs/cgroup", root);
            l = tree_limit(base, cg, v2_limit);
        } else if (has_cpu_controller(c1 + 1, (size_t)(c2 - c1 - 1))) {
            static const char *mounts[] = {"cpu,cpuacct", "cpu", "cpuacct,cpu"};
            for (size_t i = 0; i < sizeof mounts / sizeof *mounts && !l; i++) {
                snprintf(base, sizeof base, "%s/sys/fs/cgroup/%s", root, mounts[i]);
                l = tree_limit(base, cg, v1_limit);
            }
        }
        if (l && (!best || l < best)) best = l;
    }
    fclose(f);
    return best;
}

int shard_granted_cpus(const char *root, int affinity_cpus, shard_env_fn env, const char **source)
{
    long n = affinity_cpus > 0 ? affinity_cpus : 1;
    *source = "CPU affinity";
    long quota = cgroup_limit(root);
    if (quota && quota < n) {
        n = quota;
        *source = "cgroup CPU quota";
    }
    long slurm;
    if (!whole(env("SLURM_CPUS_PER_TASK"), 1, 1 << 20, &slurm) && slurm < n) {
        n = slurm;
        *source = "SLURM_CPUS_PER_TASK";
    }
    return (int)n;
}
