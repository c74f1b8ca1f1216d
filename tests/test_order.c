/* test_order.c - the worker's input order and loss detection (stream/order, and the
 * m3rec-worker process on an embedded broker).
 *
 * Module: the earliest head goes first, each partition stays FIFO, an undecodable item
 * keeps its place; an empty partition that lags holds everything back for idle_ms and no
 * longer, one at its high watermark not at all; a full partition is held and released at
 * half; offsets below the expected one are duplicates, above it gaps; a clear drops and
 * forgets everything; a lone far-future time goes out at once (ord_set_ahead), a jump of
 * two in a row moves the stream time.
 * Worker: a backlog of three scenario topics produced before the worker starts is trained
 * in event-time order (the predictions, in the order the worker made them, never go back
 * in event time), where fetch order goes back by minutes; a worker stopped (SIGSTOP) while the broker drops what it has not read reports
 * INPUT LOST (stderr, report), exits 0 when only asked to count, and stops with exit 1
 * under input.loss.fail; m3rec-sim unpaced into an embedded broker that cannot hold its
 * stream paces itself to the worker's group, and the worker loses nothing. */
#include <signal.h>

#include "pipeline.h"
#include "stream/order.h"

/* ---- the module ---- */

static int lag_all, lag_calls;
static int lag_fn(void *ud, int src) {
    (void)ud;
    (void)src;
    lag_calls++;
    return lag_all;
}

static int dropped;
static void drop_fn(void *item) {
    (void)item;
    dropped++;
}

static void test_module(void) {
    char err[256];
    int items[16], src;
    ord *o = ord_new(3, 4, 100, 0, 0, err, sizeof err);
    CHECK_MSG(o, "%s", err);
    CHECK(!ord_new(0, 4, 100, 0, 0, err, sizeof err));
    /* source 0: times 10, 30; source 1: 20, unknown (keeps 20), 40; source 2 empty */
    ord_push(o, 0, 10, &items[0], 0);
    ord_push(o, 0, 30, &items[1], 0);
    ord_push(o, 1, 20, &items[2], 0);
    ord_push(o, 1, ORD_TS_UNKNOWN, &items[3], 0);
    ord_push(o, 1, 40, &items[4], 0);
    /* source 2 lags: nothing before idle_ms */
    lag_all = 1;
    CHECK(ord_pop(o, 50, lag_fn, NULL, &src) == NULL);
    CHECK_EQ_INT(ord_wait_ms(o, 50), 50);
    lag_calls = 0;
    CHECK(ord_pop(o, 60, lag_fn, NULL, &src) == NULL);
    CHECK_EQ_INT(lag_calls, 0);   /* asked once per emptying */
    void *expect[5] = {&items[0], &items[2], &items[3], &items[1], &items[4]};
    for (int i = 0; i < 5; i++) {
        void *it = ord_pop(o, 100, lag_fn, NULL, &src);
        /* sources 0 and 1 run empty on the way and lag: each waits again, up to idle_ms */
        if (!it) it = ord_pop(o, 100 + 100 * (i + 1), lag_fn, NULL, &src);
        if (!it) it = ord_pop(o, 400 + 100 * (i + 1), lag_fn, NULL, &src);
        CHECK_MSG(it == expect[i], "item %d out of order", i);
    }
    CHECK_EQ_INT(ord_count(o, -1), 0);
    CHECK_EQ_INT(ord_wait_ms(o, 0), -1);
    /* at its high watermark a source is not waited for */
    lag_all = 0;
    ord_clear(o, NULL, 1000);
    ord_push(o, 2, 5, &items[5], 0);
    CHECK(ord_pop(o, 1000, lag_fn, NULL, &src) == &items[5] && src == 2);
    /* hold at 4, release at 2 */
    for (int i = 0; i < 4; i++) {
        ord_push(o, 0, 100 + i, &items[i], 0);
        CHECK_EQ_INT(ord_hold(o, 0), i == 3);
    }
    CHECK_EQ_INT(ord_held(o), 1);
    ord_pop(o, 1000, lag_fn, NULL, &src);
    CHECK_EQ_INT(ord_hold(o, 0), 1);
    ord_pop(o, 1000, lag_fn, NULL, &src);
    CHECK_EQ_INT(ord_hold(o, 0), 0);
    CHECK_EQ_INT(ord_held(o), 0);
    /* continuity */
    CHECK_EQ_INT(ord_check(o, 1, 7), 0);          /* nothing expected yet */
    CHECK_EQ_INT(ord_check(o, 1, 8), 0);
    CHECK_EQ_INT(ord_check(o, 1, 5), -1);         /* a duplicate */
    CHECK_EQ_INT(ord_check(o, 1, 12), 3);         /* 9, 10, 11 skipped */
    CHECK_EQ_INT(ord_position(o, 1), 13);
    ord_expect(o, 2, 100);
    CHECK_EQ_INT(ord_check(o, 2, 100), 0);
    /* a clear drops what is buffered and forgets the positions */
    dropped = 0;
    ord_clear(o, drop_fn, 2000);
    CHECK_EQ_INT(dropped, 2);
    CHECK_EQ_INT(ord_position(o, 1), -1);
    /* growth past the hold mark keeps FIFO order */
    for (int i = 0; i < 200; i++) ord_push(o, 0, i, &items[i % 16], 0);
    for (int i = 0; i < 200; i++) CHECK(ord_pop_any(o, &src) == &items[i % 16]);
    ord_push(o, 0, 1, &items[0], 0);
    dropped = 0;
    ord_free(o, drop_fn);
    CHECK_EQ_INT(dropped, 1);
}

/* ord_set_ahead: a lone far-future time goes out at once and moves nothing; a real jump
 * (two in a row) moves the stream time and the order resumes by event time. */
static void test_far_ahead(void) {
    char err[256];
    int items[16], src;
    ord *o = ord_new(3, 64, 0, 0, 0, err, sizeof err);
    CHECK_MSG(o, "%s", err);
    ord_set_ahead(o, 1000);
    ord_push(o, 0, 100, &items[0], 0);
    CHECK(ord_pop(o, 0, NULL, NULL, &src) == &items[0]);          /* stream time 100 */
    /* source 0: an absurd time, then normal ones; sources 1 and 2 hold normal times */
    ord_push(o, 0, INT64_MAX, &items[1], 0);
    ord_push(o, 0, 150, &items[2], 0);
    ord_push(o, 1, 110, &items[3], 0);
    ord_push(o, 1, 160, &items[4], 0);
    ord_push(o, 2, 120, &items[5], 0);
    void *expect[5] = {&items[1], &items[3], &items[5], &items[2], &items[4]};
    for (int i = 0; i < 5; i++) CHECK_MSG(ord_pop(o, 0, NULL, NULL, &src) == expect[i], "item %d", i);
    CHECK_EQ_INT(ord_behind(o), 0);                 /* the absurd time set nothing */
    /* every source jumps 10,000 ahead together: confirmed, then event-time order again */
    ord_push(o, 0, 10200, &items[6], 0);
    ord_push(o, 0, 10500, &items[7], 0);
    ord_push(o, 1, 10300, &items[8], 0);
    ord_push(o, 1, 10400, &items[9], 0);
    CHECK(ord_pop(o, 0, NULL, NULL, &src) == &items[6]);          /* its neighbour agrees */
    void *rest[3] = {&items[8], &items[9], &items[7]};
    for (int i = 0; i < 3; i++) CHECK_MSG(ord_pop(o, 0, NULL, NULL, &src) == rest[i], "jump %d", i);
    CHECK_EQ_INT(ord_behind(o), 0);
    /* without the bound the absurd time waits behind everything else */
    ord_set_ahead(o, 0);
    ord_push(o, 0, INT64_MAX, &items[10], 0);
    ord_push(o, 1, 10600, &items[11], 0);
    ord_push(o, 1, 10700, &items[12], 0);
    ord_push(o, 2, 10650, &items[13], 0);
    CHECK(ord_pop(o, 0, NULL, NULL, &src) == &items[11]);
    ord_free(o, NULL);
}

/* The live wait (input.order.live.wait.ms): while an assigned source is empty, even at
 * its high watermark, nothing goes out until the longest-buffered message has been here
 * live_ms (arrivals are the clock: a long-buffered backlog is not held up, and no message
 * waits longer); an unassigned source is never waited for; hand-outs below the stream
 * time are counted. */
static int lag_of[3];
static int lag_each(void *ud, int src) {
    (void)ud;
    return lag_of[src];
}

static void test_live_wait(void) {
    char err[256];
    int items[8], src;
    ord *o = ord_new(3, 64, 50, 100, 0, err, sizeof err);
    CHECK_MSG(o, "%s", err);
    CHECK(!ord_new(3, 64, 50, -1, 0, err, sizeof err));
    lag_of[0] = lag_of[1] = 0;   /* caught up */
    lag_of[2] = ORD_UNASSIGNED;  /* another member's: never waited for */
    /* both empty since 0; input resumes at 5000: its message waits from its arrival */
    ord_push(o, 0, 30, &items[0], 5000);
    CHECK(ord_pop(o, 5000, lag_each, NULL, &src) == NULL);
    CHECK_EQ_INT(ord_wait_ms(o, 5000), 100);
    CHECK(ord_pop(o, 5099, lag_each, NULL, &src) == NULL);
    CHECK_EQ_INT(ord_wait_ms(o, 5099), 1);
    /* source 1's earlier message arrives within the wait: it goes first, and source 0's
     * (every assigned source has a message) right after */
    ord_push(o, 1, 20, &items[1], 5099);
    ord_push(o, 1, 35, &items[2], 5099);
    CHECK(ord_pop(o, 5099, lag_each, NULL, &src) == &items[1] && src == 1);
    CHECK(ord_pop(o, 5099, lag_each, NULL, &src) == &items[0] && src == 0);
    /* source 0 empty now: source 1's 35 (arrived at 5099) waits until 5199 */
    CHECK(ord_pop(o, 5150, lag_each, NULL, &src) == NULL);
    CHECK_EQ_INT(ord_wait_ms(o, 5150), 49);
    CHECK(ord_pop(o, 5199, lag_each, NULL, &src) == &items[2]);
    /* a message buffered longer than live_ms (a backlog's) goes out at once */
    ord_push(o, 0, 40, &items[3], 5200);
    CHECK(ord_pop(o, 6000, lag_each, NULL, &src) == &items[3]);
    CHECK_EQ_INT(ord_behind(o), 0);
    /* a message late past the wait goes out behind the stream time: counted */
    ord_push(o, 1, 38, &items[4], 6000);
    CHECK(ord_pop(o, 6100, lag_each, NULL, &src) == &items[4]);
    CHECK_EQ_INT(ord_behind(o), 1);
    /* a lagging source: the later of its idle clock (from its emptying) and the live one */
    ord_clear(o, NULL, 7000);
    lag_of[1] = 1;
    ord_push(o, 0, 70, &items[5], 7040);
    CHECK(ord_pop(o, 7040, lag_each, NULL, &src) == NULL);
    CHECK(ord_pop(o, 7060, lag_each, NULL, &src) == NULL);   /* idle (50) over, live not */
    CHECK(ord_pop(o, 7140, lag_each, NULL, &src) == &items[5]);
    /* a message of an earlier time that arrives later goes out with the one that waited
     * longest, so none waits past live_ms (source 1's 36 arrived 90 ms after 45; source 2
     * is assigned and empty) */
    ord_free(o, NULL);
    o = ord_new(3, 64, 50, 100, 0, err, sizeof err);
    lag_of[0] = lag_of[1] = lag_of[2] = 0;
    ord_push(o, 0, 45, &items[6], 5200);
    ord_push(o, 1, 36, &items[7], 5290);
    CHECK(ord_pop(o, 5299, lag_each, NULL, &src) == NULL);
    CHECK_EQ_INT(ord_wait_ms(o, 5299), 1);
    CHECK(ord_pop(o, 5300, lag_each, NULL, &src) == &items[7]);
    CHECK(ord_pop(o, 5300, lag_each, NULL, &src) == &items[6]);
    CHECK_EQ_INT(ord_behind(o), 0);
    /* without the live wait a caught-up source holds nothing back (the default) */
    ord_free(o, NULL);
    o = ord_new(3, 64, 50, 0, 0, err, sizeof err);
    lag_of[1] = 0;
    ord_push(o, 0, 80, &items[0], 5000);
    CHECK(ord_pop(o, 5000, lag_each, NULL, &src) == &items[0]);
    ord_free(o, NULL);
}

/* codec_peek_ts, the event time the order buffer sorts by: what a decode gives, for each
 * input record; 0 (decode instead) for a Prediction, registry framing, a bad header, and
 * any truncation before the end of ts_ms - never a wrong time. */
static void test_peek(codec *cd) {
    m3_event ev[3];
    pl_sample_impression(&ev[0], "home");
    ev[0].u.imp.ts_ms = 1767225600123LL;
    memset(&ev[1], 0, sizeof ev[1]);
    ev[1].type = M3_EV_CONVERSION;
    snprintf(ev[1].u.conv.conversion_id, M3_ID_MAX, "conv-1");
    snprintf(ev[1].u.conv.impression_id, M3_ID_MAX, "imp-with-a-longer-id-0000001");
    snprintf(ev[1].u.conv.scenario, M3_NAME_MAX, "home");
    ev[1].u.conv.ts_ms = -5;   /* zig-zag: negative times read back too */
    m3_candidate cand = {.item_id = 7};
    memset(&ev[2], 0, sizeof ev[2]);
    ev[2].type = M3_EV_SCORE_REQUEST;
    snprintf(ev[2].u.req.request_id, M3_ID_MAX, "req-1");
    snprintf(ev[2].u.req.scenario, M3_NAME_MAX, "search");
    ev[2].u.req.ts_ms = 1767225600999LL;
    ev[2].u.req.n_cands = 1;
    ev[2].u.req.cands = &cand;
    unsigned char buf[1024];
    int64_t ts;
    for (int i = 0; i < 3; i++) {
        long len = pl_encode(cd, &ev[i], buf, sizeof buf);
        int64_t want = i == 0 ? ev[0].u.imp.ts_ms : i == 1 ? ev[1].u.conv.ts_ms : ev[2].u.req.ts_ms;
        CHECK_EQ_INT(codec_peek_ts(cd, buf, (size_t)len, &ts), 1);
        CHECK_EQ_INT(ts, want);
        for (long cut = 0; cut < len; cut++) {   /* a truncation peeks right or not at all */
            ts = 0;
            if (codec_peek_ts(cd, buf, (size_t)cut, &ts)) CHECK_EQ_INT(ts, want);
        }
        buf[0] = 0;   /* registry framing's first byte: not peeked */
        CHECK_EQ_INT(codec_peek_ts(cd, buf, (size_t)len, &ts), 0);
    }
    /* a string length past the end before ts_ms */
    long len = pl_encode(cd, &ev[0], buf, sizeof buf);
    buf[CODEC_HEADER_LEN] = 0x7e;   /* zig-zag 63: longer than what is left */
    CHECK_EQ_INT(codec_peek_ts(cd, buf, (size_t)CODEC_HEADER_LEN + 20, &ts), 0);
    (void)len;
    /* a Prediction is no input: decoded (and refused) as before */
    m3_event pr;
    memset(&pr, 0, sizeof pr);
    pr.type = M3_EV_PREDICTION;
    snprintf(pr.u.pred.id, M3_ID_MAX, "x");
    snprintf(pr.u.pred.scenario, M3_NAME_MAX, "home");
    len = pl_encode(cd, &pr, buf, sizeof buf);
    CHECK_EQ_INT(codec_peek_ts(cd, buf, (size_t)len, &ts), 0);
}

/* ---- the worker ---- */

static void create(kio_mock *m, const char *prefix, int parts) {
    static const char *suffix[] = {"events.home", "events.search", "events.product", "requests",
                                   "predictions", "dlq"};
    char name[128], err[512];
    for (int i = 0; i < 6; i++) {
        pl_topic(name, sizeof name, prefix, suffix[i]);
        CHECK_MSG(kio_mock_create_topic(m, name, parts, err, sizeof err) == 0, "%s", err);
    }
}

/* How far back in event time the worker's predictions of impressions go, in the order
 * they were published (one partition: the order the worker made them): the largest
 * distance below the newest event time before, in ms. *n gets the predictions read. */
static int64_t predictions_back(const char *bs, codec *cd, const char *prefix, long long *n) {
    char topic[128], err[512];
    pl_topic(topic, sizeof topic, prefix, "predictions");
    char group[128];
    snprintf(group, sizeof group, "%s-check", prefix);
    kio_prop props[] = {{"bootstrap.servers", bs}, {"group.id", group}};
    const char *topics[] = {topic};
    kio_consumer *c = kio_consumer_new(props, 2, topics, 1, err, sizeof err);
    CHECK_MSG(c, "%s", err);
    rd_kafka_message_t *msgs[512];
    int64_t last = clk_mono_ms(), newest = INT64_MIN, back = 0;
    *n = 0;
    int got;
    while ((got = pl_poll(c, msgs, &last)) >= 0) {
        for (int i = 0; i < got; i++) {
            m3_event ev;
            char reason[CODEC_REASON_MAX];
            CHECK_MSG(codec_decode(cd, msgs[i]->payload, msgs[i]->len, &ev, reason, sizeof reason) == 0,
                      "%s", reason);
            if (strncmp(ev.u.pred.id, "imp-", 4) == 0) {
                if (ev.u.pred.ts_ms > newest) newest = ev.u.pred.ts_ms;
                if (newest - ev.u.pred.ts_ms > back) back = newest - ev.u.pred.ts_ms;
                ++*n;
            }
            m3_event_clear(&ev);
            rd_kafka_message_destroy(msgs[i]);
        }
        if (got == 0 && *n > 0 && clk_mono_ms() - last > 1500) break;
    }
    kio_consumer_close(c);
    return back;
}

/* A backlog (the whole stream produced first), consumed in event-time order or in fetch
 * order: returns how far back in event time the predictions go. */
static int64_t backlog_run(kio_mock *m, codec *cd, const char *prefix, const char *order) {
    static pl_stream s = {.seed = 21, .n_impressions = 12000};
    snprintf(s.prefix, sizeof s.prefix, "%s", prefix);
    s.n_bad = 0;
    create(m, prefix, 1);
    const char *bs = kio_mock_bootstraps(m);
    kio_producer *p = pl_producer(bs);
    pl_produce_stream(p, cd, &s, 0, s.n_impressions, 0);
    kio_producer_destroy(p);
    char report[128], log[128];
    snprintf(report, sizeof report, "test_order_%s.json", prefix);
    snprintf(log, sizeof log, "test_order_%s.log", prefix);
    /* small fetches would mix the topics: librdkafka's defaults fetch whole chunks */
    char *extra[] = {"--set", (char *)order, "--set", "model.arch=lr", NULL};
    pid_t pid = pl_spawn_worker(bs, &s, prefix, 2000, report, log, extra);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 120000, "the worker"), 0);
    long long n;
    int64_t back = predictions_back(bs, cd, prefix, &n);
    CHECK_EQ_INT(n, s.n_impressions);
    fprintf(stderr, "test_order: %s: predictions go back %.1f minutes of event time\n", order,
            (double)back / 60000.0);
    return back;
}

static void test_backlog_order(kio_mock *m, codec *cd) {
    int64_t fetch = backlog_run(m, cd, "ofetch", "input.order.event_time=false");
    int64_t event = backlog_run(m, cd, "oevent", "input.order.event_time=true");
    /* fetch order trains a chunk of one scenario, then of the next: minutes back (6.5 of
     * this stream's ~25 measured) */
    CHECK_MSG(fetch > 60 * 1000, "fetch order went back only %lld ms", (long long)fetch);
    /* event-time order: the learner's predictions follow the stream; what a score request
     * or a conversion does not reorder, so nothing goes back at all */
    CHECK_MSG(event == 0, "event-time order went back %lld ms", (long long)event);
}

/* The worker stopped while more than the embedded broker keeps is produced: when it
 * continues, the broker has dropped what it had not read. */
static void loss_run(kio_mock *m, codec *cd, const char *prefix, int fail) {
    static pl_stream s = {.seed = 5, .n_impressions = 90000};
    snprintf(s.prefix, sizeof s.prefix, "%s", prefix);
    s.n_bad = 0;
    create(m, prefix, 1);
    const char *bs = kio_mock_bootstraps(m);
    char report[128], log[128];
    snprintf(report, sizeof report, "test_order_%s.json", prefix);
    snprintf(log, sizeof log, "test_order_%s.log", prefix);
    remove(report);
    char *extra[] = {"--set", fail ? "input.loss.fail=true" : "input.loss.fail=false",
                     "--set", "model.arch=lr", NULL};   /* the fastest model: the test is the input */
    pid_t pid = pl_spawn_worker(bs, &s, prefix, 2500, report, log, extra);
    proc_wait_log(log, "assigned 4 partitions", 30000);
    kio_producer *p = pl_producer(bs);
    pl_produce_stream(p, cd, &s, 0, 1000, 0);
    usleep(1500 * 1000);   /* read while it arrives */
    CHECK(kill(pid, SIGSTOP) == 0);
    pl_produce_stream(p, cd, &s, 1000, s.n_impressions, 0);
    kio_producer_destroy(p);
    CHECK(kill(pid, SIGCONT) == 0);
    int rc = proc_wait(pid, clk_mono_ms() + 120000, "the worker");
    CHECK_CONTAINS(proc_slurp(log), "INPUT LOST: ");
    if (fail) CHECK_CONTAINS(proc_slurp(log), "stopping: input was lost and input.loss.fail=true");
    else CHECK_CONTAINS(proc_slurp(log), "this run saw a partial stream");
    json_node *r = pl_report(report);
    CHECK_EQ_INT(json_number(json_get(r, "input.lost"), -1), 1);
    long long lost = (long long)json_number(json_get(r, "input.gap_messages"), -1);
    fprintf(stderr, "test_order: %s: %lld messages lost, exit %d\n", prefix, lost, rc);
    CHECK(lost > 0);
    if (fail) {
        CHECK_EQ_INT(rc, 1);
    } else {
        CHECK_EQ_INT(rc, 0);
        /* everything produced is either handled or counted as lost */
        long long events = (long long)json_number(json_get(r, "counters.events"), -1);
        CHECK_EQ_INT(events + lost, s.st.impressions + s.st.conversions + s.st.requests);
    }
    json_free(r);
}


/* m3rec-sim unpaced into an embedded broker with more than it keeps per partition: it
 * paces itself to the worker's group, and the worker gets every message. */
static void test_sink_paces(kio_mock *m) {
    static pl_stream s = {.prefix = "spaced", .seed = 3, .n_impressions = 90000};
    create(m, s.prefix, 1);
    const char *bs = kio_mock_bootstraps(m);
    const char *report = "test_order_spaced.json", *log = "test_order_spaced.log";
    remove(report);
    char *extra[] = {"--set", "model.arch=lr", NULL};
    pid_t pid = pl_spawn_worker(bs, &s, "spaced", 2500, report, log, extra);
    proc_wait_log(log, "assigned 4 partitions", 30000);
    char *argv[] = {M3_BINARY_DIR "/m3rec-sim", "--config", M3_SOURCE_DIR "/config/demo.properties",
                    "--set", "topic.prefix=spaced", "--set", "kafka.group.id=spaced",
                    "--bootstrap", (char *)bs, "--events", "90000", "--seed", "3", NULL};
    const char *simlog = "test_order_spaced_sim.log";
    CHECK_EQ_INT(proc_wait(proc_spawn(argv, simlog, simlog), clk_mono_ms() + 120000, "m3rec-sim"), 0);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 120000, "the worker"), 0);
    json_node *r = pl_report(report);
    CHECK_EQ_INT(json_number(json_get(r, "counters.impressions"), -1), 90000);
    CHECK_EQ_INT(json_number(json_get(r, "input.lost"), -1), 0);
    json_free(r);
    CHECK_CONTAINS(proc_slurp(simlog), "embedded broker: pacing to consumer group 'spaced'");
}

int main(void) {
    test_module();
    test_far_ahead();
    test_live_wait();
    char err[512];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    test_peek(cd);
    const char *none[] = {"unused"};
    kio_mock *m = kio_mock_new(1, none, 1, err, sizeof err);
    CHECK_MSG(m, "%s", err);
    test_backlog_order(m, cd);
    loss_run(m, cd, "lcount", 0);
    loss_run(m, cd, "lfail", 1);
    test_sink_paces(m);
    kio_mock_destroy(m);
    codec_destroy(cd);
    return 0;
}
