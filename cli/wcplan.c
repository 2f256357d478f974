/* wcplan: Dynamic Prompts templates into jobs (cli/wcplan.h). */
#include "wcplan.h"

#include <stdio.h>
#include <stdlib.h>

static const char *line_prompt(const cli_options *o, const pf_line *l)
{
    return l ? l->prompt : (o->prompt ? o->prompt : "");
}

int wcp_plan(const cli_options *o, pf_line *lines, int n_lines, int *bad, wc_list **vars)
{
    int n = o->prompt_file ? n_lines : 1;
    *vars = calloc((size_t)(n ? n : 1), sizeof **vars);
    if (!*vars) {
        fprintf(stderr, "fmimage: out of memory\n");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        pf_line *l = o->prompt_file ? &lines[i] : NULL;
        if (l && l->line_no < 0) continue;
        const char *p = line_prompt(o, l);
        if (!wc_is_template(p)) continue;
        char why[512] = "";
        int rc;
        if (o->combinatorial) {
            rc = wc_expand_all(p, o->wildcards_dir, WC_MAX_PROMPTS, &(*vars)[i], why, sizeof why);
            if (!rc && (*vars)[i].n == 0) {
                snprintf(why, sizeof why, "prompt: the template has no expansions");
                rc = -1;
            }
        } else { /* checked whole once: a bad template fails for every seed */
            char *s = wc_expand_random(p, o->wildcards_dir, 0, why, sizeof why);
            rc = s ? 0 : -1;
            free(s);
        }
        if (!rc) continue;
        if (!l) {
            fprintf(stderr, "fmimage: %s\n", why);
            return 1;
        }
        fprintf(stderr, "fmimage: %s:%d: %s\n", o->prompt_file, l->line_no, why);
        int line_no = l->line_no;
        pf_line_free(l);
        l->line_no = -line_no;
        ++*bad;
    }
    return 0;
}

void wcp_free(wc_list *vars, int n)
{
    for (int i = 0; vars && i < n; i++) wc_list_free(&vars[i]);
    free(vars);
}

char *wcp_draw(const cli_options *o, const pf_line *l, uint64_t seed, int *oom)
{
    const char *p = line_prompt(o, l);
    *oom = 0;
    if (!wc_is_template(p)) return NULL;
    char why[512];
    char *s = wc_expand_random(p, o->wildcards_dir, seed, why, sizeof why);
    if (!s) *oom = 1;
    return s;
}
