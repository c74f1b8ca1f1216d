/* codec.h - Avro single-object encoding of m3rec's messages to and from event.h structs.
 *
 * Wire format (see docs/contract.md): C3 01, the 8-byte little-endian CRC-64-AVRO
 * fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary datum.
 * Avro C parses the schemas (schemas/, embedded at build time) once, at codec_new();
 * the datum is encoded and decoded by hand, bounds-checked, straight into the
 * fixed-capacity structs: no allocation per message (except ScoreRequest candidates),
 * and a precise reason for every rejected message. A codec is immutable after
 * codec_new(), so one codec may be shared by threads. */
#ifndef M3_CODEC_H
#define M3_CODEC_H
#include <stddef.h>
#include <stdint.h>
#include "base/event.h"

#define CODEC_HEADER_LEN 10   /* C3 01 + 8-byte fingerprint */
#define CODEC_REASON_MAX 160  /* a reason buffer of this size never truncates */

typedef struct codec codec;

/* Parse the embedded schemas, check that each has the field layout this codec was
 * written for, compute their canonical forms and fingerprints. Returns a new codec, or
 * NULL with errstr filled (e.g. "schema Impression: field 6 is ..., codec expects ..."). */
codec *codec_new(char *errstr, size_t errstr_size);

/* Free a codec; NULL is a no-op. */
void codec_destroy(codec *c);

/* The CRC-64-AVRO fingerprint of type t's schema, as a number (the wire carries it
 * little-endian). 0 for M3_EV_NONE or an unknown type. */
uint64_t codec_fingerprint(const codec *c, m3_ev_type t);

/* The Parsing Canonical Form of type t's schema (owned by c), or NULL for an unknown t. */
const char *codec_canonical(const codec *c, m3_ev_type t);

/* The Avro schema name of type t ("Impression", ...), or "?" for an unknown t. */
const char *codec_type_name(m3_ev_type t);

/* Decode one message (header + datum) into *out. *out is treated as uninitialized: it is
 * overwritten, never freed. Returns 0 on success; call m3_event_clear(out) when done
 * (a ScoreRequest owns its candidate array). Returns -1 for a malformed message, with
 * `reason` filled with a short specific reason for the DLQ (CODEC_REASON_MAX bytes
 * suffice) and *out left cleared: nothing to free. */
int codec_decode(const codec *c, const void *buf, size_t len, m3_event *out,
                 char *reason, size_t reason_size);

/* Encode *ev (header + datum) into buf of capacity cap. Returns the encoded length, or -1
 * with `reason` filled when ev is invalid (wrong type, empty id, string not terminated
 * within its capacity, map size out of range, empty or duplicate map key, non-finite
 * float, candidate count out of range) or does not fit in cap. Buf may then hold a
 * partial message. */
long codec_encode(const codec *c, const m3_event *ev, void *buf, size_t cap,
                  char *reason, size_t reason_size);

/* An upper bound on codec_encode()'s length for ev (from its type, map sizes and
 * candidate count; valid for any ev that codec_encode() accepts). */
size_t codec_encoded_size_max(const m3_event *ev);

/* Free what ev owns (ScoreRequest candidates) and reset it to all zero (type
 * M3_EV_NONE). Safe on an event that is already cleared; NULL is a no-op. */
void m3_event_clear(m3_event *ev);

/* CRC-64-AVRO (the Rabin fingerprint of the Avro spec) of len bytes. */
uint64_t codec_crc64_avro(const void *buf, size_t len);

/* The Parsing Canonical Form of a JSON Avro schema, parsed with Avro C. Returns a
 * malloc'd string (the caller frees it), or NULL with errstr filled. */
char *codec_pcf_from_json(const char *json, size_t len, char *errstr, size_t errstr_size);

#endif
