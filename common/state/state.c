/* state.c - durable learner state: tables in a memory budget with RocksDB behind them,
 * the pending join in the store, checkpoints atomic with the input offsets (state.h).
 *
 * What is where (docs/store.md has the byte layouts):
 *   emb family      primary model's embedding rows: key -> weights, Adagrad, count, seen
 *   user family     its UPT user states: user key -> preferences, times, counts, seen
 *   pending family  <src u32 BE><impression id> -> pending entry; <src u32 BE> -> late ring
 *   meta            "state" (configuration record), "dense" (the model blob), "learner"
 *                   (stream state and counters), "stream" (expiry clock), "admit" (sketch),
 *                   "model_version", "offset/<topic>/<partition>"
 *
 * Invariants the exactness rests on:
 *  - a row in memory is clean (equal to the store's value, or absent from it and never
 *    changed) or dirty; only clean rows are evicted, so the store never holds a value newer
 *    than the last checkpoint;
 *  - eviction, loading back and physical deletion of expired rows change no value the model
 *    computes: a loaded row is bit-identical to the evicted one, and an expired row is
 *    treated as absent whether or not it was deleted yet. So a run with a small memory
 *    budget trains exactly the model of a run without one. */
#include "state/state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/emb.h"
#include "report/metrics.h"
#include "engine/model.h"
#include "stream/pending.h"
#include "engine/users.h"

#define STATE_FORMAT "m3rec-state 1"
#define STATE__KEY_CONFIG "state"
#define STATE__KEY_LEARNER "learner"
#define STATE__KEY_STREAM "stream"
#define STATE__KEY_ADMIT "admit"
#define STATE__SKETCH_W (1u << 20)     /* counters per sketch row; two rows of uint8 */
#define STATE__SKETCH_DECAY (10ull * STATE__SKETCH_W)   /* sightings between halvings */
#define STATE__SCAN_PER_CKPT 20000     /* stored rows checked for expiry per checkpoint */
#define STATE__LOW_WATER 0.8           /* eviction frees down to this share of the budget */
#define STATE__FALLBACK (INT64_MIN + 1) /* the value whose key is a slot's fallback row */
#define STATE__SLOT_BYTES 16           /* one hash slot of emb.c / users.c (key + row, padded) */
#define STATE__LRU_BUCKETS 4096        /* eviction's histogram of last-use ticks */

/* per-batch key resolution */
enum { K_PRESENT = 1, K_MISSING, K_NEW, K_FALLBACK };

typedef struct {
    uint64_t key;
    uint32_t gen;
    uint8_t what;
} state__kslot;

typedef struct {          /* a set of u64 keys, cleared in O(1) by a generation number */
    state__kslot *v;
    size_t cap;           /* power of two */
    uint32_t gen;
} state__kset;

typedef struct {
    uint64_t *v;
    size_t n, cap;
} state__u64s;

struct state {
    const m3_cfg *cfg;
    lrn *L;
    m3_model *m;
    emb_table *emb;
    users_table *users;
    store *s;
    store_batch *b;
    int fresh;
    int nc;                            /* categorical slots */
    uint32_t tick;                     /* prepare calls so far: the LRU clock */
    int64_t clock;                     /* newest event time trained on: the expiry clock */
    int64_t batch_clock;               /* the clock of the minibatch being prepared */
    int64_t expire_ms;
    size_t budget;                     /* bytes, 0 = none */
    int want_ckpt;
    /* user-state bookkeeping, indexed like the upt table's rows */
    uint64_t *ukey;
    uint32_t *utick;
    int64_t *useen;
    uint8_t *udirty;
    size_t ucap;
    size_t n_udirty;                   /* user rows with udirty set */
    size_t u_known;                    /* user rows whose bookkeeping is set (before a step) */
    /* admission */
    int admit_n;
    uint8_t admit_slot[M3_MAX_CAT];
    uint64_t missing_key[M3_MAX_CAT], fallback_key[M3_MAX_CAT];
    uint8_t *sketch;                   /* (2, STATE__SKETCH_W), NULL when admit_n == 1 */
    uint64_t sketch_adds;
    int sketch_dirty;
    /* deletes for the next checkpoint */
    state__u64s emb_del, user_del, miss;
    state__kset kemb, kuser;
    uint64_t scan_emb, scan_user;      /* expiry scan cursors (keys) */
    /* stored offsets, updated by checkpoints */
    state_offset *offs;
    int n_offs, cap_offs;
    /* scratch */
    unsigned char *vbuf;
    size_t vcap;
    uint64_t lru[STATE__LRU_BUCKETS]; /* eviction scratch: bytes per tick bucket */
    char dir[CFG_PATH_MAX];
    int failed;
    char err[512];
    state_stats st;
};

static double state__ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void state__fail(state *st, const char *fmt, const char *what) {
    if (st->failed) return;
    st->failed = 1;
    snprintf(st->err, sizeof st->err, fmt, what);
}

static int state__u64_push(state__u64s *a, uint64_t v) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 256;
        uint64_t *p = realloc(a->v, nc * sizeof *p);
        if (!p) return -1;
        a->v = p;
        a->cap = nc;
    }
    a->v[a->n++] = v;
    return 0;
}

static unsigned char *state__vbuf(state *st, size_t n) {
    if (n > st->vcap) {
        size_t nc = n > 2 * st->vcap ? n : 2 * st->vcap;
        unsigned char *p = realloc(st->vbuf, nc);
        if (!p) return NULL;
        st->vbuf = p;
        st->vcap = nc;
    }
    return st->vbuf;
}

static uint64_t state__mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* ---- the per-batch key set ---- */

static int state__kset_init(state__kset *s, size_t max_keys) {
    size_t cap = 64;
    while (cap < 2 * max_keys) cap *= 2;
    s->v = calloc(cap, sizeof *s->v);
    s->cap = cap;
    s->gen = 1;
    return s->v ? 0 : -1;
}

static void state__kset_clear(state__kset *s) {
    if (++s->gen == 0) {   /* wrapped: really clear once in 2^32 batches */
        memset(s->v, 0, s->cap * sizeof *s->v);
        s->gen = 1;
    }
}

/* The slot of key; *added = 1 when it was not in the set (its `what` is then 0). */
static state__kslot *state__kset_get(state__kset *s, uint64_t key, int *added) {
    size_t mask = s->cap - 1;
    for (size_t i = state__mix(key) & mask;; i = (i + 1) & mask) {
        state__kslot *k = &s->v[i];
        if (k->gen != s->gen) {
            k->gen = s->gen;
            k->key = key;
            k->what = 0;
            *added = 1;
            return k;
        }
        if (k->key == key) {
            *added = 0;
            return k;
        }
    }
}

/* ---- admission: a count-min sketch of sightings (two rows, conservative update) ---- */

static void state__sketch_pos(uint64_t key, size_t *h0, size_t *h1) {
    uint64_t h = state__mix(key ^ 0x61646d6974ULL);
    *h0 = (size_t)(h & (STATE__SKETCH_W - 1));
    *h1 = STATE__SKETCH_W + (size_t)((h >> 32) & (STATE__SKETCH_W - 1));
}

static unsigned state__sketch_est(const state *st, uint64_t key) {
    size_t h0, h1;
    state__sketch_pos(key, &h0, &h1);
    return st->sketch[h0] < st->sketch[h1] ? st->sketch[h0] : st->sketch[h1];
}

static void state__sketch_add(state *st, uint64_t key) {
    size_t h0, h1;
    state__sketch_pos(key, &h0, &h1);
    uint8_t lo = st->sketch[h0] < st->sketch[h1] ? st->sketch[h0] : st->sketch[h1];
    if (lo < 255) {
        if (st->sketch[h0] == lo) st->sketch[h0]++;
        if (st->sketch[h1] == lo) st->sketch[h1]++;
    }
    st->sketch_dirty = 1;
    /* halve everything now and then: counts follow recent sightings and never saturate */
    if (++st->sketch_adds >= STATE__SKETCH_DECAY) {
        for (size_t i = 0; i < 2 * (size_t)STATE__SKETCH_W; i++) st->sketch[i] >>= 1;
        st->sketch_adds = 0;
    }
}

/* ---- memory ---- */

static size_t state__user_side_bytes(void) {
    return sizeof(uint64_t) + sizeof(uint32_t) + sizeof(int64_t) + sizeof(uint8_t);
}

/* What the tables hold now: capacity, so an upper bound of the pages they can touch. */
static size_t state__mem(const state *st) {
    return emb_bytes(st->emb) + users_bytes(st->users) + st->ucap * state__user_side_bytes() +
           (st->sketch ? 2 * (size_t)STATE__SKETCH_W : 0);
}

/* The same for given row counts, each table at capacity = rows (its hash slots at <= 0.7
 * load), the tables' own fixed parts aside. */
static size_t state__mem_for(const state *st, size_t e_rows, size_t u_rows) {
    size_t ue = emb_row_bytes(st->emb) + 2 * STATE__SLOT_BYTES;
    size_t uu = users_value_bytes(st->users) + state__user_side_bytes() + 2 * STATE__SLOT_BYTES;
    return e_rows * ue + u_rows * uu + (st->sketch ? 2 * (size_t)STATE__SKETCH_W : 0);
}

static int state__user_side_grow(state *st, size_t cap) {
    if (cap <= st->ucap) return 0;
#define STATE__GROW(a) do { void *p_ = realloc((a), cap * sizeof *(a)); if (!p_) return -1;    \
                            (a) = p_; } while (0)
    STATE__GROW(st->ukey);
    STATE__GROW(st->utick);
    STATE__GROW(st->useen);
    STATE__GROW(st->udirty);
#undef STATE__GROW
    st->ucap = cap;
    return 0;
}

/* Remove user row r; the last row moves into it (with its bookkeeping). */
static void state__user_remove(state *st, int64_t r) {
    size_t last = users_rows(st->users) - 1;
    st->n_udirty -= st->udirty[r];
    users_remove(st->users, st->ukey[r], st->ukey[last]);
    if ((size_t)r != last) {
        st->ukey[r] = st->ukey[last];
        st->utick[r] = st->utick[last];
        st->useen[r] = st->useen[last];
        st->udirty[r] = st->udirty[last];
    }
}

/* Evict the least recently used clean rows (emb and users together, by tick; rows stamped
 * with the current tick are in use) until the tables fit in `target` bytes, then give the
 * freed capacity back. The threshold tick comes from a histogram of the candidates' ticks
 * (4096 buckets over their range: no allocation, O(rows)); rows in the threshold's bucket
 * go too. Returns 1 when the tables still do not fit (too many dirty rows). */
static int state__evict(state *st, size_t target) {
    size_t ne = emb_rows(st->emb), nu = users_rows(st->users);
    size_t have = state__mem_for(st, ne, nu);
    if (have <= target) return 0;
    size_t ce = state__mem_for(st, 1, 0) - state__mem_for(st, 0, 0);
    size_t cu = state__mem_for(st, 0, 1) - state__mem_for(st, 0, 0);
#define STATE__EMB_CAND(r) (!emb_dirty(st->emb, (int64_t)(r)) && emb_tick(st->emb, (int64_t)(r)) != st->tick)
#define STATE__USER_CAND(r) (!st->udirty[r] && st->utick[r] != st->tick)
    uint32_t lo = UINT32_MAX, hi = 0;
    for (size_t r = 0; r < ne; r++)
        if (STATE__EMB_CAND(r)) {
            uint32_t t = emb_tick(st->emb, (int64_t)r);
            if (t < lo) lo = t;
            if (t > hi) hi = t;
        }
    for (size_t r = 0; r < nu; r++)
        if (STATE__USER_CAND(r)) {
            if (st->utick[r] < lo) lo = st->utick[r];
            if (st->utick[r] > hi) hi = st->utick[r];
        }
    if (lo > hi) return 1;   /* no candidate: everything is dirty or in use */
    uint64_t *bytes = st->lru;
    memset(bytes, 0, sizeof st->lru);
    uint64_t span = (uint64_t)(hi - lo) + 1;
#define STATE__BUCKET(t) ((size_t)(((uint64_t)((t) - lo) * STATE__LRU_BUCKETS) / span))
    for (size_t r = 0; r < ne; r++)
        if (STATE__EMB_CAND(r)) bytes[STATE__BUCKET(emb_tick(st->emb, (int64_t)r))] += ce;
    for (size_t r = 0; r < nu; r++)
        if (STATE__USER_CAND(r)) bytes[STATE__BUCKET(st->utick[r])] += cu;
    size_t need = have - target, b = 0;
    uint64_t freed = 0;
    while (b < STATE__LRU_BUCKETS && freed < need) freed += bytes[b++];
    int short_ = freed < need;
    size_t limit = b;   /* evict the candidates of buckets [0, limit) */
    for (size_t r = ne; r-- > 0;) {
        if (!STATE__EMB_CAND(r) || STATE__BUCKET(emb_tick(st->emb, (int64_t)r)) >= limit) continue;
        emb_remove(st->emb, emb_key(st->emb, (int64_t)r));
        st->st.emb_evicted++;
    }
    for (size_t r = nu; r-- > 0;) {
        if (!STATE__USER_CAND(r) || STATE__BUCKET(st->utick[r]) >= limit) continue;
        state__user_remove(st, (int64_t)r);
        st->st.user_evicted++;
    }
#undef STATE__EMB_CAND
#undef STATE__USER_CAND
#undef STATE__BUCKET
    /* give memory back: capacity to the rows plus an eighth */
    size_t e = emb_rows(st->emb), u = users_rows(st->users);
    emb_reserve(st->emb, e + e / 8);
    users_reserve(st->users, u + u / 8);
    return short_;
}

/* Make room for the rows a minibatch will create, within the budget when there is one. */
static void state__room(state *st, size_t new_e, size_t new_u) {
    size_t ne = emb_rows(st->emb) + new_e, nu = users_rows(st->users) + new_u;
    /* a checkpoint's write batch holds a copy of the changed rows, and RocksDB copies the
     * batch into a memtable: keep them to a quarter of the budget by checkpointing early */
    size_t dirty = emb_dirty_rows(st->emb) * (state__mem_for(st, 1, 0) - state__mem_for(st, 0, 0)) +
                   st->n_udirty * (state__mem_for(st, 0, 1) - state__mem_for(st, 0, 0));
    if (st->budget && dirty > st->budget / 4) st->want_ckpt = 1;
    if (st->budget && state__mem_for(st, ne, nu) > st->budget) {
        size_t low = (size_t)(STATE__LOW_WATER * (double)st->budget);
        size_t reserve = state__mem_for(st, new_e, new_u) - state__mem_for(st, 0, 0);
        st->want_ckpt |= state__evict(st, low > reserve ? low - reserve : 0);
    }
    ne = emb_rows(st->emb) + new_e;
    nu = users_rows(st->users) + new_u;
    if (ne > emb_capacity(st->emb) && emb_reserve(st->emb, ne + ne / 8) != 0)
        state__fail(st, "%s", "out of memory growing the embedding table");
    if (nu > users_capacity(st->users) && users_reserve(st->users, nu + nu / 8) != 0)
        state__fail(st, "%s", "out of memory growing the user table");
    if (state__user_side_grow(st, users_capacity(st->users)) != 0)
        state__fail(st, "%s", "out of memory growing the user table");
}

/* ---- the learner hooks: load, admit, expire before each forward pass ---- */

static int64_t state__dead_before(const state *st) {
    if (st->expire_ms <= 0 || st->clock == INT64_MIN || st->clock < INT64_MIN + st->expire_ms)
        return INT64_MIN;
    return st->clock - st->expire_ms;
}

static int state__special(const state *st, uint64_t key) {
    unsigned slot = (unsigned)(key >> 56);
    return slot < (unsigned)st->nc &&
           (key == st->missing_key[slot] || key == st->fallback_key[slot]);
}

typedef struct {
    state *st;
    int64_t dead_before;
    size_t loaded, dead;
} state__load_ctx;

static void state__emb_loaded(void *opaque, size_t i, const void *val, size_t vlen) {
    state__load_ctx *c = opaque;
    state *st = c->st;
    uint64_t key = st->miss.v[i];
    int added;
    state__kslot *k = state__kset_get(&st->kemb, key, &added);
    if (!val) return;   /* stays K_MISSING: admission decides */
    if (emb_value_seen(st->emb, val, vlen) < c->dead_before) {
        state__u64_push(&st->emb_del, key);   /* expired in the store: it starts fresh */
        c->dead++;
        return;
    }
    if (emb_value_load(st->emb, key, val, vlen) < 0) {
        state__fail(st, "embedding row in the store has a bad size or memory ran out%s", "");
        return;
    }
    k->what = K_PRESENT;
    c->loaded++;
}

static void state__user_loaded(void *opaque, size_t i, const void *val, size_t vlen) {
    state__load_ctx *c = opaque;
    state *st = c->st;
    uint64_t key = st->miss.v[i];
    if (!val) return;
    size_t ub = users_value_bytes(st->users);
    int64_t seen;
    if (vlen != ub + sizeof seen) {
        state__fail(st, "user state in the store has a bad size%s", "");
        return;
    }
    memcpy(&seen, (const unsigned char *)val + ub, sizeof seen);
    if (seen < c->dead_before) {
        state__u64_push(&st->user_del, key);
        c->dead++;
        return;
    }
    int64_t r = users_value_load(st->users, key, val, ub);
    if (r < 0 || state__user_side_grow(st, users_capacity(st->users)) != 0) {
        state__fail(st, "cannot load a user state (out of memory)%s", "");
        return;
    }
    st->ukey[r] = key;
    st->utick[r] = st->tick;
    st->useen[r] = seen;
    st->udirty[r] = 0;
    c->loaded++;
}

/* Look up st->miss in family cf. */
static void state__multi_get(state *st, store_cf cf, store_value_cb cb, state__load_ctx *c) {
    char err[256];
    if (st->miss.n == 0) return;
    if (store_multi_get_u64(st->s, cf, st->miss.v, st->miss.n, cb, c, err, sizeof err) < 0)
        state__fail(st, "reading the store: %s", err);
}

/* Resolve key in the embedding table: in memory (and alive), or to look up. */
static void state__emb_probe(state *st, state__kslot *k, int64_t dead_before) {
    int64_t r = emb_find(st->emb, k->key);
    if (r >= 0 && emb_seen(st->emb, r) < dead_before) {
        emb_remove(st->emb, k->key);          /* expired: gone, in the store too */
        state__u64_push(&st->emb_del, k->key);
        st->st.emb_expired++;
        k->what = K_NEW;                      /* admission may still turn it into fallback */
        st->st.emb_misses++;
        return;
    }
    if (r >= 0) {
        emb_touch(st->emb, r);
        k->what = K_PRESENT;
        st->st.emb_hits++;
        return;
    }
    k->what = K_MISSING;
    st->st.emb_misses++;
    if (state__u64_push(&st->miss, k->key) != 0) state__fail(st, "%s", "out of memory");
}

/* An absent key: its own new row, or its slot's fallback row? */
static uint8_t state__admit(const state *st, uint64_t key) {
    unsigned slot = (unsigned)(key >> 56);
    if (st->admit_n <= 1 || slot >= (unsigned)st->nc || !st->admit_slot[slot] ||
        state__special(st, key))
        return K_NEW;
    return state__sketch_est(st, key) >= (unsigned)st->admit_n ? K_NEW : K_FALLBACK;
}

static void state__prepare(void *ud, m3_example *ex, int B, int n_imp, int train) {
    state *st = ud;
    int nc = st->nc;
    st->tick++;
    int64_t bc = st->clock;
    for (int i = 0; i < B; i++)
        if (ex[i].ts_ms > bc) bc = ex[i].ts_ms;
    st->batch_clock = bc;
    emb_set_clock(st->emb, st->tick, bc);
    int64_t dead_before = state__dead_before(st);
    state__load_ctx c = {st, dead_before, 0, 0};
    if (nc <= 0 || B <= 0) return;

    /* 1. embedding keys: in memory, else one multi-get for all the missing ones */
    state__kset_clear(&st->kemb);
    st->miss.n = 0;
    for (int i = 0; i < B; i++)
        for (int s = 0; s < nc; s++) {
            int added;
            state__kslot *k = state__kset_get(&st->kemb, ex[i].cat[s], &added);
            if (added) state__emb_probe(st, k, dead_before);
        }
    state__multi_get(st, STORE_EMB, state__emb_loaded, &c);
    st->st.emb_loads += c.loaded;
    st->st.emb_expired += c.dead;
    /* sightings of ids without a row (in memory or in the store): the N-th admits the id.
     * Counted after the loads, so what is in memory does not matter. */
    if (train && st->sketch)
        for (int i = 0; i < n_imp; i++)
            for (int s = 0; s < nc; s++) {
                int added;
                state__kslot *k = state__kset_get(&st->kemb, ex[i].cat[s], &added);
                if (st->admit_slot[s] && k->what != K_PRESENT && !state__special(st, k->key))
                    state__sketch_add(st, k->key);
            }

    /* 2. admission: absent keys get their own row, or their slot's fallback row */
    size_t new_e = 0;
    uint8_t fb_used[M3_MAX_CAT] = {0};
    for (size_t j = 0; j < st->kemb.cap; j++) {
        state__kslot *k = &st->kemb.v[j];
        if (k->gen != st->kemb.gen || (k->what != K_MISSING && k->what != K_NEW)) continue;
        k->what = state__admit(st, k->key);
        if (k->what == K_NEW) new_e++;
        else fb_used[k->key >> 56] = 1;
    }
    /* the fallback rows themselves (unless the batch already used them directly) */
    st->miss.n = 0;
    for (int s = 0; s < nc; s++) {
        if (!fb_used[s]) continue;
        int added;
        state__kslot *k = state__kset_get(&st->kemb, st->fallback_key[s], &added);
        if (added) state__emb_probe(st, k, dead_before);
        else fb_used[s] = 0;
    }
    c.loaded = c.dead = 0;
    state__multi_get(st, STORE_EMB, state__emb_loaded, &c);
    st->st.emb_loads += c.loaded;
    st->st.emb_expired += c.dead;
    for (int s = 0; s < nc; s++) {
        if (!fb_used[s]) continue;
        int added;
        state__kslot *k = state__kset_get(&st->kemb, st->fallback_key[s], &added);
        if (k->what != K_PRESENT) {
            k->what = K_NEW;
            new_e++;
        }
    }
    for (int i = 0; i < B; i++)
        for (int s = 0; s < nc; s++) {
            int added;
            if (state__kset_get(&st->kemb, ex[i].cat[s], &added)->what != K_FALLBACK) continue;
            ex[i].cat[s] = st->fallback_key[s];
            st->st.fallback_uses++;
        }
    st->st.emb_created += new_e;

    /* 3. user states of the (possibly rewritten) user keys */
    size_t new_u = 0;
    if (nc > M3_SLOT_USER) {
        state__kset_clear(&st->kuser);
        st->miss.n = 0;
        for (int i = 0; i < B; i++) {
            int added;
            state__kslot *k = state__kset_get(&st->kuser, ex[i].cat[M3_SLOT_USER], &added);
            if (!added) continue;
            int64_t r = users_find(st->users, k->key);
            if (r >= 0 && st->useen[r] < dead_before) {
                state__user_remove(st, r);
                state__u64_push(&st->user_del, k->key);
                st->st.user_expired++;
                r = -1;
            } else if (r >= 0) {
                st->utick[r] = st->tick;
                st->st.user_hits++;
                continue;
            }
            st->st.user_misses++;
            if (state__u64_push(&st->miss, k->key) != 0) state__fail(st, "%s", "out of memory");
        }
        c.loaded = c.dead = 0;
        /* loads may grow the table: room for all of them first */
        state__room(st, new_e, st->miss.n);
        state__multi_get(st, STORE_USER, state__user_loaded, &c);
        st->st.user_loads += c.loaded;
        st->st.user_expired += c.dead;
        if (train) new_u = st->miss.n - c.loaded;   /* training creates the rest */
    }
    state__room(st, new_e, new_u);
    st->u_known = users_rows(st->users);
}

static void state__trained(void *ud, const m3_example *ex, int B, int n_imp) {
    state *st = ud;
    (void)n_imp;
    st->clock = st->batch_clock;
    if (st->nc <= M3_SLOT_USER) return;
    if (state__user_side_grow(st, users_capacity(st->users)) != 0) {
        state__fail(st, "%s", "out of memory tracking user states");
        return;
    }
    for (int i = 0; i < B; i++) {
        uint64_t key = ex[i].cat[M3_SLOT_USER];
        int64_t r = users_find(st->users, key);
        if (r < 0) continue;
        /* a row created by this step has no bookkeeping yet */
        if (r >= (int64_t)st->u_known) st->udirty[r] = 0;
        st->n_udirty += !st->udirty[r];
        st->ukey[r] = key;
        st->utick[r] = st->tick;
        st->useen[r] = st->batch_clock;
        st->udirty[r] = 1;
    }
}

/* ---- pending entries in the store ---- */

static size_t state__pend_key(unsigned char *key, int src, const char *id) {
    key[0] = (unsigned char)((uint32_t)src >> 24);
    key[1] = (unsigned char)((uint32_t)src >> 16);
    key[2] = (unsigned char)((uint32_t)src >> 8);
    key[3] = (unsigned char)src;
    size_t n = id ? strlen(id) : 0;
    if (n) memcpy(key + 4, id, n);
    return 4 + n;
}

static int state__pend_load(void *ud, int tag, const char *id, pend_entry *out) {
    state *st = ud;
    unsigned char key[4 + M3_ID_MAX];
    size_t klen = state__pend_key(key, tag, id);
    void *val = NULL;
    size_t vlen = 0;
    char err[256];
    int rc = store_get(st->s, STORE_PENDING, key, klen, &val, &vlen, err, sizeof err);
    if (rc != 1) {
        char msg[400];
        snprintf(msg, sizeof msg, "pending impression %s of source %d: %s", id, tag,
                 rc == 0 ? "not in the store" : err);
        state__fail(st, "%s", msg);
        free(val);
        return -1;
    }
    rc = pend_entry_decode(out, id, st->nc, st->cfg->model.n_num, val, vlen);
    free(val);
    if (rc != 0) state__fail(st, "pending impression %s: malformed value in the store", id);
    return rc;
}

typedef struct {
    state *st;
    int src;
    int fail;
} state__pend_ctx;

static void state__pend_put(void *ud, const pend_entry *e, uint64_t seq) {
    state__pend_ctx *c = ud;
    state *st = c->st;
    unsigned char key[4 + M3_ID_MAX];
    size_t klen = state__pend_key(key, c->src, e->impression_id);
    size_t need = pend_entry_bytes(e->n_models, st->nc, st->cfg->model.n_num, e->snap_len);
    unsigned char *v = state__vbuf(st, need);
    size_t vlen = v ? pend_entry_encode(e, seq, st->nc, st->cfg->model.n_num, v, need) : 0;
    if (!vlen || store_batch_put(st->b, STORE_PENDING, key, klen, v, vlen) != 0) c->fail = 1;
    st->st.pending_written++;
}

static void state__pend_del(void *ud, const char *id) {
    state__pend_ctx *c = ud;
    unsigned char key[4 + M3_ID_MAX];
    size_t klen = state__pend_key(key, c->src, id);
    if (store_batch_delete(c->st->b, STORE_PENDING, key, klen) != 0) c->fail = 1;
    c->st->st.deletes++;
}

/* ---- expiry: rows in memory, and a slice of the store per checkpoint ---- */

typedef struct {
    state *st;
    int64_t dead_before;
    long n;
    uint64_t last;
    int user;
} state__scan_ctx;

static int state__scan_cb(void *opaque, const void *key, size_t klen, const void *val,
                          size_t vlen) {
    state__scan_ctx *c = opaque;
    state *st = c->st;
    if (klen != 8) return 0;
    uint64_t k = store_key_to_u64(key);
    c->last = k;
    c->n++;
    int64_t seen;
    if (c->user) {
        size_t ub = users_value_bytes(st->users);
        if (vlen != ub + 8) return c->n >= STATE__SCAN_PER_CKPT;
        memcpy(&seen, (const unsigned char *)val + ub, 8);
        if (seen < c->dead_before && users_find(st->users, k) < 0) {
            state__u64_push(&st->user_del, k);
            st->st.user_expired++;
        }
    } else {
        seen = emb_value_seen(st->emb, val, vlen);
        if (seen != INT64_MIN && seen < c->dead_before && emb_find(st->emb, k) < 0) {
            state__u64_push(&st->emb_del, k);
            st->st.emb_expired++;
        }
    }
    return c->n >= STATE__SCAN_PER_CKPT;
}

static int state__expire(state *st, char *errstr, size_t n) {
    int64_t dead_before = state__dead_before(st);
    if (dead_before == INT64_MIN) return 0;
    for (size_t r = emb_rows(st->emb); r-- > 0;) {
        if (emb_seen(st->emb, (int64_t)r) >= dead_before) continue;
        uint64_t key = emb_key(st->emb, (int64_t)r);
        emb_remove(st->emb, key);
        state__u64_push(&st->emb_del, key);
        st->st.emb_expired++;
    }
    for (size_t r = users_rows(st->users); r-- > 0;) {
        if (st->useen[r] >= dead_before) continue;
        state__u64_push(&st->user_del, st->ukey[r]);
        state__user_remove(st, (int64_t)r);
        st->st.user_expired++;
    }
    /* rows only in the store: a bounded slice per checkpoint, round and round */
    for (int u = 0; u < 2; u++) {
        uint64_t *cursor = u ? &st->scan_user : &st->scan_emb;
        unsigned char start[8];
        store_key_from_u64(start, *cursor);
        state__scan_ctx c = {st, dead_before, 0, 0, u};
        long got = store_iterate(st->s, u ? STORE_USER : STORE_EMB, start, 8, state__scan_cb, &c,
                                 errstr, n);
        if (got < 0) return -1;
        *cursor = got >= STATE__SCAN_PER_CKPT && c.last != UINT64_MAX ? c.last + 1 : 0;
    }
    return 0;
}

/* ---- checkpoint ---- */

static int state__put_meta(state *st, const char *name, const void *val, size_t len) {
    return store_batch_put(st->b, STORE_META, name, strlen(name), val, len);
}

static int state__offset_set(state *st, const char *topic, int32_t partition, int64_t next) {
    for (int i = 0; i < st->n_offs; i++)
        if (st->offs[i].partition == partition && strcmp(st->offs[i].topic, topic) == 0) {
            st->offs[i].next_offset = next;
            return 0;
        }
    if (st->n_offs == st->cap_offs) {
        int nc = st->cap_offs ? 2 * st->cap_offs : 64;
        state_offset *p = realloc(st->offs, (size_t)nc * sizeof *p);
        if (!p) return -1;
        st->offs = p;
        st->cap_offs = nc;
    }
    state_offset *o = &st->offs[st->n_offs++];
    snprintf(o->topic, sizeof o->topic, "%s", topic);
    o->partition = partition;
    o->next_offset = next;
    return 0;
}

int state_offset_get(const state *st, const char *topic, int32_t partition, int64_t *next) {
    for (int i = 0; i < st->n_offs; i++)
        if (st->offs[i].partition == partition && strcmp(st->offs[i].topic, topic) == 0) {
            *next = st->offs[i].next_offset;
            return 1;
        }
    return 0;
}

int state_checkpoint(state *st, const state_offset *offs, int n, char *errstr, size_t errn) {
    if (st->failed) {
        snprintf(errstr, errn, "state of %s failed earlier: %s", st->dir, st->err);
        return -1;
    }
    if (!lrn_at_boundary(st->L)) {
        snprintf(errstr, errn, "checkpoint outside a minibatch boundary (events are queued)");
        return -1;
    }
    double t0 = state__ms();
    store_batch_clear(st->b);
    if (state__expire(st, errstr, errn) != 0) return -1;
    int bad = 0;
    /* deletes first: a key deleted and written again in one checkpoint ends up written */
    for (size_t i = 0; i < st->emb_del.n; i++)
        bad |= store_batch_delete_u64(st->b, STORE_EMB, st->emb_del.v[i]);
    for (size_t i = 0; i < st->user_del.n; i++)
        bad |= store_batch_delete_u64(st->b, STORE_USER, st->user_del.v[i]);
    st->st.deletes += st->emb_del.n + st->user_del.n;
    size_t eb = emb_value_bytes(st->emb), ub = users_value_bytes(st->users);
    unsigned char *v = state__vbuf(st, (eb > ub + 8 ? eb : ub + 8) + 64);
    if (!v) goto oom;
    uint64_t rows_w = 0, users_w = 0;
    for (size_t r = 0; r < emb_rows(st->emb); r++) {
        if (!emb_dirty(st->emb, (int64_t)r)) continue;
        emb_value_save(st->emb, (int64_t)r, v);
        bad |= store_batch_put_u64(st->b, STORE_EMB, emb_key(st->emb, (int64_t)r), v, eb);
        rows_w++;
    }
    for (size_t r = 0; r < users_rows(st->users); r++) {
        if (!st->udirty[r]) continue;
        users_value_save(st->users, (int64_t)r, v);
        memcpy(v + ub, &st->useen[r], 8);
        bad |= store_batch_put_u64(st->b, STORE_USER, st->ukey[r], v, ub + 8);
        users_w++;
    }
    /* the pending join: new entries, released ones, changed late rings */
    for (int src = 0; src < lrn_n_sources(st->L); src++) {
        char e2[64];
        pend_table *pt = lrn_source_pending(st->L, src, 0, e2, sizeof e2);
        if (!pt) continue;   /* no input from this source yet */
        state__pend_ctx pc = {st, src, 0};
        pend_sync(pt, state__pend_put, state__pend_del, &pc);
        bad |= pc.fail;
        if (pend_late_dirty(pt)) {
            unsigned char key[4];
            state__pend_key(key, src, NULL);
            size_t len = pend_late_save(pt, NULL, 0);
            unsigned char *lb = malloc(len + 1);
            if (!lb) goto oom;
            pend_late_save(pt, lb, len);
            bad |= store_batch_put(st->b, STORE_PENDING, key, 4, lb, len);
            free(lb);
        }
    }
    /* dense parameters, stream state, counters, admission sketch */
    size_t blen = m3_blob_size(st->m), llen = lrn_state_save(st->L, NULL, 0);
    unsigned char *blob = malloc(blen > llen ? blen : llen);
    if (!blob) goto oom;
    m3_blob_save(st->m, blob, blen);
    bad |= state__put_meta(st, STORE_KEY_DENSE, blob, blen);
    lrn_state_save(st->L, blob, llen);
    bad |= state__put_meta(st, STATE__KEY_LEARNER, blob, llen);
    free(blob);
    int64_t stream[2] = {st->clock, (int64_t)st->sketch_adds};
    bad |= state__put_meta(st, STATE__KEY_STREAM, stream, sizeof stream);
    char ver[32];
    int vl = snprintf(ver, sizeof ver, "%" PRId64, lrn_model_version(st->L));
    bad |= state__put_meta(st, STORE_KEY_MODEL_VERSION, ver, (size_t)vl);
    if (st->sketch && st->sketch_dirty)
        bad |= state__put_meta(st, STATE__KEY_ADMIT, st->sketch, 2 * (size_t)STATE__SKETCH_W);
    for (int i = 0; i < n; i++)
        if (store_put_offset(st->b, offs[i].topic, offs[i].partition, offs[i].next_offset) != 0) {
            snprintf(errstr, errn, "checkpoint: bad offset %s [%d] %" PRId64, offs[i].topic,
                     (int)offs[i].partition, offs[i].next_offset);
            return -1;
        }
    if (bad) goto oom;
    size_t bytes = store_batch_bytes(st->b);
    if (store_commit(st->s, st->b, st->cfg->checkpoint_sync, errstr, errn) != 0) return -1;
    /* durable: everything written is clean now */
    for (size_t r = 0; r < emb_rows(st->emb); r++) emb_set_dirty(st->emb, (int64_t)r, 0);
    memset(st->udirty, 0, users_rows(st->users));
    st->n_udirty = 0;
    for (int src = 0; src < lrn_n_sources(st->L); src++) {
        char e2[64];
        pend_table *pt = lrn_source_pending(st->L, src, 0, e2, sizeof e2);
        if (pt) pend_sync_done(pt);
    }
    st->emb_del.n = st->user_del.n = 0;
    st->sketch_dirty = 0;
    for (int i = 0; i < n; i++)
        if (state__offset_set(st, offs[i].topic, offs[i].partition, offs[i].next_offset) != 0)
            goto oom;
    st->st.checkpoints++;
    st->st.forced += st->want_ckpt;
    st->want_ckpt = 0;
    st->st.ckpt_bytes += bytes;
    if (bytes > (4u << 20)) {   /* a cleared WriteBatch keeps its buffer: give it back */
        store_batch_destroy(st->b);
        st->b = store_batch_new(st->s);
        if (!st->b) goto oom;
    }
    st->st.rows_written += rows_w;
    st->st.users_written += users_w;
    if (st->budget) {   /* everything is clean: make room now, not in the next batch */
        st->tick++;
        state__evict(st, (size_t)(STATE__LOW_WATER * (double)st->budget));
    }
    double ms = state__ms() - t0;
    st->st.ckpt_ms_last = ms;
    st->st.ckpt_ms_total += ms;
    if (ms > st->st.ckpt_ms_max) st->st.ckpt_ms_max = ms;
    return 0;
oom:
    snprintf(errstr, errn, "checkpoint of %s: out of memory building the write batch", st->dir);
    return -1;
}

int state_want_checkpoint(const state *st) { return st->want_ckpt; }

int state_failed(const state *st, char *errstr, size_t n) {
    if (st->failed) snprintf(errstr, n, "state %s: %s", st->dir, st->err);
    return st->failed;
}

int state_fresh(const state *st) { return st->fresh; }
const char *state_dir(const state *st) { return st->dir; }

void state_stats_get(const state *st, state_stats *out) {
    *out = st->st;
    out->emb_rows = emb_rows(st->emb);
    out->user_rows = users_rows(st->users);
    out->mem_bytes = state__mem(st);
    out->budget_bytes = st->budget;
}

void state_write_json(state *st, json_writer *w) {
    state_stats s;
    state_stats_get(st, &s);
    json_obj_begin(w);
#define STATE__J(name, v) do { json_key(w, name); json_num(w, (double)(v)); } while (0)
    STATE__J("open_ms", s.open_ms);
    STATE__J("store_open_ms", s.store_open_ms);
    STATE__J("rss_open_mb", s.rss_open_mb);
    STATE__J("pending_restored", s.pending_restored);
    STATE__J("checkpoints", s.checkpoints);
    STATE__J("checkpoints_forced_by_memory", s.forced);
    STATE__J("checkpoint_ms_mean", s.checkpoints ? s.ckpt_ms_total / (double)s.checkpoints : 0);
    STATE__J("checkpoint_ms_max", s.ckpt_ms_max);
    STATE__J("checkpoint_bytes", s.ckpt_bytes);
    STATE__J("rows_written", s.rows_written);
    STATE__J("users_written", s.users_written);
    STATE__J("pending_written", s.pending_written);
    STATE__J("deletes", s.deletes);
    STATE__J("emb_rows", s.emb_rows);
    STATE__J("emb_hits", s.emb_hits);
    STATE__J("emb_misses", s.emb_misses);
    STATE__J("emb_loads", s.emb_loads);
    STATE__J("emb_created", s.emb_created);
    STATE__J("emb_evicted", s.emb_evicted);
    STATE__J("emb_expired", s.emb_expired);
    STATE__J("fallback_uses", s.fallback_uses);
    STATE__J("user_rows", s.user_rows);
    STATE__J("user_hits", s.user_hits);
    STATE__J("user_misses", s.user_misses);
    STATE__J("user_loads", s.user_loads);
    STATE__J("user_evicted", s.user_evicted);
    STATE__J("user_expired", s.user_expired);
    uint64_t keys = 0;
    if (store_property(st->s, STORE_EMB, "rocksdb.estimate-num-keys", &keys) == 0)
        STATE__J("store_emb_rows", keys);
    if (store_property(st->s, STORE_USER, "rocksdb.estimate-num-keys", &keys) == 0)
        STATE__J("store_user_rows", keys);
    STATE__J("mem_mb", (double)s.mem_bytes / 1048576.0);
    STATE__J("budget_mb", (double)s.budget_bytes / 1048576.0);
#undef STATE__J
    json_obj_end(w);
}

/* ---- open and restore ---- */

/* The configuration record: everything the stored bytes depend on. */
static char *state__config_record(const m3_cfg *c, const char *layout) {
    size_t cap = 4096;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t o = 0;
#define STATE__P(...) do { int w_ = snprintf(s + o, cap - o, __VA_ARGS__);                      \
                           if (w_ > 0) o += (size_t)w_ < cap - o ? (size_t)w_ : cap - o - 1; } while (0)
    STATE__P("%s\n", STATE_FORMAT);
    STATE__P("model.arch=%s\n", m3_arch_name(c->model.arch));
    STATE__P("model.emb.dim=%d\n", c->model.emb_dim);
    const cfg_list *lists[6] = {&c->scenarios, &c->user_cat, &c->item_cat, &c->ctx_cat,
                                &c->user_num, &c->item_num};
    const char *names[6] = {"scenarios", "features.user_cat", "features.item_cat",
                            "features.ctx_cat", "features.user_num", "features.item_num"};
    for (int l = 0; l < 6; l++) {
        STATE__P("%s=", names[l]);
        for (int i = 0; i < lists[l]->n; i++) STATE__P("%s%s", i ? "," : "", lists[l]->names[i]);
        STATE__P("\n");
    }
    STATE__P("inputs=%s\n", layout ? layout : "");
#undef STATE__P
    return s;
}

/* "key=value" line of rec where it first differs from want, for the message. */
static void state__first_diff(const char *have, const char *want, char *a, char *b, size_t n) {
    while (*have && *want) {
        size_t lh = strcspn(have, "\n"), lw = strcspn(want, "\n");
        if (lh != lw || memcmp(have, want, lh) != 0) {
            snprintf(a, n, "%.*s", (int)lh, have);
            snprintf(b, n, "%.*s", (int)lw, want);
            return;
        }
        have += lh + (have[lh] == '\n');
        want += lw + (want[lw] == '\n');
    }
    snprintf(a, n, "%.*s", (int)strcspn(*have ? have : "(end)", "\n"), *have ? have : "(end)");
    snprintf(b, n, "%.*s", (int)strcspn(*want ? want : "(end)", "\n"), *want ? want : "(end)");
}

typedef struct {
    state *st;
    char *errstr;
    size_t errn;
    int fail;
} state__restore_ctx;

static int state__restore_pending(void *opaque, const void *key, size_t klen, const void *val,
                                  size_t vlen) {
    state__restore_ctx *c = opaque;
    state *st = c->st;
    const unsigned char *k = key;
    if (klen < 4 || klen >= 4 + M3_ID_MAX) goto bad;
    int src = (int)(((uint32_t)k[0] << 24) | ((uint32_t)k[1] << 16) | ((uint32_t)k[2] << 8) | k[3]);
    pend_table *pt = lrn_source_pending(st->L, src, 1, c->errstr, c->errn);
    if (!pt) {
        c->fail = 1;
        return 1;
    }
    if (klen == 4) {
        if (pend_late_load(pt, val, vlen) != 0) goto bad;
        return 0;
    }
    char id[M3_ID_MAX];
    memcpy(id, k + 4, klen - 4);
    id[klen - 4] = 0;
    uint64_t seq;
    int64_t ts;
    if (strlen(id) != klen - 4 || pend_entry_head(val, vlen, &seq, &ts) != 0 ||
        pend_restore(pt, id, ts, seq) != 0)
        goto bad;
    st->st.pending_restored++;
    return 0;
bad:
    snprintf(c->errstr, c->errn, "malformed pending entry in the store (key of %zu bytes)", klen);
    c->fail = 1;
    return 1;
}

static int state__offset_cb(void *opaque, const char *topic, int32_t partition, int64_t next) {
    return state__offset_set(opaque, topic, partition, next) != 0;
}

/* Read meta key name: 1 with *val (malloc'd), 0 when absent, -1 with msg. */
static int state__get_meta(state *st, const char *name, void **val, size_t *len, char *msg,
                           size_t n) {
    return store_get(st->s, STORE_META, name, strlen(name), val, len, msg, n);
}

static int state__restore(state *st, const char *layout, char *msg, size_t n) {
    char *want = state__config_record(st->cfg, layout);
    if (!want) {
        snprintf(msg, n, "out of memory");
        return -1;
    }
    void *val = NULL;
    size_t len = 0;
    int rc = state__get_meta(st, STATE__KEY_CONFIG, &val, &len, msg, n);
    if (rc < 0) goto out;
    if (rc == 0) {   /* a new store: record the configuration it is for, before anything */
        store_batch_clear(st->b);
        if (state__put_meta(st, STATE__KEY_CONFIG, want, strlen(want)) != 0 ||
            store_commit(st->s, st->b, 1, msg, n) != 0) {
            rc = -1;
            goto out;
        }
        st->fresh = 1;
        rc = 0;
        goto out;
    }
    if (len != strlen(want) || memcmp(val, want, len) != 0) {
        char have_s[4096], a[256], b[256];
        snprintf(have_s, sizeof have_s, "%.*s", (int)(len < sizeof have_s ? len : sizeof have_s - 1),
                 (const char *)val);
        state__first_diff(have_s, want, a, b, sizeof a);
        snprintf(msg, n, "store %s holds the state of another configuration: it has %s, this "
                 "worker has %s; its state was not changed; run with the configuration the store "
                 "was written with, or give this worker an empty store.dir (the state is then "
                 "rebuilt from Kafka)", st->dir, a, b);
        rc = -1;
        goto out;
    }
    free(val);
    val = NULL;
    char e2[512];
    /* the dense parameters and their optimizer state */
    rc = state__get_meta(st, STORE_KEY_DENSE, &val, &len, msg, n);
    if (rc < 0) goto out;
    st->fresh = rc == 0;
    if (rc == 1 && m3_blob_load(st->m, val, len, e2, sizeof e2) != 0) {
        snprintf(msg, n, "store %s: its dense parameters do not fit this configuration (%s); "
                 "its state was not changed; run with the configuration the store was written "
                 "with, "
                 "or give this worker an empty store.dir", st->dir, e2);
        rc = -1;
        goto out;
    }
    free(val);
    val = NULL;
    rc = state__get_meta(st, STATE__KEY_LEARNER, &val, &len, msg, n);
    if (rc < 0) goto out;
    if (rc == 1 && lrn_state_load(st->L, val, len, e2, sizeof e2) != 0) {
        snprintf(msg, n, "store %s: cannot restore the learner: %s", st->dir, e2);
        rc = -1;
        goto out;
    }
    free(val);
    val = NULL;
    rc = state__get_meta(st, STATE__KEY_STREAM, &val, &len, msg, n);
    if (rc < 0) goto out;
    if (rc == 1) {
        int64_t stream[2];
        if (len != sizeof stream) {
            snprintf(msg, n, "store %s: malformed stream record", st->dir);
            rc = -1;
            goto out;
        }
        memcpy(stream, val, sizeof stream);
        st->clock = stream[0];
        st->sketch_adds = (uint64_t)stream[1];
    }
    free(val);
    val = NULL;
    if (st->sketch) {
        rc = state__get_meta(st, STATE__KEY_ADMIT, &val, &len, msg, n);
        if (rc < 0) goto out;
        if (rc == 1 && len == 2 * (size_t)STATE__SKETCH_W) memcpy(st->sketch, val, len);
        free(val);
        val = NULL;
    }
    if (store_get_offsets(st->s, state__offset_cb, st, msg, n) < 0) {
        rc = -1;
        goto out;
    }
    state__restore_ctx c = {st, msg, n, 0};
    if (store_iterate(st->s, STORE_PENDING, NULL, 0, state__restore_pending, &c, msg, n) < 0 ||
        c.fail) {
        rc = -1;
        goto out;
    }
    rc = 0;
out:
    free(val);
    free(want);
    return rc;
}

/* Free everything but the store (close it first: store_close or state__drop_store). */
static void state__free(state *st) {
    if (!st) return;
    if (st->L) {
        lrn_set_hooks(st->L, NULL, NULL, NULL);
        lrn_set_pend_loader(st->L, NULL, NULL);
    }
    store_batch_destroy(st->b);
    free(st->ukey);
    free(st->utick);
    free(st->useen);
    free(st->udirty);
    free(st->sketch);
    free(st->emb_del.v);
    free(st->user_del.v);
    free(st->miss.v);
    free(st->kemb.v);
    free(st->kuser.v);
    free(st->offs);
    free(st->vbuf);
    free(st);
}

/* Close the store without flushing (a refused or failed open); the batch goes first. */
static void state__drop_store(state *st) {
    store_batch_destroy(st->b);
    st->b = NULL;
    store_destroy(st->s);
    st->s = NULL;
}

state *state_open(const m3_cfg *cfg, lrn *L, const char *layout, char *errstr, size_t n) {
    double t0 = state__ms();
    if (!cfg->store_dir[0]) {
        snprintf(errstr, n, "state: store.dir is empty");
        return NULL;
    }
    if (lrn_n_models(L) != 1) {
        snprintf(errstr, n, "state: only the primary model is persisted: set model.shadow= "
                 "(empty) with store.dir");
        return NULL;
    }
    state *st = calloc(1, sizeof *st);
    if (!st) goto oom;
    st->cfg = cfg;
    st->m = lrn_model(L, 0);
    st->emb = m3_emb_table(st->m);
    st->users = m3_user_table(st->m);
    st->nc = cfg->model.n_cat;
    st->clock = INT64_MIN;
    st->expire_ms = cfg->emb_expire_ms;
    st->budget = (size_t)cfg->store_memory_mb << 20;
    st->admit_n = cfg->emb_admit_count;
    snprintf(st->dir, sizeof st->dir, "%s", cfg->store_dir);
    for (int s = 0; s < st->nc; s++) {
        st->missing_key[s] = m3_feat_key(s, M3_MISSING);
        st->fallback_key[s] = m3_feat_key(s, STATE__FALLBACK);
        st->admit_slot[s] = st->admit_n > 1 && !(s == M3_SLOT_ITEM && m3_uses_mieg(st->m));
    }
    size_t max_keys = (size_t)cfg->model.max_batch * (size_t)(st->nc > 0 ? st->nc : 1) + M3_MAX_CAT;
    if (state__kset_init(&st->kemb, max_keys) != 0 ||
        state__kset_init(&st->kuser, (size_t)cfg->model.max_batch) != 0)
        goto oom;
    if (st->admit_n > 1 && !(st->sketch = calloc(2, STATE__SKETCH_W))) goto oom;
    if (state__user_side_grow(st, users_capacity(st->users) ? users_capacity(st->users) : 16) != 0)
        goto oom;

    store_opts so;
    store_opts_default(&so);
    so.block_cache_mb = cfg->store_block_cache_mb;
    so.write_buffer_mb = cfg->store_write_buffer_mb;
    so.compression = cfg->store_compression;
    double t1 = state__ms();
    st->s = store_open(cfg->store_dir, &so, errstr, n);
    st->st.store_open_ms = state__ms() - t1;
    if (!st->s) {
        state__free(st);
        return NULL;
    }
    st->b = store_batch_new(st->s);
    if (!st->b) goto oom;
    st->L = L;
    lrn_set_pend_loader(L, state__pend_load, st);
    if (state__restore(st, layout, errstr, n) != 0) {
        state__drop_store(st);
        state__free(st);
        return NULL;
    }
    lrn_set_hooks(L, state__prepare, state__trained, st);
    st->st.open_ms = state__ms() - t0;
    st->st.rss_open_mb = met_rss_mb(NULL);
    return st;
oom:
    snprintf(errstr, n, "state: out of memory opening %s", cfg->store_dir);
    if (st) state__drop_store(st);
    state__free(st);
    return NULL;
}

int state_close(state *st, char *errstr, size_t n) {
    if (!st) return 0;
    store_batch_destroy(st->b);
    st->b = NULL;
    int rc = store_close(st->s, 1, errstr, n);
    state__free(st);
    return rc;
}
