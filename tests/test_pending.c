/* test_pending.c - delayed-conversion join: convert, late, unknown, expiry order,
 * duplicates, and 100k entries each released exactly once; with a store behind it: sync,
 * bodies spilled and read back, restore, the late ring, the stored form; the elapsed-time
 * copies (esdfm); a negative settled early (the reveal bound's diagnostic). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "stream/pending.h"

static m3_example mk_ex(int64_t ts, int scen, uint64_t tag) {
    m3_example ex;
    memset(&ex, 0, sizeof ex);
    ex.ts_ms = ts;
    ex.scenario = scen;
    ex.cat[M3_SLOT_USER] = tag;
    ex.num[3] = 0.25f;
    ex.y_click = 1;
    ex.w_ctr = 1;   /* as the impression was trained: the release must reset these */
    return ex;
}

static pend_table *mk_table(int64_t window, size_t cap) {
    char err[128];
    pend_table *t = pend_new(window, cap, err, sizeof err);
    CHECK_MSG(t, "%s", err);
    return t;
}

static void test_convert_within_window(void) {
    pend_table *t = mk_table(100, 16);
    m3_example ex = mk_ex(1000, 2, 77);
    float p[3] = {0.1f, 0.2f, 0.3f};
    CHECK_EQ_INT(pend_add(t, "imp-a", &ex, p, NULL, 3, NULL, 0), 0);
    CHECK_EQ_INT(pend_size(t), 1);
    pend_entry e;
    memset(&e, 0xab, sizeof e);
    CHECK_EQ_INT(pend_convert(t, "imp-a", 1100, &e), 1);   /* exactly at the window edge */
    CHECK_EQ_INT(pend_size(t), 0);
    CHECK_EQ_STR(e.impression_id, "imp-a");
    CHECK_EQ_INT(e.ex.ts_ms, 1000);
    CHECK_EQ_INT(e.ex.scenario, 2);
    CHECK_EQ_INT(e.ex.cat[M3_SLOT_USER], 77);
    CHECK_CLOSE(e.ex.num[3], 0.25, 0, 0);
    CHECK_CLOSE(e.ex.y_click, 1, 0, 0);
    CHECK_CLOSE(e.ex.y_conv, 1, 0, 0);
    CHECK_CLOSE(e.ex.w_ctr, 0, 0, 0);
    CHECK_CLOSE(e.ex.w_ctcvr, 1, 0, 0);
    CHECK_EQ_INT(e.n_models, 3);
    CHECK_CLOSE(e.p_ctcvr[0], 0.1f, 0, 0);
    CHECK_CLOSE(e.p_ctcvr[2], 0.3f, 0, 0);
    /* converted: gone, a second conversion is unknown, and expiry releases nothing */
    CHECK_EQ_INT(pend_convert(t, "imp-a", 1010, &e), 0);
    pend_entry out[4];
    CHECK_EQ_INT(pend_expire(t, 5000, out, 4), 0);
    /* a conversion before the impression's time (clock skew) still matches */
    ex = mk_ex(6000, 0, 1);
    CHECK_EQ_INT(pend_add(t, "imp-b", &ex, NULL, NULL, 0, NULL, 0), 0);
    CHECK_EQ_INT(pend_convert(t, "imp-b", 5990, NULL), 1);
    CHECK_EQ_INT(pend_size(t), 0);
    pend_destroy(t);
}

/* pend_settle_negative: out at once as a negative, its id then late; the others stay. */
static void test_settle_negative(void) {
    pend_table *t = mk_table(100, 16);
    m3_example ex = mk_ex(1000, 1, 5);
    float p[1] = {0.4f};
    CHECK_EQ_INT(pend_add(t, "n1", &ex, p, NULL, 1, NULL, 0), 0);
    CHECK_EQ_INT(pend_add(t, "n2", &ex, p, NULL, 1, NULL, 0), 0);
    pend_entry e;
    memset(&e, 0xab, sizeof e);
    CHECK_EQ_INT(pend_settle_negative(t, "n1", &e), 1);
    CHECK_EQ_STR(e.impression_id, "n1");
    CHECK_CLOSE(e.ex.y_conv, 0, 0, 0);
    CHECK_CLOSE(e.ex.w_ctr, 0, 0, 0);
    CHECK_CLOSE(e.ex.w_ctcvr, 1, 0, 0);
    CHECK_CLOSE(e.p_ctcvr[0], 0.4f, 0, 0);
    CHECK_EQ_INT(pend_size(t), 1);
    CHECK_EQ_INT(pend_settle_negative(t, "n1", NULL), 0);    /* settled already */
    CHECK_EQ_INT(pend_settle_negative(t, "zz", NULL), 0);    /* unknown */
    CHECK_EQ_INT(pend_convert(t, "n1", 1050, NULL), 2);      /* its conversion is late now */
    pend_entry out[4];
    CHECK_EQ_INT(pend_expire(t, 5000, out, 4), 1);           /* only n2 is left to expire */
    CHECK_EQ_STR(out[0].impression_id, "n2");
    pend_destroy(t);
}

static void test_late_and_unknown(void) {
    pend_table *t = mk_table(100, 16);
    m3_example ex = mk_ex(1000, 0, 1);
    float p = 0.5f;
    CHECK_EQ_INT(pend_add(t, "b", &ex, &p, NULL, 1, NULL, 0), 0);
    CHECK_EQ_INT(pend_convert(t, "nope", 1001, NULL), 0);       /* unknown */
    CHECK_EQ_INT(pend_convert(t, "b", 1101, NULL), 2);          /* late, not yet expired */
    CHECK_EQ_INT(pend_size(t), 1);                              /* ... and still pending */
    pend_entry out[4];
    CHECK_EQ_INT(pend_expire(t, 1100, out, 4), 0);              /* imp + window == watermark: open */
    CHECK_EQ_INT(pend_watermark(t), 1100);
    CHECK_EQ_INT(pend_expire(t, 900, out, 4), 0);               /* watermark never goes back */
    CHECK_EQ_INT(pend_watermark(t), 1100);
    CHECK_EQ_INT(pend_expire(t, 1101, out, 4), 1);
    CHECK_EQ_STR(out[0].impression_id, "b");
    CHECK_CLOSE(out[0].ex.y_conv, 0, 0, 0);
    CHECK_CLOSE(out[0].ex.y_click, 1, 0, 0);
    CHECK_CLOSE(out[0].ex.w_ctr, 0, 0, 0);
    CHECK_CLOSE(out[0].ex.w_ctcvr, 1, 0, 0);
    CHECK_CLOSE(out[0].p_ctcvr[0], 0.5f, 0, 0);
    CHECK_EQ_INT(pend_size(t), 0);
    CHECK_EQ_INT(pend_convert(t, "b", 1200, NULL), 2);          /* expired: late */
    CHECK_EQ_INT(pend_convert(t, "b", 1200, NULL), 2);
    /* an expired id may be added again (a new impression with that id) */
    ex = mk_ex(2000, 0, 1);
    CHECK_EQ_INT(pend_add(t, "b", &ex, NULL, NULL, 0, NULL, 0), 0);
    CHECK_EQ_INT(pend_convert(t, "b", 2050, NULL), 1);
    pend_destroy(t);
}

static void test_bad_args(void) {
    char err[128];
    CHECK(pend_new(0, 16, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "window");
    pend_destroy(NULL);
    pend_table *t = mk_table(10, 0);
    m3_example ex = mk_ex(1, 0, 0);
    float p[5] = {0};
    char longid[M3_ID_MAX + 1];
    memset(longid, 'x', M3_ID_MAX);
    longid[M3_ID_MAX] = '\0';
    CHECK_EQ_INT(pend_add(t, "", &ex, NULL, NULL, 0, NULL, 0), -1);
    CHECK_EQ_INT(pend_add(t, longid, &ex, NULL, NULL, 0, NULL, 0), -1);
    longid[M3_ID_MAX - 1] = '\0';                               /* 63 bytes: fits */
    CHECK_EQ_INT(pend_add(t, longid, &ex, NULL, NULL, 0, NULL, 0), 0);
    CHECK_EQ_INT(pend_add(t, "m", &ex, p, NULL, PEND_MAX_MODELS + 1, NULL, 0), -1);
    CHECK_EQ_INT(pend_add(t, "m", &ex, NULL, NULL, 1, NULL, 0), -1);
    CHECK_EQ_INT(pend_add(t, "m", &ex, NULL, NULL, 0, NULL, 4), -1);
    static unsigned char big[PEND_SNAP_MAX + 1];
    CHECK_EQ_INT(pend_add(t, "m", &ex, NULL, NULL, 0, big, sizeof big), -1);
    CHECK_EQ_INT(pend_size(t), 1);
    pend_destroy(t);
}

static void test_duplicate(void) {
    pend_table *t = mk_table(100, 16);
    m3_example ex1 = mk_ex(1000, 1, 11), ex2 = mk_ex(1050, 3, 22);
    float p1 = 0.1f, p2 = 0.9f;
    CHECK_EQ_INT(pend_add(t, "dup", &ex1, &p1, NULL, 1, NULL, 0), 0);
    CHECK_EQ_INT(pend_add(t, "dup", &ex2, &p2, NULL, 1, NULL, 0), 1);
    CHECK_EQ_INT(pend_size(t), 1);
    pend_entry out[4];
    CHECK_EQ_INT(pend_expire(t, 1101, out, 4), 1);              /* expires on the first's time */
    CHECK_EQ_INT(out[0].ex.ts_ms, 1000);
    CHECK_EQ_INT(out[0].ex.cat[M3_SLOT_USER], 11);
    CHECK_CLOSE(out[0].p_ctcvr[0], 0.1f, 0, 0);
    CHECK_EQ_INT(pend_expire(t, 100000, out, 4), 0);            /* released once only */
    pend_destroy(t);
}

static void test_expiry_order_chunks(void) {
    pend_table *t = mk_table(100, 16);
    static const int64_t ts[] = {50, 10, 30, 20, 30, 40, 5};
    static const char *ids[] = {"t50", "t10", "t30a", "t20", "t30b", "t40", "t5"};
    for (int i = 0; i < 7; i++) {
        m3_example ex = mk_ex(ts[i], 0, (uint64_t)i);
        CHECK_EQ_INT(pend_add(t, ids[i], &ex, NULL, NULL, 0, NULL, 0), 0);
    }
    CHECK_EQ_INT(pend_convert(t, "t20", 60, NULL), 1);          /* leaves a stale heap node */
    pend_entry out[8];
    CHECK_EQ_INT(pend_expire(t, 115, out, 8), 2);               /* imp < 15: t5, t10 */
    CHECK_EQ_STR(out[0].impression_id, "t5");
    CHECK_EQ_STR(out[1].impression_id, "t10");
    CHECK_EQ_INT(pend_expire(t, 145, out, 1), 1);               /* imp < 45, one at a time */
    CHECK_EQ_STR(out[0].impression_id, "t30a");
    CHECK_EQ_INT(pend_expire(t, 0, out, 1), 1);                 /* same watermark continues */
    CHECK_EQ_STR(out[0].impression_id, "t30b");
    CHECK_EQ_INT(pend_expire(t, 0, out, 8), 1);
    CHECK_EQ_STR(out[0].impression_id, "t40");
    CHECK_EQ_INT(pend_size(t), 1);
    CHECK_EQ_INT(pend_expire(t, 1000, out, 8), 1);
    CHECK_EQ_STR(out[0].impression_id, "t50");
    CHECK_EQ_INT(pend_size(t), 0);
    CHECK_EQ_INT(pend_expire(t, 100000, out, 8), 0);
    pend_destroy(t);
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* 100k impressions with jittered (out-of-order) times, ~30% converted within the window,
 * some conversions late, the rest expired: every id leaves exactly once. */
static void test_many(void) {
    enum { N = 100000, WINDOW = 1000, JITTER = 500, CHUNK = 256 };
    pend_table *t = mk_table(WINDOW, 1024);                     /* grows; late ring of 4096 */
    unsigned char *released = calloc(N, 1);
    int64_t *imp_ts = malloc(N * sizeof *imp_ts);
    pend_entry *out = malloc(CHUNK * sizeof *out);
    char id[32];
    int64_t watermark = 0, last_expired_ts = INT64_MIN;
    long n_conv = 0, n_exp = 0, n_late = 0;
    for (int i = 0; i < N; i++) {
        imp_ts[i] = (int64_t)i * 10 + (int64_t)(next_rand() % JITTER);
        m3_example ex = mk_ex(imp_ts[i], i % 3, (uint64_t)i);
        float p = (float)i;
        snprintf(id, sizeof id, "imp-%d", i);
        CHECK_EQ_INT(pend_add(t, id, &ex, &p, NULL, 1, NULL, 0), 0);
        if (imp_ts[i] > watermark) watermark = imp_ts[i];
        /* a conversion for an earlier impression: in window, or late */
        if (i >= 150 && next_rand() % 10 < 3) {
            int j = i - 1 - (int)(next_rand() % 150);
            snprintf(id, sizeof id, "imp-%d", j);
            pend_entry e;
            int r = pend_convert(t, id, watermark, &e);
            int64_t age = watermark - imp_ts[j];
            if (r == 1) {
                CHECK(!released[j]);
                CHECK(age <= WINDOW);
                CHECK_CLOSE(e.p_ctcvr[0], (float)j, 0, 0);
                CHECK_EQ_INT(e.ex.cat[M3_SLOT_USER], j);
                released[j] = 1;
                n_conv++;
            } else if (r == 2) {
                CHECK(age > WINDOW || released[j] == 2);
                n_late++;
            } else {
                CHECK_EQ_INT(released[j], 1);                   /* converted before: unknown */
            }
        }
        if (i % 100 == 0) {
            int n;
            while ((n = pend_expire(t, watermark, out, CHUNK)) > 0) {
                for (int k = 0; k < n; k++) {
                    int j = atoi(out[k].impression_id + 4);
                    CHECK_MSG(!released[j], "imp-%d released twice", j);
                    CHECK(out[k].ex.ts_ms + WINDOW < watermark);
                    CHECK(out[k].ex.ts_ms >= last_expired_ts);  /* oldest first */
                    CHECK_CLOSE(out[k].ex.y_conv, 0, 0, 0);
                    last_expired_ts = out[k].ex.ts_ms;
                    released[j] = 2;
                    n_exp++;
                }
                if (n < CHUNK) break;
            }
        }
    }
    CHECK(n_late > 0);
    CHECK(n_conv > N / 10);
    /* a recently expired id is late; one expired long ago is forgotten (ring of 4096) */
    snprintf(id, sizeof id, "imp-%d", 0);
    CHECK(released[0]);   /* converted, or expired and since forgotten: unknown either way */
    CHECK_EQ_INT(pend_convert(t, id, watermark, NULL), 0);
    int recent = -1;
    for (int j = N - 1; j >= 0 && recent < 0; j--)
        if (released[j] == 2) recent = j;
    CHECK(recent >= 0);
    snprintf(id, sizeof id, "imp-%d", recent);
    CHECK_EQ_INT(pend_convert(t, id, watermark, NULL), 2);
    /* flush the rest */
    int n;
    while ((n = pend_expire(t, INT64_MAX, out, CHUNK)) > 0) {
        for (int k = 0; k < n; k++) {
            int j = atoi(out[k].impression_id + 4);
            CHECK_MSG(!released[j], "imp-%d released twice", j);
            released[j] = 2;
            n_exp++;
        }
    }
    CHECK_EQ_INT(pend_size(t), 0);
    CHECK_EQ_INT(n_conv + n_exp, N);
    for (int i = 0; i < N; i++) CHECK_MSG(released[i], "imp-%d never released", i);
    printf("test_pending: %ld converted, %ld expired, %ld late conversions\n", n_conv, n_exp, n_late);
    free(released);
    free(imp_ts);
    free(out);
    pend_destroy(t);
}

/* ---- a store behind the table: a list of encoded entries in the test ---- */

#define NCAT 5
#define NNUM 4

typedef struct {
    char id[16][M3_ID_MAX];
    unsigned char val[16][512];
    size_t len[16];
    int n, loads, fail;
    char dels[16][M3_ID_MAX];
    int n_dels;
} fake_store;

static int fake_load(void *ud, int tag, const char *id, pend_entry *out) {
    fake_store *f = ud;
    CHECK_EQ_INT(tag, 7);
    f->loads++;
    if (f->fail) return -1;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->id[i], id)) return pend_entry_decode(out, id, NCAT, NNUM, f->val[i], f->len[i]);
    return -1;
}

static void fake_put(void *ud, const pend_entry *e, uint64_t seq) {
    fake_store *f = ud;
    CHECK(f->n < 16);
    snprintf(f->id[f->n], M3_ID_MAX, "%s", e->impression_id);
    f->len[f->n] = pend_entry_encode(e, seq, NCAT, NNUM, f->val[f->n], sizeof f->val[0]);
    CHECK_EQ_INT(f->len[f->n], pend_entry_bytes(e->n_models, NCAT, NNUM, e->snap_len));
    f->n++;
}

static void fake_del(void *ud, const char *id) {
    fake_store *f = ud;
    snprintf(f->dels[f->n_dels++], M3_ID_MAX, "%s", id);
}

static m3_example rich_ex(int64_t ts, int i) {
    m3_example ex = mk_ex(ts, i % 3, 100 + (uint64_t)i);
    for (int s = 0; s < NCAT; s++) ex.cat[s] = (uint64_t)(i * 10 + s);
    for (int s = 0; s < NNUM; s++) ex.num[s] = (float)i + 0.5f * (float)s;
    ex.slices = (uint8_t)(i & 3);
    return ex;
}

static void check_rich(const pend_entry *e, int i, float y_conv) {
    CHECK_EQ_INT(e->ex.scenario, i % 3);
    for (int s = 0; s < NCAT; s++) CHECK_EQ_INT(e->ex.cat[s], i * 10 + s);
    for (int s = 0; s < NNUM; s++) CHECK_CLOSE(e->ex.num[s], (float)i + 0.5f * (float)s, 0, 0);
    CHECK_EQ_INT(e->ex.slices, i & 3);
    CHECK_EQ_INT(e->n_models, 2);
    CHECK_CLOSE(e->p_ctcvr[1], 0.01f * (float)i, 0, 0);
    CHECK_EQ_INT(e->has_cvr, 1);                  /* p_cvr kept beside p_ctcvr */
    CHECK_CLOSE(e->p_cvr[0], 0.25f, 0, 0);
    CHECK_CLOSE(e->p_cvr[1], 0.1f * (float)i, 0, 0);
    CHECK_CLOSE(e->ex.y_conv, y_conv, 0, 0);
    CHECK_CLOSE(e->ex.w_ctr, 0, 0, 0);
    CHECK_CLOSE(e->ex.w_ctcvr, 1, 0, 0);
    /* the models' snapshots come back byte for byte, in memory or from the store */
    CHECK_EQ_INT(e->snap_len, 8 * (i + 1));
    for (uint32_t k = 0; k < e->snap_len; k++) CHECK_EQ_INT(e->snap[k], (unsigned char)(i * 16 + k));
}

/* Entry i's snapshot bytes (8 (i + 1) of them). */
static size_t rich_snap(int i, unsigned char *sn) {
    for (int k = 0; k < 8 * (i + 1); k++) sn[k] = (unsigned char)(i * 16 + k);
    return (size_t)(8 * (i + 1));
}

/* Four rich entries <prefix>0..3 at times 10, 20, 30, 40, with snapshots. */
static void add_four(pend_table *t, char prefix) {
    char id[16];
    for (int i = 0; i < 4; i++) {
        m3_example ex = rich_ex(10 * (i + 1), i);
        float p[2] = {0.5f, 0.01f * (float)i}, pv[2] = {0.25f, 0.1f * (float)i};
        snprintf(id, sizeof id, "%c%d", prefix, i);
        unsigned char sn[64];
        size_t sl = rich_snap(i, sn);
        CHECK_EQ_INT(pend_add(t, id, &ex, p, pv, 2, sn, sl), 0);
    }
}

static void test_store_backed(void) {
    static fake_store f;
    pend_table *t = mk_table(100, 16);
    pend_set_loader(t, fake_load, &f, 7);
    add_four(t, 's');
    CHECK_EQ_INT(pend_sync(t, fake_put, fake_del, &f), 4);
    CHECK_EQ_INT(f.n, 4);
    pend_sync_done(t);
    CHECK_EQ_INT(pend_sync(t, fake_put, fake_del, &f), 0);   /* nothing new */
    pend_sync_done(t);
    m3_example ex = rich_ex(35, 4);
    float p[2] = {0.5f, 0.04f}, pv[2] = {0.25f, 0.4f};
    unsigned char sn4[64];
    size_t sl4 = rich_snap(4, sn4);
    CHECK_EQ_INT(pend_add(t, "s4", &ex, p, pv, 2, sn4, sl4), 0);          /* not in the store */
    pend_entry e;
    CHECK_EQ_INT(pend_convert(t, "s1", 50, &e), 1);           /* spilled: read back */
    CHECK_EQ_INT(f.loads, 1);
    CHECK_EQ_STR(e.impression_id, "s1");
    check_rich(&e, 1, 1);
    CHECK_EQ_INT(pend_convert(t, "s4", 50, &e), 1);           /* in memory: no read */
    CHECK_EQ_INT(f.loads, 1);
    check_rich(&e, 4, 1);
    pend_entry out[4];
    CHECK_EQ_INT(pend_expire(t, 145, out, 4), 3);             /* s0, s2, s3: imp < 45 */
    CHECK_EQ_INT(f.loads, 4);
    CHECK_EQ_STR(out[0].impression_id, "s0");
    check_rich(&out[0], 0, 0);
    check_rich(&out[2], 3, 0);
    CHECK(pend_late_dirty(t));
    /* the next sync deletes the four stored entries released, writes nothing */
    int n_put = f.n;
    CHECK_EQ_INT(pend_sync(t, fake_put, fake_del, &f), 4);
    CHECK_EQ_INT(f.n, n_put);
    CHECK_EQ_INT(f.n_dels, 4);
    CHECK_EQ_STR(f.dels[0], "s1");
    CHECK_EQ_STR(f.dels[3], "s3");
    /* the late ring round trip */
    char ring[256];
    size_t rl = pend_late_save(t, NULL, 0);
    CHECK_EQ_INT(rl, 9);                                      /* "s0\0s2\0s3\0" */
    CHECK_EQ_INT(pend_late_save(t, ring, sizeof ring), rl);
    pend_sync_done(t);
    CHECK(!pend_late_dirty(t));
    pend_table *t2 = mk_table(100, 16);
    CHECK_EQ_INT(pend_late_load(t2, ring, rl), 0);
    CHECK(!pend_late_dirty(t2));
    CHECK_EQ_INT(pend_convert(t2, "s2", 200, NULL), 2);       /* late, as in t */
    CHECK_EQ_INT(pend_late_load(t2, "x", 1), -1);             /* no terminator */
    /* restore from the store: order by (time, seq); bodies read when released */
    pend_set_loader(t2, fake_load, &f, 7);
    uint64_t seq;
    int64_t ts;
    CHECK_EQ_INT(pend_entry_head(f.val[2], f.len[2], &seq, &ts), 0);
    CHECK_EQ_INT(seq, 2);
    CHECK_EQ_INT(ts, 30);
    CHECK_EQ_INT(pend_restore(t2, "s3", 30, 3), 0);           /* same time as s2: seq decides */
    CHECK_EQ_INT(pend_restore(t2, "s2", 30, 2), 0);
    CHECK_EQ_INT(pend_restore(t2, "s2", 30, 2), 1);
    CHECK_EQ_INT(pend_restore(t2, "", 30, 2), -1);
    CHECK_EQ_INT(pend_next_seq(t2), 4);
    CHECK_EQ_INT(pend_size(t2), 2);
    CHECK_EQ_INT(pend_sync(t2, fake_put, fake_del, &f), 0);  /* restored: already stored */
    pend_sync_done(t2);
    CHECK_EQ_INT(pend_expire(t2, 1000, out, 4), 2);
    CHECK_EQ_STR(out[0].impression_id, "s2");
    CHECK_EQ_STR(out[1].impression_id, "s3");
    check_rich(&out[1], 3, 0);
    /* a body that cannot be read: released empty, counted */
    CHECK_EQ_INT(pend_restore(t2, "gone", 900, 9), 0);
    f.fail = 1;
    CHECK_EQ_INT(pend_convert(t2, "gone", 950, &e), 1);
    CHECK_EQ_INT(pend_load_errors(t2), 1);
    CHECK_EQ_INT(e.ex.cat[0], 0);
    CHECK_EQ_INT(e.has_cvr, 0);                               /* no CVR sample for it */
    CHECK_EQ_STR(e.impression_id, "gone");
    /* the stored form refuses another slot layout and a short value */
    pend_entry d;
    CHECK_EQ_INT(pend_entry_decode(&d, "s0", NCAT + 1, NNUM, f.val[0], f.len[0]), -1);
    CHECK_EQ_INT(pend_entry_decode(&d, "s0", NCAT, NNUM, f.val[0], f.len[0] - 1), -1);
    CHECK_EQ_INT(pend_entry_head(f.val[0], 10, &seq, &ts), -1);
    CHECK_EQ_INT(pend_entry_encode(&d, 0, NCAT, NNUM, ring, 8), 0);
    pend_destroy(t);
    pend_destroy(t2);
}

/* The value as the code before p_cvr wrote it (format 0), byte by byte: seq, ts, scenario,
 * n_models, slices, n_cat, n_num, y_click, y_conv, w_ctr, w_ctcvr, snap_len, p_ctcvr[],
 * cat[], num[], snap. */
static size_t old_format_value(const pend_entry *e, uint64_t seq, unsigned char *b) {
    size_t o = 0;
    memcpy(b + o, &seq, 8); o += 8;
    memcpy(b + o, &e->ex.ts_ms, 8); o += 8;
    memcpy(b + o, &e->ex.scenario, 4); o += 4;
    b[o++] = (unsigned char)e->n_models;
    b[o++] = e->ex.slices;
    b[o++] = NCAT;
    b[o++] = NNUM;
    memcpy(b + o, &e->ex.y_click, 4); o += 4;
    memcpy(b + o, &e->ex.y_conv, 4); o += 4;
    memcpy(b + o, &e->ex.w_ctr, 4); o += 4;
    memcpy(b + o, &e->ex.w_ctcvr, 4); o += 4;
    memcpy(b + o, &e->snap_len, 4); o += 4;
    memcpy(b + o, e->p_ctcvr, (size_t)e->n_models * 4); o += (size_t)e->n_models * 4;
    memcpy(b + o, e->ex.cat, NCAT * 8); o += NCAT * 8;
    memcpy(b + o, e->ex.num, NNUM * 4); o += NNUM * 4;
    memcpy(b + o, e->snap, e->snap_len); o += e->snap_len;
    return o;
}

/* The stored formats: an entry with p_cvr round-trips in format 1; one from before p_cvr was
 * kept (format 0, as the old code wrote it) still decodes, without a CVR prediction; one
 * added without p_cvr is stored in format 0; an unknown format is refused; and an older
 * build (which refuses a model count above PEND_MAX_MODELS) refuses a format 1 value. */
static void test_entry_formats(void) {
    pend_table *t = mk_table(100, 16);
    m3_example ex = rich_ex(10, 2);
    float p[2] = {0.5f, 0.02f}, pv[2] = {0.25f, 0.2f};
    unsigned char sn[64], v1[1024], v0[1024];
    size_t sl = rich_snap(2, sn);
    CHECK_EQ_INT(pend_add(t, "f", &ex, p, pv, 2, sn, sl), 0);
    pend_entry e, d;
    CHECK_EQ_INT(pend_convert(t, "f", 20, &e), 1);
    size_t n1 = pend_entry_encode(&e, 5, NCAT, NNUM, v1, sizeof v1);
    CHECK_EQ_INT(n1, pend_entry_bytes(2, NCAT, NNUM, sl));
    CHECK(v1[20] > PEND_MAX_MODELS);                     /* what an older build refuses */
    CHECK_EQ_INT(v1[20] >> 4, PEND_ENTRY_FORMAT);
    CHECK_EQ_INT(pend_entry_decode(&d, "f", NCAT, NNUM, v1, n1), 0);
    check_rich(&d, 2, 1);
    /* format 0, as written before: everything but p_cvr */
    size_t n0 = old_format_value(&e, 5, v0);
    CHECK_EQ_INT(n0, n1 - 2 * 4);
    memset(&d, 0xab, sizeof d);
    CHECK_EQ_INT(pend_entry_decode(&d, "f", NCAT, NNUM, v0, n0), 0);
    CHECK_EQ_INT(d.has_cvr, 0);
    CHECK_EQ_INT(d.n_models, 2);
    CHECK_CLOSE(d.p_ctcvr[1], 0.02f, 0, 0);
    CHECK_EQ_INT(d.ex.cat[NCAT - 1], 2 * 10 + NCAT - 1);
    CHECK_EQ_INT(d.snap_len, sl);
    CHECK_EQ_INT(d.snap[sl - 1], sn[sl - 1]);
    uint64_t seq;
    int64_t ts;
    CHECK_EQ_INT(pend_entry_head(v0, n0, &seq, &ts), 0);
    CHECK_EQ_INT(seq, 5);
    CHECK_EQ_INT(ts, 10);
    /* a format 0 entry written again stays format 0, byte for byte */
    unsigned char v0b[1024];
    CHECK_EQ_INT(pend_entry_encode(&d, 5, NCAT, NNUM, v0b, sizeof v0b), n0);
    CHECK(memcmp(v0, v0b, n0) == 0);
    /* the lengths must match the format, and an unknown format is refused */
    CHECK_EQ_INT(pend_entry_decode(&d, "f", NCAT, NNUM, v0, n1), -1);
    CHECK_EQ_INT(pend_entry_decode(&d, "f", NCAT, NNUM, v1, n0), -1);
    v1[20] = (unsigned char)((PEND_ENTRY_FORMAT + 1) << 4 | 2);
    CHECK_EQ_INT(pend_entry_decode(&d, "f", NCAT, NNUM, v1, n1), -1);
    pend_destroy(t);
}

/* An elapsed time: entries are copied out once e after their impression, in time order,
 * max at a time, and stay pending; a converted one is not copied; releases say whether
 * the copy went out; with a spilled body the copy reads it back; a restored entry older
 * than the restored watermark - e counts as elapsed (no copy). */
static void test_elapse(void) {
    static fake_store f;
    pend_table *t = mk_table(100, 16);
    pend_set_elapse(t, 20);
    pend_set_loader(t, fake_load, &f, 7);
    add_four(t, 'e');
    CHECK_EQ_INT(pend_sync(t, fake_put, fake_del, &f), 4);
    pend_sync_done(t);                                        /* bodies spilled */
    CHECK_EQ_INT(pend_convert(t, "e1", 35, NULL), 1);         /* before its elapsed time */
    pend_entry out[4], e;
    CHECK_EQ_INT(pend_elapse(t, 30, out, 4), 0);              /* e0: 10 is not < 30 - 20 */
    CHECK_EQ_INT(pend_elapse(t, 51, out, 1), 1);              /* e0 and e2 due: max 1 */
    CHECK_EQ_STR(out[0].impression_id, "e0");
    CHECK(out[0].copy == 1 && out[0].ex.y_conv == 0.0f && out[0].ex.w_ctr == 0.0f);
    check_rich(&out[0], 0, 0);                                /* read back */
    CHECK_EQ_INT(pend_elapse(t, 51, out, 4), 1);
    CHECK_EQ_STR(out[0].impression_id, "e2");
    CHECK_EQ_INT(pend_elapse(t, 51, out, 4), 0);              /* each once */
    CHECK_EQ_INT(pend_size(t), 3);
    CHECK_EQ_INT(pend_convert(t, "e2", 70, &e), 1);
    CHECK(e.elapsed == 1 && e.copy == 0 && e.ex.y_conv == 1.0f);
    CHECK_EQ_INT(pend_expire(t, 141, out, 4), 2);             /* e0 (copied), e3 (not yet) */
    CHECK(out[0].elapsed == 1 && out[1].elapsed == 0);
    CHECK_EQ_INT(pend_load_errors(t), 0);
    /* restored: the watermark first, then the entries */
    pend_table *t2 = mk_table(100, 16);
    pend_set_elapse(t2, 20);
    pend_set_clock(t2, 61, 10);
    CHECK_EQ_INT(pend_restore(t2, "r0", 30, 1), 0);           /* 30 < 61 - 20: elapsed */
    CHECK_EQ_INT(pend_restore(t2, "r1", 50, 2), 0);
    CHECK_EQ_INT(pend_elapse(t2, 80, out, 4), 1);
    CHECK_EQ_STR(out[0].impression_id, "r1");
    pend_destroy(t);
    pend_destroy(t2);
}

int main(void) {
    test_store_backed();
    test_entry_formats();
    test_elapse();
    test_convert_within_window();
    test_late_and_unknown();
    test_settle_negative();
    test_bad_args();
    test_duplicate();
    test_expiry_order_chunks();
    test_many();
    printf("test_pending: all checks passed\n");
    return 0;
}
