/* store.h - the durable state store: RocksDB column families for embedding rows, user
 * states, pending impressions and metadata, written in atomic checkpoint batches.
 *
 * One directory holds one RocksDB database with the column families
 *   emb      embedding rows        key: u64 id, 8 bytes big-endian  -> row bytes
 *   user     UPT user states       key: u64 user id, 8 bytes big-endian -> state bytes
 *   pending  pending impressions   key: impression id (bytes, no NUL) -> entry bytes
 *   meta     metadata              key: ASCII name -> value (format, dense blob, model
 *                                  version, offset/<topic>/<partition> -> next offset)
 * (plus RocksDB's own `default`, unused). Values are opaque bytes: their layout belongs
 * to the modules that write them. docs/store.md has the layout and the defaults.
 *
 * The checkpoint primitive is one store_batch committed with store_commit: dirty rows,
 * user states, pending changes, the dense blob and the input offsets are applied
 * atomically (one RocksDB WriteBatch), so after a crash either all of it or none of it
 * is visible.
 *
 * Opening never modifies a directory it refuses: a directory locked by another worker,
 * written by an incompatible store format, corrupt (CURRENT or MANIFEST unreadable), or
 * non-empty without being a RocksDB database is checked before RocksDB opens it for
 * writing, and nothing in it is created, rotated, repaired or deleted.
 *
 * Library code: nothing here exits; failures return a status and fill errstr.
 * Threads: reads, batches and commits may run on several threads at once (RocksDB is
 * thread-safe; the counters are atomic); a store_batch is used by one thread at a time;
 * store_close / store_destroy must not overlap any other call on the same store. */
#ifndef M3_STORE_H
#define M3_STORE_H
#include <stddef.h>
#include <stdint.h>

typedef enum { STORE_EMB = 0, STORE_USER = 1, STORE_PENDING = 2, STORE_META = 3 } store_cf;
#define STORE_N_CF 4

/* The value of meta key STORE_KEY_FORMAT. A directory holding any other value is
 * refused; bump the number whenever the key or value layout of any family changes. */
#define STORE_FORMAT "m3rec-store 4"
#define STORE_KEY_FORMAT "format"                /* meta: STORE_FORMAT, written at creation */
#define STORE_KEY_DENSE "dense"                  /* meta: the dense parameter blob */
#define STORE_KEY_MODEL_VERSION "model_version"  /* meta: the model's version record */
#define STORE_KEY_OFFSET_PREFIX "offset/"        /* meta: offset/<topic>/<partition> */
#define STORE_TOPIC_MAX 249                      /* Kafka's limit on a topic name */

/* A check of an existing store, run by store_open on a read-only view before anything in
 * the directory is opened for writing: val is the meta value of the key asked for (NULL and
 * 0 when absent), valid during the call. Return 0 to go on, or -1 with errstr filled to
 * refuse: store_open then returns NULL with that message, and no file of the directory is
 * created, modified, rotated or removed. */
typedef int (*store_check_fn)(void *opaque, const void *val, size_t vlen, char *errstr,
                              size_t errstr_size);

/* Tuning, filled by the caller (start from store_opts_default). */
typedef struct {
    int block_cache_mb;   /* LRU cache of uncompressed blocks, shared by all families; 0: none */
    int write_buffer_mb;  /* memtable size per family (>= 1) */
    int compression;      /* 1: LZ4, else Snappy, else none, as this RocksDB build has; 0: none */
    int bloom_bits;       /* bits per key of the full Bloom filter (0..64); 0: no filter */
    int max_open_files;   /* SST files kept open; -1: all (their index and filter stay in memory) */
    int max_wal_mb;       /* WAL kept before the families holding its oldest part are flushed:
                             what a restart after a crash replays (>= 1) */
    const char *check_key;  /* meta key handed to check at open; NULL: no check */
    store_check_fn check;   /* e.g. "is this the state of my configuration?" */
    void *check_opaque;
} store_opts;

/* Defaults: block_cache_mb 128, write_buffer_mb 64, compression 1, bloom_bits 10,
 * max_open_files -1, max_wal_mb 32 (the reasons are in docs/store.md), no check. */
void store_opts_default(store_opts *o);

typedef struct store store;
typedef struct store_batch store_batch;

/* Per-store counters since store_open (a snapshot; see store_stats_get). */
typedef struct {
    uint64_t batches;        /* store_commit calls that succeeded */
    uint64_t ops_written;    /* puts + deletes + range deletes in those batches */
    uint64_t bytes_written;  /* serialized WriteBatch bytes in those batches */
    uint64_t gets;           /* store_get calls */
    uint64_t multi_gets;     /* store_multi_get / store_multi_get_u64 calls */
    uint64_t keys_looked_up; /* keys asked for by gets and multi-gets */
    uint64_t keys_found;
    uint64_t keys_missing;
} store_stats;

/* ---- open / close ---- */

/* Open the store in directory `dir`, creating the directory (its parent must exist), the
 * database, the four column families and the format record when missing. opts NULL
 * means store_opts_default. Returns the store, or NULL with errstr filled; every message
 * names the directory and says what to do:
 *   - "store directory D is locked by another process (pid N): another m3rec worker may
 *     be using it; ..." (also for a second open of D in this process);
 *   - "store D has format "X" but this build reads "m3rec-store 4": ..." (and "store D
 *     has data but no format record ...": a RocksDB database m3rec did not write);
 *   - "store D is corrupt or unreadable (RocksDB: ...): nothing was changed; ...";
 *   - "store D is corrupt: MANIFEST-N ends in an incomplete record ...": a truncated
 *     MANIFEST, which RocksDB itself would accept by falling back to an older state;
 *   - "store directory D is not empty but has no CURRENT file ...": not a store, or one
 *     that lost its CURRENT (RocksDB would create a new database over its files);
 *   - "cannot create store directory D: <strerror>; ...", "... is not writable ...",
 *     "store path D exists but is not a directory ...", and other I/O errors;
 *   - the message of opts->check when it refuses the store.
 * On any refusal, no file in an existing directory is created, modified or removed. */
store *store_open(const char *dir, const store_opts *opts, char *errstr, size_t errstr_size);

/* Close the store and free it. With flush != 0 the memtables are written to SST files
 * first (a faster next open: no WAL replay), unless a write failed before (store_broken):
 * then nothing is written. Returns 0, or -1 with errstr filled when the flush failed; the
 * store is closed and freed either way (committed batches are in the WAL regardless).
 * NULL: returns 0, no-op. */
int store_close(store *s, int flush, char *errstr, size_t errstr_size);
/* store_close without flush, ignoring errors; NULL is a no-op. */
void store_destroy(store *s);

/* The directory given to store_open; owned by s. */
const char *store_dir(const store *s);
/* The compression in use: "lz4", "snappy" or "none"; a static string. */
const char *store_compression(const store *s);
/* 1 when store_open created this store (fresh state), 0 when it opened an existing one. */
int store_created(const store *s);
/* The name of a column family ("emb", "user", "pending", "meta"), or NULL if cf is invalid. */
const char *store_cf_name(store_cf cf);
/* Copy the counters into *out. */
void store_stats_get(const store *s, store_stats *out);
/* A RocksDB integer property of one family (e.g. "rocksdb.estimate-num-keys",
 * "rocksdb.total-sst-files-size", "rocksdb.block-cache-usage"). Returns 0 with *out set,
 * or -1 if cf is invalid or RocksDB does not know the property. */
int store_property(store *s, store_cf cf, const char *name, uint64_t *out);

/* ---- writes: the checkpoint batch ---- */

/* A new empty batch for store s (it records s's column families, so it must be committed
 * to s and destroyed before s is). Returns NULL when s is NULL or memory runs out. */
store_batch *store_batch_new(store *s);
/* Free a batch and the operations in it (uncommitted ones are dropped); NULL: no-op. */
void store_batch_destroy(store_batch *b);
/* Drop every operation in b, keeping it for reuse. */
void store_batch_clear(store_batch *b);

/* Add a put (key -> val, replacing any value) or a delete of key to b. Key and value are
 * copied. Returns 0, or -1 when cf is invalid (nothing is added). */
int store_batch_put(store_batch *b, store_cf cf, const void *key, size_t klen,
                    const void *val, size_t vlen);
int store_batch_delete(store_batch *b, store_cf cf, const void *key, size_t klen);
/* The same with a u64 key, encoded with store_key_from_u64. */
int store_batch_put_u64(store_batch *b, store_cf cf, uint64_t key, const void *val, size_t vlen);
int store_batch_delete_u64(store_batch *b, store_cf cf, uint64_t key);
/* Delete every key k of cf with begin <= k < end (bytewise order), e.g. a range of pending
 * ids or of u64 keys. Returns 0, or -1 when cf is invalid or end < begin. */
int store_batch_delete_range(store_batch *b, store_cf cf, const void *begin, size_t blen,
                             const void *end, size_t elen);
/* Record that the next offset to consume from topic/partition is next_offset (meta key
 * "offset/<topic>/<partition>", value 8 bytes big-endian two's complement). Returns 0, or
 * -1 when the topic is empty, longer than STORE_TOPIC_MAX or contains '/', or partition < 0. */
int store_put_offset(store_batch *b, const char *topic, int32_t partition, int64_t next_offset);

/* Number of operations in b. */
int store_batch_count(const store_batch *b);
/* Size of b's serialized WriteBatch in bytes (what the WAL receives). */
size_t store_batch_bytes(const store_batch *b);

/* Apply every operation in b atomically (one WriteBatch): after a crash at any point,
 * either all of them are visible or none. sync != 0 fsyncs the WAL before returning, so
 * the batch also survives an OS crash or power loss; sync == 0 survives a process crash
 * only. On success returns 0 and clears b (ready for reuse). On failure returns -1 with
 * errstr filled, nothing is applied, and b is unchanged. A batch made for another store is
 * refused. An empty batch is a successful no-op.
 * A failed write breaks the store for writing (store_broken): every later commit is
 * refused without reaching RocksDB, and store_close does not flush. (RocksDB 7.8 aborts the
 * process in an assertion when it writes again through a file writer that failed, e.g.
 * after ENOSPC.) The message of a failed write starts "store.dir D: <cause>:" with what to
 * do, e.g. "store.dir D: No space left on device: free space and restart; ...". */
int store_commit(store *s, store_batch *b, int sync, char *errstr, size_t errstr_size);

/* 1 when a write failed and the store writes nothing more (errstr gets the first failure's
 * message), else 0. Reads still work: close the store and open it again to write. */
int store_broken(const store *s, char *errstr, size_t errstr_size);

/* ---- reads ---- */

/* Point lookup. Returns 1 with *val (malloc'd; the caller frees it) and *vlen set, 0 when
 * the key is absent (*val NULL, *vlen 0), -1 with errstr filled on an error or invalid cf. */
int store_get(store *s, store_cf cf, const void *key, size_t klen, void **val, size_t *vlen,
              char *errstr, size_t errstr_size);

/* Called once per key, in order i = 0..n-1; val is NULL (vlen 0) when key i is absent.
 * val is valid only during the call. */
typedef void (*store_value_cb)(void *opaque, size_t i, const void *val, size_t vlen);

/* Look up n keys of one family in one batched RocksDB MultiGet (one consistent view;
 * bloom filters skip absent keys without I/O) and report each to cb. Returns the number
 * of keys found, or -1 with errstr filled if any lookup failed (cb is then not called)
 * or cf is invalid. n == 0 returns 0. */
long store_multi_get(store *s, store_cf cf, const void *const *keys, const size_t *klens,
                     size_t n, store_value_cb cb, void *opaque, char *errstr, size_t errstr_size);
/* The same for u64 keys. */
long store_multi_get_u64(store *s, store_cf cf, const uint64_t *keys, size_t n,
                         store_value_cb cb, void *opaque, char *errstr, size_t errstr_size);

/* Called for each entry; key and val are valid only during the call. Return 0 to go
 * on, nonzero to stop. */
typedef int (*store_kv_cb)(void *opaque, const void *key, size_t klen, const void *val,
                           size_t vlen);

/* Visit the entries of cf in key order (bytewise; numeric for u64 keys) from the first
 * key >= start (start NULL: from the first key), on one consistent snapshot. Returns the
 * number of entries visited (including the one whose callback stopped the scan), or -1
 * with errstr filled on a read error or invalid cf. */
long store_iterate(store *s, store_cf cf, const void *start, size_t slen, store_kv_cb cb,
                   void *opaque, char *errstr, size_t errstr_size);

/* Called per stored offset; return 0 to go on, nonzero to stop. */
typedef int (*store_offset_cb)(void *opaque, const char *topic, int32_t partition,
                               int64_t next_offset);
/* Report every stored offset, in meta key order (not numeric by partition).
 * Returns the number reported, or -1 with errstr filled on a read error or a malformed
 * offset record. */
long store_get_offsets(store *s, store_offset_cb cb, void *opaque, char *errstr,
                       size_t errstr_size);

/* ---- keys ---- */

/* The 8-byte big-endian key of a u64 id (bytewise order = numeric order). */
void store_key_from_u64(unsigned char out[8], uint64_t id);
/* The id of an 8-byte key written by store_key_from_u64. */
uint64_t store_key_to_u64(const void *key8);

#endif
