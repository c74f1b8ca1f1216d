/* test_metrics.c - binned AUC vs brute force within its bound, log loss, latency
 * percentiles, RSS, and the scoreboard's JSON report read back with json_parse. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json.h"
#include "metrics.h"

static uint64_t rng_state = 0x12345678abcdefULL;
static double urand(void) {   /* xorshift64*, uniform in [0,1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

/* O(P*N) AUC of raw scores, ties counted 1/2. Scores clamped like met_auc_add. */
static double brute_auc(const double *p, const int *y, int n) {
    double num = 0, P = 0, N = 0;
    for (int i = 0; i < n; i++) {
        if (y[i]) P++; else N++;
    }
    for (int i = 0; i < n; i++) {
        if (!y[i]) continue;
        double pi = fmin(fmax(p[i], 0), 1);
        for (int j = 0; j < n; j++) {
            if (y[j]) continue;
            double pj = fmin(fmax(p[j], 0), 1);
            num += pi > pj ? 1.0 : pi == pj ? 0.5 : 0.0;
        }
    }
    return num / (P * N);
}

/* Feeds n scores to a fresh AUC of 2^bits bins; checks |binned - brute| <= bound. */
static double check_against_brute(const double *p, const int *y, int n, int bits, double *bound_out) {
    char err[128];
    met_auc a;
    CHECK_MSG(met_auc_init(&a, bits, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < n; i++) met_auc_add(&a, p[i], y[i]);
    double bound;
    double got = met_auc_value(&a, &bound);
    double want = brute_auc(p, y, n);
    CHECK_MSG(fabs(got - want) <= bound + 1e-12, "bits %d: binned %.9f brute %.9f bound %.3g",
              bits, got, want, bound);
    CHECK_EQ_INT(a.n, n);
    met_auc_free(&a);
    if (bound_out) *bound_out = bound;
    return want;
}

static void test_auc_vs_brute(void) {
    enum { N = 10000 };
    double *p = malloc(N * sizeof *p);
    int *y = malloc(N * sizeof *y);
    /* continuous scores that carry signal */
    for (int i = 0; i < N; i++) {
        double t = urand();
        y[i] = urand() < t;
        p[i] = 0.6 * t + 0.4 * urand();
    }
    double bound;
    double auc = check_against_brute(p, y, N, 0, &bound);
    CHECK(auc > 0.6 && auc < 0.95);
    CHECK_MSG(bound < 1e-4, "bound %.3g for continuous scores", bound);
    CHECK(bound >= 0);
    /* the same scores in 16 bins: real within-bin disagreements, still within the bound */
    check_against_brute(p, y, N, 4, &bound);
    CHECK(bound > 1e-3);

    /* many ties: scores on a 0.1 grid, exactly at bin boundaries of no bin width */
    for (int i = 0; i < N; i++) {
        int k = (int)(urand() * 11);
        p[i] = k / 10.0;
        y[i] = urand() < 0.1 + 0.08 * k;
    }
    check_against_brute(p, y, N, 0, &bound);
    CHECK(bound > 0.01);  /* ties are counted, and the tie value is exact */

    /* distinct scores that all fall into one bin at 16 bits: AUC reads 0.5, bound 0.5 */
    for (int i = 0; i < N; i++) {
        p[i] = 0.5 + 1e-6 * urand();
        y[i] = (i % 3) == 0;
    }
    check_against_brute(p, y, N, 0, &bound);
    CHECK_CLOSE(bound, 0.5, 0, 1e-12);

    /* the bound is attained: every positive just above every negative in the same bin */
    for (int i = 0; i < 1000; i++) {
        y[i] = i % 2;
        p[i] = y[i] ? 0.51 + 1e-3 * urand() : 0.50 + 1e-3 * urand();
    }
    double want = check_against_brute(p, y, 1000, 4, &bound);
    CHECK_CLOSE(want, 1.0, 0, 0);
    CHECK_CLOSE(bound, 0.5, 0, 1e-12);

    /* scores outside [0,1] are clamped */
    for (int i = 0; i < 1000; i++) {
        p[i] = 3 * urand() - 1;
        y[i] = urand() < 0.5;
    }
    check_against_brute(p, y, 1000, 0, NULL);
    free(p);
    free(y);
}

static void test_auc_simple_predictors(void) {
    char err[128];
    met_auc a;
    double bound;
    CHECK(met_auc_init(&a, 0, err, sizeof err) == 0);
    CHECK_EQ_INT(a.nbins, 65536);
    CHECK(isnan(met_auc_value(&a, &bound)) && isnan(bound));   /* empty */
    CHECK(isnan(met_auc_logloss(&a)));
    met_auc_add(&a, 1.0, 1);
    CHECK(isnan(met_auc_value(&a, NULL)));                      /* no negatives */
    met_auc_add(&a, 0.0, 0);
    met_auc_add(&a, 1.0, 1);
    met_auc_add(&a, 0.0, 0);
    CHECK_CLOSE(met_auc_value(&a, &bound), 1.0, 0, 0);          /* perfect */
    CHECK_CLOSE(bound, 0.0, 0, 0);

    met_auc_reset(&a);
    CHECK_EQ_INT(a.n, 0);
    for (int i = 0; i < 100; i++) met_auc_add(&a, i % 2 ? 0.0 : 1.0, i % 2);
    CHECK_CLOSE(met_auc_value(&a, &bound), 0.0, 0, 0);          /* inverse */
    CHECK_CLOSE(bound, 0.0, 0, 0);

    met_auc_reset(&a);
    for (int i = 0; i < 100; i++) met_auc_add(&a, 0.5, i % 4 == 0);
    CHECK_CLOSE(met_auc_value(&a, &bound), 0.5, 0, 0);          /* constant */
    CHECK_CLOSE(bound, 0.5, 0, 0);
    CHECK_CLOSE(met_auc_mean_p(&a), 0.5, 1e-12, 0);
    CHECK_CLOSE(met_auc_rate(&a), 0.25, 0, 0);

    /* NaN scores are counted apart and change nothing else */
    met_auc_add(&a, NAN, 1);
    CHECK_EQ_INT(a.n_nan, 1);
    CHECK_EQ_INT(a.n, 100);
    met_auc_free(&a);
    met_auc_free(&a);   /* a freed one is a no-op */

    CHECK(met_auc_init(&a, 25, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "bits 25");
    met_auc_free(&a);
}

static void test_logloss_by_hand(void) {
    char err[128];
    met_auc a;
    CHECK(met_auc_init(&a, 8, err, sizeof err) == 0);
    met_auc_add(&a, 0.8, 1);
    met_auc_add(&a, 0.3, 0);
    met_auc_add(&a, 0.6, 1);
    double want = -(log(0.8) + log(0.7) + log(0.6)) / 3;
    CHECK_CLOSE(met_auc_logloss(&a), want, 1e-12, 0);
    CHECK_CLOSE(met_auc_mean_p(&a), (0.8 + 0.3 + 0.6) / 3, 1e-12, 0);
    CHECK_CLOSE(met_auc_rate(&a), 2.0 / 3.0, 1e-12, 0);
    /* p = 1 with y = 0 is clamped, not infinite */
    met_auc_add(&a, 1.0, 0);
    CHECK(isfinite(met_auc_logloss(&a)));
    CHECK_CLOSE(met_auc_logloss(&a), (3 * want - log(MET_LOGLOSS_EPS)) / 4, 1e-9, 0);
    met_auc_free(&a);
}

static void test_auc_merge(void) {
    char err[128];
    met_auc all, a, b, other;
    CHECK(met_auc_init(&all, 0, err, sizeof err) == 0);
    CHECK(met_auc_init(&a, 0, err, sizeof err) == 0);
    CHECK(met_auc_init(&b, 0, err, sizeof err) == 0);
    CHECK(met_auc_init(&other, 10, err, sizeof err) == 0);
    for (int i = 0; i < 5000; i++) {
        double t = urand();
        int y = urand() < t;
        met_auc_add(&all, t, y);
        met_auc_add(i % 3 ? &a : &b, t, y);
    }
    CHECK(met_auc_merge(&a, &b) == 0);
    double b1, b2;
    CHECK_CLOSE(met_auc_value(&a, &b1), met_auc_value(&all, &b2), 0, 1e-15);
    CHECK_CLOSE(b1, b2, 0, 1e-15);
    CHECK_EQ_INT(a.n, all.n);
    CHECK_EQ_INT(a.n_pos, all.n_pos);
    CHECK_CLOSE(met_auc_logloss(&a), met_auc_logloss(&all), 1e-12, 0);
    CHECK(met_auc_merge(&a, &other) == -1);
    met_auc_free(&all);
    met_auc_free(&a);
    met_auc_free(&b);
    met_auc_free(&other);
}

static void test_latency(void) {
    met_latency l;
    met_latency_init(&l);
    CHECK(isnan(met_latency_percentile(&l, 50)));
    for (int i = 1; i <= 1000; i++) met_latency_add(&l, (double)i);
    CHECK_EQ_INT(l.n, 1000);
    CHECK_CLOSE(met_latency_percentile(&l, 50), 500, 0.01, 0);
    CHECK_CLOSE(met_latency_percentile(&l, 99), 990, 0.01, 0);
    CHECK_CLOSE(met_latency_percentile(&l, 90), 900, 0.01, 0);
    CHECK_CLOSE(met_latency_percentile(&l, 100), 1000, 0, 0);   /* clamped to max */
    CHECK_CLOSE(met_latency_percentile(&l, 0), 1, 0.01, 0);
    CHECK_CLOSE(met_latency_mean(&l), 500.5, 1e-12, 0);

    /* sub-ms and multi-decade values */
    met_latency m;
    met_latency_init(&m);
    for (int i = 0; i < 98; i++) met_latency_add(&m, 0.25);
    met_latency_add(&m, 2e6);
    met_latency_add(&m, 1e9);    /* beyond an hour: overflow bucket */
    met_latency_add(&m, NAN);    /* ignored */
    CHECK_EQ_INT(m.n, 100);
    CHECK_CLOSE(met_latency_percentile(&m, 50), 0.25, 0.01, 0);
    CHECK_CLOSE(met_latency_percentile(&m, 99), 2e6, 0.01, 0);
    CHECK_CLOSE(met_latency_percentile(&m, 100), 1e9, 0, 0);

    /* negative (clock skew) counts below 1 us */
    met_latency k;
    met_latency_init(&k);
    met_latency_add(&k, -5);
    met_latency_add(&k, 10);
    CHECK_CLOSE(met_latency_percentile(&k, 50), -5, 0, 0);

    met_latency_merge(&l, &m);
    CHECK_EQ_INT(l.n, 1100);
    CHECK_CLOSE(l.max, 1e9, 0, 0);
    CHECK_CLOSE(l.min, 0.25, 0, 0);
}

static void test_rss(void) {
    double peak;
    double rss = met_rss_mb(&peak);
    CHECK(rss > 0);
    CHECK(peak >= rss);
}

static void extra_keys(json_writer *w, void *arg) {
    json_key(w, "run");
    json_str(w, (const char *)arg);
}

static void test_board(void) {
    char err[128];
    const char *scen[] = {"home", "search"};
    const char *models[] = {"shared_bottom", "lr"};
    CHECK(met_board_new(0, scen, 2, models, 8, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "scenarios");
    CHECK(met_board_new(2, scen, MET_MAX_MODELS + 1, models, 8, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "models");
    CHECK(met_board_new(2, scen, 2, models, 30, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "bits");
    met_board_destroy(NULL);

    met_board *b = met_board_new(2, scen, 2, models, 0, err, sizeof err);
    CHECK_MSG(b, "%s", err);
    /* primary: perfect on home ctr, inverse on search ctr; lr: constant */
    for (int i = 0; i < 40; i++) {
        int y = i % 2;
        CHECK(met_board_add(b, 0, 0, MET_CTR, y ? 0.9 : 0.1, y) == 0);
        CHECK(met_board_add(b, 0, 1, MET_CTR, y ? 0.2 : 0.7, y) == 0);
        CHECK(met_board_add(b, 1, 0, MET_CTR, 0.5, y) == 0);
        CHECK(met_board_add(b, 0, 0, MET_CTCVR, y ? 0.05 : 0.01, i % 4 == 0) == 0);
        met_board_latency(b, 10.0 + i);
    }
    CHECK(met_board_add(b, 2, 0, MET_CTR, 0.5, 1) == -1);
    CHECK(met_board_add(b, 0, 2, MET_CTR, 0.5, 1) == -1);
    /* slices: only the flagged ones count; new_item perfect, new_user inverted */
    for (int i = 0; i < 10; i++) {
        int y = i % 2;
        CHECK(met_board_add_slices(b, 0, 1u << MET_SLICE_NEW_ITEM, MET_CTR, y ? 0.8 : 0.3, y) == 0);
        CHECK(met_board_add_slices(b, 0, 1u << MET_SLICE_NEW_USER_SCEN, MET_CTR, y ? 0.3 : 0.8, y) == 0);
        CHECK(met_board_add_slices(b, 1, 3u, MET_CTCVR, 0.5, y) == 0);
        CHECK(met_board_add_slices(b, 0, 0u, MET_CTR, 0.5, y) == 0);   /* no slice */
    }
    CHECK(met_board_add_slices(b, 2, 1u, MET_CTR, 0.5, 1) == -1);
    CHECK_EQ_INT(met_board_slice_auc(b, 0, MET_SLICE_NEW_ITEM, MET_CTR)->n, 10);
    CHECK_CLOSE(met_auc_value(met_board_slice_auc(b, 0, MET_SLICE_NEW_ITEM, MET_CTR), NULL), 1.0, 0, 0);
    CHECK_CLOSE(met_auc_value(met_board_slice_auc(b, 0, MET_SLICE_NEW_USER_SCEN, MET_CTR), NULL), 0.0, 0, 0);
    CHECK_EQ_INT(met_board_slice_auc(b, 1, MET_SLICE_NEW_USER_SCEN, MET_CTCVR)->n, 10);
    CHECK_EQ_INT(met_board_slice_auc(b, 1, MET_SLICE_NEW_ITEM, MET_CTR)->n, 0);
    CHECK(met_board_slice_auc(b, 0, MET_NSLICES, MET_CTR) == NULL);
    met_counters *c = met_board_counters(b);
    c->events = 123;
    c->dlq = 4;
    c->late_conversions = 2;
    CHECK_CLOSE(met_auc_value(met_board_auc(b, 0, 0, MET_CTR), NULL), 1.0, 0, 0);
    CHECK_CLOSE(met_auc_value(met_board_auc(b, 0, 1, MET_CTR), NULL), 0.0, 0, 0);
    CHECK_CLOSE(met_auc_value(met_board_auc(b, 0, -1, MET_CTR), NULL), 0.75, 0, 1e-12);
    CHECK_EQ_INT(met_board_auc(b, 0, -1, MET_CTR)->n, 80);
    CHECK(met_board_auc(b, 0, 2, MET_CTR) == NULL);
    CHECK(met_board_elapsed(b) >= 0);

    json_writer *w = json_writer_new_buf(2);
    met_board_write_json(b, w, extra_keys, "demo-1");
    CHECK_MSG(json_writer_done(w), "writer: %s", json_writer_error(w) ? json_writer_error(w) : "unfinished");
    const char *text = json_writer_buf(w, NULL);
    json_node *t = json_parse(text, err, sizeof err);
    CHECK_MSG(t, "%s\n%s", err, text);
    CHECK_EQ_INT(json_number(json_get(t, "events"), -1), 123);
    CHECK(json_number(json_get(t, "events_per_sec"), -1) >= 0);
    CHECK(json_number(json_get(t, "elapsed_sec"), -1) >= 0);
    CHECK_CLOSE(json_number(json_get(t, "latency_ms.p50"), -1), 29, 0.01, 0);
    CHECK_CLOSE(json_number(json_get(t, "latency_ms.p99"), -1), 49, 0.01, 0);
    CHECK(json_number(json_get(t, "rss_mb"), -1) > 0);
    CHECK(json_number(json_get(t, "rss_peak_mb"), -1) > 0);
    CHECK_EQ_INT(json_number(json_get(t, "counters.dlq"), -1), 4);
    CHECK_EQ_INT(json_number(json_get(t, "counters.late_conversions"), -1), 2);
    CHECK_EQ_INT(json_number(json_get(t, "counters.unmatched_conversions"), -1), 0);
    CHECK_EQ_STR(json_string(json_get(t, "primary"), NULL), "shared_bottom");
    CHECK_CLOSE(json_number(json_get(t, "overall.ctr.auc"), -1), 0.75, 0, 1e-12);
    CHECK_EQ_INT(json_number(json_get(t, "overall.ctr.n"), -1), 80);
    CHECK_EQ_INT(json_number(json_get(t, "overall.ctr.pos"), -1), 40);
    CHECK_CLOSE(json_number(json_get(t, "overall.ctr.rate"), -1), 0.5, 0, 0);
    CHECK(json_get(t, "overall.ctr.auc_bound") != NULL);
    CHECK(json_get(t, "overall.ctr.logloss") != NULL);
    CHECK(json_get(t, "overall.ctr.mean_p") != NULL);
    CHECK_CLOSE(json_number(json_get(t, "scenarios.home.ctr.auc"), -1), 1.0, 0, 0);
    CHECK_CLOSE(json_number(json_get(t, "scenarios.search.ctr.auc"), -1), 0.0, 0, 0);
    CHECK_CLOSE(json_number(json_get(t, "scenarios.home.ctcvr.auc"), -1),
                met_auc_value(met_board_auc(b, 0, 0, MET_CTCVR), NULL), 0, 1e-15);
    /* empty accumulators: auc is null, n is 0 */
    CHECK(json_get(t, "scenarios.search.ctcvr.auc")->type == JSON_NULL);
    CHECK_EQ_INT(json_number(json_get(t, "scenarios.search.ctcvr.n"), -1), 0);
    CHECK_CLOSE(json_number(json_get(t, "models.shared_bottom.scenarios.home.ctr.auc"), -1), 1.0, 0, 0);
    CHECK_CLOSE(json_number(json_get(t, "models.lr.overall.ctr.auc"), -1), 0.5, 0, 0);
    CHECK_CLOSE(json_number(json_get(t, "slices.new_item.ctr.auc"), -1), 1.0, 0, 0);
    CHECK_CLOSE(json_number(json_get(t, "models.shared_bottom.slices.new_user_in_scenario.ctr.auc"), -1), 0.0, 0, 0);
    CHECK_EQ_INT(json_number(json_get(t, "models.lr.slices.new_item.ctcvr.n"), -1), 10);
    CHECK_CLOSE(json_number(json_get(t, "models.lr.overall.ctr.auc_bound"), -1), 0.5, 0, 0);
    CHECK_EQ_INT(json_number(json_get(t, "models.lr.scenarios.search.ctr.n"), -1), 0);
    CHECK_EQ_STR(json_string(json_get(t, "run"), NULL), "demo-1");
    json_free(t);
    json_writer_destroy(w);

    /* the reusable per-model part */
    w = json_writer_new_buf(0);
    met_board_write_model(b, 1, w);
    CHECK(json_writer_done(w));
    t = json_parse(json_writer_buf(w, NULL), err, sizeof err);
    CHECK_MSG(t, "%s", err);
    CHECK_EQ_INT(json_number(json_get(t, "scenarios.home.ctr.n"), -1), 40);
    json_free(t);
    json_writer_destroy(w);

    char line[256];
    int n = met_board_progress_line(b, line, sizeof line);
    CHECK(n > 0 && (size_t)n < sizeof line);
    CHECK_CONTAINS(line, "events 123 ");
    CHECK_CONTAINS(line, "ctr auc 0.7500");
    CHECK_CONTAINS(line, "lag p99 49.");
    met_board_destroy(b);
}

int main(void) {
    test_auc_vs_brute();
    test_auc_simple_predictors();
    test_logloss_by_hand();
    test_auc_merge();
    test_latency();
    test_rss();
    test_board();
    printf("test_metrics: all checks passed\n");
    return 0;
}
