/* learner.h - the prequential loop: events in, predictions out, then the model learns.
 *
 * Kafka-free, so the worker, the offline benchmark and the tests share it. Impressions
 * and score requests are queued into a minibatch; lrn_run_batch() (called when the
 * batch is full, when the linger time is up, and at shutdown) runs every model forward
 * on the batch, emits the primary model's predictions, feeds the metrics, and only then
 * trains every model on it (predict first, then train). Clicked impressions wait in
 * the pending join for their conversion or the end of the attribution window, where
 * their label settles and is measured (CTCVR, and CVR over the clicks: MET_CVR).
 * join.feedback says when their CTCVR term trains: "window" when it settles; "fnw" and
 * "defer" at once as a negative, then a positive copy when the conversion arrives (defer
 * also trains a negative copy when the window closes unconverted), importance-weighted
 * from the training model's own p_cvr;
 * "esdfm" as fnw, the fake negatives weighted by an auxiliary model of how likely they are
 * real negatives, trained on the settled labels (stream/esdfm.h), and trained
 * join.esdfm.elapsed.ms after the click when that is set (a conversion before is a plain
 * positive; docs/model.md, "Delayed feedback"). */
#ifndef M3_LEARNER_H
#define M3_LEARNER_H
#include <stddef.h>
#include <stdint.h>
#include "config/cfg.h"
#include "base/event.h"
#include "base/json.h"
#include "report/metrics.h"
#include "engine/model.h"
#include "stream/pending.h"

typedef struct lrn lrn;

/* Called once per prediction (impressions and score-request candidates) during a batch;
 * p is valid only during the call. Never with a non-finite p_ctr, p_cvr or p_ctcvr: such
 * a score is withheld and counted (met_board_guard: nonfinite_predictions). */
typedef void (*lrn_emit_fn)(void *ud, const m3_prediction *p);

/* Create the models (model.arch and model.shadow), the pending join and the metrics.
 * On error, NULL is returned and errstr says why. cfg must outlive the learner. */
lrn *lrn_new(const m3_cfg *cfg, char *errstr, size_t errstr_size);
void lrn_destroy(lrn *L);

/* ---- admission: what may reach the models ----
 *
 * An input event is admissible when every configured numeric feature lies in
 * [-features.num.max_abs, features.num.max_abs] (with features.num.clip, a value outside is
 * clipped instead and counted) and, for an impression or a conversion, its event time is
 * plausible: not more than time.max.ahead.ms ahead of the learner's clock (lrn_clock),
 * unless the event just before it was refused as ahead and agrees with it (within
 * time.max.ahead.ms: two in a row say that time jumped), and not more than
 * time.max.behind.ms behind its source's clock. Before the learner has a clock (its first
 * events), the future side is bounded by the wall clock instead (no confirmation): one
 * far-future first event cannot become the anchor. A score request's time moves no clock,
 * but is checked too: not more than time.max.ahead.ms ahead of the later of the newest
 * event time and the wall clock (a live request runs ahead of a lagging event stream),
 * nor more than time.max.behind.ms behind the learner's clock (it has no partition); it
 * neither confirms nor breaks a jump.
 *
 * Returns 0 (admissible), or 1 with reason naming the field, the value and the key to
 * change, e.g. "item_num.price=-3.4e+38 outside [-1e+06, 1e+06] (features.num.max_abs)";
 * the refusal is counted (lrn_admission_counts) and the caller sends the message to the
 * DLQ. Call it before lrn_impression, lrn_conversion or lrn_request and pass on only what
 * it admits: it remembers a far-ahead refusal for the confirmation. Other event types are
 * admissible (the caller refuses them). */
int lrn_admit(lrn *L, const m3_event *ev, int src, char *reason, size_t reason_size);

typedef struct {
    uint64_t num_refused;    /* events refused: a numeric feature outside the range */
    uint64_t num_clipped;    /* numeric values clipped (features.num.clip) */
    uint64_t time_ahead;     /* events refused: too far ahead of the clock */
    uint64_t time_behind;    /* events refused: too far behind their source's clock */
    uint64_t time_confirmed; /* far-ahead events admitted because the one before agreed */
} lrn_admission;
const lrn_admission *lrn_admission_counts(const lrn *L);

/* The learner's event-time clock: the newest of its sources' clocks. A source's clock is
 * its newest event time, except when that event jumped more than join.lateness.ms ahead
 * of the one before: then the second newest, until another event confirms the jump. So
 * one message cannot move it; the join's windows close and the state's rows expire by
 * these clocks. INT64_MIN until a source has seen two events. */
int64_t lrn_clock(const lrn *L);

/* Sources: `src` names the ordered input an event came from (the worker numbers its topic
 * partitions 0, 1, ...). Each source keeps its own event-time clock: windows of the clicked
 * impressions of a source close when that source's event time passes them.
 *
 * Queue an impression; arrival_ms is when it entered Kafka (message timestamp), used for
 * the latency metric (0 = unknown). Runs the batch first when it is full. Returns 0, or
 * -1 with reason (e.g. unknown scenario): the caller sends the message to the DLQ. */
int lrn_impression(lrn *L, const m3_impression *im, int src, int64_t arrival_ms,
                   lrn_emit_fn emit, void *ud, char *reason, size_t reason_size);

/* Join a conversion to its pending impression (of the same source). Returns 0 (joined, late or unknown are
 * counted), or -1 with reason for an invalid conversion (unknown scenario). */
int lrn_conversion(lrn *L, const m3_conversion *cv, int src, lrn_emit_fn emit, void *ud,
                   char *reason, size_t reason_size);

/* Queue the candidates of a score request for scoring in the next batch (after training,
 * so they see the freshest model). Returns 0, or -1 with reason. */
int lrn_request(lrn *L, const m3_score_request *rq, int64_t arrival_ms,
                lrn_emit_fn emit, void *ud, char *reason, size_t reason_size);

/* Run the queued minibatch, in this order: every model scores it, the primary model's
 * predictions of its impressions go to emit, the metrics take every model's, clicked
 * impressions join the pending table, then every model trains on it (with the settled
 * CTCVR rows). Then the queued score-request candidates are scored by the freshly trained
 * primary model and emitted. Nothing queued: nothing happens. emit may be NULL.
 * The guard (docs/model.md): a model's refused step (non-finite loss or gradient) counts
 * in met_board_guard's skipped_steps (its rows in skipped_rows), with a stderr line at the 1st, 2nd, 4th... one; if
 * its dense parameters are then found non-finite it rolls back at once (rollbacks). */
void lrn_run_batch(lrn *L, lrn_emit_fn emit, void *ud);

/* At the end of a stream: lrn_run_batch(), then more batches while the last one was
 * full of settled rows, so every clicked impression whose window the clock has closed is
 * settled, measured and trained (lrn_run_batch alone settles at most model.max_batch -
 * batch.size of them). */
void lrn_drain(lrn *L, lrn_emit_fn emit, void *ud);

/* A diagnostic bound, for m3rec-offline --reveal-negatives: impression_id (from source src),
 * a click that will not convert within the window, has its CTCVR label revealed now as a
 * negative - settled, measured and trained with the next minibatch (with its own when still
 * queued), as if its window had closed. What no real stream can know: a learner told every
 * label after the conversions' own delay bounds what a delayed-feedback method can reach
 * (docs/results.md, "Delayed feedback: the bound"). Returns 1, or 0 when it is not waiting
 * (unknown, unclicked, converted, or its window already closed). */
int lrn_reveal_negative(lrn *L, int src, const char *impression_id, lrn_emit_fn emit,
                        void *ud);

/* Events queued and not yet run in a minibatch. */
int lrn_queued(const lrn *L);

/* The metrics scoreboard (owned by the learner). */
met_board *lrn_board(lrn *L);
/* The configuration the learner was made with. */
const m3_cfg *lrn_cfg(const lrn *L);

/* Training steps taken so far: the model version stamped on predictions. */
int64_t lrn_model_version(const lrn *L);

/* Model FLOPs of one example's forward pass for the primary model. */
double lrn_flops_per_example(const lrn *L);

/* Called in every batch with the minibatch the models are about to train on (after the
 * forward pass and the metrics, before any model learns): B rows, the first n_imp of them
 * impressions, then the settled CTCVR rows; ids[i] is row i's impression id. The rows and
 * ids are valid only during the call. For recording the stream (m3rec-offline
 * --dump-batches); fn NULL removes the hook. Returns 0, or -1 when out of memory. */
typedef void (*lrn_batch_fn)(void *ud, const m3_example *ex, const char *const *ids, int B,
                             int n_imp);
int lrn_set_batch_hook(lrn *L, lrn_batch_fn fn, void *ud);

/* The admission counters as a JSON object (for a report's "admission" key). */
void lrn_admission_write_json(const lrn *L, json_writer *w);

/* Pending clicked impressions waiting for their label. */
size_t lrn_pending(const lrn *L);

/* ---- the state behind the learner (state.c) ----
 *
 * prepare is called before every forward pass with the rows about to be used: ex[0..B),
 * of which the first n_imp are impressions being trained (train = 1: a training minibatch,
 * then the settled rows follow), or score-request candidates (train = 0, n_imp = 0). It
 * may load rows into the models' tables and rewrite categorical keys (ex is the learner's
 * own buffer; a clicked impression waits in the pending join with the keys as rewritten).
 * trained is called after every model trained on a minibatch. */
typedef void (*lrn_prepare_fn)(void *ud, m3_example *ex, int B, int n_imp, int train);
typedef void (*lrn_trained_fn)(void *ud, const m3_example *ex, int B, int n_imp);
void lrn_set_hooks(lrn *L, lrn_prepare_fn prepare, lrn_trained_fn trained, void *ud);
/* The guard's rollback: called when model i's step was refused and its dense parameters
 * are not finite (m3_params_finite); it puts back the model's last good state and returns
 * 0, or -1 when it has none (the learner then uses m3_rollback). Without one, the learner
 * keeps each model's last good copy itself (m3_mark_good, every 64 batches). */
typedef int (*lrn_rollback_fn)(void *ud, int model);
void lrn_set_rollback(lrn *L, lrn_rollback_fn fn, void *ud);
/* The loader given to every source's pending table, now and when created (tag = source). */
void lrn_set_pend_loader(lrn *L, pend_load_fn fn, void *ud);

/* 1 when nothing is queued: no impression, request or settled label waits for a batch.
 * Only then does the trained state correspond exactly to the events handled so far. */
int lrn_at_boundary(const lrn *L);
int lrn_n_models(const lrn *L);
/* Model i (0 = primary), or NULL. */
m3_model *lrn_model(lrn *L, int i);
/* Sources known (the highest index seen + 1, or more) and one's pending table: NULL when
 * it has none yet, unless create (then NULL only when out of memory); errstr says why. */
int lrn_n_sources(const lrn *L);
pend_table *lrn_source_pending(lrn *L, int src, int create, char *errstr, size_t errstr_size);
/* Rows the primary model trained so far with a CTR term (every impression, once) and a
 * CTCVR term (each impression once its conversion label is settled; with fnw, defer and
 * esdfm also each click at once - esdfm with an elapsed time: a click unconverted then -
 * and defer's negative copies). A step the guard refused trained
 * nothing: its rows count in met_board_guard's skipped_rows, not here. */
uint64_t lrn_trained_ctr(const lrn *L);
uint64_t lrn_trained_ctcvr(const lrn *L);

/* The learner's own stream state as bytes: model version, trained-row counters, the
 * scoreboard's counters, each model's stream clock, each source's watermarks and pending
 * seq (not the pending entries, the models' tables or the dense blobs). lrn_state_save
 * writes it when cap suffices and returns its size either way. lrn_state_load restores a
 * saved record into a learner made with the same configuration; -1 with errstr on a
 * malformed record or a different model count (the learner may then be partly changed:
 * discard it). Call both at a boundary (lrn_at_boundary). */
size_t lrn_state_save(lrn *L, void *buf, size_t cap);
int lrn_state_load(lrn *L, const void *buf, size_t len, char *errstr, size_t errstr_size);

#endif
