/* test_sync.c - one model across a group (engine/sync.h): an update's round trip is exact,
 * the merge rules give the expected parameters, user rows never leave the worker, a bad
 * blob is refused with its reason and changes nothing; m3rec-offline --group 1 is the
 * single learner bit for bit, and --group 2 with the chosen rule stays near one learner. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "proc.h"
#include "base/clock.h"
#include "base/hash.h"
#include "engine/emb.h"
#include "engine/model.h"
#include "engine/sync.h"

#define OFFLINE M3_BINARY_DIR "/m3rec-offline"

static uint64_t rs = 12345;
static uint32_t rnd_u32(void) {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}
static float rnd_f(void) { return (float)(rnd_u32() & 0xffffff) / 16777216.0f; }

/* A tiny m3rec model (MIEG, UPT, experts): every kind of parameter and row. */
static m3_model_cfg tiny_cfg(void) {
    m3_model_cfg c;
    m3_model_cfg_defaults(&c);
    c.arch = M3_ARCH_M3REC;
    c.n_scen = 2, c.n_cat = 4, c.n_num = 3, c.emb_dim = 4, c.max_batch = 16, c.seed = 7;
    c.n_hidden = 2, c.hidden[0] = 8, c.hidden[1] = 6, c.tower_hidden = 5;
    /* the item's fields for MIEG: slot 3 and numerics 1..2 */
    c.item_cat_from = 3, c.item_cat_n = 1, c.item_num_from = 1, c.item_num_n = 2;
    c.mieg_hidden = 6, c.item_warm = 3, c.upt_heads = 2, c.upt_ffn = 5;
    c.lr_dense = 0.01f, c.lr_emb = 0.05f;
    return c;
}

static m3_model *make(const m3_model_cfg *c) {
    char err[256];
    m3_model *m = m3_new(c, err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    return m;
}

/* A few minibatches of random examples; users from user_base on (disjoint shares). */
static int64_t train_t = 1000000;   /* the examples' event time */
static void train(m3_model *m, int batches, int user_base) {
    enum { B = 12 };
    m3_example ex[B];
    for (int b = 0; b < batches; b++) {
        int64_t t = train_t += 1000;
        for (int i = 0; i < B; i++) {
            memset(&ex[i], 0, sizeof ex[i]);
            ex[i].ts_ms = t + i;
            ex[i].scenario = (int32_t)(rnd_u32() % 2);
            ex[i].cat[M3_SLOT_USER] = m3_feat_key(M3_SLOT_USER, user_base + (int)(rnd_u32() % 5));
            for (int s = 1; s < 4; s++) ex[i].cat[s] = m3_feat_key(s, (int64_t)(rnd_u32() % 6));
            for (int k = 0; k < 3; k++) ex[i].num[k] = 2.0f * rnd_f() - 1.0f;
            ex[i].y_click = (float)(rnd_u32() % 2);
            ex[i].y_conv = ex[i].y_click * (float)(rnd_u32() % 2);
            ex[i].w_ctr = ex[i].w_ctcvr = 1.0f;
        }
        m3_forward(m, ex, B, NULL, NULL);
        CHECK(isfinite(m3_train(m, ex)));
    }
}

/* Every shared row of a that b holds has a's weights exactly; returns how many b holds. */
static size_t same_rows(m3_model *a, m3_model *b) {
    emb_table *ta = m3_emb_table(a), *tb = m3_emb_table(b);
    size_t held = 0;
    for (size_t r = 0; r < emb_rows(ta); r++) {
        uint64_t key = emb_key(ta, (int64_t)r);
        int64_t rb = emb_find(tb, key);
        if ((key >> 56) == M3_SLOT_USER) {
            CHECK_MSG(rb < 0, "user row %llx reached the receiver", (unsigned long long)key);
            continue;
        }
        if (rb < 0) continue;   /* never stepped on a: not in an update */
        held++;
        CHECK_MSG(memcmp(emb_weights(ta, (int64_t)r), emb_weights(tb, rb), 4 * sizeof(float)) == 0,
                  "row %llx differs", (unsigned long long)key);
    }
    return held;
}

static void test_round_trip(void) {
    m3_model_cfg c = tiny_cfg();
    m3_model *a = make(&c), *b = make(&c);
    char err[256];
    sync_state *s = sync_new(a, 3, err, sizeof err);
    CHECK_MSG(s != NULL, "%s", err);
    size_t np = m3_n_params(a);
    for (int round = 0; round < 3; round++) {
        train(a, 5 + round * 20, 0);
        unsigned char *blob;
        size_t len = sync_extract(s, &blob, err, sizeof err);
        CHECK_MSG(len > 0, "%s", err);
        sync_info in;
        CHECK_EQ_INT(sync_check(b, blob, len, &in, err, sizeof err), 0);
        CHECK_EQ_INT(in.sender, 3);
        CHECK_EQ_INT(in.seq, round);
        CHECK_EQ_INT(in.model_version, m3_steps(a));
        CHECK(in.n_rows > 0);
        CHECK_EQ_INT(sync_apply(b, NULL, blob, len, (sync_weight){1, 1}, err, sizeof err), 0);
        free(blob);
        CHECK_MSG(memcmp(m3_params(a), m3_params(b), np * sizeof(float)) == 0,
                  "round %d: dense parameters differ after apply(extract)", round);
        CHECK(same_rows(a, b) > 10);
    }
    /* nothing trained since the last sync point: an empty update changes nothing */
    unsigned char *blob;
    size_t len = sync_extract(s, &blob, err, sizeof err);
    CHECK(len > 0);
    sync_info in;
    CHECK_EQ_INT(sync_check(b, blob, len, &in, err, sizeof err), 0);
    CHECK_EQ_INT(in.n_rows, 0);
    free(blob);
    sync_destroy(s);
    m3_destroy(a);
    m3_destroy(b);
}

/* The rules on two workers from one start: a trains on users 0.., c on users 100.. */
static void test_rules(int rule) {
    m3_model_cfg cfg = tiny_cfg();
    m3_model *a = make(&cfg), *c = make(&cfg), *a0 = make(&cfg);
    char err[256];
    sync_state *sa = sync_new(a, 0, err, sizeof err), *sc = sync_new(c, 1, err, sizeof err);
    CHECK(sa && sc);
    train(a, 8, 0);
    train(c, 8, 100);
    size_t np = m3_n_params(a);
    float *pa = malloc(np * sizeof *pa), *pc = malloc(np * sizeof *pc);
    memcpy(pa, m3_params(a), np * sizeof *pa);
    memcpy(pc, m3_params(c), np * sizeof *pc);
    const float *p0 = m3_params(a0);
    float ra_w[4], rc_w[4];   /* the shared row (field 2, value 1) on each, before the round */
    int64_t r = emb_find(m3_emb_table(a), m3_feat_key(2, 1));
    CHECK(r >= 0);
    memcpy(ra_w, emb_weights(m3_emb_table(a), r), sizeof ra_w);
    r = emb_find(m3_emb_table(c), m3_feat_key(2, 1));
    CHECK(r >= 0);
    memcpy(rc_w, emb_weights(m3_emb_table(c), r), sizeof rc_w);
    unsigned char *ba, *bc;
    size_t la = sync_extract(sa, &ba, err, sizeof err), lc = sync_extract(sc, &bc, err, sizeof err);
    CHECK(la > 0 && lc > 0);
    sync_weight wp, wo;
    sync_rule_weights(rule, 2, &wp, &wo);
    CHECK_EQ_INT(sync_apply(a, sa, bc, lc, wp, err, sizeof err), 0);
    CHECK_EQ_INT(sync_apply(c, sc, ba, la, wp, err, sizeof err), 0);
    if (wo.dense != 0.0f || wo.rows != 0.0f) {
        CHECK_EQ_INT(sync_apply(a, sa, ba, la, wo, err, sizeof err), 0);
        CHECK_EQ_INT(sync_apply(c, sc, bc, lc, wo, err, sizeof err), 0);
    }
    for (size_t j = 0; j < np; j++) {
        double da = (double)pa[j] - p0[j], dc = (double)pc[j] - p0[j];
        double want = rule == SYNC_SUM ? p0[j] + da + dc : p0[j] + 0.5 * (da + dc);   /* mixed: avg */
        CHECK_CLOSE(m3_params(a)[j], want, 1e-5, 1e-6);
        CHECK_CLOSE(m3_params(c)[j], want, 1e-5, 1e-6);
    }
    /* a shared row both trained: the same on both, the mean (avg) or the sum (sum, mixed)
     * of the two updates */
    emb_table *ta = m3_emb_table(a), *tc = m3_emb_table(c), *t0 = m3_emb_table(a0);
    uint64_t key = m3_feat_key(2, 1);
    int64_t ra = emb_find(ta, key), rc = emb_find(tc, key), r0 = emb_lookup(t0, key);
    CHECK(ra >= 0 && rc >= 0);
    for (int j = 0; j < 4; j++) {
        double w0 = emb_weights(t0, r0)[j], da = ra_w[j] - w0, dc = rc_w[j] - w0;
        double want = rule == SYNC_AVG ? w0 + 0.5 * (da + dc) : w0 + da + dc;
        CHECK_CLOSE(emb_weights(ta, ra)[j], want, 1e-5, 1e-6);
        CHECK_CLOSE(emb_weights(tc, rc)[j], want, 1e-5, 1e-6);
    }
    /* after the round the models are the sync points: the next update is empty of rows */
    unsigned char *e;
    size_t le = sync_extract(sa, &e, err, sizeof err);
    sync_info in;
    CHECK_EQ_INT(sync_check(a, e, le, &in, err, sizeof err), 0);
    CHECK_EQ_INT(in.n_rows, 0);
    free(e);
    free(ba); free(bc); free(pa); free(pc);
    sync_destroy(sa); sync_destroy(sc);
    m3_destroy(a); m3_destroy(c); m3_destroy(a0);
}

/* A blob's rows: none keyed by a user id, though the sender trained user rows. */
static void test_no_user_rows(void) {
    m3_model_cfg c = tiny_cfg();
    m3_model *a = make(&c);
    char err[256];
    sync_state *s = sync_new(a, 0, err, sizeof err);
    train(a, 6, 0);
    int user_rows = 0;
    emb_table *t = m3_emb_table(a);
    for (size_t r = 0; r < emb_rows(t); r++) user_rows += (emb_key(t, (int64_t)r) >> 56) == 0;
    CHECK(user_rows > 0);
    unsigned char *b;
    size_t len = sync_extract(s, &b, err, sizeof err);
    uint64_t np, nr;   /* header: n_params at 48, n_rows at 56, 80 bytes */
    memcpy(&np, b + 48, 8);
    memcpy(&nr, b + 56, 8);
    CHECK(nr > 0);
    for (uint64_t r = 0; r < nr; r++) {
        uint64_t key;
        memcpy(&key, b + 80 + np * 4 + r * (8 + 16 + 4), 8);
        CHECK_MSG((key >> 56) != M3_SLOT_USER, "row %llu is a user's", (unsigned long long)r);
    }
    CHECK(len > 80);
    free(b);
    sync_destroy(s);
    m3_destroy(a);
}

/* Refuse blob (len) with a reason containing `why`; the model is unchanged. */
static void refused(m3_model *m, const unsigned char *blob, size_t len, const char *why) {
    size_t np = m3_n_params(m);
    float *keep = malloc(np * sizeof *keep);
    memcpy(keep, m3_params(m), np * sizeof *keep);
    size_t rows = m3_emb_rows(m);
    char err[256] = "";
    CHECK_EQ_INT(sync_apply(m, NULL, blob, len, (sync_weight){1, 1}, err, sizeof err), -1);
    CHECK_MSG(strstr(err, why) != NULL, "reason \"%s\" lacks \"%s\"", err, why);
    CHECK(memcmp(keep, m3_params(m), np * sizeof *keep) == 0);
    CHECK_EQ_INT(m3_emb_rows(m), rows);
    free(keep);
}

/* Rewrite a blob's checksum after an edit (a well-formed blob with a bad field). */
static void reseal(unsigned char *b, size_t len) {
    uint64_t sum = sync_checksum(b, len - 8);
    memcpy(b + len - 8, &sum, 8);
}

static void test_refusals(void) {
    m3_model_cfg c = tiny_cfg(), other = tiny_cfg();
    other.hidden[1] = 7;
    m3_model *a = make(&c), *b = make(&c), *x = make(&other);
    char err[256];
    sync_state *s = sync_new(a, 0, err, sizeof err);
    train(a, 6, 0);
    train(b, 2, 50);
    unsigned char *blob;
    size_t len = sync_extract(s, &blob, err, sizeof err);
    unsigned char *bad = malloc(len);
    memcpy(bad, blob, len);
    bad[len / 2] ^= 0x10;
    refused(b, bad, len, "checksum");
    refused(b, blob, len - 4, "header says");
    refused(b, blob, 10, "bytes");
    refused(x, blob, len, "configuration");
    memcpy(bad, blob, len);
    bad[4] = 9;   /* format version */
    reseal(bad, len);
    refused(b, bad, len, "format version 9");
    bad[4] = 1;   /* format 1: rows without their counters */
    reseal(bad, len);
    refused(b, bad, len, "format version 1");
    memcpy(bad, blob, len);
    bad[0] = 'X';
    reseal(bad, len);
    refused(b, bad, len, "magic");
    memcpy(bad, blob, len);
    uint64_t np, user = m3_feat_key(M3_SLOT_USER, 4);
    memcpy(&np, blob + 48, 8);
    memcpy(bad + 80 + np * 4, &user, 8);   /* the first row made a user's */
    reseal(bad, len);
    refused(b, bad, len, "user id");
    memcpy(bad, blob, len);
    float inf = INFINITY;
    memcpy(bad + 80, &inf, 4);
    reseal(bad, len);
    refused(b, bad, len, "non-finite");
    CHECK_EQ_INT(sync_apply(b, NULL, blob, len, (sync_weight){1, 1}, err, sizeof err), 0);   /* the good one */
    free(bad);
    free(blob);
    sync_destroy(s);
    m3_destroy(a); m3_destroy(b); m3_destroy(x);
}

/* The item counters travel: a receiver's counter of each item in a blob grows by the
 * sender's impressions of it; a peer's counts are never sent back, and a worker's own blob
 * applied to itself adds nothing. */
static void test_counters(void) {
    m3_model_cfg c = tiny_cfg();
    m3_model *a = make(&c), *b = make(&c);
    char err[256];
    sync_state *sa = sync_new(a, 0, err, sizeof err), *sb = sync_new(b, 1, err, sizeof err);
    CHECK(sa && sb);
    train(b, 3, 100);
    unsigned char *blob, *back, *own;
    size_t len = sync_extract(sb, &blob, err, sizeof err);   /* b's own start, set aside */
    free(blob);
    train(a, 7, 0);   /* 84 impressions over 6 items */
    emb_table *ta = m3_emb_table(a), *tb = m3_emb_table(b);
    uint32_t ca[6], cb[6];
    for (int v = 0; v < 6; v++) {
        int64_t ra = emb_find(ta, m3_feat_key(M3_SLOT_ITEM, v)), rb = emb_find(tb, m3_feat_key(M3_SLOT_ITEM, v));
        CHECK(ra >= 0);
        ca[v] = *emb_count(ta, ra);
        cb[v] = rb >= 0 ? *emb_count(tb, rb) : 0;
    }
    len = sync_extract(sa, &blob, err, sizeof err);
    CHECK_MSG(len > 0, "%s", err);
    CHECK_EQ_INT(sync_apply(a, sa, blob, len, (sync_weight){1, 1}, err, sizeof err), 0);
    CHECK_EQ_INT(sync_apply(b, sb, blob, len, (sync_weight){1, 1}, err, sizeof err), 0);
    for (int v = 0; v < 6; v++) {
        int64_t ra = emb_find(ta, m3_feat_key(M3_SLOT_ITEM, v)), rb = emb_find(tb, m3_feat_key(M3_SLOT_ITEM, v));
        CHECK(rb >= 0);
        CHECK_EQ_INT(*emb_count(ta, ra), ca[v]);   /* own blob: no double count */
        CHECK_MSG(*emb_count(tb, rb) == cb[v] + ca[v], "item %d: b counts %u, want %u + %u", v,
                  *emb_count(tb, rb), cb[v], ca[v]);
    }
    /* b trains on, its next blob carries only its own impressions */
    train(b, 2, 100);
    size_t lb = sync_extract(sb, &back, err, sizeof err);
    m3_model *z = make(&c);   /* a fresh receiver: its counters are the blob's deltas */
    CHECK_EQ_INT(sync_apply(z, NULL, back, lb, (sync_weight){1, 1}, err, sizeof err), 0);
    uint32_t total = 0;
    for (int v = 0; v < 6; v++) {
        int64_t rz = emb_find(m3_emb_table(z), m3_feat_key(M3_SLOT_ITEM, v));
        total += rz >= 0 ? *emb_count(m3_emb_table(z), rz) : 0;
    }
    CHECK_EQ_INT(total, 24);   /* 2 minibatches of 12 */
    size_t lo = sync_extract(sa, &own, err, sizeof err);
    CHECK(lo > 0);
    free(blob); free(back); free(own);
    sync_destroy(sa); sync_destroy(sb);
    m3_destroy(a); m3_destroy(b); m3_destroy(z);
}

/* The grad rule: two workers from one start train on their own users, exchange their
 * gradients and step: their dense parameters and versions are the same bit for bit
 * (one Adam step on the mean of the 8 + 5 minibatches' gradients), unlike `sum`'s; a
 * gradient blob is refused by a worker applying deltas, and the other way round. */
static void test_grad_rule(void) {
    m3_model_cfg cfg = tiny_cfg();
    m3_model *a = make(&cfg), *c = make(&cfg), *x = make(&cfg);
    char err[256];
    sync_state *sa = sync_new(a, 0, err, sizeof err), *sc = sync_new(c, 1, err, sizeof err);
    sync_state *sx = sync_new(x, 2, err, sizeof err);
    CHECK(sa && sc && sx);
    CHECK_EQ_INT(sync_set_grad(sa, 1, err, sizeof err), 0);
    CHECK_EQ_INT(sync_set_grad(sc, 1, err, sizeof err), 0);
    size_t np = m3_n_params(a);
    float *p0 = malloc(np * sizeof *p0);
    memcpy(p0, m3_params(a), np * sizeof *p0);
    train(a, 8, 0);
    train(c, 5, 100);
    train(x, 1, 200);
    CHECK_EQ_INT(m3_steps(a), 0);   /* no step of its own under the grad rule */
    CHECK(memcmp(p0, m3_params(a), np * sizeof *p0) == 0);
    CHECK_EQ_INT(sync_batches(sa), 8);
    unsigned char *ba, *bc, *bx;
    size_t la = sync_extract(sa, &ba, err, sizeof err), lc = sync_extract(sc, &bc, err, sizeof err);
    size_t lx = sync_extract(sx, &bx, err, sizeof err);
    sync_info in;
    CHECK_EQ_INT(sync_check(a, ba, la, &in, err, sizeof err), 0);
    CHECK(in.grad == 1 && in.batches == 8);
    sync_weight wp, wo;
    sync_rule_weights(SYNC_GRAD, 2, &wp, &wo);
    CHECK_EQ_INT(sync_apply(a, sa, ba, la, wo, err, sizeof err), 0);
    CHECK_EQ_INT(sync_apply(a, sa, bc, lc, wp, err, sizeof err), 0);
    CHECK_EQ_INT(sync_apply(c, sc, ba, la, wp, err, sizeof err), 0);
    CHECK_EQ_INT(sync_apply(c, sc, bc, lc, wo, err, sizeof err), 0);
    CHECK(sync_step(sa) == 1 && sync_step(sc) == 1);
    CHECK(sync_step(sa) == 0);   /* nothing more to step on */
    CHECK(m3_steps(a) == 1 && m3_steps(c) == 1);
    CHECK_MSG(memcmp(m3_params(a), m3_params(c), np * sizeof *p0) == 0,
              "the grad rule left the workers' dense parameters different");
    CHECK(memcmp(p0, m3_params(a), np * sizeof *p0) != 0);
    /* a mixed group is refused, each way, and changes nothing */
    char why[256] = "";
    CHECK_EQ_INT(sync_apply(x, sx, ba, la, wp, why, sizeof why), -1);
    CHECK_MSG(strstr(why, "different rules") != NULL, "%s", why);
    CHECK_EQ_INT(sync_apply(a, sa, bx, lx, wp, why, sizeof why), -1);
    CHECK_MSG(strstr(why, "different rules") != NULL, "%s", why);
    CHECK_EQ_INT(sync_step(sa), 0);
    free(ba); free(bc); free(bx); free(p0);
    sync_destroy(sa); sync_destroy(sc); sync_destroy(sx);
    m3_destroy(a); m3_destroy(c); m3_destroy(x);
}

/* The grad rule's round being gathered travels as bytes (a snapshot taken between two
 * steps): a member that loads another's round takes the same step from the same dense
 * state; bytes of another size, a non-finite value or a member not in grad mode are
 * refused and change nothing. */
static void test_round_state(void) {
    m3_model_cfg cfg = tiny_cfg();
    m3_model *a = make(&cfg), *c = make(&cfg);
    char err[256];
    sync_state *sa = sync_new(a, 0, err, sizeof err), *sc = sync_new(c, 1, err, sizeof err);
    CHECK(sa && sc && !sync_set_grad(sa, 1, err, sizeof err));
    CHECK_EQ_INT(sync_round_save(sc, NULL), 0);   /* not in grad mode: no round */
    train(a, 3, 0);
    unsigned char *ba;
    size_t la = sync_extract(sa, &ba, err, sizeof err);
    sync_weight wp, wo;
    sync_rule_weights(SYNC_GRAD, 2, &wp, &wo);
    CHECK_EQ_INT(sync_apply(a, sa, ba, la, wo, err, sizeof err), 0);
    size_t n = sync_round_save(sa, NULL), np = m3_n_params(a);
    CHECK_EQ_INT(n, 16 + np * sizeof(float));
    unsigned char *r = malloc(n);
    CHECK(r && sync_round_save(sa, r) == n);
    char why[256] = "";
    CHECK_EQ_INT(sync_round_load(sc, r, n, why, sizeof why), -1);
    CHECK_MSG(strstr(why, "grad rule") != NULL, "%s", why);
    CHECK(!sync_set_grad(sc, 1, err, sizeof err));
    CHECK_EQ_INT(sync_round_load(sc, r, n - 4, why, sizeof why), -1);
    float inf = INFINITY;
    unsigned char *bad = malloc(n);
    memcpy(bad, r, n);
    memcpy(bad + 16 + 4 * (np / 2), &inf, 4);
    CHECK_EQ_INT(sync_round_load(sc, bad, n, why, sizeof why), -1);
    CHECK_MSG(strstr(why, "finite") != NULL, "%s", why);
    CHECK_EQ_INT(sync_step(sc), 0);   /* the refused loads put nothing in */
    CHECK_EQ_INT(sync_round_load(sc, r, n, err, sizeof err), 0);
    CHECK(sync_step(sa) == 1 && sync_step(sc) == 1);
    CHECK_MSG(memcmp(m3_params(a), m3_params(c), np * sizeof(float)) == 0,
              "a loaded round stepped differently");
    free(r); free(bad); free(ba);
    sync_destroy(sa); sync_destroy(sc);
    m3_destroy(a); m3_destroy(c);
}

/* --sync.bits 16: the grad rule's gradient in bfloat16 - 2 bytes a value, both workers
 * still the same after the step, and what the rounding dropped goes out with the next
 * blob (error feedback); the bfloat16 flag on a delta blob is refused. */
static void test_bf16(void) {
    m3_model_cfg cfg = tiny_cfg();
    m3_model *a = make(&cfg), *c = make(&cfg), *ref = make(&cfg);
    char err[256];
    sync_state *sa = sync_new(a, 0, err, sizeof err), *sc = sync_new(c, 1, err, sizeof err);
    sync_state *sr = sync_new(ref, 2, err, sizeof err);
    CHECK(sa && sc && sr);
    CHECK(!sync_set_grad(sa, 1, err, sizeof err) && !sync_set_grad(sc, 1, err, sizeof err));
    CHECK(!sync_set_bf16(sa, 1, err, sizeof err) && !sync_set_bf16(sc, 1, err, sizeof err));
    size_t np = m3_n_params(a);
    for (int round = 0; round < 2; round++) {
        train(a, 3, 0);
        train(c, 2, 100);
        unsigned char *ba, *bc;
        size_t la = sync_extract(sa, &ba, err, sizeof err), lc = sync_extract(sc, &bc, err, sizeof err);
        sync_info in;
        CHECK_EQ_INT(sync_check(c, ba, la, &in, err, sizeof err), 0);
        CHECK(in.grad == 1 && in.dense_bytes == 2);
        CHECK_EQ_INT(la, 80 + np * 2 + in.n_rows * (8 + 16 + 4) + in.n_exc * 8 + 8);
        for (int k = 0; k < 2; k++) {   /* a then c into both, in sender order */
            m3_model *m = k ? c : a;
            sync_state *s = k ? sc : sa;
            CHECK_EQ_INT(sync_apply(m, s, ba, la, (sync_weight){1, k ? 1.0f : 0.0f}, err, sizeof err), 0);
            CHECK_EQ_INT(sync_apply(m, s, bc, lc, (sync_weight){1, k ? 0.0f : 1.0f}, err, sizeof err), 0);
            CHECK(sync_step(s) == 1);
        }
        CHECK_MSG(memcmp(m3_params(a), m3_params(c), np * sizeof(float)) == 0,
                  "round %d: bfloat16 left the workers different", round);
        if (round == 0) {   /* the same flag on a delta blob: refused */
            unsigned char *bd;
            size_t ld = sync_extract(sr, &bd, err, sizeof err);
            uint32_t flags = 2;
            memcpy(bd + 44, &flags, 4);   /* header: flags at 44 */
            reseal(bd, ld);
            refused(ref, bd, ld, "flags");
            free(bd);
        }
        free(ba); free(bc);
    }
    sync_destroy(sr); sync_destroy(sa); sync_destroy(sc);
    m3_destroy(a); m3_destroy(c); m3_destroy(ref);
}

/* The float at a blob's dense value j (width w). */
static double dense_value(const unsigned char *b, size_t j, int w) {
    uint32_t u = 0;
    float x;
    if (w == 2) {
        uint16_t h;
        memcpy(&h, b + 80 + j * 2, 2);
        u = (uint32_t)h << 16;
    } else {
        memcpy(&u, b + 80 + j * 4, 4);
    }
    memcpy(&x, &u, 4);
    return x;
}

/* Error feedback: two models fed the same minibatches under the grad rule (no step is taken,
 * so they stay the same), one sending floats, one bfloat16. Over 8 rounds the bfloat16
 * sums stay within one rounding of the float sums (the residual carries the rest), clearly
 * closer than rounding each round's gradient alone would be. */
static void test_error_feedback(void) {
    m3_model_cfg cfg = tiny_cfg();
    m3_model *f = make(&cfg), *h = make(&cfg);
    char err[256];
    sync_state *sf = sync_new(f, 0, err, sizeof err), *sh = sync_new(h, 1, err, sizeof err);
    CHECK(sf && sh && !sync_set_grad(sf, 1, err, sizeof err) && !sync_set_grad(sh, 1, err, sizeof err));
    CHECK_EQ_INT(sync_set_bf16(sh, 1, err, sizeof err), 0);
    size_t np = m3_n_params(f);
    double *tf = calloc(np, sizeof *tf), *th = calloc(np, sizeof *th), *tr = calloc(np, sizeof *tr);
    for (int round = 0; round < 8; round++) {
        uint64_t seed = rs;
        int64_t t0 = train_t;
        train(f, 2, 0);
        rs = seed, train_t = t0;
        train(h, 2, 0);
        unsigned char *bf, *bh;
        size_t lf = sync_extract(sf, &bf, err, sizeof err), lh = sync_extract(sh, &bh, err, sizeof err);
        CHECK(lf > 0 && lh > 0 && lh < lf);
        for (size_t j = 0; j < np; j++) {
            double g = dense_value(bf, j, 4);
            tf[j] += g;
            th[j] += dense_value(bh, j, 2);
            float gf = (float)g;
            uint32_t u;
            memcpy(&u, &gf, 4);
            u = ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) << 16;   /* g alone in bfloat16 */
            memcpy(&gf, &u, 4);
            tr[j] += gf;
        }
        free(bf);
        free(bh);
    }
    double e_fb = 0, e_round = 0;
    for (size_t j = 0; j < np; j++) {
        e_fb += fabs(th[j] - tf[j]);
        e_round += fabs(tr[j] - tf[j]);
    }
    fprintf(stderr, "bfloat16 over 8 rounds: |error| %.3g with feedback, %.3g without\n", e_fb, e_round);
    CHECK(e_round > 0);
    CHECK_MSG(e_fb < 0.6 * e_round, "error feedback: %.3g, not clearly below %.3g", e_fb, e_round);
    free(tf); free(th); free(tr);
    sync_destroy(sf); sync_destroy(sh);
    m3_destroy(f); m3_destroy(h);
}

/* sync_set_stale_lr: a round whose gradient was computed one step back moves the dense
 * parameters half as far as the same round without the option (Adam's state is the same
 * either way: only the step size differs). */
static void test_stale_lr(void) {
    m3_model_cfg cfg = tiny_cfg();
    m3_model *m[2] = { make(&cfg), make(&cfg) };
    sync_state *s[2];
    char err[256];
    size_t np = m3_n_params(m[0]);
    float *before[2];
    uint64_t seed = rs;
    int64_t t0 = train_t;
    for (int k = 0; k < 2; k++) {
        s[k] = sync_new(m[k], 0, err, sizeof err);
        CHECK(s[k] && !sync_set_grad(s[k], 1, err, sizeof err));
        sync_set_stale_lr(s[k], k == 0);
        rs = seed, train_t = t0;
        unsigned char *old, *fresh;
        train(m[k], 2, 0);
        size_t lo = sync_extract(s[k], &old, err, sizeof err);   /* computed at version 0 */
        train(m[k], 2, 0);
        size_t lf = sync_extract(s[k], &fresh, err, sizeof err);
        CHECK_EQ_INT(sync_apply(m[k], s[k], fresh, lf, (sync_weight){1, 0}, err, sizeof err), 0);
        CHECK(sync_step(s[k]) == 1);   /* version 1 */
        before[k] = malloc(np * sizeof(float));
        memcpy(before[k], m3_params(m[k]), np * sizeof(float));
        CHECK_EQ_INT(sync_apply(m[k], s[k], old, lo, (sync_weight){1, 0}, err, sizeof err), 0);
        CHECK(sync_step(s[k]) == 1);   /* one step stale */
        free(old);
        free(fresh);
    }
    CHECK(memcmp(before[0], before[1], np * sizeof(float)) == 0);   /* the fresh round: same */
    double moved = 0;
    for (size_t j = 0; j < np; j++) {
        double d0 = (double)m3_params(m[0])[j] - before[0][j], d1 = (double)m3_params(m[1])[j] - before[1][j];
        moved += fabs(d1);
        CHECK_CLOSE(d0, 0.5 * d1, 1e-3, 1e-7);
    }
    CHECK(moved > 0);
    for (int k = 0; k < 2; k++) {
        free(before[k]);
        sync_destroy(s[k]);
        m3_destroy(m[k]);
    }
}

static char dir[] = "/tmp/m3_test_sync_XXXXXX";

/* m3rec-offline with args into dir/name.json; the report's text. The deadline only bounds a
 * hang: a group of 4 under the sanitizers on a loaded machine takes minutes. */
static char *offline(const char *name, char *const *args) {
    char report[512], out[512], errp[512];
    snprintf(report, sizeof report, "%s/%s.json", dir, name);
    snprintf(out, sizeof out, "%s/%s.out", dir, name);
    snprintf(errp, sizeof errp, "%s/%s.err", dir, name);
    char *argv[32] = { OFFLINE, "--quiet", "--report", report };
    int n = 4;
    while (*args) argv[n++] = *args++;
    argv[n] = NULL;
    CHECK_EQ_INT(proc_wait(proc_spawn(argv, out, errp), clk_mono_ms() + 300000, name), 0);
    char *text = proc_read_file(report, NULL);
    CHECK(text != NULL);
    return text;
}

/* The text of a report between two top-level keys. */
static char *between(const char *text, const char *from, const char *to) {
    const char *a = strstr(text, from), *b = a ? strstr(a, to) : NULL;
    CHECK_MSG(a && b, "no %s .. %s in the report", from, to);
    return strndup(a, (size_t)(b - a));
}

/* The primary's overall AUC of a task in a report's text ("ctr" or "ctcvr"). */
static double overall_auc(const char *text, const char *task) {
    char key[32];
    const char *o = strstr(text, "\"overall\"");
    snprintf(key, sizeof key, "\"%s\"", task);
    const char *t = o ? strstr(o, key) : NULL, *a = t ? strstr(t, "\"auc\"") : NULL;
    CHECK(a != NULL);
    return strtod(a + 6, NULL);
}

static void test_offline_group(void) {
    CHECK(mkdtemp(dir) != NULL);
    char *one = offline("one", (char *[]){ "--events", "30000", NULL });
    char *g1 = offline("g1", (char *[]){ "--events", "30000", "--group", "1", NULL });
    const char *keys[][2] = { {"\"counters\"", "\"primary\""}, {"\"models\"", "\"config\""} };
    for (int k = 0; k < 2; k++) {
        char *x = between(one, keys[k][0], keys[k][1]), *y = between(g1, keys[k][0], keys[k][1]);
        CHECK_MSG(strcmp(x, y) == 0, "--group 1 differs from one learner in %s", keys[k][0]);
        free(x);
        free(y);
    }
    /* quality: the chosen rule (the default: grad, a stale round's step divided, every
     * minibatch; the group's minibatch split: 128 each of 2, 64 each of 4) stays near one learner, for a group of 2 with its
     * blobs applied at once and for a group of 4 one round late. The tolerance, 0.01, is
     * about two standard errors of these short streams' AUCs; the group without the shared
     * model loses 0.02 and more here, and `sum`, the rule before, loses 0.017 CTR and 0.039
     * CTCVR in the group of 4 one round late (measured on this stream). */
    char *big1 = offline("big1", (char *[]){ "--events", "60000", NULL });
    char *g2 = offline("g2", (char *[]){ "--events", "60000", "--group", "2", "--set",
                                         "batch.size=128", NULL });
    char *g2d = offline("g4d1", (char *[]){ "--events", "60000", "--group", "4", "--sync.delay",
                                            "1", "--set", "batch.size=64", NULL });
    CHECK(strstr(g2, "\"rule\": \"grad\"") != NULL || strstr(g2, "\"rule\":\"grad\"") != NULL);
    for (int t = 0; t < 4; t++) {
        const char *task = t % 2 ? "ctcvr" : "ctr";
        double a = overall_auc(big1, task), b = overall_auc(t < 2 ? g2 : g2d, task);
        fprintf(stderr, "%s AUC: one learner %.4f, group of %d (delay %d) %.4f\n", task, a,
                t < 2 ? 2 : 4, t / 2, b);
        CHECK_MSG(b > a - 0.01, "%s: group of %d (delay %d) %.4f more than 0.01 below one "
                  "learner %.4f", task, t < 2 ? 2 : 4, t / 2, b, a);
    }
    free(one); free(g1); free(big1); free(g2); free(g2d);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

int main(void) {
    test_round_trip();
    test_rules(SYNC_SUM);
    test_rules(SYNC_AVG);
    test_rules(SYNC_MIXED);
    test_no_user_rows();
    test_refusals();
    test_counters();
    test_grad_rule();
    test_round_state();
    test_bf16();
    test_error_feedback();
    test_stale_lr();
    test_offline_group();
    return 0;
}
