/* pending.c - delayed-conversion join: id hash index + event-time min-heap, with the
 * entries' bodies spilled to a store once they are written there.
 *
 * Entries live in a slab of slots (free list). Two open-addressing indexes (linear
 * probing, backward-shift deletion, so no tombstones) map ids to slots: one for pending
 * entries, one for the FIFO ring of recently expired ids. The heap orders pending entries
 * by (impression time, insertion seq); a converted entry's heap node is left in place and
 * skipped when it surfaces (it no longer matches its slot's seq), so conversion is O(1).
 * A slot keeps the id, time and seq; the body (the example, predictions and snapshots:
 * ~900 bytes + 196 per m3rec model at the default size, allocated only as far as its
 * snapshots reach) is malloc'd while it exists only here, and dropped once
 * pend_sync_done() says the store has it: pend_convert / pend_expire read it back through
 * the loader. */
#include "stream/pending.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"

#define PEND__EMPTY UINT32_MAX
#define PEND__LATE_MIN 4096
#define PEND__LATE_MAX 262144

typedef struct {
    char id[M3_ID_MAX];
    int64_t ts;            /* impression time */
    uint64_t hash;
    uint64_t seq;          /* insertion number; matches its heap node while live */
    pend_entry *body;      /* NULL once spilled (the store has it) */
    uint32_t next_free;
    bool live;
    bool stored;           /* written to the store by a pend_sync that completed */
    bool elapsed;          /* its fake-negative copy went out (pend_elapse) */
} pend__slot;

typedef struct {
    int64_t ts;
    uint64_t seq;
    uint32_t slot;
} pend__hnode;

typedef struct {
    uint32_t *v;           /* (cap) slot or ring position, PEND__EMPTY when free */
    size_t cap, n;         /* cap is a power of two; n <= cap / 2 */
} pend__index;

struct pend_table {
    int64_t window, watermark;
    pend__slot *slots;     /* (cap_slots) */
    size_t n_slots, cap_slots;
    uint32_t free_head;
    size_t live;
    uint64_t next_seq;
    pend__index idx;       /* pending id -> slot */
    pend__hnode *heap;     /* (cap_heap) min-heap on (ts, seq) */
    size_t n_heap, cap_heap;
    int64_t elapse_ms;     /* pend_set_elapse: > 0 when entries elapse, else 0 */
    pend__hnode *eheap;    /* (cap_eheap) the entries not elapsed yet, min-heap on (ts, seq) */
    size_t n_eheap, cap_eheap;
    char (*late)[M3_ID_MAX];  /* (late_cap) ring of expired ids */
    uint64_t *late_hash;      /* (late_cap) */
    size_t late_cap, late_head, late_n;   /* oldest at late_head */
    pend__index late_idx;     /* expired id -> ring position */
    bool late_dirty;          /* the ring changed since the last pend_sync_done */
    /* the store behind the table */
    pend_load_fn load;
    void *load_ud;
    int load_tag;
    uint64_t load_errors;
    char (*dead)[M3_ID_MAX];  /* (n_dead) stored entries released since the last sync */
    size_t n_dead, cap_dead;
    size_t n_synced;          /* entries the last pend_sync reported */
};

/* FNV-1a, then splitmix64's finalizer so the low bits used for the index are mixed. */
static uint64_t pend__hash(const char *s) { return hash_fin64(hash_fnv64_str(s)); }

/* ---- the two indexes: `late` selects which table the values point into ---- */

static const char *pend__key(const pend_table *t, bool late, uint32_t v) {
    return late ? t->late[v] : t->slots[v].id;
}

static uint64_t pend__vhash(const pend_table *t, bool late, uint32_t v) {
    return late ? t->late_hash[v] : t->slots[v].hash;
}

static pend__index *pend__ix(pend_table *t, bool late) { return late ? &t->late_idx : &t->idx; }

static int pend__ix_init(pend__index *ix, size_t want) {
    size_t cap = 16;
    while (cap < want * 2) cap *= 2;
    ix->v = malloc(cap * sizeof *ix->v);
    if (!ix->v) return -1;
    memset(ix->v, 0xff, cap * sizeof *ix->v);
    ix->cap = cap;
    ix->n = 0;
    return 0;
}

/* Position in the index of id, or SIZE_MAX. */
static size_t pend__ix_find(const pend_table *t, bool late, const char *id, uint64_t h) {
    const pend__index *ix = late ? &t->late_idx : &t->idx;
    size_t mask = ix->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint32_t v = ix->v[i];
        if (v == PEND__EMPTY) return SIZE_MAX;
        if (pend__vhash(t, late, v) == h && strcmp(pend__key(t, late, v), id) == 0) return i;
    }
}

static void pend__ix_place(pend_table *t, bool late, uint32_t v) {
    pend__index *ix = pend__ix(t, late);
    size_t mask = ix->cap - 1;
    size_t i = (size_t)pend__vhash(t, late, v) & mask;
    while (ix->v[i] != PEND__EMPTY) i = (i + 1) & mask;
    ix->v[i] = v;
    ix->n++;
}

/* Inserts v (whose key is not in the index). Returns -1 when growing ran out of memory. */
static int pend__ix_insert(pend_table *t, bool late, uint32_t v) {
    pend__index *ix = pend__ix(t, late);
    if ((ix->n + 1) * 2 > ix->cap) {
        pend__index old = *ix;
        uint32_t *nv = malloc(old.cap * 2 * sizeof *nv);
        if (!nv) return -1;
        memset(nv, 0xff, old.cap * 2 * sizeof *nv);
        ix->v = nv;
        ix->cap = old.cap * 2;
        ix->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.v[i] != PEND__EMPTY) pend__ix_place(t, late, old.v[i]);
        free(old.v);
    }
    pend__ix_place(t, late, v);
    return 0;
}

/* Removes the value at position pos, shifting later members of its probe run back so
 * that every value stays reachable from its home position. */
static void pend__ix_remove(pend_table *t, bool late, size_t pos) {
    pend__index *ix = pend__ix(t, late);
    size_t mask = ix->cap - 1;
    size_t i = pos;
    ix->v[i] = PEND__EMPTY;
    ix->n--;
    for (size_t j = (i + 1) & mask; ix->v[j] != PEND__EMPTY; j = (j + 1) & mask) {
        size_t home = (size_t)pend__vhash(t, late, ix->v[j]) & mask;
        /* v[j] may move to i only if its home is not cyclically within (i, j] */
        if (((j - home) & mask) < ((j - i) & mask)) continue;
        ix->v[i] = ix->v[j];
        ix->v[j] = PEND__EMPTY;
        i = j;
    }
}

/* ---- heap ---- */

static bool pend__hless(const pend__hnode *a, const pend__hnode *b) {
    return a->ts < b->ts || (a->ts == b->ts && a->seq < b->seq);
}

/* The two heaps (expiry, elapse) share these: *heap holds *n nodes in room for *cap. */
static int pend__heap_push(pend__hnode **heap, size_t *n, size_t *cap, pend__hnode node) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        pend__hnode *nh = realloc(*heap, nc * sizeof *nh);
        if (!nh) return -1;
        *heap = nh;
        *cap = nc;
    }
    pend__hnode *h = *heap;
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pend__hless(&node, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = node;
    return 0;
}

static void pend__heap_pop(pend__hnode *h, size_t *np) {
    pend__hnode last = h[--*np];
    size_t n = *np, i = 0;
    if (n == 0) return;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pend__hless(&h[c + 1], &h[c])) c++;
        if (!pend__hless(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
}

/* ---- table ---- */

pend_table *pend_new(int64_t window_ms, size_t initial_capacity, char *errstr, size_t errstr_size) {
    if (window_ms <= 0) {
        snprintf(errstr, errstr_size, "pend_new: window %lld ms must be > 0", (long long)window_ms);
        return NULL;
    }
    if (initial_capacity < 16) initial_capacity = 16;
    if (initial_capacity > PEND__EMPTY / 4) initial_capacity = PEND__EMPTY / 4;
    pend_table *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->window = window_ms;
    t->watermark = INT64_MIN;
    t->free_head = PEND__EMPTY;
    t->cap_slots = initial_capacity;
    t->slots = malloc(t->cap_slots * sizeof *t->slots);
    t->cap_heap = initial_capacity;
    t->heap = malloc(t->cap_heap * sizeof *t->heap);
    t->late_cap = initial_capacity < PEND__LATE_MIN ? PEND__LATE_MIN
                : initial_capacity > PEND__LATE_MAX ? PEND__LATE_MAX : initial_capacity;
    t->late = malloc(t->late_cap * sizeof *t->late);
    t->late_hash = malloc(t->late_cap * sizeof *t->late_hash);
    if (!t->slots || !t->heap || !t->late || !t->late_hash) goto oom;
    if (pend__ix_init(&t->idx, initial_capacity) || pend__ix_init(&t->late_idx, t->late_cap)) goto oom;
    return t;
oom:
    snprintf(errstr, errstr_size, "pend_new: out of memory for %zu entries", initial_capacity);
    pend_destroy(t);
    return NULL;
}

void pend_destroy(pend_table *t) {
    if (!t) return;
    for (size_t i = 0; t->slots && i < t->n_slots; i++)
        if (t->slots[i].live) free(t->slots[i].body);
    free(t->dead);
    free(t->slots);
    free(t->heap);
    free(t->eheap);
    free(t->late);
    free(t->late_hash);
    free(t->idx.v);
    free(t->late_idx.v);
    free(t);
}

size_t pend_size(const pend_table *t) { return t->live; }
int64_t pend_watermark(const pend_table *t) { return t->watermark; }

static uint32_t pend__slot_alloc(pend_table *t) {
    if (t->free_head != PEND__EMPTY) {
        uint32_t s = t->free_head;
        t->free_head = t->slots[s].next_free;
        return s;
    }
    if (t->n_slots == t->cap_slots) {
        if (t->cap_slots >= PEND__EMPTY / 2) return PEND__EMPTY;
        size_t nc = t->cap_slots * 2;
        pend__slot *ns = realloc(t->slots, nc * sizeof *ns);
        if (!ns) return PEND__EMPTY;
        t->slots = ns;
        t->cap_slots = nc;
    }
    return (uint32_t)t->n_slots++;
}

static void pend__slot_free(pend_table *t, uint32_t s) {
    free(t->slots[s].body);
    t->slots[s].body = NULL;
    t->slots[s].live = false;
    t->slots[s].next_free = t->free_head;
    t->free_head = s;
}

/* Fill slot s with a live entry (body NULL: in the store only) and link it into the heap
 * and the id index. Returns 0, or -1 when either ran out of memory; the caller then frees
 * the slot and makes a heap node already pushed stale. */
static int pend__occupy(pend_table *t, uint32_t s, const char *id, size_t len, uint64_t h,
                        int64_t ts, uint64_t seq, pend_entry *body, bool restored) {
    pend__slot *sl = &t->slots[s];
    memcpy(sl->id, id, len + 1);
    sl->ts = ts;
    sl->body = body;
    sl->stored = body == NULL;
    sl->hash = h;
    sl->seq = seq;
    sl->live = true;
    /* restored from the store past its elapsed time (the watermark is restored first): its
     * copy went out before the restart, or (a backlog at the checkpoint) is lost */
    sl->elapsed = restored && t->elapse_ms > 0 && t->watermark != INT64_MIN &&
                  ts < t->watermark - t->elapse_ms;
    pend__hnode node = { ts, seq, s };
    if (t->elapse_ms > 0 && !sl->elapsed &&
        pend__heap_push(&t->eheap, &t->n_eheap, &t->cap_eheap, node) != 0)
        return -1;
    return pend__heap_push(&t->heap, &t->n_heap, &t->cap_heap, node) != 0 ||
           pend__ix_insert(t, false, s) != 0 ? -1 : 0;
}

/* Bytes of an entry up to the end of its snapshot: what a body in the table holds. */
static size_t pend__body_bytes(size_t snap_len) { return offsetof(pend_entry, snap) + snap_len; }

int pend_add(pend_table *t, const char *impression_id, const m3_example *ex,
             const float *p_ctcvr, const float *p_cvr, int n_models, const void *snap,
             size_t snap_len) {
    if (!impression_id || !ex || n_models < 0 || n_models > PEND_MAX_MODELS ||
        (n_models > 0 && !p_ctcvr) || snap_len > PEND_SNAP_MAX || (snap_len > 0 && !snap))
        return -1;
    size_t len = strlen(impression_id);
    if (len == 0 || len >= M3_ID_MAX) return -1;
    uint64_t h = pend__hash(impression_id);
    if (pend__ix_find(t, false, impression_id, h) != SIZE_MAX) return 1;

    pend_entry *body = calloc(1, pend__body_bytes(snap_len));
    if (!body) return -1;
    uint32_t s = pend__slot_alloc(t);
    if (s == PEND__EMPTY) {
        free(body);
        return -1;
    }
    memcpy(body->impression_id, impression_id, len + 1);
    body->ex = *ex;
    for (int i = 0; i < n_models; i++) body->p_ctcvr[i] = p_ctcvr[i];
    for (int i = 0; p_cvr && i < n_models; i++) body->p_cvr[i] = p_cvr[i];
    body->has_cvr = p_cvr != NULL;
    body->n_models = n_models;
    body->snap_len = (uint32_t)snap_len;
    if (snap_len) memcpy(body->snap, snap, snap_len);
    if (pend__occupy(t, s, impression_id, len, h, ex->ts_ms, t->next_seq, body, false) != 0) {
        /* a heap node pushed before an index failure is stale by seq: harmless */
        t->next_seq++;
        pend__slot_free(t, s);
        return -1;
    }
    t->next_seq++;
    t->live++;
    return 0;
}

/* Remember a stored entry's id for deletion at the next sync. */
static void pend__bury(pend_table *t, const char *id) {
    if (t->n_dead == t->cap_dead) {
        size_t nc = t->cap_dead ? t->cap_dead * 2 : 64;
        char (*nd)[M3_ID_MAX] = realloc(t->dead, nc * sizeof *nd);
        if (!nd) {   /* the store keeps a stale entry; a restart would release it twice */
            t->load_errors++;
            return;
        }
        t->dead = nd;
        t->cap_dead = nc;
    }
    strcpy(t->dead[t->n_dead++], id);
}

/* Copies slot s's entry into out with the labels of a release (reading a spilled body
 * back through the loader); the table does not change, but for the load error count. */
static void pend__copy_out(pend_table *t, uint32_t s, float y_conv, pend_entry *out) {
    pend__slot *sl = &t->slots[s];
    if (sl->body) {
        memcpy(out, sl->body, pend__body_bytes(sl->body->snap_len));
    } else if (!t->load || t->load(t->load_ud, t->load_tag, sl->id, out) != 0) {
        t->load_errors++;   /* the loader reported why; the caller sees pend_load_errors */
        memset(out, 0, sizeof *out);
        memcpy(out->impression_id, sl->id, sizeof sl->id);
        out->ex.ts_ms = sl->ts;
    }
    out->ex.y_click = 1.0f;
    out->ex.y_conv = y_conv;
    out->ex.w_ctr = 0.0f;     /* the click label was trained with the impression */
    out->ex.w_ctcvr = 1.0f;
    out->elapsed = sl->elapsed;
    out->copy = 0;
}

/* Copies a slot's entry out with its release labels and removes it from the table. */
static void pend__release(pend_table *t, uint32_t s, size_t ix_pos, float y_conv, pend_entry *out) {
    pend__slot *sl = &t->slots[s];
    if (out) pend__copy_out(t, s, y_conv, out);
    if (sl->stored) pend__bury(t, sl->id);
    pend__ix_remove(t, false, ix_pos);
    pend__slot_free(t, s);
    t->live--;
}

/* Remembers an expired id in the ring, forgetting the oldest when it is full. */
static void pend__remember_late(pend_table *t, const char *id, uint64_t h) {
    if (t->late_n == t->late_cap) {
        uint32_t old = (uint32_t)t->late_head;
        size_t pos = pend__ix_find(t, true, t->late[old], t->late_hash[old]);
        /* the index may point at a newer ring copy of the same id: keep that one */
        if (pos != SIZE_MAX && t->late_idx.v[pos] == old) pend__ix_remove(t, true, pos);
        t->late_head = (t->late_head + 1) % t->late_cap;
        t->late_n--;
    }
    uint32_t v = (uint32_t)((t->late_head + t->late_n) % t->late_cap);
    size_t pos = pend__ix_find(t, true, id, h);
    if (pos != SIZE_MAX) pend__ix_remove(t, true, pos);
    strcpy(t->late[v], id);
    t->late_hash[v] = h;
    t->late_n++;
    t->late_dirty = true;
    /* cannot fail: the late index never holds more than late_cap <= its cap / 2 ids */
    pend__ix_insert(t, true, v);
}

int pend_convert(pend_table *t, const char *impression_id, int64_t ts_ms, pend_entry *out) {
    if (!impression_id) return 0;
    uint64_t h = pend__hash(impression_id);
    size_t pos = pend__ix_find(t, false, impression_id, h);
    if (pos != SIZE_MAX) {
        uint32_t s = t->idx.v[pos];
        if (ts_ms - t->slots[s].ts > t->window) return 2;
        pend__release(t, s, pos, 1.0f, out);
        return 1;
    }
    return pend__ix_find(t, true, impression_id, h) != SIZE_MAX ? 2 : 0;
}

int pend_settle_negative(pend_table *t, const char *impression_id, pend_entry *out) {
    if (!impression_id) return 0;
    uint64_t h = pend__hash(impression_id);
    size_t pos = pend__ix_find(t, false, impression_id, h);
    if (pos == SIZE_MAX) return 0;
    uint32_t s = t->idx.v[pos];
    pend__remember_late(t, t->slots[s].id, h);
    pend__release(t, s, pos, 0.0f, out);
    return 1;
}

/* Advances the watermark; returns the time before which an impression is `span` (the
 * window, the elapsed time) old, INT64_MIN when none can be that old. */
static int64_t pend__cutoff(pend_table *t, int64_t watermark_ms, int64_t span) {
    if (watermark_ms > t->watermark) t->watermark = watermark_ms;
    return t->watermark < INT64_MIN + span ? INT64_MIN : t->watermark - span;
}

/* Pops heap h's nodes older than cutoff until one is still its slot's (a converted
 * entry's node is stale by seq): that slot, or PEND__EMPTY when none is due. */
static uint32_t pend__pop_due(pend_table *t, pend__hnode *h, size_t *n, int64_t cutoff) {
    while (*n > 0 && h[0].ts < cutoff) {
        pend__hnode top = h[0];
        pend__heap_pop(h, n);
        const pend__slot *sl = &t->slots[top.slot];
        if (sl->live && sl->seq == top.seq) return top.slot;
    }
    return PEND__EMPTY;
}

int pend_expire(pend_table *t, int64_t watermark_ms, pend_entry *out, int max) {
    int64_t cutoff = pend__cutoff(t, watermark_ms, t->window);
    int n = 0;
    uint32_t s;
    while (n < max && (s = pend__pop_due(t, t->heap, &t->n_heap, cutoff)) != PEND__EMPTY) {
        pend__slot *sl = &t->slots[s];
        size_t pos = pend__ix_find(t, false, sl->id, sl->hash);
        pend__remember_late(t, sl->id, sl->hash);
        pend__release(t, s, pos, 0.0f, out ? &out[n] : NULL);
        n++;
    }
    return n;
}

void pend_set_elapse(pend_table *t, int64_t elapse_ms) {
    t->elapse_ms = elapse_ms > 0 ? elapse_ms : 0;
}

int pend_elapse(pend_table *t, int64_t watermark_ms, pend_entry *out, int max) {
    if (t->elapse_ms <= 0) return 0;
    int64_t cutoff = pend__cutoff(t, watermark_ms, t->elapse_ms);
    int n = 0;
    uint32_t s;
    while (n < max && (s = pend__pop_due(t, t->eheap, &t->n_eheap, cutoff)) != PEND__EMPTY) {
        if (t->slots[s].elapsed) continue;
        t->slots[s].elapsed = true;
        pend__copy_out(t, s, 0.0f, &out[n]);
        out[n].copy = 1;
        n++;
    }
    return n;
}

/* ---- the store behind the table ---- */

void pend_set_loader(pend_table *t, pend_load_fn fn, void *ud, int tag) {
    t->load = fn;
    t->load_ud = ud;
    t->load_tag = tag;
}

uint64_t pend_load_errors(const pend_table *t) { return t->load_errors; }

size_t pend_sync(pend_table *t, pend_put_fn put, pend_del_fn del, void *ud) {
    for (size_t i = 0; i < t->n_dead; i++) del(ud, t->dead[i]);
    size_t n = 0;
    for (size_t i = 0; i < t->n_slots; i++) {
        const pend__slot *sl = &t->slots[i];
        if (!sl->live || sl->stored) continue;
        put(ud, sl->body, sl->seq);
        n++;
    }
    t->n_synced = n;
    return n + t->n_dead;
}

void pend_sync_done(pend_table *t) {
    for (size_t i = 0; i < t->n_slots; i++) {
        pend__slot *sl = &t->slots[i];
        if (!sl->live || sl->stored) continue;
        sl->stored = true;
        free(sl->body);
        sl->body = NULL;
    }
    t->n_dead = 0;
    t->late_dirty = false;
}

int pend_restore(pend_table *t, const char *impression_id, int64_t ts_ms, uint64_t seq) {
    if (!impression_id) return -1;
    size_t len = strlen(impression_id);
    if (len == 0 || len >= M3_ID_MAX) return -1;
    uint64_t h = pend__hash(impression_id);
    if (pend__ix_find(t, false, impression_id, h) != SIZE_MAX) return 1;
    uint32_t s = pend__slot_alloc(t);
    if (s == PEND__EMPTY) return -1;
    if (pend__occupy(t, s, impression_id, len, h, ts_ms, seq, NULL, true) != 0) {
        t->slots[s].seq = UINT64_MAX;   /* a pushed heap node is then stale */
        pend__slot_free(t, s);
        return -1;
    }
    if (seq >= t->next_seq) t->next_seq = seq + 1;
    t->live++;
    return 0;
}

void pend_clear(pend_table *t) {
    for (size_t i = 0; i < t->n_slots; i++) {
        pend__slot *sl = &t->slots[i];
        if (!sl->live) continue;
        if (sl->stored) pend__bury(t, sl->id);
        pend__slot_free(t, (uint32_t)i);
    }
    t->live = 0;
    t->n_heap = t->n_eheap = 0;   /* every node was stale or freed */
    memset(t->idx.v, 0xff, t->idx.cap * sizeof *t->idx.v);
    t->idx.n = 0;
    memset(t->late_idx.v, 0xff, t->late_idx.cap * sizeof *t->late_idx.v);
    t->late_idx.n = 0;
    t->late_head = t->late_n = 0;
    t->late_dirty = true;
}

uint64_t pend_next_seq(const pend_table *t) { return t->next_seq; }

void pend_set_clock(pend_table *t, int64_t watermark_ms, uint64_t next_seq) {
    if (watermark_ms > t->watermark) t->watermark = watermark_ms;
    if (next_seq > t->next_seq) t->next_seq = next_seq;
}

int pend_late_dirty(const pend_table *t) { return t->late_dirty; }

size_t pend_late_save(const pend_table *t, void *buf, size_t cap) {
    size_t need = 0;
    for (size_t k = 0; k < t->late_n; k++)
        need += strlen(t->late[(t->late_head + k) % t->late_cap]) + 1;
    if (!buf || cap < need) return need;
    char *b = buf;
    for (size_t k = 0; k < t->late_n; k++) {
        const char *id = t->late[(t->late_head + k) % t->late_cap];
        size_t l = strlen(id) + 1;
        memcpy(b, id, l);
        b += l;
    }
    return need;
}

int pend_late_load(pend_table *t, const void *buf, size_t len) {
    const char *b = buf, *end = b + len;
    while (b < end) {
        const char *z = memchr(b, '\0', (size_t)(end - b));
        if (!z || z == b || z - b >= M3_ID_MAX) return -1;
        pend__remember_late(t, b, pend__hash(b));
        b = z + 1;
    }
    t->late_dirty = false;
    return 0;
}

/* ---- the stored form of an entry ---- */

#define PEND__HEAD 44   /* seq 8, ts 8, scenario 4, format << 4 | n_models 1, slices 1,
                           n_cat 1, n_num 1, y_click, y_conv, w_ctr, w_ctcvr 4 each,
                           snap_len 4 */

/* The stored size in a format: 1 has p_cvr beside p_ctcvr, 0 (the format before) not. */
static size_t pend__bytes(int format, int n_models, int n_cat, int n_num, size_t snap_len) {
    return PEND__HEAD + (size_t)n_models * 4 * (format ? 2 : 1) + (size_t)n_cat * 8 +
           (size_t)n_num * 4 + snap_len;
}

size_t pend_entry_bytes(int n_models, int n_cat, int n_num, size_t snap_len) {
    return pend__bytes(PEND_ENTRY_FORMAT, n_models, n_cat, n_num, snap_len);
}

size_t pend_entry_encode(const pend_entry *e, uint64_t seq, int n_cat, int n_num, void *buf,
                         size_t cap) {
    if (n_cat < 0 || n_cat > M3_MAX_CAT || n_num < 0 || n_num > M3_MAX_NUM ||
        e->n_models < 0 || e->n_models > PEND_MAX_MODELS || e->snap_len > PEND_SNAP_MAX)
        return 0;
    int format = e->has_cvr ? PEND_ENTRY_FORMAT : 0;
    size_t need = pend__bytes(format, e->n_models, n_cat, n_num, e->snap_len);
    if (cap < need) return 0;
    unsigned char *b = buf;
    memset(b, 0, PEND__HEAD);
    memcpy(b, &seq, 8);
    memcpy(b + 8, &e->ex.ts_ms, 8);
    memcpy(b + 16, &e->ex.scenario, 4);
    b[20] = (unsigned char)(format << 4 | e->n_models);
    b[21] = e->ex.slices;
    b[22] = (unsigned char)n_cat;
    b[23] = (unsigned char)n_num;
    memcpy(b + 24, &e->ex.y_click, 4);
    memcpy(b + 28, &e->ex.y_conv, 4);
    memcpy(b + 32, &e->ex.w_ctr, 4);
    memcpy(b + 36, &e->ex.w_ctcvr, 4);
    memcpy(b + 40, &e->snap_len, 4);
    size_t o = PEND__HEAD;
    memcpy(b + o, e->p_ctcvr, (size_t)e->n_models * 4); o += (size_t)e->n_models * 4;
    if (format) {
        memcpy(b + o, e->p_cvr, (size_t)e->n_models * 4);
        o += (size_t)e->n_models * 4;
    }
    memcpy(b + o, e->ex.cat, (size_t)n_cat * 8); o += (size_t)n_cat * 8;
    memcpy(b + o, e->ex.num, (size_t)n_num * 4); o += (size_t)n_num * 4;
    memcpy(b + o, e->snap, e->snap_len); o += e->snap_len;
    return o;
}

int pend_entry_head(const void *buf, size_t len, uint64_t *seq, int64_t *ts_ms) {
    if (len < PEND__HEAD) return -1;
    memcpy(seq, buf, 8);
    memcpy(ts_ms, (const unsigned char *)buf + 8, 8);
    return 0;
}

int pend_entry_decode(pend_entry *e, const char *impression_id, int n_cat, int n_num,
                      const void *buf, size_t len) {
    const unsigned char *b = buf;
    if (len < PEND__HEAD || !impression_id || strlen(impression_id) >= M3_ID_MAX) return -1;
    int nm = b[20] & 0x0f, format = b[20] >> 4;
    uint32_t sn;
    memcpy(&sn, b + 40, 4);
    if (b[22] != n_cat || b[23] != n_num || nm > PEND_MAX_MODELS || format > PEND_ENTRY_FORMAT ||
        sn > PEND_SNAP_MAX || len != pend__bytes(format, nm, n_cat, n_num, sn))
        return -1;
    memset(e, 0, sizeof *e);
    snprintf(e->impression_id, sizeof e->impression_id, "%s", impression_id);
    memcpy(&e->ex.ts_ms, b + 8, 8);
    memcpy(&e->ex.scenario, b + 16, 4);
    e->n_models = nm;
    e->ex.slices = b[21];
    memcpy(&e->ex.y_click, b + 24, 4);
    memcpy(&e->ex.y_conv, b + 28, 4);
    memcpy(&e->ex.w_ctr, b + 32, 4);
    memcpy(&e->ex.w_ctcvr, b + 36, 4);
    size_t o = PEND__HEAD;
    memcpy(e->p_ctcvr, b + o, (size_t)nm * 4); o += (size_t)nm * 4;
    e->has_cvr = format >= 1;
    if (e->has_cvr) {
        memcpy(e->p_cvr, b + o, (size_t)nm * 4);
        o += (size_t)nm * 4;
    }
    memcpy(e->ex.cat, b + o, (size_t)n_cat * 8); o += (size_t)n_cat * 8;
    memcpy(e->ex.num, b + o, (size_t)n_num * 4); o += (size_t)n_num * 4;
    e->snap_len = sn;
    memcpy(e->snap, b + o, sn);
    return 0;
}
