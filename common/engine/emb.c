/* emb.c - embedding table: 64-bit key -> d-wide row, with lazy per-row Adagrad. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include "base/hash.h"
#include "engine/emb.h"
#include "engine/rows.h"

struct emb_table {
    int d;
    uint64_t seed;
    float init_acc;
    rows_book book;         /* key -> row, and each row's persistence bookkeeping */
    /* the payload, (book.cap) rows each, resized by the book (emb__resize_payload) */
    float *store;           /* (cap, 2d): weights then accumulators */
    uint32_t *mark;         /* (cap) position in touched[], sparse-set style */
    uint32_t *cnt;          /* (cap) the owner's per-row counter */
    /* gradients of the current step */
    uint32_t *touched;      /* (touch_cap) distinct rows, in first-touch order */
    float *gbuf;            /* (touch_cap, d) their summed gradients */
    size_t n_touched, touch_cap;
    emb_step_hook hook;     /* emb_set_step_hook, or NULL */
    void *hook_ud;
};

static int emb__grow_touch(emb_table *t, size_t cap) {
    uint32_t *tc = realloc(t->touched, cap * sizeof *tc);
    if (!tc) return -1;
    t->touched = tc;
    float *g = realloc(t->gbuf, cap * (size_t)t->d * sizeof *g);
    if (!g) return -1;
    t->gbuf = g;
    t->touch_cap = cap;
    return 0;
}

/* The book's rows_resize_fn: the payload arrays follow the book's capacity. */
static int emb__resize_payload(void *owner, size_t cap) {
    emb_table *t = owner;
    int ok = 1;
    t->store = rows_realloc(t->store, cap, 2 * (size_t)t->d * sizeof *t->store, &ok);
    t->mark = rows_realloc(t->mark, cap, sizeof *t->mark, &ok);
    t->cnt = rows_realloc(t->cnt, cap, sizeof *t->cnt, &ok);
    return ok ? 0 : -1;
}

emb_table *emb_new(int d, uint64_t seed, float init_acc, size_t touch_cap,
                   char *errstr, size_t errstr_size) {
    /* the clocks start at 0 (calloc): a row stamped before emb_set_clock reads as old */
    if (d <= 0 || d > 4096) {
        snprintf(errstr, errstr_size, "embedding width %d out of range 1..4096", d);
        return NULL;
    }
    emb_table *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->d = d;
    t->seed = seed;
    t->init_acc = init_acc;
    if (rows_init(&t->book, emb__resize_payload, t) != 0) goto oom;
    if (emb__grow_touch(t, touch_cap ? touch_cap : 256) != 0) goto oom;
    return t;
oom:
    emb_destroy(t);
    snprintf(errstr, errstr_size, "out of memory creating an embedding table");
    return NULL;
}

void emb_destroy(emb_table *t) {
    if (!t) return;
    rows_free(&t->book);
    free(t->store);
    free(t->mark);
    free(t->cnt);
    free(t->touched);
    free(t->gbuf);
    free(t);
}

int64_t emb_find(const emb_table *t, uint64_t key) { return km_find(&t->book.index, key); }

static void emb__init_row(emb_table *t, float *w, uint64_t key) {
    int d = t->d;
    uint64_t base = hash_mix64(t->seed ^ hash_mix64(key));
    for (int j = 0; j < d; j++) {
        uint64_t r = hash_mix64(base + (uint64_t)j);
        /* top 24 bits -> [0,1) exactly representable in float */
        float u = (float)(r >> 40) * (1.0f / 16777216.0f);
        w[j] = (2.0f * u - 1.0f) * EMB_INIT_SCALE;
        w[d + j] = t->init_acc;
    }
}

int64_t emb_lookup(emb_table *t, uint64_t key) {
    return emb_lookup_init(t, key, NULL, NULL);
}

int64_t emb_lookup_init(emb_table *t, uint64_t key, const float *init, int *created) {
    int was_created;
    int64_t row = rows_lookup(&t->book, key, &was_created);   /* a row handed out is dirty */
    if (created) *created = was_created;
    if (!was_created) return row;   /* found, or out of memory with the table unchanged */
    t->mark[row] = 0;
    t->cnt[row] = 0;
    float *w = t->store + (size_t)row * 2 * t->d;
    emb__init_row(t, w, key);
    if (init) memcpy(w, init, sizeof(float) * t->d);
    return row;
}

size_t emb_rows(const emb_table *t) { return t->book.n; }
int emb_dim(const emb_table *t) { return t->d; }

float *emb_weights(emb_table *t, int64_t row) {
    return t->store + (size_t)row * 2 * t->d;
}

float *emb_accum(emb_table *t, int64_t row) {
    return t->store + (size_t)row * 2 * t->d + t->d;
}

uint32_t *emb_count(emb_table *t, int64_t row) { return &t->cnt[row]; }

size_t emb_bytes(const emb_table *t) {
    return rows_index_bytes(&t->book) + t->book.cap * emb_row_bytes(t);
}

void emb_gather(float *out, const emb_table *t, const int64_t *rows, int n) {
    int d = t->d;
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * d, t->store + (size_t)rows[i] * 2 * d, sizeof(float) * d);
}

void emb_grad_begin(emb_table *t) { t->n_touched = 0; }

/* sparse-set membership: valid whatever stale value mark[row] holds */
static int64_t emb__touch_pos(const emb_table *t, int64_t row) {
    uint32_t p = t->mark[row];
    return p < t->n_touched && t->touched[p] == (uint32_t)row ? (int64_t)p : -1;
}

int emb_grad_add(emb_table *t, int64_t row, const float *g) {
    int d = t->d;
    int64_t p = emb__touch_pos(t, row);
    if (p < 0) {
        if (t->n_touched == t->touch_cap && emb__grow_touch(t, t->touch_cap * 2) != 0)
            return -1;
        p = (int64_t)t->n_touched++;
        t->touched[p] = (uint32_t)row;
        t->mark[row] = (uint32_t)p;
        memcpy(t->gbuf + (size_t)p * d, g, sizeof(float) * d);
        return 0;
    }
    float *acc = t->gbuf + (size_t)p * d;
    for (int j = 0; j < d; j++) acc[j] += g[j];
    return 0;
}

const float *emb_grad_get(const emb_table *t, int64_t row) {
    if (row < 0 || (size_t)row >= t->book.n) return NULL;
    int64_t p = emb__touch_pos(t, row);
    return p < 0 ? NULL : t->gbuf + (size_t)p * t->d;
}

size_t emb_grad_touched(const emb_table *t) { return t->n_touched; }

/* One Adagrad step on a row: w (d), G (d), g (d) its summed gradient. */
static void emb__adagrad_row(float *w, float *G, const float *g, int d, float lr, float l2) {
    int j = 0;
#ifdef __SSE2__
    /* explicit SSE, not left to the vectorizer; the same operations in the same order as
     * the loop below */
    const __m128 lr4 = _mm_set1_ps(lr), l24 = _mm_set1_ps(l2), tiny = _mm_set1_ps(1e-8f);
    for (; j + 4 <= d; j += 4) {
        __m128 wj = _mm_loadu_ps(w + j);
        __m128 gj = _mm_add_ps(_mm_loadu_ps(g + j), _mm_mul_ps(l24, wj));
        __m128 Gj = _mm_add_ps(_mm_loadu_ps(G + j), _mm_mul_ps(gj, gj));
        _mm_storeu_ps(G + j, Gj);
        __m128 step = _mm_div_ps(_mm_mul_ps(lr4, gj), _mm_add_ps(_mm_sqrt_ps(Gj), tiny));
        _mm_storeu_ps(w + j, _mm_sub_ps(wj, step));
    }
#endif
    for (; j < d; j++) {
        float gj = g[j] + l2 * w[j];
        G[j] += gj * gj;
        w[j] -= lr * gj / (sqrtf(G[j]) + 1e-8f);
    }
}

void emb_set_step_hook(emb_table *t, emb_step_hook fn, void *ud) {
    t->hook = fn;
    t->hook_ud = ud;
}

void emb_grad_apply(emb_table *t, float lr, float l2) {
    int d = t->d;
    if (t->hook && t->n_touched) t->hook(t->hook_ud, t, t->touched, t->n_touched);
    for (size_t p = 0; p < t->n_touched; p++) {
        float *w = t->store + (size_t)t->touched[p] * 2 * d;
        emb__adagrad_row(w, w + d, t->gbuf + p * d, d, lr, l2);
    }
    t->n_touched = 0;
}

/* ---------------------------------------------------------------- persistence */

void emb_set_clock(emb_table *t, uint32_t tick, int64_t seen_ms) {
    rows_set_clock(&t->book, tick, seen_ms);
}

uint64_t emb_key(const emb_table *t, int64_t row) { return t->book.keys[row]; }
int emb_dirty(const emb_table *t, int64_t row) { return t->book.dirty[row]; }
void emb_set_dirty(emb_table *t, int64_t row, int dirty) { rows_set_dirty(&t->book, row, dirty); }
void emb_clean_all(emb_table *t) { rows_clean_all(&t->book); }
size_t emb_dirty_rows(const emb_table *t) { return t->book.n_dirty; }
uint32_t emb_tick(const emb_table *t, int64_t row) { return t->book.tick[row]; }
int64_t emb_seen(const emb_table *t, int64_t row) { return t->book.seen[row]; }
void emb_touch(emb_table *t, int64_t row) { rows_touch(&t->book, row); }

size_t emb_row_bytes(const emb_table *t) {
    /* weights and accumulators, mark and cnt, then the book's share */
    return 2 * (size_t)t->d * sizeof(float) + 2 * sizeof(uint32_t) + rows_row_bytes();
}

size_t emb_capacity(const emb_table *t) { return t->book.cap; }

int emb_reserve(emb_table *t, size_t rows_cap) { return rows_reserve(&t->book, rows_cap); }

int64_t emb_remove(emb_table *t, uint64_t key) {
    uint32_t last;
    int64_t row = rows_remove(&t->book, key, &last);
    if (row < 0) return row;
    int d = t->d;
    memcpy(t->store + (size_t)row * 2 * d, t->store + (size_t)last * 2 * d,
           sizeof(float) * 2 * (size_t)d);
    t->mark[row] = t->mark[last];
    t->cnt[row] = t->cnt[last];
    return row;
}

size_t emb_value_bytes(const emb_table *t) {
    return 2 * (size_t)t->d * sizeof(float) + sizeof(uint32_t) + sizeof(int64_t);
}

void emb_value_save(const emb_table *t, int64_t row, void *buf) {
    unsigned char *b = buf;
    size_t fl = 2 * (size_t)t->d * sizeof(float);
    memcpy(b, t->store + (size_t)row * 2 * t->d, fl);
    memcpy(b + fl, &t->cnt[row], sizeof(uint32_t));
    memcpy(b + fl + sizeof(uint32_t), &t->book.seen[row], sizeof(int64_t));
}

int64_t emb_value_seen(const emb_table *t, const void *val, size_t len) {
    int64_t seen;
    if (len != emb_value_bytes(t)) return INT64_MIN;
    memcpy(&seen, (const unsigned char *)val + 2 * (size_t)t->d * sizeof(float) + sizeof(uint32_t),
           sizeof seen);
    return seen;
}

int64_t emb_value_load(emb_table *t, uint64_t key, const void *val, size_t len) {
    if (len != emb_value_bytes(t)) return -2;
    int64_t row = rows_append_stored(&t->book, key, emb_value_seen(t, val, len));
    if (row < 0) return row;
    const unsigned char *b = val;
    size_t fl = 2 * (size_t)t->d * sizeof(float);
    memcpy(t->store + (size_t)row * 2 * t->d, b, fl);
    t->mark[row] = 0;
    memcpy(&t->cnt[row], b + fl, sizeof(uint32_t));
    return row;
}
