/* sync.h - one model shared by a group: a model's update since its last sync point as a
 * self-describing blob, and a peer's blob applied to a model (issue 16, item 2).
 *
 * The update is what the group shares: the dense parameters' delta and the deltas of the
 * SHARED embedding rows touched since the last sync point (items and every other
 * categorical field). Rows keyed by the user id (slot M3_SLOT_USER) are never in a blob:
 * they live with the user's input partition. The rows' counters travel as deltas too
 * (format 2): an item's trained impressions count across the group, so MIEG warms it after
 * model.item.warm of the group's impressions, not of each worker's. Local: the rows'
 * Adagrad accumulators and the UPT user table; Adam's moments and step are local under the
 * delta rules, and identical on every worker under the grad rule (below), which ships the
 * dense GRADIENT instead of the delta and has every worker take the same Adam step on the
 * group's mean gradient (docs/architecture.md, "Scaling out").
 *
 * The unit of exchange is a byte blob (a transport, e.g. a Kafka model topic, carries it
 * as the message value): native byte order, a fixed header
 *   magic "M3SY", format version, header bytes, sender id, the configuration hash the
 *   dense blob carries (m3_cfg_hash), sequence number, the sender's model version (Adam
 *   steps), emb width, flags (1: the dense part is a gradient, 2: in bfloat16), dense
 *   count, row count, exception count, the minibatches trained since the sender's last
 *   extract,
 * then the dense part (n_params floats: the delta, or the sum of those minibatches'
 * gradients, as floats or with flag 2 as bfloat16), the rows (key u64, d float deltas, the
 * counter's delta u32), the exceptions (index u32 + float: the low part of a delta a float cannot hold exactly, so that a delta
 * applied to the sender's own sync point reproduces the sender's parameters bit for bit),
 * and sync_checksum() of everything before it. Sizes are bounded (SYNC_MAX_BYTES). Format 1
 * (no counters, no flags) is refused with its reason.
 *
 * A sync point is set by sync_new() and by every sync_extract(): the delta of a coordinate
 * is its value now minus its value at the last sync point. The rows' values at the sync
 * point are kept only for rows touched since (a hook in emb_grad_apply), so an extract
 * costs O(dense + touched rows), never O(table). */
#ifndef M3_SYNC_H
#define M3_SYNC_H
#include <stddef.h>
#include <stdint.h>
#include "engine/model.h"

#define SYNC_FORMAT_VERSION 2u
#define SYNC_MAX_BYTES ((size_t)1 << 30)   /* a blob larger than this is refused */

/* The blob's checksum of n bytes: base/hash.h's hash_words64 (any one changed word
 * changes it; ~0.1 ms a megabyte). */
uint64_t sync_checksum(const void *p, size_t n);

/* What a blob's header says (sync_check). */
typedef struct {
    uint32_t sender;
    uint64_t seq;
    int64_t model_version;
    uint64_t n_params, n_rows, n_exc;
    uint64_t batches;   /* minibatches the sender trained since its last extract */
    int grad;           /* 1: the dense part is their gradients' sum (the grad rule) */
    int dense_bytes;    /* bytes per dense value: 4 (float), 2 (bfloat16 gradient) */
} sync_info;

typedef struct sync_state sync_state;

/* Start tracking model m's updates from now (its current state is the first sync point),
 * as sender `sender`. Installs m's embedding table's step hook (one sync_state per model).
 * On error (out of memory) NULL, and errstr says why. */
sync_state *sync_new(m3_model *m, uint32_t sender, char *errstr, size_t errstr_size);
/* Remove the hooks and free; NULL is a no-op. */
void sync_destroy(sync_state *s);

/* The grad rule on (on 1) or off: from now on m3_train hands its dense gradient to s
 * instead of stepping (m3_set_grad_hook), the blob's dense part is the sum of the
 * minibatches' gradients since the last extract, and the model's dense parameters move
 * only in sync_step. Every member of a group must run the same mode: sync_apply refuses a
 * blob of the other kind. Returns 0, or -1 with errstr (out of memory). */
int sync_set_grad(sync_state *s, int on, char *errstr, size_t errstr_size);
/* Under the grad rule, the end of a round: one Adam step on the mean gradient of the
 * blobs applied since the last step (the sum of their weighted gradients over the sum of
 * their weighted minibatch counts). Every member that applied the same blobs, in the same
 * order, from the same dense state, takes the same step and stays bit-identical. Returns
 * 1 when it stepped, 0 when there was nothing to step on (or not the grad rule). */
int sync_step(sync_state *s);
/* Under the grad rule, send the gradient in bfloat16 (on 1): half the dense bytes; what
 * the rounding drops is added to the next extract's gradient (error feedback), so no
 * part of a gradient is lost, only delayed. Every member applies the same rounded values,
 * so the dense parameters stay the same on every worker. Returns 0, or -1 with errstr
 * (out of memory). */
int sync_set_bf16(sync_state *s, int on, char *errstr, size_t errstr_size);
/* Under the grad rule, divide a round's step size by 1 + its staleness (on 1): the Adam
 * steps the model took since the oldest of the round's gradients was computed (the
 * blob's model version; under the grad rule every member has the same version), as
 * staleness-aware asynchronous SGD does (Zhang et al., 2016). Off by default. */
void sync_set_stale_lr(sync_state *s, int on);
/* Under the grad rule, the round being gathered (what sync_apply put in since the last
 * sync_step: the weighted gradient sum, its weighted minibatches, its staleness) as bytes,
 * so that a snapshot taken between two steps carries it and a member that loads it takes
 * the same next step: sync_round_save writes it into buf (NULL: only its size) and
 * returns its size, 0 when s is not in grad mode; sync_round_load puts such bytes back
 * into s (grad mode, same model shape). Returns 0, or -1 with errstr (a size that is not
 * this model's, a value that is not finite: s unchanged). */
size_t sync_round_save(const sync_state *s, void *buf);
int sync_round_load(sync_state *s, const void *buf, size_t len, char *errstr, size_t errstr_size);
/* Minibatches the model trained (m3_train steps not refused) since sync_new. */
uint64_t sync_batches(const sync_state *s);

/* The update since the last sync point as a malloc'd blob (*out, the caller frees it) with
 * the next sequence number; the model's current state becomes the new sync point. Returns
 * the blob's size, or 0 with errstr (out of memory, a non-finite delta, or larger than
 * SYNC_MAX_BYTES) and *out NULL; the sync point does not move then. Call it between
 * minibatches (never between an m3_forward and its m3_train). */
size_t sync_extract(sync_state *s, unsigned char **out, char *errstr, size_t errstr_size);

/* Check a blob against model m without applying it: size bounds, magic, format version,
 * the configuration hash, the embedding width and dense count, the checksum, no user row,
 * finite values. Returns 0 (info filled when not NULL), or -1 with errstr giving the reason,
 * e.g. "sync blob: configuration hash differs (another model configuration)". */
int sync_check(const m3_model *m, const void *blob, size_t len, sync_info *info,
               char *errstr, size_t errstr_size);

/* The weight of a delta's dense part and of its rows (sync_rule_weights). */
typedef struct {
    float dense, rows;
} sync_weight;

/* Add w x the blob's delta to model m (w.dense to each dense parameter, w.rows to each
 * row; a row is skipped when w.rows is 0): a row the
 * model lacks created first as m3_forward would create it (the same seed gives the same
 * start on every worker). A peer's blob (another sender than s's, or s NULL) also adds
 * its counter deltas to the rows' counters. Under the grad rule (a gradient blob, s in
 * grad mode) the dense part is added, times w.dense, to s's round for sync_step instead.
 * Checked first (sync_check, then the blob's kind against s's mode): a refused blob
 * changes nothing and returns -1 with the reason. With s (the model's own sync state, may
 * be NULL) the same change is made to the sync point, so a peer's delta is never sent back
 * as this worker's own. Returns 0. Call it between minibatches. */
int sync_apply(m3_model *m, sync_state *s, const void *blob, size_t len, sync_weight w,
               char *errstr, size_t errstr_size);

/* Bytes of the last extract: dense part, rows part; rows in it; deltas a float could not
 * hold exactly (exceptions). */
typedef struct {
    size_t bytes, dense_bytes, row_bytes;
    uint64_t rows, exceptions;
} sync_stats;
void sync_last_stats(const sync_state *s, sync_stats *st);

/* ---- merge rules: the weights a worker gives the deltas of one sync round ----
 * sum: every peer's delta added as is (a parameter server's asynchronous updates);
 * scaled: peers' deltas times 1/N; avg: the group's mean of the models (periodic model
 * averaging, local SGD): peers' deltas times 1/N and its own delta times 1/N - 1, which
 * from a common sync point lands every worker on the mean. none: no exchange (isolated
 * workers, the group of today). mixed: the dense parameters averaged (avg), the rows summed
 * (sum): a row only some workers touched keeps its whole update, which averaging would cut
 * to 1/N. grad: synchronous data parallel for the dense part (sync_set_grad): every
 * worker, its own included, puts every blob's gradient into the round and takes one Adam
 * step on the mean (sync_step), so the dense parameters and Adam's state are the same on
 * every worker; rows summed as `sum` (peers' deltas; the own ones are in already). With
 * blobs applied D rounds late each gradient is D rounds stale, and no worker runs ahead
 * on momentum of its own. */
typedef enum { SYNC_NONE = 0, SYNC_SUM, SYNC_SCALED, SYNC_AVG, SYNC_MIXED, SYNC_GRAD } sync_rule;
/* "none", "sum", "scaled", "avg", "mixed", "grad"; -1 when unknown. */
int sync_rule_parse(const char *name);
const char *sync_rule_name(int rule);
/* The weights of a peer's delta and of the worker's own, for a group of n. */
void sync_rule_weights(int rule, int n, sync_weight *peer, sync_weight *own);

#endif
