/* test_learner.c - the prequential loop: predict first, then train; the pending join; a
 * negative revealed early (the reveal bound's diagnostic). */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fsutil.h"
#include "engine/users.h"
#include "state/state.h"
#include "stream/learner.h"

#define WINDOW 3600000
#define T0 1767225600000LL

typedef struct {
    int n;
    m3_prediction p[64];
} sink;

static void collect(void *ud, const m3_prediction *p) {
    sink *s = ud;
    CHECK(s->n < 64);
    s->p[s->n++] = *p;
}

static m3_impression imp(const char *id, const char *scen, int64_t ts, int64_t user, int clicked) {
    m3_impression im;
    memset(&im, 0, sizeof im);
    snprintf(im.impression_id, sizeof im.impression_id, "%s", id);
    snprintf(im.scenario, sizeof im.scenario, "%s", scen);
    im.ts_ms = ts;
    im.user_id = user;
    im.item_id = 1000 + user;
    im.user_cat.n = 1;
    snprintf(im.user_cat.kv[0].name, M3_NAME_MAX, "age");
    im.user_cat.kv[0].value = user % 7;
    im.clicked = clicked;
    return im;
}

static m3_conversion conv(const char *imp_id, const char *scen, int64_t ts) {
    m3_conversion c;
    memset(&c, 0, sizeof c);
    snprintf(c.conversion_id, sizeof c.conversion_id, "c-%s", imp_id);
    snprintf(c.impression_id, sizeof c.impression_id, "%s", imp_id);
    snprintf(c.scenario, sizeof c.scenario, "%s", scen);
    c.ts_ms = ts;
    return c;
}

static lrn *make(m3_cfg *cfg) {
    cfg_defaults(cfg);
    char err[256];
    CHECK(cfg_set(cfg, "batch.size=4", "test", 1, err, sizeof err) == 0);
    CHECK(cfg_set(cfg, "model.shadow=lr", "test", 2, err, sizeof err) == 0);
    CHECK(cfg_set(cfg, "join.lateness.ms=0", "test", 3, err, sizeof err) == 0);
    CHECK_MSG(cfg_check(cfg, err, sizeof err) == 0, "%s", err);
    lrn *L = lrn_new(cfg, err, sizeof err);
    CHECK_MSG(L, "%s", err);
    return L;
}

static uint64_t ctcvr_n(lrn *L, int model) {
    return met_board_auc(lrn_board(L), model, -1, MET_CTCVR)->n;
}

/* The CVR accumulator of a model, overall: p_cvr against the conversion, clicks only. */
static const met_auc *cvr_acc(lrn *L, int model) {
    return met_board_auc(lrn_board(L), model, -1, MET_CVR);
}

static void test_predict_then_train(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    sink s = {0};
    char reason[256];
    m3_impression a = imp("a", "home", T0, 1, 0), b = imp("b", "search", T0 + 1, 2, 1);
    CHECK(lrn_impression(L, &a, 0, 0, collect, &s, reason, sizeof reason) == 0);
    CHECK(lrn_impression(L, &b, 0, 0, collect, &s, reason, sizeof reason) == 0);
    CHECK_EQ_INT(s.n, 0);               /* nothing before the batch is processed */
    CHECK_EQ_INT(lrn_queued(L), 2);
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(s.n, 2);
    CHECK_EQ_STR(s.p[0].id, "a");
    CHECK_EQ_STR(s.p[1].scenario, "search");
    CHECK_EQ_INT(s.p[0].model_version, 0); /* scored by the model before this step */
    CHECK_EQ_INT(lrn_model_version(L), 1);
    CHECK_CLOSE(s.p[0].p_ctcvr, s.p[0].p_ctr * s.p[0].p_cvr, 1e-6, 0);
    /* the same impression again is scored by the trained model: it moved */
    float before = s.p[0].p_ctr;
    m3_impression a2 = imp("a2", "home", T0 + 2, 1, 0);
    CHECK(lrn_impression(L, &a2, 0, 0, collect, &s, reason, sizeof reason) == 0);
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(s.n, 3);
    CHECK_EQ_INT(s.p[2].model_version, 1);
    CHECK(s.p[2].p_ctr != before);
    /* the batch flushes itself when full (batch.size=4) */
    s.n = 0;
    for (int i = 0; i < 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "f%d", i);
        m3_impression x = imp(id, "product", T0 + 10 + i, 3 + i, 0);
        CHECK(lrn_impression(L, &x, 1, 0, collect, &s, reason, sizeof reason) == 0);
    }
    CHECK_EQ_INT(s.n, 4);
    CHECK_EQ_INT(lrn_queued(L), 0);
    /* a bad scenario is refused with a reason and changes nothing */
    m3_impression bad = imp("z", "mars", T0, 1, 0);
    CHECK(lrn_impression(L, &bad, 0, 0, collect, &s, reason, sizeof reason) == -1);
    CHECK_EQ_STR(reason, "unknown scenario 'mars'");
    CHECK_EQ_INT(lrn_queued(L), 0);
    met_counters *mc = met_board_counters(lrn_board(L));
    CHECK_EQ_INT(mc->impressions, 7);
    CHECK_EQ_INT(mc->predictions, 7);
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* Queues two clicked impressions in source 0, c1 and c2, and an unclicked one, u. */
static void queue_c1_c2_u(lrn *L, sink *s) {
    char reason[256];
    m3_impression c1 = imp("c1", "home", T0, 1, 1), c2 = imp("c2", "home", T0 + 5, 2, 1);
    m3_impression u = imp("u", "home", T0 + 6, 3, 0);
    CHECK(lrn_impression(L, &c1, 0, 0, collect, s, reason, sizeof reason) == 0);
    CHECK(lrn_impression(L, &c2, 0, 0, collect, s, reason, sizeof reason) == 0);
    CHECK(lrn_impression(L, &u, 0, 0, collect, s, reason, sizeof reason) == 0);
}

static void test_join(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    sink s = {0};
    char reason[256];
    queue_c1_c2_u(L, &s);
    /* c2 converts while still queued: joined in the batch */
    m3_conversion k2 = conv("c2", "home", T0 + 60000);
    CHECK(lrn_conversion(L, &k2, 0, collect, &s, reason, sizeof reason) == 0);
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(lrn_pending(L), 1);    /* c1 waits */
    CHECK_EQ_INT(ctcvr_n(L, 0), 2);     /* u (negative at once) and c2 (joined) */
    CHECK_EQ_INT(met_board_auc(lrn_board(L), 0, -1, MET_CTCVR)->n_pos, 1);
    CHECK_EQ_INT(ctcvr_n(L, 1), 2);     /* the shadow model too */
    /* the CVR: c2 only (u was not clicked, c1's label is not known), with its p_cvr as
     * emitted at the impression */
    CHECK_EQ_INT(cvr_acc(L, 0)->n, 1);
    CHECK_EQ_INT(cvr_acc(L, 0)->n_pos, 1);
    CHECK_CLOSE(cvr_acc(L, 0)->sum_p, s.p[1].p_cvr, 0, 1e-7);
    CHECK_EQ_INT(cvr_acc(L, 1)->n, 1);
    /* a conversion in another source does not find c1 */
    m3_conversion k1 = conv("c1", "home", T0 + 70000);
    CHECK(lrn_conversion(L, &k1, 1, collect, &s, reason, sizeof reason) == 0);
    met_counters *mc = met_board_counters(lrn_board(L));
    CHECK_EQ_INT(mc->unmatched_conversions, 1);
    /* time passes in source 0 beyond c1's window (a jump: the second event confirms it),
     * c1 settles as a negative */
    m3_impression late = imp("l", "home", T0 + WINDOW + 1, 4, 0);
    m3_impression late2 = imp("l2", "home", T0 + WINDOW + 2, 5, 0);
    CHECK(lrn_impression(L, &late, 0, 0, collect, &s, reason, sizeof reason) == 0);
    lrn_run_batch(L, collect, &s);          /* one event alone does not close the window */
    CHECK_EQ_INT(lrn_pending(L), 1);
    CHECK(lrn_impression(L, &late2, 0, 0, collect, &s, reason, sizeof reason) == 0);
    lrn_run_batch(L, collect, &s);          /* closes c1's window: trained as a CTCVR negative */
    CHECK_EQ_INT(lrn_pending(L), 0);
    CHECK_EQ_INT(ctcvr_n(L, 0), 5);
    /* c1's CVR negative, scored as it was at its impression (from the pending join) */
    CHECK_EQ_INT(cvr_acc(L, 0)->n, 2);
    CHECK_EQ_INT(cvr_acc(L, 0)->n_pos, 1);
    CHECK_CLOSE(cvr_acc(L, 0)->sum_p, (double)s.p[0].p_cvr + s.p[1].p_cvr, 0, 1e-7);
    CHECK_EQ_INT(cvr_acc(L, 1)->n, 2);
    CHECK_EQ_INT(met_board_counters(lrn_board(L))->cvr_unscored, 0);
    lrn_run_batch(L, collect, &s);          /* nothing left to do */
    CHECK_EQ_INT(ctcvr_n(L, 0), 5);
    CHECK_EQ_INT(met_board_auc(lrn_board(L), 0, -1, MET_CTCVR)->n_pos, 1);
    /* its conversion now is late, not unknown */
    CHECK(lrn_conversion(L, &k1, 0, collect, &s, reason, sizeof reason) == 0);
    CHECK_EQ_INT(mc->late_conversions, 1);
    CHECK_EQ_INT(mc->conversions, 3);
    /* a conversion with an unknown scenario is refused */
    m3_conversion bad = conv("c1", "mars", T0);
    CHECK(lrn_conversion(L, &bad, 0, collect, &s, reason, sizeof reason) == -1);
    CHECK_CONTAINS(reason, "mars");
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* lrn_reveal_negative: a queued click is measured and trained with its own batch, a
 * pending one with the next; neither waits for its window; the unclicked and the unknown
 * are not revealed. */
static void test_reveal_negative(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    sink s = {0};
    queue_c1_c2_u(L, &s);
    CHECK_EQ_INT(lrn_reveal_negative(L, 0, "c2", collect, &s), 1);    /* queued */
    CHECK_EQ_INT(lrn_reveal_negative(L, 0, "u", collect, &s), 0);     /* not clicked */
    CHECK_EQ_INT(lrn_reveal_negative(L, 1, "c1", collect, &s), 0);    /* another source */
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(lrn_pending(L), 1);                 /* c1 waits, c2 does not */
    CHECK_EQ_INT(ctcvr_n(L, 0), 2);                  /* u and c2, both negatives */
    CHECK_EQ_INT(met_board_auc(lrn_board(L), 0, -1, MET_CTCVR)->n_pos, 0);
    CHECK_EQ_INT(met_board_auc(lrn_board(L), 0, -1, MET_CVR)->n, 1);      /* c2, a negative */
    CHECK_EQ_INT(met_board_auc(lrn_board(L), 0, -1, MET_CVR)->n_pos, 0);
    uint64_t trained = lrn_trained_ctcvr(L);
    CHECK_EQ_INT(lrn_reveal_negative(L, 0, "c1", collect, &s), 1);    /* pending */
    CHECK_EQ_INT(lrn_pending(L), 0);
    CHECK_EQ_INT(lrn_reveal_negative(L, 0, "c1", collect, &s), 0);    /* settled already */
    lrn_run_batch(L, collect, &s);                   /* trains it: no window closed */
    CHECK_EQ_INT(ctcvr_n(L, 0), 3);
    CHECK_EQ_INT(lrn_trained_ctcvr(L), trained + 1);
    CHECK_EQ_INT(met_board_auc(lrn_board(L), 0, -1, MET_CVR)->n, 2);
    CHECK_EQ_INT(met_board_auc(lrn_board(L), 0, -1, MET_CVR)->n_pos, 0);
    lrn_destroy(L);
    cfg_free(&cfg);
}

static void test_requests(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    sink s = {0};
    char reason[256];
    m3_candidate cands[3];
    memset(cands, 0, sizeof cands);
    for (int i = 0; i < 3; i++) cands[i].item_id = 500 + i;
    m3_score_request rq;
    memset(&rq, 0, sizeof rq);
    snprintf(rq.request_id, sizeof rq.request_id, "r1");
    snprintf(rq.scenario, sizeof rq.scenario, "search");
    rq.user_id = 9;
    rq.n_cands = 3;
    rq.cands = cands;
    CHECK(lrn_request(L, &rq, 0, collect, &s, reason, sizeof reason) == 0);
    CHECK_EQ_INT(s.n, 0);
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(s.n, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_STR(s.p[i].id, "r1");
        CHECK_EQ_INT(s.p[i].item_id, 500 + i);
        CHECK(s.p[i].p_ctr > 0 && s.p[i].p_ctr < 1);
    }
    CHECK_EQ_INT(lrn_model_version(L), 0); /* scoring does not train */
    CHECK_EQ_INT(met_board_counters(lrn_board(L))->impressions, 0);
    snprintf(rq.scenario, sizeof rq.scenario, "mars");
    CHECK(lrn_request(L, &rq, 0, collect, &s, reason, sizeof reason) == -1);
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* Many labels settling at once (conversions and closed windows) never overflow a
 * minibatch, and every clicked impression is counted exactly once. */
static void test_many_settled(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    sink s = {0};
    char reason[256], id[32];
    int n = 300;
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "m%d", i);
        m3_impression x = imp(id, "home", T0 + i, i, 1);
        s.n = 0;
        CHECK(lrn_impression(L, &x, 0, 0, collect, &s, reason, sizeof reason) == 0);
    }
    /* half convert, in a burst */
    for (int i = 0; i < n; i += 2) {
        snprintf(id, sizeof id, "m%d", i);
        m3_conversion k = conv(id, "home", T0 + n + i);
        s.n = 0;
        CHECK(lrn_conversion(L, &k, 0, collect, &s, reason, sizeof reason) == 0);
    }
    /* the rest time out together (two events: one alone does not move the clock) */
    m3_impression later = imp("later", "home", T0 + 10 * WINDOW, 1, 0);
    m3_impression later2 = imp("later2", "home", T0 + 10 * WINDOW + 1, 2, 0);
    s.n = 0;
    CHECK(lrn_impression(L, &later, 0, 0, collect, &s, reason, sizeof reason) == 0);
    CHECK(lrn_impression(L, &later2, 0, 0, collect, &s, reason, sizeof reason) == 0);
    for (int k = 0; k < 200 && lrn_pending(L) > 0; k++) {
        s.n = 0;
        lrn_run_batch(L, collect, &s);
    }
    s.n = 0;
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(lrn_pending(L), 0);
    CHECK_EQ_INT(ctcvr_n(L, 0), n + 2);
    CHECK_EQ_INT(met_board_auc(lrn_board(L), 0, -1, MET_CTCVR)->n_pos, n / 2);
    lrn_destroy(L);
    cfg_free(&cfg);
}

static int prepared, trained_rows;
static void hook_prepare(void *ud, m3_example *ex, int B, int n_imp, int train) {
    (void)ex;
    CHECK(ud == &prepared);
    CHECK(n_imp <= B);
    if (train) prepared += n_imp;
}
static void hook_trained(void *ud, const m3_example *ex, int B, int n_imp) {
    (void)ex; (void)n_imp;
    CHECK(ud == &prepared);
    trained_rows += B;
}

/* The stream state saved at a boundary loads into a fresh learner as the same bytes; the
 * hooks see every minibatch; boundaries are where nothing is queued. */
static void test_state_roundtrip(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    lrn_set_hooks(L, hook_prepare, hook_trained, &prepared);
    char reason[256], err[256];
    CHECK(lrn_at_boundary(L));
    m3_impression a = imp("a", "home", T0, 1, 1), b = imp("b", "search", T0 + 10, 2, 0);
    CHECK(lrn_impression(L, &a, 0, 0, NULL, NULL, reason, sizeof reason) == 0);
    CHECK(!lrn_at_boundary(L));
    CHECK(lrn_impression(L, &b, 3, 0, NULL, NULL, reason, sizeof reason) == 0);
    lrn_run_batch(L, NULL, NULL);
    CHECK(lrn_at_boundary(L));
    m3_conversion c = conv("a", "home", T0 + 100);
    CHECK(lrn_conversion(L, &c, 0, NULL, NULL, reason, sizeof reason) == 0);
    CHECK(!lrn_at_boundary(L));   /* a settled label waits for a batch */
    lrn_run_batch(L, NULL, NULL);
    CHECK(lrn_at_boundary(L));
    CHECK_EQ_INT(prepared, 2);
    CHECK_EQ_INT(trained_rows, 3);   /* two impressions, then the joined CTCVR row */
    CHECK_EQ_INT(lrn_trained_ctr(L), 2);
    CHECK_EQ_INT(lrn_trained_ctcvr(L), 2);
    CHECK_EQ_INT(lrn_n_sources(L), 4);
    /* a third event gives source 0 a clock (its first two are far apart for lateness 0) */
    m3_impression a3 = imp("a3", "home", T0 + 200, 1, 0);
    CHECK(lrn_impression(L, &a3, 0, 0, NULL, NULL, reason, sizeof reason) == 0);
    lrn_run_batch(L, NULL, NULL);
    CHECK_EQ_INT(lrn_clock(L), T0 + 100);
    /* a far-ahead refusal: its count and the event it remembers are stream state too */
    m3_event far;
    memset(&far, 0, sizeof far);
    far.type = M3_EV_IMPRESSION;
    far.u.imp = imp("far", "home", T0 + 400 * 86400000LL, 1, 0);
    CHECK_EQ_INT(lrn_admit(L, &far, 0, reason, sizeof reason), 1);
    size_t n = lrn_state_save(L, NULL, 0);
    unsigned char *buf = malloc(n), *buf2 = malloc(n);
    CHECK_EQ_INT(lrn_state_save(L, buf, n), n);
    m3_cfg cfg2;
    lrn *L2 = make(&cfg2);
    CHECK_MSG(lrn_state_load(L2, buf, n, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(lrn_state_save(L2, buf2, n), n);
    CHECK(!memcmp(buf, buf2, n));
    CHECK_EQ_INT(lrn_model_version(L2), lrn_model_version(L));
    CHECK_EQ_INT(met_board_counters(lrn_board(L2))->conversions, 1);
    CHECK_EQ_INT(lrn_n_sources(L2), 4);
    CHECK_EQ_INT(lrn_admission_counts(L2)->time_ahead, 1);
    CHECK_EQ_INT(lrn_clock(L2), lrn_clock(L));
    far.u.imp.ts_ms += 1;   /* agrees with the remembered one: admitted after the restart too */
    CHECK_EQ_INT(lrn_admit(L2, &far, 0, reason, sizeof reason), 0);
    /* a short record, and one of a learner with another model count, are refused */
    m3_cfg cfg3;
    lrn *L3 = make(&cfg3);
    CHECK_EQ_INT(lrn_state_load(L3, buf, n - 1, err, sizeof err), -1);
    CHECK_CONTAINS(err, "malformed");
    m3_cfg cfg4;
    cfg_defaults(&cfg4);
    CHECK(cfg_set(&cfg4, "batch.size=4", "test", 1, err, sizeof err) == 0);
    CHECK(cfg_check(&cfg4, err, sizeof err) == 0);
    lrn *L4 = lrn_new(&cfg4, err, sizeof err);   /* no shadow: one model */
    CHECK_EQ_INT(lrn_state_load(L4, buf, n, err, sizeof err), -1);
    CHECK_CONTAINS(err, "2 models stored, 1 configured");
    free(buf);
    free(buf2);
    lrn_destroy(L);
    lrn_destroy(L2);
    lrn_destroy(L3);
    lrn_destroy(L4);
    cfg_free(&cfg);
    cfg_free(&cfg2);
    cfg_free(&cfg3);
    cfg_free(&cfg4);
}

/* ---- admission ---- */

static int admit(lrn *L, const m3_event *ev, int src, char *reason) {
    reason[0] = '\0';
    return lrn_admit(L, ev, src, reason, 256);
}

static m3_event imp_event(const char *id, int64_t ts, const char *field, float v) {
    m3_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_IMPRESSION;
    ev.u.imp = imp(id, "home", ts, 1, 0);
    m3_nummap *m = strcmp(field, "activity") == 0 ? &ev.u.imp.user_num : &ev.u.imp.item_num;
    m->n = 1;
    snprintf(m->kv[0].name, M3_NAME_MAX, "%s", field);
    m->kv[0].value = v;
    return ev;
}

static float last_num[M3_MAX_NUM];
static void keep_nums(void *ud, const m3_example *ex, const char *const *ids, int B, int n_imp) {
    (void)ud; (void)ids; (void)B;
    if (n_imp > 0) memcpy(last_num, ex[n_imp - 1].num, sizeof last_num);
}

/* Numeric features: a value outside [-max_abs, max_abs] refuses its event with a reason
 * naming field, value and key; the bound itself and unread fields pass; with clip the
 * value is clipped; and the model never sees a value outside, admitted or not. */
static void test_admit_numbers(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    char reason[256];
    m3_event ev = imp_event("p", T0, "price", -3.4e38f);
    CHECK_EQ_INT(admit(L, &ev, 0, reason), 1);
    CHECK_EQ_STR(reason, "item_num.price=-3.4e+38 outside [-1e+06, 1e+06] "
                         "(features.num.max_abs; or features.num.clip=true)");
    ev = imp_event("a", T0, "activity", 3.35e38f);
    CHECK_EQ_INT(admit(L, &ev, 0, reason), 1);
    CHECK_CONTAINS(reason, "user_num.activity=3.35e+38 outside");
    ev = imp_event("b", T0, "price", 1e6f);          /* the bound itself */
    CHECK_EQ_INT(admit(L, &ev, 0, reason), 0);
    ev = imp_event("c", T0, "weight", 3e38f);        /* a field the model does not read */
    CHECK_EQ_INT(admit(L, &ev, 0, reason), 0);
    /* a score request's candidate */
    m3_candidate cand;
    memset(&cand, 0, sizeof cand);
    cand.item_num.n = 1;
    snprintf(cand.item_num.kv[0].name, M3_NAME_MAX, "rating");
    cand.item_num.kv[0].value = 2e6f;
    m3_event rq;
    memset(&rq, 0, sizeof rq);
    rq.type = M3_EV_SCORE_REQUEST;
    snprintf(rq.u.req.scenario, M3_NAME_MAX, "home");
    rq.u.req.n_cands = 1;
    rq.u.req.cands = &cand;
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 1);
    CHECK_CONTAINS(reason, "item_num.rating=2e+06 outside");
    CHECK_EQ_INT(lrn_admission_counts(L)->num_refused, 3);
    /* handed over without lrn_admit: the model still sees the bound, not the value */
    CHECK(lrn_set_batch_hook(L, keep_nums, NULL) == 0);
    ev = imp_event("p", T0, "price", -3.4e38f);
    CHECK(lrn_impression(L, &ev.u.imp, 0, 0, NULL, NULL, reason, sizeof reason) == 0);
    lrn_run_batch(L, NULL, NULL);
    CHECK_CLOSE(last_num[1], -1e6f, 0, 0);                /* slots: activity, price, rating */
    lrn_destroy(L);
    cfg_free(&cfg);
    /* clip: admitted, counted, clipped */
    L = make(&cfg);
    CHECK(cfg_set(&cfg, "features.num.clip=true", "test", 9, reason, sizeof reason) == 0);
    CHECK(lrn_set_batch_hook(L, keep_nums, NULL) == 0);
    ev = imp_event("a", T0, "activity", 3.35e38f);
    CHECK_EQ_INT(admit(L, &ev, 0, reason), 0);
    CHECK_EQ_INT(lrn_admission_counts(L)->num_clipped, 1);
    CHECK_EQ_INT(lrn_admission_counts(L)->num_refused, 0);
    CHECK(lrn_impression(L, &ev.u.imp, 0, 0, NULL, NULL, reason, sizeof reason) == 0);
    lrn_run_batch(L, NULL, NULL);
    CHECK_CLOSE(last_num[0], 1e6f, 0, 0);
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* Admit ev (an impression at ts on src) and, when admitted, queue it. Returns lrn_admit's. */
static int offer(lrn *L, const char *id, int64_t ts, int src, char *reason) {
    m3_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_IMPRESSION;
    ev.u.imp = imp(id, "home", ts, 1, 1);
    int r = admit(L, &ev, src, reason);
    char err[256];
    if (r == 0) CHECK(lrn_impression(L, &ev.u.imp, src, 0, NULL, NULL, err, sizeof err) == 0);
    return r;
}

/* Event time: far ahead of the learner's clock or far behind the partition's is refused
 * with a reason; two far-ahead events in a row that agree are a real jump; one message
 * moves no clock, so it closes no window. */
static void test_admit_time(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);   /* join.lateness.ms=0: every jump needs its confirmation */
    char reason[256];
    const int64_t DAY = 86400000;
    CHECK_EQ_INT(lrn_clock(L), INT64_MIN);
    CHECK_EQ_INT(offer(L, "c1", T0, 0, reason), 0);   /* the anchor: nothing to compare */
    CHECK_EQ_INT(offer(L, "e2", T0 + 1000, 0, reason), 0);
    CHECK_EQ_INT(offer(L, "e3", T0 + 2000, 0, reason), 0);
    CHECK_EQ_INT(lrn_clock(L), T0 + 1000);
    CHECK_EQ_INT(offer(L, "x", 10000000000000LL, 0, reason), 1);
    CHECK_EQ_STR(reason, "Impression ts_ms=10000000000000 is 8232774398000 ms ahead of the newest "
                         "event time 1767225602000 (time.max.ahead.ms=86400000)");
    CHECK_EQ_INT(offer(L, "e4", T0 + 3000, 0, reason), 0);
    CHECK_EQ_INT(offer(L, "old", T0 - 8 * DAY, 0, reason), 1);
    CHECK_CONTAINS(reason, "ms behind its partition's event time 1767225602000 "
                           "(time.max.behind.ms=604800000)");
    CHECK_EQ_INT(offer(L, "first", T0 - 8 * DAY, 1, reason), 0);  /* a new partition: no clock */
    CHECK_EQ_INT(offer(L, "late-ok", T0 - 6 * DAY, 0, reason), 0);
    lrn_run_batch(L, NULL, NULL);
    CHECK_EQ_INT(lrn_pending(L), 6);   /* no window closed */
    /* a jump confirmed by the next event: the first goes to the DLQ, the second passes */
    CHECK_EQ_INT(offer(L, "j1", T0 + 2 * DAY, 0, reason), 1);
    CHECK_EQ_INT(offer(L, "j2", T0 + 2 * DAY + 5, 0, reason), 0);
    CHECK_EQ_INT(offer(L, "j3", T0 + 2 * DAY + 9, 0, reason), 0);
    lrn_run_batch(L, NULL, NULL);
    lrn_run_batch(L, NULL, NULL);   /* a batch settles at most 4 rows (batch.size) */
    CHECK_EQ_INT(lrn_clock(L), T0 + 2 * DAY + 5);
    const lrn_admission *a = lrn_admission_counts(L);
    CHECK_EQ_INT(a->time_ahead, 2);
    CHECK_EQ_INT(a->time_behind, 1);
    CHECK_EQ_INT(a->time_confirmed, 1);   /* j2; j3 is near the newest admitted time, j2 */
    /* the confirmed clock closed the windows of source 0 */
    CHECK_EQ_INT(lrn_pending(L), 3);   /* "first" (source 1), j2 and j3 */
    lrn_destroy(L);
    cfg_free(&cfg);
    /* one message handed over without lrn_admit still moves no clock */
    L = make(&cfg);
    char err[256];
    m3_impression c = imp("c", "home", T0, 1, 1), d = imp("d", "home", T0 + 1, 2, 0);
    m3_impression far = imp("far", "home", 10000000000000LL, 3, 0), e = imp("e", "home", T0 + 2, 4, 0);
    CHECK(lrn_impression(L, &c, 0, 0, NULL, NULL, err, sizeof err) == 0);
    CHECK(lrn_impression(L, &d, 0, 0, NULL, NULL, err, sizeof err) == 0);
    CHECK(lrn_impression(L, &far, 0, 0, NULL, NULL, err, sizeof err) == 0);
    CHECK(lrn_impression(L, &e, 0, 0, NULL, NULL, err, sizeof err) == 0);
    lrn_run_batch(L, NULL, NULL);
    CHECK_EQ_INT(lrn_clock(L), T0 + 2);
    CHECK_EQ_INT(lrn_pending(L), 1);   /* c's window is still open */
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* A score request at ts for user, one candidate. */
static m3_event request_event(int64_t ts, int64_t user, m3_candidate *cand) {
    memset(cand, 0, sizeof *cand);
    cand->item_id = 1000 + user;
    m3_event rq;
    memset(&rq, 0, sizeof rq);
    rq.type = M3_EV_SCORE_REQUEST;
    snprintf(rq.u.req.request_id, sizeof rq.u.req.request_id, "r%lld", (long long)ts);
    snprintf(rq.u.req.scenario, M3_NAME_MAX, "home");
    rq.u.req.ts_ms = ts;
    rq.u.req.user_id = user;
    rq.u.req.n_cands = 1;
    rq.u.req.cands = cand;
    return rq;
}

/* A score request's time: far ahead of both the newest event time and the wall clock, or
 * far behind the learner's clock, goes to the DLQ with a reason, counted with the others;
 * it neither confirms nor breaks an impression's jump, and moves no clock. */
static void test_admit_request_time(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    char reason[256];
    const int64_t DAY = 86400000;
    m3_candidate cand;
    m3_event rq = request_event(10000000000000LL, 1, &cand);
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 1);   /* no clock yet: the wall bounds it */
    CHECK_CONTAINS(reason, "ScoreRequest ts_ms=10000000000000 is ");
    CHECK_CONTAINS(reason, " ms ahead of the wall clock ");
    rq = request_event(T0, 1, &cand);
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 0);
    CHECK_EQ_INT(offer(L, "c1", T0, 0, reason), 0);
    CHECK_EQ_INT(offer(L, "c2", T0 + 1000, 0, reason), 0);
    CHECK_EQ_INT(offer(L, "c3", T0 + 2000, 0, reason), 0);
    CHECK_EQ_INT(lrn_clock(L), T0 + 1000);
    rq = request_event(10000000000000LL, 1, &cand);
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 1);
    CHECK_CONTAINS(reason, " ms ahead of the wall clock ");
    /* a request is live: ahead of a lagging event stream (this one is from 2026-01-01) by
     * more than time.max.ahead.ms, but not of the wall clock */
    rq = request_event(T0 + 2 * DAY, 1, &cand);
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 0);
    rq = request_event(T0 - 8 * DAY, 1, &cand);
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 1);
    CHECK_EQ_STR(reason, "ScoreRequest ts_ms=1766534400000 is 691201000 ms behind the learner's "
                         "clock 1767225601000 (time.max.behind.ms=604800000)");
    rq = request_event(T0 - 6 * DAY, 1, &cand);   /* within both bounds */
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 0);
    /* an impression's jump, a request in between: the request neither confirms nor breaks
     * it; the next impression does */
    CHECK_EQ_INT(offer(L, "j1", T0 + 2 * DAY, 0, reason), 1);
    rq = request_event(T0 + 2 * DAY + 1, 1, &cand);
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 0);
    CHECK_EQ_INT(offer(L, "j2", T0 + 2 * DAY + 5, 0, reason), 0);
    const lrn_admission *a = lrn_admission_counts(L);
    CHECK_EQ_INT(a->time_ahead, 3);
    CHECK_EQ_INT(a->time_behind, 1);
    CHECK_EQ_INT(a->time_confirmed, 1);
    /* an admitted request moves no clock */
    lrn_run_batch(L, NULL, NULL);
    int64_t clock = lrn_clock(L);
    rq = request_event(clock + DAY - 1, 1, &cand);
    CHECK_EQ_INT(admit(L, &rq, -1, reason), 0);
    CHECK(lrn_request(L, &rq.u.req, 0, NULL, NULL, reason, sizeof reason) == 0);
    lrn_run_batch(L, NULL, NULL);
    CHECK_EQ_INT(lrn_clock(L), clock);
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* A fresh worker with a store, one event per batch (the linger time runs out between
 * events), rows expiring after a minute. */
static lrn *make_expiring(m3_cfg *cfg, const char *dir, state **st) {
    cfg_defaults(cfg);
    char err[512], kv[600];
    const char *kvs[] = {"batch.size=4", "model.shadow=", "join.lateness.ms=0",
                         "join.window.ms=1000", "emb.expire.ms=60000", "checkpoint.sync=false"};
    for (size_t i = 0; i < sizeof kvs / sizeof kvs[0]; i++)
        CHECK_MSG(cfg_set(cfg, kvs[i], "test", 1, err, sizeof err) == 0, "%s", err);
    snprintf(kv, sizeof kv, "store.dir=%s", dir);
    CHECK_MSG(cfg_set(cfg, kv, "test", 2, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(cfg_check(cfg, err, sizeof err) == 0, "%s", err);
    lrn *L = lrn_new(cfg, err, sizeof err);
    CHECK_MSG(L, "%s", err);
    *st = state_open(cfg, L, "test", err, sizeof err);
    CHECK_MSG(*st, "%s", err);
    return L;
}

/* As the worker does: admit, queue what is admitted, run the batch. Returns lrn_admit's. */
static int handle(lrn *L, const char *id, int64_t ts, int64_t user) {
    m3_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_IMPRESSION;
    ev.u.imp = imp(id, "home", ts, user, 0);
    char reason[256];
    int r = admit(L, &ev, 0, reason);
    if (r == 0) CHECK(lrn_impression(L, &ev.u.imp, 0, 0, NULL, NULL, reason, sizeof reason) == 0);
    lrn_run_batch(L, NULL, NULL);
    return r;
}

/* The very first event of a fresh worker with a bit-flipped time cannot anchor a clock:
 * far in the future it is refused (the wall clock bounds the first events), so the state's
 * expiry clock follows the good events and a user unseen for longer than emb.expire.ms
 * still expires (before, the state's clock stayed at the first time, year 2286, for good:
 * nothing expired again). A 1970 first event is admitted (replays are legitimately old)
 * and moves no clock past the good events: nothing good is refused or expired. */
static void test_first_event_anchor(void) {
    char dir[512], err[512];
    for (int pass = 0; pass < 2; pass++) {
        fs_scratch_dir(dir, sizeof dir, "test_learner_anchor");
        m3_cfg cfg;
        state *st;
        lrn *L = make_expiring(&cfg, dir, &st);
        int64_t bad = pass == 0 ? 10000000000000LL : 1;
        CHECK_EQ_INT(handle(L, "flip", bad, 7), pass == 0 ? 1 : 0);
        CHECK_EQ_INT(handle(L, "a1", T0, 42), 0);
        CHECK_EQ_INT(handle(L, "v1", T0 + 1000, 99), 0);   /* user 99: never seen again */
        CHECK_EQ_INT(handle(L, "a2", T0 + 2000, 42), 0);
        users_table *u = m3_user_table(lrn_model(L, 0));
        uint64_t u42 = m3_feat_key(M3_SLOT_USER, 42);
        CHECK_EQ_INT(users_cnt(u, users_find(u, u42))[0], 2);   /* not expired meanwhile */
        for (int k = 0; k < 4; k++) {   /* two minutes on, confirmed, user 42 again */
            char id[16];
            snprintf(id, sizeof id, "b%d", k);
            CHECK_EQ_INT(handle(L, id, T0 + 120000 + 100 * k, 50), 0);
        }
        CHECK_EQ_INT(handle(L, "a3", T0 + 120500, 42), 0);
        state_stats ss;
        state_stats_get(st, &ss);
        CHECK_MSG(ss.user_expired >= 1, "pass %d: no user expired (the clock is anchored)", pass);
        CHECK_EQ_INT(users_cnt(u, users_find(u, u42))[0], 1);   /* 42 expired, starts fresh */
        CHECK_EQ_INT(lrn_clock(L), T0 + 120300);   /* b3: lateness 0, a3 waits */
        const lrn_admission *a = lrn_admission_counts(L);
        CHECK_EQ_INT(a->time_ahead, pass == 0 ? 1 : 0);
        CHECK_EQ_INT(a->time_behind, 0);
        CHECK_MSG(!state_failed(st, err, sizeof err), "%s", err);
        CHECK_MSG(state_close(st, err, sizeof err) == 0, "%s", err);
        lrn_destroy(L);
        cfg_free(&cfg);
        rm_rf(dir);
    }
}

/* ---- the guard ---- */

static int all_finite(const sink *s) {
    for (int i = 0; i < s->n; i++)
        if (!isfinite(s->p[i].p_ctr) || !isfinite(s->p[i].p_cvr) || !isfinite(s->p[i].p_ctcvr))
            return 0;
    return 1;
}

static int model_finite(lrn *L, int m) {
    m3_model *md = lrn_model(L, m);
    const float *p = m3_debug_params(md);
    for (size_t k = 0; k < m3_n_params(md); k++)
        if (!isfinite(p[k])) return 0;
    return 1;
}

/* One batch of four impressions, the second (clicked) and the third (not) with
 * user_num.activity = big and item_num.price = -big: whichever way the saturated logit
 * goes, one of the two has a gradient. */
static void poison_batch(lrn *L, sink *s, int64_t t, float big) {
    char reason[256], id[32];
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "p%lld-%d", (long long)t, i);
        m3_impression im = imp(id, i % 2 ? "home" : "search", t + i, 10 + i, i == 1);
        if (i == 1 || i == 2) {
            im.user_num.n = 1;
            snprintf(im.user_num.kv[0].name, M3_NAME_MAX, "activity");
            im.user_num.kv[0].value = big;
            im.item_num.n = 1;
            snprintf(im.item_num.kv[0].name, M3_NAME_MAX, "price");
            im.item_num.kv[0].value = -big;
        }
        CHECK(lrn_impression(L, &im, 0, 0, collect, s, reason, sizeof reason) == 0);
    }
}

/* An extreme finite input: no non-finite prediction reaches emit, the steps it would have
 * poisoned are skipped and counted per model, the models stay finite and the learner goes
 * on; the counters reach the report, the progress line and the saved learner state. */
static void test_guard_poison(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);   /* m3rec, and lr as a shadow */
    /* the widest input range: the guard must hold when admission lets anything through */
    char msg[256];
    CHECK(cfg_set(&cfg, "features.num.max_abs=3.4e38", "test", 4, msg, sizeof msg) == 0);
    sink s = {0};
    poison_batch(L, &s, T0, 1.0f);   /* a clean batch first */
    CHECK_EQ_INT(s.n, 4);
    s.n = 0;
    poison_batch(L, &s, T0 + 100, 3.35e38f);
    CHECK_MSG(all_finite(&s), "a non-finite prediction was emitted");
    met_guard *g0 = met_board_guard(lrn_board(L), 0), *g1 = met_board_guard(lrn_board(L), 1);
    CHECK_EQ_INT(s.n, 4 - (int)g0->nonfinite_predictions);   /* any other is withheld */
    CHECK_EQ_INT(met_board_counters(lrn_board(L))->predictions, 4 + s.n);
    CHECK_EQ_INT(g0->skipped_steps, 1);   /* m3rec: the gradient overflows */
    CHECK_EQ_INT(g1->skipped_steps, 1);   /* lr: logits of +-1e37, an infinite loss */
    CHECK_EQ_INT(g0->rollbacks + g1->rollbacks, 0);   /* the models were never bad */
    CHECK(model_finite(L, 0) && model_finite(L, 1));
    for (int k = 0; k < 3; k++) {   /* and the next batches score everything again */
        s.n = 0;
        poison_batch(L, &s, T0 + 200 + 10 * k, 2.0f);
        CHECK_EQ_INT(s.n, 4);
        CHECK(all_finite(&s));
    }
    /* the counters count what the primary trained: the skipped step's 4 rows are not */
    CHECK_EQ_INT(lrn_trained_ctr(L), 4 + 3 * 4);
    CHECK_EQ_INT(g0->skipped_rows, 4);
    CHECK_EQ_INT(g1->skipped_rows, 4);
    char line[256];
    met_board_progress_line(lrn_board(L), line, sizeof line);
    CHECK_CONTAINS(line, "  guard 1 skipped 0 withheld 0 rollbacks");
    /* the counters survive a restart with the learner's state */
    size_t n = lrn_state_save(L, NULL, 0);
    unsigned char *buf = malloc(n);
    CHECK_EQ_INT(lrn_state_save(L, buf, n), n);
    m3_cfg cfg2;
    lrn *L2 = make(&cfg2);
    char err[256];
    CHECK_MSG(lrn_state_load(L2, buf, n, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(met_board_guard(lrn_board(L2), 0)->skipped_steps, 1);
    CHECK_EQ_INT(met_board_guard(lrn_board(L2), 1)->skipped_steps, 1);
    CHECK_EQ_INT(met_board_guard(lrn_board(L2), 0)->skipped_rows, 4);
    CHECK_EQ_INT(lrn_trained_ctr(L2), 16);
    free(buf);
    lrn_destroy(L2);
    cfg_free(&cfg2);
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* A NaN in a dense parameter (a model gone bad): its predictions are withheld, its step is
 * skipped, and it rolls back at once to its last good in-memory copy - the next batch is
 * scored normally. */
static void test_guard_rollback(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    sink s = {0};
    poison_batch(L, &s, T0, 1.0f);   /* version 0: the last good copy is taken after it */
    m3_model *m = lrn_model(L, 0);
    size_t n = m3_n_params(m) * sizeof(float);
    float *good = malloc(n);
    memcpy(good, m3_debug_params(m), n);
    s.n = 0;
    poison_batch(L, &s, T0 + 100, 1.0f);
    for (size_t k = 0; k < m3_n_params(m); k++) m3_debug_params(m)[k] = NAN;   /* gone bad */
    s.n = 0;
    poison_batch(L, &s, T0 + 200, 1.0f);
    CHECK_EQ_INT(s.n, 0);           /* all four withheld */
    met_guard *g = met_board_guard(lrn_board(L), 0);
    CHECK_EQ_INT(g->nonfinite_predictions, 4);
    CHECK_EQ_INT(g->skipped_steps, 1);
    CHECK_EQ_INT(g->rollbacks, 1);
    CHECK(model_finite(L, 0));
    CHECK(!memcmp(good, m3_debug_params(m), n));   /* the copy of batch 0, bit-exact */
    s.n = 0;
    poison_batch(L, &s, T0 + 300, 1.0f);
    CHECK_EQ_INT(s.n, 4);
    CHECK(all_finite(&s));
    free(good);
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* ---- delayed feedback (join.feedback) ---- */

#define WEEK (7 * 86400000LL)

/* The rows each minibatch trains, as the recorder sees them (the primary's weights). */
typedef struct {
    int n;
    struct { char id[M3_ID_MAX]; float y_conv, w_ctr, w_ctcvr; int settled; } r[256];
} rows;

static void record(void *ud, const m3_example *ex, const char *const *ids, int B, int n_imp) {
    rows *R = ud;
    for (int i = 0; i < B; i++) {
        CHECK(R->n < 256);
        snprintf(R->r[R->n].id, M3_ID_MAX, "%s", ids[i]);
        R->r[R->n].y_conv = ex[i].y_conv;
        R->r[R->n].w_ctr = ex[i].w_ctr;
        R->r[R->n].w_ctcvr = ex[i].w_ctcvr;
        R->r[R->n].settled = i >= n_imp;
        R->n++;
    }
}

/* How many recorded rows of id trained a CTCVR term; the last one in *last. */
static int trained_as(const rows *R, const char *id, int *last) {
    int n = 0;
    for (int i = 0; i < R->n; i++)
        if (strcmp(R->r[i].id, id) == 0 && R->r[i].w_ctcvr > 0) {
            n++;
            *last = i;
        }
    return n;
}

/* A learner with a 7-day window and the given join.feedback, batch.size 4, no shadow
 * (join.feedback may carry a second setting: "esdfm\njoin.esdfm.elapsed.ms=..."). */
static lrn *make_fb(m3_cfg *cfg, const char *feedback, const char *store_dir) {
    cfg_defaults(cfg);
    char err[512], kv[600];
    const char *kvs[] = {"batch.size=4", "model.shadow=", "join.lateness.ms=0",
                         "join.window.ms=604800000", "time.max.behind.ms=0",
                         "time.max.ahead.ms=0", "checkpoint.sync=false"};
    for (size_t i = 0; i < sizeof kvs / sizeof kvs[0]; i++)
        CHECK_MSG(cfg_set(cfg, kvs[i], "test", 1, err, sizeof err) == 0, "%s", err);
    const char *nl = strchr(feedback, '\n');
    snprintf(kv, sizeof kv, "join.feedback=%.*s", nl ? (int)(nl - feedback) : (int)strlen(feedback),
             feedback);
    CHECK_MSG(cfg_set(cfg, kv, "test", 2, err, sizeof err) == 0, "%s", err);
    if (nl) CHECK_MSG(cfg_set(cfg, nl + 1, "test", 2, err, sizeof err) == 0, "%s", err);
    snprintf(kv, sizeof kv, "store.dir=%s", store_dir ? store_dir : "");
    CHECK_MSG(cfg_set(cfg, kv, "test", 3, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(cfg_check(cfg, err, sizeof err) == 0, "%s", err);
    lrn *L = lrn_new(cfg, err, sizeof err);
    CHECK_MSG(L, "%s", err);
    return L;
}

/* One batch of four impressions at ts: the first clicked (id), three not (id.u0..2). */
static void batch_of_four(lrn *L, const char *id, int64_t ts, int64_t user, sink *s) {
    char reason[256], uid[32];
    m3_impression c = imp(id, "home", ts, user, 1);
    CHECK(lrn_impression(L, &c, 0, 0, collect, s, reason, sizeof reason) == 0);
    for (int i = 0; i < 3; i++) {
        snprintf(uid, sizeof uid, "%s.u%d", id, i);
        m3_impression u = imp(uid, "home", ts + 1 + i, user + 1 + i, 0);
        CHECK(lrn_impression(L, &u, 0, 0, collect, s, reason, sizeof reason) == 0);
    }
    CHECK_EQ_INT(lrn_queued(L), 0);   /* batch.size 4: it ran */
}

/* The emitted p_cvr of impression id (the primary's forward, which its weight reads). */
static float p_cvr_of(const sink *s, const char *id) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->p[i].id, id) == 0) return s->p[i].p_cvr;
    CHECK_MSG(0, "no prediction for %s", id);
    return 0;
}

/* fnw and defer: a click trains its CTCVR term at once as a weighted negative (window:
 * not before its window closes), its conversion days later trains one positive copy, a
 * repeated conversion none; at the window's end defer trains a negative copy, fnw
 * nothing; the metrics count each click's CTCVR once either way. */
static void test_feedback_methods(void) {
    const char *methods[] = {"window", "fnw", "defer", "esdfm"};
    for (int k = 0; k < 4; k++) {
        int fnw_like = k == 1 || k == 3;   /* esdfm weighs as fnw until its model is warm */
        m3_cfg cfg;
        lrn *L = make_fb(&cfg, methods[k], NULL);
        rows R = {0};
        sink s = {0};
        char reason[256];
        CHECK(lrn_set_batch_hook(L, record, &R) == 0);
        batch_of_four(L, "c1", T0, 10, &s);
        batch_of_four(L, "c2", T0 + 1000, 20, &s);
        int at = -1, n = trained_as(&R, "c1", &at);
        if (k == 0) {
            CHECK_EQ_INT(n, 0);                 /* window: it waits */
        } else {
            CHECK_EQ_INT(n, 1);                 /* trained at click time, as a negative */
            CHECK(!R.r[at].settled && R.r[at].y_conv == 0.0f && R.r[at].w_ctr == 1.0f);
            float q = p_cvr_of(&s, "c1");
            CHECK(q > 0.0f && q < 1.0f);
            CHECK_CLOSE(R.r[at].w_ctcvr, fnw_like ? 1.0f - q : (1.0f - q) / (2.0f - q), 1e-6, 0);
        }
        CHECK_EQ_INT(lrn_trained_ctcvr(L), k == 0 ? 6 : 8);
        CHECK_EQ_INT(lrn_pending(L), 2);       /* both wait for their label all the same */
        /* c1 converts 3 days later: one positive copy, weight 1 */
        m3_conversion cv = conv("c1", "home", T0 + 3 * 86400000LL);
        CHECK(lrn_conversion(L, &cv, 0, collect, &s, reason, sizeof reason) == 0);
        lrn_run_batch(L, collect, &s);
        CHECK_EQ_INT(trained_as(&R, "c1", &at), k == 0 ? 1 : 2);
        CHECK(R.r[at].settled && R.r[at].y_conv == 1.0f && R.r[at].w_ctr == 0.0f);
        CHECK(R.r[at].w_ctcvr == 1.0f);
        /* the same conversion again: no second positive */
        CHECK(lrn_conversion(L, &cv, 0, collect, &s, reason, sizeof reason) == 0);
        lrn_run_batch(L, collect, &s);
        CHECK_EQ_INT(trained_as(&R, "c1", &at), k == 0 ? 1 : 2);
        CHECK_EQ_INT(met_board_counters(lrn_board(L))->unmatched_conversions, 1);
        uint64_t before = ctcvr_n(L, 0);
        /* c2's window closes (two events past it move the clock) */
        batch_of_four(L, "late", T0 + WEEK + 5000, 30, &s);
        lrn_run_batch(L, collect, &s);
        CHECK_EQ_INT(lrn_pending(L), 1);        /* "late" itself was clicked */
        int n2 = trained_as(&R, "c2", &at);
        CHECK_EQ_INT(n2, k == 2 ? 2 : 1);
        if (k == 2) {
            float w = R.r[at].w_ctcvr;
            CHECK(R.r[at].settled && R.r[at].y_conv == 0.0f && w > 0.0f && w < 0.5f);
        }
        CHECK_EQ_INT(ctcvr_n(L, 0), before + 4);   /* c2 once, the 3 unclicked */
        /* a conversion after the window is counted late and trains nothing */
        m3_conversion cv2 = conv("c2", "home", T0 + WEEK + 6000);
        CHECK(lrn_conversion(L, &cv2, 0, collect, &s, reason, sizeof reason) == 0);
        lrn_run_batch(L, collect, &s);
        CHECK_EQ_INT(trained_as(&R, "c2", &at), n2);
        CHECK_EQ_INT(met_board_counters(lrn_board(L))->late_conversions, 1);
        lrn_destroy(L);
        cfg_free(&cfg);
    }
}

/* One cohort of n users at t, each clicking item 1 and item 2 (ids A<tag>.i, B<tag>.i;
 * the same user keys on both, so only the item tells them apart); every item-1 click
 * converts an hour later, no item-2 click ever does. */
static void esdfm_cohort(lrn *L, int64_t t, int n, int tag, sink *s) {
    char reason[256], id[32];
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 2; k++) {
            snprintf(id, sizeof id, "%c%d.%d", k ? 'B' : 'A', tag, i);
            m3_impression im = imp(id, "home", t + 10 * i + k, 100 + i, 1);
            im.item_id = 1 + k;
            CHECK(lrn_impression(L, &im, 0, 0, collect, s, reason, sizeof reason) == 0);
            s->n = 0;
        }
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "A%d.%d", tag, i);
        m3_conversion cv = conv(id, "home", t + 3600000 + i);
        CHECK(lrn_conversion(L, &cv, 0, collect, s, reason, sizeof reason) == 0);
        s->n = 0;
    }
    lrn_run_batch(L, collect, s);
    s->n = 0;
}

/* esdfm's weights come from its auxiliary model once that is warm: it learns only from
 * the first closed window on (before, only positives settle: the first cohort's
 * conversions teach it nothing), and after 1,200 settled labels a click on the item whose
 * clicks convert weighs its fake negative far below one on the item whose clicks never
 * do. (Until then the weight is fnw's: test_feedback_methods.) */
static void test_feedback_esdfm(void) {
    m3_cfg cfg;
    lrn *L = make_fb(&cfg, "esdfm", NULL);
    sink s = {0};
    char reason[256];
    for (int c = 0; c < 3; c++)   /* each cohort's clock closes the windows of the one before */
        esdfm_cohort(L, T0 + c * (WEEK + 86400000LL), 300, c, &s);
    /* cohort 0's 300 positives came before any window closed: not learnt; then cohort 0's
     * and 1's item-2 clicks closed (600 real negatives), cohort 1's and 2's conversions
     * settled (600 positives) */
    rows R = {0};
    CHECK(lrn_set_batch_hook(L, record, &R) == 0);
    const int64_t t = T0 + 3 * (WEEK + 86400000LL);
    for (int k = 0; k < 4; k++) {
        m3_impression im = imp(k == 0 ? "pa" : k == 1 ? "pb" : k == 2 ? "pu0" : "pu1", "home",
                               t + k, 100 + k, k < 2);
        im.item_id = k < 2 ? 1 + k : 3;
        CHECK(lrn_impression(L, &im, 0, 0, collect, &s, reason, sizeof reason) == 0);
    }
    CHECK_EQ_INT(lrn_queued(L), 0);
    int at_a = -1, at_b = -1;
    CHECK_EQ_INT(trained_as(&R, "pa", &at_a), 1);
    CHECK_EQ_INT(trained_as(&R, "pb", &at_b), 1);
    float wa = R.r[at_a].w_ctcvr, wb = R.r[at_b].w_ctcvr;
    CHECK(R.r[at_a].y_conv == 0.0f && R.r[at_b].y_conv == 0.0f && !R.r[at_a].settled);
    CHECK_MSG(wa < 0.2f && wb > 0.6f, "fake-negative weights: converting item %.3f, "
              "never-converting item %.3f", (double)wa, (double)wb);
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* The last recorded CTCVR row of id: trained n times, settled, label y, weight in (lo, hi]. */
static void check_last(const rows *R, const char *id, int n, float y, float lo, float hi) {
    int at = -1;
    CHECK_EQ_INT(trained_as(R, id, &at), n);
    if (at < 0) return;
    CHECK_MSG(R->r[at].settled && R->r[at].y_conv == y && R->r[at].w_ctr == 0.0f &&
              R->r[at].w_ctcvr > lo && R->r[at].w_ctcvr <= hi,
              "%s: settled %d y_conv %g w_ctcvr %g", id, R->r[at].settled,
              (double)R->r[at].y_conv, (double)R->r[at].w_ctcvr);
}

/* esdfm with an elapsed time of a day (window 7 days): a click trains nothing at once; a
 * conversion within the day trains one plain positive and never a fake negative; a click
 * still unconverted a day later trains a fake negative copy (weight below 1), and its
 * conversion a positive; when the window closes on a click whose copy went out, nothing
 * more trains; a click the clock jumped past both its elapsed time and its window settles
 * as a plain negative (weight 1). Each click's CTCVR is measured once. */
static void test_feedback_elapsed(void) {
    m3_cfg cfg;
    lrn *L = make_fb(&cfg, "esdfm\njoin.esdfm.elapsed.ms=86400000", NULL);
    rows R = {0};
    sink s = {0};
    char reason[256];
    const int64_t D = 86400000LL;
    CHECK(lrn_set_batch_hook(L, record, &R) == 0);
    batch_of_four(L, "c1", T0, 10, &s);
    batch_of_four(L, "c2", T0 + 1000, 20, &s);
    CHECK_EQ_INT(trained_as(&R, "c1", &(int){0}), 0);      /* it waits */
    CHECK_EQ_INT(lrn_trained_ctcvr(L), 6);                 /* the unclicked ones */
    m3_conversion cv1 = conv("c1", "home", T0 + 3600000);
    CHECK(lrn_conversion(L, &cv1, 0, collect, &s, reason, sizeof reason) == 0);
    lrn_run_batch(L, collect, &s);
    check_last(&R, "c1", 1, 1.0f, 0.999f, 1.0f);           /* a plain positive */
    batch_of_four(L, "c3", T0 + 2 * D, 30, &s);            /* c2's elapsed time passed */
    lrn_run_batch(L, collect, &s);
    check_last(&R, "c2", 1, 0.0f, 0.0f, 0.999f);           /* its fake negative */
    m3_conversion cv2 = conv("c2", "home", T0 + 2 * D + 10);
    CHECK(lrn_conversion(L, &cv2, 0, collect, &s, reason, sizeof reason) == 0);
    lrn_run_batch(L, collect, &s);
    check_last(&R, "c2", 2, 1.0f, 0.999f, 1.0f);           /* and the positive */
    batch_of_four(L, "c4", T0 + 4 * D, 40, &s);            /* c3's copy */
    batch_of_four(L, "c5", T0 + 4 * D + 100, 50, &s);
    lrn_run_batch(L, collect, &s);
    check_last(&R, "c3", 1, 0.0f, 0.0f, 0.999f);
    CHECK_EQ_INT(trained_as(&R, "c4", &(int){0}), 0);
    /* the CVR: c1 and c2 converted; the fake-negative copies (c2's, c3's) are not labels */
    CHECK_EQ_INT(cvr_acc(L, 0)->n, 2);
    CHECK_EQ_INT(cvr_acc(L, 0)->n_pos, 2);
    CHECK_CLOSE(cvr_acc(L, 0)->sum_p, (double)p_cvr_of(&s, "c1") + p_cvr_of(&s, "c2"), 0, 1e-7);
    uint64_t before = ctcvr_n(L, 0);
    batch_of_four(L, "late", T0 + 12 * D, 60, &s);          /* every window but late's closes */
    lrn_run_batch(L, collect, &s);
    check_last(&R, "c3", 1, 0.0f, 0.0f, 0.999f);           /* nothing more */
    check_last(&R, "c4", 1, 0.0f, 0.999f, 1.0f);           /* plain negatives */
    check_last(&R, "c5", 1, 0.0f, 0.999f, 1.0f);
    CHECK_EQ_INT(ctcvr_n(L, 0), before + 3 + 3);           /* c3, c4, c5; late's unclicked */
    CHECK_EQ_INT(ctcvr_n(L, 0), 5 + 18);                   /* each click once, 18 unclicked */
    CHECK_EQ_INT(cvr_acc(L, 0)->n, 5);                     /* each click once */
    CHECK_EQ_INT(cvr_acc(L, 0)->n_pos, 2);
    CHECK_EQ_INT(lrn_pending(L), 1);
    lrn_destroy(L);
    cfg_free(&cfg);
}

/* A checkpoint at a boundary, the learner and its state closed, and both made again from
 * the store with the same join.feedback (make_fb). */
static lrn *fb_restart(lrn *L, state **st, m3_cfg *cfg, const char *fb, const char *dir) {
    char err[512];
    state_offset off = {"test", 0, 8};
    CHECK(lrn_at_boundary(L));
    CHECK_MSG(state_checkpoint(*st, &off, 1, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(state_close(*st, err, sizeof err) == 0, "%s", err);
    lrn_destroy(L);
    cfg_free(cfg);
    L = make_fb(cfg, fb, dir);
    *st = state_open(cfg, L, "test", err, sizeof err);
    CHECK_MSG(*st, "%s", err);
    CHECK(!state_fresh(*st));
    return L;
}

/* The end of a durable test: nothing failed to load, the state closes cleanly. */
static void fb_close(lrn *L, state *st, m3_cfg *cfg, const char *dir) {
    char err[512];
    CHECK_EQ_INT(pend_load_errors(lrn_source_pending(L, 0, 0, err, sizeof err)), 0);
    CHECK_MSG(!state_failed(st, err, sizeof err), "%s", err);
    CHECK_MSG(state_close(st, err, sizeof err) == 0, "%s", err);
    lrn_destroy(L);
    cfg_free(cfg);
    rm_rf(dir);
}

/* With a store: a click trained as a fake negative, a checkpoint, a restart (the pending
 * join comes back from the store), its conversion 6 days later trains the positive copy
 * exactly once; then the window closes for the other click. */
static void test_feedback_durable(void) {
    char dir[512], err[512];
    fs_scratch_dir(dir, sizeof dir, "test_learner_fb");
    m3_cfg cfg;
    sink s = {0};
    char reason[256];
    lrn *L = make_fb(&cfg, "fnw", dir);
    state *st = state_open(&cfg, L, "test", err, sizeof err);
    CHECK_MSG(st, "%s", err);
    batch_of_four(L, "d1", T0, 10, &s);
    batch_of_four(L, "d2", T0 + 1000, 20, &s);
    CHECK_EQ_INT(lrn_trained_ctcvr(L), 8);
    L = fb_restart(L, &st, &cfg, "fnw", dir);
    CHECK_EQ_INT(lrn_pending(L), 2);
    CHECK_EQ_INT(lrn_trained_ctcvr(L), 8);
    rows R = {0};
    CHECK(lrn_set_batch_hook(L, record, &R) == 0);
    m3_conversion cv = conv("d1", "home", T0 + 6 * 86400000LL);
    CHECK(lrn_conversion(L, &cv, 0, collect, &s, reason, sizeof reason) == 0);
    CHECK(lrn_conversion(L, &cv, 0, collect, &s, reason, sizeof reason) == 0);
    lrn_run_batch(L, collect, &s);
    int at = -1;
    CHECK_EQ_INT(trained_as(&R, "d1", &at), 1);
    CHECK(R.r[at].settled && R.r[at].y_conv == 1.0f);
    CHECK_EQ_INT(lrn_pending(L), 1);
    /* its CVR with the p_cvr it was scored with before the restart (kept in the store) */
    CHECK_EQ_INT(cvr_acc(L, 0)->n, 1);
    CHECK_EQ_INT(cvr_acc(L, 0)->n_pos, 1);
    CHECK_CLOSE(cvr_acc(L, 0)->sum_p, p_cvr_of(&s, "d1"), 0, 1e-7);
    batch_of_four(L, "e", T0 + WEEK + 5000, 30, &s);
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(trained_as(&R, "d2", &at), 0);   /* fnw: its fake negative was it */
    CHECK_EQ_INT(lrn_pending(L), 1);              /* "e" */
    CHECK_EQ_INT(cvr_acc(L, 0)->n, 2);            /* d2's window closed: a CVR negative */
    CHECK_EQ_INT(cvr_acc(L, 0)->n_pos, 1);
    CHECK_CLOSE(cvr_acc(L, 0)->sum_p, (double)p_cvr_of(&s, "d1") + p_cvr_of(&s, "d2"), 0, 1e-7);
    CHECK_EQ_INT(met_board_counters(lrn_board(L))->cvr_unscored, 0);
    fb_close(L, st, &cfg, dir);
}

/* The pending entry reported by pend_sync (capture_put). */
static pend_entry captured;
static void capture_put(void *ud, const pend_entry *e, uint64_t seq) {
    (void)ud; (void)seq;
    memcpy(&captured, e, offsetof(pend_entry, snap) + e->snap_len);   /* a body ends there */
}
static void ignore_del(void *ud, const char *id) { (void)ud; (void)id; }

/* A pending entry from before p_cvr was kept (format 0, as an older build wrote it) comes
 * in through the changelog's pending record, goes to the store and back through a restart,
 * and settles: its CTCVR is measured and trained, it has no CVR sample and is counted
 * (cvr_unscored); a current entry beside it is measured with its own p_cvr. */
static void test_cvr_legacy_entry(void) {
    char dir[512], err[512];
    fs_scratch_dir(dir, sizeof dir, "test_learner_cvr0");
    m3_cfg cfg;
    sink s = {0};
    lrn *L = make_fb(&cfg, "window", dir);
    state *st = state_open(&cfg, L, "test", err, sizeof err);
    CHECK_MSG(st, "%s", err);
    batch_of_four(L, "d1", T0, 10, &s);
    pend_table *t = lrn_source_pending(L, 0, 0, err, sizeof err);
    CHECK(t && pend_sync(t, capture_put, ignore_del, NULL) == 1);   /* d1, not yet stored */
    CHECK(captured.has_cvr);
    captured.has_cvr = 0;                                  /* the format written before */
    unsigned char v0[sizeof(pend_entry) + 256];
    size_t n0 = pend_entry_encode(&captured, 99, cfg.model.n_cat, cfg.model.n_num, v0, sizeof v0);
    CHECK(n0 > 0 && v0[20] >> 4 == 0);
    chg_sink sk = state_changelog_sink(st);
    CHECK_MSG(sk.pend(sk.ud, 0, "old1", v0, n0, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(lrn_pending(L), 2);
    L = fb_restart(L, &st, &cfg, "window", dir);           /* both through the store */
    CHECK_EQ_INT(lrn_pending(L), 2);
    uint64_t before = ctcvr_n(L, 0);
    batch_of_four(L, "e", T0 + WEEK + 5000, 30, &s);       /* both windows close */
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(lrn_pending(L), 1);                       /* "e" */
    CHECK_EQ_INT(ctcvr_n(L, 0), before + 2 + 3);           /* old1 and d1, e's unclicked */
    CHECK_EQ_INT(cvr_acc(L, 0)->n, 1);                     /* d1 only */
    CHECK_CLOSE(cvr_acc(L, 0)->sum_p, p_cvr_of(&s, "d1"), 0, 1e-7);
    CHECK_EQ_INT(met_board_counters(lrn_board(L))->cvr_unscored, 1);
    fb_close(L, st, &cfg, dir);
}

/* esdfm with an elapsed time of a day and a store: d1's fake negative goes out, a
 * checkpoint, a restart; d1 comes back as elapsed (no second copy, and nothing when its
 * window closes), d2 - not elapsed at the checkpoint - gets its copy after the restart,
 * and nothing more when its window closes. */
static void test_feedback_elapsed_durable(void) {
    char dir[512], err[512];
    fs_scratch_dir(dir, sizeof dir, "test_learner_fbe");
    const char *fb = "esdfm\njoin.esdfm.elapsed.ms=86400000";
    const int64_t D = 86400000LL;
    m3_cfg cfg;
    sink s = {0};
    rows R = {0};
    lrn *L = make_fb(&cfg, fb, dir);
    state *st = state_open(&cfg, L, "test", err, sizeof err);
    CHECK_MSG(st, "%s", err);
    CHECK(lrn_set_batch_hook(L, record, &R) == 0);
    batch_of_four(L, "d1", T0, 10, &s);
    batch_of_four(L, "d2", T0 + D + D / 2, 20, &s);
    CHECK_EQ_INT(trained_as(&R, "d1", &(int){0}), 1);   /* its copy */
    CHECK_EQ_INT(trained_as(&R, "d2", &(int){0}), 0);
    L = fb_restart(L, &st, &cfg, fb, dir);
    CHECK_EQ_INT(lrn_pending(L), 2);
    R.n = 0;
    CHECK(lrn_set_batch_hook(L, record, &R) == 0);
    batch_of_four(L, "e", T0 + 3 * D, 30, &s);
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(trained_as(&R, "d1", &(int){0}), 0);
    check_last(&R, "d2", 1, 0.0f, 0.0f, 0.999f);
    batch_of_four(L, "f", T0 + 8 * D + D / 2 + 10, 40, &s);   /* d1's and d2's windows close */
    lrn_run_batch(L, collect, &s);
    CHECK_EQ_INT(trained_as(&R, "d1", &(int){0}), 0);
    CHECK_EQ_INT(trained_as(&R, "d2", &(int){0}), 1);
    CHECK_EQ_INT(lrn_pending(L), 2);                      /* e, f */
    fb_close(L, st, &cfg, dir);
}

/* lrn_drain settles every click whose window closed, however many more than one batch
 * holds (lrn_run_batch alone takes model.max_batch - batch.size of them). */
static void test_drain(void) {
    m3_cfg cfg;
    lrn *L = make(&cfg);
    sink s = {0};
    char reason[256], id[32];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "k%d", i);
        m3_impression x = imp(id, "home", T0 + i, i, 1);
        s.n = 0;
        CHECK(lrn_impression(L, &x, 0, 0, collect, &s, reason, sizeof reason) == 0);
    }
    m3_impression a = imp("a", "home", T0 + 2 * WINDOW, 1, 0), b = imp("b", "home", T0 + 2 * WINDOW + 1, 2, 0);
    CHECK(lrn_impression(L, &a, 0, 0, collect, &s, reason, sizeof reason) == 0);
    CHECK(lrn_impression(L, &b, 0, 0, collect, &s, reason, sizeof reason) == 0);
    s.n = 0;
    lrn_drain(L, collect, &s);
    CHECK_EQ_INT(lrn_pending(L), 0);
    CHECK_EQ_INT(ctcvr_n(L, 0), 42);
    CHECK(lrn_at_boundary(L));
    lrn_destroy(L);
    cfg_free(&cfg);
}

int main(void) {
    test_drain();
    test_feedback_methods();
    test_feedback_esdfm();
    test_feedback_elapsed();
    test_feedback_elapsed_durable();
    test_feedback_durable();
    test_cvr_legacy_entry();
    test_admit_numbers();
    test_admit_time();
    test_admit_request_time();
    test_first_event_anchor();
    test_state_roundtrip();
    test_many_settled();
    test_predict_then_train();
    test_join();
    test_reveal_negative();
    test_requests();
    test_guard_poison();
    test_guard_rollback();
    return 0;
}
