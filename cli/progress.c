#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double cli_since_start(void)
{
    FILE *f = fopen("/proc/self/stat", "r");
    char buf[1024];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    /* after "pid (comm)", whose comm may hold spaces and ')': field 22, starttime */
    const char *s = strrchr(buf, ')');
    unsigned long long ticks = 0;
    if (!s || sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                     &ticks) != 1)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    struct timespec ts;
    if (hz <= 0 || clock_gettime(CLOCK_BOOTTIME, &ts)) return -1;
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9 - (double)ticks / (double)hz;
}

double cli_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cli_terminal_columns(int fd)
{
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    const char *env = getenv("COLUMNS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v > 0 && v <= 10000) return (int)v;
    }
    return 80;
}

/* Columns a UTF-8 string takes, counted as one per code point (labels are
 * file names; wide characters are rare there and only make the bar short). */
static int u8_width(const char *s)
{
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* The suffix of s that is its last n code points. */
static const char *u8_tail(const char *s, int n)
{
    int skip = u8_width(s) - n;
    for (; *s && skip > 0; s++)
        if (((unsigned char)s[1] & 0xc0) != 0x80) skip--;
    return s;
}

void cli_progress_start(cli_progress *p, const char *label)
{
    p->label = label;
    p->start = p->last = cli_now();
    p->drawn = 0;
}

void cli_progress_clear(cli_progress *p)
{
    if (!p->drawn) return;
    fprintf(stderr, "\r\033[K");
    p->drawn = 0;
}

/* One line, at most cols - 1 columns (a line that fills the last column
 * makes some terminals wrap, and the next \r would then redraw only the
 * wrapped part): the label, a bar, step/steps, s/it and ETA. On a narrow
 * terminal the timings go first, then the label's head ("...end.png": the
 * end of a path names the file), then the bar. */
static void draw_bar(cli_progress *p, int step, int steps, double per)
{
    enum { MAX_BAR = 30, MIN_BAR = 5, SHORT_BAR = 10, MIN_LABEL = 8 };
    int limit = cli_terminal_columns(2) - 1;
    if (limit < 1) limit = 1;
    char full[96], brief[32];
    int nf = snprintf(full, sizeof full, " %d/%d %.2f s/it ETA %.0f s", step, steps, per, per * (steps - step));
    int nb = snprintf(brief, sizeof brief, " %d/%d", step, steps);
    const char *head = "", *label = p->label, *tail = full;
    int lw = u8_width(label);
    int room = limit - lw - nf - 3; /* " [" and "]" */
    if (room < SHORT_BAR) {
        tail = brief;
        room = limit - lw - nb - 3;
    }
    if (room < MIN_BAR && limit - nb - 3 - SHORT_BAR >= MIN_LABEL) {
        lw = limit - nb - 3 - SHORT_BAR;
        head = "...";
        label = u8_tail(p->label, lw - 3);
        room = SHORT_BAR;
    }
    if (room >= MIN_BAR) {
        char bar[MAX_BAR + 1];
        int w = room < MAX_BAR ? room : MAX_BAR, fill = step * w / steps;
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\r%s%s [%s]%s\033[K", head, label, bar, tail);
    } else if (lw + nb <= limit) {
        fprintf(stderr, "\r%s%s\033[K", label, brief);
    } else if (limit - nb >= MIN_LABEL) {
        fprintf(stderr, "\r...%s%s\033[K", u8_tail(p->label, limit - nb - 3), brief);
    } else {
        fprintf(stderr, "\r%.*s\033[K", limit, brief + 1);
    }
    fflush(stderr);
    p->drawn = 1;
}

int cli_progress_step(void *user, int step, int steps)
{
    cli_progress *p = user;
    double now = cli_now();
    if (p->verbose) {
        cli_progress_clear(p);
        fprintf(stderr, "%s: step %d/%d %.3f s\n", p->label, step, steps, now - p->last);
    }
    p->last = now;
    if (p->enabled && p->tty && steps > 0 && step > 0) draw_bar(p, step, steps, (now - p->start) / step);
    return p->interrupted && *p->interrupted;
}

void cli_progress_stage(void *user, const char *stage, double seconds)
{
    cli_progress *p = user;
    p->last = cli_now();
    if (!p->verbose) return;
    cli_progress_clear(p);
    fprintf(stderr, "%s: %s %.3f s\n", p->label, stage, seconds);
    if (!strcmp(stage, "plan") && !p->first_call_shown++) {
        double since = cli_since_start();
        if (since >= 0)
            fprintf(stderr, "fmimage: first U-Net call %.2f s after the process started (%.2f s CPU, all threads)\n",
                    since, cli_cpu_seconds());
    }
}

void cli_progress_done(cli_progress *p, int steps, double seconds)
{
    cli_progress_clear(p);
    if (!p->enabled) return;
    char tail[64];
    int nt = snprintf(tail, sizeof tail, " %d steps %.1f s", steps, seconds);
    int keep = cli_terminal_columns(2) - 1 - nt - 3;
    /* On a terminal the line fits as the bar did: a long path loses its head. */
    if (p->tty && u8_width(p->label) + nt > keep + 3 && keep > 0)
        fprintf(stderr, "...%s%s\n", u8_tail(p->label, keep), tail);
    else
        fprintf(stderr, "%s%s\n", p->label, tail);
}
