/* test_e2e.c - the whole pipeline on the embedded broker: simulated events and bad
 * messages in, the real m3rec-worker process in the middle, predictions and DLQ out.
 *
 * Checks: every impression and every score-request candidate gets exactly one
 * prediction (at least once, so duplicates are counted but tolerated only if none are
 * lost), every bad message lands in the DLQ with the expected reason and its origin in
 * the headers, the worker carries on after each of them, and its prequential CTR AUC
 * beats 0.5 by a clear margin. */
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "check.h"
#include "codec.h"
#include "json.h"
#include "kio.h"
#include "sim.h"

extern char **environ;

#define N_IMPRESSIONS 60000
#define SEED 7
#define PARTS 4

static const char *topics[] = {"m3rec.events.home", "m3rec.events.search", "m3rec.events.product",
                               "m3rec.requests", "m3rec.predictions", "m3rec.dlq"};

typedef struct {
    const char *topic;
    unsigned char bytes[512];
    size_t len;
    const char *expect; /* a substring of the DLQ reason */
} bad_msg;

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static long encode(codec *cd, const m3_event *ev, unsigned char *buf, size_t cap) {
    char reason[CODEC_REASON_MAX];
    long len = codec_encode(cd, ev, buf, cap, reason, sizeof reason);
    CHECK_MSG(len > 0, "encode: %s", reason);
    return len;
}

static void sample_impression(m3_event *ev, const char *scenario) {
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

/* Build the bad messages, one per kind, each with the reason the worker must give. */
static int make_bad(codec *cd, bad_msg *b) {
    int n = 0;
    m3_event ev;
    unsigned char good[512];
    sample_impression(&ev, "home");
    long glen = encode(cd, &ev, good, sizeof good);

    b[n] = (bad_msg){"m3rec.events.home", {0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 11, "magic"};
    n++;
    b[n] = (bad_msg){"m3rec.events.search", {0}, 0, "fingerprint"};
    memcpy(b[n].bytes, good, (size_t)glen);
    b[n].bytes[2] ^= 0xff; /* a fingerprint no schema has */
    b[n].len = (size_t)glen;
    n++;
    b[n] = (bad_msg){"m3rec.events.home", {0}, 0, "truncated"};
    memcpy(b[n].bytes, good, (size_t)glen / 2);
    b[n].len = (size_t)glen / 2;
    n++;
    /* a huge string length right after the header: zig-zag varint of 2^62 */
    b[n] = (bad_msg){"m3rec.events.product", {0}, 0, "length"};
    memcpy(b[n].bytes, good, CODEC_HEADER_LEN);
    static const unsigned char huge[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    memcpy(b[n].bytes + CODEC_HEADER_LEN, huge, sizeof huge);
    b[n].len = CODEC_HEADER_LEN + sizeof huge;
    n++;
    /* NaN feature: patch the bytes of 1.5f in a valid message */
    b[n] = (bad_msg){"m3rec.events.home", {0}, 0, "non-finite"};
    memcpy(b[n].bytes, good, (size_t)glen);
    b[n].len = (size_t)glen;
    static const unsigned char f15[] = {0x00, 0x00, 0xc0, 0x3f}, fnan[] = {0x00, 0x00, 0xc0, 0x7f};
    size_t at = 0;
    while (at + 4 <= b[n].len && memcmp(b[n].bytes + at, f15, 4) != 0) at++;
    CHECK(at + 4 <= b[n].len);
    memcpy(b[n].bytes + at, fnan, 4);
    n++;
    /* an impression whose scenario is not its topic's, and one no configuration knows */
    sample_impression(&ev, "mars");
    b[n] = (bad_msg){"m3rec.events.home", {0}, 0, "does not match topic"};
    b[n].len = (size_t)encode(cd, &ev, b[n].bytes, sizeof b[n].bytes);
    n++;
    b[n] = (bad_msg){"m3rec.requests", {0}, 0, "on the requests topic"};
    b[n].len = (size_t)encode(cd, &ev, b[n].bytes, sizeof b[n].bytes);
    n++;
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_SCORE_REQUEST;
    snprintf(ev.u.req.request_id, M3_ID_MAX, "bad-req");
    snprintf(ev.u.req.scenario, M3_NAME_MAX, "mars");
    ev.u.req.user_id = 42;
    m3_candidate cand = {.item_id = 7};
    ev.u.req.n_cands = 1;
    ev.u.req.cands = &cand;
    b[n] = (bad_msg){"m3rec.requests", {0}, 0, "unknown scenario 'mars'"};
    b[n].len = (size_t)encode(cd, &ev, b[n].bytes, sizeof b[n].bytes);
    n++;
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_PREDICTION;
    snprintf(ev.u.pred.id, M3_ID_MAX, "x");
    snprintf(ev.u.pred.scenario, M3_NAME_MAX, "home");
    b[n] = (bad_msg){"m3rec.events.home", {0}, 0, "not an input"};
    b[n].len = (size_t)encode(cd, &ev, b[n].bytes, sizeof b[n].bytes);
    n++;
    b[n] = (bad_msg){"m3rec.events.search", {0}, 0, "empty message"};
    n++;
    return n;
}

static void produce(kio_producer *p, const char *topic, int64_t user, const void *v, size_t len) {
    char key[32], err[256];
    int klen = snprintf(key, sizeof key, "%" PRId64, user);
    CHECK_MSG(kio_produce(p, topic, key, (size_t)klen, v, len, NULL, 0, err, sizeof err) == 0,
              "produce: %s", err);
}

static pid_t spawn_worker(const char *bootstrap, const char *report) {
    char set_bs[256];
    snprintf(set_bs, sizeof set_bs, "kafka.bootstrap.servers=%s", bootstrap);
    char *argv[] = {M3_BINARY_DIR "/m3rec-worker",
                    "--config", M3_SOURCE_DIR "/config/demo.properties",
                    "--set", "broker.embedded=false",
                    "--set", set_bs,
                    "--set", "kafka.group.id=e2e-worker",
                    "--set", "worker.exit.idle.ms=4000",
                    "--set", "metrics.progress.ms=0",
                    "--report", (char *)report, NULL};
    pid_t pid;
    CHECK(posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) == 0);
    return pid;
}

static int wait_worker(pid_t pid, int64_t deadline_ms) {
    int status;
    while (now_ms() < deadline_ms) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(100 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    CHECK_MSG(0, "the worker did not finish in time");
    return -1;
}

static const char *header(const rd_kafka_message_t *m, const char *name, char *buf, size_t n) {
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t len;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    if (rd_kafka_header_get_last(h, name, &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    snprintf(buf, n, "%.*s", (int)len, (const char *)v);
    return buf;
}

int main(void) {
    char err[512];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    kio_mock *mock = kio_mock_new(PARTS, topics, 6, err, sizeof err);
    CHECK_MSG(mock, "%s", err);
    const char *bs = kio_mock_bootstraps(mock);
    kio_prop props[] = {{"bootstrap.servers", bs}};
    kio_producer *p = kio_producer_new(props, 1, err, sizeof err);
    CHECK_MSG(p, "%s", err);

    /* the stream: simulated events with the bad messages spread through it */
    bad_msg bad[16];
    int n_bad = make_bad(cd, bad);
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    sc.seed = SEED;
    sc.n_impressions = N_IMPRESSIONS;
    sim *s = sim_new(&sc, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    static unsigned char buf[1 << 16];
    m3_event ev;
    sim_truth tr;
    long long n_events = 0, n_cands = 0;
    int next_bad = 0;
    while (sim_next(s, &ev, &tr)) {
        long len = encode(cd, &ev, buf, sizeof buf);
        if (ev.type == M3_EV_SCORE_REQUEST) {
            produce(p, "m3rec.requests", ev.u.req.user_id, buf, (size_t)len);
            n_cands += ev.u.req.n_cands;
        } else {
            int64_t user = ev.type == M3_EV_IMPRESSION ? ev.u.imp.user_id : ev.u.conv.user_id;
            produce(p, topics[tr.scen], user, buf, (size_t)len);
        }
        n_events++;
        if (next_bad < n_bad && n_events % (N_IMPRESSIONS / n_bad) == 0) {
            produce(p, bad[next_bad].topic, 42 + next_bad, bad[next_bad].bytes, bad[next_bad].len);
            next_bad++;
        }
        if ((n_events & 1023) == 0) kio_producer_poll(p);
    }
    while (next_bad < n_bad) {
        produce(p, bad[next_bad].topic, 42 + next_bad, bad[next_bad].bytes, bad[next_bad].len);
        next_bad++;
    }
    CHECK_MSG(kio_producer_flush(p, 30000, err, sizeof err) == 0, "flush: %s", err);
    sim_stats st;
    sim_get_stats(s, &st);
    CHECK_EQ_INT(st.impressions, N_IMPRESSIONS);
    fprintf(stderr, "test_e2e: produced %lld events (%lld requests, %lld candidates) and %d bad\n",
            n_events, (long long)st.requests, n_cands, n_bad);

    /* the worker, as its own process */
    const char *report = "test_e2e_report.json";
    remove(report);
    pid_t pid = spawn_worker(bs, report);
    int rc = wait_worker(pid, now_ms() + 240000);
    CHECK_EQ_INT(rc, 0);

    /* read back what it published */
    uint8_t *seen = calloc(N_IMPRESSIONS, 1);
    long long n_pred = 0, n_imp_pred = 0, n_req_pred = 0, dup = 0, n_dlq = 0;
    int found[16] = {0};
    const char *out_topics[] = {"m3rec.predictions", "m3rec.dlq"};
    kio_prop cprops[] = {{"bootstrap.servers", bs}, {"group.id", "e2e-check"}};
    kio_consumer *c = kio_consumer_new(cprops, 2, out_topics, 2, err, sizeof err);
    CHECK_MSG(c, "%s", err);
    int64_t deadline = now_ms() + 60000, last_msg = now_ms();
    char prefix[64];
    snprintf(prefix, sizeof prefix, "imp-%d-", SEED);
    while (now_ms() < deadline && (n_imp_pred + n_req_pred < N_IMPRESSIONS + n_cands || n_dlq < n_bad)) {
        rd_kafka_message_t *msgs[256];
        int n = kio_consumer_poll(c, msgs, 256, 200, err, sizeof err);
        CHECK_MSG(n >= 0, "poll: %s", err);
        if (n > 0) last_msg = now_ms();
        else if (now_ms() - last_msg > 15000) break;
        for (int i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (strcmp(rd_kafka_topic_name(m->rkt), "m3rec.dlq") == 0) {
                char reason[256], origin[128];
                CHECK(header(m, "m3rec.dlq.reason", reason, sizeof reason));
                CHECK(header(m, "m3rec.dlq.topic", origin, sizeof origin));
                CHECK(header(m, "m3rec.dlq.offset", origin, sizeof origin));
                for (int b = 0; b < n_bad; b++)
                    if (!found[b] && m->len == bad[b].len && memcmp(m->payload, bad[b].bytes, m->len) == 0 &&
                        strstr(reason, bad[b].expect)) {
                        found[b] = 1;
                        break;
                    }
                n_dlq++;
            } else {
                char reason[CODEC_REASON_MAX];
                CHECK_MSG(codec_decode(cd, m->payload, m->len, &ev, reason, sizeof reason) == 0,
                          "prediction does not decode: %s", reason);
                CHECK_EQ_INT(ev.type, M3_EV_PREDICTION);
                const m3_prediction *pr = &ev.u.pred;
                CHECK(pr->p_ctr > 0 && pr->p_ctr < 1 && pr->p_cvr > 0 && pr->p_cvr < 1);
                CHECK_CLOSE(pr->p_ctcvr, pr->p_ctr * pr->p_cvr, 1e-5, 0);
                n_pred++;
                if (strncmp(pr->id, prefix, strlen(prefix)) == 0) {
                    long long k = atoll(pr->id + strlen(prefix));
                    CHECK(k >= 0 && k < N_IMPRESSIONS);
                    if (seen[k]) dup++;
                    else n_imp_pred++;
                    seen[k] = 1;
                } else {
                    CHECK_MSG(strncmp(pr->id, "req-", 4) == 0, "unexpected prediction id %s", pr->id);
                    n_req_pred++;
                }
            }
            rd_kafka_message_destroy(m);
        }
    }
    kio_consumer_close(c);
    fprintf(stderr, "test_e2e: %lld predictions (%lld impressions, %lld candidates, %lld duplicates), %lld in DLQ\n",
            n_pred, n_imp_pred, n_req_pred, dup, n_dlq);
    for (long long k = 0; k < N_IMPRESSIONS; k++) CHECK_MSG(seen[k], "impression %lld has no prediction", k);
    CHECK_EQ_INT(n_req_pred, n_cands);
    CHECK_EQ_INT(n_dlq, n_bad);
    for (int b = 0; b < n_bad; b++)
        CHECK_MSG(found[b], "bad message %d (%s) not in the DLQ with a reason containing '%s'", b,
                  bad[b].topic, bad[b].expect);

    /* the worker's own report agrees, and it learned */
    FILE *f = fopen(report, "r");
    CHECK(f);
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    json_node *j = json_parse(text, err, sizeof err);
    CHECK_MSG(j, "report: %s", err);
    CHECK_EQ_INT(json_number(json_get(j, "counters.impressions"), -1), N_IMPRESSIONS);
    CHECK_EQ_INT(json_number(json_get(j, "counters.dlq"), -1), n_bad);
    /* the join: every conversion either joined or is one the simulator sent after its window */
    CHECK_EQ_INT(json_number(json_get(j, "counters.conversions"), -1), st.conversions);
    CHECK_EQ_INT(json_number(json_get(j, "counters.late_conversions"), -1), st.late_conversions);
    CHECK_EQ_INT(json_number(json_get(j, "counters.unmatched_conversions"), -1), 0);
    double auc = json_number(json_get(j, "overall.ctr.auc"), 0);
    double ctcvr = json_number(json_get(j, "overall.ctcvr.auc"), 0);
    fprintf(stderr, "test_e2e: prequential AUC ctr %.4f ctcvr %.4f\n", auc, ctcvr);
    CHECK_MSG(auc > 0.6, "CTR AUC %.4f does not beat 0.5 clearly", auc);
    CHECK_MSG(ctcvr > 0.6, "CTCVR AUC %.4f does not beat 0.5 clearly", ctcvr);
    json_free(j);
    free(seen);
    sim_destroy(s);
    kio_producer_destroy(p);
    kio_mock_destroy(mock);
    codec_destroy(cd);
    return 0;
}
