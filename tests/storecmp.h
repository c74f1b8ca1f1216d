/* storecmp.h - look into the stores a test left behind: compare two family by family,
 * entry by entry, and count the pending impressions (test_crash, test_state).
 * Header-only: include it in one test program. */
#ifndef M3_TESTS_STORECMP_H
#define M3_TESTS_STORECMP_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "state/store.h"

/* Which entries count: nonzero to compare this one (cf = the family). */
typedef int (*storecmp_keep_fn)(void *ud, int cf, const void *key, size_t klen,
                                const void *val, size_t vlen);

typedef struct {
    char **keys, **vals;
    size_t *klens, *vlens;
    size_t n, cap;
    int cf;
    storecmp_keep_fn keep;
    void *ud;
} storecmp__dump;

static inline int storecmp__cb(void *opaque, const void *key, size_t klen, const void *val,
                        size_t vlen) {
    storecmp__dump *d = opaque;
    if (d->keep && !d->keep(d->ud, d->cf, key, klen, val, vlen)) return 0;
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 1024;
        d->keys = realloc(d->keys, d->cap * sizeof *d->keys);
        d->vals = realloc(d->vals, d->cap * sizeof *d->vals);
        d->klens = realloc(d->klens, d->cap * sizeof *d->klens);
        d->vlens = realloc(d->vlens, d->cap * sizeof *d->vlens);
        CHECK(d->keys && d->vals && d->klens && d->vlens);
    }
    d->keys[d->n] = malloc(klen + 1);
    d->vals[d->n] = malloc(vlen + 1);
    CHECK(d->keys[d->n] && d->vals[d->n]);
    memcpy(d->keys[d->n], key, klen);
    memcpy(d->vals[d->n], val, vlen);
    d->klens[d->n] = klen;
    d->vlens[d->n] = vlen;
    d->n++;
    return 0;
}

static inline void storecmp__free(storecmp__dump *d) {
    for (size_t i = 0; i < d->n; i++) {
        free(d->keys[i]);
        free(d->vals[i]);
    }
    free(d->keys);
    free(d->vals);
    free(d->klens);
    free(d->vlens);
}

/* Every family of the open stores sa and sb holds the same entries (those `keep` lets
 * through; NULL = all), byte for byte; the first differences go to stderr, prefixed
 * with `who`. */
static inline void storecmp(store *sa, store *sb, const char *who, storecmp_keep_fn keep, void *ud) {
    static const char *names[] = {"emb", "user", "pending", "meta"};
    char err[512];
    for (int cf = 0; cf < STORE_N_CF; cf++) {
        storecmp__dump da = {0}, db = {0};
        da.cf = db.cf = cf;
        da.keep = db.keep = keep;
        da.ud = db.ud = ud;
        CHECK(store_iterate(sa, (store_cf)cf, NULL, 0, storecmp__cb, &da, err, sizeof err) >= 0);
        CHECK(store_iterate(sb, (store_cf)cf, NULL, 0, storecmp__cb, &db, err, sizeof err) >= 0);
        CHECK_MSG(da.n == db.n, "family %s: %zu vs %zu entries", names[cf], da.n, db.n);
        size_t diff = 0;
        for (size_t i = 0; i < da.n; i++) {
            int same = da.klens[i] == db.klens[i] && da.vlens[i] == db.vlens[i] &&
                       !memcmp(da.keys[i], db.keys[i], da.klens[i]) &&
                       !memcmp(da.vals[i], db.vals[i], da.vlens[i]);
            if (!same && diff++ < 3)
                fprintf(stderr, "%s: family %s entry %zu differs (key %.*s...)\n", who,
                        names[cf], i, (int)(da.klens[i] < 24 ? da.klens[i] : 24), da.keys[i]);
        }
        CHECK_MSG(diff == 0, "family %s: %zu of %zu entries differ", names[cf], diff, da.n);
        fprintf(stderr, "%s: family %-7s %6zu entries identical\n", who, names[cf], da.n);
        storecmp__free(&da);
        storecmp__free(&db);
    }
}

/* The store at dir, opened for reading what it holds; a store that cannot be opened fails
 * the test. Close it with store_close. */
static inline store *storecmp_open(const char *dir) {
    char err[512];
    store *s = store_open(dir, NULL, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    return s;
}

static inline int storecmp__count_pending(void *opaque, const void *key, size_t klen,
                                   const void *val, size_t vlen) {
    (void)key; (void)val; (void)vlen;
    if (klen > 4) ++*(long *)opaque;   /* <src><id>; <src> alone is the late-id ring */
    return 0;
}

/* Pending impressions in the closed store at dir (its late-id rings aside). */
static inline long storecmp_pending(const char *dir) {
    char err[512];
    store *s = storecmp_open(dir);
    long n = 0;
    CHECK(store_iterate(s, STORE_PENDING, NULL, 0, storecmp__count_pending, &n, err, sizeof err) >= 0);
    store_close(s, 0, err, sizeof err);
    return n;
}

#endif
