/* progress: a bar per image on a terminal, one line per image in a pipe;
 * with -v, one line per stage (DESIGN.md "Messages and exit codes"). */
#ifndef FM_CLI_PROGRESS_H
#define FM_CLI_PROGRESS_H

#include <signal.h>
#include <stdatomic.h>

typedef struct cli_progress {
    int enabled, tty;         /* bar / final lines; stderr is a terminal */
    int verbose;              /* a line per stage and per step */
    int drawn;                /* a bar is on the screen (the cursor ends it) */
    int first_call_shown;     /* -v told the time to the process's first U-Net call (after its first "plan") */
    const char *label;        /* "00000-42.png" */
    double start, last;       /* seconds: the image began, the last stage or step ended */
    atomic_int *interrupted;
} cli_progress;

double cli_now(void);
/* Seconds since the process started (before main, exec included;
 * /proc/self/stat's start time, 10 ms steps), or -1 where unknown. */
double cli_since_start(void);
/* CPU seconds of the whole process so far, all threads. */
double cli_cpu_seconds(void);
/* Columns of the terminal on fd: TIOCGWINSZ, else $COLUMNS, else 80. */
int cli_terminal_columns(int fd);
void cli_progress_start(cli_progress *p, const char *label);
/* fm_progress_fn: draws the bar; returns non-zero once a signal arrived. */
int cli_progress_step(void *user, int step, int steps);
/* fm_stage_fn (and the CLI's own "write"): with -v, "LABEL: STAGE 0.123 s";
 * after the run's first "plan", also the time from the process's start to
 * its first U-Net call. */
void cli_progress_stage(void *user, const char *stage, double seconds);
/* Removes the bar from the screen, if one is drawn. */
void cli_progress_clear(cli_progress *p);
void cli_progress_done(cli_progress *p, int steps, double seconds);

#endif
