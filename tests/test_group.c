/* test_group.c - the model topic (app/group.h) on the embedded broker: a worker's update
 * reaches a peer exactly, its own blobs are skipped, a corrupt blob or one of another
 * configuration is refused and changes nothing, a worker alone publishes nothing, the
 * stale-synchronous wait waits for a live peer and gives up on a silent one; under the grad
 * rule two members that train on different data end every round bit-identical, a member
 * that joins from a snapshot taken in the middle of a round is bit-identical to them after
 * every later round (the snapshot carries Adam's state and the round), a silent member is
 * given up at one place of the topic by every member (itself included); a snapshot of
 * format 1 still loads (without Adam's state), one of an unknown format is refused. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"
#include "app/group.h"
#include "base/clock.h"
#include "base/hash.h"
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

/* Fresh topics under prefix (no earlier blob or snapshot is read); returns the old ones. */
static topics fresh_topics(const char *prefix) {
    char err[512];
    const char *scen[] = {"a", "b"};
    topics keep = tp;
    CHECK_MSG(topics_init(&tp, prefix, scen, 2, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(kio_mock_create_topic(mock, tp.model, 1, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(kio_mock_create_topic(mock, tp.model_snapshot, 1, err, sizeof err) == 0, "%s", err);
    return keep;
}

/* group.sync=grad with `bits`: a and b start from the same model, train on different data,
 * and after every round their dense parameters and Adam steps are the same bit for bit,
 * and moved. On topics of their own (prefix), so no earlier blob or snapshot is read. */
static void grad_rounds(const char *prefix, int bits) {
    topics keep = fresh_topics(prefix);
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
    /* each took the other's gradients (a first blob that waited for librdkafka's topic
     * scan, up to a second, left every round to one member's gradient) */
    CHECK_MSG(sa.applied >= ROUNDS - 1 && sb.applied >= ROUNDS - 1, "applied %llu and %llu "
              "of the other's %d blobs", (unsigned long long)sa.applied,
              (unsigned long long)sb.applied, ROUNDS);
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
            (void)st;                                                                  \
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

/* A grad member: its transport, model and training steps (grp_step's version). */
typedef struct {
    grp *g;
    m3_model *m;
    int64_t v;
} member;

/* One round: each of the n members trains a minibatch (different data) and steps, on
 * threads of their own (each waits for the others' blobs). */
static void round_of(member *ms, int n) {
    pthread_t t[4];
    step_arg a[4];
    for (int i = 0; i < n; i++) {
        train(ms[i].m, 1);
        a[i] = (step_arg){ms[i].g, ++ms[i].v};
        CHECK(pthread_create(&t[i], NULL, step_thread, &a[i]) == 0);
    }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

/* Members 1..n-1 hold member 0's dense parameters and Adam step, bit for bit. */
static void check_same(const member *ms, int n, const char *what, int r) {
    size_t np = m3_n_params(ms[0].m);
    for (int i = 1; i < n; i++) {
        CHECK_MSG(memcmp(m3_params(ms[0].m), m3_params(ms[i].m), np * sizeof(float)) == 0,
                  "%s: member %d's dense parameters differ from member 0's after round %d",
                  what, i, r);
        CHECK_EQ_INT(m3_steps(ms[i].m), m3_steps(ms[0].m));
    }
}

/* grad with `bits`: a and b share K rounds; b's blob of the next round is in when a
 * (the owner of partition 0) writes a snapshot at a revocation; c starts from it (a
 * joiner, or a restarted worker: a new sender either way) and, after a's blob ends that
 * round, a, b and c hold the same dense parameters and Adam step after every round. */
static void grad_joiner(const char *prefix, int bits) {
    enum { K = 3, R = 4 };
    topics keep = fresh_topics(prefix);
    member ms[3] = {{NULL, make(4), 0}, {NULL, make(4), 0}, {NULL, make(4), 0}};
    ms[0].g = open_grp_rule(ms[0].m, SYNC_GRAD, bits, 0, 5000);
    ms[1].g = open_grp_rule(ms[1].m, SYNC_GRAD, bits, 0, 5000);
    for (int r = 1; r <= K; r++) {
        round_of(ms, 2);
        check_same(ms, 2, "two members", r);
    }
    train(ms[1].m, 1);
    step_arg ab = {ms[1].g, ++ms[1].v};
    pthread_t tb;
    CHECK(pthread_create(&tb, NULL, step_thread, &ab) == 0);   /* b waits for a's blob */
    STEP_UNTIL(ms[0].g, ms[0].v, st->applied == K + 1);      /* b's is in a's round */
    grp_revoked(ms[0].g, 0, 1);
    ms[2].g = open_grp_rule(ms[2].m, SYNC_GRAD, bits, 0, 5000);
    grp_stats sc;
    grp_stats_get(ms[2].g, &sc);
    CHECK_EQ_INT(sc.snapshot_loaded, 1);
    CHECK_EQ_INT(sc.snapshot_format, 2);
    train(ms[0].m, 1);
    grp_step(ms[0].g, ++ms[0].v, 0, 0);   /* a's blob: the round ends */
    pthread_join(tb, NULL);
    STEP_UNTIL(ms[2].g, 0, m3_steps(ms[2].m) == m3_steps(ms[0].m));
    check_same(ms, 3, "a joiner in the round of its snapshot", K + 1);
    for (int r = K + 2; r <= K + 1 + R; r++) {
        round_of(ms, 3);
        check_same(ms, 3, bits == 16 ? "a joiner from a snapshot (16 bits)" :
                   "a joiner from a snapshot", r);
    }
    for (int i = 0; i < 3; i++) {
        grp_stats st;
        grp_stats_get(ms[i].g, &st);
        CHECK_MSG(st.refused + st.errors == 0, "member %d: %s", i, st.last_refusal);
        grp_destroy(ms[i].g);
        m3_destroy(ms[i].m);
    }
    tp = keep;
}

/* grad: c stops training after two rounds; a and b wait for it, one of them publishes
 * that it is given up, and every member - c too, which was not waiting - applies that at
 * the same place of the topic: all three step the same rounds and stay identical, and c's
 * next blob makes it a member again. */
static void grad_give_up(const char *prefix) {
    topics keep = fresh_topics(prefix);
    member ms[3];
    for (int i = 0; i < 3; i++) {
        ms[i].m = make(4);
        ms[i].v = 0;
        ms[i].g = open_grp_rule(ms[i].m, SYNC_GRAD, 32, 0, 1500);
    }
    round_of(ms, 3);
    round_of(ms, 3);
    check_same(ms, 3, "three members", 2);
    round_of(ms, 2);   /* c silent */
    grp_stats sa, sb, sc;
    grp_stats_get(ms[0].g, &sa);
    grp_stats_get(ms[1].g, &sb);
    /* once each (more only if the loaded machine kept a live member silent as long: every
     * member still counts the same give-ups, at the same places) */
    CHECK_MSG(sa.gone >= 1 && sa.gone == sb.gone, "gave up %llu and %llu times",
              (unsigned long long)sa.gone, (unsigned long long)sb.gone);
    CHECK_EQ_INT(sa.grad_steps, sb.grad_steps);
    STEP_UNTIL(ms[2].g, ms[2].v, st->grad_steps == sa.grad_steps);
    check_same(ms, 3, "a member given up", 3);
    round_of(ms, 3);   /* c's blob: a member again */
    check_same(ms, 3, "a member back", 4);
    grp_stats_get(ms[0].g, &sa);
    grp_stats_get(ms[2].g, &sc);
    CHECK(sa.gone >= 1 && sc.gone >= 1);
    STEP_UNTIL(ms[0].g, ms[0].v, st->peers_live == 2);   /* c's blob read: a member again */
    for (int i = 0; i < 3; i++) {
        grp_destroy(ms[i].g);
        m3_destroy(ms[i].m);
    }
    tp = keep;
}

/* grad: a worker alone (no sync point, its model steps by itself) writes a snapshot at a
 * revocation; a worker that starts from it holds its dense parameters and Adam step, and
 * takes the snapshot's group state without an error (no round in it). */
static void grad_alone_snapshot(const char *prefix) {
    topics keep = fresh_topics(prefix);
    m3_model *ma = make(4), *mc = make(4);
    grp *a = open_grp_rule(ma, SYNC_GRAD, 32, 0, 2000);
    grp_step(a, 1, 1, 0);   /* alone */
    train(ma, 2);
    grp_step(a, 2, 1, 0);
    CHECK_EQ_INT(m3_steps(ma), 2);
    grp_revoked(a, 1, 0);
    grp *c = open_grp_rule(mc, SYNC_GRAD, 32, 0, 2000);
    grp_stats st;
    grp_stats_get(c, &st);
    CHECK_EQ_INT(st.snapshot_loaded, 1);
    CHECK_EQ_INT(st.snapshot_format, 2);
    CHECK_MSG(st.errors == 0, "%llu errors taking the alone writer's snapshot",
              (unsigned long long)st.errors);
    CHECK_EQ_INT(m3_steps(mc), 2);
    CHECK(memcmp(m3_params(ma), m3_params(mc), m3_n_params(ma) * sizeof(float)) == 0);
    grp_destroy(a);
    grp_destroy(c);
    m3_destroy(ma);
    m3_destroy(mc);
    tp = keep;
}

/* A format-1 snapshot payload (the dense parameters alone, no rows) of m with `version`
 * in its header, as shard 0 and a manifest on the snapshot topic. */
static void put_snapshot_v1(m3_model *m, uint32_t version) {
    size_t np = m3_n_params(m), n = 72 + np * 4 + 8;
    unsigned char *b = malloc(16 + n);
    CHECK(b != NULL);
    unsigned char *p = b + 16;
    uint32_t u32[2] = {0x4e53334dU, version};
    uint64_t hash = m3_cfg_hash(m), n_params = np, rows = 0, seq = 0, id = 42;
    uint32_t dw[2] = {4, 0}, wr[2] = {5, 0};
    int64_t off = -1, ms = clk_real_ms();
    memcpy(p, u32, 8);
    memcpy(p + 8, &hash, 8);
    memcpy(p + 16, &n_params, 8);
    memcpy(p + 24, dw, 8);
    memcpy(p + 32, &rows, 8);
    memcpy(p + 40, &off, 8);
    memcpy(p + 48, wr, 8);
    memcpy(p + 56, &seq, 8);
    memcpy(p + 64, &ms, 8);
    memcpy(p + 72, m3_params(m), np * 4);
    uint64_t sum = hash_fnv64(HASH_FNV64_INIT, p, 72 + np * 4);
    memcpy(p + 72 + np * 4, &sum, 8);
    uint32_t sh[2] = {0x5353334dU, 0}, man[2] = {0x4d53334dU, 1};
    memcpy(b, sh, 8);
    memcpy(b + 8, &id, 8);
    produce_to(tp.model_snapshot, "shard.0", b, 16 + n);
    unsigned char mf[24];
    uint64_t total = n;
    memcpy(mf, man, 8);
    memcpy(mf + 8, &id, 8);
    memcpy(mf + 16, &total, 8);
    produce_to(tp.model_snapshot, "manifest", mf, sizeof mf);
    free(b);
}

/* The snapshot's format versions: 1 loads (the parameters, no Adam state: the step stays
 * the loader's), 2 is what is written, 3 is refused with the reason. */
static void snapshot_formats(const char *prefix) {
    topics keep = fresh_topics(prefix);
    m3_model *mx = make(4), *md = make(4), *me = make(4);
    size_t np = m3_n_params(mx);
    train(mx, 3);
    put_snapshot_v1(mx, 1);
    grp *d = open_grp(md, -1, 2000);
    grp_stats st;
    grp_stats_get(d, &st);
    CHECK_EQ_INT(st.snapshot_loaded, 1);
    CHECK_EQ_INT(st.snapshot_format, 1);
    CHECK(memcmp(m3_params(mx), m3_params(md), np * sizeof(float)) == 0);
    CHECK_EQ_INT(m3_steps(md), 0);   /* Adam's step is not in format 1 */
    grp_destroy(d);
    put_snapshot_v1(mx, 3);
    grp *e = open_grp(me, -1, 2000);
    grp_stats_get(e, &st);
    CHECK_EQ_INT(st.snapshot_loaded, -1);
    CHECK_MSG(strstr(st.last_refusal, "format version 3") != NULL, "%s", st.last_refusal);
    CHECK(memcmp(m3_params(mx), m3_params(me), np * sizeof(float)) != 0);
    grp_destroy(e);
    m3_destroy(mx);
    m3_destroy(md);
    m3_destroy(me);
    tp = keep;
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
    grad_joiner("tgj", 32);
    grad_joiner("tgk", 16);
    grad_give_up("tgl");
    grad_alone_snapshot("tgn");
    snapshot_formats("tgm");
    free(before);
    m3_destroy(ma);
    m3_destroy(mb);
    m3_destroy(mc);
    kio_mock_destroy(mock);
    printf("test_group: ok\n");
    return 0;
}
