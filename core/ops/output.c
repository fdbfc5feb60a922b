/* output.c - what `--force` may overwrite: only wdelta's own outputs.
 * (Output directories of apply: apply.c, wd_apply_replace.) */
#include "util/util.h"
#include "format/layout.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int wd_output_check(const char *path, int force, unsigned *keep_mode, wd_err *err)
{
    struct stat st;
    *keep_mode = 0;
    if (lstat(path, &st)) {
        if (errno == ENOENT) return 0;
        return wd_errf(err, "%s: %s", path, strerror(errno));
    }
    if (!force) return wd_errf(err, "%s already exists (use --force to replace it)", path);
    if (!S_ISREG(st.st_mode))
        return wd_errf(err, "%s exists and is not a regular file (%s); --force replaces only a .wdelta file",
                       path, S_ISDIR(st.st_mode) ? "a directory" : S_ISLNK(st.st_mode) ? "a symbolic link" : "special");
    unsigned char magic[WD_MAGIC_LEN];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return wd_errf(err, "%s: %s", path, strerror(errno));
    ssize_t n = pread(fd, magic, sizeof magic, 0);
    close(fd);
    if (n != (ssize_t)sizeof magic || memcmp(magic, WD_MAGIC, WD_MAGIC_LEN))
        return wd_errf(err, "%s exists and is not a .wdelta file; not replacing it (--force replaces only "
                            "a delta written before)", path);
    *keep_mode = (unsigned)(st.st_mode & 07777);
    return 0;
}

int wd_output_keep_mode(const char *path, unsigned mode, wd_err *err)
{
    if (mode && chmod(path, (mode_t)mode)) return wd_errf(err, "%s: cannot restore its mode %o: %s", path, mode, strerror(errno));
    return 0;
}
