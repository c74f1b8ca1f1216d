/* keymap.c - 64-bit key -> row index (see keymap.h). */
#include "engine/keymap.h"

#include <stdlib.h>

/* the home slot; km_probe (keymap.h) computes the same */
static size_t km__home(const km_map *m, uint64_t key) {
    return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> m->shift);
}

size_t km_slots_for(size_t rows) {
    size_t cap = 1024;
    while (rows * 10 > cap * 7) cap *= 2;
    return cap;
}

int km_resize(km_map *m, size_t cap) {
    km_slot *s = malloc(cap * sizeof *s);
    if (!s) return -1;
    for (size_t i = 0; i < cap; i++) s[i].row = KM_EMPTY;
    int lg = 0;
    while (((size_t)1 << lg) < cap) lg++;
    km_map old = *m;
    m->slots = s;
    m->cap = cap;
    m->mask = cap - 1;
    m->shift = 64 - lg;
    for (size_t i = 0; i < old.cap; i++) {
        if (old.slots[i].row == KM_EMPTY) continue;
        size_t h = km__home(m, old.slots[i].key);
        while (s[h].row != KM_EMPTY) h = (h + 1) & m->mask;
        s[h] = old.slots[i];
    }
    free(old.slots);
    return 0;
}

void km_free(km_map *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->mask = 0;
}

int km_insert(km_map *m, uint64_t key, uint32_t row, size_t h, size_t rows) {
    if (rows * 10 > m->cap * 7) {
        if (km_resize(m, m->cap * 2) != 0) return -1;
        h = km_probe(m, key);
    }
    m->slots[h].key = key;
    m->slots[h].row = row;
    return 0;
}

int64_t km_remove(km_map *m, uint64_t key) {
    size_t i = km_probe(m, key);
    uint32_t row = m->slots[i].row;
    if (row == KM_EMPTY) return -1;
    /* backward shift: every key stays reachable from its home without tombstones */
    m->slots[i].row = KM_EMPTY;
    for (size_t j = (i + 1) & m->mask; m->slots[j].row != KM_EMPTY; j = (j + 1) & m->mask) {
        size_t home = km__home(m, m->slots[j].key);
        if (((j - home) & m->mask) < ((j - i) & m->mask)) continue;
        m->slots[i] = m->slots[j];
        m->slots[j].row = KM_EMPTY;
        i = j;
    }
    return row;
}

void km_repoint(km_map *m, uint64_t key, uint32_t from, uint32_t to) {
    for (size_t h = km__home(m, key); m->slots[h].row != KM_EMPTY; h = (h + 1) & m->mask)
        if (m->slots[h].row == from) {
            m->slots[h].row = to;
            return;
        }
    for (size_t h = 0; h < m->cap; h++)
        if (m->slots[h].row == from) {
            m->slots[h].row = to;
            return;
        }
}
