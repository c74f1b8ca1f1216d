/* group.c - one model across the group's workers through the model topic (group.h). */
#include "app/group.h"
#include "app/group_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/wire.h"
#include "engine/sync.h"

#define GRP__POLL_MS 5        /* without a new minibatch the topic is read at most this often */
#define GRP__WAIT_SLICE_MS 5  /* a wait reads the topic in slices this long */
#define GRP__READ_MAX 64      /* messages per read */
#define GRP__HIST 4096        /* own steps remembered for the staleness in minibatches */
#define GRP__LOG_ERRORS 20    /* transport errors logged in full; after them every 100th */
#define GRP__ROUND "m3rec.round"   /* header: the sender's round (decimal) */
#define GRP__IDLE "m3rec.idle"     /* header of a blob-less message: "do not wait for me" */
#define GRP__GONE "m3rec.gone"     /* header of a blob-less message (grad): "<id>:<round>",
                                      that member is given up here */
#define GRP__STATE_MAGIC 0x5347334dU   /* "M3GS": the group's state in a snapshot */
#define GRP__IDLE_MS 100   /* no minibatch this long while a peer is a round ahead: idle */
#define GRP__RETENTION_MS "3600000"   /* a blob is for the live group: an hour is plenty */
#define GRP__SNAP_SEGMENT_MS "600000"   /* compaction keeps about 10 min of snapshots */
#define GRP__LOAD_MS 15000
#define GRP__FETCH_WAIT_MS "10"    /* reading the snapshot at start */
#define GRP__REVOKE_FLUSH_MS 10000   /* a revocation's snapshot waits this long for delivery */

/* A peer: a sender id seen on the model topic. */
typedef struct {
    uint64_t id;          /* the key's sender id; UINT64_MAX: a key that is no id */
    int live;             /* waited for: a blob within group.sync.wait.ms */
    int logged;           /* a refusal of this sender was logged */
    uint64_t round;       /* the round of its newest blob applied (header GRP__ROUND) */
    int64_t last_ms;      /* monotonic: when its last blob arrived */
    uint64_t applied, refused;
    int gone_asked;       /* grad: this worker published its give-up (grp__expire) */
} grp__peer;

struct grp {
    m3_model *m;
    sync_state *ss;       /* NULL while alone */
    int rule, every, stale;
    int grad, bits;       /* the grad rule (group.sync=grad), its gradient's bits (16, 32) */
    uint64_t acc_round;   /* grad: the round the gradients taken since the last step are in */
    int acc_n;            /* grad: blobs in it */
    uint64_t stepped_round;   /* grad: the last round stepped */
    int64_t wait_ms;
    int64_t snap_ms;      /* group.snapshot.interval.ms */
    const char *topic;    /* points into tp */
    topics tp;
    kio_producer *prod;
    kio_reader *rd;
    char key[16];         /* own sender id, decimal */
    int64_t version;      /* at the last step */
    int64_t version_sent; /* at the last blob */
    int64_t last_poll_ms; /* monotonic */
    int64_t last_pub_ms;  /* monotonic: its last blob (or the start) */
    int idle_sent;        /* an idle message went out since its last blob */
    int alone;
    uint64_t round;       /* the group's round as this worker knows it: its last blob's,
                             or the newest a peer's blob carried (a Lamport clock: its
                             next blob is stamped round + 1) */
    uint64_t round_pub;   /* the round of its own last blob */
    uint64_t extracts;    /* by this sender id (its blobs' sequence numbers 0..extracts-1) */
    int64_t next_offset;  /* of the model topic after the last message read; -1: none yet */
    int64_t last_snap_ms; /* monotonic */
    uint32_t covered_writer;      /* the loaded snapshot's writer and the blobs of it in it */
    uint64_t covered_seq_end;
    uint64_t covered;     /* blobs skipped as already in the loaded snapshot */
    grp__snap_meta loaded, written;   /* the snapshot loaded at start, the last written */
    int snap_loaded;      /* 1 loaded, 0 none on the topic, -1 refused */
    const kio_prop *props;   /* the worker's (they outlive g): a reader at the assignment */
    int n_props;
    int assigned_once;    /* grp_assigned has run */
    uint64_t snapshots;   /* written */
    grp__peer *peers;
    int n_peers, cap_peers;
    int64_t hist_ms[GRP__HIST], hist_v[GRP__HIST];   /* ring: (real ms, version) per step */
    uint64_t hist_n;
    grp_stats st;
};

static const int64_t grp__le_ms[GRP_STALE_BUCKETS] = {1, 2, 5, 10, 20, 50, 100, 200, 500,
                                                      1000, 5000, -1};
static const int64_t grp__le_b[GRP_STALE_BUCKETS] = {0, 1, 2, 3, 4, 6, 8, 16, 32, 64, 128, -1};

int64_t grp_bucket_le(int b, int in_ms) {
    if (b < 0 || b >= GRP_STALE_BUCKETS) return -1;
    return in_ms ? grp__le_ms[b] : grp__le_b[b];
}

static int grp__bucket(const int64_t *le, int64_t x) {
    int b = 0;
    while (b < GRP_STALE_BUCKETS - 1 && x > le[b]) b++;
    return b;
}

/* A transport failure: counted, logged (the first ones, then every 100th). */
static void grp__error(grp *g, const char *what, const char *err) {
    g->st.errors++;
    if (g->st.errors <= GRP__LOG_ERRORS || g->st.errors % 100 == 0)
        fprintf(stderr, "m3rec-worker: group.sync: %s: %s (%llu transport errors so far)\n", what,
                err, (unsigned long long)g->st.errors);
}

int grp_create_topics(const kio_prop *props, int n_props, const topics *tp, int timeout_ms,
                      char *errstr, size_t n) {
    char max[24];
    snprintf(max, sizeof max, "%d", GRP_MAX_MESSAGE);
    const kio_prop cfg[] = {{"max.message.bytes", max}, {"cleanup.policy", "delete"},
                            {"retention.ms", GRP__RETENTION_MS}};
    const kio_prop snap[] = {{"max.message.bytes", max}, {"cleanup.policy", "compact"},
                             {"segment.ms", GRP__SNAP_SEGMENT_MS},
                             {"min.cleanable.dirty.ratio", "0.1"}};
    const char *t = tp->model, *st = tp->model_snapshot;
    if (kio_create_topics_cfg(props, n_props, &t, 1, 1, cfg, 3, timeout_ms, errstr, n) != 0)
        return -1;
    return kio_create_topics_cfg(props, n_props, &st, 1, 1, snap, 4, timeout_ms, errstr, n);
}

/* A sender id for this worker instance: random (the clock, the pid and an address mixed),
 * never 0. */
static uint32_t grp__sender_id(const void *salt) {
    uint64_t x = (uint64_t)clk_real_ms() * 1000003u ^ (uint64_t)getpid() << 32 ^
                 (uint64_t)(uintptr_t)salt ^ (uint64_t)(clk_mono_s() * 1e9);
    uint32_t id = (uint32_t)(hash_mix64(x) >> 32);
    return id ? id : 1;
}

/* props then more (which win), in a malloc'd list, less the transaction's properties: with
 * group.changelog the worker's own producer is transactional, and a second producer with
 * its transactional.id would fence it (or, never initialised, refuse every blob with
 * "Erroneous state"). *count gets the list's length; NULL with errstr when out of memory. */
static kio_prop *grp__props(const kio_prop *props, int n_props, const kio_prop *more, int n_more,
                            int *count, char *errstr, size_t n) {
    kio_prop *p = calloc((size_t)(n_props + n_more), sizeof *p);
    if (!p) {
        err_set(errstr, n, "out of memory");
        return NULL;
    }
    int k = 0;
    for (int i = 0; i < n_props; i++)
        if (!props[i].key || (strcmp(props[i].key, "transactional.id") != 0 &&
                              strcmp(props[i].key, "transaction.timeout.ms") != 0))
            p[k++] = props[i];
    memcpy(p + k, more, sizeof *p * (size_t)n_more);
    *count = k + n_more;
    return p;
}

/* The model producer: the worker's properties, then a large message bound, no linger (a
 * blob is sent at once: staleness). */
static kio_producer *grp__producer(const kio_prop *props, int n_props, char *errstr, size_t n) {
    static char max[24];
    snprintf(max, sizeof max, "%d", GRP_MAX_MESSAGE + 4096);
    const kio_prop more[] = {{"message.max.bytes", max}, {"linger.ms", "0"},
                             {"compression.type", "none"}};   /* float deltas do not shrink */
    int count = 0;
    kio_prop *p = grp__props(props, n_props, more, 3, &count, errstr, n);
    kio_producer *prod = p ? kio_producer_new(p, count, errstr, n) : NULL;
    free(p);
    return prod;
}

static void grp__receive(grp *g, int timeout_ms);
static void grp__adopt(grp *g);
static int grp__announce_gone(grp *g, uint64_t id, uint64_t round);

/* A new sync point under a new sender id: peers tell this run of blobs from an earlier
 * one (whose sequence numbers restart), and a snapshot's writer_seq_end stays exact. */
static int grp__new_sender(grp *g, char *errstr, size_t n) {
    sync_destroy(g->ss);
    /* its earlier self is no member any more: under the grad rule every member must give
     * it up at the same place of the topic, so it says so there (a message) */
    if (g->grad && g->extracts > 0)
        grp__announce_gone(g, g->st.sender, g->round_pub);
    g->st.sender = grp__sender_id(g);
    snprintf(g->key, sizeof g->key, "%" PRIu32, g->st.sender);
    g->extracts = 0;
    g->acc_n = 0;
    g->ss = sync_new(g->m, g->st.sender, errstr, n);
    if (g->ss && g->grad && (sync_set_grad(g->ss, 1, errstr, n) != 0 ||
                             sync_set_bf16(g->ss, g->bits == 16, errstr, n) != 0)) {
        sync_destroy(g->ss);
        g->ss = NULL;
    }
    return g->ss ? 0 : -1;
}

/* The newest snapshot of the group's model into the model, before the first sync point:
 * loaded (the model-topic reading starts at the offset it covers), none, or refused (the
 * reason logged: the worker starts from its own model). An unreadable topic is an error. */
static int grp__load(grp *g, char *errstr, size_t n) {
    char why[512];
    double t0 = clk_mono_s();
    free(g->loaded.state);   /* an earlier load's, not adopted */
    g->loaded.state = NULL;
    g->snap_loaded = grp__snap_load(g->rd, g->tp.model_snapshot, g->m, &g->loaded, GRP__LOAD_MS,
                                    why, sizeof why);
    if (g->snap_loaded == 1) {
        char from[48] = "its end (the snapshot covers no blob)";
        if (g->loaded.model_offset >= 0)
            snprintf(from, sizeof from, "offset %" PRId64, g->loaded.model_offset);
        g->covered_writer = g->loaded.writer;
        g->covered_seq_end = g->loaded.writer_seq_end;
        fprintf(stderr, "m3rec-worker: group.sync: loaded the group's model from %s in %.2f s "
                "(%zu bytes, %" PRIu64 " shared rows, written %.1f s ago by sender %" PRIu32
                "), reading %s from %s\n", g->tp.model_snapshot,
                clk_mono_s() - t0, g->loaded.bytes, g->loaded.rows,
                (double)(clk_real_ms() - g->loaded.written_ms) / 1000.0, g->loaded.writer,
                g->topic, from);
        if (g->loaded.version < 2)
            fprintf(stderr, "m3rec-worker: group.sync: the snapshot is of format %" PRIu32
                    ": it holds no Adam state (moments, step) and no round, so this worker's "
                    "dense steps start from fresh moments and differ from its peers'%s\n",
                    g->loaded.version, g->grad ? " (grad: until a snapshot of the current "
                    "format is loaded)" : "");
    } else if (g->snap_loaded == 0) {
        fprintf(stderr, "m3rec-worker: group.sync: no snapshot on %s: starting from this "
                "worker's own model\n", g->tp.model_snapshot);
    } else if (strstr(why, "snapshot:") == why) {   /* refused: the worker goes on */
        g->st.refused++;
        snprintf(g->st.last_refusal, sizeof g->st.last_refusal, "%.250s", why);
        fprintf(stderr, "m3rec-worker: group.sync: refused the snapshot on %s, never applied: "
                "%s; starting from this worker's own model\n", g->tp.model_snapshot, why);
    } else {
        err_set(errstr, n, "group.sync: cannot read %s: %s", g->tp.model_snapshot, why);
        return -1;
    }
    return 0;
}

/* The model topic's reader (read_uncommitted: a blob counts once written). A fetch at the
 * end waits at most GRP__FETCH_WAIT_MS for the next blob (a real broker answers as soon as
 * one is written; the embedded one only at this bound), and a failed fetch is retried
 * after as long: staleness is measured in milliseconds. */
static kio_reader *grp__reader(const kio_prop *props, int n_props, char *errstr, size_t n) {
    const kio_prop more[] = {{"fetch.wait.max.ms", GRP__FETCH_WAIT_MS},
                             {"fetch.error.backoff.ms", GRP__FETCH_WAIT_MS}};
    int count = 0;
    kio_prop *p = grp__props(props, n_props, more, 2, &count, errstr, n);
    kio_reader *r = p ? kio_reader_new(p, count, 0, errstr, n) : NULL;
    free(p);
    return r;
}

/* Let the model producer learn the model topic's partitions now: librdkafka looks a topic
 * up at its first message only with its periodic scan, so a worker's first blob would
 * reach its peers up to a second late (rounds go on without it meanwhile). Best effort. */
static void grp__warm(grp *g) {
    rd_kafka_t *rk = kio_producer_handle(g->prod);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, g->topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (t && rd_kafka_metadata(rk, 0, t, &md, GRP__LOAD_MS) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    if (t) rd_kafka_topic_destroy(t);
}

grp *grp_new(const m3_cfg *cfg, const kio_prop *props, int n_props, const topics *tp,
             m3_model *m, char *errstr, size_t n) {
    if (errstr && n) errstr[0] = '\0';
    if (cfg->group_sync_rule == SYNC_NONE) return NULL;
    grp *g = calloc(1, sizeof *g);
    if (!g) {
        err_set(errstr, n, "out of memory");
        return NULL;
    }
    g->m = m;
    g->props = props;
    g->n_props = n_props;
    g->rule = cfg->group_sync_rule;
    g->every = cfg->group_sync_every;
    g->stale = cfg->group_sync_stale;
    g->wait_ms = cfg->group_sync_wait_ms;
    g->grad = g->rule == SYNC_GRAD;
    g->bits = cfg->group_sync_bits;
    g->tp = *tp;
    g->topic = g->tp.model;
    g->snap_ms = cfg->group_snapshot_ms;
    g->next_offset = -1;
    g->last_snap_ms = g->last_pub_ms = clk_mono_ms();
    g->version = g->version_sent = 0;
    if (!(g->prod = grp__producer(props, n_props, errstr, n))) goto fail;
    grp__warm(g);
    if (!(g->rd = grp__reader(props, n_props, errstr, n))) goto fail;
    if (grp__load(g, errstr, n) != 0) goto fail;
    if (grp__new_sender(g, errstr, n) != 0) goto fail;
    grp__adopt(g);
    int64_t from = g->snap_loaded == 1 && g->loaded.model_offset >= 0 ? g->loaded.model_offset
                                                                       : KIO_FROM_END;
    if (kio_reader_add(g->rd, g->topic, 0, from, errstr, n) != 0) goto fail;
    /* the end's offset is resolved when the first fetch answers: wait for it, so that every
     * blob written after this returns is read */
    for (int64_t until = clk_mono_ms() + GRP__LOAD_MS;
         !kio_reader_at_end(g->rd, g->topic, 0) && clk_mono_ms() < until;)
        grp__receive(g, 50);
    fprintf(stderr, "m3rec-worker: group.sync=%s: sharing the model through %s as sender %s "
            "(a blob every %d minibatches, %s)\n", sync_rule_name(g->rule), g->topic, g->key,
            g->every, g->stale < 0 ? "never waiting for peers" : "waiting for peers");
    return g;
fail:
    grp_destroy(g);
    return NULL;
}

void grp_destroy(grp *g) {
    if (!g) return;
    if (g->rd) kio_reader_destroy(g->rd);
    kio_producer_destroy(g->prod);
    sync_destroy(g->ss);
    free(g->loaded.state);
    free(g->peers);
    free(g);
}

void grp_flush(grp *g, int timeout_ms) {
    char err[512];
    if (g && kio_producer_flush(g->prod, timeout_ms, err, sizeof err) != 0)
        grp__error(g, "flush", err);
}

/* ---- peers ---- */

static grp__peer *grp__peer_get(grp *g, uint64_t id) {
    for (int i = 0; i < g->n_peers; i++)
        if (g->peers[i].id == id) return &g->peers[i];
    if (g->n_peers == g->cap_peers) {
        int cap = g->cap_peers ? 2 * g->cap_peers : 16;
        grp__peer *p = realloc(g->peers, sizeof *p * (size_t)cap);
        if (!p) return NULL;
        g->peers = p;
        g->cap_peers = cap;
    }
    grp__peer *p = &g->peers[g->n_peers++];
    memset(p, 0, sizeof *p);
    p->id = id;
    return p;
}

static int grp__live_peers(const grp *g) {
    int k = 0;
    for (int i = 0; i < g->n_peers; i++) k += g->peers[i].live && g->peers[i].id != g->st.sender;
    return k;
}

/* ---- the group's state in a snapshot ----
 * "M3GS", the grad flag, the last round stepped, the round being gathered, the Lamport
 * round, the blobs in the round being gathered, the peer count; the round's bytes
 * (sync_round_save) as a u64 length and its bytes; per peer its id, round and liveness.
 * What a member decides from the model topic's order; a joiner that adopts it at the
 * snapshot's offset cuts the same rounds as the writer from there. */

/* The state now (malloc'd, *len its size), or NULL when out of memory. */
static unsigned char *grp__state_save(const grp *g, size_t *len) {
    uint64_t rl = g->ss ? sync_round_save(g->ss, NULL) : 0;
    size_t n = 8 + 24 + 8 + 8 + rl + (size_t)g->n_peers * 24;
    unsigned char *b = malloc(n);
    if (!b) return NULL;
    wire_w w = {b, 0};
    uint32_t head[2] = {GRP__STATE_MAGIC, (uint32_t)g->grad}, cnt[2] = {(uint32_t)g->acc_n,
                                                                        (uint32_t)g->n_peers};
    uint64_t rounds[3] = {g->stepped_round, g->acc_round, g->round};
    wire_put(&w, head, 8);
    wire_put(&w, rounds, 24);
    wire_put(&w, cnt, 8);
    wire_put(&w, &rl, 8);
    if (rl) w.off += sync_round_save(g->ss, b + w.off);
    for (int i = 0; i < g->n_peers; i++) {
        uint32_t live[2] = {(uint32_t)g->peers[i].live, 0};
        wire_put(&w, &g->peers[i].id, 8);
        wire_put(&w, &g->peers[i].round, 8);
        wire_put(&w, live, 8);
    }
    *len = w.off;
    return b;
}

/* Parse b (len bytes) into g under the grad rule: the rounds, the round's gradients, the
 * peers. Returns 0, or -1 with errstr (g unchanged). */
static int grp__state_load(grp *g, const unsigned char *b, size_t len, char *errstr, size_t n) {
    wire_r r = {b, len, 0, false};
    uint32_t head[2] = {0, 0}, cnt[2] = {0, 0};
    uint64_t rounds[3], rl = 0;
    wire_get(&r, head, 8);
    wire_get(&r, rounds, 24);
    wire_get(&r, cnt, 8);
    wire_get(&r, &rl, 8);
    if (r.short_ || head[0] != GRP__STATE_MAGIC || rl > wire_left(&r) ||
        (wire_left(&r) - rl) != (uint64_t)cnt[1] * 24)
        return err_set(errstr, n, "the group's state in the snapshot is malformed");
    if (!head[1]) return err_set(errstr, n, "its writer did not run the grad rule");
    grp__peer *peers = calloc(cnt[1] + 16u, sizeof *peers);
    if (!peers) return err_set(errstr, n, "out of memory");
    /* no round bytes: its writer was alone (no sync point), nothing being gathered */
    if ((rl || cnt[0]) && sync_round_load(g->ss, b + r.off, rl, errstr, n) != 0) {
        free(peers);
        return -1;
    }
    r.off += rl;
    for (uint32_t i = 0; i < cnt[1]; i++) {
        uint32_t live[2];
        wire_get(&r, &peers[i].id, 8);
        wire_get(&r, &peers[i].round, 8);
        wire_get(&r, live, 8);
        peers[i].live = live[0] != 0;
        peers[i].last_ms = clk_mono_ms();   /* silent from now on, for this worker's clock */
    }
    free(g->peers);
    g->peers = peers;
    g->n_peers = (int)cnt[1];
    g->cap_peers = (int)cnt[1] + 16;
    g->stepped_round = rounds[0];
    g->acc_round = rounds[1];
    if (rounds[2] > g->round) g->round = rounds[2];
    g->acc_n = (int)cnt[0];
    return 0;
}

/* After a snapshot was loaded and the sync point set: under the grad rule, take the
 * writer's state at the snapshot's offset, so that this worker cuts the same rounds as
 * its peers from there on. The loaded bytes are freed. */
static void grp__adopt(grp *g) {
    char err[256];
    unsigned char *b = g->loaded.state;
    size_t len = g->loaded.state_len;
    g->loaded.state = NULL;
    g->loaded.state_len = 0;
    if (g->grad && g->ss && g->snap_loaded == 1 && g->loaded.version >= 2 &&
        grp__state_load(g, b, len, err, sizeof err) != 0)
        grp__error(g, "taking the group's rounds from the snapshot (this worker's dense steps "
                   "may differ from its peers')", err);
    free(b);
}

/* A refused blob: counted, logged once per sender, never applied. */
static void grp__refuse(grp *g, grp__peer *p, const char *sender, const char *why) {
    g->st.refused++;
    snprintf(g->st.last_refusal, sizeof g->st.last_refusal, "sender %.32s: %.200s", sender, why);
    if (p) p->refused++;
    if (p && p->logged) return;
    if (p) p->logged = 1;
    fprintf(stderr, "m3rec-worker: group.sync: refused a blob from sender %s on %s, never "
            "applied (further refusals of this sender are counted, not logged): %s\n", sender,
            g->topic, why);
}

/* ---- staleness ---- */

/* This worker's training steps at real time t (ms): the last step recorded at or before t
 * (the oldest remembered when t is older). */
static int64_t grp__version_at(const grp *g, int64_t t) {
    uint64_t n = g->hist_n < GRP__HIST ? g->hist_n : GRP__HIST;
    for (uint64_t k = 1; k <= n; k++) {
        size_t i = (size_t)((g->hist_n - k) % GRP__HIST);
        if (g->hist_ms[i] <= t || k == n) return g->hist_v[i];
    }
    return g->version;
}

static void grp__staleness(grp *g, const rd_kafka_message_t *m) {
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    if (ts < 0) return;
    int64_t ms = clk_real_ms() - ts, b = g->version - grp__version_at(g, ts);
    if (ms < 0) ms = 0;   /* the sender's clock ahead of this one */
    if (b < 0) b = 0;
    g->st.stale_ms[grp__bucket(grp__le_ms, ms)]++;
    g->st.stale_batches[grp__bucket(grp__le_b, b)]++;
    g->st.stale_ms_sum += (double)ms;
    g->st.stale_batches_sum += (double)b;
    if ((double)ms > g->st.stale_ms_max) g->st.stale_ms_max = (double)ms;
    if ((double)b > g->st.stale_batches_max) g->st.stale_batches_max = (double)b;
}

/* ---- receiving ---- */

/* Header name's value on m into buf (cap bytes, '\0'-terminated): 1, or 0 when absent or
 * too long. */
static int grp__header(const rd_kafka_message_t *m, const char *name, char *buf, size_t cap) {
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t len = 0;
    if (rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, &len) ||
        len >= cap)
        return 0;
    if (len) memcpy(buf, v, len);
    buf[len] = '\0';
    return 1;
}

/* 1 when m carries the GRP__IDLE header. */
static int grp__idle_of(const rd_kafka_message_t *m) {
    char buf[8];
    return grp__header(m, GRP__IDLE, buf, sizeof buf);
}

/* The round m's sender stamped on it (header GRP__ROUND), 0 when absent. */
static uint64_t grp__round_of(const rd_kafka_message_t *m) {
    char buf[24];
    return grp__header(m, GRP__ROUND, buf, sizeof buf) ? strtoull(buf, NULL, 10) : 0;
}

/* A give-up (header GRP__GONE "<id>:<round>"): 1 with the member and its round then. */
static int grp__gone_of(const rd_kafka_message_t *m, uint64_t *id, uint64_t *round) {
    char buf[48], *end = NULL;
    if (!grp__header(m, GRP__GONE, buf, sizeof buf)) return 0;
    *id = strtoull(buf, &end, 10);
    if (!end || *end != ':') return 0;
    *round = strtoull(end + 1, &end, 10);
    return end && !*end;
}

/* ---- the grad rule's rounds ---- */

/* The gradients taken since the last step: one Adam step on their mean (sync_step). */
static void grp__close(grp *g) {
    if (g->ss && sync_step(g->ss)) g->st.grad_steps++;
    g->stepped_round = g->acc_round;
    g->acc_n = 0;
    /* a member owes its blob of the next round from now: its silence counts from here, not
     * from its last blob (which may be a whole wait for a silent member old) */
    int64_t now = clk_mono_ms();
    for (int i = 0; i < g->n_peers; i++)
        if (g->peers[i].live && g->peers[i].last_ms < now) g->peers[i].last_ms = now;
}

/* Before a gradient of round r is taken: a newer round than the one being gathered closes
 * it first; a late one (of a round stepped already) joins the one being gathered. The
 * model topic's order is every member's, so every member makes the same cuts. */
static void grp__round_open(grp *g, uint64_t r) {
    if (g->acc_n > 0 && r > g->acc_round) grp__close(g);
    if (g->acc_n == 0) g->acc_round = r > g->stepped_round ? r : g->stepped_round + 1;
}

/* The round being gathered is complete when every live member (this worker among them,
 * by its own blobs read back) has a blob of it or a later one in: step. */
static void grp__round_done(grp *g) {
    if (!g->grad || g->acc_n == 0) return;
    for (int i = 0; i < g->n_peers; i++)
        if (g->peers[i].live && g->peers[i].round < g->acc_round) return;
    grp__close(g);
}

/* The sender id in m's key into *id; 0 when the key is none. */
static int grp__key_id(const rd_kafka_message_t *m, char *sender, size_t cap, uint64_t *id) {
    size_t kl = m->key_len < cap - 1 ? m->key_len : cap - 1;
    memcpy(sender, m->key ? m->key : "", m->key ? kl : 0);
    sender[m->key ? kl : 0] = '\0';
    char *end = NULL;
    unsigned long long v = strtoull(sender, &end, 10);
    *id = v;
    return sender[0] >= '0' && sender[0] <= '9' && end && !*end && v <= UINT32_MAX &&
           m->key_len < cap;
}

/* A sound blob of this model from the sender its key names, not in the loaded snapshot:
 * 1; else 0 (refused or covered). */
static int grp__admit(grp *g, grp__peer *p, const rd_kafka_message_t *m, const char *sender,
                      uint64_t id) {
    char why[512];
    sync_info info;
    if (!m->payload || sync_check(g->m, m->payload, m->len, &info, why, sizeof why) != 0) {
        grp__refuse(g, p, sender, m->payload ? why : "empty message");
        return 0;
    }
    if (info.sender != (uint32_t)id) {
        snprintf(why, sizeof why, "the blob's sender id %" PRIu32 " is not its key's", info.sender);
        grp__refuse(g, p, sender, why);
        return 0;
    }
    if (info.sender == g->covered_writer && info.seq < g->covered_seq_end) {
        g->covered++;   /* its writer's, in the snapshot already */
        /* grad: its rows are (the writer applied them when it trained), its gradient is
         * not (the writer takes it when read back): taken as the writer takes its own */
        return g->grad ? 2 : 0;
    }
    return 1;
}

/* A give-up (grad) from the model topic: member id is no longer waited for, here, at the
 * same place on every member, unless a blob of it newer than round came before. */
static void grp__gone(grp *g, uint64_t id, uint64_t round) {
    for (int i = 0; i < g->n_peers; i++) {
        grp__peer *p = &g->peers[i];
        if (p->id != id || !p->live || p->round > round) continue;
        p->live = 0;
        g->st.gone++;
        fprintf(stderr, "m3rec-worker: group.sync: sender %" PRIu64 " given up by the group at "
                "round %" PRIu64 ": not waited for until its next blob\n", id, round);
    }
    grp__round_done(g);
}

/* One message of the model topic: skipped when it is this worker's own (under the grad
 * rule its own is taken like a peer's, at its place in the topic's order), refused when
 * it is not a sound blob of this model from the sender its key names, else applied. */
static void grp__take(grp *g, const rd_kafka_message_t *m) {
    char sender[32], why[512];
    uint64_t id;
    int id_ok = grp__key_id(m, sender, sizeof sender, &id);
    int own = id_ok && (uint32_t)id == g->st.sender;
    if (own) g->st.own++;
    if (own && !g->grad) return;
    uint64_t gid, ground;
    if (id_ok && !m->len && g->grad && grp__gone_of(m, &gid, &ground)) {
        grp__gone(g, gid, ground);
        return;
    }
    grp__peer *p = grp__peer_get(g, id_ok ? id : UINT64_MAX);
    if (!id_ok) {
        grp__refuse(g, p, sender[0] ? sender : "(no key)", "the key is not a sender id");
        return;
    }
    if (!m->len && grp__idle_of(m)) {   /* a peer without input: not waited for */
        if (!own) g->st.idle_received++;
        if (p && p->live) p->live = 0;
        if (p) p->last_ms = clk_mono_ms();
        grp__round_done(g);
        return;
    }
    int admit = grp__admit(g, p, m, sender, id);
    if (!admit) return;
    if (g->grad && !g->ss) return;   /* alone: no round to put a gradient in */
    uint64_t round = grp__round_of(m);
    if (g->grad) grp__round_open(g, round);
    sync_weight wp, wo;
    sync_rule_weights(g->rule, 1 + grp__live_peers(g) + (p && !p->live), &wp, &wo);
    if (!own) grp__staleness(g, m);
    if (sync_apply(g->m, g->ss, m->payload, m->len, own || admit == 2 ? wo : wp, why,
                   sizeof why) != 0) {
        grp__refuse(g, p, sender, why);
        return;
    }
    if (!own) {
        g->st.applied++;
        g->st.applied_bytes += m->len;
    }
    if (g->grad) g->acc_n++;
    if (p) {   /* NULL: out of memory for the peer table: applied, not waited for */
        p->applied++;
        p->live = 1;
        p->gone_asked = 0;
        p->round = round;
        if (p->round > g->round) g->round = p->round;   /* a Lamport clock: rounds align */
        p->last_ms = clk_mono_ms();
    }
    grp__round_done(g);
}

/* Read what the model topic holds for this worker, waiting at most timeout_ms for the
 * first message; apply it. */
static void grp__receive(grp *g, int timeout_ms) {
    char err[512];
    rd_kafka_message_t *msgs[GRP__READ_MAX];
    int k = kio_reader_poll(g->rd, msgs, GRP__READ_MAX, timeout_ms, err, sizeof err);
    g->last_poll_ms = clk_mono_ms();
    if (k < 0) {
        grp__error(g, "reading the model topic", err);
        /* e.g. its position fell out of retention: go on from the end */
        if (kio_reader_add(g->rd, g->topic, 0, KIO_FROM_END, err, sizeof err) != 0)
            grp__error(g, "reading the model topic again", err);
        return;
    }
    for (int i = 0; i < k; i++) {
            grp__take(g, msgs[i]);
        g->next_offset = msgs[i]->offset + 1;
        rd_kafka_message_destroy(msgs[i]);
    }
}

/* ---- publishing ---- */

/* Returns 0 when the blob went to the producer, else -1 (the failure counted). */
static int grp__publish(grp *g) {
    char err[512];
    unsigned char *blob = NULL;
    size_t len = sync_extract(g->ss, &blob, err, sizeof err);
    if (!len) {
        grp__error(g, "extracting the update", err);
        return -1;
    }
    int rc = 0;
    g->extracts++;
    char round[24];
    /* grad: the round being gathered (every member at this place of the topic gathers the
     * same), not the Lamport clock's next: a worker that saw a peer's round r before
     * publishing would otherwise stamp r + 1, and the rounds would leapfrog, one gradient
     * each */
    if (g->grad) {
        g->round_pub = g->acc_n > 0 ? g->acc_round : g->stepped_round + 1;
        if (g->round_pub > g->round) g->round = g->round_pub;
    } else {
        g->round_pub = ++g->round;
    }
    g->last_pub_ms = clk_mono_ms();
    g->idle_sent = 0;
    snprintf(round, sizeof round, "%" PRIu64, g->round_pub);
    const char *hdrs[] = {GRP__ROUND, round};
    if (kio_produce(g->prod, g->topic, g->key, strlen(g->key), blob, len, hdrs, 1, err,
                    sizeof err) != 0) {
        grp__error(g, "publishing the update", err);
        rc = -1;
    } else {
        g->st.rounds++;
        g->st.sent_bytes += len;
    }
    /* avg: its own delta weighs 1/N - 1 (engine/sync.h); sum and mixed rows: 0; grad: its
     * gradient is taken when read back, at its place in the topic's order (grp__take) */
    sync_weight wp, wo;
    sync_rule_weights(g->rule, 1 + grp__live_peers(g), &wp, &wo);
    if (!g->grad && (wo.dense != 0.0f || wo.rows != 0.0f) &&
        sync_apply(g->m, g->ss, blob, len, wo, err, sizeof err) != 0)
        grp__error(g, "applying the own weight", err);
    free(blob);
    kio_producer_poll(g->prod);
    return rc;
}

/* ---- bounded staleness ---- */

/* Under the grad rule, publish that member id (its last round) is given up: every member
 * applies it where it sits in the topic (grp__gone), so all cut the same rounds. Returns 0,
 * or -1 (counted and logged). */
static int grp__announce_gone(grp *g, uint64_t id, uint64_t round) {
    char err[512], who[48], rnd[24];
    snprintf(who, sizeof who, "%" PRIu64 ":%" PRIu64, id, round);
    snprintf(rnd, sizeof rnd, "%" PRIu64, g->round);
    const char *hdrs[] = {GRP__ROUND, rnd, GRP__GONE, who};
    if (kio_produce(g->prod, g->topic, g->key, strlen(g->key), "", 0, hdrs, 2, err, sizeof err) != 0) {
        grp__error(g, "publishing a give-up", err);
        return -1;
    }
    kio_producer_poll(g->prod);
    return 0;
}

/* A peer silent for group.sync.wait.ms stops being live (logged); under the grad rule
 * this worker asks the group to give it up instead (grp__announce_gone), once. */
static void grp__expire(grp *g, int64_t now) {
    for (int i = 0; i < g->n_peers; i++) {
        grp__peer *p = &g->peers[i];
        if (!p->live || p->id == g->st.sender || now - p->last_ms < g->wait_ms) continue;
        if (g->grad) {
            if (!p->gone_asked && grp__announce_gone(g, p->id, p->round) == 0) {
                p->gone_asked = 1;
                fprintf(stderr, "m3rec-worker: group.sync: sender %" PRIu64 " silent for %lld "
                        "ms: asking the group to give it up\n", p->id, (long long)(now - p->last_ms));
            }
            continue;
        }
        p->live = 0;
        g->st.gone++;
        fprintf(stderr, "m3rec-worker: group.sync: sender %" PRIu64 " silent for %lld ms: "
                "not waited for until its next blob\n", p->id, (long long)(now - p->last_ms));
    }
}

static grp__peer *grp__laggard(grp *g, int64_t now) {
    grp__expire(g, now);
    for (int i = 0; i < g->n_peers; i++) {
        grp__peer *p = &g->peers[i];
        if (!p->live) continue;
        /* after its blob of round r, this worker waits for the peer's of round r - S (by
         * its own blob's round, not the clock a peer raised: the wait chains then go down
         * in round, so no two workers wait for each other) */
        if (p->round + (uint64_t)g->stale < g->round_pub) return p;
    }
    return NULL;
}

/* The grad rule: after its blob of round r a worker waits until round r is stepped: its
 * own blob read back and every live peer's of round r in (grp__round_done), a peer silent
 * for group.sync.wait.ms given up. Bounded: after twice that (its own blob lost) it steps
 * on what it has. 1 while it must wait. */
static int grp__grad_blocked(grp *g, int64_t now, int64_t start) {
    grp__expire(g, now);
    grp__round_done(g);
    if (g->stepped_round >= g->round_pub) return 0;
    if (now - start <= 2 * g->wait_ms) return 1;
    grp__error(g, "a grad round", "its own blob did not come back: stepping on what is in");
    if (g->acc_n > 0) grp__close(g);
    g->stepped_round = g->round_pub;
    return 0;
}

/* Wait, reading the model topic, while a live peer lags (or, under the grad rule, while
 * the worker's round is not stepped). */
static void grp__wait(grp *g) {
    int64_t start = clk_mono_ms(), now = start;
    int waited = 0;
    while (g->grad ? grp__grad_blocked(g, now, start) : grp__laggard(g, now) != NULL) {
        waited = 1;
        grp__receive(g, GRP__WAIT_SLICE_MS);
        kio_producer_poll(g->prod);
        now = clk_mono_ms();
    }
    if (!waited) return;
    g->st.waits++;
    g->st.wait_s += (double)(now - start) / 1000.0;
}

/* ---- the step ---- */

/* Alone (every input partition here) or not: drop or set the sync point. */
static void grp__set_alone(grp *g, int alone) {
    char err[512];
    if (alone == g->alone) return;
    g->alone = alone;
    if (alone) {
        sync_destroy(g->ss);
        g->ss = NULL;
        g->acc_n = 0;   /* grad: its model steps by itself while alone */
        fprintf(stderr, "m3rec-worker: group.sync: assigned every input partition: no blobs "
                "while alone\n");
        return;
    }
    if (grp__new_sender(g, err, sizeof err) != 0) {
        grp__error(g, "setting a sync point", err);
        g->alone = 1;   /* tried again at the next step */
    }
}

/* Write a snapshot of the model and the group's state now (at a boundary). */
static void grp__snapshot(grp *g) {
    char err[512];
    grp__snap_meta meta = {0};
    meta.model_offset = g->next_offset;
    meta.writer = g->st.sender;
    meta.writer_seq_end = g->extracts;
    g->last_snap_ms = clk_mono_ms();
    size_t sl = 0;
    unsigned char *state = grp__state_save(g, &sl);
    int rc = state ? grp__snap_write(g->prod, g->tp.model_snapshot, g->m, &meta, state, sl, err,
                                     sizeof err)
                   : err_set(err, sizeof err, "out of memory");
    free(state);
    if (rc != 0) {
        grp__error(g, "writing a snapshot", err);
        return;
    }
    g->written = meta;
    g->snapshots++;
}

void grp_revoked(grp *g, int was_alone, int owner) {
    if (!g || !(was_alone || owner) || g->snap_ms <= 0) return;
    double t0 = clk_thread_cpu_s();
    grp__snapshot(g);
    grp_flush(g, GRP__REVOKE_FLUSH_MS);
    g->st.cpu_s += clk_thread_cpu_s() - t0;
}

void grp_assigned(grp *g) {
    if (!g || g->assigned_once) return;
    g->assigned_once = 1;
    char err[512];
    /* a reader of its own: the snapshot topic was drained by g->rd at start already */
    kio_reader *rd = grp__reader(g->props, g->n_props, err, sizeof err), *keep = g->rd;
    if (!rd) {
        grp__error(g, "reading the snapshot at the first assignment", err);
        return;
    }
    g->rd = rd;
    int rc = grp__load(g, err, sizeof err);
    g->rd = keep;
    if (rc != 0 || g->snap_loaded != 1) {
        if (rc != 0) grp__error(g, "reading the snapshot at the first assignment", err);
        kio_reader_destroy(rd);
        return;
    }
    /* the model topic from the offset the snapshot covers, with the new reader: what the
     * old one read past it is read again, at its place in the order, as the writer did */
    if (g->loaded.model_offset >= 0) {
        if (kio_reader_add(rd, g->topic, 0, g->loaded.model_offset, err, sizeof err) == 0) {
            kio_reader_destroy(keep);
            g->rd = rd;
            rd = NULL;
            g->next_offset = g->loaded.model_offset;
        } else {
            grp__error(g, "reading the model topic from the snapshot's offset", err);
        }
    }
    if (rd) kio_reader_destroy(rd);
    if (grp__new_sender(g, err, sizeof err) != 0)
        grp__error(g, "a sync point after the snapshot", err);
    else
        grp__adopt(g);
}

/* No minibatch for GRP__IDLE_MS while a live peer is a round ahead (it may be waiting for
 * this worker): say so once, with a blob-less message, so that peers go on without it
 * until its next blob instead of waiting group.sync.wait.ms. */
static void grp__idle(grp *g, int64_t now) {
    char err[512];
    if (g->alone || g->idle_sent || now - g->last_pub_ms < GRP__IDLE_MS) return;
    int ahead = 0;
    for (int i = 0; i < g->n_peers; i++) ahead |= g->peers[i].live && g->peers[i].round > g->round_pub;
    if (!ahead) return;
    char round[24];
    snprintf(round, sizeof round, "%" PRIu64, g->round);
    const char *hdrs[] = {GRP__ROUND, round, GRP__IDLE, "1"};
    if (kio_produce(g->prod, g->topic, g->key, strlen(g->key), "", 0, hdrs, 2, err, sizeof err) != 0) {
        grp__error(g, "publishing an idle message", err);
        return;
    }
    g->idle_sent = 1;
    g->st.idle_sent++;
    kio_producer_poll(g->prod);
}

void grp_step(grp *g, int64_t version, int alone, int owner) {
    if (!g) return;
    int64_t now = clk_mono_ms();
    int stepped = version != g->version;
    if (!stepped && alone == g->alone && now - g->last_poll_ms < GRP__POLL_MS) return;
    double t0 = clk_thread_cpu_s();
    if (stepped) {
        size_t i = (size_t)(g->hist_n++ % GRP__HIST);
        g->hist_ms[i] = clk_real_ms();
        g->hist_v[i] = version;
        g->version = version;
    }
    grp__set_alone(g, alone);
    int publish = stepped && !g->alone && g->ss && version - g->version_sent >= g->every;
    int sent = 0;
    if (publish) {
        sent = grp__publish(g) == 0;
        g->version_sent = version;
    } else if (g->alone) {
        g->version_sent = version;   /* nothing owed to peers from the time alone */
    }
    grp__receive(g, 0);
    if (g->grad ? sent : publish && g->stale >= 0) grp__wait(g);
    if (!stepped) grp__idle(g, now);
    if (owner && g->snap_ms > 0 && clk_mono_ms() - g->last_snap_ms >= g->snap_ms) grp__snapshot(g);
    g->st.cpu_s += clk_thread_cpu_s() - t0;
}

void grp_stats_get(const grp *g, grp_stats *st) {
    *st = g->st;
    st->peers_live = grp__live_peers(g);
    st->snapshot_loaded = g->snap_loaded;
    st->snapshot_format = g->snap_loaded == 1 ? g->loaded.version : 0;
    st->snapshots = g->snapshots;
    st->covered = g->covered;
}

static void grp__hist_json(json_writer *w, const char *key, const uint64_t *h, int in_ms) {
    json_key(w, key);
    json_arr_begin_flat(w);
    for (int b = 0; b < GRP_STALE_BUCKETS; b++) {
        json_obj_begin(w);
        json_key(w, "le");
        if (grp_bucket_le(b, in_ms) < 0) json_null(w);
        else json_int(w, grp_bucket_le(b, in_ms));
        json_key(w, "n");
        json_uint(w, h[b]);
        json_obj_end(w);
    }
    json_arr_end(w);
}

void grp_write_json(const grp *g, json_writer *w) {
    if (!g) return;
    grp_stats s;
    grp_stats_get(g, &s);
    double na = s.applied ? (double)s.applied : 1.0;
    int loaded = g->snap_loaded == 1;
    json_key(w, "group");
    json_obj_begin(w);
    json_key(w, "rule");
    json_str(w, sync_rule_name(g->rule));
    const struct { const char *key; double v; } num[] = {
        {"every_batches", g->every}, {"stale_rounds", g->stale}, {"sender", s.sender},
        {"rounds", (double)s.rounds}, {"sent_bytes", (double)s.sent_bytes},
        {"applied", (double)s.applied}, {"applied_bytes", (double)s.applied_bytes},
        {"refused", (double)s.refused}, {"own_skipped", (double)s.own},
        {"errors", (double)s.errors}, {"peers_seen", g->n_peers}, {"waits", (double)s.waits},
        {"wait_s", s.wait_s}, {"peers_gone", (double)s.gone},
        {"idle_sent", (double)s.idle_sent}, {"idle_received", (double)s.idle_received},
        {"sync_cpu_s", s.cpu_s}, {"grad_steps", (double)s.grad_steps},
        {"grad_round", (double)g->stepped_round}, {"covered_skipped", (double)g->covered},
        {"snapshot_loaded_rows", loaded ? (double)g->loaded.rows : 0},
        {"snapshot_loaded_offset", loaded ? (double)g->loaded.model_offset : -1},
        {"snapshot_loaded_format", loaded ? (double)g->loaded.version : 0},
        {"snapshots_written", (double)g->snapshots}, {"snapshot_bytes", (double)g->written.bytes},
        {"staleness_ms_mean", s.stale_ms_sum / na}, {"staleness_ms_max", s.stale_ms_max},
        {"staleness_batches_mean", s.stale_batches_sum / na},
        {"staleness_batches_max", s.stale_batches_max}};
    for (size_t i = 0; i < sizeof num / sizeof num[0]; i++) {
        json_key(w, num[i].key);
        json_num(w, num[i].v);
    }
    json_key(w, "last_refusal");
    json_str(w, s.last_refusal);
    /* the dense parameters' checksum: under the grad rule the same on every member */
    char sum[24];
    snprintf(sum, sizeof sum, "%016" PRIx64,
             hash_words64(m3_params(g->m), m3_n_params(g->m) * sizeof(float)));
    json_key(w, "dense_checksum");
    json_str(w, sum);
    json_key(w, "snapshot_loaded");
    json_str(w, loaded ? "loaded" : g->snap_loaded == 0 ? "none" : "refused");
    grp__hist_json(w, "staleness_ms", s.stale_ms, 1);
    grp__hist_json(w, "staleness_batches", s.stale_batches, 0);
    json_obj_end(w);
}
