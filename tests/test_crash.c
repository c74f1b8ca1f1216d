/* test_crash.c - crash recovery of the real m3rec-worker: kill -9 at random moments,
 * restart it on the same store.dir, and nothing is lost or counted twice.
 *
 * The test process hosts the broker (librdkafka's mock cluster), so the broker outlives
 * the worker it kills. Seed: M3_TEST_SEED (printed).
 *
 * Part 1, exact. One scenario, one partition per topic, minibatches flushed only when full
 * (batch.linger.ms=60000): the input order and the minibatch boundaries do not depend on
 * timing, so the state left by a worker killed and restarted four times must equal, byte
 * for byte, the state of a worker that never stopped (every column family compared, the
 * dense parameters, counters and offsets included). The crashed lineage runs with a 2 MB
 * memory budget (rows are evicted to the store and loaded back on the way) and frequency
 * admission; the reference without a budget.
 *
 * Part 2, realistic. Three scenarios x 4 partitions, score requests and bad messages, the
 * default linger: how partitions interleave depends on timing, so two runs train on
 * differently composed minibatches and their models differ slightly. Exact: every
 * impression trained once (trained_ctr == impressions produced), every conversion joined or
 * counted late exactly as the simulator sent it, each bad message counted once, every
 * impression predicted at least once. Within a stated tolerance: the two final models'
 * predictions on a probe set the workers never saw. */
#include <dirent.h>
#include <sys/stat.h>

#include "auc.h"
#include "pipeline.h"
#include "fsutil.h"
#include "storecmp.h"
#include "state/state.h"

static char tmp_root[512];
static unsigned rng;

static unsigned rnd(void) {
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

/* ---- running the worker ---- */

typedef struct {
    const char *bootstrap;
    pl_stream *s;
    char group[128];
    int new_group_each_run;     /* part 1: no wait for a killed member's session to end */
    int runs;
    char dir[600];
    char report[600], log[600];
    char *extra[60];            /* --set pairs, NULL-terminated */
    int kills;
    double run_ms;              /* wall time of the last run that finished */
} lineage;

static pid_t start(lineage *l) {
    char group[160];
    snprintf(group, sizeof group, "%s%s%d", l->group, l->new_group_each_run ? "-" : "",
             l->new_group_each_run ? l->runs : 0);
    if (!l->new_group_each_run) snprintf(group, sizeof group, "%s", l->group);
    l->runs++;
    if (l->runs > 1) {   /* keep the previous run's log: name.log.1, .2, ... */
        char old[640];
        snprintf(old, sizeof old, "%s.%d", l->log, l->runs - 1);
        rename(l->log, old);
    }
    return pl_spawn_worker(l->bootstrap, l->s, group, 1500, l->report, l->log, l->extra);
}

/* Run to the end of the stream (idle exit) and check the exit code. */
static void run_to_end(lineage *l) {
    int64_t t0 = clk_mono_ms();
    pid_t pid = start(l);
    int rc = proc_wait(pid, clk_mono_ms() + 240000, "the worker");
    CHECK_MSG(rc == 0, "worker exit %d: %s", rc, proc_slurp(l->log));
    l->run_ms = (double)(clk_mono_ms() - t0);
}

/* Start, wait until it consumes, let it work for `work_ms`, then kill -9. */
static void run_and_kill(lineage *l, int work_ms) {
    pid_t pid = start(l);
    int64_t t0 = clk_mono_ms();
    proc_wait_log(l->log, "assignment of", 60000);
    int64_t t1 = clk_mono_ms();
    usleep((useconds_t)work_ms * 1000);
    int status;
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the worker was not killed (it finished first?): %s", proc_slurp(l->log));
    l->kills++;
    const char *t = proc_slurp(l->log);
    const char *r = t ? strstr(t, "m3rec-worker: state") : NULL;
    fprintf(stderr, "test_crash: kill %d after %d ms of work (assigned after %lld ms): %.*s\n",
            l->kills, work_ms, (long long)(t1 - t0), r ? (int)strcspn(r, "\n") : 0, r ? r : "");
}

static void add_set(lineage *l, const char *kv) {
    int n = 0;
    while (l->extra[n]) n++;
    CHECK(n + 2 < (int)(sizeof l->extra / sizeof l->extra[0]));
    l->extra[n] = "--set";
    l->extra[n + 1] = strdup(kv);
    l->extra[n + 2] = NULL;
}

/* Append the settings kv (NULL-terminated) to l's. */
static void add_sets(lineage *l, const char *const *kv) {
    for (int i = 0; kv[i]; i++) add_set(l, kv[i]);
}

static void lineage_init(lineage *l, const char *bootstrap, pl_stream *s, const char *name) {
    memset(l, 0, sizeof *l);
    l->bootstrap = bootstrap;
    l->s = s;
    snprintf(l->group, sizeof l->group, "%s", name);
    snprintf(l->dir, sizeof l->dir, "%s/%s", tmp_root, name);
    snprintf(l->report, sizeof l->report, "%s/%s.json", tmp_root, name);
    snprintf(l->log, sizeof l->log, "%s/%s.log", tmp_root, name);
    char kv[700];
    snprintf(kv, sizeof kv, "store.dir=%s", l->dir);
    add_set(l, kv);
    /* a killed member's session must end before the group rebalances to its successor
     * (the mock cluster has no static membership, and 6 s is Kafka's smallest session) */
    add_set(l, "kafka.session.timeout.ms=6000");
    add_set(l, "kafka.heartbeat.interval.ms=500");
}

/* ---- comparing two stores ---- */

static void compare_stores(const char *a, const char *b) {
    char err[512];
    store *sa = storecmp_open(a), *sb = storecmp_open(b);
    storecmp(sa, sb, "test_crash", NULL, NULL);
    store_close(sa, 0, err, sizeof err);
    store_close(sb, 0, err, sizeof err);
}

/* ---- part 1 ---- */

/* One scenario, no score requests: every message goes to partition 0 of one topic. */
static void produce_single(kio_producer *p, codec *cd, pl_stream *s) {
    char err[256], topic[128];
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    sc.seed = s->seed;
    sc.n_impressions = s->n_impressions;
    sc.n_scen = 1;
    sc.requests_per_1k = 0;
    sc.n_users = 4000;
    sc.n_items = 2000;
    sc.window_ms = 300000;   /* the workers' join.window.ms: the same late conversions */
    sim *sm = sim_new(&sc, err, sizeof err);
    CHECK_MSG(sm, "%s", err);
    static unsigned char buf[1 << 16];
    m3_event ev;
    sim_truth tr;
    pl_topic(topic, sizeof topic, s->prefix, "events.home");
    long n = 0;
    while (sim_next(sm, &ev, &tr)) {
        CHECK(ev.type != M3_EV_SCORE_REQUEST);
        long len = pl_encode(cd, &ev, buf, sizeof buf);
        pl_produce(p, topic, ev.type == M3_EV_IMPRESSION ? ev.u.imp.user_id : ev.u.conv.user_id,
                   buf, (size_t)len);
        if ((++n & 1023) == 0) kio_producer_poll(p);
    }
    CHECK_MSG(kio_producer_flush(p, 60000, err, sizeof err) == 0, "flush: %s", err);
    sim_get_stats(sm, &s->st);
    sim_destroy(sm);
}

/* Topics (n) of `parts` partitions each in the mock cluster. */
static void create_topics(kio_mock *mock, const char *const *topics, int n, int parts) {
    char err[512];
    for (int i = 0; i < n; i++)
        CHECK_MSG(kio_mock_create_topic(mock, topics[i], parts, err, sizeof err) == 0, "%s", err);
}

static void part_exact(kio_mock *mock, codec *cd) {
    const char *topics[] = {"crash1.events.home", "crash1.requests", "crash1.predictions",
                            "crash1.dlq"};
    create_topics(mock, topics, 4, 1);
    const char *bs = kio_mock_bootstraps(mock);
    kio_producer *p = pl_producer(bs);
    static pl_stream s = {.prefix = "crash1", .seed = 5, .n_impressions = 30000};
    produce_single(p, cd, &s);
    kio_producer_destroy(p);
    static const char *common[] = {"scenarios=home", "model.arch=m3rec", "batch.size=128",
                                   "batch.linger.ms=60000", "checkpoint.interval.ms=250",
                                   "checkpoint.sync=false", "join.window.ms=300000",
                                   "join.lateness.ms=0", "emb.admit.count=2",
                                   "store.block_cache_mb=4", "store.write_buffer_mb=4", NULL};
    static lineage ref, run;
    lineage_init(&ref, bs, &s, "exact-ref");
    lineage_init(&run, bs, &s, "exact-crash");
    run.new_group_each_run = 1;   /* start positions come from the store anyway */
    add_sets(&ref, common);
    add_sets(&run, common);
    add_set(&ref, "store.memory.max_mb=0");
    add_set(&run, "store.memory.max_mb=2");
    run_to_end(&ref);
    fprintf(stderr, "test_crash: exact reference run took %.0f ms\n", ref.run_ms);
    /* kills spread over what the reference needed to do the work */
    for (int k = 0; k < 4; k++) run_and_kill(&run, 100 + (int)(rnd() % 1500));
    run_to_end(&run);
    json_node *jr = pl_report(ref.report), *jc = pl_report(run.report);
    CHECK_EQ_INT(json_number(json_get(jc, "trained_ctr"), -1), s.n_impressions);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.impressions"), -1), s.n_impressions);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.conversions"), -1), s.st.conversions);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.late_conversions"), -1), s.st.late_conversions);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.unmatched_conversions"), -1), 0);
    CHECK_EQ_INT(json_number(json_get(jr, "trained_ctr"), -1), s.n_impressions);
    CHECK_EQ_INT(json_number(json_get(jc, "trained_ctcvr"), -1) + json_number(json_get(jc, "pending"), -1),
                 s.n_impressions);
    CHECK_EQ_INT(storecmp_pending(run.dir), json_number(json_get(jc, "pending"), -1));
    fprintf(stderr, "test_crash: exact: state of the crashed run: %.0f evicted, %.0f loaded\n",
            json_number(json_get(jc, "state.emb_evicted"), -1),
            json_number(json_get(jc, "state.emb_loads"), -1));
    json_free(jr);
    json_free(jc);
    compare_stores(ref.dir, run.dir);
}

/* ---- part 2 ---- */

/* Every impression predicted at least once, every bad message in the DLQ (at least once:
 * a message handled after the last checkpoint is handled again after a crash). */
static void verify_outputs(const char *bootstrap, codec *cd, const pl_stream *s) {
    char err[512], t_pred[128], t_dlq[128], prefix[64], group[128];
    pl_topic(t_pred, sizeof t_pred, s->prefix, "predictions");
    pl_topic(t_dlq, sizeof t_dlq, s->prefix, "dlq");
    snprintf(group, sizeof group, "%s-check", s->prefix);
    snprintf(prefix, sizeof prefix, "imp-%llu-", (unsigned long long)s->seed);
    uint8_t *seen = calloc((size_t)s->n_impressions, 1);
    int found[PL_MAX_BAD] = {0};
    long long n_imp = 0, dup = 0, n_dlq = 0;
    const char *topics[] = {t_pred, t_dlq};
    kio_prop props[] = {{"bootstrap.servers", bootstrap}, {"group.id", group}};
    kio_consumer *c = kio_consumer_new(props, 2, topics, 2, err, sizeof err);
    CHECK_MSG(c, "%s", err);
    m3_event ev;
    int64_t deadline = clk_mono_ms() + 90000, last = clk_mono_ms();
    while (clk_mono_ms() < deadline && clk_mono_ms() - last < 5000) {
        rd_kafka_message_t *msgs[256];
        int n = kio_consumer_poll(c, msgs, 256, 200, err, sizeof err);
        CHECK_MSG(n >= 0, "poll: %s", err);
        if (n > 0) last = clk_mono_ms();
        for (int i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (strcmp(rd_kafka_topic_name(m->rkt), t_dlq) == 0) {
                for (int b = 0; b < s->n_bad; b++)
                    if (m->len == s->bad[b].len &&
                        (m->len == 0 || memcmp(m->payload, s->bad[b].bytes, m->len) == 0))
                        found[b] = 1;
                n_dlq++;
            } else {
                char reason[CODEC_REASON_MAX];
                CHECK_MSG(codec_decode(cd, m->payload, m->len, &ev, reason, sizeof reason) == 0,
                          "%s", reason);
                if (strncmp(ev.u.pred.id, prefix, strlen(prefix)) == 0) {
                    long long k = atoll(ev.u.pred.id + strlen(prefix));
                    CHECK(k >= 0 && k < s->n_impressions);
                    if (seen[k]) dup++;
                    else n_imp++;
                    seen[k] = 1;
                }
            }
            rd_kafka_message_destroy(m);
        }
    }
    kio_consumer_close(c);
    fprintf(stderr, "test_crash: %lld impressions predicted (%lld again after a crash), %lld "
            "DLQ messages for %d bad ones\n", n_imp, dup, n_dlq, s->n_bad);
    for (int64_t k = 0; k < s->n_impressions; k++)
        CHECK_MSG(seen[k], "impression %lld has no prediction", (long long)k);
    for (int b = 0; b < s->n_bad; b++) CHECK_MSG(found[b], "bad message %d not in the DLQ", b);
    free(seen);
}

static void prediction_sink(void *ud, const m3_prediction *p) {
    float *out = ud;
    long k = atol(p->id + 6);   /* "probe-<k>" */
    out[k] = p->p_ctr;
}

#define PROBES 4000

/* Score PROBES impressions that follow the stream (same world, never seen) with the model
 * stored in dir: out[k] = p_ctr, clicked[k] = the simulator's label. */
static void probe(const char *dir, const lineage *l, const pl_stream *s, const char *layout,
                  float *out, uint8_t *clicked) {
    char err[1024];
    m3_cfg cfg;
    cfg_defaults(&cfg);
    CHECK_MSG(cfg_load(&cfg, M3_SOURCE_DIR "/config/demo.properties", err, sizeof err) == 0, "%s", err);
    CHECK(cfg_set(&cfg, "model.shadow=", "test", 0, err, sizeof err) == 0);
    for (int i = 0; l->extra[i]; i += 2) CHECK_MSG(cfg_set(&cfg, l->extra[i + 1], "test", 0, err, sizeof err) == 0, "%s", err);
    char kv[700];
    snprintf(kv, sizeof kv, "store.dir=%s", dir);
    CHECK(cfg_set(&cfg, kv, "test", 0, err, sizeof err) == 0);
    CHECK_MSG(cfg_check(&cfg, err, sizeof err) == 0, "%s", err);
    lrn *L = lrn_new(&cfg, err, sizeof err);
    CHECK_MSG(L, "%s", err);
    state *st = state_open(&cfg, L, layout, err, sizeof err);
    CHECK_MSG(st, "%s", err);
    CHECK(!state_fresh(st));
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    sc.seed = s->seed;
    sc.n_impressions = s->n_impressions + PROBES;
    sim *sm = sim_new(&sc, err, sizeof err);
    CHECK_MSG(sm, "%s", err);
    m3_event ev;
    sim_truth tr;
    int64_t imp = 0;
    int k = 0;
    char reason[256];
    while (k < PROBES && sim_next(sm, &ev, &tr)) {
        if (ev.type != M3_EV_IMPRESSION || imp++ < s->n_impressions) continue;
        /* a one-candidate score request: scored, never trained on */
        m3_impression *im = &ev.u.imp;
        m3_candidate cand = {.item_id = im->item_id, .item_cat = im->item_cat, .item_num = im->item_num};
        m3_score_request rq;
        memset(&rq, 0, sizeof rq);
        snprintf(rq.request_id, sizeof rq.request_id, "probe-%d", k);
        rq.ts_ms = im->ts_ms;
        snprintf(rq.scenario, sizeof rq.scenario, "%s", im->scenario);
        rq.user_id = im->user_id;
        rq.user_cat = im->user_cat;
        rq.ctx_cat = im->ctx_cat;
        rq.user_num = im->user_num;
        rq.n_cands = 1;
        rq.cands = &cand;
        CHECK_MSG(lrn_request(L, &rq, 0, prediction_sink, out, reason, sizeof reason) == 0, "%s", reason);
        lrn_run_batch(L, prediction_sink, out);
        clicked[k++] = tr.clicked;
    }
    CHECK_EQ_INT(k, PROBES);
    sim_destroy(sm);
    CHECK(state_close(st, err, sizeof err) == 0);
    lrn_destroy(L);
    cfg_free(&cfg);
}

#define REAL_IMPRESSIONS 30000
#define REAL_PARTS 4
/* Two runs of this stream without any crash differ by minibatch composition alone: over 7
 * pairs of uninterrupted runs the probe AUCs differed by 0, 0, 0, 0.0105, 0.0111, 0.0181 and
 * 0.0228, the mean |p_ctr difference| by up to 0.082 (the models have seen 30k impressions:
 * young, and sensitive to the order they saw them in). Since model.acc0.emb and the UPT
 * snapshots (issue 3, third round) a run ends, by the order it happened to read the
 * partitions in, at one of a few probe AUCs - 0.7837 most often, also 0.7729, 0.7680, 0.7641
 * and 0.7276, the last seen for an uninterrupted run as well as for a crashed one - so two
 * lineages can differ by 0.056 with no crash involved (once in CI: crashed 0.7276,
 * uninterrupted 0.7837). The AUC tolerance covers that spread with some room; a crashed run
 * must be indistinguishable from an uninterrupted one, no more. The exact guarantees are the
 * counters above and part 1. */
#define AUC_TOLERANCE 0.08
#define MEAN_ABS_TOLERANCE 0.15

static void part_realistic(kio_mock *mock, codec *cd) {
    const char *topics[] = {"crash2.events.home", "crash2.events.search", "crash2.events.product",
                            "crash2.requests", "crash2.predictions", "crash2.dlq"};
    create_topics(mock, topics, 6, REAL_PARTS);
    const char *bs = kio_mock_bootstraps(mock);
    kio_producer *p = pl_producer(bs);
    static pl_stream s = {.prefix = "crash2", .seed = 9, .n_impressions = REAL_IMPRESSIONS};
    pl_make_bad(cd, &s);
    pl_produce_stream(p, cd, &s, 0, REAL_IMPRESSIONS, 1);
    kio_producer_destroy(p);
    long long produced = s.st.impressions + s.st.conversions + s.st.requests + s.n_bad;
    /* fetch order: in event-time order the stream's tail (conversions hours after its last
     * impression) trains CTCVR positives alone and leaves the final model's p_ctr high,
     * which the probe below would read as a broken model (docs/results.md, "Event-time
     * order") */
    static const char *common[] = {"model.arch=m3rec", "checkpoint.interval.ms=500", "metrics.progress.ms=500",
                                   "checkpoint.sync=false", "store.memory.max_mb=4",
                                   "store.block_cache_mb=4", "store.write_buffer_mb=4",
                                   "input.order.event_time=false", NULL};
    static lineage ref, run;
    lineage_init(&ref, bs, &s, "real-ref");
    lineage_init(&run, bs, &s, "real-crash");   /* one consumer group across restarts */
    add_sets(&ref, common);
    add_sets(&run, common);
    /* the crashed lineage first: the predictions topic then holds only its output */
    /* M3_CRASH_BASELINE=1: no kills, to measure how far two uninterrupted runs differ */
    for (int k = 0; k < 3 && !getenv("M3_CRASH_BASELINE"); k++)
        run_and_kill(&run, 300 + (int)(rnd() % 1500));
    run_to_end(&run);
    verify_outputs(bs, cd, &s);
    json_node *jc = pl_report(run.report);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.events"), -1), produced);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.impressions"), -1), REAL_IMPRESSIONS);
    CHECK_EQ_INT(json_number(json_get(jc, "trained_ctr"), -1), REAL_IMPRESSIONS);
    CHECK_EQ_INT(json_number(json_get(jc, "trained_ctcvr"), -1) + json_number(json_get(jc, "pending"), -1),
                 REAL_IMPRESSIONS);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.conversions"), -1), s.st.conversions);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.late_conversions"), -1), s.st.late_conversions);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.unmatched_conversions"), -1), 0);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.dlq"), -1), s.n_bad);
    CHECK_EQ_INT(json_number(json_get(jc, "counters.requests"), -1), s.st.requests);
    CHECK_EQ_INT(storecmp_pending(run.dir), json_number(json_get(jc, "pending"), -1));
    json_free(jc);
    run_to_end(&ref);
    json_node *jr = pl_report(ref.report);
    CHECK_EQ_INT(json_number(json_get(jr, "trained_ctr"), -1), REAL_IMPRESSIONS);
    json_free(jr);
    /* the two models on impressions neither saw */
    char layout[512];
    snprintf(layout, sizeof layout, "crash2.events.home,crash2.events.search,"
             "crash2.events.product,crash2.requests x %d partitions", REAL_PARTS);
    static float pa[PROBES], pb[PROBES];
    static uint8_t ya[PROBES], yb[PROBES];
    probe(run.dir, &run, &s, layout, pa, ya);
    probe(ref.dir, &ref, &s, layout, pb, yb);
    CHECK(!memcmp(ya, yb, sizeof ya));
    double mad = 0;
    for (int k = 0; k < PROBES; k++) mad += fabs((double)pa[k] - pb[k]);
    mad /= PROBES;
    double aa = auc_exact(pa, ya, PROBES, NULL, NULL), ab = auc_exact(pb, yb, PROBES, NULL, NULL);
    fprintf(stderr, "test_crash: probe set of %d: AUC crashed %.4f, uninterrupted %.4f (diff "
            "%.4f, tolerance %.2f); mean |p_ctr diff| %.4f (tolerance %.2f)\n", PROBES, aa, ab,
            aa - ab, AUC_TOLERANCE, mad, MEAN_ABS_TOLERANCE);
    CHECK(aa > 0.6 && ab > 0.6);
    CHECK(fabs(aa - ab) <= AUC_TOLERANCE);
    CHECK(mad <= MEAN_ABS_TOLERANCE);
}

int main(void) {
    char err[512];
    fs_scratch_dir(tmp_root, sizeof tmp_root, "test_crash");
    rng = proc_seed("test_crash");
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    const char *none[] = {"m3rec.unused"};
    kio_mock *mock = kio_mock_new(1, none, 1, err, sizeof err);
    CHECK_MSG(mock, "%s", err);
    const char *part = getenv("M3_CRASH_PART");   /* "1" or "2": only that part */
    if (!part || !strcmp(part, "1")) part_exact(mock, cd);
    if (!part || !strcmp(part, "2")) part_realistic(mock, cd);
    kio_mock_destroy(mock);
    codec_destroy(cd);
    if (!getenv("M3_TEST_KEEP")) rm_rf(tmp_root);
    return 0;
}
