/* it_registry.c - registry framing end to end: a real schema registry (Apicurio Registry,
 * scripts/registry) and a real Kafka broker (scripts/kafka), both started by CTest
 * fixtures (M3_REGISTRY_DIR, M3_KAFKA_DIR).
 *   1. A producer registers Impression, Conversion and ScoreRequest and writes every event
 *      registry-framed (00 + the id the registry gave + datum), with an unknown id, a
 *      single-object message and JSON text among them. The worker (input.format=registry,
 *      output.format=registry) predicts every impression and candidate; the three bad ones
 *      reach the DLQ with their reasons, nothing else; every prediction carries the id the
 *      registry gives the Prediction schema and decodes with the schema fetched by that id.
 *   2. A registry answering garbage (an in-process fake: HTTP 200 with HTML): the worker
 *      waits, says why (never the URL's password), retries, and a stop ends it cleanly
 *      (exit 1, nothing handled). A registry refusing the Prediction schema (409) stops a
 *      worker with output.format=registry at start, with the registry's message.
 *      Then the real registry is stopped: a worker of the same group waits for it
 *      ("cannot answer"), the registry restarts (same storage), the messages flow - every
 *      impression and candidate predicted, none lost, none to the DLQ. */
#include <signal.h>
#include <sys/wait.h>

#include "fakehttp.h"
#include "pipeline.h"
#include "regfake.h"
#include "stream/registry.h"

#define PARTS 3

static char bootstrap[128];
static char kafka_dir[512];
static char reg_dir[512];
static char reg_url[256];

static void registry(const char *cmd, const char *opt) {
    char *argv[] = {M3_SOURCE_DIR "/scripts/registry", "--dir", reg_dir, (char *)cmd, (char *)opt, NULL};
    pid_t pid = proc_spawn(argv, "it_registry_script.log", "it_registry_script.log");
    int rc = proc_wait(pid, clk_mono_ms() + 180000, "scripts/registry");
    CHECK_MSG(rc == 0, "scripts/registry %s: exit %d: %s", cmd, rc, proc_slurp("it_registry_script.log"));
}

static void read_registry_url(void) {
    const char *d = getenv("M3_REGISTRY_DIR");
    CHECK_MSG(d, "M3_REGISTRY_DIR is not set: run this through ctest (it starts the registry)");
    snprintf(reg_dir, sizeof reg_dir, "%s", d);
    char path[600];
    snprintf(path, sizeof path, "%s/port", d);
    const char *port = proc_slurp(path);
    CHECK_MSG(port, "no %s: is the registry running (scripts/registry --dir %s start)?", path, d);
    snprintf(reg_url, sizeof reg_url, "http://127.0.0.1:%d/apis/ccompat/v7", atoi(port));
}

/* Register the three input schemas (record subjects) and take their ids for framing. */
static void register_inputs(codec *cd) {
    char err[256];
    reg *r = reg_new(reg_url, 5000, err, sizeof err);
    CHECK_MSG(r, "%s", err);
    static const m3_ev_type types[] = {M3_EV_IMPRESSION, M3_EV_CONVERSION, M3_EV_SCORE_REQUEST};
    for (int i = 0; i < 3; i++) {
        char subject[96];
        snprintf(subject, sizeof subject, "io.m3rec.events.%s", codec_type_name(types[i]));
        CHECK_MSG(reg_register(r, subject, codec_canonical(cd, types[i]), &pl_reg_ids[types[i]],
                               err, sizeof err) == REG_OK, "%s", err);
        fprintf(stderr, "it_registry: %s has schema id %u\n", subject, pl_reg_ids[types[i]]);
    }
    reg_destroy(r);
}

/* The id the registry has for the Prediction schema under the worker's subject, and the
 * writer fingerprint of the schema fetched by that id (a fresh client: no cache). */
static void prediction_schema(codec *cd, const char *prefix) {
    char err[256], subject[128];
    snprintf(subject, sizeof subject, "%s.predictions-value", prefix);
    reg *r = reg_new(reg_url, 5000, err, sizeof err);
    CHECK_MSG(r, "%s", err);
    CHECK_MSG(reg_register(r, subject, codec_canonical(cd, M3_EV_PREDICTION), &pl_reg_pred_id,
                           err, sizeof err) == REG_OK, "%s", err);
    reg_destroy(r);
    r = reg_new(reg_url, 5000, err, sizeof err);
    const char *schema;
    size_t len;
    CHECK_MSG(reg_schema(r, pl_reg_pred_id, &schema, &len, err, sizeof err) == REG_OK, "%s", err);
    m3_ev_type type;
    CHECK_MSG(codec_add_writer(cd, schema, len, &type, &pl_reg_pred_fp, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(type, M3_EV_PREDICTION);
    reg_destroy(r);
}

static char *set(char *buf, size_t n, const char *kv) {
    snprintf(buf, n, "%s", kv);
    return buf;
}

static void test_registry_framing(codec *cd) {
    static pl_stream s = {.prefix = "itreg1", .seed = 21, .n_impressions = 6000};
    pl_create_topics(bootstrap, s.prefix, PARTS);
    register_inputs(cd);
    static const unsigned char unknown[] = {0x00, 0x00, 0x0f, 0x42, 0x3f, 0x02, 0x04};
    pl_bad *b = pl_add_bad(&s, "events.home", "unknown schema id 999999");
    memcpy(b->bytes, unknown, sizeof unknown);
    b->len = sizeof unknown;
    m3_event ev;
    char reason[CODEC_REASON_MAX];
    pl_sample_impression(&ev, "home");
    b = pl_add_bad(&s, "events.search", "single-object encoding (C3 01): set input.format=single-object or auto");
    b->len = (size_t)codec_encode(cd, &ev, b->bytes, sizeof b->bytes, reason, sizeof reason);
    b = pl_add_bad(&s, "requests", "JSON text");
    b->len = (size_t)snprintf((char *)b->bytes, sizeof b->bytes, "{\"request_id\": \"r1\"}");
    kio_producer *p = pl_producer(bootstrap);
    pl_produce_stream(p, cd, &s, 0, s.n_impressions, 1);
    kio_producer_destroy(p);

    char a[3][300];
    snprintf(a[2], sizeof a[2], "registry.url=%s", reg_url);
    char *extra[] = {"--set", set(a[0], sizeof a[0], "input.format=registry"),
                     "--set", set(a[1], sizeof a[1], "output.format=registry"),
                     "--set", a[2], NULL};
    const char *report = "it_registry_w1.json", *log = "it_registry_w1.log";
    remove(report);
    pid_t pid = pl_spawn_worker(bootstrap, &s, "itreg1-workers", 6000, report, log, extra);
    int rc = proc_wait(pid, clk_mono_ms() + 240000, "the worker");
    CHECK_MSG(rc == 0, "worker exit %d:\n%s", rc, proc_slurp(log));
    CHECK_CONTAINS(proc_slurp(log), "predictions framed with schema id");
    json_node *r = pl_report(report);
    CHECK_EQ_INT(json_number(json_get(r, "counters.dlq"), -1), s.n_bad);
    CHECK(json_number(json_get(r, "registry.requests"), -1) >= 4);   /* 3 ids + the POST */
    CHECK_EQ_INT(json_number(json_get(r, "registry.waits"), -1), 0);
    json_free(r);
    prediction_schema(cd, s.prefix);
    pl_verify_outputs(bootstrap, cd, &s, 1);
}

static void test_outage_and_garbage(codec *cd) {
    static pl_stream s = {.prefix = "itreg2", .seed = 22, .n_impressions = 3000};
    pl_create_topics(bootstrap, s.prefix, PARTS);
    kio_producer *p = pl_producer(bootstrap);
    pl_produce_stream(p, cd, &s, 0, s.n_impressions, 0);
    kio_producer_destroy(p);

    /* a registry answering garbage: the worker waits and retries; a stop ends it cleanly */
    fakehttp f;
    fh_start(&f, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 17\r\n"
                 "Connection: close\r\n\r\n<html>hi</html>\r\n");
    char a[4][300];
    snprintf(a[2], sizeof a[2], "registry.url=http://m3:s3cret@127.0.0.1:%d/apis/ccompat/v7", f.port);
    char *garbage[] = {"--set", set(a[0], sizeof a[0], "input.format=registry"),
                       "--set", set(a[1], sizeof a[1], "metrics.progress.ms=1000"),
                       "--set", a[2], NULL};
    const char *log = "it_registry_g.log";
    pid_t pid = pl_spawn_worker(bootstrap, &s, "itreg2-workers", 6000, "it_registry_g.json", log, garbage);
    proc_wait_log(log, "not the JSON expected", 60000);
    proc_wait_log(log, "waiting 2 s for the schema registry", 20000);
    CHECK_MSG(f.requests >= 3, "%ld requests: the worker did not retry", f.requests);
    CHECK(kill(pid, SIGTERM) == 0);
    int rc = proc_wait(pid, clk_mono_ms() + 60000, "the worker");
    CHECK_MSG(rc == 1, "worker exit %d (want 1: stopped while waiting):\n%s", rc, proc_slurp(log));
    CHECK_CONTAINS(proc_slurp(log), "stopped while waiting");
    CHECK_MSG(!strstr(proc_slurp(log), "s3cret"), "the registry's password in the log:\n%s", proc_slurp(log));
    fh_stop(&f);

    /* a registry refusing the Prediction schema: the worker stops at start, saying why */
    char resp[512];
    regfake_http(resp, sizeof resp, "409 Conflict", "{\"error_code\":409,\"message\":\"nope!!\"}");
    fh_start(&f, resp);
    snprintf(a[2], sizeof a[2], "registry.url=http://127.0.0.1:%d/apis/ccompat/v7", f.port);
    char *refused[] = {"--set", set(a[1], sizeof a[1], "output.format=registry"), "--set", a[2], NULL};
    log = "it_registry_r.log";
    pid = pl_spawn_worker(bootstrap, &s, "itreg2-refused", 6000, "it_registry_r.json", log, refused);
    rc = proc_wait(pid, clk_mono_ms() + 60000, "the worker");
    CHECK_MSG(rc == 1, "worker exit %d (want 1: the registry refused the schema):\n%s", rc, proc_slurp(log));
    CHECK_CONTAINS(proc_slurp(log), "registering subject itreg2.predictions-value: registry");
    CHECK_CONTAINS(proc_slurp(log), "answered HTTP 409: nope!!");
    fh_stop(&f);

    /* the real registry, stopped: the next worker of the group waits until it is back */
    registry("stop", NULL);
    snprintf(a[2], sizeof a[2], "registry.url=%s", reg_url);
    char *real[] = {"--set", set(a[0], sizeof a[0], "input.format=auto"),
                    "--set", set(a[1], sizeof a[1], "metrics.progress.ms=1000"),
                    "--set", set(a[3], sizeof a[3], "registry.backoff.max.ms=1000"),
                    "--set", a[2], NULL};
    const char *report = "it_registry_w2.json";
    log = "it_registry_w2.log";
    remove(report);
    pid = pl_spawn_worker(bootstrap, &s, "itreg2-workers", 6000, report, log, real);
    proc_wait_log(log, "cannot answer", 60000);
    CHECK_CONTAINS(proc_slurp(log), "unreachable");
    sleep(3);
    CHECK_MSG(kill(pid, 0) == 0, "the worker exited while the registry was down:\n%s", proc_slurp(log));
    registry("start", "--keep");
    rc = proc_wait(pid, clk_mono_ms() + 240000, "the worker");
    CHECK_MSG(rc == 0, "worker exit %d:\n%s", rc, proc_slurp(log));
    CHECK_CONTAINS(proc_slurp(log), "answers again");
    json_node *r = pl_report(report);
    CHECK_EQ_INT(json_number(json_get(r, "counters.dlq"), -1), 0);
    CHECK_EQ_INT(json_number(json_get(r, "counters.impressions"), -1), s.n_impressions);
    CHECK(json_number(json_get(r, "registry.waits"), 0) >= 1);
    json_free(r);
    pl_verify_outputs(bootstrap, cd, &s, 0);
}

int main(void) {
    pl_read_bootstrap(bootstrap, sizeof bootstrap, kafka_dir, sizeof kafka_dir);
    read_registry_url();
    char err[256];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    test_registry_framing(cd);
    test_outage_and_garbage(cd);
    codec_destroy(cd);
    return 0;
}
