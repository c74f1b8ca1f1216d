/* evcmp.h - field-by-field comparison of two decoded events for the codec tests (every
 * field of every record type; floats bit-exact), failing the process on a difference. */
#ifndef M3_EVCMP_H
#define M3_EVCMP_H
#include <string.h>
#include "check.h"
#include "base/event.h"

static inline void eq_cat(const m3_catmap *a, const m3_catmap *b) {
    CHECK_EQ_INT(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        CHECK_EQ_STR(a->kv[i].name, b->kv[i].name);
        CHECK_EQ_INT(a->kv[i].value, b->kv[i].value);
    }
}
static inline void eq_num(const m3_nummap *a, const m3_nummap *b) {
    CHECK_EQ_INT(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        CHECK_EQ_STR(a->kv[i].name, b->kv[i].name);
        CHECK(memcmp(&a->kv[i].value, &b->kv[i].value, 4) == 0);   /* bit-exact */
    }
}
static inline void eq_event(const m3_event *a, const m3_event *b) {
    CHECK_EQ_INT(a->type, b->type);
    switch (a->type) {
    case M3_EV_IMPRESSION: {
        const m3_impression *x = &a->u.imp, *y = &b->u.imp;
        CHECK_EQ_STR(x->impression_id, y->impression_id); CHECK_EQ_INT(x->ts_ms, y->ts_ms);
        CHECK_EQ_STR(x->scenario, y->scenario);
        CHECK_EQ_INT(x->user_id, y->user_id); CHECK_EQ_INT(x->item_id, y->item_id);
        eq_cat(&x->user_cat, &y->user_cat); eq_cat(&x->item_cat, &y->item_cat);
        eq_cat(&x->ctx_cat, &y->ctx_cat);
        eq_num(&x->user_num, &y->user_num); eq_num(&x->item_num, &y->item_num);
        CHECK_EQ_INT(x->clicked, y->clicked);
        break;
    }
    case M3_EV_CONVERSION: {
        const m3_conversion *x = &a->u.conv, *y = &b->u.conv;
        CHECK_EQ_STR(x->conversion_id, y->conversion_id);
        CHECK_EQ_STR(x->impression_id, y->impression_id); CHECK_EQ_INT(x->ts_ms, y->ts_ms);
        CHECK_EQ_STR(x->scenario, y->scenario);
        CHECK_EQ_INT(x->user_id, y->user_id); CHECK_EQ_INT(x->item_id, y->item_id);
        break;
    }
    case M3_EV_SCORE_REQUEST: {
        const m3_score_request *x = &a->u.req, *y = &b->u.req;
        CHECK_EQ_STR(x->request_id, y->request_id); CHECK_EQ_INT(x->ts_ms, y->ts_ms);
        CHECK_EQ_STR(x->scenario, y->scenario); CHECK_EQ_INT(x->user_id, y->user_id);
        eq_cat(&x->user_cat, &y->user_cat); eq_cat(&x->ctx_cat, &y->ctx_cat);
        eq_num(&x->user_num, &y->user_num);
        CHECK_EQ_INT(x->n_cands, y->n_cands);
        for (int i = 0; i < x->n_cands; i++) {
            CHECK_EQ_INT(x->cands[i].item_id, y->cands[i].item_id);
            eq_cat(&x->cands[i].item_cat, &y->cands[i].item_cat);
            eq_num(&x->cands[i].item_num, &y->cands[i].item_num);
        }
        break;
    }
    case M3_EV_PREDICTION: {
        const m3_prediction *x = &a->u.pred, *y = &b->u.pred;
        CHECK_EQ_STR(x->id, y->id); CHECK_EQ_INT(x->ts_ms, y->ts_ms);
        CHECK_EQ_STR(x->scenario, y->scenario);
        CHECK_EQ_INT(x->user_id, y->user_id); CHECK_EQ_INT(x->item_id, y->item_id);
        CHECK(memcmp(&x->p_ctr, &y->p_ctr, 4) == 0); CHECK(memcmp(&x->p_cvr, &y->p_cvr, 4) == 0);
        CHECK(memcmp(&x->p_ctcvr, &y->p_ctcvr, 4) == 0);
        CHECK_EQ_INT(x->model_version, y->model_version);
        break;
    }
    default: CHECK_MSG(0, "bad type %d", a->type);
    }
}

#endif
