/* libFuzzer: Dynamic Prompts templates (cli/wildcards.c): wc_expand_all
 * (at most 100 prompts) and wc_expand_random on the bytes as a template,
 * with tests/data/wildcards/ as --wildcards-dir (run from the repository
 * root). Seeds seed-wc-*: the hostile templates of issue 19 item 3. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/wildcards.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    char why[300];
    wc_list l;
    why[0] = 0;
    if (wc_expand_all(s, "tests/data/wildcards", 100, &l, why, sizeof why) == 0) {
        if (l.n > 100) abort();
        wc_list_free(&l);
    } else if (!why[0] || strchr(why, '\n')) {
        abort(); /* a failure says why, on one line */
    }
    why[0] = 0;
    char *r = wc_expand_random(s, "tests/data/wildcards", size, why, sizeof why);
    if (!r && !why[0]) abort();
    free(r);
    free(s);
    return 0;
}
