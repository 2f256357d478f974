/* styles: A1111's styles.csv (modules/styles.py) for --styles-file and
 * --style: each style's prompt merged into the prompt in the order given,
 * its negative_prompt into the negative (docs/DESIGN.md "Prompt schedules,
 * AND and styles"). */
#ifndef FM_CLI_STYLES_H
#define FM_CLI_STYLES_H

#include <stddef.h>

typedef struct {
    char *name, *prompt, *negative;
} sty_style;

typedef struct {
    sty_style *s;
    int n;
} sty_db;

/* Reads a styles.csv as A1111 does (csv.DictReader, skipinitialspace, a
 * UTF-8 BOM skipped; columns name, prompt (or the old "text"),
 * negative_prompt; rows whose name starts with '#' skipped; a later row of
 * the same name wins). Returns 0, or -1 with why ("line N: ..."). */
int sty_load(const char *path, sty_db *db, char *why, size_t why_len);
void sty_free(sty_db *db);
/* The style called name, or NULL. */
const sty_style *sty_find(const sty_db *db, const char *name);
/* merge_prompts(style_prompt, prompt): style_prompt with every "{prompt}"
 * replaced by prompt, or else prompt.strip() and style_prompt.strip()
 * joined by ", " (an empty one left out). Malloc'd; NULL on memory. */
char *sty_merge(const char *style_prompt, const char *prompt);
/* apply_styles_to_prompt over styles[0..n) (their prompts, or with
 * negative their negative prompts). Malloc'd; NULL on memory. */
char *sty_apply(const sty_style *const *styles, int n, const char *prompt, int negative);

#endif
