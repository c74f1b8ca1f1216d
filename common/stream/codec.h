/* codec.h - Avro single-object encoding of m3rec's messages to and from event.h structs.
 *
 * Wire format (see docs/contract.md): C3 01, the 8-byte little-endian CRC-64-AVRO
 * fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary datum.
 * Avro C parses the schemas (schemas/, embedded at build time) once, at codec_new();
 * the datum is encoded and decoded by hand, bounds-checked, straight into the
 * fixed-capacity structs: no allocation per message (except ScoreRequest candidates),
 * and a precise reason for every rejected message.
 *
 * Schema evolution (docs/contract.md, "Schema evolution"): the codec also reads datums
 * written with other writer schemas of the same records - those of schemas/history/
 * (embedded) and those added with codec_add_writer() - resolved by Avro's rules to the
 * reader schema once, when added; such a datum is transcoded to the reader's form and
 * decoded as above. Decoding and encoding never change a codec, so once the writers are
 * added one codec may be shared by threads. */
#ifndef M3_CODEC_H
#define M3_CODEC_H
#include <stddef.h>
#include <stdint.h>
#include "base/event.h"

#define CODEC_HEADER_LEN 10   /* C3 01 + 8-byte fingerprint */
#define CODEC_REASON_MAX 256  /* a reason buffer of this size never truncates */

typedef struct codec codec;

/* Parse the embedded schemas, check that each has the field layout this codec was
 * written for and that their field defaults fit, compute their canonical forms and
 * fingerprints, then add the writer schemas of schemas/history/ (codec_add_writer).
 * Returns a new codec, or NULL with errstr filled (e.g. "schema Impression: field 6 is
 * ..., codec expects ...", "schemas/history/X.avsc: <why it is incompatible>"). */
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

/* Add a writer schema (JSON text) for one of the four record types (by its record name),
 * resolved against the codec's reader schema of that name. Returns 0 with *type and *fp
 * (CRC-64-AVRO of its Parsing Canonical Form) set: from then on single-object messages
 * with that fingerprint decode, and codec_decode_datum(c, fp, ...) does too. Returns -1
 * with errstr naming the difference when it is incompatible ("Impression writer 0x...:
 * field ts_ms is string, reader wants long (not promotable)", "... reader field ctx_cat
 * has no default and the writer lacks it", "record Foo is none of ..."); the codec still
 * remembers fp, so that messages written with it are refused with that reason (*type is
 * then the record it names, or M3_EV_NONE). JSON that is no Avro schema: -1, *fp = 0,
 * nothing remembered. Adding a known schema again is a cheap no-op with the same answer
 * (the reader's own schema is known from the start). Not safe while another thread uses
 * the codec (the worker is single-threaded). */
int codec_add_writer(codec *c, const char *json, size_t len, m3_ev_type *type, uint64_t *fp,
                     char *errstr, size_t errstr_size);

/* Called by codec_add_dir for a file whose schema is incompatible: why is the reason
 * its messages will be refused with. */
typedef void (*codec_refused_fn)(void *arg, const char *path, const char *why);

/* Add every `*.avsc` file of directory dir (in name order; hidden files skipped) with
 * codec_add_writer. An incompatible schema is remembered and reported through refused
 * (which may be NULL); it is not an error. Returns the number of files added or refused,
 * or -1 with errstr = "dir: <strerror>", "path: <strerror>" (unreadable), "path:L:C: not
 * JSON: ..." or "path:1: invalid schema: ..." for the first bad file. */
int codec_add_dir(codec *c, const char *dir, codec_refused_fn refused, void *arg,
                  char *errstr, size_t errstr_size);

/* What the codec knows of writer fingerprint fp: 1 = it decodes (the reader's own or a
 * resolved writer), with *type set; -1 = incompatible, why = the reason its messages get;
 * 0 = unknown (why = "unknown writer schema 0x..."). */
int codec_writer_status(const codec *c, uint64_t fp, m3_ev_type *type, char *why,
                        size_t why_size);

/* Decode a bare Avro datum (no header) written with the writer schema whose fingerprint is
 * fp (the reader's own or one added). Same contract as codec_decode. Unknown fp: -1,
 * reason "unknown writer schema 0x..."; an incompatible one: its reason. */
int codec_decode_datum(const codec *c, uint64_t fp, const void *datum, size_t len, m3_event *out,
                       char *reason, size_t reason_size);

/* Decode one message (header + datum) into *out. *out is treated as uninitialized: it is
 * overwritten, never freed. Returns 0 on success; call m3_event_clear(out) when done
 * (a ScoreRequest owns its candidate array). Returns -1 for a malformed message, with
 * `reason` filled with a short specific reason for the DLQ (CODEC_REASON_MAX bytes
 * suffice) and *out left cleared: nothing to free. The header's fingerprint selects the
 * writer schema: the reader's own, or one added (codec_add_writer); an unknown one is
 * refused as "unknown schema fingerprint 0x...", an incompatible one with its reason. */
int codec_decode(const codec *c, const void *buf, size_t len, m3_event *out,
                 char *reason, size_t reason_size);

/* The event time of a single-object message written with the reader's own schema of an
 * input record (Impression, Conversion, ScoreRequest), read without decoding the rest:
 * the id strings before ts_ms are skipped, their lengths checked against the bytes left.
 * Returns 1 with *ts_ms set, or 0 when it cannot tell that cheaply - another framing,
 * another writer schema, a Prediction, bytes before ts_ms that do not parse - and then
 * only codec_decode (or fmt_decode) can. What follows ts_ms is not looked at: a message
 * peeked may still be refused by codec_decode. The worker's event-time order peeks every
 * message before it decodes it once (docs/results.md: ~1.4 us less CPU per event). */
int codec_peek_ts(const codec *c, const void *buf, size_t len, int64_t *ts_ms);

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
