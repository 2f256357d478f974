/* libFuzzer: one prompt-file line (cli/promptfile.c pf_parse_line), bytes
 * as read from the file (NUL allowed; no newline). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/promptfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1); /* exact-size copy: ASan sees any over-read */
    memcpy(s, data, size);
    s[size] = 0;
    pf_line l;
    char why[256];
    why[0] = 0;
    int rc = pf_parse_line(s, size, 7, &l, why, sizeof why);
    if (rc < -1 || rc > 1) abort();
    if (rc == -1 && !why[0]) abort();
    if (rc == 1 && l.line_no != 7) abort();
    if (rc >= 0) pf_line_free(&l);
    free(s);
    return 0;
}
