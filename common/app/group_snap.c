/* group_snap.c - the snapshot of the group's shared model on <prefix>.model.snapshot
 * (group_int.h): a payload in shards under the message size limit, then a manifest.
 *
 * The payload, native byte order: magic "M3SN", format version, the configuration hash
 * (m3_cfg_hash), dense count, emb width, row count, the model-topic offset covered, the
 * writer's sender id and sequence end, its clock; then (format 2) the model's dense blob
 * (m3_blob_save: the parameters, Adam's moments and step, with its own checksum) as a
 * u64 length and its bytes, the group's state at that offset (group.c's bytes: the grad
 * rule's round being gathered and its members) as a u64 length and its bytes; the shared
 * rows (key u64 + d floats), FNV-1a 64 of everything before. Format 1 had the dense
 * parameters alone where format 2 has the two sections: it still loads, without Adam's
 * state (the loader says so). A shard's value: magic "M3SS",
 * its index, the snapshot id, then its slice of the payload; the manifest's: magic
 * "M3SM", the shard count, the snapshot id, the payload's length. The topic is compacted
 * by key (shard.<k>, manifest): the manifest is written last, so a manifest names a
 * snapshot whose shards are all on the topic before it. */
#include "app/group_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/wire.h"
#include "engine/emb.h"

#define SNAP__MAGIC 0x4e53334dU     /* "M3SN" */
#define SNAP__SHARD 0x5353334dU     /* "M3SS" */
#define SNAP__MANIFEST 0x4d53334dU  /* "M3SM" */
#define SNAP__VERSION 2u      /* written; format 1 is read too */
#define SNAP__HEAD 72u
#define SNAP__SHARD_HEAD 16u
#define SNAP__MAX_SHARDS 4096

typedef struct {
    uint32_t magic, version;
    uint64_t cfg_hash, n_params;
    uint32_t d, reserved;   /* reserved: 0 */
    uint64_t n_rows;
    int64_t model_offset;
    uint32_t writer, pad;
    uint64_t writer_seq_end;
    int64_t written_ms;
} snap__head;
_Static_assert(sizeof(snap__head) == SNAP__HEAD, "the header has no padding");

static int snap__user_key(uint64_t key) { return (int)(key >> 56) == M3_SLOT_USER; }

/* The payload of m's shared part and the group's state (malloc'd, *len its size), or NULL
 * with errstr (out of memory, or the dense parameters are not finite). */
static unsigned char *snap__payload(m3_model *m, grp__snap_meta *meta, const void *state,
                                    size_t state_len, size_t *len, char *errstr, size_t en) {
    emb_table *t = m3_emb_table(m);
    size_t d = (size_t)emb_dim(t), rows = 0;
    uint64_t blob_len = m3_blob_size(m), sl = state_len;
    for (size_t r = 0; r < emb_rows(t); r++) rows += !snap__user_key(emb_key(t, (int64_t)r));
    size_t n = SNAP__HEAD + 8 + blob_len + 8 + sl + rows * (8 + 4 * d) + 8;
    unsigned char *b = malloc(n);
    if (!b) {
        err_set(errstr, en, "snapshot: out of memory");
        return NULL;
    }
    snap__head h = {SNAP__MAGIC, SNAP__VERSION, m3_cfg_hash(m), m3_n_params(m), (uint32_t)d, 0,
                    rows, meta->model_offset, meta->writer, 0, meta->writer_seq_end,
                    meta->written_ms};
    wire_w w = {b, 0};
    wire_put(&w, &h, sizeof h);
    wire_put(&w, &blob_len, 8);
    if (m3_blob_save(m, b + w.off, blob_len) != blob_len) {
        free(b);
        err_set(errstr, en, "snapshot: the dense parameters or Adam's state are not finite");
        return NULL;
    }
    w.off += blob_len;
    wire_put(&w, &sl, 8);
    if (sl) wire_put(&w, state, sl);
    for (size_t r = 0; r < emb_rows(t); r++) {
        uint64_t key = emb_key(t, (int64_t)r);
        if (snap__user_key(key)) continue;
        wire_put(&w, &key, 8);
        wire_put(&w, emb_weights(t, (int64_t)r), d * 4);
    }
    uint64_t sum = hash_fnv64(HASH_FNV64_INIT, b, w.off);
    wire_put(&w, &sum, 8);
    *len = w.off;
    meta->rows = rows;
    meta->bytes = w.off;
    meta->version = SNAP__VERSION;
    return b;
}

int grp__snap_write(kio_producer *p, const char *topic, m3_model *m, grp__snap_meta *meta,
                    const void *state, size_t state_len, char *errstr, size_t n) {
    meta->written_ms = clk_real_ms();
    meta->id = (uint64_t)meta->written_ms << 20 | (meta->writer & 0xfffffu);
    size_t len = 0;
    unsigned char *b = snap__payload(m, meta, state, state_len, &len, errstr, n);
    if (!b) return -1;
    unsigned char *shard = malloc(SNAP__SHARD_HEAD + GRP__SHARD_BYTES);
    int rc = shard ? 0 : err_set(errstr, n, "snapshot: out of memory");
    uint32_t k = 0;
    for (size_t off = 0; rc == 0 && off < len; off += GRP__SHARD_BYTES, k++) {
        size_t part = len - off < GRP__SHARD_BYTES ? len - off : GRP__SHARD_BYTES;
        uint32_t head[2] = {SNAP__SHARD, k};
        memcpy(shard, head, 8);
        memcpy(shard + 8, &meta->id, 8);
        memcpy(shard + SNAP__SHARD_HEAD, b + off, part);
        char key[24];
        int kl = snprintf(key, sizeof key, "shard.%" PRIu32, k);
        rc = kio_produce(p, topic, key, (size_t)kl, shard, SNAP__SHARD_HEAD + part, NULL, 0,
                         errstr, n);
    }
    if (rc == 0) {
        unsigned char man[24];
        uint32_t head[2] = {SNAP__MANIFEST, k};
        uint64_t total = len;
        memcpy(man, head, 8);
        memcpy(man + 8, &meta->id, 8);
        memcpy(man + 16, &total, 8);
        rc = kio_produce(p, topic, "manifest", 8, man, sizeof man, NULL, 0, errstr, n);
    }
    free(shard);
    free(b);
    return rc;
}

/* ---- loading ---- */

/* The newest and the one before of each key, as read: a manifest is complete when every
 * shard of its id is among them (a writer that died between its shards and its manifest
 * leaves newer shards than the manifest). */
typedef struct {
    unsigned char *v[2];   /* [0] newest */
    size_t len[2];
} snap__slot;

typedef struct {
    snap__slot man, shard[SNAP__MAX_SHARDS];
    int failed;            /* out of memory */
} snap__read;

static void snap__keep(snap__read *rd, snap__slot *s, const void *v, size_t len) {
    unsigned char *c = malloc(len ? len : 1);
    if (!c) {
        rd->failed = 1;
        return;
    }
    memcpy(c, v, len);
    free(s->v[1]);
    s->v[1] = s->v[0], s->len[1] = s->len[0];
    s->v[0] = c, s->len[0] = len;
}

static int snap__take(void *ud, const rd_kafka_message_t *m) {
    snap__read *rd = ud;
    char key[32];
    if (!m->key || m->key_len >= sizeof key || !m->payload) return 0;   /* not ours: skipped */
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = '\0';
    unsigned long k;
    char *end;
    if (strcmp(key, "manifest") == 0) snap__keep(rd, &rd->man, m->payload, m->len);
    else if (strncmp(key, "shard.", 6) == 0 && (k = strtoul(key + 6, &end, 10)) < SNAP__MAX_SHARDS &&
             !*end)
        snap__keep(rd, &rd->shard[k], m->payload, m->len);
    return rd->failed;
}

/* The shard k of snapshot id among what was read, or NULL. */
static const unsigned char *snap__shard(const snap__read *rd, uint32_t k, uint64_t id, size_t *len) {
    for (int i = 0; i < 2; i++) {
        const unsigned char *v = rd->shard[k].v[i];
        uint32_t head[2];
        uint64_t sid;
        if (!v || rd->shard[k].len[i] < SNAP__SHARD_HEAD) continue;
        memcpy(head, v, 8);
        memcpy(&sid, v + 8, 8);
        if (head[0] == SNAP__SHARD && head[1] == k && sid == id) {
            *len = rd->shard[k].len[i] - SNAP__SHARD_HEAD;
            return v + SNAP__SHARD_HEAD;
        }
    }
    return NULL;
}

/* The payload of the newest manifest, assembled (malloc'd), or NULL with errstr. */
static unsigned char *snap__assemble(const snap__read *rd, size_t *len, char *errstr, size_t n) {
    const unsigned char *man = rd->man.v[0];
    uint32_t head[2];
    uint64_t id, total;
    if (rd->man.len[0] != 24 || (memcpy(head, man, 8), head[0]) != SNAP__MANIFEST) {
        err_set(errstr, n, "snapshot: the manifest is not one (corrupt, or another format)");
        return NULL;
    }
    memcpy(&id, man + 8, 8);
    memcpy(&total, man + 16, 8);
    if (head[1] == 0 || head[1] > SNAP__MAX_SHARDS || total > (uint64_t)head[1] * GRP__SHARD_BYTES) {
        err_set(errstr, n, "snapshot: the manifest's sizes are impossible (%" PRIu32 " shards, "
                "%" PRIu64 " bytes)", head[1], total);
        return NULL;
    }
    unsigned char *b = malloc(total ? total : 1);
    if (!b) {
        err_set(errstr, n, "snapshot: out of memory");
        return NULL;
    }
    size_t off = 0;
    for (uint32_t k = 0; k < head[1]; k++) {
        size_t sl = 0;
        const unsigned char *s = snap__shard(rd, k, id, &sl);
        if (!s || off + sl > total) {
            err_set(errstr, n, "snapshot: shard %" PRIu32 " of %" PRIu32 " is %s", k, head[1],
                    s ? "too long" : "missing (incomplete, or overwritten by a newer one)");
            free(b);
            return NULL;
        }
        memcpy(b + off, s, sl);
        off += sl;
    }
    if (off != total) {
        err_set(errstr, n, "snapshot: its shards hold %zu bytes, the manifest says %" PRIu64, off,
                total);
        free(b);
        return NULL;
    }
    *len = total;
    return b;
}

/* A checked payload's parts. */
typedef struct {
    snap__head h;
    const unsigned char *dense;   /* format 1: the parameters; format 2: the model's blob */
    size_t dense_len;
    const unsigned char *state;   /* format 2: the group's state (may be empty) */
    size_t state_len;
    const unsigned char *rows;
} snap__view;

/* The sections between the header and the rows (format 1: the dense parameters; 2: the
 * model's blob and the group's state) into v. Returns 0, or -1 with errstr. */
static int snap__sections(m3_model *m, const unsigned char *b, size_t len, snap__view *v,
                          char *errstr, size_t n) {
    wire_r r = {b, len, SNAP__HEAD, false};
    uint64_t bl = 0, sl = 0;
    if (v->h.version == 1) {   /* the dense parameters alone */
        bl = v->h.n_params * 4;
    } else {
        wire_get(&r, &bl, 8);
        if (r.short_ || bl != m3_blob_size(m))
            return err_set(errstr, n, "snapshot: its model blob has %" PRIu64 " bytes, this "
                           "model's %zu", bl, m3_blob_size(m));
    }
    if (bl > wire_left(&r)) return err_set(errstr, n, "snapshot: truncated (%zu bytes)", len);
    v->dense = b + r.off;
    v->dense_len = bl;
    r.off += bl;
    if (v->h.version != 1) {
        wire_get(&r, &sl, 8);
        if (r.short_ || sl > wire_left(&r))
            return err_set(errstr, n, "snapshot: truncated group state (%zu bytes)", len);
    }
    v->state = b + r.off;
    v->state_len = sl;
    v->rows = b + r.off + sl;
    return 0;
}

/* Check a payload against m: magic, version (2, or 1 without Adam's state), configuration,
 * sizes, checksum, no user row, finite values (format 2's model blob: m3_blob_load checks
 * its own). Returns 0 (*v filled) or -1 with errstr. */
static int snap__check(m3_model *m, const unsigned char *b, size_t len, snap__view *v,
                       char *errstr, size_t n) {
    snap__head *h = &v->h;
    wire_r r = {b, len, 0, false};
    wire_get(&r, h, sizeof *h);
    size_t d = (size_t)emb_dim(m3_emb_table(m));
    if (r.short_ || h->magic != SNAP__MAGIC)
        return err_set(errstr, n, "snapshot: not a snapshot (magic)");
    if (h->version != SNAP__VERSION && h->version != 1)
        return err_set(errstr, n, "snapshot: format version %" PRIu32 ", this worker reads 1 "
                       "and %u", h->version, SNAP__VERSION);
    if (h->cfg_hash != m3_cfg_hash(m))
        return err_set(errstr, n, "snapshot: configuration hash differs (another model configuration)");
    if (h->n_params != m3_n_params(m) || h->d != d)
        return err_set(errstr, n, "snapshot: %" PRIu64 " dense parameters of width %" PRIu32
                       ", this model has %zu of width %zu", h->n_params, h->d, m3_n_params(m), d);
    if (snap__sections(m, b, len, v, errstr, n) != 0) return -1;
    size_t rows_at = (size_t)(v->rows - b);
    if (h->n_rows > (len / (8 + 4 * d)) || len != rows_at + h->n_rows * (8 + 4 * d) + 8)
        return err_set(errstr, n, "snapshot: %zu bytes do not hold %" PRIu64 " rows", len, h->n_rows);
    uint64_t sum;
    memcpy(&sum, b + len - 8, 8);
    if (sum != hash_fnv64(HASH_FNV64_INIT, b, len - 8))
        return err_set(errstr, n, "snapshot: checksum mismatch (corrupt)");
    for (uint64_t i = 0; i < h->n_rows; i++) {
        uint64_t key;
        memcpy(&key, v->rows + i * (8 + 4 * d), 8);
        if (snap__user_key(key)) return err_set(errstr, n, "snapshot: holds a user row");
    }
    size_t from = h->version == 1 ? SNAP__HEAD : rows_at;
    for (size_t i = from; i + 4 <= len - 8; i += 4) {
        if (i >= rows_at && (i - rows_at) % (8 + 4 * d) < 8) continue;
        float f;
        memcpy(&f, b + i, 4);
        if (!isfinite(f)) return err_set(errstr, n, "snapshot: a value is not finite");
    }
    return 0;
}

/* Put a checked payload into m: format 2's model blob (parameters, Adam's moments and
 * step) or format 1's parameters, then the rows. Returns 0, or -1 with errstr (out of
 * memory, the model blob refused: m unchanged then). */
static int snap__apply(m3_model *m, const snap__view *v, char *errstr, size_t n) {
    emb_table *t = m3_emb_table(m);
    size_t d = v->h.d;
    char why[256];
    if (emb_reserve(t, emb_rows(t) + v->h.n_rows) != 0)
        return err_set(errstr, n, "snapshot: out of memory for %" PRIu64 " rows", v->h.n_rows);
    if (v->h.version == 1) memcpy(m3_params(m), v->dense, v->dense_len);
    else if (m3_blob_load(m, v->dense, v->dense_len, why, sizeof why) != 0)
        return err_set(errstr, n, "snapshot: %s", why);
    for (uint64_t i = 0; i < v->h.n_rows; i++) {
        uint64_t key;
        memcpy(&key, v->rows + i * (8 + 4 * d), 8);
        int64_t row = emb_lookup_init(t, key, NULL, NULL);
        if (row < 0) return err_set(errstr, n, "snapshot: out of memory");
        memcpy(emb_weights(t, row), v->rows + i * (8 + 4 * d) + 8, 4 * d);
        emb_set_dirty(t, row, 1);   /* the store keeps it at the next checkpoint */
    }
    return 0;
}

static void snap__free(snap__read *rd) {
    for (int i = 0; i < 2; i++) {
        free(rd->man.v[i]);
        for (int k = 0; k < SNAP__MAX_SHARDS; k++) free(rd->shard[k].v[i]);
    }
    free(rd);
}

int grp__snap_load(kio_reader *r, const char *topic, m3_model *m, grp__snap_meta *meta,
                   int timeout_ms, char *errstr, size_t n) {
    snap__read *rd = calloc(1, sizeof *rd);
    if (!rd) return err_set(errstr, n, "snapshot: out of memory");
    int rc = kio_reader_drain(r, topic, 0, KIO_FROM_BEGINNING, snap__take, rd, timeout_ms,
                              errstr, n);
    if (rc != 0 || rd->failed) {
        if (rc >= 0) err_set(errstr, n, "snapshot: out of memory reading %s", topic);
        snap__free(rd);
        return -1;
    }
    if (!rd->man.v[0]) {
        snap__free(rd);
        return 0;
    }
    size_t len = 0;
    snap__view v;
    memset(&v, 0, sizeof v);
    unsigned char *b = snap__assemble(rd, &len, errstr, n);
    snap__free(rd);
    rc = b && snap__check(m, b, len, &v, errstr, n) == 0;
    unsigned char *state = rc && v.state_len ? malloc(v.state_len) : NULL;
    if (rc && v.state_len && !state) rc = 0, err_set(errstr, n, "snapshot: out of memory");
    rc = rc && snap__apply(m, &v, errstr, n) == 0;
    if (rc) {
        meta->model_offset = v.h.model_offset;
        meta->writer = v.h.writer;
        meta->writer_seq_end = v.h.writer_seq_end;
        meta->written_ms = v.h.written_ms;
        meta->id = (uint64_t)v.h.written_ms << 20 | (v.h.writer & 0xfffffu);
        meta->rows = v.h.n_rows;
        meta->bytes = len;
        meta->version = v.h.version;
        if (state) memcpy(state, v.state, v.state_len);
        meta->state = state;
        meta->state_len = v.state_len;
        state = NULL;
    }
    free(state);
    free(b);
    return rc ? 1 : -1;
}
