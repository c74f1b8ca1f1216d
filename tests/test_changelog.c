/* test_changelog.c - the changelog's records (group.changelog) and the pending join's
 * clear, without a broker (it_group runs the whole protocol on a real one).
 *
 * Checks: every kind of record encodes and decodes back; a corrupt record, one of another
 * configuration, another format version, another magic, a short one, a kind that does not
 * match its key, a tombstone of a user state and malformed keys are refused with the
 * reason; pend_clear empties a join and its late ring, keeps the watermark, and reports its
 * stored entries (only those) for deletion at the next sync; through the embedded broker,
 * the user states (byte for byte, with their event time), pending joins, watermarks and
 * counts one state's checkpoints wrote for two partitions are restored into a fresh one,
 * a changelog whose offsets are not the group's is refused, and a corrupt record in a
 * partition fails the restore with the partition, the offset and the reason, nothing
 * installed. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fsutil.h"
#include "base/hash.h"
#include "engine/emb.h"
#include "engine/model.h"
#include "engine/users.h"
#include "eval/sim.h"
#include "state/state.h"
#include "stream/changelog.h"
#include "stream/kio.h"
#include "stream/learner.h"
#include "stream/pending.h"

#define HASH 0x1234abcd5678ef00ULL

/* Encode a record and decode it back (key and value as Kafka would carry them). */
static int roundtrip(const chg_rec *in, uint64_t write_hash, uint64_t read_hash, chg_rec *out,
                     unsigned char *val, size_t *vlen, char *why, size_t n) {
    char key[CHG_KEY_MAX];
    size_t klen = chg_key(in, key, sizeof key);
    CHECK(klen > 0);
    *vlen = in->val ? chg_encode(in->kind, write_hash, in->val, in->len, val, 4096) : 0;
    CHECK(!in->val || *vlen == chg_value_bytes(in->len));
    return chg_decode(key, klen, in->val ? val : NULL, *vlen, read_hash, out, why, n);
}

static void refused(const char *key, const void *val, size_t vlen, const char *expect) {
    chg_rec r;
    char why[512] = "";
    CHECK_MSG(chg_decode(key, strlen(key), val, vlen, HASH, &r, why, sizeof why) == -1,
              "%s accepted", key);
    CHECK_CONTAINS(why, expect);
}

static void test_records(void) {
    unsigned char val[4096], bad[4096];
    size_t vlen;
    char why[512];
    chg_rec out;
    const char payload[] = "user state bytes";
    chg_rec u = {.kind = CHG_USER, .key = 0xfedcba9876543210ULL, .val = (const void *)payload,
                 .len = sizeof payload};
    CHECK_MSG(roundtrip(&u, HASH, HASH, &out, val, &vlen, why, sizeof why) == 0, "%s", why);
    CHECK_EQ_INT(out.kind, CHG_USER);
    CHECK(out.key == u.key);
    CHECK_EQ_INT(out.len, sizeof payload);
    CHECK(memcmp(out.val, payload, sizeof payload) == 0);

    chg_rec p = {.kind = CHG_PEND, .topic = 2, .val = (const void *)payload, .len = 5};
    snprintf(p.id, sizeof p.id, "imp-7-123");
    CHECK_MSG(roundtrip(&p, HASH, HASH, &out, val, &vlen, why, sizeof why) == 0, "%s", why);
    CHECK_EQ_INT(out.topic, 2);
    CHECK_EQ_STR(out.id, "imp-7-123");
    chg_rec tomb = p;
    tomb.val = NULL;
    tomb.len = 0;
    CHECK_MSG(roundtrip(&tomb, HASH, HASH, &out, val, &vlen, why, sizeof why) == 0, "%s", why);
    CHECK(out.val == NULL && out.kind == CHG_PEND);
    chg_meta meta = {123456789, 42, 7, 1, 0, 99};
    chg_rec m = {.kind = CHG_META, .topic = 1, .val = (const void *)&meta, .len = sizeof meta};
    CHECK_MSG(roundtrip(&m, HASH, HASH, &out, val, &vlen, why, sizeof why) == 0, "%s", why);
    CHECK_EQ_INT(out.topic, 1);

    /* refusals: each with its reason, nothing returned to install */
    CHECK(roundtrip(&u, HASH ^ 1, HASH, &out, val, &vlen, why, sizeof why) == -1);
    CHECK_CONTAINS(why, "another configuration");
    CHECK(roundtrip(&u, HASH, HASH, &out, val, &vlen, why, sizeof why) == 0);
    char ukey[CHG_KEY_MAX];
    chg_key(&u, ukey, sizeof ukey);
    memcpy(bad, val, vlen);
    bad[CHG_HEAD + 3] ^= 0x40;                         /* a payload byte flipped */
    refused(ukey, bad, vlen, "checksum");
    memcpy(bad, val, vlen);
    bad[0] = 'X';
    refused(ukey, bad, vlen, "not a changelog record");
    memcpy(bad, val, vlen);
    bad[4] = CHG_FORMAT + 1;                           /* another format version */
    refused(ukey, bad, vlen, "changelog format 2");
    refused(ukey, val, CHG_HEAD, "shorter than a record's header");
    refused(ukey, val, vlen - 1, "payload length");
    refused(ukey, NULL, 0, "tombstone of a 'u' record");
    char rkey[CHG_KEY_MAX];
    chg_rec r = u;
    r.kind = CHG_ROW;
    chg_key(&r, rkey, sizeof rkey);
    refused(rkey, val, vlen, "value of kind 'u' under a 'r' key");
    refused("x/1", val, vlen, "unknown record kind");
    refused("u/zz", val, vlen, "malformed key");
    refused("p/1", val, vlen, "malformed key");
    refused("m/-3", val, vlen, "malformed key");
    unsigned char short_meta[64];
    size_t sl = chg_encode(CHG_META, HASH, &meta, 8, short_meta, sizeof short_meta);
    refused("m/0", short_meta, sl, "meta record of 8 bytes");
    CHECK_EQ_INT(chg_encode(CHG_USER, HASH, payload, sizeof payload, val, 10), 0);
}

static int n_put, n_del;
static void count_put(void *ud, const pend_entry *e, uint64_t seq) {
    (void)ud; (void)e; (void)seq;
    n_put++;
}
static void count_del(void *ud, const char *id) {
    (void)ud; (void)id;
    n_del++;
}

/* pend_clear drops every entry (the stored ones reported for deletion) and the late ring,
 * and keeps the watermark. */
static void test_pend_clear(void) {
    char err[256];
    pend_table *t = pend_new(60000, 16, err, sizeof err);
    CHECK_MSG(t, "%s", err);
    m3_example ex;
    memset(&ex, 0, sizeof ex);
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "imp-%d", i);
        ex.ts_ms = 1000 + i;
        CHECK_EQ_INT(pend_add(t, id, &ex, NULL, NULL, 0, NULL, 0), 0);
    }
    CHECK_EQ_INT(pend_expire(t, 1000 + 60000 + 1, NULL, 8), 1);   /* imp-0 to the late ring */
    CHECK_EQ_INT(pend_convert(t, "imp-0", 2000, NULL), 2);
    n_put = n_del = 0;
    pend_sync(t, count_put, count_del, NULL);
    pend_sync_done(t);                     /* imp-1..4 are in the store now */
    CHECK_EQ_INT(n_put, 4);
    ex.ts_ms = 1005;
    CHECK_EQ_INT(pend_add(t, "imp-5", &ex, NULL, NULL, 0, NULL, 0), 0);   /* only in memory */
    int64_t wm = pend_watermark(t);
    pend_clear(t);
    CHECK_EQ_INT(pend_size(t), 0);
    CHECK_EQ_INT(pend_watermark(t), wm);
    CHECK_EQ_INT(pend_convert(t, "imp-0", 2000, NULL), 0);   /* the ring is empty too */
    CHECK_EQ_INT(pend_convert(t, "imp-2", 2000, NULL), 0);
    CHECK(pend_late_dirty(t));
    n_put = n_del = 0;
    pend_sync(t, count_put, count_del, NULL);
    pend_sync_done(t);
    CHECK_EQ_INT(n_del, 4);                /* the stored ones, not imp-5 */
    CHECK_EQ_INT(n_put, 0);
    CHECK_EQ_INT(pend_expire(t, INT64_MAX / 2, NULL, 8), 0);   /* no stale heap node */
    CHECK_EQ_INT(pend_add(t, "imp-2", &ex, NULL, NULL, 0, NULL, 0), 0);   /* the id is free again */
    CHECK_EQ_INT(pend_size(t), 1);
    pend_destroy(t);
}

/* ---- a partition's state through the embedded broker ---- */

#define RT_EVENTS 8000
#define RT_PARTS 2

static char tmp_root[512];

static void set(m3_cfg *c, const char *kv) {
    char err[256];
    CHECK_MSG(cfg_set(c, kv, "test", 0, err, sizeof err) == 0, "%s", err);
}

typedef struct {
    m3_cfg cfg;
    lrn *L;
    state *st;
    chg *c;
    kio_producer *p;
} side;

static int commit_hook(void *ud, char *err, size_t n) {
    side *s = ud;
    return kio_txn_commit(s->p, NULL, NULL, 30000, err, n) == 0 ? 0 : -1;
}

/* A learner with a store in tmp_root/name and a changelog on the mock (p NULL: restore only). */
static void open_side(side *s, const char *name, kio_producer *p) {
    char err[1024], dir[600], kv[700];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    rm_rf(dir);
    cfg_defaults(&s->cfg);
    set(&s->cfg, "batch.size=64");
    set(&s->cfg, "model.shadow=");
    set(&s->cfg, "model.hidden=32,16");
    set(&s->cfg, "join.window.ms=60000");
    set(&s->cfg, "join.lateness.ms=0");
    set(&s->cfg, "checkpoint.sync=false");
    set(&s->cfg, "store.write_buffer_mb=4");
    snprintf(kv, sizeof kv, "store.dir=%s", dir);
    set(&s->cfg, kv);
    set(&s->cfg, "group.changelog=true");
    CHECK_MSG(cfg_check(&s->cfg, err, sizeof err) == 0, "%s", err);
    s->L = lrn_new(&s->cfg, err, sizeof err);
    CHECK_MSG(s->L, "%s", err);
    s->st = state_open(&s->cfg, s->L, "t x 2", err, sizeof err);
    CHECK_MSG(s->st, "%s", err);
    uint64_t h = chg_cfg_hash(m3_cfg_hash(lrn_model(s->L, 0)), "t x 2");
    s->p = p;
    s->c = chg_new(p, "t.changelog", 1, RT_PARTS, h, err, sizeof err);
    CHECK_MSG(s->c, "%s", err);
    state_set_changelog(s->st, s->c, commit_hook, s);
}

static void close_side(side *s) {
    char err[512];
    CHECK_MSG(state_close(s->st, err, sizeof err) == 0, "%s", err);
    lrn_destroy(s->L);
    chg_destroy(s->c);
    cfg_free(&s->cfg);
}

/* Feed RT_EVENTS simulator events (a user's on partition uid % 2, as its source) with a
 * checkpoint every 1000 and one at the end; the last checkpoint leaves clicks pending. */
static void feed(side *s) {
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    sc.seed = 5;
    sc.n_impressions = RT_EVENTS;
    sc.n_users = 500;
    sc.requests_per_1k = 0;
    char err[512], reason[256];
    sim *sm = sim_new(&sc, err, sizeof err);
    CHECK_MSG(sm, "%s", err);
    for (int q = 0; q < RT_PARTS; q++) chg_own(s->c, q, 1);
    m3_event ev;
    sim_truth tr;
    int64_t pos = 0;
    while (sim_next(sm, &ev, &tr)) {
        int64_t uid = ev.type == M3_EV_IMPRESSION ? ev.u.imp.user_id : ev.u.conv.user_id;
        int q = (int)(uid % RT_PARTS);
        CHECK(chg_note_user(s->c, m3_feat_key(0, uid), q) == 0);
        int rc = ev.type == M3_EV_IMPRESSION
                     ? lrn_impression(s->L, &ev.u.imp, q, 0, NULL, NULL, reason, sizeof reason)
                     : lrn_conversion(s->L, &ev.u.conv, q, NULL, NULL, reason, sizeof reason);
        CHECK_MSG(rc == 0, "%s", reason);
        chg_count(s->c, q, ev.type);
        chg_offset(s->c, q, RT_EVENTS + q);   /* a stand-in offset per source */
        if (++pos % 1000 == 0 || pos == RT_EVENTS) {
            lrn_run_batch(s->L, NULL, NULL);
            state_offset o = {"sim", 0, pos};
            CHECK_MSG(state_checkpoint(s->st, &o, 1, err, sizeof err) == 0, "%s", err);
        }
        if (pos == RT_EVENTS) break;
    }
    sim_destroy(sm);
}

/* Every user state of a is in b with the same bytes and event time. Returns how many. */
static int same_users(side *a, side *b) {
    users_table *ua = m3_user_table(lrn_model(a->L, 0)), *ub = m3_user_table(lrn_model(b->L, 0));
    size_t vb = users_value_bytes(ua);
    unsigned char *va = malloc(vb), *vbb = malloc(vb);
    int n = 0;
    for (size_t r = 0; r < users_rows(ua); r++) {
        uint64_t key = users_key(ua, (int64_t)r);
        int64_t rb = users_find(ub, key);
        CHECK_MSG(rb >= 0, "user %016" PRIx64 " not restored", key);
        users_value_save(ua, (int64_t)r, va);
        users_value_save(ub, rb, vbb);
        CHECK_MSG(memcmp(va, vbb, vb) == 0, "user %016" PRIx64 " restored with other values", key);
        CHECK_EQ_INT(users_seen(ua, (int64_t)r), users_seen(ub, rb));
        n++;
    }
    free(va);
    free(vbb);
    return n;
}

static int restore_at(side *s, const char *bootstrap, const int64_t *expect,
                      chg_restore_stats *rs, char *err, size_t n) {
    kio_prop props[] = {{"bootstrap.servers", bootstrap}};
    int parts[RT_PARTS] = {0, 1};
    chg_sink sink = state_changelog_sink(s->st);
    return chg_restore(s->c, props, 1, parts, RT_PARTS, expect, &sink, 30000, rs, err, n);
}

/* The group's offsets are where a fed the sources up to (feed's chg_offset). */
static int restore(side *s, const char *bootstrap, chg_restore_stats *rs, char *err, size_t n) {
    int64_t expect[RT_PARTS] = {RT_EVENTS, RT_EVENTS + 1};
    return restore_at(s, bootstrap, expect, rs, err, n);
}

static void test_roundtrip(void) {
    char err[1024];
    const char *topics[] = {"t.changelog"};
    kio_mock *mk = kio_mock_new(RT_PARTS, topics, 1, err, sizeof err);
    CHECK_MSG(mk, "%s", err);
    const char *bs = kio_mock_bootstraps(mk);
    kio_prop pp[] = {{"bootstrap.servers", bs}, {"transactional.id", "test-changelog"}};
    kio_producer *p = kio_producer_new(pp, 2, err, sizeof err);
    CHECK_MSG(p, "%s", err);
    CHECK_MSG(kio_txn_start(p, 30000, err, sizeof err) == 0, "%s", err);

    side a, b, c;
    open_side(&a, "a", p);
    feed(&a);
    chg_stats cs;
    chg_stats_get(a.c, &cs);
    CHECK(cs.written > 0 && cs.tombstones > 0 && cs.dropped == 0);
    CHECK(lrn_pending(a.L) > 0);

    /* b restores both partitions: every user state, the pending join, the counts */
    open_side(&b, "b", NULL);
    chg_restore_stats rs[RT_PARTS];
    CHECK_MSG(restore(&b, bs, rs, err, sizeof err) == 0, "%s", err);
    int users = same_users(&a, &b);
    CHECK(users > 100);
    CHECK_EQ_INT(rs[0].users + rs[1].users, users);
    CHECK_EQ_INT(lrn_pending(b.L), lrn_pending(a.L));
    for (int q = 0; q < RT_PARTS; q++) {
        char e2[64];
        pend_table *ta = lrn_source_pending(a.L, q, 0, e2, sizeof e2);
        pend_table *tb = lrn_source_pending(b.L, q, 0, e2, sizeof e2);
        CHECK(ta && tb);
        CHECK_EQ_INT(pend_size(tb), pend_size(ta));
        CHECK_EQ_INT(pend_watermark(tb), pend_watermark(ta));
        CHECK_EQ_INT(chg_source_meta(b.c, q)->impressions, chg_source_meta(a.c, q)->impressions);
    }
    CHECK_EQ_INT(chg_source_meta(b.c, 0)->impressions + chg_source_meta(b.c, 1)->impressions,
                 lrn_trained_ctr(a.L));

    /* the changelog of other offsets (another group, or offsets reset) is refused */
    side e;
    open_side(&e, "e", NULL);
    int64_t other[RT_PARTS] = {RT_EVENTS, 5};
    CHECK(restore_at(&e, bs, other, rs, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "t.changelog [1] holds the state of input topic 0 up to offset 8001, but "
                        "the group's committed offset is 5: it was written by another group");
    CHECK_EQ_INT(users_rows(m3_user_table(lrn_model(e.L, 0))), 0);
    close_side(&e);
    /* a record of a user with no partition noted is not written */
    static const unsigned char junk[64] = {0};
    CHECK_EQ_INT(chg_put_key(a.c, CHG_USER, m3_feat_key(0, 77777777), junk, sizeof junk, err,
                             sizeof err), 0);
    /* (aborted transactions: librdkafka 2.0.2's mock cluster returns their records to
     * read_committed readers too, so it_group checks them on a real broker) */
    /* a corrupt record (outside any transaction): refused, nothing of it installed */
    kio_prop plain[] = {{"bootstrap.servers", bs}};
    kio_producer *q = kio_producer_new(plain, 1, err, sizeof err);
    CHECK_MSG(q, "%s", err);
    CHECK(kio_produce_to(q, "t.changelog", 1, "u/0000000000000007", 18, junk, sizeof junk, err,
                         sizeof err) == 0);
    CHECK_MSG(kio_producer_flush(q, 10000, err, sizeof err) == 0, "%s", err);
    kio_producer_destroy(q);
    open_side(&c, "c", NULL);
    CHECK(restore(&c, bs, rs, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "t.changelog [1] offset");
    CHECK_CONTAINS(err, "refused: not a changelog record");
    CHECK_EQ_INT(users_rows(m3_user_table(lrn_model(c.L, 0))), 0);
    CHECK_EQ_INT(lrn_pending(c.L), 0);

    close_side(&a);
    close_side(&b);
    close_side(&c);
    kio_producer_destroy(p);
    kio_mock_destroy(mk);
}

int main(void) {
    fs_scratch_dir(tmp_root, sizeof tmp_root, "test_changelog");
    test_records();
    test_pend_clear();
    test_roundtrip();
    rm_rf(tmp_root);
    fprintf(stderr, "test_changelog: ok\n");
    return 0;
}
