/* test_kio.c - Kafka I/O against the embedded mock cluster: co-partitioning, checks,
 * errors, headers, delivery reports, rebalance hooks, a broker outage (the producer waits
 * and tells, the consumer pauses), one partition held while another flows (the order
 * buffer's pause) and its lag; the group-less reader; prints producer/consumer throughput. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "stream/kio.h"

#define T_HOME "m3rec.events.home"
#define T_SEARCH "m3rec.events.search"
#define T_REQ "m3rec.requests"
#define N_USERS 200
#define PER_USER 5   /* messages per user per topic: 2 topics x 200 x 5 = 2000 */
#define PARTS 4

static char errstr[512];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Kafka's UtilsTest.testMurmur2 vectors (Java's signed int results). */
static void test_murmur2(void) {
    CHECK_EQ_INT(kio_murmur2("21", 2), -973932308);
    CHECK_EQ_INT(kio_murmur2("foobar", 6), -790332482);
    CHECK_EQ_INT(kio_murmur2("a-little-bit-long-string", 24), -985981536);
    CHECK_EQ_INT(kio_murmur2("a-little-bit-longer-string", 26), -1486304829);
    CHECK_EQ_INT(kio_murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 48), -58897971);
    CHECK_EQ_INT(kio_murmur2("abc", 3), 479470107);
    /* toPositive(-790332482) = 1357151166; 1357151166 % 50 = 16 */
    CHECK_EQ_INT(kio_partition_for_key("foobar", 6, 50), 16);
    CHECK_EQ_INT(kio_partition_for_key("foobar", 6, 1), 0);
}

static void test_check_topics(kio_mock *m, const kio_prop *bs) {
    const char *ok[] = {T_HOME, T_SEARCH, T_REQ};
    CHECK_EQ_INT(kio_check_topics(bs, 1, ok, 3, 5000, errstr, sizeof(errstr)), PARTS);

    const char *missing[] = {T_HOME, "m3rec.events.product", T_REQ};
    CHECK_EQ_INT(kio_check_topics(bs, 1, missing, 3, 5000, errstr, sizeof(errstr)), -1);
    CHECK_EQ_STR(errstr, "topic m3rec.events.product does not exist "
                         "(create it with 4 partitions like m3rec.events.home)");

    CHECK_EQ_INT(kio_mock_create_topic(m, "m3rec.small", 2, errstr, sizeof(errstr)), 0);
    const char *unequal[] = {T_HOME, T_SEARCH, "m3rec.small"};
    CHECK_EQ_INT(kio_check_topics(bs, 1, unequal, 3, 5000, errstr, sizeof(errstr)), -1);
    CHECK_EQ_STR(errstr, "topics must have equal partition counts for co-partitioning: "
                         "m3rec.events.home has 4, m3rec.small has 2");

    CHECK_EQ_INT(kio_mock_create_topic(m, "bad", 0, errstr, sizeof(errstr)), -1);
    CHECK_CONTAINS(errstr, "partitions must be >= 1");
}

static void test_unreachable(void) {
    const kio_prop bs[] = {{"bootstrap.servers", "127.0.0.1:1"}};
    const char *t[] = {T_HOME};
    double t0 = now_s();
    CHECK_EQ_INT(kio_check_topics(bs, 1, t, 1, 1000, errstr, sizeof(errstr)), -1);
    double took = now_s() - t0;
    printf("unreachable: %.0f ms: %s\n", took * 1e3, errstr);
    CHECK_CONTAINS(errstr, "cannot reach Kafka at 127.0.0.1:1 within 1000 ms: ");
    CHECK_MSG(took < 3.0, "kio_check_topics took %.1f s with a 1 s timeout", took);

    t0 = now_s();
    CHECK_EQ_INT(kio_create_topics(bs, 1, t, 1, 4, 1000, errstr, sizeof(errstr)), -1);
    took = now_s() - t0;
    CHECK_CONTAINS(errstr, "cannot reach Kafka at 127.0.0.1:1 within 1000 ms: ");
    CHECK_MSG(took < 3.0, "kio_create_topics took %.1f s with a 1 s timeout", took);
}

static void test_bad_config(const kio_prop *bs) {
    const char *t[] = {T_HOME};
    CHECK(kio_consumer_new(bs, 1, t, 1, errstr, sizeof(errstr)) == NULL);
    CHECK_CONTAINS(errstr, "group.id is required");
    const kio_prop bad[] = {{"bootstrap.servers", "x"}, {"no.such.property", "1"}};
    CHECK(kio_producer_new(bad, 2, errstr, sizeof(errstr)) == NULL);
    CHECK_CONTAINS(errstr, "no.such.property");
    kio_consumer_close(NULL);
    kio_producer_destroy(NULL);
    kio_mock_destroy(NULL);
}

/* Poll c into a callback until `want` messages or the deadline. Returns the count. */
typedef void (*on_msg_fn)(const rd_kafka_message_t *m, void *ud);
static long consume_n(kio_consumer *c, long want, double timeout_s, on_msg_fn fn, void *ud) {
    rd_kafka_message_t *msgs[256];
    long got = 0;
    double end = now_s() + timeout_s;
    while (got < want && now_s() < end) {
        int max = want - got < 256 ? (int)(want - got) : 256;
        int n = kio_consumer_poll(c, msgs, max, 100, errstr, sizeof(errstr));
        CHECK_MSG(n >= 0, "poll: %s", errstr);
        for (int i = 0; i < n; i++) {
            if (fn) fn(msgs[i], ud);
            CHECK_EQ_INT(kio_consumer_store(c, msgs[i], errstr, sizeof(errstr)), 0);
            rd_kafka_message_destroy(msgs[i]);
        }
        got += n;
    }
    return got;
}

typedef struct {
    int part[2][N_USERS];    /* partition of each key in home (0) and search (1), -1 unseen */
    int count[2][N_USERS];
} copart_seen;

static void on_copart(const rd_kafka_message_t *m, void *ud) {
    copart_seen *s = ud;
    const char *topic = rd_kafka_topic_name(m->rkt);
    int t = strcmp(topic, T_HOME) == 0 ? 0 : strcmp(topic, T_SEARCH) == 0 ? 1 : -1;
    CHECK_MSG(t >= 0, "unexpected topic %s", topic);
    char key[16];
    CHECK(m->key_len > 0 && m->key_len < sizeof(key));
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = '\0';
    int u = atoi(key);
    CHECK(u >= 0 && u < N_USERS);
    CHECK_EQ_INT(m->partition, kio_partition_for_key(key, m->key_len, PARTS));
    if (s->part[t][u] >= 0) CHECK_EQ_INT(m->partition, s->part[t][u]);
    s->part[t][u] = m->partition;
    s->count[t][u]++;
    char want[64];
    int wl = snprintf(want, sizeof(want), "user=%s", key);
    CHECK((int)m->len > wl && memcmp(m->payload, want, (size_t)wl) == 0);
}

static void test_copartition(const kio_prop *bs) {
    kio_producer *p = kio_producer_new(bs, 1, errstr, sizeof(errstr));
    CHECK_MSG(p != NULL, "producer: %s", errstr);
    const char *topics[2] = {T_HOME, T_SEARCH};
    for (int r = 0; r < PER_USER; r++)
        for (int u = 0; u < N_USERS; u++)
            for (int t = 0; t < 2; t++) {
                char key[16], val[64];
                int kl = snprintf(key, sizeof(key), "%d", u);
                int vl = snprintf(val, sizeof(val), "user=%d round=%d", u, r);
                CHECK_EQ_INT(kio_produce(p, topics[t], key, (size_t)kl, val, (size_t)vl,
                                         NULL, 0, errstr, sizeof(errstr)), 0);
            }
    CHECK_MSG(kio_producer_flush(p, 10000, errstr, sizeof(errstr)) == 0, "flush: %s", errstr);
    long long delivered = -1, failed = -1;
    kio_producer_stats(p, &delivered, &failed);
    CHECK_EQ_INT(delivered, 2 * N_USERS * PER_USER);
    CHECK_EQ_INT(failed, 0);
    kio_producer_destroy(p);

    const kio_prop cp[] = {bs[0], {"group.id", "test-copart"}};
    kio_consumer *c = kio_consumer_new(cp, 2, topics, 2, errstr, sizeof(errstr));
    CHECK_MSG(c != NULL, "consumer: %s", errstr);
    copart_seen *s = malloc(sizeof(*s));
    memset(s->part, -1, sizeof(s->part));
    memset(s->count, 0, sizeof(s->count));
    long got = consume_n(c, 2 * N_USERS * PER_USER, 30.0, on_copart, s);
    CHECK_EQ_INT(got, 2 * N_USERS * PER_USER);
    CHECK_EQ_INT(kio_consumer_assigned(c), 2 * PARTS);
    for (int u = 0; u < N_USERS; u++) {
        CHECK_EQ_INT(s->count[0][u], PER_USER);
        CHECK_EQ_INT(s->count[1][u], PER_USER);
        CHECK_EQ_INT(s->part[0][u], s->part[1][u]);
    }
    /* Nothing more arrives. */
    CHECK_EQ_INT(consume_n(c, 1, 0.5, NULL, NULL), 0);
    CHECK_EQ_INT(kio_consumer_commit(c, errstr, sizeof(errstr)), 0);
    consume_n(c, 1, 0.5, NULL, NULL); /* serve the commit result */
    char last[512];
    long long nerr = kio_consumer_errors(c, last, sizeof(last));
    CHECK_MSG(nerr == 0, "%lld consumer errors, last: %s", nerr, last);

    /* The committed offsets are the ends of the partitions (what lag monitoring reads). */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2 * PARTS);
    for (int t = 0; t < 2; t++)
        for (int q = 0; q < PARTS; q++) rd_kafka_topic_partition_list_add(l, topics[t], q);
    CHECK_EQ_INT(rd_kafka_committed(kio_consumer_handle(c), l, 5000), 0);
    long long total = 0;
    for (int i = 0; i < l->cnt; i++) {
        CHECK_EQ_INT(l->elems[i].err, 0);
        total += l->elems[i].offset;
    }
    CHECK_EQ_INT(total, 2 * N_USERS * PER_USER);
    rd_kafka_topic_partition_list_destroy(l);
    free(s);
    kio_consumer_close(c);
}

typedef struct {
    int assigns, revokes, revoked_parts;
    long min_offset;
} hook_seen;

static void on_assign_3(void *opaque, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    hook_seen *h = opaque;
    (void)rk;
    h->assigns++;
    for (int i = 0; i < parts->cnt; i++) parts->elems[i].offset = 3;   /* e.g. a stored position */
}

static void on_revoke_count(void *opaque, rd_kafka_t *rk,
                            const rd_kafka_topic_partition_list_t *parts) {
    hook_seen *h = opaque;
    (void)rk;
    h->revokes++;
    h->revoked_parts += parts->cnt;
}

static void on_hook_msg(const rd_kafka_message_t *m, void *ud) {
    hook_seen *h = ud;
    if (m->offset < h->min_offset) h->min_offset = (long)m->offset;
}

/* The assignment hook decides where each partition starts; the revocation hook runs while
 * the partitions are still assigned (here: at close). */
static void test_rebalance_hooks(const kio_prop *bs) {
    const char *topics[2] = {T_HOME, T_SEARCH};
    const kio_prop cp[] = {bs[0], {"group.id", "test-hooks"}};
    kio_consumer *c = kio_consumer_new(cp, 2, topics, 2, errstr, sizeof(errstr));
    CHECK_MSG(c != NULL, "consumer: %s", errstr);
    hook_seen h = {0, 0, 0, 1L << 30};
    kio_consumer_set_rebalance_hooks(c, on_assign_3, on_revoke_count, &h);
    long want = 2 * N_USERS * PER_USER - 2 * PARTS * 3;
    CHECK_EQ_INT(consume_n(c, want, 30.0, on_hook_msg, &h), want);
    CHECK_EQ_INT(consume_n(c, 1, 0.5, NULL, NULL), 0);   /* the first 3 of each never come */
    CHECK_EQ_INT(h.min_offset, 3);
    CHECK_EQ_INT(h.assigns, 1);
    CHECK_EQ_INT(h.revokes, 0);
    kio_consumer_close(c);
    CHECK_EQ_INT(h.revokes, 1);
    CHECK_EQ_INT(h.revoked_parts, 2 * PARTS);
}

/* Two members of one group: range gives each the same partition numbers of both topics. */
static void test_range_two_members(const kio_prop *bs) {
    const char *topics[2] = {T_HOME, T_SEARCH};
    /* short heartbeats: the group re-forms within a second of the second member joining,
     * also on a loaded machine (the default 3 s interval made this flaky under load) */
    const kio_prop cp[] = {bs[0], {"group.id", "test-range"}, {"heartbeat.interval.ms", "300"},
                           {"session.timeout.ms", "6000"}};
    kio_consumer *c[2];
    for (int i = 0; i < 2; i++) {
        c[i] = kio_consumer_new(cp, 4, topics, 2, errstr, sizeof(errstr));
        CHECK_MSG(c[i] != NULL, "consumer: %s", errstr);
    }
    double end = now_s() + 60.0;
    long got = 0;
    /* Both must poll for the group to settle: 4 partitions of each topic per member. */
    while (now_s() < end && !(kio_consumer_assigned(c[0]) == PARTS &&
                              kio_consumer_assigned(c[1]) == PARTS)) {
        got += consume_n(c[0], 1000000, 0.1, NULL, NULL);
        got += consume_n(c[1], 1000000, 0.1, NULL, NULL);
    }
    CHECK_EQ_INT(kio_consumer_assigned(c[0]), PARTS);
    CHECK_EQ_INT(kio_consumer_assigned(c[1]), PARTS);
    int owner[2][PARTS];
    memset(owner, -1, sizeof(owner));
    for (int i = 0; i < 2; i++) {
        rd_kafka_topic_partition_list_t *a = NULL;
        CHECK_EQ_INT(rd_kafka_assignment(kio_consumer_handle(c[i]), &a), 0);
        CHECK_EQ_INT(a->cnt, PARTS);
        for (int j = 0; j < a->cnt; j++) {
            int t = strcmp(a->elems[j].topic, T_HOME) == 0 ? 0 : 1;
            CHECK_EQ_INT(owner[t][a->elems[j].partition], -1);
            owner[t][a->elems[j].partition] = i;
        }
        rd_kafka_topic_partition_list_destroy(a);
    }
    for (int q = 0; q < PARTS; q++) {
        CHECK(owner[0][q] >= 0);
        CHECK_EQ_INT(owner[0][q], owner[1][q]);
    }
    printf("range, 2 members: member 0 owns partitions");
    for (int q = 0; q < PARTS; q++)
        if (owner[0][q] == 0) printf(" %d", q);
    printf(" of both topics (%ld messages consumed while settling)\n", got);
    for (int i = 0; i < 2; i++) kio_consumer_close(c[i]);
}

static void on_hdr(const rd_kafka_message_t *m, void *ud) {
    int *n = ud;
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t vl = 0;
    CHECK_EQ_INT(rd_kafka_message_headers(m, &h), 0);
    CHECK_EQ_INT(rd_kafka_header_cnt(h), 2);
    CHECK_EQ_INT(rd_kafka_header_get_last(h, "reason", &v, &vl), 0);
    CHECK(vl == strlen("bad avro: truncated") && memcmp(v, "bad avro: truncated", vl) == 0);
    CHECK_EQ_INT(rd_kafka_header_get_last(h, "src.topic", &v, &vl), 0);
    CHECK(vl == strlen(T_HOME) && memcmp(v, T_HOME, vl) == 0);
    CHECK(m->len == 3 && memcmp(m->payload, "\xC3\x01\x00", 3) == 0);
    (*n)++;
}

static void test_headers(const kio_prop *bs) {
    kio_producer *p = kio_producer_new(bs, 1, errstr, sizeof(errstr));
    CHECK_MSG(p != NULL, "producer: %s", errstr);
    const char *hdrs[] = {"reason", "bad avro: truncated", "src.topic", T_HOME};
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(kio_produce(p, T_REQ, "7", 1, "\xC3\x01\x00", 3, hdrs, 2,
                                 errstr, sizeof(errstr)), 0);
    CHECK_MSG(kio_producer_flush(p, 10000, errstr, sizeof(errstr)) == 0, "flush: %s", errstr);
    kio_producer_destroy(p);

    const kio_prop cp[] = {bs[0], {"group.id", "test-headers"}};
    const char *t[] = {T_REQ};
    kio_consumer *c = kio_consumer_new(cp, 2, t, 1, errstr, sizeof(errstr));
    CHECK_MSG(c != NULL, "consumer: %s", errstr);
    int seen = 0;
    CHECK_EQ_INT(consume_n(c, 3, 30.0, on_hdr, &seen), 3);
    CHECK_EQ_INT(seen, 3);
    kio_consumer_close(c);
}

/* A delivery that cannot succeed is counted as failed and reported by flush. */
static void test_delivery_failure(const kio_prop *bs) {
    const kio_prop pp[] = {bs[0], {"message.timeout.ms", "300"}};
    kio_producer *p = kio_producer_new(pp, 2, errstr, sizeof(errstr));
    CHECK_MSG(p != NULL, "producer: %s", errstr);
    /* Partition 9 does not exist in a 4-partition topic: the message times out. */
    CHECK_EQ_INT(rd_kafka_producev(kio_producer_handle(p),
                                   RD_KAFKA_V_TOPIC(T_REQ), RD_KAFKA_V_PARTITION(9),
                                   RD_KAFKA_V_VALUE("x", 1),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END), 0);
    CHECK_EQ_INT(kio_producer_flush(p, 5000, errstr, sizeof(errstr)), -1);
    CHECK_CONTAINS(errstr, "1 deliveries failed");
    long long ok = -1, failed = -1;
    kio_producer_stats(p, &ok, &failed);
    CHECK_EQ_INT(ok, 0);
    CHECK_EQ_INT(failed, 1);
    CHECK_EQ_INT(kio_producer_flush(p, 1000, errstr, sizeof(errstr)), 0); /* nothing new */
    kio_producer_destroy(p);
}

static void bench(kio_mock *m, const kio_prop *bs) {
    const long N = 200000;
    const char *t[] = {"m3rec.bench"};
    /* 16 partitions: the mock keeps only ~5 MB per partition (older data is dropped),
     * and 200k x ~230 B must fit. */
    CHECK_EQ_INT(kio_mock_create_topic(m, t[0], 16, errstr, sizeof(errstr)), 0);
    kio_producer *p = kio_producer_new(bs, 1, errstr, sizeof(errstr));
    CHECK_MSG(p != NULL, "producer: %s", errstr);
    char val[200];
    memset(val, 'v', sizeof(val));
    double t0 = now_s();
    for (long i = 0; i < N; i++) {
        char key[24];
        int kl = snprintf(key, sizeof(key), "%ld", i % 100000);
        CHECK_EQ_INT(kio_produce(p, t[0], key, (size_t)kl, val, sizeof(val), NULL, 0,
                                 errstr, sizeof(errstr)), 0);
        if ((i & 1023) == 0) kio_producer_poll(p);
    }
    CHECK_MSG(kio_producer_flush(p, 60000, errstr, sizeof(errstr)) == 0, "flush: %s", errstr);
    double tp = now_s() - t0;
    long long ok = 0;
    kio_producer_stats(p, &ok, NULL);
    CHECK_EQ_INT(ok, N);
    kio_producer_destroy(p);

    const kio_prop cp[] = {bs[0], {"group.id", "bench"}};
    kio_consumer *c = kio_consumer_new(cp, 2, t, 1, errstr, sizeof(errstr));
    CHECK_MSG(c != NULL, "consumer: %s", errstr);
    /* Time from the first message on, so the group join is not counted. */
    CHECK_EQ_INT(consume_n(c, 1, 30.0, NULL, NULL), 1);
    t0 = now_s();
    long got = 1 + consume_n(c, N - 1, 60.0, NULL, NULL);
    double tc = now_s() - t0;
    CHECK_EQ_INT(got, N);
    kio_consumer_close(c);
    printf("throughput (mock broker, %ld x 200 B): produce+flush %.0f msg/s, "
           "consume %.0f msg/s\n", N, N / tp, (N - 1) / tc);
}

static kio_producer_state pstate(kio_producer *p) {
    kio_producer_state st;
    kio_producer_state_get(p, &st);
    return st;
}

/* The broker goes down: the producer's messages wait (a flush times out with 1, not a
 * failure), it reports the outage; back up, they are delivered and the outage ends. */
static void test_outage_producer(kio_mock *m, const kio_prop *bs) {
    const kio_prop pp[] = {bs[0], {"message.timeout.ms", "0"}};
    kio_producer *p = kio_producer_new(pp, 2, errstr, sizeof(errstr));
    CHECK_MSG(p != NULL, "producer: %s", errstr);
    CHECK_EQ_INT(kio_produce(p, T_REQ, "1", 1, "a", 1, NULL, 0, errstr, sizeof(errstr)), 0);
    CHECK_MSG(kio_producer_flush(p, 10000, errstr, sizeof(errstr)) == 0, "%s", errstr);
    kio_producer_state st = pstate(p);
    CHECK_EQ_INT(st.queued, 0);
    CHECK_EQ_INT(st.down_ms, 0);
    CHECK_EQ_INT(st.max_messages, 100000);   /* librdkafka 2.0's default bound */
    CHECK(kio_mock_set_down(m, 1, errstr, sizeof(errstr)) == 0);
    for (int i = 0; i < 10; i++)
        CHECK_EQ_INT(kio_produce(p, T_REQ, "1", 1, "bb", 2, NULL, 0, errstr, sizeof(errstr)), 0);
    double t0 = now_s();
    while ((st = pstate(p)).down_ms == 0 && now_s() - t0 < KIO_STALL_MS / 1000.0 + 5)
        kio_producer_flush(p, 200, errstr, sizeof(errstr));
    printf("outage seen after %.1f s: %lld queued (%lld bytes)\n", now_s() - t0, st.queued,
           st.queued_bytes);
    CHECK(st.down_ms > 0);
    CHECK_EQ_INT(st.queued, 10);
    CHECK_EQ_INT(st.queued_bytes, 30);
    CHECK_EQ_INT(kio_producer_flush(p, 500, errstr, sizeof(errstr)), 1);   /* waiting, not failed */
    CHECK_CONTAINS(errstr, "10 messages not delivered");
    CHECK(kio_mock_set_down(m, 0, errstr, sizeof(errstr)) == 0);
    CHECK_MSG(kio_producer_flush(p, 30000, errstr, sizeof(errstr)) == 0, "%s", errstr);
    st = pstate(p);
    CHECK_EQ_INT(st.queued, 0);
    CHECK_EQ_INT(st.down_ms, 0);
    long long ok = -1, failed = -1;
    kio_producer_stats(p, &ok, &failed);
    CHECK_EQ_INT(ok, 11);
    CHECK_EQ_INT(failed, 0);
    kio_producer_destroy(p);
}

/* A paused consumer gets nothing; resumed, it gets everything once, from where it was
 * (the rebalance while paused is it_kafka's outage test). */
static void test_pause(const kio_prop *bs) {
    const kio_prop cp[] = {bs[0], {"group.id", "kio-pause"}};
    const char *t[] = {T_HOME};
    kio_consumer *c = kio_consumer_new(cp, 2, t, 1, errstr, sizeof(errstr));
    CHECK_MSG(c != NULL, "consumer: %s", errstr);
    rd_kafka_message_t *msgs[64];
    long long got = 0;
    double t0 = now_s();
    while (got < 100 && now_s() - t0 < 30) {   /* some of what copartition produced */
        int k = kio_consumer_poll(c, msgs, 64, 100, errstr, sizeof(errstr));
        CHECK(k >= 0);
        for (int i = 0; i < k; i++) rd_kafka_message_destroy(msgs[i]);
        got += k;
    }
    CHECK(got >= 100);
    CHECK(kio_consumer_pause(c, 1, errstr, sizeof(errstr)) == 0);
    CHECK_EQ_INT(kio_consumer_paused(c), 1);
    long long during = 0;
    for (t0 = now_s(); now_s() - t0 < 1.5;) {
        int k = kio_consumer_poll(c, msgs, 64, 100, errstr, sizeof(errstr));
        for (int i = 0; i < k; i++) rd_kafka_message_destroy(msgs[i]);
        during += k;
    }
    CHECK_MSG(during <= 64, "%lld messages while paused", during);   /* one poll's prefetch */
    CHECK(kio_consumer_pause(c, 0, errstr, sizeof(errstr)) == 0);
    CHECK_EQ_INT(kio_consumer_paused(c), 0);
    long long after = 0;
    for (t0 = now_s(); now_s() - t0 < 30 && got + during + after < N_USERS * PER_USER;) {
        int k = kio_consumer_poll(c, msgs, 64, 100, errstr, sizeof(errstr));
        for (int i = 0; i < k; i++) rd_kafka_message_destroy(msgs[i]);
        after += k;
    }
    printf("pause: %lld before, %lld while paused, %lld after the resume\n", got, during, after);
    CHECK_EQ_INT(got + during + after, N_USERS * PER_USER);
    kio_consumer_close(c);
}


/* One partition held (kio_consumer_hold) while the other flows; a consumer pause and resume
 * in between leaves the held one paused; released, it delivers the rest: each offset of
 * both partitions arrives (duplicates of a re-fetch allowed), and kio_consumer_lag tells a
 * held partition's lag from a drained one's 0. The embedded broker is recognised. */
#define HOLD_N 300
static void hold_poll(kio_consumer *c, double secs, int *seen, long long *per_part) {
    rd_kafka_message_t *msgs[64];
    for (double t0 = now_s(); now_s() - t0 < secs;) {
        int k = kio_consumer_poll(c, msgs, 64, 50, errstr, sizeof(errstr));
        CHECK(k >= 0);
        for (int i = 0; i < k; i++) {
            int p = msgs[i]->partition;
            CHECK(p >= 0 && p < 2 && msgs[i]->offset >= 0 && msgs[i]->offset < HOLD_N);
            per_part[p]++;
            seen[p * HOLD_N + msgs[i]->offset] = 1;
            rd_kafka_message_destroy(msgs[i]);
        }
    }
}

static void test_hold(kio_mock *m, const kio_prop *bs) {
    const char *topic = "kio.hold";
    CHECK_MSG(kio_mock_create_topic(m, topic, 2, errstr, sizeof(errstr)) == 0, "%s", errstr);
    kio_producer *p = kio_producer_new(bs, 1, errstr, sizeof(errstr));
    CHECK_MSG(p != NULL, "producer: %s", errstr);
    CHECK_EQ_INT(kio_producer_embedded(p, 5000), 1);
    /* keys for each partition: HOLD_N messages each */
    int sent[2] = {0, 0};
    for (int u = 0; sent[0] < HOLD_N || sent[1] < HOLD_N; u++) {
        char key[16];
        int klen = snprintf(key, sizeof key, "%d", u);
        int part = kio_partition_for_key(key, (size_t)klen, 2);
        if (sent[part] == HOLD_N) continue;
        sent[part]++;
        CHECK(kio_produce(p, topic, key, (size_t)klen, "v", 1, NULL, 0, errstr, sizeof(errstr)) == 0);
    }
    CHECK(kio_producer_flush(p, 10000, errstr, sizeof(errstr)) == 0);
    kio_producer_destroy(p);
    const kio_prop cp[] = {bs[0], {"group.id", "kio-hold"}, {"fetch.message.max.bytes", "1000"}};
    const char *t[] = {topic};
    kio_consumer *c = kio_consumer_new(cp, 3, t, 1, errstr, sizeof(errstr));
    CHECK_MSG(c != NULL, "consumer: %s", errstr);
    static int seen[2 * HOLD_N];
    long long per[2] = {0, 0};
    while (kio_consumer_assigned(c) == 0) hold_poll(c, 0.1, seen, per);
    unsigned r = kio_consumer_rebalances(c);
    CHECK(r >= 1);
    CHECK(kio_consumer_hold(c, topic, 0, 1, errstr, sizeof(errstr)) == 0);
    hold_poll(c, 3.0, seen, per);
    long long p0_held = per[0];
    CHECK_MSG(per[1] >= HOLD_N, "partition 1 delivered %lld while 0 was held", per[1]);
    /* the consumer's pause and resume leave the hold alone */
    CHECK(kio_consumer_pause(c, 1, errstr, sizeof(errstr)) == 0);
    CHECK(kio_consumer_pause(c, 0, errstr, sizeof(errstr)) == 0);
    hold_poll(c, 1.0, seen, per);
    CHECK_MSG(per[0] <= p0_held + 64, "held partition 0 delivered %lld more", per[0] - p0_held);
    int64_t pos0 = 0;
    while (pos0 < HOLD_N && seen[pos0]) pos0++;
    CHECK_EQ_INT(kio_consumer_lag(c, topic, 1, HOLD_N), 0);
    if (pos0 < HOLD_N) CHECK(kio_consumer_lag(c, topic, 0, pos0) != 0);   /* > 0, or -1 not fetched */
    CHECK_EQ_INT(kio_consumer_lag(c, "kio.not-assigned", 0, 0), 0);
    CHECK(kio_consumer_hold(c, topic, 0, 0, errstr, sizeof(errstr)) == 0);
    hold_poll(c, 3.0, seen, per);
    for (int i = 0; i < 2 * HOLD_N; i++) CHECK_MSG(seen[i], "partition %d offset %d never arrived", i / HOLD_N, i % HOLD_N);
    printf("hold: partition 0 gave %lld while held (prefetched), %lld in all; partition 1 %lld\n",
           p0_held, per[0], per[1]);
    CHECK_EQ_INT(kio_consumer_rebalances(c), r);
    CHECK_EQ_INT(kio_consumer_resets(c, NULL, 0), 0);
    kio_consumer_close(c);
}

/* ---- the reader: chosen partitions outside any group ---- */

#define T_RD "m3rec.reader"
#define T_RD_EMPTY "m3rec.reader.empty"

typedef struct {
    int calls, stop_at;
    int64_t last_offset;
    int in_order;
} drain_seen;

static int on_drained(void *ud, const rd_kafka_message_t *m) {
    drain_seen *d = ud;
    if (m->offset <= d->last_offset) d->in_order = 0;
    d->last_offset = m->offset;
    return ++d->calls == d->stop_at ? 7 : 0;
}

/* Poll r until `want` messages came or `secs` passed; returns how many came. */
static int reader_take(kio_reader *r, int want, double secs) {
    rd_kafka_message_t *msgs[64];
    int got = 0;
    double end = now_s() + secs;
    while (got < want && now_s() < end) {
        int k = kio_reader_poll(r, msgs, 64, 200, errstr, sizeof(errstr));
        CHECK_MSG(k >= 0, "reader poll: %s", errstr);
        for (int i = 0; i < k; i++) rd_kafka_message_destroy(msgs[i]);
        got += k;
    }
    return got;
}

static void test_reader(kio_mock *m, const kio_prop *bs) {
    CHECK_EQ_INT(kio_mock_create_topic(m, T_RD, 2, errstr, sizeof(errstr)), 0);
    CHECK_EQ_INT(kio_mock_create_topic(m, T_RD_EMPTY, 1, errstr, sizeof(errstr)), 0);
    kio_producer *p = kio_producer_new(bs, 1, errstr, sizeof(errstr));
    CHECK_MSG(p != NULL, "producer: %s", errstr);
    int per[2] = {0, 0};
    char key[16];
    for (int i = 0; i < 40; i++) {
        int kl = snprintf(key, sizeof(key), "k%d", i);
        per[kio_partition_for_key(key, (size_t)kl, 2)]++;
        CHECK_EQ_INT(kio_produce(p, T_RD, key, (size_t)kl, "v", 1, NULL, 0, errstr,
                                 sizeof(errstr)), 0);
    }
    CHECK_MSG(kio_producer_flush(p, 10000, errstr, sizeof(errstr)) == 0, "flush: %s", errstr);
    CHECK(per[0] > 0 && per[1] > 0);

    kio_reader *r = kio_reader_new(bs, 1, 1, errstr, sizeof(errstr));
    CHECK_MSG(r != NULL, "reader: %s", errstr);
    CHECK_EQ_INT(kio_reader_add(r, T_RD, 0, -5, errstr, sizeof(errstr)), -1);
    CHECK_CONTAINS(errstr, "neither");
    /* partition 1 read through poll while partition 0 is drained: neither takes the
     * other's messages */
    CHECK_EQ_INT(kio_reader_add(r, T_RD, 1, KIO_FROM_BEGINNING, errstr, sizeof(errstr)), 0);
    drain_seen d = {0, -1, -1, 1};
    CHECK_MSG(kio_reader_drain(r, T_RD, 0, KIO_FROM_BEGINNING, on_drained, &d, 10000, errstr,
                               sizeof(errstr)) == 0, "drain: %s", errstr);
    CHECK_EQ_INT(d.calls, per[0]);
    CHECK(d.in_order);
    CHECK_EQ_INT(reader_take(r, per[1], 10.0), per[1]);
    for (double end = now_s() + 5.0; !kio_reader_at_end(r, T_RD, 1) && now_s() < end;)
        CHECK(reader_take(r, 1, 0.5) == 0);
    CHECK(kio_reader_at_end(r, T_RD, 1));
    CHECK(!kio_reader_at_end(r, T_RD, 0));   /* drained, so no longer read */

    /* a drain stopped by its callback returns the callback's code */
    drain_seen d2 = {0, 2, -1, 1};
    CHECK_EQ_INT(kio_reader_drain(r, T_RD, 0, KIO_FROM_BEGINNING, on_drained, &d2, 10000,
                                  errstr, sizeof(errstr)), 7);
    CHECK_EQ_INT(d2.calls, 2);
    /* a partition drained just now can be read again at once (librdkafka stops an
       unassigned partition asynchronously: the reader must not lose it) */
    CHECK_EQ_INT(kio_reader_add(r, T_RD, 0, KIO_FROM_BEGINNING, errstr, sizeof(errstr)), 0);
    CHECK_EQ_INT(reader_take(r, per[0], 10.0), per[0]);
    /* an empty partition drains at once; from the end only what is written after */
    drain_seen d3 = {0, -1, -1, 1};
    CHECK_MSG(kio_reader_drain(r, T_RD_EMPTY, 0, KIO_FROM_BEGINNING, on_drained, &d3, 10000,
                               errstr, sizeof(errstr)) == 0, "drain empty: %s", errstr);
    CHECK_EQ_INT(d3.calls, 0);
    CHECK_EQ_INT(kio_reader_add(r, T_RD, 0, KIO_FROM_END, errstr, sizeof(errstr)), 0);
    CHECK_EQ_INT(reader_take(r, 1, 2.0), 0);   /* nothing old comes */
    CHECK_EQ_INT(kio_reader_remove(r, T_RD, 1, errstr, sizeof(errstr)), 0);
    for (int i = 0, sent = 0; sent < 2; i++) {   /* two new messages on partition 0 */
        int kl = snprintf(key, sizeof(key), "n%d", i);
        if (kio_partition_for_key(key, (size_t)kl, 2) != 0) continue;
        CHECK_EQ_INT(kio_produce(p, T_RD, key, (size_t)kl, "w", 1, NULL, 0, errstr,
                                 sizeof(errstr)), 0);
        sent++;
    }
    CHECK_MSG(kio_producer_flush(p, 10000, errstr, sizeof(errstr)) == 0, "flush: %s", errstr);
    CHECK_EQ_INT(reader_take(r, 2, 10.0), 2);
    kio_reader_destroy(r);
    kio_producer_destroy(p);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines survive an abort */
    test_murmur2();
    test_unreachable();

    const char *topics[] = {T_HOME, T_SEARCH, T_REQ};
    kio_mock *m = kio_mock_new(PARTS, topics, 3, errstr, sizeof(errstr));
    CHECK_MSG(m != NULL, "mock: %s", errstr);
    const kio_prop bs[] = {{"bootstrap.servers", kio_mock_bootstraps(m)}};
    CHECK_CONTAINS(bs[0].value, "127.0.0.1:");

    test_bad_config(bs);
    test_check_topics(m, bs);
    test_copartition(bs);
    test_rebalance_hooks(bs);
    test_range_two_members(bs);
    test_headers(bs);
    test_delivery_failure(bs);
    test_outage_producer(m, bs);
    test_pause(bs);
    test_hold(m, bs);
    test_reader(m, bs);
    bench(m, bs);

    kio_mock_destroy(m);
    printf("test_kio: all checks passed\n");
    return 0;
}
