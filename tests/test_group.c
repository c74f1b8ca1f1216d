/* test_group.c - the model topic (app/group.h) on the embedded broker: a worker's update
 * reaches a peer exactly, its own blobs are skipped, a corrupt blob or one of another
 * configuration is refused and changes nothing, a worker alone publishes nothing, the
 * stale-synchronous wait waits for a live peer and gives up on a silent one; under the grad
 * rule two members that train on different data end every round bit-identical. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"
#include "app/group.h"
#include "base/clock.h"
#include "config/cfg.h"
#include "engine/emb.h"
#include "engine/model.h"
#include "engine/sync.h"
#include "stream/kio.h"
#include "stream/topics.h"

static uint64_t rs = 777;
static uint32_t rnd_u32(void) {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}

static m3_model_cfg tiny_cfg(int dim) {
    m3_model_cfg c;
    m3_model_cfg_defaults(&c);
    c.arch = M3_ARCH_SHARED_BOTTOM;
    c.n_scen = 2, c.n_cat = 4, c.n_num = 2, c.emb_dim = dim, c.max_batch = 16, c.seed = 7;
    c.n_hidden = 1, c.hidden[0] = 8, c.tower_hidden = 4;
    return c;
}

static m3_model *make(int dim) {
    char err[256];
    m3_model_cfg c = tiny_cfg(dim);
    m3_model *m = m3_new(&c, err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    return m;
}

static void train(m3_model *m, int batches) {
    enum { B = 8 };
    m3_example ex[B];
    for (int b = 0; b < batches; b++) {
        for (int i = 0; i < B; i++) {
            memset(&ex[i], 0, sizeof ex[i]);
            ex[i].ts_ms = 1000000 + b * 100 + i;
            ex[i].scenario = (int32_t)(rnd_u32() % 2);
            for (int s = 0; s < 4; s++) ex[i].cat[s] = m3_feat_key(s, (int64_t)(rnd_u32() % 6));
            ex[i].num[0] = 0.5f, ex[i].num[1] = -0.25f;
            ex[i].y_click = (float)(rnd_u32() % 2);
            ex[i].w_ctr = ex[i].w_ctcvr = 1.0f;
        }
        m3_forward(m, ex, B, NULL, NULL);
        CHECK(isfinite(m3_train(m, ex)));
    }
}

static kio_mock *mock;
static topics tp;
static kio_prop props[1];

static grp *open_grp_rule(m3_model *m, int rule, int bits, int stale, int64_t wait_ms) {
    char err[512];
    m3_cfg c;
    cfg_defaults(&c);
    c.group_sync_rule = rule;
    c.group_sync_bits = bits;
    c.group_sync_every = 1;
    c.group_sync_stale = stale;
    c.group_sync_wait_ms = wait_ms;
    grp *g = grp_new(&c, props, 1, &tp, m, err, sizeof err);
    CHECK_MSG(g != NULL, "%s", err);
    return g;
}

static grp *open_grp(m3_model *m, int stale, int64_t wait_ms) {
    return open_grp_rule(m, SYNC_SUM, 32, stale, wait_ms);
}

/* A member's round on a thread of its own: grp_step waits for the other member. */
typedef struct {
    grp *g;
    int64_t version;
} step_arg;

static void *step_thread(void *p) {
    step_arg *a = p;
    grp_step(a->g, a->version, 0, 0);
    return NULL;
}

/* group.sync=grad with `bits`: a and b start from the same model, train on different data,
 * and after every round their dense parameters and Adam steps are the same bit for bit,
 * and moved. On topics of their own (prefix), so no earlier blob or snapshot is read. */
static void grad_rounds(const char *prefix, int bits) {
    char err[512];
    const char *scen[] = {"a", "b"};
    topics keep = tp;
    CHECK_MSG(topics_init(&tp, prefix, scen, 2, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(kio_mock_create_topic(mock, tp.model, 1, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(kio_mock_create_topic(mock, tp.model_snapshot, 1, err, sizeof err) == 0, "%s", err);
    m3_model *ma = make(4), *mb = make(4);
    size_t np = m3_n_params(ma);
    float *start = malloc(np * sizeof(float));
    CHECK(start != NULL);
    memcpy(start, m3_params(ma), np * sizeof(float));
    grp *a = open_grp_rule(ma, SYNC_GRAD, bits, 0, 5000), *b = open_grp_rule(mb, SYNC_GRAD, bits, 0, 5000);
    enum { ROUNDS = 6 };
    for (int r = 1; r <= ROUNDS; r++) {
        train(ma, 1);   /* different examples: the generator moves on */
        train(mb, 1);
        step_arg aa = {a, r}, ab = {b, r};
        pthread_t ta, tb;
        CHECK(pthread_create(&ta, NULL, step_thread, &aa) == 0);
        CHECK(pthread_create(&tb, NULL, step_thread, &ab) == 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        CHECK_MSG(memcmp(m3_params(ma), m3_params(mb), np * sizeof(float)) == 0,
                  "bits %d: the members' dense parameters differ after round %d", bits, r);
        CHECK_EQ_INT(m3_steps(ma), m3_steps(mb));
    }
    grp_stats sa, sb;
    grp_stats_get(a, &sa);
    grp_stats_get(b, &sb);
    CHECK_EQ_INT(sa.rounds, ROUNDS);
    CHECK_EQ_INT(sa.refused + sb.refused + sa.errors + sb.errors, 0);
    /* a round holds both members' gradients: no more steps than rounds (a leapfrog of
     * rounds, one gradient each, took twice as many) */
    CHECK_MSG(sa.grad_steps >= ROUNDS - 1 && sa.grad_steps <= ROUNDS &&
              sa.grad_steps == sb.grad_steps,
              "grad steps %llu, %llu", (unsigned long long)sa.grad_steps,
              (unsigned long long)sb.grad_steps);
    CHECK_EQ_INT(m3_steps(ma), (int64_t)sa.grad_steps);   /* the model steps only in rounds */
    CHECK_MSG(memcmp(start, m3_params(ma), np * sizeof(float)) != 0, "the model did not move");
    grp_destroy(a);
    grp_destroy(b);
    m3_destroy(ma);
    m3_destroy(mb);
    free(start);
    tp = keep;
}

/* Step g (nothing new trained) until cond holds on its stats, at most 10 s. */
#define STEP_UNTIL(g, version, cond)                                                   \
    do {                                                                               \
        grp_stats s_;                                                                  \
        int64_t until_ = clk_mono_ms() + 10000;                                        \
        for (;;) {                                                                     \
            grp_step((g), (version), 0, 0);                                               \
            grp_stats_get((g), &s_);                                                   \
            const grp_stats *st = &s_;                                                 \
            if (cond) break;                                                           \
            CHECK_MSG(clk_mono_ms() < until_, "timed out waiting for %s", #cond);      \
            struct timespec d_ = {0, 5 * 1000000L};                                    \
            nanosleep(&d_, NULL);                                                      \
        }                                                                              \
    } while (0)

static uint64_t st_idle(const grp *g) {
    grp_stats st;
    grp_stats_get(g, &st);
    return st.idle_sent;
}

static void produce_to(const char *topic, const char *key, const void *val, size_t len) {
    char err[512];
    kio_producer *p = kio_producer_new(props, 1, err, sizeof err);
    CHECK_MSG(p != NULL, "%s", err);
    CHECK_MSG(kio_produce(p, topic, key, key ? strlen(key) : 0, val, len, NULL, 0, err,
                          sizeof err) == 0, "%s", err);
    CHECK_MSG(kio_producer_flush(p, 10000, err, sizeof err) == 0, "%s", err);
    kio_producer_destroy(p);
}

static void produce(const char *key, const void *val, size_t len) {
    produce_to(tp.model, key, val, len);
}

int main(void) {
    char err[512];
    const char *scen[] = {"a", "b"};
    CHECK_MSG(topics_init(&tp, "tg", scen, 2, err, sizeof err) == 0, "%s", err);
    const char *names[] = {tp.model, tp.model_snapshot};
    mock = kio_mock_new(1, names, 2, err, sizeof err);
    CHECK_MSG(mock != NULL, "%s", err);
    props[0] = (kio_prop){"bootstrap.servers", kio_mock_bootstraps(mock)};

    m3_model *ma = make(4), *mb = make(4);
    size_t np = m3_n_params(ma);
    grp *a = open_grp(ma, -1, 2000), *b = open_grp(mb, -1, 2000);
    grp_stats sa, sb;

    /* a trains and publishes; b, which trained nothing, applies it: b's model is a's */
    train(ma, 3);
    grp_step(a, m3_steps(ma), 0, 0);
    grp_stats_get(a, &sa);
    CHECK_EQ_INT(sa.rounds, 1);
    CHECK(sa.sent_bytes > np * sizeof(float));
    STEP_UNTIL(b, 0, st->applied == 1);
    CHECK_MSG(memcmp(m3_params(ma), m3_params(mb), np * sizeof(float)) == 0,
              "b's dense parameters are not a's after applying a's update");
    /* a reads its own blob back and skips it */
    STEP_UNTIL(a, m3_steps(ma), st->own == 1);
    grp_stats_get(a, &sa);
    CHECK_EQ_INT(sa.applied, 0);

    /* a corrupt blob, one keyed by no sender id, one of another configuration: refused, and
     * b's model does not move */
    float *before = malloc(np * sizeof(float));
    CHECK(before != NULL);
    memcpy(before, m3_params(mb), np * sizeof(float));
    produce("77", "not a blob at all", 17);
    STEP_UNTIL(b, 0, st->refused == 1);
    grp_stats_get(b, &sb);
    CHECK_MSG(strstr(sb.last_refusal, "sender 77") != NULL, "%s", sb.last_refusal);
    produce(NULL, "x", 1);
    STEP_UNTIL(b, 0, st->refused == 2);
    grp_stats_get(b, &sb);
    CHECK_MSG(strstr(sb.last_refusal, "not a sender id") != NULL, "%s", sb.last_refusal);
    m3_model *other = make(8);   /* another embedding width: another configuration */
    sync_state *os = sync_new(other, 99, err, sizeof err);
    CHECK_MSG(os != NULL, "%s", err);
    train(other, 1);
    unsigned char *blob = NULL;
    size_t len = sync_extract(os, &blob, err, sizeof err);
    CHECK_MSG(len > 0, "%s", err);
    produce("99", blob, len);
    STEP_UNTIL(b, 0, st->refused == 3);
    grp_stats_get(b, &sb);
    CHECK_MSG(strstr(sb.last_refusal, "configuration") != NULL ||
              strstr(sb.last_refusal, "width") != NULL, "%s", sb.last_refusal);
    /* a good blob under another sender's key: refused too */
    produce("98", blob, len);
    STEP_UNTIL(b, 0, st->refused == 4);
    free(blob);
    sync_destroy(os);
    m3_destroy(other);
    CHECK_EQ_INT(sb.applied, 1);
    CHECK_MSG(memcmp(before, m3_params(mb), np * sizeof(float)) == 0,
              "a refused blob changed the model");

    /* alone (every input partition): trains, publishes nothing */
    train(ma, 2);
    grp_step(a, m3_steps(ma), 1, 0);
    grp_stats_get(a, &sa);
    CHECK_EQ_INT(sa.rounds, 1);
    grp_step(a, m3_steps(ma), 0, 0);   /* sharing again: nothing owed from the time alone */
    grp_stats_get(a, &sa);
    CHECK_EQ_INT(sa.rounds, 1);

    /* snapshot: a, alone, leaves its model at a revocation; a new worker starts from it */
    grp_revoked(a, 1, 0);
    grp_stats_get(a, &sa);
    CHECK_EQ_INT(sa.snapshots, 1);
    m3_model *md = make(4), *fresh = make(4);
    CHECK(memcmp(m3_params(ma), m3_params(md), np * sizeof(float)) != 0);
    grp *d = open_grp(md, -1, 2000);
    grp_stats sd;
    grp_stats_get(d, &sd);
    CHECK_EQ_INT(sd.snapshot_loaded, 1);
    CHECK_MSG(memcmp(m3_params(ma), m3_params(md), np * sizeof(float)) == 0,
              "the loaded model's dense parameters are not the snapshot's");
    emb_table *ta = m3_emb_table(ma), *td = m3_emb_table(md);
    size_t shared = 0;
    for (size_t r = 0; r < emb_rows(ta); r++) {
        uint64_t key = emb_key(ta, (int64_t)r);
        int64_t rd = emb_find(td, key);
        if ((key >> 56) == M3_SLOT_USER) {
            CHECK_MSG(rd < 0, "a user row came with the snapshot");
            continue;
        }
        CHECK_MSG(rd >= 0 && memcmp(emb_weights(ta, (int64_t)r), emb_weights(td, rd),
                                    4 * sizeof(float)) == 0, "shared row %zu differs", r);
        shared++;
    }
    CHECK(shared > 5);
    grp_destroy(d);
    m3_destroy(md);
    /* a corrupt manifest: refused with the reason, the model untouched */
    produce_to(tp.model_snapshot, "manifest", "garbage!garbage!garbage!", 24);
    m3_model *me = make(4);
    grp *e = open_grp(me, -1, 2000);
    grp_stats_get(e, &sd);
    CHECK_EQ_INT(sd.snapshot_loaded, -1);
    CHECK_MSG(strstr(sd.last_refusal, "snapshot") != NULL, "%s", sd.last_refusal);
    CHECK(memcmp(m3_params(fresh), m3_params(me), np * sizeof(float)) == 0);
    grp_destroy(e);
    m3_destroy(me);
    m3_destroy(fresh);
    grp_destroy(a);

    /* stale-synchronous (S = 0): rounds are a Lamport clock in each blob's header; after
     * its blob of round r, c waits for each live peer's blob of round r; b, silent, is
     * given up after group.sync.wait.ms */
    m3_model *mc = make(4);
    grp *c = open_grp(mc, 0, 400);
    train(mb, 1);
    grp_step(b, m3_steps(mb), 0, 0);   /* b's round 1: live for c */
    STEP_UNTIL(c, 0, st->applied == 1);
    train(mc, 1);
    double t0 = clk_mono_s();
    grp_step(c, m3_steps(mc), 0, 0);   /* c's round 2: b says nothing more */
    double waited = clk_mono_s() - t0;
    grp_stats s;
    grp_stats_get(c, &s);
    CHECK_MSG(waited >= 0.2 && waited < 5.0, "waited %.3f s for a silent peer", waited);
    CHECK_EQ_INT(s.waits, 1);
    CHECK_EQ_INT(s.gone, 1);
    CHECK_EQ_INT(s.peers_live, 0);
    /* b applies c's round 2 and answers with round 3: live again for c */
    STEP_UNTIL(b, m3_steps(mb), st->applied == 2);
    train(mb, 1);
    grp_step(b, m3_steps(mb), 0, 0);
    STEP_UNTIL(c, m3_steps(mc), st->applied == 2);
    /* b's round 4 is on its way when c publishes its round 4: the wait ends with it */
    train(mb, 1);
    grp_step(b, m3_steps(mb), 0, 0);
    train(mc, 1);
    t0 = clk_mono_s();
    grp_step(c, m3_steps(mc), 0, 0);
    waited = clk_mono_s() - t0;
    grp_stats_get(c, &s);
    CHECK_MSG(waited < 0.3, "waited %.3f s for a blob on its way", waited);
    CHECK_EQ_INT(s.gone, 1);
    CHECK_EQ_INT(s.applied, 3);
    CHECK(s.stale_batches_sum >= 0 && s.stale_ms_max < 10000);
    /* S = -1 (b) never waits: b's round 5 with c silent returns at once */
    train(mb, 1);
    t0 = clk_mono_s();
    grp_step(b, m3_steps(mb), 0, 0);
    CHECK_MSG(clk_mono_s() - t0 < 0.3, "an asynchronous worker waited %.3f s", clk_mono_s() - t0);
    /* a peer that says it is idle (a blob-less message) is not waited for */
    STEP_UNTIL(c, m3_steps(mc), st->applied == 4);   /* b's round 5: live for c */
    grp_stats sb2;
    grp_stats_get(b, &sb2);
    char bkey[16];
    snprintf(bkey, sizeof bkey, "%u", sb2.sender);
    kio_producer *ip = kio_producer_new(props, 1, err, sizeof err);
    CHECK_MSG(ip != NULL, "%s", err);
    const char *ih[] = {"m3rec.round", "5", "m3rec.idle", "1"};
    CHECK_MSG(kio_produce(ip, tp.model, bkey, strlen(bkey), "", 0, ih, 2, err, sizeof err) == 0 &&
              kio_producer_flush(ip, 10000, err, sizeof err) == 0, "%s", err);
    kio_producer_destroy(ip);
    grp_stats_get(c, &s);
    uint64_t idle_got = s.idle_received, gone = s.gone, waits = s.waits;
    STEP_UNTIL(c, m3_steps(mc), st->idle_received > idle_got && st->peers_live == 0);
    train(mc, 1);
    uint64_t idle_before = st_idle(b);
    t0 = clk_mono_s();
    grp_step(c, m3_steps(mc), 0, 0);   /* c's next round: b said it is idle */
    waited = clk_mono_s() - t0;
    grp_stats_get(c, &s);
    CHECK_MSG(waited < 0.3, "waited %.3f s for an idle peer", waited);
    CHECK_MSG(s.refused == 1, "%s", s.last_refusal);   /* the corrupt snapshot at start only */
    CHECK_EQ_INT(s.gone, gone);
    CHECK_EQ_INT(s.waits, waits);
    /* and b, with no minibatch while c is a round ahead, says so once per round of its own */
    STEP_UNTIL(b, m3_steps(mb), st->idle_sent == idle_before + 1);
    uint64_t idle_then = idle_before + 1;
    struct timespec pause = {0, 200 * 1000000L};
    nanosleep(&pause, NULL);
    grp_step(b, m3_steps(mb), 0, 0);
    CHECK_EQ_INT(st_idle(b), idle_then);

    grp_destroy(b);
    grp_destroy(c);
    grad_rounds("tgg", 32);
    grad_rounds("tgh", 16);
    free(before);
    m3_destroy(ma);
    m3_destroy(mb);
    m3_destroy(mc);
    kio_mock_destroy(mock);
    printf("test_group: ok\n");
    return 0;
}
