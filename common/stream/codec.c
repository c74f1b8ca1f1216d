/* codec.c - Avro single-object encoding of m3rec's messages to and from event.h structs.
 *
 * Avro C is used only at start-up: it parses the embedded schemas, which this file then
 * checks against the field layout the hand-written datum code below expects, and walks
 * to produce each schema's Parsing Canonical Form (PCF) and CRC-64-AVRO fingerprint.
 * Per message, the datum is read and written by hand: every length is checked against
 * the bytes that remain and the capacity of its destination before anything is copied.
 * Why: docs/contract.md, "Why a hand-written datum codec". */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <avro.h>

#include "base/buf.h"
#include "base/hash.h"
#include "base/json.h"
#include "stream/codec.h"

extern const char m3_embed_Impression[];
extern const size_t m3_embed_Impression_len;
extern const char m3_embed_Conversion[];
extern const size_t m3_embed_Conversion_len;
extern const char m3_embed_ScoreRequest[];
extern const size_t m3_embed_ScoreRequest_len;
extern const char m3_embed_Prediction[];
extern const size_t m3_embed_Prediction_len;

#define CODEC__NTYPES (M3_EV_PREDICTION + 1)
#define CODEC__MAGIC0 0xC3
#define CODEC__MAGIC1 0x01

typedef struct codec__writer codec__writer;

struct codec {
    char *pcf[CODEC__NTYPES];       /* Parsing Canonical Form, indexed by m3_ev_type */
    uint64_t fp[CODEC__NTYPES];     /* CRC-64-AVRO of pcf */
    avro_schema_t rs[CODEC__NTYPES];/* the reader schemas */
    json_node *rj[CODEC__NTYPES];   /* their JSON (Avro C keeps no field defaults) */
    codec__writer *wr;              /* other writer schemas, sorted by fingerprint */
    size_t n_wr, cap_wr;
};

static const char *codec__names[CODEC__NTYPES] = {
    [M3_EV_NONE] = "?",
    [M3_EV_IMPRESSION] = "Impression",
    [M3_EV_CONVERSION] = "Conversion",
    [M3_EV_SCORE_REQUEST] = "ScoreRequest",
    [M3_EV_PREDICTION] = "Prediction",
};

const char *codec_type_name(m3_ev_type t) {
    return (int)t > M3_EV_NONE && (int)t < CODEC__NTYPES ? codec__names[t] : "?";
}

/* ---------------------------------------------------------------------------------- */
/* CRC-64-AVRO                                                                         */

/* The spec's table-driven Rabin fingerprint, one bit at a time: this runs only at
 * start-up, and needs no table to initialize (so no thread-safety question). */
#define CODEC__EMPTY64 0xc15d213aa4d7a795ULL

uint64_t codec_crc64_avro(const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t fp = CODEC__EMPTY64;
    for (size_t i = 0; i < len; i++) {
        fp ^= p[i];
        for (int k = 0; k < 8; k++) fp = (fp >> 1) ^ (CODEC__EMPTY64 & (0 - (fp & 1)));
    }
    return fp;
}

/* ---------------------------------------------------------------------------------- */
/* Parsing Canonical Form                                                              */

typedef struct {
    buf out;
    avro_schema_t seen[64];         /* named types already written out in full */
    int n_seen;
} codec__pcfw;

/* A JSON string. Avro names and symbols never need escapes; quotes and backslashes
 * are escaped anyway so a PCF is always valid JSON. */
static void codec__pcf_str(codec__pcfw *b, const char *s) {
    buf_putc(&b->out, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') buf_putc(&b->out, '\\');
        buf_putc(&b->out, *s);
    }
    buf_puts(&b->out, "\"");
}

/* [FULLNAMES]: a name with a dot is already full; otherwise prefix the namespace. */
static void codec__pcf_fullname(codec__pcfw *b, avro_schema_t s) {
    const char *name = avro_schema_name(s), *ns = avro_schema_namespace(s);
    if (!name) name = "";
    buf_puts(&b->out, "\"");
    if (!strchr(name, '.') && ns && *ns) {
        buf_puts(&b->out, ns);
        buf_puts(&b->out, ".");
    }
    buf_puts(&b->out, name);
    buf_puts(&b->out, "\"");
}

/* [PRIMITIVES] [FULLNAMES] [STRIP] [ORDER] [STRINGS] [INTEGERS] [WHITESPACE]: only
 * name, type, fields, symbols, items, values, size are kept, in that order; a named
 * type is written in full once, then by its full name. Returns -1 on an unknown type. */
static int codec__pcf(codec__pcfw *b, avro_schema_t s, int depth) {
    if (!s || depth > 64) return -1;
    switch (avro_typeof(s)) {
    case AVRO_STRING: buf_puts(&b->out, "\"string\""); return 0;
    case AVRO_BYTES: buf_puts(&b->out, "\"bytes\""); return 0;
    case AVRO_INT32: buf_puts(&b->out, "\"int\""); return 0;
    case AVRO_INT64: buf_puts(&b->out, "\"long\""); return 0;
    case AVRO_FLOAT: buf_puts(&b->out, "\"float\""); return 0;
    case AVRO_DOUBLE: buf_puts(&b->out, "\"double\""); return 0;
    case AVRO_BOOLEAN: buf_puts(&b->out, "\"boolean\""); return 0;
    case AVRO_NULL: buf_puts(&b->out, "\"null\""); return 0;
    case AVRO_LINK: codec__pcf_fullname(b, avro_schema_link_target(s)); return 0;
    case AVRO_MAP:
        buf_puts(&b->out, "{\"type\":\"map\",\"values\":");
        if (codec__pcf(b, avro_schema_map_values(s), depth + 1)) return -1;
        buf_puts(&b->out, "}");
        return 0;
    case AVRO_ARRAY:
        buf_puts(&b->out, "{\"type\":\"array\",\"items\":");
        if (codec__pcf(b, avro_schema_array_items(s), depth + 1)) return -1;
        buf_puts(&b->out, "}");
        return 0;
    case AVRO_UNION:
        buf_puts(&b->out, "[");
        for (size_t i = 0; i < avro_schema_union_size(s); i++) {
            if (i) buf_puts(&b->out, ",");
            if (codec__pcf(b, avro_schema_union_branch(s, (int)i), depth + 1)) return -1;
        }
        buf_puts(&b->out, "]");
        return 0;
    case AVRO_RECORD:
    case AVRO_ENUM:
    case AVRO_FIXED:
        for (int i = 0; i < b->n_seen; i++)
            if (b->seen[i] == s) { codec__pcf_fullname(b, s); return 0; }
        if (b->n_seen < (int)(sizeof b->seen / sizeof b->seen[0])) b->seen[b->n_seen++] = s;
        buf_puts(&b->out, "{\"name\":");
        codec__pcf_fullname(b, s);
        if (is_avro_record(s)) {
            buf_puts(&b->out, ",\"type\":\"record\",\"fields\":[");
            for (size_t i = 0; i < avro_schema_record_size(s); i++) {
                if (i) buf_puts(&b->out, ",");
                buf_puts(&b->out, "{\"name\":");
                codec__pcf_str(b, avro_schema_record_field_name(s, (int)i));
                buf_puts(&b->out, ",\"type\":");
                if (codec__pcf(b, avro_schema_record_field_get_by_index(s, (int)i), depth + 1))
                    return -1;
                buf_puts(&b->out, "}");
            }
            buf_puts(&b->out, "]}");
        } else if (is_avro_enum(s)) {
            buf_puts(&b->out, ",\"type\":\"enum\",\"symbols\":[");
            for (int i = 0; i < avro_schema_enum_number_of_symbols(s); i++) {
                if (i) buf_puts(&b->out, ",");
                codec__pcf_str(b, avro_schema_enum_get(s, i));
            }
            buf_puts(&b->out, "]}");
        } else {
            buf_printf(&b->out, ",\"type\":\"fixed\",\"size\":%lld}",
                       (long long)avro_schema_fixed_size(s));
        }
        return 0;
    }
    return -1;
}

/* The PCF of a parsed schema: a malloc'd string, or NULL with errstr filled. */
static char *codec__pcf_of(avro_schema_t s, char *errstr, size_t errstr_size) {
    codec__pcfw b;
    memset(&b, 0, sizeof b);
    if (codec__pcf(&b, s, 0) != 0 || b.out.oom) {
        snprintf(errstr, errstr_size, "%s",
                 b.out.oom ? "out of memory" : "unsupported schema type");
        buf_free(&b.out);
        return NULL;
    }
    return buf_take(&b.out);
}

char *codec_pcf_from_json(const char *json, size_t len, char *errstr, size_t errstr_size) {
    avro_schema_t s;
    if (avro_schema_from_json_length(json, len, &s) != 0) {
        snprintf(errstr, errstr_size, "invalid schema: %s", avro_strerror());
        return NULL;
    }
    char *pcf = codec__pcf_of(s, errstr, errstr_size);
    avro_schema_decref(s);
    return pcf;
}

/* ---------------------------------------------------------------------------------- */
/* The field layout the datum code is written for                                      */

typedef enum { K_STRING, K_LONG, K_FLOAT, K_BOOL, K_MAP_LONG, K_MAP_FLOAT, K_CANDS } codec__kind;
typedef struct { const char *name; codec__kind kind; } codec__field;

static const codec__field codec__imp_fields[] = {
    {"impression_id", K_STRING}, {"ts_ms", K_LONG}, {"scenario", K_STRING},
    {"user_id", K_LONG}, {"item_id", K_LONG}, {"user_cat", K_MAP_LONG},
    {"item_cat", K_MAP_LONG}, {"ctx_cat", K_MAP_LONG}, {"user_num", K_MAP_FLOAT},
    {"item_num", K_MAP_FLOAT}, {"clicked", K_BOOL}, {NULL, 0}};
static const codec__field codec__conv_fields[] = {
    {"conversion_id", K_STRING}, {"impression_id", K_STRING}, {"ts_ms", K_LONG},
    {"scenario", K_STRING}, {"user_id", K_LONG}, {"item_id", K_LONG}, {NULL, 0}};
static const codec__field codec__req_fields[] = {
    {"request_id", K_STRING}, {"ts_ms", K_LONG}, {"scenario", K_STRING},
    {"user_id", K_LONG}, {"user_cat", K_MAP_LONG}, {"ctx_cat", K_MAP_LONG},
    {"user_num", K_MAP_FLOAT}, {"candidates", K_CANDS}, {NULL, 0}};
static const codec__field codec__cand_fields[] = {
    {"item_id", K_LONG}, {"item_cat", K_MAP_LONG}, {"item_num", K_MAP_FLOAT}, {NULL, 0}};
static const codec__field codec__pred_fields[] = {
    {"id", K_STRING}, {"ts_ms", K_LONG}, {"scenario", K_STRING}, {"user_id", K_LONG},
    {"item_id", K_LONG}, {"p_ctr", K_FLOAT}, {"p_cvr", K_FLOAT}, {"p_ctcvr", K_FLOAT},
    {"model_version", K_LONG}, {NULL, 0}};

static const codec__field *codec__layouts[CODEC__NTYPES] = {
    [M3_EV_IMPRESSION] = codec__imp_fields, [M3_EV_CONVERSION] = codec__conv_fields,
    [M3_EV_SCORE_REQUEST] = codec__req_fields, [M3_EV_PREDICTION] = codec__pred_fields};

static const char *codec__kind_name(codec__kind k) {
    switch (k) {
    case K_STRING: return "string";
    case K_LONG: return "long";
    case K_FLOAT: return "float";
    case K_BOOL: return "boolean";
    case K_MAP_LONG: return "map<long>";
    case K_MAP_FLOAT: return "map<float>";
    case K_CANDS: return "array<Candidate>";
    }
    return "?";
}

static int codec__is_kind(avro_schema_t s, codec__kind k) {
    switch (k) {
    case K_STRING: return is_avro_string(s);
    case K_LONG: return is_avro_int64(s);
    case K_FLOAT: return is_avro_float(s);
    case K_BOOL: return is_avro_boolean(s);
    case K_MAP_LONG: return is_avro_map(s) && is_avro_int64(avro_schema_map_values(s));
    case K_MAP_FLOAT: return is_avro_map(s) && is_avro_float(avro_schema_map_values(s));
    case K_CANDS: return is_avro_array(s) && is_avro_record(avro_schema_array_items(s));
    }
    return 0;
}

/* Check that record s has exactly the fields of `want`, in order, with their types. */
static int codec__check_record(avro_schema_t s, const char *name, const codec__field *want,
                               char *errstr, size_t errstr_size) {
    size_t n = 0;
    while (want[n].name) n++;
    if (!is_avro_record(s) || strcmp(avro_schema_name(s), name) != 0) {
        snprintf(errstr, errstr_size, "schema %s: not a record named %s", name, name);
        return -1;
    }
    if (avro_schema_record_size(s) != n) {
        snprintf(errstr, errstr_size, "schema %s: %zu fields, codec expects %zu", name,
                 avro_schema_record_size(s), n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *fname = avro_schema_record_field_name(s, (int)i);
        avro_schema_t fs = avro_schema_record_field_get_by_index(s, (int)i);
        if (strcmp(fname, want[i].name) != 0 || !codec__is_kind(fs, want[i].kind)) {
            snprintf(errstr, errstr_size, "schema %s: field %zu is %s:%s, codec expects %s:%s",
                     name, i, fname, avro_schema_type_name(fs), want[i].name,
                     codec__kind_name(want[i].kind));
            return -1;
        }
        if (want[i].kind == K_CANDS &&
            codec__check_record(avro_schema_array_items(fs), "Candidate", codec__cand_fields,
                                errstr, errstr_size) != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Codec object                                                                        */

static int codec__check_defaults(avro_schema_t s, const json_node *rj, char *errstr,
                                 size_t errstr_size);
static int codec__add_history(codec *c, char *errstr, size_t errstr_size);
static void codec__writers_free(codec *c);

codec *codec_new(char *errstr, size_t errstr_size) {
    const char *json[CODEC__NTYPES] = {NULL, m3_embed_Impression, m3_embed_Conversion,
                                       m3_embed_ScoreRequest, m3_embed_Prediction};
    size_t json_len[CODEC__NTYPES] = {0, m3_embed_Impression_len, m3_embed_Conversion_len,
                                      m3_embed_ScoreRequest_len, m3_embed_Prediction_len};
    codec *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    for (int t = M3_EV_IMPRESSION; t < CODEC__NTYPES; t++) {
        avro_schema_t s;
        char err[256];
        if (avro_schema_from_json_length(json[t], json_len[t], &s) != 0) {
            snprintf(errstr, errstr_size, "schemas/%s.avsc: %s", codec__names[t], avro_strerror());
            codec_destroy(c);
            return NULL;
        }
        c->rs[t] = s;
        int rc = codec__check_record(s, codec__names[t], codec__layouts[t], errstr, errstr_size);
        if (rc == 0) {
            c->pcf[t] = codec__pcf_of(s, err, sizeof err);
            c->rj[t] = c->pcf[t] ? json_parse(json[t], err, sizeof err) : NULL;
            if (!c->rj[t] || codec__check_defaults(s, c->rj[t], err, sizeof err) != 0) {
                snprintf(errstr, errstr_size, "schemas/%s.avsc: %s", codec__names[t], err);
                rc = -1;
            }
        }
        if (rc != 0) {
            codec_destroy(c);
            return NULL;
        }
        c->fp[t] = codec_crc64_avro(c->pcf[t], strlen(c->pcf[t]));
        for (int u = M3_EV_IMPRESSION; u < t; u++)
            if (c->fp[u] == c->fp[t]) {
                snprintf(errstr, errstr_size, "schemas %s and %s have the same fingerprint",
                         codec__names[u], codec__names[t]);
                codec_destroy(c);
                return NULL;
            }
    }
    if (codec__add_history(c, errstr, errstr_size) != 0) {
        codec_destroy(c);
        return NULL;
    }
    return c;
}

void codec_destroy(codec *c) {
    if (!c) return;
    for (int t = 0; t < CODEC__NTYPES; t++) {
        free(c->pcf[t]);
        if (c->rs[t]) avro_schema_decref(c->rs[t]);
        json_free(c->rj[t]);
    }
    codec__writers_free(c);
    free(c);
}

uint64_t codec_fingerprint(const codec *c, m3_ev_type t) {
    return (int)t > M3_EV_NONE && (int)t < CODEC__NTYPES ? c->fp[t] : 0;
}

const char *codec_canonical(const codec *c, m3_ev_type t) {
    return (int)t > M3_EV_NONE && (int)t < CODEC__NTYPES ? c->pcf[t] : NULL;
}

void m3_event_clear(m3_event *ev) {
    if (!ev) return;
    if (ev->type == M3_EV_SCORE_REQUEST) free(ev->u.req.cands);
    memset(ev, 0, sizeof *ev);
}

/* ---------------------------------------------------------------------------------- */
/* Where in a message: the path that reasons name                                     */

typedef struct {
    const char *rec;                /* "Impression" */
    const char *field;              /* current field, or NULL */
    const char *key;                /* current map key, or NULL */
    int cand;                       /* current candidate index, or -1 */
    char *reason;
    size_t reason_size;
} codec__ctx;

/* "Impression.user_cat", "ScoreRequest.candidates[3].item_num[price]" */
static void codec__path(const codec__ctx *x, char *p, size_t n) {
    int k = snprintf(p, n, "%s", x->rec);
    if (k >= 0 && (size_t)k < n && x->cand >= 0) k += snprintf(p + k, n - k, ".candidates[%d]", x->cand);
    if (k >= 0 && (size_t)k < n && x->field) k += snprintf(p + k, n - k, ".%s", x->field);
    if (k >= 0 && (size_t)k < n && x->key) snprintf(p + k, n - k, "[%s]", x->key);
}

/* reason = "<what> in <path>". Returns -1. */
static int codec__fail(const codec__ctx *x, const char *fmt, ...) {
    char what[96], path[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    codec__path(x, path, sizeof path);
    snprintf(x->reason, x->reason_size, "%s in %s", what, path);
    return -1;
}

/* reason = "empty <path>". Returns -1. */
static int codec__fail_empty(const codec__ctx *x) {
    char path[128];
    codec__path(x, path, sizeof path);
    snprintf(x->reason, x->reason_size, "empty %s", path);
    return -1;
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
static int codec__utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (n - i - 1 < k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += k + 1;
    }
    return 1;
}

/* FNV-1a of a map key: duplicate checks compare these before any strcmp, which keeps a
 * full map (32 keys, 496 pairs) cheap. */
static uint32_t codec__key_hash(const char *s) { return hash_fnv32(s, strlen(s)); }

/* Key i of a map<long> (cat) or map<float> (num): a name not empty and not among keys
 * 0..i-1 (hash[0..i) are theirs; hash[i] is set here). Returns 0, or -1 with the reason. */
static int codec__check_key(const codec__ctx *x, const m3_catmap *cat, const m3_nummap *num,
                            uint32_t *hash, int i) {
    const char *name = cat ? cat->kv[i].name : num->kv[i].name;
    if (!name[0]) return codec__fail(x, "empty map key");
    hash[i] = codec__key_hash(name);
    for (int j = 0; j < i; j++)
        if (hash[j] == hash[i] && strcmp(name, cat ? cat->kv[j].name : num->kv[j].name) == 0)
            return codec__fail(x, "duplicate map key \"%s\"", name);
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Decoder                                                                             */

typedef struct {
    const uint8_t *p, *end;
    codec__ctx x;
} codec__rd;

/* reason = "overlong varint (N bytes for a K-byte value)": u, written in N bytes, takes K. */
static int codec__fail_overlong(const codec__ctx *x, int n, uint64_t u) {
    int need = 1;
    while (need < 10 && u >> (7 * need)) need++;
    return codec__fail(x, "overlong varint (%d bytes for a %d-byte value)", n, need);
}

/* Avro long: zig-zag varint, at most 10 bytes, the 10th carrying only bit 63, in its
 * shortest form as the encoder writes it: a last byte of 0 after others (0x80 0x00 for 0)
 * only pads, so the same value would have two encodings and decode -> encode would not
 * give the input back. */
static int codec__rd_long(codec__rd *r, int64_t *v) {
    uint64_t u = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p == r->end) return codec__fail(&r->x, "truncated datum");
        uint8_t b = *r->p++;
        if (i == 9 && b > 1)
            return codec__fail(&r->x, b & 0x80 ? "varint longer than 10 bytes"
                                               : "varint overflows 64 bits");
        u |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            if (b == 0 && i > 0) return codec__fail_overlong(&r->x, i + 1, u);
            break;
        }
    }
    *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return 0;
}

static int codec__rd_float(codec__rd *r, float *v) {
    if (r->end - r->p < 4) {
        r->p = r->end;
        return codec__fail(&r->x, "truncated datum");
    }
    uint32_t u = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    memcpy(v, &u, 4);
    if (!isfinite(*v)) return codec__fail(&r->x, "non-finite float");
    return 0;
}

static int codec__rd_bool(codec__rd *r, bool *v) {
    if (r->p == r->end) return codec__fail(&r->x, "truncated datum");
    uint8_t b = *r->p++;
    if (b > 1) return codec__fail(&r->x, "invalid boolean byte 0x%02x", b);
    *v = b;
    return 0;
}

/* A string into dst[cap] (NUL-terminated): length checked against the capacity and the
 * remaining bytes before the copy; no NUL inside; valid UTF-8. */
static int codec__rd_string(codec__rd *r, char *dst, size_t cap) {
    int64_t n;
    if (codec__rd_long(r, &n)) return -1;
    if (n < 0) return codec__fail(&r->x, "negative string length %lld", (long long)n);
    if ((uint64_t)n > cap - 1)
        return codec__fail(&r->x, "string length %lld exceeds %zu bytes", (long long)n, cap - 1);
    if ((uint64_t)n > (uint64_t)(r->end - r->p)) return codec__fail(&r->x, "truncated datum");
    if (memchr(r->p, 0, (size_t)n)) return codec__fail(&r->x, "NUL byte in string");
    if (!codec__utf8_ok(r->p, (size_t)n)) return codec__fail(&r->x, "invalid UTF-8 in string");
    memcpy(dst, r->p, (size_t)n);
    dst[n] = '\0';
    r->p += n;
    return 0;
}

/* A string field that must not be empty. */
static int codec__rd_id(codec__rd *r, const char *field, char *dst, size_t cap) {
    r->x.field = field;
    if (codec__rd_string(r, dst, cap)) return -1;
    if (!dst[0]) return codec__fail_empty(&r->x);
    return 0;
}

static int codec__rd_long_field(codec__rd *r, const char *field, int64_t *v) {
    r->x.field = field;
    return codec__rd_long(r, v);
}

static int codec__rd_float_field(codec__rd *r, const char *field, float *v) {
    r->x.field = field;
    return codec__rd_float(r, v);
}

/* The count of the next array or map block; a negative count is followed by the
 * block's byte size, which is checked and otherwise not needed. 0 ends the list. */
static int codec__rd_block(codec__rd *r, int64_t *count) {
    if (codec__rd_long(r, count)) return -1;
    if (*count >= 0) return 0;
    if (*count == INT64_MIN) return codec__fail(&r->x, "invalid block count");
    *count = -*count;
    int64_t size;
    if (codec__rd_long(r, &size)) return -1;
    if (size < 0) return codec__fail(&r->x, "negative block size %lld", (long long)size);
    if ((uint64_t)size > (uint64_t)(r->end - r->p)) return codec__fail(&r->x, "truncated datum");
    return 0;
}

/* A map<long> (cat) or map<float> (num) into its fixed-capacity struct. */
static int codec__rd_map(codec__rd *r, const char *field, m3_catmap *cat, m3_nummap *num) {
    int *n = cat ? &cat->n : &num->n;
    uint32_t hash[M3_MAP_MAX];
    *n = 0;
    r->x.field = field;
    for (;;) {
        int64_t count;
        if (codec__rd_block(r, &count)) return -1;
        if (count == 0) return 0;
        if (count > M3_MAP_MAX - *n) {
            char path[128];
            codec__path(&r->x, path, sizeof path);
            snprintf(r->x.reason, r->x.reason_size, "map %s has more than %d entries", path,
                     M3_MAP_MAX);
            return -1;
        }
        for (int64_t i = 0; i < count; i++) {
            char *name = cat ? cat->kv[*n].name : num->kv[*n].name;
            if (codec__rd_string(r, name, M3_NAME_MAX) ||
                codec__check_key(&r->x, cat, num, hash, *n))
                return -1;
            r->x.key = name;
            int rc = cat ? codec__rd_long(r, &cat->kv[*n].value)
                         : codec__rd_float(r, &num->kv[*n].value);
            r->x.key = NULL;
            if (rc) return -1;
            (*n)++;
        }
    }
}

/* What every record but Candidate starts with: its id (field id_field), ts_ms, scenario
 * (sizeof = M3_NAME_MAX) and user_id. */
static int codec__rd_head(codec__rd *r, const char *id_field, char *id, size_t id_cap,
                          int64_t *ts_ms, char *scenario, int64_t *user_id) {
    return codec__rd_id(r, id_field, id, id_cap) || codec__rd_long_field(r, "ts_ms", ts_ms) ||
           codec__rd_id(r, "scenario", scenario, M3_NAME_MAX) ||
           codec__rd_long_field(r, "user_id", user_id) ? -1 : 0;
}

static int codec__rd_impression(codec__rd *r, m3_impression *m) {
    if (codec__rd_head(r, "impression_id", m->impression_id, sizeof m->impression_id,
                       &m->ts_ms, m->scenario, &m->user_id) ||
        codec__rd_long_field(r, "item_id", &m->item_id) ||
        codec__rd_map(r, "user_cat", &m->user_cat, NULL) ||
        codec__rd_map(r, "item_cat", &m->item_cat, NULL) ||
        codec__rd_map(r, "ctx_cat", &m->ctx_cat, NULL) ||
        codec__rd_map(r, "user_num", NULL, &m->user_num) ||
        codec__rd_map(r, "item_num", NULL, &m->item_num))
        return -1;
    r->x.field = "clicked";
    return codec__rd_bool(r, &m->clicked);
}

static int codec__rd_conversion(codec__rd *r, m3_conversion *m) {
    return codec__rd_id(r, "conversion_id", m->conversion_id, sizeof m->conversion_id) ||
           codec__rd_head(r, "impression_id", m->impression_id, sizeof m->impression_id,
                          &m->ts_ms, m->scenario, &m->user_id) ||
           codec__rd_long_field(r, "item_id", &m->item_id) ? -1 : 0;
}

static int codec__rd_prediction(codec__rd *r, m3_prediction *m) {
    return codec__rd_head(r, "id", m->id, sizeof m->id, &m->ts_ms, m->scenario, &m->user_id) ||
           codec__rd_long_field(r, "item_id", &m->item_id) ||
           codec__rd_float_field(r, "p_ctr", &m->p_ctr) ||
           codec__rd_float_field(r, "p_cvr", &m->p_cvr) ||
           codec__rd_float_field(r, "p_ctcvr", &m->p_ctcvr) ||
           codec__rd_long_field(r, "model_version", &m->model_version) ? -1 : 0;
}

/* Smallest encoding of one Candidate: item_id and two empty maps, one byte each. */
#define CODEC__CAND_MIN_BYTES 3

static int codec__rd_score_request(codec__rd *r, m3_score_request *m) {
    if (codec__rd_head(r, "request_id", m->request_id, sizeof m->request_id, &m->ts_ms, m->scenario,
                       &m->user_id) ||
        codec__rd_map(r, "user_cat", &m->user_cat, NULL) ||
        codec__rd_map(r, "ctx_cat", &m->ctx_cat, NULL) ||
        codec__rd_map(r, "user_num", NULL, &m->user_num))
        return -1;
    m->n_cands = 0;
    m->cands = NULL;
    for (;;) {
        int64_t count;
        r->x.field = "candidates";
        r->x.cand = -1;
        if (codec__rd_block(r, &count)) return -1;
        if (count == 0) return 0;
        if (count > M3_CAND_MAX - m->n_cands) {
            char path[128];
            codec__path(&r->x, path, sizeof path);
            snprintf(r->x.reason, r->x.reason_size, "array %s has more than %d entries", path,
                     M3_CAND_MAX);
            return -1;
        }
        /* Before allocating: a hostile count cannot outgrow the bytes that carry it. */
        if (count > (r->end - r->p) / CODEC__CAND_MIN_BYTES)
            return codec__fail(&r->x, "truncated datum (%lld candidates announced)",
                               (long long)count);
        m3_candidate *t = realloc(m->cands, (size_t)(m->n_cands + count) * sizeof *t);
        if (!t) return codec__fail(&r->x, "out of memory");
        m->cands = t;
        for (int64_t i = 0; i < count; i++) {
            m3_candidate *cd = &m->cands[m->n_cands];
            memset(cd, 0, sizeof *cd);
            m->n_cands++;   /* counted first: on error, the clear frees the array */
            r->x.cand = m->n_cands - 1;
            if (codec__rd_long_field(r, "item_id", &cd->item_id) ||
                codec__rd_map(r, "item_cat", &cd->item_cat, NULL) ||
                codec__rd_map(r, "item_num", NULL, &cd->item_num))
                return -1;
        }
    }
}

/* ---------------------------------------------------------------------------------- */
/* Schema resolution: writer schemas other than the reader's own                       */

/* A writer schema is resolved against the reader schema of its record name once, when it
 * is added, into a plan: a tree of steps that reads a datum written with the writer
 * schema and writes the datum the reader schema would have (fields in the reader's order,
 * defaults for the fields the writer lacks, the writer's extra fields skipped, promoted
 * numbers widened, union branches chosen). Per message, the plan transcodes the datum
 * into a stack buffer and the hand decoder above reads that, so every check the decoder
 * makes (capacities, UTF-8, keys) applies to resolved messages too. Avro C's resolved
 * reader is not used: it has no field defaults (it refuses any reader field the writer
 * lacks) and builds generic values per message. Why, and the rules: docs/contract.md,
 * "Schema evolution". */

#define CODEC__DEPTH_MAX 32          /* schema nesting a plan follows */
#define CODEC__FIELDS_MAX 64         /* fields of one writer record */
#define CODEC__ZERO_ITEMS_MAX 65536  /* plan steps spent on array items that take no bytes,
                                        per message */
#define CODEC__RESOLVED_MAX (8u << 20) /* a resolved datum (bigger than any the decoder takes) */
#define CODEC__STACK_OUT 4096        /* a resolved datum up to this size needs no allocation */
#define CODEC__STEPS_MAX 4096       /* resolution steps of one writer schema */
#define CODEC__WHY_MAX 200           /* an incompatibility's description (a reason adds <= 40) */

typedef enum {
    CODEC__P_NULL, CODEC__P_BOOL, CODEC__P_INT, CODEC__P_LONG, CODEC__P_INT_FLOAT,
    CODEC__P_INT_DOUBLE, CODEC__P_FLOAT, CODEC__P_DOUBLE, CODEC__P_FLOAT_DOUBLE,
    CODEC__P_BYTES, CODEC__P_FIXED, CODEC__P_ENUM, CODEC__P_RECORD, CODEC__P_ARRAY,
    CODEC__P_MAP, CODEC__P_WUNION, CODEC__P_RUNION
} codec__op;

typedef struct codec__plan codec__plan;
struct codec__plan {
    codec__op op;
    int n;               /* FIXED: size; RUNION: the reader branch written; RECORD: reader
                            fields; ENUM: writer symbols; WUNION: writer branches */
    int nw;              /* RECORD: writer fields */
    bool zero;           /* a writer value of this type can take no bytes */
    int steps;           /* plan steps in this subtree (codec__plan_weigh) */
    bool long_src;       /* INT_FLOAT / INT_DOUBLE: the writer wrote a long, not an int */
    const char **wname;  /* RECORD: writer field names (owned by the writer schema) */
    codec__plan **kid;   /* RECORD: one per writer field; WUNION: one per writer branch;
                            ARRAY, MAP, RUNION: kid[0] */
    int *from;           /* RECORD: reader field i <- writer field from[i], -1 = default;
                            ENUM: writer symbol -> reader symbol */
    buf *dflt;           /* RECORD: the encoded default of reader field i when from[i] < 0 */
};

struct codec__writer {
    uint64_t fp;
    m3_ev_type type;     /* M3_EV_NONE: not a record the codec reads */
    avro_schema_t w;     /* the writer schema (field names of the plan point into it) */
    codec__plan *plan;   /* NULL: incompatible */
    char *why;           /* incompatible: the difference, named */
};

/* The number of kid[] entries of plan p. */
static int codec__plan_kids(const codec__plan *p) {
    switch (p->op) {
    case CODEC__P_RECORD: return p->nw;
    case CODEC__P_WUNION: return p->n;
    case CODEC__P_ARRAY:
    case CODEC__P_MAP:
    case CODEC__P_RUNION: return 1;
    default: return 0;
    }
}

static void codec__plan_free(codec__plan *p) {
    if (!p) return;
    int nk = codec__plan_kids(p);
    for (int i = 0; p->kid && i < nk; i++) codec__plan_free(p->kid[i]);
    for (int i = 0; p->dflt && i < p->n; i++) buf_free(&p->dflt[i]);
    free(p->kid);
    free(p->from);
    free(p->dflt);
    free(p->wname);
    free(p);
}

/* Fill p->steps of every node of plan p; returns p's. */
static int codec__plan_weigh(codec__plan *p) {
    int nk = codec__plan_kids(p);
    p->steps = 1;
    for (int i = 0; i < nk; i++) p->steps += codec__plan_weigh(p->kid[i]);
    return p->steps;
}

static avro_schema_t codec__deref(avro_schema_t s) {
    return s && avro_typeof(s) == AVRO_LINK ? avro_schema_link_target(s) : s;
}

/* A short description of a type for reasons: "long", "map<float>", "[null,string]",
 * "record Candidate", "fixed Hash(16)". */
static void codec__desc(avro_schema_t s, char *out, size_t n, int depth) {
    s = codec__deref(s);
    char a[64];
    if (depth > 2) { snprintf(out, n, "..."); return; }
    switch (avro_typeof(s)) {
    case AVRO_STRING: snprintf(out, n, "string"); return;
    case AVRO_BYTES: snprintf(out, n, "bytes"); return;
    case AVRO_INT32: snprintf(out, n, "int"); return;
    case AVRO_INT64: snprintf(out, n, "long"); return;
    case AVRO_FLOAT: snprintf(out, n, "float"); return;
    case AVRO_DOUBLE: snprintf(out, n, "double"); return;
    case AVRO_BOOLEAN: snprintf(out, n, "boolean"); return;
    case AVRO_NULL: snprintf(out, n, "null"); return;
    case AVRO_RECORD: snprintf(out, n, "record %s", avro_schema_name(s)); return;
    case AVRO_ENUM: snprintf(out, n, "enum %s", avro_schema_name(s)); return;
    case AVRO_FIXED:
        snprintf(out, n, "fixed %s(%lld)", avro_schema_name(s), (long long)avro_schema_fixed_size(s));
        return;
    case AVRO_ARRAY:
        codec__desc(avro_schema_array_items(s), a, sizeof a, depth + 1);
        snprintf(out, n, "array<%s>", a);
        return;
    case AVRO_MAP:
        codec__desc(avro_schema_map_values(s), a, sizeof a, depth + 1);
        snprintf(out, n, "map<%s>", a);
        return;
    case AVRO_UNION: {
        size_t k = 0;
        k += (size_t)snprintf(out, n, "[");
        for (size_t i = 0; i < avro_schema_union_size(s) && k < n; i++) {
            codec__desc(avro_schema_union_branch(s, (int)i), a, sizeof a, depth + 1);
            k += (size_t)snprintf(out + k, n - k, "%s%s", i ? "," : "", a);
        }
        if (k < n) snprintf(out + k, n - k, "]");
        return;
    }
    default: snprintf(out, n, "?"); return;
    }
}

/* Resolution context: where in the schema (for reasons) and the reason itself. */
typedef struct {
    char path[96];       /* "ts_ms", "candidates[].item_num"; "" = the record itself */
    char *why;           /* CODEC__WHY_MAX bytes */
    int steps;           /* resolution steps so far (a bound: a recursive type branching
                            twice would otherwise take 2^depth steps) */
} codec__rs;

static const char *codec__at(const codec__rs *rs) { return rs->path[0] ? rs->path : "(record)"; }

static codec__plan *codec__plan_new(codec__op op, codec__rs *rs) {
    codec__plan *p = calloc(1, sizeof *p);
    if (!p) snprintf(rs->why, CODEC__WHY_MAX, "out of memory");
    else p->op = op;
    return p;
}

/* Same kind of type, and for named types the same unqualified name (and fixed size). */
static bool codec__same_kind(avro_schema_t w, avro_schema_t r) {
    if (avro_typeof(w) != avro_typeof(r)) return false;
    if (is_avro_named_type(w) && strcmp(avro_schema_name(w), avro_schema_name(r)) != 0)
        return false;
    return !is_avro_fixed(w) || avro_schema_fixed_size(w) == avro_schema_fixed_size(r);
}

/* The primitive step from w to r, or -1: same type or one of Avro's promotions (int to
 * long, float, double; long to float, double; float to double; string <-> bytes). */
static int codec__prim_op(avro_type_t w, avro_type_t r, bool *long_src) {
    *long_src = w == AVRO_INT64;
    switch (r) {
    case AVRO_NULL: return w == AVRO_NULL ? CODEC__P_NULL : -1;
    case AVRO_BOOLEAN: return w == AVRO_BOOLEAN ? CODEC__P_BOOL : -1;
    case AVRO_INT32: return w == AVRO_INT32 ? CODEC__P_INT : -1;
    case AVRO_INT64: return w == AVRO_INT32 || w == AVRO_INT64 ? CODEC__P_LONG : -1;
    case AVRO_FLOAT:
        return w == AVRO_FLOAT ? CODEC__P_FLOAT
               : w == AVRO_INT32 || w == AVRO_INT64 ? CODEC__P_INT_FLOAT : -1;
    case AVRO_DOUBLE:
        return w == AVRO_DOUBLE ? CODEC__P_DOUBLE : w == AVRO_FLOAT ? CODEC__P_FLOAT_DOUBLE
               : w == AVRO_INT32 || w == AVRO_INT64 ? CODEC__P_INT_DOUBLE : -1;
    case AVRO_STRING:
    case AVRO_BYTES: return w == AVRO_STRING || w == AVRO_BYTES ? CODEC__P_BYTES : -1;
    default: return -1;
    }
}

static bool codec__is_prim(avro_type_t t) {
    return t == AVRO_NULL || t == AVRO_BOOLEAN || t == AVRO_INT32 || t == AVRO_INT64 ||
           t == AVRO_FLOAT || t == AVRO_DOUBLE || t == AVRO_STRING || t == AVRO_BYTES;
}

/* Would w resolve to r without looking inside (the test that picks a reader union branch)? */
static bool codec__matches(avro_schema_t w, avro_schema_t r) {
    bool ls;
    avro_type_t wt = avro_typeof(w), rt = avro_typeof(r);
    if (codec__is_prim(wt) && codec__is_prim(rt)) return codec__prim_op(wt, rt, &ls) >= 0;
    return codec__same_kind(w, r);
}

static codec__plan *codec__resolve(avro_schema_t w, avro_schema_t r, const json_node *rj,
                                   codec__rs *rs, int depth);

/* A JSON schema node's member (rj is NULL when the reader's JSON is not at hand). */
static const json_node *codec__jm(const json_node *rj, const char *key) {
    return rj && rj->type == JSON_OBJECT ? json_member(rj, key) : NULL;
}

/* v zig-zag encoded as an Avro varint into tmp; returns its length (1..10). */
static size_t codec__zigzag(int64_t v, uint8_t tmp[10]) {
    uint64_t u = ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));
    size_t n = 0;
    while (u >= 0x80) {
        tmp[n++] = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    tmp[n++] = (uint8_t)u;
    return n;
}

static void codec__put_long(buf *b, int64_t v) {
    uint8_t tmp[10];
    buf_put(b, tmp, codec__zigzag(v, tmp));
}

/* The low n bytes of u, little-endian (the wire's order for float and double). */
static void codec__le(uint64_t u, int n, uint8_t *out) {
    for (int i = 0; i < n; i++) out[i] = (uint8_t)(u >> (8 * i));
}

/* The Avro encoding of JSON default d for reader type r (rj: r's JSON node, for the
 * defaults of a record's own fields). Returns -1 when d does not fit r. */
static int codec__encode_default(avro_schema_t r, const json_node *rj, const json_node *d,
                                 buf *out, int depth) {
    r = codec__deref(r);
    if (depth > CODEC__DEPTH_MAX) return -1;
    switch (avro_typeof(r)) {
    case AVRO_NULL: return d->type == JSON_NULL ? 0 : -1;
    case AVRO_BOOLEAN:
        if (d->type != JSON_BOOL) return -1;
        buf_putc(out, d->b ? 1 : 0);
        return 0;
    case AVRO_INT32:
    case AVRO_INT64: {
        double lim = avro_typeof(r) == AVRO_INT32 ? 2147483648.0 : 9223372036854775808.0;
        if (d->type != JSON_NUMBER || d->num != floor(d->num) || d->num < -lim || d->num >= lim)
            return -1;
        codec__put_long(out, (int64_t)d->num);
        return 0;
    }
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        if (d->type != JSON_NUMBER) return -1;
        uint8_t tmp[8];
        if (avro_typeof(r) == AVRO_FLOAT) {
            float f = (float)d->num;
            uint32_t u;
            memcpy(&u, &f, 4);
            codec__le(u, 4, tmp);
            buf_put(out, tmp, 4);
        } else {
            uint64_t u;
            memcpy(&u, &d->num, 8);
            codec__le(u, 8, tmp);
            buf_put(out, tmp, 8);
        }
        return 0;
    }
    case AVRO_STRING:
    case AVRO_BYTES:
        if (d->type != JSON_STRING) return -1;
        codec__put_long(out, (int64_t)strlen(d->str));
        buf_puts(out, d->str);
        return 0;
    case AVRO_ENUM:
        if (d->type != JSON_STRING) return -1;
        for (int i = 0; i < avro_schema_enum_number_of_symbols(r); i++)
            if (strcmp(avro_schema_enum_get(r, i), d->str) == 0) {
                codec__put_long(out, i);
                return 0;
            }
        return -1;
    case AVRO_FIXED:
        if (d->type != JSON_STRING || (int64_t)strlen(d->str) != avro_schema_fixed_size(r)) return -1;
        buf_puts(out, d->str);
        return 0;
    case AVRO_ARRAY:
    case AVRO_MAP: {
        bool map = is_avro_map(r);
        if (d->type != (map ? JSON_OBJECT : JSON_ARRAY)) return -1;
        if (d->n) codec__put_long(out, (int64_t)d->n);
        for (size_t i = 0; i < d->n; i++) {
            if (map) {
                codec__put_long(out, (int64_t)strlen(d->keys[i]));
                buf_puts(out, d->keys[i]);
            }
            if (codec__encode_default(map ? avro_schema_map_values(r) : avro_schema_array_items(r),
                                      codec__jm(rj, map ? "values" : "items"), &d->items[i], out,
                                      depth + 1))
                return -1;
        }
        buf_putc(out, 0);
        return 0;
    }
    case AVRO_UNION:   /* a union's default is of its first branch */
        buf_putc(out, 0);
        return codec__encode_default(avro_schema_union_branch(r, 0),
                                     rj && rj->type == JSON_ARRAY && rj->n ? &rj->items[0] : NULL,
                                     d, out, depth + 1);
    case AVRO_RECORD: {
        if (d->type != JSON_OBJECT) return -1;
        const json_node *fields = codec__jm(rj, "fields");
        for (size_t i = 0; i < avro_schema_record_size(r); i++) {
            const char *name = avro_schema_record_field_name(r, (int)i);
            const json_node *fj = fields && fields->type == JSON_ARRAY && i < fields->n
                                  ? &fields->items[i] : NULL;
            const json_node *v = json_member(d, name);
            if (!v) v = codec__jm(fj, "default");
            if (!v || codec__encode_default(avro_schema_record_field_get_by_index(r, (int)i),
                                            codec__jm(fj, "type"), v, out, depth + 1))
                return -1;
        }
        return 0;
    }
    default: return -1;
    }
}

/* Reader field i of record r (JSON node rf) that the writer lacks: its default, encoded. */
static int codec__field_default(avro_schema_t r, int i, const json_node *rf, buf *out,
                                codec__rs *rs) {
    const char *name = avro_schema_record_field_name(r, i);
    const json_node *d = codec__jm(rf, "default");
    if (!d) {
        snprintf(rs->why, CODEC__WHY_MAX, "reader field %.60s%s%.60s has no default and the writer lacks it",
                 rs->path, rs->path[0] ? "." : "", name);
        return -1;
    }
    if (codec__encode_default(avro_schema_record_field_get_by_index(r, i), codec__jm(rf, "type"),
                              d, out, 0) != 0 || out->oom) {
        snprintf(rs->why, CODEC__WHY_MAX, "reader field %.60s%s%.60s: default does not fit its type",
                 rs->path, rs->path[0] ? "." : "", name);
        return -1;
    }
    return 0;
}

/* Every default of reader record s's own fields fits its type (checked at codec_new, so
 * a bad default is a start-up error, not a refusal of the first old writer). */
static int codec__check_defaults(avro_schema_t s, const json_node *rj, char *errstr,
                                 size_t errstr_size) {
    const json_node *fields = codec__jm(rj, "fields");
    for (size_t i = 0; fields && fields->type == JSON_ARRAY && i < fields->n; i++) {
        char why[CODEC__WHY_MAX];
        codec__rs rs = {"", why, 0};
        buf b = {0};
        int rc = codec__jm(&fields->items[i], "default")
                 ? codec__field_default(s, (int)i, &fields->items[i], &b, &rs) : 0;
        buf_free(&b);
        if (rc) {
            snprintf(errstr, errstr_size, "%s", why);
            return -1;
        }
    }
    return 0;
}

/* Index of the field named `name` in record s, or -1. */
static int codec__field_index(avro_schema_t s, const char *name) {
    for (size_t i = 0; i < avro_schema_record_size(s); i++)
        if (strcmp(avro_schema_record_field_name(s, (int)i), name) == 0) return (int)i;
    return -1;
}

/* Descend into a child of the path: a field (".", its name: "candidates[].item_id") or
 * the items of an array ("[]") or values of a map ("{}"). Returns the old length, for
 * the caller to cut the path back. */
static size_t codec__push(codec__rs *rs, const char *sep, const char *name) {
    size_t k = strlen(rs->path);
    bool field = strcmp(sep, ".") == 0;
    snprintf(rs->path + k, sizeof rs->path - k, "%s%s", field && k ? "." : "", field ? name : sep);
    return k;
}

static codec__plan *codec__resolve_record(avro_schema_t w, avro_schema_t r, const json_node *rj,
                                          codec__rs *rs, int depth) {
    int nw = (int)avro_schema_record_size(w), nr = (int)avro_schema_record_size(r);
    if (nw > CODEC__FIELDS_MAX || nr > CODEC__FIELDS_MAX) {
        snprintf(rs->why, CODEC__WHY_MAX, "record %.60s has more than %d fields", avro_schema_name(w),
                 CODEC__FIELDS_MAX);
        return NULL;
    }
    codec__plan *p = codec__plan_new(CODEC__P_RECORD, rs);
    if (!p) return NULL;
    p->n = nr;
    p->nw = nw;
    p->zero = true;
    p->kid = calloc((size_t)nw + 1, sizeof *p->kid);
    p->wname = calloc((size_t)nw + 1, sizeof *p->wname);
    p->from = calloc((size_t)nr + 1, sizeof *p->from);
    p->dflt = calloc((size_t)nr + 1, sizeof *p->dflt);
    if (!p->kid || !p->wname || !p->from || !p->dflt) goto oom;
    const json_node *fields = codec__jm(rj, "fields");
    for (int i = 0; i < nr; i++) {
        const char *name = avro_schema_record_field_name(r, i);
        const json_node *rf = fields && fields->type == JSON_ARRAY && (size_t)i < fields->n
                              ? &fields->items[i] : NULL;
        int j = p->from[i] = codec__field_index(w, name);
        if (j < 0) {
            if (codec__field_default(r, i, rf, &p->dflt[i], rs)) goto fail;
            continue;
        }
        size_t k = codec__push(rs, ".", name);
        p->kid[j] = codec__resolve(avro_schema_record_field_get_by_index(w, j),
                                   avro_schema_record_field_get_by_index(r, i),
                                   codec__jm(rf, "type"), rs, depth + 1);
        if (!p->kid[j]) goto fail;
        rs->path[k] = '\0';
    }
    for (int j = 0; j < nw; j++) {
        p->wname[j] = avro_schema_record_field_name(w, j);
        avro_schema_t wf = avro_schema_record_field_get_by_index(w, j);
        if (!p->kid[j]) {   /* a field the reader does not have: read to be skipped */
            size_t k = codec__push(rs, ".", p->wname[j]);
            p->kid[j] = codec__resolve(wf, wf, NULL, rs, depth + 1);
            if (!p->kid[j]) goto fail;
            rs->path[k] = '\0';
        }
        p->zero = p->zero && p->kid[j]->zero;
    }
    return p;
oom:
    snprintf(rs->why, CODEC__WHY_MAX, "out of memory");
fail:
    codec__plan_free(p);
    return NULL;
}

static int codec__type_error(codec__rs *rs, avro_schema_t w, avro_schema_t r, const char *what) {
    char a[64], b[64];
    codec__desc(w, a, sizeof a, 0);
    codec__desc(r, b, sizeof b, 0);
    snprintf(rs->why, CODEC__WHY_MAX, "field %.60s is %.40s, reader wants %.40s (%.20s)", codec__at(rs), a, b,
             what);
    return -1;
}

/* Writer union: each branch resolved against the whole reader type. Every branch must
 * resolve (as registries check), so no message can meet an unresolvable branch. */
static codec__plan *codec__resolve_wunion(avro_schema_t w, avro_schema_t r, const json_node *rj,
                                          codec__rs *rs, int depth) {
    codec__plan *p = codec__plan_new(CODEC__P_WUNION, rs);
    if (!p) return NULL;
    p->n = (int)avro_schema_union_size(w);
    p->kid = calloc((size_t)p->n + 1, sizeof *p->kid);
    if (!p->kid) {
        snprintf(rs->why, CODEC__WHY_MAX, "out of memory");
        codec__plan_free(p);
        return NULL;
    }
    for (int b = 0; b < p->n; b++) {
        p->kid[b] = codec__resolve(avro_schema_union_branch(w, b), r, rj, rs, depth + 1);
        if (!p->kid[b]) {
            codec__plan_free(p);
            return NULL;
        }
    }
    return p;
}

/* Reader union, writer not: the first reader branch of the same type, else the first the
 * writer's type promotes to. */
static codec__plan *codec__resolve_runion(avro_schema_t w, avro_schema_t r, const json_node *rj,
                                          codec__rs *rs, int depth) {
    int n = (int)avro_schema_union_size(r), pick = -1;
    for (int b = 0; b < n && pick < 0; b++)
        if (codec__same_kind(w, codec__deref(avro_schema_union_branch(r, b)))) pick = b;
    for (int b = 0; b < n && pick < 0; b++)
        if (codec__matches(w, codec__deref(avro_schema_union_branch(r, b)))) pick = b;
    if (pick < 0) {
        codec__type_error(rs, w, r, "no branch matches");
        return NULL;
    }
    codec__plan *p = codec__plan_new(CODEC__P_RUNION, rs);
    if (!p) return NULL;
    p->n = pick;
    p->kid = calloc(1, sizeof *p->kid);
    if (p->kid)
        p->kid[0] = codec__resolve(w, avro_schema_union_branch(r, pick),
                                   rj && rj->type == JSON_ARRAY && (size_t)pick < rj->n
                                   ? &rj->items[pick] : NULL, rs, depth + 1);
    else
        snprintf(rs->why, CODEC__WHY_MAX, "out of memory");
    if (!p->kid || !p->kid[0]) {
        codec__plan_free(p);
        return NULL;
    }
    p->zero = p->kid[0]->zero;
    return p;
}

/* Enum: each writer symbol to the reader's index of the same symbol. */
static codec__plan *codec__resolve_enum(avro_schema_t w, avro_schema_t r, codec__rs *rs) {
    codec__plan *p = codec__plan_new(CODEC__P_ENUM, rs);
    if (!p) return NULL;
    p->n = avro_schema_enum_number_of_symbols(w);
    p->from = calloc((size_t)p->n + 1, sizeof *p->from);
    if (!p->from) {
        snprintf(rs->why, CODEC__WHY_MAX, "out of memory");
        codec__plan_free(p);
        return NULL;
    }
    for (int i = 0; i < p->n; i++) {
        const char *sym = avro_schema_enum_get(w, i);
        p->from[i] = avro_schema_enum_get_by_name(r, sym);
        if (p->from[i] < 0) {
            snprintf(rs->why, CODEC__WHY_MAX, "field %.60s: writer symbol %.40s is not in the reader's enum %.40s",
                     codec__at(rs), sym, avro_schema_name(r));
            codec__plan_free(p);
            return NULL;
        }
    }
    return p;
}

/* Array items or map values. */
static codec__plan *codec__resolve_items(avro_schema_t w, avro_schema_t r, const json_node *rj,
                                         codec__rs *rs, int depth) {
    bool map = is_avro_map(r);
    codec__plan *p = codec__plan_new(CODEC__P_ARRAY, rs);
    if (!p) return NULL;
    p->op = map ? CODEC__P_MAP : CODEC__P_ARRAY;
    p->kid = calloc(1, sizeof *p->kid);
    if (!p->kid) {
        snprintf(rs->why, CODEC__WHY_MAX, "out of memory");
        codec__plan_free(p);
        return NULL;
    }
    size_t k = codec__push(rs, map ? "{}" : "[]", NULL);
    p->kid[0] = codec__resolve(map ? avro_schema_map_values(w) : avro_schema_array_items(w),
                               map ? avro_schema_map_values(r) : avro_schema_array_items(r),
                               codec__jm(rj, map ? "values" : "items"), rs, depth + 1);
    if (!p->kid[0]) {
        codec__plan_free(p);
        return NULL;
    }
    rs->path[k] = '\0';
    return p;   /* not zero: an array or map takes at least its end marker */
}

/* The plan that reads w's datum and writes r's (rj: r's JSON node, for defaults), or NULL
 * with rs->why naming the difference. */
static codec__plan *codec__resolve(avro_schema_t w, avro_schema_t r, const json_node *rj,
                                   codec__rs *rs, int depth) {
    w = codec__deref(w);
    r = codec__deref(r);
    if (depth > CODEC__DEPTH_MAX) {
        snprintf(rs->why, CODEC__WHY_MAX, "field %.60s: schema nested deeper than %d levels",
                 codec__at(rs), CODEC__DEPTH_MAX);
        return NULL;
    }
    if (++rs->steps > CODEC__STEPS_MAX) {
        snprintf(rs->why, CODEC__WHY_MAX, "schema too large (over %d types to resolve)",
                 CODEC__STEPS_MAX);
        return NULL;
    }
    avro_type_t wt = avro_typeof(w), rt = avro_typeof(r);
    if (wt == AVRO_UNION) return codec__resolve_wunion(w, r, rj, rs, depth);
    if (rt == AVRO_UNION) return codec__resolve_runion(w, r, rj, rs, depth);
    if (codec__is_prim(wt) && codec__is_prim(rt)) {
        bool long_src;
        int op = codec__prim_op(wt, rt, &long_src);
        if (op < 0) {
            codec__type_error(rs, w, r, "not promotable");
            return NULL;
        }
        codec__plan *p = codec__plan_new((codec__op)op, rs);
        if (!p) return NULL;
        p->long_src = long_src;
        p->zero = op == CODEC__P_NULL;
        return p;
    }
    if (!codec__same_kind(w, r)) {
        codec__type_error(rs, w, r, "not resolvable");
        return NULL;
    }
    switch (wt) {
    case AVRO_RECORD: return codec__resolve_record(w, r, rj, rs, depth);
    case AVRO_ENUM: return codec__resolve_enum(w, r, rs);
    case AVRO_ARRAY:
    case AVRO_MAP: return codec__resolve_items(w, r, rj, rs, depth);
    case AVRO_FIXED: {
        codec__plan *p = codec__plan_new(CODEC__P_FIXED, rs);
        if (!p) return NULL;
        p->n = (int)avro_schema_fixed_size(w);
        p->zero = p->n == 0;
        return p;
    }
    default:
        codec__type_error(rs, w, r, "unsupported type");
        return NULL;
    }
}

/* ---- per message: transcode a writer datum into the reader's ---- */

typedef struct {
    codec__rd r;          /* the writer's bytes; r.x.field names the writer field being read */
    uint8_t *o;           /* output: the caller's stack buffer, or heap once it outgrew it */
    size_t n, cap;
    bool heap;
    int discard;          /* > 0: reading a value to skip it, nothing is written */
    long zero_items;      /* what is left of CODEC__ZERO_ITEMS_MAX */
} codec__tc;

static int codec__tc_put(codec__tc *t, const void *src, size_t len) {
    if (t->discard) return 0;
    if (len > t->cap - t->n) {
        size_t cap = t->cap * 2 > t->n + len ? t->cap * 2 : t->n + len;
        if (cap > CODEC__RESOLVED_MAX)
            return codec__fail(&t->r.x, "resolved datum over %u bytes", CODEC__RESOLVED_MAX);
        uint8_t *o = t->heap ? realloc(t->o, cap) : malloc(cap);
        if (!o) return codec__fail(&t->r.x, "out of memory");
        if (!t->heap) memcpy(o, t->o, t->n);
        t->o = o;
        t->cap = cap;
        t->heap = true;
    }
    memcpy(t->o + t->n, src, len);
    t->n += len;
    return 0;
}

static int codec__tc_long(codec__tc *t, int64_t v) {
    uint8_t tmp[10];
    size_t k = codec__zigzag(v, tmp);
    return codec__tc_put(t, tmp, k);
}

/* n raw bytes from the input to the output. */
static int codec__tc_copy(codec__tc *t, size_t n) {
    if (n > (size_t)(t->r.end - t->r.p)) return codec__fail(&t->r.x, "truncated datum");
    const uint8_t *src = t->r.p;
    t->r.p += n;
    return codec__tc_put(t, src, n);
}

static int codec__tc_value(codec__tc *t, const codec__plan *p);

static int codec__tc_skip(codec__tc *t, const codec__plan *p) {
    t->discard++;
    int rc = codec__tc_value(t, p);
    t->discard--;
    return rc;
}

static int codec__tc_record(codec__tc *t, const codec__plan *p) {
    const uint8_t *start[CODEC__FIELDS_MAX];
    const char *outer = t->r.x.field;
    int next = 0, rc = 0;   /* writer fields before `next` have been read past */
    for (int i = 0; i < p->n && !t->discard && rc == 0; i++) {
        int j = p->from[i];
        if (j < 0) {
            rc = codec__tc_put(t, p->dflt[i].data, p->dflt[i].len);
            continue;
        }
        for (; next < j && rc == 0; next++) {
            start[next] = t->r.p;
            t->r.x.field = p->wname[next];
            rc = codec__tc_skip(t, p->kid[next]);
        }
        if (rc) break;
        t->r.x.field = p->wname[j];
        if (j >= next) {   /* in writer order: read on */
            start[j] = t->r.p;
            next = j + 1;
            rc = codec__tc_value(t, p->kid[j]);
        } else {           /* a field the reader wants later than the writer wrote it */
            const uint8_t *resume = t->r.p;
            t->r.p = start[j];
            rc = codec__tc_value(t, p->kid[j]);
            t->r.p = resume;
        }
    }
    for (; next < p->nw && rc == 0; next++) {
        t->r.x.field = p->wname[next];
        rc = codec__tc_skip(t, p->kid[next]);
    }
    if (rc == 0) t->r.x.field = outer;
    return rc;
}

static int codec__tc_items(codec__tc *t, const codec__plan *p) {
    bool map = p->op == CODEC__P_MAP;
    for (;;) {
        int64_t count;
        if (codec__rd_block(&t->r, &count)) return -1;
        if (codec__tc_long(t, count)) return -1;
        if (count == 0) return 0;
        if (!map && p->kid[0]->zero) {   /* items of no bytes: bounded apart */
            if (count > t->zero_items / p->kid[0]->steps)
                return codec__fail(&t->r.x, "too many empty array items (%lld)", (long long)count);
            t->zero_items -= (long)count * p->kid[0]->steps;
        } else if (count > t->r.end - t->r.p) {
            return codec__fail(&t->r.x, "truncated datum (%lld items announced)", (long long)count);
        }
        for (int64_t i = 0; i < count; i++) {
            if (map) {
                int64_t klen;
                if (codec__rd_long(&t->r, &klen) || codec__tc_long(t, klen)) return -1;
                if (klen < 0) return codec__fail(&t->r.x, "negative string length %lld", (long long)klen);
                if ((uint64_t)klen > (uint64_t)(t->r.end - t->r.p))
                    return codec__fail(&t->r.x, "truncated datum");
                if (codec__tc_copy(t, (size_t)klen)) return -1;
            }
            if (codec__tc_value(t, p->kid[0])) return -1;
        }
    }
}

/* A writer int or long; an int must fit in 32 bits. */
static int codec__tc_read_int(codec__tc *t, const codec__plan *p, int64_t *v) {
    if (codec__rd_long(&t->r, v)) return -1;
    if (!p->long_src && (*v < INT32_MIN || *v > INT32_MAX))
        return codec__fail(&t->r.x, "int %lld out of range", (long long)*v);
    return 0;
}

static int codec__tc_number(codec__tc *t, const codec__plan *p) {
    int64_t v;
    uint8_t tmp[8];
    uint32_t u32;
    uint64_t u64;
    switch (p->op) {
    case CODEC__P_INT:
    case CODEC__P_LONG:
        return codec__tc_read_int(t, p, &v) || codec__tc_long(t, v) ? -1 : 0;
    case CODEC__P_INT_FLOAT: {
        if (codec__tc_read_int(t, p, &v)) return -1;
        float f = (float)v;   /* rounded to nearest, as Java's promotion does */
        memcpy(&u32, &f, 4);
        codec__le(u32, 4, tmp);
        return codec__tc_put(t, tmp, 4);
    }
    case CODEC__P_INT_DOUBLE: {
        if (codec__tc_read_int(t, p, &v)) return -1;
        double d = (double)v;
        memcpy(&u64, &d, 8);
        codec__le(u64, 8, tmp);
        return codec__tc_put(t, tmp, 8);
    }
    case CODEC__P_FLOAT_DOUBLE: {
        if (t->r.end - t->r.p < 4) return codec__fail(&t->r.x, "truncated datum");
        const uint8_t *q = t->r.p;
        u32 = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        t->r.p += 4;
        float f;
        memcpy(&f, &u32, 4);
        double d = f;   /* exact */
        memcpy(&u64, &d, 8);
        codec__le(u64, 8, tmp);
        return codec__tc_put(t, tmp, 8);
    }
    default: return codec__fail(&t->r.x, "internal: bad plan step %d", (int)p->op);
    }
}

static int codec__tc_value(codec__tc *t, const codec__plan *p) {
    int64_t v;
    switch (p->op) {
    case CODEC__P_NULL: return 0;
    case CODEC__P_BOOL: return codec__tc_copy(t, 1);
    case CODEC__P_FLOAT: return codec__tc_copy(t, 4);
    case CODEC__P_DOUBLE: return codec__tc_copy(t, 8);
    case CODEC__P_FIXED: return codec__tc_copy(t, (size_t)p->n);
    case CODEC__P_BYTES:
        if (codec__rd_long(&t->r, &v)) return -1;
        if (v < 0) return codec__fail(&t->r.x, "negative string length %lld", (long long)v);
        if ((uint64_t)v > (uint64_t)(t->r.end - t->r.p)) return codec__fail(&t->r.x, "truncated datum");
        return codec__tc_long(t, v) || codec__tc_copy(t, (size_t)v) ? -1 : 0;
    case CODEC__P_ENUM:
    case CODEC__P_WUNION:
        if (codec__rd_long(&t->r, &v)) return -1;
        if (v < 0 || v >= p->n)
            return codec__fail(&t->r.x, "%s index %lld out of range 0..%d",
                               p->op == CODEC__P_ENUM ? "enum" : "union", (long long)v, p->n - 1);
        if (p->op == CODEC__P_ENUM) return codec__tc_long(t, p->from[v]);
        return codec__tc_value(t, p->kid[v]);
    case CODEC__P_RUNION: return codec__tc_long(t, p->n) || codec__tc_value(t, p->kid[0]) ? -1 : 0;
    case CODEC__P_RECORD: return codec__tc_record(t, p);
    case CODEC__P_ARRAY:
    case CODEC__P_MAP: return codec__tc_items(t, p);
    default: return codec__tc_number(t, p);
    }
}

/* ---- the writers a codec knows ---- */

/* The entry of fingerprint fp in c's sorted table, or NULL. */
static const codec__writer *codec__find(const codec *c, uint64_t fp) {
    size_t lo = 0, hi = c->n_wr;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->wr[mid].fp == fp) return &c->wr[mid];
        if (c->wr[mid].fp < fp) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Insert e into the sorted table (its fp is not there yet). */
static int codec__insert(codec *c, const codec__writer *e) {
    if (c->n_wr == c->cap_wr) {
        size_t cap = c->cap_wr ? 2 * c->cap_wr : 8;
        codec__writer *t = realloc(c->wr, cap * sizeof *t);
        if (!t) return -1;
        c->wr = t;
        c->cap_wr = cap;
    }
    size_t i = c->n_wr;
    while (i > 0 && c->wr[i - 1].fp > e->fp) {
        c->wr[i] = c->wr[i - 1];
        i--;
    }
    c->wr[i] = *e;
    c->n_wr++;
    return 0;
}

static void codec__writers_free(codec *c) {
    for (size_t i = 0; i < c->n_wr; i++) {
        codec__plan_free(c->wr[i].plan);
        free(c->wr[i].why);
        if (c->wr[i].w) avro_schema_decref(c->wr[i].w);
    }
    free(c->wr);
}

/* The reader type whose record has w's unqualified name, or M3_EV_NONE. */
static m3_ev_type codec__type_of(avro_schema_t w) {
    if (!is_avro_record(w)) return M3_EV_NONE;
    const char *name = avro_schema_name(w), *dot = strrchr(name, '.');
    if (dot) name = dot + 1;
    for (int t = M3_EV_IMPRESSION; t < CODEC__NTYPES; t++)
        if (strcmp(name, codec__names[t]) == 0) return (m3_ev_type)t;
    return M3_EV_NONE;
}

/* The status of a known fp for codec_add_writer's answer. */
static int codec__status(const codec *c, uint64_t fp, const codec__writer *e, m3_ev_type *type,
                         char *errstr, size_t errstr_size) {
    for (int t = M3_EV_IMPRESSION; t < CODEC__NTYPES; t++)
        if (c->fp[t] == fp) {
            *type = (m3_ev_type)t;
            return 0;
        }
    *type = e->type;
    if (e->plan) return 0;
    snprintf(errstr, errstr_size, "%s", e->why);
    return -1;
}

int codec_add_writer(codec *c, const char *json, size_t len, m3_ev_type *type, uint64_t *fp,
                     char *errstr, size_t errstr_size) {
    avro_schema_t w;
    char err[256], why[CODEC__WHY_MAX];
    *type = M3_EV_NONE;
    *fp = 0;
    if (avro_schema_from_json_length(json, len, &w) != 0) {
        snprintf(errstr, errstr_size, "invalid schema: %s", avro_strerror());
        return -1;
    }
    char *pcf = codec__pcf_of(w, err, sizeof err);
    if (!pcf) {
        avro_schema_decref(w);
        snprintf(errstr, errstr_size, "%s", err);
        return -1;
    }
    *fp = codec_crc64_avro(pcf, strlen(pcf));
    free(pcf);
    const codec__writer *known = codec__find(c, *fp);
    bool native = false;
    for (int t = M3_EV_IMPRESSION; t < CODEC__NTYPES; t++) native = native || c->fp[t] == *fp;
    if (known || native) {
        avro_schema_decref(w);
        return codec__status(c, *fp, known, type, errstr, errstr_size);
    }
    codec__writer e = {*fp, codec__type_of(w), w, NULL, NULL};
    char name[CODEC__WHY_MAX];
    if (e.type == M3_EV_NONE) {
        codec__desc(w, name, sizeof name, 0);
        snprintf(why, sizeof why, "%.60s is none of Impression, Conversion, ScoreRequest, Prediction", name);
    } else {
        codec__rs rs = {"", why, 0};
        e.plan = codec__resolve(w, c->rs[e.type], c->rj[e.type], &rs, 0);
        if (e.plan) codec__plan_weigh(e.plan);
    }
    if (!e.plan) {
        char full[CODEC_REASON_MAX];
        snprintf(full, sizeof full, "%s%swriter 0x%016llx: %.200s",
                 e.type == M3_EV_NONE ? "" : codec_type_name(e.type), e.type == M3_EV_NONE ? "" : " ",
                 (unsigned long long)*fp, why);
        e.why = strdup(full);
    }
    if ((!e.plan && !e.why) || codec__insert(c, &e) != 0) {
        codec__plan_free(e.plan);
        free(e.why);
        avro_schema_decref(w);
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    *type = e.type;
    return codec__status(c, *fp, codec__find(c, *fp), type, errstr, errstr_size);
}

/* The schemas of schemas/history/ (cmake/embed.cmake), added to every codec. */
extern const char *const m3_schema_history_path[];
extern const char *const m3_schema_history_text[];
extern const size_t m3_schema_history_len[];
extern const size_t m3_schema_history_n;

static int codec__add_history(codec *c, char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < m3_schema_history_n; i++) {
        m3_ev_type t;
        uint64_t fp;
        char err[CODEC_REASON_MAX];
        if (codec_add_writer(c, m3_schema_history_text[i], m3_schema_history_len[i], &t, &fp, err,
                             sizeof err) != 0) {
            snprintf(errstr, errstr_size, "%s: %s", m3_schema_history_path[i], err);
            return -1;
        }
    }
    return 0;
}

/* "path:line:col" of a JSON syntax error at byte offset off of text. */
static void codec__where(const char *path, const char *text, size_t off, char *out, size_t n) {
    int line = 1, col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') { line++; col = 1; }
        else col++;
    }
    snprintf(out, n, "%s:%d:%d", path, line, col);
}

/* One .avsc file of codec_add_dir. Returns 0 (added, or refused as incompatible: reported
 * through refused), or -1 with errstr = "path:line: ..." when unreadable or no schema. */
static int codec__add_file(codec *c, const char *path, codec_refused_fn refused, void *arg,
                           char *errstr, size_t errstr_size) {
    buf text = {0};
    char err[256], where[4200];
    if (buf_read_file(&text, path) != 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        buf_free(&text);
        return -1;
    }
    json_node *j = json_parse(text.data ? text.data : "", err, sizeof err);
    if (!j) {
        size_t off = 0;
        const char *what = err;   /* json_parse says "offset N: what"; the line replaces N */
        if (sscanf(err, "offset %zu", &off) == 1 && strstr(err, ": ")) what = strstr(err, ": ") + 2;
        codec__where(path, text.data ? text.data : "", off, where, sizeof where);
        snprintf(errstr, errstr_size, "%s: not JSON: %s", where, what);
        buf_free(&text);
        return -1;
    }
    json_free(j);
    m3_ev_type t;
    uint64_t fp;
    char why[CODEC_REASON_MAX];
    int rc = codec_add_writer(c, text.data, text.len, &t, &fp, why, sizeof why);
    buf_free(&text);
    if (rc == 0) return 0;
    if (!fp) {   /* parsed as JSON, but not a schema Avro C accepts */
        snprintf(errstr, errstr_size, "%s:1: %s", path, why);
        return -1;
    }
    if (refused) refused(arg, path, why);
    return 0;
}

static int codec__avsc_only(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".avsc") == 0;
}

int codec_add_dir(codec *c, const char *dir, codec_refused_fn refused, void *arg,
                  char *errstr, size_t errstr_size) {
    struct dirent **ents;
    int n = scandir(dir, &ents, codec__avsc_only, alphasort), rc = 0, added = 0;
    if (n < 0) {
        snprintf(errstr, errstr_size, "%s: %s", dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        size_t dl = strlen(dir);
        snprintf(path, sizeof path, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", ents[i]->d_name);
        if (rc == 0) rc = codec__add_file(c, path, refused, arg, errstr, errstr_size);
        if (rc == 0) added++;
        free(ents[i]);
    }
    free(ents);
    return rc ? -1 : added;
}

int codec_writer_status(const codec *c, uint64_t fp, m3_ev_type *type, char *why, size_t why_size) {
    const codec__writer *e = codec__find(c, fp);
    for (int t = M3_EV_IMPRESSION; t < CODEC__NTYPES; t++)
        if (c->fp[t] == fp) {
            *type = (m3_ev_type)t;
            return 1;
        }
    *type = e ? e->type : M3_EV_NONE;
    if (!e) {
        snprintf(why, why_size, "unknown writer schema 0x%016llx", (unsigned long long)fp);
        return 0;
    }
    if (e->plan) return 1;
    snprintf(why, why_size, "%s", e->why);
    return -1;
}

/* ---- decoding ---- */

/* A datum of type t written with the reader's own schema. */
static int codec__decode_native(int t, const uint8_t *p, size_t len, m3_event *out,
                                char *reason, size_t reason_size) {
    codec__rd r = {p, p + len, {codec__names[t], NULL, NULL, -1, reason, reason_size}};
    out->type = (m3_ev_type)t;
    int rc = -1;
    switch (out->type) {
    case M3_EV_IMPRESSION: rc = codec__rd_impression(&r, &out->u.imp); break;
    case M3_EV_CONVERSION: rc = codec__rd_conversion(&r, &out->u.conv); break;
    case M3_EV_SCORE_REQUEST: rc = codec__rd_score_request(&r, &out->u.req); break;
    case M3_EV_PREDICTION: rc = codec__rd_prediction(&r, &out->u.pred); break;
    default: break;
    }
    if (rc == 0 && r.p != r.end) {
        snprintf(reason, reason_size, "%zu trailing bytes after %s datum",
                 (size_t)(r.end - r.p), codec__names[t]);
        rc = -1;
    }
    if (rc != 0) m3_event_clear(out);
    return rc;
}

/* A datum written with writer e: transcoded to the reader's datum, then decoded. */
static int codec__decode_resolved(const codec__writer *e, const uint8_t *p, size_t len,
                                  m3_event *out, char *reason, size_t reason_size) {
    uint8_t stack[CODEC__STACK_OUT];
    codec__tc t = {{p, p + len, {codec__names[e->type], NULL, NULL, -1, reason, reason_size}},
                   stack, 0, sizeof stack, false, 0, CODEC__ZERO_ITEMS_MAX};
    int rc = codec__tc_value(&t, e->plan);
    if (rc == 0 && t.r.p != t.r.end) {
        snprintf(reason, reason_size, "%zu trailing bytes after %s datum (writer 0x%016llx)",
                 (size_t)(t.r.end - t.r.p), codec__names[e->type], (unsigned long long)e->fp);
        rc = -1;
    }
    if (rc == 0) rc = codec__decode_native(e->type, t.o, t.n, out, reason, reason_size);
    if (t.heap) free(t.o);
    return rc;
}

int codec_decode_datum(const codec *c, uint64_t fp, const void *datum, size_t len, m3_event *out,
                       char *reason, size_t reason_size) {
    memset(out, 0, sizeof *out);
    for (int t = M3_EV_IMPRESSION; t < CODEC__NTYPES; t++)
        if (c->fp[t] == fp) return codec__decode_native(t, datum, len, out, reason, reason_size);
    const codec__writer *e = codec__find(c, fp);
    if (!e) {
        snprintf(reason, reason_size, "unknown writer schema 0x%016llx", (unsigned long long)fp);
        return -1;
    }
    if (!e->plan) {
        snprintf(reason, reason_size, "%s", e->why);
        return -1;
    }
    return codec__decode_resolved(e, datum, len, out, reason, reason_size);
}

/* The writer schema's fingerprint in a single-object header (little-endian after the magic). */
static uint64_t codec__fingerprint(const uint8_t *b) {
    uint64_t fp = 0;
    for (int i = 7; i >= 0; i--) fp = fp << 8 | b[2 + i];
    return fp;
}

int codec_decode(const codec *c, const void *msg, size_t len, m3_event *out,
                 char *reason, size_t reason_size) {
    const uint8_t *b = msg;
    memset(out, 0, sizeof *out);
    if (len == 0) {
        snprintf(reason, reason_size, "empty message");
        return -1;
    }
    if (len < CODEC_HEADER_LEN) {
        snprintf(reason, reason_size, "message of %zu bytes is shorter than the %d-byte header",
                 len, CODEC_HEADER_LEN);
        return -1;
    }
    if (b[0] != CODEC__MAGIC0 || b[1] != CODEC__MAGIC1) {
        snprintf(reason, reason_size, "bad magic 0x%02x 0x%02x", b[0], b[1]);
        return -1;
    }
    uint64_t fp = codec__fingerprint(b);
    for (int t = M3_EV_IMPRESSION; t < CODEC__NTYPES; t++)
        if (c->fp[t] == fp)
            return codec__decode_native(t, b + CODEC_HEADER_LEN, len - CODEC_HEADER_LEN, out,
                                        reason, reason_size);
    if (!codec__find(c, fp)) {
        snprintf(reason, reason_size, "unknown schema fingerprint 0x%016llx",
                 (unsigned long long)fp);
        return -1;
    }
    return codec_decode_datum(c, fp, b + CODEC_HEADER_LEN, len - CODEC_HEADER_LEN, out, reason,
                              reason_size);
}

/* Skip a string (its length must fit in what is left). */
static int codec__skip_string(codec__rd *r) {
    int64_t n;
    if (codec__rd_long(r, &n)) return -1;
    if (n < 0 || (uint64_t)n > (uint64_t)(r->end - r->p)) return -1;
    r->p += n;
    return 0;
}

int codec_peek_ts(const codec *c, const void *msg, size_t len, int64_t *ts_ms) {
    const uint8_t *b = msg;
    if (len < CODEC_HEADER_LEN || b[0] != CODEC__MAGIC0 || b[1] != CODEC__MAGIC1) return 0;
    uint64_t fp = codec__fingerprint(b);
    int strings;   /* before ts_ms: the id (a Conversion's own, then its impression's) */
    if (fp == c->fp[M3_EV_IMPRESSION] || fp == c->fp[M3_EV_SCORE_REQUEST]) strings = 1;
    else if (fp == c->fp[M3_EV_CONVERSION]) strings = 2;
    else return 0;
    char reason[CODEC_REASON_MAX];   /* written only when the bytes do not parse */
    codec__rd r = {b + CODEC_HEADER_LEN, b + len, {"", NULL, NULL, -1, reason, sizeof reason}};
    for (int i = 0; i < strings; i++)
        if (codec__skip_string(&r)) return 0;
    return codec__rd_long(&r, ts_ms) == 0;
}

/* ---------------------------------------------------------------------------------- */
/* Encoder                                                                             */

typedef struct {
    uint8_t *p, *end;
    int full;                       /* something did not fit */
    codec__ctx x;
} codec__wr;

static void codec__wr_bytes(codec__wr *w, const void *src, size_t n) {
    if ((size_t)(w->end - w->p) < n) {
        w->full = 1;
        w->p = w->end;
        return;
    }
    memcpy(w->p, src, n);
    w->p += n;
}

static void codec__wr_long(codec__wr *w, int64_t v) {
    uint8_t tmp[10];
    codec__wr_bytes(w, tmp, codec__zigzag(v, tmp));
}

static int codec__wr_float(codec__wr *w, float v) {
    uint32_t u;
    uint8_t tmp[4];
    if (!isfinite(v)) return codec__fail(&w->x, "non-finite float");
    memcpy(&u, &v, 4);
    for (int i = 0; i < 4; i++) tmp[i] = (uint8_t)(u >> (8 * i));
    codec__wr_bytes(w, tmp, 4);
    return 0;
}

/* A string held in src[cap]: it must end within cap and be valid UTF-8. */
static int codec__wr_string(codec__wr *w, const char *src, size_t cap) {
    size_t n = strnlen(src, cap);
    if (n == cap) return codec__fail(&w->x, "string not NUL-terminated within %zu bytes", cap);
    if (!codec__utf8_ok((const uint8_t *)src, n)) return codec__fail(&w->x, "invalid UTF-8 in string");
    codec__wr_long(w, (int64_t)n);
    codec__wr_bytes(w, src, n);
    return 0;
}

static int codec__wr_id(codec__wr *w, const char *field, const char *src, size_t cap) {
    w->x.field = field;
    if (!src[0]) return codec__fail_empty(&w->x);
    return codec__wr_string(w, src, cap);
}

static void codec__wr_long_field(codec__wr *w, const char *field, int64_t v) {
    w->x.field = field;
    codec__wr_long(w, v);
}

static int codec__wr_float_field(codec__wr *w, const char *field, float v) {
    w->x.field = field;
    return codec__wr_float(w, v);
}

/* A map as one block of n entries then the 0 terminator (an empty map is just 0), as
 * Avro C's writer does. Keys are checked as the decoder checks them. */
static int codec__wr_map(codec__wr *w, const char *field, const m3_catmap *cat,
                         const m3_nummap *num) {
    int n = cat ? cat->n : num->n;
    uint32_t hash[M3_MAP_MAX];
    w->x.field = field;
    if (n < 0 || n > M3_MAP_MAX)
        return codec__fail(&w->x, "map size %d out of range 0..%d", n, M3_MAP_MAX);
    if (n > 0) codec__wr_long(w, n);
    for (int i = 0; i < n; i++) {
        const char *name = cat ? cat->kv[i].name : num->kv[i].name;
        if (codec__wr_string(w, name, M3_NAME_MAX) || codec__check_key(&w->x, cat, num, hash, i))
            return -1;
        w->x.key = name;
        int rc = 0;
        if (cat) codec__wr_long(w, cat->kv[i].value);
        else rc = codec__wr_float(w, num->kv[i].value);
        w->x.key = NULL;
        if (rc) return -1;
    }
    codec__wr_long(w, 0);
    return 0;
}

/* What every record but Candidate starts with (as codec__rd_head reads it). */
static int codec__wr_head(codec__wr *w, const char *id_field, const char *id, size_t id_cap,
                          int64_t ts_ms, const char *scenario, int64_t user_id) {
    if (codec__wr_id(w, id_field, id, id_cap)) return -1;
    codec__wr_long_field(w, "ts_ms", ts_ms);
    if (codec__wr_id(w, "scenario", scenario, M3_NAME_MAX)) return -1;
    codec__wr_long_field(w, "user_id", user_id);
    return 0;
}

static int codec__wr_impression(codec__wr *w, const m3_impression *m) {
    if (codec__wr_head(w, "impression_id", m->impression_id, sizeof m->impression_id, m->ts_ms,
                       m->scenario, m->user_id))
        return -1;
    codec__wr_long_field(w, "item_id", m->item_id);
    if (codec__wr_map(w, "user_cat", &m->user_cat, NULL) ||
        codec__wr_map(w, "item_cat", &m->item_cat, NULL) ||
        codec__wr_map(w, "ctx_cat", &m->ctx_cat, NULL) ||
        codec__wr_map(w, "user_num", NULL, &m->user_num) ||
        codec__wr_map(w, "item_num", NULL, &m->item_num))
        return -1;
    uint8_t b = m->clicked ? 1 : 0;
    codec__wr_bytes(w, &b, 1);
    return 0;
}

static int codec__wr_conversion(codec__wr *w, const m3_conversion *m) {
    if (codec__wr_id(w, "conversion_id", m->conversion_id, sizeof m->conversion_id) ||
        codec__wr_head(w, "impression_id", m->impression_id, sizeof m->impression_id, m->ts_ms,
                       m->scenario, m->user_id))
        return -1;
    codec__wr_long_field(w, "item_id", m->item_id);
    return 0;
}

static int codec__wr_prediction(codec__wr *w, const m3_prediction *m) {
    if (codec__wr_head(w, "id", m->id, sizeof m->id, m->ts_ms, m->scenario, m->user_id))
        return -1;
    codec__wr_long_field(w, "item_id", m->item_id);
    if (codec__wr_float_field(w, "p_ctr", m->p_ctr) ||
        codec__wr_float_field(w, "p_cvr", m->p_cvr) ||
        codec__wr_float_field(w, "p_ctcvr", m->p_ctcvr))
        return -1;
    codec__wr_long_field(w, "model_version", m->model_version);
    return 0;
}

static int codec__wr_score_request(codec__wr *w, const m3_score_request *m) {
    if (codec__wr_head(w, "request_id", m->request_id, sizeof m->request_id, m->ts_ms,
                       m->scenario, m->user_id))
        return -1;
    if (codec__wr_map(w, "user_cat", &m->user_cat, NULL) ||
        codec__wr_map(w, "ctx_cat", &m->ctx_cat, NULL) ||
        codec__wr_map(w, "user_num", NULL, &m->user_num))
        return -1;
    w->x.field = "candidates";
    if (m->n_cands < 0 || m->n_cands > M3_CAND_MAX)
        return codec__fail(&w->x, "candidate count %d out of range 0..%d", m->n_cands, M3_CAND_MAX);
    if (m->n_cands > 0 && !m->cands) return codec__fail(&w->x, "NULL candidate array");
    if (m->n_cands > 0) codec__wr_long(w, m->n_cands);
    for (int i = 0; i < m->n_cands; i++) {
        const m3_candidate *cd = &m->cands[i];
        w->x.cand = i;
        codec__wr_long_field(w, "item_id", cd->item_id);
        if (codec__wr_map(w, "item_cat", &cd->item_cat, NULL) ||
            codec__wr_map(w, "item_num", NULL, &cd->item_num))
            return -1;
    }
    w->x.cand = -1;
    w->x.field = "candidates";
    codec__wr_long(w, 0);
    return 0;
}

long codec_encode(const codec *c, const m3_event *ev, void *out, size_t cap,
                  char *reason, size_t reason_size) {
    int t = (int)ev->type;
    if (t <= M3_EV_NONE || t >= CODEC__NTYPES) {
        snprintf(reason, reason_size, "cannot encode event of type %d", t);
        return -1;
    }
    if (!out) cap = 0;
    codec__wr w = {out, out ? (uint8_t *)out + cap : NULL, 0,
                   {codec__names[t], NULL, NULL, -1, reason, reason_size}};
    uint8_t hdr[CODEC_HEADER_LEN] = {CODEC__MAGIC0, CODEC__MAGIC1};
    for (int i = 0; i < 8; i++) hdr[2 + i] = (uint8_t)(c->fp[t] >> (8 * i));
    codec__wr_bytes(&w, hdr, sizeof hdr);
    int rc = -1;
    switch (ev->type) {
    case M3_EV_IMPRESSION: rc = codec__wr_impression(&w, &ev->u.imp); break;
    case M3_EV_CONVERSION: rc = codec__wr_conversion(&w, &ev->u.conv); break;
    case M3_EV_SCORE_REQUEST: rc = codec__wr_score_request(&w, &ev->u.req); break;
    case M3_EV_PREDICTION: rc = codec__wr_prediction(&w, &ev->u.pred); break;
    default: break;
    }
    if (rc != 0) return -1;
    if (w.full) {
        snprintf(reason, reason_size, "%s does not fit in a %zu-byte buffer", codec__names[t], cap);
        return -1;
    }
    return (long)(w.p - (uint8_t *)out);
}

/* Bounds: a long takes at most 10 bytes, a string its length plus its bytes, a map
 * entry a key plus a long, a map its block count and the terminating 0. */
#define CODEC__LONG_MAX_BYTES 10
#define CODEC__STR_MAX_BYTES(cap) (CODEC__LONG_MAX_BYTES + (cap) - 1)
#define CODEC__MAP_MAX_BYTES(n) \
    (2 * CODEC__LONG_MAX_BYTES + (size_t)(n) * (CODEC__STR_MAX_BYTES(M3_NAME_MAX) + CODEC__LONG_MAX_BYTES))

static size_t codec__map_n(int n) {
    return n < 0 ? 0 : n > M3_MAP_MAX ? M3_MAP_MAX : (size_t)n;
}

size_t codec_encoded_size_max(const m3_event *ev) {
    size_t s = CODEC_HEADER_LEN;
    switch (ev->type) {
    case M3_EV_IMPRESSION: {
        const m3_impression *m = &ev->u.imp;
        s += CODEC__STR_MAX_BYTES(M3_ID_MAX) + CODEC__STR_MAX_BYTES(M3_NAME_MAX) +
             3 * CODEC__LONG_MAX_BYTES + 1;
        s += CODEC__MAP_MAX_BYTES(codec__map_n(m->user_cat.n)) +
             CODEC__MAP_MAX_BYTES(codec__map_n(m->item_cat.n)) +
             CODEC__MAP_MAX_BYTES(codec__map_n(m->ctx_cat.n)) +
             CODEC__MAP_MAX_BYTES(codec__map_n(m->user_num.n)) +
             CODEC__MAP_MAX_BYTES(codec__map_n(m->item_num.n));
        break;
    }
    case M3_EV_CONVERSION:
        s += 2 * CODEC__STR_MAX_BYTES(M3_ID_MAX) + CODEC__STR_MAX_BYTES(M3_NAME_MAX) +
             3 * CODEC__LONG_MAX_BYTES;
        break;
    case M3_EV_SCORE_REQUEST: {
        const m3_score_request *m = &ev->u.req;
        s += CODEC__STR_MAX_BYTES(M3_ID_MAX) + CODEC__STR_MAX_BYTES(M3_NAME_MAX) +
             2 * CODEC__LONG_MAX_BYTES;
        s += CODEC__MAP_MAX_BYTES(codec__map_n(m->user_cat.n)) +
             CODEC__MAP_MAX_BYTES(codec__map_n(m->ctx_cat.n)) +
             CODEC__MAP_MAX_BYTES(codec__map_n(m->user_num.n));
        s += 2 * CODEC__LONG_MAX_BYTES;
        int nc = m->n_cands < 0 ? 0 : m->n_cands > M3_CAND_MAX ? M3_CAND_MAX : m->n_cands;
        for (int i = 0; m->cands && i < nc; i++)
            s += CODEC__LONG_MAX_BYTES + CODEC__MAP_MAX_BYTES(codec__map_n(m->cands[i].item_cat.n)) +
                 CODEC__MAP_MAX_BYTES(codec__map_n(m->cands[i].item_num.n));
        break;
    }
    case M3_EV_PREDICTION:
        s += CODEC__STR_MAX_BYTES(M3_ID_MAX) + CODEC__STR_MAX_BYTES(M3_NAME_MAX) +
             4 * CODEC__LONG_MAX_BYTES + 3 * 4;
        break;
    default: break;
    }
    return s;
}
