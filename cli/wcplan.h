/* wcplan: where the CLI expands Dynamic Prompts templates (cli/wildcards.h)
 * into jobs: --combinatorial's lists per prompt-file line (or the command
 * line), checked before the model loads; random draws per job. */
#ifndef FM_CLI_WCPLAN_H
#define FM_CLI_WCPLAN_H

#include <stdint.h>

#include "options.h"
#include "promptfile.h"
#include "wildcards.h"

/* Every template of the run (lines[0..n_lines) with --prompt-file, else
 * o->prompt) checked, and with --combinatorial expanded into (*vars)[i]
 * (n 0: not a template, the prompt as written). A bad line is reported
 * ("fmimage: FILE:LINE: why"), counted in *bad and marked bad as
 * plan_seeds does (line_no < 0); a bad command-line template returns 1.
 * Returns 0 or the exit code. */
int wcp_plan(const cli_options *o, pf_line *lines, int n_lines, int *bad, wc_list **vars);
void wcp_free(wc_list *vars, int n);
/* The prompt a job of line l draws with seed (random mode), malloc'd; NULL
 * when the prompt is not a template (or out of memory: *oom set). */
char *wcp_draw(const cli_options *o, const pf_line *l, uint64_t seed, int *oom);

#endif
