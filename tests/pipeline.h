/* pipeline.h - what the end-to-end tests share: a simulated stream with bad messages in
 * it, the real m3rec-worker process, and a check of everything it published.
 *
 * Header-only (static functions) so that each test program includes what it uses; the
 * broker may be the embedded mock cluster (test_e2e) or a real Kafka (it_kafka). */
#ifndef M3_PIPELINE_H
#define M3_PIPELINE_H
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "check.h"
#include "proc.h"
#include "base/clock.h"
#include "base/json.h"
#include "eval/sim.h"
#include "stream/codec.h"
#include "stream/kio.h"

#define PL_MAX_BAD 16

typedef struct {
    const char *suffix;        /* topic without the prefix: "events.home", "requests" */
    unsigned char bytes[512];
    size_t len;
    const char *expect;        /* a substring of the DLQ reason */
} pl_bad;

/* What a produced stream holds, for the checks. */
typedef struct {
    char prefix[64];
    uint64_t seed;
    int64_t n_impressions;
    long long n_cands;         /* score-request candidates: one prediction each */
    sim_stats st;
    pl_bad bad[PL_MAX_BAD];
    int n_bad;
} pl_stream;

/* Registry framing (it_registry): a type whose id here is not 0 is encoded as 00 + id +
 * datum instead of single-object encoding; a registry-framed prediction must carry
 * pl_reg_pred_id and decodes with the writer fingerprint pl_reg_pred_fp. */
static uint32_t pl_reg_ids[M3_EV_PREDICTION + 1];
static uint32_t pl_reg_pred_id;
static uint64_t pl_reg_pred_fp;

static inline long pl_encode(codec *cd, const m3_event *ev, unsigned char *buf, size_t cap) {
    char reason[CODEC_REASON_MAX];
    long len = codec_encode(cd, ev, buf, cap, reason, sizeof reason);
    CHECK_MSG(len > 0, "encode: %s", reason);
    if (ev->type <= M3_EV_PREDICTION && pl_reg_ids[ev->type]) {
        const long cut = CODEC_HEADER_LEN - 5;   /* the datum moves up over the shorter header */
        memmove(buf + 5, buf + CODEC_HEADER_LEN, (size_t)(len - CODEC_HEADER_LEN));
        uint32_t id = pl_reg_ids[ev->type];
        buf[0] = 0;
        for (int i = 0; i < 4; i++) buf[1 + i] = (unsigned char)(id >> (24 - 8 * i));
        len -= cut;
    }
    return len;
}

/* Decode a prediction in either framing (registry: the id must be pl_reg_pred_id). */
static inline int pl_decode_prediction(codec *cd, const rd_kafka_message_t *m, m3_event *ev,
                                       char *reason, size_t n) {
    const unsigned char *p = m->payload;
    if (m->len < 5 || p[0] != 0) return codec_decode(cd, p, m->len, ev, reason, n);
    uint32_t id = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    CHECK_MSG(pl_reg_pred_id && id == pl_reg_pred_id, "prediction framed with schema id %u, "
              "the registry gave %u", id, pl_reg_pred_id);
    return codec_decode_datum(cd, pl_reg_pred_fp, p + 5, m->len - 5, ev, reason, n);
}

static inline void pl_topic(char *out, size_t n, const char *prefix, const char *suffix) {
    CHECK((size_t)snprintf(out, n, "%s.%s", prefix, suffix) < n);
}

static inline void pl_sample_impression(m3_event *ev, const char *scenario) {
    memset(ev, 0, sizeof *ev);
    ev->type = M3_EV_IMPRESSION;
    m3_impression *im = &ev->u.imp;
    snprintf(im->impression_id, sizeof im->impression_id, "bad-imp");
    im->ts_ms = 1767225600000LL;
    snprintf(im->scenario, sizeof im->scenario, "%s", scenario);
    im->user_id = 42;
    im->item_id = 1000001;
    im->item_num.n = 1;
    snprintf(im->item_num.kv[0].name, M3_NAME_MAX, "price");
    im->item_num.kv[0].value = 1.5f;
}

static inline pl_bad *pl_add_bad(pl_stream *s, const char *suffix, const char *expect) {
    CHECK(s->n_bad < PL_MAX_BAD);
    pl_bad *b = &s->bad[s->n_bad++];
    memset(b, 0, sizeof *b);
    b->suffix = suffix;
    b->expect = expect;
    return b;
}

/* One bad message of every kind, each with the reason the worker must give. */
static inline void pl_make_bad(codec *cd, pl_stream *s) {
    m3_event ev;
    unsigned char good[512];
    pl_sample_impression(&ev, "home");
    long glen = pl_encode(cd, &ev, good, sizeof good);
    pl_bad *b = pl_add_bad(s, "events.home", "magic");
    /* not 00 first: that is registry framing, with a reason of its own (format.c) */
    static const unsigned char wrong[] = {0x01, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    memcpy(b->bytes, wrong, sizeof wrong);
    b->len = sizeof wrong;
    b = pl_add_bad(s, "events.search", "fingerprint");
    memcpy(b->bytes, good, (size_t)glen);
    b->bytes[2] ^= 0xff; /* a fingerprint no schema has */
    b->len = (size_t)glen;
    b = pl_add_bad(s, "events.home", "truncated");
    memcpy(b->bytes, good, (size_t)glen / 2);
    b->len = (size_t)glen / 2;
    /* a huge string length right after the header: zig-zag varint of 2^62 */
    b = pl_add_bad(s, "events.product", "length");
    static const unsigned char huge[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    memcpy(b->bytes, good, CODEC_HEADER_LEN);
    memcpy(b->bytes + CODEC_HEADER_LEN, huge, sizeof huge);
    b->len = CODEC_HEADER_LEN + sizeof huge;
    /* NaN feature: patch the bytes of 1.5f in a valid message */
    b = pl_add_bad(s, "events.home", "non-finite");
    memcpy(b->bytes, good, (size_t)glen);
    b->len = (size_t)glen;
    static const unsigned char f15[] = {0x00, 0x00, 0xc0, 0x3f}, fnan[] = {0x00, 0x00, 0xc0, 0x7f};
    size_t at = 0;
    while (at + 4 <= b->len && memcmp(b->bytes + at, f15, 4) != 0) at++;
    CHECK(at + 4 <= b->len);
    memcpy(b->bytes + at, fnan, 4);
    /* an impression whose scenario is not its topic's, and one on the requests topic */
    pl_sample_impression(&ev, "mars");
    b = pl_add_bad(s, "events.home", "does not match topic");
    b->len = (size_t)pl_encode(cd, &ev, b->bytes, sizeof b->bytes);
    b = pl_add_bad(s, "requests", "on the requests topic");
    b->len = (size_t)pl_encode(cd, &ev, b->bytes, sizeof b->bytes);
    /* a score request for a scenario no configuration knows */
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_SCORE_REQUEST;
    snprintf(ev.u.req.request_id, M3_ID_MAX, "bad-req");
    ev.u.req.ts_ms = 1767225600000LL;   /* a plausible time: refused for its scenario only */
    snprintf(ev.u.req.scenario, M3_NAME_MAX, "mars");
    ev.u.req.user_id = 42;
    m3_candidate cand = {.item_id = 7};
    ev.u.req.n_cands = 1;
    ev.u.req.cands = &cand;
    b = pl_add_bad(s, "requests", "unknown scenario 'mars'");
    b->len = (size_t)pl_encode(cd, &ev, b->bytes, sizeof b->bytes);
    /* an output message on an input topic */
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_PREDICTION;
    snprintf(ev.u.pred.id, M3_ID_MAX, "x");
    snprintf(ev.u.pred.scenario, M3_NAME_MAX, "home");
    b = pl_add_bad(s, "events.home", "not an input");
    b->len = (size_t)pl_encode(cd, &ev, b->bytes, sizeof b->bytes);
    pl_add_bad(s, "events.search", "empty message");
}

/* The broker's address from M3_KAFKA_DIR/bootstrap (CTest's fixture starts it) into
 * bootstrap, the directory into dir: for the integration tests (it_*.c). */
static inline void pl_read_bootstrap(char *bootstrap, size_t n, char *dir, size_t dir_n) {
    const char *d = getenv("M3_KAFKA_DIR");
    CHECK_MSG(d, "M3_KAFKA_DIR is not set: run this through ctest (it starts the broker)");
    snprintf(dir, dir_n, "%s", d);
    char path[600];
    snprintf(path, sizeof path, "%s/bootstrap", d);
    const char *t = proc_slurp(path);
    CHECK_MSG(t, "no %s: is the broker running (scripts/kafka --dir %s start)?", path, d);
    snprintf(bootstrap, n, "%s", t);
    bootstrap[strcspn(bootstrap, " \r\n")] = 0;
}

/* Create the six topics of prefix (the events of home, search and product, requests,
 * predictions, dlq) with parts partitions each on the broker at bootstrap (an existing
 * topic is fine). */
static inline void pl_create_topics(const char *bootstrap, const char *prefix, int parts) {
    static const char *suffix[] = {"events.home", "events.search", "events.product", "requests",
                                   "predictions", "dlq"};
    char names[6][128], err[512];
    const char *all[6];
    for (int i = 0; i < 6; i++) {
        pl_topic(names[i], sizeof names[i], prefix, suffix[i]);
        all[i] = names[i];
    }
    kio_prop props[] = {{"bootstrap.servers", bootstrap}};
    CHECK_MSG(kio_create_topics(props, 1, all, 6, parts, 30000, err, sizeof err) == 0, "%s", err);
}

#define PL_POLL_MAX 256

/* Up to PL_POLL_MAX messages from c into msgs (the caller destroys them); *last is when
 * messages last came. Returns their number, or -1 once nothing came for 20 s (drained). */
static inline int pl_poll(kio_consumer *c, rd_kafka_message_t **msgs, int64_t *last) {
    char err[512];
    int n = kio_consumer_poll(c, msgs, PL_POLL_MAX, 200, err, sizeof err);
    CHECK_MSG(n >= 0, "poll: %s", err);
    if (n > 0) *last = clk_mono_ms();
    else if (clk_mono_ms() - *last > 20000) return -1;
    return n;
}

/* A producer to bootstrap; one that cannot be made fails the test. */
static inline kio_producer *pl_producer(const char *bootstrap) {
    char err[512];
    kio_prop props[] = {{"bootstrap.servers", bootstrap}};
    kio_producer *p = kio_producer_new(props, 1, err, sizeof err);
    CHECK_MSG(p, "%s", err);
    return p;
}

static inline void pl_produce(kio_producer *p, const char *topic, int64_t user, const void *v, size_t len) {
    char key[32], err[256];
    int klen = snprintf(key, sizeof key, "%" PRId64, user);
    CHECK_MSG(kio_produce(p, topic, key, (size_t)klen, v, len, NULL, 0, err, sizeof err) == 0,
              "produce: %s", err);
}

/* Produce one encoded impression or conversion to <prefix>.events.<scenario>. */
static inline void pl_produce_event(kio_producer *p, const pl_stream *s, const char *scenario,
                                    const m3_event *ev, const void *v, size_t len) {
    char topic[128], suffix[64];
    snprintf(suffix, sizeof suffix, "events.%s", scenario);
    pl_topic(topic, sizeof topic, s->prefix, suffix);
    pl_produce(p, topic, ev->type == M3_EV_IMPRESSION ? ev->u.imp.user_id : ev->u.conv.user_id, v, len);
}

/* The simulator of stream s (its seed and length, defaults otherwise), its config in *sc. */
static inline sim *pl_sim_new(const pl_stream *s, sim_cfg *sc) {
    char err[256];
    sim_cfg_defaults(sc);
    sc->seed = s->seed;
    sc->n_impressions = s->n_impressions;
    sim *sm = sim_new(sc, err, sizeof err);
    CHECK_MSG(sm, "%s", err);
    return sm;
}

/* Produce impressions [from, to) of the simulator's stream (seed, n_impressions) with the
 * conversions and score requests that come with them; the bad messages go out spread
 * over the whole stream (with_bad). Returns when the producer has flushed. */
static inline void pl_produce_stream(kio_producer *p, codec *cd, pl_stream *s, int64_t from, int64_t to,
                              int with_bad) {
    char err[256], topic[128];
    sim_cfg sc;
    sim *sm = pl_sim_new(s, &sc);
    static unsigned char buf[1 << 16];
    m3_event ev;
    sim_truth tr;
    int64_t imp = 0;
    int next_bad = 0;
    int64_t every = s->n_impressions / (s->n_bad + 1) + 1;
    while (imp < to && sim_next(sm, &ev, &tr)) {
        int is_imp = ev.type == M3_EV_IMPRESSION;
        if (imp >= from) {
            long len = pl_encode(cd, &ev, buf, sizeof buf);
            if (ev.type == M3_EV_SCORE_REQUEST) {
                pl_topic(topic, sizeof topic, s->prefix, "requests");
                pl_produce(p, topic, ev.u.req.user_id, buf, (size_t)len);
                s->n_cands += ev.u.req.n_cands;
            } else {
                pl_produce_event(p, s, sc.scen_names[tr.scen], &ev, buf, (size_t)len);
            }
            if (with_bad && is_imp && next_bad < s->n_bad && (imp + 1) % every == 0) {
                const pl_bad *b = &s->bad[next_bad++];
                pl_topic(topic, sizeof topic, s->prefix, b->suffix);
                pl_produce(p, topic, 42 + next_bad, b->bytes, b->len);
            }
        }
        imp += is_imp;
        if ((imp & 1023) == 0) kio_producer_poll(p);
    }
    for (; with_bad && next_bad < s->n_bad; next_bad++) {
        const pl_bad *b = &s->bad[next_bad];
        pl_topic(topic, sizeof topic, s->prefix, b->suffix);
        pl_produce(p, topic, 42 + next_bad, b->bytes, b->len);
    }
    /* the conversions due after the last impression belong to the end of the stream */
    if (to >= s->n_impressions)
        while (sim_next(sm, &ev, &tr)) {
            CHECK_EQ_INT(ev.type, M3_EV_CONVERSION);
            long len = pl_encode(cd, &ev, buf, sizeof buf);
            pl_produce_event(p, s, sc.scen_names[tr.scen], &ev, buf, (size_t)len);
        }
    CHECK_MSG(kio_producer_flush(p, 60000, err, sizeof err) == 0, "flush: %s", err);
    sim_get_stats(sm, &s->st);
    sim_destroy(sm);
}

/* Start the worker against bootstrap with the stream's prefix, a consumer group and an
 * idle exit; its output goes to `log`. extra: more arguments (NULL-terminated) or NULL. */
static inline pid_t pl_spawn_worker(const char *bootstrap, const pl_stream *s, const char *group,
                             int idle_ms, const char *report, const char *log, char **extra) {
    char set_bs[256], set_prefix[128], set_group[256], set_idle[64];
    snprintf(set_bs, sizeof set_bs, "kafka.bootstrap.servers=%s", bootstrap);
    snprintf(set_prefix, sizeof set_prefix, "topic.prefix=%s", s->prefix);
    snprintf(set_group, sizeof set_group, "kafka.group.id=%s", group);
    snprintf(set_idle, sizeof set_idle, "worker.exit.idle.ms=%d", idle_ms);
    char *argv[80] = {M3_BINARY_DIR "/m3rec-worker", "--config", M3_SOURCE_DIR "/config/demo.properties",
                      "--set", "broker.embedded=false", "--set", "metrics.progress.ms=0",
                      "--set", "model.shadow=", "--set", set_bs, "--set", set_prefix,
                      "--set", set_group, "--set", set_idle, "--report", (char *)report};
    int n = 19;
    for (int i = 0; extra && extra[i] && n < 79; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    return proc_spawn(argv, log, log);
}

static inline json_node *pl_report(const char *path) {
    const char *text = proc_slurp(path);
    CHECK_MSG(text, "no report at %s", path);
    char err[256];
    json_node *j = json_parse(text, err, sizeof err);
    CHECK_MSG(j, "report %s: %s", path, err);
    return j;
}

/* A worker's report (with a store) after the whole stream s without bad messages: every
 * event counted and trained exactly once, whatever happened on the way. */
static inline void pl_check_exact(const json_node *r, const pl_stream *s) {
    CHECK_EQ_INT(json_number(json_get(r, "counters.impressions"), -1), s->n_impressions);
    CHECK_EQ_INT(json_number(json_get(r, "trained_ctr"), -1), s->n_impressions);
    CHECK_EQ_INT(json_number(json_get(r, "counters.conversions"), -1), s->st.conversions);
    CHECK_EQ_INT(json_number(json_get(r, "counters.requests"), -1), s->st.requests);
    CHECK_EQ_INT(json_number(json_get(r, "counters.dlq"), -1), 0);
    CHECK_EQ_INT(json_number(json_get(r, "trained_ctcvr"), -1) + json_number(json_get(r, "pending"), -1),
                 s->n_impressions);
}

static inline const char *pl_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t n) {
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t len;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    if (rd_kafka_header_get_last(h, name, &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    snprintf(buf, n, "%.*s", (int)len, (const char *)v);
    return buf;
}

/* Read the predictions and DLQ topics back and check: every impression and every
 * candidate has a prediction (duplicates tolerated: at least once), and every bad message
 * is in the DLQ with its expected reason and origin headers. */
static inline void pl_verify_outputs(const char *bootstrap, codec *cd, const pl_stream *s, int with_bad) {
    char err[512], t_pred[128], t_dlq[128], prefix[64];
    pl_topic(t_pred, sizeof t_pred, s->prefix, "predictions");
    pl_topic(t_dlq, sizeof t_dlq, s->prefix, "dlq");
    uint8_t *seen = calloc((size_t)s->n_impressions, 1);
    long long n_imp = 0, n_req = 0, dup = 0, n_dlq = 0;
    int found[PL_MAX_BAD] = {0};
    const char *topics[] = {t_pred, t_dlq};
    char group[128];
    snprintf(group, sizeof group, "%s-check", s->prefix);
    kio_prop props[] = {{"bootstrap.servers", bootstrap}, {"group.id", group}};
    kio_consumer *c = kio_consumer_new(props, 2, topics, 2, err, sizeof err);
    CHECK_MSG(c, "%s", err);
    snprintf(prefix, sizeof prefix, "imp-%llu-", (unsigned long long)s->seed);
    int want_bad = with_bad ? s->n_bad : 0;
    int64_t deadline = clk_mono_ms() + 90000, last = clk_mono_ms();
    m3_event ev;
    while (clk_mono_ms() < deadline && (n_imp + n_req < s->n_impressions + s->n_cands || n_dlq < want_bad)) {
        rd_kafka_message_t *msgs[PL_POLL_MAX];
        int n = pl_poll(c, msgs, &last);
        if (n < 0) break;
        for (int i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (strcmp(rd_kafka_topic_name(m->rkt), t_dlq) == 0) {
                char reason[256], origin[128], offset[32];
                CHECK(pl_header(m, "m3rec.dlq.reason", reason, sizeof reason));
                CHECK(pl_header(m, "m3rec.dlq.topic", origin, sizeof origin));
                CHECK(pl_header(m, "m3rec.dlq.offset", offset, sizeof offset));
                CHECK_CONTAINS(origin, s->prefix);
                for (int b = 0; b < s->n_bad; b++)
                    if (!found[b] && m->len == s->bad[b].len &&
                        (m->len == 0 || memcmp(m->payload, s->bad[b].bytes, m->len) == 0) &&
                        strstr(reason, s->bad[b].expect)) {
                        found[b] = 1;
                        break;
                    }
                n_dlq++;
            } else {
                char reason[CODEC_REASON_MAX];
                CHECK_MSG(pl_decode_prediction(cd, m, &ev, reason, sizeof reason) == 0,
                          "prediction does not decode: %s", reason);
                CHECK_EQ_INT(ev.type, M3_EV_PREDICTION);
                const m3_prediction *pr = &ev.u.pred;
                CHECK(pr->p_ctr > 0 && pr->p_ctr < 1 && pr->p_cvr > 0 && pr->p_cvr < 1);
                CHECK_CLOSE(pr->p_ctcvr, pr->p_ctr * pr->p_cvr, 1e-5, 0);
                if (strncmp(pr->id, prefix, strlen(prefix)) == 0) {
                    long long k = atoll(pr->id + strlen(prefix));
                    CHECK(k >= 0 && k < s->n_impressions);
                    if (seen[k]) dup++;
                    else n_imp++;
                    seen[k] = 1;
                } else {
                    CHECK_MSG(strncmp(pr->id, "req-", 4) == 0, "unexpected prediction id %s", pr->id);
                    n_req++;
                }
            }
            rd_kafka_message_destroy(m);
        }
    }
    kio_consumer_close(c);
    fprintf(stderr, "pipeline: %lld impressions and %lld candidates predicted (%lld duplicates), %lld in the DLQ\n",
            n_imp, n_req, dup, n_dlq);
    for (int64_t k = 0; k < s->n_impressions; k++)
        CHECK_MSG(seen[k], "impression %lld has no prediction", (long long)k);
    CHECK_MSG(n_req >= s->n_cands, "%lld of %lld candidates predicted", n_req, s->n_cands);
    CHECK_EQ_INT(n_dlq, want_bad);
    for (int b = 0; b < want_bad; b++)
        CHECK_MSG(found[b], "bad message %d (%s) not in the DLQ with a reason containing '%s'", b,
                  s->bad[b].suffix, s->bad[b].expect);
    free(seen);
}

#endif
