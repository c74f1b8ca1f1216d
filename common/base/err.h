/* err.h - the library's error messages: every function in common/ that can fail fills a
 * caller's (char *errstr, size_t errstr_size) and returns a status; this is how it fills it. */
#ifndef M3_ERR_H
#define M3_ERR_H
#include <stddef.h>

/* Format a message into errstr (truncated to errstr_size; nothing when errstr is NULL or
 * errstr_size is 0). Returns -1, so a failing function can `return err_set(...)`. */
int err_set(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
