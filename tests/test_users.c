/* test_users.c - UPT user state: the persistence hooks (stored values, removal with the last
 * row moving into the hole, reserve), and that they keep lookups and history intact. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/users.h"

static uint64_t key_of(uint64_t i) { return (i * 0x9e3779b97f4a7c15ULL) ^ (i << 61); }

/* Give user i a recognisable state: scenario (i % 3) updated twice, impressions i. */
static void fill(users_table *t, int i) {
    int64_t r = users_lookup(t, key_of((uint64_t)i));
    CHECK(r >= 0);
    float e[4] = {(float)i, 1, 2, 3};
    CHECK(users_pref_k(t, r, i % 3) == NULL);   /* no history before the first update */
    users_update(t, r, i % 3, e, 0.5f);
    users_update(t, r, i % 3, e, 0.5f);
    users_cnt(t, r)[i % 3] = (uint32_t)i;
}

static void check_user(users_table *t, int i) {
    int64_t r = users_find(t, key_of((uint64_t)i));
    CHECK_MSG(r >= 0, "user %d lost", i);
    CHECK_EQ_INT(users_cnt(t, r)[i % 3], i);
    CHECK_EQ_INT(users_cnt(t, r)[3 + i % 3], 2);
    const float *p = users_pref_k(t, r, i % 3);
    CHECK(p && p[0] == (float)i && p[3] == 3.0f);
    CHECK(users_pref_k(t, r, (i + 1) % 3) == NULL);        /* no history in another scenario */
}

static void test_values(int d) {
    char err[128];
    users_table *a = users_new(3, d, err, sizeof err), *b = users_new(3, d, err, sizeof err);
    CHECK(a && b);
    fill(a, 7);
    unsigned char val[1024];
    size_t n = users_value_bytes(a);
    CHECK_EQ_INT(n, 3 * d * 4 + 2 * 3 * 4);
    users_value_save(a, users_find(a, key_of(7)), val);
    CHECK_EQ_INT(users_value_load(b, key_of(7), val, n - 1, 0), -2);
    int64_t r = users_value_load(b, key_of(7), val, n, 0);
    CHECK(r >= 0);
    CHECK_EQ_INT(users_value_load(b, key_of(7), val, n, 0), -2);
    if (d) check_user(b, 7);
    CHECK_EQ_INT(users_cnt(b, r)[7 % 3], 7);
    users_destroy(a);
    users_destroy(b);
}

static void test_remove_reserve(void) {
    char err[128];
    users_table *t = users_new(3, 4, err, sizeof err);
    const int N = 20000;
    uint64_t *keys = malloc(sizeof *keys * N);   /* row -> key, to follow the moves */
    for (int i = 0; i < N; i++) {
        fill(t, i);
        keys[users_find(t, key_of((uint64_t)i))] = key_of((uint64_t)i);
    }
    CHECK_EQ_INT(users_remove(t, key_of(N + 1)), -2);
    char *gone = calloc(N, 1);
    for (int i = 0; i < N; i += 3) {
        int64_t r = users_find(t, key_of((uint64_t)i)), last = (int64_t)users_rows(t) - 1;
        int64_t moved = users_remove(t, key_of((uint64_t)i));
        if (r == last) CHECK_EQ_INT(moved, -1);
        else {
            CHECK_EQ_INT(moved, r);
            keys[r] = keys[last];
        }
        gone[i] = 1;
    }
    CHECK_EQ_INT(users_reserve(t, 0), 0);
    CHECK_EQ_INT(users_capacity(t), users_rows(t));
    for (int i = 0; i < N; i++) {
        if (gone[i]) CHECK_EQ_INT(users_find(t, key_of((uint64_t)i)), -1);
        else check_user(t, i);
    }
    CHECK_EQ_INT(users_reserve(t, 100000), 0);
    CHECK_EQ_INT(users_capacity(t), 100000);
    for (int i = 0; i < N; i++) if (!gone[i]) check_user(t, i);
    free(gone);
    free(keys);
    users_destroy(t);
}

int main(void) {
    test_values(4);
    test_values(0);
    test_remove_reserve();
    return 0;
}
