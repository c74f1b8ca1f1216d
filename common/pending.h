/* pending.h - the delayed-conversion join: clicked impressions wait for a conversion or
 * for their attribution window (event time) to close.
 *
 * A clicked impression is added with its m3_example and the models' predicted p_ctcvr.
 * It leaves the table exactly once: as a CTCVR positive when its conversion arrives
 * within the window (pend_convert), or as a CTCVR negative when the event-time
 * watermark passes imp_ts + window (pend_expire). Released entries carry training labels
 * y_click = 1, y_conv = 1/0, w_ctr = 0 (the click was trained on with the impression),
 * w_ctcvr = 1.
 *
 * This is the in-memory table; the interface does not expose storage, so a RocksDB-backed
 * version can keep it. Ids of recently expired entries are remembered (a bounded FIFO)
 * to tell a late conversion from one for an impression never seen. */
#ifndef M3_PENDING_H
#define M3_PENDING_H
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "model.h"

#define PEND_MAX_MODELS 8

typedef struct {
    char impression_id[M3_ID_MAX];
    m3_example ex;                     /* ex.scenario: scenario index; ex.ts_ms: impression time */
    float p_ctcvr[PEND_MAX_MODELS];    /* primary first, then shadows; n_models of them */
    int n_models;
} pend_entry;

typedef struct pend_table pend_table;

/* A table whose entries wait window_ms (> 0) of event time. initial_capacity sizes the
 * first allocation (it grows as needed); the late-id memory keeps the last
 * initial_capacity expired ids, clamped to 4096..262144 (64 bytes each). On error, NULL is returned and errstr says why. */
pend_table *pend_new(int64_t window_ms, size_t initial_capacity, char *errstr, size_t errstr_size);
/* Free a table and everything pending in it; NULL is a no-op. */
void pend_destroy(pend_table *t);

/* Add a clicked impression, keyed by impression_id, waiting from ex->ts_ms. ex and the
 * first n_models (0..PEND_MAX_MODELS) values of p_ctcvr are copied (p_ctcvr may be NULL
 * when n_models is 0). Returns 0 when added; 1 when the id is already pending (the first
 * is kept, nothing changes); -1 when the id is empty or longer than M3_ID_MAX - 1 bytes,
 * n_models is out of range, or memory ran out (nothing changes). */
int pend_add(pend_table *t, const char *impression_id, const m3_example *ex,
             const float *p_ctcvr, int n_models);

/* A conversion for impression_id at event time ts_ms:
 *   1  pending and ts_ms - imp_ts <= window: removed and copied to *out (may be NULL) as a
 *      CTCVR positive (y_click 1, y_conv 1, w_ctr 0, w_ctcvr 1);
 *   2  late: its window closed, either already expired (id remembered) or still pending
 *      with ts_ms - imp_ts > window; a pending one stays and will expire as a negative;
 *   0  unknown id (never added, converted already, or expired too long ago). */
int pend_convert(pend_table *t, const char *impression_id, int64_t ts_ms, pend_entry *out);

/* Advance the event-time watermark to max(current, watermark_ms) and release up to max
 * entries whose window closed (imp_ts + window < watermark), oldest impression first
 * (ties in insertion order), into out[] as CTCVR negatives (y_click 1, y_conv 0, w_ctr 0,
 * w_ctcvr 1). Returns how many; call again while it returns max. */
int pend_expire(pend_table *t, int64_t watermark_ms, pend_entry *out, int max);

/* Entries pending now. */
size_t pend_size(const pend_table *t);
/* The watermark so far (INT64_MIN before the first pend_expire). */
int64_t pend_watermark(const pend_table *t);

#endif
