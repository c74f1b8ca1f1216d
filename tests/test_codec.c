/* test_codec.c - tests of the Avro codec: round trips, hand-written bytes, fingerprints,
 * cross-checks against Avro C's generic writer and reader, and malformed input. */
#include <avro.h>
#include <stdint.h>
#include "check.h"
#include "evcmp.h"
#include "stream/codec.h"

extern const char m3_embed_Impression[];
extern const size_t m3_embed_Impression_len;
extern const char m3_embed_Prediction[];
extern const size_t m3_embed_Prediction_len;
extern const char m3_embed_ScoreRequest[];
extern const size_t m3_embed_ScoreRequest_len;

static codec *C;
static char reason[CODEC_REASON_MAX];

/* ---- a byte builder for hand-made messages ---- */
typedef struct { uint8_t b[70000]; size_t n; } bytes;

static void put(bytes *x, const void *p, size_t n) { memcpy(x->b + x->n, p, n); x->n += n; }
static void put1(bytes *x, int v) { x->b[x->n++] = (uint8_t)v; }
/* zig-zag varint, written out independently of codec.c */
static void put_long(bytes *x, int64_t v) {
    uint64_t u = v < 0 ? ((uint64_t)(-(v + 1)) << 1) | 1 : (uint64_t)v << 1;
    do { uint8_t b = u & 0x7F; u >>= 7; put1(x, b | (u ? 0x80 : 0)); } while (u);
}
static void put_str(bytes *x, const char *s) { put_long(x, (int64_t)strlen(s)); put(x, s, strlen(s)); }
static void put_f32(bytes *x, uint32_t bits) { for (int i = 0; i < 4; i++) put1(x, (bits >> (8 * i)) & 0xFF); }
static void put_hdr(bytes *x, m3_ev_type t) {
    uint64_t fp = codec_fingerprint(C, t);
    put1(x, 0xC3); put1(x, 0x01);
    for (int i = 0; i < 8; i++) put1(x, (int)(fp >> (8 * i)) & 0xFF);
}

/* ---- events ---- */
static void set_cat(m3_catmap *m, int i, const char *k, int64_t v) {
    snprintf(m->kv[i].name, M3_NAME_MAX, "%s", k); m->kv[i].value = v; if (m->n < i + 1) m->n = i + 1;
}
static void set_num(m3_nummap *m, int i, const char *k, float v) {
    snprintf(m->kv[i].name, M3_NAME_MAX, "%s", k); m->kv[i].value = v; if (m->n < i + 1) m->n = i + 1;
}

static m3_event make_impression(void) {
    m3_event e; memset(&e, 0, sizeof e);
    e.type = M3_EV_IMPRESSION;
    m3_impression *m = &e.u.imp;
    snprintf(m->impression_id, sizeof m->impression_id, "imp-0001");
    m->ts_ms = 1764300000123LL;
    snprintf(m->scenario, sizeof m->scenario, "home");
    m->user_id = 12345; m->item_id = -987654321012LL;
    set_cat(&m->user_cat, 0, "gender", 1); set_cat(&m->user_cat, 1, "age_bucket", 4);
    set_cat(&m->item_cat, 0, "category", 301); set_cat(&m->item_cat, 1, "brand", INT64_MIN);
    set_cat(&m->item_cat, 2, "shop", INT64_MAX);
    /* ctx_cat left empty */
    set_num(&m->user_num, 0, "activity", 0.75f);
    set_num(&m->item_num, 0, "price", 19.99f); set_num(&m->item_num, 1, "ctr7d", -1e-20f);
    m->clicked = true;
    return e;
}

static m3_event make_conversion(void) {
    m3_event e; memset(&e, 0, sizeof e);
    e.type = M3_EV_CONVERSION;
    snprintf(e.u.conv.conversion_id, M3_ID_MAX, "conv-77");
    snprintf(e.u.conv.impression_id, M3_ID_MAX, "imp-0001");
    e.u.conv.ts_ms = 1764300099999LL;
    snprintf(e.u.conv.scenario, M3_NAME_MAX, "search");
    e.u.conv.user_id = 12345; e.u.conv.item_id = 42;
    return e;
}

static m3_event make_prediction(void) {
    m3_event e; memset(&e, 0, sizeof e);
    e.type = M3_EV_PREDICTION;
    snprintf(e.u.pred.id, M3_ID_MAX, "req-9");
    e.u.pred.ts_ms = -5;
    snprintf(e.u.pred.scenario, M3_NAME_MAX, "product");
    e.u.pred.user_id = 0; e.u.pred.item_id = 1;
    e.u.pred.p_ctr = 0.031f; e.u.pred.p_cvr = 0.2f; e.u.pred.p_ctcvr = 0.031f * 0.2f;
    e.u.pred.model_version = 1234567890123LL;
    return e;
}

static m3_event make_request(int n) {
    m3_event e; memset(&e, 0, sizeof e);
    e.type = M3_EV_SCORE_REQUEST;
    m3_score_request *m = &e.u.req;
    snprintf(m->request_id, M3_ID_MAX, "req-9");
    m->ts_ms = 1764300000000LL;
    snprintf(m->scenario, M3_NAME_MAX, "home");
    m->user_id = 12345;
    set_cat(&m->user_cat, 0, "gender", 2);
    set_cat(&m->ctx_cat, 0, "hour", 13); set_cat(&m->ctx_cat, 1, "device", 3);
    m->n_cands = n;
    m->cands = n ? calloc((size_t)n, sizeof *m->cands) : NULL;
    for (int i = 0; i < n; i++) {
        m->cands[i].item_id = 1000 + i * 7919;
        if (i % 3 != 0) set_cat(&m->cands[i].item_cat, 0, "category", i);
        if (i % 2) set_num(&m->cands[i].item_num, 0, "price", 1.5f * (float)i);
    }
    return e;
}

/* encode -> decode -> equal -> re-encode gives the same bytes */
static void round_trip(const m3_event *e) {
    size_t cap = codec_encoded_size_max(e);
    uint8_t *buf = malloc(cap), *buf2 = malloc(cap);
    long n = codec_encode(C, e, buf, cap, reason, sizeof reason);
    CHECK_MSG(n > 0, "encode: %s", reason);
    CHECK((size_t)n <= cap);
    m3_event d;
    CHECK_MSG(codec_decode(C, buf, (size_t)n, &d, reason, sizeof reason) == 0, "decode: %s", reason);
    eq_event(e, &d);
    long n2 = codec_encode(C, &d, buf2, cap, reason, sizeof reason);
    CHECK_EQ_INT(n2, n);
    CHECK(memcmp(buf, buf2, (size_t)n) == 0);
    /* one byte less never fits; the exact length does */
    CHECK_EQ_INT(codec_encode(C, e, buf2, (size_t)n - 1, reason, sizeof reason), -1);
    CHECK_CONTAINS(reason, "does not fit");
    CHECK_EQ_INT(codec_encode(C, e, buf2, (size_t)n, reason, sizeof reason), n);
    m3_event_clear(&d);
    CHECK_EQ_INT(d.type, M3_EV_NONE);
    free(buf); free(buf2);
}

static void test_round_trips(void) {
    m3_event e = make_impression(); round_trip(&e);
    memset(&e.u.imp.user_cat, 0, sizeof e.u.imp.user_cat);      /* all maps empty */
    memset(&e.u.imp.item_cat, 0, sizeof e.u.imp.item_cat);
    memset(&e.u.imp.user_num, 0, sizeof e.u.imp.user_num);
    memset(&e.u.imp.item_num, 0, sizeof e.u.imp.item_num);
    e.u.imp.clicked = false;
    round_trip(&e);
    e = make_conversion(); round_trip(&e);
    e = make_prediction(); round_trip(&e);
    e = make_request(5); round_trip(&e); m3_event_clear(&e);
    e = make_request(0); round_trip(&e); m3_event_clear(&e);
    e = make_request(M3_CAND_MAX); round_trip(&e); m3_event_clear(&e);

    /* every capacity at its limit: 63-byte ids, full maps of 31-byte keys, extreme values */
    e = make_impression();
    memset(e.u.imp.impression_id, 'x', M3_ID_MAX - 1); e.u.imp.impression_id[M3_ID_MAX - 1] = 0;
    memset(e.u.imp.scenario, 's', M3_NAME_MAX - 1); e.u.imp.scenario[M3_NAME_MAX - 1] = 0;
    e.u.imp.ts_ms = INT64_MIN; e.u.imp.user_id = INT64_MAX;
    m3_catmap *maps[3] = {&e.u.imp.user_cat, &e.u.imp.item_cat, &e.u.imp.ctx_cat};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < M3_MAP_MAX; i++) {
            char key[M3_NAME_MAX];
            snprintf(key, sizeof key, "%02d%029d", i, 0);
            CHECK_EQ_INT(strlen(key), M3_NAME_MAX - 1);
            set_cat(maps[k], i, key, i % 2 ? INT64_MIN : INT64_MAX);
        }
    for (int i = 0; i < M3_MAP_MAX; i++) {
        char key[M3_NAME_MAX];
        snprintf(key, sizeof key, "n%d\xc3\xa9\xe2\x82\xac", i);         /* UTF-8 keys */
        set_num(&e.u.imp.user_num, i, key, -3.4e38f);
        set_num(&e.u.imp.item_num, i, key, 1e-45f);                     /* subnormal */
    }
    round_trip(&e);
}

/* ---- (2) exact bytes written by hand ---- */
/* decode msg == want, and encode(want) == msg byte for byte */
static void hand_case(const char *what, const uint8_t *msg, size_t len, const m3_event *want) {
    m3_event d;
    CHECK_MSG(codec_decode(C, msg, len, &d, reason, sizeof reason) == 0, "%s: %s", what, reason);
    eq_event(want, &d);
    uint8_t out[512];
    long n = codec_encode(C, want, out, sizeof out, reason, sizeof reason);
    CHECK_MSG(n == (long)len, "%s: encoded %ld bytes, want %zu (%s)", what, n, len, reason);
    for (size_t i = 0; i < len; i++)
        CHECK_MSG(out[i] == msg[i], "%s: byte %zu is 0x%02x, want 0x%02x", what, i, out[i], msg[i]);
    m3_event_clear(&d);
    /* every proper prefix is rejected cleanly */
    for (size_t k = 0; k < len; k++) {
        CHECK_MSG(codec_decode(C, msg, k, &d, reason, sizeof reason) == -1, "%s: prefix %zu", what, k);
        CHECK_EQ_INT(d.type, M3_EV_NONE);
    }
}

static const uint8_t conversion_msg[] = {
    0xC3, 0x01, 0x05, 0xff, 0x3f, 0xc4, 0x91, 0x97, 0xef, 0xe3, /* marker, fingerprint LE */
    0x04, 'c', '1',                 /* conversion_id "c1" (length 2 -> zig-zag 4) */
    0x04, 'i', '1',                 /* impression_id "i1" */
    0xD0, 0x0F,                     /* ts_ms 1000 -> zig-zag 2000 = 0x50|0x80, 0x0F */
    0x08, 'h', 'o', 'm', 'e',       /* scenario "home" */
    0x54,                           /* user_id 42 -> 84 */
    0x01,                           /* item_id -1 -> 1 */
};

static const uint8_t impression_msg[] = {
    0xC3, 0x01, 0x41, 0x12, 0x05, 0xa1, 0xbc, 0xba, 0xde, 0xb0,
    0x02, 'a',                      /* impression_id "a" */
    0x00,                           /* ts_ms 0 */
    0x02, 's',                      /* scenario "s" */
    0x02, 0x04,                     /* user_id 1, item_id 2 */
    0x02, 0x02, 'g', 0x06, 0x00,    /* user_cat {"g": 3}: 1 entry, key, value, end */
    0x00, 0x00, 0x00,               /* item_cat, ctx_cat, user_num: empty */
    0x02, 0x02, 'p', 0x00, 0x00, 0xC0, 0x3F, 0x00,  /* item_num {"p": 1.5f} */
    0x01,                           /* clicked true */
};

static const uint8_t prediction_msg[] = {
    0xC3, 0x01, 0x72, 0x57, 0x6d, 0xec, 0x6c, 0xf4, 0xf3, 0xc7,
    0x02, 'r', 0x0A, 0x02, 's', 0x02, 0x04,     /* id "r", ts 5, "s", user 1, item 2 */
    0x00, 0x00, 0x00, 0x3F,         /* p_ctr 0.5f */
    0x00, 0x00, 0x80, 0x3E,         /* p_cvr 0.25f */
    0x00, 0x00, 0x00, 0x3E,         /* p_ctcvr 0.125f */
    0x0E,                           /* model_version 7 */
};

static const uint8_t request_msg[] = {
    0xC3, 0x01, 0x2d, 0xde, 0x7a, 0xb4, 0x74, 0xcc, 0x0f, 0xfe,
    0x02, 'q', 0x00, 0x02, 's', 0x02,           /* request_id "q", ts 0, "s", user 1 */
    0x00, 0x00, 0x00,               /* user_cat, ctx_cat, user_num: empty */
    0x04,                           /* candidates: a block of 2 */
    0x0A, 0x00, 0x00,               /*   item 5, no features */
    0x0C, 0x02, 0x02, 'k', 0x08, 0x00, 0x00,    /*   item 6, item_cat {"k": 4} */
    0x00,                           /* end of array */
};

static void test_hand_bytes(void) {
    m3_event e;
    memset(&e, 0, sizeof e);
    e.type = M3_EV_CONVERSION;
    strcpy(e.u.conv.conversion_id, "c1"); strcpy(e.u.conv.impression_id, "i1");
    e.u.conv.ts_ms = 1000; strcpy(e.u.conv.scenario, "home");
    e.u.conv.user_id = 42; e.u.conv.item_id = -1;
    hand_case("Conversion", conversion_msg, sizeof conversion_msg, &e);

    memset(&e, 0, sizeof e);
    e.type = M3_EV_IMPRESSION;
    strcpy(e.u.imp.impression_id, "a"); strcpy(e.u.imp.scenario, "s");
    e.u.imp.user_id = 1; e.u.imp.item_id = 2;
    set_cat(&e.u.imp.user_cat, 0, "g", 3); set_num(&e.u.imp.item_num, 0, "p", 1.5f);
    e.u.imp.clicked = true;
    hand_case("Impression", impression_msg, sizeof impression_msg, &e);

    /* The same Impression with user_cat as a negative-count block carrying its byte size
     * (-1 entries, 3 bytes), as Avro writers may emit: decodes to the same event. */
    bytes x; x.n = 0;
    put(&x, impression_msg, 17);
    put1(&x, 0x01); put1(&x, 0x06); put1(&x, 0x02); put1(&x, 'g'); put1(&x, 0x06); put1(&x, 0x00);
    put(&x, impression_msg + 22, sizeof impression_msg - 22);
    CHECK_EQ_INT(x.n, sizeof impression_msg + 1);
    m3_event d;
    CHECK_MSG(codec_decode(C, x.b, x.n, &d, reason, sizeof reason) == 0, "%s", reason);
    eq_event(&e, &d);
    /* and split over two blocks: {"g":3} then {"h":-2} */
    x.n = 0;
    put(&x, impression_msg, 17);
    put1(&x, 0x02); put1(&x, 0x02); put1(&x, 'g'); put1(&x, 0x06);
    put1(&x, 0x02); put1(&x, 0x02); put1(&x, 'h'); put1(&x, 0x03); put1(&x, 0x00);
    put(&x, impression_msg + 22, sizeof impression_msg - 22);
    CHECK_MSG(codec_decode(C, x.b, x.n, &d, reason, sizeof reason) == 0, "%s", reason);
    CHECK_EQ_INT(d.u.imp.user_cat.n, 2);
    CHECK_EQ_STR(d.u.imp.user_cat.kv[1].name, "h");
    CHECK_EQ_INT(d.u.imp.user_cat.kv[1].value, -2);

    memset(&e, 0, sizeof e);
    e.type = M3_EV_PREDICTION;
    strcpy(e.u.pred.id, "r"); e.u.pred.ts_ms = 5; strcpy(e.u.pred.scenario, "s");
    e.u.pred.user_id = 1; e.u.pred.item_id = 2;
    e.u.pred.p_ctr = 0.5f; e.u.pred.p_cvr = 0.25f; e.u.pred.p_ctcvr = 0.125f;
    e.u.pred.model_version = 7;
    hand_case("Prediction", prediction_msg, sizeof prediction_msg, &e);

    m3_candidate cands[2];
    memset(&e, 0, sizeof e); memset(cands, 0, sizeof cands);
    e.type = M3_EV_SCORE_REQUEST;
    strcpy(e.u.req.request_id, "q"); strcpy(e.u.req.scenario, "s"); e.u.req.user_id = 1;
    cands[0].item_id = 5; cands[1].item_id = 6; set_cat(&cands[1].item_cat, 0, "k", 4);
    e.u.req.n_cands = 2; e.u.req.cands = cands;
    hand_case("ScoreRequest", request_msg, sizeof request_msg, &e);
}

/* ---- (3) fingerprints and canonical forms ---- */
static void test_fingerprints(void) {
    /* CRC-64-AVRO of canonical forms, from Avro's share/test/data/schema-tests.txt */
    static const struct { const char *pcf; int64_t fp; } v[] = {
        {"\"null\"", 7195948357588979594LL},
        {"\"boolean\"", -6970731678124411036LL},
        {"\"int\"", 8247732601305521295LL},
        {"\"long\"", -3434872931120570953LL},
        {"\"float\"", 5583340709985441680LL},
        {"\"double\"", -8181574048448539266LL},
        {"\"bytes\"", 5746618253357095269LL},
        {"\"string\"", -8142146995180207161LL},
        {"[]", -1241056759729112623LL},
        {"[\"int\"]", -5232228896498058493LL},
        {"[\"int\",\"boolean\"]", 5392556393470105090LL},
        {"{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", -4824392279771201922LL},
        {"{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"}]}",
         7843277075252814651LL},
        {"{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"},"
         "{\"name\":\"f2\",\"type\":\"int\"}]}", -4860222112080293046LL},
        {"{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A1\"]}", -6342190197741309591LL},
        {"{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", 1756455273707447556LL},
        {"{\"type\":\"array\",\"items\":\"null\"}", -589620603366471059LL},
        {"{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":\"value\",\"type\":"
         "[\"null\",\"int\",\"long\",\"PigValue\"]}]}", -1759257747318642341LL},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        CHECK_MSG(codec_crc64_avro(v[i].pcf, strlen(v[i].pcf)) == (uint64_t)v[i].fp,
                  "crc64 of %s", v[i].pcf);

    /* The PCF generator on the spec's inputs: attributes stripped and ordered, names made
     * full, logical types and docs dropped, whitespace gone; PCF of a PCF is itself. */
    static const struct { const char *json, *pcf; } p[] = {
        {"\"null\"", "\"null\""},
        {"{\"type\":\"int\"}", "\"int\""},
        {"[ \"int\" , {\"type\":\"boolean\"} ]", "[\"int\",\"boolean\"]"},
        {"{\"type\":\"fixed\",\"name\":\"foo\",\"size\":15}",
         "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}"},
        {"{\"type\":\"enum\",\"name\":\"foo\",\"namespace\":\"x.y\",\"symbols\":[\"A1\",\"B2\"],"
         "\"doc\":\"d\"}", "{\"name\":\"x.y.foo\",\"type\":\"enum\",\"symbols\":[\"A1\",\"B2\"]}"},
        {"{\"type\":\"map\",\"values\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}}",
         "{\"type\":\"map\",\"values\":\"long\"}"},
        {"{\"fields\":[{\"type\":\"boolean\",\"name\":\"f1\",\"doc\":\"x\"}],\"name\":\"foo\","
         "\"type\":\"record\",\"doc\":\"y\"}",
         "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"}]}"},
        {"{\"type\":\"record\",\"name\":\"r\",\"namespace\":\"a.b\",\"fields\":["
         "{\"name\":\"x\",\"type\":{\"type\":\"record\",\"name\":\"In\",\"fields\":[]}},"
         "{\"name\":\"y\",\"type\":\"In\"}]}",
         "{\"name\":\"a.b.r\",\"type\":\"record\",\"fields\":[{\"name\":\"x\",\"type\":{\"name\":"
         "\"a.b.In\",\"type\":\"record\",\"fields\":[]}},{\"name\":\"y\",\"type\":\"a.b.In\"}]}"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        char *got = codec_pcf_from_json(p[i].json, strlen(p[i].json), err, sizeof err);
        CHECK_MSG(got != NULL, "%s: %s", p[i].json, err);
        CHECK_EQ_STR(got, p[i].pcf);
        free(got);
    }
    int parsed = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *got = codec_pcf_from_json(v[i].pcf, strlen(v[i].pcf), err, sizeof err);
        if (!got) {   /* Avro C refuses the empty union; its CRC was checked above */
            CHECK_MSG(strcmp(v[i].pcf, "[]") == 0, "Avro C rejects %s: %s", v[i].pcf, err);
            continue;
        }
        parsed++;
        CHECK_EQ_STR(got, v[i].pcf);
        CHECK(codec_crc64_avro(got, strlen(got)) == (uint64_t)v[i].fp);
        free(got);
    }
    CHECK(parsed >= 17);   /* all but the empty union */
    CHECK(codec_pcf_from_json("{\"type\":\"nope\"}", 15, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "invalid schema");

    CHECK_EQ_STR(codec_canonical(C, M3_EV_CONVERSION),
                 "{\"name\":\"io.m3rec.events.Conversion\",\"type\":\"record\",\"fields\":["
                 "{\"name\":\"conversion_id\",\"type\":\"string\"},"
                 "{\"name\":\"impression_id\",\"type\":\"string\"},"
                 "{\"name\":\"ts_ms\",\"type\":\"long\"},"
                 "{\"name\":\"scenario\",\"type\":\"string\"},"
                 "{\"name\":\"user_id\",\"type\":\"long\"},"
                 "{\"name\":\"item_id\",\"type\":\"long\"}]}");
    CHECK_CONTAINS(codec_canonical(C, M3_EV_SCORE_REQUEST),
                   "\"items\":{\"name\":\"io.m3rec.events.Candidate\",\"type\":\"record\"");
    for (int t = M3_EV_IMPRESSION; t <= M3_EV_PREDICTION; t++) {
        const char *pcf = codec_canonical(C, (m3_ev_type)t);
        CHECK(codec_fingerprint(C, (m3_ev_type)t) == codec_crc64_avro(pcf, strlen(pcf)));
    }
    /* pinned: these values are published in docs/contract.md */
    CHECK(codec_fingerprint(C, M3_EV_IMPRESSION) == 0xb0debabca1051241ULL);
    CHECK(codec_fingerprint(C, M3_EV_CONVERSION) == 0xe3ef9791c43fff05ULL);
    CHECK(codec_fingerprint(C, M3_EV_SCORE_REQUEST) == 0xfe0fcc74b47ade2dULL);
    CHECK(codec_fingerprint(C, M3_EV_PREDICTION) == 0xc7f3f46cec6d5772ULL);
    CHECK_EQ_INT(codec_fingerprint(C, M3_EV_NONE), 0);
    CHECK(codec_canonical(C, M3_EV_NONE) == NULL);
    CHECK_EQ_STR(codec_type_name(M3_EV_SCORE_REQUEST), "ScoreRequest");
    CHECK_EQ_STR(codec_type_name((m3_ev_type)99), "?");
}

/* ---- (4) cross-check with Avro C's generic writer and reader ---- */
#define AV(call) CHECK_MSG((call) == 0, "%s: %s", #call, avro_strerror())

static avro_schema_t parse_schema(const char *json, size_t len) {
    avro_schema_t s;
    AV(avro_schema_from_json_length(json, len, &s));
    return s;
}

static void av_set_cat(avro_value_t *rec, const char *field, const m3_catmap *m) {
    avro_value_t map, v;
    AV(avro_value_get_by_name(rec, field, &map, NULL));
    for (int i = 0; i < m->n; i++) {
        AV(avro_value_add(&map, m->kv[i].name, &v, NULL, NULL));
        AV(avro_value_set_long(&v, m->kv[i].value));
    }
}
static void av_set_num(avro_value_t *rec, const char *field, const m3_nummap *m) {
    avro_value_t map, v;
    AV(avro_value_get_by_name(rec, field, &map, NULL));
    for (int i = 0; i < m->n; i++) {
        AV(avro_value_add(&map, m->kv[i].name, &v, NULL, NULL));
        AV(avro_value_set_float(&v, m->kv[i].value));
    }
}
static void av_set_str(avro_value_t *rec, const char *field, const char *s) {
    avro_value_t v;
    AV(avro_value_get_by_name(rec, field, &v, NULL));
    AV(avro_value_set_string(&v, s));
}
static void av_set_long(avro_value_t *rec, const char *field, int64_t x) {
    avro_value_t v;
    AV(avro_value_get_by_name(rec, field, &v, NULL));
    AV(avro_value_set_long(&v, x));
}
static void av_set_float(avro_value_t *rec, const char *field, float x) {
    avro_value_t v;
    AV(avro_value_get_by_name(rec, field, &v, NULL));
    AV(avro_value_set_float(&v, x));
}

static void av_get_cat(avro_value_t *rec, const char *field, const m3_catmap *want) {
    avro_value_t map, v;
    size_t n;
    int64_t x;
    AV(avro_value_get_by_name(rec, field, &map, NULL));
    AV(avro_value_get_size(&map, &n));
    CHECK_EQ_INT(n, want->n);
    for (int i = 0; i < want->n; i++) {
        AV(avro_value_get_by_name(&map, want->kv[i].name, &v, NULL));
        AV(avro_value_get_long(&v, &x));
        CHECK_EQ_INT(x, want->kv[i].value);
    }
}
static void av_get_num(avro_value_t *rec, const char *field, const m3_nummap *want) {
    avro_value_t map, v;
    size_t n;
    float x;
    AV(avro_value_get_by_name(rec, field, &map, NULL));
    AV(avro_value_get_size(&map, &n));
    CHECK_EQ_INT(n, want->n);
    for (int i = 0; i < want->n; i++) {
        AV(avro_value_get_by_name(&map, want->kv[i].name, &v, NULL));
        AV(avro_value_get_float(&v, &x));
        CHECK(memcmp(&x, &want->kv[i].value, 4) == 0);
    }
}
static void av_get_str(avro_value_t *rec, const char *field, const char *want) {
    avro_value_t v;
    const char *s;
    size_t n;
    AV(avro_value_get_by_name(rec, field, &v, NULL));
    AV(avro_value_get_string(&v, &s, &n));
    CHECK_EQ_INT(n, strlen(want) + 1);          /* Avro C counts the NUL */
    CHECK_EQ_STR(s, want);
}
static void av_get_long(avro_value_t *rec, const char *field, int64_t want) {
    avro_value_t v;
    int64_t x;
    AV(avro_value_get_by_name(rec, field, &v, NULL));
    AV(avro_value_get_long(&v, &x));
    CHECK_EQ_INT(x, want);
}
static void av_get_float(avro_value_t *rec, const char *field, float want) {
    avro_value_t v;
    float x;
    AV(avro_value_get_by_name(rec, field, &v, NULL));
    AV(avro_value_get_float(&v, &x));
    CHECK(memcmp(&x, &want, 4) == 0);
}

static void av_fill(avro_value_t *rec, const m3_event *e) {
    avro_value_t v, arr, cand;
    switch (e->type) {
    case M3_EV_IMPRESSION: {
        const m3_impression *m = &e->u.imp;
        av_set_str(rec, "impression_id", m->impression_id); av_set_long(rec, "ts_ms", m->ts_ms);
        av_set_str(rec, "scenario", m->scenario);
        av_set_long(rec, "user_id", m->user_id); av_set_long(rec, "item_id", m->item_id);
        av_set_cat(rec, "user_cat", &m->user_cat); av_set_cat(rec, "item_cat", &m->item_cat);
        av_set_cat(rec, "ctx_cat", &m->ctx_cat);
        av_set_num(rec, "user_num", &m->user_num); av_set_num(rec, "item_num", &m->item_num);
        AV(avro_value_get_by_name(rec, "clicked", &v, NULL));
        AV(avro_value_set_boolean(&v, m->clicked));
        break;
    }
    case M3_EV_PREDICTION: {
        const m3_prediction *m = &e->u.pred;
        av_set_str(rec, "id", m->id); av_set_long(rec, "ts_ms", m->ts_ms);
        av_set_str(rec, "scenario", m->scenario);
        av_set_long(rec, "user_id", m->user_id); av_set_long(rec, "item_id", m->item_id);
        av_set_float(rec, "p_ctr", m->p_ctr); av_set_float(rec, "p_cvr", m->p_cvr);
        av_set_float(rec, "p_ctcvr", m->p_ctcvr);
        av_set_long(rec, "model_version", m->model_version);
        break;
    }
    case M3_EV_SCORE_REQUEST: {
        const m3_score_request *m = &e->u.req;
        av_set_str(rec, "request_id", m->request_id); av_set_long(rec, "ts_ms", m->ts_ms);
        av_set_str(rec, "scenario", m->scenario); av_set_long(rec, "user_id", m->user_id);
        av_set_cat(rec, "user_cat", &m->user_cat); av_set_cat(rec, "ctx_cat", &m->ctx_cat);
        av_set_num(rec, "user_num", &m->user_num);
        AV(avro_value_get_by_name(rec, "candidates", &arr, NULL));
        for (int i = 0; i < m->n_cands; i++) {
            AV(avro_value_append(&arr, &cand, NULL));
            av_set_long(&cand, "item_id", m->cands[i].item_id);
            av_set_cat(&cand, "item_cat", &m->cands[i].item_cat);
            av_set_num(&cand, "item_num", &m->cands[i].item_num);
        }
        break;
    }
    default: CHECK_MSG(0, "no Avro C fill for type %d", e->type);
    }
}

static void av_check(avro_value_t *rec, const m3_event *e) {
    avro_value_t v, arr, cand;
    switch (e->type) {
    case M3_EV_IMPRESSION: {
        const m3_impression *m = &e->u.imp;
        int b;
        av_get_str(rec, "impression_id", m->impression_id); av_get_long(rec, "ts_ms", m->ts_ms);
        av_get_str(rec, "scenario", m->scenario);
        av_get_long(rec, "user_id", m->user_id); av_get_long(rec, "item_id", m->item_id);
        av_get_cat(rec, "user_cat", &m->user_cat); av_get_cat(rec, "item_cat", &m->item_cat);
        av_get_cat(rec, "ctx_cat", &m->ctx_cat);
        av_get_num(rec, "user_num", &m->user_num); av_get_num(rec, "item_num", &m->item_num);
        AV(avro_value_get_by_name(rec, "clicked", &v, NULL));
        AV(avro_value_get_boolean(&v, &b));
        CHECK_EQ_INT(b, m->clicked);
        break;
    }
    case M3_EV_PREDICTION: {
        const m3_prediction *m = &e->u.pred;
        av_get_str(rec, "id", m->id); av_get_long(rec, "ts_ms", m->ts_ms);
        av_get_str(rec, "scenario", m->scenario);
        av_get_long(rec, "user_id", m->user_id); av_get_long(rec, "item_id", m->item_id);
        av_get_float(rec, "p_ctr", m->p_ctr); av_get_float(rec, "p_cvr", m->p_cvr);
        av_get_float(rec, "p_ctcvr", m->p_ctcvr);
        av_get_long(rec, "model_version", m->model_version);
        break;
    }
    case M3_EV_SCORE_REQUEST: {
        const m3_score_request *m = &e->u.req;
        size_t n;
        av_get_str(rec, "request_id", m->request_id); av_get_long(rec, "ts_ms", m->ts_ms);
        av_get_str(rec, "scenario", m->scenario); av_get_long(rec, "user_id", m->user_id);
        av_get_cat(rec, "user_cat", &m->user_cat); av_get_cat(rec, "ctx_cat", &m->ctx_cat);
        av_get_num(rec, "user_num", &m->user_num);
        AV(avro_value_get_by_name(rec, "candidates", &arr, NULL));
        AV(avro_value_get_size(&arr, &n));
        CHECK_EQ_INT(n, m->n_cands);
        for (int i = 0; i < m->n_cands; i++) {
            AV(avro_value_get_by_index(&arr, (size_t)i, &cand, NULL));
            av_get_long(&cand, "item_id", m->cands[i].item_id);
            av_get_cat(&cand, "item_cat", &m->cands[i].item_cat);
            av_get_num(&cand, "item_num", &m->cands[i].item_num);
        }
        break;
    }
    default: CHECK_MSG(0, "no Avro C check for type %d", e->type);
    }
}

/* Avro C writes e; its datum must equal ours byte for byte and decode with codec_decode;
 * Avro C reads our datum back to the same values. */
static void cross_check(const char *json, size_t json_len, const m3_event *e) {
    static char avbuf[1 << 20];
    static uint8_t ours[1 << 20], msg[1 << 20];
    avro_schema_t s = parse_schema(json, json_len);
    avro_value_iface_t *iface = avro_generic_class_from_schema(s);
    CHECK(iface != NULL);
    avro_value_t rec;
    AV(avro_generic_value_new(iface, &rec));
    av_fill(&rec, e);
    avro_writer_t w = avro_writer_memory(avbuf, sizeof avbuf);
    AV(avro_value_write(w, &rec));
    int64_t avlen = avro_writer_tell(w);
    avro_writer_free(w);

    long n = codec_encode(C, e, ours, sizeof ours, reason, sizeof reason);
    CHECK_MSG(n > 0, "%s", reason);
    CHECK_EQ_INT(n - CODEC_HEADER_LEN, avlen);
    CHECK_MSG(memcmp(ours + CODEC_HEADER_LEN, avbuf, (size_t)avlen) == 0,
              "%s datum differs from Avro C's", codec_type_name(e->type));

    /* Avro C's bytes, behind our header, decode to e */
    memcpy(msg, ours, CODEC_HEADER_LEN);
    memcpy(msg + CODEC_HEADER_LEN, avbuf, (size_t)avlen);
    m3_event d;
    CHECK_MSG(codec_decode(C, msg, CODEC_HEADER_LEN + (size_t)avlen, &d, reason, sizeof reason) == 0,
              "%s", reason);
    eq_event(e, &d);
    m3_event_clear(&d);

    /* Avro C reads our datum */
    avro_value_t back;
    AV(avro_generic_value_new(iface, &back));
    avro_reader_t r = avro_reader_memory((const char *)ours + CODEC_HEADER_LEN, n - CODEC_HEADER_LEN);
    AV(avro_value_read(r, &back));
    avro_reader_free(r);
    av_check(&back, e);
    CHECK(avro_value_equal(&rec, &back));

    avro_value_decref(&back);
    avro_value_decref(&rec);
    avro_value_iface_decref(iface);
    avro_schema_decref(s);
}

static void test_avro_c(void) {
    m3_event e = make_impression();
    cross_check(m3_embed_Impression, m3_embed_Impression_len, &e);
    memset(&e.u.imp.user_cat, 0, sizeof e.u.imp.user_cat);
    e.u.imp.clicked = false;
    e.u.imp.item_id = INT64_MIN;
    cross_check(m3_embed_Impression, m3_embed_Impression_len, &e);
    e = make_prediction();
    cross_check(m3_embed_Prediction, m3_embed_Prediction_len, &e);
    e.u.pred.p_ctr = 1e-45f; e.u.pred.model_version = INT64_MAX;
    cross_check(m3_embed_Prediction, m3_embed_Prediction_len, &e);
    e = make_request(7);
    cross_check(m3_embed_ScoreRequest, m3_embed_ScoreRequest_len, &e);
    m3_event_clear(&e);
    e = make_request(0);
    cross_check(m3_embed_ScoreRequest, m3_embed_ScoreRequest_len, &e);
}

/* ---- (5) malformed input, one case per line ---- */
static void bad(const void *buf, size_t len, const char *want) {
    m3_event d;
    memset(&d, 0xAB, sizeof d);        /* garbage in: decode must not read or free it */
    int rc = codec_decode(C, buf, len, &d, reason, sizeof reason);
    CHECK_MSG(rc == -1, "accepted, expected \"%s\"", want);
    CHECK_CONTAINS(reason, want);
    CHECK_EQ_INT(d.type, M3_EV_NONE);   /* left cleared */
    CHECK(d.u.req.cands == NULL);
}

/* A message: header for t, then the given datum bytes. */
static bytes *msg_of(m3_ev_type t, const uint8_t *datum, size_t n) {
    static bytes x;
    x.n = 0;
    put_hdr(&x, t);
    put(&x, datum, n);
    return &x;
}

/* An Impression whose user_cat block is built by the caller: prefix up to user_cat,
 * then `mid`, then the rest of impression_msg after user_cat. */
static bytes *imp_with_user_cat(const bytes *mid) {
    static bytes x;
    x.n = 0;
    put(&x, impression_msg, 17);
    put(&x, mid->b, mid->n);
    put(&x, impression_msg + 22, sizeof impression_msg - 22);
    return &x;
}

static void test_malformed(void) {
    bytes *x, m;
    uint8_t tmp[128];

    bad("", 0, "empty message");
    bad("\xC3", 1, "shorter than the 10-byte header");
    bad(impression_msg, 9, "shorter than the 10-byte header");
    memcpy(tmp, impression_msg, sizeof impression_msg); tmp[0] = 0x00;
    bad(tmp, sizeof impression_msg, "bad magic 0x00 0x01");
    memcpy(tmp, impression_msg, sizeof impression_msg); tmp[1] = 0x02;
    bad(tmp, sizeof impression_msg, "bad magic 0xc3 0x02");
    memcpy(tmp, impression_msg, sizeof impression_msg); memset(tmp + 2, 0, 8);
    bad(tmp, sizeof impression_msg, "unknown schema fingerprint 0x0000000000000000");
    memcpy(tmp, impression_msg, sizeof impression_msg); tmp[9] ^= 0x80;
    bad(tmp, sizeof impression_msg, "unknown schema fingerprint 0x30debabca1051241");
    bad(impression_msg, 10, "truncated datum in Impression.impression_id");
    bad(impression_msg, 21, "truncated datum in Impression.user_cat");
    bad(impression_msg, sizeof impression_msg - 3, "truncated datum in Impression.item_num[p]");
    bad(impression_msg, sizeof impression_msg - 1, "truncated datum in Impression.clicked");
    bad(request_msg, sizeof request_msg - 4, "truncated datum in ScoreRequest.candidates[1].item_cat");
    bad(request_msg, sizeof request_msg - 1, "truncated datum in ScoreRequest.candidates");

    /* Every prefix of larger valid messages fails cleanly (the hand cases did theirs). */
    m3_event ev[3] = {make_impression(), make_request(4), make_prediction()};
    for (int k = 0; k < 3; k++) {
        uint8_t big[20000];
        long n = codec_encode(C, &ev[k], big, sizeof big, reason, sizeof reason);
        CHECK(n > 0);
        for (long i = 0; i < n; i++) {
            m3_event d;
            CHECK_EQ_INT(codec_decode(C, big, (size_t)i, &d, reason, sizeof reason), -1);
            CHECK(reason[0] != '\0');
            CHECK_EQ_INT(d.type, M3_EV_NONE);
        }
    }
    m3_event_clear(&ev[1]);

    /* strings */
    static const uint8_t len_2e62[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    x = msg_of(M3_EV_CONVERSION, len_2e62, sizeof len_2e62);
    bad(x->b, x->n, "string length 4611686018427387904 exceeds 63 bytes in Conversion.conversion_id");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x01", 1);
    bad(x->b, x->n, "negative string length -1 in Conversion.conversion_id");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x7f", 1);
    bad(x->b, x->n, "negative string length -64 in Conversion.conversion_id");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x0a" "ab", 3);
    bad(x->b, x->n, "truncated datum in Conversion.conversion_id");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x00", 1);
    bad(x->b, x->n, "empty Conversion.conversion_id");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x02" "c" "\x00", 3);
    bad(x->b, x->n, "empty Conversion.impression_id");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x06" "a\0b", 4);
    bad(x->b, x->n, "NUL byte in string in Conversion.conversion_id");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x04" "a\xff", 3);
    bad(x->b, x->n, "invalid UTF-8 in string in Conversion.conversion_id");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x06" "\xed\xa0\x80", 4);   /* surrogate */
    bad(x->b, x->n, "invalid UTF-8");
    x = msg_of(M3_EV_CONVERSION, (const uint8_t *)"\x04" "\xc0\x80", 3);       /* overlong NUL */
    bad(x->b, x->n, "invalid UTF-8");
    m.n = 0; put_long(&m, 64); for (int i = 0; i < 64; i++) put1(&m, 'x');     /* oversize id */
    x = msg_of(M3_EV_CONVERSION, m.b, m.n);
    bad(x->b, x->n, "string length 64 exceeds 63 bytes in Conversion.conversion_id");
    m.n = 0; put_long(&m, 63); for (int i = 0; i < 63; i++) put1(&m, 'x');     /* 63 fits */
    put_str(&m, "i"); put_long(&m, 0); put_str(&m, "s"); put_long(&m, 1); put_long(&m, 2);
    x = msg_of(M3_EV_CONVERSION, m.b, m.n);
    { m3_event d; CHECK_EQ_INT(codec_decode(C, x->b, x->n, &d, reason, sizeof reason), 0);
      CHECK_EQ_INT(strlen(d.u.conv.conversion_id), 63); m3_event_clear(&d); }
    m.n = 0; put_str(&m, "c"); put_str(&m, "i"); put_long(&m, 0);                 /* scenario 32 */
    put_str(&m, "0123456789abcdef0123456789abcdef"); put_long(&m, 1); put_long(&m, 2);
    x = msg_of(M3_EV_CONVERSION, m.b, m.n);
    bad(x->b, x->n, "string length 32 exceeds 31 bytes in Conversion.scenario");

    /* varints */
    static const uint8_t v11[] = {0x02, 'c', 0x02, 'i',
                                  0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    x = msg_of(M3_EV_CONVERSION, v11, sizeof v11);
    bad(x->b, x->n, "varint longer than 10 bytes in Conversion.ts_ms");
    static const uint8_t vof[] = {0x02, 'c', 0x02, 'i',
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    x = msg_of(M3_EV_CONVERSION, vof, sizeof vof);
    bad(x->b, x->n, "varint overflows 64 bits in Conversion.ts_ms");
    /* only the shortest form: 1000 is d0 0f, not d0 8f 00; 0 is 00, not 80 00 */
    static const uint8_t vlong[] = {0x02, 'c', 0x02, 'i', 0xd0, 0x8f, 0x00,
                                    0x02, 's', 0x00, 0x00};
    x = msg_of(M3_EV_CONVERSION, vlong, sizeof vlong);
    bad(x->b, x->n, "overlong varint (3 bytes for a 2-byte value) in Conversion.ts_ms");
    static const uint8_t vzero[] = {0x02, 'c', 0x02, 'i', 0x00, 0x02, 's', 0x80, 0x00, 0x00};
    x = msg_of(M3_EV_CONVERSION, vzero, sizeof vzero);
    bad(x->b, x->n, "overlong varint (2 bytes for a 1-byte value) in Conversion.user_id");
    static const uint8_t vlen[] = {0x82, 0x80, 0x00, 'c'};       /* a string length too */
    x = msg_of(M3_EV_CONVERSION, vlen, sizeof vlen);
    bad(x->b, x->n, "overlong varint (3 bytes for a 1-byte value) in Conversion.conversion_id");
    static const uint8_t v10[] = {0x02, 'c', 0x02, 'i',          /* 10 bytes, the last 0 */
                                  0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    x = msg_of(M3_EV_CONVERSION, v10, sizeof v10);
    bad(x->b, x->n, "overlong varint (10 bytes for a 1-byte value) in Conversion.ts_ms");
    static const uint8_t vmax[] = {0x02, 'c', 0x02, 'i',                       /* INT64_MIN ok */
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                                   0x02, 's', 0x00, 0x00};
    x = msg_of(M3_EV_CONVERSION, vmax, sizeof vmax);
    { m3_event d; CHECK_EQ_INT(codec_decode(C, x->b, x->n, &d, reason, sizeof reason), 0);
      CHECK_EQ_INT(d.u.conv.ts_ms, INT64_MIN); m3_event_clear(&d); }

    /* maps */
    m.n = 0; put_long(&m, 1LL << 62);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "map Impression.user_cat has more than 32 entries");
    m.n = 0; put_long(&m, -(1LL << 62)); put_long(&m, 3);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "map Impression.user_cat has more than 32 entries");
    m.n = 0; put_long(&m, 33); for (int i = 0; i < 33; i++) { char k[8]; snprintf(k, 8, "k%d", i); put_str(&m, k); put_long(&m, i); }
    put_long(&m, 0);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "map Impression.user_cat has more than 32 entries");
    m.n = 0; for (int b = 0; b < 2; b++) { put_long(&m, 20); for (int i = 0; i < 20; i++) { char k[8]; snprintf(k, 8, "k%d", b * 20 + i); put_str(&m, k); put_long(&m, i); } }
    put_long(&m, 0);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "map Impression.user_cat has more than 32 entries");
    m.n = 0; put_long(&m, 32); for (int i = 0; i < 32; i++) { char k[8]; snprintf(k, 8, "k%d", i); put_str(&m, k); put_long(&m, i); }
    put_long(&m, 0);                                                             /* 32 fit */
    x = imp_with_user_cat(&m);
    { m3_event d; CHECK_EQ_INT(codec_decode(C, x->b, x->n, &d, reason, sizeof reason), 0);
      CHECK_EQ_INT(d.u.imp.user_cat.n, 32); CHECK_EQ_INT(d.u.imp.user_cat.kv[31].value, 31); }
    m.n = 0; put_long(&m, 2); put_str(&m, "g"); put_long(&m, 1); put_str(&m, "g"); put_long(&m, 2); put_long(&m, 0);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "duplicate map key \"g\" in Impression.user_cat");
    m.n = 0; put_long(&m, 1); put_str(&m, "g"); put_long(&m, 1); put_long(&m, 1); put_str(&m, "g"); put_long(&m, 2); put_long(&m, 0);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "duplicate map key \"g\" in Impression.user_cat");        /* across blocks */
    m.n = 0; put_long(&m, 1); put_str(&m, ""); put_long(&m, 1); put_long(&m, 0);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "empty map key in Impression.user_cat");
    m.n = 0; put_long(&m, 1); put_str(&m, "0123456789abcdef0123456789abcdef"); put_long(&m, 1); put_long(&m, 0);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "string length 32 exceeds 31 bytes in Impression.user_cat");
    m.n = 0; put_long(&m, -1); put_long(&m, -3);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "negative block size -3 in Impression.user_cat");
    m.n = 0; put_long(&m, -1); put_long(&m, 1000);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "truncated datum in Impression.user_cat");
    m.n = 0; put_long(&m, INT64_MIN);
    x = imp_with_user_cat(&m);
    bad(x->b, x->n, "invalid block count in Impression.user_cat");

    /* floats and booleans */
    m.n = 0; put(&m, prediction_msg + 10, 7); put_f32(&m, 0x7FC00000); /* NaN */
    x = msg_of(M3_EV_PREDICTION, m.b, m.n);
    bad(x->b, x->n, "non-finite float in Prediction.p_ctr");
    m.n = 0; put(&m, prediction_msg + 10, 11); put_f32(&m, 0xFF800000); /* -inf */
    x = msg_of(M3_EV_PREDICTION, m.b, m.n);
    bad(x->b, x->n, "non-finite float in Prediction.p_cvr");
    memcpy(tmp, impression_msg, sizeof impression_msg);
    memcpy(tmp + sizeof impression_msg - 6, "\x00\x00\x80\x7F", 4);           /* +inf */
    bad(tmp, sizeof impression_msg, "non-finite float in Impression.item_num[p]");
    memcpy(tmp, impression_msg, sizeof impression_msg); tmp[sizeof impression_msg - 1] = 0x07;
    bad(tmp, sizeof impression_msg, "invalid boolean byte 0x07 in Impression.clicked");
    memcpy(tmp, impression_msg, sizeof impression_msg); tmp[sizeof impression_msg - 1] = 0xFF;
    bad(tmp, sizeof impression_msg, "invalid boolean byte 0xff in Impression.clicked");

    /* trailing bytes */
    memcpy(tmp, impression_msg, sizeof impression_msg); tmp[sizeof impression_msg] = 0; tmp[sizeof impression_msg + 1] = 0;
    bad(tmp, sizeof impression_msg + 2, "2 trailing bytes after Impression datum");
    memcpy(tmp, conversion_msg, sizeof conversion_msg); tmp[sizeof conversion_msg] = 0x01;
    bad(tmp, sizeof conversion_msg + 1, "1 trailing bytes after Conversion datum");

    /* candidates */
    m.n = 0; put(&m, request_msg + 10, 9); put_long(&m, 1LL << 62);
    x = msg_of(M3_EV_SCORE_REQUEST, m.b, m.n);
    bad(x->b, x->n, "array ScoreRequest.candidates has more than 1024 entries");
    m.n = 0; put(&m, request_msg + 10, 9); put_long(&m, 1025);
    x = msg_of(M3_EV_SCORE_REQUEST, m.b, m.n);
    bad(x->b, x->n, "array ScoreRequest.candidates has more than 1024 entries");
    m.n = 0; put(&m, request_msg + 10, 9); put_long(&m, 1000); put(&m, "\x0a\x00\x00", 3);
    x = msg_of(M3_EV_SCORE_REQUEST, m.b, m.n);
    bad(x->b, x->n, "truncated datum (1000 candidates announced) in ScoreRequest.candidates");
    m.n = 0; put(&m, request_msg + 10, 9);
    for (int b = 0; b < 2; b++) { put_long(&m, 600); for (int i = 0; i < 600; i++) put(&m, "\x0a\x00\x00", 3); }
    put_long(&m, 0);
    x = msg_of(M3_EV_SCORE_REQUEST, m.b, m.n);
    bad(x->b, x->n, "array ScoreRequest.candidates has more than 1024 entries"); /* frees the first block */
    m.n = 0; put(&m, request_msg + 10, 9);
    put_long(&m, 2); put(&m, "\x0a\x00\x00", 3); put(&m, "\x0c\x02\x02k\x08\x02\x02k\x08\x00\x00", 11);
    put_long(&m, 0);
    x = msg_of(M3_EV_SCORE_REQUEST, m.b, m.n);
    bad(x->b, x->n, "duplicate map key \"k\" in ScoreRequest.candidates[1].item_cat");
}

/* ---- encoder refusals ---- */
static void bad_enc(const m3_event *e, const char *want) {
    uint8_t buf[4096];
    CHECK_MSG(codec_encode(C, e, buf, sizeof buf, reason, sizeof reason) == -1, "accepted, expected \"%s\"", want);
    CHECK_CONTAINS(reason, want);
}

static void test_encode_refusals(void) {
    m3_event e;
    memset(&e, 0, sizeof e);
    bad_enc(&e, "cannot encode event of type 0");
    e = make_prediction(); e.u.pred.p_ctr = NAN;
    bad_enc(&e, "non-finite float in Prediction.p_ctr");
    e = make_prediction(); e.u.pred.p_ctcvr = -INFINITY;
    bad_enc(&e, "non-finite float in Prediction.p_ctcvr");
    e = make_prediction(); e.u.pred.id[0] = 0;
    bad_enc(&e, "empty Prediction.id");
    e = make_conversion(); memset(e.u.conv.scenario, 'a', M3_NAME_MAX);
    bad_enc(&e, "string not NUL-terminated within 32 bytes in Conversion.scenario");
    e = make_conversion(); strcpy(e.u.conv.impression_id, "\xff");
    bad_enc(&e, "invalid UTF-8 in string in Conversion.impression_id");
    e = make_impression(); e.u.imp.item_cat.n = 33;
    bad_enc(&e, "map size 33 out of range 0..32 in Impression.item_cat");
    e = make_impression(); e.u.imp.ctx_cat.n = -1;
    bad_enc(&e, "map size -1 out of range 0..32 in Impression.ctx_cat");
    e = make_impression(); strcpy(e.u.imp.item_cat.kv[2].name, "category");
    bad_enc(&e, "duplicate map key \"category\" in Impression.item_cat");
    e = make_impression(); e.u.imp.user_num.kv[0].name[0] = 0;
    bad_enc(&e, "empty map key in Impression.user_num");
    e = make_impression(); e.u.imp.item_num.kv[1].value = NAN;
    bad_enc(&e, "non-finite float in Impression.item_num[ctr7d]");
    e = make_request(3); e.u.req.cands[2].item_num.kv[0].value = INFINITY; e.u.req.cands[2].item_num.n = 1;
    strcpy(e.u.req.cands[2].item_num.kv[0].name, "price");
    bad_enc(&e, "non-finite float in ScoreRequest.candidates[2].item_num[price]");
    m3_event_clear(&e);
    e = make_request(0); e.u.req.n_cands = M3_CAND_MAX + 1;
    bad_enc(&e, "candidate count 1025 out of range 0..1024 in ScoreRequest.candidates");
    e.u.req.n_cands = 1;
    bad_enc(&e, "NULL candidate array");
    e = make_conversion();
    CHECK_EQ_INT(codec_encode(C, &e, NULL, 0, reason, sizeof reason), -1);
    CHECK_CONTAINS(reason, "Conversion does not fit in a 0-byte buffer");
    m3_event_clear(NULL);
}

/* codec_encoded_size_max bounds the worst case of each type */
static void test_size_max(void) {
    m3_event e = make_request(M3_CAND_MAX);
    memset(e.u.req.request_id, 'r', M3_ID_MAX - 1);
    for (int i = 0; i < M3_CAND_MAX; i++) {
        e.u.req.cands[i].item_id = INT64_MIN;
        for (int j = 0; j < M3_MAP_MAX; j++) {
            char k[M3_NAME_MAX];
            snprintf(k, sizeof k, "%031d", j);
            set_cat(&e.u.req.cands[i].item_cat, j, k, INT64_MIN);
            set_num(&e.u.req.cands[i].item_num, j, k, 1.0f);
        }
    }
    size_t cap = codec_encoded_size_max(&e);
    uint8_t *buf = malloc(cap);
    long n = codec_encode(C, &e, buf, cap, reason, sizeof reason);
    CHECK_MSG(n > 0, "%s", reason);
    CHECK((size_t)n <= cap);
    m3_event d;
    CHECK_EQ_INT(codec_decode(C, buf, (size_t)n, &d, reason, sizeof reason), 0);
    eq_event(&e, &d);
    m3_event_clear(&d);
    m3_event_clear(&e);
    free(buf);
    e = make_conversion();
    memset(e.u.conv.conversion_id, 'c', M3_ID_MAX - 1);
    memset(e.u.conv.impression_id, 'i', M3_ID_MAX - 1);
    e.u.conv.ts_ms = e.u.conv.user_id = e.u.conv.item_id = INT64_MIN;
    uint8_t small[512];
    n = codec_encode(C, &e, small, sizeof small, reason, sizeof reason);
    CHECK(n > 0 && (size_t)n <= codec_encoded_size_max(&e));
}

/* Random corruptions of valid messages: each decode either fails with a reason or
 * yields an event the encoder accepts and that survives a round trip (what the decoder
 * lets through is always valid). Meaningful mostly under ASan/valgrind. */
static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t next_rand(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void test_fuzz(void) {
    m3_event src[4] = {make_impression(), make_conversion(), make_prediction(), make_request(3)};
    static uint8_t buf[8192], enc[65536];
    int accepted = 0, rejected = 0;
    for (int k = 0; k < 4; k++) {
        long n = codec_encode(C, &src[k], buf, sizeof buf, reason, sizeof reason);
        CHECK(n > 0);
        for (int it = 0; it < 5000; it++) {
            uint8_t m[8192];
            memcpy(m, buf, (size_t)n);
            int flips = 1 + (int)(next_rand() % 3);
            for (int f = 0; f < flips; f++) {
                size_t at = CODEC_HEADER_LEN + next_rand() % (size_t)(n - CODEC_HEADER_LEN);
                m[at] = (uint8_t)next_rand();
            }
            size_t len = (size_t)n;
            if (next_rand() % 4 == 0) len = CODEC_HEADER_LEN + next_rand() % (size_t)(n - CODEC_HEADER_LEN + 4);
            m3_event d, d2;
            if (codec_decode(C, m, len, &d, reason, sizeof reason) != 0) {
                CHECK(reason[0] != '\0');
                CHECK_EQ_INT(d.type, M3_EV_NONE);
                rejected++;
                continue;
            }
            accepted++;
            long n2 = codec_encode(C, &d, enc, sizeof enc, reason, sizeof reason);
            CHECK_MSG(n2 > 0, "decoded but not encodable: %s", reason);
            CHECK_EQ_INT(codec_decode(C, enc, (size_t)n2, &d2, reason, sizeof reason), 0);
            eq_event(&d, &d2);
            m3_event_clear(&d);
            m3_event_clear(&d2);
        }
    }
    CHECK(accepted > 100 && rejected > 100);
    m3_event_clear(&src[3]);
}

int main(void) {
    C = codec_new(reason, sizeof reason);
    CHECK_MSG(C != NULL, "codec_new: %s", reason);
    for (int t = M3_EV_IMPRESSION; t <= M3_EV_PREDICTION; t++)
        printf("%-12s fingerprint 0x%016llx\n  %s\n", codec_type_name((m3_ev_type)t),
               (unsigned long long)codec_fingerprint(C, (m3_ev_type)t),
               codec_canonical(C, (m3_ev_type)t));
    test_round_trips();
    test_hand_bytes();
    test_fingerprints();
    test_avro_c();
    test_malformed();
    test_encode_refusals();
    test_size_max();
    test_fuzz();
    codec_destroy(C);
    codec_destroy(NULL);
    return 0;
}
