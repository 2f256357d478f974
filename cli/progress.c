#include "progress.h"

#include <stdio.h>
#include <time.h>

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_start(cli_progress *p, const char *label)
{
    p->label = label;
    p->start = p->last = cli_now();
}

int cli_progress_step(void *user, int step, int steps)
{
    cli_progress *p = user;
    if (p->enabled && p->tty && steps > 0) {
        double now = cli_now(), per = (now - p->start) / step;
        enum { W = 30 };
        char bar[W + 1];
        int fill = step * W / steps;
        for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '.';
        bar[W] = 0;
        fprintf(stderr, "\r%s [%s] %d/%d %.2f s/it ETA %.0f s  ", p->label, bar, step, steps, per,
                per * (steps - step));
        fflush(stderr);
    }
    return p->interrupted && *p->interrupted;
}

void cli_progress_done(cli_progress *p, int steps, double seconds)
{
    if (!p->enabled) return;
    if (p->tty) fprintf(stderr, "\r\033[K");
    fprintf(stderr, "%s %d steps %.1f s\n", p->label, steps, seconds);
}
