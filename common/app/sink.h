/* sink.h - where the event producers (m3rec-sim, m3rec-replay) put their events: a Kafka
 * producer or a framed file, with the same keys, encoding, pacing and flush.
 *
 * Each event is Avro-encoded (stream/codec) and keyed by its decimal user id, so the
 * murmur2 partitioner puts a user's events in one partition, as Java clients would. A framed
 * file (--out) holds each message as: topic, NUL, key length (big-endian u32), key, value
 * length (big-endian u32), value. */
#ifndef M3_SINK_H
#define M3_SINK_H
#include <stddef.h>
#include "base/event.h"
#include "stream/kio.h"

typedef struct {
    const char *path;              /* a framed file to write; NULL = produce to Kafka */
    const kio_prop *props;         /* Kafka: the producer's properties (app_kafka_props) */
    int n_props;
    const char *const *topics;     /* Kafka: the topics to create first when create_parts > 0 */
    int n_topics;
    int create_parts;              /* partitions of the created topics; 0 = create none */
    double rate;                   /* messages per wall-clock second; 0 = as fast as possible */
    const char *group;             /* Kafka: the consumer group reading the topics (the
                                      worker's group.id); NULL = none is checked */
} sink_opts;

typedef struct sink sink;

/* Open the file, or create the topics (when asked) and a producer. The pacing clock starts
 * here. When the cluster is the embedded broker (librdkafka's mock cluster, which keeps
 * only ~5 MB or 100,000 messages per partition and drops the oldest silently) and a group
 * is given, production is also paced to that group: a partition may run at most
 * SINK_EMBEDDED_BYTES / SINK_EMBEDDED_MSGS ahead of the group's committed offset (sink_put
 * waits, saying so once), so the broker never drops what the worker has not read.
 * Returns the sink, or NULL with errstr = "path: <strerror>" or Kafka's error. */
sink *sink_open(const sink_opts *o, char *errstr, size_t errstr_size);

#define SINK_EMBEDDED_BYTES (3LL << 20)   /* unread bytes per partition of the embedded broker */
#define SINK_EMBEDDED_MSGS 60000           /* and messages (its limits: ~5 MB, 100,000) */
#define SINK_EMBEDDED_STALL_S 120          /* no progress of the group for this long: refuse */

/* Encode ev, key it by its user id and put it on topic; serves the producer's delivery
 * reports every 1024 messages and sleeps as the rate asks (and, on the embedded broker,
 * as the group's progress asks). Returns 0, or -1 with errstr = "encode: <reason>",
 * "produce: <Kafka's error>" or "embedded broker: ..." (the group read nothing of a full
 * partition for SINK_EMBEDDED_STALL_S: producing more would lose messages). */
int sink_put(sink *s, const char *topic, const m3_event *ev, char *errstr, size_t errstr_size);

/* The messages put so far. */
long long sink_count(const sink *s);

/* Flush the producer (60 s at most) or close the file, then free s. Returns 0, or -1 with
 * errstr = "flush: <Kafka's error>" or "path: <strerror>" (s is freed either way). NULL is
 * a no-op returning 0. */
int sink_close(sink *s, char *errstr, size_t errstr_size);

#endif
