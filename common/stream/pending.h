/* pending.h - the delayed-conversion join: clicked impressions wait for a conversion or
 * for their attribution window (event time) to close.
 *
 * A clicked impression is added with its m3_example, the models' predicted p_ctcvr and
 * p_cvr (the CVR AUC measures p_cvr when the label settles) and the models' snapshots of
 * what they scored it with (m3_snap_save), so that its settled row trains on the same
 * input.
 * It leaves the table exactly once: as a CTCVR positive when its conversion arrives
 * within the window (pend_convert), or as a CTCVR negative when the event-time
 * watermark passes imp_ts + window (pend_expire). Released entries carry training labels
 * y_click = 1, y_conv = 1/0, w_ctr = 0 (the click was trained on with the impression),
 * w_ctcvr = 1.
 *
 * Ids of recently expired entries are remembered (a bounded FIFO) to tell a late
 * conversion from one for an impression never seen.
 *
 * A store behind the table (state.c) keeps memory bounded: pend_sync() reports the
 * entries not yet in the store and the stored ones released since; once they are written,
 * pend_sync_done() drops their bodies from memory, keeping ~100 bytes per entry (id, time,
 * order). A release reads a dropped body back through the loader (pend_set_loader). At
 * start-up pend_restore() rebuilds the index from the store. Without a store nothing is
 * ever dropped. */
#ifndef M3_PENDING_H
#define M3_PENDING_H
#include <stddef.h>
#include <stdint.h>

#include "base/event.h"
#include "engine/model.h"

#define PEND_MAX_MODELS 8
#define PEND_SNAP_MAX M3_SNAP_MAX   /* bytes of model snapshots an entry carries (m3_snap_bytes) */

typedef struct {
    char impression_id[M3_ID_MAX];
    m3_example ex;                     /* ex.scenario: scenario index; ex.ts_ms: impression time */
    float p_ctcvr[PEND_MAX_MODELS];    /* primary first, then shadows; n_models of them */
    float p_cvr[PEND_MAX_MODELS];      /* the same models' p_cvr; valid when has_cvr */
    int n_models;
    uint8_t has_cvr;                   /* 0: added without p_cvr, or stored in format 0
                                          (before p_cvr was kept): no CVR sample */
    uint8_t elapsed;                   /* set on release: its elapsed time had passed, a
                                          fake-negative copy went out (pend_elapse) */
    uint8_t copy;                      /* 1: this is that copy (the entry stays pending) */
    uint32_t snap_len;                 /* bytes of snap in use (last member: a body in the
                                          table is allocated only this far) */
    _Alignas(8) unsigned char snap[PEND_SNAP_MAX];  /* the models' UPT inputs as scored,
                                                       in model order (m3_snap_save) */
} pend_entry;

typedef struct pend_table pend_table;

/* A table whose entries wait window_ms (> 0) of event time. initial_capacity sizes the
 * first allocation (it grows as needed); the late-id memory keeps the last
 * initial_capacity expired ids, clamped to 4096..262144 (64 bytes each). On error, NULL is returned and errstr says why. */
pend_table *pend_new(int64_t window_ms, size_t initial_capacity, char *errstr, size_t errstr_size);
/* Free a table and everything pending in it; NULL is a no-op. */
void pend_destroy(pend_table *t);

/* Add a clicked impression, keyed by impression_id, waiting from ex->ts_ms. ex, the
 * first n_models (0..PEND_MAX_MODELS) values of p_ctcvr and of p_cvr, and snap_len
 * (0..PEND_SNAP_MAX) bytes of snap are copied (p_ctcvr and snap may be NULL when their
 * count is 0; p_cvr may be NULL: the entry then has no CVR prediction, has_cvr 0). Returns 0
 * when added; 1 when the id is already pending (the first is kept, nothing changes); -1
 * when the id is empty or longer than M3_ID_MAX - 1 bytes, a count is out of range, or
 * memory ran out (nothing changes). */
int pend_add(pend_table *t, const char *impression_id, const m3_example *ex,
             const float *p_ctcvr, const float *p_cvr, int n_models, const void *snap,
             size_t snap_len);

/* A conversion for impression_id at event time ts_ms:
 *   1  pending and ts_ms - imp_ts <= window: removed and copied to *out (may be NULL) as a
 *      CTCVR positive (y_click 1, y_conv 1, w_ctr 0, w_ctcvr 1);
 *   2  late: its window closed, either already expired (id remembered) or still pending
 *      with ts_ms - imp_ts > window; a pending one stays and will expire as a negative;
 *   0  unknown id (never added, converted already, or expired too long ago). */
int pend_convert(pend_table *t, const char *impression_id, int64_t ts_ms, pend_entry *out);

/* A diagnostic (lrn_reveal_negative): impression_id, pending, is known not to convert -
 * removed and copied to *out (may be NULL) as pend_expire's negatives are, its id
 * remembered as expired ones are. Returns 1, or 0 when it is not pending. */
int pend_settle_negative(pend_table *t, const char *impression_id, pend_entry *out);

/* Advance the event-time watermark to max(current, watermark_ms) and release up to max
 * entries whose window closed (imp_ts + window < watermark), oldest impression first
 * (ties in insertion order), into out[] as CTCVR negatives (y_click 1, y_conv 0, w_ctr 0,
 * w_ctcvr 1). Returns how many; call again while it returns max. */
int pend_expire(pend_table *t, int64_t watermark_ms, pend_entry *out, int max);

/* ---- an elapsed time (join.feedback=esdfm with join.esdfm.elapsed.ms) ----
 *
 * With an elapsed time e > 0, each entry once e of event time has passed since its
 * impression (imp_ts + e < watermark) is copied out by pend_elapse, still pending, as a
 * fake negative (labels as pend_expire's, copy = 1), and every later release says so
 * (elapsed = 1). An entry restored (pend_restore) older than the restored watermark - e
 * counts as elapsed: its copy went out before the restart (one in a backlog that had not
 * gone out at the checkpoint is lost: its click then trains no fake negative).
 * pend_set_elapse is called once, before any entry is added; e <= 0 turns it off (the
 * default). pend_elapse advances the watermark as pend_expire does and copies up to max
 * entries in (impression time, insertion) order; call again while it returns max. */
void pend_set_elapse(pend_table *t, int64_t elapse_ms);
int pend_elapse(pend_table *t, int64_t watermark_ms, pend_entry *out, int max);

/* ---- the store behind the table ---- */

/* Reads the stored body of impression_id into *out (its labels are then set by the
 * release). Returns 0, or -1 (the loader records why). tag: as given to pend_set_loader. */
typedef int (*pend_load_fn)(void *ud, int tag, const char *impression_id, pend_entry *out);
void pend_set_loader(pend_table *t, pend_load_fn fn, void *ud, int tag);
/* Releases whose body could not be read (the loader failed or none was set): the entry
 * was released with an empty example. Nonzero means the state is no longer exact. */
uint64_t pend_load_errors(const pend_table *t);

typedef void (*pend_put_fn)(void *ud, const pend_entry *e, uint64_t seq);
typedef void (*pend_del_fn)(void *ud, const char *impression_id);
/* Report to del every stored entry released since the last pend_sync_done(), then to put
 * every pending entry not in the store yet (with its insertion seq, which orders ties in
 * expiry). Returns how many calls were made. Nothing else may touch the table until
 * pend_sync_done(): it then marks the reported entries stored and frees their bodies (call
 * it only once they are durably written), and clears the late-ring dirty flag. */
size_t pend_sync(pend_table *t, pend_put_fn put, pend_del_fn del, void *ud);
void pend_sync_done(pend_table *t);

/* Add an entry that is in the store (body left there) with its impression time and seq.
 * Returns 0; 1 when the id is already pending; -1 for a bad id or out of memory. */
int pend_restore(pend_table *t, const char *impression_id, int64_t ts_ms, uint64_t seq);
/* The next insertion seq, and restoring it with the watermark (each only moves forward). */
uint64_t pend_next_seq(const pend_table *t);
void pend_set_clock(pend_table *t, int64_t watermark_ms, uint64_t next_seq);

/* The ring of recently expired ids: changed since the last pend_sync_done()? Its stored
 * form is the ids, oldest first, each NUL-terminated: pend_late_save writes it to buf when
 * cap suffices and returns its size either way; pend_late_load appends a stored ring.
 * Returns 0, or -1 on a malformed one. */
int pend_late_dirty(const pend_table *t);
size_t pend_late_save(const pend_table *t, void *buf, size_t cap);
int pend_late_load(pend_table *t, const void *buf, size_t len);

/* An entry's stored value (the id is the key, not part of it): seq, impression time,
 * scenario, format and model count, slices, labels, snapshot length, p_ctcvr[n_models],
 * p_cvr[n_models] (format 1 only), the n_cat keys and n_num numerics of its example, the
 * snapshots; native byte order. The model-count byte holds the format in its high nibble:
 * 1 (PEND_ENTRY_FORMAT) for an entry with p_cvr, 0 for one without - the format written
 * before p_cvr was kept, so an older store or changelog decodes, with has_cvr 0 (its label
 * settles and trains; the CVR AUC has no sample of it, met_counters.cvr_unscored). An
 * older build reads a count above PEND_MAX_MODELS in a format 1 value and refuses it.
 * pend_entry_bytes() is the size with p_cvr (an entry without is n_models * 4 shorter).
 * encode returns the bytes written, or 0 when cap is short or a count is out of range.
 * head reads seq and time (-1 when too short); decode fills *e (-1 when the value does not
 * match n_cat/n_num or its format is unknown). */
#define PEND_ENTRY_FORMAT 1
size_t pend_entry_bytes(int n_models, int n_cat, int n_num, size_t snap_len);
size_t pend_entry_encode(const pend_entry *e, uint64_t seq, int n_cat, int n_num, void *buf,
                         size_t cap);
int pend_entry_head(const void *buf, size_t len, uint64_t *seq, int64_t *ts_ms);
int pend_entry_decode(pend_entry *e, const char *impression_id, int n_cat, int n_num,
                      const void *buf, size_t len);

/* Drop every pending entry and the late ring (the changelog restore replaces a source's
 * join with what its previous owner wrote): the stored entries are reported to del at the
 * next pend_sync, the late ring counts as changed. The watermark and seq stay. */
void pend_clear(pend_table *t);

/* Entries pending now. */
size_t pend_size(const pend_table *t);
/* The watermark so far (INT64_MIN before the first pend_expire). */
int64_t pend_watermark(const pend_table *t);

#endif
