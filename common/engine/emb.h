/* emb.h - embedding table: 64-bit key -> d-wide row, with lazy per-row Adagrad.
 *
 * An open-addressing (linear probing) hash table maps a key to a row index; rows live
 * contiguously, each as d weights followed by d Adagrad accumulators. The index grows by
 * rehash (power-of-two capacity, load <= 0.7); the row store grows by doubling, so row
 * POINTERS are only valid until the next emb_lookup() that creates a row, while row
 * INDICES stay valid forever.
 *
 * A new row is initialised deterministically from (seed, key): each weight is uniform in
 * [-EMB_INIT_SCALE, EMB_INIT_SCALE] (std ~0.029 for 0.05), drawn from a hash of seed, key
 * and coordinate, so a row's start does not depend on the order keys arrive in. Its
 * accumulators start at the table's init_acc.
 *
 * Each row also has a 32-bit counter (emb_count) for its owner's bookkeeping.
 *
 * Persistence (used by state.c, which puts RocksDB behind the table; the bookkeeping is
 * rows.h's, shared with the user table): each row knows its key, a dirty flag (set when
 * a lookup hands the row out or creates it: it may change; cleared by the owner once the
 * row is written), and the tick and event time of the last lookup (from emb_set_clock),
 * for eviction and expiry. Rows can be removed (the last row
 * moves into the hole) and loaded from their serialized value. None of this may happen
 * between emb_grad_begin() and emb_grad_apply(): the step refers to rows by index.
 *
 * Sparse update, once per minibatch: emb_grad_begin(); emb_grad_add() for every
 * (row, gradient) occurrence (a row may appear many times: gradients are summed);
 * emb_grad_apply() then does one Adagrad step with L2 per touched row:
 *   g += l2 w;  G += g*g;  w -= lr g / (sqrt(G) + 1e-8). */
#ifndef M3_EMB_H
#define M3_EMB_H
#include <stddef.h>
#include <stdint.h>

#define EMB_INIT_SCALE 0.05f

typedef struct emb_table emb_table;

/* Create an empty table of d-wide rows; `touch_cap` is the largest number of
 * emb_grad_add() calls expected per step (more are still accepted: the buffer grows).
 * On error, NULL is returned and errstr says why. */
emb_table *emb_new(int d, uint64_t seed, float init_acc, size_t touch_cap,
                   char *errstr, size_t errstr_size);
/* Free a table; NULL is a no-op. */
void emb_destroy(emb_table *t);

/* Row index of key, creating (and initialising) the row when absent; the row is marked
 * dirty and stamped with the clock (emb_set_clock).
 * Returns -1 only when memory runs out (the table is unchanged then). */
int64_t emb_lookup(emb_table *t, uint64_t key);
/* The same, but a row created now starts from init (d weights) instead of the hash
 * initialisation; init NULL behaves as emb_lookup(). *created (may be NULL) is set to 1
 * when the row was created by this call, else 0. */
int64_t emb_lookup_init(emb_table *t, uint64_t key, const float *init, int *created);
/* Row index of key, or -1 when absent. Never creates. */
int64_t emb_find(const emb_table *t, uint64_t key);

size_t emb_rows(const emb_table *t);
int emb_dim(const emb_table *t);
/* Weights (d) of a row, then its Adagrad accumulators (d). Valid until a row is created. */
float *emb_weights(emb_table *t, int64_t row);
float *emb_accum(emb_table *t, int64_t row);

/* A per-row counter the owner may use (the model counts an item's trained impressions);
 * starts at 0. Valid until a row is created. */
uint32_t *emb_count(emb_table *t, int64_t row);
/* Bytes the table holds now (index, rows with accumulators, counters, touch marks):
 * divide by emb_rows() for the memory per row. */
size_t emb_bytes(const emb_table *t);

/* Copy the weights of rows[0..n) into out (n*d), in order. */
void emb_gather(float *out, const emb_table *t, const int64_t *rows, int n);

/* Start collecting the gradients of a new step (O(1): no clearing of rows). */
void emb_grad_begin(emb_table *t);
/* grad_of(row) += g (d floats). Returns 0, or -1 when memory runs out. */
int emb_grad_add(emb_table *t, int64_t row, const float *g);
/* The summed gradient of row since emb_grad_begin(), or NULL if it was not touched. */
const float *emb_grad_get(const emb_table *t, int64_t row);
/* Number of distinct rows touched since emb_grad_begin(). */
size_t emb_grad_touched(const emb_table *t);
/* One Adagrad step (with L2 l2) on every touched row; ends the step. */
void emb_grad_apply(emb_table *t, float lr, float l2);
/* Called by emb_grad_apply() before it changes any row, with the n distinct rows it is about
 * to step: the sync module (sync.h) keeps their values at its last sync point. fn NULL
 * removes the hook; one hook per table. The hook must not create or remove rows. */
typedef void (*emb_step_hook)(void *ud, emb_table *t, const uint32_t *rows, size_t n);
void emb_set_step_hook(emb_table *t, emb_step_hook fn, void *ud);

/* ---- persistence ---- */

/* The tick and event time stamped on every row a lookup returns or creates from now on. */
void emb_set_clock(emb_table *t, uint32_t tick, int64_t seen_ms);
/* A row's key, dirty flag, tick and event time of its last lookup. */
uint64_t emb_key(const emb_table *t, int64_t row);
int emb_dirty(const emb_table *t, int64_t row);
void emb_set_dirty(emb_table *t, int64_t row, int dirty);
uint32_t emb_tick(const emb_table *t, int64_t row);
int64_t emb_seen(const emb_table *t, int64_t row);
/* Clear every row's dirty flag (they are all in the store now). */
void emb_clean_all(emb_table *t);
/* Rows with the dirty flag set. */
size_t emb_dirty_rows(const emb_table *t);
/* Stamp the current tick on a row (it is in use) without marking it dirty. */
void emb_touch(emb_table *t, int64_t row);
/* Bytes one row of capacity costs (weights, accumulators and bookkeeping; the hash slots
 * are extra), and the row capacity now. */
size_t emb_row_bytes(const emb_table *t);
size_t emb_capacity(const emb_table *t);
/* Set the row capacity to max(rows_cap, rows, 16), growing or shrinking, and the hash
 * slots to what that many rows need (load <= 0.7). Lookups then create up to that many
 * rows without reallocating. Returns 0, or -1 when memory runs out (the table stays valid,
 * possibly with only the slots resized, and the capacity at the smaller of the old and
 * the asked one: rows.h). */
int emb_reserve(emb_table *t, size_t rows_cap);
/* Remove key's row. The last row moves into its place: returns that new index, -1 when
 * the removed row was the last one (nothing moved), -2 when key is absent. Row indices
 * other than the moved one are unchanged. */
int64_t emb_remove(emb_table *t, uint64_t key);

/* A row's stored value: weights (d floats), accumulators (d floats), counter (u32), event
 * time of its last lookup (i64), native byte order: emb_value_bytes() bytes. */
size_t emb_value_bytes(const emb_table *t);
void emb_value_save(const emb_table *t, int64_t row, void *buf);
/* The event time in a stored value (INT64_MIN when len is wrong). */
int64_t emb_value_seen(const emb_table *t, const void *val, size_t len);
/* Create key's row from a stored value, clean (not dirty), stamped with the current tick
 * (its event time is the stored one). Returns the row; -1 when memory runs out; -2 when
 * key is already present or len is not emb_value_bytes() (nothing changes then). */
int64_t emb_value_load(emb_table *t, uint64_t key, const void *val, size_t len);

#endif
