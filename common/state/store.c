/* store.c - the durable state store over RocksDB's C API (see store.h, docs/store.md). */
#include "state/store.h"
#include "base/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <rocksdb/c.h>

#define STORE__ERR_MAX 1024
#define STORE__NAMES (STORE_N_CF + 1) /* RocksDB's "default" first, then ours */

/* Index 0 is RocksDB's default family (must be opened, never used); store_cf c is c + 1. */
static const char *const store__names[STORE__NAMES] = {"default", "emb", "user", "pending", "meta"};

struct store {
    rocksdb_t *db;
    rocksdb_column_family_handle_t *cf[STORE__NAMES];
    rocksdb_cache_t *cache;            /* NULL when block_cache_mb is 0 */
    rocksdb_readoptions_t *ro;         /* point lookups */
    rocksdb_readoptions_t *ro_scan;    /* iteration: does not fill the block cache */
    rocksdb_writeoptions_t *wo_sync;
    rocksdb_writeoptions_t *wo_nosync;
    rocksdb_flushoptions_t *fo_async;  /* flush without waiting */
    uint64_t max_wal_bytes;            /* committed bytes between eager flushes */
    _Atomic uint64_t unflushed;        /* committed since the last eager flush */
    char *dir;
    const char *compression;
    int created;
    _Atomic int broken;                /* a write failed: nothing more is written */
    char broken_err[STORE__ERR_MAX];   /* its message, set before broken */
    pthread_mutex_t broken_mu;
    dev_t dev;                         /* identity of dir in the open-store registry */
    ino_t ino;
    _Atomic uint64_t n_batches, n_ops, n_bytes, n_gets, n_multi_gets, n_keys, n_found, n_missing;
};

struct store_batch {
    store *s;
    rocksdb_writebatch_t *wb;
};

void store_opts_default(store_opts *o) {
    o->block_cache_mb = 128;
    o->write_buffer_mb = 64;
    o->max_wal_mb = 32;
    o->compression = 1;
    o->bloom_bits = 10;
    o->max_open_files = -1;
    o->check_key = NULL;
    o->check = NULL;
    o->check_opaque = NULL;
}

const char *store_cf_name(store_cf cf) {
    return (cf >= 0 && cf < STORE_N_CF) ? store__names[cf + 1] : NULL;
}

void store_key_from_u64(unsigned char out[8], uint64_t id) {
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(id & 0xff);
        id >>= 8;
    }
}

uint64_t store_key_to_u64(const void *key8) {
    const unsigned char *p = key8;
    uint64_t id = 0;
    for (int i = 0; i < 8; i++) id = (id << 8) | p[i];
    return id;
}

/* ---- compression: what this RocksDB build links, probed once on an in-memory env ---- */

static pthread_once_t store__comp_once = PTHREAD_ONCE_INIT;
static int store__comp_type = rocksdb_no_compression;
static const char *store__comp_name = "none";

/* RocksDB refuses at open a compression it was built without ("... is not linked with
 * the binary"), so opening a throwaway database in a memory env tells, touching no disk. */
static void store__probe_compression(void) {
    static const struct { int type; const char *name; } order[] = {
        {rocksdb_lz4_compression, "lz4"}, {rocksdb_snappy_compression, "snappy"}};
    rocksdb_env_t *env = rocksdb_create_mem_env();
    if (!env) return;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        rocksdb_options_t *o = rocksdb_options_create();
        char path[64], *err = NULL;
        snprintf(path, sizeof(path), "/m3rec-probe-%s", order[i].name);
        rocksdb_options_set_env(o, env);
        rocksdb_options_set_create_if_missing(o, 1);
        rocksdb_options_set_compression(o, order[i].type);
        rocksdb_t *db = rocksdb_open(o, path, &err);
        rocksdb_options_destroy(o);
        if (db) {
            rocksdb_close(db);
            store__comp_type = order[i].type;
            store__comp_name = order[i].name;
            break;
        }
        free(err);
    }
    rocksdb_env_destroy(env);
}

/* ---- directories open in this process ----
 * RocksDB's own check for a second open in the same process (and its LOCK file across
 * processes) runs only after it has rotated the info LOG of the directory, i.e. of the
 * worker that holds it. These checks refuse before RocksDB touches anything. */

typedef struct store__open_dir {
    dev_t dev;
    ino_t ino;
    pid_t pid;                         /* the process that opened it (differs after fork) */
    struct store__open_dir *next;
} store__open_dir;

static pthread_mutex_t store__reg_mu = PTHREAD_MUTEX_INITIALIZER;
static store__open_dir *store__reg;

/* Register dev/ino. Returns 0 when added, 1 when already open (*holder: its pid), -1 on OOM. */
static int store__reg_add(dev_t dev, ino_t ino, pid_t *holder) {
    int rc = 0;
    pthread_mutex_lock(&store__reg_mu);
    for (store__open_dir *e = store__reg; e; e = e->next)
        if (e->dev == dev && e->ino == ino) {
            *holder = e->pid;
            rc = 1;
            break;
        }
    if (rc == 0) {
        store__open_dir *e = malloc(sizeof(*e));
        if (!e) {
            rc = -1;
        } else {
            e->dev = dev;
            e->ino = ino;
            e->pid = getpid();
            e->next = store__reg;
            store__reg = e;
        }
    }
    pthread_mutex_unlock(&store__reg_mu);
    return rc;
}

static void store__reg_remove(dev_t dev, ino_t ino) {
    pthread_mutex_lock(&store__reg_mu);
    for (store__open_dir **pp = &store__reg; *pp; pp = &(*pp)->next)
        if ((*pp)->dev == dev && (*pp)->ino == ino) {
            store__open_dir *e = *pp;
            *pp = e->next;
            free(e);
            break;
        }
    pthread_mutex_unlock(&store__reg_mu);
}

/* The pid holding RocksDB's lock (an fcntl write lock on <dir>/LOCK), 0 when none or
 * no LOCK file, -1 when held by an unknown process. Only called when this process does
 * not hold the lock itself: closing any descriptor of a file drops the process's fcntl
 * locks on it, which would silently unlock a store this process has open. */
static pid_t store__lock_holder(const char *dir) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/LOCK", dir) >= (int)sizeof(path)) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    pid_t holder = 0;
    if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) holder = fl.l_pid > 0 ? fl.l_pid : -1;
    close(fd);
    return holder;
}

static void store__err_locked(char *errstr, size_t n, const char *dir, pid_t holder) {
    char who[64] = "";
    if (holder > 0) snprintf(who, sizeof(who), " (pid %ld)", (long)holder);
    err_set(errstr, n,
               "store directory %s is locked by another process%s: another m3rec worker may "
               "be using it; stop that worker or give this one its own store directory",
               dir, who);
}

/* ---- what is in the directory ---- */

enum { STORE__DIR_EMPTY, STORE__DIR_LEFTOVERS, STORE__DIR_DB, STORE__DIR_FOREIGN };

/* Files RocksDB writes while creating a database before CURRENT exists: a crash on the
 * very first start leaves only these, and there is no data in them to lose. */
static int store__creation_leftover(const char *name) {
    size_t len = strlen(name);
    return strcmp(name, "LOCK") == 0 || strcmp(name, "IDENTITY") == 0 ||
           strcmp(name, "LOG") == 0 || strncmp(name, "LOG.old.", 8) == 0 ||
           strncmp(name, "MANIFEST-", 9) == 0 || strncmp(name, "OPTIONS-", 8) == 0 ||
           (len > 6 && strcmp(name + len - 6, ".dbtmp") == 0);
}

/* Classify dir: empty, only creation leftovers, a database (has CURRENT), or foreign
 * files without CURRENT (*example: one of them). -1 with errno when unreadable. */
static int store__classify(const char *dir, char *example, size_t example_size) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int has_current = 0, has_leftovers = 0, has_foreign = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (strcmp(e->d_name, "CURRENT") == 0) {
            has_current = 1;
        } else if (store__creation_leftover(e->d_name)) {
            has_leftovers = 1;
        } else if (!has_foreign) {
            has_foreign = 1;
            snprintf(example, example_size, "%s", e->d_name);
        }
    }
    closedir(d);
    if (has_current) return STORE__DIR_DB;
    if (has_foreign) return STORE__DIR_FOREIGN;
    return has_leftovers ? STORE__DIR_LEFTOVERS : STORE__DIR_EMPTY;
}

/* ---- the MANIFEST's tail ----
 * RocksDB reads its MANIFEST (a log of version edits) tolerating an incomplete last
 * record, as a crash mid-append would leave it. But a MANIFEST cut short by truncation
 * loses complete edits too, and RocksDB then recovers an older version silently and, on a
 * writable open, deletes the newer SST files as obsolete (measured: half a MANIFEST opens
 * "fine" without the data of a flushed family). The log framing shows a cut that is not
 * on a record boundary: 32 KiB blocks of records with a 7-byte header (crc32c:4,
 * length:2 little-endian, type:1; types FULL 1, FIRST 2, MIDDLE 3, LAST 4); fewer than 7
 * bytes left in a block are zero padding. */

#define STORE__LOG_BLOCK 32768
#define STORE__LOG_HEADER 7

/* Returns 1 when the MANIFEST named by CURRENT ends inside a record (*at, *size: where,
 * of how many bytes; name: its file name), 0 otherwise, including whenever something
 * else is wrong with it: RocksDB's own checks report those. */
static int store__manifest_torn(const char *dir, char *name, size_t name_size, long long *at,
                                long long *size) {
    char path[PATH_MAX], cur[128];
    snprintf(path, sizeof(path), "%s/CURRENT", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(cur, 1, sizeof(cur) - 1, f);
    fclose(f);
    cur[n] = '\0';
    if (n < 10 || strncmp(cur, "MANIFEST-", 9) != 0 || cur[n - 1] != '\n') return 0;
    cur[n - 1] = '\0';
    if (strchr(cur, '/') || strchr(cur, '\n')) return 0;
    snprintf(name, name_size, "%s", cur);
    snprintf(path, sizeof(path), "%s/%s", dir, cur);
    if (!(f = fopen(path, "rb"))) return 0;
    unsigned char *block = malloc(STORE__LOG_BLOCK);
    if (!block) {
        fclose(f);
        return 0;
    }
    long long base = 0;
    int torn = 0, in_fragments = 0, done = 0;
    while (!done && !torn) {
        size_t len = fread(block, 1, STORE__LOG_BLOCK, f);
        size_t pos = 0;
        if (len == 0) break;
        while (pos + STORE__LOG_HEADER <= len) {
            const unsigned char *h = block + pos;
            size_t rlen = (size_t)h[4] | ((size_t)h[5] << 8);
            int type = h[6];
            if (type == 0 && rlen == 0) {  /* preallocated zeros: the end of the data */
                done = 1;
                break;
            }
            if (pos + STORE__LOG_HEADER + rlen > len) {
                if (len < STORE__LOG_BLOCK) {  /* the record runs past the end of the file */
                    torn = 1;
                    *at = base + (long long)pos;
                } else {
                    done = 1;                  /* crosses a block: RocksDB reports it */
                }
                break;
            }
            if (type == 2) in_fragments = 1;
            else if (type == 1 || type == 4) in_fragments = 0;
            else if (type != 3) { done = 1; break; }  /* not this framing: RocksDB judges */
            pos += STORE__LOG_HEADER + rlen;
        }
        if (!done && !torn && len < STORE__LOG_BLOCK) {  /* the last, partial block */
            for (size_t i = pos; i < len; i++)
                if (block[i] != 0) {  /* a header cut short */
                    torn = 1;
                    *at = base + (long long)pos;
                    break;
                }
            done = 1;
        }
        base += (long long)len;
    }
    if (!torn && in_fragments) {  /* the last record's final fragment is missing */
        torn = 1;
        *at = base;
    }
    struct stat st;
    *size = fstat(fileno(f), &st) == 0 ? (long long)st.st_size : base;
    fclose(f);
    free(block);
    return torn;
}

/* ---- RocksDB options ---- */

/* One options object for the database and all five families. Writes arrive in large
 * checkpoint batches, reads are batched point lookups of random u64 keys (many of them
 * absent: new ids), so: full Bloom filters, a hash index inside data blocks, no prefix
 * extractor, all SSTs open, and two background jobs (one core trains). */
static rocksdb_options_t *store__options(const store_opts *o, rocksdb_cache_t *cache,
                                         int compression) {
    rocksdb_options_t *opt = rocksdb_options_create();
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    if (cache) rocksdb_block_based_options_set_block_cache(t, cache);
    else rocksdb_block_based_options_set_no_block_cache(t, 1);
    if (o->bloom_bits > 0)  /* the table options take ownership of the policy */
        rocksdb_block_based_options_set_filter_policy(
            t, rocksdb_filterpolicy_create_bloom_full((double)o->bloom_bits));
    rocksdb_block_based_options_set_data_block_index_type(
        t, rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
    rocksdb_block_based_options_set_data_block_hash_ratio(t, 0.75);
    rocksdb_options_set_block_based_table_factory(opt, t); /* copies t */
    rocksdb_block_based_options_destroy(t);

    rocksdb_options_set_write_buffer_size(opt, (size_t)o->write_buffer_mb << 20);
    rocksdb_options_set_max_write_buffer_number(opt, 2);
    /* A WAL file lives until every family's memtable holding its data is flushed, and the
     * small families (pending, meta) seldom fill theirs: RocksDB's default bound, 4x all
     * write buffers (2.5 GB at 64 MB), is what a restart after a crash would replay (twice:
     * the read-only check, then the open). Past max_wal_mb the families holding the oldest
     * WAL are switched to new memtables and flushed. */
    rocksdb_options_set_max_total_wal_size(opt, (uint64_t)o->max_wal_mb << 20);
    rocksdb_options_set_compression(opt, compression);
    rocksdb_options_set_max_open_files(opt, o->max_open_files);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(opt, 1);
    rocksdb_options_set_max_background_jobs(opt, 2);
    rocksdb_options_set_bytes_per_sync(opt, 1 << 20);
    rocksdb_options_set_keep_log_file_num(opt, 4);
    rocksdb_options_set_max_manifest_file_size(opt, 64 << 20);  /* bounds the check above */
    rocksdb_options_set_paranoid_checks(opt, 1);
    /* The info LOG lives in the store's directory. RocksDB 7.8 aborts (an assertion in
     * WritableFileWriter) when it logs through a LOG writer whose earlier append failed, as
     * on a full disk; at the default INFO level its background jobs log all the time, so a
     * full disk ends in that abort. Warnings and errors only (and the header with the
     * options at each open): after a failed write the store writes nothing more, so no
     * second line reaches a failed LOG writer. */
    rocksdb_options_set_info_log_level(opt, 4 /* FATAL_LEVEL */);
    return opt;
}

static int store__opts_check(const store_opts *o, const char *dir, char *errstr, size_t n) {
    const char *bad = NULL;
    if (o->block_cache_mb < 0 || o->block_cache_mb > (1 << 20)) bad = "block_cache_mb";
    else if (o->write_buffer_mb < 1 || o->write_buffer_mb > (1 << 16)) bad = "write_buffer_mb";
    else if (o->max_wal_mb < 1 || o->max_wal_mb > (1 << 20)) bad = "max_wal_mb";
    else if (o->compression != 0 && o->compression != 1) bad = "compression (0 or 1)";
    else if (o->bloom_bits < 0 || o->bloom_bits > 64) bad = "bloom_bits (0..64)";
    else if (o->max_open_files < -1 || o->max_open_files == 0) bad = "max_open_files (-1 or > 0)";
    if (!bad) return 0;
    err_set(errstr, n, "store %s: option %s is out of range", dir, bad);
    return -1;
}

/* ---- validation of an existing database, read-only ---- */

/* The caller's check on meta[so->check_key] of the read-only view. Returns 0 or -1 with e. */
static int store__run_check(rocksdb_t *db, rocksdb_readoptions_t *ro,
                            rocksdb_column_family_handle_t *meta, const char *dir,
                            const store_opts *so, char *e, size_t en) {
    char *err = NULL;
    size_t vlen = 0;
    const char *key = so->check_key ? so->check_key : "";
    char *v = rocksdb_get_cf(db, ro, meta, key, strlen(key), &vlen, &err);
    int rc;
    if (err) {
        err_set(e, en, "store %s: cannot read meta/%s (RocksDB: %s): nothing was changed; the "
                "directory may be damaged", dir, key, err);
        rc = -1;
    } else {
        rc = so->check(so->check_opaque, v, v ? vlen : 0, e, en) == 0 ? 0 : -1;
    }
    free(v);
    free(err);
    return rc;
}

/* A read-only open does not lock, does not replay into files, and writes nothing (not
 * even the info LOG), so a refused directory stays byte-for-byte as it was. The caller's
 * check (so->check) runs here too. Returns 0 when the store can be opened for writing
 * (*fresh: it has all families but no data and no format yet, i.e. a creation interrupted
 * by a crash), -1 with errstr filled otherwise. */
static int store__validate(const char *dir, const rocksdb_options_t *opt,
                           const store_opts *so, int *fresh, char *errstr, size_t n) {
    rocksdb_options_t *ro_opt = rocksdb_options_create_copy((rocksdb_options_t *)opt);
    rocksdb_options_set_create_if_missing(ro_opt, 0);
    rocksdb_options_set_max_open_files(ro_opt, 64); /* open tables lazily: a quick check */
    const rocksdb_options_t *cf_opts[STORE__NAMES];
    rocksdb_column_family_handle_t *h[STORE__NAMES];
    for (int i = 0; i < STORE__NAMES; i++) cf_opts[i] = ro_opt;
    char *err = NULL;
    rocksdb_t *db = rocksdb_open_for_read_only_column_families(
        ro_opt, dir, STORE__NAMES, store__names, cf_opts, h, 0, &err);
    rocksdb_options_destroy(ro_opt);
    if (!db) {
        if (err && strstr(err, "Column famil"))
            err_set(errstr, n,
                       "store %s is not an m3rec store (RocksDB: %s): nothing was changed; "
                       "point the worker at an empty or new directory",
                       dir, err);
        else
            err_set(errstr, n,
                       "store %s is corrupt or unreadable (RocksDB: %s): nothing was changed; "
                       "restore the directory from a backup, or move it away and start from "
                       "an empty one (state is then rebuilt from Kafka)",
                       dir, err ? err : "unknown error");
        free(err);
        return -1;
    }

    int rc = 0;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    size_t vlen = 0;
    char *v = rocksdb_get_cf(db, ro, h[STORE_META + 1], STORE_KEY_FORMAT,
                             strlen(STORE_KEY_FORMAT), &vlen, &err);
    *fresh = 0;
    if (err) {
        err_set(errstr, n, "store %s: cannot read its format record (RocksDB: %s): nothing "
                   "was changed; the directory may be damaged", dir, err);
        rc = -1;
    } else if (!v) {
        int empty = 1;
        for (int i = 1; i < STORE__NAMES && empty; i++) {
            rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db, ro, h[i]);
            rocksdb_iter_seek_to_first(it);
            if (rocksdb_iter_valid(it)) empty = 0;
            rocksdb_iter_destroy(it);
        }
        if (empty) {
            *fresh = 1;
        } else {
            err_set(errstr, n,
                       "store %s has data but no format record (meta/%s): not written by "
                       "m3rec; nothing was changed; point the worker at an empty or new "
                       "directory", dir, STORE_KEY_FORMAT);
            rc = -1;
        }
    } else if (vlen != strlen(STORE_FORMAT) || memcmp(v, STORE_FORMAT, vlen) != 0) {
        char found[128];
        size_t k = 0;
        for (size_t i = 0; i < vlen && k + 1 < sizeof(found); i++)
            found[k++] = (v[i] >= 32 && v[i] < 127) ? v[i] : '?';
        found[k] = '\0';
        err_set(errstr, n,
                   "store %s has format \"%s\" but this build reads \"%s\": it was written "
                   "by an incompatible m3rec version; nothing was changed; run the matching "
                   "m3rec version, or give this worker an empty store directory",
                   dir, found, STORE_FORMAT);
        rc = -1;
    }
    free(v);
    free(err);
    if (rc == 0 && so->check) rc = store__run_check(db, ro, h[STORE_META + 1], dir, so, errstr, n);
    rocksdb_readoptions_destroy(ro);
    for (int i = 0; i < STORE__NAMES; i++) rocksdb_column_family_handle_destroy(h[i]);
    rocksdb_close(db);
    return rc;
}

/* ---- open / close ---- */

static void store__free(store *s) {
    if (!s) return;
    if (s->db) {
        for (int i = 0; i < STORE__NAMES; i++)
            if (s->cf[i]) rocksdb_column_family_handle_destroy(s->cf[i]);
        rocksdb_close(s->db);
        store__reg_remove(s->dev, s->ino);
    }
    if (s->cache) rocksdb_cache_destroy(s->cache);
    if (s->ro) rocksdb_readoptions_destroy(s->ro);
    if (s->ro_scan) rocksdb_readoptions_destroy(s->ro_scan);
    if (s->wo_sync) rocksdb_writeoptions_destroy(s->wo_sync);
    if (s->wo_nosync) rocksdb_writeoptions_destroy(s->wo_nosync);
    if (s->fo_async) rocksdb_flushoptions_destroy(s->fo_async);
    pthread_mutex_destroy(&s->broken_mu);
    free(s->dir);
    free(s);
}

/* Open step 1, the directory: create it, or check it is a writable directory. *st is its
 * stat, *exists 0 when it was created now. Returns 0, or -1 with e. */
static int store__check_dir(const char *dir, struct stat *st, int *exists, char *e, size_t en) {
    *exists = 1;
    if (stat(dir, st) != 0) {
        if (errno != ENOENT) {
            err_set(e, en, "cannot access store directory %s: %s; check the path and its "
                       "permissions", dir, strerror(errno));
            return -1;
        }
        if (mkdir(dir, 0755) != 0 || stat(dir, st) != 0) {
            err_set(e, en, "cannot create store directory %s: %s; check that its parent "
                       "directory exists and is writable", dir, strerror(errno));
            return -1;
        }
        *exists = 0;
    }
    if (!S_ISDIR(st->st_mode)) {
        err_set(e, en, "store path %s exists but is not a directory; point the worker at "
                   "a directory", dir);
        return -1;
    }
    if (access(dir, R_OK | W_OK | X_OK) != 0) {
        err_set(e, en, "store directory %s is not writable: %s; fix its permissions or "
                   "choose another directory", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Open step 2, the locks: this process (the registry), then others (RocksDB's LOCK).
 * Returns 0 with the registry entry ours (every later failure must remove it), or -1 with
 * e and no entry of ours. */
static int store__claim(const char *dir, const struct stat *st, int exists, char *e, size_t en) {
    pid_t holder = 0;
    int reg = store__reg_add(st->st_dev, st->st_ino, &holder);
    if (reg < 0) {
        err_set(e, en, "store %s: out of memory", dir);
        return -1;
    }
    if (reg == 1) {
        if (holder == getpid())
            err_set(e, en, "store directory %s is already open in this process: another "
                       "m3rec worker may be using it; close it first or give each worker "
                       "its own store directory", dir);
        else
            store__err_locked(e, en, dir, holder);
        return -1;
    }
    if (exists && (holder = store__lock_holder(dir)) != 0) {
        store__err_locked(e, en, dir, holder);
        store__reg_remove(st->st_dev, st->st_ino);
        return -1;
    }
    return 0;
}

/* Open step 3, what is there: STORE__DIR_EMPTY or STORE__DIR_DB, or -1 with e. */
static int store__inspect(const char *dir, int exists, char *e, size_t en) {
    char example[256] = "";
    int kind = exists ? store__classify(dir, example, sizeof(example)) : STORE__DIR_EMPTY;
    if (kind < 0) {
        err_set(e, en, "cannot list store directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (kind == STORE__DIR_FOREIGN) {
        err_set(e, en, "store directory %s is not empty but has no CURRENT file (e.g. it "
                   "holds %s): not a RocksDB store, or one whose CURRENT was lost; nothing "
                   "was changed; point the worker at an empty or new directory", dir, example);
        return -1;
    }
    return kind;
}

/* An existing store must be whole (its MANIFEST not torn) and ours (store__validate); *fresh
 * is 0 when it holds our format record. Returns 0, or -1 with e. */
static int store__check_existing(const char *dir, const rocksdb_options_t *opt,
                                 const store_opts *so, int *fresh, char *e, size_t en) {
    char manifest[160];
    long long torn_at = 0, manifest_size = 0;
    if (store__manifest_torn(dir, manifest, sizeof(manifest), &torn_at, &manifest_size)) {
        err_set(e, en, "store %s is corrupt: %s ends in an incomplete record (at byte %lld "
                   "of %lld): it was truncated, or torn by a power loss during a write; "
                   "RocksDB would silently fall back to an older state and delete newer files, "
                   "so nothing was opened and nothing was changed; restore the directory from "
                   "a backup, or move it away and start from an empty one (state is then "
                   "rebuilt from Kafka)", dir, manifest, torn_at, manifest_size);
        return -1;
    }
    return store__validate(dir, opt, so, fresh, e, en);
}

/* Open step 4, for writing. An existing store is never created over: its families all
 * exist (validated), so neither creation flag is needed. Takes opt. Returns 0, or -1 with
 * e. */
static int store__open_db(store *s, rocksdb_options_t *opt, int kind, char *e, size_t en) {
    rocksdb_options_set_create_if_missing(opt, kind != STORE__DIR_DB);
    rocksdb_options_set_create_missing_column_families(opt, kind != STORE__DIR_DB);
    const rocksdb_options_t *cf_opts[STORE__NAMES];
    for (int i = 0; i < STORE__NAMES; i++) cf_opts[i] = opt;
    char *err = NULL;
    s->db = rocksdb_open_column_families(opt, s->dir, STORE__NAMES, store__names, cf_opts,
                                         s->cf, &err);
    rocksdb_options_destroy(opt);
    if (s->db) return 0;
    if (err && strstr(err, "lock") && strstr(err, "LOCK"))  /* lost a race for it */
        store__err_locked(e, en, s->dir, 0);
    else
        err_set(e, en, "cannot open store %s (RocksDB: %s); check the directory and the "
                   "disk (free space, permissions)", s->dir, err ? err : "unknown error");
    free(err);
    return -1;
}

/* The read, write and flush options every call uses. */
static void store__io_options(store *s, const store_opts *opts) {
    s->ro = rocksdb_readoptions_create();
    s->ro_scan = rocksdb_readoptions_create();
    rocksdb_readoptions_set_fill_cache(s->ro_scan, 0);
    s->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wo_sync, 1);
    s->wo_nosync = rocksdb_writeoptions_create();
    s->fo_async = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(s->fo_async, 0);
    s->max_wal_bytes = (uint64_t)opts->max_wal_mb << 20;
}

/* A new store's format record, written before anything else. Returns 0, or -1 with e. */
static int store__write_format(store *s, char *e, size_t en) {
    char *err = NULL;
    rocksdb_put_cf(s->db, s->wo_sync, s->cf[STORE_META + 1], STORE_KEY_FORMAT,
                   strlen(STORE_KEY_FORMAT), STORE_FORMAT, strlen(STORE_FORMAT), &err);
    if (!err) return 0;
    err_set(e, en, "store %s: cannot write its format record (RocksDB: %s)", s->dir, err);
    free(err);
    return -1;
}

store *store_open(const char *dir, const store_opts *opts, char *errstr, size_t errstr_size) {
    char *const e = errstr;
    const size_t en = errstr_size;
    store_opts defaults;
    if (!dir || !*dir) {
        err_set(e, en, "store directory is not set (empty path)");
        return NULL;
    }
    if (strlen(dir) + 32 > PATH_MAX) {
        err_set(e, en, "store directory path is too long: %.64s...", dir);
        return NULL;
    }
    if (!opts) {
        store_opts_default(&defaults);
        opts = &defaults;
    }
    if (store__opts_check(opts, dir, e, en) != 0) return NULL;
    struct stat st;
    int exists;
    if (store__check_dir(dir, &st, &exists, e, en) != 0 || store__claim(dir, &st, exists, e, en) != 0)
        return NULL;
    /* From here on the registry entry is ours: every failure path removes it. */
    int kind = store__inspect(dir, exists, e, en);
    if (kind < 0) goto fail_reg;

    pthread_once(&store__comp_once, store__probe_compression);
    int comp = opts->compression ? store__comp_type : rocksdb_no_compression;
    store *s = calloc(1, sizeof(*s));
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        err_set(e, en, "store %s: out of memory", dir);
        goto fail_reg;
    }
    pthread_mutex_init(&s->broken_mu, NULL);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->compression = opts->compression ? store__comp_name : "none";
    if (opts->block_cache_mb > 0) s->cache = rocksdb_cache_create_lru((size_t)opts->block_cache_mb << 20);
    rocksdb_options_t *opt = store__options(opts, s->cache, comp);
    int fresh = 1;
    if (kind == STORE__DIR_DB && store__check_existing(dir, opt, opts, &fresh, e, en) != 0) {
        rocksdb_options_destroy(opt);
        store__free(s);
        goto fail_reg;
    }
    if (store__open_db(s, opt, kind, e, en) != 0) {
        store__free(s);
        goto fail_reg;
    }
    store__io_options(s, opts);
    if (fresh) {
        if (store__write_format(s, e, en) != 0) {
            store__free(s);  /* removes the registry entry */
            return NULL;
        }
        s->created = 1;
    }
    return s;

fail_reg:
    store__reg_remove(st.st_dev, st.st_ino);
    return NULL;
}

int store_close(store *s, int flush, char *errstr, size_t errstr_size) {
    int rc = 0;
    if (!s) return 0;
    if (flush && !atomic_load(&s->broken)) {
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        rocksdb_flushoptions_set_wait(fo, 1);
        for (int i = 1; i < STORE__NAMES && rc == 0; i++) {
            char *err = NULL;
            rocksdb_flush_cf(s->db, fo, s->cf[i], &err);
            if (err) {
                err_set(errstr, errstr_size, "store %s: flush of %s failed (RocksDB: %s); "
                           "committed batches are still in the WAL", s->dir, store__names[i], err);
                free(err);
                rc = -1;
            }
        }
        rocksdb_flushoptions_destroy(fo);
    }
    store__free(s);
    return rc;
}

void store_destroy(store *s) { store_close(s, 0, NULL, 0); }

const char *store_dir(const store *s) { return s->dir; }
const char *store_compression(const store *s) { return s->compression; }
int store_created(const store *s) { return s->created; }

void store_stats_get(const store *s, store_stats *out) {
    out->batches = atomic_load(&s->n_batches);
    out->ops_written = atomic_load(&s->n_ops);
    out->bytes_written = atomic_load(&s->n_bytes);
    out->gets = atomic_load(&s->n_gets);
    out->multi_gets = atomic_load(&s->n_multi_gets);
    out->keys_looked_up = atomic_load(&s->n_keys);
    out->keys_found = atomic_load(&s->n_found);
    out->keys_missing = atomic_load(&s->n_missing);
}

static rocksdb_column_family_handle_t *store__cf(const store *s, store_cf cf) {
    return (cf >= 0 && cf < STORE_N_CF) ? s->cf[cf + 1] : NULL;
}

int store_property(store *s, store_cf cf, const char *name, uint64_t *out) {
    rocksdb_column_family_handle_t *h = store__cf(s, cf);
    if (!h || !name) return -1;
    return rocksdb_property_int_cf(s->db, h, name, out) == 0 ? 0 : -1;
}

/* ---- writes ---- */

store_batch *store_batch_new(store *s) {
    store_batch *b = s ? malloc(sizeof(*b)) : NULL;
    if (!b) return NULL;
    b->s = s;
    b->wb = rocksdb_writebatch_create();
    return b;
}

void store_batch_destroy(store_batch *b) {
    if (!b) return;
    rocksdb_writebatch_destroy(b->wb);
    free(b);
}

void store_batch_clear(store_batch *b) { rocksdb_writebatch_clear(b->wb); }

int store_batch_put(store_batch *b, store_cf cf, const void *key, size_t klen,
                    const void *val, size_t vlen) {
    rocksdb_column_family_handle_t *h = store__cf(b->s, cf);
    if (!h) return -1;
    rocksdb_writebatch_put_cf(b->wb, h, key, klen, val, vlen);
    return 0;
}

int store_batch_delete(store_batch *b, store_cf cf, const void *key, size_t klen) {
    rocksdb_column_family_handle_t *h = store__cf(b->s, cf);
    if (!h) return -1;
    rocksdb_writebatch_delete_cf(b->wb, h, key, klen);
    return 0;
}

int store_batch_put_u64(store_batch *b, store_cf cf, uint64_t key, const void *val, size_t vlen) {
    unsigned char k[8];
    store_key_from_u64(k, key);
    return store_batch_put(b, cf, k, 8, val, vlen);
}

int store_batch_delete_u64(store_batch *b, store_cf cf, uint64_t key) {
    unsigned char k[8];
    store_key_from_u64(k, key);
    return store_batch_delete(b, cf, k, 8);
}

/* Bytewise comparison, as RocksDB's default comparator. */
static int store__keycmp(const void *a, size_t alen, const void *b, size_t blen) {
    size_t m = alen < blen ? alen : blen;
    int c = m ? memcmp(a, b, m) : 0;
    if (c != 0) return c;
    return alen < blen ? -1 : alen > blen;
}

int store_batch_delete_range(store_batch *b, store_cf cf, const void *begin, size_t blen,
                             const void *end, size_t elen) {
    rocksdb_column_family_handle_t *h = store__cf(b->s, cf);
    if (!h || store__keycmp(begin, blen, end, elen) > 0) return -1;
    rocksdb_writebatch_delete_range_cf(b->wb, h, begin, blen, end, elen);
    return 0;
}

int store_put_offset(store_batch *b, const char *topic, int32_t partition, int64_t next_offset) {
    char key[sizeof(STORE_KEY_OFFSET_PREFIX) + STORE_TOPIC_MAX + 16];
    if (!topic || !*topic || strlen(topic) > STORE_TOPIC_MAX || strchr(topic, '/') ||
        partition < 0)
        return -1;
    int klen = snprintf(key, sizeof(key), STORE_KEY_OFFSET_PREFIX "%s/%ld", topic, (long)partition);
    unsigned char v[8];
    store_key_from_u64(v, (uint64_t)next_offset);
    return store_batch_put(b, STORE_META, key, (size_t)klen, v, 8);
}

int store_batch_count(const store_batch *b) {
    return rocksdb_writebatch_count((rocksdb_writebatch_t *)b->wb);
}

size_t store_batch_bytes(const store_batch *b) {
    size_t size = 0;
    rocksdb_writebatch_data((rocksdb_writebatch_t *)b->wb, &size);
    return size;
}

/* What the operator reads first in a failed write's message, from the errno text RocksDB
 * passes on, and what to do about it. */
static const char *store__write_advice(const char *rocks, const char **cause) {
    static const struct { const char *text, *advice; } known[] = {
        {"No space left on device", "free space and restart"},
        {"Disk quota exceeded", "raise the quota or free space, and restart"},
        {"File too large", "raise the file size limit (ulimit -f) and restart"},
        {"Read-only file system", "remount the file system read-write and restart"},
        {"Input/output error", "check the disk (dmesg), then restart"},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strstr(rocks, known[i].text)) {
            *cause = known[i].text;
            return known[i].advice;
        }
    *cause = "write failed";
    return "check the disk and the file system, then restart";
}

/* Record the first failed write (ops: of the commit, 0 for a flush); later calls keep it. */
static void store__break(store *s, int ops, const char *rocks) {
    pthread_mutex_lock(&s->broken_mu);
    if (!atomic_load(&s->broken)) {
        const char *cause, *advice = store__write_advice(rocks, &cause);
        char what[64] = "a flush";
        if (ops > 0) snprintf(what, sizeof(what), "a commit of %d operations", ops);
        err_set(s->broken_err, sizeof(s->broken_err),
                "store.dir %s: %s: %s; %s was not applied and the store writes nothing more "
                "(earlier commits are kept) (RocksDB: %s)", s->dir, cause, advice, what, rocks);
        atomic_store(&s->broken, 1);
    }
    pthread_mutex_unlock(&s->broken_mu);
}

int store_broken(const store *s, char *errstr, size_t errstr_size) {
    if (!atomic_load(&s->broken)) return 0;
    if (errstr && errstr_size) snprintf(errstr, errstr_size, "%s", s->broken_err);
    return 1;
}

int store_commit(store *s, store_batch *b, int sync, char *errstr, size_t errstr_size) {
    if (b->s != s) {
        err_set(errstr, errstr_size, "store %s: batch belongs to another store", s->dir);
        return -1;
    }
    int ops = store_batch_count(b);
    if (ops == 0) return 0;
    if (store_broken(s, errstr, errstr_size)) return -1;
    size_t bytes = store_batch_bytes(b);
    char *err = NULL;
    rocksdb_write(s->db, sync ? s->wo_sync : s->wo_nosync, b->wb, &err);
    if (err) {
        store__break(s, ops, err);
        free(err);
        store_broken(s, errstr, errstr_size);
        return -1;
    }
    atomic_fetch_add(&s->n_batches, 1);
    atomic_fetch_add(&s->n_ops, (uint64_t)ops);
    atomic_fetch_add(&s->n_bytes, (uint64_t)bytes);
    rocksdb_writebatch_clear(b->wb);
    /* Flush the memtables (in the background) once max_wal_mb has been committed since the
     * last time: their WAL can then go, so a restart after a crash replays about that much
     * instead of up to every unflushed memtable's worth (measured: 257 MB, 7.7 s to open). */
    if (atomic_fetch_add(&s->unflushed, (uint64_t)bytes) + bytes >= s->max_wal_bytes) {
        atomic_store(&s->unflushed, 0);
        for (int c = 1; c < STORE__NAMES; c++) {
            char *ferr = NULL;
            rocksdb_flush_cf(s->db, s->fo_async, s->cf[c], &ferr);
            if (ferr) store__break(s, 0, ferr);   /* the data is in the WAL; write no more */
            free(ferr);
        }
    }
    return 0;
}

/* ---- reads ---- */

int store_get(store *s, store_cf cf, const void *key, size_t klen, void **val, size_t *vlen,
              char *errstr, size_t errstr_size) {
    rocksdb_column_family_handle_t *h = store__cf(s, cf);
    *val = NULL;
    *vlen = 0;
    if (!h) {
        err_set(errstr, errstr_size, "store %s: invalid column family %d", s->dir, (int)cf);
        return -1;
    }
    char *err = NULL;
    rocksdb_pinnableslice_t *p = rocksdb_get_pinned_cf(s->db, s->ro, h, key, klen, &err);
    atomic_fetch_add(&s->n_gets, 1);
    atomic_fetch_add(&s->n_keys, 1);
    if (err) {
        err_set(errstr, errstr_size, "store %s: get from %s failed (RocksDB: %s)", s->dir,
                   store__names[cf + 1], err);
        free(err);
        return -1;
    }
    if (!p) {
        atomic_fetch_add(&s->n_missing, 1);
        return 0;
    }
    size_t len = 0;
    const char *data = rocksdb_pinnableslice_value(p, &len);
    void *copy = malloc(len ? len : 1);
    if (!copy) {
        rocksdb_pinnableslice_destroy(p);
        err_set(errstr, errstr_size, "store %s: out of memory for a %zu-byte value", s->dir, len);
        return -1;
    }
    if (len) memcpy(copy, data, len);
    rocksdb_pinnableslice_destroy(p);
    atomic_fetch_add(&s->n_found, 1);
    *val = copy;
    *vlen = len;
    return 1;
}

/* rocksdb_batched_multi_get_cf: the array MultiGet that batches the lookups of one
 * family (filter and index probes per SST for the whole batch; values pinned, not copied
 * into a malloc per value). Measured on 1M rows, 256 keys: about 12% less time and CPU
 * per key than rocksdb_multi_get_cf or 256 rocksdb_get_cf (m3rec-storebench, docs/results.md). */
static long store__multi_get(store *s, rocksdb_column_family_handle_t *h, const char *const *kp,
                             const size_t *ks, size_t n, store_value_cb cb, void *opaque,
                             rocksdb_pinnableslice_t **vals, char **errs, char *errstr,
                             size_t errstr_size) {
    rocksdb_batched_multi_get_cf(s->db, s->ro, h, n, kp, ks, vals, errs, false);
    atomic_fetch_add(&s->n_multi_gets, 1);
    atomic_fetch_add(&s->n_keys, (uint64_t)n);
    long found = 0;
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (errs[i]) {
            if (!failed)
                err_set(errstr, errstr_size, "store %s: multi-get of %zu keys failed at key "
                           "%zu (RocksDB: %s)", s->dir, n, i, errs[i]);
            failed = 1;
            free(errs[i]);
        }
        if (vals[i]) found++;
    }
    for (size_t i = 0; i < n; i++) {
        if (!failed && cb) {
            size_t len = 0;
            const char *v = vals[i] ? rocksdb_pinnableslice_value(vals[i], &len) : NULL;
            cb(opaque, i, v, v ? len : 0);
        }
        if (vals[i]) rocksdb_pinnableslice_destroy(vals[i]);
    }
    if (failed) return -1;
    atomic_fetch_add(&s->n_found, (uint64_t)found);
    atomic_fetch_add(&s->n_missing, (uint64_t)(n - (size_t)found));
    return found;
}

/* Scratch for n lookups: key pointers, key sizes, values, errors, and 8 bytes per key
 * for encoded u64 keys when u64 != 0. One allocation; free() it. */
static void *store__scratch(size_t n, int u64, const char ***kp, size_t **ks,
                            rocksdb_pinnableslice_t ***vals, char ***errs, unsigned char **k8) {
    size_t per = sizeof(**kp) + sizeof(**ks) + sizeof(**vals) + sizeof(**errs) + (u64 ? 8 : 0);
    if (n > SIZE_MAX / per) return NULL;
    char *m = malloc(n * per);
    if (!m) return NULL;
    *kp = (const char **)m;
    *ks = (size_t *)(m + n * sizeof(**kp));
    *vals = (rocksdb_pinnableslice_t **)(m + n * (sizeof(**kp) + sizeof(**ks)));
    *errs = (char **)(m + n * (sizeof(**kp) + sizeof(**ks) + sizeof(**vals)));
    *k8 = (unsigned char *)(m + n * (per - (u64 ? 8 : 0)));
    return m;
}

/* store_multi_get with the keys given either as (keys, klens) or, u64 non-NULL, as u64
 * integers encoded by store_key_from_u64. */
static long store__multi_get_keys(store *s, store_cf cf, const void *const *keys,
                                  const size_t *klens, const uint64_t *u64, size_t n,
                                  store_value_cb cb, void *opaque, char *errstr,
                                  size_t errstr_size) {
    rocksdb_column_family_handle_t *h = store__cf(s, cf);
    if (!h) {
        err_set(errstr, errstr_size, "store %s: invalid column family %d", s->dir, (int)cf);
        return -1;
    }
    if (n == 0) return 0;
    const char **kp;
    size_t *ks;
    rocksdb_pinnableslice_t **vals;
    char **errs;
    unsigned char *k8;
    void *m = store__scratch(n, u64 != NULL, &kp, &ks, &vals, &errs, &k8);
    if (!m) {
        err_set(errstr, errstr_size, "store %s: out of memory for %zu keys", s->dir, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (u64) {
            store_key_from_u64(k8 + 8 * i, u64[i]);
            kp[i] = (const char *)(k8 + 8 * i);
            ks[i] = 8;
        } else {
            kp[i] = keys[i];
            ks[i] = klens[i];
        }
    }
    long rc = store__multi_get(s, h, kp, ks, n, cb, opaque, vals, errs, errstr, errstr_size);
    free(m);
    return rc;
}

long store_multi_get(store *s, store_cf cf, const void *const *keys, const size_t *klens,
                     size_t n, store_value_cb cb, void *opaque, char *errstr, size_t errstr_size) {
    return store__multi_get_keys(s, cf, keys, klens, NULL, n, cb, opaque, errstr, errstr_size);
}

long store_multi_get_u64(store *s, store_cf cf, const uint64_t *keys, size_t n,
                         store_value_cb cb, void *opaque, char *errstr, size_t errstr_size) {
    return store__multi_get_keys(s, cf, NULL, NULL, keys, n, cb, opaque, errstr, errstr_size);
}

/* An iterator over cf positioned at the first key >= start (start NULL: first key). */
static rocksdb_iterator_t *store__iter(store *s, rocksdb_column_family_handle_t *h,
                                       const void *start, size_t slen) {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro_scan, h);
    if (start) rocksdb_iter_seek(it, start, slen);
    else rocksdb_iter_seek_to_first(it);
    return it;
}

/* Finish an iteration: -1 with errstr when the iterator stopped on an error, else count. */
static long store__iter_end(store *s, rocksdb_iterator_t *it, store_cf cf, long count,
                            char *errstr, size_t errstr_size) {
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (!err) return count;
    err_set(errstr, errstr_size, "store %s: iteration over %s failed (RocksDB: %s)", s->dir,
               store__names[cf + 1], err);
    free(err);
    return -1;
}

long store_iterate(store *s, store_cf cf, const void *start, size_t slen, store_kv_cb cb,
                   void *opaque, char *errstr, size_t errstr_size) {
    rocksdb_column_family_handle_t *h = store__cf(s, cf);
    if (!h) {
        err_set(errstr, errstr_size, "store %s: invalid column family %d", s->dir, (int)cf);
        return -1;
    }
    rocksdb_iterator_t *it = store__iter(s, h, start, slen);
    long count = 0;
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        count++;
        if (cb && cb(opaque, k, klen, v, vlen) != 0) break;
    }
    return store__iter_end(s, it, cf, count, errstr, errstr_size);
}

long store_get_offsets(store *s, store_offset_cb cb, void *opaque, char *errstr,
                       size_t errstr_size) {
    const size_t plen = strlen(STORE_KEY_OFFSET_PREFIX);
    rocksdb_iterator_t *it = store__iter(s, s->cf[STORE_META + 1], STORE_KEY_OFFSET_PREFIX, plen);
    long count = 0;
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        if (klen < plen || memcmp(k, STORE_KEY_OFFSET_PREFIX, plen) != 0) break;
        /* offset/<topic>/<partition>: the topic has no '/', so the last one splits */
        char key[sizeof(STORE_KEY_OFFSET_PREFIX) + STORE_TOPIC_MAX + 16];
        char *slash = NULL, *end = NULL;
        long part = -1;
        if (klen < sizeof(key)) {
            memcpy(key, k, klen);
            key[klen] = '\0';
            slash = strrchr(key + plen, '/');
        }
        if (slash && slash > key + plen && slash[1] >= '0' && slash[1] <= '9') {
            errno = 0;
            part = strtol(slash + 1, &end, 10);
            if (errno || *end || part > INT32_MAX) part = -1;
        }
        if (part < 0 || vlen != 8 || memchr(k, '\0', klen)) {
            err_set(errstr, errstr_size, "store %s: malformed offset record \"%.*s\" (%zu-byte "
                       "value) in meta", s->dir, (int)(klen < 300 ? klen : 300), k, vlen);
            rocksdb_iter_destroy(it);  /* k points into the iterator */
            return -1;
        }
        *slash = '\0';
        count++;
        if (cb && cb(opaque, key + plen, (int32_t)part, (int64_t)store_key_to_u64(v)) != 0) break;
    }
    return store__iter_end(s, it, STORE_META, count, errstr, errstr_size);
}
