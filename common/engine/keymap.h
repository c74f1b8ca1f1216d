/* keymap.h - an open-addressing index from 64-bit keys to 32-bit row numbers, for the
 * tables that keep their rows dense (rows.c, for emb.c and users.c): linear probing from
 * a Fibonacci hash, load kept at or below 0.7, backward-shift deletion (no tombstones).
 * The caller owns the rows; the map only says where a key's row is. */
#ifndef M3_KEYMAP_H
#define M3_KEYMAP_H
#include <stddef.h>
#include <stdint.h>

#define KM_EMPTY UINT32_MAX   /* the row of a free slot */

typedef struct {
    uint64_t key;
    uint32_t row;
} km_slot;

typedef struct {
    km_slot *slots;   /* (cap) */
    size_t cap, mask; /* cap is a power of two */
    int shift;        /* 64 - log2(cap) */
} km_map;

/* The smallest slot count (a power of two, >= 1024) that keeps `rows` at load <= 0.7. */
size_t km_slots_for(size_t rows);

/* Give m `cap` slots (a power of two; a zeroed m starts empty), moving what it holds.
 * Returns 0, or -1 when out of memory (m unchanged). */
int km_resize(km_map *m, size_t cap);

void km_free(km_map *m);

/* The slot holding key, or the free slot where its probe ends. Inline: it is on the hot
 * path of every embedding lookup. */
static inline size_t km_probe(const km_map *m, uint64_t key) {
    size_t h = (size_t)((key * 0x9e3779b97f4a7c15ULL) >> m->shift);
    while (m->slots[h].row != KM_EMPTY && m->slots[h].key != key) h = (h + 1) & m->mask;
    return h;
}

/* key's row, or -1. */
static inline int64_t km_find(const km_map *m, uint64_t key) {
    const km_slot *s = &m->slots[km_probe(m, key)];
    return s->row == KM_EMPTY ? -1 : (int64_t)s->row;
}

/* Map key (absent; h = km_probe(m, key)) to row, doubling the slots first when `rows`
 * rows (this one included) would pass load 0.7. Returns 0, or -1 when out of memory
 * (m unchanged). */
int km_insert(km_map *m, uint64_t key, uint32_t row, size_t h, size_t rows);

/* Remove key. Returns the row it had, or -1 when absent. */
int64_t km_remove(km_map *m, uint64_t key);

/* The slot mapping key to row `from` maps it to `to` (a row moved). When key is wrong, the
 * slot holding `from` is found by a scan of every slot, so the map stays consistent. */
void km_repoint(km_map *m, uint64_t key, uint32_t from, uint32_t to);

#endif
