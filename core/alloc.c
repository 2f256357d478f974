#include "core/core.h"

#include <stdlib.h>
#include <string.h>

void *core_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0)
        return NULL;
    return p;
}

void *core_calloc(size_t bytes)
{
    void *p = core_alloc(bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void core_free(void *p) { free(p); }

void *core_alloc_hooked(const core_alloc_hook *hook, size_t bytes)
{
    if (hook && hook->refuse && hook->refuse(hook->user, bytes))
        return NULL;
    return core_alloc(bytes);
}
