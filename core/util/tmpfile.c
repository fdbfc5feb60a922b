/* tmpfile.c - temporary outputs: created next to the output under names
 * that carry the writer's process id, so that what a killed process left
 * behind is recognised (its process is gone) and removed by the next
 * command that writes the same output.
 *
 * Names: OUT.KIND.PID.RANDOM, KIND one of "tmp" (a .wdelta being written,
 * a model directory being rebuilt), "rebuild" (rebase/convert: the model
 * rebuilt before it is stored again) or "new" (apply --force: the new
 * directory before it is swapped in).  Files are created with mode 0666
 * and directories 0777 less the umask, as any new file; callers tighten or
 * copy a mode where they need to. */
#include "util/util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const kinds[] = {"tmp", "rebuild", "new"};

static uint32_t rnd32(void)
{
    uint32_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec * 2654435761u ^ (uint32_t)(uintptr_t)&r;
    }
    return r;
}

/* Create OUT.KIND.PID.RANDOM: a file (returns its descriptor, open for
 * writing) or a directory (returns 0).  *path_out is malloc'd. */
static int tmp_create(const char *out_path, const char *kind, int dir, mode_t mode, char **path_out, wd_err *err)
{
    size_t n = strlen(out_path) + strlen(kind) + 48;
    char *p = malloc(n);
    if (!p) return wd_errf(err, "out of memory");
    for (int tries = 0; tries < 100; tries++) {
        snprintf(p, n, "%s.%s.%ld.%08x", out_path, kind, (long)getpid(), rnd32());
        int fd = dir ? mkdir(p, mode) : open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd >= 0) {
            *path_out = p;
            return fd;
        }
        if (errno != EEXIST) break;
    }
    int e = errno;
    wd_errf(err, "cannot create a temporary %s next to %s (%s): %s", dir ? "directory" : "file", out_path, p,
            strerror(e));
    free(p);
    return -1;
}

int wd_tmp_file(const char *out_path, const char *kind, mode_t mode, char **path_out, wd_err *err)
{
    return tmp_create(out_path, kind, 0, mode, path_out, err);
}

int wd_tmp_dir(const char *out_path, const char *kind, mode_t mode, char **path_out, wd_err *err)
{
    return tmp_create(out_path, kind, 1, mode, path_out, err);
}

int wd_stop_requested(const volatile sig_atomic_t *stop, wd_err *err)
{
    if (!stop || !*stop) return 0;
    wd_errf(err, "interrupted (signal %d)", (int)*stop);
    return 1;
}

/* Remove what is at name in dirfd: a regular file, or a directory of
 * such (at most `depth` levels); never follows a symbolic link, and only
 * what belongs to us (uid).  0 when it is gone. */
static int remove_at(int at, const char *name, uid_t uid, int depth)
{
    struct stat st;
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW)) return errno == ENOENT ? 0 : -1;
    if (st.st_uid != uid) return -1;
    if (!S_ISDIR(st.st_mode)) return S_ISREG(st.st_mode) ? unlinkat(at, name, 0) : -1;
    if (depth <= 0) return -1;
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) remove_at(dirfd(d), e->d_name, uid, depth - 1);
    closedir(d);
    return unlinkat(at, name, AT_REMOVEDIR);
}

/* The process id in NAME if it is "BASE.KIND.PID" or "BASE.KIND.PID.*",
 * else 0. */
static long temp_pid(const char *name, const char *base, size_t bl)
{
    if (strncmp(name, base, bl) || name[bl] != '.') return 0;
    const char *p = name + bl + 1;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t kl = strlen(kinds[k]);
        if (strncmp(p, kinds[k], kl) || p[kl] != '.') continue;
        const char *q = p + kl + 1;
        long pid = 0;
        while (*q >= '0' && *q <= '9' && pid < 100000000) pid = pid * 10 + (*q++ - '0');
        if (pid > 0 && (*q == '.' || *q == 0)) return pid;
    }
    return 0;
}

static int process_gone(long pid)
{
    if (pid == (long)getpid()) return 0;
    return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

long wd_remove_stale(const char *out_path, wd_err *err)
{
    size_t ol = strlen(out_path);
    while (ol > 1 && out_path[ol - 1] == '/') ol--;
    char *copy = strndup(out_path, ol);
    if (!copy) return wd_errf(err, "out of memory");
    char *slash = strrchr(copy, '/');
    const char *dir = slash ? (slash == copy ? "/" : copy) : ".", *base = slash ? slash + 1 : copy;
    if (slash) *slash = 0;
    long removed = 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0) close(dfd);
        free(copy);
        return 0; /* no directory, nothing left in it */
    }
    size_t bl = strlen(base);
    uid_t uid = geteuid();
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = temp_pid(e->d_name, base, bl);
        if (pid && process_gone(pid) && remove_at(dfd, e->d_name, uid, 2) == 0) removed++;
    }
    closedir(d);
    free(copy);
    return removed;
}
