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
    /* persistence bookkeeping (state.c): which key a row holds, whether it changed since
     * the last checkpoint, when it was last used (batch tick, event time) */
    uint64_t *keys;     /* (rows_cap) */
    uint8_t *dirty;     /* (rows_cap) */
    uint32_t *tick;     /* (rows_cap) */
    int64_t *seen;      /* (rows_cap) */
    size_t n_dirty;     /* rows with dirty set */
    uint32_t cur_tick;  /* stamped by users_lookup and users_mark */
    int64_t cur_seen;
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
    free(t->keys);
    free(t->dirty);
    free(t->tick);
    free(t->seen);
    free(t);
}

int64_t users_find(const users_table *t, uint64_t key) { return km_find(&t->index, key); }

/* Resize every per-row array to nc rows (nc >= rows). On failure the arrays that did
 * resize keep their new size: the capacity becomes the smaller of the old and nc, which
 * every array holds. */
static int users__resize_rows(users_table *t, size_t nc) {
    size_t pw = (size_t)t->n_scen * t->d, cw = 2 * (size_t)t->n_scen;
    if (pw) {
        float *p = realloc(t->pref, nc * pw * sizeof *p);
        if (!p) goto fail;
        t->pref = p;
    }
    uint32_t *c = realloc(t->cnt, nc * cw * sizeof *c);
    if (!c) goto fail;
    t->cnt = c;
    uint64_t *k = realloc(t->keys, nc * sizeof *k);
    if (!k) goto fail;
    t->keys = k;
    uint8_t *dt = realloc(t->dirty, nc * sizeof *dt);
    if (!dt) goto fail;
    t->dirty = dt;
    uint32_t *tk = realloc(t->tick, nc * sizeof *tk);
    if (!tk) goto fail;
    t->tick = tk;
    int64_t *sn = realloc(t->seen, nc * sizeof *sn);
    if (!sn) goto fail;
    t->seen = sn;
    t->rows_cap = nc;
    return 0;
fail:
    if (nc < t->rows_cap) t->rows_cap = nc;
    return -1;
}

/* Append a zero row for key (absent; h is the free slot its probe ended on): dirty,
 * stamped. Returns the row or -1 (nothing changes). */
static int64_t users__new_row(users_table *t, uint64_t key, size_t h) {
    if (t->rows >= UINT32_MAX - 1) return -1;
    if (t->rows == t->rows_cap &&
        users__resize_rows(t, t->rows_cap ? t->rows_cap * 2 : 1024) != 0)
        return -1;
    uint32_t row = (uint32_t)t->rows;
    if (km_insert(&t->index, key, row, h, t->rows + 1) != 0) return -1;
    t->rows++;
    size_t pw = (size_t)t->n_scen * t->d, cw = 2 * (size_t)t->n_scen;
    if (pw) memset(t->pref + (size_t)row * pw, 0, pw * sizeof(float));
    memset(t->cnt + (size_t)row * cw, 0, cw * sizeof(uint32_t));
    t->keys[row] = key;
    t->dirty[row] = 1;
    t->n_dirty++;
    t->tick[row] = t->cur_tick;
    t->seen[row] = t->cur_seen;
    return row;
}

int64_t users_lookup(users_table *t, uint64_t key) {
    size_t h = km_probe(&t->index, key);
    uint32_t hit = t->index.slots[h].row;
    if (hit == KM_EMPTY) return users__new_row(t, key, h);
    users_mark(t, hit);   /* a row a lookup hands out may change: it is dirty */
    return hit;
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
    return t->index.cap * sizeof(km_slot) + t->rows_cap * users_row_bytes(t);
}

/* ---------------------------------------------------------------- persistence
 * (state.c keeps the rows in RocksDB: bookkeeping, serialize, load, remove, size). */

void users_set_clock(users_table *t, uint32_t tick, int64_t seen_ms) {
    t->cur_tick = tick;
    t->cur_seen = seen_ms;
}

uint64_t users_key(const users_table *t, int64_t row) { return t->keys[row]; }
int users_dirty(const users_table *t, int64_t row) { return t->dirty[row]; }
uint32_t users_tick(const users_table *t, int64_t row) { return t->tick[row]; }
int64_t users_seen(const users_table *t, int64_t row) { return t->seen[row]; }
size_t users_dirty_rows(const users_table *t) { return t->n_dirty; }
void users_touch(users_table *t, int64_t row) { t->tick[row] = t->cur_tick; }

void users_mark(users_table *t, int64_t row) {
    t->n_dirty += !t->dirty[row];
    t->dirty[row] = 1;
    t->tick[row] = t->cur_tick;
    t->seen[row] = t->cur_seen;
}

void users_clean_all(users_table *t) {
    if (t->rows) memset(t->dirty, 0, t->rows);
    t->n_dirty = 0;
}

size_t users_row_bytes(const users_table *t) {
    return users_value_bytes(t) + sizeof(uint64_t) + sizeof(uint32_t) + sizeof(int64_t) +
           sizeof(uint8_t);
}

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

int64_t users_value_load(users_table *t, uint64_t key, const void *val, size_t len,
                         int64_t seen_ms) {
    if (len != users_value_bytes(t)) return -2;
    size_t h = km_probe(&t->index, key);
    if (t->index.slots[h].row != KM_EMPTY) return -2;
    int64_t row = users__new_row(t, key, h);
    if (row < 0) return -1;
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    const unsigned char *b = val;
    if (pw) memcpy(t->pref + (size_t)row * pw, b, pw * sizeof(float));
    b += pw * sizeof(float);
    memcpy(t->cnt + (size_t)row * 2 * S, b, 2 * S * sizeof(uint32_t));
    t->seen[row] = seen_ms;
    t->dirty[row] = 0;   /* it equals what the store holds */
    t->n_dirty--;
    return row;
}

int64_t users_remove(users_table *t, uint64_t key) {
    int64_t removed = km_remove(&t->index, key);
    if (removed < 0) return -2;
    uint32_t row = (uint32_t)removed, last = (uint32_t)--t->rows;
    t->n_dirty -= t->dirty[row];
    if (row == last) return -1;
    /* the last row moves into the hole, so rows stay dense */
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    if (pw) memcpy(t->pref + (size_t)row * pw, t->pref + (size_t)last * pw, pw * sizeof(float));
    memcpy(t->cnt + (size_t)row * 2 * S, t->cnt + (size_t)last * 2 * S, 2 * S * sizeof(uint32_t));
    t->keys[row] = t->keys[last];
    t->dirty[row] = t->dirty[last];
    t->tick[row] = t->tick[last];
    t->seen[row] = t->seen[last];
    km_repoint(&t->index, t->keys[row], last, row);
    return row;
}

size_t users_capacity(const users_table *t) { return t->rows_cap; }

int users_reserve(users_table *t, size_t rows_cap) {
    if (rows_cap < t->rows) rows_cap = t->rows;
    if (rows_cap < 16) rows_cap = 16;
    size_t slots = km_slots_for(rows_cap);
    /* slots first: growing them can fail without touching the rows */
    if (slots != t->index.cap && km_resize(&t->index, slots) != 0) return -1;
    if (rows_cap != t->rows_cap && users__resize_rows(t, rows_cap) != 0) return -1;
    return 0;
}
