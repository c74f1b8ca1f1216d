/* test_registry.c - the schema-registry client (registry.c) against an in-process fake
 * registry on loopback: how each answer is classified (a schema, 404, 5xx, garbage, a
 * non-Avro schema, nobody listening), the cache, registration, and credentials never in a
 * reason. The real registry runs in it_registry. */
#include "check.h"
#include "fakehttp.h"
#include "regfake.h"

/* Each kind of answer to GET /schemas/ids/{id}. */
static void test_answers(void) {
    char resp[4096], reason[512];
    const char *schema;
    size_t len;
    fakehttp f;
    static const struct { const char *status, *body; reg_status want; const char *says; } cases[] = {
        {"404 Not Found", "{\"error_code\":40403,\"message\":\"No content with ID '7' was found.\"}",
         REG_NOT_FOUND, "No content with ID '7'"},
        {"503 Service Unavailable", "{\"message\":\"overloaded\"}", REG_UNAVAILABLE, "HTTP 503"},
        {"200 OK", "<html>hello</html>", REG_UNAVAILABLE, "not the JSON expected"},
        {"200 OK", "{\"schemaz\":1}", REG_UNAVAILABLE, "without a \"schema\" string"},
        {"200 OK", "[1,2]", REG_UNAVAILABLE, "not the JSON expected"},
        {"200 OK", "{\"schema\":\"{}\",\"schemaType\":\"PROTOBUF\"}", REG_REFUSED, "not Avro"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        regfake_http(resp, sizeof resp, cases[i].status, cases[i].body);
        reg *r = regfake_client(&f, resp);
        reg_status st = reg_schema(r, 7, &schema, &len, reason, sizeof reason);
        fprintf(stderr, "case %zu: %d %s\n", i, st, reason);
        CHECK_EQ_INT(st, cases[i].want);
        CHECK_CONTAINS(reason, cases[i].says);
        CHECK_CONTAINS(reason, "schema id 7");
        CHECK(!strstr(reason, "s3cret"));
        reg_destroy(r);
        fh_stop(&f);
    }
    /* a schema: cached after the first request */
    regfake_http(resp, sizeof resp, "200 OK", "{\"schema\":\"\\\"int\\\"\"}");
    reg *r = regfake_client(&f, resp);
    CHECK_MSG(reg_schema(r, 9, &schema, &len, reason, sizeof reason) == REG_OK, "%s", reason);
    CHECK_EQ_STR(schema, "\"int\"");
    CHECK_EQ_INT(len, 5);
    CHECK_EQ_INT(reg_schema(r, 9, &schema, &len, reason, sizeof reason), REG_OK);
    CHECK_EQ_INT(f.requests, 1);
    long long req, fail;
    reg_stats(r, &req, &fail);
    CHECK(req == 1 && fail == 0);
    reg_destroy(r);
    int port = f.port;
    fh_stop(&f);
    /* nobody listening: unavailable, quickly, the reason without credentials */
    char url[128], err[256];
    snprintf(url, sizeof url, "http://user:s3cret@127.0.0.1:%d", port);
    r = reg_new(url, 1000, err, sizeof err);
    CHECK(r);
    CHECK_EQ_INT(reg_schema(r, 1, &schema, &len, reason, sizeof reason), REG_UNAVAILABLE);
    CHECK_CONTAINS(reason, "unreachable");
    CHECK(!strstr(reason, "s3cret"));
    uint32_t id;
    CHECK_EQ_INT(reg_register(r, "s-value", "\"int\"", &id, reason, sizeof reason), REG_UNAVAILABLE);
    reg_destroy(r);
    CHECK(!reg_new("ftp://x", 1000, err, sizeof err));
    CHECK_CONTAINS(err, "http://");
}

/* POST /subjects/{s}/versions: the id, or the registry's refusal. */
static void test_register(void) {
    char resp[1024], reason[512];
    fakehttp f;
    uint32_t id = 0;
    regfake_http(resp, sizeof resp, "200 OK", "{\"id\":42}");
    reg *r = regfake_client(&f, resp);
    CHECK_EQ_INT(reg_register(r, "m3rec.predictions-value", "\"int\"", &id, reason, sizeof reason), REG_OK);
    CHECK_EQ_INT(id, 42);
    reg_destroy(r);
    fh_stop(&f);
    regfake_http(resp, sizeof resp, "409 Conflict", "{\"error_code\":409,\"message\":\"incompatible\"}");
    r = regfake_client(&f, resp);
    CHECK_EQ_INT(reg_register(r, "s", "\"int\"", &id, reason, sizeof reason), REG_REFUSED);
    CHECK_CONTAINS(reason, "incompatible");
    reg_destroy(r);
    fh_stop(&f);
    regfake_http(resp, sizeof resp, "200 OK", "{\"id\":-3}");
    r = regfake_client(&f, resp);
    CHECK_EQ_INT(reg_register(r, "s", "\"int\"", &id, reason, sizeof reason), REG_UNAVAILABLE);
    CHECK_CONTAINS(reason, "valid \"id\"");
    reg_destroy(r);
    fh_stop(&f);
}

int main(void) {
    test_answers();
    test_register();
    return 0;
}
