/* test_changelog.c - the changelog's records (group.changelog) and the pending join's
 * clear, without a broker (it_group runs the whole protocol on a real one).
 *
 * Checks: every kind of record encodes and decodes back; a corrupt record, one of another
 * configuration, another format version, another magic, a short one, a kind that does not
 * match its key, a tombstone of a user state and malformed keys are refused with the
 * reason; pend_clear empties a join and its late ring, keeps the watermark, and reports its
 * stored entries (only those) for deletion at the next sync. */
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
    chg_meta meta = {123456789, 42, 7, 1, 0};
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
        CHECK_EQ_INT(pend_add(t, id, &ex, NULL, 0, NULL, 0), 0);
    }
    CHECK_EQ_INT(pend_expire(t, 1000 + 60000 + 1, NULL, 8), 1);   /* imp-0 to the late ring */
    CHECK_EQ_INT(pend_convert(t, "imp-0", 2000, NULL), 2);
    n_put = n_del = 0;
    pend_sync(t, count_put, count_del, NULL);
    pend_sync_done(t);                     /* imp-1..4 are in the store now */
    CHECK_EQ_INT(n_put, 4);
    ex.ts_ms = 1005;
    CHECK_EQ_INT(pend_add(t, "imp-5", &ex, NULL, 0, NULL, 0), 0);   /* only in memory */
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
    CHECK_EQ_INT(pend_add(t, "imp-2", &ex, NULL, 0, NULL, 0), 0);   /* the id is free again */
    CHECK_EQ_INT(pend_size(t), 1);
    pend_destroy(t);
}

int main(void) {
    test_records();
    test_pend_clear();
    fprintf(stderr, "test_changelog: ok\n");
    return 0;
}
