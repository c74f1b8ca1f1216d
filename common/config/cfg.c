/* cfg.c - the worker's configuration: one table of known keys, a properties reader,
 * validation with file:line messages, --set overrides and a dump. */
#include "config/cfg.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/props.h"
#include "engine/sync.h"

#define DAY_MS (24LL * 3600 * 1000)

typedef enum {
    CFG__INT,      /* int, range imin..imax */
    CFG__INT64,    /* int64_t, range imin..imax */
    CFG__UINT64,   /* uint64_t, any value */
    CFG__FLOAT,    /* float, range fmin..fmax (fmin exclusive when fmin_excl) */
    CFG__BOOL,     /* int 0/1 */
    CFG__STRING,   /* char[M3_NAME_MAX * 2], a topic-safe name */
    CFG__PATH,     /* char[CFG_PATH_MAX], a file system path; may be empty */
    CFG__NAMES,    /* cfg_list */
    CFG__INTS,     /* int[max_n] at off, count at off_n; each imin..imax, 1..max_n entries */
    CFG__ARCH,     /* int, one of the m3_arch names */
    CFG__ARCHS,    /* int[M3_ARCH__COUNT] at off, count at off_n; may be empty */
} cfg__type;

typedef struct {
    const char *name;
    cfg__type type;
    size_t off, off_n;
    int64_t imin, imax;
    double fmin, fmax;
    int fmin_excl;
    int max_n;
    const char *def;
    const char *doc;
} cfg__key;

#define OFF(f) offsetof(m3_cfg, f)
#define K_INT(n, f, lo, hi, d, doc) { n, CFG__INT, OFF(f), 0, lo, hi, 0, 0, 0, 0, d, doc }
#define K_I64(n, f, lo, hi, d, doc) { n, CFG__INT64, OFF(f), 0, lo, hi, 0, 0, 0, 0, d, doc }
#define K_FLT(n, f, lo, ex, hi, d, doc) { n, CFG__FLOAT, OFF(f), 0, 0, 0, lo, hi, ex, 0, d, doc }
#define K_TYP(n, t, f, d, doc) { n, t, OFF(f), 0, 0, 0, 0, 0, 0, 0, d, doc }

/* The contract: every known key, its type, range and default. Defaults are applied
 * through the same parser as files, so a default is valid by construction. */
static const cfg__key cfg__keys[] = {
    K_TYP("topic.prefix", CFG__STRING, topic_prefix, "m3rec",
          "prefix of every topic name: <prefix>.events.<scenario>, <prefix>.requests, ..."),
    K_TYP("scenarios", CFG__NAMES, scenarios, "home,search,product",
          "scenario names, in model head order"),
    K_TYP("features.user_cat", CFG__NAMES, user_cat, "age,gender,city,tier",
          "categorical fields read from an event's user_cat map"),
    K_TYP("features.item_cat", CFG__NAMES, item_cat, "category,brand,shop",
          "categorical fields read from an event's item_cat map"),
    K_TYP("features.ctx_cat", CFG__NAMES, ctx_cat, "device",
          "categorical fields read from an event's ctx_cat map; not the hour of the event "
          "(docs/configuration.md: a field that follows event time learns when labels arrive)"),
    K_TYP("features.user_num", CFG__NAMES, user_num, "activity",
          "numeric fields read from an event's user_num map"),
    K_TYP("features.item_num", CFG__NAMES, item_num, "price,rating",
          "numeric fields read from an event's item_num map"),
    K_INT("batch.size", batch_size, 1, 4096, "256",
          "impressions per minibatch (predict, then train)"),
    K_INT("batch.linger.ms", batch_linger_ms, 0, 60000, "20",
          "longest wait for a minibatch to fill"),
    K_TYP("model.arch", CFG__ARCH, model.arch, "m3rec",
          "architecture of the primary model (its predictions are published)"),
    { "model.shadow", CFG__ARCHS, OFF(shadow), OFF(n_shadow), 0, 0, 0, 0, 0,
      M3_ARCH__COUNT, "", "extra architectures trained on the same batches, for comparison" },
    K_INT("model.emb.dim", model.emb_dim, 1, 256, "16", "embedding dimension d"),
    { "model.hidden", CFG__INTS, OFF(model.hidden), OFF(model.n_hidden), 1, 4096, 0, 0, 0,
      M3_MAX_LAYERS, "128,64", "widths of the bottom MLP layers" },
    K_INT("model.tower.hidden", model.tower_hidden, 1, 4096, "32",
          "hidden width of each task tower"),
    K_FLT("model.lr.dense", model.lr_dense, 0, 1, 1, "0.005",
          "Adam step size for dense parameters"),
    K_FLT("model.lr.emb", model.lr_emb, 0, 1, 10, "0.5",
          "Adagrad step size for embedding rows"),
    K_FLT("model.acc0.emb", model.acc0_emb, 0, 0, 100, "0.1",
          "Adagrad's starting accumulator for a new embedding row: its first steps are about "
          "lr.emb x gradient / sqrt(acc0.emb)"),
    K_FLT("model.l2.emb", model.l2_emb, 0, 0, 1, "1e-6",
          "L2 penalty on the embedding rows a step touches"),
    K_FLT("model.clip.norm", model.clip_norm, 0, 0, 1e6, "10",
          "dense gradient-norm clip; 0 = off"),
    K_TYP("model.seed", CFG__UINT64, model.seed, "42", "seed of the parameter initialisation"),
    K_INT("model.experts.shared", model.n_exp_shared, 0, 32, "2",
          "shared experts (mmoe and ple also take the scenario and task counts as theirs)"),
    K_INT("model.experts.scenario", model.n_exp_scen, 0, 32, "1", "experts of each scenario (m3rec)"),
    K_INT("model.experts.task", model.n_exp_task, 0, 32, "1", "experts of each task (ple, m3rec)"),
    K_FLT("model.gate.scale", model.gate_scale, 0, 1, 100, "0.1",
          "gate logits are scaled by this: below 1 the softmax gates move slower than the experts"),
    K_TYP("model.dots", CFG__BOOL, model.dots, "true",
          "every architecture but lr also reads the dot product of each pair of field "
          "embeddings (and the scenario's): the factorisation-machine interactions"),
    K_TYP("model.mieg", CFG__BOOL, model.mieg, "true",
          "m3rec: generate young items' embeddings from their features (MIEG)"),
    K_INT("model.mieg.hidden", model.mieg_hidden, 1, 4096, "64", "MIEG generator hidden width"),
    K_FLT("model.mieg.align", model.mieg_align, 0, 0, 100, "0.1",
          "weight of MIEG's pull toward the learned rows of warm items"),
    K_INT("model.item.warm", model.item_warm, 0, 1000000, "20",
          "an item is young (MIEG, the new_item slice) below this many trained impressions"),
    K_INT("model.slice.user.new", model.slice_user_new, 1, 1000000, "10",
          "the new_user_in_scenario slice: a user's first this many impressions in a scenario, "
          "known in another"),
    /* -- offline datasets (issue 17 item 3): the slices' burn-in in impressions -- */
    K_I64("model.slice.burnin.impressions", slice_burnin_imps, 0, INT64_MAX, "100000",
          "the new_item and new_user_in_scenario slices count from this many impressions on "
          "(during the models' own start-up every item and user is new)"),
    K_TYP("model.upt", CFG__BOOL, model.upt, "true",
          "m3rec: transfer the user's preferences across scenarios (UPT)"),
    K_INT("model.upt.heads", model.upt_heads, 1, 64, "2", "UPT attention heads (divide model.emb.dim)"),
    K_INT("model.upt.ffn", model.upt_ffn, 1, 4096, "32", "UPT feed-forward width"),
    K_FLT("model.upt.step", model.upt_step, 0, 0, 10, "0.5",
          "UPT preference step: P += step (clicked - p_ctr) e_item on every impression"),
    K_FLT("model.upt.step.conv", model.upt_step_conv, 0, 0, 10, "0.5",
          "UPT preference step of a click's conversion: (converted - p_cvr) e_item"),
    K_I64("join.window.ms", join_window_ms, 1000, 30 * DAY_MS, "3600000",
          "conversion attribution window, in event time"),
    K_I64("join.lateness.ms", join_lateness_ms, 0, DAY_MS, "300000",
          "windows close this long behind the newest event time seen (partitions are read unevenly)"),
    /* delayed-feedback learning (issue 17) */
    K_TYP("join.feedback", CFG__STRING, join_feedback, "window",
          "a clicked impression's CTCVR term: window (trains when its label settles), fnw, "
          "defer or esdfm (trains at once as a negative, corrected when the conversion arrives)"),
    /* ES-DFM's elapsed time (brief D, issue 17) */
    K_I64("join.esdfm.elapsed.ms", join_elapsed_ms, 0, 30 * DAY_MS, "0",
          "join.feedback=esdfm: a click trains its fake negative this long after the impression "
          "(a conversion before is a plain positive); 0 = at once; at most join.window.ms"),
    K_TYP("store.dir", CFG__PATH, store_dir, "",
          "RocksDB directory of the durable state (one per worker); empty = in memory only"),
    K_INT("store.memory.max_mb", store_memory_mb, 0, 1048576, "1024",
          "memory for embedding rows and user states; cold rows beyond it are evicted to the store; 0 = no limit"),
    K_INT("store.block_cache_mb", store_block_cache_mb, 0, 65536, "128",
          "RocksDB block cache (rows read back from the store); 0 = none"),
    K_INT("store.write_buffer_mb", store_write_buffer_mb, 1, 4096, "64",
          "RocksDB memtable size per column family"),
    K_TYP("store.compression", CFG__BOOL, store_compression, "true",
          "LZ4 (or Snappy) compression of the store's files"),
    K_I64("checkpoint.interval.ms", checkpoint_interval_ms, 100, DAY_MS, "10000",
          "time between checkpoints (state + input offsets in one RocksDB write batch)"),
    K_TYP("checkpoint.sync", CFG__BOOL, checkpoint_sync, "true",
          "fsync each checkpoint (survives a power loss, not only a crash)"),
    K_INT("emb.admit.count", emb_admit_count, 1, 255, "1",
          "sightings of an id before it gets its own embedding row (a shared row serves it before); 1 = at once"),
    K_I64("emb.expire.ms", emb_expire_ms, 0, 3650 * DAY_MS, "2592000000",
          "embedding rows and user states unseen this long (event time) are dropped; 0 = never"),
    /* admission: inputs the model can digest, plausible event time (learner.c, lrn_admit) */
    K_FLT("features.num.max_abs", num_max_abs, 0, 1, 3.4e38, "1e6",
          "numeric features must lie in [-max_abs, max_abs]; an event with a value outside "
          "goes to the DLQ (or the value is clipped: features.num.clip)"),
    K_TYP("features.num.clip", CFG__BOOL, num_clip, "false",
          "clip a numeric feature outside features.num.max_abs to the bound (counted) instead "
          "of refusing its event to the DLQ"),
    K_I64("time.max.ahead.ms", time_max_ahead_ms, 0, 3650 * DAY_MS, "86400000",
          "refuse an impression or conversion this far ahead of the newest event time (DLQ), "
          "unless the event just before it agrees; 0 = no check"),
    K_I64("time.max.behind.ms", time_max_behind_ms, 0, 3650 * DAY_MS, "604800000",
          "refuse an impression or conversion this far behind its partition's event time "
          "(DLQ); at least join.window.ms + join.lateness.ms; 0 = no check"),
    K_TYP("broker.embedded", CFG__BOOL, broker_embedded, "false",
          "run against librdkafka's in-process mock cluster instead of kafka.bootstrap.servers"),
    K_INT("broker.embedded.partitions", broker_partitions, 1, 256, "4",
          "partitions per topic of the embedded broker"),
    K_I64("worker.exit.idle.ms", exit_idle_ms, 0, DAY_MS, "0",
          "exit after this long without input once input was seen; 0 = never"),
    K_I64("worker.max.events", max_events, 0, INT64_MAX, "0",
          "stop after this many input events; 0 = no limit"),
    K_INT("metrics.progress.ms", progress_ms, 0, 3600000, "5000",
          "period of the progress line; 0 = off"),
    /* issue 18, outages: how long the worker waits for an unreachable broker */
    K_I64("worker.outage.max.ms", outage_max_ms, 0, 30 * DAY_MS, "0",
          "stop (exit 1, no checkpoint) when the broker has been unreachable this long; 0 = wait for it however long"),
    /* issue 19, live metrics and health (app/live.c): an HTTP endpoint, off by default */
    K_TYP("http.listen", CFG__PATH, http_listen, "",
          "host:port of the HTTP endpoint serving /metrics (Prometheus), /live and /ready; "
          "an IPv4 literal, [IPv6] or localhost; port 0 = any free port; empty = off"),
    K_I64("http.live.max.ms", http_live_max_ms, 1000, DAY_MS, "30000",
          "/live fails once the main loop has not published its metrics for this long"),
    K_I64("metrics.window.ms", metrics_window_ms, 10000, DAY_MS, "300000",
          "the recent window of the live AUC, log loss and calibration gauges"),
    /* issue 19, schema evolution: writer schemas beyond schemas/ and schemas/history/ */
    K_TYP("input.schemas.dir", CFG__PATH, input_schemas_dir, "",
          "directory of extra writer schemas (*.avsc) the worker resolves to its own at start; "
          "an incompatible one is logged and its messages go to the DLQ naming the difference"),
    /* issue 19, registry framing: how messages are framed and the schema registry */
    K_TYP("input.format", CFG__STRING, input_format, "single-object",
          "framing of input messages: single-object (C3 01 + fingerprint), registry (00 + "
          "schema id, resolved at registry.url) or auto (by the first byte)"),
    K_TYP("output.format", CFG__STRING, output_format, "single-object",
          "framing of predictions: single-object, or registry (the Prediction schema is "
          "registered at start and its id framed in)"),
    K_TYP("registry.url", CFG__PATH, registry_url, "",
          "base URL of a Confluent-compatible schema registry (e.g. http://host:8080/apis/ccompat/v7); "
          "user:password@ in it is basic authentication"),
    K_TYP("registry.subject.strategy", CFG__STRING, registry_subject, "topic",
          "subject the Prediction schema is registered under: topic (<topic>-value), record "
          "(io.m3rec.events.Prediction) or topic-record (<topic>-<record>)"),
    K_INT("registry.timeout.ms", registry_timeout_ms, 100, 600000, "5000",
          "bound of one registry request, connecting included"),
    K_INT("registry.backoff.max.ms", registry_backoff_max_ms, 10, 600000, "5000",
          "longest pause between retries while the registry cannot answer (messages wait)"),
    /* issue 17, input order and loss: event-time order across partitions, offset gaps */
    K_TYP("input.order.event_time", CFG__BOOL, order_event_time, "true",
          "hand input to the learner in event-time order across the assigned partitions "
          "(bounded buffer); false = in the order the consumer fetched it"),
    K_INT("input.order.buffer", order_buffer, 1, 10000000, "32768",
          "messages the order buffer holds, shared evenly by the assigned partitions (at "
          "least 16 each); a partition whose share is full is paused"),
    K_I64("input.order.idle.ms", order_idle_ms, 0, 600000, "2000",
          "how long the input waits for an empty partition that still has messages at the "
          "broker before it goes on without it (as Kafka Streams' max.task.idle.ms)"),
    K_TYP("input.loss.fail", CFG__BOOL, loss_fail, "false",
          "stop (exit 1, no checkpoint) when input is lost: an offset gap or an offset reset; "
          "false = count and report it"),
    /* issue 17 bar 2, a paced stream in its backlog's order: the live wait (stream/order.h) */
    K_I64("input.order.live.wait.ms", order_live_wait_ms, 0, 600000, "0",
          "while an assigned partition is empty, even at its high watermark (a live stream), "
          "hand nothing out until the longest-buffered message has waited this long (a "
          "positive max.task.idle.ms, KIP-695): a paced stream is trained in its backlog's "
          "order, at up to this much latency; 0 = never"),
    /* issue 16, one model across the group: the model topic (app/group.h) */
    K_TYP("group.sync", CFG__STRING, group_sync, "none",
          "how the group's workers share one model through <topic.prefix>.model: none "
          "(each its own), sum, scaled, avg, mixed (engine/sync.h: deltas) or grad (each "
          "worker's dense gradient; every worker takes the same Adam step on the round's "
          "mean; needs group.sync.stale=0)"),
    K_INT("group.sync.every", group_sync_every, 1, 100000, "1",
          "minibatches between two update blobs a worker publishes"),
    K_INT("group.sync.stale", group_sync_stale, -1, 100000, "0",
          "after its blob of round r a worker waits before its next minibatch for each live "
          "peer's blob of round r - S (rounds: a Lamport clock in each blob's header; 0: "
          "synchronous rounds); -1 = never wait (asynchronous)"),
    K_I64("group.sync.wait.ms", group_sync_wait_ms, 1, DAY_MS, "2000",
          "a peer silent this long is not waited for (dead, idle or gone) until its next blob"),
    K_INT("group.sync.bits", group_sync_bits, 16, 32, "32",
          "group.sync=grad: the gradient's bits on the wire: 32 (float) or 16 (bfloat16, "
          "half the bytes; the rounding's remainder goes into the next blob)"),
    K_I64("group.snapshot.interval.ms", group_snapshot_ms, 0, DAY_MS, "60000",
          "the owner of input partition 0 writes the whole shared model to "
          "<topic.prefix>.model.snapshot this often (and a worker alone at a revocation); a "
          "worker loads the newest at start; 0 = never written"),
    /* issue 16 item 1, the changelog (stream/changelog.h): state that follows its partition */
    K_TYP("group.changelog", CFG__BOOL, group_changelog, "false",
          "a group of workers: each partition's user states, user-id rows, pending clicked "
          "impressions and watermark go to the compacted <topic.prefix>.changelog in one Kafka "
          "transaction per checkpoint with the outputs and offsets, and follow the partition "
          "to its next worker (needs store.dir; costs a transaction per checkpoint and a "
          "restore of each partition that moves)"),
};
#define CFG__NKEYS ((int)(sizeof cfg__keys / sizeof cfg__keys[0]))
_Static_assert(sizeof cfg__keys / sizeof cfg__keys[0] <= CFG_KEYS_MAX, "raise CFG_KEYS_MAX");

#define KAFKA_PREFIX "kafka."

/* ---- helpers ---------------------------------------------------------------------- */

static int cfg__name_char(int ch) {
    return isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '-';
}

static void *cfg__at(m3_cfg *c, size_t off) { return (char *)c + off; }
static const void *cfg__cat(const m3_cfg *c, size_t off) { return (const char *)c + off; }

/* "1..4096", "(>0..1)" style range text of a numeric key, without parentheses. */
static void cfg__range(const cfg__key *k, char *out, size_t n) {
    switch (k->type) {
    case CFG__FLOAT:
        snprintf(out, n, "%s%.15g..%.15g", k->fmin_excl ? ">" : "", k->fmin, k->fmax);
        break;
    case CFG__UINT64:
        snprintf(out, n, "0..%" PRIu64, UINT64_MAX);
        break;
    default:
        if (k->imax == INT64_MAX)
            snprintf(out, n, ">=%" PRId64, k->imin);
        else
            snprintf(out, n, "%" PRId64 "..%" PRId64, k->imin, k->imax);
    }
}

static void cfg__arch_names(char *out, size_t n) {
    size_t used = 0;
    out[0] = '\0';
    for (int a = 0; a < M3_ARCH__COUNT && used < n; a++)
        used += (size_t)snprintf(out + used, n - used, "%s%s", a ? "|" : "", m3_arch_name(a));
}

static int cfg__parse_u64(const char *s, uint64_t *out) {
    if (!isdigit((unsigned char)*s)) return -1; /* strtoull would wrap "-1" */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end) return -1;
    if (errno == ERANGE) return -2;
    *out = v;
    return 0;
}

static int cfg__parse_bool(const char *s, int *out) {
    static const char *yes[] = { "true", "1", "yes", "on" };
    static const char *no[] = { "false", "0", "no", "off" };
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) { *out = 1; return 0; }
        if (strcasecmp(s, no[i]) == 0) { *out = 0; return 0; }
    }
    return -1;
}

/* Split a comma list into trimmed entries in buf (modified). Returns the count, or -1
 * with msg filled when an entry is empty or there are more than max entries. */
static int cfg__split(char *text, char **items, int max, const cfg__key *k, const char *value,
                      char *msg, size_t msg_size) {
    int n = 0;
    char *p = text;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        char *item = props_trim(p);
        if (!*item) {
            err_set(msg, msg_size, "%s=%s: empty entry in the list", k->name, value);
            return -1;
        }
        if (n == max) {
            err_set(msg, msg_size, "%s=%s: more than %d entries", k->name, value, max);
            return -1;
        }
        items[n++] = item;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

/* ---- setting one known key: one setter per type ----------------------------------- */

/* CFG__INT, CFG__INT64 (in k's range) and CFG__UINT64 (any). */
static int cfg__set_int(m3_cfg *c, const cfg__key *k, const char *value, char *msg,
                        size_t msg_size) {
    char range[64];
    cfg__range(k, range, sizeof range);
    int64_t v = 0;
    uint64_t u = 0;
    int rc = k->type == CFG__UINT64 ? cfg__parse_u64(value, &u) : props_parse_i64(value, &v);
    if (rc == -1) {
        err_set(msg, msg_size, "%s=%s is not an integer (%s)", k->name, value, range);
        return -1;
    }
    if (rc == -2 || (k->type != CFG__UINT64 && (v < k->imin || v > k->imax))) {
        err_set(msg, msg_size, "%s=%s is out of range (%s)", k->name, value, range);
        return -1;
    }
    if (k->type == CFG__INT) *(int *)cfg__at(c, k->off) = (int)v;
    else if (k->type == CFG__INT64) *(int64_t *)cfg__at(c, k->off) = v;
    else *(uint64_t *)cfg__at(c, k->off) = u;
    return 0;
}

static int cfg__set_float(m3_cfg *c, const cfg__key *k, const char *value, char *msg,
                          size_t msg_size) {
    char range[64];
    cfg__range(k, range, sizeof range);
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (end == value || *end || isspace((unsigned char)*value) || !isfinite(v)) {
        err_set(msg, msg_size, "%s=%s is not a finite number (%s)", k->name, value, range);
        return -1;
    }
    if (errno == ERANGE || v > k->fmax || v < k->fmin || (k->fmin_excl && v <= k->fmin)) {
        err_set(msg, msg_size, "%s=%s is out of range (%s)", k->name, value, range);
        return -1;
    }
    *(float *)cfg__at(c, k->off) = (float)v;
    return 0;
}

static int cfg__set_bool(m3_cfg *c, const cfg__key *k, const char *value, char *msg,
                         size_t msg_size) {
    int v;
    if (cfg__parse_bool(value, &v) != 0) {
        err_set(msg, msg_size, "%s=%s is not a boolean (true/false, yes/no, on/off, 1/0)",
                 k->name, value);
        return -1;
    }
    *(int *)cfg__at(c, k->off) = v;
    return 0;
}

/* A topic-safe name (CFG__STRING). */
static int cfg__set_name(m3_cfg *c, const cfg__key *k, const char *value, char *msg,
                         size_t msg_size) {
    size_t n = strlen(value), cap = sizeof c->topic_prefix;
    int ok = n < cap;
    for (size_t i = 0; ok && i < n; i++) ok = cfg__name_char(value[i]);
    if (!ok) {
        err_set(msg, msg_size, "%s=%s is not a valid name (1..%zu characters of A-Z a-z 0-9 _ . -)",
                 k->name, value, cap - 1);
        return -1;
    }
    memcpy(cfg__at(c, k->off), value, n + 1);
    return 0;
}

static int cfg__set_path(m3_cfg *c, const cfg__key *k, const char *value, char *msg,
                         size_t msg_size) {
    size_t n = strlen(value);
    for (size_t i = 0; i < n; i++)
        if (iscntrl((unsigned char)value[i])) {
            err_set(msg, msg_size, "%s: the path contains a control character", k->name);
            return -1;
        }
    if (n >= CFG_PATH_MAX) {
        err_set(msg, msg_size, "%s: the path is longer than %d characters", k->name,
                 CFG_PATH_MAX - 1);
        return -1;
    }
    memcpy(cfg__at(c, k->off), value, n + 1);
    return 0;
}

static int cfg__set_arch(m3_cfg *c, const cfg__key *k, const char *value, char *msg,
                         size_t msg_size) {
    int a = m3_arch_parse(value);
    if (a < 0) {
        char names[128];
        cfg__arch_names(names, sizeof names);
        err_set(msg, msg_size, "%s=%s is not a known architecture (%s)", k->name, value, names);
        return -1;
    }
    *(int *)cfg__at(c, k->off) = a;
    return 0;
}

/* The n split entries of a CFG__NAMES list: each a name, none twice. */
static int cfg__set_names(m3_cfg *c, const cfg__key *k, const char *value, char **items, int n,
                          char *msg, size_t msg_size) {
    cfg_list l;
    memset(&l, 0, sizeof l);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(items[i]);
        if (len >= M3_NAME_MAX) {
            err_set(msg, msg_size, "%s=%s: '%s' is too long (at most %d characters)", k->name,
                     value, items[i], M3_NAME_MAX - 1);
            return -1;
        }
        int ok = 1;
        for (size_t j = 0; j < len; j++) ok &= cfg__name_char(items[i][j]);
        if (!ok) {
            err_set(msg, msg_size, "%s=%s: '%s' is not a valid name (characters A-Z a-z 0-9 _ . -)",
                     k->name, value, items[i]);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(items[i], items[j]) == 0) {
                err_set(msg, msg_size, "%s=%s: '%s' is listed twice", k->name, value, items[i]);
                return -1;
            }
        memcpy(l.names[l.n++], items[i], len + 1);
    }
    *(cfg_list *)cfg__at(c, k->off) = l;
    return 0;
}

/* Store n ints at k's off and their count at off_n (CFG__INTS and CFG__ARCHS). */
static void cfg__store_ints(m3_cfg *c, const cfg__key *k, const int *v, int n) {
    memcpy(cfg__at(c, k->off), v, (size_t)n * sizeof v[0]);
    *(int *)cfg__at(c, k->off_n) = n;
}

/* The n split entries of a CFG__INTS list: each an integer in k's range. */
static int cfg__set_ints(m3_cfg *c, const cfg__key *k, const char *value, char **items, int n,
                         char *msg, size_t msg_size) {
    char range[64];
    cfg__range(k, range, sizeof range);
    int v[M3_MAX_LAYERS];
    for (int i = 0; i < n; i++) {
        int64_t x;
        int prc = props_parse_i64(items[i], &x);
        if (prc == -1) {
            err_set(msg, msg_size, "%s=%s: '%s' is not an integer (each %s)", k->name, value,
                     items[i], range);
            return -1;
        }
        if (prc == -2 || x < k->imin || x > k->imax) {
            err_set(msg, msg_size, "%s=%s: '%s' is out of range (each %s)", k->name, value,
                     items[i], range);
            return -1;
        }
        v[i] = (int)x;
    }
    cfg__store_ints(c, k, v, n);
    return 0;
}

/* The n split entries of a CFG__ARCHS list: each an architecture, none twice. */
static int cfg__set_archs(m3_cfg *c, const cfg__key *k, const char *value, char **items, int n,
                          char *msg, size_t msg_size) {
    int v[M3_ARCH__COUNT];
    for (int i = 0; i < n; i++) {
        v[i] = m3_arch_parse(items[i]);
        if (v[i] < 0) {
            char names[128];
            cfg__arch_names(names, sizeof names);
            err_set(msg, msg_size, "%s=%s: '%s' is not a known architecture (%s)", k->name,
                     value, items[i], names);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (v[j] == v[i]) {
                err_set(msg, msg_size, "%s=%s: '%s' is listed twice", k->name, value, items[i]);
                return -1;
            }
    }
    cfg__store_ints(c, k, v, n);
    return 0;
}

/* A comma-separated list: split it, then set it by the type of its entries. */
static int cfg__set_list(m3_cfg *c, const cfg__key *k, const char *value, char *msg,
                         size_t msg_size) {
    char *text = strdup(value);
    if (!text) {
        err_set(msg, msg_size, "out of memory");
        return -1;
    }
    char *items[CFG_LIST_MAX];
    int max = k->type == CFG__NAMES ? CFG_LIST_MAX : k->max_n;
    int n = *value ? cfg__split(text, items, max, k, value, msg, msg_size) : 0;
    int rc = -1;
    if (n >= 0 && k->type == CFG__NAMES) rc = cfg__set_names(c, k, value, items, n, msg, msg_size);
    else if (n >= 0 && k->type == CFG__INTS) rc = cfg__set_ints(c, k, value, items, n, msg, msg_size);
    else if (n >= 0) rc = cfg__set_archs(c, k, value, items, n, msg, msg_size);
    free(text);
    return rc;
}

/* Parse value for key k and store it in c. On error returns -1 with msg filled and c
 * unchanged. value is trimmed. */
static int cfg__apply(m3_cfg *c, const cfg__key *k, const char *value, char *msg,
                      size_t msg_size) {
    int is_list = k->type == CFG__NAMES || k->type == CFG__ARCHS || k->type == CFG__PATH;
    if (!*value && !is_list) {
        err_set(msg, msg_size, "%s has an empty value", k->name);
        return -1;
    }
    switch (k->type) {
    case CFG__INT:
    case CFG__INT64:
    case CFG__UINT64: return cfg__set_int(c, k, value, msg, msg_size);
    case CFG__FLOAT: return cfg__set_float(c, k, value, msg, msg_size);
    case CFG__BOOL: return cfg__set_bool(c, k, value, msg, msg_size);
    case CFG__STRING: return cfg__set_name(c, k, value, msg, msg_size);
    case CFG__PATH: return cfg__set_path(c, k, value, msg, msg_size);
    case CFG__ARCH: return cfg__set_arch(c, k, value, msg, msg_size);
    case CFG__NAMES:
    case CFG__INTS:
    case CFG__ARCHS: return cfg__set_list(c, k, value, msg, msg_size);
    }
    return -1;
}

/* ---- suggestions ------------------------------------------------------------------ */

/* Keys that existed once: a configuration that sets one is refused with what replaced it. */
static const struct { const char *name, *why; } cfg__retired[] = {
    {"model.upt.beta", "replaced by model.upt.step, a different rule: UPT's preference now "
                       "moves by the model's surprise on every impression (docs/configuration.md)"},
    {"model.upt.beta.conv", "replaced by model.upt.step.conv (docs/configuration.md)"},
    {"model.slice.burnin", "it counted training steps; model.slice.burnin.impressions counts "
                           "impressions (steps x batch.size: the old default 4000 x 256 = "
                           "1024000; docs/configuration.md)"},
};

/* The known key closest to name, or NULL when none is plausibly meant: at most a third of
 * the name's characters (and at least 2) wrong. */
static const char *cfg__closest(const char *name) {
    const char *names[CFG__NKEYS];
    for (int i = 0; i < CFG__NKEYS; i++) names[i] = cfg__keys[i].name;
    int limit = (int)strlen(name) / 3;
    if (limit < 2) limit = 2;
    return props_closest(name, names, CFG__NKEYS, limit);
}

/* ---- public ----------------------------------------------------------------------- */

static void cfg__derive(m3_cfg *c) {
    c->model.n_scen = c->scenarios.n;
    c->model.n_cat = 2 + c->user_cat.n + c->item_cat.n + c->ctx_cat.n;
    c->model.n_num = c->user_num.n + c->item_num.n;
    c->model.max_batch = 2 * c->batch_size;
    c->model.item_cat_from = 2 + c->user_cat.n;
    c->model.item_cat_n = c->item_cat.n;
    c->model.item_num_from = c->user_num.n;
    c->model.item_num_n = c->item_num.n;
}

void cfg_defaults(m3_cfg *c) {
    char msg[256];
    memset(c, 0, sizeof *c);
    for (int i = 0; i < CFG__NKEYS; i++) (void)cfg__apply(c, &cfg__keys[i], cfg__keys[i].def,
                                                           msg, sizeof msg);
    cfg__derive(c);
}

/* Store a kafka passthrough property; a repeated key replaces the earlier value. */
static int cfg__kafka_set(m3_cfg *c, const char *key, const char *value) {
    char *v = strdup(value);
    if (!v) return -1;
    for (int i = 0; i < c->n_kafka; i++) {
        if (strcmp(c->kafka[i].key, key) == 0) {
            free(c->kafka[i].value);
            c->kafka[i].value = v;
            return 0;
        }
    }
    char *k = strdup(key);
    cfg_kafka_prop *grown = realloc(c->kafka, (size_t)(c->n_kafka + 1) * sizeof *grown);
    if (!k || !grown) {
        free(k);
        free(v);
        if (grown) c->kafka = grown;
        return -1;
    }
    c->kafka = grown;
    c->kafka[c->n_kafka].key = k;
    c->kafka[c->n_kafka].value = v;
    c->n_kafka++;
    return 0;
}

/* A kafka.<property> line: a librdkafka passthrough. */
static int cfg__set_kafka(m3_cfg *c, const char *key, const char *value, char *msg,
                          size_t msg_size) {
    const char *kk = key + strlen(KAFKA_PREFIX);
    if (!*kk) {
        err_set(msg, msg_size, "'%s' names no librdkafka property", key);
        return -1;
    }
    if (cfg__kafka_set(c, kk, value) != 0) {
        err_set(msg, msg_size, "out of memory");
        return -1;
    }
    return 0;
}

/* Known key i set from where: apply the value, then record where it came from. */
static int cfg__set_known(m3_cfg *c, int i, const char *value, const char *where, char *msg,
                          size_t msg_size) {
    char *w = strdup(where);
    if (!w) {
        err_set(msg, msg_size, "out of memory");
        return -1;
    }
    if (cfg__apply(c, &cfg__keys[i], value, msg, msg_size) != 0) {
        free(w);
        return -1;
    }
    free(c->origin[i].where);
    c->origin[i].where = w;
    c->origin[i].seq = ++c->n_set;
    return 0;
}

/* Why key is not one: retired (and by what), or unknown (and what was likely meant). */
static int cfg__set_unknown(const char *key, char *msg, size_t msg_size) {
    for (size_t i = 0; i < sizeof cfg__retired / sizeof cfg__retired[0]; i++)
        if (strcmp(key, cfg__retired[i].name) == 0) {
            err_set(msg, msg_size, "'%s' is no longer a key: %s", key, cfg__retired[i].why);
            return -1;
        }
    const char *hint = cfg__closest(key);
    if (hint)
        err_set(msg, msg_size, "unknown key '%s' (did you mean '%s'?)", key, hint);
    else
        err_set(msg, msg_size, "unknown key '%s'", key);
    return -1;
}

/* Set "key=value" without the origin prefix on errors (msg is just the message). */
static int cfg__set_line(m3_cfg *c, const char *line, const char *where, char *msg,
                         size_t msg_size) {
    char *text = strdup(line);
    if (!text) {
        err_set(msg, msg_size, "out of memory");
        return -1;
    }
    char *key, *value;
    int rc = -1;
    if (props_split(text, &key, &value) != 0) {
        err_set(msg, msg_size, "'%s' is not a key=value line", key);
    } else if (!*key) {
        err_set(msg, msg_size, "missing key before '='");
    } else if (strncmp(key, KAFKA_PREFIX, strlen(KAFKA_PREFIX)) == 0) {
        rc = cfg__set_kafka(c, key, value, msg, msg_size);
    } else {
        int i = 0;
        while (i < CFG__NKEYS && strcmp(key, cfg__keys[i].name) != 0) i++;
        rc = i < CFG__NKEYS ? cfg__set_known(c, i, value, where, msg, msg_size)
                            : cfg__set_unknown(key, msg, msg_size);
    }
    free(text);
    return rc;
}

int cfg_set(m3_cfg *c, const char *key_eq_value, const char *origin, int line,
            char *errstr, size_t errstr_size) {
    char msg[1024], where[1024];
    props_where(where, sizeof where, origin ? origin : "--set", line);
    if (cfg__set_line(c, key_eq_value, where, msg, sizeof msg) == 0) return 0;
    err_set(errstr, errstr_size, "%s: %s", where, msg);
    return -1;
}

static int cfg__load_line(void *c, const char *line, const char *origin, int lineno,
                          char *errstr, size_t errstr_size) {
    return cfg_set(c, line, origin, lineno, errstr, errstr_size);
}

int cfg_load(m3_cfg *c, const char *path, char *errstr, size_t errstr_size) {
    return props_load(path, cfg__load_line, c, errstr, errstr_size);
}

int cfg_load_mem(m3_cfg *c, const char *text, size_t len, const char *origin, char *errstr,
                 size_t errstr_size) {
    return props_load_mem(text, len, origin, cfg__load_line, c, errstr, errstr_size);
}

/* The origin of whichever of the given keys was set last (NULL if all are defaults). */
static const char *cfg__last_where(const m3_cfg *c, const char *const *names, int n) {
    const cfg_origin *best = NULL;
    for (int i = 0; i < CFG__NKEYS; i++)
        for (int j = 0; j < n; j++)
            if (strcmp(cfg__keys[i].name, names[j]) == 0 && c->origin[i].where &&
                (!best || c->origin[i].seq > best->seq))
                best = &c->origin[i];
    return best ? best->where : NULL;
}

/* http.listen into http_host (a numeric address; localhost is 127.0.0.1) and http_port;
 * "" leaves http_port -1 (off). Returns 0, or -1 when it is not host:port. */
static int cfg__http_listen(m3_cfg *c) {
    const char *s = c->http_listen, *colon = strrchr(s, ':');
    c->http_host[0] = '\0';
    c->http_port = -1;
    if (!s[0]) return 0;
    if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        strlen(colon + 1) > 5 || atoi(colon + 1) > 65535)
        return -1;
    size_t hl = (size_t)(colon - s);
    int v6 = hl >= 2 && s[0] == '[' && s[hl - 1] == ']';
    if (v6) s++, hl -= 2;
    if (hl == 0 || hl >= sizeof c->http_host) return -1;
    memcpy(c->http_host, s, hl);
    c->http_host[hl] = '\0';
    if (!v6 && strcmp(c->http_host, "localhost") == 0) snprintf(c->http_host, sizeof c->http_host, "127.0.0.1");
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(v6 ? AF_INET6 : AF_INET, c->http_host, addr) != 1) return -1;
    c->http_port = atoi(colon + 1);
    return 0;
}

static int cfg__check_fail(const m3_cfg *c, const char *const *names, int n, char *errstr,
                           size_t errstr_size, const char *msg) {
    const char *w = cfg__last_where(c, names, n);
    if (w) err_set(errstr, errstr_size, "%s: %s", w, msg);
    else err_set(errstr, errstr_size, "%s", msg);
    return -1;
}

/* Whether the key table's name occurs in msg as a whole name (a sentence's final '.' after
 * it does not join it to the next word). */
static int cfg__names_key(const char *msg, const char *name) {
    size_t len = strlen(name);
    for (const char *p = strstr(msg, name); p; p = strstr(p + 1, name)) {
        const char *e = p + len;
        int starts = p == msg || !cfg__name_char((unsigned char)p[-1]);
        int ends = !cfg__name_char((unsigned char)*e) ||
                   (*e == '.' && !cfg__name_char((unsigned char)e[1]));
        if (starts && ends) return 1;
    }
    return 0;
}

/* A failed engine check: msg names the keys involved; the error names where the last of
 * them was set. */
static int cfg__model_fail(const m3_cfg *c, const char *msg, char *errstr, size_t errstr_size) {
    const char *names[CFG__NKEYS];
    int n = 0;
    for (int i = 0; i < CFG__NKEYS; i++)
        if (cfg__names_key(msg, cfg__keys[i].name)) names[n++] = cfg__keys[i].name;
    return cfg__check_fail(c, names, n, errstr, errstr_size, msg);
}

/* The engine's checks of every model the learner will build (model.arch, then each of
 * model.shadow), and the bound on their UPT snapshots together: what m3_new() and the
 * learner would refuse at start-up, refused here with file:line. */
static int cfg__check_models(const m3_cfg *c, char *errstr, size_t errstr_size) {
    char msg[512], why[400];
    size_t snap = 0;
    for (int i = -1; i < c->n_shadow; i++) {
        m3_model_cfg mc = c->model;
        if (i >= 0) mc.arch = c->shadow[i];
        if (m3_check_cfg(&mc, why, sizeof why) != 0) {
            if (i >= 0) snprintf(msg, sizeof msg, "model.shadow %s: %s", m3_arch_name(mc.arch), why);
            else snprintf(msg, sizeof msg, "%s", why);
            return cfg__model_fail(c, msg, errstr, errstr_size);
        }
        snap += m3_cfg_snap_bytes(&mc);
    }
    if (snap > M3_SNAP_MAX) {
        snprintf(msg, sizeof msg, "the UPT snapshots of a pending row take %zu bytes, more "
                 "than %d (4 x model.emb.dim %d x %d scenarios for each m3rec model): a "
                 "smaller model.emb.dim, fewer scenarios or fewer m3rec models in model.shadow",
                 snap, M3_SNAP_MAX, c->model.emb_dim, c->scenarios.n);
        return cfg__model_fail(c, msg, errstr, errstr_size);
    }
    return 0;
}

/* Is value one of the '|'-separated names? */
static int cfg__one_of(const char *value, const char *names) {
    size_t n = strlen(value);
    for (const char *p = names; *p; p += strcspn(p, "|"), p += *p == '|') {
        if (strncmp(p, value, n) == 0 && (p[n] == '|' || p[n] == '\0') && n > 0) return 1;
    }
    return 0;
}

/* input.format, output.format, registry.subject.strategy name known values (the names
 * stream/format.c parses: config sits below stream, so it only checks them); registry
 * framing needs registry.url (input.format=auto without it refuses registry-framed
 * messages to the DLQ, saying so). */
static int cfg__check_formats(m3_cfg *c, char *errstr, size_t errstr_size) {
    static const char *const in[] = { "input.format" }, *const out[] = { "output.format" };
    static const char *const subj[] = { "registry.subject.strategy" };
    static const char *const url[] = { "registry.url", "input.format", "output.format" };
    if (!cfg__one_of(c->input_format, "single-object|registry|auto"))
        return cfg__check_fail(c, in, 1, errstr, errstr_size,
                               "input.format must be single-object, registry or auto");
    if (!cfg__one_of(c->output_format, "single-object|registry"))
        return cfg__check_fail(c, out, 1, errstr, errstr_size,
                               "output.format must be single-object or registry");
    if (!cfg__one_of(c->registry_subject, "topic|record|topic-record"))
        return cfg__check_fail(c, subj, 1, errstr, errstr_size,
                               "registry.subject.strategy must be topic, record or topic-record");
    if (c->registry_url[0] && strncmp(c->registry_url, "http://", 7) != 0 &&
        strncmp(c->registry_url, "https://", 8) != 0)
        return cfg__check_fail(c, url, 1, errstr, errstr_size,
                               "registry.url must start with http:// or https://");
    int uses = strcmp(c->input_format, "registry") == 0 || strcmp(c->output_format, "registry") == 0;
    if (!c->registry_url[0] && uses)
        return cfg__check_fail(c, url, 3, errstr, errstr_size,
                               "registry framing needs registry.url (the schema registry's "
                               "Confluent-compatible API)");
    return 0;
}

/* group.sync names a rule (engine/sync.h) and shares the primary model only: no shadows. */
static int cfg__check_group(m3_cfg *c, char *errstr, size_t errstr_size) {
    static const char *const rule[] = { "group.sync" }, *const sh[] = { "group.sync", "model.shadow" };
    c->group_sync_rule = sync_rule_parse(c->group_sync);
    if (c->group_sync_rule < 0)
        return cfg__check_fail(c, rule, 1, errstr, errstr_size,
                               "group.sync must be none, sum, scaled, avg, mixed or grad");
    static const char *const gs[] = { "group.sync", "group.sync.stale" }, *const gb[] = { "group.sync.bits" };
    if (c->group_sync_rule == SYNC_GRAD && c->group_sync_stale != 0)
        return cfg__check_fail(c, gs, 2, errstr, errstr_size,
                               "group.sync=grad takes synchronous rounds: group.sync.stale must "
                               "be 0");
    if (c->group_sync_bits != 16 && c->group_sync_bits != 32)
        return cfg__check_fail(c, gb, 1, errstr, errstr_size, "group.sync.bits must be 16 or 32");
    if (c->group_sync_rule != SYNC_NONE && c->n_shadow > 0)
        return cfg__check_fail(c, sh, 2, errstr, errstr_size,
                               "group.sync shares the primary model only: model.shadow must "
                               "be empty (compare architectures with m3rec-offline --group)");
    return 0;
}

int cfg_check(m3_cfg *c, char *errstr, size_t errstr_size) {
    char msg[512];
    static const char *const scen[] = { "scenarios" };
    static const char *const cat[] = { "features.user_cat", "features.item_cat",
                                       "features.ctx_cat" };
    static const char *const num[] = { "features.user_num", "features.item_num" };
    static const char *const arch[] = { "model.arch", "model.shadow" };
    static const char *const durable[] = { "store.dir", "model.shadow" };

    if (c->scenarios.n == 0)
        return cfg__check_fail(c, scen, 1, errstr, errstr_size,
                               "scenarios is empty: at least one scenario is needed");
    if (c->scenarios.n > M3_MAX_SCEN) {
        snprintf(msg, sizeof msg, "%d scenarios, at most %d are supported", c->scenarios.n,
                 M3_MAX_SCEN);
        return cfg__check_fail(c, scen, 1, errstr, errstr_size, msg);
    }
    int n_cat = 2 + c->user_cat.n + c->item_cat.n + c->ctx_cat.n;
    if (n_cat > M3_MAX_CAT) {
        snprintf(msg, sizeof msg,
                 "too many categorical slots: 2 ids + %d user_cat + %d item_cat + %d ctx_cat"
                 " = %d, at most %d",
                 c->user_cat.n, c->item_cat.n, c->ctx_cat.n, n_cat, M3_MAX_CAT);
        return cfg__check_fail(c, cat, 3, errstr, errstr_size, msg);
    }
    int n_num = c->user_num.n + c->item_num.n;
    if (n_num > M3_MAX_NUM) {
        snprintf(msg, sizeof msg,
                 "too many numeric slots: %d user_num + %d item_num = %d, at most %d",
                 c->user_num.n, c->item_num.n, n_num, M3_MAX_NUM);
        return cfg__check_fail(c, num, 2, errstr, errstr_size, msg);
    }
    for (int i = 0; i < c->n_shadow; i++) {
        if (c->shadow[i] == c->model.arch) {
            snprintf(msg, sizeof msg, "model.shadow lists %s, the primary model.arch",
                     m3_arch_name(c->model.arch));
            return cfg__check_fail(c, arch, 2, errstr, errstr_size, msg);
        }
    }
    if (c->store_dir[0] && c->n_shadow > 0)
        return cfg__check_fail(c, durable, 2, errstr, errstr_size,
                               "model.shadow must be empty with store.dir: only the primary "
                               "model's state is persisted (compare architectures with "
                               "m3rec-offline or a second worker without a store)");
    static const char *const behind[] = { "time.max.behind.ms", "join.window.ms",
                                          "join.lateness.ms" };
    if (c->time_max_behind_ms > 0 &&
        c->time_max_behind_ms < c->join_window_ms + c->join_lateness_ms) {
        snprintf(msg, sizeof msg, "time.max.behind.ms=%" PRId64 " is below join.window.ms + "
                 "join.lateness.ms = %" PRId64 ": a conversion that can still join would be "
                 "refused (raise it, or 0 = no check)", c->time_max_behind_ms,
                 c->join_window_ms + c->join_lateness_ms);
        return cfg__check_fail(c, behind, 3, errstr, errstr_size, msg);
    }
    if (cfg__http_listen(c) != 0) {
        static const char *const http[] = { "http.listen" };
        snprintf(msg, sizeof msg, "http.listen=%.200s is not host:port (an IPv4 literal, [IPv6] "
                 "or localhost, and a port 0..65535; empty = off)", c->http_listen);
        return cfg__check_fail(c, http, 1, errstr, errstr_size, msg);
    }
    static const char *const feedback[] = { "join.feedback" };
    if (!cfg__one_of(c->join_feedback, "window|fnw|defer|esdfm")) {
        snprintf(msg, sizeof msg, "join.feedback=%s: expected window, fnw, defer or esdfm",
                 c->join_feedback);
        return cfg__check_fail(c, feedback, 1, errstr, errstr_size, msg);
    }
    static const char *const elapsed[] = { "join.esdfm.elapsed.ms", "join.window.ms" };
    if (c->join_elapsed_ms > c->join_window_ms) {
        snprintf(msg, sizeof msg, "join.esdfm.elapsed.ms=%" PRId64 " is above join.window.ms=%"
                 PRId64 ": a click would settle before its fake negative", c->join_elapsed_ms,
                 c->join_window_ms);
        return cfg__check_fail(c, elapsed, 2, errstr, errstr_size, msg);
    }
    static const char *const chg[] = { "group.changelog", "store.dir" };
    if (c->group_changelog && !c->store_dir[0])
        return cfg__check_fail(c, chg, 2, errstr, errstr_size,
                               "group.changelog=true needs store.dir (the local store is the "
                               "working copy the changelog restores into)");
    if (cfg__check_formats(c, errstr, errstr_size) != 0) return -1;
    if (cfg__check_group(c, errstr, errstr_size) != 0) return -1;
    cfg__derive(c);
    return cfg__check_models(c, errstr, errstr_size);
}

const char *cfg_kafka_get(const m3_cfg *c, const char *key) {
    for (int i = 0; i < c->n_kafka; i++)
        if (strcmp(c->kafka[i].key, key) == 0) return c->kafka[i].value;
    return NULL;
}

int cfg_scenario_index(const m3_cfg *c, const char *name) {
    for (int i = 0; i < c->scenarios.n; i++)
        if (strcmp(c->scenarios.names[i], name) == 0) return i;
    return -1;
}

void cfg_free(m3_cfg *c) {
    if (!c) return;
    for (int i = 0; i < c->n_kafka; i++) {
        free(c->kafka[i].key);
        free(c->kafka[i].value);
    }
    free(c->kafka);
    for (int i = 0; i < CFG_KEYS_MAX; i++) free(c->origin[i].where);
    cfg_defaults(c);
}

/* ---- dump ------------------------------------------------------------------------- */

/* A %g form that reads back as the same float: 6 digits unless more are needed (fewer
 * would turn 10 into 1e+01; %g drops trailing zeros anyway). */
static void cfg__put_float(buf *b, float v) {
    char tmp[32];
    for (int p = 6; p <= 9; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, (double)v);
        if (strtof(tmp, NULL) == v) break;
    }
    buf_puts(b, tmp);
}

/* A URL with its user information (user:password@, basic authentication) as ***@. */
static void cfg__put_url(buf *b, const char *url) {
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    size_t end = strcspn(host, "/?#");
    const char *at = NULL;   /* the last '@' before the path ends the user information */
    for (size_t i = 0; i < end; i++)
        if (host[i] == '@') at = host + i;
    if (!at) {
        buf_puts(b, url);
        return;
    }
    buf_put(b, url, (size_t)(host - url));
    buf_puts(b, "***");
    buf_puts(b, at);
}

char *cfg_dump(const m3_cfg *c) {
    buf b = {0};
    for (int i = 0; i < CFG__NKEYS; i++) {
        const cfg__key *k = &cfg__keys[i];
        const void *p = cfg__cat(c, k->off);
        buf_printf(&b, "%s=", k->name);
        switch (k->type) {
        case CFG__INT: buf_printf(&b, "%d", *(const int *)p); break;
        case CFG__INT64: buf_printf(&b, "%" PRId64, *(const int64_t *)p); break;
        case CFG__UINT64: buf_printf(&b, "%" PRIu64, *(const uint64_t *)p); break;
        case CFG__FLOAT: cfg__put_float(&b, *(const float *)p); break;
        case CFG__BOOL: buf_printf(&b, "%s", *(const int *)p ? "true" : "false"); break;
        case CFG__STRING: buf_printf(&b, "%s", (const char *)p); break;
        case CFG__PATH:
            if (k->off == OFF(registry_url)) cfg__put_url(&b, p);
            else buf_printf(&b, "%s", (const char *)p);
            break;
        case CFG__ARCH: buf_printf(&b, "%s", m3_arch_name(*(const int *)p)); break;
        case CFG__NAMES: {
            const cfg_list *l = p;
            for (int j = 0; j < l->n; j++) buf_printf(&b, "%s%s", j ? "," : "", l->names[j]);
            break;
        }
        case CFG__INTS:
        case CFG__ARCHS: {
            const int *v = p;
            int n = *(const int *)cfg__cat(c, k->off_n);
            for (int j = 0; j < n; j++) {
                if (k->type == CFG__INTS) buf_printf(&b, "%s%d", j ? "," : "", v[j]);
                else buf_printf(&b, "%s%s", j ? "," : "", m3_arch_name(v[j]));
            }
            break;
        }
        }
        buf_printf(&b, "\n");
    }
    for (int i = 0; i < c->n_kafka; i++)
        buf_printf(&b, KAFKA_PREFIX "%s=%s\n", c->kafka[i].key,
                   props_kafka_shown(c->kafka[i].key) ? c->kafka[i].value : "***");
    return buf_take(&b);
}

char *cfg_help(void) {
    buf b = {0};
    for (int i = 0; i < CFG__NKEYS; i++) {
        const cfg__key *k = &cfg__keys[i];
        char range[128];
        switch (k->type) {
        case CFG__BOOL: snprintf(range, sizeof range, "true|false"); break;
        case CFG__STRING: snprintf(range, sizeof range, "name"); break;
        case CFG__PATH: snprintf(range, sizeof range, "path"); break;
        case CFG__NAMES: snprintf(range, sizeof range, "list of names"); break;
        case CFG__ARCH: cfg__arch_names(range, sizeof range); break;
        case CFG__ARCHS:
            cfg__arch_names(range, sizeof range);
            snprintf(range + strlen(range), sizeof range - strlen(range), ", list");
            break;
        case CFG__INTS: {
            char each[64];
            cfg__range(k, each, sizeof each);
            snprintf(range, sizeof range, "1..%d of %s", k->max_n, each);
            break;
        }
        default: cfg__range(k, range, sizeof range);
        }
        buf_printf(&b, "%-28s %s (%s; default %s)\n", k->name, k->doc, range,
                 *k->def ? k->def : "empty");
    }
    buf_printf(&b, "%-28s %s\n", "kafka.<property>", "passed to librdkafka without the prefix");
    return buf_take(&b);
}
