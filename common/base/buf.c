/* buf.c - a growable byte string (see buf.h). */
#include "base/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_reserve(buf *b, size_t n) {
    if (b->oom) return -1;
    if (b->len + n + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (b->len + n + 1 > cap) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = true;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void buf_put(buf *b, const void *p, size_t n) {
    if (buf_reserve(b, n) != 0) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_puts(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

void buf_putc(buf *b, char c) { buf_put(b, &c, 1); }

void buf_printf(buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) != 0) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

int buf_read_file(buf *b, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char tmp[65536];
    size_t got;
    while ((got = fread(tmp, 1, sizeof tmp, f)) > 0) buf_put(b, tmp, got);
    int err = ferror(f) ? EIO : b->oom ? ENOMEM : 0;
    fclose(f);
    if (err) errno = err;
    return err ? -1 : 0;
}

char *buf_take(buf *b) {
    if (b->oom) {
        buf_free(b);
        return NULL;
    }
    char *s = b->data ? b->data : strdup("");
    *b = (buf){0};
    return s;
}

void buf_free(buf *b) {
    if (!b) return;
    free(b->data);
    *b = (buf){0};
}
