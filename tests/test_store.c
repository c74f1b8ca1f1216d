/* test_store.c - the RocksDB state store: families, batches, reads, crash atomicity,
 * refusals that leave the directory untouched (the caller's check too), and, with
 * --disk-full (its own CTest: root mounts a 6 MB tmpfs in a private mount namespace, exit 77
 * where that is not permitted), a full disk: a clean error, no further write, and the
 * committed state whole once there is space again. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <rocksdb/c.h>

#include "check.h"
#include "fsutil.h"
#include "state/store.h"

#define ERR_SIZE 1024
static char g_base[512];  /* scratch directory of this test run */

/* ---- helpers ---- */

static void path_join(char *out, size_t n, const char *a, const char *b) {
    int w = snprintf(out, n, "%s/%s", a, b);
    CHECK(w > 0 && (size_t)w < n);
}

/* A fresh, empty-or-absent path under the scratch directory. */
static void fresh_dir(char *out, size_t n, const char *name) {
    path_join(out, n, g_base, name);
    rm_rf(out);
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f, "fopen %s: %s", path, strerror(errno));
    CHECK(fwrite(data, 1, len, f) == len);
    CHECK(fclose(f) == 0);
}

static store *open_ok(const char *dir) {
    char err[ERR_SIZE] = "";
    store *s = store_open(dir, NULL, err, sizeof(err));
    CHECK_MSG(s, "store_open %s: %s", dir, err);
    return s;
}

static void commit_ok(store *s, store_batch *b, int sync) {
    char err[ERR_SIZE] = "";
    int rc = store_commit(s, b, sync, err, sizeof(err));
    CHECK_MSG(rc == 0, "store_commit: %s", err);
}

/* Value of a key, or NULL when absent (caller frees). */
static char *get_str(store *s, store_cf cf, const void *key, size_t klen, size_t *vlen) {
    char err[ERR_SIZE] = "";
    void *v = NULL;
    int rc = store_get(s, cf, key, klen, &v, vlen, err, sizeof(err));
    CHECK_MSG(rc >= 0, "store_get: %s", err);
    CHECK_EQ_INT(rc == 1, v != NULL);
    return v;
}

static void check_value(store *s, store_cf cf, const void *key, size_t klen, const char *want) {
    size_t vlen = 0;
    char *v = get_str(s, cf, key, klen, &vlen);
    CHECK_MSG(v, "key %.*s of %s is missing", (int)klen, (const char *)key, store_cf_name(cf));
    CHECK_EQ_INT(vlen, strlen(want));
    CHECK(memcmp(v, want, vlen) == 0);
    free(v);
}

static void check_absent(store *s, store_cf cf, const void *key, size_t klen) {
    size_t vlen = 1;
    char *v = get_str(s, cf, key, klen, &vlen);
    CHECK_MSG(!v, "key %.*s of %s should be absent", (int)klen, (const char *)key,
              store_cf_name(cf));
    CHECK_EQ_INT(vlen, 0);
}

/* Run this test binary as a child process in `mode` (see child_main), with its stdin and
 * stdout on pipes. Returns the pid; *to_child / *from_child are the parent's ends. */
static pid_t spawn(const char *mode, const char *dir, int *to_child, int *from_child) {
    int in[2], out[2];
    CHECK(pipe(in) == 0 && pipe(out) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]); close(in[1]); close(out[0]); close(out[1]);
        execl("/proc/self/exe", "test_store", "--child", mode, dir, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *to_child = in[1];
    *from_child = out[0];
    return pid;
}

static size_t read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/* ---- children ---- */

/* The checkpoint batch of sequence number seq: every key of every family gets a value
 * that carries seq, so a torn batch would show two different numbers. */
#define CRASH_EMB 1000
#define CRASH_USER 100
#define CRASH_PENDING 50
static void crash_batch(store_batch *b, uint64_t seq) {
    unsigned char row[128];
    for (size_t i = 0; i < sizeof(row); i++) row[i] = (unsigned char)(seq * 31 + i);
    memcpy(row, &seq, 8);
    for (uint64_t k = 0; k < CRASH_EMB; k++) CHECK(store_batch_put_u64(b, STORE_EMB, k, row, 128) == 0);
    for (uint64_t k = 0; k < CRASH_USER; k++) CHECK(store_batch_put_u64(b, STORE_USER, k, row, 64) == 0);
    for (int k = 0; k < CRASH_PENDING; k++) {
        char id[32];
        int n = snprintf(id, sizeof(id), "imp-%03d", k);
        CHECK(store_batch_put(b, STORE_PENDING, id, (size_t)n, row, 32) == 0);
    }
    CHECK(store_put_offset(b, "m3.events.feed", 3, (int64_t)seq) == 0);
    CHECK(store_batch_put(b, STORE_META, "seq", 3, &seq, 8) == 0);
}

static int child_main(const char *mode, const char *dir) {
    char err[ERR_SIZE] = "";
    if (!strcmp(mode, "hold")) {  /* hold the store open until stdin closes */
        store *s = store_open(dir, NULL, err, sizeof(err));
        if (!s) { fprintf(stderr, "child: %s\n", err); return 2; }
        CHECK(write(1, "R", 1) == 1);
        char c;
        while (read(0, &c, 1) > 0) {}
        store_destroy(s);
        return 0;
    }
    if (!strcmp(mode, "commit-exit") || !strcmp(mode, "commit-kill")) {
        store *s = store_open(dir, NULL, err, sizeof(err));
        if (!s) { fprintf(stderr, "child: %s\n", err); return 2; }
        store_batch *b = store_batch_new(s);
        crash_batch(b, 7);
        if (store_commit(s, b, 1, err, sizeof(err)) != 0) { fprintf(stderr, "child: %s\n", err); return 3; }
        CHECK(write(1, "C", 1) == 1);
        if (!strcmp(mode, "commit-kill")) raise(SIGKILL);
        _exit(0);  /* no close, no flush: the WAL is all there is */
    }
    if (!strcmp(mode, "commit-loop")) {  /* commit seq 1, 2, ... and ack each, until killed */
        store *s = store_open(dir, NULL, err, sizeof(err));
        if (!s) { fprintf(stderr, "child: %s\n", err); return 2; }
        store_batch *b = store_batch_new(s);
        for (uint64_t seq = 1;; seq++) {
            crash_batch(b, seq);
            if (store_commit(s, b, 1, err, sizeof(err)) != 0) { fprintf(stderr, "child: %s\n", err); return 3; }
            CHECK(write(1, &seq, 8) == 8);
        }
    }
    fprintf(stderr, "child: unknown mode %s\n", mode);
    return 64;
}

struct crash_ctx { const unsigned char *want; size_t len; long bad; };
static void crash_cb(void *opaque, size_t i, const void *val, size_t vlen) {
    struct crash_ctx *ctx = opaque;
    (void)i;
    if (!val || vlen != ctx->len || memcmp(val, ctx->want, vlen) != 0) ctx->bad++;
}

/* After a crash: every key holds the same seq (the batch is all or nothing). Returns it. */
static uint64_t check_crash_state(const char *dir) {
    store *s = open_ok(dir);
    CHECK_EQ_INT(store_created(s), 0);
    size_t vlen = 0;
    char *v = get_str(s, STORE_META, "seq", 3, &vlen);
    CHECK_MSG(v, "meta/seq missing after the crash");
    CHECK_EQ_INT(vlen, 8);
    uint64_t seq;
    memcpy(&seq, v, 8);
    free(v);
    unsigned char want[128];
    for (size_t i = 0; i < sizeof(want); i++) want[i] = (unsigned char)(seq * 31 + i);
    memcpy(want, &seq, 8);
    uint64_t keys[CRASH_EMB];
    for (uint64_t k = 0; k < CRASH_EMB; k++) keys[k] = k;
    struct crash_ctx ctx = {want, 128, 0};
    char err[ERR_SIZE] = "";
    for (int fam = 0; fam < 2; fam++) {
        store_cf cf = fam == 0 ? STORE_EMB : STORE_USER;
        size_t n = fam == 0 ? CRASH_EMB : CRASH_USER;
        ctx.len = fam == 0 ? 128 : 64;
        long found = store_multi_get_u64(s, cf, keys, n, crash_cb, &ctx, err, sizeof(err));
        CHECK_MSG(found >= 0, "%s", err);
        CHECK_EQ_INT(found, n);
    }
    CHECK_EQ_INT(ctx.bad, 0);
    for (int k = 0; k < CRASH_PENDING; k++) {
        char id[32];
        int n = snprintf(id, sizeof(id), "imp-%03d", k);
        v = get_str(s, STORE_PENDING, id, (size_t)n, &vlen);
        CHECK(v && vlen == 32 && memcmp(v, want, 32) == 0);
        free(v);
    }
    char key[64];
    int kl = snprintf(key, sizeof(key), "offset/m3.events.feed/3");
    v = get_str(s, STORE_META, key, (size_t)kl, &vlen);
    CHECK(v && vlen == 8);
    CHECK_EQ_INT(store_key_to_u64(v), seq);
    free(v);
    store_destroy(s);
    return seq;
}

/* ---- tests ---- */

static void test_keys_and_defaults(void) {
    unsigned char k[8];
    store_key_from_u64(k, 0x0102030405060708ull);
    CHECK(k[0] == 1 && k[7] == 8);
    CHECK_EQ_INT(store_key_to_u64(k), 0x0102030405060708ull);
    store_key_from_u64(k, UINT64_MAX);
    CHECK(store_key_to_u64(k) == UINT64_MAX);
    store_key_from_u64(k, 0);
    CHECK(store_key_to_u64(k) == 0);
    CHECK_EQ_STR(store_cf_name(STORE_EMB), "emb");
    CHECK_EQ_STR(store_cf_name(STORE_USER), "user");
    CHECK_EQ_STR(store_cf_name(STORE_PENDING), "pending");
    CHECK_EQ_STR(store_cf_name(STORE_META), "meta");
    CHECK(store_cf_name((store_cf)4) == NULL);
    CHECK(store_cf_name((store_cf)-1) == NULL);
    store_opts o;
    store_opts_default(&o);
    CHECK_EQ_INT(o.block_cache_mb, 128);
    CHECK_EQ_INT(o.write_buffer_mb, 64);
    CHECK_EQ_INT(o.compression, 1);
    CHECK_EQ_INT(o.bloom_bits, 10);
    CHECK_EQ_INT(o.max_open_files, -1);
    CHECK_EQ_INT(o.max_wal_mb, 32);
    store_destroy(NULL);
    store_batch_destroy(NULL);
    CHECK(store_batch_new(NULL) == NULL);
    CHECK_EQ_INT(store_close(NULL, 1, NULL, 0), 0);
}

static void test_create_and_families(void) {
    char dir[512], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "create");
    store *s = open_ok(dir);
    CHECK_EQ_INT(store_created(s), 1);
    CHECK_EQ_STR(store_dir(s), dir);
    const char *comp = store_compression(s);
    CHECK_MSG(!strcmp(comp, "lz4") || !strcmp(comp, "snappy") || !strcmp(comp, "none"), "%s", comp);
    printf("compression detected: %s\n", comp);
    check_value(s, STORE_META, STORE_KEY_FORMAT, strlen(STORE_KEY_FORMAT), STORE_FORMAT);
    CHECK_EQ_INT(store_close(s, 1, err, sizeof(err)), 0);

    /* the families, as RocksDB itself lists them */
    rocksdb_options_t *o = rocksdb_options_create();
    size_t n = 0;
    char *rerr = NULL;
    char **names = rocksdb_list_column_families(o, dir, &n, &rerr);
    CHECK_MSG(names && !rerr, "list_column_families: %s", rerr ? rerr : "NULL");
    CHECK_EQ_INT(n, 5);
    const char *want[] = {"default", "emb", "user", "pending", "meta"};
    for (int w = 0; w < 5; w++) {
        int seen = 0;
        for (size_t i = 0; i < n; i++) seen |= !strcmp(names[i], want[w]);
        CHECK_MSG(seen, "column family %s missing", want[w]);
    }
    rocksdb_list_column_families_destroy(names, n);
    rocksdb_options_destroy(o);

    s = open_ok(dir);  /* reopen: existing, same format */
    CHECK_EQ_INT(store_created(s), 0);
    check_value(s, STORE_META, STORE_KEY_FORMAT, strlen(STORE_KEY_FORMAT), STORE_FORMAT);
    store_destroy(s);

    /* compression off is honoured; bad options are refused */
    store_opts opts;
    store_opts_default(&opts);
    opts.compression = 0;
    fresh_dir(dir, sizeof(dir), "create-nocomp");
    s = store_open(dir, &opts, err, sizeof(err));
    CHECK_MSG(s, "%s", err);
    CHECK_EQ_STR(store_compression(s), "none");
    store_destroy(s);
    opts.bloom_bits = 65;
    CHECK(store_open(dir, &opts, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, "bloom_bits");
    CHECK(store_open("", NULL, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, "not set");
}

struct mg_ctx { int calls; size_t next_i; int bad; const char *const *want; };
static void mg_cb(void *opaque, size_t i, const void *val, size_t vlen) {
    struct mg_ctx *c = opaque;
    c->calls++;
    if (i != c->next_i) c->bad++;  /* in key order of the request */
    c->next_i = i + 1;
    const char *w = c->want[i];
    if (!w) { if (val || vlen) c->bad++; }
    else if (!val || vlen != strlen(w) || memcmp(val, w, vlen) != 0) c->bad++;
}

static void test_put_get_multiget(void) {
    char dir[512], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "putget");
    store *s = open_ok(dir);
    store_stats st0;
    store_stats_get(s, &st0);
    store_batch *b = store_batch_new(s);
    CHECK(b);
    CHECK_EQ_INT(store_batch_count(b), 0);
    CHECK(store_batch_put_u64(b, STORE_EMB, 7, "emb-7", 5) == 0);
    CHECK(store_batch_put_u64(b, STORE_EMB, 9, "emb-9", 5) == 0);
    CHECK(store_batch_put_u64(b, STORE_EMB, 1ull << 40, "emb-big", 7) == 0);
    CHECK(store_batch_put_u64(b, STORE_USER, 7, "user-7", 6) == 0);  /* same key, other family */
    CHECK(store_batch_put(b, STORE_PENDING, "imp-a", 5, "pend-a", 6) == 0);
    CHECK(store_batch_put(b, STORE_META, "model_version", 13, "v3", 2) == 0);
    CHECK(store_batch_put_u64(b, STORE_EMB, 11, "", 0) == 0);  /* empty value: present */
    CHECK(store_batch_put(b, (store_cf)9, "x", 1, "y", 1) == -1);
    CHECK(store_batch_delete(b, (store_cf)-1, "x", 1) == -1);
    CHECK_EQ_INT(store_batch_count(b), 7);
    size_t bytes = store_batch_bytes(b);
    CHECK(bytes > 60);
    commit_ok(s, b, 0);
    CHECK_EQ_INT(store_batch_count(b), 0);  /* cleared by the commit */
    commit_ok(s, b, 1);                     /* empty batch: a no-op */

    unsigned char k8[8];
    store_key_from_u64(k8, 7);
    check_value(s, STORE_EMB, k8, 8, "emb-7");
    check_value(s, STORE_USER, k8, 8, "user-7");
    check_absent(s, STORE_PENDING, k8, 8);
    check_value(s, STORE_PENDING, "imp-a", 5, "pend-a");
    check_absent(s, STORE_PENDING, "imp-b", 5);
    check_value(s, STORE_META, "model_version", 13, "v3");
    store_key_from_u64(k8, 11);
    check_value(s, STORE_EMB, k8, 8, "");
    void *v = (void *)1;
    size_t vlen = 9;
    CHECK_EQ_INT(store_get(s, (store_cf)4, "x", 1, &v, &vlen, err, sizeof(err)), -1);
    CHECK(v == NULL && vlen == 0);
    CHECK_CONTAINS(err, "invalid column family");

    /* multi-get: present and missing keys, order kept */
    uint64_t ids[] = {9, 8, 7, 1ull << 40, 0, UINT64_MAX, 11};
    const char *want[] = {"emb-9", NULL, "emb-7", "emb-big", NULL, NULL, ""};
    struct mg_ctx c = {0, 0, 0, want};
    long found = store_multi_get_u64(s, STORE_EMB, ids, 7, mg_cb, &c, err, sizeof(err));
    CHECK_MSG(found >= 0, "%s", err);
    CHECK_EQ_INT(found, 4);
    CHECK_EQ_INT(c.calls, 7);
    CHECK_EQ_INT(c.bad, 0);
    const void *keys[] = {"imp-b", "imp-a", ""};
    const size_t klens[] = {5, 5, 0};
    const char *want2[] = {NULL, "pend-a", NULL};
    struct mg_ctx c2 = {0, 0, 0, want2};
    found = store_multi_get(s, STORE_PENDING, keys, klens, 3, mg_cb, &c2, err, sizeof(err));
    CHECK_EQ_INT(found, 1);
    CHECK_EQ_INT(c2.calls, 3);
    CHECK_EQ_INT(c2.bad, 0);
    CHECK_EQ_INT(store_multi_get_u64(s, STORE_USER, ids, 0, mg_cb, &c2, err, sizeof(err)), 0);
    CHECK_EQ_INT(store_multi_get_u64(s, (store_cf)5, ids, 1, mg_cb, &c2, err, sizeof(err)), -1);

    /* counters */
    store_stats st;
    store_stats_get(s, &st);
    CHECK_EQ_INT(st.batches - st0.batches, 1);  /* the empty commit does not count */
    CHECK_EQ_INT(st.ops_written - st0.ops_written, 7);
    CHECK_EQ_INT(st.bytes_written - st0.bytes_written, bytes);
    CHECK_EQ_INT(st.gets, 7);        /* calls refused for an invalid family do not count */
    CHECK_EQ_INT(st.multi_gets, 2);  /* nor do empty ones */
    CHECK_EQ_INT(st.keys_looked_up, 7 + 7 + 3);
    CHECK_EQ_INT(st.keys_found, 5 + 4 + 1);
    CHECK_EQ_INT(st.keys_missing, 2 + 3 + 2);

    /* deletes */
    CHECK(store_batch_delete_u64(b, STORE_EMB, 7) == 0);
    CHECK(store_batch_delete(b, STORE_PENDING, "imp-a", 5) == 0);
    commit_ok(s, b, 1);
    store_key_from_u64(k8, 7);
    check_absent(s, STORE_EMB, k8, 8);
    check_value(s, STORE_USER, k8, 8, "user-7");
    check_absent(s, STORE_PENDING, "imp-a", 5);

    /* a batch made for another store is refused, and nothing of it is applied */
    char dir2[512];
    fresh_dir(dir2, sizeof(dir2), "putget-other");
    store *s2 = open_ok(dir2);
    store_batch *b2 = store_batch_new(s2);
    CHECK(store_batch_put(b2, STORE_META, "foreign", 7, "x", 1) == 0);
    CHECK_EQ_INT(store_commit(s, b2, 1, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "another store");
    CHECK_EQ_INT(store_batch_count(b2), 1);  /* unchanged on failure */
    check_absent(s, STORE_META, "foreign", 7);
    store_batch_destroy(b2);
    store_destroy(s2);

    uint64_t nkeys = 0;
    store_batch_destroy(b);  /* a batch goes before its store */
    CHECK_EQ_INT(store_close(s, 1, err, sizeof(err)), 0);
    s = open_ok(dir);
    CHECK_EQ_INT(store_property(s, STORE_EMB, "rocksdb.estimate-num-keys", &nkeys), 0);
    CHECK_MSG(nkeys >= 2 && nkeys <= 5, "estimate-num-keys %llu", (unsigned long long)nkeys);
    CHECK_EQ_INT(store_property(s, STORE_EMB, "rocksdb.no-such-property", &nkeys), -1);
    store_key_from_u64(k8, 9);
    check_value(s, STORE_EMB, k8, 8, "emb-9");
    store_destroy(s);
}

/* A mixed batch: after a clean close and reopen everything is there; a batch that was
 * never committed leaves nothing. */
static void test_atomic_reopen(void) {
    char dir[512];
    fresh_dir(dir, sizeof(dir), "atomic");
    store *s = open_ok(dir);
    store_batch *b = store_batch_new(s);
    crash_batch(b, 42);
    commit_ok(s, b, 0);
    crash_batch(b, 43);  /* built, never committed */
    CHECK(store_batch_count(b) > 1000);
    store_batch_destroy(b);
    store_destroy(s);    /* no flush: the WAL is replayed at the next open */
    CHECK_EQ_INT(check_crash_state(dir), 42);

    s = open_ok(dir);
    b = store_batch_new(s);
    crash_batch(b, 44);
    store_batch_clear(b);  /* cleared: nothing of 44 */
    CHECK_EQ_INT(store_batch_count(b), 0);
    CHECK(store_batch_put(b, STORE_META, "extra", 5, "1", 1) == 0);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    store_destroy(s);
    CHECK_EQ_INT(check_crash_state(dir), 42);
    s = open_ok(dir);
    check_value(s, STORE_META, "extra", 5, "1");
    store_destroy(s);
}

/* A child commits with sync=1 and dies at once (_exit without close, or SIGKILL); then a
 * child committing in a loop is killed at a random moment, possibly mid-batch. */
static void test_crash(void) {
    char dir[512];
    const char *modes[] = {"commit-exit", "commit-kill"};
    for (int m = 0; m < 2; m++) {
        fresh_dir(dir, sizeof(dir), modes[m]);
        int to, from;
        pid_t pid = spawn(modes[m], dir, &to, &from);
        char c = 0;
        CHECK_EQ_INT(read_full(from, &c, 1), 1);
        CHECK(c == 'C');
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (m == 0) CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        else CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %d", status);
        close(to);
        close(from);
        CHECK_EQ_INT(check_crash_state(dir), 7);
    }

    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int round = 0; round < 4; round++) {
        fresh_dir(dir, sizeof(dir), "commit-loop");
        int to, from;
        pid_t pid = spawn("commit-loop", dir, &to, &from);
        uint64_t acked = 0, seq;
        int target = 3 + rand() % 20;
        for (int i = 0; i < target; i++) {
            CHECK_EQ_INT(read_full(from, &seq, 8), 8);
            CHECK_EQ_INT(seq, acked + 1);
            acked = seq;
        }
        struct timespec ts = {0, (long)(rand() % 4000) * 1000};  /* 0..4 ms into the next batches */
        nanosleep(&ts, NULL);
        CHECK(kill(pid, SIGKILL) == 0);
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        while (read_full(from, &seq, 8) == 8) acked = seq;  /* acks sent before the kill */
        close(to);
        close(from);
        uint64_t got = check_crash_state(dir);
        printf("crash round %d: killed after ack %llu, recovered batch %llu\n", round,
               (unsigned long long)acked, (unsigned long long)got);
        CHECK_MSG(got == acked || got == acked + 1, "recovered %llu, acked %llu",
                  (unsigned long long)got, (unsigned long long)acked);
    }
}

/* The newest WAL file of dir (highest number), into out. */
static void newest_wal(const char *dir, char *out, size_t n) {
    DIR *d = opendir(dir);
    CHECK(d);
    struct dirent *e;
    long best = -1;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 4 && !strcmp(e->d_name + len - 4, ".log")) {
            long num = atol(e->d_name);
            if (num > best) {
                best = num;
                path_join(out, n, dir, e->d_name);
            }
        }
    }
    closedir(d);
    CHECK_MSG(best >= 0, "no WAL in %s", dir);
}

/* A power loss can leave the WAL's last batch half written: recovery drops all of it. */
static void test_torn_wal(void) {
    char dir[512], wal[1024];
    fresh_dir(dir, sizeof(dir), "torn-wal");
    store *s = open_ok(dir);
    store_batch *b = store_batch_new(s);
    crash_batch(b, 1);
    commit_ok(s, b, 1);
    crash_batch(b, 2);
    size_t bytes2 = store_batch_bytes(b);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    store_destroy(s);  /* no flush: both batches live only in the WAL */
    newest_wal(dir, wal, sizeof(wal));
    struct stat st;
    CHECK(stat(wal, &st) == 0);
    CHECK((size_t)st.st_size > 2 * bytes2);
    CHECK(truncate(wal, st.st_size - (off_t)(bytes2 / 2)) == 0);  /* cut batch 2 in half */
    CHECK_EQ_INT(check_crash_state(dir), 1);
}

struct off { char topic[64]; int32_t part; int64_t off; };
struct off_ctx { struct off got[16]; int n; int stop_after; };
static int off_cb(void *opaque, const char *topic, int32_t partition, int64_t next_offset) {
    struct off_ctx *c = opaque;
    CHECK(c->n < 16);
    snprintf(c->got[c->n].topic, sizeof(c->got[0].topic), "%s", topic);
    c->got[c->n].part = partition;
    c->got[c->n].off = next_offset;
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static void test_offsets(void) {
    char dir[512], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "offsets");
    store *s = open_ok(dir);
    store_batch *b = store_batch_new(s);
    CHECK(store_put_offset(b, "m3.events.feed", 0, 0) == 0);
    CHECK(store_put_offset(b, "m3.events.feed", 2, 123456789012345ll) == 0);
    CHECK(store_put_offset(b, "m3.events.feed", 10, 5) == 0);
    CHECK(store_put_offset(b, "m3.requests", 2, INT64_MAX) == 0);
    CHECK(store_put_offset(b, "m3.events.search", 2147483647, -2) == 0);
    CHECK(store_put_offset(b, "m3.events.feed", 2, 77) == 0);  /* later put wins */
    CHECK(store_put_offset(b, "", 0, 1) == -1);
    CHECK(store_put_offset(b, "a/b", 0, 1) == -1);
    CHECK(store_put_offset(b, "t", -1, 1) == -1);
    char longname[STORE_TOPIC_MAX + 2];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CHECK(store_put_offset(b, longname, 0, 1) == -1);
    longname[STORE_TOPIC_MAX] = '\0';
    CHECK(store_put_offset(b, longname, 1, 9) == 0);  /* exactly the limit */
    CHECK(store_batch_put(b, STORE_META, "offset", 6, "not-an-offset", 13) == 0); /* no '/' */
    CHECK(store_batch_put(b, STORE_META, "offsets", 7, "not-an-offset", 13) == 0);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    store_destroy(s);

    s = open_ok(dir);
    struct off_ctx c;
    memset(&c, 0, sizeof(c));
    long n = store_get_offsets(s, off_cb, &c, err, sizeof(err));
    CHECK_MSG(n >= 0, "%s", err);
    CHECK_EQ_INT(n, 6);
    /* meta key order: "offset/m3.events.feed/0" < ".../10" < ".../2" < "m3.events.search" ... */
    CHECK_EQ_STR(c.got[0].topic, "m3.events.feed"); CHECK_EQ_INT(c.got[0].part, 0);  CHECK_EQ_INT(c.got[0].off, 0);
    CHECK_EQ_STR(c.got[1].topic, "m3.events.feed"); CHECK_EQ_INT(c.got[1].part, 10); CHECK_EQ_INT(c.got[1].off, 5);
    CHECK_EQ_STR(c.got[2].topic, "m3.events.feed"); CHECK_EQ_INT(c.got[2].part, 2);  CHECK_EQ_INT(c.got[2].off, 77);
    CHECK_EQ_STR(c.got[3].topic, "m3.events.search"); CHECK_EQ_INT(c.got[3].part, 2147483647);
    CHECK_EQ_INT(c.got[3].off, -2);
    CHECK_EQ_STR(c.got[4].topic, "m3.requests"); CHECK_EQ_INT(c.got[4].part, 2);
    CHECK(c.got[4].off == INT64_MAX);
    CHECK_EQ_INT(strlen(c.got[5].topic), 63);  /* truncated copy of the 249-char name */
    CHECK_EQ_INT(c.got[5].part, 1);
    CHECK_EQ_INT(c.got[5].off, 9);
    memset(&c, 0, sizeof(c));
    c.stop_after = 2;
    CHECK_EQ_INT(store_get_offsets(s, off_cb, &c, err, sizeof(err)), 2);

    /* a malformed record under the prefix is reported, not skipped */
    b = store_batch_new(s);
    CHECK(store_batch_put(b, STORE_META, "offset/t/x1", 11, "12345678", 8) == 0);
    commit_ok(s, b, 0);
    CHECK_EQ_INT(store_get_offsets(s, NULL, NULL, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "malformed offset record \"offset/t/x1\"");
    CHECK(store_batch_delete(b, STORE_META, "offset/t/x1", 11) == 0);
    CHECK(store_batch_put(b, STORE_META, "offset/t/1", 10, "1234", 4) == 0);  /* short value */
    commit_ok(s, b, 0);
    CHECK_EQ_INT(store_get_offsets(s, NULL, NULL, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "4-byte value");
    store_batch_destroy(b);
    store_destroy(s);
}

struct it_ctx { uint64_t keys[64]; size_t klen[64]; int n; int stop_after; };
static int it_cb(void *opaque, const void *key, size_t klen, const void *val, size_t vlen) {
    struct it_ctx *c = opaque;
    CHECK(c->n < 64);
    c->klen[c->n] = klen;
    c->keys[c->n] = klen == 8 ? store_key_to_u64(key) : 0;
    if (klen == 8) CHECK(vlen == 8 && store_key_to_u64(val) == c->keys[c->n]);
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static void test_iteration_order(void) {
    char dir[512], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "iterate");
    store *s = open_ok(dir);
    const uint64_t ids[] = {256, UINT64_MAX, 0, 1ull << 63, 255, 1, 1ull << 32, 65536, 4294967295ull};
    const uint64_t sorted[] = {0, 1, 255, 256, 65536, 4294967295ull, 1ull << 32, 1ull << 63, UINT64_MAX};
    const int n = 9;
    store_batch *b = store_batch_new(s);
    for (int i = 0; i < n; i++) {  /* two commits, flushed between: memtable + SST merge */
        unsigned char v[8];
        store_key_from_u64(v, ids[i]);
        CHECK(store_batch_put_u64(b, STORE_EMB, ids[i], v, 8) == 0);
        if (i == 4) {
            commit_ok(s, b, 0);
            CHECK_EQ_INT(store_close(s, 1, err, sizeof(err)), 0);
            store_batch_destroy(b);
            s = open_ok(dir);
            b = store_batch_new(s);
        }
    }
    commit_ok(s, b, 0);
    struct it_ctx c;
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(store_iterate(s, STORE_EMB, NULL, 0, it_cb, &c, err, sizeof(err)), n);
    for (int i = 0; i < n; i++) CHECK_MSG(c.keys[i] == sorted[i], "position %d: %llu", i, (unsigned long long)c.keys[i]);
    unsigned char start[8];
    store_key_from_u64(start, 300);  /* from the first key >= 300 */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(store_iterate(s, STORE_EMB, start, 8, it_cb, &c, err, sizeof(err)), 5);
    CHECK(c.keys[0] == 65536 && c.keys[4] == UINT64_MAX);
    memset(&c, 0, sizeof(c));
    c.stop_after = 3;
    CHECK_EQ_INT(store_iterate(s, STORE_EMB, NULL, 0, it_cb, &c, err, sizeof(err)), 3);
    CHECK_EQ_INT(store_iterate(s, STORE_USER, NULL, 0, it_cb, &c, err, sizeof(err)), 0);
    CHECK_EQ_INT(store_iterate(s, (store_cf)7, NULL, 0, it_cb, &c, err, sizeof(err)), -1);

    /* pending: string ids in bytewise order; a range delete [imp-b, imp-d) */
    const char *pend[] = {"imp-d", "imp-a", "imp-c", "imp-b", "imp-bb", "imp-e"};
    for (int i = 0; i < 6; i++) CHECK(store_batch_put(b, STORE_PENDING, pend[i], strlen(pend[i]), "p", 1) == 0);
    commit_ok(s, b, 0);
    CHECK(store_batch_delete_range(b, STORE_PENDING, "imp-b", 5, "imp-d", 5) == 0);
    CHECK(store_batch_delete_range(b, STORE_PENDING, "imp-z", 5, "imp-a", 5) == -1);  /* end < begin */
    CHECK(store_batch_delete_range(b, (store_cf)8, "a", 1, "b", 1) == -1);
    commit_ok(s, b, 1);
    check_absent(s, STORE_PENDING, "imp-b", 5);
    check_absent(s, STORE_PENDING, "imp-bb", 6);
    check_absent(s, STORE_PENDING, "imp-c", 5);
    check_value(s, STORE_PENDING, "imp-a", 5, "p");
    check_value(s, STORE_PENDING, "imp-d", 5, "p");  /* end is exclusive */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(store_iterate(s, STORE_PENDING, NULL, 0, it_cb, &c, err, sizeof(err)), 3);
    /* u64 range delete: [256, 2^32) */
    unsigned char lo[8], hi[8];
    store_key_from_u64(lo, 256);
    store_key_from_u64(hi, 1ull << 32);
    CHECK(store_batch_delete_range(b, STORE_EMB, lo, 8, hi, 8) == 0);
    commit_ok(s, b, 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(store_iterate(s, STORE_EMB, NULL, 0, it_cb, &c, err, sizeof(err)), 6);
    CHECK(c.keys[2] == 255 && c.keys[3] == (1ull << 32));
    store_batch_destroy(b);
    store_destroy(s);
}

static void test_large_value(void) {
    char dir[512], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "large");
    store *s = open_ok(dir);
    const size_t big = 4u << 20;
    unsigned char *blob = malloc(big);
    CHECK(blob);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        blob[i] = (unsigned char)x;
    }
    store_batch *b = store_batch_new(s);
    CHECK(store_batch_put(b, STORE_META, STORE_KEY_DENSE, strlen(STORE_KEY_DENSE), blob, big) == 0);
    CHECK(store_batch_put_u64(b, STORE_EMB, 1, "row", 3) == 0);
    CHECK(store_batch_bytes(b) > big);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    for (int round = 0; round < 3; round++) {  /* open, reopen, reopen after a flush */
        size_t vlen = 0;
        char *v = get_str(s, STORE_META, STORE_KEY_DENSE, strlen(STORE_KEY_DENSE), &vlen);
        CHECK(v);
        CHECK_EQ_INT(vlen, big);
        CHECK(memcmp(v, blob, big) == 0);
        free(v);
        CHECK_EQ_INT(store_close(s, round == 1, err, sizeof(err)), 0);
        s = open_ok(dir);
    }
    store_destroy(s);
    free(blob);
}

/* A directory with data, flushed to SSTs and closed: the subject of the error tests. */
static void make_store_with_data(const char *dir) {
    char err[ERR_SIZE] = "";
    store *s = open_ok(dir);
    store_batch *b = store_batch_new(s);
    crash_batch(b, 5);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    CHECK_EQ_INT(store_close(s, 1, err, sizeof(err)), 0);
}

static void test_error_locked(void) {
    char dir[512], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "locked");
    make_store_with_data(dir);

    /* twice from this process */
    store *s = open_ok(dir);
    struct timespec settle = {0, 200 * 1000 * 1000};
    nanosleep(&settle, NULL);  /* let the first open's background work finish */
    char *before = fs_snapshot(dir);
    CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
    printf("second open in-process: %s\n", err);
    CHECK_CONTAINS(err, dir);
    CHECK_CONTAINS(err, "another m3rec worker may be using it");
    CHECK_UNCHANGED(before, dir);

    /* from a forked child (no exec): it inherits no lock, and must still refuse */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char cerr[ERR_SIZE] = "";
        store *cs = store_open(dir, NULL, cerr, sizeof(cerr));
        int ok = cs == NULL && strstr(cerr, dir) && strstr(cerr, "locked by another process") &&
                 strstr(cerr, "another m3rec worker may be using it");
        if (!ok) fprintf(stderr, "forked child: %s\n", cs ? "opened!" : cerr);
        _exit(ok ? 0 : 1);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "forked child status %d", status);
    CHECK_UNCHANGED(before, dir);
    free(before);
    store_destroy(s);

    /* held by another process (a child that exec'd): named with its pid */
    int to, from;
    pid = spawn("hold", dir, &to, &from);
    char c = 0;
    CHECK_EQ_INT(read_full(from, &c, 1), 1);
    CHECK(c == 'R');
    nanosleep(&settle, NULL);
    before = fs_snapshot(dir);
    CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
    printf("open held by child: %s\n", err);
    CHECK_CONTAINS(err, dir);
    CHECK_CONTAINS(err, "locked by another process");
    char pidtxt[32];
    snprintf(pidtxt, sizeof(pidtxt), "(pid %ld)", (long)pid);
    CHECK_CONTAINS(err, pidtxt);
    CHECK_CONTAINS(err, "another m3rec worker may be using it");
    CHECK_UNCHANGED(before, dir);
    free(before);
    close(to);  /* the child closes the store and exits */
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "holder status %d", status);
    close(from);
    s = open_ok(dir);  /* free again */
    CHECK_EQ_INT(store_created(s), 0);
    store_destroy(s);
    CHECK_EQ_INT(check_crash_state(dir), 5);
}

static void test_error_format(void) {
    char dir[512], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "format");
    make_store_with_data(dir);
    store *s = open_ok(dir);
    store_batch *b = store_batch_new(s);
    CHECK(store_batch_put(b, STORE_META, STORE_KEY_FORMAT, strlen(STORE_KEY_FORMAT),
                          "m3rec-store 999", 15) == 0);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    store_destroy(s);  /* unflushed: the new format record is only in the WAL */
    char *before = fs_snapshot(dir);
    for (int i = 0; i < 2; i++) {
        CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
        CHECK_CONTAINS(err, dir);
        CHECK_CONTAINS(err, "\"m3rec-store 999\"");
        CHECK_CONTAINS(err, "\"" STORE_FORMAT "\"");
        CHECK_CONTAINS(err, "incompatible");
        CHECK_CONTAINS(err, "nothing was changed");
        CHECK_UNCHANGED(before, dir);
    }
    printf("incompatible format: %s\n", err);
    free(before);

    /* data but no format record at all: not ours */
    fresh_dir(dir, sizeof(dir), "format-missing");
    make_store_with_data(dir);
    s = open_ok(dir);
    b = store_batch_new(s);
    CHECK(store_batch_delete(b, STORE_META, STORE_KEY_FORMAT, strlen(STORE_KEY_FORMAT)) == 0);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    CHECK_EQ_INT(store_close(s, 1, err, sizeof(err)), 0);
    before = fs_snapshot(dir);
    CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, dir);
    CHECK_CONTAINS(err, "no format record");
    CHECK_UNCHANGED(before, dir);
    free(before);

    /* no format and no data: a creation cut short, finished on the next open */
    fresh_dir(dir, sizeof(dir), "format-fresh");
    s = open_ok(dir);
    b = store_batch_new(s);
    CHECK(store_batch_delete(b, STORE_META, STORE_KEY_FORMAT, strlen(STORE_KEY_FORMAT)) == 0);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    store_destroy(s);
    s = open_ok(dir);
    CHECK_EQ_INT(store_created(s), 1);
    check_value(s, STORE_META, STORE_KEY_FORMAT, strlen(STORE_KEY_FORMAT), STORE_FORMAT);
    store_destroy(s);
}

static void find_manifest(const char *dir, char *out, size_t n) {
    DIR *d = opendir(dir);
    CHECK(d);
    struct dirent *e;
    out[0] = '\0';
    while ((e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, "MANIFEST-", 9)) path_join(out, n, dir, e->d_name);
    closedir(d);
    CHECK_MSG(out[0], "no MANIFEST in %s", dir);
}

/* Start offsets of the records of a RocksDB log file (a MANIFEST well under 32 KiB). */
static int record_starts(const char *path, long *starts, int max) {
    FILE *f = fopen(path, "rb");
    CHECK(f);
    unsigned char buf[32768];
    size_t len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    CHECK(len < sizeof(buf));
    int n = 0;
    for (size_t pos = 0; pos + 7 <= len && n < max;) {
        starts[n++] = (long)pos;
        pos += 7 + ((size_t)buf[pos + 4] | ((size_t)buf[pos + 5] << 8));
    }
    return n;
}

static void expect_corrupt(const char *dir, const char *what) {
    char err[ERR_SIZE] = "";
    char *before = fs_snapshot(dir);
    for (int i = 0; i < 2; i++) {  /* refusing twice changes nothing either */
        CHECK_MSG(store_open(dir, NULL, err, sizeof(err)) == NULL, "%s: opened", what);
        CHECK_CONTAINS(err, dir);
        CHECK_CONTAINS(err, "nothing was changed");
        CHECK_UNCHANGED(before, dir);
    }
    printf("%s: %s\n", what, err);
    free(before);
}

static void test_error_corrupt(void) {
    char dir[512], path[1024], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "bad-current");
    make_store_with_data(dir);
    path_join(path, sizeof(path), dir, "CURRENT");
    write_file(path, "garbage\n", 8);
    expect_corrupt(dir, "garbage CURRENT");
    write_file(path, "MANIFEST-00000", 14);  /* no newline */
    expect_corrupt(dir, "CURRENT without newline");
    write_file(path, "MANIFEST-999999\n", 16);  /* names a missing manifest */
    expect_corrupt(dir, "CURRENT naming a missing MANIFEST");
    CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, "is corrupt or unreadable");
    CHECK_CONTAINS(err, "MANIFEST-999999");

    /* MANIFEST cut: empty, header only, inside a middle record, inside the last record */
    for (int i = 0; i < 4; i++) {
        fresh_dir(dir, sizeof(dir), "bad-manifest");
        make_store_with_data(dir);
        find_manifest(dir, path, sizeof(path));
        long starts[256];
        int nrec = record_starts(path, starts, 256);
        CHECK(nrec >= 4);
        struct stat st;
        CHECK(stat(path, &st) == 0);
        long len = i == 0 ? 0 : i == 1 ? 7 : i == 2 ? starts[nrec / 2] + 3 : (long)st.st_size - 3;
        CHECK(truncate(path, (off_t)len) == 0);
        char what[64];
        snprintf(what, sizeof(what), "MANIFEST truncated to %ld of %lld bytes", len,
                 (long long)st.st_size);
        expect_corrupt(dir, what);
        CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
        CHECK_CONTAINS(err, "is corrupt");
        if (i >= 1) CHECK_CONTAINS(err, "ends in an incomplete record");
    }

    /* CURRENT lost: SSTs and WALs but no CURRENT is not taken for an empty directory */
    fresh_dir(dir, sizeof(dir), "no-current");
    make_store_with_data(dir);
    path_join(path, sizeof(path), dir, "CURRENT");
    CHECK(unlink(path) == 0);
    expect_corrupt(dir, "CURRENT missing");
    CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, "no CURRENT file");

    /* someone else's files */
    fresh_dir(dir, sizeof(dir), "foreign");
    CHECK(mkdir(dir, 0755) == 0);
    path_join(path, sizeof(path), dir, "notes.txt");
    write_file(path, "hello\n", 6);
    expect_corrupt(dir, "foreign directory");

    /* only what RocksDB leaves when it dies creating a database: created afresh */
    fresh_dir(dir, sizeof(dir), "leftovers");
    CHECK(mkdir(dir, 0755) == 0);
    path_join(path, sizeof(path), dir, "LOG");
    write_file(path, "log\n", 4);
    path_join(path, sizeof(path), dir, "LOCK");
    write_file(path, "", 0);
    store *s = open_ok(dir);
    CHECK_EQ_INT(store_created(s), 1);
    store_destroy(s);
}

static void test_error_unwritable(void) {
    char dir[512], file[512], err[ERR_SIZE] = "";
    fresh_dir(file, sizeof(file), "plainfile");
    write_file(file, "x", 1);
    path_join(dir, sizeof(dir), file, "store");  /* parent is a regular file */
    CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
    printf("under a file: %s\n", err);
    CHECK_CONTAINS(err, "cannot access store directory");
    CHECK_CONTAINS(err, dir);
    CHECK_CONTAINS(err, "Not a directory");
    CHECK(store_open(file, NULL, err, sizeof(err)) == NULL);  /* the path is a file */
    CHECK_CONTAINS(err, "is not a directory");
    CHECK_CONTAINS(err, file);
    fresh_dir(dir, sizeof(dir), "no-parent/store");
    CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, "No such file or directory");
    CHECK_CONTAINS(err, "parent directory exists");

    if (geteuid() == 0) {
        printf("running as root: permission checks (read-only directory) skipped\n");
        return;
    }
    fresh_dir(dir, sizeof(dir), "readonly");
    make_store_with_data(dir);
    CHECK(chmod(dir, 0555) == 0);
    char *before = fs_snapshot(dir);
    CHECK(store_open(dir, NULL, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, "is not writable");
    CHECK_CONTAINS(err, dir);
    CHECK_UNCHANGED(before, dir);
    free(before);
    char sub[600];
    path_join(sub, sizeof(sub), dir, "sub");
    CHECK(store_open(sub, NULL, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, "Permission denied");
    CHECK(chmod(dir, 0755) == 0);
}

/* ---- the caller's check at open ---- */

static int check_calls;

/* Accepts meta "who" == "me" or absent; refuses anything else. */
static int check_who(void *opaque, const void *val, size_t vlen, char *errstr, size_t n) {
    check_calls++;
    CHECK(opaque == &check_calls);
    if (!val || (vlen == 2 && memcmp(val, "me", 2) == 0)) return 0;
    snprintf(errstr, n, "refused: who is %.*s", (int)vlen, (const char *)val);
    return -1;
}

static void test_check_refuses(void) {
    char dir[512], err[ERR_SIZE] = "";
    fresh_dir(dir, sizeof(dir), "check");
    store_opts o;
    store_opts_default(&o);
    o.check_key = "who";
    o.check = check_who;
    o.check_opaque = &check_calls;
    store *s = store_open(dir, &o, err, sizeof(err));   /* new: nothing to check */
    CHECK_MSG(s, "%s", err);
    CHECK_EQ_INT(check_calls, 0);
    store_batch *b = store_batch_new(s);
    CHECK(store_batch_put(b, STORE_META, "who", 3, "you", 3) == 0);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    store_destroy(s);   /* the record only in the WAL: a writable open would replay it */
    char *before = fs_snapshot(dir);
    for (int i = 0; i < 2; i++) {
        CHECK(store_open(dir, &o, err, sizeof(err)) == NULL);
        CHECK_CONTAINS(err, "refused: who is you");
        CHECK_UNCHANGED(before, dir);   /* no MANIFEST, OPTIONS, CURRENT or LOG written */
    }
    CHECK_EQ_INT(check_calls, 2);
    free(before);
    s = store_open(dir, NULL, err, sizeof(err));   /* without the check it opens */
    CHECK_MSG(s, "%s", err);
    b = store_batch_new(s);
    CHECK(store_batch_put(b, STORE_META, "who", 3, "me", 2) == 0);
    commit_ok(s, b, 1);
    store_batch_destroy(b);
    store_destroy(s);
    s = store_open(dir, &o, err, sizeof(err));
    CHECK_MSG(s, "%s", err);
    CHECK_EQ_INT(check_calls, 3);
    store_destroy(s);
}

/* ---- a full disk (--disk-full) ---- */

/* Commit 16 x 4 KiB rows (incompressible) numbered from seq*16 until a commit fails.
 * Returns the number of batches committed; err gets the failure. */
static int fill(store *s, char *err, size_t n) {
    static unsigned char v[4096];
    uint64_t x = 88172645463325252ull;
    store_batch *b = store_batch_new(s);
    int seq = 0;
    for (;; seq++) {
        CHECK_MSG(seq < 100000, "the disk never filled");
        for (int j = 0; j < 16; j++) {
            for (size_t k = 0; k < sizeof(v); k += 8) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                memcpy(v + k, &x, 8);
            }
            memcpy(v, &seq, sizeof seq);
            CHECK(store_batch_put_u64(b, STORE_EMB, (uint64_t)seq * 16 + (uint64_t)j, v,
                                      sizeof(v)) == 0);
        }
        if (store_commit(s, b, 1, err, n) != 0) break;
    }
    /* the same batch again: refused without reaching RocksDB (which aborted on it) */
    char again[ERR_SIZE];
    CHECK(store_commit(s, b, 1, again, sizeof(again)) == -1);
    CHECK_CONTAINS(again, "writes nothing more");
    store_batch_destroy(b);
    return seq;
}

static void full_cb(void *opaque, size_t i, const void *val, size_t vlen) {
    int *found = opaque;
    if (!val) return;
    int seq;
    CHECK(vlen == 4096);
    memcpy(&seq, val, sizeof seq);
    CHECK_EQ_INT(seq, (int)(i / 16));
    (*found)++;
}

/* Batches 0..n-1 are whole in dir and batch n is absent. */
static void check_filled(const char *dir, int n) {
    store *s = open_ok(dir);
    uint64_t *keys = malloc(sizeof *keys * (size_t)(n + 1) * 16);
    CHECK(keys);
    for (int i = 0; i < (n + 1) * 16; i++) keys[i] = (uint64_t)i;
    int found = 0;
    char err[ERR_SIZE];
    CHECK_MSG(store_multi_get_u64(s, STORE_EMB, keys, (size_t)(n + 1) * 16, full_cb, &found, err,
                                  sizeof(err)) >= 0, "%s", err);
    CHECK_EQ_INT(found, n * 16);
    free(keys);
    store_destroy(s);
}

static int disk_full_main(void) {
    char mnt[600], dir[700], err[ERR_SIZE] = "";
    snprintf(mnt, sizeof(mnt), "%s/test_store_full.%d", M3_BINARY_DIR, (int)getpid());
    rm_rf(mnt);
    CHECK(mkdir(mnt, 0755) == 0);
    /* memtables of 64 MB: the WAL fills the disk; of 1 MB: a flush to an SST does */
    int buffers[2] = {64, 1};
    for (int v = 0; v < 2; v++) {
        if (fs_private_tmpfs(mnt, "6m", err, sizeof(err)) != 0) {
            printf("SKIP: a full disk is made with a 6 MB tmpfs: %s\n", err);
            rm_rf(mnt);
            return 77;
        }
        path_join(dir, sizeof(dir), mnt, "store");
        store_opts o;
        store_opts_default(&o);
        o.write_buffer_mb = buffers[v];
        o.block_cache_mb = 1;
        store *s = store_open(dir, &o, err, sizeof(err));
        CHECK_MSG(s, "%s", err);
        int n = fill(s, err, sizeof(err));
        printf("write buffer %d MB: %d batches, then: %s\n", buffers[v], n, err);
        CHECK(n > 0);
        CHECK_CONTAINS(err, "store.dir ");
        CHECK_CONTAINS(err, dir);
        CHECK_CONTAINS(err, "No space left on device: free space and restart");
        CHECK_EQ_INT(store_broken(s, NULL, 0), 1);
        CHECK_EQ_INT(store_close(s, 1, err, sizeof(err)), 0);   /* writes nothing */
        /* space again: everything committed is there, the failed batch is not */
        fs_tmpfs_resize(mnt, "64m");
        check_filled(dir, n);
        CHECK(umount(mnt) == 0);
    }
    rm_rf(mnt);
    printf("test_store --disk-full: all checks passed\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--child")) return child_main(argv[2], argv[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && !strcmp(argv[1], "--disk-full")) return disk_full_main();
    /* TEST_STORE_TMP: a scratch parent for runs as another user (the permission checks
     * need a non-root user and a directory it may write) */
    const char *tmp = getenv("TEST_STORE_TMP");
    snprintf(g_base, sizeof(g_base), "%s/test_store.d", tmp ? tmp : M3_BINARY_DIR);
    rm_rf(g_base);
    CHECK(mkdir(g_base, 0755) == 0);

    test_keys_and_defaults();
    test_create_and_families();
    test_put_get_multiget();
    test_atomic_reopen();
    test_crash();
    test_torn_wal();
    test_offsets();
    test_iteration_order();
    test_large_value();
    test_error_locked();
    test_error_format();
    test_error_corrupt();
    test_error_unwritable();
    test_check_refuses();

    rm_rf(g_base);
    printf("test_store: all checks passed\n");
    return 0;
}
