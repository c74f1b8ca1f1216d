/* metrics.h - prequential streaming metrics: binned AUC with an error bound, log loss,
 * calibration, latency percentiles, memory, and the worker's scoreboard with its slices
 * and its AUC-over-time timeline.
 *
 * AUC. Scores are clamped to [0,1] and counted in 2^bits bins, positives and negatives
 * apart; the bins are equal in p (the default) or in logit(p) (met_auc_init_logit). Pairs
 * in different bins are ordered exactly; a positive and a negative in the same bin are
 * counted as a tie (1/2), so
 *     AUC_hist = sum_b pos_b (neg_<b + neg_b / 2) / (P N)
 * is the exact tie-aware AUC when equal scores are the only within-bin pairs, and in
 * general the AUC of the raw scores (ties counted 1/2) lies within
 *     bound = 0.5 sum_b pos_b neg_b / (P N)
 * of it: each within-bin pair contributes 0, 1/2 or 1, and we count 1/2. This holds for
 * any binning that is monotone in p. The bound is computed from the data, not assumed;
 * with equal-p bins it is ~0.5 / 2^bits for continuous scores spread over [0,1], and
 * large only when many scores coincide (where the reported tie value is exact anyway).
 * Equal-logit bins keep the same relative resolution for small probabilities (CTCVR
 * scores of ~1e-3), which lets coarse histograms stay tight.
 *
 * Memory: one met_auc holds 2 * 2^bits uint32 counts (512 KiB at 16 bits). A bin
 * saturates at 2^32 - 1 events of one label (never wraps). */
#ifndef M3_METRICS_H
#define M3_METRICS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/event.h"
#include "base/json.h"
#include "engine/model.h"

#define MET_AUC_BITS 16          /* default: 65536 bins */
#define MET_LOGLOSS_EPS 1e-7     /* p is clamped to [eps, 1-eps] in the log loss */
#define MET_LOGIT_MIN (-12.0)    /* equal-logit bins span logit(p) in [MIN, MAX] (p from */
#define MET_LOGIT_MAX 12.0       /* 6.1e-6 to 1 - 6.1e-6); scores beyond share the end bins */

/* ---- AUC + log loss + calibration over one stream of (p, y) ---- */

typedef struct {
    int bits;
    int logit;                   /* bins equal in logit(p) rather than in p */
    uint32_t nbins;
    uint32_t *pos, *neg;         /* (nbins) label counts per score bin */
    uint64_t n, n_pos;           /* events counted, of which positives */
    uint64_t n_nan;              /* NaN scores: not counted anywhere else */
    double sum_p;                /* sum of clamped scores: mean_p = sum_p / n */
    double sum_ll;               /* sum of binary cross-entropy */
} met_auc;

/* Initialise with 2^bits bins (bits 1..24; 0 means MET_AUC_BITS). Returns 0, or -1 with
 * errstr filled (bad bits, out of memory) and *a left safe to met_auc_free(). */
int met_auc_init(met_auc *a, int bits, char *errstr, size_t errstr_size);
/* The same with bins equal in logit(p) over [MET_LOGIT_MIN, MET_LOGIT_MAX]. */
int met_auc_init_logit(met_auc *a, int bits, char *errstr, size_t errstr_size);
/* Release the bins; a zeroed or already freed met_auc is a no-op. */
void met_auc_free(met_auc *a);
/* Zero all counts, keeping the bins. */
void met_auc_reset(met_auc *a);
/* Count one prediction p (clamped to [0,1]; NaN is only counted in n_nan) with label
 * y (nonzero = positive). */
void met_auc_add(met_auc *a, double p, int y);
/* The binned AUC; *bound (if not NULL) receives the computed error bound above.
 * Both are NaN when there are no positives or no negatives. O(nbins). */
double met_auc_value(const met_auc *a, double *bound);
/* The sampling standard error of an AUC a measured on P positives and N negatives
 * (Hanley & McNeil 1982: exact when the scores' two classes are exponential, ~20 % wide
 * for normal ones - test_metrics); NaN when P or N is 0. Two models scored on the same impressions differ by less than this suggests
 * (their errors are correlated); different seeds or slices by about sqrt(2) times it. */
double met_auc_se(double a, double P, double N);
/* Mean log loss (NaN when empty). */
double met_auc_logloss(const met_auc *a);
/* Mean prediction and observed positive rate (NaN when empty). */
double met_auc_mean_p(const met_auc *a);
double met_auc_rate(const met_auc *a);
/* dst += src. Returns 0, or -1 when the bin counts or scales differ (dst unchanged). */
int met_auc_merge(met_auc *dst, const met_auc *src);
/* For a window over a cumulative accumulator (the live metrics: now minus a copy taken
 * earlier). dst = src with its bins folded into dst's fewer ones (each dst bin sums
 * 2^(src->bits - dst->bits) adjacent src bins: still monotone in p, so the bound holds);
 * dst's counts are replaced. Returns 0, or -1 (dst unchanged) when the scales differ or
 * dst has more bins than src. */
int met_auc_fold(met_auc *dst, const met_auc *src);
/* dst -= src, for src an earlier state of the same stream (bins floored at 0, so a bin
 * that saturated since does not wrap). Returns 0, or -1 (dst unchanged) when the bin
 * counts or scales differ. */
int met_auc_sub(met_auc *dst, const met_auc *src);
/* Write {"auc","auc_bound","auc_se","logloss","n","pos","mean_p","rate"} (NaN -> null). */
void met_auc_write_json(const met_auc *a, json_writer *w);
/* Write the accumulator itself, {"bits","logit","n","pos","nan","sum_p","sum_ll","bins"}:
 * "bins" is base64 of varints (bins skipped since the last nonzero one, its positives,
 * its negatives) per nonzero bin, so a report holds it in a few bytes per bin used. */
void met_auc_write_hist(const met_auc *a, json_writer *w);
/* Initialise *a from what met_auc_write_hist wrote. Returns 0, or -1 with errstr (missing,
 * bad bits, malformed bins, out of memory) and *a left safe to met_auc_free(). */
int met_auc_read_hist(met_auc *a, const json_node *j, char *errstr, size_t errstr_size);

/* ---- latency histogram (ms), log-scale buckets of ~1% from 1 us to 1 hour ---- */

#define MET_LAT_MIN_MS 1e-3
#define MET_LAT_MAX_MS 3.6e6
#define MET_LAT_GROWTH 1.01      /* bucket i covers [min*g^(i-1), min*g^i) */
#define MET_LAT_NBUCKETS 2214    /* ceil(log(max/min)/log(g)) + underflow + overflow */

typedef struct {
    uint64_t count[MET_LAT_NBUCKETS]; /* [0]: < 1 us (incl. negative); last: >= 1 h */
    uint64_t n;
    double sum, min, max;
} met_latency;

/* Zero a histogram (a zeroed struct is also a valid empty histogram). */
void met_latency_init(met_latency *l);
/* Count one latency in ms; negative values (clock skew) count as < 1 us; NaN is ignored. */
void met_latency_add(met_latency *l, double ms);
/* The p-th percentile (0..100) in ms: a value within ~1% of the true order statistic of
 * rank ceil(p/100 * n), clamped to the observed [min, max]. NaN when empty. */
double met_latency_percentile(const met_latency *l, double p);
/* Mean latency in ms (NaN when empty). */
double met_latency_mean(const met_latency *l);
/* dst += src. */
void met_latency_merge(met_latency *dst, const met_latency *src);

/* ---- process memory ---- */

/* Current resident memory in MiB (VmRSS of /proc/self/status); the peak (VmHWM) goes to
 * *peak_mb when not NULL. Returns -1 (and *peak_mb = -1) when it cannot be read. */
double met_rss_mb(double *peak_mb);

/* ---- the worker's scoreboard ---- */

#define MET_MAX_MODELS 8         /* primary (model 0) + up to 7 shadows */
/* The tasks: CTR (p_ctr against the click, every impression), CTCVR (p_ctr * p_cvr against
 * a conversion within the window, every impression) and CVR (p_cvr against the conversion
 * label over clicked impressions only: the ESMM papers' CVR AUC). */
typedef enum { MET_CTR = 0, MET_CTCVR = 1, MET_CVR = 2, MET_NTASKS = 3 } met_task;
/* A task's name in reports, pages and /metrics: "ctr", "ctcvr", "cvr" ("?" out of range). */
const char *met_task_name(int task);
/* Slices of the evaluation, as the model flags them (M3_SLICE_NEW_ITEM, _NEW_USER_SCEN):
 * "new_item" (the item is young) and "new_user_in_scenario" (first time in this scenario,
 * known in another). Each (model, slice, task) has one met_auc more overall, and each
 * (model, scenario, slice, task) one of MET_SCEN_SLICE_BITS equal-logit bins. */
typedef enum { MET_SLICE_NEW_ITEM = 0, MET_SLICE_NEW_USER_SCEN = 1, MET_NSLICES = 2 } met_slice;
#define MET_SCEN_SLICE_BITS 12   /* 32 KiB per accumulator; logit bins 0.006 wide */

/* The timeline: AUC over time. Every `window` impressions (model 0's CTR predictions:
 * the same positions for every model of a board, and for every run on the same stream),
 * each (model, scenario or overall, task) records the AUC, its bound, n, mean_p and rate
 * of the predictions counted since the previous point, and starts again. A CTCVR label
 * counts in the window in which it settles. The windows' histograms have
 * 2^MET_TL_BITS equal-logit bins (32 KiB each, 0.006 wide in logit(p)); the bound is
 * stored per point: about 0.5 / (bins the window's scores spread over), so ~1e-3 for
 * scores spread over a logit range of 3. Memory stays bounded: when max_points points
 * are held, every other one is dropped (the ones at odd positions stay, so the points
 * remain evenly spaced) and the window doubles. Each point records its width. */
#define MET_TL_WINDOW 5000       /* default impressions per window, at first */
#define MET_TL_POINTS 256        /* default points held at most (even) */
#define MET_TL_BITS 12

/* Event counters; the caller increments them directly (met_board_counters()). */
typedef struct {
    uint64_t events;                 /* every input message consumed */
    uint64_t impressions, clicks, conversions, requests, predictions;
    uint64_t dlq;                    /* messages sent to the dead-letter queue */
    uint64_t late_conversions;       /* conversion after its window closed */
    uint64_t unmatched_conversions;  /* conversion for an impression never seen */
    uint64_t cvr_unscored;           /* clicks whose label settled without a p_cvr kept for
                                        them (a pending entry stored before p_cvr was, or
                                        one whose body could not be read): no CVR sample.
                                        Not in the learner's saved state. */
} met_counters;

/* The guard's counters of one model (met_board_guard()); the learner increments them. */
typedef struct {
    uint64_t skipped_steps;          /* training steps refused: non-finite loss or gradient */
    uint64_t skipped_rows;           /* the rows of those steps (impressions and settled
                                        labels), not trained */
    uint64_t rollbacks;              /* dense parameters found non-finite and put back to
                                        the last good state */
    uint64_t nonfinite_predictions;  /* predictions with a non-finite p_ctr or p_cvr (the
                                        primary's are withheld: never emitted) */
} met_guard;

/* One timeline point of one accumulator. */
typedef struct {
    float auc, bound;                /* NaN when the window had no positive or no negative */
    float mean_p, rate;              /* NaN when the window was empty */
    uint32_t n, pos;
} met_tl_value;

typedef struct met_board met_board;

/* A scoreboard for n_scen scenarios (1..M3_MAX_SCEN) and n_models models (1..
 * MET_MAX_MODELS; model 0 is the primary), names copied. Each (model, scenario, task)
 * and each (model, task) overall gets a met_auc of 2^auc_bits bins (0 = MET_AUC_BITS),
 * and so does each (model, slice, task): memory is
 * (n_scen + 1 + MET_NSLICES) * MET_NTASKS * n_models * 2^(auc_bits+3) bytes, plus per
 * model n_scen * 192 KiB of scenario slices, (n_scen + 1) * 96 KiB of timeline windows and
 * (n_scen + 1) * 72 bytes per timeline point. The timeline starts with MET_TL_WINDOW and
 * MET_TL_POINTS. The clock starts now. On error, NULL is returned and errstr says why. */
met_board *met_board_new(int n_scen, const char *const *scen_names, int n_models,
                         const char *const *model_names, int auc_bits,
                         char *errstr, size_t errstr_size);
/* Free a board; NULL is a no-op. */
void met_board_destroy(met_board *b);

/* Set the timeline's first window (>= 1 impressions) and the points it holds (even,
 * 2..65536), before anything is counted. Returns 0, or -1 with errstr and no change
 * (bad values, something counted already, out of memory). */
int met_board_set_timeline(met_board *b, int64_t window, int max_points, char *errstr,
                           size_t errstr_size);

/* Count prediction p with label y for a model, scenario and task, in the scenario's
 * and the overall accumulator and in the timeline's window. Model 0's CTR predictions
 * advance the timeline (a window closes before the first prediction after it). Out-of-
 * range indices are ignored (returns -1); else 0. */
int met_board_add(met_board *b, int model, int scen, met_task task, double p, int y);
/* The same with the event time of the impression the prediction is of (its settled CTCVR
 * label too): it places the primary's CTCVR in the settled measure (met_board_set_settle)
 * and drops slice labels of impressions from the burn-in (met_board_add_slices_at). */
int met_board_add_at(met_board *b, int model, int scen, met_task task, double p, int y,
                     int64_t ts_ms);
/* Count prediction p with label y in every slice whose bit (1 << met_slice) is set in
 * `slices`, overall and, when scen >= 0, in the scenario's slices. Out-of-range model,
 * scenario (< -1) or task: -1; else 0. */
int met_board_add_slices(met_board *b, int model, int scen, unsigned slices, met_task task,
                         double p, int y);
/* The same with the impression's event time: a label of an impression older than the end
 * of the burn-in (a click that settles later) is not counted either. */
int met_board_add_slices_at(met_board *b, int model, int scen, unsigned slices, met_task task,
                            double p, int y, int64_t ts_ms);
/* The slices' burn-in: nothing counts in a slice until the stream position passes this many
 * impressions (model 0's CTR predictions counted, or the counters' impressions when
 * larger: a restored state's position, ahead by the queued minibatch). 0 (the default):
 * slices count from the start. Call before anything is counted. */
void met_board_set_slice_burnin(met_board *b, int64_t impressions);

/* The primary's settled CTCVR and CVR. A clicked impression's CTCVR label settles when its
 * conversion arrives or its window closes, a converted one sooner than an unconverted
 * one; the cumulative accumulator therefore holds, during a run, the positives of the
 * last window without their negatives, scored by a model from further back than the
 * negatives from impressions not clicked (test_metrics: 0.51 where the complete prefix
 * gives 0.64, for a model whose scores drift as it learns; the CVR alike). The settled measure counts only impressions older than the clock (the
 * newest event time counted, through met_board_add_at) by window_ms plus up to
 * window_ms / 8 (buckets of window_ms / 16): every label of theirs is known. Give it the
 * attribution window plus the lateness with which windows close. Its bins are the
 * timeline's (2^MET_TL_BITS equal in logit). Returns 0, or -1 with
 * errstr (window < 1, something counted already, out of memory). */
#define MET_SETTLE_SLOTS 24
int met_board_set_settle(met_board *b, int64_t window_ms, char *errstr, size_t errstr_size);
/* The settled CTCVR accumulator (NULL when met_board_set_settle was not called); *horizon_ms
 * (if not NULL) receives the event time before which every impression is counted
 * (INT64_MIN while none is). met_board_settled_task: the same for MET_CTCVR or MET_CVR
 * (NULL for MET_CTR). */
const met_auc *met_board_settled(const met_board *b, int64_t *horizon_ms);
const met_auc *met_board_settled_task(const met_board *b, met_task task, int64_t *horizon_ms);
/* One slice accumulator (scen -1: over all scenarios), or NULL when out of range. */
const met_auc *met_board_slice_auc(const met_board *b, int model, int scen, met_slice slice,
                                   met_task task);
/* Count one event-time -> prediction latency (ms). */
void met_board_latency(met_board *b, double ms);
/* The counters, for the caller to increment. */
met_counters *met_board_counters(met_board *b);
/* One model's guard counters, for the caller to increment; NULL when out of range. */
met_guard *met_board_guard(met_board *b, int model);
/* Read-only access to one accumulator: scen -1 is the overall one. NULL when out of range. */
const met_auc *met_board_auc(const met_board *b, int model, int scen, met_task task);
/* Events counted before this process started (restored from a checkpoint with the
 * counters): the rates (events_per_sec, the progress line) count only the events after. */
void met_board_set_events_base(met_board *b, uint64_t events);
uint64_t met_board_events_base(const met_board *b);
/* Seconds since met_board_new() (monotonic clock). */
double met_board_elapsed(const met_board *b);

/* The timeline's closed points (the open window is not one): their number, and for
 * point i < that number its end position (impressions), width and seconds since
 * met_board_new() (any of the pointers may be NULL). */
int met_board_tl_points(const met_board *b);
void met_board_tl_point(const met_board *b, int i, int64_t *x, int64_t *width, double *sec);
/* Point i of one accumulator (scen -1: overall), or NULL when out of range. */
const met_tl_value *met_board_tl_value(const met_board *b, int i, int model, int scen,
                                       met_task task);
/* The current window width (it doubles as points are dropped). */
int64_t met_board_tl_window(const met_board *b);

/* Write the full report object:
 *   {"events", "events_per_sec", "elapsed_sec", "cpu_sec" (the process's user + system
 *    CPU time, all threads), "latency_ms": {"p50","p99","mean","n"},
 *    "rss_mb", "rss_peak_mb", "counters": {...}, "primary": name,
 *    "timeline": {"window", "max_points", "bins", "x", "width", "sec"} (the positions),
 *    "overall": {"ctr": {...}, "ctcvr": {...}, "cvr": {...}},
 *    "scenarios": {name: {"ctr", "ctcvr", "cvr", "slices": {slice: {"ctr","ctcvr","cvr"}}}},
 *    "slices": {"new_item": {"ctr","ctcvr","cvr"}, "new_user_in_scenario": {...}} (the primary's),
 *    "guard": {"skipped_steps", "skipped_rows", "rollbacks", "nonfinite_predictions"} (the primary's),
 *    "models": {name: {"overall", "scenarios", "slices", "guard", "hist", "timeline"}} (every model,
 *    primary too; "timeline": {"overall": {task: series}, "scenarios": {name: {task:
 *    series}}}, a series being {"auc", "bound", "n", "mean_p", "rate"} arrays, one item
 *    per timeline point; "hist": {"overall": {task: H}, "scenarios": {name: {task: H}}},
 *    H as met_auc_write_hist writes it),
 *    then whatever extra() writes (keys and values at the top level; may be NULL)}.
 * The timeline's points are the closed ones, plus the open window when it holds at least
 * half a window of impressions. Errors are reported by the writer (json_writer_error()). */
void met_board_write_json(const met_board *b, json_writer *w,
                          void (*extra)(json_writer *w, void *arg), void *arg);
/* Add a report's histograms (every model's "hist": overall and per scenario, every task;
 * a report without "cvr" histograms, written before the CVR AUC was, adds none to it)
 * into the board's accumulators, and its counters and guard counters into the board's: the
 * workers of a group, each of which predicted its own share of the stream, make one
 * scoreboard whose AUCs are the group's. The report must have the board's models in the
 * board's order and its scenarios, with histograms of the board's bins. Slices, the
 * timeline and the latency are not merged. Returns 0, or -1 with errstr saying what does
 * not match (nothing is added then). */
int met_board_merge_report(met_board *b, const json_node *report, char *errstr,
                           size_t errstr_size);
/* Write one model's {"overall", "scenarios", "slices", "guard", "hist", "timeline"} object (reusable by
 * the simulator, e.g. a board with one model "oracle"). */
void met_board_write_model(const met_board *b, int model, json_writer *w);
/* One human progress line for the primary model, e.g.
 * "events 120000  31.2k ev/s  ctr auc 0.7120  ctcvr auc 0.8010  cvr auc 0.6120  lag p99 45.0 ms
 *  rss 312 MB",
 * with the settled CTCVR when it is on: "ctcvr auc 0.8010 (93.2k settled)", or
 * "ctcvr auc - (0 settled)" before a window has passed, then "cvr auc 0.6120" (settled too
 * when the CTCVR is; "-" while it has no positive or no negative),
 * followed by "  guard 3 skipped 12 withheld 1 rollback" once the primary's guard has
 * counted anything. Returns what snprintf returns. */
int met_board_progress_line(const met_board *b, char *buf, size_t n);

#endif
