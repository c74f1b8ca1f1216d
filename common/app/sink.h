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
} sink_opts;

typedef struct sink sink;

/* Open the file, or create the topics (when asked) and a producer. The pacing clock starts
 * here. Returns the sink, or NULL with errstr = "path: <strerror>" or Kafka's error. */
sink *sink_open(const sink_opts *o, char *errstr, size_t errstr_size);

/* Encode ev, key it by its user id and put it on topic; serves the producer's delivery
 * reports every 1024 messages and sleeps as the rate asks. Returns 0, or -1 with
 * errstr = "encode: <reason>" or "produce: <Kafka's error>". */
int sink_put(sink *s, const char *topic, const m3_event *ev, char *errstr, size_t errstr_size);

/* The messages put so far. */
long long sink_count(const sink *s);

/* Flush the producer (60 s at most) or close the file, then free s. Returns 0, or -1 with
 * errstr = "flush: <Kafka's error>" or "path: <strerror>" (s is freed either way). NULL is
 * a no-op returning 0. */
int sink_close(sink *s, char *errstr, size_t errstr_size);

#endif
