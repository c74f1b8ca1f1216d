/* test_e2e.c - the whole pipeline on the embedded broker: simulated events and bad
 * messages in, the real m3rec-worker process in the middle, predictions and DLQ out.
 *
 * Checks: every impression and every score-request candidate gets a prediction, every
 * bad message lands in the DLQ with the expected reason and its origin in the headers,
 * the worker carries on after each of them, the delayed-conversion join counts exactly
 * the conversions the simulator sent after their window, and the prequential AUCs beat
 * 0.5 by a clear margin. Among the bad messages, poison the decoder accepts: extreme
 * numeric features and a far-future or far-past event time; they land in the DLQ with
 * their reasons, every prediction stays a probability, and nothing expires. */
#include "fsutil.h"
#include "pipeline.h"

#define N_IMPRESSIONS 60000
#define PARTS 4

/* ev encoded as a bad message on suffix, expected in the DLQ with a reason containing expect. */
static void add_encoded(codec *cd, pl_stream *s, const char *suffix, const char *expect,
                        const m3_event *ev) {
    pl_bad *b = pl_add_bad(s, suffix, expect);
    b->len = (size_t)pl_encode(cd, ev, b->bytes, sizeof b->bytes);
}

/* Valid messages the learner must refuse: numeric features of absurd magnitude (finite),
 * an impression from 300 years ahead, a conversion from 1970. */
static void add_poison(codec *cd, pl_stream *s) {
    m3_event ev;
    pl_sample_impression(&ev, "home");
    ev.u.imp.item_num.kv[0].value = -3.4e38f;
    add_encoded(cd, s, "events.home",
                "item_num.price=-3.4e+38 outside [-1e+06, 1e+06] (features.num.max_abs", &ev);
    pl_sample_impression(&ev, "search");
    ev.u.imp.user_num.n = 1;
    snprintf(ev.u.imp.user_num.kv[0].name, M3_NAME_MAX, "activity");
    ev.u.imp.user_num.kv[0].value = 3.35e38f;
    add_encoded(cd, s, "events.search", "user_num.activity=3.35e+38 outside", &ev);
    pl_sample_impression(&ev, "product");
    ev.u.imp.ts_ms = 10000000000000LL;
    ev.u.imp.clicked = 1;
    add_encoded(cd, s, "events.product", "ms ahead of the newest event time", &ev);
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_CONVERSION;
    snprintf(ev.u.conv.conversion_id, M3_ID_MAX, "old-conv");
    snprintf(ev.u.conv.impression_id, M3_ID_MAX, "old-imp");
    snprintf(ev.u.conv.scenario, M3_NAME_MAX, "home");
    add_encoded(cd, s, "events.home", "ms behind its partition's event time", &ev);
}

int main(void) {
    char err[512];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    const char *topics[] = {"m3rec.events.home", "m3rec.events.search", "m3rec.events.product",
                            "m3rec.requests", "m3rec.predictions", "m3rec.dlq"};
    kio_mock *mock = kio_mock_new(PARTS, topics, 6, err, sizeof err);
    CHECK_MSG(mock, "%s", err);
    const char *bs = kio_mock_bootstraps(mock);
    kio_producer *p = pl_producer(bs);

    static pl_stream s = {.prefix = "m3rec", .seed = 7, .n_impressions = N_IMPRESSIONS};
    pl_make_bad(cd, &s);
    add_poison(cd, &s);
    pl_produce_stream(p, cd, &s, 0, N_IMPRESSIONS, 1);
    CHECK_EQ_INT(s.st.impressions, N_IMPRESSIONS);

    const char *report = "test_e2e_report.json";
    remove(report);
    char dir[512], set_store[600];
    fs_scratch_dir(dir, sizeof dir, "test_e2e");
    snprintf(set_store, sizeof set_store, "store.dir=%s/store", dir);
    char *extra[] = {"--set", set_store, NULL};
    pid_t pid = pl_spawn_worker(bs, &s, "e2e-worker", 4000, report, "test_e2e_worker.log", extra);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 240000, "the worker"), 0);
    pl_verify_outputs(bs, cd, &s, 1);

    /* the worker's own report agrees, and it learned */
    json_node *j = pl_report(report);
    CHECK_EQ_INT(json_number(json_get(j, "counters.impressions"), -1), N_IMPRESSIONS);
    CHECK_EQ_INT(json_number(json_get(j, "counters.dlq"), -1), s.n_bad);
    /* the join: every conversion either joined or is one the simulator sent after its window */
    CHECK_EQ_INT(json_number(json_get(j, "counters.conversions"), -1), s.st.conversions);
    CHECK_EQ_INT(json_number(json_get(j, "counters.late_conversions"), -1), s.st.late_conversions);
    CHECK_EQ_INT(json_number(json_get(j, "counters.unmatched_conversions"), -1), 0);
    /* the poison: counted by kind, and no clock moved (nothing expired) */
    CHECK_EQ_INT(json_number(json_get(j, "admission.num_refused"), -1), 2);
    CHECK_EQ_INT(json_number(json_get(j, "admission.time_ahead"), -1), 1);
    CHECK_EQ_INT(json_number(json_get(j, "admission.time_behind"), -1), 1);
    CHECK_EQ_INT(json_number(json_get(j, "state.emb_expired"), -1), 0);
    CHECK_EQ_INT(json_number(json_get(j, "state.user_expired"), -1), 0);
    double auc = json_number(json_get(j, "overall.ctr.auc"), 0);
    double ctcvr = json_number(json_get(j, "overall.ctcvr.auc"), 0);
    fprintf(stderr, "test_e2e: prequential AUC ctr %.4f ctcvr %.4f\n", auc, ctcvr);
    CHECK_MSG(auc > 0.6, "CTR AUC %.4f does not beat 0.5 clearly", auc);
    CHECK_MSG(ctcvr > 0.6, "CTCVR AUC %.4f does not beat 0.5 clearly", ctcvr);
    json_free(j);
    rm_rf(dir);
    kio_producer_destroy(p);
    kio_mock_destroy(mock);
    codec_destroy(cd);
    return 0;
}
