/* cfg.h - the worker's configuration: properties files, validation, --set overrides.
 *
 * Files are Java-properties style `key=value` lines, `#` or `!` comments, blank lines.
 * Keys under `kafka.` are passed to librdkafka unchanged (without the prefix). Every
 * other key is known, typed and range-checked; any mistake is reported as
 * `file:line: what is wrong` (for --set overrides the origin is `--set`). */
#ifndef M3_CFG_H
#define M3_CFG_H
#include <stddef.h>
#include <stdint.h>
#include "base/event.h"
#include "engine/model.h"

#define CFG_LIST_MAX 32   /* entries in a comma-separated list (scenarios, feature fields) */
#define CFG_KEYS_MAX 96   /* capacity for the known (non-kafka) keys; cfg.c has fewer */
#define CFG_PATH_MAX 1024 /* store.dir */

typedef struct {
    char *key;    /* librdkafka property, without the `kafka.` prefix */
    char *value;
} cfg_kafka_prop;

typedef struct {
    char names[CFG_LIST_MAX][M3_NAME_MAX];
    int n;
} cfg_list;

/* Where a known key was last set, so cross-key errors can name a file and line. */
typedef struct {
    char *where;  /* owned: "path:line" or the --set origin; NULL = still the default */
    unsigned seq; /* order of setting: the larger, the later */
} cfg_origin;

typedef struct m3_cfg {
    /* topics */
    char topic_prefix[M3_NAME_MAX * 2];   /* topic.prefix, default "m3rec" */
    cfg_list scenarios;                   /* scenarios, default home,search,product */
    /* features: the field names read from each map of an Impression */
    cfg_list user_cat, item_cat, ctx_cat; /* features.user_cat etc. */
    cfg_list user_num, item_num;          /* features.user_num, features.item_num */
    /* batching */
    int batch_size;                       /* batch.size, 1..4096, default 256 */
    int batch_linger_ms;                  /* batch.linger.ms, 0..60000, default 20 */
    /* model */
    m3_model_cfg model;                   /* model.arch, model.emb.dim, model.hidden,
                                             model.tower.hidden, model.lr.dense,
                                             model.lr.emb, model.l2.emb, model.clip.norm,
                                             model.seed; n_scen, n_cat, n_num and
                                             max_batch = 2 * batch.size are derived
                                             by cfg_check() */
    int shadow[M3_ARCH__COUNT];           /* model.shadow: list of extra archs trained
                                             on the same batches for comparison */
    int n_shadow;
    /* delayed conversions */
    int64_t join_window_ms;               /* join.window.ms: attribution window, event time */
    int64_t join_lateness_ms;             /* join.lateness.ms: windows close this far behind
                                             the newest event time (uneven partitions) */
    char join_feedback[M3_NAME_MAX * 2];  /* join.feedback: how a clicked impression's CTCVR
                                             term learns before its label settles: "window"
                                             (waits), "fnw", "defer", "esdfm" (fake negatives; the
                                             size of topic_prefix, as every name key) */
    int64_t join_elapsed_ms;              /* join.esdfm.elapsed.ms: esdfm's elapsed time, after
                                             which a click trains its fake negative (0: at
                                             once) */
    /* durable state (state.c, store.c) */
    char store_dir[CFG_PATH_MAX];         /* store.dir: RocksDB directory; "" = in memory only */
    int store_memory_mb;                  /* store.memory.max_mb: embedding rows + user states
                                             in memory; 0 = no limit */
    int store_block_cache_mb;             /* store.block_cache_mb */
    int store_write_buffer_mb;            /* store.write_buffer_mb */
    int store_compression;                /* store.compression, bool */
    int64_t checkpoint_interval_ms;       /* checkpoint.interval.ms */
    int checkpoint_sync;                  /* checkpoint.sync, bool: fsync each checkpoint */
    int emb_admit_count;                  /* emb.admit.count: sightings before an id gets its
                                             own row (1 = at once) */
    int64_t emb_expire_ms;                /* emb.expire.ms: rows unseen this long in event
                                             time are dropped; 0 = never */
    /* admission (learner.c, lrn_admit): inputs the model can digest, plausible event time */
    float num_max_abs;                    /* features.num.max_abs: numeric features lie in
                                             [-max_abs, max_abs] */
    int num_clip;                         /* features.num.clip, bool: clip a value outside
                                             instead of refusing its event to the DLQ */
    int64_t time_max_ahead_ms;            /* time.max.ahead.ms: refuse events this far ahead
                                             of the newest event time; 0 = no check */
    int64_t time_max_behind_ms;           /* time.max.behind.ms: refuse events this far behind
                                             their source's event time; 0 = no check */
    /* embedded broker (librdkafka's mock cluster) */
    int broker_embedded;                  /* broker.embedded, bool, default false */
    int broker_partitions;                /* broker.embedded.partitions, 1..256, default 4 */
    /* run control */
    int64_t exit_idle_ms;                 /* worker.exit.idle.ms: exit after this long with no
                                             input once some input was seen; 0 = never */
    int64_t max_events;                   /* worker.max.events: stop after this many; 0 = no limit */
    int progress_ms;                      /* metrics.progress.ms: progress line period; 0 = off */
    int64_t slice_burnin_imps;            /* model.slice.burnin.impressions: no slice counts
                                             before this many impressions (the scoreboard's
                                             and the oracle's; model.slice_burnin stays 0) */
    int64_t outage_max_ms;                /* worker.outage.max.ms: stop when the broker has been
                                             unreachable this long; 0 = wait however long */
    /* issue 19, live metrics and health (app/live.c) */
    char http_listen[CFG_PATH_MAX];       /* http.listen: "host:port"; "" = off */
    char http_host[64];                   /* derived by cfg_check: the numeric address */
    int http_port;                        /* derived by cfg_check: 0..65535 (0: any free
                                             port), -1 when off */
    int64_t http_live_max_ms;             /* http.live.max.ms: /live fails past this without
                                             a published snapshot */
    int64_t metrics_window_ms;            /* metrics.window.ms: the live quality window */
    /* schema evolution (issue 19) */
    char input_schemas_dir[CFG_PATH_MAX]; /* input.schemas.dir: extra writer schemas; "" = none */
    /* issue 19, registry framing (stream/format.c, stream/registry.c) */
    char input_format[M3_NAME_MAX * 2];   /* input.format: single-object, registry, auto */
    char output_format[M3_NAME_MAX * 2];  /* output.format: single-object, registry */
    char registry_url[CFG_PATH_MAX];      /* registry.url: Confluent-compatible API base */
    char registry_subject[M3_NAME_MAX * 2]; /* registry.subject.strategy: topic, record,
                                             topic-record */
    int registry_timeout_ms;              /* registry.timeout.ms: one request's bound */
    int registry_backoff_max_ms;          /* registry.backoff.max.ms: longest pause between
                                             retries while the registry cannot answer */
    /* input order and loss (stream/order.h) */
    int order_event_time;                 /* input.order.event_time, bool */
    int order_buffer;                     /* input.order.buffer: messages in all */
    int64_t order_idle_ms;                /* input.order.idle.ms: wait for a lagging partition */
    int64_t order_live_wait_ms;           /* input.order.live.wait.ms: and for a caught-up one */
    int loss_fail;                        /* input.loss.fail, bool: stop when input is lost */
    /* issue 16, one model across the group (app/group.h) */
    char group_sync[M3_NAME_MAX * 2];     /* group.sync: none, sum, scaled, avg, mixed */
    int group_sync_rule;                  /* derived by cfg_check: sync_rule */
    int group_sync_bits;                  /* group.sync.bits: grad's gradient, 16 or 32 */
    int group_sync_every;                 /* group.sync.every: minibatches per update blob */
    int group_sync_stale;                 /* group.sync.stale: rounds ahead of the slowest
                                             live peer; -1 = never wait */
    int64_t group_sync_wait_ms;           /* group.sync.wait.ms: a silent peer this long is
                                             not waited for */
    int64_t group_snapshot_ms;            /* group.snapshot.interval.ms: 0 = no snapshots */
    /* issue 16 item 1, state that follows its partition (stream/changelog.h) */
    int group_changelog;                  /* group.changelog, bool: changelog + transactions */
    /* librdkafka passthrough, in file order (later entries override earlier ones) */
    cfg_kafka_prop *kafka;                /* owned */
    int n_kafka;
    /* bookkeeping for error messages, indexed like cfg.c's key table */
    cfg_origin origin[CFG_KEYS_MAX];
    unsigned n_set;
} m3_cfg;

/* Fill c with the defaults (overwriting it, so never call it on a c that owns memory:
 * use cfg_free()). c owns no memory until cfg_load() or cfg_set() succeeds. */
void cfg_defaults(m3_cfg *c);

/* Read a properties file into c (on top of what is there), line by line. Returns 0, or
 * -1 with errstr = "path:line: message" (an unreadable file is "path: <strerror>"; a
 * line over 64 KiB, a NUL byte or a file over 1 MiB is refused: props_load());
 * the lines before the bad one stay applied, the bad one changes nothing. */
int cfg_load(m3_cfg *c, const char *path, char *errstr, size_t errstr_size);
/* The same for a properties text in memory, named origin in messages (props_load_mem). */
int cfg_load_mem(m3_cfg *c, const char *text, size_t len, const char *origin, char *errstr,
                 size_t errstr_size);

/* Apply one `key=value` override. origin and line name it in errors: "origin:line: msg",
 * or "origin: msg" when line is 0 (e.g. "--set", 0). Returns 0, or -1 with errstr
 * filled and c unchanged. */
int cfg_set(m3_cfg *c, const char *key_eq_value, const char *origin, int line,
            char *errstr, size_t errstr_size);

/* Cross-key checks after everything is loaded: at least one and at most M3_MAX_SCEN
 * scenarios, http.listen a host:port (or empty; fills http_host and http_port),
 * 2 id slots + categorical fields <= M3_MAX_CAT, numeric fields <= M3_MAX_NUM,
 * the primary model.arch not repeated in model.shadow, no model.shadow with store.dir
 * (only the primary model's state is persisted); then the engine's own checks of every
 * model the worker builds (m3_check_cfg of model.arch and of each model.shadow, e.g.
 * model.upt.heads dividing model.emb.dim) and the bound on their UPT snapshots: every check
 * start-up makes of the configuration, so --print-config refuses what start-up would.
 * Fills the derived model fields (n_scen, n_cat, n_num, max_batch = 2 * batch.size) and
 * returns 0. Returns -1 with errstr = "where: message", the message naming the keys and
 * where = the file:line (or --set) that set the last of them (no where: all defaults). */
int cfg_check(m3_cfg *c, char *errstr, size_t errstr_size);

/* The value of a librdkafka passthrough key (without `kafka.`), or NULL. */
const char *cfg_kafka_get(const m3_cfg *c, const char *key);

/* Index of a scenario name, or -1. */
int cfg_scenario_index(const m3_cfg *c, const char *name);

/* Free what c owns; c is left as after cfg_defaults(). NULL is a no-op. */
void cfg_free(m3_cfg *c);

/* Write every setting, one `key=value` per line, to a malloc'd string (for --print-config
 * and the report): the known keys in table order, then the kafka. ones in file order.
 * Values of kafka keys are written as "***" unless props_kafka_shown() allows them (an
 * allowlist of librdkafka properties that hold no key, password, token or credential).
 * The caller frees the string. Returns NULL on allocation failure. */
char *cfg_dump(const m3_cfg *c);

/* Describe every known key, one line each: name, meaning, range, default (for --help).
 * The caller frees the string. Returns NULL on allocation failure. */
char *cfg_help(void);

#endif
