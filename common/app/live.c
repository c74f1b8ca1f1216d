/* live.c - the worker's live view: Prometheus text for /metrics, /live and /ready, served
 * by libmicrohttpd's thread from a snapshot the main loop publishes (live.h). */
#include "app/live.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/err.h"

/* ------------------------------------------------------------------ DLQ classes */

static const char *const live__dlq_names[LIVE_DLQ__COUNT] = {
    "schema", "malformed", "routing", "range", "time", "format", "other"};

/* Substrings of the reasons codec.c, the worker's dispatch and lrn_admit give, first
 * match wins: a schema problem before the generic decoder words, the learner's time and
 * range refusals before the routing ones. */
static const struct { const char *needle; live_dlq cls; } live__dlq_rules[] = {
    {"set input.format", LIVE_DLQ_FORMAT},   /* stream/format.c: the framing is not input.format's */
    {"object container file", LIVE_DLQ_FORMAT},
    {"JSON text", LIVE_DLQ_FORMAT},
    {"schema", LIVE_DLQ_SCHEMA},
    {"registry", LIVE_DLQ_SCHEMA},
    {" ms ahead of", LIVE_DLQ_TIME},
    {" ms behind ", LIVE_DLQ_TIME},
    {"outside [", LIVE_DLQ_RANGE},
    {"non-finite", LIVE_DLQ_RANGE},
    {"does not match topic", LIVE_DLQ_ROUTING},
    {"requests topic", LIVE_DLQ_ROUTING},
    {"events topic", LIVE_DLQ_ROUTING},
    {"not an input message", LIVE_DLQ_ROUTING},
    {"unknown scenario", LIVE_DLQ_ROUTING},
    {"magic", LIVE_DLQ_MALFORMED},
    {"empty message", LIVE_DLQ_MALFORMED},
    {"-byte header", LIVE_DLQ_MALFORMED},
    {"trailing bytes", LIVE_DLQ_MALFORMED},
    {"truncated", LIVE_DLQ_MALFORMED},
    {"varint", LIVE_DLQ_MALFORMED},
    {"length", LIVE_DLQ_MALFORMED},
    {"UTF-8", LIVE_DLQ_MALFORMED},
    {"NUL", LIVE_DLQ_MALFORMED},
    {"block", LIVE_DLQ_MALFORMED},
    {"map", LIVE_DLQ_MALFORMED},
    {"boolean", LIVE_DLQ_MALFORMED},
    {"candidate", LIVE_DLQ_MALFORMED},
};

live_dlq live_dlq_class(const char *reason) {
    if (!reason) return LIVE_DLQ_OTHER;
    for (size_t i = 0; i < sizeof live__dlq_rules / sizeof live__dlq_rules[0]; i++)
        if (strstr(reason, live__dlq_rules[i].needle)) return live__dlq_rules[i].cls;
    return LIVE_DLQ_OTHER;
}

const char *live_dlq_name(int cls) {
    return cls >= 0 && cls < LIVE_DLQ__COUNT ? live__dlq_names[cls] : "other";
}

/* ------------------------------------------------------------------ exposition text */

/* A label value with \ " and newline escaped, as the text format wants. */
static void live__label(buf *b, const char *name, const char *value) {
    buf_printf(b, "%s=\"", name);
    for (const char *p = value; *p; p++) {
        if (*p == '\\') buf_puts(b, "\\\\");
        else if (*p == '"') buf_puts(b, "\\\"");
        else if (*p == '\n') buf_puts(b, "\\n");
        else buf_putc(b, *p);
    }
    buf_putc(b, '"');
}

static void live__family(buf *b, const char *name, const char *type, const char *help) {
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void live__value(buf *b, double v) {
    if (isnan(v)) buf_puts(b, " NaN\n");
    else if (isinf(v)) buf_puts(b, v > 0 ? " +Inf\n" : " -Inf\n");
    else buf_printf(b, " %.10g\n", v);
}

/* A family of one unlabelled sample. */
static void live__one(buf *b, const char *name, const char *type, const char *help, double v) {
    live__family(b, name, type, help);
    buf_puts(b, name);
    live__value(b, v);
}

static void live__counter(buf *b, const char *name, const char *help, uint64_t v) {
    live__family(b, name, "counter", help);
    buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void live__render_counters(const live_snap *s, buf *b) {
    live__counter(b, "m3rec_input_messages_total",
                  "Input messages consumed, bad ones included.", s->events);
    live__counter(b, "m3rec_impressions_total", "Impressions handled.", s->impressions);
    live__counter(b, "m3rec_conversions_total", "Conversions handled.", s->conversions);
    live__counter(b, "m3rec_score_requests_total", "Score requests handled.", s->requests);
    live__counter(b, "m3rec_predictions_total", "Predictions published.", s->predictions);
    live__counter(b, "m3rec_late_conversions_total",
                  "Conversions that arrived after their attribution window closed.",
                  s->late_conversions);
    live__counter(b, "m3rec_unmatched_conversions_total",
                  "Conversions for an impression never seen.", s->unmatched_conversions);
    live__family(b, "m3rec_dlq_messages_total", "counter",
                 "Messages sent to the dead-letter queue since the process started, by reason class.");
    for (int c = 0; c < LIVE_DLQ__COUNT; c++) {
        buf_puts(b, "m3rec_dlq_messages_total{");
        live__label(b, "class", live__dlq_names[c]);
        buf_printf(b, "} %llu\n", (unsigned long long)s->dlq[c]);
    }
}

static void live__render_consumer(const live_snap *s, buf *b) {
    live__one(b, "m3rec_consumer_assigned_partitions", "gauge",
              "Input partitions assigned to this worker.", s->assigned);
    live__one(b, "m3rec_consumer_paused", "gauge",
              "1 while consuming is paused (broker unreachable or output backlog).", s->paused);
    live__family(b, "m3rec_consumer_lag_messages", "gauge",
                 "Messages in an assigned partition after the worker's position (high watermark - position).");
    for (int i = 0; i < s->n_lag; i++) {
        char part[16];
        snprintf(part, sizeof part, "%d", (int)s->lag[i].partition);
        buf_puts(b, "m3rec_consumer_lag_messages{");
        live__label(b, "topic", s->lag[i].topic);
        buf_putc(b, ',');
        live__label(b, "partition", part);
        buf_printf(b, "} %lld\n", (long long)s->lag[i].lag);
    }
    live__one(b, "m3rec_broker_unreachable_seconds", "gauge",
              "How long the broker has been unreachable; 0 while it answers.", s->broker_down_s);
    live__one(b, "m3rec_producer_waiting_messages", "gauge",
              "Predictions and DLQ messages produced and not delivered yet.",
              (double)s->outputs_waiting);
}

/* One quality family: a sample per (scenario, task), then the overall one per task
 * (without a scenario label). */
static void live__quality(const live_snap *s, buf *b, const char *name, const char *help,
                          int which) {
    live__family(b, name, "gauge", help);
    for (int sc = 0; sc <= s->n_scen; sc++)
        for (int t = 0; t < MET_NTASKS; t++) {
            const live_quality *q = &s->q[sc][t];
            double v = which == 0 ? (double)q->n : which == 1 ? q->auc : which == 2 ? q->logloss
                     : which == 3 ? q->mean_p : which == 4 ? q->rate : q->mean_p / q->rate;
            buf_printf(b, "%s{", name);
            if (sc < s->n_scen) {
                live__label(b, "scenario", s->scen[sc]);
                buf_putc(b, ',');
            }
            live__label(b, "task", met_task_name(t));
            buf_putc(b, '}');
            live__value(b, v);
        }
}

static void live__render_quality(const live_snap *s, buf *b) {
    live__one(b, "m3rec_window_seconds", "gauge",
              "Span of the recent window the m3rec_window_* gauges cover.", s->window_s);
    live__quality(s, b, "m3rec_window_predictions", "Predictions whose label settled in the "
                  "window (no scenario label: all scenarios).", 0);
    live__quality(s, b, "m3rec_window_auc", "AUC of the primary model over the window.", 1);
    live__quality(s, b, "m3rec_window_log_loss", "Mean log loss over the window.", 2);
    live__quality(s, b, "m3rec_window_mean_prediction", "Mean predicted probability over the window.", 3);
    live__quality(s, b, "m3rec_window_positive_rate", "Observed positive rate over the window.", 4);
    live__quality(s, b, "m3rec_window_calibration_ratio",
                  "Mean prediction / observed rate over the window (1 = calibrated).", 5);
}

static void live__render_state(const live_snap *s, buf *b) {
    live__one(b, "m3rec_pending_joins", "gauge",
              "Clicked impressions waiting for their conversion window.", (double)s->pending);
    live__one(b, "m3rec_model_version", "gauge",
              "Training steps of the primary model (the version stamped on predictions).",
              (double)s->model_version);
    if (s->has_store) {
        live__counter(b, "m3rec_checkpoints_total", "Checkpoints written.", s->checkpoints);
        live__one(b, "m3rec_checkpoint_age_seconds", "gauge",
                  "Time since the last checkpoint (or since the state was opened).", s->ckpt_age_s);
        live__one(b, "m3rec_checkpoint_duration_seconds", "gauge",
                  "Duration of the last checkpoint's write.", s->ckpt_last_s);
    }
    if (s->group.on) {
        live__counter(b, "m3rec_group_blobs_sent_total",
                      "Update blobs this worker published to the model topic.", s->group.sent);
        live__counter(b, "m3rec_group_blobs_applied_total", "Peers' update blobs applied.",
                      s->group.applied);
        live__counter(b, "m3rec_group_blobs_refused_total", "Model-topic messages refused "
                      "(corrupt, another configuration or format): never applied.",
                      s->group.refused);
        live__one(b, "m3rec_group_staleness_seconds", "gauge", "Mean time from a peer's "
                  "extract to this worker's apply, over the applied blobs.",
                  s->group.staleness_ms / 1000.0);
        live__one(b, "m3rec_group_peers_live", "gauge",
                  "Peers whose blobs arrived within group.sync.wait.ms.", s->group.peers);
    }
    if (s->rss_bytes >= 0)
        live__one(b, "m3rec_resident_memory_bytes", "gauge", "Resident memory of the process.",
                  s->rss_bytes);
}

static void live__render_health(const live_health *h, buf *b) {
    live__one(b, "m3rec_worker_up", "gauge", "1: the worker's HTTP endpoint answers.", 1);
    live__one(b, "m3rec_worker_live", "gauge", "1 while /live answers 200.", h->live);
    live__one(b, "m3rec_worker_ready", "gauge", "1 while /ready answers 200.", h->ready);
    live__one(b, "m3rec_snapshot_age_seconds", "gauge",
              "Time since the main loop last published these metrics.", h->snapshot_age_s);
    live__counter(b, "m3rec_consumer_revocations_total",
                  "Rebalances that revoked this worker's partitions.", h->revocations);
}

char *live_render(const live_snap *s, const live_health *h) {
    buf out = {0};
    live__render_health(h, &out);
    if (s) {
        live__render_counters(s, &out);
        live__render_consumer(s, &out);
        live__render_quality(s, &out);
        live__render_state(s, &out);
    }
    if (out.oom) {
        buf_free(&out);
        return NULL;
    }
    return buf_take(&out);
}

/* ------------------------------------------------------------------ the server */

struct live {
    struct MHD_Daemon *d;
    int port;
    int64_t live_max_ms;
    pthread_mutex_t mu;           /* guards the fields down to revocations */
    live_snap *cur;               /* the published snapshot (one of snaps), NULL before
                                     the first */
    int64_t published_ms;         /* monotonic */
    int assigned;                 /* as the rebalance hooks said last (a publish inside a
                                     revocation still sees the old assignment) */
    int stopping;
    uint64_t revocations;
    unsigned assign_seq;          /* assignments and revocations the hooks reported */
    unsigned published_seq;       /* assign_seq at the last publish: ready needs them equal
                                     (the main loop is back at work after an assignment) */
    /* main thread only */
    live_snap *snaps[2];          /* live_publish fills the one that is not cur */
    int64_t last_publish_ms;
    int n_acc;                    /* (n_scen + 1) x MET_NTASKS accumulators, overall last */
    met_auc *now;                 /* (n_acc) the board folded at this publish */
    met_auc *slot;                /* (LIVE_WIN_SLOTS x n_acc) earlier copies, a ring */
    int64_t slot_ms[LIVE_WIN_SLOTS];   /* when each was taken; 0: empty */
    int next_slot;
    met_auc *diff;                /* scratch: now - the oldest copy */
    int win_ready;                /* the copies are allocated (lazily: their scale is the board's) */
    int64_t window_ms;
};

/* Health as of now; under l->mu. */
static void live__health(live *l, live_health *h) {
    int64_t now = clk_mono_ms();
    h->started = l->cur != NULL;
    h->snapshot_age_s = h->started ? (double)(now - l->published_ms) / 1000.0 : NAN;
    h->live = !h->started || now - l->published_ms <= l->live_max_ms;
    h->ready = h->started && h->live && !l->stopping && l->assigned > 0 && l->cur->consuming &&
               l->published_seq == l->assign_seq;
    h->revocations = l->revocations;
}

/* Why /ready fails, for its body; under l->mu with h computed. */
static const char *live__not_ready(const live *l, const live_health *h) {
    if (l->stopping) return "stopping";
    if (!h->started) return "starting";
    if (!h->live) return "the main loop has stopped publishing (see /live)";
    if (l->cur->broker_down_s > 0) return "the broker is unreachable";
    if (l->cur->registry_wait) return "input waits for the schema registry";
    if (!l->cur->consuming) return "the worker is stopping after a failure";
    if (l->assigned == 0) return "no partitions assigned (a rebalance, or more workers than partitions)";
    return "partitions assigned, the main loop has not resumed consuming yet";
}

static enum MHD_Result live__respond(struct MHD_Connection *c, unsigned status,
                                     const char *type, const char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body,
                                                             MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result live__answer(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *upload, size_t *upload_size, void **req) {
    live *l = cls;
    static const char plain[] = "text/plain; charset=utf-8";
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)req;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return live__respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, plain, "GET or HEAD only\n", 17);
    int metrics = strcmp(url, "/metrics") == 0, is_live = strcmp(url, "/live") == 0;
    if (!metrics && !is_live && strcmp(url, "/ready") != 0)
        return live__respond(c, MHD_HTTP_NOT_FOUND, plain,
                             "not found: /metrics, /live and /ready are served\n", 49);
    buf b = {0};
    live_health h;
    unsigned status = MHD_HTTP_OK;
    pthread_mutex_lock(&l->mu);
    live__health(l, &h);
    if (metrics) {
        char *text = live_render(l->cur, &h);
        if (text) buf_puts(&b, text);
        else b.oom = true;
        free(text);
    } else if (is_live) {
        if (h.live) buf_puts(&b, "live\n");
        else buf_printf(&b, "not live: the main loop last published %.0f s ago\n", h.snapshot_age_s);
        status = h.live ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    } else {
        if (h.ready) buf_puts(&b, "ready\n");
        else buf_printf(&b, "not ready: %s\n", live__not_ready(l, &h));
        status = h.ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    pthread_mutex_unlock(&l->mu);
    enum MHD_Result ret = b.oom ? MHD_NO
        : live__respond(c, status, metrics ? "text/plain; version=0.0.4; charset=utf-8" : plain,
                        b.data ? b.data : "", b.len);
    buf_free(&b);
    return ret;
}

static live_snap *live__snap_new(const m3_cfg *cfg) {
    live_snap *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_scen = cfg->scenarios.n;
    for (int i = 0; i < s->n_scen; i++) memcpy(s->scen[i], cfg->scenarios.names[i], M3_NAME_MAX);
    return s;
}

static void live__snap_free(live_snap *s) {
    if (!s) return;
    free(s->lag);
    free(s);
}

/* The listening address: cfg_check checked it. */
static int live__addr(const m3_cfg *cfg, struct sockaddr_storage *sa, int *v6) {
    memset(sa, 0, sizeof *sa);
    struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)sa;
    *v6 = strchr(cfg->http_host, ':') != NULL;
    if (*v6) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)cfg->http_port);
        return inet_pton(AF_INET6, cfg->http_host, &a6->sin6_addr) == 1 ? 0 : -1;
    }
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)cfg->http_port);
    return inet_pton(AF_INET, cfg->http_host, &a4->sin_addr) == 1 ? 0 : -1;
}

live *live_start(const m3_cfg *cfg, char *errstr, size_t errstr_size) {
    err_set(errstr, errstr_size, "%s", "");
    if (!cfg->http_listen[0]) return NULL;
    struct sockaddr_storage sa;
    int v6;
    if (cfg->http_port < 0 || live__addr(cfg, &sa, &v6) != 0) {
        err_set(errstr, errstr_size, "http.listen=%s is not host:port (cfg_check not run?)",
                cfg->http_listen);
        return NULL;
    }
    live *l = calloc(1, sizeof *l);
    if (!l) {
        err_set(errstr, errstr_size, "http.listen: out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    l->snaps[0] = live__snap_new(cfg);
    l->snaps[1] = live__snap_new(cfg);
    if (!l->snaps[0] || !l->snaps[1]) {
        err_set(errstr, errstr_size, "http.listen: out of memory");
        live_stop(l);
        return NULL;
    }
    l->live_max_ms = cfg->http_live_max_ms;
    l->window_ms = cfg->metrics_window_ms;
    l->n_acc = (cfg->scenarios.n + 1) * MET_NTASKS;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | (v6 ? MHD_USE_IPv6 : 0);
    l->d = MHD_start_daemon(flags, 0, NULL, NULL, live__answer, l,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)LIVE_CONNECTIONS,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)LIVE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768,
                            MHD_OPTION_END);
    if (!l->d) {
        err_set(errstr, errstr_size, "http.listen=%s: cannot listen there (the port is in use, "
                "or the address is not one of this host's)", cfg->http_listen);
        live_stop(l);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_BIND_PORT);
    l->port = di ? di->port : cfg->http_port;
    return l;
}

int live_port(const live *l) { return l ? l->port : -1; }

/* Allocate the window's copies at the board's scale (its bins folded to at most
 * LIVE_WIN_BITS). Returns 0, or -1 (the quality gauges stay NaN). */
static int live__win_init(live *l, const met_auc *like) {
    char err[128];
    int bits = like->bits < LIVE_WIN_BITS ? like->bits : LIVE_WIN_BITS;
    int n = l->n_acc * (LIVE_WIN_SLOTS + 1) + 1;
    met_auc *all = calloc((size_t)n, sizeof *all);
    if (!all) return -1;
    for (int i = 0; i < n; i++) {
        int rc = like->logit ? met_auc_init_logit(&all[i], bits, err, sizeof err)
                             : met_auc_init(&all[i], bits, err, sizeof err);
        if (rc != 0) {
            for (int j = 0; j < i; j++) met_auc_free(&all[j]);
            free(all);
            return -1;
        }
    }
    l->now = all;
    l->slot = all + l->n_acc;
    l->diff = &all[n - 1];
    l->win_ready = 1;
    return 0;
}

/* dst = src (same scale). */
static void live__copy(met_auc *dst, const met_auc *src) {
    met_auc_reset(dst);
    met_auc_merge(dst, src);
}

/* The quality gauges: the board folded now minus the oldest copy (a copy is taken every
 * window / LIVE_WIN_SLOTS, so the oldest is between 7/8 and 1 window old once the ring is
 * full; the span is reported). */
static void live__window(live *l, met_board *board, int64_t now, live_snap *s) {
    int n_scen = s->n_scen;
    const met_auc *first = met_board_auc(board, 0, -1, MET_CTR);
    if (!first || (!l->win_ready && live__win_init(l, first) != 0)) return;
    for (int sc = 0; sc <= n_scen; sc++)
        for (int t = 0; t < MET_NTASKS; t++)
            met_auc_fold(&l->now[sc * MET_NTASKS + t],
                         met_board_auc(board, 0, sc < n_scen ? sc : -1, (met_task)t));
    int newest = (l->next_slot + LIVE_WIN_SLOTS - 1) % LIVE_WIN_SLOTS;
    if (!l->slot_ms[newest] || now - l->slot_ms[newest] >= l->window_ms / LIVE_WIN_SLOTS) {
        for (int i = 0; i < l->n_acc; i++) live__copy(&l->slot[l->next_slot * l->n_acc + i], &l->now[i]);
        l->slot_ms[l->next_slot] = now;
        l->next_slot = (l->next_slot + 1) % LIVE_WIN_SLOTS;
    }
    int oldest = l->slot_ms[l->next_slot] ? l->next_slot : 0;
    s->window_s = (double)(now - l->slot_ms[oldest]) / 1000.0;
    for (int i = 0; i < l->n_acc; i++) {
        live__copy(l->diff, &l->now[i]);
        met_auc_sub(l->diff, &l->slot[oldest * l->n_acc + i]);
        live_quality *q = &s->q[i / MET_NTASKS][i % MET_NTASKS];
        q->n = l->diff->n;
        q->auc = met_auc_value(l->diff, NULL);
        q->logloss = met_auc_logloss(l->diff);
        q->mean_p = met_auc_mean_p(l->diff);
        q->rate = met_auc_rate(l->diff);
    }
}

/* Consumer lag of every assigned partition whose position and high watermark are known
 * (the watermarks librdkafka cached from its last fetch: no request to the broker). */
static void live__lag(rd_kafka_t *rk, live_snap *s) {
    rd_kafka_topic_partition_list_t *a = NULL;
    s->n_lag = 0;
    if (!rk || rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a) return;
    if (a->cnt > s->lag_cap) {
        live_lag *more = realloc(s->lag, sizeof *more * (size_t)a->cnt);
        if (!more) {
            rd_kafka_topic_partition_list_destroy(a);
            return;
        }
        s->lag = more;
        s->lag_cap = a->cnt;
    }
    rd_kafka_position(rk, a);
    for (int i = 0; i < a->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &a->elems[i];
        int64_t lo = -1, hi = -1, pos = p->offset;
        if (rd_kafka_get_watermark_offsets(rk, p->topic, p->partition, &lo, &hi) != 0 || hi < 0)
            continue;
        if (pos < 0 && lo >= 0 && hi == lo) pos = hi;   /* empty partition: nothing to read */
        if (pos < 0) continue;
        live_lag *g = &s->lag[s->n_lag++];
        snprintf(g->topic, sizeof g->topic, "%s", p->topic);
        g->partition = p->partition;
        g->lag = hi > pos ? hi - pos : 0;
    }
    rd_kafka_topic_partition_list_destroy(a);
}

static void live__collect(live *l, const live_src *src, int64_t now, live_snap *s) {
    const met_counters *mc = met_board_counters(src->board);
    s->events = mc->events;
    s->impressions = mc->impressions;
    s->conversions = mc->conversions;
    s->requests = mc->requests;
    s->predictions = mc->predictions;
    s->late_conversions = mc->late_conversions;
    s->unmatched_conversions = mc->unmatched_conversions;
    for (int c = 0; c < LIVE_DLQ__COUNT; c++) s->dlq[c] = src->dlq ? src->dlq[c] : 0;
    s->assigned = src->assigned;
    s->paused = src->paused;
    s->broker_down_s = (double)src->down_ms / 1000.0;
    s->outputs_waiting = src->outputs_waiting;
    live__lag(src->consumer, s);
    for (int sc = 0; sc <= s->n_scen; sc++)
        for (int t = 0; t < MET_NTASKS; t++)
            s->q[sc][t] = (live_quality){0, NAN, NAN, NAN, NAN};
    s->window_s = 0;
    live__window(l, src->board, now, s);
    s->pending = src->pending;
    s->model_version = src->model_version;
    s->has_store = src->has_store;
    s->checkpoints = src->checkpoints;
    s->ckpt_age_s = (double)(now - src->last_ckpt_ms) / 1000.0;
    s->ckpt_last_s = src->ckpt_last_ms / 1000.0;
    double mb = met_rss_mb(NULL);
    s->rss_bytes = mb < 0 ? -1 : mb * 1048576.0;
    s->registry_wait = src->registry_wait;
    s->group = src->group;
    s->consuming = src->down_ms == 0 && !src->failed && !src->registry_wait;
}

int live_due(const live *l) {
    return l && (!l->last_publish_ms || clk_mono_ms() - l->last_publish_ms >= LIVE_PUBLISH_MS);
}

void live_publish(live *l, const live_src *src) {
    if (!l) return;
    int64_t now = clk_mono_ms();
    l->last_publish_ms = now;
    /* the server thread reads cur only, under the mutex: fill the other one */
    live_snap *fill = l->cur == l->snaps[0] ? l->snaps[1] : l->snaps[0];
    live__collect(l, src, now, fill);
    pthread_mutex_lock(&l->mu);
    l->cur = fill;
    l->published_ms = now;
    l->published_seq = l->assign_seq;
    pthread_mutex_unlock(&l->mu);
}

void live_set_assigned(live *l, int n) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    if (n == 0 && l->assigned > 0) l->revocations++;
    l->assigned = n;
    l->assign_seq++;
    pthread_mutex_unlock(&l->mu);
}

void live_stopping(live *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_mutex_unlock(&l->mu);
}

void live_stop(live *l) {
    if (!l) return;
    if (l->d) MHD_stop_daemon(l->d);
    if (l->win_ready)
        for (int i = 0; i < l->n_acc * (LIVE_WIN_SLOTS + 1) + 1; i++) met_auc_free(&l->now[i]);
    free(l->now);
    live__snap_free(l->snaps[0]);
    live__snap_free(l->snaps[1]);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
