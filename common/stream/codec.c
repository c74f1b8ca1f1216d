/* codec.c - Avro single-object encoding of m3rec's messages to and from event.h structs.
 *
 * Avro C is used only at start-up: it parses the embedded schemas, which this file then
 * checks against the field layout the hand-written datum code below expects, and walks
 * to produce each schema's Parsing Canonical Form (PCF) and CRC-64-AVRO fingerprint.
 * Per message, the datum is read and written by hand: every length is checked against
 * the bytes that remain and the capacity of its destination before anything is copied.
 * Why: docs/contract.md, "Why a hand-written datum codec". */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <avro.h>

#include "base/buf.h"
#include "base/hash.h"
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

struct codec {
    char *pcf[CODEC__NTYPES];       /* Parsing Canonical Form, indexed by m3_ev_type */
    uint64_t fp[CODEC__NTYPES];     /* CRC-64-AVRO of pcf */
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
        int rc = codec__check_record(s, codec__names[t], codec__layouts[t], errstr, errstr_size);
        if (rc == 0) {
            c->pcf[t] = codec__pcf_of(s, err, sizeof err);
            if (!c->pcf[t]) {
                snprintf(errstr, errstr_size, "schemas/%s.avsc: %s", codec__names[t], err);
                rc = -1;
            }
        }
        avro_schema_decref(s);
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
    return c;
}

void codec_destroy(codec *c) {
    if (!c) return;
    for (int t = 0; t < CODEC__NTYPES; t++) free(c->pcf[t]);
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
    uint64_t fp = 0;
    for (int i = 7; i >= 0; i--) fp = fp << 8 | b[2 + i];
    int t;
    for (t = M3_EV_IMPRESSION; t < CODEC__NTYPES; t++)
        if (c->fp[t] == fp) break;
    if (t == CODEC__NTYPES) {
        snprintf(reason, reason_size, "unknown schema fingerprint 0x%016llx",
                 (unsigned long long)fp);
        return -1;
    }
    codec__rd r = {b + CODEC_HEADER_LEN, b + len,
                   {codec__names[t], NULL, NULL, -1, reason, reason_size}};
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
    uint64_t u = ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));   /* zig-zag */
    size_t n = 0;
    while (u >= 0x80) {
        tmp[n++] = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    tmp[n++] = (uint8_t)u;
    codec__wr_bytes(w, tmp, n);
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
