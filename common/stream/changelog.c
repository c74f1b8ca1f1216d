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
    chg_meta *meta;            /* (n_topics x partitions): counts; watermark as restored */
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
    if (!c || !(c->owned = calloc((size_t)partitions, 1)) || km_resize(&c->users, 1024) != 0 ||
        !(c->meta = calloc((size_t)n_topics * (size_t)partitions, sizeof *c->meta))) {
        chg_destroy(c);
        err_set(errstr, n, "changelog: out of memory");
        return NULL;
    }
    for (int i = 0; i < n_topics * partitions; i++) c->meta[i].next_offset = -1;
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
    free(c->meta);
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

int chg_n_sources(const chg *c) {
    return c->n_topics * c->partitions;
}

void chg_count(chg *c, int src, int type) {
    if (src < 0 || src >= chg_n_sources(c)) return;
    chg_meta *m = &c->meta[src];
    m->impressions += type == M3_EV_IMPRESSION;
    m->conversions += type == M3_EV_CONVERSION;
    m->requests += type == M3_EV_SCORE_REQUEST;
}

void chg_offset(chg *c, int src, int64_t next_offset) {
    if (src >= 0 && src < chg_n_sources(c)) c->meta[src].next_offset = next_offset;
}

const chg_meta *chg_source_meta(const chg *c, int src) {
    return src >= 0 && src < chg_n_sources(c) ? &c->meta[src] : NULL;
}

int chg_put_meta(chg *c, int src, int64_t watermark, uint64_t next_seq, char *errstr, size_t n) {
    if (src < 0 || src >= chg_n_sources(c)) return 0;
    chg_meta m = c->meta[src];
    m.watermark = watermark;
    m.next_seq = next_seq;
    return chg_put_src(c, CHG_META, src, NULL, &m, sizeof m, errstr, n);
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
    default:   /* the counts follow the partition; the join takes the watermark */
        memcpy(&c->meta[src], r.val, sizeof c->meta[src]);
        return s->meta(s->ud, src, c->meta[src].watermark, c->meta[src].next_seq, errstr, n);
    }
}

static void chg__collect_free(chg__collect *k) {
    for (size_t i = 0; i < k->n; i++) free(k->items[i].val);
    free(k->items);
    km_free(&k->index);
}

/* Read the partitions' records (a reader of their own, so every partition is read from
 * its beginning), each kept in its collector, until every one is at its end. Returns 0, or
 * -1 with errstr (a refused record, a reader error, the timeout). */
static int chg__read(chg *c, const kio_prop *props, int n_props, chg__collect *k, int n_parts,
                     int timeout_ms, char *errstr, size_t n) {
    kio_reader *rd = kio_reader_new(props, n_props, 1, errstr, n);
    if (!rd) return -1;
    int rc = 0;
    for (int i = 0; i < n_parts && rc == 0; i++)
        rc = kio_reader_add(rd, c->topic, k[i].partition, KIO_FROM_BEGINNING, errstr, n);
    int64_t deadline = clk_mono_ms() + timeout_ms;
    rd_kafka_message_t *msgs[256];
    for (int done = 0; rc == 0 && !done;) {
        if (clk_mono_ms() > deadline) {
            rc = err_set(errstr, n, "changelog %s: not read to its end within %d ms", c->topic,
                         timeout_ms);
            break;
        }
        int got = kio_reader_poll(rd, msgs, 256, 100, errstr, n);
        if (got < 0) rc = -1;
        for (int i = 0; i < got; i++) {
            int j = 0;
            while (j < n_parts && k[j].partition != msgs[i]->partition) j++;
            if (rc == 0 && j < n_parts && chg__collect_fn(&k[j], msgs[i]) != 0)
                rc = err_set(errstr, n, "%s", k[j].err);
            rd_kafka_message_destroy(msgs[i]);
        }
        done = 1;
        for (int j = 0; j < n_parts; j++) done &= kio_reader_at_end(rd, c->topic, k[j].partition);
    }
    kio_reader_destroy(rd);
    return rc;
}

/* Partition k->partition's meta records against the group's offsets expect[] (see
 * chg_restore): 0 (install), 1 (adopt the local state), -1 with errstr (refused). */
static int chg__check_offsets(const chg *c, const chg__collect *k, const int64_t *expect,
                              char *errstr, size_t n) {
    int metas = 0, group = 0;
    for (int t = 0; t < c->n_topics; t++) {
        int src = t * c->partitions + k->partition;
        int64_t want = expect[src] >= 0 ? expect[src] : -1, have = -1;
        group |= want >= 0;
        char key[16];
        int kl = snprintf(key, sizeof key, "m/%d", t);
        uint64_t h = hash_fnv64(HASH_FNV64_INIT, key, (size_t)kl);
        int64_t row = km_find(&k->index, h);
        const chg__item *it = row >= 0 ? &k->items[row] : NULL;
        if (it && it->val && it->len == chg_value_bytes(CHG_META_BYTES)) {
            chg_meta m;
            memcpy(&m, it->val + CHG_HEAD, sizeof m);
            have = m.next_offset >= 0 ? m.next_offset : -1;
            metas++;
        }
        if (it && have != want)
            return err_set(errstr, n, "changelog %s [%d] holds the state of input topic %d up to "
                           "offset %lld, but the group's committed offset is %lld: it was "
                           "written by another group on these topics, or the group's offsets "
                           "were reset (use another topic.prefix, or delete %s)", c->topic,
                           k->partition, t, (long long)have, (long long)want, c->topic);
    }
    return metas == 0 && group ? 1 : 0;
}

int chg_restore(chg *c, const kio_prop *props, int n_props, const int *parts, int n_parts,
                const int64_t *expect, const chg_sink *sink, int timeout_ms,
                chg_restore_stats *st, char *errstr, size_t n) {
    double t0 = clk_mono_s();
    chg__collect *k = calloc((size_t)(n_parts > 0 ? n_parts : 1), sizeof *k);
    if (!k) return err_set(errstr, n, "out of memory");
    int rc = 0;
    for (int i = 0; i < n_parts; i++) {
        memset(&st[i], 0, sizeof st[i]);
        k[i] = (chg__collect){.c = c, .partition = parts[i], .st = &st[i]};
        if (parts[i] < 0 || parts[i] >= c->partitions)
            rc = err_set(errstr, n, "changelog: partition %d of %d", parts[i], c->partitions);
        else if (km_resize(&k[i].index, 1024) != 0)
            rc = err_set(errstr, n, "out of memory");
    }
    if (rc == 0 && n_parts > 0) rc = chg__read(c, props, n_props, k, n_parts, timeout_ms, errstr, n);
    for (int i = 0; rc == 0 && i < n_parts; i++) {
        int a = chg__check_offsets(c, &k[i], expect, errstr, n);
        if (a < 0) rc = -1;
        st[i].adopted = a == 1;
        for (int t = 0; a == 1 && t < c->n_topics; t++) {   /* its meta follows the group from now */
            int src = t * c->partitions + parts[i];
            c->meta[src].next_offset = expect[src] >= 0 ? expect[src] : -1;
        }
    }
    /* everything read is valid: only now is the local state of the partitions replaced */
    for (int i = 0; rc == 0 && i < n_parts; i++) {
        if (st[i].adopted) continue;
        for (int t = 0; rc == 0 && t < c->n_topics; t++)
            rc = sink->clear(sink->ud, t * c->partitions + parts[i], errstr, n);
        /* in the order their keys first appear: pending entries keep their expiry order */
        for (size_t j = 0; rc == 0 && j < k[i].n; j++)
            if (k[i].items[j].val)
                rc = chg__install(c, &k[i].items[j], parts[i], sink, &st[i], errstr, n);
    }
    double ms = (clk_mono_s() - t0) * 1e3;
    for (int i = 0; i < n_parts; i++) {
        st[i].ms = ms;
        chg__collect_free(&k[i]);
    }
    free(k);
    return rc == 0 ? 0 : -1;
}
