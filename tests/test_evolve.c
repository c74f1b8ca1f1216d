/* test_evolve.c - schema evolution: writer schemas other than the reader's, resolved by
 * Avro's rules (stream/codec, docs/contract.md "Schema evolution").
 *
 * Messages are written by Avro C's generic writer from the other schema's JSON
 * (tests/data/evolve/), so the bytes come from an implementation independent of ours:
 * fields land right, defaults are applied, promotions are exact (or rounded as Avro's
 * int-to-float is); an incompatible schema is refused with the difference named, at
 * codec_add_writer and at every message. Then the output side: a consumer holding each
 * Prediction schema of schemas/history/ reads what the encoder writes (Avro C's resolved
 * reader). Last, end to end on the embedded broker: a producer on a newer, an older and an
 * incompatible Impression schema through the real m3rec-worker (input.schemas.dir).
 *
 * `test_evolve --bench` times the decoding of native and resolved messages instead;
 * `test_evolve --corpus DIR` writes fuzz_codec's seeds of resolved messages. */
#include <avro.h>
#include <stdint.h>
#include <time.h>
#include "check.h"
#include "evcmp.h"
#include "fsutil.h"
#include "pipeline.h"

#define AV(call) CHECK_MSG((call) == 0, "%s: %s", #call, avro_strerror())
#define DATA M3_SOURCE_DIR "/tests/data/evolve/"

static codec *C;
static char reason[CODEC_REASON_MAX];

extern const char *const m3_schema_history_path[];
extern const char *const m3_schema_history_text[];
extern const size_t m3_schema_history_len[];
extern const size_t m3_schema_history_n;
extern const char m3_embed_Prediction[];
extern const size_t m3_embed_Prediction_len;

/* ---- a writer schema and Avro C's generic values of it ---- */

typedef struct {
    char *json;
    avro_schema_t s;
    avro_value_iface_t *iface;
    uint64_t fp;
} wschema;

static wschema load_schema(const char *path) {
    wschema w;
    const char *text = proc_slurp(path);   /* a static buffer: copied */
    CHECK_MSG(text, "cannot read %s", path);
    w.json = strdup(text);
    CHECK(w.json);
    AV(avro_schema_from_json_length(w.json, strlen(w.json), &w.s));
    w.iface = avro_generic_class_from_schema(w.s);
    CHECK(w.iface);
    char err[256];
    char *pcf = codec_pcf_from_json(w.json, strlen(w.json), err, sizeof err);
    CHECK_MSG(pcf, "%s", err);
    w.fp = codec_crc64_avro(pcf, strlen(pcf));
    free(pcf);
    return w;
}

static void free_schema(wschema *w) {
    avro_value_iface_decref(w->iface);
    avro_schema_decref(w->s);
    free(w->json);
}

/* The union branch of v's schema to use: the first of type `want`, else the first not null. */
static int pick_branch(avro_value_t *v, avro_type_t want) {
    avro_schema_t u = avro_value_get_schema(v);
    int first = -1;
    for (size_t i = 0; i < avro_schema_union_size(u); i++) {
        avro_type_t t = avro_typeof(avro_schema_union_branch(u, (int)i));
        if (t == want) return (int)i;
        if (first < 0 && t != AVRO_NULL) first = (int)i;
    }
    CHECK(first >= 0);
    return first;
}

/* Set v to an integer x whatever numeric type (or union) the writer chose for it. */
static void gv_int(avro_value_t *v, int64_t x) {
    avro_value_t b;
    switch (avro_value_get_type(v)) {
    case AVRO_INT32: CHECK(x >= INT32_MIN && x <= INT32_MAX); AV(avro_value_set_int(v, (int32_t)x)); break;
    case AVRO_INT64: AV(avro_value_set_long(v, x)); break;
    case AVRO_FLOAT: AV(avro_value_set_float(v, (float)x)); break;
    case AVRO_DOUBLE: AV(avro_value_set_double(v, (double)x)); break;
    case AVRO_STRING: {   /* the incompatible schema's ts_ms */
        char s[32];
        snprintf(s, sizeof s, "%lld", (long long)x);
        AV(avro_value_set_string(v, s));
        break;
    }
    case AVRO_UNION:
        AV(avro_value_set_branch(v, pick_branch(v, AVRO_INT32), &b));
        gv_int(&b, x);
        break;
    default: CHECK_MSG(0, "no integer type %d", avro_value_get_type(v));
    }
}

/* A float feature value: an integral one goes to an int branch of a union when there is one. */
static void gv_float(avro_value_t *v, float x) {
    avro_value_t b;
    switch (avro_value_get_type(v)) {
    case AVRO_FLOAT: AV(avro_value_set_float(v, x)); break;
    case AVRO_INT32:
    case AVRO_INT64: gv_int(v, (int64_t)x); break;
    case AVRO_UNION:
        AV(avro_value_set_branch(v, pick_branch(v, x == (float)(int32_t)x ? AVRO_INT32 : AVRO_FLOAT), &b));
        gv_float(&b, x);
        break;
    default: CHECK_MSG(0, "no float type %d", avro_value_get_type(v));
    }
}

static void gv_str(avro_value_t *v, const char *s) {
    avro_value_t b;
    switch (avro_value_get_type(v)) {
    case AVRO_STRING: AV(avro_value_set_string(v, s)); break;
    case AVRO_BYTES: AV(avro_value_set_bytes(v, (void *)s, strlen(s))); break;
    case AVRO_UNION:
        AV(avro_value_set_branch(v, pick_branch(v, AVRO_STRING), &b));
        gv_str(&b, s);
        break;
    default: CHECK_MSG(0, "no string type %d", avro_value_get_type(v));
    }
}

/* The field `name` of rec, when the writer schema has it. */
static int field(avro_value_t *rec, const char *name, avro_value_t *f) {
    return avro_value_get_by_name(rec, name, f, NULL) == 0;
}

static void f_int(avro_value_t *rec, const char *name, int64_t x) {
    avro_value_t f;
    if (field(rec, name, &f)) gv_int(&f, x);
}
static void f_str(avro_value_t *rec, const char *name, const char *s) {
    avro_value_t f;
    if (field(rec, name, &f)) gv_str(&f, s);
}
static void f_cat(avro_value_t *rec, const char *name, const m3_catmap *m) {
    avro_value_t map, v;
    if (!field(rec, name, &map)) return;
    for (int i = 0; i < m->n; i++) {
        AV(avro_value_add(&map, m->kv[i].name, &v, NULL, NULL));
        gv_int(&v, m->kv[i].value);
    }
}
static void f_num(avro_value_t *rec, const char *name, const m3_nummap *m) {
    avro_value_t map, v;
    if (!field(rec, name, &map)) return;
    for (int i = 0; i < m->n; i++) {
        AV(avro_value_add(&map, m->kv[i].name, &v, NULL, NULL));
        gv_float(&v, m->kv[i].value);
    }
}

/* e as a record of the writer schema (fields it lacks are left out, extra ones set). */
static void fill(avro_value_t *rec, const m3_event *e) {
    avro_value_t f, b;
    if (e->type == M3_EV_IMPRESSION) {
        const m3_impression *m = &e->u.imp;
        f_str(rec, "impression_id", m->impression_id);
        f_int(rec, "ts_ms", m->ts_ms);
        f_str(rec, "scenario", m->scenario);
        f_int(rec, "user_id", m->user_id);
        f_int(rec, "item_id", m->item_id);
        f_cat(rec, "user_cat", &m->user_cat);
        f_cat(rec, "item_cat", &m->item_cat);
        f_cat(rec, "ctx_cat", &m->ctx_cat);
        f_num(rec, "user_num", &m->user_num);
        f_num(rec, "item_num", &m->item_num);
        if (field(rec, "clicked", &f)) AV(avro_value_set_boolean(&f, m->clicked));
        if (field(rec, "page_url", &f)) {   /* the newer writer's optional field, set */
            AV(avro_value_set_branch(&f, 1, &b));
            AV(avro_value_set_string(&b, "https://shop.example/item"));
        }
        if (field(rec, "debug", &f)) {   /* the promote writer's extra array, skipped */
            AV(avro_value_append(&f, &b, NULL));
            AV(avro_value_set_double(&b, 2.5));
        }
        return;
    }
    CHECK_EQ_INT(e->type, M3_EV_SCORE_REQUEST);
    const m3_score_request *m = &e->u.req;
    f_str(rec, "request_id", m->request_id);
    f_int(rec, "ts_ms", m->ts_ms);
    f_str(rec, "scenario", m->scenario);
    f_int(rec, "user_id", m->user_id);
    f_cat(rec, "user_cat", &m->user_cat);
    f_cat(rec, "ctx_cat", &m->ctx_cat);
    f_num(rec, "user_num", &m->user_num);
    f_str(rec, "trace_id", "t-1");
    CHECK(field(rec, "candidates", &f));
    for (int i = 0; i < m->n_cands; i++) {
        avro_value_t item, pos;
        AV(avro_value_append(&f, &item, NULL));
        f_int(&item, "item_id", m->cands[i].item_id);
        f_cat(&item, "item_cat", &m->cands[i].item_cat);
        f_num(&item, "item_num", &m->cands[i].item_num);
        if (field(&item, "position", &pos)) {   /* null for every other candidate */
            AV(avro_value_set_branch(&pos, i % 2 ? 0 : 1, &b));
            if (i % 2 == 0) AV(avro_value_set_int(&b, i));
            else AV(avro_value_set_null(&b));
        }
    }
}

/* e written with w by Avro C: a single-object message (header + datum) into out; returns
 * its length. *datum_at: where the datum starts (CODEC_HEADER_LEN). */
static size_t write_msg(const wschema *w, const m3_event *e, uint8_t *out, size_t cap) {
    avro_value_t rec;
    AV(avro_generic_value_new(w->iface, &rec));
    fill(&rec, e);
    out[0] = 0xC3;
    out[1] = 0x01;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(w->fp >> (8 * i));
    avro_writer_t aw = avro_writer_memory((char *)out + CODEC_HEADER_LEN, (int64_t)(cap - CODEC_HEADER_LEN));
    AV(avro_value_write(aw, &rec));
    size_t n = CODEC_HEADER_LEN + (size_t)avro_writer_tell(aw);
    avro_writer_free(aw);
    avro_value_decref(&rec);
    return n;
}

/* ---- events ---- */

static void set_cat(m3_catmap *m, const char *k, int64_t v) {
    snprintf(m->kv[m->n].name, M3_NAME_MAX, "%s", k);
    m->kv[m->n++].value = v;
}
static void set_num(m3_nummap *m, const char *k, float v) {
    snprintf(m->kv[m->n].name, M3_NAME_MAX, "%s", k);
    m->kv[m->n++].value = v;
}

/* An impression whose values every test writer can carry (ints within 32 bits, integral
 * numeric features where a writer has int values). */
static m3_event impression(void) {
    m3_event e;
    memset(&e, 0, sizeof e);
    e.type = M3_EV_IMPRESSION;
    m3_impression *m = &e.u.imp;
    snprintf(m->impression_id, sizeof m->impression_id, "imp-evolve-1");
    m->ts_ms = 1767225600123LL;
    snprintf(m->scenario, sizeof m->scenario, "search");
    m->user_id = INT32_MAX;
    m->item_id = INT32_MIN;
    set_cat(&m->user_cat, "gender", 1);
    set_cat(&m->user_cat, "age_bucket", -4);
    set_cat(&m->item_cat, "category", 301);
    set_cat(&m->item_cat, "brand", 2000000000);
    set_cat(&m->ctx_cat, "hour", 13);
    set_num(&m->user_num, "activity", 0.75f);
    set_num(&m->user_num, "visits", 12.0f);
    set_num(&m->item_num, "price", 16777217.0f);   /* = 16777216 as a float already */
    set_num(&m->item_num, "stock", -3.0f);
    m->clicked = true;
    return e;
}

/* Add w; expect it compatible, of type t, with fingerprint w->fp. */
static void add_ok(const wschema *w, m3_ev_type want) {
    m3_ev_type t;
    uint64_t fp;
    char err[CODEC_REASON_MAX];
    CHECK_MSG(codec_add_writer(C, w->json, strlen(w->json), &t, &fp, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(t, want);
    CHECK(fp == w->fp);
}

/* With --corpus DIR, the messages decodes_to() checks are also written to DIR/evolve-<n>:
 * fuzz_codec's seeds of resolved messages (tests/fuzz/make_corpus.sh). */
static const char *corpus_dir;

static void save_seed(const uint8_t *msg, size_t n) {
    static int k;
    char path[1024];
    if (!corpus_dir) return;
    snprintf(path, sizeof path, "%s/evolve-%d", corpus_dir, ++k);
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f && fwrite(msg, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* e written with writer w decodes to `want`, as a message and as a bare datum. */
static void decodes_to(const wschema *w, const m3_event *e, const m3_event *want) {
    static uint8_t msg[1 << 16];
    size_t n = write_msg(w, e, msg, sizeof msg);
    save_seed(msg, n);
    m3_event d;
    CHECK_MSG(codec_decode(C, msg, n, &d, reason, sizeof reason) == 0, "%s", reason);
    eq_event(&d, want);
    m3_event_clear(&d);
    CHECK_MSG(codec_decode_datum(C, w->fp, msg + CODEC_HEADER_LEN, n - CODEC_HEADER_LEN, &d, reason,
                                 sizeof reason) == 0, "%s", reason);
    eq_event(&d, want);
    m3_event_clear(&d);
}

/* ---- (1) compatible writers ---- */

static void test_newer_older(void) {
    m3_event e = impression(), want = e;
    wschema newer = load_schema(DATA "Impression.newer.avsc");
    wschema older = load_schema(DATA "Impression.older.avsc");
    /* before they are added: the message is unknown (what the old code did for all) */
    static uint8_t msg[4096];
    size_t n = write_msg(&newer, &e, msg, sizeof msg);
    m3_event d;
    CHECK(codec_decode(C, msg, n, &d, reason, sizeof reason) == -1);
    CHECK_CONTAINS(reason, "unknown schema fingerprint");
    CHECK(codec_decode_datum(C, newer.fp, msg + CODEC_HEADER_LEN, n - CODEC_HEADER_LEN, &d, reason,
                             sizeof reason) == -1);
    CHECK_CONTAINS(reason, "unknown writer schema 0x");

    add_ok(&newer, M3_EV_IMPRESSION);
    add_ok(&newer, M3_EV_IMPRESSION);   /* again: a no-op with the same answer */
    decodes_to(&newer, &e, &want);      /* page_url skipped */

    add_ok(&older, M3_EV_IMPRESSION);
    want.u.imp.ctx_cat.n = 0;           /* the reader's default {} */
    decodes_to(&older, &e, &want);

    /* records match by unqualified name: another namespace (another fingerprint) resolves */
    char *json = strdup(older.json), *ns = strstr(json, "io.m3rec.events");
    CHECK(json && ns);
    memcpy(ns, "com.example.ads", 15);
    m3_ev_type t;
    uint64_t fp;
    char err[CODEC_REASON_MAX];
    CHECK_MSG(codec_add_writer(C, json, strlen(json), &t, &fp, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(t, M3_EV_IMPRESSION);
    CHECK(fp != older.fp);
    free(json);
    free_schema(&newer);
    free_schema(&older);
}

/* The exact int -> float rounding of writer w (the promote schema), with a datum whose
 * item_num value is an int no float has; then every truncation of it is refused. */
static void int_to_float_rounding(const wschema *w) {
    m3_event e = impression();
    e.u.imp.item_num.n = 1;
    snprintf(e.u.imp.item_num.kv[0].name, M3_NAME_MAX, "big");
    e.u.imp.item_num.kv[0].value = 0;
    static uint8_t msg[4096];
    avro_value_t rec, map, v;
    AV(avro_generic_value_new(w->iface, &rec));
    fill(&rec, &e);
    AV(avro_value_get_by_name(&rec, "item_num", &map, NULL));
    AV(avro_value_get_by_name(&map, "big", &v, NULL));
    AV(avro_value_set_int(&v, 16777217));   /* 2^24 + 1: no float has it */
    avro_writer_t aw = avro_writer_memory((char *)msg, sizeof msg);
    AV(avro_value_write(aw, &rec));
    size_t n = (size_t)avro_writer_tell(aw);
    avro_writer_free(aw);
    avro_value_decref(&rec);
    m3_event d;
    CHECK_MSG(codec_decode_datum(C, w->fp, msg, n, &d, reason, sizeof reason) == 0, "%s", reason);
    CHECK(d.u.imp.item_num.kv[0].value == (float)16777217);
    CHECK(d.u.imp.item_num.kv[0].value == 16777216.0f);
    m3_event_clear(&d);
    /* a malformed resolved datum: cut short anywhere, refused with a reason, no leak */
    for (size_t k = 0; k < n; k++) {
        CHECK(codec_decode_datum(C, w->fp, msg, k, &d, reason, sizeof reason) == -1);
        CHECK(reason[0]);
        CHECK_EQ_INT(d.type, M3_EV_NONE);
    }
}

static void test_promotions(void) {
    wschema w = load_schema(DATA "Impression.promote.avsc");
    add_ok(&w, M3_EV_IMPRESSION);
    /* fields in another order, int -> long exact at both ends of int, bytes -> string,
     * map<int> -> map<float>, a float|int union (both branches used), an extra array */
    m3_event e = impression();
    decodes_to(&w, &e, &e);
    int_to_float_rounding(&w);
    free_schema(&w);

    /* nested: a newer ScoreRequest whose Candidate gained a field, plus a trailing field */
    wschema r = load_schema(DATA "ScoreRequest.newer.avsc");
    add_ok(&r, M3_EV_SCORE_REQUEST);
    m3_event q;
    memset(&q, 0, sizeof q);
    q.type = M3_EV_SCORE_REQUEST;
    snprintf(q.u.req.request_id, M3_ID_MAX, "req-evolve");
    snprintf(q.u.req.scenario, M3_NAME_MAX, "home");
    q.u.req.user_id = 77;
    q.u.req.ts_ms = 5;
    m3_candidate cands[3];
    memset(cands, 0, sizeof cands);
    for (int i = 0; i < 3; i++) {
        cands[i].item_id = 1000 + i;
        set_cat(&cands[i].item_cat, "category", 10 + i);
        set_num(&cands[i].item_num, "price", 1.25f * (float)i);
    }
    q.u.req.cands = cands;
    q.u.req.n_cands = 3;
    static uint8_t msg[1 << 16];
    size_t n = write_msg(&r, &q, msg, sizeof msg);
    save_seed(msg, n);
    m3_event d;
    CHECK_MSG(codec_decode(C, msg, n, &d, reason, sizeof reason) == 0, "%s", reason);
    eq_event(&d, &q);
    m3_event_clear(&d);
    free_schema(&r);
}

/* Hostile resolved datums: an array of items that take no bytes announcing 2^46 of them
 * is refused at once (the old plan would loop), a bad union index is named. */
static void test_hostile(void) {
    wschema w = load_schema(DATA "Impression.newer.avsc");
    const char *blanks = "{\"name\": \"blanks\", \"type\": {\"type\": \"array\", \"items\": "
                         "{\"type\": \"record\", \"name\": \"B\", \"fields\": [{\"name\": \"n\", \"type\": \"null\"}]}}},";
    char json[4096], *at = strstr(w.json, "\"fields\": [");
    CHECK(at);
    at += strlen("\"fields\": [");
    snprintf(json, sizeof json, "%.*s%s%s", (int)(at - w.json), w.json, blanks, at);
    m3_ev_type t;
    uint64_t fp;
    char err[CODEC_REASON_MAX];
    CHECK_MSG(codec_add_writer(C, json, strlen(json), &t, &fp, err, sizeof err) == 0, "%s", err);
    static const uint8_t many[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20};   /* zig-zag: 2^46 */
    m3_event d;
    CHECK(codec_decode_datum(C, fp, many, sizeof many, &d, reason, sizeof reason) == -1);
    CHECK_EQ_STR(reason, "too many empty array items (70368744177664) in Impression.blanks");
    /* the newer writer's page_url union with branch 2 of 2 */
    static uint8_t msg[4096];
    m3_event e = impression();
    size_t n = write_msg(&w, &e, msg, sizeof msg);
    add_ok(&w, M3_EV_IMPRESSION);
    uint8_t *last = msg + n;   /* page_url is the last field: 02 <len> <bytes>; make it 04 */
    size_t url = strlen("https://shop.example/item");
    CHECK(last[-(long)url - 2] == 0x02);
    last[-(long)url - 2] = 0x04;
    CHECK(codec_decode(C, msg, n, &d, reason, sizeof reason) == -1);
    CHECK_EQ_STR(reason, "union index 2 out of range 0..1 in Impression.page_url");
    free_schema(&w);
}

/* ---- (2) incompatible writers: the difference named, at add and at every message ---- */

static void incompatible(const char *path, const char *want) {
    wschema w = load_schema(path);
    m3_ev_type t;
    uint64_t fp;
    char err[CODEC_REASON_MAX], expect[CODEC_REASON_MAX];
    CHECK(codec_add_writer(C, w.json, strlen(w.json), &t, &fp, err, sizeof err) == -1);
    CHECK(fp == w.fp);
    CHECK_EQ_INT(t, M3_EV_IMPRESSION);
    snprintf(expect, sizeof expect, "Impression writer 0x%016llx: %s", (unsigned long long)fp, want);
    CHECK_EQ_STR(err, expect);
    /* again: the same answer */
    CHECK(codec_add_writer(C, w.json, strlen(w.json), &t, &fp, err, sizeof err) == -1);
    CHECK_EQ_STR(err, expect);
    static uint8_t msg[4096];
    m3_event e = impression(), d;
    size_t n = write_msg(&w, &e, msg, sizeof msg);
    CHECK(codec_decode(C, msg, n, &d, reason, sizeof reason) == -1);
    CHECK_EQ_STR(reason, expect);
    CHECK_EQ_INT(d.type, M3_EV_NONE);
    CHECK(codec_decode_datum(C, fp, msg + CODEC_HEADER_LEN, n - CODEC_HEADER_LEN, &d, reason,
                             sizeof reason) == -1);
    CHECK_EQ_STR(reason, expect);
    CHECK_EQ_INT(codec_writer_status(C, fp, &t, err, sizeof err), -1);
    CHECK_EQ_STR(err, expect);
    free_schema(&w);
}

static void test_incompatible(void) {
    incompatible(DATA "Impression.incompatible.avsc",
                 "field ts_ms is string, reader wants long (not promotable)");
    incompatible(DATA "Impression.noitemcat.avsc",
                 "reader field item_cat has no default and the writer lacks it");
    m3_ev_type t;
    uint64_t fp;
    char err[CODEC_REASON_MAX];
    const char *other = "{\"type\":\"record\",\"name\":\"Click\",\"fields\":[{\"name\":\"a\",\"type\":\"long\"}]}";
    CHECK(codec_add_writer(C, other, strlen(other), &t, &fp, err, sizeof err) == -1);
    CHECK_EQ_INT(t, M3_EV_NONE);
    CHECK(fp != 0);
    char want[CODEC_REASON_MAX];
    snprintf(want, sizeof want, "writer 0x%016llx: record Click is none of Impression, Conversion, "
             "ScoreRequest, Prediction", (unsigned long long)fp);
    CHECK_EQ_STR(err, want);
    const char *junk = "{\"type\":\"recrod\"}";
    CHECK(codec_add_writer(C, junk, strlen(junk), &t, &fp, err, sizeof err) == -1);
    CHECK(fp == 0);
    CHECK_CONTAINS(err, "invalid schema");
    /* more shapes of difference, each named */
    static const struct { const char *fields, *want; } cases[] = {
        {"{\"name\":\"user_id\",\"type\":\"double\"}", "field user_id is double, reader wants long (not promotable)"},
        {"{\"name\":\"user_id\",\"type\":[\"null\",\"long\"]}", "field user_id is null, reader wants long (not promotable)"},
        {"{\"name\":\"user_cat\",\"type\":{\"type\":\"map\",\"values\":\"string\"}}",
         "field user_cat{} is string, reader wants long (not promotable)"},
        {"{\"name\":\"user_cat\",\"type\":{\"type\":\"array\",\"items\":\"long\"}}",
         "field user_cat is array<long>, reader wants map<long> (not resolvable)"},
        {"{\"name\":\"user_id\",\"type\":\"long\"},{\"name\":\"chain\",\"type\":[\"null\",{\"type\":"
         "\"record\",\"name\":\"Node\",\"fields\":[{\"name\":\"next\",\"type\":[\"null\",\"Node\"]}]}]}",
         ": schema nested deeper than 32 levels"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] + 1; i++) {
        char json[8192], dag[4096];
        if (i == sizeof cases / sizeof cases[0]) {   /* R20 holds R19 twice, ... R1 holds R0 twice: */
            int k = snprintf(dag, sizeof dag, "{\"name\":\"user_id\",\"type\":\"long\"},{\"name\":\"dag\",\"type\":");
            for (int r = 20; r > 0; r--)   /* 2^20 types to resolve, if nothing bounded it */
                k += snprintf(dag + k, sizeof dag - k, "{\"type\":\"record\",\"name\":\"R%d\",\"fields\":["
                              "{\"name\":\"b\",\"type\":\"long\"},{\"name\":\"a\",\"type\":", r);
            k += snprintf(dag + k, sizeof dag - k, "{\"type\":\"record\",\"name\":\"R0\",\"fields\":["
                          "{\"name\":\"x\",\"type\":\"long\"}]}");
            for (int r = 1; r <= 20; r++)
                k += snprintf(dag + k, sizeof dag - k, "},{\"name\":\"c\",\"type\":\"R%d\"}]}", r - 1);
            snprintf(dag + k, sizeof dag - k, "}");
            CHECK((size_t)k < sizeof dag - 2);
        }
        const char *fields = i < sizeof cases / sizeof cases[0] ? cases[i].fields : dag;
        const char *expect = i < sizeof cases / sizeof cases[0] ? cases[i].want
                           : "schema too large (over 4096 types to resolve)";
        snprintf(json, sizeof json,
                 "{\"type\":\"record\",\"name\":\"Impression\",\"fields\":["
                 "{\"name\":\"impression_id\",\"type\":\"string\"},{\"name\":\"ts_ms\",\"type\":\"long\"},"
                 "{\"name\":\"scenario\",\"type\":\"string\"},{\"name\":\"item_id\",\"type\":\"long\"},"
                 "{\"name\":\"item_cat\",\"type\":{\"type\":\"map\",\"values\":\"long\"}},"
                 "{\"name\":\"user_num\",\"type\":{\"type\":\"map\",\"values\":\"float\"}},"
                 "{\"name\":\"item_num\",\"type\":{\"type\":\"map\",\"values\":\"float\"}},"
                 "{\"name\":\"clicked\",\"type\":\"boolean\"},%s%s]}",
                 fields,
                 strstr(fields, "user_cat") ? ",{\"name\":\"user_id\",\"type\":\"long\"}"
                                                     : ",{\"name\":\"user_cat\",\"type\":{\"type\":\"map\",\"values\":\"long\"}}");
        CHECK_MSG(codec_add_writer(C, json, strlen(json), &t, &fp, err, sizeof err) == -1, "%s", json);
        CHECK_CONTAINS(err, expect);
    }
}

/* ---- (3) what is embedded, and a directory of writers ---- */

static void test_history(void) {
    CHECK(m3_schema_history_n >= 4);
    for (size_t i = 0; i < m3_schema_history_n; i++) {
        m3_ev_type t;
        uint64_t fp;
        char err[CODEC_REASON_MAX];
        CHECK_MSG(codec_add_writer(C, m3_schema_history_text[i], m3_schema_history_len[i], &t, &fp,
                                   err, sizeof err) == 0, "%s: %s", m3_schema_history_path[i], err);
        CHECK_MSG(strncmp(m3_schema_history_path[i], "schemas/history/", 16) == 0 &&
                  strncmp(m3_schema_history_path[i] + 16, codec_type_name(t),
                          strlen(codec_type_name(t))) == 0,
                  "%s is named after its record (%s)", m3_schema_history_path[i], codec_type_name(t));
        CHECK_EQ_INT(codec_writer_status(C, fp, &t, err, sizeof err), 1);
    }
}

static int n_refused;
static char refused_why[CODEC_REASON_MAX];
static void on_refused(void *arg, const char *path, const char *why) {
    (void)arg;
    CHECK_CONTAINS(path, ".avsc");
    n_refused++;
    snprintf(refused_why, sizeof refused_why, "%s", why);
}

static void test_dir(void) {
    char err[512];
    codec *c = codec_new(err, sizeof err);
    CHECK_MSG(c, "%s", err);
    n_refused = 0;
    CHECK_EQ_INT(codec_add_dir(c, DATA, on_refused, NULL, err, sizeof err), 6);
    CHECK_EQ_INT(n_refused, 2);
    m3_ev_type t;
    wschema w = load_schema(DATA "Impression.older.avsc");
    CHECK_EQ_INT(codec_writer_status(c, w.fp, &t, err, sizeof err), 1);
    free_schema(&w);
    CHECK_EQ_INT(codec_add_dir(c, DATA "nonexistent", NULL, NULL, err, sizeof err), -1);
    CHECK_CONTAINS(err, "nonexistent: No such file or directory");
    /* a file that is not JSON: path:line:col */
    char dir[512], path[600];
    fs_scratch_dir(dir, sizeof dir, "test_evolve_dir");
    snprintf(path, sizeof path, "%s/bad.avsc", dir);
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs("{\n  \"type\": \"record\",\n  \"name\" \"X\"\n}\n", f);
    fclose(f);
    CHECK_EQ_INT(codec_add_dir(c, dir, NULL, NULL, err, sizeof err), -1);
    char want[700];
    snprintf(want, sizeof want, "%s:3:10: not JSON", path);
    CHECK_CONTAINS(err, want);
    f = fopen(path, "w");
    CHECK(f);
    fputs("{\"type\": \"record\", \"name\": \"X\", \"fields\": [{\"name\": \"a\", \"type\": \"lnog\"}]}\n", f);
    fclose(f);
    CHECK_EQ_INT(codec_add_dir(c, dir, NULL, NULL, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:1: invalid schema", path);
    CHECK_CONTAINS(err, want);
    rm_rf(dir);
    codec_destroy(c);
}

/* ---- (4) output: a consumer with an earlier Prediction schema reads the worker's ---- */

/* A consumer holding Prediction schema `json` (what) reads datum[n] - the encoder's
 * Prediction of test_prediction_consumers - through Avro C's resolved reader. */
static void consumer_reads(const char *what, const char *json, size_t len, const uint8_t *datum,
                           size_t n) {
    avro_schema_t writer, reader;
    AV(avro_schema_from_json_length(m3_embed_Prediction, m3_embed_Prediction_len, &writer));
    AV(avro_schema_from_json_length(json, len, &reader));
    avro_value_iface_t *res = avro_resolved_writer_new(writer, reader);
    CHECK_MSG(res, "%s cannot read the worker's Prediction: %s", what, avro_strerror());
    avro_value_iface_t *gen = avro_generic_class_from_schema(reader);
    avro_value_t dst, src, f;
    AV(avro_generic_value_new(gen, &dst));
    AV(avro_resolved_writer_new_value(res, &src));
    avro_resolved_writer_set_dest(&src, &dst);
    avro_reader_t r = avro_reader_memory((const char *)datum, (int64_t)n);
    AV(avro_value_read(r, &src));
    avro_reader_free(r);
    const char *s;
    size_t sl;
    int64_t l;
    AV(avro_value_get_by_name(&dst, "id", &f, NULL));
    AV(avro_value_get_string(&f, &s, &sl));
    CHECK_EQ_STR(s, "imp-42");
    AV(avro_value_get_by_name(&dst, "item_id", &f, NULL));
    AV(avro_value_get_long(&f, &l));
    CHECK_EQ_INT(l, 1LL << 40);
    AV(avro_value_get_by_name(&dst, "p_ctcvr", &f, NULL));
    if (avro_value_get_type(&f) == AVRO_DOUBLE) {   /* a consumer that promotes float */
        double d;
        AV(avro_value_get_double(&f, &d));
        CHECK(d == 0.0625);
    } else {
        float fl;
        AV(avro_value_get_float(&f, &fl));
        CHECK(fl == 0.0625f);
    }
    avro_value_decref(&src);
    avro_value_decref(&dst);
    avro_value_iface_decref(gen);
    avro_value_iface_decref(res);
    avro_schema_decref(reader);
    avro_schema_decref(writer);
}

/* Every Prediction schema of schemas/history/, and the consumers' of
 * tests/data/evolve/consumers/ (one from before model_version, with p_ctcvr a double). */
static void test_prediction_consumers(void) {
    m3_event e;
    memset(&e, 0, sizeof e);
    e.type = M3_EV_PREDICTION;
    m3_prediction *p = &e.u.pred;
    snprintf(p->id, sizeof p->id, "imp-42");
    p->ts_ms = 1767225600000LL;
    snprintf(p->scenario, sizeof p->scenario, "home");
    p->user_id = -5;
    p->item_id = 1LL << 40;
    p->p_ctr = 0.125f;
    p->p_cvr = 0.5f;
    p->p_ctcvr = 0.0625f;
    p->model_version = 9;
    static uint8_t msg[4096];
    long n = codec_encode(C, &e, msg, sizeof msg, reason, sizeof reason);
    CHECK_MSG(n > 0, "%s", reason);
    int consumers = 0;
    for (size_t i = 0; i < m3_schema_history_n; i++)
        if (strstr(m3_schema_history_path[i], "/Prediction.")) {
            consumer_reads(m3_schema_history_path[i], m3_schema_history_text[i],
                           m3_schema_history_len[i], msg + CODEC_HEADER_LEN, (size_t)n - CODEC_HEADER_LEN);
            consumers++;
        }
    CHECK(consumers >= 1);
    wschema old = load_schema(DATA "consumers/Prediction.noversion.avsc");
    consumer_reads("Prediction.noversion.avsc", old.json, strlen(old.json), msg + CODEC_HEADER_LEN,
                   (size_t)n - CODEC_HEADER_LEN);
    free_schema(&old);
}

/* ---- (5) end to end: producers on other Impression schemas through the real worker ---- */

#define E2E_IMPRESSIONS 1500

static void test_worker(void) {
    char err[512];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    const char *topics[] = {"evo.events.home", "evo.events.search", "evo.events.product",
                            "evo.requests", "evo.predictions", "evo.dlq"};
    kio_mock *mock = kio_mock_new(2, topics, 6, err, sizeof err);
    CHECK_MSG(mock, "%s", err);
    const char *bs = kio_mock_bootstraps(mock);
    kio_producer *p = pl_producer(bs);
    wschema newer = load_schema(DATA "Impression.newer.avsc");
    wschema older = load_schema(DATA "Impression.older.avsc");
    wschema req = load_schema(DATA "ScoreRequest.newer.avsc");
    wschema bad = load_schema(DATA "Impression.incompatible.avsc");
    wschema nocat = load_schema(DATA "Impression.noitemcat.avsc");

    /* the simulator's stream, each impression written by the native, newer or older
     * writer in turn, every other score request by the newer ScoreRequest writer */
    static pl_stream s = {.prefix = "evo", .seed = 11, .n_impressions = E2E_IMPRESSIONS};
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    sc.seed = s.seed;
    sc.n_impressions = s.n_impressions;
    sim *sm = sim_new(&sc, err, sizeof err);
    CHECK_MSG(sm, "%s", err);
    static uint8_t buf[1 << 16];
    m3_event ev;
    sim_truth tr;
    long long k = 0, by[3] = {0, 0, 0};
    while (sim_next(sm, &ev, &tr)) {
        size_t len;
        int which = (int)(k++ % 3);
        if (ev.type == M3_EV_CONVERSION || which == 0) {
            len = (size_t)pl_encode(cd, &ev, buf, sizeof buf);
        } else if (ev.type == M3_EV_IMPRESSION) {
            len = write_msg(which == 1 ? &newer : &older, &ev, buf, sizeof buf);
        } else {
            len = write_msg(&req, &ev, buf, sizeof buf);
        }
        if (ev.type == M3_EV_IMPRESSION) by[which]++;
        if (ev.type == M3_EV_SCORE_REQUEST) {
            char topic[64];
            pl_topic(topic, sizeof topic, s.prefix, "requests");
            pl_produce(p, topic, ev.u.req.user_id, buf, len);
            s.n_cands += ev.u.req.n_cands;
        } else {
            pl_produce_event(p, &s, sc.scen_names[tr.scen], &ev, buf, len);
        }
        if ((k & 1023) == 0) kio_producer_poll(p);
    }
    sim_get_stats(sm, &s.st);
    sim_destroy(sm);
    CHECK_EQ_INT(s.st.impressions, E2E_IMPRESSIONS);
    CHECK(by[1] > 0 && by[2] > 0);
    /* producers on incompatible schemas: their messages go to the DLQ naming the difference */
    for (int i = 0; i < 4; i++) {
        m3_event e = impression();
        snprintf(e.u.imp.scenario, M3_NAME_MAX, "home");
        pl_bad *b = pl_add_bad(&s, "events.home", i % 2 ? "reader field item_cat has no default and the writer lacks it"
                                                       : "field ts_ms is string, reader wants long (not promotable)");
        b->len = write_msg(i % 2 ? &nocat : &bad, &e, b->bytes, sizeof b->bytes);
        char topic[64];
        pl_topic(topic, sizeof topic, s.prefix, b->suffix);
        pl_produce(p, topic, 42, b->bytes, b->len);
    }
    CHECK_MSG(kio_producer_flush(p, 60000, err, sizeof err) == 0, "flush: %s", err);

    const char *report = "test_evolve_report.json", *log = "test_evolve_worker.log";
    remove(report);
    char *extra[] = {"--set", "input.schemas.dir=" DATA, "--set", "model.arch=lr", NULL};
    pid_t pid = pl_spawn_worker(bs, &s, "evolve-worker", 3000, report, log, extra);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 120000, "the worker"), 0);
    pl_verify_outputs(bs, cd, &s, 1);
    json_node *j = pl_report(report);
    CHECK_EQ_INT(json_number(json_get(j, "counters.impressions"), -1), E2E_IMPRESSIONS);
    CHECK_EQ_INT(json_number(json_get(j, "counters.dlq"), -1), s.n_bad);
    json_free(j);
    /* the incompatible files were named at start */
    const char *text = proc_slurp(log);
    CHECK(text);
    CHECK_CONTAINS(text, "Impression.incompatible.avsc: refused, its messages go to the DLQ: "
                         "Impression writer 0x");
    CHECK_CONTAINS(text, "Impression.noitemcat.avsc: refused");
    fprintf(stderr, "test_evolve: %lld impressions native, %lld newer, %lld older; %d refused\n",
            by[0], by[1], by[2], s.n_bad);
    free_schema(&newer);
    free_schema(&older);
    free_schema(&req);
    free_schema(&bad);
    free_schema(&nocat);
    kio_producer_destroy(p);
    kio_mock_destroy(mock);
    codec_destroy(cd);
}

/* ---- --bench: decode cost of native and resolved messages (docs/results.md) ---- */

#define BENCH_N 20000
#define BENCH_RUNS 7

static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The simulator's first BENCH_N impressions, each written by the reader's own schema
 * (w == NULL) or by w; then the median over BENCH_RUNS of the decodes per CPU-second. */
static double bench_one(const wschema *w) {
    static uint8_t *msg[BENCH_N];
    static size_t len[BENCH_N];
    char err[256];
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    sc.seed = 3;
    sc.n_impressions = BENCH_N;
    sim *sm = sim_new(&sc, err, sizeof err);
    CHECK_MSG(sm, "%s", err);
    m3_event ev;
    sim_truth tr;
    int n = 0;
    size_t bytes = 0;
    while (n < BENCH_N && sim_next(sm, &ev, &tr)) {
        if (ev.type != M3_EV_IMPRESSION) continue;
        uint8_t buf[4096];
        len[n] = w ? write_msg(w, &ev, buf, sizeof buf) : (size_t)pl_encode(C, &ev, buf, sizeof buf);
        msg[n] = malloc(len[n]);
        CHECK(msg[n]);
        memcpy(msg[n], buf, len[n]);
        bytes += len[n++];
    }
    sim_destroy(sm);
    double rate[BENCH_RUNS];
    for (int r = 0; r < BENCH_RUNS; r++) {
        double t0 = cpu_s();
        for (int i = 0; i < n; i++) {
            m3_event d;
            CHECK_MSG(codec_decode(C, msg[i], len[i], &d, reason, sizeof reason) == 0, "%s", reason);
        }
        rate[r] = n / (cpu_s() - t0);
    }
    for (int i = 0; i < n; i++) free(msg[i]);
    qsort(rate, BENCH_RUNS, sizeof rate[0], cmp_double);
    printf("%-8s %6d impressions, %5.1f bytes each: %9.0f decodes per CPU-second (median of %d; min %.0f, max %.0f)\n",
           w ? "resolved" : "native", n, (double)bytes / n,
           rate[BENCH_RUNS / 2], BENCH_RUNS, rate[0], rate[BENCH_RUNS - 1]);
    return rate[BENCH_RUNS / 2];
}

static void bench(void) {
    wschema newer = load_schema(DATA "Impression.newer.avsc");
    wschema older = load_schema(DATA "Impression.older.avsc");
    wschema promote = load_schema(DATA "Impression.promote.avsc");
    add_ok(&newer, M3_EV_IMPRESSION);
    add_ok(&older, M3_EV_IMPRESSION);
    add_ok(&promote, M3_EV_IMPRESSION);
    double native = bench_one(NULL);
    const wschema *ws[] = {&newer, &older, &promote};
    const char *names[] = {"newer (page_url added)", "older (no ctx_cat)", "promote (reordered, int, union)"};
    for (int i = 0; i < 3; i++) {
        printf("  %s: ", names[i]);
        double r = bench_one(ws[i]);
        printf("  -> %.2fx the native decode time\n", native / r);
    }
    free_schema(&newer);
    free_schema(&older);
    free_schema(&promote);
}

int main(int argc, char **argv) {
    char err[512];
    if (argc == 3 && strcmp(argv[1], "--corpus") == 0) corpus_dir = argv[2];
    C = codec_new(err, sizeof err);
    CHECK_MSG(C, "%s", err);
    if (argc == 2 && strcmp(argv[1], "--bench") == 0) {
        bench();
        codec_destroy(C);
        return 0;
    }
    test_history();
    test_newer_older();
    test_promotions();
    test_hostile();
    test_incompatible();
    test_dir();
    test_prediction_consumers();
    codec_destroy(C);
    if (corpus_dir) return 0;
    test_worker();
    fprintf(stderr, "test_evolve: ok\n");
    return 0;
}
