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
 * second, and a restart starts a fresh model.
 *
 * Broker outages are waited out: deliveries never time out (message.timeout.ms=0); while the
 * broker is unreachable, or the undelivered output passes half of the producer's queue bound
 * (queue.buffering.max.*), consuming is paused; checkpoints wait until everything they
 * cover is delivered (a due one is skipped during an outage); the worker stops on its own
 * only after worker.outage.max.ms, when that is set.
 *
 * Input order and loss (stream/order.h): what is polled is handed to the learner in
 * event-time order across all assigned partitions (the earliest buffered ts_ms first,
 * waiting up to input.order.idle.ms for an empty partition that still has messages at the
 * broker and, with input.order.live.wait.ms, holding the input up to that long while
 * any assigned partition is empty, pausing a partition whose share of input.order.buffer
 * is full), so a backlog trains as the live stream would; every skipped offset is reported (INPUT LOST, the
 * progress line, the report's "input"), and input.loss.fail=true stops the worker. */
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "app/app.h"
#include "app/group.h"
#include "engine/sync.h"
#include "app/live.h"
#include "base/clock.h"
#include "base/err.h"
#include "config/cfg.h"
#include "stream/changelog.h"
#include "stream/codec.h"
#include "stream/format.h"
#include "stream/kio.h"
#include "stream/learner.h"
#include "stream/registry.h"
#include "stream/order.h"
#include "stream/topics.h"
#include "report/metrics.h"
#include "state/state.h"
#include "base/hash.h"

#define POLL_MAX 512
#define COMMIT_EVERY_MS 1000
#define START_TIMEOUT_MS 15000
#define STOP_WAIT_MS 10000   /* after SIGINT/SIGTERM, how long a checkpoint waits for delivery */

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
    topics tp;                             /* the pipeline's topic names */
    int n_topics;                          /* inputs: tp.all[0..n_topics), events then requests */
    int n_partitions;                      /* of every input topic (checked equal) */
    long long *per_source;                 /* (n_topics x n_partitions) messages handled */
    int64_t first_input_ms, last_input_ms; /* monotonic, 0 before any input */
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
    const state_offset *ckpt_offs;         /* the checkpoint under way's offsets */
    int ckpt_n;
    uint64_t events_at_ckpt;               /* input handled at the last checkpoint */
    int64_t version_at_ckpt;               /* and the model version (a flush may train
                                              released pending rows without new input) */
    int failed;                            /* a checkpoint or the state failed: stop */
    /* outages */
    int64_t *floor_off;                    /* (n_topics x n_partitions) where the assignment
                                              started each partition; -1: unknown */
    long long redelivered;                 /* messages below their partition's position */
    long long enqueue_failed;              /* outputs kio_produce refused: no checkpoint may
                                              follow (their input would be lost) */
    int64_t down_ms;                       /* the broker unreachable this long, 0: it answers */
    int64_t longest_outage_ms;
    long long pauses;                      /* times consuming was paused */
    int outage_stop;                       /* worker.outage.max.ms ran out */
    int64_t ckpt_retry_ms;                 /* monotonic: a put-off checkpoint is retried then */
    long long waiting;                     /* outputs not delivered yet, at the last look */
    /* the live view (http.listen), NULL when off */
    live *live;
    uint64_t dlq_class[LIVE_DLQ__COUNT];   /* DLQ messages by reason class */
    /* input and output framing (format.h), the schema registry (registry.h) */
    fmt_decoder *dec;
    reg *reg;                              /* NULL without registry.url */
    int out_registry;                      /* output.format=registry: frame with out_id */
    uint32_t out_id;                       /* the Prediction schema's registry id */
    long long registry_waits;              /* messages that waited for the registry */
    int64_t registry_wait_ms;              /* for how long, in all */
    int registry_waiting;                  /* one waits now: /ready is false */
    /* input order and loss (input.order.*, input.loss.fail; stream/order.h) */
    ord *ord;                              /* the order buffer and each partition's expected
                                              offset (its FIFOs stay empty in arrival order) */
    unsigned rebalances;                   /* kio_consumer_rebalances at the last look */
    long long gaps, gap_messages;          /* offset gaps seen, offsets they skipped */
    long long resets;                      /* offset resets (out of range) seen */
    long long buffered_max, holds;         /* the buffer's high mark; partitions paused for it */
    unsigned char *mine;                   /* (n_topics x n_partitions) assigned here now */
    int peek_ts;                           /* input.format accepts single-object: peek ts */
    int loss_stop;                         /* input.loss.fail stopped the worker */
    /* one model across the group (group.sync, app/group.h), NULL when off */
    grp *grp;
    int grp_owner;                         /* input partition 0 is here: it writes snapshots */
    unsigned grp_rebalances;               /* kio_consumer_rebalances when grp_owner was set */
    /* group.changelog (stream/changelog.h): NULL when off */
    chg *chg;
    unsigned char *had;                    /* (n_partitions) in the last assignment */
    int64_t *txn_off;                      /* (n_topics x n_partitions) the offsets this
                                              worker's state holds by its last transaction
                                              or restore; -1: none */
    int had_any, moved_warned;             /* an assignment was seen; the warning was given */
    char txn_id[160];
    char layout[TOPICS_NAME_MAX * (M3_MAX_SCEN + 1) + 32];   /* the inputs, as the store has them */
} worker;

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
        snprintf(w->last_produce_error, sizeof w->last_produce_error, "encode: %.240s", reason);
        return;
    }
    unsigned char *out = w->buf;
    if (w->out_registry) {   /* the datum stays; its 10-byte header becomes the 5-byte one */
        out += CODEC_HEADER_LEN - FMT_REGISTRY_HEADER_LEN;
        len -= CODEC_HEADER_LEN - FMT_REGISTRY_HEADER_LEN;
        fmt_put_registry_header(out, w->out_id);
    }
    int klen = snprintf(key, sizeof key, "%" PRId64, p->user_id);
    if (kio_produce(w->prod, w->tp.predictions, key, (size_t)klen, out, (size_t)len, NULL, 0,
                    w->last_produce_error, sizeof w->last_produce_error) != 0) {
        w->produce_errors++;
        w->enqueue_failed++;
    }
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
    w->dlq_class[live_dlq_class(reason)]++;
    if (kio_produce(w->prod, w->tp.dlq, m->key, m->key_len, m->payload, m->len, hdrs, 4,
                    w->last_produce_error, sizeof w->last_produce_error) != 0) {
        w->produce_errors++;
        w->enqueue_failed++;
    }
}

/* ---- input ---- */

/* The index of an input topic in tp.all, or -1. */
static int topic_index(const worker *w, const char *topic) {
    for (int t = 0; t < w->n_topics; t++)
        if (strcmp(topic, w->tp.all[t]) == 0) return t;
    return -1;
}

/* Hand a decoded input event to the learner. Events must come from their scenario's
 * events topic (scen: its index; -1 for the requests topic), score requests from the
 * requests topic, and the learner must admit them (lrn_admit). Returns 0, or -1 with reason (the message goes to the DLQ). */
static int dispatch(worker *w, const m3_event *ev, const rd_kafka_message_t *m, int scen,
                    int src, char *reason, size_t reason_size) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    const char *tscen = scen >= 0 ? w->cfg.scenarios.names[scen] : NULL;
    rd_kafka_timestamp_type_t tstype;
    int64_t arrival = rd_kafka_message_timestamp(m, &tstype);
    if (arrival < 0) arrival = 0;
    switch (ev->type) {
    case M3_EV_IMPRESSION:
    case M3_EV_CONVERSION: {
        const char *escen = ev->type == M3_EV_IMPRESSION ? ev->u.imp.scenario : ev->u.conv.scenario;
        if (!tscen) {
            snprintf(reason, reason_size, "%s on the requests topic %s",
                     codec_type_name(ev->type), topic);
            return -1;
        }
        if (strcmp(escen, tscen) != 0) {
            snprintf(reason, reason_size, "scenario '%s' does not match topic %s", escen, topic);
            return -1;
        }
        if (lrn_admit(w->L, ev, src, reason, reason_size)) return -1;
        if (ev->type == M3_EV_IMPRESSION)
            return lrn_impression(w->L, &ev->u.imp, src, arrival, emit_prediction, w, reason,
                                  reason_size);
        return lrn_conversion(w->L, &ev->u.conv, src, emit_prediction, w, reason, reason_size);
    }
    case M3_EV_SCORE_REQUEST:
        if (tscen) {
            snprintf(reason, reason_size, "ScoreRequest on events topic %s (send it to %s.requests)",
                     topic, w->cfg.topic_prefix);
            return -1;
        }
        if (lrn_admit(w->L, ev, src, reason, reason_size)) return -1;
        return lrn_request(w->L, &ev->u.req, arrival, emit_prediction, w, reason, reason_size);
    default:
        snprintf(reason, reason_size, "%s is not an input message", codec_type_name(ev->type));
        return -1;
    }
}

static int decode_waiting(worker *w, const rd_kafka_message_t *m, m3_event *ev, char *reason,
                          size_t n);

/* group.changelog: the user of ev belongs to the input partition it arrived on. */
static void note_user(worker *w, const m3_event *ev, int32_t partition) {
    int64_t uid = ev->type == M3_EV_IMPRESSION ? ev->u.imp.user_id
                : ev->type == M3_EV_CONVERSION ? ev->u.conv.user_id
                : ev->type == M3_EV_SCORE_REQUEST ? ev->u.req.user_id : INT64_MIN;
    if (uid != INT64_MIN && chg_note_user(w->chg, m3_feat_key(M3_SLOT_USER, uid), partition) != 0) {
        fprintf(stderr, "m3rec-worker: changelog: out of memory; stopping without a checkpoint\n");
        w->failed = 1;
    }
}

/* One input message: decoded (waiting for the registry if need be) and counted against
 * its source (the learner's source index: topic index x partitions + partition), handed
 * to the learner; what is refused goes to the DLQ with the reason. Returns 0, or -1 when
 * the worker stopped while the message waited for the registry: it was not handled. */
static int handle(worker *w, const rd_kafka_message_t *m) {
    char reason[CODEC_REASON_MAX + 160];
    m3_event ev;
    int t = topic_index(w, rd_kafka_topic_name(m->rkt));
    int src = t < 0 ? 0 : t * w->n_partitions + m->partition;
    int dec = decode_waiting(w, m, &ev, reason, sizeof reason);
    if (dec == FMT_WAIT) return -1;
    met_board_counters(lrn_board(w->L))->events++;
    w->per_source[src]++;
    w->next_off[src] = m->offset + 1;
    if (w->chg) chg_offset(w->chg, src, m->offset + 1);
    if (dec != FMT_OK) {
        send_dlq(w, m, reason);
        return 0;
    }
    if (w->chg) note_user(w, &ev, m->partition);
    int rc = dispatch(w, &ev, m, t < w->tp.n_scen ? t : -1, src, reason, sizeof reason);
    int type = ev.type;
    m3_event_clear(&ev);
    if (rc != 0) send_dlq(w, m, reason);
    else if (w->chg) chg_count(w->chg, src, type);   /* exact per partition: the changelog's meta */
    return 0;
}

/* ---- input: event-time order across partitions, and loss (stream/order.h) ---- */

#define LOSS_LINES 20   /* gap lines printed in full; after them every 100th */

/* The learner's source index of m (topic index x partitions + partition), or -1 when m is
 * not from an input partition this worker numbers. */
static int source_of(const worker *w, const rd_kafka_message_t *m) {
    int t = topic_index(w, rd_kafka_topic_name(m->rkt));
    if (t < 0 || m->partition < 0 || m->partition >= w->n_partitions) return -1;
    return t * w->n_partitions + m->partition;
}

/* input.loss.fail: input was lost, stop at once (no checkpoint: it would store offsets
 * past the hole). */
static void loss_stop(worker *w) {
    if (!w->cfg.loss_fail || w->loss_stop) return;
    fprintf(stderr, "m3rec-worker: stopping: input was lost and input.loss.fail=true (no "
            "checkpoint; the report covers a partial stream)\n");
    w->loss_stop = 1;
    w->failed = 1;
}

/* skipped offsets before m in its partition: the broker no longer had them (retention,
 * the embedded broker's limit, an offset reset) or a transaction marker took one. */
static void input_lost(worker *w, const rd_kafka_message_t *m, int64_t skipped) {
    w->gaps++;
    w->gap_messages += skipped;
    if (w->gaps <= LOSS_LINES || w->gaps % 100 == 0)
        fprintf(stderr, "m3rec-worker: INPUT LOST: %s [%d]: offsets %" PRId64 "..%" PRId64
                " were skipped (%" PRId64 " messages; %lld gaps, %lld messages so far)%s\n",
                rd_kafka_topic_name(m->rkt), (int)m->partition, m->offset - skipped,
                m->offset - 1, skipped, w->gaps, w->gap_messages,
                skipped == 1 ? " - one offset can also be a transaction marker" : "");
    loss_stop(w);
}

/* Offset resets kio saw since the last look: loud, counted, and a stop under
 * input.loss.fail (what they skipped shows as a gap when the next message arrives). */
static void check_resets(worker *w) {
    char last[512];
    long long r = kio_consumer_resets(w->cons, last, sizeof last);
    if (r == w->resets) return;
    fprintf(stderr, "m3rec-worker: INPUT LOST: offset out of range, position reset (%lld so "
            "far): %s\n", r, last);
    w->resets = r;
    loss_stop(w);
}

/* The event time of m: its payload's ts_ms (the learner's clocks use it), or
 * ORD_TS_UNKNOWN when it does not decode (it goes to the DLQ in its partition's place).
 * A single-object message of the reader's own schemas is only peeked at (codec_peek_ts);
 * the rest (registry framing, other writers) is decoded, once more in handle(). */
static int64_t event_time(worker *w, const rd_kafka_message_t *m) {
    char reason[CODEC_REASON_MAX];
    m3_event ev;
    int64_t peeked;
    if (w->peek_ts && codec_peek_ts(w->codec, m->payload, m->len, &peeked)) return peeked;
    if (fmt_decode(w->dec, m->payload, m->len, &ev, reason, sizeof reason) != FMT_OK)
        return ORD_TS_UNKNOWN;   /* refused, or waiting for the registry: handle() decides */
    int64_t ts = ev.type == M3_EV_IMPRESSION ? ev.u.imp.ts_ms
               : ev.type == M3_EV_CONVERSION ? ev.u.conv.ts_ms
               : ev.type == M3_EV_SCORE_REQUEST ? ev.u.req.ts_ms : ORD_TS_UNKNOWN;
    m3_event_clear(&ev);
    return ts;
}

/* ord_lag_fn: the partition has messages at the broker beyond what was polled (1), not
 * (0), is not this member's (ORD_UNASSIGNED: never waited for), or that is not known yet
 * (-1). */
static int lagging(void *ud, int src) {
    worker *w = ud;
    if (!w->mine[src]) return ORD_UNASSIGNED;
    int64_t lag = kio_consumer_lag(w->cons, w->tp.all[src / w->n_partitions],
                                   src % w->n_partitions, ord_position(w->ord, src));
    return lag < 0 ? -1 : lag > 0;
}

static void drop_message(void *m) {
    rd_kafka_message_destroy(m);
}

/* Which sources this member has now (w->mine), for the live wait: an unassigned partition
 * is never waited for. */
static void note_assignment(worker *w) {
    rd_kafka_topic_partition_list_t *a = NULL;
    memset(w->mine, 0, (size_t)(w->n_topics * w->n_partitions));
    if (rd_kafka_assignment(kio_consumer_handle(w->cons), &a) || !a) return;
    for (int i = 0; i < a->cnt; i++) {
        int t = topic_index(w, a->elems[i].topic), p = a->elems[i].partition;
        if (t >= 0 && p >= 0 && p < w->n_partitions) w->mine[t * w->n_partitions + p] = 1;
    }
    rd_kafka_topic_partition_list_destroy(a);
}

/* After a rebalance the buffered messages belong to an assignment that ended: drop them
 * (their offsets were not stored; they are fetched again by whoever owns the partitions)
 * and expect each partition where its new assignment starts, when that is known. */
static void sync_rebalance(worker *w, int64_t now) {
    unsigned r = kio_consumer_rebalances(w->cons);
    if (r == w->rebalances) return;
    int first = w->rebalances == 0;
    w->rebalances = r;
    ord_clear(w->ord, drop_message, now);
    note_assignment(w);
    for (int src = 0; src < w->n_topics * w->n_partitions; src++) {
        /* where the new assignment starts: known with a store (on_assign); without one the
         * group's committed offset, which another member may have moved: not known */
        int64_t next = w->floor_off[src];
        /* the embedded broker's topics were created empty by this process: at the first
         * assignment every offset from 0 on is this run's input (its limit drops the
         * oldest before they are read) */
        if (next < 0 && w->mock && first) next = 0;
        ord_expect(w->ord, src, next);
    }
}

/* Pause a partition whose buffer is full, resume it when it has drained to half. */
static void update_hold(worker *w, int src) {
    char err[512];
    int held = ord_held(w->ord);
    int want = ord_hold(w->ord, src);
    if (ord_held(w->ord) == held) return;
    w->holds += want;
    if (kio_consumer_hold(w->cons, w->tp.all[src / w->n_partitions], src % w->n_partitions, want,
                          err, sizeof err) != 0)
        fprintf(stderr, "m3rec-worker: %s\n", err);
}

/* Put m, polled at now, in the order buffer (it owns m from here). Returns 0, or -1 out
 * of memory. */
static int buffer_input(worker *w, rd_kafka_message_t *m, int64_t now) {
    int src = source_of(w, m);
    if (src < 0) src = 0;
    if (ord_push(w->ord, src, event_time(w, m), m, now) != 0) return -1;
    long long n = ord_count(w->ord, -1);
    if (n > w->buffered_max) w->buffered_max = n;
    update_hold(w, src);
    return 0;
}

/* ---- outages: pausing, the limit, waiting for delivery ---- */

static void progress(worker *w);
static void publish(worker *w);

/* The producer's state; w->down_ms follows it. */
static void producer_state(worker *w, kio_producer_state *ps) {
    kio_producer_state_get(w->prod, ps);
    w->down_ms = ps->down_ms;
    w->waiting = ps->queued;
    if (ps->down_ms > w->longest_outage_ms) w->longest_outage_ms = ps->down_ms;
}

/* worker.outage.max.ms ran out: say so once and stop (w->failed). Returns 1 then. */
static int outage_over(worker *w, const kio_producer_state *ps) {
    if (w->outage_stop) return 1;
    if (w->cfg.outage_max_ms <= 0 || ps->down_ms < w->cfg.outage_max_ms) return 0;
    fprintf(stderr, "m3rec-worker: the broker has been unreachable for %lld ms "
            "(worker.outage.max.ms=%lld): stopping without a checkpoint; %lld outputs were not "
            "delivered, and the input after the last checkpoint is read again on restart\n",
            (long long)ps->down_ms, (long long)w->cfg.outage_max_ms, ps->queued);
    w->outage_stop = 1;
    w->failed = 1;
    return 1;
}

/* Consume only while the output gets out: pause while the broker is unreachable or the
 * undelivered output is over half the producer's queue bound (count or bytes), resume once
 * it answers and the backlog is under a quarter. The other half is room for the minibatch
 * under way: librdkafka refuses a produce past the bound. */
static void pace_output(worker *w) {
    char err[512];
    kio_producer_state ps;
    producer_state(w, &ps);
    if (outage_over(w, &ps)) return;
    int paused = kio_consumer_paused(w->cons), div = paused ? 4 : 2;
    int over = ps.queued > ps.max_messages / div || ps.queued_bytes > ps.max_bytes / div;
    int want = ps.down_ms > 0 || over;
    if (want == paused) return;
    if (kio_consumer_pause(w->cons, want, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: %s\n", err);
        return;
    }
    w->pauses += want;
    if (want)
        fprintf(stderr, "m3rec-worker: consuming paused: %s (%lld outputs waiting)\n",
                ps.down_ms > 0 ? "the broker is unreachable" : "the output backlog is over half "
                "the producer's queue.buffering.max.*", ps.queued);
    else
        fprintf(stderr, "m3rec-worker: consuming resumed (%lld outputs waiting)\n", ps.queued);
}

/* Wait until every output produced so far is delivered, through an outage (the progress
 * line says so), until worker.outage.max.ms runs out, or at most STOP_WAIT_MS after a stop
 * was asked for. Returns 0 when delivered, -1 with err otherwise. */
static int wait_delivered(worker *w, char *err, size_t n) {
    int64_t stop_at = 0, next_progress = clk_mono_ms() + w->cfg.progress_ms;
    for (;;) {
        int rc = kio_producer_flush(w->prod, 1000, err, n);
        if (rc <= 0) return rc;
        kio_producer_state ps;
        producer_state(w, &ps);
        if (outage_over(w, &ps)) {
            snprintf(err, n, "the broker has been unreachable for %lld ms (worker.outage.max.ms)",
                     (long long)ps.down_ms);
            return -1;
        }
        int64_t now = clk_mono_ms();
        if (!run && !stop_at) stop_at = now + STOP_WAIT_MS;
        if (stop_at && now >= stop_at) {
            snprintf(err, n, "%lld not delivered %d ms after the stop signal%s", ps.queued,
                     STOP_WAIT_MS, ps.down_ms ? " (the broker is unreachable)" : "");
            return -1;
        }
        if (w->cfg.progress_ms > 0 && now >= next_progress) {
            progress(w);
            next_progress = now + w->cfg.progress_ms;
        }
        publish(w);   /* waiting for the broker is progress: /live stays true */
    }
}

/* ---- the schema registry: ids resolved at the message, waiting while it cannot answer ---- */

/* Decode m (fmt_decode). While the registry cannot answer, the message waits - like the
 * input during a broker outage, nothing is lost: retried with a doubling pause (100 ms to
 * registry.backoff.max.ms), deliveries, the live view and the progress line going on. A
 * stop signal, or worker.outage.max.ms running out, ends the wait with FMT_WAIT and
 * w->failed: no checkpoint covers the message, which is read again on restart. */
static int decode_waiting(worker *w, const rd_kafka_message_t *m, m3_event *ev, char *reason,
                          size_t n) {
    fmt_result r = fmt_decode(w->dec, m->payload, m->len, ev, reason, n);
    if (r != FMT_WAIT) return r;
    int64_t start = clk_mono_ms(), pause = 100, next_progress = start + w->cfg.progress_ms;
    w->registry_waits++;
    w->registry_waiting = 1;
    fprintf(stderr, "m3rec-worker: the schema registry cannot answer (%s): consuming waits, "
            "retrying\n", reason);
    while (r == FMT_WAIT) {
        for (int64_t until = clk_mono_ms() + pause; run && clk_mono_ms() < until;) {
            struct timespec d = {0, 20 * 1000000L};
            nanosleep(&d, NULL);
            kio_producer_poll(w->prod);
            publish(w);   /* waiting for the registry is no hang: /live stays true */
        }
        int64_t now = clk_mono_ms();
        int over = w->cfg.outage_max_ms > 0 && now - start >= w->cfg.outage_max_ms;
        if (!run || over) {
            fprintf(stderr, "m3rec-worker: %s while waiting %lld ms for the schema registry: "
                    "stopping without a checkpoint (the input after the last one is read "
                    "again on restart)\n", run ? "worker.outage.max.ms ran out" : "stopped",
                    (long long)(now - start));
            w->failed = 1;
            w->registry_wait_ms += now - start;
            w->registry_waiting = 0;
            return FMT_WAIT;
        }
        if (w->cfg.progress_ms > 0 && now >= next_progress) {
            progress(w);
            fprintf(stderr, "m3rec-worker: waiting %.0f s for the schema registry: %s\n",
                    (double)(now - start) / 1000.0, reason);
            next_progress = now + w->cfg.progress_ms;
        }
        pause = pause * 2 < w->cfg.registry_backoff_max_ms ? pause * 2 : w->cfg.registry_backoff_max_ms;
        r = fmt_decode(w->dec, m->payload, m->len, ev, reason, n);
    }
    w->registry_wait_ms += clk_mono_ms() - start;
    w->registry_waiting = 0;
    fprintf(stderr, "m3rec-worker: the schema registry answers again after %lld ms: consuming "
            "goes on\n", (long long)(clk_mono_ms() - start));
    return r;
}

/* A message below its partition's position was polled already: librdkafka 2.0 can fetch
 * again from an older offset after a pause, a resume or a rebalance. Returns 1 (and counts
 * it) for such a message, which must be dropped; a message past the position means input
 * was skipped (input_lost). */
static int redelivered(worker *w, const rd_kafka_message_t *m) {
    int src = source_of(w, m);
    if (src < 0) return 0;
    int64_t skipped = ord_check(w->ord, src, m->offset);
    if (skipped < 0) {
        w->redelivered++;
        return 1;
    }
    if (skipped > 0) input_lost(w, m, skipped);
    return 0;
}

/* ---- durable state: checkpoints and where partitions start ---- */

/* Checkpoint the state with the next offset of every partition handled since its
 * assignment, then let Kafka's committed offsets follow (lag monitoring). Only at a learner
 * boundary. With wait, waits for the outputs through an outage (wait_delivered: on
 * revocation and at shutdown); without, a checkpoint whose outputs are not delivered
 * within a second is put off (retried a second later, at a boundary) and the loop goes on:
 * pausing, the progress line and the outage limit keep running. Returns 0, 1 when put
 * off, or -1 (w->failed set, the reason printed). */
static int checkpoint(worker *w, int wait) {
    char err[1024];
    /* The outputs of what the checkpoint covers must be in Kafka first: after a crash only
     * the input after the checkpoint is handled (and published) again. A delivery failure
     * stops the worker without checkpointing, so the restart publishes them again. */
    if (w->enqueue_failed) {
        fprintf(stderr, "m3rec-worker: %lld predictions or DLQ messages could not be queued "
                "for Kafka (last: %s), stopping without a checkpoint (a restart publishes "
                "them again)\n", w->enqueue_failed, w->last_produce_error);
        w->failed = 1;
        return -1;
    }
    int sent = wait ? wait_delivered(w, err, sizeof err) : kio_producer_flush(w->prod, 1000, err, sizeof err);
    if (sent == 1) {
        w->ckpt_retry_ms = clk_mono_ms() + 1000;
        return 1;
    }
    if (sent != 0) {
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
                             w->tp.all[src / w->n_partitions]) >= sizeof offs[k].topic)
            continue;
        offs[k].partition = src % w->n_partitions;
        offs[k].next_offset = w->next_off[src];
        k++;
    }
    w->ckpt_offs = offs;   /* for commit_txn (group.changelog) */
    w->ckpt_n = k;
    int rc = state_checkpoint(w->st, offs, k, err, sizeof err);
    if (rc != 0) {
        /* the store writes nothing more after a failed write (store.h): stop, and say so */
        fprintf(stderr, "m3rec-worker: checkpoint failed: %s; stopping: nothing acknowledged "
                "was lost (the state stays at its last checkpoint, the input after it is "
                "read again on restart)\n", err);
        w->failed = 1;
    } else if (!w->chg) {   /* with the changelog the offsets were committed in the transaction */
        for (int i = 0; i < k; i++)   /* a partition revoked meanwhile just fails: fine */
            kio_consumer_store_offset(w->cons, offs[i].topic, offs[i].partition,
                                      offs[i].next_offset, err, sizeof err);
        kio_consumer_commit(w->cons, err, sizeof err);
    }
    if (rc == 0) {
        w->events_at_ckpt = met_board_counters(lrn_board(w->L))->events;
        w->version_at_ckpt = lrn_model_version(w->L);
    }
    w->last_ckpt_ms = clk_mono_ms();
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

/* ---- group.changelog: the transaction, restores, and the warning when it is off ---- */

#define TXN_COMMIT_MS 60000     /* a checkpoint's transaction must commit within this */
#define CHG_FORCE_INTERVALS 3   /* checkpoint intervals without a boundary before one is made */
#define RESTORE_TIMEOUT_MS 60000

/* Does the assignment hold partition p (of any topic)? */
static int parts_has(const rd_kafka_topic_partition_list_t *parts, int p) {
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition == p) return 1;
    return 0;
}

/* state_commit_fn: the checkpoint's transaction - the outputs since the last one (delivered
 * already), the changelog records just queued and the input offsets - commits before the
 * local store does, so the store is never ahead of Kafka. */
static int commit_txn(void *ud, char *err, size_t n) {
    worker *w = ud;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(w->ckpt_n + 1);
    for (int i = 0; i < w->ckpt_n; i++)
        rd_kafka_topic_partition_list_add(l, w->ckpt_offs[i].topic, w->ckpt_offs[i].partition)
            ->offset = w->ckpt_offs[i].next_offset;
    int rc = kio_txn_commit(w->prod, w->cons, l, TXN_COMMIT_MS, err, n);
    rd_kafka_topic_partition_list_destroy(l);
    for (int i = 0; rc == 0 && i < w->ckpt_n; i++) {   /* what the group now holds */
        int t = topic_index(w, w->ckpt_offs[i].topic);
        if (t >= 0) w->txn_off[t * w->n_partitions + w->ckpt_offs[i].partition] =
                        w->ckpt_offs[i].next_offset;
    }
    return rc == 0 ? 0 : -1;
}

/* The group's committed offsets of parts (into a copy the caller destroys), waiting while
 * a transaction that holds some is still open (a killed member's, until its successor
 * fences it or it times out). NULL when they cannot be read. */
static rd_kafka_topic_partition_list_t *group_offsets(rd_kafka_t *rk,
                                                      const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
    int64_t until = clk_mono_ms() + 2 * TXN_COMMIT_MS;
    rd_kafka_resp_err_t e;
    while ((e = rd_kafka_committed(rk, c, START_TIMEOUT_MS)) != RD_KAFKA_RESP_ERR_NO_ERROR &&
           run && clk_mono_ms() < until)
        fprintf(stderr, "m3rec-worker: reading the group's committed offsets: %s; retrying\n",
                rd_kafka_err2str(e));
    if (!e) return c;
    fprintf(stderr, "m3rec-worker: cannot read the group's committed offsets (%s)\n",
            rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(c);
    return NULL;
}

/* Place each assigned partition at the group's committed offset c and say which need a
 * restore (1) and which are current here (2): this worker had the partition in its last
 * assignment and the group's offsets of all its topics are the ones its own last
 * transaction committed (or restored). Then nobody else handled a message of it since, and
 * what another owner may have written of it without handling any (its restore's records
 * again) is what this worker holds: so the restore is skipped. Returns the plan, or NULL
 * out of memory. */
static unsigned char *plan_restore(worker *w, rd_kafka_topic_partition_list_t *parts,
                                   const rd_kafka_topic_partition_list_t *c) {
    unsigned char *todo = calloc((size_t)w->n_partitions, 1);
    if (!todo) return NULL;
    for (int p = 0; p < w->n_partitions; p++) todo[p] = w->had[p] ? 2 : 0;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int t = topic_index(w, p->topic);
        p->offset = c->elems[i].offset >= 0 ? c->elems[i].offset : RD_KAFKA_OFFSET_INVALID;
        if (t < 0 || p->partition < 0 || p->partition >= w->n_partitions) continue;
        int src = t * w->n_partitions + p->partition;
        w->next_off[src] = -1;
        w->floor_off[src] = p->offset >= 0 ? p->offset : -1;
        if (todo[p->partition] != 2 || w->txn_off[src] != w->floor_off[src])
            todo[p->partition] = 1;
        w->txn_off[src] = w->floor_off[src];   /* what the state holds once restored */
    }
    for (int p = 0; p < w->n_partitions; p++)   /* had, but not assigned now */
        if (todo[p] == 2 && !parts_has(parts, p)) todo[p] = 0;
    return todo;
}

/* Each assigned partition starts at the group's committed offset (the last transaction's:
 * its state is in the changelog) after its state is restored from the changelog. A
 * failure stops the worker before any of its messages is handled. */
static void changelog_assign(worker *w, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    char err[1024];
    rd_kafka_topic_partition_list_t *c = group_offsets(rk, parts);
    if (!c) {
        w->failed = 1;
        return;
    }
    unsigned char *todo = plan_restore(w, parts, c);
    rd_kafka_topic_partition_list_destroy(c);
    int *list = todo ? calloc((size_t)w->n_partitions, sizeof *list) : NULL;
    chg_restore_stats *rs = list ? calloc((size_t)w->n_partitions, sizeof *rs) : NULL;
    int k = 0, kept = 0;
    for (int p = 0; rs && p < w->n_partitions; p++) {
        if (todo[p] == 1) list[k++] = p;
        kept += todo[p] == 2;
        if (todo[p] == 2) chg_own(w->chg, p, 1);
    }
    chg_sink sink = state_changelog_sink(w->st);
    if (!rs) {
        fprintf(stderr, "m3rec-worker: restore: out of memory\n");
        w->failed = 1;
    } else if (chg_restore(w->chg, w->props, w->n_props, list, k, w->txn_off, &sink,
                           RESTORE_TIMEOUT_MS, rs, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: restoring partitions from %s failed: %s; stopping before "
                "any of their messages is handled\n", w->tp.changelog, err);
        w->failed = 1;
    } else {
        long long recs = 0;
        for (int i = 0; i < k; i++) {
            chg_own(w->chg, list[i], 1);
            recs += rs[i].records;
            if (rs[i].adopted)
                fprintf(stderr, "m3rec-worker: partition %d: %s has no state for it but the "
                        "group has committed offsets: this worker's local state of it is kept "
                        "(a group that turned group.changelog on)\n", list[i], w->tp.changelog);
            fprintf(stderr, "m3rec-worker: partition %d restored from %s: %lld records (%lld user "
                    "states, %lld user rows, %lld pending)\n", list[i], w->tp.changelog,
                    rs[i].records, rs[i].users, rs[i].rows, rs[i].pending);
        }
        fprintf(stderr, "m3rec-worker: restored %d partitions (%lld records) in %.0f ms; %d kept "
                "(current: the group's offsets are this worker's last transaction's)\n", k,
                recs, k ? rs[0].ms : 0.0, kept);
    }
    free(rs);
    free(list);
    free(todo);
}

/* Without the changelog, say once that a partition moved while this worker has state:
 * its users' state does not follow it. moved_in: partitions that start at the group's
 * offset past this worker's own (another worker had them). */
static void warn_moves(worker *w, const rd_kafka_topic_partition_list_t *parts, int moved_in) {
    unsigned char *now = calloc((size_t)w->n_partitions, 1);
    if (!now) return;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition >= 0 && parts->elems[i].partition < w->n_partitions)
            now[parts->elems[i].partition] = 1;
    int has_state = met_board_counters(lrn_board(w->L))->events > 0 ||
                    (w->st && !state_fresh(w->st));
    int moved = -1, in = 0;
    for (int p = 0; w->had_any && p < w->n_partitions && moved < 0; p++)
        if (now[p] != w->had[p]) {
            moved = p;
            in = now[p];
        }
    if (moved < 0 && moved_in >= 0) {
        moved = moved_in;
        in = 1;
    }
    if (!w->chg && has_state && moved >= 0 && !w->moved_warned) {
        fprintf(stderr, "m3rec-worker: WARNING: partition %d moved %s this worker: its users' "
                "state (UPT states, user-id rows, pending clicked impressions, watermark) stays "
                "with the worker that had it; set group.changelog=true (with store.dir) to move "
                "it with the partition\n", moved, in ? "to" : "away from");
        w->moved_warned = 1;
    }
    memcpy(w->had, now, (size_t)w->n_partitions);
    w->had_any = 1;
    free(now);
}

/* group.changelog at start-up: the transactional producer's id (stable across restarts of
 * this worker: host and store.dir, so a restart fences its killed predecessor), the
 * compacted changelog topic with the inputs' partition count, the writer and the reader. */
static int changelog_id(worker *w) {
    char host[128] = "";
    gethostname(host, sizeof host - 1);
    char where[CFG_PATH_MAX + 160];
    char *real = realpath(w->cfg.store_dir, NULL);
    snprintf(where, sizeof where, "%s:%s", host, real ? real : w->cfg.store_dir);
    free(real);
    const char *group = cfg_kafka_get(&w->cfg, "group.id");
    snprintf(w->txn_id, sizeof w->txn_id, "m3rec-%.100s-%016" PRIx64, group ? group : "m3rec",
             hash_fnv64_str(where));
    if (cfg_kafka_get(&w->cfg, "transactional.id")) return 0;
    w->props[w->n_props++] = (kio_prop){"transactional.id", w->txn_id};
    return 0;
}

static int changelog_topic(worker *w, char *err, size_t n) {
    const char *name = w->tp.changelog;
    static const kio_prop compact[] = {{"cleanup.policy", "compact"}};
    int rc = w->mock ? kio_mock_create_topic(w->mock, name, w->n_partitions, err, n)
                     : kio_create_topics_cfg(w->props, w->n_props, &name, 1, w->n_partitions,
                                              compact, 1, START_TIMEOUT_MS, err, n);
    if (rc != 0) return -1;
    int parts = kio_check_topics(w->props, w->n_props, &name, 1, START_TIMEOUT_MS, err, n);
    if (parts < 0) return -1;
    if (parts != w->n_partitions) {
        snprintf(err, n, "group.changelog: %s has %d partitions, the input topics %d: its "
                 "partition p must hold input partition p's state (delete it, or recreate "
                 "the inputs)", name, parts, w->n_partitions);
        return -1;
    }
    return 0;
}

static int start_changelog(worker *w, const char *layout, char *err, size_t n) {
    if (kio_txn_start(w->prod, START_TIMEOUT_MS, err, n) != 0) return -1;
    uint64_t h = chg_cfg_hash(m3_cfg_hash(lrn_model(w->L, 0)), layout);
    w->chg = chg_new(w->prod, w->tp.changelog, w->n_topics, w->n_partitions, h, err, n);
    if (!w->chg) return -1;
    state_set_changelog(w->st, w->chg, commit_txn, w);
    fprintf(stderr, "m3rec-worker: group.changelog: partition state follows %s; transactional "
            "id %s\n", w->tp.changelog, cfg_kafka_get(&w->cfg, "transactional.id")
            ? cfg_kafka_get(&w->cfg, "transactional.id") : w->txn_id);
    return 0;
}

/* Each assigned partition starts after its stored offset, or at the group's committed
 * offset when that is further (another worker handled it since), else where
 * auto.offset.reset says. */
static void on_assign(void *opaque, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    worker *w = opaque;
    grp_assigned(w->grp);   /* a worker joining a group: the group's model first */
    if (!w->st || w->chg) {
        if (w->chg) changelog_assign(w, rk, parts);   /* else start at the committed offsets */
        warn_moves(w, parts, -1);
        live_set_assigned(w->live, parts->cnt);
        return;
    }
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, committed, START_TIMEOUT_MS);
    if (e)
        fprintf(stderr, "m3rec-worker: cannot read the group's committed offsets (%s): "
                "partitions start at the stored offsets\n", rd_kafka_err2str(e));
    int from_store = 0, from_group = 0, from_reset = 0, moved_in = -1;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int t = topic_index(w, p->topic);
        int src = t >= 0 && p->partition >= 0 && p->partition < w->n_partitions
                      ? t * w->n_partitions + p->partition : -1;
        if (src >= 0) w->next_off[src] = -1;
        int64_t stored = -1, group = e ? -1 : committed->elems[i].offset;
        if (!state_offset_get(w->st, p->topic, p->partition, &stored)) stored = -1;
        if (stored >= 0 && stored >= group) {
            p->offset = stored;
            from_store++;
        } else if (group >= 0) {
            p->offset = group;
            from_group++;
            if (stored >= 0 || !state_fresh(w->st)) moved_in = p->partition;
        } else {
            p->offset = RD_KAFKA_OFFSET_INVALID;
            from_reset++;
        }
        if (src >= 0) w->floor_off[src] = p->offset >= 0 ? p->offset : -1;
    }
    rd_kafka_topic_partition_list_destroy(committed);
    fprintf(stderr, "m3rec-worker: assignment of %d partitions: %d start at the stored offset, "
            "%d at the group's committed one, %d by auto.offset.reset\n", parts->cnt,
            from_store, from_group, from_reset);
    warn_moves(w, parts, moved_in);
    live_set_assigned(w->live, parts->cnt);   /* restored and placed: ready */
}

/* Before the partitions go: train what is queued and checkpoint it with their offsets. */
static void on_revoke(void *opaque, rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts) {
    worker *w = opaque;
    (void)rk;
    live_set_assigned(w->live, 0);   /* not ready from the revocation to the next assignment */
    /* a worker that was alone leaves the next owners its model (a snapshot) */
    int was_alone = parts->cnt == w->n_topics * w->n_partitions;
    if (!w->st || w->failed || state_broken(w)) {
        if (w->grp && !w->failed && lrn_at_boundary(w->L))
            grp_revoked(w->grp, was_alone, w->grp_owner);
        return;
    }
    if (!lrn_at_boundary(w->L)) lrn_run_batch(w->L, emit_prediction, w);
    if (w->grp && !state_broken(w)) grp_revoked(w->grp, was_alone, w->grp_owner);
    if (!state_broken(w) && changed(w)) checkpoint(w, 1);
    for (int i = 0; i < parts->cnt; i++) {
        int t = topic_index(w, parts->elems[i].topic);
        int p = parts->elems[i].partition;
        if (t >= 0 && p >= 0 && p < w->n_partitions)
            w->next_off[t * w->n_partitions + p] = w->floor_off[t * w->n_partitions + p] = -1;
        if (w->chg) chg_own(w->chg, p, 0);   /* its next owner restores what was written */
    }
}

/* ---- start-up ---- */

/* The topic names, and the librdkafka properties: kafka.* with group.id "m3rec" unless
 * set (and room for the embedded broker's bootstrap.servers). */
static int name_topics_and_props(worker *w, char *err, size_t n) {
    const m3_cfg *c = &w->cfg;
    if (app_topics(&w->tp, c, err, n) != 0) return -1;
    w->n_topics = w->tp.n_scen + 1;
    w->props = app_kafka_props(c, NULL, 4, &w->n_props);
    if (!w->props) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    if (!cfg_kafka_get(c, "group.id")) w->props[w->n_props++] = (kio_prop){"group.id", "m3rec"};
    /* Deliveries never time out: an outage is waited out (worker.outage.max.ms bounds it).
     * Last in the list, so it wins over kafka.message.timeout.ms / delivery.timeout.ms. */
    w->props[w->n_props++] = (kio_prop){"message.timeout.ms", "0"};
    return c->group_changelog ? changelog_id(w) : 0;
}

/* broker.embedded: librdkafka's mock cluster in this process, with every topic. */
static int start_embedded_broker(worker *w, char *err, size_t n) {
    const m3_cfg *c = &w->cfg;
    w->mock = kio_mock_new(c->broker_partitions, w->tp.all, topics_count(&w->tp), err, n);
    if (!w->mock) return -1;
    w->props[w->n_props++] = (kio_prop){"bootstrap.servers", kio_mock_bootstraps(w->mock)};
    printf("m3rec-worker: embedded Kafka broker (librdkafka mock cluster) at %s\n",
           kio_mock_bootstraps(w->mock));
    printf("m3rec-worker: topics %s.events.{", c->topic_prefix);
    for (int s = 0; s < c->scenarios.n; s++) printf("%s%s", s ? "," : "", c->scenarios.names[s]);
    printf("}, %s.requests, .predictions, .dlq with %d partitions\n", c->topic_prefix,
           c->broker_partitions);
    fflush(stdout);
    return 0;
}

/* The input topics must exist with one partition count (co-partitioning), the outputs
 * with any; then the per-partition counters and the order buffer are sized. */
static int check_topics(worker *w, char *err, size_t n) {
    int parts = kio_check_topics(w->props, w->n_props, w->tp.all, w->n_topics, START_TIMEOUT_MS,
                                 err, n);
    if (parts < 0) return -1;
    /* the outputs must exist too (any partition count), or every produce would fail */
    const char *outs[2] = {w->tp.predictions, w->tp.dlq};
    for (int i = 0; i < 2; i++)
        if (kio_check_topics(w->props, w->n_props, &outs[i], 1, START_TIMEOUT_MS, err, n) < 0)
            return -1;
    w->n_partitions = parts;
    if (w->cfg.group_changelog && changelog_topic(w, err, n) != 0) return -1;
    w->had = calloc((size_t)parts, 1);
    w->txn_off = malloc(sizeof *w->txn_off * (size_t)(w->n_topics * parts));
    w->per_source = calloc((size_t)(w->n_topics * parts), sizeof *w->per_source);
    w->next_off = malloc(sizeof *w->next_off * (size_t)(w->n_topics * parts));
    w->mine = calloc((size_t)(w->n_topics * parts), 1);
    w->floor_off = malloc(sizeof *w->floor_off * (size_t)(w->n_topics * parts));
    if (!w->per_source || !w->next_off || !w->floor_off || !w->had || !w->txn_off || !w->mine) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    for (int i = 0; i < w->n_topics * parts; i++)
        w->next_off[i] = w->floor_off[i] = w->txn_off[i] = -1;
    int share = w->cfg.order_buffer / (w->n_topics * parts);   /* each source's share */
    w->ord = ord_new(w->n_topics * parts, share < 16 ? 16 : share, w->cfg.order_idle_ms,
                     w->cfg.order_live_wait_ms, clk_mono_ms(), err, n);
    if (w->ord) ord_set_ahead(w->ord, w->cfg.time_max_ahead_ms);
    return w->ord ? 0 : -1;
}

/* store.dir: the durable state, created or restored, for this layout of sources. */
static int open_state(worker *w, char *err, size_t n) {
    const m3_cfg *c = &w->cfg;
    /* the learner numbers its sources topic x partition: the store is for this layout */
    char layout[TOPICS_NAME_MAX * (M3_MAX_SCEN + 1) + 32];
    size_t o = 0;
    for (int t = 0; t < w->n_topics; t++)
        o += (size_t)snprintf(layout + o, sizeof layout - o, "%s%s", t ? "," : "", w->tp.all[t]);
    snprintf(layout + o, sizeof layout - o, " x %d partitions", w->n_partitions);
    w->st = state_open(c, w->L, layout, err, n);
    if (!w->st) return -1;
    snprintf(w->layout, sizeof w->layout, "%s", layout);
    state_stats ss;
    state_stats_get(w->st, &ss);
    fprintf(stderr, "m3rec-worker: state %s %s in %.0f ms (store open %.0f ms): model "
            "version %lld, %llu impressions trained, %llu pending\n", c->store_dir,
            state_fresh(w->st) ? "created" : "restored", ss.open_ms, ss.store_open_ms,
            (long long)lrn_model_version(w->L), (unsigned long long)lrn_trained_ctr(w->L),
            (unsigned long long)ss.pending_restored);
    w->events_at_ckpt = met_board_counters(lrn_board(w->L))->events;
    w->version_at_ckpt = lrn_model_version(w->L);
    w->last_ckpt_ms = clk_mono_ms();
    return 0;
}

/* The producer, and the consumer subscribed to the input topics (with the state, its
 * rebalance hooks place each partition's start). */
static int start_clients(worker *w, char *err, size_t n) {
    const m3_cfg *c = &w->cfg;
    w->prod = kio_producer_new(w->props, w->n_props, err, n);
    if (!w->prod) return -1;
    if (w->cfg.group_changelog && start_changelog(w, w->layout, err, n) != 0) return -1;
    w->cons = kio_consumer_new(w->props, w->n_props, w->tp.all, w->n_topics, err, n);
    if (!w->cons) return -1;
    kio_consumer_set_rebalance_hooks(w->cons, on_assign, on_revoke, w);
    fprintf(stderr, "m3rec-worker: consuming %d topics x %d partitions as group '%s', model %s%s%s\n",
            w->n_topics, w->n_partitions,
            cfg_kafka_get(c, "group.id") ? cfg_kafka_get(c, "group.id") : "m3rec",
            m3_arch_name(c->model.arch), c->n_shadow ? " (shadows: " : "",
            c->n_shadow ? "see report)" : "");
    return 0;
}

/* http.listen: the live view, answering /live from here on (start-up included). */
static int start_live(worker *w, char *err, size_t n) {
    w->live = live_start(&w->cfg, err, n);
    if (!w->live) return err[0] ? -1 : 0;
    int v6 = strchr(w->cfg.http_host, ':') != NULL;
    fprintf(stderr, "m3rec-worker: metrics and health at http://%s%s%s:%d (/metrics, /live, "
            "/ready)\n", v6 ? "[" : "", w->cfg.http_host, v6 ? "]" : "", live_port(w->live));
    return 0;
}

/* input.schemas.dir: an incompatible writer schema is no start-up error (its producers
 * may be gone); its messages go to the DLQ with this reason. */
static void schema_refused(void *arg, const char *path, const char *why) {
    fprintf(stderr, "m3rec-worker: %s: refused, its messages go to the DLQ: %s\n", path, why);
}

/* registry.url: the client; output.format=registry: the Prediction schema registered under
 * its subject (retried for START_TIMEOUT_MS while the registry cannot answer); then the
 * input decoder. */
static int open_registry(worker *w, char *err, size_t n) {
    const m3_cfg *c = &w->cfg;
    fmt_mode in, out;
    fmt_subject_strategy strategy;
    fmt_mode_parse(c->input_format, 1, &in);   /* names checked by cfg_check */
    fmt_mode_parse(c->output_format, 0, &out);
    fmt_strategy_parse(c->registry_subject, &strategy);
    if (c->registry_url[0] && !(w->reg = reg_new(c->registry_url, c->registry_timeout_ms, err, n)))
        return -1;
    if (out == FMT_REGISTRY) {
        char subject[TOPICS_NAME_MAX + 64];
        if (fmt_subject(strategy, w->tp.predictions, "io.m3rec.events.Prediction", subject,
                        sizeof subject) != 0)
            return err_set(err, n, "the Prediction subject name is too long");
        const char *schema = codec_canonical(w->codec, M3_EV_PREDICTION);
        int64_t give_up = clk_mono_ms() + START_TIMEOUT_MS;
        reg_status st;
        while ((st = reg_register(w->reg, subject, schema, &w->out_id, err, n)) == REG_UNAVAILABLE &&
               run && clk_mono_ms() < give_up) {
            struct timespec d = {0, 500 * 1000000L};
            nanosleep(&d, NULL);
        }
        if (st != REG_OK) return -1;
        w->out_registry = 1;
        fprintf(stderr, "m3rec-worker: predictions framed with schema id %u (subject %s at %s)\n",
                w->out_id, subject, reg_url_safe(w->reg));
    }
    w->peek_ts = in != FMT_REGISTRY;   /* what it refuses must not get its ts peeked */
    w->dec = fmt_decoder_new(in, w->codec, w->reg);
    return w->dec ? 0 : err_set(err, n, "out of memory");
}

/* group.sync: the model topic (created here: its limits are its own) and the transport,
 * after the state is restored (the model's state now is the first sync point). */
static int start_group(worker *w, char *err, size_t n) {
    if (w->cfg.group_sync_rule == SYNC_NONE) return 0;
    int rc = w->mock ? kio_mock_create_topic(w->mock, w->tp.model, 1, err, n) ||
                           kio_mock_create_topic(w->mock, w->tp.model_snapshot, 1, err, n)
                     : grp_create_topics(w->props, w->n_props, &w->tp, START_TIMEOUT_MS, err, n);
    if (rc != 0) return -1;
    w->grp = grp_new(&w->cfg, w->props, w->n_props, &w->tp, lrn_model(w->L, 0), err, n);
    return w->grp ? 0 : -1;
}

static int setup(worker *w, char *err, size_t n) {
    if (start_live(w, err, n) != 0) return -1;
    if (name_topics_and_props(w, err, n) != 0) return -1;
    w->codec = codec_new(err, n);
    if (!w->codec) return -1;
    if (w->cfg.input_schemas_dir[0] &&
        codec_add_dir(w->codec, w->cfg.input_schemas_dir, schema_refused, NULL, err, n) < 0)
        return -1;
    if (open_registry(w, err, n) != 0) return -1;
    w->L = lrn_new(&w->cfg, err, n);
    if (!w->L) return -1;
    w->buf_cap = 4096;
    w->buf = malloc(w->buf_cap);
    if (!w->buf) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    if (w->cfg.broker_embedded && start_embedded_broker(w, err, n) != 0) return -1;
    if (check_topics(w, err, n) != 0) return -1;
    if (w->cfg.store_dir[0] && open_state(w, err, n) != 0) return -1;
    if (start_group(w, err, n) != 0) return -1;
    return start_clients(w, err, n);
}

/* Leave the group; it may checkpoint (revocation), so before the state closes. While the
 * broker is unreachable (or worker.outage.max.ms gave up on it) leaving is impossible and
 * no output can be delivered for a checkpoint to cover: abandon the group instead of
 * waiting for its coordinator (the input after the last checkpoint is read again). */
static void close_consumer(worker *w) {
    if (w->outage_stop || w->down_ms > 0) kio_consumer_abandon(w->cons);
    else kio_consumer_close(w->cons);
    w->cons = NULL;
}

static void teardown(worker *w) {
    char err[512];
    ord_free(w->ord, drop_message);   /* messages go before their consumer */
    close_consumer(w);
    grp_destroy(w->grp);
    kio_producer_destroy(w->prod);
    kio_mock_destroy(w->mock);
    if (state_close(w->st, err, sizeof err) != 0) fprintf(stderr, "m3rec-worker: %s\n", err);
    chg_destroy(w->chg);
    free(w->had);
    free(w->txn_off);
    lrn_destroy(w->L);
    fmt_decoder_destroy(w->dec);
    reg_destroy(w->reg);
    codec_destroy(w->codec);
    free(w->buf);
    free(w->props);
    free(w->per_source);
    free(w->next_off);
    free(w->floor_off);
    free(w->mine);
    live_stop(w->live);
    cfg_free(&w->cfg);
}

/* The report's "input" object: how the input was ordered, and what of it was lost. */
static void input_write_json(const worker *w, json_writer *jw) {
    json_key(jw, "input");
    json_obj_begin(jw);
    json_key(jw, "order");
    json_str(jw, w->cfg.order_event_time ? "event-time" : "arrival");
    const struct { const char *key; long long v; } f[] = {
        {"buffered_max", w->buffered_max}, {"holds", w->holds},
        {"behind", ord_behind(w->ord)}, {"lost", w->gaps || w->resets},
        {"gaps", w->gaps}, {"gap_messages", w->gap_messages}, {"offset_resets", w->resets}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        json_key(jw, f[i].key);
        json_int(jw, f[i].v);
    }
    json_obj_end(jw);
}

/* The worker's own report keys: input throughput while there was input, the admission
 * counters (why events went to the DLQ), and the messages handled per input partition (which partitions this member owned). */
static void report_extra(json_writer *jw, void *arg) {
    const worker *w = arg;
    double sec = w->first_input_ms ? (double)(w->last_input_ms - w->first_input_ms) / 1000.0 : 0;
    long long events = (long long)(met_board_counters(lrn_board(w->L))->events -
                                   met_board_events_base(lrn_board(w->L)));
    json_key(jw, "input_sec");
    json_num(jw, sec);
    json_key(jw, "input_events_per_sec");
    json_num(jw, sec > 0 ? (double)events / sec : 0);
    json_key(jw, "admission");
    lrn_admission_write_json(w->L, jw);
    json_key(jw, "outage");
    json_obj_begin(jw);
    json_key(jw, "longest_ms");
    json_int(jw, w->longest_outage_ms);
    json_key(jw, "pauses");
    json_int(jw, w->pauses);
    json_key(jw, "redelivered_dropped");
    json_int(jw, w->redelivered);
    json_obj_end(jw);
    if (w->reg) {
        long long req, fail;
        reg_stats(w->reg, &req, &fail);
        json_key(jw, "registry");
        json_obj_begin(jw);
        json_key(jw, "requests");
        json_int(jw, req);
        json_key(jw, "failures");
        json_int(jw, fail);
        json_key(jw, "waits");
        json_int(jw, w->registry_waits);
        json_key(jw, "wait_ms");
        json_int(jw, w->registry_wait_ms);
        json_obj_end(jw);
    }
    input_write_json(w, jw);
    grp_write_json(w->grp, jw);
    json_key(jw, "partitions");
    json_obj_begin(jw);
    for (int t = 0; t < w->n_topics; t++)
        for (int p = 0; p < w->n_partitions; p++) {
            long long k = w->per_source[t * w->n_partitions + p];
            if (!k) continue;
            char name[TOPICS_NAME_MAX + 16];
            snprintf(name, sizeof name, "%s/%d", w->tp.all[t], p);
            json_key(jw, name);
            json_int(jw, k);
        }
    json_obj_end(jw);
}

/* ---- the loop ---- */

/* The progress line; during an outage it says for how long the broker has not answered,
 * and once input was lost it says how much, on every line. */
static void progress(worker *w) {
    char line[256], outage[160] = "", lost[160] = "";
    met_board_progress_line(lrn_board(w->L), line, sizeof line);
    if (w->down_ms > 0)
        snprintf(outage, sizeof outage, "  broker unreachable for %.0f s: consuming paused, "
                 "%lld outputs waiting", (double)w->down_ms / 1000.0, w->waiting);
    if (w->gaps || w->resets)
        snprintf(lost, sizeof lost, "  INPUT LOST: %lld messages in %lld gaps, %lld offset resets",
                 w->gap_messages, w->gaps, w->resets);
    fprintf(stderr, "%s  pending %zu%s%s\n", line, lrn_pending(w->L), outage, lost);
}

/* The live view's snapshot (at most once a second: live_due). */
static void publish(worker *w) {
    if (!live_due(w->live)) return;
    state_stats ss = {0};
    if (w->st) state_stats_get(w->st, &ss);
    grp_stats gs = {0};
    if (w->grp) grp_stats_get(w->grp, &gs);
    live_src src = {.board = lrn_board(w->L), .consumer = kio_consumer_handle(w->cons),
                    .assigned = kio_consumer_assigned(w->cons),
                    .paused = kio_consumer_paused(w->cons), .down_ms = w->down_ms,
                    .outputs_waiting = w->waiting, .dlq = w->dlq_class,
                    .pending = lrn_pending(w->L), .model_version = lrn_model_version(w->L),
                    .has_store = w->st != NULL, .checkpoints = ss.checkpoints,
                    .ckpt_last_ms = ss.ckpt_ms_last, .last_ckpt_ms = w->last_ckpt_ms,
                    .failed = w->failed, .registry_wait = w->registry_waiting,
                    .group = {w->grp != NULL, gs.rounds, gs.applied, gs.refused,
                              gs.applied ? gs.stale_ms_sum / (double)gs.applied : 0,
                              gs.peers_live}};
    live_publish(w->live, &src);
}

/* The loop's clocks (monotonic ms). */
typedef struct {
    int64_t batch_start;       /* when the queued minibatch got its first event */
    int64_t last_input;        /* the last poll that returned messages */
    int64_t last_commit, next_progress;
    int seen_input;            /* any input yet */
    int last_assigned;         /* partitions at the last assignment message */
    int64_t resumed;           /* the end of the last stall of the loop (discount_stall) */
} pace;

/* A checkpoint is due: the state is kept and healthy, the broker reachable, the learner
 * between two minibatches, and the interval over (or the state asks for one). */
static int checkpoint_due(worker *w, int64_t now) {
    /* during an outage a due checkpoint waits for the broker: its outputs cannot be delivered */
    return w->st && !state_broken(w) && w->down_ms == 0 && now >= w->ckpt_retry_ms &&
           lrn_at_boundary(w->L) &&
           (now - w->last_ckpt_ms >= w->cfg.checkpoint_interval_ms ||
            state_want_checkpoint(w->st));
}

/* How long the next poll may wait: at most 100 ms (idle exit, progress and checkpoints
 * are due on time), less when the queued batch's linger time or the order buffer's wait
 * for a lagging partition runs out sooner. */
static int poll_timeout(const worker *w, const pace *pc) {
    int timeout = 100;
    if (lrn_queued(w->L)) {
        int64_t left = pc->batch_start + w->cfg.batch_linger_ms - clk_mono_ms();
        timeout = left < 0 ? 0 : left < timeout ? (int)left : timeout;
    }
    int64_t wait = ord_wait_ms(w->ord, clk_mono_ms());   /* the order buffer's idle wait ends */
    if (wait >= 0 && wait < timeout) timeout = (int)wait;
    return timeout;
}

/* group.sync: at a minibatch boundary, publish this worker's update and apply the peers'
 * (app/group.h); alone when every input partition is here. */
static void group_step(worker *w) {
    if (!w->grp || !lrn_at_boundary(w->L)) return;
    unsigned r = kio_consumer_rebalances(w->cons);
    if (r != w->grp_rebalances) {   /* the assignment changed: is partition 0 here? */
        rd_kafka_topic_partition_list_t *a = NULL;
        w->grp_rebalances = r;
        w->grp_owner = 0;
        if (!rd_kafka_assignment(kio_consumer_handle(w->cons), &a) && a)
            w->grp_owner = rd_kafka_topic_partition_list_find(a, w->tp.all[0], 0) != NULL;
        if (a) rd_kafka_topic_partition_list_destroy(a);
    }
    grp_step(w->grp, lrn_model_version(w->L),
             kio_consumer_assigned(w->cons) == w->n_topics * w->n_partitions, w->grp_owner);
}

/* Hand one message to the learner (it is destroyed here), checkpointing at the minibatch
 * boundary it reaches. */
static void hand(worker *w, rd_kafka_message_t *m, int64_t now, pace *pc) {
    char err[512];
    if (!lrn_queued(w->L)) pc->batch_start = now;
    /* a message that waited for the registry and was not handled stores no offset */
    if (handle(w, m) == 0 && !w->st) kio_consumer_store(w->cons, m, err, sizeof err);
    rd_kafka_message_destroy(m);
    group_step(w);
    /* a checkpoint must sit between two minibatches: take it right after a batch ran */
    if (checkpoint_due(w, now)) checkpoint(w, 0);
}

/* Hand out what the order buffer releases (ord_pop: the earliest head, unless a lagging
 * partition is still awaited), resuming partitions that drained. */
static void release(worker *w, int64_t now, pace *pc) {
    int src;
    rd_kafka_message_t *m;
    int handed = 0;
    while (!w->failed && (m = ord_pop(w->ord, now, lagging, w, &src))) {
        hand(w, m, now, pc);
        update_hold(w, src);
        handed = 1;
    }
    if (handed) pc->last_input = clk_mono_ms();   /* handing a backlog out is not idleness */
}

/* Handle the n polled messages (each destroyed here, or owned by the order buffer):
 * duplicates are dropped, gaps reported, and the rest handed to the learner in order;
 * after a failure they are only destroyed. */
static void handle_polled(worker *w, rd_kafka_message_t **msgs, int n, int64_t now, pace *pc) {
    sync_rebalance(w, now);
    check_resets(w);
    for (int i = 0; i < n; i++) {
        rd_kafka_message_t *m = msgs[i];
        msgs[i] = NULL;
        if (w->failed || redelivered(w, m)) {   /* after a failure nothing more is handled */
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!w->cfg.order_event_time) {
            hand(w, m, now, pc);
        } else if (buffer_input(w, m, now) != 0) {
            fprintf(stderr, "m3rec-worker: the order buffer is out of memory, stopping\n");
            rd_kafka_message_destroy(m);
            w->failed = 1;
        }
    }
    if (w->cfg.order_event_time) release(w, now, pc);
}

/* The poll returned input: the idle clock and the input-throughput window move on. */
static void note_input(worker *w, int64_t now, pace *pc) {
    pc->seen_input = 1;
    pc->last_input = now;
    if (!w->first_input_ms) w->first_input_ms = now;
}

/* Between polls: say when the assignment changed, hand out what the order buffer
 * releases now (a lagging partition's wait may be over), run the minibatch whose linger
 * time is up, and checkpoint if one is due. */
static void between_polls(worker *w, int64_t now, pace *pc) {
    release(w, now, pc);
    int assigned = kio_consumer_assigned(w->cons);
    if (assigned != pc->last_assigned) {
        fprintf(stderr, "m3rec-worker: assigned %d partitions\n", assigned);
        pc->last_assigned = assigned;
    }
    if (lrn_queued(w->L) && now - pc->batch_start >= w->cfg.batch_linger_ms)
        lrn_run_batch(w->L, emit_prediction, w);
    /* group.changelog: a transaction open past transaction.timeout.ms is aborted by its
     * coordinator (and the producer fenced), so settled labels do not wait for impressions
     * that may not come: past a few intervals the batch runs to reach a boundary */
    if (w->chg && !lrn_at_boundary(w->L) && !state_broken(w) &&
        now - w->last_ckpt_ms >= CHG_FORCE_INTERVALS * w->cfg.checkpoint_interval_ms)
        lrn_run_batch(w->L, emit_prediction, w);
    group_step(w);
    if (checkpoint_due(w, now) && changed(w)) checkpoint(w, 0);
}

/* Deliveries, pausing for the output (pace_output), the offsets commit without a store
 * (every second, between batches), and the progress line. */
static void keep_up(worker *w, int64_t now, pace *pc) {
    char err[512];
    kio_producer_poll(w->prod);
    pace_output(w);
    /* waiting for the broker, or for the group to assign partitions, is not idleness */
    if (w->down_ms > 0 || kio_consumer_assigned(w->cons) == 0) pc->last_input = now;
    if (!w->st && now - pc->last_commit >= COMMIT_EVERY_MS && !lrn_queued(w->L)) {
        kio_consumer_commit(w->cons, err, sizeof err);
        pc->last_commit = now;
    }
    if (w->cfg.progress_ms > 0 && now >= pc->next_progress) {
        progress(w);
        pc->next_progress = now + w->cfg.progress_ms;
    }
    publish(w);
}

/* model.max_events handled, or no input for exit.idle.ms after some and nothing buffered
 * (an outage or a group without an assignment for this member does not count: keep_up
 * moves the idle clock; nor does handing out the order buffer: release moves it). */
static int done(worker *w, int64_t now, const pace *pc) {
    const m3_cfg *c = &w->cfg;
    if (c->max_events > 0 && (int64_t)met_board_counters(lrn_board(w->L))->events >= c->max_events)
        return 1;
    int64_t quiet_since = pc->last_input > pc->resumed ? pc->last_input : pc->resumed;
    if (c->exit_idle_ms > 0 && pc->seen_input && now - quiet_since >= c->exit_idle_ms &&
        ord_count(w->ord, -1) == 0) {
        fprintf(stderr, "m3rec-worker: no input for %lld ms, stopping\n",
                (long long)c->exit_idle_ms);
        return 1;
    }
    return 0;
}

/* Shutdown: hand out the order buffer, finish the batch, checkpoint, flush the producer, commit, then close (in
 * main); after a failure nothing more is checkpointed. Returns rc, or 1 on a failure. */
static int finish(worker *w, pace *pc, int rc) {
    char err[512];
    live_stopping(w->live);
    int src;
    rd_kafka_message_t *m;
    sync_rebalance(w, clk_mono_ms());   /* what was polled is still assigned: hand it out */
    while (!w->failed && (m = ord_pop_any(w->ord, &src))) hand(w, m, clk_mono_ms(), pc);
    ord_clear(w->ord, drop_message, 0);   /* after a failure: before the consumer closes */
    if (!w->failed) lrn_run_batch(w->L, emit_prediction, w);
    if (!w->failed) group_step(w);   /* the last minibatch's update goes to the peers */
    grp_flush(w->grp, STOP_WAIT_MS);
    if (w->st && !state_broken(w) && changed(w) && checkpoint(w, 1) != 0) rc = 1;
    w->last_input_ms = clk_mono_ms();
    if (pc->seen_input) w->last_input_ms = pc->last_input;
    if (!w->outage_stop && wait_delivered(w, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: producer flush: %s\n", err);
        rc = 1;
    }
    /* without a store the offsets are committed to Kafka - unless the broker was down at
     * the last look: the consumer is then abandoned (close_consumer), and a commit in
     * flight to an unreachable coordinator would hold up its destruction */
    if (!w->st && !w->outage_stop && w->down_ms == 0) kio_consumer_commit(w->cons, err, sizeof err);
    return rc;
}

/* worker.exit.idle.ms counts time spent polling for input: a loop held up for more than a
 * second beyond its poll (a stopped or starved process, a long checkpoint) was not idle,
 * and must not stop before it has polled again. */
static void discount_stall(pace *pc, int64_t prev, int64_t now, int timeout) {
    if (now - prev - timeout > 1000) pc->resumed = now;
}

static int loop(worker *w) {
    rd_kafka_message_t *msgs[POLL_MAX];
    char err[512];
    int64_t start = clk_mono_ms();
    pace pc = {0, start, start, start + w->cfg.progress_ms, 0, 0, 0};
    int rc = 0;
    int64_t prev = start;   /* the end of the previous poll */
    while (run) {
        int timeout = poll_timeout(w, &pc);
        int n = kio_consumer_poll(w->cons, msgs, POLL_MAX, timeout, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "m3rec-worker: consumer failed: %s\n", err);
            rc = 1;
            break;
        }
        int64_t now = clk_mono_ms();
        discount_stall(&pc, prev, now, timeout);
        prev = now;
        handle_polled(w, msgs, n, now, &pc);
        if (w->failed) {
            rc = 1;
            break;
        }
        if (n > 0) note_input(w, now, &pc);
        between_polls(w, now, &pc);
        if (w->failed) {
            rc = 1;
            break;
        }
        keep_up(w, now, &pc);
        if (w->failed) {   /* worker.outage.max.ms ran out */
            rc = 1;
            break;
        }
        if (done(w, now, &pc)) break;
    }
    return finish(w, &pc, rc);
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
    close_consumer(&w);
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
    if (w.gaps || w.resets) {
        fprintf(stderr, "m3rec-worker: INPUT LOST: %lld messages skipped in %lld offset gaps, "
                "%lld offset resets: this run saw a partial stream%s\n", w.gap_messages, w.gaps,
                w.resets, w.cfg.loss_fail ? "" : " (input.loss.fail=true makes it fail)");
        if (w.cfg.loss_fail) rc = 1;
    }
    if (w.produce_errors || failed) {
        fprintf(stderr, "m3rec-worker: %lld produce errors, last: %s\n",
                w.produce_errors + failed, w.last_produce_error[0] ? w.last_produce_error
                                                                    : kio_producer_last_error(w.prod));
        rc = 1;
    }
    if (report && app_write_report(report, w.L, w.st, report_extra, &w, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-worker: %s\n", err);
        rc = 1;
    }
    if (app_print_comparison_live(stdout, w.L, NULL, err, sizeof err) != 0)
        fprintf(stderr, "m3rec-worker: %s\n", err);
    teardown(&w);
    return rc;
}
