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
};

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

sink *sink_open(const sink_opts *o, char *errstr, size_t errstr_size) {
    sink *s = calloc(1, sizeof *s);
    if (!s || !(s->buf = malloc(SINK__BUF))) {
        free(s);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->cd = codec_new(errstr, errstr_size);
    if (!s->cd || sink__open_output(s, errstr, errstr_size) != 0) {
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
    return 0;
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
    codec_destroy(s->cd);
    free(s->buf);
    free(s);
    return rc;
}
