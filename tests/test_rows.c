/* test_rows.c - the shared row bookkeeping: append and lookup stamps, the dirty count,
 * removal moving the last row (book, index and payload), stored rows, reserve, and a
 * table that stays usable when its payload cannot be resized. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "engine/rows.h"

/* A minimal table: the book plus one u32 per row, whose resize can be made to fail. */
typedef struct {
    rows_book book;
    uint32_t *val;   /* (book.cap) */
    int fail;        /* the payload resize fails (out of memory) */
} tiny;

static int tiny_resize(void *owner, size_t cap) {
    tiny *t = owner;
    if (t->fail) return -1;
    int ok = 1;
    t->val = rows_realloc(t->val, cap, sizeof *t->val, &ok);
    return ok ? 0 : -1;
}

static uint64_t key_of(uint64_t i) { return (i * 0x9e3779b97f4a7c15ULL) ^ (i << 61); }

static int64_t tiny_add(tiny *t, uint64_t i) {
    int created;
    int64_t r = rows_lookup(&t->book, key_of(i), &created);
    if (r >= 0 && created) t->val[r] = (uint32_t)i;
    return r;
}

/* Remove key i as a table does: the book moves its part, the table its payload. */
static int64_t tiny_remove(tiny *t, uint64_t i) {
    uint32_t from;
    int64_t r = rows_remove(&t->book, key_of(i), &from);
    if (r >= 0) t->val[r] = t->val[from];
    return r;
}

static void tiny_check(tiny *t, uint64_t i) {
    int64_t r = km_find(&t->book.index, key_of(i));
    CHECK_MSG(r >= 0, "key %llu lost", (unsigned long long)i);
    CHECK_EQ_INT(t->val[r], i);
    CHECK(t->book.keys[r] == key_of(i));
}

static void test_lookup_stamps(tiny *t) {
    rows_set_clock(&t->book, 5, 500);
    int created;
    CHECK_EQ_INT(tiny_add(t, 1), 0);
    CHECK_EQ_INT(rows_lookup(&t->book, key_of(1), &created), 0);
    CHECK_EQ_INT(created, 0);
    CHECK_EQ_INT(t->book.n_dirty, 1);
    rows_set_dirty(&t->book, 0, 0);
    CHECK_EQ_INT(t->book.n_dirty, 0);
    rows_set_clock(&t->book, 6, 600);
    rows_touch(&t->book, 0);                                    /* touch: tick only */
    CHECK_EQ_INT(t->book.tick[0], 6);
    CHECK_EQ_INT(t->book.seen[0], 500);
    CHECK_EQ_INT(t->book.dirty[0], 0);
    rows_lookup(&t->book, key_of(1), &created);                  /* lookup: dirty, stamped */
    CHECK_EQ_INT(t->book.dirty[0], 1);
    CHECK_EQ_INT(t->book.seen[0], 600);
    CHECK_EQ_INT(t->book.n_dirty, 1);
}

static void test_remove(tiny *t) {
    const int N = 5000;
    for (int i = 2; i < N; i++) CHECK(tiny_add(t, (uint64_t)i) >= 0);
    CHECK_EQ_INT(t->book.n, N - 1);
    CHECK_EQ_INT(t->book.n_dirty, N - 1);
    uint32_t from;
    CHECK_EQ_INT(rows_remove(&t->book, key_of(999999), &from), -2);
    int64_t last_key_row = km_find(&t->book.index, key_of(N - 1));
    CHECK_EQ_INT(rows_remove(&t->book, key_of(N - 1), &from), -1);   /* the last: no move */
    CHECK_EQ_INT(from, last_key_row);
    int64_t hole = km_find(&t->book.index, key_of(10));
    int64_t moved = rows_remove(&t->book, key_of(10), &from);
    CHECK_EQ_INT(moved, hole);
    t->val[moved] = t->val[from];                                /* the table's part */
    CHECK_EQ_INT(t->book.n, N - 3);
    CHECK_EQ_INT(t->book.n_dirty, N - 3);
    for (int i = 1; i < N - 1; i++)
        if (i != 10) tiny_check(t, (uint64_t)i);
    rows_clean_all(&t->book);
    CHECK_EQ_INT(t->book.n_dirty, 0);
    CHECK_EQ_INT(t->book.dirty[moved], 0);
}

static void test_stored(tiny *t) {
    rows_set_clock(&t->book, 9, 900);
    CHECK_EQ_INT(rows_append_stored(&t->book, key_of(1), 123), -2);   /* present */
    int64_t r = rows_append_stored(&t->book, key_of(10), 123);
    CHECK(r >= 0);
    t->val[r] = 10;
    CHECK_EQ_INT(t->book.dirty[r], 0);
    CHECK_EQ_INT(t->book.n_dirty, 0);
    CHECK_EQ_INT(t->book.tick[r], 9);
    CHECK_EQ_INT(t->book.seen[r], 123);
    tiny_check(t, 10);
}

/* A payload that cannot be resized: appends and reserves fail, nothing is lost, and the
 * capacity is one every array holds. */
static void test_failed_resize(tiny *t) {
    size_t n = t->book.n;
    CHECK_EQ_INT(rows_reserve(&t->book, 0), 0);                  /* shrink to the rows */
    CHECK_EQ_INT(t->book.cap, n);
    t->fail = 1;
    CHECK_EQ_INT(tiny_add(t, 777777), -1);                       /* full, cannot grow */
    CHECK_EQ_INT(t->book.n, n);
    CHECK_EQ_INT(t->book.cap, n);
    CHECK_EQ_INT(km_find(&t->book.index, key_of(777777)), -1);
    for (int i = 0; i < 20; i++) CHECK(tiny_remove(t, 4000 + (uint64_t)i) >= 0);
    CHECK_EQ_INT(rows_reserve(&t->book, n - 10), -1);            /* a shrink that fails */
    CHECK_EQ_INT(t->book.cap, n - 10);                            /* min(old, asked) */
    t->fail = 0;
    CHECK(tiny_add(t, 777777) >= 0);
    CHECK(tiny_add(t, 777778) >= 0);
    for (int i = 1; i < 4000; i++) tiny_check(t, (uint64_t)i);   /* nothing was lost */
    tiny_check(t, 777777);
    tiny_check(t, 777778);
    CHECK_EQ_INT(rows_reserve(&t->book, 1), 0);
    CHECK_EQ_INT(t->book.cap, t->book.n);
}

int main(void) {
    tiny *t = calloc(1, sizeof *t);
    CHECK(t && rows_init(&t->book, tiny_resize, t) == 0);
    CHECK_EQ_INT(rows_row_bytes(), 21);
    CHECK_EQ_INT(rows_reserve(&t->book, 3), 0);                  /* at least 16 rows */
    CHECK_EQ_INT(t->book.cap, 16);
    CHECK_EQ_INT(rows_index_bytes(&t->book), 1024 * sizeof(km_slot));
    test_lookup_stamps(t);
    test_remove(t);
    test_stored(t);
    test_failed_resize(t);
    rows_free(&t->book);
    free(t->val);
    free(t);
    return 0;
}
