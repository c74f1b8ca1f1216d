/* fuzz.h - what the libFuzzer harnesses share: the environment switch of a property and
 * the check of an error message. (Every reader has an in-memory entry point, so no
 * harness writes its input to a file.)
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

#include "check.h"

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
