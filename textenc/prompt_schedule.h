/* prompt_schedule: A1111's prompt editing, alternation and AND, as its
 * modules/prompt_parser.py does them (tests/data/README.md#prompt-schedules).
 *
 *   te_prompt_and_split   get_multicond_prompt_list for one prompt: the text
 *                         split at the word AND, each part's trailing ":w"
 *                         weight taken off.
 *   te_prompt_schedule    get_learned_conditioning_prompt_schedules for one
 *                         prompt: [(end_at_step, text)] with [from:to:when],
 *                         [to:when], [from::when], [a|b|c] resolved.
 *   te_schedule_index     which entry reconstruct_cond_batch picks at a
 *                         denoiser call (A1111's CFGDenoiser.step).
 *
 * The parser is recursive only through brackets and refuses more than
 * TE_SCHEDULE_MAX_DEPTH nested ones (A1111 fails there too: Python's
 * recursion limit); every other input gives a schedule, as lark's parse
 * error gives [(steps, prompt)]. */
#ifndef FM_PROMPT_SCHEDULE_H
#define FM_PROMPT_SCHEDULE_H

#include "core/core.h"

#define TE_SCHEDULE_MAX_DEPTH 256
/* AND parts of one prompt: more are refused (A1111 batches them all in one
 * U-Net call; 1000 parts would need 1000 U-Net evaluations per step). */
#define TE_MAX_AND_PARTS 64

typedef struct {
    char *text;    /* the part's text, trailing whitespace and weight removed */
    double weight; /* 1.0 unless ":w" ended the part */
} te_and_part;

typedef struct {
    te_and_part *parts;
    int n;
} te_and_split;

/* prompt split as A1111 splits it (re \bAND\b; a byte >= 0x80 counts as a
 * word character, Python's \w for letters). Fails with FM_EINPUT over
 * TE_MAX_AND_PARTS parts, or on memory. */
int te_prompt_and_split(const char *prompt, te_and_split *out, fm_error *err);
void te_and_split_free(te_and_split *s);

typedef struct {
    int end_at_step;
    char *text;
} te_schedule_entry;

typedef struct {
    te_schedule_entry *e;
    int n; /* >= 1; entries in increasing end_at_step, the last one = steps */
} te_schedule;

/* The schedule of prompt for `steps` (A1111 passes the sampler's
 * total_steps). hires_steps 0: a first pass; > 0: the schedule of a hires
 * pass of hires_steps after steps first-pass steps (integer whens count
 * from the first pass's start, fractions from 1.0 = the end of the first
 * pass). Fails with FM_EINPUT when a step number is not finite
 * ([a:b:1e309]: A1111's int() raises) or brackets nest too deep. */
int te_prompt_schedule(const char *prompt, int steps, int hires_steps, te_schedule *out, fm_error *err);
void te_schedule_free(te_schedule *s);

/* reconstruct_cond_batch's choice at denoiser call `step` (0-based): the
 * first entry with step <= end_at_step, or entry 0 past the last one. */
int te_schedule_index(const te_schedule *s, int step);

#endif
