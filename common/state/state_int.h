/* state_int.h - the state module's private parts: struct state and the steps its files
 * share (prefix state__). Only common/state/state*.c include it.
 *
 * The files: state.c opens, restores and closes; state_batch.c is the learner's hooks
 * (before a forward pass: load, admit, expire; after training: mark the users);
 * state_memory.c keeps the tables in the memory budget; state_checkpoint.c writes
 * checkpoints (with the expiry of stored rows); state_stats.c reports. */
#ifndef M3_STATE_INT_H
#define M3_STATE_INT_H
#include <stddef.h>
#include <stdint.h>

#include "engine/emb.h"
#include "engine/model.h"
#include "engine/users.h"
#include "state/state.h"
#include "stream/pending.h"

#define STATE_FORMAT "m3rec-state 1"
#define STATE__KEY_CONFIG "state"
#define STATE__KEY_LEARNER "learner"
#define STATE__KEY_STREAM "stream"
#define STATE__KEY_ADMIT "admit"
#define STATE__SKETCH_W (1u << 20)     /* counters per sketch row; two rows of uint8 */
#define STATE__SKETCH_DECAY (10ull * STATE__SKETCH_W)   /* sightings between halvings */
#define STATE__SCAN_PER_CKPT 20000     /* stored rows checked for expiry per checkpoint */
#define STATE__LOW_WATER 0.8           /* eviction frees down to this share of the budget */
#define STATE__FALLBACK (INT64_MIN + 1) /* the value whose key is a slot's fallback row */
#define STATE__SLOT_BYTES 16           /* one hash slot of emb.c / users.c (key + row, padded) */
#define STATE__LRU_BUCKETS 4096        /* eviction's histogram of last-use ticks */

/* per-batch key resolution */
enum { K_PRESENT = 1, K_MISSING, K_NEW, K_FALLBACK };

typedef struct {
    uint64_t key;
    uint32_t gen;
    uint8_t what;
} state__kslot;

typedef struct {          /* a set of u64 keys, cleared in O(1) by a generation number */
    state__kslot *v;
    size_t cap;           /* power of two */
    uint32_t gen;
} state__kset;

typedef struct {
    uint64_t *v;
    size_t n, cap;
} state__u64s;

struct state {
    const m3_cfg *cfg;
    lrn *L;
    m3_model *m;
    emb_table *emb;
    users_table *users;
    store *s;
    store_batch *b;
    int fresh;
    int nc;                            /* categorical slots */
    uint32_t tick;                     /* prepare calls so far: the LRU clock */
    int64_t clock;                     /* newest event time trained on: the expiry clock */
    int64_t batch_clock;               /* the clock of the minibatch being prepared */
    int64_t expire_ms;
    size_t budget;                     /* bytes, 0 = none */
    int want_ckpt;
    /* admission */
    int admit_n;
    uint8_t admit_slot[M3_MAX_CAT];
    uint64_t missing_key[M3_MAX_CAT], fallback_key[M3_MAX_CAT];
    uint8_t *sketch;                   /* (2, STATE__SKETCH_W), NULL when admit_n == 1 */
    uint64_t sketch_adds;
    int sketch_dirty;
    /* deletes for the next checkpoint; the keys a batch misses */
    state__u64s emb_del, user_del, miss;
    state__kset kemb, kuser;
    uint64_t scan_emb, scan_user;      /* expiry scan cursors (keys) */
    /* stored offsets, updated by checkpoints */
    state_offset *offs;
    int n_offs, cap_offs;
    /* scratch */
    unsigned char *vbuf;
    size_t vcap;
    uint64_t lru[STATE__LRU_BUCKETS]; /* eviction scratch: bytes per tick bucket */
    /* the changelog (group.changelog): NULL when off */
    chg *chg;
    state_commit_fn commit_fn;
    void *commit_ud;
    char chg_err[512];                 /* the first changelog write that failed */
    char dir[CFG_PATH_MAX];
    int failed;
    char err[512];
    state_stats st;
};

/* ---- state.c: shared small steps ---- */

/* Record the first failure of a hook (printf-style message); later ones are dropped. */
void state__fail(state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append v. Returns 0, or -1 when out of memory. */
int state__u64_push(state__u64s *a, uint64_t v);
/* Rows last seen before this event time are expired (INT64_MIN: none). */
int64_t state__dead_before(const state *st);
/* Read meta key name: 1 with *val (malloc'd), 0 when absent, -1 with msg. */
int state__get_meta(state *st, const char *name, void **val, size_t *len, char *msg, size_t n);
/* Add a meta put to the write batch. Returns 0, or nonzero when the batch failed. */
int state__put_meta(state *st, const char *name, const void *val, size_t len);
/* The learner's rollback hook (lrn_rollback_fn): the last checkpoint's dense blob. */
int state__rollback(void *ud, int model);
/* Set the stored offset of topic/partition. Returns 0, or -1 when out of memory. */
int state__offset_set(state *st, const char *topic, int32_t partition, int64_t next);
/* A pending-family key: <src u32 BE><id> (id NULL: the late ring's key). Returns its length. */
size_t state__pend_key(unsigned char *key, int src, const char *id);

/* ---- state_changelog.c: the changelog's records of a checkpoint ---- */

/* Write one record through the changelog (state_set_changelog), when there is one: a user
 * state or user-id row by key, a pending entry (val NULL: its tombstone), late ring or
 * watermark by source. Returns 0 (written or not for the changelog), or 1 when it failed
 * (st->chg_err says why; the checkpoint must fail). */
int state__chg_key(state *st, int kind, uint64_t key, const void *val, size_t len);
int state__chg_src(state *st, int kind, int src, const char *id, const void *val, size_t len);
/* The meta record of every source of an owned partition (its watermark and counts travel
 * with it). Returns 0, or 1 as above. */
int state__chg_metas(state *st);

/* ---- state_batch.c: the learner's hooks ---- */

/* Size the per-batch key sets for max_batch examples. Returns 0, or -1 when out of memory. */
int state__batch_init(state *st, int max_batch);
void state__prepare(void *ud, m3_example *ex, int B, int n_imp, int train);
void state__trained(void *ud, const m3_example *ex, int B, int n_imp);
int state__pend_load(void *ud, int tag, const char *id, pend_entry *out);

/* ---- state_memory.c: the memory budget ---- */

/* What the tables hold now (capacity: an upper bound of the pages they can touch). */
size_t state__mem(const state *st);
/* Make room for the rows a minibatch will create, within the budget when there is one. */
void state__room(state *st, size_t new_e, size_t new_u);
/* Evict least recently used clean rows until the tables fit in target bytes. Returns 1
 * when they still do not (too many dirty rows). */
int state__evict(state *st, size_t target);

#endif
