/* format.h - message framings on m3rec's topics: Avro single-object encoding (C3 01 +
 * 8-byte fingerprint + datum) and schema-registry framing (00 + 4-byte big-endian schema
 * id + datum, as Confluent's and Apicurio's serializers write it); recognising a wrong
 * one for the DLQ reason; subject names; and the input decoder that resolves registry ids
 * through a reg client (registry.h) into the codec's writer schemas.
 *
 * See docs/registry.md. */
#ifndef M3_FORMAT_H
#define M3_FORMAT_H
#include <stddef.h>
#include <stdint.h>
#include "base/event.h"
#include "stream/codec.h"
#include "stream/registry.h"

#define FMT_REGISTRY_HEADER_LEN 5   /* 00 + 4-byte big-endian schema id */

/* What the first bytes of a message look like. */
typedef enum {
    FMT_KIND_EMPTY = 0,  /* no bytes */
    FMT_KIND_SINGLE,     /* C3 01: Avro single-object encoding */
    FMT_KIND_REGISTRY,   /* 00 and at least 4 more bytes: registry framing */
    FMT_KIND_CONTAINER,  /* "Obj" 01: an Avro object container file */
    FMT_KIND_JSON,       /* '{' or '[' after optional white space */
    FMT_KIND_OTHER
} fmt_kind;

/* input.format: what the worker accepts; output.format: how predictions are framed. */
typedef enum { FMT_SINGLE = 0, FMT_REGISTRY, FMT_AUTO } fmt_mode;

/* Subject naming (registry.subject.strategy), as the common serializers name them. */
typedef enum { FMT_SUBJ_TOPIC = 0, FMT_SUBJ_RECORD, FMT_SUBJ_TOPIC_RECORD } fmt_subject_strategy;

/* The kind of a message from its first bytes. */
fmt_kind fmt_sniff(const void *buf, size_t len);

/* The schema id of a registry-framed message. Returns 0, or -1 when buf is not one
 * (shorter than FMT_REGISTRY_HEADER_LEN or not starting with 00). */
int fmt_registry_id(const void *buf, size_t len, uint32_t *id);

/* Write the registry framing header for `id` into p[0..FMT_REGISTRY_HEADER_LEN). */
void fmt_put_registry_header(unsigned char *p, uint32_t id);

/* The DLQ reason for a message of kind k that the input mode does not take, naming what
 * it looks like and the setting that would take it, e.g. "registry framing, schema id 17:
 * set input.format=registry or auto (with registry.url)". Returns reason. */
const char *fmt_wrong_reason(fmt_kind k, const void *buf, size_t len, char *reason,
                             size_t reason_size);

/* Parse a mode name ("single-object", "registry", "auto"; auto only when allow_auto).
 * Returns 0, or -1 for another name. */
int fmt_mode_parse(const char *name, int allow_auto, fmt_mode *out);

/* Parse a strategy name ("topic", "record", "topic-record"). Returns 0, or -1. */
int fmt_strategy_parse(const char *name, fmt_subject_strategy *out);

/* The subject of `topic`'s values whose record is `fullname` (namespace.name): topic =
 * "<topic>-value", record = "<fullname>", topic-record = "<topic>-<fullname>". Returns 0,
 * or -1 when it does not fit in out_size. */
int fmt_subject(fmt_subject_strategy s, const char *topic, const char *fullname, char *out,
                size_t out_size);

/* ---- the input decoder ---- */

typedef struct fmt_decoder fmt_decoder;

typedef enum {
    FMT_OK = 0,    /* *out holds the event */
    FMT_REFUSED,   /* the message goes to the DLQ with the reason */
    FMT_WAIT       /* the registry could not answer: the message must wait (reason says why) */
} fmt_result;

/* A decoder for input mode `mode`. codec and r stay owned by the caller and must outlive
 * the decoder; r may be NULL (registry-framed messages are then refused: no registry.url).
 * The decoder adds the writer schemas the registry serves to the codec (codec_add_writer).
 * Returns NULL when out of memory. */
fmt_decoder *fmt_decoder_new(fmt_mode mode, codec *c, reg *r);

/* Free a decoder; NULL is a no-op. */
void fmt_decoder_destroy(fmt_decoder *d);

/* Decode one message into *out (as codec_decode: call m3_event_clear(out) after FMT_OK).
 * FMT_REFUSED: a wrong framing, an unknown schema id (the registry said 404), a schema
 * the codec refuses, or a bad datum; FMT_WAIT: the registry was unreachable or answered
 * garbage - call again later with the same message. A refused id is remembered (its
 * messages are refused without asking again). reason gets CODEC_REASON_MAX + 96 bytes. */
fmt_result fmt_decode(fmt_decoder *d, const void *buf, size_t len, m3_event *out, char *reason,
                      size_t reason_size);

#endif
