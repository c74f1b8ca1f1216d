/* changelog.h - state that follows its input partition: the records of the compacted
 * <prefix>.changelog topic, written in each checkpoint's Kafka transaction and read back
 * by a partition's next owner (group.changelog, docs/architecture.md "State").
 *
 * Changelog partition p holds the state of input partition p (every input topic's
 * partition p: the range assignor gives them to one worker together):
 *   key "u/<16 hex>"      a user's UPT state (users.h stored value + its event time)
 *   key "r/<16 hex>"      the user's user-id embedding row (emb.h stored value)
 *   key "p/<t>/<id>"      a clicked impression pending in input topic t (pending.h
 *                         stored value); a tombstone (no value) once it settled or expired
 *   key "l/<t>"           topic t's ring of recently expired ids (pend_late_save)
 *   key "m/<t>"           topic t's join watermark, next insertion seq, handled counts and
 *                         the input offset the partition's state follows
 * Keys are the compaction unit, so the topic's size is the partition's live state.
 * A user belongs to the input partition its events arrive on: the writer learns it from
 * the worker (chg_note_user), never from a partitioner.
 *
 * A value: magic "M3CL", format version (u16), kind (u8), 0 (u8), the configuration hash
 * (u64: the model's m3_cfg_hash with the input layout), payload length (u32), the payload,
 * then FNV-1a 64 of all before it; little-endian as the store's values (native order, and
 * the changelog is read by the same build family). chg_decode refuses, with the reason
 * and before anything is installed: a short or oversized value, another magic, another
 * format version, another configuration, a kind that does not match the key, a bad
 * checksum, a malformed key.
 *
 * Library code: nothing here exits; errors fill errstr. One thread. */
#ifndef M3_CHANGELOG_H
#define M3_CHANGELOG_H
#include <stddef.h>
#include <stdint.h>

#include "base/event.h"
#include "stream/kio.h"


#define CHG_FORMAT 1
#define CHG_HEAD 24          /* magic 4, version 2, kind 1, pad 1, cfg hash 8, length 4, pad 4 */
#define CHG_TAIL 8           /* FNV-1a 64 */
#define CHG_PAYLOAD_MAX (16u << 20)
#define CHG_KEY_MAX (8 + M3_ID_MAX)

typedef enum { CHG_USER = 'u', CHG_ROW = 'r', CHG_PEND = 'p', CHG_LATE = 'l', CHG_META = 'm' } chg_kind;

/* One decoded record. For CHG_USER / CHG_ROW `key` is the feature key (m3_feat_key of the
 * user slot: the user table and the user-id row share it); for the others `topic` is the
 * input topic index and, for CHG_PEND, `id` the impression id. val points into the
 * message (NULL with len 0 for a tombstone). */
typedef struct {
    int kind;
    uint64_t key;
    int topic;
    char id[M3_ID_MAX];
    const unsigned char *val;
    size_t len;
} chg_rec;

/* The hash a record carries: the model's configuration hash combined with the input
 * layout text (topics x partitions), so a changelog of another model or layout is refused. */
uint64_t chg_cfg_hash(uint64_t model_hash, const char *layout);

/* The Kafka key of r (kind, key, topic, id) into buf (CHG_KEY_MAX bytes suffice). Returns
 * its length, or 0 when it does not fit or the kind is unknown. */
size_t chg_key(const chg_rec *r, char *buf, size_t cap);
/* Bytes of a value with len payload bytes. */
static inline size_t chg_value_bytes(size_t len) { return CHG_HEAD + len + CHG_TAIL; }
/* Write the value of kind with the payload into buf (chg_value_bytes(len) bytes). Returns
 * the bytes written, or 0 when cap is short or len is over CHG_PAYLOAD_MAX. */
size_t chg_encode(int kind, uint64_t cfg_hash, const void *payload, size_t len, void *buf,
                  size_t cap);
/* Parse a record: key, and value (NULL/0: a tombstone, valid for CHG_PEND only). Returns
 * 0 with *out filled (out->val points into val), or -1 with errstr saying why it is
 * refused (see the header comment); nothing is installed from a refused record. */
int chg_decode(const void *key, size_t klen, const void *val, size_t vlen, uint64_t cfg_hash,
               chg_rec *out, char *errstr, size_t errstr_size);

/* ---- the writer: records of a checkpoint into the open transaction ---- */

typedef struct chg chg;

/* A writer producing to topic (copied) through p (transactional, not owned) for
 * n_topics input topics of `partitions` each, stamping cfg_hash. Records of partitions
 * not owned (chg_own) are dropped and counted: a worker writes only what it owns. Returns
 * it, or NULL with errstr (out of memory, bad sizes). */
chg *chg_new(kio_producer *p, const char *topic, int n_topics, int partitions,
             uint64_t cfg_hash, char *errstr, size_t errstr_size);
void chg_destroy(chg *c);
/* Partition p (of the inputs, so of the changelog) is owned (own != 0) or not. */
void chg_own(chg *c, int partition, int own);
int chg_owned(const chg *c, int partition);
/* The user with feature key `key` has its events on input partition p (the latest note
 * wins). Returns 0, or -1 out of memory. */
int chg_note_user(chg *c, uint64_t key, int partition);
/* The partition noted for key, or -1. */
int chg_user_partition(const chg *c, uint64_t key);

/* Produce one record of kind into the open transaction: user/row by key (its noted
 * partition), pending/late/meta by source src (topic x partitions + partition). val NULL
 * with len 0 is a tombstone (pending only). Returns 1 when written, 0 when dropped (the
 * partition is not owned or not known), -1 with errstr (encode or enqueue failed: the
 * transaction must not commit). */
int chg_put_key(chg *c, int kind, uint64_t key, const void *val, size_t len, char *errstr,
                size_t errstr_size);
int chg_put_src(chg *c, int kind, int src, const char *id, const void *val, size_t len,
                char *errstr, size_t errstr_size);

typedef struct {
    long long written, tombstones, dropped, bytes;
} chg_stats;
void chg_stats_get(const chg *c, chg_stats *out);

/* A source's meta record: its join watermark and next insertion seq, and what was handled
 * on it so far (input topic t of partition p: source t x partitions + p). The counts are
 * exact across the group: they change with the offsets in the same transaction, and follow
 * the partition. */
typedef struct {
    int64_t watermark;
    uint64_t next_seq;
    uint64_t impressions, conversions, requests;   /* handled (not refused to the DLQ) */
    int64_t next_offset;   /* the source's next input offset this state follows; -1: none */
} chg_meta;
#define CHG_META_BYTES 48
_Static_assert(sizeof(chg_meta) == CHG_META_BYTES, "chg_meta is the meta payload");
/* Count one handled input event of type M3_EV_* on source src. */
void chg_count(chg *c, int src, int type);
/* Source src's input was handled up to next_offset (exclusive). */
void chg_offset(chg *c, int src, int64_t next_offset);
/* Source src's counts (NULL when out of range). */
const chg_meta *chg_source_meta(const chg *c, int src);
/* Produce source src's meta record with the join's watermark and next seq (as
 * chg_put_src). */
int chg_put_meta(chg *c, int src, int64_t watermark, uint64_t next_seq, char *errstr,
                 size_t errstr_size);
/* Sources: n_topics x partitions. */
int chg_n_sources(const chg *c);

/* ---- restore: what a partition's records install ---- */

/* Where restored records go (the state implements it, state.h). Each returns 0, or -1
 * with errstr (the restore stops and fails). clear drops the local pending entries and
 * late ring of source src before the partition's records arrive. */
typedef struct {
    void *ud;
    int (*clear)(void *ud, int src, char *errstr, size_t n);
    int (*user)(void *ud, uint64_t key, const void *val, size_t len, char *errstr, size_t n);
    int (*row)(void *ud, uint64_t key, const void *val, size_t len, char *errstr, size_t n);
    int (*pend)(void *ud, int src, const char *id, const void *val, size_t len, char *errstr,
                size_t n);
    int (*late)(void *ud, int src, const void *val, size_t len, char *errstr, size_t n);
    int (*meta)(void *ud, int src, int64_t watermark, uint64_t next_seq, char *errstr, size_t n);
} chg_sink;

typedef struct {
    long long records, users, rows, pending, tombstones, refused;
    int adopted;   /* no state in the changelog, group offsets present: local state kept */
    double ms;
} chg_restore_stats;

/* Restore input partitions parts[0..n_parts) from the changelog: a reader of their own
 * (props: the connection) reads them read_committed from the beginning to their end
 * together; every record is checked and the last value of each key kept (a tombstone
 * removes a pending entry). The state must be the one the group's offsets point at:
 * expect[src] (n_topics x partitions; -1: none) is the group's committed offset of every
 * source, and a partition whose meta records name other offsets is refused (the changelog
 * of another group on the same topics, or offsets reset). A partition without any meta
 * record while the group has offsets for it is adopted: its local state is kept, nothing
 * installed (a group that turns the changelog on; st[i].adopted). Only when all were read
 * and none was refused, each other partition's sources are cleared and its records
 * installed into sink, each user's partition noted. A refusal fails it (errstr names the
 * partition, and the offset and why) before anything is installed. st[i] gets partition
 * i's counts; their ms is the whole restore's. Returns 0, or -1 with errstr. */
int chg_restore(chg *c, const kio_prop *props, int n_props, const int *parts, int n_parts,
                const int64_t *expect, const chg_sink *sink, int timeout_ms,
                chg_restore_stats *st, char *errstr, size_t errstr_size);

#endif
