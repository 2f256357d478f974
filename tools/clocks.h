/* clocks.h: the wall and CPU clocks of tools/bench.c and tools/kbench.c. */
#ifndef FM_TOOLS_CLOCKS_H
#define FM_TOOLS_CLOCKS_H

#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU time of all threads: on a shared machine, time / threads is what the
 * run would take with the cores to itself. */
static double cpu_now(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

#endif
