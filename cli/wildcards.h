/* wildcards: Dynamic Prompts templates (the sd-dynamic-prompts extension's
 * parser, the dynamicprompts package) expanded into prompts before
 * anything else sees them (docs/DESIGN.md "Wildcards and dynamic prompts"):
 * {a|b|c} variants, {N$$...}, {L-H$$...} and {N$$SEP$$...} counts, {W::a}
 * weights, __name__ wildcards read from DIR/name.txt, ${name=value} / ${name}
 * variables, %{wrapper$$inner} wraps, '#' comments.
 *
 * Two ways to expand: every combination in CombinatorialPromptGenerator's
 * order (wc_expand_all), or one random choice drawn from the image's seed
 * (wc_expand_random). A prompt without '{' and without "__" is not a
 * template (wc_is_template): it stays as written. */
#ifndef FM_CLI_WILDCARDS_H
#define FM_CLI_WILDCARDS_H

#include <stddef.h>
#include <stdint.h>

/* --combinatorial refuses templates with more expansions than this. */
#define WC_MAX_PROMPTS 10000
/* Deeper {..} / wildcard nesting is refused (a one-line error, no recursion
 * to run out of stack). */
#define WC_MAX_DEPTH 100

typedef struct wc_list {
    char **v;
    int n;
} wc_list;

int wc_is_template(const char *s);

/* Every expansion of tmpl (wildcards looked up in dir; NULL: a wildcard is
 * an error) into out, in dynamicprompts' order. Returns 0, or -1 with why
 * (bad syntax, a missing or self-including wildcard, more than max
 * expansions, too deep). */
int wc_expand_all(const char *tmpl, const char *dir, int max, wc_list *out, char *why, size_t why_len);

/* One expansion of tmpl chosen with a splitmix64 stream seeded by seed
 * (docs/DESIGN.md says how each choice is drawn). Returns a malloc'd string,
 * or NULL with why. The template is checked whole first, so a bad one fails
 * for every seed alike. */
char *wc_expand_random(const char *tmpl, const char *dir, uint64_t seed, char *why, size_t why_len);

void wc_list_free(wc_list *l);

#endif
