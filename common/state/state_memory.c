/* state_memory.c - the memory budget: what the tables cost, and the eviction of the least
 * recently used clean rows (the store holds them) when a minibatch needs room. */
#include <string.h>

#include "state/state_int.h"

/* The two tables eviction chooses from, by one tick clock. */
enum { STATE__EMB, STATE__USER };

size_t state__mem(const state *st) {
    return emb_bytes(st->emb) + users_bytes(st->users) +
           (st->sketch ? 2 * (size_t)STATE__SKETCH_W : 0);
}

/* The same for given row counts, each table at capacity = rows (its hash slots at <= 0.7
 * load), the tables' own fixed parts aside. */
static size_t state__mem_for(const state *st, size_t e_rows, size_t u_rows) {
    size_t ue = emb_row_bytes(st->emb) + 2 * STATE__SLOT_BYTES;
    size_t uu = users_row_bytes(st->users) + 2 * STATE__SLOT_BYTES;
    return e_rows * ue + u_rows * uu + (st->sketch ? 2 * (size_t)STATE__SKETCH_W : 0);
}

/* What one more row of the family costs. */
static size_t state__row_cost(const state *st, int fam) {
    size_t zero = state__mem_for(st, 0, 0);
    return fam == STATE__EMB ? state__mem_for(st, 1, 0) - zero : state__mem_for(st, 0, 1) - zero;
}

static size_t state__rows(const state *st, int fam) {
    return fam == STATE__EMB ? emb_rows(st->emb) : users_rows(st->users);
}

/* 1 with *tick when row r may be evicted: clean, and not in use by this batch (stamped
 * with the current tick). */
static int state__candidate(const state *st, int fam, size_t r, uint32_t *tick) {
    if (fam == STATE__EMB) {
        if (emb_dirty(st->emb, (int64_t)r)) return 0;
        *tick = emb_tick(st->emb, (int64_t)r);
    } else {
        if (users_dirty(st->users, (int64_t)r)) return 0;
        *tick = users_tick(st->users, (int64_t)r);
    }
    return *tick != st->tick;
}

static void state__evict_row(state *st, int fam, size_t r) {
    if (fam == STATE__EMB) {
        emb_remove(st->emb, emb_key(st->emb, (int64_t)r));
        st->st.emb_evicted++;
    } else {
        users_remove(st->users, users_key(st->users, (int64_t)r));
        st->st.user_evicted++;
    }
}

/* The oldest and newest tick of the candidates; 0 when there is none. */
static int state__tick_range(const state *st, uint32_t *lo, uint32_t *hi) {
    *lo = UINT32_MAX;
    *hi = 0;
    for (int fam = STATE__EMB; fam <= STATE__USER; fam++)
        for (size_t r = 0, n = state__rows(st, fam); r < n; r++) {
            uint32_t t;
            if (!state__candidate(st, fam, r, &t)) continue;
            if (t < *lo) *lo = t;
            if (t > *hi) *hi = t;
        }
    return *lo <= *hi;
}

static size_t state__bucket(uint32_t t, uint32_t lo, uint64_t span) {
    return (size_t)(((uint64_t)(t - lo) * STATE__LRU_BUCKETS) / span);
}

/* Evict the least recently used clean rows (emb and users together, by tick; rows stamped
 * with the current tick are in use) until the tables fit in `target` bytes, then give the
 * freed capacity back. The threshold tick comes from a histogram of the candidates' ticks
 * (4096 buckets over their range: no allocation, O(rows)); rows in the threshold's bucket
 * go too. Returns 1 when the tables still do not fit (too many dirty rows). */
int state__evict(state *st, size_t target) {
    size_t have = state__mem_for(st, emb_rows(st->emb), users_rows(st->users));
    if (have <= target) return 0;
    uint32_t lo, hi;
    if (!state__tick_range(st, &lo, &hi)) return 1;   /* everything is dirty or in use */
    uint64_t span = (uint64_t)(hi - lo) + 1;
    uint64_t *bytes = st->lru;   /* bytes the candidates of each bucket free */
    memset(bytes, 0, sizeof st->lru);
    for (int fam = STATE__EMB; fam <= STATE__USER; fam++) {
        size_t cost = state__row_cost(st, fam);
        for (size_t r = 0, n = state__rows(st, fam); r < n; r++) {
            uint32_t t;
            if (state__candidate(st, fam, r, &t)) bytes[state__bucket(t, lo, span)] += cost;
        }
    }
    size_t need = have - target, limit = 0;
    uint64_t freed = 0;
    while (limit < STATE__LRU_BUCKETS && freed < need) freed += bytes[limit++];
    /* evict the candidates of buckets [0, limit); from the end, so a row moving into a
     * hole has been looked at already */
    for (int fam = STATE__EMB; fam <= STATE__USER; fam++)
        for (size_t r = state__rows(st, fam); r-- > 0;) {
            uint32_t t;
            if (state__candidate(st, fam, r, &t) && state__bucket(t, lo, span) < limit)
                state__evict_row(st, fam, r);
        }
    /* give memory back: capacity to the rows plus an eighth */
    size_t e = emb_rows(st->emb), u = users_rows(st->users);
    emb_reserve(st->emb, e + e / 8);
    users_reserve(st->users, u + u / 8);
    return freed < need;
}

void state__room(state *st, size_t new_e, size_t new_u) {
    size_t ne = emb_rows(st->emb) + new_e, nu = users_rows(st->users) + new_u;
    /* a checkpoint's write batch holds a copy of the changed rows, and RocksDB copies the
     * batch into a memtable: keep them to a quarter of the budget by checkpointing early */
    size_t dirty = emb_dirty_rows(st->emb) * state__row_cost(st, STATE__EMB) +
                   users_dirty_rows(st->users) * state__row_cost(st, STATE__USER);
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
}
