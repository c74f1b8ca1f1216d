/* rows.h - the per-row bookkeeping shared by the dense keyed tables (emb.c, users.c): the
 * key -> row index, and per row its key, a dirty flag, and the tick and event time of its
 * last use, for a store (state.c) to persist, evict and expire rows.
 *
 * A table embeds a rows_book and keeps only its payload arrays (weights, counters...)
 * itself. Rows are dense, 0..n-1: a new key appends a row, a removed key's hole is filled
 * by the last row. Every array, the book's and the payload's, holds `cap` rows; the book
 * grows or shrinks them all together, the payload through the resize function the table
 * gives rows_init. So the table never resizes anything by itself, and row POINTERS into
 * any array are valid only until a row is appended or the capacity is reserved, while row
 * INDICES stay valid until a removal moves a row.
 *
 * Failure semantics of a resize (growth on append, or rows_reserve): each array that
 * could be resized keeps its new size, the others their old one, and cap becomes the
 * smaller of the old and the asked capacity, which every array then holds. The table
 * stays usable: nothing is lost, and the next append tries to grow again. */
#ifndef M3_ROWS_H
#define M3_ROWS_H
#include <stddef.h>
#include <stdint.h>

#include "engine/keymap.h"

/* Resize each of the owner's payload arrays to cap rows (its first min(old, cap) rows
 * kept). Returns 0, or -1 when out of memory: then each array holds at least
 * min(old capacity, cap) rows (use rows_realloc for each, and keep going). */
typedef int (*rows_resize_fn)(void *owner, size_t cap);

typedef struct {
    km_map index;            /* key -> row */
    uint64_t *keys;          /* (cap) which key a row holds */
    uint8_t *dirty;          /* (cap) changed since the store last wrote it */
    uint32_t *tick;          /* (cap) batch tick of its last use, for eviction */
    int64_t *seen;           /* (cap) event time of its last use, for expiry */
    size_t n_dirty;          /* rows with dirty set */
    uint32_t cur_tick;       /* stamped by rows_lookup and rows_mark (rows_set_clock) */
    int64_t cur_seen;
    size_t n, cap;           /* rows in use, rows every array holds */
    rows_resize_fn resize_payload;
    void *owner;             /* passed to resize_payload */
} rows_book;

/* Start an empty book (b zeroed, e.g. inside a calloc'd table) whose payload arrays
 * resize_payload(owner, cap) resizes. The clocks start at 0: a row stamped before
 * rows_set_clock reads as old. Returns 0, or -1 when out of memory (rows_free b). */
int rows_init(rows_book *b, rows_resize_fn resize_payload, void *owner);
/* Free the book's own arrays (not the payload); a zeroed or freed book is a no-op. */
void rows_free(rows_book *b);

/* *p resized to n elements of `size` bytes: returns the new block, or, when out of memory,
 * p unchanged with *ok set to 0 (*ok is never set to 1). For resize functions. */
void *rows_realloc(void *p, size_t n, size_t size, int *ok);

/* Append a row for key (absent; h = km_probe(&b->index, key) is where its probe ended),
 * growing every array (doubling) when full: dirty, stamped with the clock. The payload of
 * the row is left for the caller. Returns the row, or -1 when out of memory or at 2^32-1
 * rows (nothing changes then, but a possibly grown capacity). */
int64_t rows_append(rows_book *b, uint64_t key, size_t h);
/* Append a row for key from a store: clean (it equals what the store holds), stamped with
 * the current tick and with seen_ms as its event time. Returns the row; -1 when out of
 * memory; -2 when key is already present (nothing changes then). */
int64_t rows_append_stored(rows_book *b, uint64_t key, int64_t seen_ms);
/* Remove key's row. The last row moves into its place (the book's arrays and the index
 * follow; the caller moves the payload of row *from to the returned row). Returns the
 * moved row's new index, -1 when the removed row was the last one (nothing moved), -2
 * when key is absent. Other row indices are unchanged. */
int64_t rows_remove(rows_book *b, uint64_t key, uint32_t *from);
/* Set the capacity of every array to max(cap, n, 16), growing or shrinking, and the hash
 * slots to what that many rows need (load <= 0.7), so appends up to it do not reallocate.
 * Returns 0, or -1 when out of memory (see the failure semantics above; the slots are
 * resized first, and alone when that already fails). */
int rows_reserve(rows_book *b, size_t cap);

/* The tick and event time stamped by rows_lookup and rows_mark from now on. */
void rows_set_clock(rows_book *b, uint32_t tick, int64_t seen_ms);
/* Set or clear a row's dirty flag. */
void rows_set_dirty(rows_book *b, int64_t row, int dirty);
/* Clear every row's dirty flag (they are all in the store now). */
void rows_clean_all(rows_book *b);
/* Bytes one row of capacity costs in the book (the payload's and hash slots are extra),
 * and the bytes of the hash slots. */
size_t rows_row_bytes(void);
size_t rows_index_bytes(const rows_book *b);

/* The row changed (or may change: a lookup handed it out): dirty, stamped with the tick
 * and event time. Inline, as the rest of the lookup: on every embedding lookup. */
static inline void rows_mark(rows_book *b, int64_t row) {
    b->n_dirty += !b->dirty[row];
    b->dirty[row] = 1;
    b->tick[row] = b->cur_tick;
    b->seen[row] = b->cur_seen;
}

/* The row is in use: stamp the current tick, leave the rest. */
static inline void rows_touch(rows_book *b, int64_t row) { b->tick[row] = b->cur_tick; }

/* Row of key, marked (rows_mark); when absent, a new row is appended (rows_append).
 * *created is set to 1 when the row was appended by this call (the caller fills its
 * payload then), else 0. Returns the row, or -1 when out of memory (nothing changes). */
static inline int64_t rows_lookup(rows_book *b, uint64_t key, int *created) {
    size_t h = km_probe(&b->index, key);
    uint32_t hit = b->index.slots[h].row;
    if (hit != KM_EMPTY) {
        *created = 0;
        rows_mark(b, hit);
        return hit;
    }
    int64_t row = rows_append(b, key, h);
    *created = row >= 0;
    return row;
}

#endif
