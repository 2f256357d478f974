/* promptfile: A1111 "prompts from file" lines. One job line per prompt:
 * a plain line is a prompt; a line starting with "--" is split like a POSIX
 * shell (Python shlex) into --key value pairs with A1111's keys. Blank lines
 * and lines whose first non-blank character is '#' are skipped. */
#ifndef FM_PROMPTFILE_H
#define FM_PROMPTFILE_H

#include <stddef.h>
#include <stdint.h>

/* What one line sets; fields not set keep the command line's values. */
typedef struct pf_line {
    int line_no;                    /* 1-based */
    char *prompt, *negative;        /* NULL = not set */
    char *sampler, *scheduler, *init_image;
    int has_seed;
    uint64_t seed;
    int steps, width, height, n_iter, clip_skip; /* 0 = not set */
    float cfg, strength;            /* NaN = not set */
} pf_line;

/* Parses one line (without its newline). Returns 1 for a job line, 0 for a
 * skipped line, -1 with a message in why for a bad line. */
int pf_parse_line(const char *text, size_t len, int line_no, pf_line *out, char *why, size_t why_len);
void pf_line_free(pf_line *l);

/* Python shlex.split (posix mode, no comments): words into argv (malloc'd
 * array of malloc'd strings). Returns the word count or -1 with why set. */
int pf_shlex_split(const char *s, size_t len, char ***argv, char *why, size_t why_len);
void pf_free_words(char **argv, int argc);

#endif
