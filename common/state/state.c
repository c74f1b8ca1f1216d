/* state.c - durable learner state (state.h): open a store and restore the learner from
 * it, close it; and the small steps the other state files share (state_int.h lists the
 * files: the learner hooks, the memory budget, the checkpoint, the stats).
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
#include "state/state_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "report/metrics.h"

/* ---- shared small steps (state_int.h) ---- */

void state__fail(state *st, const char *fmt, ...) {
    if (st->failed) return;
    st->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
}

int state__u64_push(state__u64s *a, uint64_t v) {
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

int64_t state__dead_before(const state *st) {
    if (st->expire_ms <= 0 || st->clock == INT64_MIN || st->clock < INT64_MIN + st->expire_ms)
        return INT64_MIN;
    return st->clock - st->expire_ms;
}

int state__get_meta(state *st, const char *name, void **val, size_t *len, char *msg, size_t n) {
    return store_get(st->s, STORE_META, name, strlen(name), val, len, msg, n);
}

int state__put_meta(state *st, const char *name, const void *val, size_t len) {
    return store_batch_put(st->b, STORE_META, name, strlen(name), val, len);
}

int state__offset_set(state *st, const char *topic, int32_t partition, int64_t next) {
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

/* ---- the configuration record ---- */

/* Everything the stored bytes depend on, one "key=value" a line (malloc'd; NULL when out
 * of memory). */
static char *state__config_record(const m3_cfg *c, const char *layout) {
    buf b = {0};
    buf_printf(&b, "%s\n", STATE_FORMAT);
    buf_printf(&b, "model.arch=%s\n", m3_arch_name(c->model.arch));
    buf_printf(&b, "model.emb.dim=%d\n", c->model.emb_dim);
    const cfg_list *lists[6] = {&c->scenarios, &c->user_cat, &c->item_cat, &c->ctx_cat,
                                &c->user_num, &c->item_num};
    const char *names[6] = {"scenarios", "features.user_cat", "features.item_cat",
                            "features.ctx_cat", "features.user_num", "features.item_num"};
    for (int l = 0; l < 6; l++) {
        buf_printf(&b, "%s=", names[l]);
        for (int i = 0; i < lists[l]->n; i++)
            buf_printf(&b, "%s%s", i ? "," : "", lists[l]->names[i]);
        buf_puts(&b, "\n");
    }
    buf_printf(&b, "inputs=%s\n", layout ? layout : "");
    /* at most 4095 bytes, as the record has always been cut: older stores keep matching */
    if (!b.oom && b.len > 4095) b.data[b.len = 4095] = 0;
    if (b.oom) {
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b);
}

/* The "key=value" lines of have and want where they first differ, for the message. */
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

/* ---- restore: the configuration, then each record a checkpoint writes ---- */

/* The store's configuration record (have, len) against this configuration's (want).
 * Returns 0 when they match, -1 with msg saying where they differ. */
static int state__config_compare(const char *dir, const void *have, size_t len,
                                 const char *want, char *msg, size_t n) {
    if (len == strlen(want) && memcmp(have, want, len) == 0) return 0;
    char have_s[4096], a[256], b[256];
    snprintf(have_s, sizeof have_s, "%.*s", (int)(len < sizeof have_s ? len : sizeof have_s - 1),
             (const char *)have);
    state__first_diff(have_s, want, a, b, sizeof a);
    snprintf(msg, n, "store %s holds the state of another configuration: it has %s, this "
             "worker has %s; its state was not changed; run with the configuration the store "
             "was written with, or give this worker an empty store.dir (the state is then "
             "rebuilt from Kafka)", dir, a, b);
    return -1;
}

typedef struct {
    const char *dir, *want;
} state__config_check;

/* store_open's check, on a read-only view of an existing store: a store of another
 * configuration is refused before anything in its directory is opened for writing. */
static int state__config_check_cb(void *opaque, const void *val, size_t len, char *msg,
                                  size_t n) {
    const state__config_check *c = opaque;
    return val ? state__config_compare(c->dir, val, len, c->want, msg, n) : 0;
}

/* After the open: a store without a configuration record (a new one) gets it now, before
 * anything else; one with a record was checked by state__config_check_cb. Returns 1 when
 * the store is new, 0 when its record matches, -1 with msg. */
static int state__check_config(state *st, const char *want, char *msg, size_t n) {
    void *val = NULL;
    size_t len = 0;
    int rc = state__get_meta(st, STATE__KEY_CONFIG, &val, &len, msg, n);
    if (rc == 0) {
        store_batch_clear(st->b);
        rc = state__put_meta(st, STATE__KEY_CONFIG, want, strlen(want)) != 0 ||
                     store_commit(st->s, st->b, 1, msg, n) != 0
                 ? -1
                 : 1;
    } else if (rc == 1) {
        rc = state__config_compare(st->dir, val, len, want, msg, n);
    }
    free(val);
    return rc;
}

/* Read meta record name and, when present, hand it to apply (which fills msg when it
 * refuses it). Returns 1 when present and applied, 0 when absent, -1 with msg. */
typedef int (*state__apply_fn)(state *st, const void *val, size_t len, char *msg, size_t n);

static int state__restore_meta(state *st, const char *name, state__apply_fn apply, char *msg,
                               size_t n) {
    void *val = NULL;
    size_t len = 0;
    int rc = state__get_meta(st, name, &val, &len, msg, n);
    if (rc == 1 && apply(st, val, len, msg, n) != 0) rc = -1;
    free(val);
    return rc;
}

/* The dense parameters and their optimizer state. */
static int state__apply_dense(state *st, const void *val, size_t len, char *msg, size_t n) {
    char e2[512];
    if (m3_blob_load(st->m, val, len, e2, sizeof e2) == 0) return 0;
    snprintf(msg, n, "store %s: its dense parameters do not fit this configuration (%s); "
             "its state was not changed; run with the configuration the store was written "
             "with, "
             "or give this worker an empty store.dir", st->dir, e2);
    return -1;
}

/* The guard's rollback (lrn_set_rollback): the primary's dense blob of the last
 * checkpoint, which never holds a non-finite value (m3_blob_save refuses one). -1 with no
 * checkpoint yet (the learner then restarts the model from its initial state), for a
 * shadow (not persisted), or when the store cannot be read (the state fails). */
int state__rollback(void *ud, int model) {
    state *st = ud;
    if (model != 0) return -1;
    void *val = NULL;
    size_t len = 0;
    char e2[512];
    int rc = state__get_meta(st, STORE_KEY_DENSE, &val, &len, e2, sizeof e2);
    if (rc < 0) state__fail(st, "rollback to the last checkpoint: %s", e2);
    int ok = rc == 1 && m3_blob_load(st->m, val, len, e2, sizeof e2) == 0;
    free(val);
    return ok ? 0 : -1;
}

/* The learner's stream state and counters. */
static int state__apply_learner(state *st, const void *val, size_t len, char *msg, size_t n) {
    char e2[512];
    if (lrn_state_load(st->L, val, len, e2, sizeof e2) == 0) return 0;
    snprintf(msg, n, "store %s: cannot restore the learner: %s", st->dir, e2);
    return -1;
}

/* The expiry clock and the sketch's sightings since its last halving. */
static int state__apply_stream(state *st, const void *val, size_t len, char *msg, size_t n) {
    int64_t stream[2];
    if (len != sizeof stream) {
        snprintf(msg, n, "store %s: malformed stream record", st->dir);
        return -1;
    }
    memcpy(stream, val, sizeof stream);
    st->clock = stream[0];
    st->sketch_adds = (uint64_t)stream[1];
    return 0;
}

/* The admission sketch (a record of another size is ignored). */
static int state__apply_admit(state *st, const void *val, size_t len, char *msg, size_t n) {
    (void)msg;
    (void)n;
    if (len == 2 * (size_t)STATE__SKETCH_W) memcpy(st->sketch, val, len);
    return 0;
}

static int state__restore(state *st, const char *want, char *msg, size_t n) {
    int rc = state__check_config(st, want, msg, n);
    if (rc == 1) {   /* a new store: nothing to restore */
        st->fresh = 1;
        return 0;
    }
    if (rc < 0) return -1;
    rc = state__restore_meta(st, STORE_KEY_DENSE, state__apply_dense, msg, n);
    if (rc < 0) return -1;
    st->fresh = rc == 0;   /* no dense parameters: a fresh model */
    if (state__restore_meta(st, STATE__KEY_LEARNER, state__apply_learner, msg, n) < 0 ||
        state__restore_meta(st, STATE__KEY_STREAM, state__apply_stream, msg, n) < 0 ||
        (st->sketch && state__restore_meta(st, STATE__KEY_ADMIT, state__apply_admit, msg, n) < 0))
        return -1;
    if (store_get_offsets(st->s, state__offset_cb, st, msg, n) < 0) return -1;
    state__restore_ctx c = {st, msg, n, 0};
    if (store_iterate(st->s, STORE_PENDING, NULL, 0, state__restore_pending, &c, msg, n) < 0 ||
        c.fail)
        return -1;
    return 0;
}

/* ---- open and close ---- */

/* Free everything but the store (close it first: store_close or state__drop_store). */
static void state__free(state *st) {
    if (!st) return;
    if (st->L) {
        lrn_set_hooks(st->L, NULL, NULL, NULL);
        lrn_set_rollback(st->L, NULL, NULL);
        lrn_set_pend_loader(st->L, NULL, NULL);
    }
    store_batch_destroy(st->b);
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

/* A state for cfg's primary model, its store not open yet; NULL when out of memory. */
static state *state__new(const m3_cfg *cfg, lrn *L) {
    state *st = calloc(1, sizeof *st);
    if (!st) return NULL;
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
    if (state__batch_init(st, cfg->model.max_batch) != 0 ||
        (st->admit_n > 1 && !(st->sketch = calloc(2, STATE__SKETCH_W)))) {
        state__free(st);
        return NULL;
    }
    return st;
}

/* Open cfg's store with its tuning, refusing one that holds the state of a configuration
 * other than `want` (its record) before opening it for writing; NULL with errstr. */
static store *state__open_store(const m3_cfg *cfg, const char *want, double *ms, char *errstr,
                                size_t n) {
    store_opts so;
    store_opts_default(&so);
    state__config_check check = {cfg->store_dir, want};
    so.check_key = STATE__KEY_CONFIG;
    so.check = state__config_check_cb;
    so.check_opaque = &check;
    so.block_cache_mb = cfg->store_block_cache_mb;
    so.write_buffer_mb = cfg->store_write_buffer_mb;
    so.compression = cfg->store_compression;
    double t1 = clk_mono_s();
    store *s = store_open(cfg->store_dir, &so, errstr, n);
    *ms = (clk_mono_s() - t1) * 1e3;
    return s;
}

state *state_open(const m3_cfg *cfg, lrn *L, const char *layout, char *errstr, size_t n) {
    double t0 = clk_mono_s();
    if (!cfg->store_dir[0]) {
        snprintf(errstr, n, "state: store.dir is empty");
        return NULL;
    }
    if (lrn_n_models(L) != 1) {
        snprintf(errstr, n, "state: only the primary model is persisted: set model.shadow= "
                 "(empty) with store.dir");
        return NULL;
    }
    char *want = state__config_record(cfg, layout);
    state *st = want ? state__new(cfg, L) : NULL;
    if (!st) goto oom;
    st->s = state__open_store(cfg, want, &st->st.store_open_ms, errstr, n);
    if (!st->s) {
        free(want);
        state__free(st);
        return NULL;
    }
    st->b = store_batch_new(st->s);
    if (!st->b) goto oom;
    st->L = L;
    lrn_set_pend_loader(L, state__pend_load, st);
    if (state__restore(st, want, errstr, n) != 0) {
        free(want);
        state__drop_store(st);
        state__free(st);
        return NULL;
    }
    free(want);
    lrn_set_hooks(L, state__prepare, state__trained, st);
    lrn_set_rollback(L, state__rollback, st);
    st->st.open_ms = (clk_mono_s() - t0) * 1e3;
    st->st.rss_open_mb = met_rss_mb(NULL);
    return st;
oom:
    snprintf(errstr, n, "state: out of memory opening %s", cfg->store_dir);
    free(want);
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

/* ---- accessors ---- */

int state_offset_get(const state *st, const char *topic, int32_t partition, int64_t *next) {
    for (int i = 0; i < st->n_offs; i++)
        if (st->offs[i].partition == partition && strcmp(st->offs[i].topic, topic) == 0) {
            *next = st->offs[i].next_offset;
            return 1;
        }
    return 0;
}

int state_want_checkpoint(const state *st) { return st->want_ckpt; }

int state_failed(const state *st, char *errstr, size_t n) {
    if (st->failed) snprintf(errstr, n, "state %s: %s", st->dir, st->err);
    return st->failed;
}

int state_fresh(const state *st) { return st->fresh; }
