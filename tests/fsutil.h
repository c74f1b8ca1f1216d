/* fsutil.h - file-system helpers for the tests (header-only). */
#ifndef M3_TESTS_FSUTIL_H
#define M3_TESTS_FSUTIL_H
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#endif
