/* test_props.c - the properties reader (base/props): a file and the same text in memory
 * are read alike, faults included; the bounded "did you mean" finds what the plain edit
 * distance finds. */
#include <stdio.h>
#include <stdlib.h>

#include "base/props.h"
#include "check.h"
#include "fsutil.h"

/* What a load applied: every line with its number, joined. */
typedef struct {
    char got[4096];
    int refuse_at;   /* refuse this line number (0: none) */
} seen;

static int apply(void *ctx, const char *line, const char *origin, int lineno, char *errstr,
                 size_t errstr_size) {
    seen *s = ctx;
    if (lineno == s->refuse_at) {
        snprintf(errstr, errstr_size, "%s:%d: refused", origin, lineno);
        return -1;
    }
    size_t n = strlen(s->got);
    snprintf(s->got + n, sizeof s->got - n, "%d[%s]", lineno, line);
    return 0;
}

/* Load text[0..len) from a file named path and from memory under the same name: the
 * same lines, the same return, the same message. */
static void same_both_ways(const char *path, const char *text, size_t len, int refuse_at,
                           int want_rc, const char *want_err) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(text, 1, len, f) == len && fclose(f) == 0);
    seen a = {.refuse_at = refuse_at}, b = {.refuse_at = refuse_at};
    char ea[256] = "", eb[256] = "";
    int ra = props_load(path, apply, &a, ea, sizeof ea);
    int rb = props_load_mem(text, len, path, apply, &b, eb, sizeof eb);
    CHECK_EQ_INT(ra, want_rc);
    CHECK_EQ_INT(rb, want_rc);
    CHECK_EQ_STR(a.got, b.got);
    CHECK_EQ_STR(ea, eb);
    if (want_err) CHECK_CONTAINS(eb, want_err);
    remove(path);
}

static void test_file_and_memory(void) {
    char dir[512], path[600];
    fs_scratch_dir(dir, sizeof dir, "test_props");
    snprintf(path, sizeof path, "%s/p.properties", dir);
    const char ok[] = "# comment\n! other\n\n  a = 1 \nb=2\r\nlast=no newline";
    same_both_ways(path, ok, sizeof ok - 1, 0, 0, NULL);
    seen s = {0};
    char err[256];
    CHECK_EQ_INT(props_load_mem(ok, sizeof ok - 1, "x", apply, &s, err, sizeof err), 0);
    CHECK_EQ_STR(s.got, "4[a = 1]5[b=2]6[last=no newline]");
    same_both_ways(path, ok, sizeof ok - 1, 5, -1, ":5: refused");
    const char nul[] = "a=1\nb=\0x\n";
    same_both_ways(path, nul, sizeof nul - 1, 0, -1, ":2: NUL byte at column 3");
    same_both_ways(path, "", 0, 0, 0, NULL);
    size_t big = PROPS_LINE_MAX + 10;
    char *t = malloc((size_t)PROPS_FILE_MAX + 2);
    CHECK(t);
    memset(t, 'k', big);
    same_both_ways(path, t, big, 0, -1, ":1: line longer than 65536 bytes");
    for (size_t i = 0; i < (size_t)PROPS_FILE_MAX + 2; i++) t[i] = i % 64 == 63 ? '\n' : '#';
    same_both_ways(path, t, (size_t)PROPS_FILE_MAX + 2, 0, -1,
                   ": larger than 1048576 bytes (line 16385)");
    same_both_ways(path, t, (size_t)PROPS_FILE_MAX, 0, 0, NULL);   /* the limit itself */
    free(t);
    CHECK_EQ_INT(props_load(dir, apply, &s, err, sizeof err), -1);   /* a directory */
    CHECK_CONTAINS(err, "read error after line 0");
    rm_rf(dir);
}

/* The reference: the first of the names at the smallest distance, if within max. */
static const char *closest_plain(const char *name, const char *const *names, int n, int max) {
    int best = PROPS_FAR;
    const char *hit = NULL;
    for (int i = 0; i < n; i++) {
        int d = props_distance(name, names[i]);
        if (d < best) {
            best = d;
            hit = names[i];
        }
    }
    return best <= max ? hit : NULL;
}

static unsigned rng = 7;
static unsigned rnd(void) {
    rng = rng * 1103515245u + 12345u;
    return rng >> 16;
}

static void test_closest(void) {
    static const char *const keys[] = {
        "batch.size", "batch.linger.ms", "model.arch", "model.shadow", "model.hidden",
        "join.window.ms", "join.lateness.ms", "time.max.ahead.ms", "time.max.behind.ms",
        "features.num.max_abs", "features.num.clip", "emb.expire.ms", "store.dir", "a",
        "a.key.that.is.exactly.sixty.four.bytes.long.so.it.is.never.near"};
    int n = (int)(sizeof keys / sizeof keys[0]);
    CHECK_EQ_STR(props_closest("batch.sise", keys, n, 3), "batch.size");
    CHECK_EQ_STR(props_closest("time.max.ahed.ms", keys, n, 5), "time.max.ahead.ms");
    CHECK(props_closest("zzzzzzzzzz", keys, n, 3) == NULL);
    CHECK_EQ_STR(props_closest("a", keys, n, 0), "a");
    CHECK(props_closest("b", keys, n, 0) == NULL);
    CHECK(props_closest("x", keys, n, -1) == NULL);
    /* against the plain search: mutations of the keys and random names, every bound */
    char name[80];
    for (int t = 0; t < 20000; t++) {
        const char *k = keys[rnd() % (unsigned)n];
        size_t len = strlen(k) < 70 ? strlen(k) : 70;
        memcpy(name, k, len);
        name[len] = 0;
        for (int e = (int)(rnd() % 8); e > 0 && len > 0; e--) {
            size_t at = rnd() % len;
            int op = (int)(rnd() % 3);
            if (op == 0) name[at] = (char)('a' + rnd() % 26);
            else if (op == 1) memmove(name + at, name + at + 1, len-- - at);
            else if (len < 70) {
                memmove(name + at + 1, name + at, ++len - at);
                name[at] = '.';
            }
        }
        if (t % 5 == 0) {   /* unrelated */
            len = rnd() % 70;
            for (size_t i = 0; i < len; i++) name[i] = (char)('a' + rnd() % 4);
            name[len] = 0;
        }
        int max = (int)(rnd() % 12) - 1;
        const char *want = closest_plain(name, keys, n, max), *got = props_closest(name, keys, n, max);
        CHECK_MSG(want == got, "'%s' max %d: '%s' vs '%s'", name, max, got ? got : "(none)",
                  want ? want : "(none)");
    }
}

int main(void) {
    test_file_and_memory();
    test_closest();
    return 0;
}
