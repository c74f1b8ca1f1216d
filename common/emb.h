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

/* Row index of key, creating (and initialising) the row when absent.
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

#endif
