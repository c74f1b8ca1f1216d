/* test_state.c - durable learner state without Kafka: the simulator's stream into the
 * learner with a store behind it, checkpoints at minibatch boundaries with the stream
 * position as the offset.
 *
 * Checks: a run that loses everything since its last checkpoint at random points and
 * resumes from the stored position ends with exactly the state of a run that never
 * stopped (every family of both stores compared byte for byte), also with a memory budget
 * far below the state (eviction and loading back change nothing) and with frequency
 * admission and expiry on; counters say every impression was trained once; the pending
 * join survives restarts; admission and expiry do what they say; a store of another
 * configuration and a store already open are refused with a clear message. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fsutil.h"
#include "proc.h"
#include "storecmp.h"
#include "engine/emb.h"
#include "stream/learner.h"
#include "engine/model.h"
#include "eval/sim.h"
#include "state/state.h"
#include "engine/users.h"

#define EVENTS 24000

static char tmp_root[512];

static void fresh_dir(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmp_root, name);
    rm_rf(out);
}

static void set(m3_cfg *c, const char *kv) {
    char err[256];
    CHECK_MSG(cfg_set(c, kv, "test", 0, err, sizeof err) == 0, "%s", err);
}

/* The test configuration: small batches, a short attribution window so the pending join
 * expires entries within the stream, extra settings in `more` (NULL-terminated). */
static void make_cfg(m3_cfg *c, const char *dir, const char *const *more) {
    cfg_defaults(c);
    set(c, "batch.size=64");
    set(c, "model.shadow=");
    set(c, "model.hidden=32,16");
    set(c, "join.window.ms=60000");
    set(c, "join.lateness.ms=0");
    set(c, "checkpoint.sync=false");
    set(c, "store.block_cache_mb=4");
    set(c, "store.write_buffer_mb=4");
    char kv[600];
    snprintf(kv, sizeof kv, "store.dir=%s", dir);
    set(c, kv);
    for (int i = 0; more && more[i]; i++) set(c, more[i]);
    char err[256];
    CHECK_MSG(cfg_check(c, err, sizeof err) == 0, "%s", err);
}

static sim *make_sim(void) {
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    sc.seed = 11;
    sc.n_impressions = EVENTS;
    sc.n_users = 3000;
    sc.n_items = 1500;
    sc.requests_per_1k = 5;
    char err[256];
    sim *s = sim_new(&sc, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    return s;
}

typedef struct {
    m3_cfg cfg;
    lrn *L;
    state *st;
    int64_t pos;          /* simulator events handled */
    int64_t ckpt_pos;     /* pos of the last checkpoint */
    int checkpoints, crashes, resumes;
} runner;

static void open_runner(runner *r, const char *dir, const char *const *more) {
    char err[1024];
    make_cfg(&r->cfg, dir, more);
    r->L = lrn_new(&r->cfg, err, sizeof err);
    CHECK_MSG(r->L, "%s", err);
    r->st = state_open(&r->cfg, r->L, "sim", err, sizeof err);
    CHECK_MSG(r->st, "%s", err);
    int64_t next = 0;
    if (state_offset_get(r->st, "sim", 0, &next)) r->resumes++;
    r->pos = r->ckpt_pos = next;
}

static void checkpoint(runner *r) {
    char err[1024];
    CHECK(lrn_at_boundary(r->L));
    state_offset o = {"sim", 0, r->pos};
    CHECK_MSG(state_checkpoint(r->st, &o, 1, err, sizeof err) == 0, "%s", err);
    r->ckpt_pos = r->pos;
    r->checkpoints++;
}

static void close_runner(runner *r) {
    char err[512];
    CHECK_MSG(!state_failed(r->st, err, sizeof err), "%s", err);
    CHECK_MSG(state_close(r->st, err, sizeof err) == 0, "%s", err);
    lrn_destroy(r->L);
    cfg_free(&r->cfg);
    r->st = NULL;
    r->L = NULL;
}

/* Feed the stream from r->pos up to event `stop` (or its end), checkpointing at the first
 * boundary after every `every` events and whenever the memory budget asks. Returns 1 when
 * the stream ended (then the last batch is flushed and checkpointed). */
static int feed(runner *r, int64_t stop, int every) {
    sim *s = make_sim();
    m3_event ev;
    sim_truth tr;
    char reason[256], err[512];
    int64_t i = 0;
    for (; i < r->pos; i++) CHECK(sim_next(s, &ev, &tr));   /* skip what the state holds */
    int ended = 1;
    while (sim_next(s, &ev, &tr)) {
        if (r->pos >= stop) {
            ended = 0;
            break;
        }
        met_board_counters(lrn_board(r->L))->events++;
        int rc = 0;
        if (ev.type == M3_EV_IMPRESSION)
            rc = lrn_impression(r->L, &ev.u.imp, 0, 0, NULL, NULL, reason, sizeof reason);
        else if (ev.type == M3_EV_CONVERSION)
            rc = lrn_conversion(r->L, &ev.u.conv, 0, NULL, NULL, reason, sizeof reason);
        else
            rc = lrn_request(r->L, &ev.u.req, 0, NULL, NULL, reason, sizeof reason);
        CHECK_MSG(rc == 0, "%s", reason);
        r->pos++;
        CHECK_MSG(!state_failed(r->st, err, sizeof err), "%s", err);
        if (lrn_at_boundary(r->L) &&
            (r->pos - r->ckpt_pos >= every || state_want_checkpoint(r->st)))
            checkpoint(r);
    }
    if (ended) {
        lrn_run_batch(r->L, NULL, NULL);
        checkpoint(r);
    }
    sim_destroy(s);
    return ended;
}

/* ---- comparing two stores ---- */

/* Rows (embedding or user) last seen before *dead_before are expired: not compared. */
static int live_row(void *ud, int cf, const void *key, size_t klen, const void *val,
                    size_t vlen) {
    (void)key; (void)klen;
    int64_t dead_before = *(const int64_t *)ud, seen;
    if ((cf != STORE_EMB && cf != STORE_USER) || dead_before == INT64_MIN) return 1;
    memcpy(&seen, (const char *)val + vlen - 8, 8);
    return seen >= dead_before;
}


/* The stream clock of a closed store's meta "stream" record. */
static int64_t stored_clock(store *s) {
    void *v;
    size_t n;
    char err[256];
    CHECK(store_get(s, STORE_META, "stream", 6, &v, &n, err, sizeof err) == 1);
    int64_t clk;
    memcpy(&clk, v, 8);
    free(v);
    return clk;
}

/* Every family of two closed stores holds the same keys and values (meta too: the dense
 * blob, the learner's counters and clocks, the offset), expired rows aside. */
static void compare_stores(const char *a, const char *b, int64_t expire_ms) {
    char err[512];
    store *sa = storecmp_open(a), *sb = storecmp_open(b);
    int64_t ca = stored_clock(sa), cb = stored_clock(sb);
    CHECK_EQ_INT(ca, cb);
    int64_t dead = expire_ms > 0 ? ca - expire_ms : INT64_MIN;
    storecmp(sa, sb, "test_state", live_row, &dead);
    store_close(sa, 0, err, sizeof err);
    store_close(sb, 0, err, sizeof err);
}

/* ---- tests ---- */

static unsigned rng_state;
static unsigned rnd(void) {
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* The reference: one run, never interrupted, no memory budget. */
static void run_reference(const char *dir, const char *const *more) {
    runner r = {0};
    open_runner(&r, dir, more);
    CHECK(state_fresh(r.st));
    CHECK(feed(&r, INT64_MAX, 5000));
    lrn *L = r.L;
    /* every impression trained exactly once, every CTCVR label settled or pending */
    CHECK_EQ_INT(lrn_trained_ctr(L), EVENTS);
    CHECK_EQ_INT(lrn_trained_ctcvr(L) + lrn_pending(L), EVENTS);
    long pending = (long)lrn_pending(L);
    close_runner(&r);
    /* the store holds exactly what is pending: nothing released is left behind */
    CHECK_EQ_INT(storecmp_pending(dir), pending);
}

/* Crash (lose everything since the last checkpoint) at random points, resume each time. */
static runner run_crashing(const char *dir, const char *const *more, int crashes, int every) {
    runner r = {0};
    open_runner(&r, dir, more);
    int64_t stops[16];
    for (int k = 0; k < crashes; k++) stops[k] = 1000 + rnd() % (EVENTS - 2000);
    for (int k = 0; k < crashes; k++)   /* ascending: each crash after the resume point */
        for (int j = k + 1; j < crashes; j++)
            if (stops[j] < stops[k]) { int64_t t = stops[k]; stops[k] = stops[j]; stops[j] = t; }
    int ended = 0;
    for (int k = 0; k < crashes && !ended; k++) {
        if (stops[k] <= r.pos) continue;
        if ((ended = feed(&r, stops[k], every))) break;
        /* the crash: the in-memory state since the last checkpoint is gone */
        CHECK(r.pos > r.ckpt_pos || r.pos == stops[k]);
        r.crashes++;
        char err[512];
        int64_t lost = r.pos - r.ckpt_pos;
        state_stats ss;
        state_stats_get(r.st, &ss);
        CHECK_MSG(state_close(r.st, err, sizeof err) == 0, "%s", err);
        lrn_destroy(r.L);
        cfg_free(&r.cfg);
        fprintf(stderr, "test_state: crash at event %lld, %lld since the checkpoint lost "
                "(%llu evicted, %llu loaded so far)\n", (long long)r.pos, (long long)lost,
                (unsigned long long)(ss.emb_evicted + ss.user_evicted),
                (unsigned long long)(ss.emb_loads + ss.user_loads));
        int resumes = r.resumes, had = r.checkpoints > 0;
        int64_t at = r.ckpt_pos;
        open_runner(&r, dir, more);
        /* back to the last checkpoint; a crash before the first one starts afresh */
        CHECK_EQ_INT(r.resumes, resumes + had);
        CHECK_EQ_INT(state_fresh(r.st), !had);
        CHECK_EQ_INT(r.pos, had ? at : 0);
    }
    if (!ended) CHECK(feed(&r, INT64_MAX, every));
    CHECK_EQ_INT(lrn_trained_ctr(r.L), EVENTS);
    CHECK_EQ_INT(lrn_trained_ctcvr(r.L) + lrn_pending(r.L), EVENTS);
    CHECK_EQ_INT(met_board_counters(lrn_board(r.L))->impressions, EVENTS);
    return r;
}

static void test_exact_resume(void) {
    char ref[600], run[600];
    fresh_dir(ref, sizeof ref, "ref");
    fresh_dir(run, sizeof run, "crash");
    static const char *const same[] = {NULL};
    run_reference(ref, same);
    runner r = run_crashing(run, same, 5, 3000);
    CHECK(r.crashes >= 3);
    state_stats ss;
    state_stats_get(r.st, &ss);
    CHECK(ss.pending_restored > 0);   /* the last resume found clicked impressions waiting */
    close_runner(&r);
    compare_stores(ref, run, 0);
}

/* A budget far below the state: evictions and loads, forced checkpoints, the same model. */
static void test_budget_exact(void) {
    char ref[600], run[600];
    fresh_dir(ref, sizeof ref, "ref-admit");
    fresh_dir(run, sizeof run, "budget");
    static const char *const unbounded[] = {"emb.admit.count=3", "emb.expire.ms=60000",
                                            "store.memory.max_mb=0", NULL};
    static const char *const small[] = {"emb.admit.count=3", "emb.expire.ms=60000",
                                        "store.memory.max_mb=3", NULL};
    run_reference(ref, unbounded);
    runner r = run_crashing(run, small, 4, 4000);
    state_stats ss;
    state_stats_get(r.st, &ss);
    fprintf(stderr, "test_state: budget 3 MB: %llu checkpoints (%llu forced), %llu+%llu evicted, "
            "%llu+%llu loaded, %llu+%llu expired, %llu fallback uses, tables %.2f MB\n",
            (unsigned long long)ss.checkpoints, (unsigned long long)ss.forced,
            (unsigned long long)ss.emb_evicted, (unsigned long long)ss.user_evicted,
            (unsigned long long)ss.emb_loads, (unsigned long long)ss.user_loads,
            (unsigned long long)ss.emb_expired, (unsigned long long)ss.user_expired,
            (unsigned long long)ss.fallback_uses, (double)ss.mem_bytes / 1048576.0);
    CHECK(ss.emb_evicted > 0 && ss.user_evicted > 0);
    CHECK(ss.emb_loads > 0 && ss.user_loads > 0);
    CHECK(ss.emb_expired > 0);
    CHECK(ss.fallback_uses > 0);
    CHECK(ss.mem_bytes <= ss.budget_bytes);
    close_runner(&r);
    compare_stores(ref, run, 60000);
}

/* ---- admission, expiry, refusals, with hand-made impressions ---- */

#define T0 1767225600000LL

static void feed_imp(lrn *L, const char *id, int64_t ts, int64_t user, int64_t item) {
    m3_impression im;
    memset(&im, 0, sizeof im);
    snprintf(im.impression_id, sizeof im.impression_id, "%s", id);
    snprintf(im.scenario, sizeof im.scenario, "home");
    im.ts_ms = ts;
    im.user_id = user;
    im.item_id = item;
    char reason[256];
    CHECK_MSG(lrn_impression(L, &im, 0, 0, NULL, NULL, reason, sizeof reason) == 0, "%s", reason);
    lrn_run_batch(L, NULL, NULL);
}

static void test_admission(void) {
    char dir[600];
    fresh_dir(dir, sizeof dir, "admit");
    static const char *const more[] = {"emb.admit.count=3", NULL};
    runner r = {0};
    open_runner(&r, dir, more);
    m3_model *m = lrn_model(r.L, 0);
    emb_table *e = m3_emb_table(m);
    users_table *u = m3_user_table(m);
    uint64_t user = m3_feat_key(M3_SLOT_USER, 42), item = m3_feat_key(M3_SLOT_ITEM, 7);
    uint64_t fb = m3_feat_key(M3_SLOT_USER, INT64_MIN + 1);
    feed_imp(r.L, "i1", T0, 42, 7);
    feed_imp(r.L, "i2", T0 + 1, 42, 8);
    /* seen twice: served by the user slot's fallback row, state kept under its key */
    CHECK_EQ_INT(emb_find(e, user), -1);
    CHECK(emb_find(e, fb) >= 0);
    CHECK_EQ_INT(users_find(u, user), -1);
    CHECK(users_find(u, fb) >= 0);
    CHECK(emb_find(e, item) >= 0);   /* the item slot: MIEG serves young items, no fallback */
    feed_imp(r.L, "i3", T0 + 2, 42, 9);   /* the third sighting admits the id */
    CHECK(emb_find(e, user) >= 0);
    CHECK(users_find(u, user) >= 0);
    CHECK_EQ_INT(users_cnt(u, users_find(u, user))[0], 1);
    state_stats ss;
    state_stats_get(r.st, &ss);
    CHECK(ss.fallback_uses >= 2);
    /* the sketch is part of the checkpoint: a restart still knows the count */
    feed_imp(r.L, "i4", T0 + 3, 43, 9);
    feed_imp(r.L, "i5", T0 + 4, 43, 9);
    checkpoint(&r);
    close_runner(&r);
    open_runner(&r, dir, more);
    e = m3_emb_table(lrn_model(r.L, 0));
    feed_imp(r.L, "i6", T0 + 5, 43, 9);   /* user 43's third sighting, after the restart */
    CHECK(emb_find(e, m3_feat_key(M3_SLOT_USER, 43)) >= 0);
    close_runner(&r);
}

static void test_expiry(void) {
    char dir[600];
    fresh_dir(dir, sizeof dir, "expire");
    static const char *const more[] = {"emb.expire.ms=60000", NULL};
    runner r = {0};
    open_runner(&r, dir, more);
    m3_model *m = lrn_model(r.L, 0);
    users_table *u = m3_user_table(m);
    emb_table *e = m3_emb_table(m);
    uint64_t user = m3_feat_key(M3_SLOT_USER, 42), item = m3_feat_key(M3_SLOT_ITEM, 7);
    feed_imp(r.L, "a1", T0, 42, 7);
    feed_imp(r.L, "a2", T0 + 1000, 42, 7);
    CHECK_EQ_INT(users_cnt(u, users_find(u, user))[0], 2);
    CHECK_EQ_INT(*emb_count(e, emb_find(e, item)), 2);
    feed_imp(r.L, "v1", T0 + 2000, 99, 5);   /* user 99: never seen again */
    checkpoint(&r);
    /* 59 s later user 42 is still known; 61 s after that it starts fresh */
    feed_imp(r.L, "b1", T0 + 60000, 50, 6);
    feed_imp(r.L, "a3", T0 + 60500, 42, 7);
    CHECK_EQ_INT(users_cnt(u, users_find(u, user))[0], 3);
    feed_imp(r.L, "b2", T0 + 122000, 50, 6);
    feed_imp(r.L, "b3", T0 + 122100, 50, 6);   /* confirms b2's jump: the clock moves */
    feed_imp(r.L, "a4", T0 + 122500, 42, 7);
    CHECK_EQ_INT(users_cnt(u, users_find(u, user))[0], 1);
    CHECK_EQ_INT(*emb_count(e, emb_find(e, item)), 1);
    state_stats ss;
    state_stats_get(r.st, &ss);
    CHECK(ss.user_expired >= 1 && ss.emb_expired >= 1);
    /* a checkpoint drops what expired: user 99 is gone from memory and from the store */
    CHECK(users_find(u, m3_feat_key(M3_SLOT_USER, 99)) >= 0);
    checkpoint(&r);
    CHECK_EQ_INT(users_find(u, m3_feat_key(M3_SLOT_USER, 99)), -1);
    close_runner(&r);
    char err[512];
    store *s = storecmp_open(dir);
    void *v;
    size_t n;
    unsigned char k[8];
    store_key_from_u64(k, m3_feat_key(M3_SLOT_USER, 99));
    CHECK_EQ_INT(store_get(s, STORE_USER, k, 8, &v, &n, err, sizeof err), 0);
    store_key_from_u64(k, m3_feat_key(M3_SLOT_USER, 42));
    CHECK_EQ_INT(store_get(s, STORE_USER, k, 8, &v, &n, err, sizeof err), 1);
    free(v);
    store_close(s, 0, err, sizeof err);
}

/* Opening the state in dir with the settings `more` (NULL-terminated) and the inputs
 * `inputs` is refused, with a message that contains `want`. */
static void check_refused(const char *dir, const char *const *more, const char *inputs,
                          const char *want) {
    char err[1024];
    m3_cfg c;
    make_cfg(&c, dir, more);
    lrn *L = lrn_new(&c, err, sizeof err);
    CHECK(state_open(&c, L, inputs, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, want);
    lrn_destroy(L);
    cfg_free(&c);
}

static void test_refusals(void) {
    char dir[600];
    fresh_dir(dir, sizeof dir, "refuse");
    runner r = {0};
    open_runner(&r, dir, NULL);
    feed_imp(r.L, "x", T0, 1, 2);
    checkpoint(&r);
    /* the same directory again, in this process */
    check_refused(dir, NULL, "sim", "already open in this process");
    close_runner(&r);
    /* another feature layout: the configuration record says which */
    static const char *const feat[] = {"features.ctx_cat=hour", NULL};
    check_refused(dir, feat, "sim", "holds the state of another configuration: it has "
                                    "features.ctx_cat=device, this worker has features.ctx_cat=hour");
    /* other inputs */
    check_refused(dir, NULL, "other", "it has inputs=sim, this worker has inputs=other");
    /* the same record but other dense dimensions: the blob refuses */
    static const char *const wide[] = {"model.hidden=64,16", NULL};
    check_refused(dir, wide, "sim", "its dense parameters do not fit this configuration (model blob: "
                                    "hidden[0] is 32, this model has 64)");
    /* and after all that, the original configuration still resumes */
    runner r2 = {0};
    open_runner(&r2, dir, NULL);
    CHECK(!state_fresh(r2.st));
    CHECK_EQ_INT(lrn_trained_ctr(r2.L), 1);
    close_runner(&r2);
}

/* ---- the guard ---- */

static int params_finite(m3_model *m) {
    const float *p = m3_debug_params(m);
    for (size_t k = 0; k < m3_n_params(m); k++)
        if (!isfinite(p[k])) return 0;
    return 1;
}

static void poison(m3_model *m) {
    for (size_t k = 0; k < m3_n_params(m); k++) m3_debug_params(m)[k] = NAN;
}

/* A poisoned model is never checkpointed: the checkpoint (or the learner's next step)
 * rolls it back to the last checkpoint's blob, memory and store stay equal, and a restart
 * resumes from that good state and scores the rest of the stream normally. */
static void test_poison(void) {
    char dir[600];
    fresh_dir(dir, sizeof dir, "poison");
    runner r = {0};
    open_runner(&r, dir, NULL);
    CHECK(!feed(&r, 3000, 1000));
    lrn_run_batch(r.L, NULL, NULL);
    checkpoint(&r);
    m3_model *m = lrn_model(r.L, 0);
    size_t n = m3_n_params(m) * sizeof(float);
    float *good = malloc(n);
    memcpy(good, m3_debug_params(m), n);
    /* poisoned at a boundary, then checkpointed: the stored blob stays the good one */
    poison(m);
    checkpoint(&r);
    CHECK(params_finite(m));
    CHECK(!memcmp(good, m3_debug_params(m), n));
    state_stats ss;
    state_stats_get(r.st, &ss);
    CHECK_EQ_INT(ss.ckpt_rollbacks, 1);
    /* poisoned between checkpoints: the learner's next step rolls back to the store's blob */
    poison(m);
    CHECK(!feed(&r, 3500, 100000));
    CHECK(params_finite(m));
    met_guard *g = met_board_guard(lrn_board(r.L), 0);
    CHECK_EQ_INT(g->rollbacks, 2);
    CHECK(g->skipped_steps >= 1);
    lrn_run_batch(r.L, NULL, NULL);
    checkpoint(&r);
    uint64_t skipped = g->skipped_steps, withheld = g->nonfinite_predictions;
    CHECK(withheld >= 1);   /* the poisoned model's scores of that batch */
    close_runner(&r);
    /* the restart: good parameters, the guard's counters, the rest of the stream */
    runner r2 = {0};
    open_runner(&r2, dir, NULL);
    m = lrn_model(r2.L, 0);
    CHECK(params_finite(m));
    g = met_board_guard(lrn_board(r2.L), 0);
    CHECK_EQ_INT(g->rollbacks, 2);
    CHECK_EQ_INT(g->skipped_steps, skipped);
    CHECK_EQ_INT(g->nonfinite_predictions, withheld);
    CHECK(feed(&r2, INT64_MAX, 5000));
    CHECK(params_finite(m));
    CHECK_EQ_INT(g->skipped_steps, skipped);   /* a clean stream: no step refused */
    CHECK_EQ_INT(g->nonfinite_predictions, withheld);
    const met_auc *a = met_board_auc(lrn_board(r2.L), 0, -1, MET_CTR);
    CHECK_EQ_INT(a->n_nan, 0);   /* nothing scored NaN after the restart */
    free(good);
    close_runner(&r2);
}

int main(void) {
    fs_scratch_dir(tmp_root, sizeof tmp_root, "test_state");
    rng_state = proc_seed("test_state");
    test_admission();
    test_expiry();
    test_refusals();
    test_poison();
    test_exact_resume();
    test_budget_exact();
    rm_rf(tmp_root);
    return 0;
}
