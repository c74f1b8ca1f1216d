/* state.h - durable learner state: the primary model's embedding rows and user states in
 * a memory budget with RocksDB behind them, the pending join in the store, and
 * checkpoints that write everything with the input offsets in one atomic batch.
 *
 * state_open() opens (or creates) the store of cfg->store_dir, checks that it holds the
 * state of this configuration, restores the learner from it (dense parameters, stream
 * state, counters, pending join; rows and user states stay in the store and load on
 * demand) and installs itself behind the learner:
 *  - before every forward pass it loads the rows and user states the minibatch needs that
 *    are not in memory (one batched multi-get per family), applies frequency admission
 *    (an id without enough sightings uses its slot's shared fallback row) and expiry (a
 *    row unseen for emb.expire.ms of event time starts fresh), and, over the memory budget,
 *    evicts the least recently used rows that the store already holds;
 *  - pending impressions spill their bodies to the store once checkpointed.
 * state_checkpoint() then writes, in one RocksDB write batch: every row and user state
 * changed since the last checkpoint, the pending join's changes, the dense blob, the
 * learner's stream state and counters, and the input offsets the caller passes. Call it only
 * at a learner boundary (lrn_at_boundary): the state then corresponds exactly to the input
 * up to those offsets, so a restart that seeks there redoes nothing and loses nothing.
 *
 * Only the primary model is persisted (cfg_check refuses model.shadow with store.dir).
 * Library code: nothing here exits; errors fill errstr. A store read that fails inside a
 * learner hook cannot be returned there: state_failed() reports it, and the caller must
 * stop without checkpointing. One thread. */
#ifndef M3_STATE_H
#define M3_STATE_H
#include <stddef.h>
#include <stdint.h>

#include "config/cfg.h"
#include "base/json.h"
#include "stream/changelog.h"
#include "stream/learner.h"
#include "state/store.h"

typedef struct state state;

/* The next offset to consume of one input partition ("sim" partition 0 for m3rec-offline). */
typedef struct {
    char topic[STORE_TOPIC_MAX + 1];
    int32_t partition;
    int64_t next_offset;
} state_offset;

typedef struct {
    double open_ms;                   /* state_open: store open + restore */
    double store_open_ms;             /* of which store_open (WAL replay after a crash) */
    double rss_open_mb;               /* process RSS right after state_open */
    uint64_t pending_restored;        /* pending impressions found at open */
    uint64_t checkpoints, forced;     /* checkpoints; of which asked for by the memory budget */
    uint64_t ckpt_rollbacks;          /* checkpoints that found the dense parameters non-finite
                                         and rolled them back before writing */
    double ckpt_ms_total, ckpt_ms_max, ckpt_ms_last;
    uint64_t ckpt_bytes;              /* serialized write-batch bytes of all checkpoints */
    uint64_t rows_written, users_written, pending_written, deletes;
    /* embedding rows: key lookups of minibatch rows found in memory, not in memory, loaded
     * from the store, created new, evicted, expired; uses served by a fallback row */
    uint64_t emb_hits, emb_misses, emb_loads, emb_created, emb_evicted, emb_expired;
    uint64_t fallback_uses;
    uint64_t user_hits, user_misses, user_loads, user_evicted, user_expired;
    size_t emb_rows, user_rows;       /* in memory now */
    size_t mem_bytes, budget_bytes;   /* the tables' memory now (capacity), the budget (0: none) */
} state_stats;

/* Open the state of cfg->store_dir (must be non-empty) for learner L (made from the same
 * cfg, nothing trained yet; both must outlive the state). `layout` describes the inputs
 * (e.g. the topics and their partition count): the learner's sources are numbered from
 * them, so a store written with another layout is refused, like one written with another
 * model or feature configuration. Returns the state, or NULL with errstr filled: the
 * store's own refusals (locked, incompatible format, corrupt: see store.h), "store D holds
 * the state of another configuration: ...", "store D: cannot restore ...". On a refusal
 * the store's data is not changed. */
state *state_open(const m3_cfg *cfg, lrn *L, const char *layout, char *errstr,
                  size_t errstr_size);
/* 1 when state_open found no earlier checkpoint (a fresh model). */
int state_fresh(const state *st);

/* The stored next offset of topic/partition: 1 with *next set, or 0 when none. */
int state_offset_get(const state *st, const char *topic, int32_t partition, int64_t *next);

/* Write a checkpoint with the input offsets offs[0..n) (partitions without new input may
 * be left out: their stored offsets stay). Only at a learner boundary. Returns 0, or -1
 * with errstr (then nothing of it is applied; stop: the in-memory state can no longer be
 * checkpointed consistently). */
int state_checkpoint(state *st, const state_offset *offs, int n, char *errstr,
                     size_t errstr_size);
/* 1 when the memory budget is full of rows changed since the last checkpoint: take one at
 * the next boundary (rows can only be evicted once the store has them). */
int state_want_checkpoint(const state *st);
/* 1 when a hook failed (a store read or memory): errstr says why; the state must not be
 * checkpointed any more. */
int state_failed(const state *st, char *errstr, size_t errstr_size);

void state_stats_get(const state *st, state_stats *out);
/* Write the stats as one JSON object value (with RocksDB's estimate of the rows stored). */
void state_write_json(state *st, json_writer *w);

/* ---- the changelog (group.changelog, stream/changelog.h) ----
 * With a changelog set, every checkpoint also writes, through it, the records of what it
 * covers that belong to an input partition: each changed user state and user-id row (of
 * users the changelog has a partition for), each pending entry added (a tombstone for each
 * one released), each changed late ring and each source's watermark. The commit hook runs
 * after the write batch is built and before the store commits it: the checkpoint is
 * committed locally only when it returns 0 (the worker commits its Kafka transaction
 * there, so the local store is never ahead of Kafka). c and the hook's ud outlive st. */
typedef int (*state_commit_fn)(void *ud, char *errstr, size_t errstr_size);
void state_set_changelog(state *st, chg *c, state_commit_fn commit, void *ud);
/* The sink chg_restore installs a partition's records into: user states and user-id rows
 * into memory (replacing what is there, dirty: the next checkpoint stores them), pending
 * entries into their source's join (after its local entries are dropped), late rings and
 * watermarks. Call at a learner boundary. */
chg_sink state_changelog_sink(state *st);

/* Detach from the learner and close the store (flushing its memtables; no checkpoint).
 * Returns 0, or -1 with errstr when the flush failed (checkpoints are durable anyway).
 * NULL: 0. */
int state_close(state *st, char *errstr, size_t errstr_size);

#endif
