/* core_strbuf: a growing NUL-terminated string. */
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

void core_sb_append(core_strbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void core_sb_puts(core_strbuf *b, const char *s) { core_sb_append(b, s, strlen(s)); }

char *core_sb_take(core_strbuf *b)
{
    core_sb_append(b, "", 0); /* "" when nothing was appended */
    char *s = b->oom ? (free(b->s), NULL) : b->s;
    *b = (core_strbuf){0};
    return s;
}
