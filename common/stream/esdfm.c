/* esdfm.c - ES-DFM's auxiliary model: a hashed logistic regression of p_rn(x), the
 * probability that a fake negative is a real one, on lazy Adagrad (engine/emb.h). */
#include "stream/esdfm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/hash.h"
#include "engine/emb.h"

/* Step size and L2 of the weights; a new weight's Adagrad accumulator starts at ACC0, so
 * its first steps are about LR / sqrt(ACC0) x the gradient, as the models' rows are. */
#define ESD__LR 0.2f
#define ESD__L2 1e-6f
#define ESD__ACC0 0.1f
#define ESD__NKEYS (M3_MAX_CAT + M3_MAX_NUM + 2)   /* weights one example reads */

struct esd {
    emb_table *w;          /* key -> one weight */
    int n_cat, n_num;
    uint64_t labels;
};

esd *esd_new(int n_cat, int n_num, int max_rows, char *errstr, size_t errstr_size) {
    if (n_cat < 0 || n_cat > M3_MAX_CAT || n_num < 0 || n_num > M3_MAX_NUM || max_rows < 1) {
        snprintf(errstr, errstr_size, "esdfm: bad shape (%d categorical, %d numeric slots)",
                 n_cat, n_num);
        return NULL;
    }
    esd *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(errstr, errstr_size, "esdfm: out of memory");
        return NULL;
    }
    m->n_cat = n_cat;
    m->n_num = n_num;
    m->w = emb_new(1, 0, ESD__ACC0, (size_t)max_rows * ESD__NKEYS, errstr, errstr_size);
    if (!m->w) {
        free(m);
        return NULL;
    }
    return m;
}

void esd_destroy(esd *m) {
    if (!m) return;
    emb_destroy(m->w);
    free(m);
}

/* The example's n weight keys and their inputs: each categorical key hashed into
 * ESD_BUCKETS (input 1), each numeric slot (input sign(v) log(1 + |v|): a replayed
 * dataset's raw counts and prices stay in range), the scenario and the bias (input 1). */
static int esd__features(const esd *m, const m3_example *ex, uint64_t *key, float *x) {
    int n = 0;
    for (int s = 0; s < m->n_cat; s++, n++) {
        key[n] = hash_fin64(ex->cat[s]) & (ESD_BUCKETS - 1);
        x[n] = 1.0f;
    }
    for (int j = 0; j < m->n_num; j++, n++) {
        key[n] = ESD_BUCKETS + (uint64_t)j;
        x[n] = copysignf(log1pf(fabsf(ex->num[j])), ex->num[j]);
    }
    int scen = ex->scenario >= 0 && ex->scenario < M3_MAX_SCEN ? ex->scenario : 0;
    key[n] = ESD_BUCKETS + M3_MAX_NUM + (uint64_t)scen;
    x[n++] = 1.0f;
    key[n] = ESD_BUCKETS + M3_MAX_NUM + M3_MAX_SCEN;
    x[n++] = 1.0f;
    return n;
}

static float esd__sigmoid(double z) {
    float p = (float)(1.0 / (1.0 + exp(-z)));
    return p < 1e-4f ? 1e-4f : p > 1.0f - 1e-4f ? 1.0f - 1e-4f : p;
}

float esd_p_rn(const esd *m, const m3_example *ex) {
    uint64_t key[ESD__NKEYS];
    float x[ESD__NKEYS];
    int n = esd__features(m, ex, key, x);
    double z = 0;
    for (int i = 0; i < n; i++) {
        int64_t r = emb_find(m->w, key[i]);
        if (r >= 0) z += (double)emb_weights(m->w, r)[0] * x[i];
    }
    return isfinite(z) ? esd__sigmoid(z) : 0.5f;
}

void esd_begin(esd *m) { emb_grad_begin(m->w); }

int esd_add(esd *m, const m3_example *ex, int real_negative) {
    static const float zero = 0.0f;
    uint64_t key[ESD__NKEYS];
    float x[ESD__NKEYS];
    int64_t row[ESD__NKEYS];
    int n = esd__features(m, ex, key, x);
    double z = 0;
    for (int i = 0; i < n; i++) {
        row[i] = emb_lookup_init(m->w, key[i], &zero, NULL);   /* a new weight starts at 0 */
        if (row[i] < 0) return -1;
    }
    for (int i = 0; i < n; i++) z += (double)emb_weights(m->w, row[i])[0] * x[i];
    if (!isfinite(z)) return -1;
    /* d/dz of the log loss of label y at p = sigmoid(z): p - y */
    float d = esd__sigmoid(z) - (real_negative ? 1.0f : 0.0f);
    for (int i = 0; i < n; i++) {
        float g = d * x[i];
        if (emb_grad_add(m->w, row[i], &g) != 0) return -1;
    }
    m->labels++;
    return 0;
}

void esd_apply(esd *m) { emb_grad_apply(m->w, ESD__LR, ESD__L2); }

uint64_t esd_labels(const esd *m) { return m->labels; }
