/* test_format.c - message framings and the input decoder (format.c): framing detection,
 * the DLQ reasons for wrong formats, subject names, and the decoder with a fake registry
 * on loopback (tests/regfake.h): decodes what it serves, waits on garbage, refuses on 404.
 * The real registry runs in it_registry. */
#include "check.h"
#include "fakehttp.h"
#include "regfake.h"
#include "base/json.h"
#include "stream/format.h"
#include "stream/registry.h"

static const unsigned char single[] = {0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0};

static void test_sniff(void) {
    static const unsigned char r17[] = {0x00, 0, 0, 0, 17, 2, 4};
    CHECK_EQ_INT(fmt_sniff(single, sizeof single), FMT_KIND_SINGLE);
    CHECK_EQ_INT(fmt_sniff(r17, sizeof r17), FMT_KIND_REGISTRY);
    CHECK_EQ_INT(fmt_sniff(r17, 4), FMT_KIND_OTHER);          /* too short for an id */
    CHECK_EQ_INT(fmt_sniff("Obj\x01\x04\x14", 6), FMT_KIND_CONTAINER);
    CHECK_EQ_INT(fmt_sniff("  {\"a\":1}", 9), FMT_KIND_JSON);
    CHECK_EQ_INT(fmt_sniff("[1]", 3), FMT_KIND_JSON);
    CHECK_EQ_INT(fmt_sniff("", 0), FMT_KIND_EMPTY);
    CHECK_EQ_INT(fmt_sniff("\x01\x02", 2), FMT_KIND_OTHER);
    uint32_t id = 0;
    CHECK_EQ_INT(fmt_registry_id(r17, sizeof r17, &id), 0);
    CHECK_EQ_INT(id, 17);
    CHECK_EQ_INT(fmt_registry_id(single, sizeof single, &id), -1);
    unsigned char h[FMT_REGISTRY_HEADER_LEN];
    fmt_put_registry_header(h, 0x01020304u);
    CHECK(h[0] == 0 && h[1] == 1 && h[2] == 2 && h[3] == 3 && h[4] == 4);
    CHECK_EQ_INT(fmt_registry_id(h, sizeof h, &id), 0);
    CHECK_EQ_INT(id, 0x01020304);
}

static void test_reasons(void) {
    char r[256];
    static const unsigned char r17[] = {0x00, 0, 0, 0, 17, 2, 4};
    CHECK_CONTAINS(fmt_wrong_reason(FMT_KIND_REGISTRY, r17, sizeof r17, r, sizeof r),
                   "registry framing, schema id 17: set input.format=registry");
    CHECK_CONTAINS(fmt_wrong_reason(FMT_KIND_SINGLE, single, sizeof single, r, sizeof r),
                   "single-object encoding (C3 01): set input.format=single-object or auto");
    CHECK_CONTAINS(fmt_wrong_reason(FMT_KIND_CONTAINER, "Obj\x01", 4, r, sizeof r),
                   "Avro object container file (Obj 01)");
    CHECK_CONTAINS(fmt_wrong_reason(FMT_KIND_JSON, "{}", 2, r, sizeof r), "JSON text");
    CHECK_CONTAINS(fmt_wrong_reason(FMT_KIND_OTHER, "\x07\x08", 2, r, sizeof r),
                   "bad magic 0x07 0x08");
}

static void test_names(void) {
    fmt_mode m;
    fmt_subject_strategy s;
    CHECK(fmt_mode_parse("single-object", 0, &m) == 0 && m == FMT_SINGLE);
    CHECK(fmt_mode_parse("registry", 0, &m) == 0 && m == FMT_REGISTRY);
    CHECK(fmt_mode_parse("auto", 1, &m) == 0 && m == FMT_AUTO);
    CHECK_EQ_INT(fmt_mode_parse("auto", 0, &m), -1);   /* not for output.format */
    CHECK_EQ_INT(fmt_mode_parse("confluent", 1, &m), -1);
    CHECK(fmt_strategy_parse("topic-record", &s) == 0 && s == FMT_SUBJ_TOPIC_RECORD);
    CHECK_EQ_INT(fmt_strategy_parse("TopicNameStrategy", &s), -1);
    char out[64];
    const char *rec = "io.m3rec.events.Prediction";
    CHECK(fmt_subject(FMT_SUBJ_TOPIC, "m3rec.predictions", rec, out, sizeof out) == 0);
    CHECK_EQ_STR(out, "m3rec.predictions-value");
    CHECK(fmt_subject(FMT_SUBJ_RECORD, "m3rec.predictions", rec, out, sizeof out) == 0);
    CHECK_EQ_STR(out, rec);
    CHECK(fmt_subject(FMT_SUBJ_TOPIC_RECORD, "m3rec.predictions", rec, out, sizeof out) == 0);
    CHECK_EQ_STR(out, "m3rec.predictions-io.m3rec.events.Prediction");
    CHECK_EQ_INT(fmt_subject(FMT_SUBJ_TOPIC_RECORD, "m3rec.predictions", rec, out, 20), -1);
}

/* The decoder with a registry: a schema it serves decodes; garbage makes the message
 * wait; 404 refuses it, and the id is remembered (no second request). */
static void test_decoder(codec *cd) {
    char resp[4096], reason[512], body[3072];
    const char *schema;
    size_t len;
    fakehttp f;
    /* a real schema: cached after the first request; the decoder decodes with it */
    json_writer *w = json_writer_new_buf(0);
    json_obj_begin(w);
    json_key(w, "schema");
    json_str(w, codec_canonical(cd, M3_EV_IMPRESSION));
    json_obj_end(w);
    snprintf(body, sizeof body, "%s", json_writer_buf(w, NULL));
    json_writer_destroy(w);
    regfake_http(resp, sizeof resp, "200 OK", body);
    reg *r = regfake_client(&f, resp);
    CHECK_EQ_INT(reg_schema(r, 9, &schema, &len, reason, sizeof reason), REG_OK);
    CHECK_EQ_STR(schema, codec_canonical(cd, M3_EV_IMPRESSION));
    CHECK_EQ_INT(reg_schema(r, 9, &schema, &len, reason, sizeof reason), REG_OK);
    CHECK_EQ_INT(f.requests, 1);
    fmt_decoder *d = fmt_decoder_new(FMT_REGISTRY, cd, r);
    m3_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_IMPRESSION;
    snprintf(ev.u.imp.impression_id, M3_ID_MAX, "i1");
    snprintf(ev.u.imp.scenario, M3_NAME_MAX, "home");
    ev.u.imp.user_id = 5;
    ev.u.imp.item_id = 6;
    unsigned char msg[512];
    long n = codec_encode(cd, &ev, msg, sizeof msg, reason, sizeof reason);
    CHECK(n > CODEC_HEADER_LEN);
    unsigned char *framed = msg + CODEC_HEADER_LEN - FMT_REGISTRY_HEADER_LEN;
    fmt_put_registry_header(framed, 9);
    size_t flen = (size_t)n - (CODEC_HEADER_LEN - FMT_REGISTRY_HEADER_LEN);
    m3_event got;
    CHECK_MSG(fmt_decode(d, framed, flen, &got, reason, sizeof reason) == FMT_OK, "%s", reason);
    CHECK_EQ_STR(got.u.imp.impression_id, "i1");
    CHECK_EQ_INT(got.u.imp.user_id, 5);
    m3_event_clear(&got);
    /* single-object in registry mode: refused with the setting that takes it */
    codec_encode(cd, &ev, msg, sizeof msg, reason, sizeof reason);
    CHECK_EQ_INT(fmt_decode(d, msg, (size_t)n, &got, reason, sizeof reason), FMT_REFUSED);
    CHECK_CONTAINS(reason, "single-object encoding (C3 01)");
    fmt_decoder_destroy(d);
    reg_destroy(r);
    fh_stop(&f);

    /* garbage -> the message waits; 404 -> refused, and remembered (no second request) */
    regfake_http(resp, sizeof resp, "200 OK", "garbage");
    r = regfake_client(&f, resp);
    d = fmt_decoder_new(FMT_AUTO, cd, r);
    fmt_put_registry_header(framed, 11);
    CHECK_EQ_INT(fmt_decode(d, framed, flen, &got, reason, sizeof reason), FMT_WAIT);
    CHECK_CONTAINS(reason, "not the JSON expected");
    fmt_decoder_destroy(d);
    reg_destroy(r);
    fh_stop(&f);
    regfake_http(resp, sizeof resp, "404 Not Found", "{\"error_code\":40403,\"message\":\"none\"}");
    r = regfake_client(&f, resp);
    d = fmt_decoder_new(FMT_AUTO, cd, r);
    CHECK_EQ_INT(fmt_decode(d, framed, flen, &got, reason, sizeof reason), FMT_REFUSED);
    CHECK_CONTAINS(reason, "unknown schema id 11");
    CHECK_EQ_INT(fmt_decode(d, framed, flen, &got, reason, sizeof reason), FMT_REFUSED);
    CHECK_EQ_INT(f.requests, 1);
    fmt_decoder_destroy(d);
    reg_destroy(r);
    fh_stop(&f);
}

/* A registry answer {"schema": json}. */
static void schema_answer(char *resp, size_t n, const char *json) {
    json_writer *w = json_writer_new_buf(0);
    json_obj_begin(w);
    json_key(w, "schema");
    json_str(w, json);
    json_obj_end(w);
    regfake_http(resp, n, "200 OK", json_writer_buf(w, NULL));
    json_writer_destroy(w);
}

/* Schema evolution through the registry: a producer's newer Impression schema (one more
 * field) resolves to the reader's and its messages decode; an incompatible one (user_id a
 * string) refuses its messages naming the field. */
static void test_evolved(codec *cd) {
    char resp[4096], reason[512], json[2048];
    const char *pcf = codec_canonical(cd, M3_EV_IMPRESSION);
    size_t plen = strlen(pcf);
    CHECK(plen > 2 && strcmp(pcf + plen - 2, "]}") == 0);
    snprintf(json, sizeof json, "%.*s,{\"name\":\"extra\",\"type\":\"string\"}]}", (int)(plen - 2), pcf);
    schema_answer(resp, sizeof resp, json);
    fakehttp f;
    reg *r = regfake_client(&f, resp);
    fmt_decoder *d = fmt_decoder_new(FMT_REGISTRY, cd, r);
    m3_event ev, got;
    memset(&ev, 0, sizeof ev);
    ev.type = M3_EV_IMPRESSION;
    snprintf(ev.u.imp.impression_id, M3_ID_MAX, "i2");
    snprintf(ev.u.imp.scenario, M3_NAME_MAX, "search");
    ev.u.imp.user_id = 77;
    unsigned char msg[512];
    long n = codec_encode(cd, &ev, msg, sizeof msg, reason, sizeof reason);
    CHECK(n > CODEC_HEADER_LEN);
    msg[n] = 0x02;       /* the writer's extra field: the string "x" */
    msg[n + 1] = 'x';
    unsigned char *framed = msg + CODEC_HEADER_LEN - FMT_REGISTRY_HEADER_LEN;
    fmt_put_registry_header(framed, 21);
    size_t flen = (size_t)n + 2 - (CODEC_HEADER_LEN - FMT_REGISTRY_HEADER_LEN);
    CHECK_MSG(fmt_decode(d, framed, flen, &got, reason, sizeof reason) == FMT_OK, "%s", reason);
    CHECK_EQ_STR(got.u.imp.impression_id, "i2");
    CHECK_EQ_INT(got.u.imp.user_id, 77);
    m3_event_clear(&got);
    fmt_decoder_destroy(d);
    reg_destroy(r);
    fh_stop(&f);

    const char *at = strstr(pcf, "{\"name\":\"user_id\",\"type\":\"long\"}");
    CHECK(at);
    snprintf(json, sizeof json, "%.*s{\"name\":\"user_id\",\"type\":\"string\"}%s", (int)(at - pcf),
             pcf, at + strlen("{\"name\":\"user_id\",\"type\":\"long\"}"));
    schema_answer(resp, sizeof resp, json);
    r = regfake_client(&f, resp);
    d = fmt_decoder_new(FMT_REGISTRY, cd, r);
    fmt_put_registry_header(framed, 22);
    CHECK_EQ_INT(fmt_decode(d, framed, flen, &got, reason, sizeof reason), FMT_REFUSED);
    fprintf(stderr, "incompatible: %s\n", reason);
    CHECK_CONTAINS(reason, "schema id 22");
    CHECK_CONTAINS(reason, "user_id");
    fmt_decoder_destroy(d);
    reg_destroy(r);
    fh_stop(&f);
}

/* Single-object mode: a registry-framed message names itself; no registry: says so. */
static void test_modes(codec *cd) {
    char reason[512];
    m3_event got;
    static const unsigned char reg17[] = {0x00, 0, 0, 0, 17, 2, 4};
    fmt_decoder *d = fmt_decoder_new(FMT_SINGLE, cd, NULL);
    CHECK_EQ_INT(fmt_decode(d, reg17, sizeof reg17, &got, reason, sizeof reason), FMT_REFUSED);
    CHECK_CONTAINS(reason, "registry framing, schema id 17: set input.format=registry");
    CHECK_EQ_INT(fmt_decode(d, "Obj\x01xx", 6, &got, reason, sizeof reason), FMT_REFUSED);
    CHECK_CONTAINS(reason, "container file");
    CHECK_EQ_INT(fmt_decode(d, "{\"user_id\":1}", 13, &got, reason, sizeof reason), FMT_REFUSED);
    CHECK_CONTAINS(reason, "JSON text");
    CHECK_EQ_INT(fmt_decode(d, "\x07\x08xxxxxxxx", 10, &got, reason, sizeof reason), FMT_REFUSED);
    CHECK_CONTAINS(reason, "magic");
    fmt_decoder_destroy(d);
    d = fmt_decoder_new(FMT_AUTO, cd, NULL);
    CHECK_EQ_INT(fmt_decode(d, reg17, sizeof reg17, &got, reason, sizeof reason), FMT_REFUSED);
    CHECK_CONTAINS(reason, "set registry.url");
    fmt_decoder_destroy(d);
}

int main(void) {
    char err[256];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    test_sniff();
    test_reasons();
    test_names();
    test_modes(cd);
    test_decoder(cd);
    test_evolved(cd);
    codec_destroy(cd);
    return 0;
}
