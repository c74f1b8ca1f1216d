/* group.h - one model across a consumer group's workers, through Kafka (issue 16, item 2):
 * the transport of engine/sync.h's update blobs over the model topic, and how stale what
 * a worker applies is.
 *
 * With group.sync set (not none) every worker publishes, at a minibatch boundary once it
 * has trained group.sync.every minibatches, its update since the last blob (sync_extract)
 * to <topic.prefix>.model (one partition; key = the sender id in decimal, value = the
 * blob) with a producer of its own (idempotent, not transactional: a blob never waits for
 * a checkpoint), and applies every peer's blob that has arrived (sync_apply, the rule's
 * weight) before its next minibatch. The model topic is read from its end at start with
 * the shared reader (kio_reader, read_uncommitted: a blob is visible as soon as it is
 * written). Sender ids are random per worker instance, so a restarted worker is a new
 * sender; its own blobs are skipped by that id.
 *
 * A blob that is corrupt, from another configuration or another format (sync_check), or
 * whose key is not the sender id in it, is refused: counted, logged once per sender with
 * the reason, never applied.
 *
 * Bounded staleness (group.sync.stale = S >= 0, stale-synchronous): every blob carries its
 * round in the header m3rec.round, a Lamport clock (one more than the newest round its
 * sender had published or applied), so the rounds of the group's workers align, a joining
 * worker's too. After publishing its blob of round r, a worker does not start its next
 * minibatch until it has applied each live peer's blob of round r - S or later; it waits,
 * reading the model topic. With S = 0 these are the synchronous rounds of m3rec-offline
 * --group at --sync.delay 0: minibatch r + 1 sees every live peer's update r; the faster
 * worker waits for the slower one. The wait is by the round of the worker's own last blob
 * (not by a round a peer's blob raised its clock to), so a chain of waits goes down in
 * round and no two workers wait for each other. A peer is live from its first blob until
 * it has been silent for group.sync.wait.ms (dead, or its partitions gone), or until it
 * says it is idle: a worker that has trained no minibatch for 100 ms while a live peer is
 * a round ahead publishes one blob-less message (headers m3rec.round, m3rec.idle), and
 * its peers go on without it until its next blob. S = -1 never waits (asynchronous).
 *
 * The grad rule (group.sync=grad, group.sync.stale=0): a blob's dense part is the sum of
 * the sender's minibatch gradients (sync_set_grad; group.sync.bits=16: in bfloat16), and
 * the model's dense part moves only in sync_step. Every blob, the worker's own included
 * (read back, not applied at publishing), goes into the round in the model topic's order;
 * the round is stepped at the first message after which every live member (the worker
 * itself by the same rule) has a blob of it or a later round in, or at a blob of a newer
 * round; a late blob joins the round being gathered. Every member reads the same order and
 * liveness changes only at messages, so all cut the same rounds and stay bit-identical: a
 * peer silent group.sync.wait.ms since the last round ended is given up by a blob-less
 * message (header m3rec.gone "<id>:<round>") that the worker waiting for it publishes and
 * every member applies where it sits (a worker that changes its sender id gives its
 * earlier self up the same way); a joiner adopts the snapshot's Adam state and group
 * state (below). They may drift only when a worker's own blob does not come back within
 * 2 x group.sync.wait.ms (it steps on what it has, logged) or a model is rolled back.
 * After its blob a worker waits until its round is stepped.
 *
 * Snapshot (group.snapshot.interval.ms): the owner of input partition 0 writes the whole
 * shared model - the dense parameters with Adam's moments and step, every shared row in
 * memory, and the group's state at the offset it covers (the grad rule's round being
 * gathered, the last round stepped, each member's liveness and round) - to the compacted
 * <topic.prefix>.model.snapshot in shards under the size limit, with the model-topic offset
 * it covers (every blob below it is in it) and how many of its own blobs are in it; so does
 * a worker alone when its partitions are revoked. grp_new loads the newest complete one
 * (refusals as for blobs; format 1, without Adam's state, still loads, logged) before the
 * first sync point and reads the model topic from that offset, skipping its writer's blobs
 * already in it (under the grad rule their gradients, not in it, are taken as the writer
 * takes its own). The snapshot replaces the shared part
 * of a model restored from a local store too: with peers, the group's model is newer than
 * any one worker's checkpoint; what is per partition (user rows, UPT states, pending
 * conversions, offsets) stays the store's.
 *
 * Alone: a worker assigned every input partition has no peer to feed: it publishes
 * nothing and keeps no sync point (sync_destroy: no journal of touched rows); the sync
 * point is set again (sync_new) when it shares the input again.
 *
 * Staleness is measured per applied blob: in milliseconds, from the blob's Kafka
 * timestamp (the sender's clock at its extract) to the apply; in minibatches, this
 * worker's training steps between those two moments (its own step history by wall time).
 *
 * One thread: everything here runs on the worker's main loop. */
#ifndef M3_GROUP_H
#define M3_GROUP_H
#include <stddef.h>
#include <stdint.h>
#include "base/json.h"
#include "config/cfg.h"
#include "engine/model.h"
#include "stream/kio.h"
#include "stream/topics.h"

/* The model topic's largest message (its max.message.bytes and the producer's
 * message.max.bytes): a blob of the default model is about 1.3 MB. */
#define GRP_MAX_MESSAGE (16 << 20)

#define GRP_STALE_BUCKETS 12   /* staleness histograms: bucket upper bounds grp_bucket_le */

typedef struct {
    uint32_t sender;               /* this worker's sender id */
    uint64_t rounds;               /* blobs published */
    uint64_t sent_bytes;
    uint64_t applied, applied_bytes;   /* peers' blobs applied */
    uint64_t refused;              /* blobs refused (sync_check, key) */
    uint64_t own;                  /* own blobs read back and skipped */
    uint64_t errors;               /* extract, produce or read failures (logged) */
    uint64_t waits;                /* boundaries that waited for a peer */
    uint64_t gone;                 /* times a silent peer stopped being waited for */
    uint64_t idle_sent, idle_received;   /* blob-less "idle" messages (no input here) */
    uint64_t grad_steps;           /* grad: Adam steps on a round's mean gradient */
    double wait_s;                 /* time spent waiting */
    double cpu_s;                  /* this thread's CPU in extract, produce, read, apply */
    int peers_live;                /* peers live now */
    uint64_t stale_ms[GRP_STALE_BUCKETS];      /* applied blobs by staleness in ms */
    uint64_t stale_batches[GRP_STALE_BUCKETS]; /* and in this worker's minibatches */
    double stale_ms_sum, stale_batches_sum, stale_ms_max, stale_batches_max;
    int snapshot_loaded;           /* at start: 1 loaded, 0 none on the topic, -1 refused */
    uint32_t snapshot_format;      /* the loaded one's: 2, or 1 (no Adam state); 0: none */
    uint64_t snapshots;            /* snapshots written */
    uint64_t covered;              /* blobs skipped as in the loaded snapshot already */
    char last_refusal[256];        /* the last refusal's reason, "" if none */
} grp_stats;

typedef struct grp grp;

/* Create <prefix>.model on a real broker (one partition, max.message.bytes =
 * GRP_MAX_MESSAGE, deletion after an hour); one that exists is kept. Returns 0, or -1
 * with errstr. The embedded broker takes kio_mock_create_topic instead. */
int grp_create_topics(const kio_prop *props, int n_props, const topics *tp, int timeout_ms,
                      char *errstr, size_t errstr_size);

/* The group transport for model m (the worker's primary model) as cfg's group.sync.*
 * say, over props (the worker's librdkafka properties). The model topic must exist.
 * Returns NULL with errstr "" when group.sync is none, NULL with errstr set on an error
 * (a client or the reader could not start, out of memory). */
grp *grp_new(const m3_cfg *cfg, const kio_prop *props, int n_props, const topics *tp,
             m3_model *m, char *errstr, size_t errstr_size);

/* At a minibatch boundary (lrn_at_boundary), version being the model's training steps
 * (lrn_model_version), alone 1 when the worker is assigned every input partition, owner 1
 * when it is assigned input partition 0 (it writes the snapshots): publishes a blob when
 * due, applies what peers sent, waits as group.sync.stale says, and writes a snapshot
 * every group.snapshot.interval.ms.
 * Cheap when nothing was trained since the last call (the topic is read at most every
 * few milliseconds then). Failures are counted and logged, not returned: a missed blob
 * costs the group some of one worker's update, never correctness of this worker's
 * state. NULL is a no-op. */
void grp_step(grp *g, int64_t version, int alone, int owner);

/* The worker's partitions are being revoked, at a minibatch boundary: a worker that was
 * alone (was_alone) or owned input partition 0 (owner) writes a snapshot and waits for its
 * delivery (at most 10 s), so that the next owners, and a worker joining, start from the
 * group's model. NULL is a no-op. */
void grp_revoked(grp *g, int was_alone, int owner);
/* The worker's first assignment (in the rebalance callback): a worker joining a running
 * group - new, or restarted after a crash - loads the snapshot the owner of partition 0
 * wrote at the revocation just before (grp_revoked), so that it trains on the group's
 * model, not on the one it started with; it reads the model topic from the snapshot's
 * offset with a new reader, and its sync point restarts under a new sender id. What it
 * applied of its peers' blobs between its start and this moment is replaced. Later
 * assignments, and NULL: no-op. */
void grp_assigned(grp *g);

/* Deliver what is queued, waiting at most timeout_ms (at shutdown). NULL is a no-op. */
void grp_flush(grp *g, int timeout_ms);

/* The counters and the staleness histograms. */
void grp_stats_get(const grp *g, grp_stats *st);
/* Bucket b's upper bound (inclusive) of the staleness histograms: ms for the ms
 * histogram, minibatches for the other; the last bucket has none (-1). */
int64_t grp_bucket_le(int b, int in_ms);

/* The report's "group" object (key and value). NULL writes nothing. */
void grp_write_json(const grp *g, json_writer *w);

/* NULL is a no-op. Does not flush (grp_flush first). */
void grp_destroy(grp *g);

#endif
