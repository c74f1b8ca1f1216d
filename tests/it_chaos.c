/* it_chaos.c - the chaos test on a real Apache Kafka broker (scripts/kafka), in one run:
 *   - the simulator's stream (20,000 impressions, seed 21) mixed with a hostile barrage,
 *     deterministic from the test's seed (M3_TEST_SEED): valid messages with bit flips,
 *     truncated, with a field duplicated or a length written overlong, with a wrong magic,
 *     random bytes (each checked to be refused by the codec before it is sent); impressions
 *     that encode well but carry extreme numerics (user_num.activity = 3.35e38,
 *     item_num.price = -3.4e38) or implausible event times (ts_ms 1e13 and later, 0); and
 *     conversions of impressions that never existed;
 *   - a kill -9 of the worker (with a store) soon after the first half went out, and a
 *     restart on the same store;
 *   - a broker outage of 62 s in the middle of the second half.
 * The worker has no idle exit (worker.exit.idle.ms=0): it runs until the test sends it
 * SIGTERM, once its progress line has counted every produced message. Then: it exits 0;
 * every prediction decodes with p_ctr, p_cvr, p_ctcvr finite in [0, 1], and every impression
 * has one; every hostile message is in the DLQ (counted once by topic/partition/offset, as
 * outputs are at least once) with a reason naming its kind; and the final report counts
 * every message exactly once across the kill: events, impressions, conversions, requests,
 * DLQ, and the admission counters for the extreme numerics and the implausible times. */
#include <math.h>

#include "pipeline.h"

#define PARTS 4
#define N_IMP 20000
#define WARM 1000        /* hostile messages only after every source has an event-time clock */
#define EVERY 10         /* one hostile message every EVERY impressions after WARM */
#define MAX_OFF (1 << 16)

static char bootstrap[128];
static char kafka_dir[512];
static uint64_t rng_state;

static uint64_t rng(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

enum { K_FLIP, K_TRUNC, K_RANDOM, K_MAGIC, K_DUP, K_OVERLONG, K_CODEC_KINDS };

/* The run: the stream, the producer and what was sent. */
typedef struct {
    codec *cd;
    kio_producer *p;
    sim *sm;
    sim_cfg sc;
    pl_stream s;
    int64_t imp;                     /* impressions of the stream produced */
    long long msgs;                  /* every message produced, hostile ones too */
    long long n_codec[K_CODEC_KINDS], n_extreme, n_future, n_past, n_unknown;
    unsigned char good[4096];        /* the last impression of the stream, encoded */
    size_t good_len;
    m3_event last;                   /* and decoded */
} chaos;

static void kafka_cmd(const char *what) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s/scripts/kafka --dir '%s' %s >/dev/null", M3_SOURCE_DIR, kafka_dir, what);
    CHECK_MSG(system(cmd) == 0, "%s failed", cmd);
}

static void chaos_send(chaos *ch, const char *suffix, int64_t user, const void *v, size_t len) {
    char topic[128];
    pl_topic(topic, sizeof topic, ch->s.prefix, suffix);
    pl_produce(ch->p, topic, user, v, len);
    ch->msgs++;
}

/* The codec refuses these bytes. */
static int refused(chaos *ch, const unsigned char *b, size_t len) {
    m3_event ev;
    char reason[CODEC_REASON_MAX];
    if (codec_decode(ch->cd, b, len, &ev, reason, sizeof reason) != 0) return 1;
    m3_event_clear(&ev);
    return 0;
}

/* One mutation of the last good impression of kind k into out; returns its length. */
static size_t mutate(chaos *ch, int k, unsigned char *out) {
    size_t n = ch->good_len;
    memcpy(out, ch->good, n);
    switch (k) {
    case K_FLIP:
        for (int f = 1 + (int)(rng() % 8); f > 0; f--) out[rng() % n] ^= (unsigned char)(1u << (rng() % 8));
        return n;
    case K_TRUNC:
        return (size_t)(rng() % n);
    case K_RANDOM: {
        size_t len = 1 + (size_t)(rng() % 300);
        for (size_t i = 0; i < len; i++) out[i] = (unsigned char)rng();
        return len;
    }
    case K_MAGIC:
        out[0] = (unsigned char)(out[0] ^ (1 + rng() % 255));
        return n;
    case K_DUP: { /* a span of the message written twice */
        size_t at = CODEC_HEADER_LEN + (size_t)(rng() % (n - CODEC_HEADER_LEN));
        size_t span = 1 + (size_t)(rng() % (n - at < 16 ? n - at : 16));
        memmove(out + at + span, out + at, n - at);
        return n + span;
    }
    default: { /* the impression_id's length (the first field) as an overlong varint */
        CHECK(out[CODEC_HEADER_LEN] < 0x80);
        memmove(out + CODEC_HEADER_LEN + 2, out + CODEC_HEADER_LEN + 1, n - CODEC_HEADER_LEN - 1);
        out[CODEC_HEADER_LEN] |= 0x80;
        out[CODEC_HEADER_LEN + 1] = 0x00;
        return n + 1;
    }
    }
}

/* A message the codec refuses, of a random kind, to a random input topic. */
static void hostile_bytes(chaos *ch) {
    static const char *topics[] = {"events.home", "events.search", "events.product", "requests"};
    static unsigned char out[8192];
    int k = (int)(rng() % K_CODEC_KINDS);
    size_t len = 0;
    int tries = 0;
    do len = mutate(ch, k, out);
    while (!refused(ch, out, len) && ++tries < 100);
    if (tries == 100) { /* never happens in practice: a wrong magic is always refused */
        k = K_MAGIC;
        len = mutate(ch, k, out);
    }
    CHECK(refused(ch, out, len));
    ch->n_codec[k]++;
    chaos_send(ch, topics[rng() % 4], (int64_t)(rng() % 100000), out, len);
}

static m3_numkv *num_field(m3_nummap *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].name, name) == 0) return &m->kv[i];
    CHECK(m->n < M3_MAP_MAX);
    m3_numkv *kv = &m->kv[m->n++];
    snprintf(kv->name, M3_NAME_MAX, "%s", name);
    return kv;
}

/* A well-encoded event the worker must refuse (extreme numerics, implausible times) or
 * count as unmatched (a conversion of an impression that never existed). */
static void hostile_event(chaos *ch, int k) {
    static unsigned char buf[8192];
    char suffix[64];
    m3_event ev = ch->last;
    m3_impression *im = &ev.u.imp;
    snprintf(suffix, sizeof suffix, "events.%s", im->scenario);
    long long *count = k == 0 ? &ch->n_extreme : k == 1 ? &ch->n_future : k == 2 ? &ch->n_past
                                                                               : &ch->n_unknown;
    snprintf(im->impression_id, M3_ID_MAX, "chaos-%d-%lld", k, *count);
    if (k == 0 && (*count & 1)) num_field(&im->user_num, "activity")->value = 3.35e38f;
    else if (k == 0) num_field(&im->item_num, "price")->value = -3.4e38f;
    /* far-future times that never agree with one another (they are 1e11 ms apart) */
    else if (k == 1) im->ts_ms = 10000000000000LL + *count * 100000000000LL;
    else if (k == 2) im->ts_ms = 0;
    else {
        int64_t ts = im->ts_ms, user = im->user_id, item = im->item_id;
        char scen[M3_NAME_MAX];
        memcpy(scen, im->scenario, sizeof scen);
        memset(&ev, 0, sizeof ev);
        ev.type = M3_EV_CONVERSION;
        m3_conversion *cv = &ev.u.conv;
        snprintf(cv->conversion_id, M3_ID_MAX, "chaos-conv-%lld", *count);
        snprintf(cv->impression_id, M3_ID_MAX, "chaos-never-%lld", *count);
        cv->ts_ms = ts;
        memcpy(cv->scenario, scen, sizeof scen);
        cv->user_id = user;
        cv->item_id = item;
    }
    long len = pl_encode(ch->cd, &ev, buf, sizeof buf);
    (*count)++;
    chaos_send(ch, suffix, ev.type == M3_EV_IMPRESSION ? im->user_id : ev.u.conv.user_id, buf, (size_t)len);
}

static void hostile(chaos *ch) {
    int k = (int)(rng() % 10);
    if (k < 6) hostile_bytes(ch);
    else hostile_event(ch, k - 6);
}

/* Produce the stream's impressions up to `to` (with their conversions and requests), a
 * hostile message every EVERY impressions past WARM; at the end, the last conversions. */
static void produce_until(chaos *ch, int64_t to) {
    static unsigned char buf[1 << 16];
    char err[256];
    m3_event ev;
    sim_truth tr;
    while (ch->imp < to && sim_next(ch->sm, &ev, &tr)) {
        long len = pl_encode(ch->cd, &ev, buf, sizeof buf);
        char suffix[64];
        if (ev.type == M3_EV_SCORE_REQUEST) {
            chaos_send(ch, "requests", ev.u.req.user_id, buf, (size_t)len);
            ch->s.n_cands += ev.u.req.n_cands;
            continue;
        }
        snprintf(suffix, sizeof suffix, "events.%s", ch->sc.scen_names[tr.scen]);
        int is_imp = ev.type == M3_EV_IMPRESSION;
        chaos_send(ch, suffix, is_imp ? ev.u.imp.user_id : ev.u.conv.user_id, buf, (size_t)len);
        if (!is_imp) continue;
        ch->imp++;
        memcpy(ch->good, buf, (size_t)len);
        ch->good_len = (size_t)len;
        ch->last = ev;
        if (ch->imp >= WARM && ch->imp % EVERY == 0) hostile(ch);
        if ((ch->imp & 1023) == 0) kio_producer_poll(ch->p);
    }
    if (to >= N_IMP)
        while (sim_next(ch->sm, &ev, &tr)) {
            CHECK_EQ_INT(ev.type, M3_EV_CONVERSION);
            char suffix[64];
            snprintf(suffix, sizeof suffix, "events.%s", ch->sc.scen_names[tr.scen]);
            long len = pl_encode(ch->cd, &ev, buf, sizeof buf);
            chaos_send(ch, suffix, ev.u.conv.user_id, buf, (size_t)len);
        }
    CHECK_MSG(kio_producer_flush(ch->p, 60000, err, sizeof err) == 0, "flush: %s", err);
}

/* The newest "events N" of a worker's progress lines, -1 when there is none yet. */
static long long log_events(const char *log) {
    const char *t = proc_slurp(log), *at = NULL;
    for (const char *q = t; q && (q = strstr(q, "events ")) != NULL; q++)
        if (q == t || q[-1] == '\n') at = q;
    return at ? atoll(at + strlen("events ")) : -1;
}

static pid_t spawn(chaos *ch, const char *report, const char *log, const char *set_dir) {
    char *extra[] = {"--set", (char *)set_dir, "--set", "checkpoint.interval.ms=500",
                     "--set", "metrics.progress.ms=1000", "--set", "kafka.session.timeout.ms=10000",
                     "--set", "kafka.heartbeat.interval.ms=1000", NULL};
    remove(report);
    return pl_spawn_worker(bootstrap, &ch->s, "chaos-workers", 0, report, log, extra);
}

/* What the outputs hold. */
typedef struct {
    long long preds, imp, req, dup, bad_p, dlq, dlq_dup, extreme, future, past, other;
} outputs;

static void read_prediction(chaos *ch, const rd_kafka_message_t *m, uint8_t *seen, outputs *o) {
    char reason[CODEC_REASON_MAX], prefix[64];
    m3_event ev;
    CHECK_MSG(codec_decode(ch->cd, m->payload, m->len, &ev, reason, sizeof reason) == 0,
              "prediction does not decode: %s", reason);
    CHECK_EQ_INT(ev.type, M3_EV_PREDICTION);
    const m3_prediction *pr = &ev.u.pred;
    o->preds++;
    int ok = isfinite(pr->p_ctr) && isfinite(pr->p_cvr) && isfinite(pr->p_ctcvr) && pr->p_ctr >= 0 &&
             pr->p_ctr <= 1 && pr->p_cvr >= 0 && pr->p_cvr <= 1 && pr->p_ctcvr >= 0 && pr->p_ctcvr <= 1;
    if (!ok && o->bad_p++ < 5)
        fprintf(stderr, "it_chaos: prediction %s: p_ctr %g p_cvr %g p_ctcvr %g\n", pr->id,
                (double)pr->p_ctr, (double)pr->p_cvr, (double)pr->p_ctcvr);
    snprintf(prefix, sizeof prefix, "imp-%llu-", (unsigned long long)ch->s.seed);
    if (strncmp(pr->id, prefix, strlen(prefix)) == 0) {
        long long k = atoll(pr->id + strlen(prefix));
        CHECK(k >= 0 && k < N_IMP);
        if (seen[k]) o->dup++;
        else o->imp++;
        seen[k] = 1;
    } else {
        CHECK_MSG(strncmp(pr->id, "req-", 4) == 0, "a prediction for %s (refused input?)", pr->id);
        o->req++;
    }
}

/* A DLQ message: its origin once (topic index x PARTS + partition, offset), its reason's kind. */
static void read_dlq(chaos *ch, const rd_kafka_message_t *m, uint8_t *seen, outputs *o) {
    static const char *suffix[] = {"events.home", "events.search", "events.product", "requests"};
    char reason[512], origin[128], part[16], off[32], want[128];
    CHECK(pl_header(m, "m3rec.dlq.reason", reason, sizeof reason));
    CHECK_MSG(reason[0], "a DLQ message without a reason");
    CHECK(pl_header(m, "m3rec.dlq.topic", origin, sizeof origin));
    CHECK(pl_header(m, "m3rec.dlq.partition", part, sizeof part));
    CHECK(pl_header(m, "m3rec.dlq.offset", off, sizeof off));
    int t = 0;
    while (t < 4 && (pl_topic(want, sizeof want, ch->s.prefix, suffix[t]), strcmp(origin, want) != 0)) t++;
    CHECK_MSG(t < 4, "DLQ message from %s", origin);
    long long p = atoll(part), at = atoll(off);
    CHECK(p >= 0 && p < PARTS && at >= 0 && at < MAX_OFF);
    uint8_t *s = &seen[(size_t)(t * PARTS + p) * MAX_OFF + (size_t)at];
    if (*s) {
        o->dlq_dup++;
        return;
    }
    *s = 1;
    o->dlq++;
    if (strstr(reason, "outside [")) o->extreme++;
    else if (strstr(reason, "ahead of the newest event time")) o->future++;
    else if (strstr(reason, "behind its partition")) o->past++;
    else o->other++;
}

static long long n_hostile(const chaos *ch) {
    long long n = ch->n_extreme + ch->n_future + ch->n_past;
    for (int k = 0; k < K_CODEC_KINDS; k++) n += ch->n_codec[k];
    return n;
}

/* Read the predictions and the DLQ back (bounded), checking every message. */
static void read_outputs(chaos *ch, outputs *o) {
    char err[512], t_pred[128], t_dlq[128];
    pl_topic(t_pred, sizeof t_pred, ch->s.prefix, "predictions");
    pl_topic(t_dlq, sizeof t_dlq, ch->s.prefix, "dlq");
    const char *topics[] = {t_pred, t_dlq};
    kio_prop props[] = {{"bootstrap.servers", bootstrap}, {"group.id", "chaos-check"}};
    kio_consumer *c = kio_consumer_new(props, 2, topics, 2, err, sizeof err);
    CHECK_MSG(c, "%s", err);
    uint8_t *seen = calloc(N_IMP, 1), *seen_dlq = calloc((size_t)4 * PARTS * MAX_OFF, 1);
    CHECK(seen && seen_dlq);
    memset(o, 0, sizeof *o);
    int64_t deadline = clk_mono_ms() + 90000, last = clk_mono_ms();
    while (clk_mono_ms() < deadline && (o->imp < N_IMP || o->req < ch->s.n_cands || o->dlq < n_hostile(ch))) {
        rd_kafka_message_t *msgs[PL_POLL_MAX];
        int n = pl_poll(c, msgs, &last);
        if (n < 0) break;
        for (int i = 0; i < n; i++) {
            if (strcmp(rd_kafka_topic_name(msgs[i]->rkt), t_dlq) == 0) read_dlq(ch, msgs[i], seen_dlq, o);
            else read_prediction(ch, msgs[i], seen, o);
            rd_kafka_message_destroy(msgs[i]);
        }
    }
    kio_consumer_close(c);
    free(seen);
    free(seen_dlq);
}

static double rnum(const json_node *r, const char *path) { return json_number(json_get(r, path), -1); }

/* The outputs and the final report against what was produced. */
static void check_run(chaos *ch, const char *report) {
    outputs o;
    read_outputs(ch, &o);
    long long hostile = n_hostile(ch), codec_bad = hostile - ch->n_extreme - ch->n_future - ch->n_past;
    fprintf(stderr, "it_chaos: %lld messages produced, %lld hostile (%lld refused by the codec: flip %lld "
            "trunc %lld random %lld magic %lld dup %lld overlong %lld; %lld extreme, %lld future, %lld past), "
            "%lld unknown conversions\n", ch->msgs, hostile, codec_bad, ch->n_codec[K_FLIP],
            ch->n_codec[K_TRUNC], ch->n_codec[K_RANDOM], ch->n_codec[K_MAGIC], ch->n_codec[K_DUP],
            ch->n_codec[K_OVERLONG], ch->n_extreme, ch->n_future, ch->n_past, ch->n_unknown);
    fprintf(stderr, "it_chaos: %lld predictions (%lld impressions, %lld candidates, %lld repeated), "
            "%lld DLQ messages (%lld repeated)\n", o.preds, o.imp, o.req, o.dup, o.dlq, o.dlq_dup);
    CHECK_MSG(o.bad_p == 0, "%lld predictions not finite in [0, 1]", o.bad_p);
    CHECK_EQ_INT(o.imp, N_IMP);
    CHECK_MSG(o.req >= ch->s.n_cands, "%lld of %lld candidates predicted", o.req, ch->s.n_cands);
    CHECK_EQ_INT(o.dlq, hostile);
    CHECK_EQ_INT(o.extreme, ch->n_extreme);
    CHECK_EQ_INT(o.future, ch->n_future);
    CHECK_EQ_INT(o.past, ch->n_past);
    CHECK_EQ_INT(o.other, codec_bad);
    json_node *r = pl_report(report);
    CHECK_EQ_INT(rnum(r, "counters.events"), ch->msgs);
    CHECK_EQ_INT(rnum(r, "counters.impressions"), N_IMP);
    CHECK_EQ_INT(rnum(r, "trained_ctr"), N_IMP);
    CHECK_EQ_INT(rnum(r, "trained_ctcvr") + rnum(r, "pending"), N_IMP);
    CHECK_EQ_INT(rnum(r, "counters.conversions"), ch->s.st.conversions + ch->n_unknown);
    /* the implausible times moved no clock: the join settles exactly as on the clean stream */
    CHECK_EQ_INT(rnum(r, "counters.unmatched_conversions"), ch->n_unknown);
    CHECK_EQ_INT(rnum(r, "counters.late_conversions"), ch->s.st.late_conversions);
    CHECK_EQ_INT(rnum(r, "counters.requests"), ch->s.st.requests);
    CHECK_EQ_INT(rnum(r, "counters.dlq"), hostile);
    CHECK_EQ_INT(rnum(r, "admission.num_refused"), ch->n_extreme);
    CHECK_EQ_INT(rnum(r, "admission.time_ahead"), ch->n_future);
    CHECK_EQ_INT(rnum(r, "admission.time_behind"), ch->n_past);
    CHECK_EQ_INT(rnum(r, "admission.time_confirmed"), 0);
    CHECK_EQ_INT(rnum(r, "guard.nonfinite_predictions"), 0);
    fprintf(stderr, "it_chaos: report: ctr auc %.4f, %.0f unmatched and %.0f late conversions, guard "
            "%.0f skipped %.0f rollbacks, outage longest %.0f ms\n", rnum(r, "overall.ctr.auc"),
            rnum(r, "counters.unmatched_conversions"), rnum(r, "counters.late_conversions"),
            rnum(r, "guard.skipped_steps"), rnum(r, "guard.rollbacks"), rnum(r, "outage.longest_ms"));
    CHECK_MSG(rnum(r, "outage.longest_ms") >= 60000, "longest outage %.0f ms", rnum(r, "outage.longest_ms"));
    json_free(r);
}

/* While the broker is down for 62 s, the worker lives and pauses. */
static void outage(pid_t pid, const char *log) {
    kafka_cmd("stop");
    int64_t t0 = clk_mono_ms();
    proc_wait_log(log, "consuming paused: the broker is unreachable", 60000);
    while (clk_mono_ms() - t0 < 62000) {
        CHECK_MSG(kill(pid, 0) == 0 && waitpid(pid, NULL, WNOHANG) == 0,
                  "the worker exited during the outage:\n%s", proc_slurp(log));
        usleep(500 * 1000);
    }
    kafka_cmd("start --keep");
}

int main(void) {
    pl_read_bootstrap(bootstrap, sizeof bootstrap, kafka_dir, sizeof kafka_dir);
    rng_state = proc_seed("it_chaos");
    static chaos ch;
    char err[512];
    ch.cd = codec_new(err, sizeof err);
    CHECK_MSG(ch.cd, "%s", err);
    snprintf(ch.s.prefix, sizeof ch.s.prefix, "chaos");
    ch.s.seed = 21;
    ch.s.n_impressions = N_IMP;
    sim_cfg_defaults(&ch.sc);
    ch.sc.seed = ch.s.seed;
    ch.sc.n_impressions = N_IMP;
    ch.sm = sim_new(&ch.sc, err, sizeof err);
    CHECK_MSG(ch.sm, "%s", err);
    pl_create_topics(bootstrap, ch.s.prefix, PARTS);
    char set_dir[700], rm[800];
    snprintf(set_dir, sizeof set_dir, "store.dir=%s/it_chaos.store", M3_BINARY_DIR);
    snprintf(rm, sizeof rm, "rm -rf '%s'", set_dir + strlen("store.dir="));
    CHECK(system(rm) == 0);
    int64_t t_start = clk_mono_ms();

    /* the first half; the worker killed -9 as soon as it says it got somewhere */
    pid_t w1 = spawn(&ch, "it_chaos_w1.json", "it_chaos_w1.log", set_dir);
    proc_wait_log("it_chaos_w1.log", "assigned 16 partitions", 60000);
    ch.p = pl_producer(bootstrap);
    produce_until(&ch, N_IMP / 2);
    int64_t deadline = clk_mono_ms() + 30000;
    while (log_events("it_chaos_w1.log") <= 0 && clk_mono_ms() < deadline) usleep(20 * 1000);
    CHECK_EQ_INT(kill(w1, SIGKILL), 0);
    CHECK_EQ_INT(proc_wait(w1, clk_mono_ms() + 10000, "the killed worker"), 128 + SIGKILL);
    fprintf(stderr, "it_chaos: worker killed -9 at events %lld of %lld produced\n",
            log_events("it_chaos_w1.log"), ch.msgs);

    /* a restart on the same store; the second half with a 62 s outage in its middle */
    const char *log = "it_chaos_w2.log", *report = "it_chaos_w2.json";
    pid_t w2 = spawn(&ch, report, log, set_dir);
    proc_wait_log(log, "assigned 16 partitions", 60000);
    produce_until(&ch, N_IMP * 3 / 4);
    kio_producer_destroy(ch.p);
    outage(w2, log);
    ch.p = pl_producer(bootstrap);
    produce_until(&ch, N_IMP);
    kio_producer_destroy(ch.p);
    sim_get_stats(ch.sm, &ch.s.st);
    sim_destroy(ch.sm);

    /* input dried up: once the worker has counted every message, SIGTERM */
    deadline = clk_mono_ms() + 120000;
    while (log_events(log) < ch.msgs && clk_mono_ms() < deadline) {
        CHECK_MSG(waitpid(w2, NULL, WNOHANG) == 0, "the worker exited on its own:\n%s", proc_slurp(log));
        usleep(200 * 1000);
    }
    CHECK_MSG(log_events(log) == ch.msgs, "the worker counted %lld of %lld messages", log_events(log), ch.msgs);
    CHECK_EQ_INT(kill(w2, SIGTERM), 0);
    CHECK_EQ_INT(proc_wait(w2, clk_mono_ms() + 60000, "the worker after SIGTERM"), 0);
    CHECK_MSG(strstr(proc_slurp(log), "consuming resumed"), "no 'consuming resumed' in the log");
    check_run(&ch, report);
    fprintf(stderr, "it_chaos: passed in %.0f s\n", (double)(clk_mono_ms() - t_start) / 1000.0);
    codec_destroy(ch.cd);
    CHECK(system(rm) == 0);
    return 0;
}
