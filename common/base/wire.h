/* wire.h - a cursor over a byte buffer for the stored records (model blob, learner state,
 * pending entries): values in native byte order, one after another.
 *
 * The writer trusts its caller to have sized the buffer (each record computes its size
 * first). The reader never reads past len: the first get that would sets `short_`, fills
 * its value with zeros, and every later get does the same, so a decoder reads every field
 * and checks `short_` once. Header-only: each call is a memcpy. */
#ifndef M3_WIRE_H
#define M3_WIRE_H
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct {
    unsigned char *b;
    size_t off;          /* bytes written */
} wire_w;

typedef struct {
    const unsigned char *b;
    size_t len, off;     /* bytes in b, bytes read */
    bool short_;         /* a get ran past len */
} wire_r;

/* Append n bytes of p at the cursor. */
static inline void wire_put(wire_w *w, const void *p, size_t n) {
    if (n) memcpy(w->b + w->off, p, n);
    w->off += n;
}

/* Read n bytes into p, or zeros (and set short_) when fewer than n are left. */
static inline void wire_get(wire_r *r, void *p, size_t n) {
    if (r->short_ || r->len - r->off < n) {
        r->short_ = true;
        if (n) memset(p, 0, n);
        return;
    }
    if (n) memcpy(p, r->b + r->off, n);
    r->off += n;
}

/* Bytes not read yet. */
static inline size_t wire_left(const wire_r *r) { return r->len - r->off; }

#endif
