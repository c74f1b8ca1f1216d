/* test_json.c - JSON writer (escaping, nesting, NaN) and reader (valid, invalid, lookup). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "base/json.h"

static void test_writer_nesting(void) {
    json_writer *w = json_writer_new_buf(0);
    CHECK(w);
    json_obj_begin(w);
    json_key(w, "a"); json_int(w, -3);
    json_key(w, "b"); json_arr_begin(w);
        json_num(w, 1.5); json_bool(w, true); json_null(w);
        json_obj_begin(w); json_obj_end(w);
        json_arr_begin(w); json_arr_end(w);
    json_arr_end(w);
    json_key(w, "c"); json_obj_begin(w);
        json_key(w, "d"); json_bool(w, false);
        json_key(w, "e"); json_uint(w, UINT64_MAX);
    json_obj_end(w);
    json_obj_end(w);
    CHECK(json_writer_error(w) == NULL);
    CHECK(json_writer_done(w));
    CHECK_EQ_STR(json_writer_buf(w, NULL),
                 "{\"a\":-3,\"b\":[1.5,true,null,{},[]],\"c\":{\"d\":false,\"e\":18446744073709551615}}");
    json_writer_destroy(w);
}

static void test_writer_escaping(void) {
    json_writer *w = json_writer_new_buf(0);
    json_arr_begin(w);
    json_str(w, "q\"b\\s/n\nt\tr\rc\001x\x1f" "\xc3\xa9");
    json_str(w, NULL);
    json_str(w, "");
    json_arr_end(w);
    CHECK_EQ_STR(json_writer_buf(w, NULL),
                 "[\"q\\\"b\\\\s/n\\nt\\tr\\rc\\u0001x\\u001f\xc3\xa9\",null,\"\"]");
    /* and it reads back to the same bytes */
    char err[128];
    json_node *t = json_parse(json_writer_buf(w, NULL), err, sizeof err);
    CHECK_MSG(t, "%s", err);
    CHECK_EQ_STR(json_string(json_get(t, "0"), NULL), "q\"b\\s/n\nt\tr\rc\001x\x1f\xc3\xa9");
    CHECK(json_get(t, "1")->type == JSON_NULL);
    CHECK_EQ_STR(json_string(json_get(t, "2"), NULL), "");
    json_free(t);
    json_writer_destroy(w);
}

static void test_writer_numbers(void) {
    json_writer *w = json_writer_new_buf(0);
    json_arr_begin(w);
    json_num(w, NAN); json_num(w, INFINITY); json_num(w, -INFINITY);
    json_num(w, 0.1); json_num(w, 0.0); json_num(w, 1e300); json_num(w, 1.0 / 3.0);
    json_int(w, INT64_MIN);
    json_arr_end(w);
    const char *s = json_writer_buf(w, NULL);
    CHECK_CONTAINS(s, "[null,null,null,0.1,0,1e+300,");
    CHECK_CONTAINS(s, ",-9223372036854775808]");
    json_node *t = json_parse(s, NULL, 0);
    CHECK(t);
    CHECK(json_get(t, "0")->type == JSON_NULL);
    CHECK(isnan(json_number(json_get(t, "0"), NAN)));   /* null -> the default */
    CHECK(json_number(json_get(t, "6"), 0) == 1.0 / 3.0);  /* exact round trip */
    CHECK(json_number(json_get(t, "5"), 0) == 1e300);
    json_free(t);
    json_writer_destroy(w);
}

static void test_writer_misuse(void) {
    json_writer *w = json_writer_new_buf(0);
    json_obj_begin(w);
    json_int(w, 1);                      /* value without key */
    CHECK(json_writer_error(w) != NULL);
    CHECK(!json_writer_done(w));
    json_writer_destroy(w);

    w = json_writer_new_buf(0);
    json_arr_begin(w);
    json_obj_end(w);                     /* wrong closer */
    CHECK_CONTAINS(json_writer_error(w), "unbalanced");
    json_writer_destroy(w);

    w = json_writer_new_buf(0);
    json_arr_begin(w);
    json_key(w, "k");                    /* key in an array */
    CHECK(json_writer_error(w) != NULL);
    json_writer_destroy(w);

    w = json_writer_new_buf(0);
    for (int i = 0; i < JSON_MAX_DEPTH + 1; i++) json_arr_begin(w);
    CHECK_CONTAINS(json_writer_error(w), "deep");
    json_writer_destroy(w);

    w = json_writer_new_buf(0);
    json_int(w, 1);
    json_int(w, 2);
    CHECK(json_writer_error(w) != NULL);
    json_writer_destroy(w);
    json_writer_destroy(NULL);
}

static void test_writer_pretty_file(void) {
    FILE *f = tmpfile();
    CHECK(f);
    json_writer *w = json_writer_new_file(f, 2);
    json_obj_begin(w);
    json_key(w, "x"); json_arr_begin(w); json_int(w, 1); json_int(w, 2); json_arr_end(w);
    json_key(w, "y"); json_str(w, "z");
    json_obj_end(w);
    CHECK(json_writer_done(w));
    CHECK_EQ_STR(json_writer_buf(w, NULL), "");
    json_writer_destroy(w);
    rewind(f);
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    CHECK_EQ_STR(buf, "{\n  \"x\": [\n    1,\n    2\n  ],\n  \"y\": \"z\"\n}");
    json_node *t = json_parse(buf, NULL, 0);
    CHECK(t);
    CHECK_EQ_INT(json_number(json_get(t, "x.1"), 0), 2);
    json_free(t);
}

static void test_writer_flat_arrays(void) {
    json_writer *w = json_writer_new_buf(2);
    json_obj_begin(w);
    json_key(w, "x"); json_arr_begin_flat(w); json_int(w, 1); json_num(w, 0.5); json_null(w); json_arr_end(w);
    json_key(w, "e"); json_arr_begin_flat(w); json_arr_end(w);
    json_key(w, "n"); json_arr_begin(w); json_arr_begin_flat(w); json_int(w, 3); json_int(w, 4);
    json_arr_end(w); json_arr_end(w);
    json_obj_end(w);
    CHECK(json_writer_done(w));
    CHECK_EQ_STR(json_writer_buf(w, NULL),
                 "{\n  \"x\": [1, 0.5, null],\n  \"e\": [],\n  \"n\": [\n    [3, 4]\n  ]\n}");
    json_writer_destroy(w);
    /* compact: as any array */
    w = json_writer_new_buf(0);
    json_arr_begin_flat(w); json_int(w, 1); json_int(w, 2); json_arr_end(w);
    CHECK_EQ_STR(json_writer_buf(w, NULL), "[1,2]");
    json_writer_destroy(w);
    /* closing it as an object is still a misuse */
    w = json_writer_new_buf(0);
    json_arr_begin_flat(w);
    json_obj_end(w);
    CHECK(json_writer_error(w) != NULL);
    json_writer_destroy(w);
}

static void test_parse_valid(void) {
    char err[128];
    const char *doc =
        " { \"events\": 120000, \"neg\": -1.25e-3, \"ok\": true, \"no\": false, \"nil\": null,\n"
        "   \"scenarios\": {\"home\": {\"ctr\": {\"auc\": 0.712, \"n\": 10}},"
        "                   \"search\": {\"ctr\": {\"auc\": 0.5}}},\n"
        "   \"arr\": [1, [2, 3], {\"k\": \"v\"}], \"u\": \"\\u00e9\\u4e2d\\ud83d\\ude00\\/\" } ";
    json_node *t = json_parse(doc, err, sizeof err);
    CHECK_MSG(t, "%s", err);
    CHECK(t->type == JSON_OBJECT);
    CHECK_EQ_INT(t->n, 8);
    CHECK_EQ_INT(json_number(json_get(t, "events"), -1), 120000);
    CHECK_CLOSE(json_number(json_get(t, "neg"), 0), -1.25e-3, 1e-15, 0);
    CHECK(json_boolean(json_get(t, "ok"), false) == true);
    CHECK(json_boolean(json_get(t, "no"), true) == false);
    CHECK(json_get(t, "nil") && json_get(t, "nil")->type == JSON_NULL);
    CHECK_CLOSE(json_number(json_get(t, "scenarios.home.ctr.auc"), -1), 0.712, 0, 0);
    CHECK_CLOSE(json_number(json_get(t, "scenarios.search.ctr.auc"), -1), 0.5, 0, 0);
    CHECK_EQ_INT(json_number(json_get(t, "arr.1.0"), -1), 2);
    CHECK_EQ_STR(json_string(json_get(t, "arr.2.k"), NULL), "v");
    CHECK_EQ_STR(json_string(json_get(t, "u"), NULL), "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80/");
    CHECK(json_member(t, "scenarios") == json_get(t, "scenarios"));
    CHECK(json_get(t, "") == t);
    /* missing paths */
    CHECK(json_get(t, "scenarios.feed") == NULL);
    CHECK(json_get(t, "scenarios.home.ctr.auc.x") == NULL);
    CHECK(json_get(t, "arr.3") == NULL);
    CHECK(json_get(t, "arr.x") == NULL);
    CHECK(json_get(NULL, "a") == NULL);
    CHECK_EQ_INT(json_number(json_get(t, "missing"), 7), 7);
    CHECK_EQ_STR(json_string(json_get(t, "events"), "dflt"), "dflt");
    json_free(t);

    t = json_parse("42", err, sizeof err);
    CHECK(t && t->type == JSON_NUMBER && t->num == 42);
    json_free(t);
    t = json_parse("[]", err, sizeof err);
    CHECK(t && t->type == JSON_ARRAY && t->n == 0);
    json_free(t);
    json_free(NULL);
}

/* Each invalid document must fail with its offset named. */
static void check_invalid(const char *doc, size_t offset, const char *what) {
    char err[128], want[32];
    json_node *t = json_parse(doc, err, sizeof err);
    CHECK_MSG(t == NULL, "parsed invalid \"%s\"", doc);
    snprintf(want, sizeof want, "offset %zu:", offset);
    CHECK_CONTAINS(err, want);
    CHECK_CONTAINS(err, what);
}

static void test_parse_invalid(void) {
    check_invalid("", 0, "end of input");
    check_invalid("{", 1, "string key");
    check_invalid("{\"a\" 1}", 5, "':'");
    check_invalid("{\"a\":1,}", 7, "string key");
    check_invalid("[1 2]", 3, "','");
    check_invalid("[1,]", 3, "unexpected character");
    check_invalid("[1] x", 4, "trailing");
    check_invalid("\"abc", 0, "unterminated");
    check_invalid("\"a\\qb\"", 2, "bad escape");
    check_invalid("\"\\u12g4\"", 1, "\\u");
    check_invalid("\"\\ud800x\"", 7, "surrogate");
    check_invalid("-", 0, "bad number");
    check_invalid("1.", 2, "after '.'");
    check_invalid("1e+", 3, "exponent");
    check_invalid("01", 1, "trailing");
    check_invalid("tru", 0, "unexpected character");
    check_invalid("[\"a\nb\"]", 3, "control");
    /* too deep */
    char deep[2100];
    memset(deep, '[', 2000);
    deep[2000] = '\0';
    json_node *t = json_parse(deep, NULL, 0);
    CHECK(t == NULL);
}

int main(void) {
    test_writer_nesting();
    test_writer_escaping();
    test_writer_numbers();
    test_writer_misuse();
    test_writer_pretty_file();
    test_writer_flat_arrays();
    test_parse_valid();
    test_parse_invalid();
    printf("test_json: all checks passed\n");
    return 0;
}
