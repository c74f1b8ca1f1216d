/* state_batch.c - the learner's hooks: before each forward pass, bring the minibatch's
 * embedding rows and user states into memory (loads, frequency admission, expiry); after
 * training, mark the users it saw; and the pending join's loader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "state/state_int.h"

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
    for (size_t i = hash_mix64(key) & mask;; i = (i + 1) & mask) {
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

/* The slot of a key already in the set. */
static state__kslot *state__kset_at(state__kset *s, uint64_t key) {
    int added;
    return state__kset_get(s, key, &added);
}

int state__batch_init(state *st, int max_batch) {
    size_t max_keys = (size_t)max_batch * (size_t)(st->nc > 0 ? st->nc : 1) + M3_MAX_CAT;
    if (state__kset_init(&st->kemb, max_keys) != 0 ||
        state__kset_init(&st->kuser, (size_t)max_batch) != 0)
        return -1;
    return 0;
}

/* ---- admission: a count-min sketch of sightings (two rows, conservative update) ---- */

static void state__sketch_pos(uint64_t key, size_t *h0, size_t *h1) {
    uint64_t h = hash_mix64(key ^ 0x61646d6974ULL);
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

/* A slot's missing-value key or fallback key: never subject to admission. */
static int state__special(const state *st, uint64_t key) {
    unsigned slot = (unsigned)(key >> 56);
    return slot < (unsigned)st->nc &&
           (key == st->missing_key[slot] || key == st->fallback_key[slot]);
}

/* An absent key: its own new row, or its slot's fallback row? */
static uint8_t state__admit(const state *st, uint64_t key) {
    unsigned slot = (unsigned)(key >> 56);
    if (st->admit_n <= 1 || slot >= (unsigned)st->nc || !st->admit_slot[slot] ||
        state__special(st, key))
        return K_NEW;
    return state__sketch_est(st, key) >= (unsigned)st->admit_n ? K_NEW : K_FALLBACK;
}

/* ---- loads from the store ---- */

typedef struct {
    state *st;
    int64_t dead_before;
    size_t loaded, dead;
} state__load_ctx;

static void state__emb_loaded(void *opaque, size_t i, const void *val, size_t vlen) {
    state__load_ctx *c = opaque;
    state *st = c->st;
    uint64_t key = st->miss.v[i];
    state__kslot *k = state__kset_at(&st->kemb, key);
    if (!val) return;   /* stays K_MISSING: admission decides */
    if (emb_value_seen(st->emb, val, vlen) < c->dead_before) {
        state__u64_push(&st->emb_del, key);   /* expired in the store: it starts fresh */
        c->dead++;
        return;
    }
    if (emb_value_load(st->emb, key, val, vlen) < 0) {
        state__fail(st, "embedding row in the store has a bad size or memory ran out");
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
        state__fail(st, "user state in the store has a bad size");
        return;
    }
    memcpy(&seen, (const unsigned char *)val + ub, sizeof seen);
    if (seen < c->dead_before) {
        state__u64_push(&st->user_del, key);
        c->dead++;
        return;
    }
    if (users_value_load(st->users, key, val, ub, seen) < 0) {
        state__fail(st, "cannot load a user state (out of memory)");
        return;
    }
    c->loaded++;
}

/* Look up st->miss in family cf with one multi-get; count the loads and the rows found
 * expired. Returns the rows loaded. */
static size_t state__load_missing(state *st, store_cf cf, store_value_cb cb,
                                  int64_t dead_before, uint64_t *loads, uint64_t *expired) {
    state__load_ctx c = {st, dead_before, 0, 0};
    char err[256];
    if (st->miss.n > 0 &&
        store_multi_get_u64(st->s, cf, st->miss.v, st->miss.n, cb, &c, err, sizeof err) < 0)
        state__fail(st, "reading the store: %s", err);
    *loads += c.loaded;
    *expired += c.dead;
    return c.loaded;
}

/* ---- before the forward pass ---- */

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

/* Step 1: every embedding key of the batch in memory, else one multi-get for the missing. */
static void state__resolve_emb(state *st, const m3_example *ex, int B, int64_t dead_before) {
    state__kset_clear(&st->kemb);
    st->miss.n = 0;
    for (int i = 0; i < B; i++)
        for (int s = 0; s < st->nc; s++) {
            int added;
            state__kslot *k = state__kset_get(&st->kemb, ex[i].cat[s], &added);
            if (added) state__emb_probe(st, k, dead_before);
        }
    state__load_missing(st, STORE_EMB, state__emb_loaded, dead_before, &st->st.emb_loads,
                        &st->st.emb_expired);
}

/* Sightings of ids without a row (in memory or in the store): the N-th admits the id.
 * Counted after the loads, so what is in memory does not matter. */
static void state__count_sightings(state *st, const m3_example *ex, int n_imp) {
    for (int i = 0; i < n_imp; i++)
        for (int s = 0; s < st->nc; s++) {
            state__kslot *k = state__kset_at(&st->kemb, ex[i].cat[s]);
            if (st->admit_slot[s] && k->what != K_PRESENT && !state__special(st, k->key))
                state__sketch_add(st, k->key);
        }
}

/* Step 2: absent keys get their own row, or their slot's fallback row (fb_used[slot] set).
 * Returns the new rows. */
static size_t state__admit_keys(state *st, uint8_t *fb_used) {
    size_t new_e = 0;
    for (size_t j = 0; j < st->kemb.cap; j++) {
        state__kslot *k = &st->kemb.v[j];
        if (k->gen != st->kemb.gen || (k->what != K_MISSING && k->what != K_NEW)) continue;
        k->what = state__admit(st, k->key);
        if (k->what == K_NEW) new_e++;
        else fb_used[k->key >> 56] = 1;
    }
    return new_e;
}

/* The fallback rows themselves (unless the batch already used them directly): in memory,
 * loaded, or new. Returns the new rows. */
static size_t state__fallback_rows(state *st, uint8_t *fb_used, int64_t dead_before) {
    st->miss.n = 0;
    for (int s = 0; s < st->nc; s++) {
        if (!fb_used[s]) continue;
        int added;
        state__kslot *k = state__kset_get(&st->kemb, st->fallback_key[s], &added);
        if (added) state__emb_probe(st, k, dead_before);
        else fb_used[s] = 0;
    }
    state__load_missing(st, STORE_EMB, state__emb_loaded, dead_before, &st->st.emb_loads,
                        &st->st.emb_expired);
    size_t new_e = 0;
    for (int s = 0; s < st->nc; s++) {
        if (!fb_used[s]) continue;
        state__kslot *k = state__kset_at(&st->kemb, st->fallback_key[s]);
        if (k->what != K_PRESENT) {
            k->what = K_NEW;
            new_e++;
        }
    }
    return new_e;
}

/* The examples' keys that were not admitted become their slot's fallback key. */
static void state__use_fallbacks(state *st, m3_example *ex, int B) {
    for (int i = 0; i < B; i++)
        for (int s = 0; s < st->nc; s++) {
            if (state__kset_at(&st->kemb, ex[i].cat[s])->what != K_FALLBACK) continue;
            ex[i].cat[s] = st->fallback_key[s];
            st->st.fallback_uses++;
        }
}

/* A user key of the batch: in memory (and alive) counts as a hit, else it is to look up. */
static void state__user_probe(state *st, uint64_t key, int64_t dead_before) {
    int64_t r = users_find(st->users, key);
    if (r >= 0 && users_seen(st->users, r) < dead_before) {
        users_remove(st->users, key);   /* expired: gone, in the store too */
        state__u64_push(&st->user_del, key);
        st->st.user_expired++;
    } else if (r >= 0) {
        users_touch(st->users, r);
        st->st.user_hits++;
        return;
    }
    st->st.user_misses++;
    if (state__u64_push(&st->miss, key) != 0) state__fail(st, "%s", "out of memory");
}

/* Step 3: the user states of the (possibly rewritten) user keys; loads may grow the
 * table, so room for all of them comes first. Returns the rows training will create. */
static size_t state__resolve_users(state *st, const m3_example *ex, int B, int64_t dead_before,
                                   size_t new_e, int train) {
    state__kset_clear(&st->kuser);
    st->miss.n = 0;
    for (int i = 0; i < B; i++) {
        int added;
        state__kslot *k = state__kset_get(&st->kuser, ex[i].cat[M3_SLOT_USER], &added);
        if (added) state__user_probe(st, k->key, dead_before);
    }
    state__room(st, new_e, st->miss.n);
    size_t loaded = state__load_missing(st, STORE_USER, state__user_loaded, dead_before,
                                        &st->st.user_loads, &st->st.user_expired);
    return train ? st->miss.n - loaded : 0;   /* training creates the rest */
}

void state__prepare(void *ud, m3_example *ex, int B, int n_imp, int train) {
    state *st = ud;
    st->tick++;
    /* the learner's clock, not the rows' newest time: one message cannot move it. Before
     * it has one (the first events), the rows' newest time: a row is never stamped unseen */
    int64_t bc = st->clock, lc = lrn_clock(st->L);
    if (lc > bc) bc = lc;
    if (bc == INT64_MIN)
        for (int i = 0; i < B; i++)
            if (ex[i].ts_ms > bc) bc = ex[i].ts_ms;
    st->batch_clock = bc;
    emb_set_clock(st->emb, st->tick, bc);
    users_set_clock(st->users, st->tick, bc);
    int64_t dead_before = state__dead_before(st);
    if (st->nc <= 0 || B <= 0) return;

    state__resolve_emb(st, ex, B, dead_before);
    if (train && st->sketch) state__count_sightings(st, ex, n_imp);
    uint8_t fb_used[M3_MAX_CAT] = {0};
    size_t new_e = state__admit_keys(st, fb_used);
    new_e += state__fallback_rows(st, fb_used, dead_before);
    state__use_fallbacks(st, ex, B);
    st->st.emb_created += new_e;
    size_t new_u = 0;
    if (st->nc > M3_SLOT_USER) new_u = state__resolve_users(st, ex, B, dead_before, new_e, train);
    state__room(st, new_e, new_u);
}

/* ---- after training ---- */

void state__trained(void *ud, const m3_example *ex, int B, int n_imp) {
    state *st = ud;
    (void)n_imp;
    /* the expiry clock follows the learner's only: the rows' newest time of a batch before
     * it has one (a fresh worker's first events) stamps those rows, never the clock - one
     * 1970 or far-future first event would hold it there */
    if (lrn_clock(st->L) != INT64_MIN) st->clock = st->batch_clock;
    if (st->nc <= M3_SLOT_USER) return;
    /* every user of a trained batch is written with this batch's event time, changed or
     * not: it was seen (expiry counts from it) */
    users_set_clock(st->users, st->tick, st->batch_clock);
    for (int i = 0; i < B; i++) {
        int64_t r = users_find(st->users, ex[i].cat[M3_SLOT_USER]);
        if (r >= 0) users_mark(st->users, r);
    }
}

/* ---- the pending join's loader ---- */

int state__pend_load(void *ud, int tag, const char *id, pend_entry *out) {
    state *st = ud;
    unsigned char key[4 + M3_ID_MAX];
    size_t klen = state__pend_key(key, tag, id);
    void *val = NULL;
    size_t vlen = 0;
    char err[256];
    int rc = store_get(st->s, STORE_PENDING, key, klen, &val, &vlen, err, sizeof err);
    if (rc != 1) {
        state__fail(st, "pending impression %s of source %d: %s", id, tag,
                    rc == 0 ? "not in the store" : err);
        free(val);
        return -1;
    }
    rc = pend_entry_decode(out, id, st->nc, st->cfg->model.n_num, val, vlen);
    free(val);
    if (rc != 0) state__fail(st, "pending impression %s: malformed value in the store", id);
    return rc;
}
