/* fsutil.h - file-system helpers for the tests (header-only). */
#ifndef M3_TESTS_FSUTIL_H
#define M3_TESTS_FSUTIL_H
#include <dirent.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

/* Remove path and everything below it; a missing path is fine, any other failure fails
 * the test. */
static inline void rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        CHECK_MSG(d, "opendir %s: %s", path, strerror(errno));
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[1024];
            int w = snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            CHECK(w > 0 && (size_t)w < sizeof sub);
            rm_rf(sub);
        }
        closedir(d);
        CHECK_MSG(rmdir(path) == 0, "rmdir %s: %s", path, strerror(errno));
    } else {
        CHECK_MSG(unlink(path) == 0, "unlink %s: %s", path, strerror(errno));
    }
}

/* A fresh scratch directory for the test `name`: <parent>/<name>.<pid>, where parent is
 * $TEST_STATE_TMP or else the build directory; whatever was there is removed first. */
static inline void fs_scratch_dir(char *out, size_t n, const char *name) {
    const char *base = getenv("TEST_STATE_TMP");
    int w = snprintf(out, n, "%s/%s.%d", base ? base : M3_BINARY_DIR, name, (int)getpid());
    CHECK(w > 0 && (size_t)w < n);
    rm_rf(out);
    CHECK_MSG(mkdir(out, 0755) == 0, "mkdir %s: %s", out, strerror(errno));
}

static inline uint64_t fs__fnv1a_file(const char *path) {
    uint64_t h = 1469598103934665603ull;
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f, "fopen %s: %s", path, strerror(errno));
    unsigned char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), f)) > 0)
        for (size_t i = 0; i < got; i++) h = (h ^ buf[i]) * 1099511628211ull;
    fclose(f);
    return h;
}

static inline int fs__cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every file of a flat directory: name, size, mtime (ns) and content hash, one line each
 * in name order. The caller frees the string. */
static inline char *fs_snapshot(const char *dir) {
    char *names[256];
    int n = 0;
    DIR *d = opendir(dir);
    CHECK_MSG(d, "opendir %s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        CHECK(n < 256);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(names[0]), fs__cmp_str);
    size_t cap = 256 + (size_t)n * 400, len = 0;
    char *out = malloc(cap);
    CHECK(out);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        char p[1024];
        struct stat st;
        CHECK(snprintf(p, sizeof(p), "%s/%s", dir, names[i]) < (int)sizeof(p));
        CHECK_MSG(lstat(p, &st) == 0, "stat %s: %s", p, strerror(errno));
        len += (size_t)snprintf(out + len, cap - len, "%s size=%lld mtime=%lld.%09ld hash=%016llx\n",
                                names[i], (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                                st.st_mtim.tv_nsec,
                                S_ISREG(st.st_mode) ? (unsigned long long)fs__fnv1a_file(p) : 0ull);
        free(names[i]);
    }
    return out;
}

#define CHECK_UNCHANGED(before, dir)                                             \
    do { char *after_ = fs_snapshot(dir);                                           \
         CHECK_MSG(strcmp((before), after_) == 0,                                \
                   "files of %s changed:\n--- before\n%s--- after\n%s", (dir),   \
                   (before), after_);                                            \
         free(after_); } while (0)

/* Mount a tmpfs of `size` (e.g. "6m") on the existing directory mnt, in a mount namespace
 * of this process's own (the mount goes away with the process and the programs it starts,
 * whatever happens to the test). Needs root (CAP_SYS_ADMIN). Returns 0, or -1 with why
 * filled (not permitted here: the caller skips). */
#ifndef CLONE_NEWNS
#define CLONE_NEWNS 0x00020000   /* <sched.h> declares it (and unshare) only with _GNU_SOURCE */
#endif
static inline int fs_private_tmpfs(const char *mnt, const char *size, char *why, size_t n) {
    static int unshared;
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s", size);
    if (!unshared && (syscall(SYS_unshare, CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)) {
        snprintf(why, n, "cannot make a private mount namespace (root is needed): %s", strerror(errno));
        return -1;
    }
    unshared = 1;
    if (mount("tmpfs", mnt, "tmpfs", 0, opts) != 0) {
        snprintf(why, n, "cannot mount a tmpfs on %s: %s", mnt, strerror(errno));
        return -1;
    }
    return 0;
}

/* Give the tmpfs on mnt a new size (space again after a full disk). */
static inline void fs_tmpfs_resize(const char *mnt, const char *size) {
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s", size);
    CHECK_MSG(mount(NULL, mnt, NULL, MS_REMOUNT, opts) == 0, "remount %s: %s", mnt, strerror(errno));
}

#endif
