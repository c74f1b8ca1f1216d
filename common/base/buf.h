/* buf.h - a growable byte string: what the JSON writer, the schema printer, the page and
 * the readers build their text in.
 *
 * The bytes are always NUL-terminated (data[len] == 0 once anything is put). Out of memory
 * is sticky: the first failed growth sets `oom`, later puts do nothing, and the caller
 * checks `oom` once at the end. A zeroed buf is an empty one; buf_free() returns it to
 * that state. */
#ifndef M3_BUF_H
#define M3_BUF_H
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *data;   /* NULL until the first put */
    size_t len;   /* bytes, without the terminating NUL */
    size_t cap;   /* bytes allocated */
    bool oom;     /* a growth failed: data holds what was put before it */
} buf;

/* Room for n more bytes (and the NUL). Returns 0, or -1 (and sets oom) when out of memory. */
int buf_reserve(buf *b, size_t n);
/* Append n bytes / a string / one character / printf-formatted text. */
void buf_put(buf *b, const void *p, size_t n);
void buf_puts(buf *b, const char *s);
void buf_putc(buf *b, char c);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append the whole file at path. Returns 0, or -1 with errno set when it cannot be opened
 * or read (ENOMEM when out of memory); what was read before an error stays in b. */
int buf_read_file(buf *b, const char *path);
/* Hand the string to the caller (who frees it; "" when empty, NULL when out of memory);
 * b is left empty. */
char *buf_take(buf *b);
/* Free the bytes; b is left empty. NULL is a no-op. */
void buf_free(buf *b);

#endif
