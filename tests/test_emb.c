/* test_emb.c - embedding table: insert/lookup through rehashes, deterministic init,
 * summed-gradient Adagrad on duplicated rows, L2; persistence: removal (probe chains stay
 * intact), reserve, stored values, dirty/tick/seen stamps. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "check.h"
#include "engine/emb.h"

static uint64_t key_of(uint64_t i) {   /* spread-out keys, incl. 0 and top-bit ones */
    return i == 0 ? 0 : (i * 0xd1b54a32d192ed03ULL) ^ (i << 60);
}

static void test_insert_lookup(void) {
    char err[128];
    emb_table *t = emb_new(8, 42, 0.1f, 16, err, sizeof err);
    CHECK(t != NULL);
    const int N = 200000;   /* many rehashes from the initial 1024 slots */
    for (int i = 0; i < N; i++) {
        int64_t r = emb_lookup(t, key_of(i));
        CHECK_EQ_INT(r, i);   /* rows are numbered in creation order */
        emb_weights(t, r)[0] = (float)i;   /* tag the row */
    }
    CHECK_EQ_INT(emb_rows(t), N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(emb_find(t, key_of(i)), i);
        CHECK_EQ_INT(emb_lookup(t, key_of(i)), i);   /* no duplicate on re-lookup */
        CHECK_EQ_INT(emb_weights(t, i)[0] == (float)i, 1);
    }
    CHECK_EQ_INT(emb_rows(t), N);
    CHECK_EQ_INT(emb_find(t, key_of(N + 7)), -1);
    CHECK_EQ_INT(emb_rows(t), N);   /* find never creates */
    emb_destroy(t);
    emb_destroy(NULL);
}

static void test_init(void) {
    char err[128];
    emb_table *a = emb_new(16, 7, 0.1f, 16, err, sizeof err);
    emb_table *b = emb_new(16, 7, 0.1f, 16, err, sizeof err);
    emb_table *c = emb_new(16, 8, 0.1f, 16, err, sizeof err);
    /* insert in different orders: a row's start depends on (seed, key) only */
    for (int i = 0; i < 100; i++) emb_lookup(a, key_of(i));
    for (int i = 99; i >= 0; i--) emb_lookup(b, key_of(i));
    for (int i = 0; i < 100; i++) emb_lookup(c, key_of(i));
    double sum = 0, sq = 0;
    int differs = 0;
    for (int i = 0; i < 100; i++) {
        float *wa = emb_weights(a, emb_find(a, key_of(i)));
        float *wb = emb_weights(b, emb_find(b, key_of(i)));
        float *wc = emb_weights(c, emb_find(c, key_of(i)));
        float *Ga = emb_accum(a, emb_find(a, key_of(i)));
        for (int j = 0; j < 16; j++) {
            CHECK_EQ_INT(wa[j] == wb[j], 1);
            CHECK_MSG(fabsf(wa[j]) <= EMB_INIT_SCALE, "w=%g", wa[j]);
            CHECK_CLOSE(Ga[j], 0.1f, 0, 0);
            differs += wa[j] != wc[j];
            sum += wa[j];
            sq += (double)wa[j] * wa[j];
        }
    }
    CHECK(differs > 1500);   /* another seed, another start */
    double mean = sum / 1600, sd = sqrt(sq / 1600 - mean * mean);
    CHECK_MSG(fabs(mean) < 0.005, "mean %g", mean);
    CHECK_CLOSE(sd, EMB_INIT_SCALE / sqrt(3.0), 0.1, 0);   /* uniform's std */
    emb_destroy(a);
    emb_destroy(b);
    emb_destroy(c);
}

/* A row that appears 3 times in a batch gets ONE Adagrad step with the summed gradient. */
static void test_adagrad_duplicates(int d) {
    char err[128];
    emb_table *t = emb_new(d, 1, 0.1f, 2, err, sizeof err);   /* tiny: grad buffer grows */
    int64_t r0 = emb_lookup(t, 100), r1 = emb_lookup(t, 200), r2 = emb_lookup(t, 300);
    float w0[8], w1[8], w2[8];
    memcpy(w0, emb_weights(t, r0), sizeof(float) * d);
    memcpy(w1, emb_weights(t, r1), sizeof(float) * d);
    memcpy(w2, emb_weights(t, r2), sizeof(float) * d);
    /* d <= 8: coordinates 0..3 go through the SSE path, the rest through the loop */
    float ga[8] = { 0.5f, -1.0f, 0.25f, 0.0f, 0.7f, -0.1f, 0.3f, 0.0f };
    float gb[8] = { 0.1f, 0.2f, -0.3f, 2.0f, 0.4f, -0.6f, 0.0f, 1.5f };
    float gc[8] = { -0.2f, 0.3f, 0.1f, 1.0f, -0.9f, 0.05f, 0.2f, -0.4f };
    emb_grad_begin(t);
    CHECK_EQ_INT(emb_grad_add(t, r0, ga), 0);
    CHECK_EQ_INT(emb_grad_add(t, r1, gb), 0);
    CHECK_EQ_INT(emb_grad_add(t, r0, gb), 0);
    CHECK_EQ_INT(emb_grad_add(t, r0, gc), 0);
    CHECK_EQ_INT(emb_grad_touched(t), 2);
    CHECK(emb_grad_get(t, r2) == NULL);
    const float *s0 = emb_grad_get(t, r0);
    for (int j = 0; j < d; j++) CHECK_CLOSE(s0[j], ga[j] + gb[j] + gc[j], 1e-6, 1e-7);
    float lr = 0.05f, l2 = 0.01f;
    emb_grad_apply(t, lr, l2);
    for (int j = 0; j < d; j++) {
        double g = (double)ga[j] + gb[j] + gc[j] + l2 * w0[j];
        double G = 0.1 + g * g;
        CHECK_CLOSE(emb_weights(t, r0)[j], w0[j] - lr * g / (sqrt(G) + 1e-8), 1e-5, 1e-7);
        CHECK_CLOSE(emb_accum(t, r0)[j], G, 1e-5, 1e-7);
        double g1 = (double)gb[j] + l2 * w1[j], G1 = 0.1 + g1 * g1;
        CHECK_CLOSE(emb_weights(t, r1)[j], w1[j] - lr * g1 / (sqrt(G1) + 1e-8), 1e-5, 1e-7);
        CHECK_EQ_INT(emb_weights(t, r2)[j] == w2[j], 1);   /* untouched row: no L2 decay */
    }
    /* the step ended: nothing touched, a new step starts clean */
    CHECK_EQ_INT(emb_grad_touched(t), 0);
    CHECK(emb_grad_get(t, r0) == NULL);
    emb_grad_begin(t);
    CHECK_EQ_INT(emb_grad_add(t, r1, ga), 0);
    for (int j = 0; j < d; j++) CHECK_CLOSE(emb_grad_get(t, r1)[j], ga[j], 0, 0);
    emb_destroy(t);
}

static void test_gather(void) {
    char err[128];
    emb_table *t = emb_new(3, 9, 0.1f, 4, err, sizeof err);
    int64_t rows[3] = { emb_lookup(t, 5), emb_lookup(t, 6), 0 };
    rows[2] = rows[0];
    float out[9];
    emb_gather(out, t, rows, 3);
    for (int j = 0; j < 3; j++) {
        CHECK_EQ_INT(out[j] == emb_weights(t, rows[0])[j], 1);
        CHECK_EQ_INT(out[3 + j] == emb_weights(t, rows[1])[j], 1);
        CHECK_EQ_INT(out[6 + j] == out[j], 1);
    }
    CHECK(emb_new(0, 1, 0.1f, 4, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "width");
    emb_destroy(t);
}

/* Remove every other key of a big table in random order, reserve down and up: every
 * remaining key still finds its own row (tagged with the key), none of the removed ones. */
static void test_remove_reserve(void) {
    char err[128];
    emb_table *t = emb_new(4, 3, 0.1f, 16, err, sizeof err);
    const int N = 50000;
    for (int i = 0; i < N; i++) {
        int64_t r = emb_lookup(t, key_of(i));
        emb_weights(t, r)[0] = (float)i;
        *emb_count(t, r) = (uint32_t)i;
    }
    CHECK_EQ_INT(emb_dirty_rows(t), N);
    CHECK_EQ_INT(emb_remove(t, key_of(N + 5)), -2);
    unsigned x = 12345;
    int removed = 0;
    char *gone = calloc(N, 1);
    while (removed < N / 2) {
        x = x * 1103515245u + 12345u;
        int i = (int)((x >> 8) % N);
        if (gone[i] || (i & 1)) continue;
        int64_t moved = emb_remove(t, key_of(i));
        CHECK(moved >= -1);
        gone[i] = 1;
        removed++;
    }
    CHECK_EQ_INT(emb_rows(t), N - N / 2);
    CHECK_EQ_INT(emb_dirty_rows(t), N - N / 2);
    CHECK_EQ_INT(emb_reserve(t, 0), 0);   /* down to the rows */
    CHECK_EQ_INT(emb_capacity(t), N - N / 2);
    for (int i = 0; i < N; i++) {
        int64_t r = emb_find(t, key_of(i));
        if (gone[i]) {
            CHECK_EQ_INT(r, -1);
            continue;
        }
        CHECK(r >= 0 && r < (int64_t)emb_rows(t));
        CHECK_EQ_INT(emb_key(t, r) == key_of(i), 1);
        CHECK_EQ_INT(emb_weights(t, r)[0] == (float)i, 1);
        CHECK_EQ_INT(*emb_count(t, r), i);
    }
    CHECK_EQ_INT(emb_reserve(t, 200000), 0);
    CHECK_EQ_INT(emb_capacity(t), 200000);
    size_t before = emb_bytes(t);
    for (int i = 0; i < N; i++) if (gone[i]) emb_lookup(t, key_of(i));   /* no regrowth */
    CHECK_EQ_INT(emb_bytes(t), before);
    CHECK_EQ_INT(emb_rows(t), N);
    free(gone);
    emb_destroy(t);
}

/* A row saved and loaded into another table is the same row, clean; the clock stamps. */
static void test_values_and_stamps(void) {
    char err[128];
    emb_table *a = emb_new(5, 7, 0.1f, 16, err, sizeof err);
    emb_table *b = emb_new(5, 7, 0.1f, 16, err, sizeof err);
    emb_set_clock(a, 3, 1000);
    int64_t r = emb_lookup(a, 77);
    CHECK_EQ_INT(emb_tick(a, r), 3);
    CHECK_EQ_INT(emb_seen(a, r), 1000);
    CHECK_EQ_INT(emb_dirty(a, r), 1);
    emb_set_dirty(a, r, 0);
    CHECK_EQ_INT(emb_dirty_rows(a), 0);
    emb_set_clock(a, 4, 2000);
    CHECK_EQ_INT(emb_find(a, 77), r);             /* find: no stamp */
    CHECK_EQ_INT(emb_tick(a, r), 3);
    emb_touch(a, r);                              /* touch: tick only */
    CHECK_EQ_INT(emb_tick(a, r), 4);
    CHECK_EQ_INT(emb_dirty(a, r), 0);
    CHECK_EQ_INT(emb_lookup(a, 77), r);           /* lookup: dirty, stamped */
    CHECK_EQ_INT(emb_dirty(a, r), 1);
    CHECK_EQ_INT(emb_seen(a, r), 2000);
    emb_accum(a, r)[2] = 0.75f;
    *emb_count(a, r) = 9;
    unsigned char val[256];
    CHECK(emb_value_bytes(a) <= sizeof val);
    CHECK_EQ_INT(emb_value_bytes(a), 2 * 5 * 4 + 4 + 8);
    emb_value_save(a, r, val);
    CHECK_EQ_INT(emb_value_seen(a, val, emb_value_bytes(a)), 2000);
    CHECK_EQ_INT(emb_value_seen(a, val, 3), INT64_MIN);
    emb_set_clock(b, 9, 5000);
    CHECK_EQ_INT(emb_value_load(b, 77, val, 7), -2);   /* wrong size */
    int64_t rb = emb_value_load(b, 77, val, emb_value_bytes(b));
    CHECK(rb >= 0);
    CHECK_EQ_INT(emb_value_load(b, 77, val, emb_value_bytes(b)), -2);   /* present */
    CHECK_EQ_INT(emb_dirty(b, rb), 0);
    CHECK_EQ_INT(emb_dirty_rows(b), 0);
    CHECK_EQ_INT(emb_tick(b, rb), 9);
    CHECK_EQ_INT(emb_seen(b, rb), 2000);          /* the stored time, not the clock */
    CHECK(!memcmp(emb_weights(a, r), emb_weights(b, rb), 10 * sizeof(float)));
    CHECK_EQ_INT(*emb_count(b, rb), 9);
    emb_destroy(a);
    emb_destroy(b);
}

int main(void) {
    test_remove_reserve();
    test_values_and_stamps();
    test_insert_lookup();
    test_init();
    test_adagrad_duplicates(4);
    test_adagrad_duplicates(7);
    test_adagrad_duplicates(1);
    test_gather();
    return 0;
}
