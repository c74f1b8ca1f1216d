/* m3rec-worker - consume scenario events from Kafka, predict, publish, learn.
 *
 * Usage: m3rec-worker [--config FILE] [--set key=value]... [--report PATH] [--print-config]
 *
 * One process, one consumer-group member: it reads <prefix>.events.<scenario> for every
 * configured scenario and <prefix>.requests (range assignor: a user's partitions of all
 * topics land here together), decodes Avro single-object messages, sends bad ones to
 * <prefix>.dlq with the reason, runs the learner (predict first, then train) and
 * publishes a Prediction for every impression and every score-request candidate to
 * <prefix>.predictions. With broker.embedded=true it hosts librdkafka's mock cluster
 * itself, so it runs with no Kafka installed.
 *
 * With store.dir set the learner's state lives in RocksDB (state.h): every
 * checkpoint.interval.ms, at the first minibatch boundary, one write batch stores the
 * changed state with the next offset of every input partition; on assignment each
 * partition starts after its stored offset (or the group's committed one if that is
 * further: another worker got there), so a restart after a crash redoes exactly the input
 * after the last checkpoint. Kafka's committed offsets follow the checkpoints, for lag
 * monitoring. Without store.dir offsets are stored after each message and committed every
 * second, and a restart starts a fresh model. */
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "app/app.h"
#include "config/cfg.h"
#include "stream/codec.h"
#include "stream/kio.h"
#include "stream/learner.h"
#include "report/metrics.h"
#include "state/state.h"

#define TOPIC_MAX 256
#define POLL_MAX 512
#define COMMIT_EVERY_MS 1000
#define START_TIMEOUT_MS 15000

static volatile sig_atomic_t run = 1;

static void on_signal(int sig) {
    (void)sig;
    run = 0;
}

typedef struct {
    m3_cfg cfg;
    codec *codec;
    lrn *L;
    kio_mock *mock;
    kio_producer *prod;
    kio_consumer *cons;
    kio_prop *props;                       /* librdkafka properties (views into cfg) */
    int n_props;
    char topics[M3_MAX_SCEN + 1][TOPIC_MAX]; /* events topics, then requests */
    int n_topics;
    int n_partitions;                      /* of every input topic (checked equal) */
    long long *per_source;                 /* (n_topics x n_partitions) messages handled */
    int64_t first_input_ms, last_input_ms; /* monotonic, 0 before any input */
    char topic_pred[TOPIC_MAX], topic_dlq[TOPIC_MAX];
    unsigned char *buf;                    /* encode buffer */
    size_t buf_cap;
    long long produce_errors;
    char last_produce_error[256];
    /* durable state (store.dir), NULL when in memory */
    state *st;
    int64_t *next_off;                     /* (n_topics x n_partitions) next offset to consume
                                              after what was handled; -1: nothing handled
                                              since the partition was assigned */
    int64_t last_ckpt_ms;                  /* monotonic */
    uint64_t events_at_ckpt;               /* input handled at the last checkpoint */
    int64_t version_at_ckpt;               /* and the model version (a flush may train
                                              released pending rows without new input) */
    int failed;                            /* a checkpoint or the state failed: stop */
} worker;

static int64_t mono_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void usage(void) {
    fprintf(stderr,
            "usage: m3rec-worker [--config FILE] [--set key=value]... [--report PATH]\n"
            "                    [--print-config]\n"
            "  --config FILE     properties file (see config/worker.properties)\n"
            "  --set key=value   override one key (any number, applied in order)\n"
            "  --report PATH     write the metrics report (JSON) there at exit\n"
            "  --print-config    print the effective configuration and exit\n");
}

/* ---- output: predictions and the dead-letter queue ---- */

static void emit_prediction(void *ud, const m3_prediction *p) {
    worker *w = ud;
    m3_event ev;
    ev.type = M3_EV_PREDICTION;
    ev.u.pred = *p;
    char reason[CODEC_REASON_MAX], key[32];
    long len = codec_encode(w->codec, &ev, w->buf, w->buf_cap, reason, sizeof reason);
    if (len < 0) {
        w->produce_errors++;
        snprintf(w->last_produce_error, sizeof w->last_produce_error, "encode: %s", reason);
        return;
    }
    int klen = snprintf(key, sizeof key, "%" PRId64, p->user_id);
    if (kio_produce(w->prod, w->topic_pred, key, (size_t)klen, w->buf, (size_t)len, NULL, 0,
                    w->last_produce_error, sizeof w->last_produce_error) != 0)
        w->produce_errors++;
}

static void send_dlq(worker *w, const rd_kafka_message_t *m, const char *reason) {
    char part[16], off[24];
    snprintf(part, sizeof part, "%" PRId32, m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    const char *hdrs[] = {"m3rec.dlq.reason", reason,
                          "m3rec.dlq.topic", rd_kafka_topic_name(m->rkt),
                          "m3rec.dlq.partition", part,
                          "m3rec.dlq.offset", off};
    met_board_counters(lrn_board(w->L))->dlq++;
    if (kio_produce(w->prod, w->topic_dlq, m->key, m->key_len, m->payload, m->len, hdrs, 4,
                    w->last_produce_error, sizeof w->last_produce_error) != 0)
        w->produce_errors++;
}

/* ---- input ---- */

/* The scenario an events topic carries, or NULL for the requests topic. */
static const char *topic_scenario(const worker *w, const char *topic) {
    size_t plen = strlen(w->cfg.topic_prefix);
    if (strncmp(topic, w->cfg.topic_prefix, plen) == 0 && strncmp(topic + plen, ".events.", 8) == 0)
        return topic + plen + 8;
    return NULL;
}

/* The learner's source index of a message: topic index x partitions + partition. */
static int source_index(const worker *w, const rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    for (int t = 0; t < w->n_topics; t++)
        if (strcmp(topic, w->topics[t]) == 0) return t * w->n_partitions + m->partition;
    return 0;
}

static void handle(worker *w, const rd_kafka_message_t *m) {
    char reason[CODEC_REASON_MAX + 64];
    m3_event ev;
    met_board_counters(lrn_board(w->L))->events++;
    w->per_source[source_index(w, m)]++;
    w->next_off[source_index(w, m)] = m->offset + 1;
    if (codec_decode(w->codec, m->payload, m->len, &ev, reason, sizeof reason) != 0) {
        send_dlq(w, m, reason);
        return;
    }
    const char *topic = rd_kafka_topic_name(m->rkt);
    const char *tscen = topic_scenario(w, topic);
    rd_kafka_timestamp_type_t tstype;
    int64_t arrival = rd_kafka_message_timestamp(m, &tstype);
    if (arrival < 0) arrival = 0;
    int rc = 0;
    switch (ev.type) {
    case M3_EV_IMPRESSION:
    case M3_EV_CONVERSION: {
        const char *escen = ev.type == M3_EV_IMPRESSION ? ev.u.imp.scenario : ev.u.conv.scenario;
        if (!tscen) {
            snprintf(reason, sizeof reason, "%s on the requests topic %s",
                     codec_type_name(ev.type), topic);
            rc = -1;
        } else if (strcmp(escen, tscen) != 0) {
            snprintf(reason, sizeof reason, "scenario '%s' does not match topic %s", escen, topic);
            rc = -1;
        } else if (ev.type == M3_EV_IMPRESSION) {
            rc = lrn_impression(w->L, &ev.u.imp, source_index(w, m), arrival, emit_prediction, w, reason, sizeof reason);
        } else {
            rc = lrn_conversion(w->L, &ev.u.conv, source_index(w, m), emit_prediction, w, reason, sizeof reason);
        }
        break;
    }
    case M3_EV_SCORE_REQUEST:
        if (tscen) {
            snprintf(reason, sizeof reason, "ScoreRequest on events topic %s (send it to %s.requests)",
                     topic, w->cfg.topic_prefix);
            rc = -1;
        } else {
            rc = lrn_request(w->L, &ev.u.req, arrival, emit_prediction, w, reason, sizeof reason);
        }
        break;
    default:
        snprintf(reason, sizeof reason, "%s is not an input message", codec_type_name(ev.type));
        rc = -1;
    }
    m3_event_clear(&ev);
    if (rc != 0) send_dlq(w, m, reason);
}

/* ---- durable state: checkpoints and where partitions start ---- */

/* Checkpoint the state with the next offset of every partition handled since its
 * assignment, then let Kafka's committed offsets follow (lag monitoring). Only at a learner
 * boundary. Returns 0, or -1 (w->failed set, the reason printed). */
static int checkpoint(worker *w) {
    char err[1024];
    /* The outputs of what the checkpoint covers must be in Kafka first: after a crash only
     * the input after the checkpoint is handled (and published) again. A delivery failure
     * stops the worker without checkpointing, so the restart publishes them again. */
    if (kio_producer_flush(w->prod, 30000, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: predictions or DLQ messages were not delivered, stopping "
                "without a checkpoint (a restart publishes them again): %s\n", err);
        w->failed = 1;
        return -1;
    }
    int n = w->n_topics * w->n_partitions, k = 0;
    state_offset *offs = calloc((size_t)n + 1, sizeof *offs);
    if (!offs) {
        fprintf(stderr, "m3rec-worker: checkpoint: out of memory\n");
        w->failed = 1;
        return -1;
    }
    for (int src = 0; src < n; src++) {
        if (w->next_off[src] < 0) continue;
        /* topic names are checked to fit at start-up */
        if ((size_t)snprintf(offs[k].topic, sizeof offs[k].topic, "%s",
                             w->topics[src / w->n_partitions]) >= sizeof offs[k].topic)
            continue;
        offs[k].partition = src % w->n_partitions;
        offs[k].next_offset = w->next_off[src];
        k++;
    }
    int rc = state_checkpoint(w->st, offs, k, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "m3rec-worker: checkpoint failed, stopping (the state stays at the "
                "previous checkpoint): %s\n", err);
        w->failed = 1;
    } else {
        for (int i = 0; i < k; i++)   /* a partition revoked meanwhile just fails: fine */
            kio_consumer_store_offset(w->cons, offs[i].topic, offs[i].partition,
                                      offs[i].next_offset, err, sizeof err);
        kio_consumer_commit(w->cons, err, sizeof err);
        w->events_at_ckpt = met_board_counters(lrn_board(w->L))->events;
        w->version_at_ckpt = lrn_model_version(w->L);
    }
    w->last_ckpt_ms = mono_ms();
    free(offs);
    return rc;
}

/* Anything handled or trained since the last checkpoint? */
static int changed(const worker *w) {
    return met_board_counters(lrn_board(w->L))->events != w->events_at_ckpt ||
           lrn_model_version(w->L) != w->version_at_ckpt;
}

/* The state failed inside the learner (a store read): stop without checkpointing. */
static int state_broken(worker *w) {
    char err[1024];
    if (!w->st || w->failed || !state_failed(w->st, err, sizeof err)) return w->failed;
    fprintf(stderr, "m3rec-worker: %s; stopping without a checkpoint\n", err);
    w->failed = 1;
    return 1;
}

static int topic_index(const worker *w, const char *topic) {
    for (int t = 0; t < w->n_topics; t++)
        if (strcmp(topic, w->topics[t]) == 0) return t;
    return -1;
}

/* Each assigned partition starts after its stored offset, or at the group's committed
 * offset when that is further (another worker handled it since), else where
 * auto.offset.reset says. */
static void on_assign(void *opaque, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    worker *w = opaque;
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, committed, START_TIMEOUT_MS);
    if (e)
        fprintf(stderr, "m3rec-worker: cannot read the group's committed offsets (%s): "
                "partitions start at the stored offsets\n", rd_kafka_err2str(e));
    int from_store = 0, from_group = 0, from_reset = 0;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int t = topic_index(w, p->topic);
        if (t >= 0 && p->partition >= 0 && p->partition < w->n_partitions)
            w->next_off[t * w->n_partitions + p->partition] = -1;
        int64_t stored = -1, group = e ? -1 : committed->elems[i].offset;
        if (!state_offset_get(w->st, p->topic, p->partition, &stored)) stored = -1;
        if (stored >= 0 && stored >= group) {
            p->offset = stored;
            from_store++;
        } else if (group >= 0) {
            p->offset = group;
            from_group++;
        } else {
            p->offset = RD_KAFKA_OFFSET_INVALID;
            from_reset++;
        }
    }
    rd_kafka_topic_partition_list_destroy(committed);
    fprintf(stderr, "m3rec-worker: assignment of %d partitions: %d start at the stored offset, "
            "%d at the group's committed one, %d by auto.offset.reset\n", parts->cnt,
            from_store, from_group, from_reset);
}

/* Before the partitions go: train what is queued and checkpoint it with their offsets. */
static void on_revoke(void *opaque, rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts) {
    worker *w = opaque;
    (void)rk;
    if (w->failed || state_broken(w)) return;
    if (!lrn_at_boundary(w->L)) lrn_run_batch(w->L, emit_prediction, w);
    if (!state_broken(w) && changed(w)) checkpoint(w);
    for (int i = 0; i < parts->cnt; i++) {
        int t = topic_index(w, parts->elems[i].topic);
        int p = parts->elems[i].partition;
        if (t >= 0 && p >= 0 && p < w->n_partitions) w->next_off[t * w->n_partitions + p] = -1;
    }
}

/* ---- start-up ---- */

static int setup(worker *w, char *err, size_t n) {
    const m3_cfg *c = &w->cfg;
    char prefix[sizeof c->topic_prefix];
    memcpy(prefix, c->topic_prefix, sizeof prefix); /* snprintf may not read from *w */
    for (int s = 0; s < c->scenarios.n; s++)
        snprintf(w->topics[w->n_topics++], TOPIC_MAX, "%s.events.%s", prefix,
                 c->scenarios.names[s]);
    snprintf(w->topics[w->n_topics++], TOPIC_MAX, "%s.requests", prefix);
    snprintf(w->topic_pred, TOPIC_MAX, "%s.predictions", prefix);
    snprintf(w->topic_dlq, TOPIC_MAX, "%s.dlq", prefix);
    const char *names[M3_MAX_SCEN + 3];
    for (int i = 0; i < w->n_topics; i++) names[i] = w->topics[i];

    w->codec = codec_new(err, n);
    if (!w->codec) return -1;
    w->L = lrn_new(c, err, n);
    if (!w->L) return -1;
    w->buf_cap = 4096;
    w->buf = malloc(w->buf_cap);
    w->props = calloc((size_t)c->n_kafka + 2, sizeof *w->props);
    if (!w->buf || !w->props) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    for (int i = 0; i < c->n_kafka; i++)
        w->props[w->n_props++] = (kio_prop){c->kafka[i].key, c->kafka[i].value};
    if (!cfg_kafka_get(c, "group.id")) w->props[w->n_props++] = (kio_prop){"group.id", "m3rec"};

    if (c->broker_embedded) {
        names[w->n_topics] = w->topic_pred;
        names[w->n_topics + 1] = w->topic_dlq;
        w->mock = kio_mock_new(c->broker_partitions, names, w->n_topics + 2, err, n);
        if (!w->mock) return -1;
        w->props[w->n_props++] = (kio_prop){"bootstrap.servers", kio_mock_bootstraps(w->mock)};
        printf("m3rec-worker: embedded Kafka broker (librdkafka mock cluster) at %s\n",
               kio_mock_bootstraps(w->mock));
        printf("m3rec-worker: topics %s.events.{", c->topic_prefix);
        for (int s = 0; s < c->scenarios.n; s++) printf("%s%s", s ? "," : "", c->scenarios.names[s]);
        printf("}, %s.requests, .predictions, .dlq with %d partitions\n", c->topic_prefix,
               c->broker_partitions);
        fflush(stdout);
    }
    int parts = kio_check_topics(w->props, w->n_props, names, w->n_topics, START_TIMEOUT_MS, err, n);
    if (parts < 0) return -1;
    /* the outputs must exist too (any partition count), or every produce would fail */
    const char *outs[2] = {w->topic_pred, w->topic_dlq};
    for (int i = 0; i < 2; i++)
        if (kio_check_topics(w->props, w->n_props, &outs[i], 1, START_TIMEOUT_MS, err, n) < 0)
            return -1;
    w->n_partitions = parts;
    w->per_source = calloc((size_t)(w->n_topics * parts), sizeof *w->per_source);
    w->next_off = malloc(sizeof *w->next_off * (size_t)(w->n_topics * parts));
    if (!w->per_source || !w->next_off) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    for (int i = 0; i < w->n_topics * parts; i++) w->next_off[i] = -1;
    if (c->store_dir[0]) {
        /* the learner numbers its sources topic x partition: the store is for this layout */
        char layout[TOPIC_MAX * (M3_MAX_SCEN + 1) + 32];
        size_t o = 0;
        for (int t = 0; t < w->n_topics; t++)
            o += (size_t)snprintf(layout + o, sizeof layout - o, "%s%s", t ? "," : "", w->topics[t]);
        snprintf(layout + o, sizeof layout - o, " x %d partitions", parts);
        w->st = state_open(c, w->L, layout, err, n);
        if (!w->st) return -1;
        state_stats ss;
        state_stats_get(w->st, &ss);
        fprintf(stderr, "m3rec-worker: state %s %s in %.0f ms (store open %.0f ms): model "
                "version %lld, %llu impressions trained, %llu pending\n", c->store_dir,
                state_fresh(w->st) ? "created" : "restored", ss.open_ms, ss.store_open_ms,
                (long long)lrn_model_version(w->L), (unsigned long long)lrn_trained_ctr(w->L),
                (unsigned long long)ss.pending_restored);
        w->events_at_ckpt = met_board_counters(lrn_board(w->L))->events;
        w->version_at_ckpt = lrn_model_version(w->L);
        w->last_ckpt_ms = mono_ms();
    }
    w->prod = kio_producer_new(w->props, w->n_props, err, n);
    if (!w->prod) return -1;
    w->cons = kio_consumer_new(w->props, w->n_props, names, w->n_topics, err, n);
    if (!w->cons) return -1;
    if (w->st) kio_consumer_set_rebalance_hooks(w->cons, on_assign, on_revoke, w);
    fprintf(stderr, "m3rec-worker: consuming %d topics x %d partitions as group '%s', model %s%s%s\n",
            w->n_topics, parts, cfg_kafka_get(c, "group.id") ? cfg_kafka_get(c, "group.id") : "m3rec",
            m3_arch_name(c->model.arch), c->n_shadow ? " (shadows: " : "",
            c->n_shadow ? "see report)" : "");
    return 0;
}

static void teardown(worker *w) {
    char err[512];
    kio_consumer_close(w->cons);   /* may checkpoint (revocation): before the state closes */
    kio_producer_destroy(w->prod);
    kio_mock_destroy(w->mock);
    if (state_close(w->st, err, sizeof err) != 0) fprintf(stderr, "m3rec-worker: %s\n", err);
    lrn_destroy(w->L);
    codec_destroy(w->codec);
    free(w->buf);
    free(w->props);
    free(w->per_source);
    free(w->next_off);
    cfg_free(&w->cfg);
}

/* The worker's own report keys: input throughput while there was input, and the
 * messages handled per input partition (which partitions this member owned). */
static void report_extra(json_writer *jw, void *arg) {
    const worker *w = arg;
    double sec = w->first_input_ms ? (double)(w->last_input_ms - w->first_input_ms) / 1000.0 : 0;
    long long events = (long long)(met_board_counters(lrn_board(w->L))->events -
                                   met_board_events_base(lrn_board(w->L)));
    json_key(jw, "input_sec");
    json_num(jw, sec);
    json_key(jw, "input_events_per_sec");
    json_num(jw, sec > 0 ? (double)events / sec : 0);
    json_key(jw, "partitions");
    json_obj_begin(jw);
    for (int t = 0; t < w->n_topics; t++)
        for (int p = 0; p < w->n_partitions; p++) {
            long long k = w->per_source[t * w->n_partitions + p];
            if (!k) continue;
            char name[TOPIC_MAX + 16];
            snprintf(name, sizeof name, "%s/%d", w->topics[t], p);
            json_key(jw, name);
            json_int(jw, k);
        }
    json_obj_end(jw);
    json_key(jw, "trained_ctr");
    json_uint(jw, lrn_trained_ctr(w->L));
    json_key(jw, "trained_ctcvr");
    json_uint(jw, lrn_trained_ctcvr(w->L));
    if (w->st) {
        json_key(jw, "state");
        state_write_json(w->st, jw);
    }
}

/* ---- the loop ---- */

static void progress(worker *w) {
    char line[256];
    met_board_progress_line(lrn_board(w->L), line, sizeof line);
    fprintf(stderr, "%s  pending %zu\n", line, lrn_pending(w->L));
}

static int loop(worker *w) {
    const m3_cfg *c = &w->cfg;
    rd_kafka_message_t *msgs[POLL_MAX];
    char err[512];
    int64_t batch_start = 0, last_input = mono_ms(), last_commit = mono_ms();
    int64_t next_progress = mono_ms() + c->progress_ms;
    int seen_input = 0, rc = 0, last_assigned = 0;
    met_counters *mc = met_board_counters(lrn_board(w->L));
    while (run) {
        int timeout = 100;   /* at most: idle exit, progress and checkpoints are due on time */
        if (lrn_queued(w->L)) {
            int64_t left = batch_start + c->batch_linger_ms - mono_ms();
            timeout = left < 0 ? 0 : left < timeout ? (int)left : timeout;
        }
        int n = kio_consumer_poll(w->cons, msgs, POLL_MAX, timeout, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "m3rec-worker: consumer failed: %s\n", err);
            rc = 1;
            break;
        }
        int64_t now = mono_ms();
        for (int i = 0; i < n; i++) {
            if (w->failed) {   /* nothing more is handled: the state cannot be saved */
                rd_kafka_message_destroy(msgs[i]);
                continue;
            }
            if (!lrn_queued(w->L)) batch_start = now;
            handle(w, msgs[i]);
            if (!w->st) kio_consumer_store(w->cons, msgs[i], err, sizeof err);
            rd_kafka_message_destroy(msgs[i]);
            msgs[i] = NULL;
            /* a checkpoint must sit between two minibatches: take it right after a flush */
            if (w->st && !state_broken(w) && lrn_at_boundary(w->L) &&
                (now - w->last_ckpt_ms >= c->checkpoint_interval_ms ||
                 state_want_checkpoint(w->st)))
                checkpoint(w);
        }
        if (w->failed) {
            rc = 1;
            break;
        }
        if (n > 0) {
            seen_input = 1;
            last_input = now;
            if (!w->first_input_ms) w->first_input_ms = now;
        }
        int assigned = kio_consumer_assigned(w->cons);
        if (assigned != last_assigned) {
            fprintf(stderr, "m3rec-worker: assigned %d partitions\n", assigned);
            last_assigned = assigned;
        }
        if (lrn_queued(w->L) && now - batch_start >= c->batch_linger_ms)
            lrn_run_batch(w->L, emit_prediction, w);
        if (w->st && !state_broken(w) && lrn_at_boundary(w->L) &&
            (now - w->last_ckpt_ms >= c->checkpoint_interval_ms || state_want_checkpoint(w->st)) &&
            changed(w))
            checkpoint(w);
        if (w->failed) {
            rc = 1;
            break;
        }
        kio_producer_poll(w->prod);
        if (!w->st && now - last_commit >= COMMIT_EVERY_MS && !lrn_queued(w->L)) {
            kio_consumer_commit(w->cons, err, sizeof err);
            last_commit = now;
        }
        if (c->progress_ms > 0 && now >= next_progress) {
            progress(w);
            next_progress = now + c->progress_ms;
        }
        if (c->max_events > 0 && (int64_t)mc->events >= c->max_events) break;
        if (c->exit_idle_ms > 0 && seen_input && now - last_input >= c->exit_idle_ms) {
            fprintf(stderr, "m3rec-worker: no input for %lld ms, stopping\n",
                    (long long)c->exit_idle_ms);
            break;
        }
    }
    /* shutdown: finish the batch, checkpoint, flush the producer, commit, then close (in
     * main); after a failure nothing more is checkpointed */
    if (!w->failed) lrn_run_batch(w->L, emit_prediction, w);
    if (w->st && !state_broken(w) && changed(w) && checkpoint(w) != 0) rc = 1;
    w->last_input_ms = mono_ms();
    if (seen_input) w->last_input_ms = last_input;
    if (kio_producer_flush(w->prod, 30000, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: producer flush: %s\n", err);
        rc = 1;
    }
    if (!w->st) kio_consumer_commit(w->cons, err, sizeof err);
    return rc;
}

int main(int argc, char **argv) {
    /* Blocks of 1 MB and more come from mmap and go back to the OS when freed: eviction
     * grows and shrinks the state's tables (see m3rec-offline). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    static worker w;
    cfg_defaults(&w.cfg);
    const char *report = NULL;
    int print_config = 0;
    char err[1024];
    for (int i = 1; i < argc; i++) {
        int used = app_config_arg(&w.cfg, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-worker: %s\n", err);
            return 2;
        }
        if (used) continue;
        if (strcmp(argv[i], "--report") == 0 && i + 1 < argc) {
            report = argv[++i];
        } else if (strcmp(argv[i], "--print-config") == 0) {
            print_config = 1;
        } else {
            usage();
            return 2;
        }
    }
    if (cfg_check(&w.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: %s\n", err);
        return 2;
    }
    if (print_config) {
        char *s = cfg_dump(&w.cfg);
        fputs(s ? s : "", stdout);
        free(s);
        cfg_free(&w.cfg);
        return 0;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (setup(&w, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: %s\n", err);
        teardown(&w);
        return 1;
    }
    int rc = loop(&w);
    kio_consumer_close(w.cons);
    w.cons = NULL;
    met_board *b = lrn_board(w.L);
    met_counters *mc = met_board_counters(b);
    long long delivered = 0, failed = 0;
    kio_producer_stats(w.prod, &delivered, &failed);
    progress(&w);
    fprintf(stderr,
            "m3rec-worker: %llu events, %llu impressions, %llu conversions (%llu late, %llu "
            "unmatched), %llu requests, %llu predictions, %llu to DLQ; delivered %lld, failed %lld\n",
            (unsigned long long)mc->events, (unsigned long long)mc->impressions,
            (unsigned long long)mc->conversions, (unsigned long long)mc->late_conversions,
            (unsigned long long)mc->unmatched_conversions, (unsigned long long)mc->requests,
            (unsigned long long)mc->predictions, (unsigned long long)mc->dlq, delivered, failed);
    if (w.produce_errors || failed) {
        fprintf(stderr, "m3rec-worker: %lld produce errors, last: %s\n",
                w.produce_errors + failed, w.last_produce_error[0] ? w.last_produce_error
                                                                    : kio_producer_last_error(w.prod));
        rc = 1;
    }
    if (report && app_write_report(report, w.L, report_extra, &w, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: %s\n", err);
        rc = 1;
    }
    if (app_print_comparison_live(stdout, w.L, NULL, err, sizeof err) != 0)
        fprintf(stderr, "m3rec-worker: %s\n", err);
    teardown(&w);
    return rc;
}
