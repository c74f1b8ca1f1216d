/* m3rec-storebench - benchmark of the state store (common/state/store.h) on the worker's workload.
 *
 * Usage: m3rec-storebench [--dir DIR] [--rows N] [--batch ROWS] [--calls N] [--keys K]
 *                         [--sync 0|1] [--compression 0|1] [--block-cache-mb MB]
 *                         [--bloom-bits B] [--dense-kb KB] [--seed S] [--keep]
 *
 * 1. write: N embedding rows (random u64 ids; 16 floats + 16 floats of optimizer state =
 *    128 bytes) in checkpoint batches of ROWS rows, each with the input offsets and
 *    optionally a dense blob of KB kilobytes, committed with sync;
 * 2. read: `calls` random multi-gets of K keys (all present, all absent, half and half);
 * 3. close and reopen: after a flushing close, and after a close without flush (the WAL
 *    is replayed, as after a crash); then the same reads on the reopened store;
 * 4. bytes on disk per row;
 * 5. the RocksDB multi-get APIs side by side on the same files (read-only open):
 *    rocksdb_batched_multi_get_cf (what the store uses), rocksdb_multi_get_cf, and K
 *    separate rocksdb_get_cf calls, interleaved call by call, each on its own random keys.
 * Reads hit the OS page cache (the files were just written); the numbers are CPU and
 * RocksDB costs, not disk latency. Each read line gives wall-clock latency per call (mean,
 * p50, p99) and the calling thread's CPU time per key, which other processes on a shared
 * machine disturb much less than wall time. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <rocksdb/c.h>

#include "base/clock.h"
#include "base/hash.h"
#include "state/store.h"

#define ROW_FLOATS 32 /* 16 embedding + 16 optimizer state */

static void usage(void) {
    fprintf(stderr,
            "usage: m3rec-storebench [--dir DIR] [--rows N] [--batch ROWS] [--calls N] [--keys K]\n"
            "                        [--sync 0|1] [--compression 0|1] [--block-cache-mb MB]\n"
            "                        [--bloom-bits B] [--dense-kb KB] [--seed S] [--keep]\n");
}

static void die(const char *what, const char *err) {
    fprintf(stderr, "m3rec-storebench: %s: %s\n", what, err);
    exit(1);
}

static uint64_t rng_state;
static uint64_t rng_next(void) {  /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static float rng_normal(void) {  /* Irwin-Hall approximation: enough for test data */
    float s = 0;
    for (int i = 0; i < 4; i++) s += (float)(rng_next() >> 40) / (float)(1 << 24);
    return (s - 2.0f) * 1.7320508f;
}

/* A trained-looking row: embedding ~ N(0, 0.05), Adagrad-style accumulators > 0. */
static void make_row(float *row) {
    for (int j = 0; j < 16; j++) row[j] = 0.05f * rng_normal();
    for (int j = 16; j < 32; j++) row[j] = 0.1f + fabsf(rng_normal());
}

static void rm_rf(const char *path) {
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(path);
}

/* Bytes of all files in dir, and of the SST files alone. */
static void disk_usage(const char *dir, long long *all, long long *sst) {
    *all = *sst = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        *all += st.st_size;
        size_t n = strlen(e->d_name);
        if (n > 4 && !strcmp(e->d_name + n - 4, ".sst")) *sst += st.st_size;
    }
    closedir(d);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_latency(const char *label, double *us, int n, double cpu_total_s, long found,
                          int keys) {
    qsort(us, (size_t)n, sizeof(double), cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += us[i];
    printf("  %-30s wall mean %6.0f us  p50 %6.0f  p99 %6.0f | cpu %5.2f us/key | found %.2f\n",
           label, sum / n, us[n / 2], us[(int)(n * 0.99)], cpu_total_s * 1e6 / n / keys,
           (double)found / n / keys);
}

typedef struct { long found; } count_ctx;
static void count_cb(void *opaque, size_t i, const void *val, size_t vlen) {
    (void)i;
    if (val && vlen == ROW_FLOATS * sizeof(float)) ((count_ctx *)opaque)->found++;
}

/* Fill keys with K ids: present ones sampled from ids[], absent ones fresh random. */
static void pick_keys(uint64_t *keys, int k, const uint64_t *ids, long n_ids, double present) {
    for (int i = 0; i < k; i++) {
        double u = hash_unit(rng_next());
        keys[i] = u < present ? ids[rng_next() % (uint64_t)n_ids] : rng_next();
    }
}

static void bench_reads(store *s, const uint64_t *ids, long n_ids, int calls, int k,
                        const char *when) {
    static const struct { const char *name; double present; } mixes[] = {
        {"all present", 1.0}, {"all absent", 0.0}, {"half present", 0.5}};
    uint64_t *keys = malloc(sizeof(uint64_t) * (size_t)k);
    double *us = malloc(sizeof(double) * (size_t)calls);
    char err[1024];
    printf("multi-get of %d keys, %d calls each (%s):\n", k, calls, when);
    for (size_t m = 0; m < sizeof(mixes) / sizeof(mixes[0]); m++) {
        count_ctx c = {0};
        double cpu = 0;
        for (int i = 0; i < calls; i++) {
            pick_keys(keys, k, ids, n_ids, mixes[m].present);
            double t0 = clk_mono_s(), c0 = clk_thread_cpu_s();
            if (store_multi_get_u64(s, STORE_EMB, keys, (size_t)k, count_cb, &c, err, sizeof(err)) < 0)
                die("multi-get", err);
            cpu += clk_thread_cpu_s() - c0;
            us[i] = (clk_mono_s() - t0) * 1e6;
        }
        print_latency(mixes[m].name, us, calls, cpu, c.found, k);
    }
    free(keys);
    free(us);
}

/* The three RocksDB read APIs on the same files, opened read-only with the store's
 * cache size and filter. */
static void compare_apis(const char *dir, const uint64_t *ids, long n_ids, int calls, int k,
                         const store_opts *so) {
    static const char *names[] = {"default", "emb", "user", "pending", "meta"};
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_cache_t *cache = rocksdb_cache_create_lru((size_t)(so->block_cache_mb > 0 ? so->block_cache_mb : 1) << 20);
    rocksdb_block_based_options_set_block_cache(t, cache);
    if (so->bloom_bits > 0)
        rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(so->bloom_bits));
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_options_set_max_open_files(o, -1);
    const rocksdb_options_t *co[5] = {o, o, o, o, o};
    rocksdb_column_family_handle_t *h[5];
    char *err = NULL;
    rocksdb_t *db = rocksdb_open_for_read_only_column_families(o, dir, 5, names, co, h, 0, &err);
    if (!db) die("read-only open for the API comparison", err);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    unsigned char (*kb)[8] = malloc((size_t)k * 8);
    const char **kp = malloc(sizeof(char *) * (size_t)k);
    size_t *ks = malloc(sizeof(size_t) * (size_t)k), *vs = malloc(sizeof(size_t) * (size_t)k);
    char **vals = malloc(sizeof(char *) * (size_t)k), **errs = malloc(sizeof(char *) * (size_t)k);
    rocksdb_pinnableslice_t **ps = malloc(sizeof(void *) * (size_t)k);
    const rocksdb_column_family_handle_t **cfs = malloc(sizeof(void *) * (size_t)k);
    uint64_t *keys = malloc(sizeof(uint64_t) * (size_t)k);
    double *us[3];
    for (int api = 0; api < 3; api++) us[api] = malloc(sizeof(double) * (size_t)calls);
    double cpu[3] = {0, 0, 0};
    long found[3] = {0, 0, 0};
    static const char *labels[] = {"rocksdb_batched_multi_get_cf", "rocksdb_multi_get_cf",
                                   "rocksdb_get_cf x K"};
    printf("RocksDB read APIs, half present, %d keys, %d calls each, interleaved "
           "(read-only open):\n", k, calls);
    for (int i = 0; i < calls; i++) {
        for (int r = 0; r < 3; r++) {
            int api = (i + r) % 3;  /* rotate the order: load drifts affect all three alike */
            pick_keys(keys, k, ids, n_ids, 0.5);  /* own keys: no API warms the cache for another */
            for (int j = 0; j < k; j++) {
                store_key_from_u64(kb[j], keys[j]);
                kp[j] = (const char *)kb[j];
                ks[j] = 8;
                cfs[j] = h[1];
            }
            double t0 = clk_mono_s(), c0 = clk_thread_cpu_s();
            if (api == 0) {
                rocksdb_batched_multi_get_cf(db, ro, h[1], (size_t)k, kp, ks, ps, errs, false);
                for (int j = 0; j < k; j++) {
                    if (errs[j]) die("batched multi-get", errs[j]);
                    if (ps[j]) { found[api]++; rocksdb_pinnableslice_destroy(ps[j]); }
                }
            } else if (api == 1) {
                rocksdb_multi_get_cf(db, ro, cfs, (size_t)k, kp, ks, vals, vs, errs);
                for (int j = 0; j < k; j++) {
                    if (errs[j]) die("multi-get", errs[j]);
                    if (vals[j]) { found[api]++; free(vals[j]); }
                }
            } else {
                for (int j = 0; j < k; j++) {
                    size_t vl;
                    char *v = rocksdb_get_cf(db, ro, h[1], kp[j], 8, &vl, &err);
                    if (err) die("get", err);
                    if (v) { found[api]++; free(v); }
                }
            }
            cpu[api] += clk_thread_cpu_s() - c0;
            us[api][i] = (clk_mono_s() - t0) * 1e6;
        }
    }
    for (int api = 0; api < 3; api++) {
        print_latency(labels[api], us[api], calls, cpu[api], found[api], k);
        free(us[api]);
    }
    free(kb); free(kp); free(ks); free(vs); free(vals); free(errs); free(ps); free(cfs);
    free(keys);
    rocksdb_readoptions_destroy(ro);
    for (int i = 0; i < 5; i++) rocksdb_column_family_handle_destroy(h[i]);
    rocksdb_close(db);
    rocksdb_block_based_options_destroy(t);
    rocksdb_cache_destroy(cache);
    rocksdb_options_destroy(o);
}

/* The command line. */
typedef struct {
    const char *dir;
    long rows, batch, seed;
    int calls, k, sync, dense_kb, keep;
    store_opts so;
} bench_args;

/* Parse argv into a; 0, or -1 on a bad argument (after the usage). */
static int parse_args(bench_args *a, int argc, char **argv) {
    *a = (bench_args){.dir = "/tmp/m3rec-storebench", .rows = 1000000, .batch = 20000,
                      .seed = 1, .calls = 2000, .k = 256, .sync = 1};
    store_opts_default(&a->so);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--keep")) { a->keep = 1; continue; }
        if (!v) { usage(); return -1; }
        i++;
        if (!strcmp(o, "--dir")) a->dir = v;
        else if (!strcmp(o, "--rows")) a->rows = atol(v);
        else if (!strcmp(o, "--batch")) a->batch = atol(v);
        else if (!strcmp(o, "--calls")) a->calls = atoi(v);
        else if (!strcmp(o, "--keys")) a->k = atoi(v);
        else if (!strcmp(o, "--sync")) a->sync = atoi(v);
        else if (!strcmp(o, "--compression")) a->so.compression = atoi(v);
        else if (!strcmp(o, "--block-cache-mb")) a->so.block_cache_mb = atoi(v);
        else if (!strcmp(o, "--bloom-bits")) a->so.bloom_bits = atoi(v);
        else if (!strcmp(o, "--dense-kb")) a->dense_kb = atoi(v);
        else if (!strcmp(o, "--seed")) a->seed = atol(v);
        else { usage(); return -1; }
    }
    if (a->rows < 1 || a->batch < 1 || a->calls < 1 || a->k < 1 || a->dense_kb < 0) {
        usage();
        return -1;
    }
    return 0;
}

/* Remove a previous run's store at dir; refuse anything else there. */
static void clear_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) return;
    char current[4096];
    snprintf(current, sizeof(current), "%s/CURRENT", dir);
    if (access(current, F_OK) == 0) rm_rf(dir);           /* a store: a previous run's */
    else if (rmdir(dir) != 0) die(dir, "exists and is not a store: refusing to delete it");
}

/* 1. write: rows random ids (into ids[]) in checkpoint batches, each with the offsets and
 * the dense blob, committed as the worker's checkpoint does. */
static void bench_write(store *s, const bench_args *a, uint64_t *ids) {
    char err[1024];
    unsigned char *dense = a->dense_kb ? calloc((size_t)a->dense_kb, 1024) : NULL;
    store_batch *b = store_batch_new(s);
    if (!b || (a->dense_kb && !dense)) die("setup", "out of memory");
    float row[ROW_FLOATS];
    double t0 = clk_mono_s(), cpu0 = clk_thread_cpu_s(), commit_s = 0, commit_max = 0;
    long n_batches = 0;
    for (long r = 0; r < a->rows; r++) {
        ids[r] = rng_next();
        make_row(row);
        store_batch_put_u64(b, STORE_EMB, ids[r], row, sizeof(row));
        if ((r + 1) % a->batch != 0 && r + 1 != a->rows) continue;
        store_put_offset(b, "m3.events.feed", 0, r + 1);
        if (dense) store_batch_put(b, STORE_META, STORE_KEY_DENSE, strlen(STORE_KEY_DENSE),
                                  dense, (size_t)a->dense_kb * 1024);
        double c0 = clk_mono_s();
        if (store_commit(s, b, a->sync, err, sizeof(err)) != 0) die("commit", err);
        double dt = clk_mono_s() - c0;
        commit_s += dt;
        if (dt > commit_max) commit_max = dt;
        n_batches++;
    }
    double wall = clk_mono_s() - t0, cpu_write = clk_thread_cpu_s() - cpu0;
    store_stats stats;
    store_stats_get(s, &stats);
    printf("write: %ld rows in %ld batches of %ld (sync=%d%s): %.2f s, %.0f rows/s, "
           "%.1f MB/s of batches; commit mean %.1f ms, max %.1f ms; writer thread cpu "
           "%.2f us/row (incl. making rows)\n",
           a->rows, n_batches, a->batch, a->sync, dense ? ", with dense blob" : "", wall,
           a->rows / wall, stats.bytes_written / wall / 1e6, commit_s / n_batches * 1e3,
           commit_max * 1e3, cpu_write * 1e6 / a->rows);
    store_batch_destroy(b);
    free(dense);
}

/* 3-4. Close with flush, bytes on disk, reopen and read again (cold, then warm cache).
 * Returns the reopened store. */
static store *bench_reopen(store *s, const bench_args *a, const uint64_t *ids) {
    char err[1024];
    double t0 = clk_mono_s();
    if (store_close(s, 1, err, sizeof(err)) != 0) die("close", err);
    printf("close with flush: %.3f s\n", clk_mono_s() - t0);
    long long all, sst;
    disk_usage(a->dir, &all, &sst);
    printf("disk: %.1f MB in all files, %.1f MB of SST: %.1f bytes/row (SST %.1f; raw key+value %d)\n",
           all / 1e6, sst / 1e6, (double)all / a->rows, (double)sst / a->rows,
           8 + ROW_FLOATS * (int)sizeof(float));
    t0 = clk_mono_s();
    s = store_open(a->dir, &a->so, err, sizeof(err));
    if (!s) die("reopen", err);
    printf("reopen after flushing close (%ld rows): %.3f s\n", a->rows, clk_mono_s() - t0);
    uint64_t v = 0;
    store_property(s, STORE_EMB, "rocksdb.estimate-num-keys", &v);
    printf("  estimate-num-keys(emb) %llu\n", (unsigned long long)v);
    bench_reads(s, ids, a->rows, a->calls, a->k, "reopened, block cache cold, OS page cache warm");
    bench_reads(s, ids, a->rows, a->calls, a->k, "second pass, block cache warm");
    uint64_t readers = 0, cache_use = 0;
    store_property(s, STORE_EMB, "rocksdb.estimate-table-readers-mem", &readers);
    store_property(s, STORE_EMB, "rocksdb.block-cache-usage", &cache_use);
    printf("memory: SST index+filter (table readers) of emb %.1f MB (%.1f bytes/row), block cache "
           "in use %.1f MB\n", readers / 1e6, (double)readers / a->rows, cache_use / 1e6);
    return s;
}

/* The same after a close without flush: the last rows are replayed from the WAL. Closes s. */
static void bench_wal_replay(store *s, const bench_args *a, const uint64_t *ids) {
    char err[1024];
    float row[ROW_FLOATS];
    store_batch *b = store_batch_new(s);
    if (!b) die("setup", "out of memory");
    long extra = a->batch * 5 < a->rows ? a->batch * 5 : a->rows;
    for (long r = 0; r < extra; r++) {
        make_row(row);
        store_batch_put_u64(b, STORE_EMB, ids[r], row, sizeof(row));
        if ((r + 1) % a->batch == 0 || r + 1 == extra)
            if (store_commit(s, b, a->sync, err, sizeof(err)) != 0) die("commit", err);
    }
    store_batch_destroy(b);
    store_destroy(s);
    double t0 = clk_mono_s();
    s = store_open(a->dir, &a->so, err, sizeof(err));
    if (!s) die("reopen", err);
    printf("reopen after close without flush (WAL of %ld rewritten rows replayed): %.3f s\n",
           extra, clk_mono_s() - t0);
    store_destroy(s);
}

int main(int argc, char **argv) {
    bench_args a;
    if (parse_args(&a, argc, argv) != 0) return 2;
    rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)a.seed;
    clear_dir(a.dir);
    char err[1024];
    store *s = store_open(a.dir, &a.so, err, sizeof(err));
    if (!s) die("open", err);
    printf("store %s: compression %s, block cache %d MB, write buffer %d MB, bloom %d bits, "
           "max_open_files %d\n", a.dir, store_compression(s), a.so.block_cache_mb,
           a.so.write_buffer_mb, a.so.bloom_bits, a.so.max_open_files);
    uint64_t *ids = malloc(sizeof(uint64_t) * (size_t)a.rows);
    if (!ids) die("setup", "out of memory");
    bench_write(s, &a, ids);
    /* 2. reads on the store as written (memtable + fresh L0/L1 files) */
    bench_reads(s, ids, a.rows, a.calls, a.k, "just written");
    s = bench_reopen(s, &a, ids);
    bench_wal_replay(s, &a, ids);
    /* 5. the APIs */
    compare_apis(a.dir, ids, a.rows, a.calls, a.k, &a.so);
    if (!a.keep) rm_rf(a.dir);
    free(ids);
    return 0;
}
