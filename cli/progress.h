/* progress: a bar per image on a terminal, one line per image in a pipe. */
#ifndef FM_CLI_PROGRESS_H
#define FM_CLI_PROGRESS_H

#include <signal.h>

typedef struct cli_progress {
    int enabled, tty;
    const char *label;        /* "00000-42.png" */
    double start, last;       /* seconds */
    volatile sig_atomic_t *interrupted;
} cli_progress;

double cli_now(void);
void cli_progress_start(cli_progress *p, const char *label);
/* fm_progress_fn: draws the bar; returns non-zero once SIGINT arrived. */
int cli_progress_step(void *user, int step, int steps);
void cli_progress_done(cli_progress *p, int steps, double seconds);

#endif
