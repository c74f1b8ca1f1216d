/* users.c - the user table (UPT user state): per user, a preference vector and counters per scenario. */
#include "engine/users.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/rows.h"

struct users_table {
    int n_scen, d;
    rows_book book;     /* key -> row, and each row's persistence bookkeeping */
    /* the payload, (book.cap) rows each, resized by the book (users__resize_payload) */
    float *pref;        /* (cap, n_scen * d); NULL when d = 0 */
    uint32_t *cnt;      /* (cap, 2 * n_scen) */
};

/* The book's rows_resize_fn: the payload arrays follow the book's capacity. */
static int users__resize_payload(void *owner, size_t cap) {
    users_table *t = owner;
    size_t pw = (size_t)t->n_scen * t->d, cw = 2 * (size_t)t->n_scen;
    int ok = 1;
    if (pw) t->pref = rows_realloc(t->pref, cap, pw * sizeof *t->pref, &ok);
    t->cnt = rows_realloc(t->cnt, cap, cw * sizeof *t->cnt, &ok);
    return ok ? 0 : -1;
}

users_table *users_new(int n_scen, int d, char *errstr, size_t errstr_size) {
    if (n_scen < 1 || n_scen > 64 || d < 0 || d > 4096) {
        snprintf(errstr, errstr_size, "users: %d scenarios (1..64), width %d (0..4096)", n_scen, d);
        return NULL;
    }
    users_table *t = calloc(1, sizeof *t);
    if (!t || rows_init(&t->book, users__resize_payload, t) != 0) {
        users_destroy(t);
        snprintf(errstr, errstr_size, "users: out of memory");
        return NULL;
    }
    t->n_scen = n_scen;
    t->d = d;
    return t;
}

void users_destroy(users_table *t) {
    if (!t) return;
    rows_free(&t->book);
    free(t->pref);
    free(t->cnt);
    free(t);
}

int64_t users_find(const users_table *t, uint64_t key) { return km_find(&t->book.index, key); }

int64_t users_lookup(users_table *t, uint64_t key) {
    int created;
    int64_t row = rows_lookup(&t->book, key, &created);   /* a row handed out is dirty */
    if (!created) return row;   /* found, or out of memory with the table unchanged */
    size_t pw = (size_t)t->n_scen * t->d, cw = 2 * (size_t)t->n_scen;
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

size_t users_rows(const users_table *t) { return t->book.n; }

size_t users_bytes(const users_table *t) {
    return rows_index_bytes(&t->book) + t->book.cap * users_row_bytes(t);
}

/* ---------------------------------------------------------------- persistence
 * (state.c keeps the rows in RocksDB: bookkeeping, serialize, load, remove, size). */

void users_set_clock(users_table *t, uint32_t tick, int64_t seen_ms) {
    rows_set_clock(&t->book, tick, seen_ms);
}

uint64_t users_key(const users_table *t, int64_t row) { return t->book.keys[row]; }
int users_dirty(const users_table *t, int64_t row) { return t->book.dirty[row]; }
uint32_t users_tick(const users_table *t, int64_t row) { return t->book.tick[row]; }
int64_t users_seen(const users_table *t, int64_t row) { return t->book.seen[row]; }
size_t users_dirty_rows(const users_table *t) { return t->book.n_dirty; }
void users_touch(users_table *t, int64_t row) { rows_touch(&t->book, row); }
void users_mark(users_table *t, int64_t row) { rows_mark(&t->book, row); }
void users_clean_all(users_table *t) { rows_clean_all(&t->book); }
void users_set_dirty(users_table *t, int64_t row, int dirty) { rows_set_dirty(&t->book, row, dirty); }

size_t users_row_bytes(const users_table *t) { return users_value_bytes(t) + rows_row_bytes(); }

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
    int64_t row = rows_append_stored(&t->book, key, seen_ms);
    if (row < 0) return row;
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    const unsigned char *b = val;
    if (pw) memcpy(t->pref + (size_t)row * pw, b, pw * sizeof(float));
    b += pw * sizeof(float);
    memcpy(t->cnt + (size_t)row * 2 * S, b, 2 * S * sizeof(uint32_t));
    return row;
}

int64_t users_remove(users_table *t, uint64_t key) {
    uint32_t last;
    int64_t row = rows_remove(&t->book, key, &last);
    if (row < 0) return row;
    size_t pw = (size_t)t->n_scen * t->d, S = (size_t)t->n_scen;
    if (pw) memcpy(t->pref + (size_t)row * pw, t->pref + (size_t)last * pw, pw * sizeof(float));
    memcpy(t->cnt + (size_t)row * 2 * S, t->cnt + (size_t)last * 2 * S, 2 * S * sizeof(uint32_t));
    return row;
}

size_t users_capacity(const users_table *t) { return t->book.cap; }

int users_reserve(users_table *t, size_t rows_cap) { return rows_reserve(&t->book, rows_cap); }
