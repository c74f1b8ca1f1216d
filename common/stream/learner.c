/* learner.c - the prequential loop: minibatch, predict, emit, measure, train. */
#include "stream/learner.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/wire.h"
#include "engine/model.h"
#include "stream/esdfm.h"
#include "stream/pending.h"

#define LRN_MAX_MODELS MET_MAX_MODELS
/* Without a store, each model's last good state (m3_mark_good) is copied every this many
 * training batches: at the defaults a scan and copy of 3 x 303,795 floats, 0.2 ms against
 * ~6 ms for one step of 256 rows, so ~0.05 % of the training time (docs/model.md). */
#define LRN__GOOD_EVERY 64

/* join.feedback: how a clicked impression's CTCVR term learns before its label settles
 * (docs/model.md, "Delayed feedback"). */
enum { LRN__FB_WINDOW = 0, LRN__FB_FNW, LRN__FB_DEFER, LRN__FB_ESDFM };
/* esdfm weighs a fake negative with its auxiliary model (stream/esdfm.h) once that has
 * trained on this many settled labels; before, with fnw's weight (1 - the model's p_cvr). */
#define LRN__ESD_WARM 1000
/* What a training row is to the fake-negative methods, which weight its CTCVR term from
 * the training model's own p_cvr (a constant in the step: stop-gradient). */
enum {
    LRN__ROW_PLAIN = 0,    /* a label known for sure (unclicked, converted while queued):
                              weight 1 */
    LRN__ROW_FAKE_NEG,     /* a click trained at once as a negative, its label unknown */
    LRN__ROW_POS,          /* the positive copy: its conversion arrived */
    LRN__ROW_DUP_NEG,      /* DEFER: the negative copy when its window closed unconverted */
    LRN__ROW_WAIT          /* esdfm with an elapsed time: a click, its CTCVR term waits */
};

/* What a batch row answers, to build its Prediction. */
typedef struct {
    char id[M3_ID_MAX];
    int64_t ts_ms, arrival_ms, user_id, item_id;
    int scen;
    int src;                               /* the input source (partition) it came from */
    int converted;                         /* its conversion arrived while it was queued */
    int known_negative;                    /* clicked, revealed as a negative while queued
                                              (lrn_reveal_negative: a diagnostic) */
} lrn_tag;

/* One input source (a topic partition): its own event-time clock and pending join.
 * Kafka keeps order within a partition and a conversion travels in the same partition
 * as its impression (same topic, same user key), so a per-partition watermark closes
 * windows exactly, however unevenly the partitions are consumed. */
typedef struct {
    pend_table *pend;
    int64_t newest_ms, second_ms;          /* the two newest event times of this source
                                              (INT64_MIN until seen); its clock from them */
    int seen;                              /* events seen, counted up to 3 */
} lrn_src;

struct lrn {
    const m3_cfg *cfg;
    int n_models;
    m3_model *models[LRN_MAX_MODELS];      /* [0] is the primary */
    lrn_src *srcs;                         /* (n_srcs), created as sources appear */
    int n_srcs;
    met_board *board;
    int cap;                               /* rows in a minibatch: cfg->model.max_batch */
    /* the training minibatch: impressions first, then settled pending rows */
    m3_example *ex;                        /* (cap) */
    lrn_tag *tags;                         /* (cap) tags of the impression rows */
    int n_imp;                             /* impression rows queued */
    /* settled CTCVR labels waiting for a batch (conversion joined or window closed) */
    pend_entry *settled;                   /* (cap) */
    int n_settled;
    /* score-request candidates, scored after training */
    m3_example *req_ex;                    /* (cap) */
    lrn_tag *req_tags;                     /* (cap) */
    int n_req;
    float *p_ctr[LRN_MAX_MODELS], *p_cvr[LRN_MAX_MODELS]; /* (cap) each */
    /* UPT snapshots (m3_snap_save): model m's start in a pending entry's snap, and the
     * rows' snapshots handed to m3_forward_snap (NULL for impressions: read live) */
    size_t snap_off[LRN_MAX_MODELS], snap_len;
    const void **snaps[LRN_MAX_MODELS];   /* (cap) each */
    int64_t version;                       /* training steps taken */
    int64_t clock_ms;                      /* newest of the sources' clocks (lrn_clock) */
    int64_t newest_ms;                     /* newest event time of any source, INT64_MIN
                                              before the first: what admission's
                                              time.max.ahead.ms counts from */
    int64_t ahead_ms;                      /* the last event refused (or confirmed) as far
                                              ahead, INT64_MIN when the last was not */
    lrn_admission adm;
    int expire_from;                       /* round-robin start for expiry */
    int feedback;                          /* LRN__FB_*, from join.feedback */
    int last_settled;                      /* settled rows in the last training batch */
    unsigned char *role;                   /* (cap) LRN__ROW_* of each training row */
    /* esdfm: the auxiliary model of p_rn, its value on this batch's fake negatives (cap;
     * -1: not warm yet), and whether it learns yet: from the first window that closed on
     * (before, only positives settle, and a model of them alone would say "converts") */
    esd *aux;
    float *aux_rn;
    int aux_open;
    int64_t elapse_ms;                     /* esdfm: join.esdfm.elapsed.ms, else 0 */
    lrn_batch_fn batch_fn;                 /* lrn_set_batch_hook() */
    void *batch_ud;
    const char **batch_ids;                /* (cap) the ids handed to batch_fn */
    uint64_t trained_ctr, trained_ctcvr;   /* rows trained with w_ctr > 0, w_ctcvr > 0 */
    /* the state behind the models (state.c), NULL when in memory only */
    lrn_prepare_fn prepare;
    lrn_trained_fn trained;
    void *hook_ud;
    pend_load_fn pend_load;
    void *pend_ud;
    lrn_rollback_fn rollback;              /* lrn_set_rollback(), NULL: in-memory copies */
    void *rollback_ud;
};

lrn *lrn_new(const m3_cfg *cfg, char *errstr, size_t errstr_size) {
    lrn *L = calloc(1, sizeof *L);
    if (!L) {
        snprintf(errstr, errstr_size, "learner: out of memory");
        return NULL;
    }
    L->cfg = cfg;
    L->clock_ms = L->ahead_ms = L->newest_ms = INT64_MIN;
    L->cap = cfg->model.max_batch;
    L->feedback = strcmp(cfg->join_feedback, "fnw") == 0     ? LRN__FB_FNW
                  : strcmp(cfg->join_feedback, "defer") == 0 ? LRN__FB_DEFER
                  : strcmp(cfg->join_feedback, "esdfm") == 0 ? LRN__FB_ESDFM
                                                             : LRN__FB_WINDOW;
    if (L->cap <= cfg->batch_size) {
        snprintf(errstr, errstr_size, "learner: model.max_batch %d must exceed batch.size %d "
                 "(room for settled conversion labels)", L->cap, cfg->batch_size);
        free(L);
        return NULL;
    }
    const char *names[LRN_MAX_MODELS];
    int archs[LRN_MAX_MODELS];
    archs[L->n_models++] = cfg->model.arch;
    for (int i = 0; i < cfg->n_shadow && L->n_models < LRN_MAX_MODELS; i++)
        archs[L->n_models++] = cfg->shadow[i];
    for (int i = 0; i < L->n_models; i++) {
        m3_model_cfg mc = cfg->model;
        mc.arch = archs[i];
        names[i] = m3_arch_name(archs[i]);
        L->models[i] = m3_new(&mc, errstr, errstr_size);
        if (!L->models[i]) goto fail;
        L->p_ctr[i] = calloc((size_t)L->cap, sizeof(float));
        L->p_cvr[i] = calloc((size_t)L->cap, sizeof(float));
        L->snaps[i] = calloc((size_t)L->cap, sizeof *L->snaps[i]);
        if (!L->p_ctr[i] || !L->p_cvr[i] || !L->snaps[i]) goto oom;
        L->snap_off[i] = L->snap_len;
        L->snap_len += m3_snap_bytes(L->models[i]);
    }
    if (L->snap_len > PEND_SNAP_MAX) {
        snprintf(errstr, errstr_size, "learner: the UPT models' snapshots of a pending row take "
                 "%zu bytes, more than %d: fewer m3rec shadows, or a smaller model.emb.dim",
                 L->snap_len, PEND_SNAP_MAX);
        goto fail;
    }
    const char *scen[M3_MAX_SCEN];
    for (int i = 0; i < cfg->scenarios.n; i++) scen[i] = cfg->scenarios.names[i];
    L->board = met_board_new(cfg->scenarios.n, scen, L->n_models, names, 0, errstr, errstr_size);
    if (!L->board) goto fail;
    /* the slices' burn-in and the settled CTCVR (windows close join.lateness.ms late) */
    met_board_set_slice_burnin(L->board, cfg->slice_burnin_imps);
    if (met_board_set_settle(L->board, cfg->join_window_ms + cfg->join_lateness_ms, errstr,
                             errstr_size) != 0) goto fail;
    L->ex = calloc((size_t)L->cap, sizeof *L->ex);
    L->tags = calloc((size_t)L->cap, sizeof *L->tags);
    L->settled = calloc((size_t)L->cap, sizeof *L->settled);
    L->req_ex = calloc((size_t)L->cap, sizeof *L->req_ex);
    L->req_tags = calloc((size_t)L->cap, sizeof *L->req_tags);
    L->role = calloc((size_t)L->cap, 1);
    if (!L->ex || !L->tags || !L->settled || !L->req_ex || !L->req_tags || !L->role) goto oom;
    if (L->feedback == LRN__FB_ESDFM) {
        L->elapse_ms = cfg->join_elapsed_ms;
        L->aux = esd_new(cfg->model.n_cat, cfg->model.n_num, L->cap, errstr, errstr_size);
        if (!L->aux) goto fail;
        if (!(L->aux_rn = calloc((size_t)L->cap, sizeof *L->aux_rn))) goto oom;
    }
    return L;
oom:
    snprintf(errstr, errstr_size, "learner: out of memory");
fail:
    lrn_destroy(L);
    return NULL;
}

void lrn_destroy(lrn *L) {
    if (!L) return;
    for (int i = 0; i < L->n_models; i++) {
        m3_destroy(L->models[i]);
        free(L->p_ctr[i]);
        free(L->p_cvr[i]);
        free(L->snaps[i]);
    }
    for (int i = 0; i < L->n_srcs; i++) pend_destroy(L->srcs[i].pend);
    free(L->srcs);
    met_board_destroy(L->board);
    free(L->ex);
    free(L->tags);
    free(L->settled);
    free(L->req_ex);
    free(L->req_tags);
    free(L->role);
    esd_destroy(L->aux);
    free(L->aux_rn);
    free(L->batch_ids);
    free(L);
}

int lrn_set_batch_hook(lrn *L, lrn_batch_fn fn, void *ud) {
    if (fn && !L->batch_ids && !(L->batch_ids = calloc((size_t)L->cap, sizeof *L->batch_ids)))
        return -1;
    L->batch_fn = fn;
    L->batch_ud = ud;
    return 0;
}

met_board *lrn_board(lrn *L) { return L->board; }
int64_t lrn_model_version(const lrn *L) { return L->version; }
int lrn_queued(const lrn *L) { return L->n_imp + L->n_req; }
size_t lrn_pending(const lrn *L) {
    size_t n = 0;
    for (int i = 0; i < L->n_srcs; i++) n += L->srcs[i].pend ? pend_size(L->srcs[i].pend) : 0;
    return n;
}
const m3_cfg *lrn_cfg(const lrn *L) { return L->cfg; }
double lrn_flops_per_example(const lrn *L) { return m3_flops_per_example(L->models[0]); }

/* ---- features: configured fields -> model slots ---- */

static const m3_catkv *find_cat(const m3_catmap *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].name, name) == 0) return &m->kv[i];
    return NULL;
}

static const m3_numkv *find_num(const m3_nummap *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].name, name) == 0) return &m->kv[i];
    return NULL;
}

static void map_cats(const cfg_list *fields, const m3_catmap *m, int *slot, uint64_t *cat) {
    for (int f = 0; f < fields->n; f++, (*slot)++) {
        const m3_catkv *kv = m ? find_cat(m, fields->names[f]) : NULL;
        cat[*slot] = m3_feat_key(*slot, kv ? kv->value : M3_MISSING);
    }
}

/* v in [-max_abs, max_abs]: clipped to the nearer bound, NaN to 0. */
static float clip_num(float v, float max_abs) {
    if (fabsf(v) <= max_abs) return v;
    return isnan(v) ? 0.0f : copysignf(max_abs, v);
}

static void map_nums(const cfg_list *fields, const m3_nummap *m, float max_abs, int *slot,
                     float *num) {
    for (int f = 0; f < fields->n; f++, (*slot)++) {
        const m3_numkv *kv = m ? find_num(m, fields->names[f]) : NULL;
        num[*slot] = kv ? clip_num(kv->value, max_abs) : 0.0f;
    }
}

/* Fill ex's inputs from the parts of an event (any map may be NULL = all missing). */
static void make_example(const m3_cfg *c, m3_example *ex, int scen, int64_t ts,
                         int64_t user_id, int64_t item_id,
                         const m3_catmap *ucat, const m3_catmap *icat, const m3_catmap *xcat,
                         const m3_nummap *unum, const m3_nummap *inum) {
    ex->scenario = scen;
    ex->ts_ms = ts;
    ex->cat[M3_SLOT_USER] = m3_feat_key(M3_SLOT_USER, user_id);
    ex->cat[M3_SLOT_ITEM] = m3_feat_key(M3_SLOT_ITEM, item_id);
    int slot = 2;
    map_cats(&c->user_cat, ucat, &slot, ex->cat);
    map_cats(&c->item_cat, icat, &slot, ex->cat);
    map_cats(&c->ctx_cat, xcat, &slot, ex->cat);
    slot = 0;
    map_nums(&c->user_num, unum, c->num_max_abs, &slot, ex->num);
    map_nums(&c->item_num, inum, c->num_max_abs, &slot, ex->num);
    ex->y_click = ex->y_conv = 0;
    ex->w_ctr = ex->w_ctcvr = 0;
}

static int scenario_of(const lrn *L, const char *name, char *reason, size_t n) {
    int s = cfg_scenario_index(L->cfg, name);
    if (s < 0) snprintf(reason, n, "unknown scenario '%s'", name);
    return s;
}

/* ---- the event-time watermark and the pending join ---- */

/* Make room for cap sources (cap > n_srcs). Returns 0, or -1 when out of memory. */
static int grow_sources(lrn *L, int cap) {
    lrn_src *p = realloc(L->srcs, (size_t)cap * sizeof *p);
    if (!p) return -1;
    memset(p + L->n_srcs, 0, (size_t)(cap - L->n_srcs) * sizeof *p);
    for (int i = L->n_srcs; i < cap; i++) p[i].newest_ms = p[i].second_ms = INT64_MIN;
    L->srcs = p;
    L->n_srcs = cap;
    return 0;
}

/* The source's table, created on first use; NULL (reason filled) when out of memory. */
static lrn_src *source(lrn *L, int src, char *reason, size_t n) {
    if (src < 0 || src > 1 << 20) {
        snprintf(reason, n, "bad source index %d", src);
        return NULL;
    }
    if (src >= L->n_srcs &&
        grow_sources(L, src + 1 > 2 * L->n_srcs ? src + 1 : 2 * L->n_srcs) != 0) {
        snprintf(reason, n, "out of memory");
        return NULL;
    }
    lrn_src *S = &L->srcs[src];
    if (!S->pend) {
        S->pend = pend_new(L->cfg->join_window_ms, 1 << 12, reason, n);
        if (S->pend && L->pend_load) pend_set_loader(S->pend, L->pend_load, L->pend_ud, src);
        if (S->pend) pend_set_elapse(S->pend, L->elapse_ms);
    }
    return S->pend ? S : NULL;
}

/* A minibatch holds up to batch.size impressions and up to this many settled rows. */
static int settled_cap(const lrn *L) { return L->cap - L->cfg->batch_size; }

/* The source's clock: its newest event time, unless that jumped more than lateness ahead
 * of the second newest (then the second newest, until an event confirms the jump). In
 * order, with gaps within lateness, it is the newest event time: windows close exactly
 * when they did with the newest alone. */
static int64_t src_clock(const lrn_src *S, int64_t lateness) {
    if (S->second_ms == INT64_MIN) return INT64_MIN;
    uint64_t gap = (uint64_t)S->newest_ms - (uint64_t)S->second_ms;  /* exact: newest >= second */
    if (gap <= (uint64_t)lateness) return S->newest_ms;
    /* two events only, far apart: either may be the bad one (a 1970 first event, or a
     * far-future second one): no clock until a third tells */
    return S->seen < 3 ? INT64_MIN : S->second_ms;
}

static void advance_watermark(lrn *L, lrn_src *S, int64_t ts) {
    if (ts > L->newest_ms) L->newest_ms = ts;
    if (S->seen < 3) S->seen++;
    if (ts >= S->newest_ms) {
        S->second_ms = S->newest_ms;
        S->newest_ms = ts;
    } else if (ts > S->second_ms) {
        S->second_ms = ts;
    }
    int64_t c = src_clock(S, L->cfg->join_lateness_ms);
    if (c > L->clock_ms) L->clock_ms = c;
}

/* ---- admission ---- */

/* a - b, saturated to the int64 range (event times come from the wire). */
static int64_t lrn__diff(int64_t a, int64_t b) {
    int64_t d;
    if (!__builtin_sub_overflow(a, b, &d)) return d;
    return a > b ? INT64_MAX : INT64_MIN;
}

/* The configured fields of one numeric map (named `map` in reasons). Returns 0, or 1 with
 * reason when a value is outside the range and the event is to be refused; clipped values
 * are counted. */
static int admit_nums(lrn *L, const cfg_list *fields, const m3_nummap *m, const char *map,
                      char *reason, size_t n) {
    float max = L->cfg->num_max_abs;
    for (int f = 0; m && f < fields->n; f++) {
        const m3_numkv *kv = find_num(m, fields->names[f]);
        if (!kv || fabsf(kv->value) <= max) continue;
        if (L->cfg->num_clip && !isnan(kv->value)) {
            L->adm.num_clipped++;
            continue;
        }
        snprintf(reason, n, "%s.%s=%g outside [%g, %g] (features.num.max_abs%s)", map, kv->name,
                 (double)kv->value, -(double)max, (double)max,
                 isnan(kv->value) ? "" : "; or features.num.clip=true");
        L->adm.num_refused++;
        return 1;
    }
    return 0;
}

static int admit_request_nums(lrn *L, const m3_score_request *rq, char *reason, size_t n) {
    if (admit_nums(L, &L->cfg->user_num, &rq->user_num, "user_num", reason, n)) return 1;
    for (int c = 0; c < rq->n_cands; c++)
        if (admit_nums(L, &L->cfg->item_num, &rq->cands[c].item_num, "item_num", reason, n))
            return 1;
    return 0;
}

/* What an event time may not run more than time.max.ahead.ms ahead of: the newest event
 * time admitted (every one was checked against it, so one message cannot move it far),
 * once the learner has a clock; before (a fresh learner's first events), the wall clock.
 * Not the clock itself: after a 1970 first event, the clock is that time until a third
 * event confirms the jump to the real ones, and the second good event would be refused.
 * An event from the future is never plausible, so the wall bounds the future side; a
 * replayed dataset is legitimately years in the past, so nothing bounds the past side
 * but the clocks. Without the wall, one far-future first event would be the anchor: alone
 * in the first batch it would set the state's expiry clock, and nothing would expire. */
static int64_t ahead_ref(const lrn *L, const char **name) {
    if (L->clock_ms != INT64_MIN) {
        *name = "the newest event time";
        return L->newest_ms;
    }
    *name = "the wall clock (no event-time clock yet)";
    return clk_real_ms();
}

static int refuse_time(lrn *L, int ahead, const char *what, int64_t ts, int64_t ref,
                       const char *name, char *reason, size_t n) {
    snprintf(reason, n, "%s ts_ms=%" PRId64 " is %" PRId64 " ms %s %s %" PRId64 " (%s=%" PRId64
             ")", what, ts, ahead ? lrn__diff(ts, ref) : lrn__diff(ref, ts),
             ahead ? "ahead of" : "behind", name, ref,
             ahead ? "time.max.ahead.ms" : "time.max.behind.ms",
             ahead ? L->cfg->time_max_ahead_ms : L->cfg->time_max_behind_ms);
    if (ahead) L->adm.time_ahead++;
    else L->adm.time_behind++;
    return 1;
}

/* Event time ts of an impression or conversion (`what`) from source src. Returns 0, or 1
 * with reason. A far-ahead event is remembered: the next one, if it agrees, is admitted
 * (not against the wall clock: that bound is absolute). */
static int admit_time(lrn *L, int64_t ts, int src, const char *what, char *reason, size_t n) {
    int64_t ahead = L->cfg->time_max_ahead_ms, behind = L->cfg->time_max_behind_ms;
    const char *name = NULL;
    int64_t ref = ahead > 0 ? ahead_ref(L, &name) : INT64_MIN;
    if (ahead > 0 && lrn__diff(ts, ref) > ahead) {
        if (L->clock_ms == INT64_MIN) return refuse_time(L, 1, what, ts, ref, name, reason, n);
        int64_t d = lrn__diff(ts, L->ahead_ms);
        int agrees = L->ahead_ms != INT64_MIN && d <= ahead && d >= -ahead;
        L->ahead_ms = ts;
        if (agrees) {
            L->adm.time_confirmed++;
            return 0;
        }
        return refuse_time(L, 1, what, ts, ref, name, reason, n);
    }
    L->ahead_ms = INT64_MIN;
    int64_t own = src >= 0 && src < L->n_srcs ? src_clock(&L->srcs[src], L->cfg->join_lateness_ms)
                                               : INT64_MIN;
    if (behind > 0 && own != INT64_MIN && lrn__diff(own, ts) > behind)
        return refuse_time(L, 0, what, ts, own, "its partition's event time", reason, n);
    return 0;
}

/* A score request's event time. It trains nothing and moves no clock, but it is stamped
 * on its prediction and is the only time the state has before the learner has a clock;
 * so it is bounded too. Ahead: of the newest admitted event time and of the wall clock,
 * whichever is later - a request is live, and while the worker catches up on a backlog
 * of events its requests run ahead of them by the lag. Behind: of the learner's clock (a
 * request has no partition clock of its own). It neither confirms nor breaks a far-ahead
 * impression's or conversion's jump. */
static int admit_request_time(lrn *L, int64_t ts, char *reason, size_t n) {
    int64_t ahead = L->cfg->time_max_ahead_ms, behind = L->cfg->time_max_behind_ms;
    const char *name = "the wall clock";
    int64_t ref = INT64_MIN;
    if (ahead > 0) {
        ref = clk_real_ms();
        if (L->clock_ms != INT64_MIN && L->newest_ms > ref) {
            ref = L->newest_ms;
            name = "the newest event time";
        }
    }
    if (ahead > 0 && lrn__diff(ts, ref) > ahead)
        return refuse_time(L, 1, "ScoreRequest", ts, ref, name, reason, n);
    if (behind > 0 && L->clock_ms != INT64_MIN && lrn__diff(L->clock_ms, ts) > behind)
        return refuse_time(L, 0, "ScoreRequest", ts, L->clock_ms, "the learner's clock",
                           reason, n);
    return 0;
}

int lrn_admit(lrn *L, const m3_event *ev, int src, char *reason, size_t reason_size) {
    const m3_cfg *c = L->cfg;
    switch (ev->type) {
    case M3_EV_IMPRESSION: {
        const m3_impression *im = &ev->u.imp;
        if (admit_nums(L, &c->user_num, &im->user_num, "user_num", reason, reason_size) ||
            admit_nums(L, &c->item_num, &im->item_num, "item_num", reason, reason_size))
            return 1;
        return admit_time(L, im->ts_ms, src, "Impression", reason, reason_size);
    }
    case M3_EV_CONVERSION:
        return admit_time(L, ev->u.conv.ts_ms, src, "Conversion", reason, reason_size);
    case M3_EV_SCORE_REQUEST:
        return admit_request_nums(L, &ev->u.req, reason, reason_size) ||
               admit_request_time(L, ev->u.req.ts_ms, reason, reason_size);
    default:
        return 0;
    }
}

const lrn_admission *lrn_admission_counts(const lrn *L) { return &L->adm; }
int64_t lrn_clock(const lrn *L) { return L->clock_ms; }

void lrn_admission_write_json(const lrn *L, json_writer *w) {
    json_obj_begin(w);
    json_key(w, "num_refused"); json_uint(w, L->adm.num_refused);
    json_key(w, "num_clipped"); json_uint(w, L->adm.num_clipped);
    json_key(w, "time_ahead"); json_uint(w, L->adm.time_ahead);
    json_key(w, "time_behind"); json_uint(w, L->adm.time_behind);
    json_key(w, "time_confirmed"); json_uint(w, L->adm.time_confirmed);
    json_obj_end(w);
}

/* What a prediction needs to go out (and an impression to join its conversion);
 * src -1 for a score request's candidates. */
static void set_tag(lrn_tag *t, const char *id, int64_t ts, int64_t arrival_ms,
                    int64_t user_id, int64_t item_id, int scen, int src) {
    memcpy(t->id, id, sizeof t->id);
    t->ts_ms = ts;
    t->arrival_ms = arrival_ms;
    t->user_id = user_id;
    t->item_id = item_id;
    t->scen = scen;
    t->src = src;
    t->converted = 0;
    t->known_negative = 0;
}

int lrn_impression(lrn *L, const m3_impression *im, int src, int64_t arrival_ms,
                   lrn_emit_fn emit, void *ud, char *reason, size_t reason_size) {
    int scen = scenario_of(L, im->scenario, reason, reason_size);
    if (scen < 0) return -1;
    lrn_src *S = source(L, src, reason, reason_size);
    if (!S) return -1;
    if (L->n_imp >= L->cfg->batch_size) lrn_run_batch(L, emit, ud);
    int i = L->n_imp++;
    m3_example *ex = &L->ex[i];
    make_example(L->cfg, ex, scen, im->ts_ms, im->user_id, im->item_id, &im->user_cat,
                 &im->item_cat, &im->ctx_cat, &im->user_num, &im->item_num);
    ex->y_click = im->clicked ? 1.0f : 0.0f;
    ex->w_ctr = 1.0f;
    /* an unclicked impression is a CTCVR negative at once; a clicked one waits for its
     * label (window) or its elapsed time (esdfm with one), or trains at once as a negative
     * corrected later (fnw, defer, esdfm) */
    ex->w_ctcvr = im->clicked && (L->feedback == LRN__FB_WINDOW || L->elapse_ms > 0) ? 0.0f
                                                                                   : 1.0f;
    set_tag(&L->tags[i], im->impression_id, im->ts_ms, arrival_ms, im->user_id, im->item_id,
            scen, src);
    met_counters *mc = met_board_counters(L->board);
    mc->impressions++;
    mc->clicks += im->clicked;
    advance_watermark(L, S, im->ts_ms);
    if (L->n_imp >= L->cfg->batch_size) lrn_run_batch(L, emit, ud);
    return 0;
}

/* A conversion for an impression still queued in the batch: label that row now.
 * Returns 3 (joined in the batch), 2 (late) or 0 (not there). */
static int convert_queued(lrn *L, const m3_conversion *cv, int src) {
    for (int i = L->n_imp - 1; i >= 0; i--) {
        lrn_tag *t = &L->tags[i];
        if (t->src != src || strcmp(t->id, cv->impression_id) != 0) continue;
        m3_example *ex = &L->ex[i];
        if (ex->y_click < 0.5f || t->converted) return 0;
        if (cv->ts_ms - t->ts_ms > L->cfg->join_window_ms) return 2;
        t->converted = 1;
        ex->y_conv = 1.0f;
        ex->w_ctcvr = 1.0f;
        return 3;
    }
    return 0;
}

int lrn_conversion(lrn *L, const m3_conversion *cv, int src, lrn_emit_fn emit, void *ud,
                   char *reason, size_t reason_size) {
    if (scenario_of(L, cv->scenario, reason, reason_size) < 0) return -1;
    lrn_src *S = source(L, src, reason, reason_size);
    if (!S) return -1;
    met_counters *mc = met_board_counters(L->board);
    mc->conversions++;
    advance_watermark(L, S, cv->ts_ms);
    if (L->n_settled >= settled_cap(L)) lrn_run_batch(L, emit, ud);
    int r = pend_convert(S->pend, cv->impression_id, cv->ts_ms, &L->settled[L->n_settled]);
    if (r == 0) r = convert_queued(L, cv, src);
    if (r == 1) L->n_settled++;
    else if (r == 2) mc->late_conversions++;
    else if (r == 0) mc->unmatched_conversions++;
    return 0;
}

int lrn_reveal_negative(lrn *L, int src, const char *impression_id, lrn_emit_fn emit,
                        void *ud) {
    if (src < 0 || src >= L->n_srcs) return 0;
    for (int i = L->n_imp - 1; i >= 0; i--) {   /* still queued: known with its batch */
        lrn_tag *t = &L->tags[i];
        if (t->src != src || strcmp(t->id, impression_id) != 0) continue;
        if (L->ex[i].y_click < 0.5f || t->converted) return 0;
        t->known_negative = 1;
        L->ex[i].w_ctcvr = 1.0f;
        return 1;
    }
    lrn_src *S = &L->srcs[src];
    if (!S->pend) return 0;
    if (L->n_settled >= settled_cap(L)) lrn_run_batch(L, emit, ud);
    if (!pend_settle_negative(S->pend, impression_id, &L->settled[L->n_settled])) return 0;
    L->n_settled++;
    return 1;
}

int lrn_request(lrn *L, const m3_score_request *rq, int64_t arrival_ms,
                lrn_emit_fn emit, void *ud, char *reason, size_t reason_size) {
    int scen = scenario_of(L, rq->scenario, reason, reason_size);
    if (scen < 0) return -1;
    met_board_counters(L->board)->requests++;
    for (int c = 0; c < rq->n_cands; c++) {
        if (L->n_req == L->cap) lrn_run_batch(L, emit, ud);
        const m3_candidate *cd = &rq->cands[c];
        int i = L->n_req++;
        make_example(L->cfg, &L->req_ex[i], scen, rq->ts_ms, rq->user_id, cd->item_id,
                     &rq->user_cat, &cd->item_cat, &rq->ctx_cat, &rq->user_num, &cd->item_num);
        set_tag(&L->req_tags[i], rq->request_id, rq->ts_ms, arrival_ms, rq->user_id,
                cd->item_id, scen, -1);
    }
    return 0;
}

/* The guard's log line, at the 1st, 2nd, 4th, 8th... occurrence of what it counts: the
 * stderr of a poisoned stream stays readable, and the report holds the exact counts. */
static void guard_log(const lrn *L, int m, const char *what, uint64_t n) {
    if (n & (n - 1)) return;
    fprintf(stderr, "m3rec: guard: model %s: %s (%llu so far)\n",
            m3_arch_name(m ? L->cfg->shadow[m - 1] : L->cfg->model.arch), what,
            (unsigned long long)n);
}

/* 1 when a prediction may go out: a NaN or an infinity never does (it is counted). */
static int prediction_finite(lrn *L, int m, float p_ctr, float p_cvr) {
    if (isfinite(p_ctr) && isfinite(p_cvr)) return 1;
    met_guard *g = met_board_guard(L->board, m);
    guard_log(L, m, "non-finite prediction withheld", ++g->nonfinite_predictions);
    return 0;
}

static void emit_one(lrn *L, const lrn_tag *t, float p_ctr, float p_cvr, int64_t now,
                     lrn_emit_fn emit, void *ud) {
    if (!prediction_finite(L, 0, p_ctr, p_cvr)) return;
    m3_prediction p;
    memcpy(p.id, t->id, sizeof p.id);
    p.ts_ms = t->ts_ms;
    snprintf(p.scenario, sizeof p.scenario, "%s", L->cfg->scenarios.names[t->scen]);
    p.user_id = t->user_id;
    p.item_id = t->item_id;
    p.p_ctr = p_ctr;
    p.p_cvr = p_cvr;
    p.p_ctcvr = p_ctr * p_cvr;
    p.model_version = L->version;
    if (emit) emit(ud, &p);
    met_board_counters(L->board)->predictions++;
    if (t->arrival_ms > 0) met_board_latency(L->board, (double)(now - t->arrival_ms));
}

/* ---- the minibatch: every model scores it, the primary's predictions go out, the metrics
 * take them, and only then does every model learn from it ---- */

/* Prequential metrics of model m for one row: the scenario's and each of its slices'. */
static void measure(lrn *L, int m, const m3_example *ex, met_task task, float p, int y) {
    met_board_add_at(L->board, m, ex->scenario, task, p, y, ex->ts_ms);
    met_board_add_slices_at(L->board, m, ex->scenario, ex->slices, task, p, y, ex->ts_ms);
}

/* A clicked impression's label settled (y: converted within its window): every model's
 * CTCVR and CVR (clicked impressions only: the ESMM papers' CVR AUC), each with the
 * prediction made at the impression. An entry without its p_cvr (stored before p_cvr was
 * kept, or unreadable) has no CVR sample and is counted. */
static void measure_click(lrn *L, const pend_entry *e, int y) {
    for (int m = 0; m < L->n_models; m++) {
        measure(L, m, &e->ex, MET_CTCVR, e->p_ctcvr[m], y);
        if (e->has_cvr) measure(L, m, &e->ex, MET_CVR, e->p_cvr[m], y);
    }
    if (!e->has_cvr) met_board_counters(L->board)->cvr_unscored++;
}

/* esdfm: a settled label of a fake negative teaches the auxiliary model (real_negative: its
 * window closed unconverted), once a window has closed; out of memory loses the label. */
static void aux_learn(lrn *L, const m3_example *ex, int real_negative) {
    if (real_negative) L->aux_open = 1;
    if (L->aux_open) esd_add(L->aux, ex, real_negative);
}

/* esdfm with an elapsed time, one source: the closed windows first - a click whose fake
 * negative went out is measured (and teaches the auxiliary model) and leaves, one whose
 * copy had not gone out yet settles as a plain negative - then the fake-negative copies of
 * the clicks whose elapsed time passed, as many as the batch has room for. */
static void collect_elapsed(lrn *L, lrn_src *S, int64_t wm) {
    int room;
    while ((room = settled_cap(L) - L->n_settled) > 0) {
        pend_entry *out = L->settled + L->n_settled;
        int got = pend_expire(S->pend, wm, out, room);
        for (int j = 0; j < got; j++) {
            if (!out[j].elapsed) {
                if (L->settled + L->n_settled != &out[j]) L->settled[L->n_settled] = out[j];
                L->n_settled++;
                continue;
            }
            measure_click(L, &out[j], 0);
            aux_learn(L, &out[j].ex, 1);
        }
        if (got < room) break;
    }
    room = settled_cap(L) - L->n_settled;
    if (room > 0) L->n_settled += pend_elapse(S->pend, wm, L->settled + L->n_settled, room);
}

/* Move impressions whose window closed (per source, round robin) into the settled rows,
 * as many as the batch has room for; the rest wait for the next batch. With fnw and esdfm
 * a closed window trains the model nothing (its fake negative did): the row is measured
 * (and teaches esdfm's auxiliary model) and leaves at once. */
static void collect_expired(lrn *L) {
    for (int k = 0; k < L->n_srcs; k++) {
        int room = settled_cap(L) - L->n_settled;
        if (room <= 0) break;
        lrn_src *S = &L->srcs[(L->expire_from + k) % L->n_srcs];
        int64_t clock = S->pend ? src_clock(S, L->cfg->join_lateness_ms) : INT64_MIN;
        if (clock == INT64_MIN || clock < INT64_MIN + L->cfg->join_lateness_ms) continue;
        int64_t wm = clock - L->cfg->join_lateness_ms;
        if (L->elapse_ms > 0) {
            collect_elapsed(L, S, wm);
            continue;
        }
        pend_entry *out = L->settled + L->n_settled;
        int got = pend_expire(S->pend, wm, out, room);
        if (L->feedback != LRN__FB_FNW && L->feedback != LRN__FB_ESDFM) {
            L->n_settled += got;
            continue;
        }
        for (; got > 0; got = got == room ? pend_expire(S->pend, wm, out, room) : 0)
            for (int j = 0; j < got; j++) {
                measure_click(L, &out[j], 0);
                if (L->aux) aux_learn(L, &out[j].ex, 1);
            }
    }
    if (L->n_srcs) L->expire_from = (L->expire_from + 1) % L->n_srcs;
}

/* Whether queued impression i's CTCVR label is known with its batch: not clicked,
 * converted while queued, or revealed as a negative (lrn_reveal_negative). */
static int label_known(const lrn *L, int i) {
    return L->ex[i].y_click < 0.5f || L->tags[i].converted || L->tags[i].known_negative;
}

/* Each training row's role for the fake-negative methods (LRN__ROW_*). A click trains
 * its fake negative at once, or (esdfm with an elapsed time) as a settled copy; a settled
 * negative is defer's copy, or a click whose window closed before its elapsed time. */
static void assign_roles(lrn *L, int B) {
    for (int i = 0; i < B; i++) {
        const m3_example *ex = &L->ex[i];
        if (i < L->n_imp)
            L->role[i] = label_known(L, i) ? LRN__ROW_PLAIN
                         : L->elapse_ms > 0 ? LRN__ROW_WAIT : LRN__ROW_FAKE_NEG;
        else if (L->settled[i - L->n_imp].copy)
            L->role[i] = LRN__ROW_FAKE_NEG;
        else
            L->role[i] = ex->y_conv > 0.5f ? LRN__ROW_POS
                         : L->feedback == LRN__FB_DEFER ? LRN__ROW_DUP_NEG : LRN__ROW_PLAIN;
    }
}

/* The rows of the minibatch: the queued impressions, then the settled rows (expired
 * windows are collected first), shown to the state's prepare hook. Returns B (0: none). */
static int assemble_batch(lrn *L) {
    if (L->aux) esd_begin(L->aux);
    collect_expired(L);
    int n_imp = L->n_imp, B = n_imp + L->n_settled;
    L->last_settled = L->n_settled;
    if (B == 0) return 0;
    for (int j = 0; j < L->n_settled; j++) L->ex[n_imp + j] = L->settled[j].ex;
    if (L->feedback != LRN__FB_WINDOW) assign_roles(L, B);
    if (L->prepare) L->prepare(L->hook_ud, L->ex, B, n_imp, 1);
    return B;
}

/* Every model's forward pass over the B rows into p_ctr[m], p_cvr[m]. Settled rows are
 * scored again with the UPT input they were first scored with (their snapshot). */
static void score_batch(lrn *L, int B) {
    int n_imp = L->n_imp;
    for (int m = 0; m < L->n_models; m++) {
        size_t n = m3_snap_bytes(L->models[m]);
        for (int i = 0; i < B; i++) {
            const pend_entry *e = i < n_imp ? NULL : &L->settled[i - n_imp];
            L->snaps[m][i] = n && e && e->snap_len == L->snap_len ? e->snap + L->snap_off[m] : NULL;
        }
        m3_forward_snap(L->models[m], L->ex, B, L->snaps[m], L->p_ctr[m], L->p_cvr[m]);
    }
}

/* The primary model's predictions of the impressions go out before anything learns. */
static void emit_batch(lrn *L, lrn_emit_fn emit, void *ud) {
    int64_t now = clk_real_ms();
    for (int i = 0; i < L->n_imp; i++)
        emit_one(L, &L->tags[i], L->p_ctr[0][i], L->p_cvr[0][i], now, emit, ud);
}

/* Every model's CTR on each impression, and its CTCVR where the label is known now (not
 * clicked, or converted while queued: then its CVR too). Each row keeps its slice flags: a clicked one
 * carries them into the pending join, since the later forward of the settled row sees a
 * state that moved on. */
static void measure_impressions(lrn *L) {
    for (int i = 0; i < L->n_imp; i++) {
        m3_example *ex = &L->ex[i];
        ex->slices = (uint8_t)m3_slice_flags(L->models[0], i);
        int known = label_known(L, i);
        for (int m = 0; m < L->n_models; m++) {
            float pc = L->p_ctr[m][i];
            if (m > 0) prediction_finite(L, m, pc, L->p_cvr[m][i]);   /* the primary's: emit */
            measure(L, m, ex, MET_CTR, pc, ex->y_click > 0.5f);
            if (known) measure(L, m, ex, MET_CTCVR, pc * L->p_cvr[m][i], ex->y_conv > 0.5f);
            if (known && ex->y_click > 0.5f)   /* converted while queued, or revealed */
                measure(L, m, ex, MET_CVR, L->p_cvr[m][i], ex->y_conv > 0.5f);
        }
    }
}

/* A clicked impression not yet converted waits in its source's pending join for its CTCVR
 * label, with every model's prediction and UPT snapshot from this batch. */
static void park_clicked(lrn *L) {
    for (int i = 0; i < L->n_imp; i++) {
        const m3_example *ex = &L->ex[i];
        if (label_known(L, i)) continue;
        float p_ctcvr[LRN_MAX_MODELS], p_cvr[LRN_MAX_MODELS];
        unsigned char snap[PEND_SNAP_MAX];
        for (int m = 0; m < L->n_models; m++) {
            p_ctcvr[m] = L->p_ctr[m][i] * L->p_cvr[m][i];
            p_cvr[m] = L->p_cvr[m][i];
            m3_snap_save(L->models[m], i, snap + L->snap_off[m]);
        }
        pend_add(L->srcs[L->tags[i].src].pend, L->tags[i].id, ex, p_ctcvr, p_cvr, L->n_models,
                 snap, L->snap_len);
    }
}

/* The settled rows' CTCVR and CVR, with the predictions made when they were impressions
 * (not esdfm's fake-negative copies: their label has not settled). */
static void measure_settled(lrn *L) {
    for (int j = 0; j < L->n_settled; j++) {
        const pend_entry *e = &L->settled[j];
        if (!e->copy) measure_click(L, e, e->ex.y_conv > 0.5f);
    }
}

/* The minibatch as trained, to lrn_set_batch_hook's recorder. */
static void record_batch(lrn *L, int B) {
    if (!L->batch_fn) return;
    int n_imp = L->n_imp;
    for (int i = 0; i < n_imp; i++) L->batch_ids[i] = L->tags[i].id;
    for (int j = 0; j < L->n_settled; j++) L->batch_ids[n_imp + j] = L->settled[j].impression_id;
    L->batch_fn(L->batch_ud, L->ex, L->batch_ids, B, n_imp);
}

/* Model m's dense parameters went bad: back to its last good state - the store's (the
 * rollback hook: the last checkpoint's blob), else the model's own last good copy. */
static void roll_back(lrn *L, int m) {
    met_guard *g = met_board_guard(L->board, m);
    int from_hook = L->rollback && L->rollback(L->rollback_ud, m) == 0;
    int kept = from_hook ? 1 : m3_rollback(L->models[m]);
    g->rollbacks++;
    fprintf(stderr, "m3rec: guard: model %s: non-finite parameters, rolled back to %s "
            "(rollbacks so far: %llu)\n",
            m3_arch_name(m ? L->cfg->shadow[m - 1] : L->cfg->model.arch),
            from_hook ? "the last checkpoint" : kept ? "the last good copy" : "its initial state",
            (unsigned long long)g->rollbacks);
}

/* The CTCVR weight of a row of the given role, q being the training model's p_cvr on it.
 * A clicked row's CTCVR label is observed with a bias: fnw shows every click as a
 * negative and each converted one again as a positive, so b(1|x) = q / (1 + q), and the
 * importance weights p/b of Ktena et al. 2019 are 1 + q on a positive and (1 - q)(1 + q)
 * on a negative. defer (Gu et al. 2021, no wait) shows every click twice - a fake
 * negative now, the true label when the window closes - so b(1|x) = q / 2: weights 2 on
 * a positive, (1 - q) / (1 - q / 2) on either negative. Both assume the biased rows are
 * all there is; here CTCVR is learned over the entire impression space, where a click's
 * rows share p_ctcvr(x) with the unclicked impressions of weight 1. A click must then
 * weigh 1 in expectation, as it would with its true label alone: so the weights are
 * divided by the click's expected row count, 1 + q (fnw) or 2 (defer) - measured: without
 * it mean p_ctcvr ran 29 % (fnw) and 69 % (defer) above the observed rate. Hence fnw
 * 1 on a positive, 1 - q on a negative; defer 1 on a positive, (1 - q) / (2 - q) on each
 * negative: a click's expected loss is q l(1) + (1 - q) l(0), the unbiased one. A label
 * known for sure (an unclicked impression, a conversion that arrived while its impression
 * was queued) keeps weight 1. esdfm (Yang et al. 2021) shows the rows as fnw does, with
 * weights 1 + p_dp on a positive and (1 + p_dp) p_rn on a fake negative from an auxiliary
 * model; divided by the same expected count 1 + p_dp: 1 and rn = p_rn(x) (esdfm.h), or
 * fnw's 1 - q while the auxiliary model is not warm (rn < 0). */
static float fb_weight(int feedback, int role, float q, float rn) {
    q = q > 0.0f ? (q < 1.0f ? q : 1.0f) : 0.0f;   /* NaN too: the guard refuses the step */
    if (role == LRN__ROW_PLAIN || role == LRN__ROW_POS) return 1.0f;
    if (role == LRN__ROW_WAIT) return 0.0f;
    if (feedback == LRN__FB_ESDFM) return rn >= 0.0f ? rn : 1.0f - q;
    return feedback == LRN__FB_FNW ? 1.0f - q : (1.0f - q) / (2.0f - q);
}

/* The fake-negative methods' CTCVR weights of the B rows for model m, from its own p_cvr
 * of this batch's forward pass (esdfm: from aux_predict's). */
static void set_weights(lrn *L, int m, int B) {
    for (int i = 0; i < B; i++)
        L->ex[i].w_ctcvr = fb_weight(L->feedback, L->role[i], L->p_cvr[m][i],
                                     L->aux ? L->aux_rn[i] : -1.0f);
}

/* esdfm: the auxiliary model's p_rn of this batch's fake negatives (-1 until it is warm:
 * fnw's weight then), from its weights before this batch; then the batch's settled
 * positives join its step (applied after the models trained: aux_step). */
static void aux_predict(lrn *L, int B) {
    int warm = esd_labels(L->aux) >= LRN__ESD_WARM;
    for (int i = 0; i < B; i++)
        L->aux_rn[i] = warm && L->role[i] == LRN__ROW_FAKE_NEG ? esd_p_rn(L->aux, &L->ex[i])
                                                               : -1.0f;
    for (int i = L->n_imp; i < B; i++)   /* the outcome of a fake negative only */
        if (L->role[i] == LRN__ROW_POS && (L->elapse_ms == 0 || L->settled[i - L->n_imp].elapsed))
            aux_learn(L, &L->ex[i], 0);
}

/* Every model takes its step on the cached batch. A step the model's guard refused is
 * counted; if the refusal came from parameters gone bad (not from the batch), the model
 * rolls back at once, so no later batch is scored by it. Without a store, a good model is
 * copied every LRN__GOOD_EVERY batches. */
static int train_models(lrn *L) {
    int B = L->n_imp + L->n_settled, primary_trained = 1;
    for (int m = 0; m < L->n_models; m++) {
        m3_model *md = L->models[m];
        if (L->feedback != LRN__FB_WINDOW) set_weights(L, m, B);
        if (!isnan(m3_train(md, L->ex))) {
            if (!L->rollback && L->version % LRN__GOOD_EVERY == 0) m3_mark_good(md);
            continue;
        }
        met_guard *g = met_board_guard(L->board, m);
        g->skipped_rows += (uint64_t)B;
        guard_log(L, m, "training step skipped (non-finite loss or gradient)",
                  ++g->skipped_steps);
        if (m == 0) primary_trained = 0;
        if (!m3_params_finite(md)) roll_back(L, m);
    }
    return primary_trained;
}

/* Every model learns from the B rows; the queue is empty afterwards. The trained-row
 * counters follow the primary model: a step its guard refused trained nothing, and its
 * rows count in the guard's skipped_rows instead. */
static void train_batch(lrn *L, int B) {
    if (train_models(L)) {
        for (int i = 0; i < B; i++) {
            L->trained_ctr += L->ex[i].w_ctr > 0;
            L->trained_ctcvr += L->ex[i].w_ctcvr > 0;
        }
    }
    if (L->trained) L->trained(L->hook_ud, L->ex, B, L->n_imp);
    L->version++;
    L->n_imp = 0;
    L->n_settled = 0;
}

/* The prequential step on the queued impressions and settled labels. */
static void run_training_batch(lrn *L, lrn_emit_fn emit, void *ud) {
    int B = assemble_batch(L);
    if (B > 0) {
        score_batch(L, B);
        emit_batch(L, emit, ud);
        measure_impressions(L);
        park_clicked(L);
        measure_settled(L);
        if (L->aux) aux_predict(L, B);
        if (L->feedback != LRN__FB_WINDOW) set_weights(L, 0, B);   /* the recorder sees them */
        record_batch(L, B);
        train_batch(L, B);
    }
    if (L->aux) esd_apply(L->aux);   /* the labels settled in this batch, expired ones too */
}

/* The queued score-request candidates, scored by the primary model as it is now. */
static void score_requests(lrn *L, lrn_emit_fn emit, void *ud) {
    if (L->n_req == 0) return;
    if (L->prepare) L->prepare(L->hook_ud, L->req_ex, L->n_req, 0, 0);
    m3_forward(L->models[0], L->req_ex, L->n_req, L->p_ctr[0], L->p_cvr[0]);
    int64_t now = clk_real_ms();
    for (int i = 0; i < L->n_req; i++)
        emit_one(L, &L->req_tags[i], L->p_ctr[0][i], L->p_cvr[0][i], now, emit, ud);
    L->n_req = 0;
}

void lrn_run_batch(lrn *L, lrn_emit_fn emit, void *ud) {
    run_training_batch(L, emit, ud);
    score_requests(L, emit, ud);
}

void lrn_drain(lrn *L, lrn_emit_fn emit, void *ud) {
    do lrn_run_batch(L, emit, ud);
    while (L->last_settled >= settled_cap(L));
}

/* ---- the state behind the learner ---- */

void lrn_set_hooks(lrn *L, lrn_prepare_fn prepare, lrn_trained_fn trained, void *ud) {
    L->prepare = prepare;
    L->trained = trained;
    L->hook_ud = ud;
}

void lrn_set_rollback(lrn *L, lrn_rollback_fn fn, void *ud) {
    L->rollback = fn;
    L->rollback_ud = ud;
}

void lrn_set_pend_loader(lrn *L, pend_load_fn fn, void *ud) {
    L->pend_load = fn;
    L->pend_ud = ud;
    for (int i = 0; i < L->n_srcs; i++)
        if (L->srcs[i].pend) pend_set_loader(L->srcs[i].pend, fn, ud, i);
}

int lrn_at_boundary(const lrn *L) { return L->n_imp == 0 && L->n_req == 0 && L->n_settled == 0; }
int lrn_n_models(const lrn *L) { return L->n_models; }
m3_model *lrn_model(lrn *L, int i) { return i >= 0 && i < L->n_models ? L->models[i] : NULL; }
int lrn_n_sources(const lrn *L) { return L->n_srcs; }
uint64_t lrn_trained_ctr(const lrn *L) { return L->trained_ctr; }
uint64_t lrn_trained_ctcvr(const lrn *L) { return L->trained_ctcvr; }

pend_table *lrn_source_pending(lrn *L, int src, int create, char *errstr, size_t errstr_size) {
    if (src >= 0 && src < L->n_srcs && L->srcs[src].pend) return L->srcs[src].pend;
    if (!create) {
        snprintf(errstr, errstr_size, "source %d has no pending table", src);
        return NULL;
    }
    lrn_src *S = source(L, src, errstr, errstr_size);
    return S ? S->pend : NULL;
}

#define LRN__MAGIC 0x534e524cU   /* "LRNS" */
#define LRN__VERSION 3U          /* 2: each model's guard counters after its clock, each
                                    source's two newest event times, the admission counters;
                                    3: the guard's skipped_rows, each source's event count
                                    (up to 3). 1 and 2 are read too (what they lack from 0;
                                    a source with two times as having seen 3) */
#define LRN__NGUARD 4            /* met_guard fields saved (version 3; 2 saved 3 of them) */
#define LRN__NGUARD_V(ver) ((ver) >= 3U ? 4 : (ver) == 2U ? 3 : 0)
#define LRN__NCOUNT 9            /* met_counters fields, in declaration order */
#define LRN__NADM 5              /* lrn_admission fields, in declaration order */
#define LRN__SRC_BYTES(ver) ((ver) == 1U ? 8 + 8 + 8 + 1 : (ver) == 2U ? 8 + 8 + 8 + 8 + 1 \
                                                                  : 8 + 8 + 8 + 8 + 1 + 1)

static void lrn__guard(met_guard *g, uint64_t **p) {
    p[0] = &g->skipped_steps; p[1] = &g->rollbacks; p[2] = &g->nonfinite_predictions;
    p[3] = &g->skipped_rows;   /* last: version 2 records end before it */
}

static void lrn__counters(met_counters *c, uint64_t **p) {
    p[0] = &c->events; p[1] = &c->impressions; p[2] = &c->clicks; p[3] = &c->conversions;
    p[4] = &c->requests; p[5] = &c->predictions; p[6] = &c->dlq; p[7] = &c->late_conversions;
    p[8] = &c->unmatched_conversions;
}

static void lrn__adm_counters(lrn_admission *a, uint64_t **p) {
    p[0] = &a->num_refused; p[1] = &a->num_clipped; p[2] = &a->time_ahead;
    p[3] = &a->time_behind; p[4] = &a->time_confirmed;
}

size_t lrn_state_save(lrn *L, void *buf, size_t cap) {
    size_t need = 4 + 4 + 8 + 4 + 4 + 8 + 8 + 8 * LRN__NCOUNT + 4 +
                  (8 + 8 * LRN__NGUARD) * (size_t)L->n_models +
                  (size_t)L->n_srcs * LRN__SRC_BYTES(LRN__VERSION) + 8 + 8 * LRN__NADM;
    if (!buf || cap < need) return need;
    wire_w w = {buf, 0};
    uint32_t magic = LRN__MAGIC, ver = LRN__VERSION;
    int32_t ef = L->expire_from, ns = L->n_srcs, nm = L->n_models;
    wire_put(&w, &magic, sizeof magic);
    wire_put(&w, &ver, sizeof ver);
    wire_put(&w, &L->version, sizeof L->version);
    wire_put(&w, &ef, sizeof ef);
    wire_put(&w, &ns, sizeof ns);
    wire_put(&w, &L->trained_ctr, sizeof L->trained_ctr);
    wire_put(&w, &L->trained_ctcvr, sizeof L->trained_ctcvr);
    uint64_t *cp[LRN__NCOUNT];
    lrn__counters(met_board_counters(L->board), cp);
    for (int i = 0; i < LRN__NCOUNT; i++) wire_put(&w, cp[i], sizeof *cp[i]);
    wire_put(&w, &nm, sizeof nm);
    for (int m = 0; m < L->n_models; m++) {
        int64_t clk = m3_clock(L->models[m]);
        wire_put(&w, &clk, sizeof clk);
        uint64_t *gp[LRN__NGUARD];
        lrn__guard(met_board_guard(L->board, m), gp);
        for (int k = 0; k < LRN__NGUARD; k++) wire_put(&w, gp[k], sizeof *gp[k]);
    }
    for (int i = 0; i < L->n_srcs; i++) {
        const lrn_src *S = &L->srcs[i];
        int64_t pwm = S->pend ? pend_watermark(S->pend) : INT64_MIN;
        uint64_t seq = S->pend ? pend_next_seq(S->pend) : 0;
        uint8_t has = S->pend != NULL;
        wire_put(&w, &S->newest_ms, sizeof S->newest_ms);
        wire_put(&w, &S->second_ms, sizeof S->second_ms);
        wire_put(&w, &pwm, sizeof pwm);
        wire_put(&w, &seq, sizeof seq);
        wire_put(&w, &has, sizeof has);
        uint8_t seen = (uint8_t)S->seen;
        wire_put(&w, &seen, sizeof seen);
    }
    wire_put(&w, &L->ahead_ms, sizeof L->ahead_ms);
    uint64_t *ap[LRN__NADM];
    lrn__adm_counters(&L->adm, ap);
    for (int i = 0; i < LRN__NADM; i++) wire_put(&w, ap[i], sizeof *ap[i]);
    return w.off;
}

static int lrn__malformed(size_t len, char *errstr, size_t errstr_size) {
    snprintf(errstr, errstr_size, "learner state: malformed record (%zu bytes)", len);
    return -1;
}

int lrn_state_load(lrn *L, const void *buf, size_t len, char *errstr, size_t errstr_size) {
    wire_r r = {buf, len, 0, false};
    uint32_t magic, ver;
    int64_t version;
    int32_t ef, ns, nm;
    uint64_t tc, tv, cnt[LRN__NCOUNT];
    wire_get(&r, &magic, sizeof magic);
    wire_get(&r, &ver, sizeof ver);
    if (r.short_) return lrn__malformed(len, errstr, errstr_size);
    if (magic != LRN__MAGIC || ver < 1 || ver > LRN__VERSION) {
        snprintf(errstr, errstr_size, "learner state: magic 0x%08x version %u, this build "
                 "reads 0x%08x versions 1..%u", magic, ver, LRN__MAGIC, LRN__VERSION);
        return -1;
    }
    wire_get(&r, &version, sizeof version);
    wire_get(&r, &ef, sizeof ef);
    wire_get(&r, &ns, sizeof ns);
    wire_get(&r, &tc, sizeof tc);
    wire_get(&r, &tv, sizeof tv);
    for (int i = 0; i < LRN__NCOUNT; i++) wire_get(&r, &cnt[i], sizeof cnt[i]);
    wire_get(&r, &nm, sizeof nm);
    if (r.short_) return lrn__malformed(len, errstr, errstr_size);
    if (nm != L->n_models) {
        snprintf(errstr, errstr_size, "learner state: %d models stored, %d configured", nm,
                 L->n_models);
        return -1;
    }
    if (ns < 0 || ns > 1 << 20) return lrn__malformed(len, errstr, errstr_size);
    int64_t clk[LRN_MAX_MODELS];
    uint64_t guard[LRN_MAX_MODELS][LRN__NGUARD] = {{0}};
    for (int m = 0; m < nm; m++) {
        wire_get(&r, &clk[m], sizeof clk[m]);
        for (int k = 0; k < LRN__NGUARD_V(ver); k++)
            wire_get(&r, &guard[m][k], sizeof guard[m][k]);
    }
    size_t tail = ver == 1U ? 0 : 8 + 8 * LRN__NADM;
    if (r.short_ || wire_left(&r) != (size_t)ns * LRN__SRC_BYTES(ver) + tail)
        return lrn__malformed(len, errstr, errstr_size);
    /* the same number of sources as saved: expiry visits them round robin */
    if (ns > L->n_srcs && grow_sources(L, ns) != 0) {
        snprintf(errstr, errstr_size, "learner state: out of memory");
        return -1;
    }
    for (int i = 0; i < ns; i++) {
        int64_t wm, wm2, pwm;
        uint64_t seq;
        uint8_t has;
        wire_get(&r, &wm, sizeof wm);
        wm2 = wm;   /* version 1 kept the newest only: it counts as confirmed */
        if (ver > 1U) wire_get(&r, &wm2, sizeof wm2);
        wire_get(&r, &pwm, sizeof pwm);
        wire_get(&r, &seq, sizeof seq);
        wire_get(&r, &has, sizeof has);
        uint8_t seen = wm2 != INT64_MIN ? 3 : wm != INT64_MIN;   /* before version 3 */
        if (ver >= 3U) wire_get(&r, &seen, sizeof seen);
        if (!has) continue;
        lrn_src *S = source(L, i, errstr, errstr_size);
        if (!S) return -1;
        S->newest_ms = wm;
        S->second_ms = wm2;
        S->seen = seen > 3 ? 3 : seen;
        if (wm > L->newest_ms) L->newest_ms = wm;
        int64_t c = src_clock(S, L->cfg->join_lateness_ms);
        if (c > L->clock_ms) L->clock_ms = c;
        pend_set_clock(S->pend, pwm, seq);
    }
    if (ver > 1U) {
        wire_get(&r, &L->ahead_ms, sizeof L->ahead_ms);
        uint64_t *ap[LRN__NADM];
        lrn__adm_counters(&L->adm, ap);
        for (int i = 0; i < LRN__NADM; i++) wire_get(&r, ap[i], sizeof *ap[i]);
    }
    L->version = version;
    L->expire_from = ns > 0 ? ef % ns : 0;
    L->trained_ctr = tc;
    L->trained_ctcvr = tv;
    uint64_t *cp[LRN__NCOUNT];
    lrn__counters(met_board_counters(L->board), cp);
    for (int i = 0; i < LRN__NCOUNT; i++) *cp[i] = cnt[i];
    met_board_set_events_base(L->board, cnt[0]);   /* cp[0] is events */
    for (int m = 0; m < nm; m++) {
        m3_set_clock(L->models[m], clk[m]);
        uint64_t *gp[LRN__NGUARD];
        lrn__guard(met_board_guard(L->board, m), gp);
        for (int k = 0; k < LRN__NGUARD; k++) *gp[k] = guard[m][k];
    }
    return 0;
}
