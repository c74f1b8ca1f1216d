/* auc.h - the exact AUC of scores against 0/1 labels, for tests that judge a model by it
 * (the report's AUCs come from histograms: common/report/metrics). */
#ifndef M3_TEST_AUC_H
#define M3_TEST_AUC_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

typedef struct {
    float p;
    uint8_t y;
} auc_pair;

static inline int auc__by_p(const void *a, const void *b) {
    float x = ((const auc_pair *)a)->p, y = ((const auc_pair *)b)->p;
    return (x > y) - (x < y);
}

/* The Mann-Whitney AUC of p[0..n) against y[0..n) (ties share their mean rank), NaN when
 * a class is missing; *pos and *neg (when not NULL) get the class counts. */
static inline double auc_exact(const float *p, const uint8_t *y, size_t n, double *pos,
                               double *neg) {
    auc_pair *v = malloc((n ? n : 1) * sizeof *v);
    CHECK(v);
    for (size_t i = 0; i < n; i++) v[i] = (auc_pair){p[i], y[i]};
    qsort(v, n, sizeof *v, auc__by_p);
    double rank_sum = 0, P = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        double npos = 0;
        while (e < n && v[e].p == v[i].p) npos += v[e++].y;
        rank_sum += npos * ((double)(i + 1) + (double)e) / 2.0;   /* mean rank of the tie */
        P += npos;
        i = e;
    }
    free(v);
    double N = (double)n - P;
    if (pos) *pos = P;
    if (neg) *neg = N;
    return P > 0 && N > 0 ? (rank_sum - P * (P + 1) / 2) / (P * N) : NAN;
}

#endif
