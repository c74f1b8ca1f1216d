/* live.h - the worker's live view over HTTP: Prometheus metrics (/metrics), liveness
 * (/live) and readiness (/ready), served by libmicrohttpd on its own thread.
 *
 * Threads. The worker is single-threaded and may block for seconds (a checkpoint waiting
 * for deliveries, a rebalance): an endpoint it served itself between polls would stall
 * with it. So libmicrohttpd answers on its own thread, from a snapshot that the main loop
 * fills and publishes under a mutex about once a second (live_publish); rendering reads
 * only the published snapshot. A main loop that stops publishing shows as a growing
 * snapshot age, and /live fails past http.live.max.ms. Readiness changes at a rebalance
 * or at shutdown are published at once (live_set_assigned, live_stopping).
 *
 * Exposure. Only what live_snap holds is served: counters, gauges, topic names with
 * partition numbers, scenario and task names. No other configuration value (addresses,
 * paths, properties, credentials) reaches the snapshot. The server listens where
 * http.listen says (loopback in the examples; the key is empty, off, by default), takes
 * at most LIVE_CONNECTIONS connections, closes idle ones after LIVE_TIMEOUT_S, answers GET
 * and HEAD only (405 otherwise) and 404 for any other path. */
#ifndef M3_LIVE_H
#define M3_LIVE_H
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "base/event.h"
#include "config/cfg.h"
#include "report/metrics.h"

#define LIVE_CONNECTIONS 16      /* concurrent connections at most */
#define LIVE_TIMEOUT_S 10        /* an idle connection is closed after this */
#define LIVE_PUBLISH_MS 1000     /* live_publish renders at most this often */
#define LIVE_WIN_SLOTS 8         /* copies of the board kept for the recent window */
#define LIVE_WIN_BITS 12         /* bins of each copy (32 KiB; equal-p bins 1/4096 wide) */
#define LIVE_TOPIC_MAX 256       /* bytes of a topic name with its NUL (as TOPICS_NAME_MAX) */

/* DLQ reasons in a few fixed classes: the label of m3rec_dlq_messages_total stays bounded
 * whatever the reasons say. */
typedef enum {
    LIVE_DLQ_SCHEMA = 0,   /* unknown or incompatible writer schema, registry framing */
    LIVE_DLQ_MALFORMED,    /* bytes that are not a valid message (magic, truncation, ...) */
    LIVE_DLQ_ROUTING,      /* a valid message on the wrong topic, or of an unknown scenario */
    LIVE_DLQ_RANGE,        /* a value the model cannot digest (non-finite, out of range) */
    LIVE_DLQ_TIME,         /* an event time too far ahead or behind */
    LIVE_DLQ_FORMAT,       /* another framing than input.format expects (registry, single-object,
                              an Avro container file, JSON) */
    LIVE_DLQ_OTHER,
    LIVE_DLQ__COUNT
} live_dlq;

/* The class of a DLQ reason (never fails: unknown reasons are LIVE_DLQ_OTHER). */
live_dlq live_dlq_class(const char *reason);
/* The label value of a class ("schema", "malformed", ...); "other" when out of range. */
const char *live_dlq_name(int cls);

/* One assigned partition's consumer lag: high watermark - position. */
typedef struct {
    char topic[LIVE_TOPIC_MAX];
    int32_t partition;
    int64_t lag;
} live_lag;

/* Prequential quality over the recent window of one (scenario or overall, task). */
typedef struct {
    uint64_t n;            /* labelled predictions counted in the window */
    double auc, logloss, mean_p, rate;   /* NaN when undefined (no positive, empty, ...) */
} live_quality;

/* What /metrics serves. Filled on the main thread (live_publish) or by a test. */
/* The group's shared model (group.sync, app/group.h). */
typedef struct {
    int on;                               /* group.sync on: the series below are shown */
    uint64_t sent, applied, refused;      /* blobs */
    double staleness_ms;                  /* mean staleness of the applied blobs */
    int peers;                            /* peers live now */
} live_group;

typedef struct {
    uint64_t events, impressions, conversions, requests, predictions;
    uint64_t late_conversions, unmatched_conversions;
    uint64_t dlq[LIVE_DLQ__COUNT];        /* messages to the DLQ by class */
    int assigned;                         /* partitions assigned now */
    int paused;                           /* consuming paused (outage or output backlog) */
    double broker_down_s;                 /* the broker unreachable this long; 0 = it answers */
    long long outputs_waiting;            /* produced, not delivered yet */
    live_lag *lag;                        /* (n_lag) assigned partitions with a known lag */
    int n_lag, lag_cap;
    int n_scen;
    char scen[M3_MAX_SCEN][M3_NAME_MAX];
    live_quality q[M3_MAX_SCEN + 1][MET_NTASKS];   /* [n_scen]: over all scenarios */
    double window_s;                      /* the span the quality gauges cover */
    uint64_t pending;                     /* impressions waiting for their conversion window */
    int64_t model_version;                /* training steps */
    int has_store;                        /* the checkpoint series only with store.dir */
    uint64_t checkpoints;
    double ckpt_age_s, ckpt_last_s;       /* since the last checkpoint; its duration */
    double rss_bytes;                     /* resident memory; < 0 when unknown */
    int consuming;                        /* broker reachable, not failed, not stopping */
    int registry_wait;                    /* input waits for the schema registry */
    live_group group;                     /* group.sync: the series only when on */
} live_snap;

/* The state of the endpoints at one moment (computed by the server thread). */
typedef struct {
    int started;           /* the main loop runs (start-up is over) */
    int ready, live;
    double snapshot_age_s; /* since the last publish; NaN before the first */
    uint64_t revocations;  /* rebalances that took this member's partitions */
} live_health;

/* The exposition text (Prometheus text format 0.0.4) of h and s (s NULL: before the
 * first snapshot, the health series only), in a string the caller frees; NULL when out of
 * memory. */
char *live_render(const live_snap *s, const live_health *h);

/* ---- the server ---- */

typedef struct live live;

/* What the worker hands live_publish; every pointer is read during the call only. */
typedef struct {
    met_board *board;        /* counters and the cumulative histograms */
    rd_kafka_t *consumer;    /* assignment and lag (positions, cached watermarks) */
    int assigned, paused;
    int64_t down_ms;
    long long outputs_waiting;
    const uint64_t *dlq;     /* (LIVE_DLQ__COUNT) the worker's DLQ counts by class */
    uint64_t pending;
    int64_t model_version;
    int has_store;
    uint64_t checkpoints;
    double ckpt_last_ms;
    int64_t last_ckpt_ms;    /* monotonic: the last checkpoint (or the state's opening) */
    int failed;              /* the worker is stopping on a failure */
    int registry_wait;       /* a message waits for the schema registry: input stalled */
    live_group group;        /* group.sync (app/group.h) */
} live_src;

/* Start serving at cfg->http_host:cfg->http_port (cfg_check filled them) for a board of
 * cfg's scenarios. Returns NULL with errstr "" when http.listen is empty (off); NULL with
 * errstr filled when it cannot ("http.listen=...: cannot listen: ..."; a busy port, out
 * of memory); else the server, answering at once (/live true during start-up, /ready false
 * until the hooks report an assignment and a publish follows it). */
live *live_start(const m3_cfg *cfg, char *errstr, size_t errstr_size);
/* The port listened on (the chosen one when http.listen said port 0). */
int live_port(const live *l);
/* 1 when a publish is due (LIVE_PUBLISH_MS since the last one), 0 otherwise or for NULL:
 * the caller gathers src only then. */
int live_due(const live *l);
/* Collect a snapshot from src and publish it. Main thread only. NULL l: no-op. */
void live_publish(live *l, const live_src *src);
/* The assignment changed (the rebalance hooks): n partitions now; 0 at a revocation,
 * which /ready shows at once. /ready turns true only at the next live_publish (the main
 * loop consumes again). NULL l: no-op. */
void live_set_assigned(live *l, int n);
/* Shutdown began: /ready fails from now on. NULL l: no-op. */
void live_stopping(live *l);
/* Stop the server and free everything. NULL: no-op. */
void live_stop(live *l);

#endif
