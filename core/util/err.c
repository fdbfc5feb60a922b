/* err.c - one-line error messages that say what and where. */
#include "wdelta.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Both functions format into a local buffer first: callers may pass
 * err->msg itself as an argument ("%s", err->msg), and vsnprintf into the
 * buffer it is reading from would be undefined. */

/* the message from fmt and ap, and the kind; returns -1 */
static int err_set(wd_err *err, int kind, const char *fmt, va_list ap)
{
    char tmp[sizeof err->msg];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    memcpy(err->msg, tmp, strlen(tmp) + 1);
    err->kind = kind;
    return -1;
}

int wd_errf(wd_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    err_set(err, WD_ERR_DATA, fmt, ap);
    va_end(ap);
    return -1;
}

int wd_errk(wd_err *err, wd_err_kind kind, const char *fmt, ...)
{
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    err_set(err, (int)kind, fmt, ap);
    va_end(ap);
    return -1;
}

int wd_errprefix(wd_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    char prefix[sizeof err->msg], old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* keep as much of both as fits: the prefix first (it says where), then
     * the start of the old message (it says what) */
    size_t pl = strlen(prefix);
    if (pl > sizeof err->msg - 3) pl = sizeof err->msg - 3;
    memcpy(err->msg, prefix, pl);
    memcpy(err->msg + pl, ": ", 2);
    size_t room = sizeof err->msg - pl - 3, ol = strlen(old);
    if (ol > room) ol = room;
    memcpy(err->msg + pl + 2, old, ol);
    err->msg[pl + 2 + ol] = 0;
    return -1;
}
