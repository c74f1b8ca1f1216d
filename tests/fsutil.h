/* fsutil.h - file-system helpers for the tests (header-only). */
#ifndef M3_TESTS_FSUTIL_H
#define M3_TESTS_FSUTIL_H
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

/* Remove path and everything below it; a missing path is fine, any other failure fails
 * the test. */
static void rm_rf(const char *path) {
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

#endif
