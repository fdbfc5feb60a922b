/* mount_info.c - what a wdeltafs mount tells about a model directory it
 * serves: the attribute user.wdelta.delta names the .wdelta behind it. */
#include "util/util.h"
#include <errno.h>
#include <string.h>
#include <sys/xattr.h>

int wd_mount_delta_of(const char *dir, char *out, size_t n, wd_err *err)
{
    if (n < 2) return wd_errf(err, "%s: no room for the delta's path", dir);
    ssize_t len = getxattr(dir, "user.wdelta.delta", out, n - 1);
    if (len < 0) {
        int e = errno;
        if (e == ENODATA || e == ENOTSUP)
            return wd_errk(err, WD_ERR_MISSING, "%s is not a model directory served by wdeltafs (no user.wdelta.delta)",
                           dir);
        return wd_errk(err, e == ENOENT ? WD_ERR_MISSING : WD_ERR_DATA, "%s: user.wdelta.delta: %s", dir,
                       strerror(e));
    }
    out[len] = 0;
    if (!len || memchr(out, 0, (size_t)len)) return wd_errf(err, "%s: user.wdelta.delta is not a path", dir);
    return 0;
}
