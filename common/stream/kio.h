/* kio.h - Kafka I/O: embedded mock broker, topic admin/checks, consumer, producer.
 *
 * A thin layer over librdkafka that fixes the settings m3rec's guarantees depend on:
 *  - consumers use the eager `range` assignor, so topics with equal partition counts are
 *    co-partitioned (partition p of every topic goes to the same group member);
 *  - producers are idempotent and use `murmur2_random`, the Java clients' default
 *    partitioner. Keys are the decimal string of user_id (e.g. "42", no padding, no NUL),
 *    so producers in any language that use Kafka's default partitioner match.
 * Library code: nothing here exits; failures return a status and fill errstr.
 * Threads: a kio_consumer / kio_producer is used from one thread; its callbacks (rebalance,
 * delivery reports, errors) run inside kio_consumer_poll / kio_producer_poll / _flush on
 * that thread, so the counters need no locks. Different objects may live on different
 * threads.
 * Properties are plain key/value pairs (no dependency on cfg.h). */
#ifndef M3_KIO_H
#define M3_KIO_H
#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

typedef struct { const char *key; const char *value; } kio_prop; /* librdkafka property */

typedef struct kio_mock kio_mock;
typedef struct kio_consumer kio_consumer;
typedef struct kio_producer kio_producer;

/* ---- embedded broker (librdkafka's mock cluster) ---- */

/* Start a 1-broker mock cluster on 127.0.0.1 (ephemeral port), hosted by an internal
 * rd_kafka_t, and create `topics` with `partitions` each. Returns the mock, or NULL with
 * errstr filled. The mock lives in this process only; its data is in memory, and
 * librdkafka 2.0.2 keeps at most ~5 MB (and 100000 message sets) per partition: older
 * messages are silently dropped, so a consumer that falls further behind than that
 * skips them (auto.offset.reset). Size test data accordingly. */
kio_mock *kio_mock_new(int partitions, const char *const *topics, int n_topics,
                       char *errstr, size_t errstr_size);
/* "host:port" to use as bootstrap.servers; owned by m, valid until kio_mock_destroy. */
const char *kio_mock_bootstraps(const kio_mock *m);
/* Create one more topic on the mock. Returns 0, or -1 with errstr filled. */
int kio_mock_create_topic(kio_mock *m, const char *topic, int partitions,
                          char *errstr, size_t errstr_size);
/* Take the mock's broker down (down != 0: its connections are closed and new ones
 * refused, as in a broker outage) or bring it back. Returns 0, or -1 with errstr filled. */
int kio_mock_set_down(kio_mock *m, int down, char *errstr, size_t errstr_size);
/* Stop the mock cluster. Clients still connected to it see transport errors. NULL: no-op. */
void kio_mock_destroy(kio_mock *m);

/* ---- admin ---- */

/* Create topics with `partitions` each and the broker's default replication factor
 * (CreateTopics); a topic that already exists counts as success (its partition count is
 * not checked: use kio_check_topics). Waits at most about timeout_ms. Returns 0, or -1
 * with errstr: "cannot reach Kafka at ..." (as kio_check_topics), or the first failed
 * topic and why. librdkafka 2.0.2's mock cluster does not implement CreateTopics (the
 * request goes unanswered until timeout_ms): use kio_mock_create_topic for it. */
int kio_create_topics(const kio_prop *props, int n_props, const char *const *topics,
                      int n_topics, int partitions, int timeout_ms,
                      char *errstr, size_t errstr_size);

/* kio_create_topics with topic configs (e.g. max.message.bytes, cleanup.policy=compact)
 * given to each new topic; a topic that already exists keeps its own. */
int kio_create_topics_cfg(const kio_prop *props, int n_props, const char *const *topics,
                          int n_topics, int partitions, const kio_prop *configs, int n_configs,
                          int timeout_ms, char *errstr, size_t errstr_size);

/* Check that every topic exists and all have the same partition count (the
 * co-partitioning contract). Returns that count (>= 1), or -1 with errstr filled:
 *   "topic T does not exist (create it with 4 partitions like U)",
 *   "topics must have equal partition counts for co-partitioning: U has 4, T has 2",
 *   "cannot reach Kafka at <bootstrap.servers> within N ms: <librdkafka error>".
 * Lists the cluster's metadata (all topics), so it never triggers auto-creation. */
int kio_check_topics(const kio_prop *props, int n_props, const char *const *topics,
                     int n_topics, int timeout_ms, char *errstr, size_t errstr_size);

/* ---- consumer ---- */

/* Create a consumer-group member subscribed to `topics`. Properties are applied in this
 * order: auto.offset.reset=earliest (a default), then the caller's props, then the
 * required settings, which override the caller's: partition.assignment.strategy=range,
 * enable.auto.commit=false, enable.auto.offset.store=false, and a rebalance callback
 * (eager: rd_kafka_assign / unassign). group.id must be among props.
 * Returns the consumer, or NULL with errstr filled (bad property, no group.id, ...). */
kio_consumer *kio_consumer_new(const kio_prop *props, int n_props,
                               const char *const *topics, int n_topics,
                               char *errstr, size_t errstr_size);

/* Poll up to `max` messages, waiting at most timeout_ms for the first one; the rest are
 * taken only if already fetched. Returns the number of messages written to msgs (0 on
 * timeout). Each message is owned by the caller: destroy it with
 * rd_kafka_message_destroy in the same loop iteration that handles it. Partition EOF
 * and transient errors (e.g. broker down, unknown topic) are not returned: they are
 * counted (kio_consumer_errors). A fatal consumer error returns -1 with errstr filled. */
int kio_consumer_poll(kio_consumer *c, rd_kafka_message_t **msgs, int max, int timeout_ms,
                      char *errstr, size_t errstr_size);

/* Store msg's offset + 1 as the partition's position to commit (cheap, no I/O). Returns
 * 0, or -1 with errstr filled (e.g. the partition is no longer assigned). */
int kio_consumer_store(kio_consumer *c, const rd_kafka_message_t *msg,
                       char *errstr, size_t errstr_size);
/* Store an explicit next offset (e.g. one read back from the state store). */
int kio_consumer_store_offset(kio_consumer *c, const char *topic, int32_t partition,
                              int64_t next_offset, char *errstr, size_t errstr_size);
/* Commit the stored offsets asynchronously (for lag monitoring only: m3rec's restart
 * positions live in its own store). Nothing stored since the last commit is a success.
 * Failures of earlier async commits are counted in kio_consumer_errors. Returns 0, or
 * -1 with errstr filled if the commit could not be started. */
int kio_consumer_commit(kio_consumer *c, char *errstr, size_t errstr_size);

/* Number of partitions currently assigned to this member (all topics). */
int kio_consumer_assigned(const kio_consumer *c);
/* Pause (pause != 0) or resume fetching the assigned partitions. A paused consumer stays
 * paused across rebalances (each new assignment is paused as it is applied) until it is
 * resumed. librdkafka drops what it had fetched of a paused partition and, on resume,
 * fetches again from the message after the last one polled: nothing is skipped. Pausing a
 * paused consumer or resuming a running one does nothing (a resume of a partition that is
 * not paused can make librdkafka fetch from an older offset). Returns 0, or -1 with errstr
 * filled. */
int kio_consumer_pause(kio_consumer *c, int pause, char *errstr, size_t errstr_size);
/* 1 while paused by kio_consumer_pause, else 0. */
int kio_consumer_paused(const kio_consumer *c);
/* Pause (hold != 0) or resume one assigned partition, apart from kio_consumer_pause: a
 * held partition stays paused when the consumer resumes, and a released one stays paused
 * while the consumer is. A revocation releases every hold. As with kio_consumer_pause,
 * librdkafka drops what it had fetched of the partition and fetches again after the
 * last message polled (possibly from an older offset: callers drop duplicates). Returns
 * 0, or -1 with errstr filled. */
int kio_consumer_hold(kio_consumer *c, const char *topic, int32_t partition, int hold,
                      char *errstr, size_t errstr_size);
/* Messages of an assigned partition beyond position (the next offset the caller expects)
 * by the high watermark of the last fetch response (no request is made): > 0 lag, 0
 * caught up, not assigned, or an empty log (position < 0 and the watermarks equal), -1
 * not known yet (nothing fetched, or position < 0 with messages in the log). */
int64_t kio_consumer_lag(kio_consumer *c, const char *topic, int32_t partition,
                         int64_t position);
/* Rebalances (assignments and revocations) served so far: a change means that messages
 * polled before it belong to an assignment that ended (drop what was not handled). */
unsigned kio_consumer_rebalances(const kio_consumer *c);
/* Offset resets so far: librdkafka's "offset out of range" (the broker no longer has the
 * position, e.g. retention or the embedded broker's limit; auto.offset.reset moved it).
 * The last one is copied to last (may be NULL). Each is counted as an error too. */
long long kio_consumer_resets(const kio_consumer *c, char *last, size_t last_size);
/* Transient errors seen so far (consume errors and failed async commits); the last one
 * is copied to last (may be NULL). */
long long kio_consumer_errors(kio_consumer *c, char *last, size_t last_size);
/* The underlying handle, for what this module does not wrap (seek, pause, ...). Owned
 * by c. */
rd_kafka_t *kio_consumer_handle(kio_consumer *c);
/* Hooks into the rebalance callback (eager protocol: every rebalance revokes the whole
 * assignment, then assigns a new one), run on the polling thread inside kio_consumer_poll
 * or kio_consumer_close:
 *  - on_assign(opaque, rk, parts) before the assignment is applied: it may set each
 *    partition's `offset` to where consumption must start (e.g. the position a state store
 *    holds); one left at RD_KAFKA_OFFSET_INVALID starts from the committed offset, else
 *    auto.offset.reset. It may call rd_kafka_committed(rk, ...).
 *  - on_revoke(opaque, rk, parts) while the partitions are still assigned: finish the work
 *    of the messages already handled and store their offsets (kio_consumer_store_offset);
 *    kio then commits the stored offsets synchronously and unassigns.
 * Messages kio_consumer_poll fetched under an assignment that ended during the same call
 * are dropped, not returned: after a revocation nothing of the old assignment arrives.
 * Either hook may be NULL. Set them before the first poll. */
typedef void (*kio_assign_fn)(void *opaque, rd_kafka_t *rk,
                              rd_kafka_topic_partition_list_t *parts);
typedef void (*kio_revoke_fn)(void *opaque, rd_kafka_t *rk,
                              const rd_kafka_topic_partition_list_t *parts);
void kio_consumer_set_rebalance_hooks(kio_consumer *c, kio_assign_fn on_assign,
                                      kio_revoke_fn on_revoke, void *opaque);

/* Leave the group (rd_kafka_consumer_close, which revokes through the rebalance
 * callback) and destroy. NULL: no-op. */
void kio_consumer_close(kio_consumer *c);
/* Destroy without leaving the group: no revocation, no commit, nothing asked of the
 * cluster, so it returns at once even when the broker is unreachable (where
 * rd_kafka_consumer_close can wait for the coordinator); the group notices the member gone
 * after its session timeout. Returns within ~5 s even when librdkafka's destruction hangs
 * (then the handle is left behind: for a process that is stopping). NULL: no-op. */
void kio_consumer_abandon(kio_consumer *c);

/* ---- lag probe: how far a consumer group is behind a partition ---- */

typedef struct kio_probe kio_probe;
/* A client that reads group's committed offsets without joining the group (it never
 * subscribes). Returns it, or NULL with errstr filled. */
kio_probe *kio_probe_new(const kio_prop *props, int n_props, const char *group,
                         char *errstr, size_t errstr_size);
/* Messages of topic/partition the group has not committed yet: the high watermark (asked
 * of the broker) minus the committed offset (the low watermark when there is none).
 * Returns >= 0, or -1 with errstr filled (nothing answered within timeout_ms). */
int64_t kio_probe_lag(kio_probe *p, const char *topic, int32_t partition, int timeout_ms,
                      char *errstr, size_t errstr_size);
/* NULL: no-op. */
void kio_probe_destroy(kio_probe *p);

/* ---- reader: chosen partitions, outside any consumer group ---- */

/* A consumer that joins no group and commits nothing: it reads the partitions it is given
 * from the offsets it is given (the changelog restore, the model topic). */
typedef struct kio_reader kio_reader;
#define KIO_FROM_BEGINNING (-2)   /* RD_KAFKA_OFFSET_BEGINNING: the oldest message kept */
#define KIO_FROM_END (-1)         /* RD_KAFKA_OFFSET_END: only what is written after */
/* props: the connection (bootstrap, security); group and producer properties are ignored.
 * read_committed: 1 reads with isolation.level=read_committed (records of aborted and open
 * transactions are not returned; a partition's end is its last stable offset), 0
 * read_uncommitted. Returns the reader, or NULL with errstr filled. */
kio_reader *kio_reader_new(const kio_prop *props, int n_props, int read_committed,
                           char *errstr, size_t errstr_size);
/* Read topic/partition from `from` (an offset >= 0 or KIO_FROM_*); adding a partition read
 * already (or removed, or drained) moves it there by a seek, waited for up to 10 s. On a
 * real broker that seek was seen to time out for a partition drained before (the embedded
 * broker's test passes): the changelog restore and the snapshot reload use a fresh reader
 * for a second read of a partition. 0, or -1 with errstr. */
int kio_reader_add(kio_reader *r, const char *topic, int32_t partition, int64_t from,
                   char *errstr, size_t errstr_size);
/* Stop reading topic/partition (not read: a no-op). 0, or -1 with errstr. */
int kio_reader_remove(kio_reader *r, const char *topic, int32_t partition, char *errstr,
                      size_t errstr_size);
/* Up to max messages of the partitions read, waiting at most timeout_ms (0: what has
 * arrived). The caller destroys each with rd_kafka_message_destroy. Returns the count, or
 * -1 with errstr on a partition's error (unknown topic or partition, offset out of range:
 * the reader never resets a position by itself). Reaching a partition's end is not an
 * error: kio_reader_at_end says it. */
int kio_reader_poll(kio_reader *r, rd_kafka_message_t **msgs, int max, int timeout_ms,
                    char *errstr, size_t errstr_size);
/* 1 when everything topic/partition held when it was last fetched has been returned, else
 * 0 (also for a partition not read). */
int kio_reader_at_end(const kio_reader *r, const char *topic, int32_t partition);
/* Read topic/partition from `from` to its end as of now, calling fn(ud, msg) for each
 * message in offset order (fn returns 0 to go on; nonzero stops the drain and is returned).
 * Only that partition's messages are taken: other partitions of the reader keep theirs.
 * The partition is not read afterwards. Returns 0, fn's nonzero code, or -1 with errstr
 * (an error of the partition, or not at its end within timeout_ms). */
typedef int (*kio_reader_fn)(void *ud, const rd_kafka_message_t *m);
int kio_reader_drain(kio_reader *r, const char *topic, int32_t partition, int64_t from,
                     kio_reader_fn fn, void *ud, int timeout_ms, char *errstr,
                     size_t errstr_size);
/* NULL: no-op. */
void kio_reader_destroy(kio_reader *r);

/* ---- producer ---- */

/* Create a producer. Order: linger.ms=5 (a default), then the caller's props, then the
 * required enable.idempotence=true and partitioner=murmur2_random. Delivery reports are
 * counted (kio_producer_stats). Returns the producer, or NULL with errstr filled. */
kio_producer *kio_producer_new(const kio_prop *props, int n_props,
                               char *errstr, size_t errstr_size);

/* Produce a copy of key and val to topic (the partitioner picks the partition from the
 * key), with n_hdr_pairs headers given as hdrs[2*i] = name, hdrs[2*i+1] = value (NUL-
 * terminated strings; hdrs may be NULL when n_hdr_pairs is 0). The caller keeps
 * ownership of everything passed. When the local queue is full (queue.buffering.max.*),
 * serves delivery reports and retries for at most ~10 s. Returns 0 when enqueued, or -1
 * with errstr filled. */
int kio_produce(kio_producer *p, const char *topic, const void *key, size_t keylen,
                const void *val, size_t len, const char *const *hdrs, int n_hdr_pairs,
                char *errstr, size_t errstr_size);
/* Produce a copy of key and val to topic's partition `partition` (no partitioner: the
 * caller places the record, as the changelog places a partition's state); val NULL with
 * len 0 produces a tombstone (a NULL value, which compaction deletes). Otherwise as
 * kio_produce. Returns 0 when enqueued, or -1 with errstr filled. */
int kio_produce_to(kio_producer *p, const char *topic, int32_t partition, const void *key,
                   size_t keylen, const void *val, size_t len, char *errstr,
                   size_t errstr_size);
/* Serve delivery reports without blocking. Call regularly. */
void kio_producer_poll(kio_producer *p);
/* Wait at most timeout_ms for all queued messages to be delivered. Returns 0 when the
 * queue is empty and no delivery failed since the previous flush (or creation); 1 when
 * timeout_ms passed with messages left and none failed (errstr: "flush: N messages not
 * delivered within T ms ..."; call again to wait longer); -1 with errstr filled when
 * deliveries failed since the previous flush ("M deliveries failed; last: ..."). */
int kio_producer_flush(kio_producer *p, int timeout_ms, char *errstr, size_t errstr_size);

/* The producer's backlog and whether the cluster answers it. */
typedef struct {
    long long queued;        /* messages produced, neither delivered nor failed yet */
    long long queued_bytes;  /* their keys and values */
    long long max_messages;  /* the bound on the local queue: queue.buffering.max.messages */
    long long max_bytes;     /* and queue.buffering.max.kbytes x 1024 */
    int64_t down_ms;         /* how long the cluster has been unreachable, 0 when it answers */
} kio_producer_state;
/* Fill *out. The cluster counts as unreachable from librdkafka's "all brokers down" (or
 * from the moment deliveries stopped, when messages have waited KIO_STALL_MS without
 * one), until a delivery succeeds or, with nothing queued, a metadata request is answered
 * (tried at most once a second, waiting at most 200 ms). */
void kio_producer_state_get(kio_producer *p, kio_producer_state *out);
#define KIO_STALL_MS 10000
/* Delivery reports so far: successful and failed (either pointer may be NULL). */
void kio_producer_stats(const kio_producer *p, long long *delivered, long long *failed);
/* The last delivery or producer error, "" if none; owned by p. */
const char *kio_producer_last_error(const kio_producer *p);
/* The underlying handle, for what this module does not wrap. Owned by p. */
rd_kafka_t *kio_producer_handle(kio_producer *p);
/* 1 when the cluster is librdkafka's mock cluster (the embedded broker: its cluster id
 * starts with "mockCluster"), 0 when it is another, -1 when it did not answer within
 * timeout_ms. */
int kio_producer_embedded(kio_producer *p, int timeout_ms);
/* Destroy without flushing (call kio_producer_flush first). NULL: no-op. */
void kio_producer_destroy(kio_producer *p);

/* ---- transactions (group.changelog) ----
 * A producer made with a transactional.id among its props is transactional: everything it
 * produces belongs to the transaction begun last, and becomes visible to read_committed
 * consumers when it commits (with the consumer offsets sent to it), or never. The
 * consumer's group metadata goes with the offsets, so the group coordinator refuses the
 * commit of a member of an older generation (a zombie after a rebalance). */

/* Register the transactional.id with its coordinator (fencing an older producer with the
 * same id: its open transaction is aborted) and begin the first transaction. Waits at most
 * timeout_ms. Returns 0, or -1 with errstr. */
int kio_txn_start(kio_producer *p, int timeout_ms, char *errstr, size_t errstr_size);
/* Commit the open transaction with the consumer offsets offs (next offsets to consume;
 * NULL or empty: none) for consumer c's group, then begin the next. Waits for the
 * transaction's messages to be delivered, retrying while the error is retriable, at most
 * timeout_ms. Returns 0; 1 when timeout_ms passed and the commit may be retried; -1 with
 * errstr when it failed for good (fenced, aborted, fatal): the producer is no longer
 * usable, and what the transaction held is never visible to read_committed consumers. */
int kio_txn_commit(kio_producer *p, kio_consumer *c, const rd_kafka_topic_partition_list_t *offs,
                   int timeout_ms, char *errstr, size_t errstr_size);

/* ---- partitioning ---- */

/* Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as a signed 32-bit. */
int32_t kio_murmur2(const void *key, size_t keylen);
/* The partition the Java default partitioner (and librdkafka's murmur2_random) gives a
 * non-NULL key: (murmur2(key) & 0x7fffffff) % partitions. */
int kio_partition_for_key(const void *key, size_t keylen, int partitions);

#endif
