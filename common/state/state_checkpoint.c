/* state_checkpoint.c - the checkpoint: one RocksDB write batch with the deletes, the
 * changed rows and user states, the pending join's changes, the dense blob, the learner's
 * stream state and the input offsets; before it, the expiry of rows (in memory, and a
 * slice of those only in the store); after it, everything is clean. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "state/state_int.h"

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

size_t state__pend_key(unsigned char *key, int src, const char *id) {
    key[0] = (unsigned char)((uint32_t)src >> 24);
    key[1] = (unsigned char)((uint32_t)src >> 16);
    key[2] = (unsigned char)((uint32_t)src >> 8);
    key[3] = (unsigned char)src;
    size_t n = id ? strlen(id) : 0;
    if (n) memcpy(key + 4, id, n);
    return 4 + n;
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

static void state__expire_in_memory(state *st, int64_t dead_before) {
    for (size_t r = emb_rows(st->emb); r-- > 0;) {
        if (emb_seen(st->emb, (int64_t)r) >= dead_before) continue;
        uint64_t key = emb_key(st->emb, (int64_t)r);
        emb_remove(st->emb, key);
        state__u64_push(&st->emb_del, key);
        st->st.emb_expired++;
    }
    for (size_t r = users_rows(st->users); r-- > 0;) {
        if (users_seen(st->users, (int64_t)r) >= dead_before) continue;
        uint64_t key = users_key(st->users, (int64_t)r);
        users_remove(st->users, key);
        state__u64_push(&st->user_del, key);
        st->st.user_expired++;
    }
}

/* Rows only in the store: a bounded slice of each family per checkpoint, round and round. */
static int state__expire_stored(state *st, int64_t dead_before, char *errstr, size_t n) {
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

static int state__expire(state *st, char *errstr, size_t n) {
    int64_t dead_before = state__dead_before(st);
    if (dead_before == INT64_MIN) return 0;
    state__expire_in_memory(st, dead_before);
    return state__expire_stored(st, dead_before, errstr, n);
}

/* ---- the write batch, part by part: each returns 0, 1 when a put failed (the batch
 * continues, the checkpoint fails), -1 when memory ran out (stop) ---- */

/* Deletes first: a key deleted and written again in one checkpoint ends up written. */
static int state__put_deletes(state *st) {
    int bad = 0;
    for (size_t i = 0; i < st->emb_del.n; i++)
        bad |= store_batch_delete_u64(st->b, STORE_EMB, st->emb_del.v[i]);
    for (size_t i = 0; i < st->user_del.n; i++)
        bad |= store_batch_delete_u64(st->b, STORE_USER, st->user_del.v[i]);
    st->st.deletes += st->emb_del.n + st->user_del.n;
    return bad != 0;
}

/* Every dirty row and user state (a user's value with its event time appended). */
static int state__put_rows(state *st, uint64_t *rows_w, uint64_t *users_w) {
    size_t eb = emb_value_bytes(st->emb), ub = users_value_bytes(st->users);
    unsigned char *v = state__vbuf(st, (eb > ub + 8 ? eb : ub + 8) + 64);
    if (!v) return -1;
    int bad = 0;
    for (size_t r = 0; r < emb_rows(st->emb); r++) {
        if (!emb_dirty(st->emb, (int64_t)r)) continue;
        emb_value_save(st->emb, (int64_t)r, v);
        uint64_t key = emb_key(st->emb, (int64_t)r);
        bad |= store_batch_put_u64(st->b, STORE_EMB, key, v, eb);
        if (st->chg && chg_user_partition(st->chg, key) >= 0)   /* a user-id row */
            bad |= state__chg_key(st, CHG_ROW, key, v, eb);
        (*rows_w)++;
    }
    for (size_t r = 0; r < users_rows(st->users); r++) {
        if (!users_dirty(st->users, (int64_t)r)) continue;
        users_value_save(st->users, (int64_t)r, v);
        int64_t seen = users_seen(st->users, (int64_t)r);
        memcpy(v + ub, &seen, 8);
        bad |= store_batch_put_u64(st->b, STORE_USER, users_key(st->users, (int64_t)r), v, ub + 8);
        bad |= state__chg_key(st, CHG_USER, users_key(st->users, (int64_t)r), v, ub + 8);
        (*users_w)++;
    }
    return bad != 0;
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
    if (vlen && state__chg_src(st, CHG_PEND, c->src, e->impression_id, v, vlen)) c->fail = 1;
    st->st.pending_written++;
}

static void state__pend_del(void *ud, const char *id) {
    state__pend_ctx *c = ud;
    unsigned char key[4 + M3_ID_MAX];
    size_t klen = state__pend_key(key, c->src, id);
    if (store_batch_delete(c->st->b, STORE_PENDING, key, klen) != 0) c->fail = 1;
    if (state__chg_src(c->st, CHG_PEND, c->src, id, NULL, 0)) c->fail = 1;
    c->st->st.deletes++;
}

/* The pending join of every source: new entries, released ones, changed late rings. */
static int state__put_pending(state *st) {
    int bad = 0;
    for (int src = 0; src < lrn_n_sources(st->L); src++) {
        char e2[64];
        pend_table *pt = lrn_source_pending(st->L, src, 0, e2, sizeof e2);
        if (!pt) continue;   /* no input from this source yet */
        state__pend_ctx pc = {st, src, 0};
        pend_sync(pt, state__pend_put, state__pend_del, &pc);
        bad |= pc.fail;
        if (!pend_late_dirty(pt)) continue;
        unsigned char key[4];
        state__pend_key(key, src, NULL);
        size_t len = pend_late_save(pt, NULL, 0);
        unsigned char *lb = malloc(len + 1);
        if (!lb) return -1;
        pend_late_save(pt, lb, len);
        bad |= store_batch_put(st->b, STORE_PENDING, key, 4, lb, len);
        bad |= state__chg_src(st, CHG_LATE, src, NULL, lb, len);
        free(lb);
    }
    return bad != 0;
}

/* Dense parameters, stream state, counters, model version, admission sketch. */
static int state__put_dense(state *st) {
    size_t blen = m3_blob_size(st->m), llen = lrn_state_save(st->L, NULL, 0);
    unsigned char *blob = malloc(blen > llen ? blen : llen);
    if (!blob) return -1;
    int bad = m3_blob_save(st->m, blob, blen) != blen;   /* non-finite: state__guard_dense */
    if (!bad) bad |= state__put_meta(st, STORE_KEY_DENSE, blob, blen);
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
    return bad != 0;
}

static int state__put_offsets(state *st, const state_offset *offs, int n, char *errstr,
                              size_t errn) {
    for (int i = 0; i < n; i++)
        if (store_put_offset(st->b, offs[i].topic, offs[i].partition, offs[i].next_offset) != 0) {
            snprintf(errstr, errn, "checkpoint: bad offset %s [%d] %" PRId64, offs[i].topic,
                     (int)offs[i].partition, offs[i].next_offset);
            return -1;
        }
    return 0;
}

/* ---- after the commit ---- */

/* Durable: everything written is clean now, the deletes are done, the offsets stored.
 * Returns 0, or -1 when out of memory. */
static int state__committed(state *st, const state_offset *offs, int n) {
    emb_clean_all(st->emb);
    users_clean_all(st->users);
    for (int src = 0; src < lrn_n_sources(st->L); src++) {
        char e2[64];
        pend_table *pt = lrn_source_pending(st->L, src, 0, e2, sizeof e2);
        if (pt) pend_sync_done(pt);
    }
    st->emb_del.n = st->user_del.n = 0;
    st->sketch_dirty = 0;
    for (int i = 0; i < n; i++)
        if (state__offset_set(st, offs[i].topic, offs[i].partition, offs[i].next_offset) != 0)
            return -1;
    return 0;
}

/* Build the write batch and commit it. Returns 0, 1 when out of memory (or a put failed),
 * -1 with errstr. */
static int state__write(state *st, const state_offset *offs, int n, size_t *bytes,
                        uint64_t *rows_w, uint64_t *users_w, char *errstr, size_t errn) {
    store_batch_clear(st->b);
    if (state__expire(st, errstr, errn) != 0) return -1;
    int bad = state__put_deletes(st), r;
    if ((r = state__put_rows(st, rows_w, users_w)) < 0) return 1;
    bad |= r;
    if ((r = state__put_pending(st)) < 0) return 1;
    bad |= r;
    bad |= state__chg_metas(st);
    if ((r = state__put_dense(st)) < 0) return 1;
    bad |= r;
    if (state__put_offsets(st, offs, n, errstr, errn) != 0) return -1;
    if (st->chg_err[0]) {   /* a changelog record was not queued: the transaction must not commit */
        snprintf(errstr, errn, "checkpoint: changelog: %s", st->chg_err);
        return -1;
    }
    if (bad) return 1;
    *bytes = store_batch_bytes(st->b);
    /* the changelog's transaction commits first: the local store is never ahead of Kafka */
    if (st->commit_fn && st->commit_fn(st->commit_ud, errstr, errn) != 0) return -1;
    return store_commit(st->s, st->b, st->cfg->checkpoint_sync, errstr, errn) != 0 ? -1 : 0;
}

/* A checkpoint never stores a non-finite parameter. Rather than leave the dense blob out
 * (the store would then hold rows and offsets newer than its blob, and a restart would
 * resume from a state the running worker never had), the model in memory goes back to the
 * stored blob first - the last good checkpoint - and the checkpoint writes that: memory and
 * store stay equal, and a restart continues exactly as this process does. */
static void state__guard_dense(state *st) {
    if (m3_params_finite(st->m)) return;
    if (state__rollback(st, 0) != 0) m3_rollback(st->m);   /* none stored: initial state */
    met_guard *g = met_board_guard(lrn_board(st->L), 0);
    g->rollbacks++;
    st->st.ckpt_rollbacks++;
    fprintf(stderr, "m3rec: guard: checkpoint of %s: non-finite dense parameters, rolled "
            "back to the last checkpoint's (rollbacks so far: %llu)\n", st->dir,
            (unsigned long long)g->rollbacks);
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
    state__guard_dense(st);
    if (st->failed) {   /* the rollback could not read the store */
        snprintf(errstr, errn, "state of %s failed: %s", st->dir, st->err);
        return -1;
    }
    double t0 = clk_mono_s();
    size_t bytes = 0;
    uint64_t rows_w = 0, users_w = 0;
    int rc = state__write(st, offs, n, &bytes, &rows_w, &users_w, errstr, errn);
    if (rc < 0) return -1;
    if (rc > 0 || state__committed(st, offs, n) != 0) goto oom;
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
    double ms = (clk_mono_s() - t0) * 1e3;
    st->st.ckpt_ms_last = ms;
    st->st.ckpt_ms_total += ms;
    if (ms > st->st.ckpt_ms_max) st->st.ckpt_ms_max = ms;
    return 0;
oom:
    snprintf(errstr, errn, "checkpoint of %s: out of memory building the write batch", st->dir);
    return -1;
}
