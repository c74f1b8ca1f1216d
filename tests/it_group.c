/* it_group.c - a group of workers with group.changelog=true on a real Kafka broker
 * (scripts/kafka, CTest's fixture): state that follows its partition, exactly once.
 *
 * One simulated stream into 8 partitions per topic, produced in phases: two workers
 * consume the first 40%; the next 20% arrives and a third worker joins (a rebalance moves
 * partitions to it); 20% more arrives and the first worker is killed (-9) while it works,
 * then restarted at once with its store (it fences its predecessor's open transaction and
 * takes part in the next rebalance); the last 20% arrives, and once the group has
 * committed everything the workers are stopped (SIGTERM).
 * Asserts, across the group:
 *   - every impression's prediction is committed exactly once (the predictions topic read
 *     read_committed: one per impression id, no duplicate);
 *   - every impression, conversion and request is handled and trained exactly once: the
 *     per-partition counts the changelog's meta records carry (committed with the offsets)
 *     add up to the stream, and the workers' reports never count more;
 *   - 0 conversions are orphaned by the moves (unmatched_conversions sums to 0);
 *   - no user state is lost: each user's last changelog record counts exactly the user's
 *     impressions per scenario in the stream;
 *   - a corrupt changelog record stops a worker that restores it, with the reason, before
 *     it handles anything of the partition;
 *   - with the key off (a new group on the same stream), a worker that has state and loses
 *     partitions to a joining one warns that their users' state stays behind;
 *   - the group shares one model (group.sync=grad, batch.size=128, as docker-compose.yml
 *     runs it): the group's CTR AUC over every committed prediction is within AUC_TOL of
 *     one worker's on the same stream (run afterwards in a group of its own); with grad,
 *     the workers that stepped the same rounds before they stopped - the restarted one
 *     and the joiner among them - hold bit-identical dense parameters (report
 *     group.dense_checksum, group.grad_round).
 * M3_IT_GROUP_CHANGELOG=false runs the same with both keys off (it then fails: the figures
 * it prints show what the moves cost). M3_IT_GROUP_SYNC=sum (or another rule) runs the
 * group with that rule instead of grad. */
#include "pipeline.h"

#include <signal.h>

#include "auc.h"
#include "engine/model.h"
#include "stream/changelog.h"

#define PARTS 8
#define N_IMP 40000
#define N_WORKERS 3   /* and a fourth for the corrupt record */
#define SCEN 3
#define EMB_DIM 16
/* The group's CTR AUC may be this much below one worker's. It is loose on purpose: on
 * 40,000 impressions one worker's prequential CTR AUC has a standard error of ~0.005, and
 * the group's model is rebuilt around a join and a kill -9 on a loaded machine (peers given
 * up after group.sync.wait.ms): measured -0.003, -0.011 and -0.023 with group.sync=sum,
 * -0.008, -0.016 and -0.008 with grad (docs/results.md). It catches a group
 * whose joiner trains from its own start-up model (-0.061); a group whose blobs are all
 * refused (-0.034) is caught by the refusal count below. The 0.003 is measured
 * with a stable membership by scripts/bench-group. */
#define AUC_TOL 0.04

static char bootstrap[128], kafka_dir[512];
static int changelog_on = 1;
static char sync_set[64] = "group.sync=grad";   /* M3_IT_GROUP_SYNC */
static int reference_run;   /* spawn_group: one worker alone, neither key on */

static void worker_paths(int w, int restart, char *store, char *report, char *log, size_t n) {
    snprintf(store, n, "%s/it_group_w%d.store", M3_BINARY_DIR, w);
    snprintf(report, n, "it_group_w%d%s.json", w, restart ? "b" : "");
    snprintf(log, n, "it_group_w%d%s.log", w, restart ? "b" : "");
}

static pid_t spawn_group(const pl_stream *s, int w, int restart, const char *suffix);

static pid_t spawn(const pl_stream *s, int w, int restart) {
    return spawn_group(s, w, restart, "workers");
}

/* A fresh worker w in group <prefix>-<suffix>. */
static pid_t spawn_in(const pl_stream *s, int w, const char *suffix) {
    return spawn_group(s, w, 0, suffix);
}

static pid_t spawn_group(const pl_stream *s, int w, int restart, const char *suffix) {
    static char store[N_WORKERS + 4][512], set_store[N_WORKERS + 4][600];
    char report[512], log[512];
    worker_paths(w, restart, store[w], report, log, 512);
    snprintf(set_store[w], sizeof set_store[w], "store.dir=%s", store[w]);
    if (!restart) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", store[w]);
        CHECK(system(cmd) == 0);
        remove(report);
    }
    int group_keys = changelog_on && !reference_run;
    char *extra[] = {"--set", set_store[w],
                     "--set", group_keys ? "group.changelog=true" : "group.changelog=false",
                     "--set", group_keys ? sync_set : "group.sync=none",
                     "--set", group_keys ? "batch.size=128" : "batch.size=256",
                     "--set", "checkpoint.interval.ms=1000", "--set", "checkpoint.sync=false",
                     "--set", "kafka.session.timeout.ms=6000",
                     "--set", "kafka.heartbeat.interval.ms=500",
                     "--set", "metrics.progress.ms=5000", NULL};
    char group[128];
    snprintf(group, sizeof group, "%s-%s", s->prefix, suffix);
    return pl_spawn_worker(bootstrap, s, group, reference_run ? 5000 : 0, report, log, extra);
}

/* The group's lag over every input partition (0: all committed up to the end). */
static int64_t group_lag(const pl_stream *s) {
    static const char *suffix[] = {"events.home", "events.search", "events.product", "requests"};
    char err[512], topic[128];
    kio_prop props[] = {{"bootstrap.servers", bootstrap}};
    char group[128];
    snprintf(group, sizeof group, "%s-workers", s->prefix);
    kio_probe *p = kio_probe_new(props, 1, group, err, sizeof err);
    CHECK_MSG(p, "%s", err);
    int64_t lag = 0;
    for (int t = 0; t < 4; t++)
        for (int q = 0; q < PARTS; q++) {
            pl_topic(topic, sizeof topic, s->prefix, suffix[t]);
            int64_t l = kio_probe_lag(p, topic, q, 10000, err, sizeof err);
            CHECK_MSG(l >= 0, "%s", err);
            lag += l;
        }
    kio_probe_destroy(p);
    return lag;
}

static void wait_consumed(const pl_stream *s, int timeout_ms) {
    int64_t until = clk_mono_ms() + timeout_ms, lag = -1;
    while (clk_mono_ms() < until && (lag = group_lag(s)) > 0) usleep(300 * 1000);
    CHECK_MSG(lag == 0, "the group still lags %lld messages after %d ms", (long long)lag,
              timeout_ms);
}

/* Read topic from the beginning (a fresh group, read_committed: librdkafka's default)
 * until nothing comes for 8 s, calling fn for each message. */
static void read_all(const char *topic, const char *group,
                     void (*fn)(void *ud, const rd_kafka_message_t *m), void *ud) {
    char err[512];
    kio_prop props[] = {{"bootstrap.servers", bootstrap}, {"group.id", group},
                        {"isolation.level", "read_committed"}};
    kio_consumer *c = kio_consumer_new(props, 3, &topic, 1, err, sizeof err);
    CHECK_MSG(c, "%s", err);
    int64_t last = clk_mono_ms(), deadline = clk_mono_ms() + 120000;
    while (clk_mono_ms() < deadline) {
        rd_kafka_message_t *msgs[PL_POLL_MAX];
        int n = kio_consumer_poll(c, msgs, PL_POLL_MAX, 200, err, sizeof err);
        CHECK_MSG(n >= 0, "poll: %s", err);
        if (n > 0) last = clk_mono_ms();
        else if (clk_mono_ms() - last > 8000) break;
        for (int i = 0; i < n; i++) {
            fn(ud, msgs[i]);
            rd_kafka_message_destroy(msgs[i]);
        }
    }
    kio_consumer_close(c);
}

typedef struct {
    codec *cd;
    char prefix[64];
    uint8_t *seen;
    long long distinct, dup;
} pred_ctx;

/* ---- the group's AUC: every committed prediction against the stream's clicks ---- */

static float pred_ctr[N_IMP];
static signed char click_of[N_IMP];   /* from the simulator; -1: not seen */

/* The exact AUC of p_ctr over the impressions in seen. */
static double group_auc(const uint8_t *seen) {
    float *p = malloc(N_IMP * sizeof *p);
    uint8_t *y = malloc(N_IMP);
    CHECK(p && y);
    size_t n = 0;
    for (int k = 0; k < N_IMP; k++)
        if (seen[k] && click_of[k] >= 0) {
            p[n] = pred_ctr[k];
            y[n++] = (uint8_t)click_of[k];
        }
    double pos, neg, a = auc_exact(p, y, n, &pos, &neg);
    free(p);
    free(y);
    CHECK(pos > 0 && neg > 0);
    return a;
}

/* One worker alone on the whole stream (a group of its own, neither key on; it leaves when
 * idle: without the changelog a checkpoint can wait for settled labels, so its group's lag
 * need not reach 0): its report's prequential CTR AUC. */
static double one_worker_auc(const pl_stream *s) {
    char store[512], report[512], log[512];
    reference_run = 1;
    pid_t one = spawn_in(s, 0, "one");   /* it leaves after 5 s without input */
    reference_run = 0;
    worker_paths(0, 0, store, report, log, sizeof log);
    int rc = proc_wait(one, clk_mono_ms() + 150000, log);
    CHECK_MSG(rc == 0, "the reference worker exited %d:\n%s", rc, proc_slurp(log));
    json_node *r = pl_report(report);
    double auc = json_number(json_get(r, "overall.ctr.auc"), -1);
    json_free(r);
    CHECK(auc > 0);
    return auc;
}

static void count_prediction(void *ud, const rd_kafka_message_t *m) {
    pred_ctx *c = ud;
    m3_event ev;
    char reason[CODEC_REASON_MAX];
    CHECK_MSG(pl_decode_prediction(c->cd, m, &ev, reason, sizeof reason) == 0, "%s", reason);
    if (strncmp(ev.u.pred.id, c->prefix, strlen(c->prefix)) != 0) return;   /* a request's */
    long long k = atoll(ev.u.pred.id + strlen(c->prefix));
    CHECK(k >= 0 && k < N_IMP);
    if (c->seen[k]) c->dup++;
    else c->distinct++;
    c->seen[k] = 1;
    pred_ctr[k] = ev.u.pred.p_ctr;
}

/* ---- users: the stream's impressions per user and scenario vs. the changelog ---- */

typedef struct {
    int64_t uid;
    uint32_t imp[SCEN];
    uint32_t chg[SCEN];
    int found;
} user_truth;

typedef struct {
    user_truth *u;
    int n, cap;
} users_ctx;

static user_truth *user_of(users_ctx *c, uint64_t key, int64_t uid, int create) {
    for (int i = 0; i < c->n; i++)   /* a few thousand users: a scan is fast enough */
        if ((uint64_t)m3_feat_key(0, c->u[i].uid) == key) return &c->u[i];
    if (!create) return NULL;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->u = realloc(c->u, (size_t)c->cap * sizeof *c->u);
        CHECK(c->u);
    }
    user_truth *t = &c->u[c->n++];
    memset(t, 0, sizeof *t);
    t->uid = uid;
    return t;
}

static void stream_users(const pl_stream *s, users_ctx *c) {
    sim_cfg sc;
    sim *sm = pl_sim_new(s, &sc);
    m3_event ev;
    sim_truth tr;
    while (sim_next(sm, &ev, &tr)) {
        if (ev.type != M3_EV_IMPRESSION) continue;
        CHECK(tr.scen >= 0 && tr.scen < SCEN);
        const char *dash = strrchr(ev.u.imp.impression_id, '-');
        long long k = dash ? atoll(dash + 1) : -1;
        CHECK(k >= 0 && k < N_IMP);
        click_of[k] = (signed char)tr.clicked;
        user_of(c, m3_feat_key(0, ev.u.imp.user_id), ev.u.imp.user_id, 1)->imp[tr.scen]++;
    }
    sim_destroy(sm);
}

static chg_meta metas[PARTS][4];   /* the last meta record of each partition's sources */

static void changelog_user(void *ud, const rd_kafka_message_t *m) {
    users_ctx *c = ud;
    const char *k = m->key;
    if (m->key_len == 3 && k[0] == 'm' && m->payload) {
        int t = k[2] - '0';
        CHECK(t >= 0 && t < 4 && m->partition < PARTS);
        CHECK_EQ_INT(m->len, CHG_HEAD + CHG_META_BYTES + CHG_TAIL);
        memcpy(&metas[m->partition][t], (const unsigned char *)m->payload + CHG_HEAD,
               sizeof(chg_meta));
        return;
    }
    if (m->key_len != 18 || k[0] != 'u' || !m->payload) return;
    char hex[17];
    memcpy(hex, k + 2, 16);
    hex[16] = 0;
    user_truth *t = user_of(c, strtoull(hex, NULL, 16), 0, 0);
    CHECK_MSG(t, "changelog user %s is not in the stream", hex);
    /* payload: pref (SCEN, EMB_DIM) floats, then impressions per scenario (u32) */
    size_t at = CHG_HEAD + (size_t)SCEN * EMB_DIM * sizeof(float);
    CHECK(m->len >= at + SCEN * 4 + CHG_TAIL);
    memcpy(t->chg, (const unsigned char *)m->payload + at, sizeof t->chg);
    t->found = 1;
}

/* A record that is no changelog record, in partition 0 of the changelog: a worker that is
 * assigned the partition refuses it with the reason and stops before it handles any of the
 * partition's messages (nothing of it is installed). */
static void refuse_bad_record(const pl_stream *s) {
    char topic[128], err[512];
    pl_topic(topic, sizeof topic, s->prefix, "changelog");
    kio_producer *p = pl_producer(bootstrap);
    static const char key[] = "u/0000000000000001", junk[] = "not a changelog record at all, whatever its length may be";
    CHECK_MSG(kio_produce_to(p, topic, 0, key, strlen(key), junk, sizeof junk, err, sizeof err) == 0,
              "%s", err);
    CHECK_MSG(kio_producer_flush(p, 30000, err, sizeof err) == 0, "%s", err);
    kio_producer_destroy(p);
    pid_t pid = spawn(s, 4, 0);
    int rc = proc_wait(pid, clk_mono_ms() + 60000, "worker 4");
    const char *log = proc_slurp("it_group_w4.log");
    CHECK_MSG(rc == 1, "worker 4 exited %d:\n%s", rc, log);
    CHECK_CONTAINS(log, "restoring partitions from");
    CHECK_CONTAINS(log, "[0] offset");
    CHECK_CONTAINS(log, "refused: not a changelog record");
    CHECK_CONTAINS(log, "stopping before any of their messages is handled");
    fprintf(stderr, "it_group: a corrupt changelog record is refused\n");
}

/* With the key off, a worker that has state and loses partitions to a joining worker
 * says once that their users' state stays behind (a new group on the same topics). */
static void warn_when_off(const pl_stream *s) {
    int was = changelog_on;
    changelog_on = 0;
    pid_t a = spawn_in(s, 5, "off"), b;
    proc_wait_log("it_group_w5.log", "events", 60000);   /* a progress line: it has state */
    b = spawn_in(s, 6, "off");
    proc_wait_log("it_group_w5.log", "WARNING: partition", 60000);
    const char *log = proc_slurp("it_group_w5.log");
    CHECK_CONTAINS(log, "moved away from this worker: its users' state");
    CHECK_CONTAINS(log, "set group.changelog=true");
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    proc_wait(a, clk_mono_ms() + 30000, "worker 5");
    proc_wait(b, clk_mono_ms() + 30000, "worker 6");
    changelog_on = was;
    fprintf(stderr, "it_group: with the key off, a move is warned about\n");
}

/* ---- the run ---- */

static double sum_of(json_node *const *r, int n, const char *key) {
    double v = 0;
    for (int i = 0; i < n; i++) v += json_number(json_get(r[i], key), 0);
    return v;
}

int main(void) {
    const char *off = getenv("M3_IT_GROUP_CHANGELOG");
    changelog_on = !(off && strcmp(off, "false") == 0);
    const char *rule = getenv("M3_IT_GROUP_SYNC");
    if (rule && *rule) snprintf(sync_set, sizeof sync_set, "group.sync=%s", rule);
    memset(click_of, -1, sizeof click_of);
    pl_read_bootstrap(bootstrap, sizeof bootstrap, kafka_dir, sizeof kafka_dir);
    char err[512];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    static pl_stream s = {.seed = 16, .n_impressions = N_IMP};
    snprintf(s.prefix, sizeof s.prefix, "itg%d-%d", changelog_on, (int)getpid());
    pl_create_topics(bootstrap, s.prefix, PARTS);
    kio_producer *p = pl_producer(bootstrap);
    int64_t t0 = clk_mono_ms();

    pl_produce_stream(p, cd, &s, 0, N_IMP * 4 / 10, 0);
    pid_t pid[N_WORKERS + 1];
    pid[1] = spawn(&s, 1, 0);
    pid[2] = spawn(&s, 2, 0);
    wait_consumed(&s, 60000);
    fprintf(stderr, "it_group: two workers consumed 40%% at %.1f s\n", (clk_mono_ms() - t0) / 1e3);

    pl_produce_stream(p, cd, &s, N_IMP * 4 / 10, N_IMP * 6 / 10, 0);
    pid[3] = spawn(&s, 3, 0);
    proc_wait_log("it_group_w3.log", "m3rec-worker: assigned ", 60000);
    pl_produce_stream(p, cd, &s, N_IMP * 6 / 10, N_IMP * 8 / 10, 0);
    CHECK(kill(pid[1], SIGKILL) == 0);   /* while it handles its share of the last 20% */
    CHECK_EQ_INT(proc_wait(pid[1], clk_mono_ms() + 10000, "killed worker"), 128 + SIGKILL);
    pid[1] = spawn(&s, 1, 1);
    fprintf(stderr, "it_group: third worker joined, first killed -9 and restarted at %.1f s\n",
            (clk_mono_ms() - t0) / 1e3);
    pl_produce_stream(p, cd, &s, N_IMP * 8 / 10, N_IMP, 0);
    kio_producer_destroy(p);
    /* everything committed (offsets follow the transactions), then a graceful stop: the
     * restarted worker may have had no input at all, so an idle exit would not come */
    if (changelog_on) {
        wait_consumed(&s, 90000);
    } else {   /* without it a worker may wait for impressions to settle labels and commit */
        int64_t lag = -1, prev = -2, since = clk_mono_ms();
        while (clk_mono_ms() - since < 10000) {
            if ((lag = group_lag(&s)) != prev) since = clk_mono_ms();
            prev = lag;
            usleep(500 * 1000);
        }
    }
    for (int w = 1; w <= N_WORKERS; w++) CHECK(kill(pid[w], SIGTERM) == 0);
    for (int w = 1; w <= N_WORKERS; w++) {
        char store[512], report[512], log[512];
        worker_paths(w, w == 1, store, report, log, sizeof log);
        int rc = proc_wait(pid[w], clk_mono_ms() + 60000, log);
        CHECK_MSG(rc == 0, "worker %d exited %d:\n%s", w, rc, proc_slurp(log));
    }
    fprintf(stderr, "it_group: all workers done at %.1f s\n", (clk_mono_ms() - t0) / 1e3);

    json_node *r[N_WORKERS];
    for (int w = 1; w <= N_WORKERS; w++) {
        char store[512], report[512], log[512];
        worker_paths(w, w == 1, store, report, log, sizeof log);
        r[w - 1] = pl_report(report);
    }
    double imps = sum_of(r, N_WORKERS, "counters.impressions");
    double trained = sum_of(r, N_WORKERS, "trained_ctr");
    double convs = sum_of(r, N_WORKERS, "counters.conversions");
    double reqs = sum_of(r, N_WORKERS, "counters.requests");
    double unmatched = sum_of(r, N_WORKERS, "counters.unmatched_conversions");
    pred_ctx pc = {.cd = cd, .seen = calloc(N_IMP, 1)};
    snprintf(pc.prefix, sizeof pc.prefix, "imp-%llu-", (unsigned long long)s.seed);
    char topic[128], group[128];
    pl_topic(topic, sizeof topic, s.prefix, "predictions");
    snprintf(group, sizeof group, "%s-check", s.prefix);
    read_all(topic, group, count_prediction, &pc);
    fprintf(stderr, "it_group: group.changelog=%s: %.0f impressions counted, %.0f trained, %.0f of "
            "%lld conversions, %.0f of %lld requests, %.0f unmatched conversions; predictions "
            "(read_committed): %lld distinct of %d, %lld duplicates\n",
            changelog_on ? "true" : "false", imps, trained, convs, (long long)s.st.conversions,
            reqs, (long long)s.st.requests, unmatched, pc.distinct, N_IMP, pc.dup);
    CHECK_EQ_INT(unmatched, 0);
    CHECK_EQ_INT(pc.dup, 0);
    CHECK_EQ_INT(pc.distinct, N_IMP);
    /* the workers' own counters never count anything twice; they can miss what a worker
     * killed between its transaction's commit and its store's had counted (its store is
     * one checkpoint behind: docs/architecture.md) */
    CHECK(imps <= N_IMP && trained == imps && convs <= s.st.conversions);

    users_ctx uc = {0};
    stream_users(&s, &uc);
    pl_topic(topic, sizeof topic, s.prefix, "changelog");
    snprintf(group, sizeof group, "%s-check-chg", s.prefix);
    read_all(topic, group, changelog_user, &uc);
    long long lost = 0;
    for (int i = 0; i < uc.n; i++) {
        const user_truth *t = &uc.u[i];
        int ok = t->found;
        for (int k = 0; k < SCEN; k++) ok &= t->chg[k] == t->imp[k];
        if (!ok && lost++ < 5)
            fprintf(stderr, "it_group: user %lld: changelog counts %u/%u/%u impressions, the "
                    "stream has %u/%u/%u\n", (long long)t->uid, t->chg[0], t->chg[1], t->chg[2],
                    t->imp[0], t->imp[1], t->imp[2]);
    }
    fprintf(stderr, "it_group: %d users, %lld with a lost or wrong state\n", uc.n, lost);
    CHECK_EQ_INT(lost, 0);
    /* the exact counts: per partition, in the transactions with the offsets */
    long long m_imp = 0, m_conv = 0, m_req = 0;
    for (int q = 0; q < PARTS; q++)
        for (int t = 0; t < 4; t++) {
            m_imp += (long long)metas[q][t].impressions;
            m_conv += (long long)metas[q][t].conversions;
            m_req += (long long)metas[q][t].requests;
        }
    fprintf(stderr, "it_group: the changelog counts %lld impressions, %lld conversions, %lld "
            "requests handled and trained\n", m_imp, m_conv, m_req);
    CHECK_EQ_INT(m_imp, N_IMP);
    CHECK_EQ_INT(m_conv, s.st.conversions);
    CHECK_EQ_INT(m_req, s.st.requests);
    if (changelog_on) {   /* one model across the group: as good as one worker */
        double applied = sum_of(r, N_WORKERS, "group.applied");
        double gerr = sum_of(r, N_WORKERS, "group.errors") + sum_of(r, N_WORKERS, "group.refused");
        fprintf(stderr, "it_group: %.0f peers' blobs applied, %.0f transport errors or refusals\n",
                applied, gerr);
        CHECK(applied > 0);
        CHECK_EQ_INT(gerr, 0);
        double g = group_auc(pc.seen), one = one_worker_auc(&s);
        for (int w = 0; w < N_WORKERS; w++)
            fprintf(stderr, "it_group: worker %d: dense checksum %s after round %.0f (%.0f grad "
                    "steps), %.0f peers given up\n", w + 1,
                    json_string(json_get(r[w], "group.dense_checksum"), "?"),
                    json_number(json_get(r[w], "group.grad_round"), 0),
                    json_number(json_get(r[w], "group.grad_steps"), 0),
                    json_number(json_get(r[w], "group.peers_gone"), 0));
        /* grad: members that stepped the same rounds hold the same dense parameters - the
         * joiner and the restarted worker too (the snapshot carries Adam's state and the
         * round; a silent member is given up by a message every member applies alike) */
        int same = 0;
        for (int v = 0; strcmp(sync_set, "group.sync=grad") == 0 && v < N_WORKERS; v++)
            for (int w = v + 1; w < N_WORKERS; w++) {
                const char *cv = json_string(json_get(r[v], "group.dense_checksum"), "?");
                const char *cw = json_string(json_get(r[w], "group.dense_checksum"), "?");
                if (json_number(json_get(r[v], "group.grad_round"), -1) !=
                    json_number(json_get(r[w], "group.grad_round"), -2))
                    continue;
                same++;
                CHECK_MSG(strcmp(cv, cw) == 0, "workers %d and %d stepped the same rounds and "
                          "hold different dense parameters (%s, %s)", v + 1, w + 1, cv, cw);
            }
        if (strcmp(sync_set, "group.sync=grad") == 0)
            fprintf(stderr, "it_group: %d pairs of workers stepped the same rounds, each pair "
                    "bit-identical\n", same);
        fprintf(stderr, "it_group: CTR AUC over the committed predictions %.4f (%s, "
                "group.changelog=true), "
                "one worker alone %.4f: %+.4f (tolerance %.3f)\n", g, sync_set, one, g - one, AUC_TOL);
        CHECK(g >= one - AUC_TOL);
        refuse_bad_record(&s);
        warn_when_off(&s);
    }
    for (int w = 0; w < N_WORKERS; w++) json_free(r[w]);
    free(uc.u);
    free(pc.seen);
    codec_destroy(cd);
    fprintf(stderr, "it_group: ok in %.1f s\n", (clk_mono_ms() - t0) / 1e3);
    return 0;
}
