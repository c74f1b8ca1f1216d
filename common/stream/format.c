/* format.c - framings of m3rec's messages and the input decoder (see format.h). */
#include "stream/format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

fmt_kind fmt_sniff(const void *buf, size_t len) {
    const unsigned char *p = buf;
    if (len == 0) return FMT_KIND_EMPTY;
    if (len >= 2 && p[0] == 0xC3 && p[1] == 0x01) return FMT_KIND_SINGLE;
    if (p[0] == 0x00 && len >= FMT_REGISTRY_HEADER_LEN) return FMT_KIND_REGISTRY;
    if (len >= 4 && memcmp(p, "Obj\x01", 4) == 0) return FMT_KIND_CONTAINER;
    size_t i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
    if (i < len && (p[i] == '{' || p[i] == '[')) return FMT_KIND_JSON;
    return FMT_KIND_OTHER;
}

int fmt_registry_id(const void *buf, size_t len, uint32_t *id) {
    const unsigned char *p = buf;
    if (len < FMT_REGISTRY_HEADER_LEN || p[0] != 0x00) return -1;
    *id = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    return 0;
}

void fmt_put_registry_header(unsigned char *p, uint32_t id) {
    p[0] = 0x00;
    p[1] = (unsigned char)(id >> 24);
    p[2] = (unsigned char)(id >> 16);
    p[3] = (unsigned char)(id >> 8);
    p[4] = (unsigned char)id;
}

const char *fmt_wrong_reason(fmt_kind k, const void *buf, size_t len, char *reason,
                             size_t reason_size) {
    const unsigned char *p = buf;
    uint32_t id = 0;
    switch (k) {
    case FMT_KIND_EMPTY: err_set(reason, reason_size, "empty message"); break;
    case FMT_KIND_SINGLE:
        err_set(reason, reason_size, "single-object encoding (C3 01): set input.format="
                "single-object or auto");
        break;
    case FMT_KIND_REGISTRY:
        fmt_registry_id(buf, len, &id);
        err_set(reason, reason_size, "registry framing, schema id %u: set input.format=registry"
                " or auto (with registry.url)", id);
        break;
    case FMT_KIND_CONTAINER:
        err_set(reason, reason_size, "an Avro object container file (Obj 01), not one message: "
                "send each record as a message of its own");
        break;
    case FMT_KIND_JSON:
        err_set(reason, reason_size, "JSON text, not Avro binary: encode with the schema in "
                "schemas/");
        break;
    case FMT_KIND_OTHER:
        err_set(reason, reason_size, "bad magic 0x%02x 0x%02x: neither single-object encoding "
                "(C3 01) nor registry framing (00 + schema id)", p[0], len > 1 ? p[1] : 0);
        break;
    }
    return reason;
}

int fmt_mode_parse(const char *name, int allow_auto, fmt_mode *out) {
    if (strcmp(name, "single-object") == 0) *out = FMT_SINGLE;
    else if (strcmp(name, "registry") == 0) *out = FMT_REGISTRY;
    else if (allow_auto && strcmp(name, "auto") == 0) *out = FMT_AUTO;
    else return -1;
    return 0;
}

int fmt_strategy_parse(const char *name, fmt_subject_strategy *out) {
    if (strcmp(name, "topic") == 0) *out = FMT_SUBJ_TOPIC;
    else if (strcmp(name, "record") == 0) *out = FMT_SUBJ_RECORD;
    else if (strcmp(name, "topic-record") == 0) *out = FMT_SUBJ_TOPIC_RECORD;
    else return -1;
    return 0;
}

int fmt_subject(fmt_subject_strategy s, const char *topic, const char *fullname, char *out,
                size_t out_size) {
    int n = s == FMT_SUBJ_TOPIC    ? snprintf(out, out_size, "%s-value", topic)
            : s == FMT_SUBJ_RECORD ? snprintf(out, out_size, "%s", fullname)
                                   : snprintf(out, out_size, "%s-%s", topic, fullname);
    return n < 0 || (size_t)n >= out_size ? -1 : 0;
}

/* ---- the input decoder ---- */

/* What became of a registry id: its writer fingerprint, or the reason it is refused. */
typedef struct {
    uint32_t id;
    uint64_t fp;
    char *refused;   /* owned; NULL when the id decodes */
} fmt__id;

struct fmt_decoder {
    fmt_mode mode;
    codec *codec;
    reg *reg;
    fmt__id *ids;
    size_t n, cap;
    size_t last;     /* index of the last id looked up: runs of one id are common */
};

fmt_decoder *fmt_decoder_new(fmt_mode mode, codec *c, reg *r) {
    fmt_decoder *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->mode = mode;
    d->codec = c;
    d->reg = r;
    return d;
}

void fmt_decoder_destroy(fmt_decoder *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) free(d->ids[i].refused);
    free(d->ids);
    free(d);
}

static fmt__id *fmt__find(fmt_decoder *d, uint32_t id) {
    if (d->last < d->n && d->ids[d->last].id == id) return &d->ids[d->last];
    for (size_t i = 0; i < d->n; i++)
        if (d->ids[i].id == id) {
            d->last = i;
            return &d->ids[i];
        }
    return NULL;
}

/* Remember id's outcome (refused: the reason, copied). NULL when out of memory. */
static fmt__id *fmt__keep(fmt_decoder *d, uint32_t id, uint64_t fp, const char *refused) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 16;
        fmt__id *v = realloc(d->ids, cap * sizeof *v);
        if (!v) return NULL;
        d->ids = v;
        d->cap = cap;
    }
    char *r = refused ? strdup(refused) : NULL;
    if (refused && !r) return NULL;
    d->ids[d->n] = (fmt__id){id, fp, r};
    d->last = d->n;
    return &d->ids[d->n++];
}

/* Resolve id through the registry and the codec. Returns the entry (refused or not), or
 * NULL with reason when the message must wait. */
static fmt__id *fmt__resolve(fmt_decoder *d, uint32_t id, char *reason, size_t n) {
    const char *schema;
    size_t len;
    char why[CODEC_REASON_MAX + 96];
    reg_status st = reg_schema(d->reg, id, &schema, &len, why, sizeof why);
    if (st == REG_UNAVAILABLE) {
        err_set(reason, n, "%s", why);
        return NULL;
    }
    fmt__id *e = NULL;
    if (st == REG_OK) {
        m3_ev_type type;
        uint64_t fp;
        char cerr[CODEC_REASON_MAX];
        if (codec_add_writer(d->codec, schema, len, &type, &fp, cerr, sizeof cerr) == 0) {
            e = fmt__keep(d, id, fp, NULL);
        } else {
            snprintf(why, sizeof why, "schema id %u: %s", id, cerr);
            e = fmt__keep(d, id, 0, why);
        }
    } else {
        e = fmt__keep(d, id, 0, st == REG_NOT_FOUND ? (snprintf(why, sizeof why,
                      "unknown schema id %u (the registry has none)", id), why) : why);
    }
    if (!e) err_set(reason, n, "schema id %u: out of memory", id);
    return e;
}

fmt_result fmt_decode(fmt_decoder *d, const void *buf, size_t len, m3_event *out, char *reason,
                      size_t reason_size) {
    memset(out, 0, sizeof *out);
    fmt_kind k = fmt_sniff(buf, len);
    /* single-object mode leaves what is neither framing to the codec: its own reason */
    if ((k == FMT_KIND_SINGLE && d->mode != FMT_REGISTRY) ||
        (k == FMT_KIND_OTHER && d->mode == FMT_SINGLE))
        return codec_decode(d->codec, buf, len, out, reason, reason_size) == 0 ? FMT_OK
                                                                             : FMT_REFUSED;
    if (k != FMT_KIND_REGISTRY || d->mode == FMT_SINGLE) {
        fmt_wrong_reason(k, buf, len, reason, reason_size);
        return FMT_REFUSED;
    }
    uint32_t id = 0;
    fmt_registry_id(buf, len, &id);
    if (!d->reg) {
        err_set(reason, reason_size, "registry framing, schema id %u: set registry.url", id);
        return FMT_REFUSED;
    }
    fmt__id *e = fmt__find(d, id);
    if (!e && !(e = fmt__resolve(d, id, reason, reason_size))) return FMT_WAIT;
    if (e->refused) {
        err_set(reason, reason_size, "%s", e->refused);
        return FMT_REFUSED;
    }
    const unsigned char *p = buf;
    return codec_decode_datum(d->codec, e->fp, p + FMT_REGISTRY_HEADER_LEN,
                              len - FMT_REGISTRY_HEADER_LEN, out, reason, reason_size) == 0
               ? FMT_OK
               : FMT_REFUSED;
}
