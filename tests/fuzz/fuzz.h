/* fuzz.h - what the libFuzzer harnesses share: a scratch file for the readers that take a
 * path, and the environment switch of a property.
 *
 * A harness is one LLVMFuzzerTestOneInput over the public API of one reader; a finding is
 * a crash, a sanitizer report, a leak, or a property the harness states failing through
 * check.h (abort). docs/fuzzing.md says how to run them. */
#ifndef M3_FUZZ_H
#define M3_FUZZ_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

/* The path of this process's scratch file (created on first use in $TMPDIR or /tmp,
 * removed at exit). The name is short: the replay puts it in its impression ids. */
static char fuzz__path[256];

static inline void fuzz__unlink(void) {
    if (fuzz__path[0]) unlink(fuzz__path);
}

/* Replace the scratch file's content with data[0..n) and return its path. Aborts when
 * the file cannot be written (that is the harness's failure, not a finding). */
static inline const char *fuzz_scratch(const uint8_t *data, size_t n) {
    if (!fuzz__path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(fuzz__path, sizeof fuzz__path, "%s/m3fz-XXXXXX", dir && *dir ? dir : "/tmp");
        int fd = mkstemp(fuzz__path);
        CHECK_MSG(fd >= 0, "mkstemp %s failed", fuzz__path);
        close(fd);
        atexit(fuzz__unlink);
    }
    FILE *f = fopen(fuzz__path, "wb");
    CHECK_MSG(f, "cannot write %s", fuzz__path);
    CHECK(fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
    return fuzz__path;
}

/* A property's switch: on unless the environment variable name is "0". */
static inline int fuzz_switch(const char *name) {
    const char *v = getenv(name);
    return !(v && strcmp(v, "0") == 0);
}

/* An error message a function filled: terminated, not empty, and starting with where
 * (the file the contract says it names). */
static inline void fuzz_check_errstr(const char *errstr, size_t size, const char *where) {
    CHECK_MSG(memchr(errstr, 0, size) != NULL, "error message not terminated");
    CHECK_MSG(errstr[0] != 0, "empty error message");
    CHECK_MSG(strncmp(errstr, where, strlen(where)) == 0, "error \"%s\" does not start with %s",
              errstr, where);
}

#endif
