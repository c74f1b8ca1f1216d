/* sink.c - a Kafka producer or a framed file for the event producers (see sink.h). */
#include "app/sink.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "stream/codec.h"

#define SINK__BUF (1 << 16)   /* the largest encoded event */

struct sink {
    sink_opts o;
    FILE *f;                   /* the framed file, or NULL */
    kio_producer *p;           /* the producer, or NULL */
    codec *cd;
    unsigned char *buf;        /* SINK__BUF bytes: the encoded event */
    long long count;
    double start_s;            /* the pacing clock's origin (clk_mono_s) */
    /* the embedded broker: production paced to the group's progress (NULL/0 otherwise) */
    kio_probe *probe;
    int *parts;                /* partitions of each of o.topics */
    long long *unread, *unread_msgs;   /* (topic x 256 partitions) bytes and messages put
                                          that the group may not have read */
    long long bytes;           /* all bytes put: the mean message size */
    int told;                  /* the pacing was announced */
};

#define SINK__MAXP 256         /* the embedded broker's partition limit (cfg) */

static void sink__put_be32(FILE *f, uint32_t v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, f);
}

static void sink__write_frame(FILE *f, const char *topic, const void *key, size_t klen,
                              const void *val, size_t len) {
    fwrite(topic, 1, strlen(topic) + 1, f);
    sink__put_be32(f, (uint32_t)klen);
    fwrite(key, 1, klen, f);
    sink__put_be32(f, (uint32_t)len);
    fwrite(val, 1, len, f);
}

/* Sleep until the messages put so far are due at the configured rate. Below 1000 messages
 * a second every message waits its turn; above, every 256th (a sleep costs ~50 us). */
static void sink__pace(const sink *s) {
    double rate = s->o.rate;
    if (rate <= 0 || (rate >= 1000 && (s->count & 255) != 0)) return;
    double ahead = (double)s->count / rate - (clk_mono_s() - s->start_s);
    if (ahead > 0) {
        struct timespec d = {(time_t)ahead, (long)((ahead - (double)(time_t)ahead) * 1e9)};
        nanosleep(&d, NULL);
    }
}

static int64_t sink__user_id(const m3_event *ev) {
    return ev->type == M3_EV_IMPRESSION ? ev->u.imp.user_id
         : ev->type == M3_EV_CONVERSION ? ev->u.conv.user_id : ev->u.req.user_id;
}

/* The file or the producer (after the topics, when asked). */
static int sink__open_output(sink *s, char *errstr, size_t errstr_size) {
    const sink_opts *o = &s->o;
    if (o->path) {
        s->f = fopen(o->path, "wb");
        if (!s->f) snprintf(errstr, errstr_size, "%s: %s", o->path, strerror(errno));
        return s->f ? 0 : -1;
    }
    if (o->create_parts > 0 &&
        kio_create_topics(o->props, o->n_props, o->topics, o->n_topics, o->create_parts, 30000,
                          errstr, errstr_size) != 0)
        return -1;
    s->p = kio_producer_new(o->props, o->n_props, errstr, errstr_size);
    return s->p ? 0 : -1;
}

/* The cluster is the embedded broker and a group reads it: set up the pacing to the
 * group (the topics' partition counts, a lag probe). Returns 0, or -1 with errstr. */
static int sink__embedded(sink *s, char *errstr, size_t errstr_size) {
    const sink_opts *o = &s->o;
    if (!o->group || !o->n_topics || kio_producer_embedded(s->p, 10000) != 1) return 0;
    s->parts = calloc((size_t)o->n_topics, sizeof *s->parts);
    s->unread = calloc((size_t)o->n_topics * SINK__MAXP, sizeof *s->unread);
    s->unread_msgs = calloc((size_t)o->n_topics * SINK__MAXP, sizeof *s->unread_msgs);
    if (!s->parts || !s->unread || !s->unread_msgs) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (int t = 0; t < o->n_topics; t++) {
        int n = kio_check_topics(o->props, o->n_props, &o->topics[t], 1, 10000, errstr,
                                 errstr_size);
        if (n < 0) return -1;
        s->parts[t] = n > SINK__MAXP ? SINK__MAXP : n;
    }
    s->probe = kio_probe_new(o->props, o->n_props, o->group, errstr, errstr_size);
    return s->probe ? 0 : -1;
}

/* Wait until the group is close enough behind partition p of topic t: everything put is
 * delivered first, then the group's lag is asked every 100 ms until it is under half the
 * budget. Returns 0, or -1 with errstr when the group made no progress for
 * SINK_EMBEDDED_STALL_S (or the broker did not answer). */
static int sink__await(sink *s, int t, int p, char *errstr, size_t errstr_size) {
    char err[512];
    const char *topic = s->o.topics[t];
    long long *bytes = &s->unread[t * SINK__MAXP + p], *msgs = &s->unread_msgs[t * SINK__MAXP + p];
    if (kio_producer_flush(s->p, 60000, err, sizeof err) != 0) {
        snprintf(errstr, errstr_size, "flush: %s", err);
        return -1;
    }
    double mean = s->count ? (double)s->bytes / (double)s->count : 0;
    int64_t best = -1;
    double since = clk_mono_s();
    for (;;) {
        int64_t lag = kio_probe_lag(s->probe, topic, p, 10000, err, sizeof err);
        if (lag < 0) {
            snprintf(errstr, errstr_size, "embedded broker: %s", err);
            return -1;
        }
        if ((double)lag * mean <= SINK_EMBEDDED_BYTES / 2 && lag <= SINK_EMBEDDED_MSGS / 2) {
            *bytes = (long long)((double)lag * mean);
            *msgs = lag;
            return 0;
        }
        if (!s->told++)
            fprintf(stderr, "embedded broker: pacing to consumer group '%s': librdkafka's mock "
                    "cluster keeps only ~5 MB per partition and drops older messages, and %s [%d] "
                    "is %lld messages ahead of what the group has committed (a real broker has "
                    "no such limit)\n", s->o.group, topic, p, (long long)lag);
        if (best < 0 || lag < best) {
            best = lag;
            since = clk_mono_s();
        } else if (clk_mono_s() - since > SINK_EMBEDDED_STALL_S) {
            snprintf(errstr, errstr_size, "embedded broker: consumer group '%s' has read nothing "
                     "of %s [%d] for %d s and it holds %lld unread messages: producing more would "
                     "make the broker drop them (start the worker first, give the worker's "
                     "kafka.group.id, or use a real broker)", s->o.group, topic, p,
                     SINK_EMBEDDED_STALL_S, (long long)lag);
            return -1;
        }
        struct timespec d = {0, 100 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
}

/* Count a message put on topic with key and len bytes against its partition's budget on
 * the embedded broker, and wait for the group when the budget is spent. */
static int sink__budget(sink *s, const char *topic, const char *key, int klen, long len,
                        char *errstr, size_t errstr_size) {
    s->bytes += len + klen;
    if (!s->probe) return 0;
    int t = 0;
    while (t < s->o.n_topics && strcmp(s->o.topics[t], topic) != 0) t++;
    if (t == s->o.n_topics || s->parts[t] <= 0) return 0;
    int p = kio_partition_for_key(key, (size_t)klen, s->parts[t]);
    s->unread[t * SINK__MAXP + p] += len + klen;
    if (s->unread[t * SINK__MAXP + p] <= SINK_EMBEDDED_BYTES &&
        ++s->unread_msgs[t * SINK__MAXP + p] <= SINK_EMBEDDED_MSGS)
        return 0;
    return sink__await(s, t, p, errstr, errstr_size);
}

sink *sink_open(const sink_opts *o, char *errstr, size_t errstr_size) {
    sink *s = calloc(1, sizeof *s);
    if (!s || !(s->buf = malloc(SINK__BUF))) {
        free(s);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->cd = codec_new(errstr, errstr_size);
    if (!s->cd || sink__open_output(s, errstr, errstr_size) != 0 ||
        (s->p && sink__embedded(s, errstr, errstr_size) != 0)) {
        char ignored[8];
        sink_close(s, ignored, sizeof ignored);
        return NULL;
    }
    s->start_s = clk_mono_s();
    return s;
}

int sink_put(sink *s, const char *topic, const m3_event *ev, char *errstr, size_t errstr_size) {
    char reason[CODEC_REASON_MAX], key[32], err[512];
    long len = codec_encode(s->cd, ev, s->buf, SINK__BUF, reason, sizeof reason);
    if (len < 0) {
        snprintf(errstr, errstr_size, "encode: %s", reason);
        return -1;
    }
    int klen = snprintf(key, sizeof key, "%" PRId64, sink__user_id(ev));
    if (s->f) {
        sink__write_frame(s->f, topic, key, (size_t)klen, s->buf, (size_t)len);
    } else if (kio_produce(s->p, topic, key, (size_t)klen, s->buf, (size_t)len, NULL, 0, err,
                           sizeof err) != 0) {
        snprintf(errstr, errstr_size, "produce: %s", err);
        return -1;
    }
    s->count++;
    if (s->p && (s->count & 1023) == 0) kio_producer_poll(s->p);
    sink__pace(s);
    return sink__budget(s, topic, key, klen, len, errstr, errstr_size);
}

long long sink_count(const sink *s) { return s->count; }

int sink_close(sink *s, char *errstr, size_t errstr_size) {
    if (!s) return 0;
    char err[512];
    int rc = 0;
    if (s->p && kio_producer_flush(s->p, 60000, err, sizeof err) != 0) {
        snprintf(errstr, errstr_size, "flush: %s", err);
        rc = -1;
    }
    if (s->f && fclose(s->f) != 0 && rc == 0) {
        snprintf(errstr, errstr_size, "%s: %s", s->o.path, strerror(errno));
        rc = -1;
    }
    kio_producer_destroy(s->p);
    kio_probe_destroy(s->probe);
    free(s->parts);
    free(s->unread);
    free(s->unread_msgs);
    codec_destroy(s->cd);
    free(s->buf);
    free(s);
    return rc;
}
