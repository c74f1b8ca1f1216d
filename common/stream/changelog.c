/* changelog.c - the changelog's records, the writer of a checkpoint's records and the
 * restore of a partition (see changelog.h). */
#include "stream/changelog.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/wire.h"
#include "engine/keymap.h"

static const unsigned char chg__magic[4] = {'M', '3', 'C', 'L'};

uint64_t chg_cfg_hash(uint64_t model_hash, const char *layout) {
    uint64_t h = hash_fnv64(HASH_FNV64_INIT, &model_hash, sizeof model_hash);
    return hash_fnv64(h, layout, strlen(layout));
}

/* ---- keys and values ---- */

size_t chg_key(const chg_rec *r, char *buf, size_t cap) {
    int n;
    switch (r->kind) {
    case CHG_USER:
    case CHG_ROW:
        n = snprintf(buf, cap, "%c/%016" PRIx64, r->kind, r->key);
        break;
    case CHG_PEND:
        n = snprintf(buf, cap, "p/%d/%s", r->topic, r->id);
        break;
    case CHG_LATE:
    case CHG_META:
        n = snprintf(buf, cap, "%c/%d", r->kind, r->topic);
        break;
    default:
        return 0;
    }
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t chg_encode(int kind, uint64_t cfg_hash, const void *payload, size_t len, void *buf,
                  size_t cap) {
    if (len > CHG_PAYLOAD_MAX || cap < chg_value_bytes(len)) return 0;
    wire_w w = {buf, 0};
    uint16_t ver = CHG_FORMAT;
    uint8_t k = (uint8_t)kind, pad = 0;
    uint32_t l = (uint32_t)len, pad4 = 0;
    wire_put(&w, chg__magic, 4);
    wire_put(&w, &ver, 2);
    wire_put(&w, &k, 1);
    wire_put(&w, &pad, 1);
    wire_put(&w, &cfg_hash, 8);
    wire_put(&w, &l, 4);
    wire_put(&w, &pad4, 4);
    wire_put(&w, payload, len);
    uint64_t sum = hash_fnv64(HASH_FNV64_INIT, buf, w.off);
    wire_put(&w, &sum, 8);
    return w.off;
}

/* Parse the key into out (kind, key or topic and id). Returns 0, or -1 with errstr. */
static int chg__parse_key(const char *k, size_t klen, chg_rec *out, char *errstr, size_t n) {
    char s[CHG_KEY_MAX + 1];
    if (klen < 3 || klen > CHG_KEY_MAX || k[1] != '/' || memchr(k, '\0', klen))
        return err_set(errstr, n, "malformed key (%zu bytes)", klen);
    memcpy(s, k, klen);
    s[klen] = '\0';
    out->kind = s[0];
    char *end = NULL;
    switch (out->kind) {
    case CHG_USER:
    case CHG_ROW:
        if (klen != 18) break;
        out->key = strtoull(s + 2, &end, 16);
        return *end ? err_set(errstr, n, "malformed key '%s'", s) : 0;
    case CHG_LATE:
    case CHG_META:
    case CHG_PEND: {
        long t = strtol(s + 2, &end, 10);
        if (end == s + 2 || t < 0 || t > 1000) break;
        out->topic = (int)t;
        if (out->kind != CHG_PEND) return *end ? err_set(errstr, n, "malformed key '%s'", s) : 0;
        if (*end != '/' || !end[1] || strlen(end + 1) >= M3_ID_MAX) break;
        strcpy(out->id, end + 1);
        return 0;
    }
    default:
        return err_set(errstr, n, "unknown record kind '%c' in key", s[0]);
    }
    return err_set(errstr, n, "malformed key '%s'", s);
}

int chg_decode(const void *key, size_t klen, const void *val, size_t vlen, uint64_t cfg_hash,
               chg_rec *out, char *errstr, size_t n) {
    memset(out, 0, sizeof *out);
    if (!key || chg__parse_key(key, klen, out, errstr, n) != 0) {
        if (!key) err_set(errstr, n, "record without a key");
        return -1;
    }
    if (!val || vlen == 0) {
        if (out->kind != CHG_PEND)
            return err_set(errstr, n, "tombstone of a '%c' record (only pending entries are "
                           "deleted)", out->kind);
        return 0;
    }
    if (vlen < CHG_HEAD + CHG_TAIL)
        return err_set(errstr, n, "value of %zu bytes is shorter than a record's header", vlen);
    wire_r r = {val, vlen, 0, false};
    unsigned char magic[4];
    uint16_t ver;
    uint8_t kind, pad;
    uint64_t hash, sum;
    uint32_t len, pad4;
    wire_get(&r, magic, 4);
    wire_get(&r, &ver, 2);
    wire_get(&r, &kind, 1);
    wire_get(&r, &pad, 1);
    wire_get(&r, &hash, 8);
    wire_get(&r, &len, 4);
    wire_get(&r, &pad4, 4);
    if (memcmp(magic, chg__magic, 4) != 0)
        return err_set(errstr, n, "not a changelog record (magic %02x%02x%02x%02x)", magic[0],
                       magic[1], magic[2], magic[3]);
    if (ver != CHG_FORMAT)
        return err_set(errstr, n, "changelog format %u, this build reads %d", ver, CHG_FORMAT);
    if (hash != cfg_hash)
        return err_set(errstr, n, "written by another configuration (hash %016" PRIx64 ", this "
                       "one %016" PRIx64 ": model, features or input layout differ)", hash,
                       cfg_hash);
    if (kind != out->kind)
        return err_set(errstr, n, "value of kind '%c' under a '%c' key", kind, out->kind);
    if ((size_t)len != vlen - CHG_HEAD - CHG_TAIL)
        return err_set(errstr, n, "payload length %u does not match the value's %zu bytes", len,
                       vlen);
    memcpy(&sum, (const unsigned char *)val + vlen - CHG_TAIL, 8);
    if (sum != hash_fnv64(HASH_FNV64_INIT, val, vlen - CHG_TAIL))
        return err_set(errstr, n, "checksum mismatch (corrupt record)");
    if (kind == CHG_META && len != CHG_META_BYTES)
        return err_set(errstr, n, "meta record of %u bytes, expected %d", len, CHG_META_BYTES);
    out->val = (const unsigned char *)val + CHG_HEAD;
    out->len = len;
    return 0;
}

/* ---- the writer ---- */

struct chg {
    kio_producer *p;
    char topic[256];
    int n_topics, partitions;
    uint64_t hash;
    unsigned char *owned;      /* (partitions) */
    km_map users;              /* feature key -> partition */
    size_t n_users;
    unsigned char *vbuf;
    size_t vcap;
    chg_stats st;
};

chg *chg_new(kio_producer *p, const char *topic, int n_topics, int partitions,
             uint64_t cfg_hash, char *errstr, size_t n) {
    if (n_topics < 1 || partitions < 1 || strlen(topic) >= sizeof ((chg *)0)->topic) {
        err_set(errstr, n, "changelog: bad topic or sizes");
        return NULL;
    }
    chg *c = calloc(1, sizeof *c);
    if (!c || !(c->owned = calloc((size_t)partitions, 1)) || km_resize(&c->users, 1024) != 0) {
        chg_destroy(c);
        err_set(errstr, n, "changelog: out of memory");
        return NULL;
    }
    c->p = p;
    strcpy(c->topic, topic);
    c->n_topics = n_topics;
    c->partitions = partitions;
    c->hash = cfg_hash;
    return c;
}

void chg_destroy(chg *c) {
    if (!c) return;
    km_free(&c->users);
    free(c->owned);
    free(c->vbuf);
    free(c);
}

void chg_own(chg *c, int partition, int own) {
    if (partition >= 0 && partition < c->partitions) c->owned[partition] = own != 0;
}

int chg_owned(const chg *c, int partition) {
    return partition >= 0 && partition < c->partitions && c->owned[partition];
}

int chg_note_user(chg *c, uint64_t key, int partition) {
    size_t h = km_probe(&c->users, key);
    if (c->users.slots[h].row != KM_EMPTY) {
        c->users.slots[h].row = (uint32_t)partition;
        return 0;
    }
    if (km_insert(&c->users, key, (uint32_t)partition, h, c->n_users + 1) != 0) return -1;
    c->n_users++;
    return 0;
}

int chg_user_partition(const chg *c, uint64_t key) {
    return (int)km_find(&c->users, key);
}

static int chg__put(chg *c, const chg_rec *r, int partition, char *errstr, size_t n) {
    if (!chg_owned(c, partition)) {
        c->st.dropped++;
        return 0;
    }
    char key[CHG_KEY_MAX];
    size_t klen = chg_key(r, key, sizeof key);
    if (!klen) return err_set(errstr, n, "changelog: key of a '%c' record does not fit", r->kind);
    size_t vlen = 0;
    if (r->val) {
        size_t need = chg_value_bytes(r->len);
        if (need > c->vcap) {
            unsigned char *nb = realloc(c->vbuf, need);
            if (!nb) return err_set(errstr, n, "changelog: out of memory");
            c->vbuf = nb;
            c->vcap = need;
        }
        vlen = chg_encode(r->kind, c->hash, r->val, r->len, c->vbuf, c->vcap);
        if (!vlen) return err_set(errstr, n, "changelog: a '%c' record of %zu bytes is too large",
                                  r->kind, r->len);
    }
    if (kio_produce_to(c->p, c->topic, partition, key, klen, r->val ? c->vbuf : NULL, vlen,
                       errstr, n) != 0)
        return -1;
    c->st.written++;
    c->st.tombstones += r->val == NULL;
    c->st.bytes += (long long)(klen + vlen);
    return 1;
}

int chg_put_key(chg *c, int kind, uint64_t key, const void *val, size_t len, char *errstr,
                size_t n) {
    chg_rec r = {.kind = kind, .key = key, .val = val, .len = len};
    return chg__put(c, &r, chg_user_partition(c, key), errstr, n);
}

int chg_put_src(chg *c, int kind, int src, const char *id, const void *val, size_t len,
                char *errstr, size_t n) {
    chg_rec r = {.kind = kind, .topic = src / c->partitions, .val = val, .len = len};
    if (id) snprintf(r.id, sizeof r.id, "%s", id);
    return chg__put(c, &r, src % c->partitions, errstr, n);
}

void chg_stats_get(const chg *c, chg_stats *out) {
    *out = c->st;
}

/* ---- restore ---- */

/* The partition's records by key, the last value of each (a tombstone empties it). */
typedef struct {
    char key[CHG_KEY_MAX + 1];
    unsigned char *val;        /* NULL: deleted */
    size_t len;
} chg__item;

typedef struct {
    chg *c;
    int partition;
    km_map index;              /* fnv64(key) -> item */
    chg__item *items;
    size_t n, cap;
    chg_restore_stats *st;
    char err[512];
} chg__collect;

static int chg__keep(chg__collect *k, const char *key, size_t klen, const void *val,
                     size_t vlen) {
    uint64_t h = hash_fnv64(HASH_FNV64_INIT, key, klen);
    size_t slot = km_probe(&k->index, h);
    chg__item *it;
    if (k->index.slots[slot].row != KM_EMPTY) {
        it = &k->items[k->index.slots[slot].row];
        if (strlen(it->key) != klen || memcmp(it->key, key, klen) != 0)
            return err_set(k->err, sizeof k->err, "two changelog keys share a 64-bit hash");
        free(it->val);
        it->val = NULL;
    } else {
        if (k->n == k->cap) {
            size_t nc = k->cap ? 2 * k->cap : 1024;
            chg__item *ni = realloc(k->items, nc * sizeof *ni);
            if (!ni) return err_set(k->err, sizeof k->err, "out of memory");
            k->items = ni;
            k->cap = nc;
        }
        if (km_insert(&k->index, h, (uint32_t)k->n, slot, k->n + 1) != 0)
            return err_set(k->err, sizeof k->err, "out of memory");
        it = &k->items[k->n++];
        memcpy(it->key, key, klen);
        it->key[klen] = '\0';
        it->val = NULL;
    }
    it->len = vlen;
    if (vlen && !(it->val = malloc(vlen))) return err_set(k->err, sizeof k->err, "out of memory");
    if (vlen) memcpy(it->val, val, vlen);
    return 0;
}

/* kio_reader_fn: check a record (refused: stop) and keep its value. */
static int chg__collect_fn(void *ud, const rd_kafka_message_t *m) {
    chg__collect *k = ud;
    chg_rec r;
    char why[400];
    k->st->records++;
    if (chg_decode(m->key, m->key_len, m->payload, m->len, k->c->hash, &r, why, sizeof why) != 0) {
        k->st->refused++;
        err_set(k->err, sizeof k->err, "changelog %s [%d] offset %" PRId64 " refused: %s",
                k->c->topic, k->partition, m->offset, why);
        return 1;
    }
    if (r.kind == CHG_PEND || r.kind == CHG_LATE || r.kind == CHG_META) {
        if (r.topic >= k->c->n_topics) {
            k->st->refused++;
            err_set(k->err, sizeof k->err, "changelog %s [%d] offset %" PRId64 " refused: input "
                    "topic %d of %d", k->c->topic, k->partition, m->offset, r.topic,
                    k->c->n_topics);
            return 1;
        }
    }
    k->st->tombstones += r.val == NULL;
    return chg__keep(k, m->key, m->key_len, m->payload, m->len) != 0 ? 1 : 0;
}

/* Install one kept record into the sink. Returns 0, or -1 with errstr. */
static int chg__install(chg *c, const chg__item *it, int partition, const chg_sink *s,
                        chg_restore_stats *st, char *errstr, size_t n) {
    chg_rec r;
    if (chg_decode(it->key, strlen(it->key), it->val, it->len, c->hash, &r, errstr, n) != 0)
        return -1;
    int src = r.topic * c->partitions + partition;
    switch (r.kind) {
    case CHG_USER:
        st->users++;
        if (chg_note_user(c, r.key, partition) != 0) return err_set(errstr, n, "out of memory");
        return s->user(s->ud, r.key, r.val, r.len, errstr, n);
    case CHG_ROW:
        st->rows++;
        if (chg_note_user(c, r.key, partition) != 0) return err_set(errstr, n, "out of memory");
        return s->row(s->ud, r.key, r.val, r.len, errstr, n);
    case CHG_PEND:
        st->pending++;
        return s->pend(s->ud, src, r.id, r.val, r.len, errstr, n);
    case CHG_LATE:
        return s->late(s->ud, src, r.val, r.len, errstr, n);
    default: {
        int64_t wm;
        uint64_t seq;
        memcpy(&wm, r.val, 8);
        memcpy(&seq, r.val + 8, 8);
        return s->meta(s->ud, src, wm, seq, errstr, n);
    }
    }
}

static void chg__collect_free(chg__collect *k) {
    for (size_t i = 0; i < k->n; i++) free(k->items[i].val);
    free(k->items);
    km_free(&k->index);
}

int chg_restore(chg *c, kio_reader *rd, int partition, const chg_sink *sink, int timeout_ms,
                chg_restore_stats *st, char *errstr, size_t n) {
    memset(st, 0, sizeof *st);
    double t0 = clk_mono_s();
    chg__collect k = {.c = c, .partition = partition, .st = st};
    if (partition < 0 || partition >= c->partitions)
        return err_set(errstr, n, "changelog: partition %d of %d", partition, c->partitions);
    if (km_resize(&k.index, 1024) != 0) return err_set(errstr, n, "out of memory");
    int rc = kio_reader_drain(rd, c->topic, partition, KIO_FROM_BEGINNING, chg__collect_fn, &k,
                              timeout_ms, errstr, n);
    if (rc > 0) err_set(errstr, n, "%s", k.err);
    /* everything read is valid: only now is the local state of the partition replaced */
    for (int t = 0; rc == 0 && t < c->n_topics; t++)
        rc = sink->clear(sink->ud, t * c->partitions + partition, errstr, n);
    /* pending entries in the order they were last written, which keeps their expiry
     * order (ties by insertion) as the writer had it */
    for (size_t i = 0; rc == 0 && i < k.n; i++)
        if (k.items[i].val) rc = chg__install(c, &k.items[i], partition, sink, st, errstr, n);
    chg__collect_free(&k);
    st->ms = (clk_mono_s() - t0) * 1e3;
    return rc == 0 ? 0 : -1;
}
