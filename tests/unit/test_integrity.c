/* test_integrity.c - the compressed manifest's unhappy paths (unknown
 * preamble flags, a frame cut short, bytes after it, a frame that is not
 * zstd) and wd_remove_stale (what a killed process left is removed; a live
 * process's temporary, other names and what a symbolic link points to are
 * not). */
#include "internal.h"
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/wd-integrity-XXXXXX");
    ck_assert(mkdtemp(dir) != NULL);
}

static void rm_rf(const char *p)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    ck_assert_int_eq(system(cmd), 0);
}

static void teardown(void)
{
    rm_rf(dir);
}

static const char manifest[] =
    "{\"format\":\"wdelta\",\"version\":2,\"tool\":\"test\",\"strategy\":\"lossless\","
    "\"base_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\","
    "\"result_hash\":\"1111111111111111111111111111111111111111111111111111111111111111\","
    "\"files\":[{\"name\":\"config.json\",\"size\":0,\"safetensors\":false,\"extents\":[]}]}";

/* A v2 file of no blocks: preamble (with flags), the manifest bytes m[0..ml),
 * footer with the right digest. */
static void write_v2(const char *path, uint32_t flags, const void *m, size_t ml)
{
    size_t fsize = WD_PREAMBLE_LEN + ml + WD_FOOTER_LEN;
    unsigned char *f = calloc(1, fsize);
    ck_assert(f != NULL);
    memcpy(f, WD_MAGIC, WD_MAGIC_LEN);
    wd_put_u32(f + 7, 2);
    wd_put_u32(f + 11, flags);
    memcpy(f + WD_PREAMBLE_LEN, m, ml);
    unsigned char *foot = f + fsize - WD_FOOTER_LEN;
    wd_put_u64(foot, WD_PREAMBLE_LEN);
    wd_put_u64(foot + 8, ml);
    wd_put_u64(foot + 16, WD_PREAMBLE_LEN + ml);
    wd_put_u64(foot + 24, 0);
    wd_put_u64(foot + 32, fsize);
    wd_sha256 *h = wd_sha256_new();
    wd_sha256_update(h, f + WD_PREAMBLE_LEN, ml);
    wd_sha256_update(h, foot, 40);
    wd_sha256_final(h, foot + 40);
    memcpy(foot + 80, WD_FOOTER_MAGIC, 8);
    FILE *fp = fopen(path, "wb");
    ck_assert(fp != NULL);
    ck_assert_uint_eq(fwrite(f, 1, fsize, fp), fsize);
    fclose(fp);
    free(f);
}

static int open_msg(const char *path, char *msg, size_t n)
{
    wd_delta *d = NULL;
    wd_err err = {0};
    int rc = wd_delta_open(path, &d, &err);
    snprintf(msg, n, "%s", err.msg);
    if (!rc) wd_delta_close(d);
    return rc;
}

START_TEST(test_zmanifest)
{
    char p[400], msg[1024];
    size_t cap = ZSTD_compressBound(sizeof manifest);
    unsigned char *z = malloc(cap + 16);
    size_t zl = ZSTD_compress(z, cap, manifest, sizeof manifest - 1, 3);
    ck_assert(!ZSTD_isError(zl));
    snprintf(p, sizeof p, "%s/a.wdelta", dir);
    /* plain and compressed manifests both open */
    write_v2(p, 0, manifest, sizeof manifest - 1);
    ck_assert_msg(open_msg(p, msg, sizeof msg) == 0, "%s", msg);
    write_v2(p, WD_FLAG_ZMANIFEST, z, zl);
    ck_assert_msg(open_msg(p, msg, sizeof msg) == 0, "%s", msg);
    /* a flag this version does not know */
    write_v2(p, WD_FLAG_ZMANIFEST | 4, z, zl);
    ck_assert(open_msg(p, msg, sizeof msg) == -1);
    ck_assert_msg(strstr(msg, "flags") != NULL, "%s", msg);
    /* a frame cut short */
    write_v2(p, WD_FLAG_ZMANIFEST, z, zl - 3);
    ck_assert(open_msg(p, msg, sizeof msg) == -1);
    ck_assert_msg(strstr(msg, "manifest") != NULL, "%s", msg);
    /* bytes after the frame */
    memcpy(z + zl, "junk", 4);
    write_v2(p, WD_FLAG_ZMANIFEST, z, zl + 4);
    ck_assert(open_msg(p, msg, sizeof msg) == -1);
    ck_assert_msg(strstr(msg, "after the compressed manifest") != NULL, "%s", msg);
    /* the flag on a plain JSON manifest: not zstd */
    write_v2(p, WD_FLAG_ZMANIFEST, manifest, sizeof manifest - 1);
    ck_assert(open_msg(p, msg, sizeof msg) == -1);
    ck_assert_msg(strstr(msg, "corrupt") != NULL, "%s", msg);
    /* a compressed manifest without the flag: not JSON */
    write_v2(p, 0, z, zl);
    ck_assert(open_msg(p, msg, sizeof msg) == -1);
    free(z);
}
END_TEST

static void touch(const char *p)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_msg(fd >= 0, "%s: %s", p, strerror(errno));
    ck_assert_int_eq(write(fd, "x", 1), 1);
    close(fd);
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

START_TEST(test_remove_stale)
{
    pid_t c = fork();
    ck_assert(c >= 0);
    if (c == 0) _exit(0);
    waitpid(c, NULL, 0); /* c is now the id of a process that is gone */
    long dead = (long)c, self = (long)getpid();
    char out[300], p[600], q[700];
    snprintf(out, sizeof out, "%s/m.wdelta", dir);
    /* a killed create's file; a killed rebase's directory (the model in a
     * subdirectory, and the apply temporary next to it) */
    snprintf(p, sizeof p, "%s.tmp.%ld.0badf00d", out, dead);
    touch(p);
    snprintf(p, sizeof p, "%s.rebuild.%ld.12345678", out, dead);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    snprintf(q, sizeof q, "%s/model", p);
    ck_assert_int_eq(mkdir(q, 0755), 0);
    snprintf(q, sizeof q, "%s/model/model.safetensors", p);
    touch(q);
    snprintf(q, sizeof q, "%s/model.tmp.%ld.aa", p, dead);
    ck_assert_int_eq(mkdir(q, 0755), 0);
    /* kept: our own, old-style (no pid), another output's, another kind,
     * a symbolic link (never followed), a directory too deep */
    snprintf(p, sizeof p, "%s.tmp.%ld.live", out, self);
    touch(p);
    snprintf(p, sizeof p, "%s.tmp.AbCdEf", out);
    touch(p);
    snprintf(p, sizeof p, "%s/other.wdelta.tmp.%ld.x", dir, dead);
    touch(p);
    snprintf(p, sizeof p, "%s.old.%ld.x", out, dead);
    touch(p);
    snprintf(p, sizeof p, "%s/victim", dir);
    touch(p);
    snprintf(q, sizeof q, "%s.tmp.%ld.link", out, dead);
    ck_assert_int_eq(symlink(p, q), 0);
    snprintf(p, sizeof p, "%s.new.%ld", out, dead);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    snprintf(q, sizeof q, "%s/a", p);
    ck_assert_int_eq(mkdir(q, 0755), 0);
    snprintf(q, sizeof q, "%s/a/b", p);
    ck_assert_int_eq(mkdir(q, 0755), 0);
    snprintf(q, sizeof q, "%s/a/b/c", p);
    touch(q);

    wd_err err;
    long n = wd_remove_stale(out, &err);
    ck_assert_int_eq(n, 2);
    snprintf(p, sizeof p, "%s.tmp.%ld.0badf00d", out, dead);
    ck_assert(!exists(p));
    snprintf(p, sizeof p, "%s.rebuild.%ld.12345678", out, dead);
    ck_assert(!exists(p));
    snprintf(p, sizeof p, "%s.tmp.%ld.live", out, self);
    ck_assert(exists(p));
    snprintf(p, sizeof p, "%s.tmp.AbCdEf", out);
    ck_assert(exists(p));
    snprintf(p, sizeof p, "%s/other.wdelta.tmp.%ld.x", dir, dead);
    ck_assert(exists(p));
    snprintf(p, sizeof p, "%s.old.%ld.x", out, dead);
    ck_assert(exists(p));
    snprintf(p, sizeof p, "%s/victim", dir);
    ck_assert(exists(p));
    snprintf(q, sizeof q, "%s.tmp.%ld.link", out, dead);
    ck_assert(exists(q));
    snprintf(p, sizeof p, "%s.new.%ld/a/b/c", out, dead);
    ck_assert(exists(p)); /* deeper than a temporary ever is: left alone */
    /* no directory: nothing to do */
    snprintf(p, sizeof p, "%s/none/x.wdelta", dir);
    ck_assert_int_eq(wd_remove_stale(p, &err), 0);
}
END_TEST

Suite *suite_integrity(void)
{
    Suite *s = suite_create("integrity");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_zmanifest);
    tcase_add_test(tc, test_remove_stale);
    suite_add_tcase(s, tc);
    return s;
}
