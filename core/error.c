#include "core/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void core_error_clear(fm_error *err)
{
    if (err) {
        err->code = FM_OK;
        err->msg[0] = 0;
    }
}

int core_fail(fm_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    /* The cause set first in this call is kept; returning its code keeps
     * the code a caller passes on and the message it prints together. */
    if (err->code != FM_OK)
        return err->code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void core_error_prefix(fm_error *err, const char *what)
{
    if (!err || err->code == FM_OK || !what)
        return;
    /* Shift the message right and write "what: " in front, truncating the tail. */
    size_t cap = sizeof err->msg - 1, wl = strlen(what) + 2, ml = strlen(err->msg);
    if (wl >= cap)
        return;
    if (ml > cap - wl)
        ml = cap - wl;
    memmove(err->msg + wl, err->msg, ml);
    err->msg[wl + ml] = 0;
    memcpy(err->msg, what, wl - 2);
    memcpy(err->msg + wl - 2, ": ", 2);
}
