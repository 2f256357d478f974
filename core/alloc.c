#include "core/core.h"

#include <stdlib.h>
#include <string.h>

void *fm_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0)
        return NULL;
    return p;
}

void *fm_calloc(size_t bytes)
{
    void *p = fm_alloc(bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void fm_free(void *p) { free(p); }

void *fm_alloc_hooked(const fm_alloc_hook *hook, size_t bytes)
{
    if (hook && hook->refuse && hook->refuse(hook->user, bytes))
        return NULL;
    return fm_alloc(bytes);
}
