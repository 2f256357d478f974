/* shard: which part of a batch this process makes, and how many CPUs it was
 * given, from what the scheduler that started it says (DESIGN.md "Many
 * machines"). The environment is read through a function so a test can set
 * it as Slurm or Kubernetes would. */
#ifndef FM_CLI_SHARD_H
#define FM_CLI_SHARD_H

#include <stddef.h>

typedef const char *(*shard_env_fn)(const char *name);

/* K and N for "--shard auto" (n_given = 0) or "--shard auto/N" (n_given =
 * N): FMIMAGE_SHARD=K/N; else a Slurm array task (SLURM_ARRAY_TASK_ID with
 * SLURM_ARRAY_TASK_COUNT or _MIN/_MAX, and _STEP); else a Kubernetes
 * Indexed Job (JOB_COMPLETION_INDEX with N from auto/N or
 * FMIMAGE_SHARD_COUNT). Returns 0, or -1 with why ("WHAT: why") set. */
int shard_auto(int n_given, shard_env_fn env, int *k, int *n, char *why, size_t why_len);

/* The CPUs this process may use: the fewest of affinity_cpus (the
 * scheduler's cpuset, from sched_getaffinity), the cgroup CPU quota (v2
 * cpu.max, v1 cpu.cfs_quota_us over cpu.cfs_period_us, rounded up, of its
 * cgroup and every ancestor) and SLURM_CPUS_PER_TASK; at least 1. root is
 * prefixed to /proc/self/cgroup and /sys/fs/cgroup ("" on a real system);
 * *source names the bound that decided. */
int shard_granted_cpus(const char *root, int affinity_cpus, shard_env_fn env, const char **source);

#endif
