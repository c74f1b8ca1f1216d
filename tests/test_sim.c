/* test_sim.c - the stream simulator: deterministic, ordered, realistically hard. */
#include <stdlib.h>

#include "check.h"
#include "sim.h"

typedef struct { float p; int y; } scored;

static int by_p(const void *a, const void *b) {
    float x = ((const scored *)a)->p, y = ((const scored *)b)->p;
    return x < y ? -1 : x > y;
}

/* exact AUC with ties counted 1/2 */
static double auc(scored *v, long n) {
    qsort(v, (size_t)n, sizeof *v, by_p);
    double P = 0, N = 0, A = 0;
    for (long i = 0; i < n;) {
        long j = i;
        double pp = 0, nn = 0;
        for (; j < n && v[j].p == v[i].p; j++) {
            if (v[j].y) pp++;
            else nn++;
        }
        A += pp * (N + nn / 2);
        P += pp;
        N += nn;
        i = j;
    }
    return A / (P * N);
}

static void test_deterministic(void) {
    sim_cfg c;
    sim_cfg_defaults(&c);
    c.n_impressions = 5000;
    char err[256];
    sim *a = sim_new(&c, err, sizeof err), *b = sim_new(&c, err, sizeof err);
    CHECK(a && b);
    m3_event ea, eb;
    sim_truth ta, tb;
    long n = 0;
    int64_t last_ts = 0;
    for (;;) {
        int ra = sim_next(a, &ea, &ta), rb = sim_next(b, &eb, &tb);
        CHECK_EQ_INT(ra, rb);
        if (!ra) break;
        CHECK_EQ_INT(ea.type, eb.type);
        int64_t ts = ea.type == M3_EV_IMPRESSION ? ea.u.imp.ts_ms
                   : ea.type == M3_EV_CONVERSION ? ea.u.conv.ts_ms : ea.u.req.ts_ms;
        CHECK_MSG(ts >= last_ts, "event time goes back: %lld after %lld", (long long)ts, (long long)last_ts);
        last_ts = ts;
        if (ea.type == M3_EV_IMPRESSION) {
            CHECK_EQ_STR(ea.u.imp.impression_id, eb.u.imp.impression_id);
            CHECK_EQ_INT(ea.u.imp.user_id, eb.u.imp.user_id);
            CHECK_EQ_INT(ea.u.imp.clicked, eb.u.imp.clicked);
            CHECK(ta.p_click == tb.p_click);
        }
        n++;
    }
    CHECK(n > 5000);
    sim_destroy(a);
    sim_destroy(b);
    /* another seed gives another stream */
    c.seed = 43;
    a = sim_new(&c, err, sizeof err);
    sim_cfg_defaults(&c);
    c.n_impressions = 5000;
    b = sim_new(&c, err, sizeof err);
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        sim_next(a, &ea, &ta);
        sim_next(b, &eb, &tb);
        differ |= ta.p_click != tb.p_click;
    }
    CHECK(differ);
    sim_destroy(a);
    sim_destroy(b);
}

/* The default stream: every conversion follows a click of its impression, some come after
 * the window, new items arrive, and the oracle CTR AUC lies in 0.70..0.88 per scenario. */
static void test_default_stream(void) {
    sim_cfg c;
    sim_cfg_defaults(&c);
    c.n_impressions = 200000;
    char err[256];
    sim *s = sim_new(&c, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    scored *ctr[SIM_MAX_SCEN];
    long n[SIM_MAX_SCEN] = {0}, clicks[SIM_MAX_SCEN] = {0};
    for (int k = 0; k < c.n_scen; k++) ctr[k] = malloc((size_t)c.n_impressions * sizeof(scored));
    char *clicked = calloc((size_t)c.n_impressions, 1);
    long convs = 0, new_item_imps = 0, requests = 0;
    m3_event ev;
    sim_truth t;
    while (sim_next(s, &ev, &t)) {
        if (ev.type == M3_EV_IMPRESSION) {
            long seq = atol(ev.u.imp.impression_id + 7); /* "imp-42-<seq>" */
            CHECK(seq >= 0 && seq < c.n_impressions);
            clicked[seq] = ev.u.imp.clicked;
            CHECK(t.p_click > 0 && t.p_click < 1 && t.p_conv > 0 && t.p_conv < 1);
            CHECK_EQ_INT(t.clicked, ev.u.imp.clicked);
            ctr[t.scen][n[t.scen]++] = (scored){t.p_click, t.clicked};
            clicks[t.scen] += t.clicked;
            new_item_imps += t.item_age_impressions < 50000;
            CHECK_EQ_INT(ev.u.imp.user_cat.n, 4);
            CHECK_EQ_INT(ev.u.imp.item_num.n, 2);
        } else if (ev.type == M3_EV_CONVERSION) {
            long seq = atol(ev.u.conv.impression_id + 7);
            CHECK_MSG(clicked[seq], "conversion %s without a click", ev.u.conv.conversion_id);
            convs++;
        } else {
            CHECK_EQ_INT(ev.type, M3_EV_SCORE_REQUEST);
            CHECK(ev.u.req.n_cands == c.request_candidates);
            requests++;
        }
    }
    sim_stats st;
    sim_get_stats(s, &st);
    CHECK_EQ_INT(st.conversions, convs);
    CHECK(st.late_conversions > 0 && st.late_conversions < st.conversions / 3);
    CHECK(st.items > c.n_items);
    CHECK(new_item_imps > c.n_impressions / 50);
    CHECK(requests > 0);
    for (int k = 0; k < c.n_scen; k++) {
        double rate = (double)clicks[k] / n[k], a = auc(ctr[k], n[k]);
        fprintf(stderr, "test_sim: %s share %.3f ctr %.3f oracle auc %.4f\n", c.scen_names[k],
                (double)n[k] / c.n_impressions, rate, a);
        CHECK(rate > 0.02 && rate < 0.3);
        CHECK_MSG(a >= 0.70 && a <= 0.88, "oracle CTR AUC %.4f of %s outside 0.70..0.88", a,
                  c.scen_names[k]);
        free(ctr[k]);
    }
    /* one scenario is small */
    CHECK(n[2] < c.n_impressions / 5);
    free(clicked);
    sim_destroy(s);
}

static void test_bad_config(void) {
    sim_cfg c;
    sim_cfg_defaults(&c);
    c.n_scen = 0;
    char err[256];
    CHECK(sim_new(&c, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "bad configuration");
}

int main(void) {
    test_deterministic();
    test_default_stream();
    test_bad_config();
    return 0;
}
