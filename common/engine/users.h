/* users.h - the user table (UPT user state): per user, a preference vector and counters per scenario.
 *
 * A user id key maps to a row index through an open-addressing hash table (as emb.c);
 * rows are contiguous so a RocksDB store can persist them as they are:
 *   pref (n_scen, d) floats: P[u,k], moved toward the embeddings of the items the user
 *                            clicked (and, with a larger step, converted on) in scenario k;
 *   cnt  (2, n_scen) uint32: impressions seen in scenario k, then preference updates
 *                            (clicks + conversions) in scenario k.
 * With d = 0 only the counters are kept (models without UPT still answer the
 * "new in this scenario, known elsewhere" question). Row pointers are valid until the
 * next users_lookup() that creates a row; indices stay valid. */
#ifndef M3_USERS_H
#define M3_USERS_H
#include <stddef.h>
#include <stdint.h>

typedef struct users_table users_table;

/* An empty table for n_scen (1..64) scenarios and d-wide preferences (d >= 0).
 * On error, NULL is returned and errstr says why. */
users_table *users_new(int n_scen, int d, char *errstr, size_t errstr_size);
/* Free a table; NULL is a no-op. */
void users_destroy(users_table *t);

/* Row of key, created (zero preferences and counters) when absent; the row is marked dirty
 * and stamped with the clock (users_set_clock). -1 when out of memory (nothing changes). */
int64_t users_lookup(users_table *t, uint64_t key);
/* Row of key or -1; never creates, stamps nothing. */
int64_t users_find(const users_table *t, uint64_t key);
/* The row's preferences (n_scen * d floats; NULL when d = 0) and counters: imp[n_scen]
 * followed by upd[n_scen]. */
float *users_pref(users_table *t, int64_t row);
uint32_t *users_cnt(users_table *t, int64_t row);
/* P[u,k] (d floats), or NULL when it has had no update yet (or d = 0). */
const float *users_pref_k(users_table *t, int64_t row, int k);
/* Count the update, then P[u,k] <- P[u,k] + g e (d floats); the first update makes P[u,k]
 * present (from zero). */
void users_update(users_table *t, int64_t row, int k, const float *e, float g);

size_t users_rows(const users_table *t);
/* Bytes held now (index, rows with their bookkeeping): divide by users_rows() for the
 * memory per user. */
size_t users_bytes(const users_table *t);

/* ---- persistence (state.c puts RocksDB behind the table) ----
 * The bookkeeping is rows.h's, shared with emb.h: each row knows its key, a dirty flag
 * (set when users_lookup hands the row out or creates it, or users_mark says it changed;
 * cleared by the owner once the row is written), and the tick and event time of its last
 * use (from users_set_clock), for eviction and expiry. Rows are removed with the last row moving into the hole, and
 * loaded from their stored value. */

/* The tick and event time stamped on every row users_lookup returns or creates, and on
 * every row users_mark is given, from now on. */
void users_set_clock(users_table *t, uint32_t tick, int64_t seen_ms);
/* A row's key, dirty flag, tick and event time of its last use. */
uint64_t users_key(const users_table *t, int64_t row);
int users_dirty(const users_table *t, int64_t row);
uint32_t users_tick(const users_table *t, int64_t row);
int64_t users_seen(const users_table *t, int64_t row);
/* Clear every row's dirty flag (they are all in the store now). */
void users_clean_all(users_table *t);
/* Set or clear one row's dirty flag, stamping nothing (a row restored from elsewhere must
 * reach the store as it is). */
void users_set_dirty(users_table *t, int64_t row, int dirty);
/* Rows with the dirty flag set. */
size_t users_dirty_rows(const users_table *t);
/* The row is in use: stamp the current tick, leave the rest. */
void users_touch(users_table *t, int64_t row);
/* The row changed (or was used in training): dirty, stamped with the tick and event time. */
void users_mark(users_table *t, int64_t row);

/* A row's stored value: pref (n_scen, d) floats, counters (2, n_scen) uint32; native byte
 * order. (state.c appends the row's event time.) */
size_t users_value_bytes(const users_table *t);
void users_value_save(const users_table *t, int64_t row, void *buf);
/* Create key's row from a stored value, clean, stamped with the current tick and with
 * seen_ms as its event time. Returns the row; -1 when out of memory; -2 when key is
 * present or len is wrong (nothing changes). */
int64_t users_value_load(users_table *t, uint64_t key, const void *val, size_t len,
                         int64_t seen_ms);
/* Remove key's row; the last row moves into its place. Returns that row's new index, -1
 * when the removed row was the last, -2 when key is absent. */
int64_t users_remove(users_table *t, uint64_t key);
/* Bytes one row of capacity costs (value and bookkeeping; the hash slots are extra), and
 * the row capacity now; users_reserve sets it to max(rows_cap, rows, 16) (grow or shrink)
 * with the hash slots sized to match. Returns 0, or -1 when out of memory (the table stays
 * valid, the capacity at the smaller of the old and the asked one: rows.h). */
size_t users_row_bytes(const users_table *t);
size_t users_capacity(const users_table *t);
int users_reserve(users_table *t, size_t rows_cap);

#endif
