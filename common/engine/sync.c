/* sync.c - a model's update since its last sync point as a blob, and a peer's blob applied
 * (sync.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/err.h"
#include "base/hash.h"
#include "base/wire.h"
#include "engine/emb.h"
#include "engine/keymap.h"
#include "engine/sync.h"

#define SYNC__MAGIC 0x5953334dU   /* "M3SY" little-endian */

/* The fixed header, in this order on the wire. */
typedef struct {
    uint32_t magic, version, head_bytes, sender;
    uint64_t cfg_hash, seq;
    int64_t model_version;
    uint32_t emb_dim, flags;
    uint64_t n_params, n_rows, n_exc;
    uint64_t batches;      /* minibatches the sender trained since its last extract */
} sync__head;
#define SYNC__HEAD_BYTES 80u
#define SYNC__F_GRAD 1u    /* the dense part is the sum of `batches` minibatch gradients */
#define SYNC__F_BF16 2u    /* ... in bfloat16 (2 bytes each; only with SYNC__F_GRAD) */
/* Bytes of one dense value on the wire, from the flags. */
#define SYNC__DENSE_W(flags) ((flags) & SYNC__F_BF16 ? 2u : 4u)
/* A row on the wire: key, d float deltas, the counter's delta. */
#define SYNC__ROW_BYTES(d) (8 + 4 * (size_t)(d) + 4)
_Static_assert(sizeof(sync__head) == SYNC__HEAD_BYTES, "the header has no padding");

uint64_t sync_checksum(const void *p, size_t n) { return hash_words64(p, n); }

/* A delta a float cannot hold exactly: its low part, at a flat index (dense parameters
 * first, then the rows' coordinates in blob order). */
typedef struct {
    uint32_t idx;
    float lo;
} sync__exc;

struct sync_state {
    m3_model *m;
    emb_table *t;
    int d;
    uint32_t sender;
    uint64_t seq;
    float *dense;          /* (n_params) the dense parameters at the sync point */
    size_t np;
    /* the journal: shared rows touched since the sync point, with their values then */
    km_map idx;            /* key -> journal entry */
    uint64_t *keys;        /* (cap) */
    float *base;           /* (cap, d) */
    uint32_t *bcnt;        /* (cap) the rows' counters at the sync point */
    size_t n, cap;
    int failed;            /* the hook ran out of memory: the next extract fails */
    sync_stats last;
    uint64_t batches;      /* minibatches trained since sync_new (the dense hook counts) */
    /* the grad rule (sync_set_grad): the dense part travels as gradients */
    int grad;
    float *gacc;           /* (n_params) own minibatch gradients summed since the extract */
    uint64_t gbat;         /* their count */
    float *rsum;           /* (n_params) the round's gradients, weighted, for sync_step */
    double rbat;           /* their minibatches, weighted */
    int bf16;              /* sync_set_bf16: the gradient sent in bfloat16 */
    int stale_lr;          /* sync_set_stale_lr: a stale round's step divided */
    int64_t rstale;        /* the round's largest staleness (Adam steps) */
    float *gres;           /* (n_params) what bfloat16 rounded off, sent with the next */
};

static float sync__f32(const unsigned char *p);

/* c + d, saturating at UINT32_MAX (a row's counter). */
static uint32_t sync__sat_add(uint32_t c, uint32_t d) {
    return c > UINT32_MAX - d ? UINT32_MAX : c + d;
}

static int sync__user_key(uint64_t key) { return (int)(key >> 56) == M3_SLOT_USER; }

/* The journal entry of key, or -1. */
static int64_t sync__find(const sync_state *s, uint64_t key) {
    return s->idx.slots ? km_find(&s->idx, key) : -1;
}

/* emb_grad_apply's hook: the first time a shared row steps after the sync point, keep its
 * value (the sync point's). */
static void sync__hook(void *ud, emb_table *t, const uint32_t *rows, size_t n) {
    sync_state *s = ud;
    for (size_t i = 0; i < n && !s->failed; i++) {
        uint64_t key = emb_key(t, rows[i]);
        if (sync__user_key(key)) continue;
        if (!s->idx.slots && km_resize(&s->idx, km_slots_for(1024)) != 0) goto oom;
        size_t h = km_probe(&s->idx, key);
        if (s->idx.slots[h].row != KM_EMPTY) continue;
        if (s->n == s->cap) {
            size_t cap = s->cap ? 2 * s->cap : 1024;
            uint64_t *k = realloc(s->keys, cap * sizeof *k);
            if (k) s->keys = k;
            float *b = k ? realloc(s->base, cap * (size_t)s->d * sizeof *b) : NULL;
            if (b) s->base = b;
            uint32_t *c = b ? realloc(s->bcnt, cap * sizeof *c) : NULL;
            if (!c) goto oom;
            s->bcnt = c;
            s->cap = cap;
        }
        if (km_insert(&s->idx, key, (uint32_t)s->n, h, s->n + 1) != 0) goto oom;
        s->keys[s->n] = key;
        memcpy(s->base + s->n * (size_t)s->d, emb_weights(t, rows[i]), sizeof(float) * s->d);
        s->bcnt[s->n] = *emb_count(t, rows[i]);
        s->n++;
    }
    return;
oom:
    s->failed = 1;
}

/* m3_train's dense hook: counts the minibatch; under the grad rule keeps its gradient
 * for the next extract and tells the model not to step. */
static int sync__grad_hook(void *ud, m3_model *m, const float *g, size_t n) {
    sync_state *s = ud;
    (void)m;
    s->batches++;
    if (!s->grad) return 0;
    for (size_t j = 0; j < n; j++) s->gacc[j] += g[j];
    s->gbat++;
    return 1;
}

sync_state *sync_new(m3_model *m, uint32_t sender, char *errstr, size_t errstr_size) {
    sync_state *s = calloc(1, sizeof *s);
    if (s) {
        s->m = m;
        s->t = m3_emb_table(m);
        s->d = emb_dim(s->t);
        s->sender = sender;
        s->np = m3_n_params(m);
        s->dense = malloc((s->np ? s->np : 1) * sizeof(float));
    }
    if (!s || !s->dense) {
        sync_destroy(s);
        err_set(errstr, errstr_size, "out of memory creating a sync state");
        return NULL;
    }
    memcpy(s->dense, m3_params(m), s->np * sizeof(float));
    emb_set_step_hook(s->t, sync__hook, s);
    m3_set_grad_hook(m, sync__grad_hook, s);
    return s;
}

int sync_set_grad(sync_state *s, int on, char *errstr, size_t errstr_size) {
    if (on && !s->gacc) {
        s->gacc = calloc(s->np ? s->np : 1, sizeof(float));
        s->rsum = calloc(s->np ? s->np : 1, sizeof(float));
        if (!s->gacc || !s->rsum) {
            free(s->gacc);
            free(s->rsum);
            s->gacc = s->rsum = NULL;
            return err_set(errstr, errstr_size, "out of memory for the grad rule's buffers");
        }
    }
    s->grad = on != 0;
    return 0;
}

int sync_set_bf16(sync_state *s, int on, char *errstr, size_t errstr_size) {
    if (on && !s->gres && !(s->gres = calloc(s->np ? s->np : 1, sizeof(float))))
        return err_set(errstr, errstr_size, "out of memory for the bfloat16 residuals");
    s->bf16 = on != 0;
    return 0;
}

void sync_set_stale_lr(sync_state *s, int on) { s->stale_lr = on != 0; }

uint64_t sync_batches(const sync_state *s) { return s->batches; }

/* x rounded to the nearest bfloat16 (ties to even): its top 16 bits. */
static uint16_t sync__bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float sync__from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* The dense value at p (the wire's width). */
static float sync__dense_at(const unsigned char *p, unsigned w) {
    uint16_t h;
    if (w != 2) return sync__f32(p);
    memcpy(&h, p, 2);
    return sync__from_bf16(h);
}

int sync_step(sync_state *s) {
    if (!s->grad || s->rbat <= 0.0) return 0;
    float inv = (float)(1.0 / s->rbat);
    for (size_t j = 0; j < s->np; j++) s->rsum[j] *= inv;
    m3_dense_step(s->m, s->rsum, s->stale_lr ? 1.0f / (float)(1 + s->rstale) : 1.0f);
    memset(s->rsum, 0, s->np * sizeof(float));
    s->rbat = 0.0;
    s->rstale = 0;
    return 1;
}

size_t sync_round_save(const sync_state *s, void *buf) {
    if (!s->grad) return 0;
    size_t n = 16 + s->np * sizeof(float);
    if (!buf) return n;
    wire_w w = { buf, 0 };
    wire_put(&w, &s->rbat, 8);
    wire_put(&w, &s->rstale, 8);
    wire_put(&w, s->rsum, s->np * sizeof(float));
    return n;
}

int sync_round_load(sync_state *s, const void *buf, size_t len, char *errstr, size_t n) {
    if (!s->grad || len != sync_round_save(s, NULL))
        return err_set(errstr, n, "sync: a round of %zu bytes, this %s", len,
                       s->grad ? "model's is another size" : "worker does not run the grad rule");
    const unsigned char *b = buf;
    double rbat;
    int64_t rstale;
    memcpy(&rbat, b, 8);
    memcpy(&rstale, b + 8, 8);
    int ok = isfinite(rbat) && rbat >= 0.0 && rstale >= 0;
    for (size_t j = 0; ok && j < s->np; j++) ok = isfinite(sync__f32(b + 16 + 4 * j));
    if (!ok) return err_set(errstr, n, "sync: a round with a value that is not finite or negative");
    s->rbat = rbat;
    s->rstale = rstale;
    memcpy(s->rsum, b + 16, s->np * sizeof(float));
    return 0;
}

void sync_destroy(sync_state *s) {
    if (!s) return;
    if (s->t) emb_set_step_hook(s->t, NULL, NULL);
    if (s->m) m3_set_grad_hook(s->m, NULL, NULL);
    free(s->dense);
    free(s->gacc);
    free(s->rsum);
    free(s->gres);
    free(s->keys);
    free(s->base);
    free(s->bcnt);
    km_free(&s->idx);
    free(s);
}

/* One coordinate's delta now - then, split into a float and, when a float cannot hold it
 * exactly, an exception with the low part. Returns 0, or -1 when out of memory. */
static int sync__delta(float now, float then, float *hi, uint32_t idx, sync__exc **exc,
                       size_t *n_exc, size_t *cap) {
    double dd = (double)now - (double)then;
    *hi = (float)dd;
    float lo = (float)(dd - (double)*hi);
    if (lo == 0.0f) return 0;
    if (*n_exc == *cap) {
        size_t c = *cap ? 2 * *cap : 256;
        sync__exc *e = realloc(*exc, c * sizeof *e);
        if (!e) return -1;
        *exc = e;
        *cap = c;
    }
    (*exc)[(*n_exc)++] = (sync__exc){ idx, lo };
    return 0;
}

/* Every delta (dense, then the journal's rows still in the table) into hi, and the
 * exceptions; rows[] gets each row's journal entry. Returns the row count, or -1 with errstr. */
static int64_t sync__deltas(sync_state *s, float *hi, int64_t *rows, uint32_t *cnt,
                            sync__exc **exc, size_t *n_exc, char *errstr, size_t n) {
    size_t cap = 0, nr = 0, d = (size_t)s->d;
    const float *p = m3_params(s->m);
    if (s->grad) memcpy(hi, s->gacc, s->np * sizeof(float));   /* a gradient: no low parts */
    for (size_t j = 0; s->grad && s->bf16 && j < s->np; j++) {   /* error feedback */
        float x = hi[j] + s->gres[j];
        hi[j] = sync__from_bf16(sync__bf16(x));
        s->gres[j] = x - hi[j];
    }
    for (size_t j = 0; j < s->np && !s->grad; j++)
        if (sync__delta(p[j], s->dense[j], &hi[j], (uint32_t)j, exc, n_exc, &cap) != 0) goto oom;
    for (size_t e = 0; e < s->n; e++) {
        int64_t row = emb_find(s->t, s->keys[e]);
        if (row < 0) continue;   /* evicted since: its update stays with the store */
        cnt[nr] = *emb_count(s->t, row) - s->bcnt[e];   /* counters only grow locally */
        const float *w = emb_weights(s->t, row), *b = s->base + e * d;
        float *h = hi + s->np + nr * d;
        for (size_t j = 0; j < d; j++)
            if (sync__delta(w[j], b[j], &h[j], (uint32_t)(s->np + nr * d + j), exc, n_exc,
                            &cap) != 0)
                goto oom;
        rows[nr++] = (int64_t)e;
    }
    size_t total = s->np + nr * d;
    for (size_t j = 0; j < total; j++)
        if (!isfinite(hi[j])) return err_set(errstr, n, "sync: a non-finite delta (not sent)");
    return (int64_t)nr;
oom:
    return err_set(errstr, n, "sync: out of memory extracting an update");
}

/* The header, the deltas, the rows' keys, the exceptions and the checksum into a new blob.
 * Returns its size, or 0 with errstr. */
static size_t sync__write(sync_state *s, const float *hi, const int64_t *rows,
                          const uint32_t *cnt, size_t nr, const sync__exc *exc, size_t n_exc,
                          unsigned char **out, char *errstr, size_t n) {
    size_t d = (size_t)s->d;
    uint32_t flags = s->grad ? SYNC__F_GRAD | (s->bf16 ? SYNC__F_BF16 : 0u) : 0u;
    size_t dw = SYNC__DENSE_W(flags);
    size_t size = SYNC__HEAD_BYTES + s->np * dw + nr * SYNC__ROW_BYTES(d) + n_exc * 8 + 8;
    if (size > SYNC_MAX_BYTES || s->np + nr * d >= UINT32_MAX) {
        err_set(errstr, n, "sync: an update of %zu bytes is over the bound of %zu", size,
                SYNC_MAX_BYTES);
        return 0;
    }
    unsigned char *b = malloc(size);
    if (!b) {
        err_set(errstr, n, "sync: out of memory extracting an update");
        return 0;
    }
    sync__head h = { SYNC__MAGIC, SYNC_FORMAT_VERSION, SYNC__HEAD_BYTES, s->sender,
                     m3_cfg_hash(s->m), s->seq, m3_steps(s->m), (uint32_t)d,
                     flags, s->np, nr, n_exc, s->grad ? s->gbat : 0 };
    wire_w w = { b, 0 };
    wire_put(&w, &h, sizeof h);
    if (dw == 4) wire_put(&w, hi, s->np * sizeof(float));
    for (size_t j = 0; dw == 2 && j < s->np; j++) {
        uint16_t x = sync__bf16(hi[j]);   /* exact: hi[j] is a bfloat16 already */
        wire_put(&w, &x, 2);
    }
    for (size_t r = 0; r < nr; r++) {
        wire_put(&w, &s->keys[rows[r]], 8);
        wire_put(&w, hi + s->np + r * d, d * sizeof(float));
        wire_put(&w, &cnt[r], 4);
    }
    for (size_t e = 0; e < n_exc; e++) {
        wire_put(&w, &exc[e].idx, 4);
        wire_put(&w, &exc[e].lo, 4);
    }
    uint64_t sum = sync_checksum(b, w.off);
    wire_put(&w, &sum, sizeof sum);
    s->last = (sync_stats){ size, s->np * dw, nr * SYNC__ROW_BYTES(d), nr, n_exc };
    *out = b;
    return size;
}

/* The current state becomes the sync point: the dense copy (or, under the grad rule, no
 * gradient kept), an empty journal. */
static void sync__mark(sync_state *s) {
    memcpy(s->dense, m3_params(s->m), s->np * sizeof(float));
    if (s->grad) memset(s->gacc, 0, s->np * sizeof(float));
    s->gbat = 0;
    for (size_t i = 0; s->idx.slots && i < s->idx.cap; i++) s->idx.slots[i].row = KM_EMPTY;
    s->n = 0;
}

size_t sync_extract(sync_state *s, unsigned char **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (s->failed) {
        err_set(errstr, errstr_size, "sync: out of memory keeping the touched rows");
        return 0;
    }
    float *hi = malloc((s->np + s->n * (size_t)s->d + 1) * sizeof *hi);
    int64_t *rows = malloc((s->n + 1) * sizeof *rows);
    uint32_t *cnt = malloc((s->n + 1) * sizeof *cnt);
    sync__exc *exc = NULL;
    size_t n_exc = 0, size = 0;
    int64_t nr = -1;
    if (!hi || !rows || !cnt) err_set(errstr, errstr_size, "sync: out of memory extracting an update");
    else nr = sync__deltas(s, hi, rows, cnt, &exc, &n_exc, errstr, errstr_size);
    if (nr >= 0)
        size = sync__write(s, hi, rows, cnt, (size_t)nr, exc, n_exc, out, errstr, errstr_size);
    free(hi);
    free(rows);
    free(cnt);
    free(exc);
    if (!size) return 0;
    s->seq++;
    sync__mark(s);
    return size;
}

void sync_last_stats(const sync_state *s, sync_stats *st) { *st = s->last; }

/* ---------------------------------------------------------------- checking and applying */

static float sync__f32(const unsigned char *p) {
    float f;
    memcpy(&f, p, 4);
    return f;
}

/* The body after the header: finite values, no user row, exceptions in range and ascending. */
static int sync__check_body(const unsigned char *b, const sync__head *h, char *errstr,
                            size_t n) {
    size_t d = h->emb_dim, off = SYNC__HEAD_BYTES, total = h->n_params + h->n_rows * d;
    unsigned dw = SYNC__DENSE_W(h->flags);
    for (size_t j = 0; j < h->n_params; j++, off += dw)
        if (!isfinite(sync__dense_at(b + off, dw)))
            return err_set(errstr, n, "sync blob: non-finite dense delta at %zu", j);
    for (uint64_t r = 0; r < h->n_rows; r++) {
        uint64_t key;
        memcpy(&key, b + off, 8);
        if (sync__user_key(key))
            return err_set(errstr, n, "sync blob: row %llu is keyed by a user id (user rows "
                           "live with their partition, never in a model update)",
                           (unsigned long long)r);
        off += 8;
        for (size_t j = 0; j < d; j++, off += 4)
            if (!isfinite(sync__f32(b + off)))
                return err_set(errstr, n, "sync blob: non-finite delta in row %llu",
                               (unsigned long long)r);
        off += 4;   /* the counter's delta: any value */
    }
    for (uint64_t e = 0, prev = 0; e < h->n_exc; e++, off += 8) {
        uint32_t idx;
        memcpy(&idx, b + off, 4);
        if (idx >= total || (e > 0 && idx <= prev) || !isfinite(sync__f32(b + off + 4)))
            return err_set(errstr, n, "sync blob: exception %llu malformed",
                           (unsigned long long)e);
        prev = idx;
    }
    return 0;
}

int sync_check(const m3_model *m, const void *blob, size_t len, sync_info *info,
               char *errstr, size_t n) {
    const unsigned char *b = blob;
    sync__head h;
    if (len < SYNC__HEAD_BYTES + 8 || len > SYNC_MAX_BYTES)
        return err_set(errstr, n, "sync blob: %zu bytes, outside %u..%zu", len,
                       SYNC__HEAD_BYTES + 8, SYNC_MAX_BYTES);
    memcpy(&h, b, sizeof h);
    if (h.magic != SYNC__MAGIC)
        return err_set(errstr, n, "sync blob: bad magic 0x%08x (not a model update)", h.magic);
    if (h.version != SYNC_FORMAT_VERSION)
        return err_set(errstr, n, "sync blob: format version %u, this build reads %u",
                       h.version, SYNC_FORMAT_VERSION);
    if (h.head_bytes != SYNC__HEAD_BYTES)
        return err_set(errstr, n, "sync blob: header of %u bytes, expected %u", h.head_bytes,
                       SYNC__HEAD_BYTES);
    if ((h.flags & ~(SYNC__F_GRAD | SYNC__F_BF16)) || h.flags == SYNC__F_BF16)
        return err_set(errstr, n, "sync blob: flags 0x%x unknown (bfloat16 only for a "
                       "gradient)", h.flags);
    if (h.cfg_hash != m3_cfg_hash(m))
        return err_set(errstr, n, "sync blob: configuration hash differs (from a model of "
                       "another configuration)");
    size_t d = (size_t)emb_dim(m3_emb_table((m3_model *)m));
    if (h.emb_dim != d || h.n_params != m3_n_params(m))
        return err_set(errstr, n, "sync blob: emb width %u and %llu dense parameters, this "
                       "model has %zu and %zu", h.emb_dim, (unsigned long long)h.n_params, d,
                       m3_n_params(m));
    uint64_t max_rows = SYNC_MAX_BYTES / SYNC__ROW_BYTES(d);
    if (h.n_rows > max_rows || h.n_exc > h.n_params + h.n_rows * d)
        return err_set(errstr, n, "sync blob: %llu rows, %llu exceptions: over the bounds",
                       (unsigned long long)h.n_rows, (unsigned long long)h.n_exc);
    size_t want = SYNC__HEAD_BYTES + h.n_params * SYNC__DENSE_W(h.flags) + h.n_rows * SYNC__ROW_BYTES(d) +
                  h.n_exc * 8 + 8;
    if (want != len)
        return err_set(errstr, n, "sync blob: %zu bytes, its header says %zu (truncated?)",
                       len, want);
    uint64_t sum;
    memcpy(&sum, b + len - 8, 8);
    if (sum != sync_checksum(b, len - 8))
        return err_set(errstr, n, "sync blob: checksum mismatch (corrupt)");
    if (sync__check_body(b, &h, errstr, n) != 0) return -1;
    if (info)
        *info = (sync_info){ h.sender, h.seq, h.model_version, h.n_params, h.n_rows, h.n_exc,
                             h.batches, (h.flags & SYNC__F_GRAD) != 0,
                             (int)SYNC__DENSE_W(h.flags) };
    return 0;
}

/* The delta at flat index f: the float, plus the low part when the next exception is f. */
static double sync__at(const unsigned char *hi, const unsigned char *exc, uint64_t n_exc,
                       uint64_t *e, size_t f) {
    double v = sync__f32(hi);
    if (*e >= n_exc) return v;
    uint32_t idx;
    memcpy(&idx, exc + *e * 8, 4);
    if (idx != f) return v;
    v += sync__f32(exc + *e * 8 + 4);
    (*e)++;
    return v;
}

/* The first exception at or after flat index f, from exception e on. */
static uint64_t sync__exc_from(const unsigned char *exc, uint64_t n_exc, uint64_t e, size_t f) {
    for (; e < n_exc; e++) {
        uint32_t idx;
        memcpy(&idx, exc + e * 8, 4);
        if (idx >= f) break;
    }
    return e;
}

/* x += w v, rounded once to float. */
static void sync__add(float *x, double w, double v) { *x = (float)((double)*x + w * v); }

/* The dense part at b + SYNC__HEAD_BYTES: a delta added to the parameters (and to s's sync
 * point), or under the grad rule a gradient added to s's round (sync_step takes the step).
 * Returns the exception index past the dense part's. */
static uint64_t sync__apply_dense(m3_model *m, sync_state *s, const unsigned char *b,
                                  const sync_info *in, const unsigned char *exc, double w) {
    const unsigned char *hi = b + SYNC__HEAD_BYTES;
    uint64_t e = 0;
    if (in->grad) {   /* in chunks the compiler vectorises: the apply is N of these a round */
        float v[512];
        for (size_t j0 = 0; j0 < in->n_params && w != 0.0; j0 += 512) {
            size_t c = in->n_params - j0 < 512 ? in->n_params - j0 : 512;
            for (size_t j = 0; j < c; j++)
                v[j] = sync__dense_at(hi + (j0 + j) * in->dense_bytes, in->dense_bytes);
            for (size_t j = 0; j < c; j++) sync__add(&s->rsum[j0 + j], w, v[j]);
        }
        s->rbat += w * (double)in->batches;
        int64_t tau = m3_steps(m) - in->model_version;   /* the steps since it was computed */
        if (tau > s->rstale) s->rstale = tau;
        return 0;
    }
    float *p = m3_params(m);
    for (size_t j = 0; j < in->n_params && w != 0.0; j++) {
        double v = sync__at(hi + j * 4, exc, in->n_exc, &e, j);
        sync__add(&p[j], w, v);
        if (s) sync__add(&s->dense[j], w, v);
    }
    return sync__exc_from(exc, in->n_exc, e, in->n_params);   /* past the dense part's */
}

/* The rows: w x each delta, created first when absent; a peer's counter deltas added (an
 * item's impressions count across the group: MIEG warms it after item.warm of them). */
static void sync__apply_rows(m3_model *m, sync_state *s, const unsigned char *b,
                             const sync_info *in, const unsigned char *exc, uint64_t e,
                             double w) {
    static const float zeros[4096];
    emb_table *t = m3_emb_table(m);
    size_t d = (size_t)emb_dim(t), np = in->n_params, stride = SYNC__ROW_BYTES(d);
    const unsigned char *rb = b + SYNC__HEAD_BYTES + np * in->dense_bytes;
    int peer = !s || in->sender != s->sender;
    for (uint64_t r = 0; r < in->n_rows; r++, rb += stride) {
        uint64_t key;
        uint32_t dc;
        memcpy(&key, rb, 8);
        memcpy(&dc, rb + 8 + 4 * d, 4);
        int young = m3_uses_mieg(m) && (int)(key >> 56) == M3_SLOT_ITEM;
        int64_t row = emb_lookup_init(t, key, young ? zeros : NULL, NULL);
        int64_t je = s ? sync__find(s, key) : -1;
        float *x = emb_weights(t, row), *base = je >= 0 ? s->base + (size_t)je * d : NULL;
        for (size_t j = 0; j < d; j++) {
            double v = sync__at(rb + 8 + j * 4, exc, in->n_exc, &e, np + r * d + j);
            sync__add(&x[j], w, v);
            if (base) sync__add(&base[j], w, v);
        }
        if (!peer || !dc) continue;
        uint32_t *c = emb_count(t, row);
        *c = sync__sat_add(*c, dc);
        if (je >= 0) s->bcnt[je] = sync__sat_add(s->bcnt[je], dc);
    }
}

int sync_apply(m3_model *m, sync_state *s, const void *blob, size_t len, sync_weight wt,
               char *errstr, size_t n) {
    sync_info in;
    if (sync_check(m, blob, len, &in, errstr, n) != 0) return -1;
    if (in.grad != (s && s->grad))
        return err_set(errstr, n, "sync blob: its dense part is a %s, this worker %s (the "
                       "group's members run different rules)", in.grad ? "gradient" : "delta",
                       in.grad ? "applies deltas" : "runs the grad rule");
    emb_table *t = m3_emb_table(m);
    const unsigned char *b = blob;
    size_t d = (size_t)emb_dim(t), stride = SYNC__ROW_BYTES(d);
    const unsigned char *rows = b + SYNC__HEAD_BYTES + in.n_params * in.dense_bytes;
    const unsigned char *exc = rows + in.n_rows * stride;
    size_t absent = 0;
    if (wt.rows == 0.0f) in.n_rows = 0;   /* rows skipped */
    for (uint64_t r = 0; r < in.n_rows; r++) {
        uint64_t key;
        memcpy(&key, rows + r * stride, 8);
        absent += emb_find(t, key) < 0;
    }
    /* room for the new rows first: once anything changes, nothing can fail */
    if (absent && emb_reserve(t, emb_rows(t) + absent) != 0)
        return err_set(errstr, n, "sync: out of memory for %zu new rows (nothing applied)", absent);
    uint64_t e = sync__apply_dense(m, s, b, &in, exc, wt.dense);
    sync__apply_rows(m, s, b, &in, exc, e, wt.rows);
    return 0;
}

/* ---------------------------------------------------------------- merge rules */

static const char *const sync__rules[] = { "none", "sum", "scaled", "avg", "mixed", "grad" };
#define SYNC__N_RULES (int)(sizeof sync__rules / sizeof *sync__rules)

int sync_rule_parse(const char *name) {
    for (int r = 0; r < SYNC__N_RULES; r++)
        if (strcmp(name, sync__rules[r]) == 0) return r;
    return -1;
}

const char *sync_rule_name(int rule) {
    return rule >= 0 && rule < SYNC__N_RULES ? sync__rules[rule] : "?";
}

/* The weights of one part: sum, scaled or avg. */
static void sync__part(int rule, float inv, float *peer, float *own) {
    *peer = rule == SYNC_SUM ? 1.0f : rule == SYNC_NONE ? 0.0f : inv;
    *own = rule == SYNC_AVG ? inv - 1.0f : 0.0f;
}

void sync_rule_weights(int rule, int n, sync_weight *peer, sync_weight *own) {
    float inv = n > 0 ? 1.0f / (float)n : 1.0f;
    if (rule == SYNC_GRAD) {   /* every gradient into the round, own rows already in */
        *peer = (sync_weight){ 1.0f, 1.0f };
        *own = (sync_weight){ 1.0f, 0.0f };
        return;
    }
    sync__part(rule == SYNC_MIXED ? SYNC_AVG : rule, inv, &peer->dense, &own->dense);
    sync__part(rule == SYNC_MIXED ? SYNC_SUM : rule, inv, &peer->rows, &own->rows);
}
