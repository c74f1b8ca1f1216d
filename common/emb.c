/* emb.c - embedding table: 64-bit key -> d-wide row, with lazy per-row Adagrad. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include "emb.h"

#define EMB__EMPTY UINT32_MAX

typedef struct {
    uint64_t key;
    uint32_t row;   /* EMB__EMPTY marks a free slot */
} emb__slot;

struct emb_table {
    int d;
    uint64_t seed;
    float init_acc;
    emb__slot *slots;       /* (cap) */
    size_t cap, mask;       /* cap is a power of two */
    int shift;              /* 64 - log2(cap) */
    float *store;           /* (rows_cap, 2d): weights then accumulators */
    uint32_t *mark;         /* (rows_cap) position in touched[], sparse-set style */
    uint32_t *cnt;          /* (rows_cap) the owner's per-row counter */
    size_t rows, rows_cap;
    /* gradients of the current step */
    uint32_t *touched;      /* (touch_cap) distinct rows, in first-touch order */
    float *gbuf;            /* (touch_cap, d) their summed gradients */
    size_t n_touched, touch_cap;
};

static uint64_t emb__mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t emb__home(const emb_table *t, uint64_t key) {
    return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> t->shift);
}

static int emb__alloc_slots(emb_table *t, size_t cap) {
    emb__slot *s = malloc(cap * sizeof *s);
    if (!s) return -1;
    for (size_t i = 0; i < cap; i++) s[i].row = EMB__EMPTY;
    int lg = 0;
    while (((size_t)1 << lg) < cap) lg++;
    emb__slot *old = t->slots;
    size_t old_cap = t->cap;
    t->slots = s;
    t->cap = cap;
    t->mask = cap - 1;
    t->shift = 64 - lg;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].row == EMB__EMPTY) continue;
        size_t h = emb__home(t, old[i].key);
        while (s[h].row != EMB__EMPTY) h = (h + 1) & t->mask;
        s[h] = old[i];
    }
    free(old);
    return 0;
}

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

emb_table *emb_new(int d, uint64_t seed, float init_acc, size_t touch_cap,
                   char *errstr, size_t errstr_size) {
    if (d <= 0 || d > 4096) {
        snprintf(errstr, errstr_size, "embedding width %d out of range 1..4096", d);
        return NULL;
    }
    emb_table *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->d = d;
    t->seed = seed;
    t->init_acc = init_acc;
    if (emb__alloc_slots(t, 1024) != 0) goto oom;
    if (emb__grow_touch(t, touch_cap ? touch_cap : 256) != 0) goto oom;
    return t;
oom:
    emb_destroy(t);
    snprintf(errstr, errstr_size, "out of memory creating an embedding table");
    return NULL;
}

void emb_destroy(emb_table *t) {
    if (!t) return;
    free(t->slots);
    free(t->store);
    free(t->mark);
    free(t->cnt);
    free(t->touched);
    free(t->gbuf);
    free(t);
}

int64_t emb_find(const emb_table *t, uint64_t key) {
    size_t h = emb__home(t, key);
    for (;;) {
        const emb__slot *s = &t->slots[h];
        if (s->row == EMB__EMPTY) return -1;
        if (s->key == key) return s->row;
        h = (h + 1) & t->mask;
    }
}

static void emb__init_row(emb_table *t, float *w, uint64_t key) {
    int d = t->d;
    uint64_t base = emb__mix(t->seed ^ emb__mix(key));
    for (int j = 0; j < d; j++) {
        uint64_t r = emb__mix(base + (uint64_t)j);
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
    size_t h = emb__home(t, key);
    if (created) *created = 0;
    for (;;) {
        emb__slot *s = &t->slots[h];
        if (s->row == EMB__EMPTY) break;
        if (s->key == key) return s->row;
        h = (h + 1) & t->mask;
    }
    /* absent: make room first, so a failure leaves the table unchanged */
    if (t->rows >= UINT32_MAX - 1) return -1;
    if (t->rows == t->rows_cap) {
        size_t nc = t->rows_cap ? t->rows_cap * 2 : 1024;
        float *st = realloc(t->store, nc * 2 * (size_t)t->d * sizeof *st);
        if (!st) return -1;
        t->store = st;
        uint32_t *mk = realloc(t->mark, nc * sizeof *mk);
        if (!mk) return -1;
        t->mark = mk;
        uint32_t *cn = realloc(t->cnt, nc * sizeof *cn);
        if (!cn) return -1;
        t->cnt = cn;
        t->rows_cap = nc;
    }
    if ((t->rows + 1) * 10 > t->cap * 7) {
        if (emb__alloc_slots(t, t->cap * 2) != 0) return -1;
        h = emb__home(t, key);
        while (t->slots[h].row != EMB__EMPTY) h = (h + 1) & t->mask;
    }
    uint32_t row = (uint32_t)t->rows++;
    t->slots[h].key = key;
    t->slots[h].row = row;
    t->mark[row] = 0;
    t->cnt[row] = 0;
    float *w = t->store + (size_t)row * 2 * t->d;
    emb__init_row(t, w, key);
    if (init) memcpy(w, init, sizeof(float) * t->d);
    if (created) *created = 1;
    return row;
}

size_t emb_rows(const emb_table *t) { return t->rows; }
int emb_dim(const emb_table *t) { return t->d; }

float *emb_weights(emb_table *t, int64_t row) {
    return t->store + (size_t)row * 2 * t->d;
}

float *emb_accum(emb_table *t, int64_t row) {
    return t->store + (size_t)row * 2 * t->d + t->d;
}

uint32_t *emb_count(emb_table *t, int64_t row) { return &t->cnt[row]; }

size_t emb_bytes(const emb_table *t) {
    return t->cap * sizeof(emb__slot) +
           t->rows_cap * (2 * (size_t)t->d * sizeof(float) + 2 * sizeof(uint32_t));
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
    if (row < 0 || (size_t)row >= t->rows) return NULL;
    int64_t p = emb__touch_pos(t, row);
    return p < 0 ? NULL : t->gbuf + (size_t)p * t->d;
}

size_t emb_grad_touched(const emb_table *t) { return t->n_touched; }

/* One Adagrad step on a row: w (d), G (d), g (d) its summed gradient. */
static void emb__adagrad_row(float *w, float *G, const float *g, int d, float lr, float l2) {
    int j = 0;
#ifdef __SSE2__
    /* the -O2 build does not vectorize; same operations in the same order as below */
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

void emb_grad_apply(emb_table *t, float lr, float l2) {
    int d = t->d;
    for (size_t p = 0; p < t->n_touched; p++) {
        float *w = t->store + (size_t)t->touched[p] * 2 * d;
        emb__adagrad_row(w, w + d, t->gbuf + p * d, d, lr, l2);
    }
    t->n_touched = 0;
}
