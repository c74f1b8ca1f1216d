/* users.c - the user table (UPT user state): per user, a preference vector and counters per scenario. */
#include "engine/users.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/keymap.h"

struct users_table {
    int n_scen, d;
    km_map index;       /* key -> row */
    float *pref;        /* (rows_cap, n_scen * d) */
    uint32_t *cnt;      /* (rows_cap, 2 * n_scen) */
    size_t rows, rows_cap;
};

users_table *users_new(int n_scen, int d, char *errstr, size_t errstr_size) {
    if (n_scen < 1 || n_scen > 64 || d < 0 || d > 4096) {
        snprintf(errstr, errstr_size, "upt: %d scenarios (1..64), width %d (0..4096)", n_scen, d);
        return NULL;
    }
    users_table *t = calloc(1, sizeof *t);
    if (!t || km_resize(&t->index, 1024) != 0) {
        users_destroy(t);
        snprintf(errstr, errstr_size, "upt: out of memory");
        return NULL;
    }
    t->n_scen = n_scen;
    t->d = d;
    return t;
}

void users_destroy(users_table *t) {
    if (!t) return;
    km_free(&t->index);
    free(t->pref);
    free(t->cnt);
    free(t);
}

int64_t users_find(const users_table *t, uint64_t key) { return km_find(&t->index, key); }

int64_t users_lookup(users_table *t, uint64_t key) {
    size_t h = km_probe(&t->index, key);
    if (t->index.slots[h].row != KM_EMPTY) return t->index.slots[h].row;
    if (t->rows >= UINT32_MAX - 1) return -1;
    size_t pw = (size_t)t->n_scen * t->d, cw = 2 * (size_t)t->n_scen;
    if (t->rows == t->rows_cap) {
        size_t nc = t->rows_cap ? t->rows_cap * 2 : 1024;
        if (pw) {
            float *p = realloc(t->pref, nc * pw * sizeof *p);
            if (!p) return -1;
            t->pref = p;
        }
        uint32_t *c = realloc(t->cnt, nc * cw * sizeof *c);
        if (!c) return -1;
        t->cnt = c;
        t->rows_cap = nc;
    }
    uint32_t row = (uint32_t)t->rows;
    if (km_insert(&t->index, key, row, h, t->rows + 1) != 0) return -1;
    t->rows++;
    if (pw) memset(t->pref + (size_t)row * pw, 0, pw * sizeof(float));
    memset(t->cnt + (size_t)row * cw, 0, cw * sizeof(uint32_t));
    return row;
}

float *users_pref(users_table *t, int64_t row) {
    return t->d ? t->pref + (size_t)row * t->n_scen * t->d : NULL;
}

const float *users_pref_k(users_table *t, int64_t row, int k) {
    if (!t->d || users_cnt(t, row)[t->n_scen + k] == 0) return NULL;
    return t->pref + (size_t)row * t->n_scen * t->d + (size_t)k * t->d;
}

uint32_t *users_cnt(users_table *t, int64_t row) { return t->cnt + (size_t)row * 2 * t->n_scen; }

void users_update(users_table *t, int64_t row, int k, const float *e, float g) {
    uint32_t *upd = users_cnt(t, row) + t->n_scen;
    if (upd[k] != UINT32_MAX) upd[k]++;
    if (!t->d) return;
    float *p = users_pref(t, row) + (size_t)k * t->d;
    for (int j = 0; j < t->d; j++) p[j] += g * e[j];
}

size_t users_rows(const users_table *t) { return t->rows; }

size_t users_bytes(const users_table *t) {
    return t->index.cap * sizeof(km_slot) +
           t->rows_cap * ((size_t)t->n_scen * t->d * sizeof(float) +
                          2 * (size_t)t->n_scen * sizeof(uint32_t));
}

/* ---------------------------------------------------------------- persistence hooks
 * (state.c keeps the rows in RocksDB: serialize, load, remove, size the table). */

size_t users_value_bytes(const users_table *t) {
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    return pw * sizeof(float) + 2 * S * sizeof(uint32_t);
}

void users_value_save(const users_table *t, int64_t row, void *buf) {
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    unsigned char *b = buf;
    if (pw) memcpy(b, t->pref + (size_t)row * pw, pw * sizeof(float));
    b += pw * sizeof(float);
    memcpy(b, t->cnt + (size_t)row * 2 * S, 2 * S * sizeof(uint32_t));
}

int64_t users_value_load(users_table *t, uint64_t key, const void *val, size_t len) {
    if (len != users_value_bytes(t) || users_find(t, key) >= 0) return -2;
    int64_t row = users_lookup(t, key);
    if (row < 0) return -1;
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    const unsigned char *b = val;
    if (pw) memcpy(t->pref + (size_t)row * pw, b, pw * sizeof(float));
    b += pw * sizeof(float);
    memcpy(t->cnt + (size_t)row * 2 * S, b, 2 * S * sizeof(uint32_t));
    return row;
}

int64_t users_remove(users_table *t, uint64_t key, uint64_t last_key) {
    int64_t removed = km_remove(&t->index, key);
    if (removed < 0) return -2;
    uint32_t row = (uint32_t)removed, last = (uint32_t)--t->rows;
    if (row == last) return -1;
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    if (pw) memcpy(t->pref + (size_t)row * pw, t->pref + (size_t)last * pw, pw * sizeof(float));
    memcpy(t->cnt + (size_t)row * 2 * S, t->cnt + (size_t)last * 2 * S, 2 * S * sizeof(uint32_t));
    km_repoint(&t->index, last_key, last, row);   /* the moved row's key */
    return row;
}

size_t users_capacity(const users_table *t) { return t->rows_cap; }

int users_reserve(users_table *t, size_t rows_cap) {
    if (rows_cap < t->rows) rows_cap = t->rows;
    if (rows_cap < 16) rows_cap = 16;
    size_t slots = km_slots_for(rows_cap);
    if (slots != t->index.cap && km_resize(&t->index, slots) != 0) return -1;
    if (rows_cap == t->rows_cap) return 0;
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    if (pw) {
        float *p = realloc(t->pref, rows_cap * pw * sizeof *p);
        if (!p) return -1;
        t->pref = p;
    }
    uint32_t *c = realloc(t->cnt, rows_cap * 2 * S * sizeof *c);
    if (!c) return -1;
    t->cnt = c;
    t->rows_cap = rows_cap;
    return 0;
}
