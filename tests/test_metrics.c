/* test_metrics.c - binned AUC (equal-p and equal-logit bins) vs brute force within its
 * bound, log loss, latency percentiles, RSS, the scoreboard's slices, the timeline against
 * a brute-force windowed AUC, and the JSON report read back with json_parse. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "base/json.h"
#include "report/metrics.h"

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

/* Feeds n scores to a fresh AUC of 2^bits bins (equal in logit(p) when `logit`); checks
 * |binned - brute| <= bound. */
static double check_against_brute2(const double *p, const int *y, int n, int bits, int logit,
                                   double *bound_out) {
    char err[128];
    met_auc a;
    int rc = logit ? met_auc_init_logit(&a, bits, err, sizeof err) : met_auc_init(&a, bits, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
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

static double check_against_brute(const double *p, const int *y, int n, int bits, double *bound_out) {
    return check_against_brute2(p, y, n, bits, 0, bound_out);
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

/* Equal-logit bins: the same guarantee, and tight for small probabilities where equal-p
 * bins of the same count are not. */
static void test_auc_logit_bins(void) {
    enum { N = 10000 };
    double *p = malloc(N * sizeof *p);
    int *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) {          /* CTCVR-like: p ~ 1e-4 .. 0.02 */
        double z = -9 + 5 * urand();
        p[i] = 1 / (1 + exp(-z));
        y[i] = urand() < 10 * p[i];
    }
    double b_logit, b_lin;
    double auc = check_against_brute2(p, y, N, 10, 1, &b_logit);
    check_against_brute2(p, y, N, 10, 0, &b_lin);
    CHECK(auc > 0.6);
    CHECK_MSG(b_logit < 3e-3, "logit bound %.3g", b_logit);
    CHECK_MSG(b_lin > 5 * b_logit, "equal-p bound %.3g vs logit %.3g", b_lin, b_logit);
    /* the ends: 0, 1, and scores beyond the logit range share the end bins */
    for (int i = 0; i < 1000; i++) {
        int k = i % 5;
        p[i] = k == 0 ? 0.0 : k == 1 ? 1e-9 : k == 2 ? 0.5 : k == 3 ? 1 - 1e-9 : 1.0;
        y[i] = urand() < 0.2 * (k + 0.5);
    }
    check_against_brute2(p, y, 1000, 10, 1, &b_logit);
    CHECK(b_logit > 0.01);                  /* 0 and 1e-9 tie in bin 0: counted */
    /* merging needs the same scale */
    char err[128];
    met_auc a, c;
    CHECK(met_auc_init_logit(&a, 10, err, sizeof err) == 0);
    CHECK(met_auc_init(&c, 10, err, sizeof err) == 0);
    CHECK_EQ_INT(a.logit, 1);
    CHECK(met_auc_merge(&a, &c) == -1);
    met_auc_free(&a);
    met_auc_free(&c);
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

/* The AUC's standard error: Hanley & McNeil's formula by hand, and against the spread of
 * the AUCs of 300 samples drawn from two normal score distributions (AUC about 0.80; the
 * formula, exact for exponential scores, is ~20 % wide for normal ones). */
static void test_auc_se(void) {
    /* a 0.8, P 100, N 900: q1 = 2/3, q2 = 0.64 * 2 / 1.8 */
    double v = (0.16 + 99 * (2.0 / 3 - 0.64) + 899 * (1.28 / 1.8 - 0.64)) / 90000;
    CHECK_CLOSE(met_auc_se(0.8, 100, 900), sqrt(v), 1e-12, 0);
    CHECK(isnan(met_auc_se(0.8, 0, 900)) && isnan(met_auc_se(NAN, 10, 10)));
    CHECK(met_auc_se(0.8, 400, 3600) < 0.55 * met_auc_se(0.8, 100, 900));
    char err[128];
    met_auc a;
    CHECK(met_auc_init(&a, 0, err, sizeof err) == 0);
    enum { REPS = 300 };
    double sum = 0, sum2 = 0, se = 0;
    for (int r = 0; r < REPS; r++) {
        met_auc_reset(&a);
        for (int i = 0; i < 1000; i++) {
            double z = sqrt(-2 * log(1 - urand())) * cos(6.283185307179586 * urand());
            int y = i < 100;
            met_auc_add(&a, 1 / (1 + exp(-(z + (y ? 1.2 : 0.0)))), y);
        }
        double auc = met_auc_value(&a, NULL);
        sum += auc;
        sum2 += auc * auc;
        se += met_auc_se(auc, 100, 900);
    }
    double mean = sum / REPS, sd = sqrt(sum2 / REPS - mean * mean);
    se /= REPS;
    CHECK_MSG(mean > 0.78 && mean < 0.82 && sd > 0.7 * se && sd < 1.3 * se,
              "AUC mean %.4f, spread %.4f, standard error %.4f", mean, sd, se);
    printf("test_metrics: 300 AUCs of 100 + 900: mean %.4f, spread %.4f, standard error %.4f\n",
           mean, sd, se);
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

/* test_board's board (home perfect, search inverted, lr constant; slices; counters 123
 * events, 4 DLQ, 2 late) as a report. */
static void check_board_report(met_board *b) {
    char err[128];
    json_writer *w = json_writer_new_buf(2);
    met_board_write_json(b, w, extra_keys, "demo-1");
    CHECK_MSG(json_writer_done(w), "writer: %s", json_writer_error(w) ? json_writer_error(w) : "unfinished");
    const char *text = json_writer_buf(w, NULL);
    json_node *t = json_parse(text, err, sizeof err);
    CHECK_MSG(t, "%s\n%s", err, text);
    CHECK_EQ_INT(json_number(json_get(t, "events"), -1), 123);
    CHECK(json_number(json_get(t, "events_per_sec"), -1) >= 0);
    CHECK(json_number(json_get(t, "elapsed_sec"), -1) >= 0);
    CHECK(json_number(json_get(t, "cpu_sec"), -1) > 0);
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
    CHECK_CLOSE(json_number(json_get(t, "overall.ctr.auc_se"), -1), met_auc_se(0.75, 40, 40),
                0, 1e-12);
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
    CHECK_EQ_INT(json_number(json_get(t, "models.lr.scenarios.search.slices.new_user_in_scenario.ctcvr.n"), -1), 10);
    CHECK_EQ_INT(json_number(json_get(t, "scenarios.home.slices.new_item.ctr.n"), -1), 10);
    CHECK_CLOSE(json_number(json_get(t, "scenarios.home.slices.new_item.ctr.auc"), -1), 1.0, 0, 0);
    /* 40 impressions: no timeline point yet (the first window is 5000) */
    CHECK_EQ_INT(json_number(json_get(t, "timeline.window"), -1), MET_TL_WINDOW);
    CHECK_EQ_INT(json_get(t, "timeline.x")->n, 0);
    CHECK_EQ_INT(json_get(t, "models.lr.timeline.scenarios.home.ctr.auc")->n, 0);
    CHECK(json_get(t, "timeline.overall") == NULL);   /* series only under models */
    CHECK_CLOSE(json_number(json_get(t, "models.lr.overall.ctr.auc_bound"), -1), 0.5, 0, 0);
    CHECK_EQ_INT(json_number(json_get(t, "models.lr.scenarios.search.ctr.n"), -1), 0);
    CHECK_EQ_STR(json_string(json_get(t, "run"), NULL), "demo-1");
    json_free(t);
    json_writer_destroy(w);
}

/* The same board's per-model part and progress line. */
static void check_board_model_and_line(met_board *b) {
    char err[128];
    json_writer *w;
    json_node *t;
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
        CHECK(met_board_add_slices(b, 0, 0, 1u << MET_SLICE_NEW_ITEM, MET_CTR, y ? 0.8 : 0.3, y) == 0);
        CHECK(met_board_add_slices(b, 0, i % 2, 1u << MET_SLICE_NEW_USER_SCEN, MET_CTR, y ? 0.3 : 0.8, y) == 0);
        CHECK(met_board_add_slices(b, 1, 1, 3u, MET_CTCVR, 0.5, y) == 0);
        CHECK(met_board_add_slices(b, 0, 0, 0u, MET_CTR, 0.5, y) == 0);   /* no slice */
        CHECK(met_board_add_slices(b, 1, -1, 1u, MET_CTR, y ? 0.6 : 0.4, y) == 0); /* overall only */
    }
    CHECK(met_board_add_slices(b, 2, 0, 1u, MET_CTR, 0.5, 1) == -1);
    CHECK(met_board_add_slices(b, 0, 2, 1u, MET_CTR, 0.5, 1) == -1);
    CHECK(met_board_add_slices(b, 0, -2, 1u, MET_CTR, 0.5, 1) == -1);
    CHECK_EQ_INT(met_board_slice_auc(b, 0, -1, MET_SLICE_NEW_ITEM, MET_CTR)->n, 10);
    CHECK_CLOSE(met_auc_value(met_board_slice_auc(b, 0, -1, MET_SLICE_NEW_ITEM, MET_CTR), NULL), 1.0, 0, 0);
    CHECK_CLOSE(met_auc_value(met_board_slice_auc(b, 0, -1, MET_SLICE_NEW_USER_SCEN, MET_CTR), NULL), 0.0, 0, 0);
    CHECK_EQ_INT(met_board_slice_auc(b, 1, -1, MET_SLICE_NEW_USER_SCEN, MET_CTCVR)->n, 10);
    CHECK_EQ_INT(met_board_slice_auc(b, 1, -1, MET_SLICE_NEW_ITEM, MET_CTR)->n, 10);
    CHECK_EQ_INT(met_board_slice_auc(b, 1, 0, MET_SLICE_NEW_ITEM, MET_CTR)->n, 0);
    /* per scenario: model 0's new_item all in home; new_user split by parity = by label */
    CHECK_EQ_INT(met_board_slice_auc(b, 0, 0, MET_SLICE_NEW_ITEM, MET_CTR)->n, 10);
    CHECK_EQ_INT(met_board_slice_auc(b, 0, 1, MET_SLICE_NEW_ITEM, MET_CTR)->n, 0);
    CHECK_EQ_INT(met_board_slice_auc(b, 0, 1, MET_SLICE_NEW_USER_SCEN, MET_CTR)->n, 5);
    CHECK_EQ_INT(met_board_slice_auc(b, 0, 1, MET_SLICE_NEW_USER_SCEN, MET_CTR)->n_pos, 5);
    CHECK_EQ_INT(met_board_slice_auc(b, 0, 0, MET_SLICE_NEW_USER_SCEN, MET_CTR)->n_pos, 0);
    CHECK_EQ_INT(met_board_slice_auc(b, 1, 1, MET_SLICE_NEW_USER_SCEN, MET_CTCVR)->n, 10);
    CHECK_EQ_INT(met_board_slice_auc(b, 0, 0, MET_SLICE_NEW_ITEM, MET_CTR)->logit, 1);
    CHECK(met_board_slice_auc(b, 0, -1, MET_NSLICES, MET_CTR) == NULL);
    CHECK(met_board_slice_auc(b, 0, 2, MET_SLICE_NEW_ITEM, MET_CTR) == NULL);
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

    check_board_report(b);
    check_board_model_and_line(b);
    met_board_destroy(b);
}

/* One logged prediction, for the brute-force windows. */
typedef struct {
    int model, scen, task, y;
    double p;
    int64_t slot;   /* impressions counted (model 0, CTR) before it; its own for that one */
} tl_ev;

static double brute_auc_of(const tl_ev *ev, int n, int model, int scen, int task, int64_t from,
                           int64_t to, int *count, double *mean_p) {
    double *p = malloc((size_t)n * sizeof *p);
    int *y = malloc((size_t)n * sizeof *y);
    int k = 0, pos = 0;
    double sp = 0;
    for (int i = 0; i < n; i++) {
        const tl_ev *e = &ev[i];
        if (e->model != model || e->task != task || e->slot < from || e->slot >= to) continue;
        if (scen >= 0 && e->scen != scen) continue;
        p[k] = e->p;
        y[k] = e->y;
        pos += e->y;
        sp += e->p;
        k++;
    }
    double auc = pos > 0 && pos < k ? brute_auc(p, y, k) : NAN;
    *count = k;
    *mean_p = k ? sp / k : NAN;
    free(p);
    free(y);
    return auc;
}

/* The timeline against the AUC of each window computed by brute force from a log of the
 * predictions, through two decimations, and the JSON report's series. */
/* test_timeline's stream and board */
enum { IMPS = 2000, MODELS = 2, SCEN = 3, W0 = 100, MAXP = 8 };
static const char *tl_scen[] = {"home", "search", "product"};
static const char *tl_models[] = {"m3rec", "lr"};
/* the points it must have: windows of 100 ending at 400 and 800, of 200 ending at 1200 and
 * 1600, and the open one of 400 */
static const int64_t want_x[] = {400, 800, 1200, 1600, 2000}, want_w[] = {100, 100, 200, 200, 400};

/* The board's report holds those points, each series within its bound of the brute-force
 * AUC of the logged predictions ev (n_ev) in that window. */
static void check_timeline_report(met_board *b, const tl_ev *ev, int n_ev) {
    char err[160];
    json_writer *w = json_writer_new_buf(2);
    met_board_write_json(b, w, NULL, NULL);
    CHECK(json_writer_done(w));
    json_node *t = json_parse(json_writer_buf(w, NULL), err, sizeof err);
    CHECK_MSG(t, "%s", err);
    CHECK_EQ_INT(json_get(t, "timeline.x")->n, 5);    /* the open window is a full one */
    CHECK_EQ_INT(json_number(json_get(t, "timeline.window"), 0), 400);
    CHECK_EQ_INT(json_number(json_get(t, "timeline.first_window"), 0), W0);
    CHECK_EQ_INT(json_number(json_get(t, "timeline.max_points"), 0), MAXP);
    CHECK_EQ_INT(json_number(json_get(t, "timeline.bins"), 0), 1 << MET_TL_BITS);
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < 5; i++) {
        char path[160];
        snprintf(path, sizeof path, "timeline.x.%d", i);
        CHECK_EQ_INT(json_number(json_get(t, path), -1), want_x[i]);
        snprintf(path, sizeof path, "timeline.width.%d", i);
        CHECK_EQ_INT(json_number(json_get(t, path), -1), want_w[i]);
        for (int m = 0; m < MODELS; m++)
            for (int s = -1; s < SCEN; s++)
                for (int task = 0; task < MET_NTASKS; task++) {
                    int cnt;
                    double mp;
                    double want = brute_auc_of(ev, n_ev, m, s, task, want_x[i] - want_w[i],
                                               want_x[i], &cnt, &mp);
                    char base[128];
                    snprintf(base, sizeof base, "models.%s.timeline.%s%s.%s", tl_models[m],
                             s < 0 ? "overall" : "scenarios.", s < 0 ? "" : tl_scen[s],
                             met_task_name(task));
                    snprintf(path, sizeof path, "%s.n.%d", base, i);
                    CHECK_EQ_INT(json_number(json_get(t, path), -1), cnt);
                    snprintf(path, sizeof path, "%s.mean_p.%d", base, i);
                    CHECK_CLOSE(json_number(json_get(t, path), -1), mp, 1e-5, 0);
                    snprintf(path, sizeof path, "%s.auc.%d", base, i);
                    const json_node *a = json_get(t, path);
                    CHECK(a != NULL);
                    if (isnan(want)) {
                        CHECK(a->type == JSON_NULL);
                        continue;
                    }
                    snprintf(path, sizeof path, "%s.bound.%d", base, i);
                    double bound = json_number(json_get(t, path), -1);
                    CHECK(bound >= 0);
                    /* the AUC stored as a float and rounded to 6 digits: 1e-6 slack; the
                     * bound rounded to 3 significant digits: up to 0.5 % low */
                    CHECK_MSG(fabs(a->num - want) <= bound * 1.005 + 2e-6,
                              "%s: timeline %.6f brute %.6f bound %.3g", path, a->num, want, bound);
                    if (i < 4) {
                        const met_tl_value *v = met_board_tl_value(b, i, m, s, (met_task)task);
                        CHECK_CLOSE(v->auc, a->num, 0, 2e-6);
                        CHECK_EQ_INT(v->n, cnt);
                    }
                    worst = fmax(worst, bound);
                    checked++;
                }
    }
    CHECK(checked > 60);
    CHECK_MSG(worst < 0.01, "largest bound %.3g", worst);
    json_free(t);
    json_writer_destroy(w);
}

static void test_timeline_open_window(void) {
    char err[160];
    json_writer *w;
    json_node *t;
    /* a short open window (< half a window) is left out of the report */
    met_board *c = met_board_new(1, tl_scen, 1, tl_models, 8, err, sizeof err);
    CHECK(met_board_set_timeline(c, 10, 4, err, sizeof err) == 0);
    for (int i = 0; i < 24; i++) met_board_add(c, 0, 0, MET_CTR, urand(), i % 2);
    CHECK_EQ_INT(met_board_tl_points(c), 2);          /* [0,10) [10,20); [20,24) open */
    w = json_writer_new_buf(0);
    met_board_write_json(c, w, NULL, NULL);
    t = json_parse(json_writer_buf(w, NULL), err, sizeof err);
    CHECK_EQ_INT(json_get(t, "timeline.x")->n, 2);
    CHECK_EQ_INT(json_get(t, "models.m3rec.timeline.overall.ctr.auc")->n, 2);
    CHECK_EQ_INT(json_number(json_get(t, "models.m3rec.timeline.overall.ctr.n.1"), -1), 10);
    CHECK(json_get(t, "models.m3rec.timeline.overall.ctcvr.auc.0")->type == JSON_NULL);
    json_free(t);
    json_writer_destroy(w);
    met_board_add(c, 0, 0, MET_CTR, 0.5, 1);          /* 25: half a window open -> shown */
    w = json_writer_new_buf(0);
    met_board_write_json(c, w, NULL, NULL);
    t = json_parse(json_writer_buf(w, NULL), err, sizeof err);
    CHECK_EQ_INT(json_get(t, "timeline.x")->n, 3);
    CHECK_EQ_INT(json_number(json_get(t, "timeline.x.2"), -1), 25);
    CHECK_EQ_INT(json_number(json_get(t, "timeline.width.2"), -1), 5);
    json_free(t);
    json_writer_destroy(w);
    met_board_destroy(c);
}

static void test_timeline(void) {
    char err[160];
    met_board *b = met_board_new(SCEN, tl_scen, MODELS, tl_models, 0, err, sizeof err);
    CHECK_MSG(b, "%s", err);
    CHECK(met_board_set_timeline(b, 0, 8, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "window 0");
    CHECK(met_board_set_timeline(b, 10, 7, err, sizeof err) == -1);
    CHECK(met_board_set_timeline(b, 10, 0, err, sizeof err) == -1);
    CHECK(met_board_set_timeline(b, W0, MAXP, err, sizeof err) == 0);
    tl_ev *ev = malloc(sizeof *ev * IMPS * MODELS * 6);
    int n_ev = 0;
    int64_t imps = 0;
    /* batches of 32 impressions: every model's CTR (and CTCVR if unclicked) per impression,
     * then the settled CTCVR and CVR rows of clicked ones a batch later (the learner's order) */
    double held_p[64][MODELS], held_v[64][MODELS];
    int held_y[64], held_s[64], n_held = 0;
    for (int i = 0; i < IMPS; i++) {
        int s = (int)(urand() * SCEN);
        double t = urand();
        int click = urand() < 0.2 + 0.5 * t;
        for (int m = 0; m < MODELS; m++) {
            double pc = m == 0 ? 0.3 * t + 0.5 * urand() : 0.5 * urand();
            if (m == 0) imps++;
            CHECK(met_board_add(b, m, s, MET_CTR, pc, click) == 0);
            ev[n_ev++] = (tl_ev){m, s, MET_CTR, click, pc, imps - 1};
            double pv = 0.02 * (1 + t) * urand();
            if (!click) {
                CHECK(met_board_add(b, m, s, MET_CTCVR, pv, 0) == 0);
                ev[n_ev++] = (tl_ev){m, s, MET_CTCVR, 0, pv, imps - 1};
            } else {
                held_p[n_held][m] = pv;
                held_v[n_held][m] = 0.05 + 0.9 * urand() * (0.5 + 0.5 * t);
            }
        }
        if (click) { held_y[n_held] = urand() < 0.3 + 0.4 * t; held_s[n_held++] = s; }
        if (i % 32 == 31) {
            for (int j = 0; j < n_held; j++)
                for (int m = 0; m < MODELS; m++) {
                    CHECK(met_board_add(b, m, held_s[j], MET_CTCVR, held_p[j][m], held_y[j]) == 0);
                    ev[n_ev++] = (tl_ev){m, held_s[j], MET_CTCVR, held_y[j], held_p[j][m], imps - 1};
                    CHECK(met_board_add(b, m, held_s[j], MET_CVR, held_v[j][m], held_y[j]) == 0);
                    ev[n_ev++] = (tl_ev){m, held_s[j], MET_CVR, held_y[j], held_v[j][m], imps - 1};
                }
            n_held = 0;
        }
    }
    CHECK(met_board_set_timeline(b, W0, MAXP, err, sizeof err) == -1);   /* too late */
    /* windows of 100 ending at 100..800 (8 points: 200..800 stay, window 200), then ending
     * at 1000..1600 (8 again: 400, 800 (100 wide), 1200, 1600 (200 wide) stay, window 400);
     * [1600, 2000) is open (no impression 2001 closed it) */
    CHECK_EQ_INT(met_board_tl_window(b), 400);
    CHECK_EQ_INT(met_board_tl_points(b), 4);
    for (int i = 0; i < 4; i++) {
        int64_t x, w;
        double sec;
        met_board_tl_point(b, i, &x, &w, &sec);
        CHECK_EQ_INT(x, want_x[i]);
        CHECK_EQ_INT(w, want_w[i]);
        CHECK(sec >= 0);
    }
    CHECK(met_board_tl_value(b, 4, 0, -1, MET_CTR) == NULL);
    CHECK(met_board_tl_value(b, 0, 2, -1, MET_CTR) == NULL);

    check_timeline_report(b, ev, n_ev);
    free(ev);
    test_timeline_open_window();
    met_board_destroy(b);
}

/* ---- the settled CTCVR, the slices' burn-in and merged reports ---- */

/* A replay-like stream, 10 impressions per event-time second for 2 hours: a model whose
 * scores drift upward (it learns the base rate), conversions that arrive 10 minutes after
 * their impression, clicks that do not convert settling when their window (1 h, plus 5 min
 * of lateness) closes. Delivered in the learner's order; at 1.5 h the cumulative CTCVR AUC
 * sees early positives against late negatives, the settled one the complete prefix. */
static void test_settled_ctcvr(void) {
    enum { N = 72000 };
    const int64_t W = 3600000, LATE = 300000, D = 600000;
    char err[256];
    const char *scen[] = {"s"}, *models[] = {"m"};
    met_board *b = met_board_new(1, scen, 1, models, 0, err, sizeof err);
    CHECK(b != NULL);
    CHECK(met_board_set_settle(b, W + LATE, err, sizeof err) == 0);
    static double p[N];
    static int click[N], conv[N], done[N];
    for (int i = 0; i < N; i++) {
        double q = urand();                       /* the impression's true quality */
        click[i] = urand() < 0.1 + 0.3 * q;
        conv[i] = click[i] && urand() < 0.5 * q;
        double drift = -6 + 12.0 * i / N;         /* the model's scale rises */
        p[i] = 1 / (1 + exp(-(drift + 1.5 * q)));
    }
    int64_t ts_stop = 5400000;                    /* look at 1.5 h */
    int first = 0;                                /* the oldest impression not settled */
    for (int i = 0; i < N && (int64_t)i * 100 <= ts_stop; i++) {
        int64_t now = (int64_t)i * 100;
        /* labels due by now: conversions D after, unconverted clicks W + LATE after */
        for (int j = first; j < i; j++) {
            if (done[j] || !click[j]) continue;
            int64_t due = (int64_t)j * 100 + (conv[j] ? D : W + LATE);
            if (due > now) continue;
            met_board_add_at(b, 0, 0, MET_CTCVR, p[j], conv[j], (int64_t)j * 100);
            met_board_add_at(b, 0, 0, MET_CVR, 1 - p[j], conv[j], (int64_t)j * 100);
            done[j] = 1;
        }
        while (first < i && (done[first] || !click[first])) first++;
        met_board_add_at(b, 0, 0, MET_CTR, p[i], click[i], now);
        if (!click[i]) {
            met_board_add_at(b, 0, 0, MET_CTCVR, p[i], 0, now);
            done[i] = 1;
        }
    }
    int64_t horizon;
    const met_auc *st = met_board_settled(b, &horizon);
    CHECK(st != NULL);
    /* at most a window, the lateness and two buckets behind */
    CHECK(horizon <= ts_stop - W - LATE && horizon >= ts_stop - W - LATE - (W + LATE) / 8);
    met_auc ref;
    CHECK(met_auc_init_logit(&ref, MET_TL_BITS, err, sizeof err) == 0);
    for (int i = 0; (int64_t)i * 100 < horizon; i++) {
        CHECK(done[i]);                           /* every label of the prefix is known */
        met_auc_add(&ref, p[i], conv[i]);
    }
    CHECK_EQ_INT(st->n, ref.n);
    CHECK_CLOSE(met_auc_value(st, NULL), met_auc_value(&ref, NULL), 0, 0);
    /* the settled CVR: the clicked impressions of the same prefix */
    const met_auc *sv = met_board_settled_task(b, MET_CVR, NULL);
    met_auc ref_v;
    CHECK(sv && met_auc_init_logit(&ref_v, MET_TL_BITS, err, sizeof err) == 0);
    for (int i = 0; (int64_t)i * 100 < horizon; i++)
        if (click[i]) met_auc_add(&ref_v, 1 - p[i], conv[i]);
    CHECK(ref_v.n > 1000);
    CHECK_EQ_INT(sv->n, ref_v.n);
    CHECK_CLOSE(met_auc_value(sv, NULL), met_auc_value(&ref_v, NULL), 0, 0);
    CHECK(met_board_settled_task(b, MET_CTR, NULL) == NULL);
    met_auc_free(&ref_v);
    double cum = met_auc_value(met_board_auc(b, 0, -1, MET_CTCVR), NULL);
    printf("settled ctcvr auc %.4f on %llu, cumulative %.4f\n", met_auc_value(st, NULL),
           (unsigned long long)st->n, cum);
    CHECK(met_auc_value(st, NULL) > 0.6);         /* the scores do rank the prefix */
    CHECK(fabs(cum - met_auc_value(st, NULL)) > 0.1);   /* the old measure: far off */
    char line[256];
    met_board_progress_line(b, line, sizeof line);
    CHECK_CONTAINS(line, " settled)  cvr auc 0.");
    met_auc_free(&ref);
    met_board_destroy(b);
    /* before a window has passed nothing is settled, and the line says so */
    b = met_board_new(1, scen, 1, models, 0, err, sizeof err);
    CHECK(met_board_set_settle(b, W, err, sizeof err) == 0);
    for (int i = 0; i < 1000; i++) {
        met_board_add_at(b, 0, 0, MET_CTR, 0.5, i % 2, i * 100);
        met_board_add_at(b, 0, 0, MET_CTCVR, 0.1 * (i % 3), i % 4 == 0, i * 100);
    }
    met_board_progress_line(b, line, sizeof line);
    CHECK_CONTAINS(line, "ctcvr auc - (0 settled)  cvr auc -  lag");
    CHECK(met_board_set_settle(b, W, err, sizeof err) == -1);   /* counted already */
    met_board_destroy(b);
}

/* Slices count once the stream has passed the burn-in in impressions; a label settling
 * later of an impression from the burn-in does not count either. */
static void test_slice_burnin(void) {
    char err[256];
    const char *scen[] = {"s"}, *models[] = {"m", "n"};
    met_board *b = met_board_new(1, scen, 2, models, 0, err, sizeof err);
    CHECK(b != NULL);
    met_board_set_slice_burnin(b, 100);
    unsigned all = (1u << MET_SLICE_NEW_ITEM) | (1u << MET_SLICE_NEW_USER_SCEN);
    for (int i = 0; i < 300; i++)
        for (int m = 0; m < 2; m++) {
            met_board_add_at(b, m, 0, MET_CTR, 0.01 * (i % 90), i % 3 == 0, 1000 + i);
            met_board_add_slices_at(b, m, 0, all, MET_CTR, 0.01 * (i % 90), i % 3 == 0, 1000 + i);
        }
    for (int m = 0; m < 2; m++) {
        CHECK_EQ_INT(met_board_slice_auc(b, m, -1, MET_SLICE_NEW_ITEM, MET_CTR)->n, 200);
        CHECK_EQ_INT(met_board_slice_auc(b, m, 0, MET_SLICE_NEW_USER_SCEN, MET_CTR)->n, 200);
    }
    /* settled labels: impression 50 (burn-in) is dropped, impression 150 counts */
    met_board_add_slices_at(b, 0, 0, all, MET_CTCVR, 0.2, 1, 1000 + 50);
    met_board_add_slices_at(b, 0, 0, all, MET_CTCVR, 0.2, 1, 1000 + 150);
    CHECK_EQ_INT(met_board_slice_auc(b, 0, -1, MET_SLICE_NEW_ITEM, MET_CTCVR)->n, 1);
    met_board_destroy(b);
}

/* A report as a parsed JSON tree. */
static json_node *board_report(const met_board *b) {
    json_writer *w = json_writer_new_buf(0);
    met_board_write_json(b, w, NULL, NULL);
    size_t len;
    char err[256];
    json_node *j = json_parse(json_writer_buf(w, &len), err, sizeof err);
    CHECK_MSG(j != NULL, "%s", err);
    json_writer_destroy(w);
    return j;
}

/* Two workers' halves of a stream merged: the whole's AUCs exactly, the counters added;
 * another model set, other bins and a damaged histogram are refused. */
static void test_merge_reports(void) {
    char err[256];
    const char *scen[] = {"home", "search"}, *models[] = {"m3rec", "lr"}, *other[] = {"lr", "m3rec"};
    met_board *whole = met_board_new(2, scen, 2, models, 0, err, sizeof err);
    met_board *half[2] = {met_board_new(2, scen, 2, models, 0, err, sizeof err),
                          met_board_new(2, scen, 2, models, 0, err, sizeof err)};
    for (int i = 0; i < 20000; i++) {
        double q = urand();
        int s = i % 2, y = urand() < q, worker = urand() < 0.5;
        for (int m = 0; m < 2; m++) {
            double pm = m ? 0.5 * q + 0.25 : q * q;
            met_board_add(whole, m, s, MET_CTR, pm, y);
            met_board_add(half[worker], m, s, MET_CTR, pm, y);
            met_board_add(whole, m, s, MET_CTCVR, pm / 10, y && q > 0.7);
            met_board_add(half[worker], m, s, MET_CTCVR, pm / 10, y && q > 0.7);
            if (!y) continue;   /* the CVR over the clicked ones */
            met_board_add(whole, m, s, MET_CVR, pm / 2, q > 0.7);
            met_board_add(half[worker], m, s, MET_CVR, pm / 2, q > 0.7);
        }
        met_board_counters(whole)->impressions++;
        met_board_counters(half[worker])->impressions++;
    }
    met_board *merged = met_board_new(2, scen, 2, models, 0, err, sizeof err);
    for (int h = 0; h < 2; h++) {
        json_node *j = board_report(half[h]);
        CHECK_MSG(met_board_merge_report(merged, j, err, sizeof err) == 0, "%s", err);
        json_free(j);
    }
    for (int m = 0; m < 2; m++)
        for (int s = -1; s < 2; s++)
            for (int t = 0; t < MET_NTASKS; t++) {
                const met_auc *a = met_board_auc(merged, m, s, (met_task)t);
                const met_auc *w = met_board_auc(whole, m, s, (met_task)t);
                CHECK_CLOSE(met_auc_value(a, NULL), met_auc_value(w, NULL), 0, 0);
                CHECK_EQ_INT(a->n, w->n);
                CHECK_EQ_INT(a->n_pos, w->n_pos);
                CHECK_CLOSE(a->sum_ll, w->sum_ll, 1e-12, 0);
            }
    CHECK_EQ_INT(met_board_counters(merged)->impressions, 20000);
    CHECK(met_board_auc(merged, 0, -1, MET_CVR)->n > 1000);
    /* a report from before the CVR AUC (no "cvr" histograms) adds its CTR and CTCVR only */
    met_board *old = met_board_new(2, scen, 2, models, 0, err, sizeof err);
    json_node *jo = board_report(half[0]);
    for (int m = 0; m < 2; m++)
        for (int s = -1; s < 2; s++) {
            char path[96];
            snprintf(path, sizeof path, "models.%s.hist.%s%s", models[m],
                     s < 0 ? "overall" : "scenarios.", s < 0 ? "" : scen[s]);
            json_node *h = (json_node *)json_get(jo, path);
            CHECK(h && json_member(h, "cvr"));
            for (size_t k = 0; k < h->n; k++)
                if (!strcmp(h->keys[k], "cvr")) h->keys[k][1] = 'x';   /* "cxr": unknown */
        }
    CHECK_MSG(met_board_merge_report(old, jo, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(met_board_auc(old, 0, -1, MET_CVR)->n, 0);
    CHECK_EQ_INT(met_board_auc(old, 1, 0, MET_CTCVR)->n, met_board_auc(half[0], 1, 0, MET_CTCVR)->n);
    json_free(jo);
    met_board_destroy(old);
    /* refused: another model order, other bins, a damaged histogram; nothing added */
    met_board *swapped = met_board_new(2, scen, 2, other, 0, err, sizeof err);
    met_board *coarse = met_board_new(2, scen, 2, models, 10, err, sizeof err);
    json_node *js = board_report(swapped), *jc = board_report(coarse), *jw = board_report(whole);
    CHECK(met_board_merge_report(merged, js, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "another model set");
    CHECK(met_board_merge_report(merged, jc, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "1024 bins where the first report has 65536");
    json_node *bins = (json_node *)json_get(jw, "models.lr.hist.scenarios.search.ctcvr.bins");
    CHECK(bins && bins->type == JSON_STRING && strlen(bins->str) > 8);
    bins->str[4] = '*';
    CHECK(met_board_merge_report(merged, jw, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "model lr search ctcvr: a histogram's \"bins\" are malformed");
    CHECK_EQ_INT(met_board_auc(merged, 0, -1, MET_CTR)->n, 20000);
    CHECK_EQ_INT(met_board_counters(merged)->impressions, 20000);
    json_free(js);
    json_free(jc);
    json_free(jw);
    met_board_destroy(swapped);
    met_board_destroy(coarse);
    met_board_destroy(merged);
    met_board_destroy(whole);
    met_board_destroy(half[0]);
    met_board_destroy(half[1]);
}

int main(void) {
    test_auc_se();
    test_auc_vs_brute();
    test_auc_logit_bins();
    test_auc_simple_predictors();
    test_logloss_by_hand();
    test_auc_merge();
    test_latency();
    test_rss();
    test_board();
    test_timeline();
    test_settled_ctcvr();
    test_slice_burnin();
    test_merge_reports();
    printf("test_metrics: all checks passed\n");
    return 0;
}
