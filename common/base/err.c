/* err.c - the library's error messages (see err.h). */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>

int err_set(char *errstr, size_t errstr_size, const char *fmt, ...) {
    if (!errstr || errstr_size == 0) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
    return -1;
}
