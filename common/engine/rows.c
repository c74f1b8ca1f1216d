/* rows.c - the per-row bookkeeping shared by the dense keyed tables (see rows.h). */
#include "engine/rows.h"

#include <stdlib.h>
#include <string.h>

int rows_init(rows_book *b, rows_resize_fn resize_payload, void *owner) {
    b->resize_payload = resize_payload;
    b->owner = owner;
    return km_resize(&b->index, 1024);
}

void rows_free(rows_book *b) {
    km_free(&b->index);
    free(b->keys);
    free(b->dirty);
    free(b->tick);
    free(b->seen);
    b->keys = NULL;
    b->dirty = NULL;
    b->tick = NULL;
    b->seen = NULL;
    b->n = b->cap = b->n_dirty = 0;
}

void *rows_realloc(void *p, size_t n, size_t size, int *ok) {
    void *q = realloc(p, n * size);
    if (q) return q;
    *ok = 0;
    return p;
}

/* Resize every array, the payload's and the book's, to nc rows (nc >= n). A failure
 * leaves cap at min(old, nc): every array holds that many (see rows.h). */
static int rows__resize(rows_book *b, size_t nc) {
    int ok = b->resize_payload(b->owner, nc) == 0;
    b->keys = rows_realloc(b->keys, nc, sizeof *b->keys, &ok);
    b->dirty = rows_realloc(b->dirty, nc, sizeof *b->dirty, &ok);
    b->tick = rows_realloc(b->tick, nc, sizeof *b->tick, &ok);
    b->seen = rows_realloc(b->seen, nc, sizeof *b->seen, &ok);
    if (ok || nc < b->cap) b->cap = nc;
    return ok ? 0 : -1;
}

int64_t rows_append(rows_book *b, uint64_t key, size_t h) {
    if (b->n >= UINT32_MAX - 1) return -1;
    if (b->n == b->cap && rows__resize(b, b->cap ? b->cap * 2 : 1024) != 0) return -1;
    uint32_t row = (uint32_t)b->n;
    if (km_insert(&b->index, key, row, h, b->n + 1) != 0) return -1;
    b->n++;
    b->keys[row] = key;
    b->dirty[row] = 1;
    b->n_dirty++;
    b->tick[row] = b->cur_tick;
    b->seen[row] = b->cur_seen;
    return row;
}

int64_t rows_append_stored(rows_book *b, uint64_t key, int64_t seen_ms) {
    size_t h = km_probe(&b->index, key);
    if (b->index.slots[h].row != KM_EMPTY) return -2;
    int64_t row = rows_append(b, key, h);
    if (row < 0) return -1;
    b->seen[row] = seen_ms;
    b->dirty[row] = 0;
    b->n_dirty--;
    return row;
}

int64_t rows_remove(rows_book *b, uint64_t key, uint32_t *from) {
    int64_t removed = km_remove(&b->index, key);
    if (removed < 0) return -2;
    uint32_t row = (uint32_t)removed, last = (uint32_t)--b->n;
    b->n_dirty -= b->dirty[row];
    *from = last;
    if (row == last) return -1;
    /* the last row moves into the hole, so rows stay dense */
    b->keys[row] = b->keys[last];
    b->dirty[row] = b->dirty[last];
    b->tick[row] = b->tick[last];
    b->seen[row] = b->seen[last];
    km_repoint(&b->index, b->keys[row], last, row);
    return row;
}

int rows_reserve(rows_book *b, size_t cap) {
    if (cap < b->n) cap = b->n;
    if (cap < 16) cap = 16;
    size_t slots = km_slots_for(cap);
    /* slots first: growing them can fail without touching the rows */
    if (slots != b->index.cap && km_resize(&b->index, slots) != 0) return -1;
    if (cap != b->cap && rows__resize(b, cap) != 0) return -1;
    return 0;
}

void rows_set_clock(rows_book *b, uint32_t tick, int64_t seen_ms) {
    b->cur_tick = tick;
    b->cur_seen = seen_ms;
}

void rows_set_dirty(rows_book *b, int64_t row, int dirty) {
    b->n_dirty += (size_t)(dirty != 0) - (size_t)b->dirty[row];
    b->dirty[row] = (uint8_t)(dirty != 0);
}

void rows_clean_all(rows_book *b) {
    if (b->n) memset(b->dirty, 0, b->n);
    b->n_dirty = 0;
}

size_t rows_row_bytes(void) {
    return sizeof(uint64_t) + sizeof(uint8_t) + sizeof(uint32_t) + sizeof(int64_t);
}

size_t rows_index_bytes(const rows_book *b) { return b->index.cap * sizeof(km_slot); }
