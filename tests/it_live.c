/* it_live.c - the live view against a real Apache Kafka broker (scripts/kafka) and a real
 * Prometheus server (scripts/prometheus, the Debian package).
 *
 *  1. Prometheus scrapes a worker that handles a stream: through Prometheus' HTTP API
 *     (/api/v1/query) the consumer lag of every assigned partition and the AUC of every
 *     scenario x task and overall are present; `promtool check metrics` passes on the
 *     worker's /metrics.
 *  2. A second worker joins the group: the first one's /ready, polled every few ms, goes
 *     false at the rebalance and true again once it has its new assignment; both end up
 *     ready, splitting the partitions. */
#include "http.h"
#include "pipeline.h"
#include "report/metrics.h"

#define PARTS 4

static char bootstrap[128];
static char prom_dir[600];

static pid_t spawn(const pl_stream *s, int w, char *set_dir, size_t n, const char *log) {
    char cmd[800];
    snprintf(set_dir, n, "store.dir=%s/it_live_w%d.store", M3_BINARY_DIR, w);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", set_dir + strlen("store.dir="));
    CHECK(system(cmd) == 0);
    char *extra[] = {"--set", "http.listen=127.0.0.1:0", "--set", set_dir,
                     "--set", "checkpoint.interval.ms=1000",
                     "--set", "kafka.heartbeat.interval.ms=300", NULL};
    char report[64];
    snprintf(report, sizeof report, "it_live_w%d.json", w);
    return pl_spawn_worker(bootstrap, s, "itl-workers", 0, report, log, extra);
}

/* Prometheus' instant query q: the result array (data.result) of the parsed answer in
 * *root (the caller frees it). */
static const json_node *prom_query(const char *url, const char *q, json_node **root) {
    CURL *c = curl_easy_init();
    CHECK(c);
    char *esc = curl_easy_escape(c, q, 0);
    char full[1024];
    snprintf(full, sizeof full, "%s/api/v1/query?query=%s", url, esc);
    curl_free(esc);
    http_body body = {0};
    long st = http_request(c, NULL, full, 5000, &body);
    curl_easy_cleanup(c);
    CHECK_MSG(st == 200, "%s: %ld %s", full, st, body.data ? body.data : "");
    char err[256];
    *root = json_parse(body.data, err, sizeof err);
    CHECK_MSG(*root, "%s: %s", full, err);
    http_body_free(&body);
    CHECK_EQ_STR(json_string(json_get(*root, "status"), ""), "success");
    const json_node *r = json_get(*root, "data.result");
    CHECK(r && r->type == JSON_ARRAY);
    return r;
}

/* Wait (bounded) until query q has at least want series; returns their number. */
static size_t prom_wait_series(const char *url, const char *q, size_t want) {
    int64_t deadline = clk_mono_ms() + 30000;
    size_t n = 0;
    while (clk_mono_ms() < deadline) {
        json_node *root;
        n = prom_query(url, q, &root)->n;
        json_free(root);
        if (n >= want) return n;
        usleep(500 * 1000);
    }
    CHECK_MSG(0, "Prometheus has %zu series of %s, want %zu", n, q, want);
    return 0;
}

/* The one value query q returns (a string in Prometheus' answer). */
static double prom_value(const char *url, const char *q) {
    json_node *root;
    const json_node *r = prom_query(url, q, &root);
    CHECK_MSG(r->n == 1, "%s: %zu series", q, r->n);
    const json_node *v = json_member(&r->items[0], "value");
    CHECK(v && v->type == JSON_ARRAY && v->n == 2);
    double x = strtod(json_string(&v->items[1], "nan"), NULL);
    json_free(root);
    return x;
}

static const char *prom_start(int port) {
    char cmd[1400];
    snprintf(prom_dir, sizeof prom_dir, "%s/it_live_prometheus", M3_BINARY_DIR);
    snprintf(cmd, sizeof cmd, "%s/scripts/prometheus --dir '%s' start --target 127.0.0.1:%d "
             ">/dev/null", M3_SOURCE_DIR, prom_dir, port);
    CHECK_MSG(system(cmd) == 0, "%s failed (is the Debian package prometheus installed? "
              "scripts/bootstrap --test)", cmd);
    static char url[128];
    snprintf(cmd, sizeof cmd, "%s/url", prom_dir);
    const char *t = proc_slurp(cmd);
    CHECK(t);
    snprintf(url, sizeof url, "%s", t);
    url[strcspn(url, "\n")] = '\0';
    return url;
}

static void prom_stop(void) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "%s/scripts/prometheus --dir '%s' stop", M3_SOURCE_DIR, prom_dir);
    CHECK(system(cmd) == 0);
}

/* `promtool check metrics` on the worker's /metrics. */
static void promtool_check(const char *text) {
    const char *path = "it_live_metrics.txt";
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
    int rc = system("promtool check metrics < it_live_metrics.txt > it_live_promtool.out 2>&1");
    CHECK_MSG(rc == 0, "promtool check metrics: %s", proc_slurp("it_live_promtool.out"));
}

/* Poll worker 1's /ready over one kept-alive connection while the group rebalances: it
 * must be seen false, then true again, within 60 s. Returns how long it was false (ms). */
static int64_t watch_rebalance(int port) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ready", port);
    CURL *c = curl_easy_init();
    CHECK(c);
    int64_t deadline = clk_mono_ms() + 60000, false_at = 0, back_at = 0;
    long polls = 0;
    while (clk_mono_ms() < deadline && !back_at) {
        long st = http_request(c, NULL, url, 2000, NULL);
        polls++;
        CHECK_MSG(st == 200 || st == 503, "/ready answered %ld", st);
        if (st == 503 && !false_at) false_at = clk_mono_ms();
        if (st == 200 && false_at) back_at = clk_mono_ms();
        usleep(2000);
    }
    curl_easy_cleanup(c);
    CHECK_MSG(false_at, "/ready never went false in %ld polls over 60 s", polls);
    CHECK_MSG(back_at, "/ready did not come back within 60 s");
    fprintf(stderr, "it_live: /ready false for %lld ms during the rebalance (%ld polls)\n",
            (long long)(back_at - false_at), polls);
    return back_at - false_at;
}

int main(void) {
    char kafka_dir[512], err[512], dir1[700], dir2[700];
    pl_read_bootstrap(bootstrap, sizeof bootstrap, kafka_dir, sizeof kafka_dir);
    CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == 0);
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    static pl_stream s = {.prefix = "itl", .seed = 23, .n_impressions = 10000};
    pl_create_topics(bootstrap, s.prefix, PARTS);
    const char *log1 = "it_live_w1.log", *log2 = "it_live_w2.log";
    pid_t w1 = spawn(&s, 1, dir1, sizeof dir1, log1);
    int port1 = http_worker_port(log1);
    http_body body = {0};
    http_wait_status(port1, "/ready", 200, 60000, &body);
    const char *prom = prom_start(port1);
    kio_producer *p = pl_producer(bootstrap);
    pl_produce_stream(p, cd, &s, 0, s.n_impressions, 0);
    kio_producer_destroy(p);
    const char *t = http_wait_sample(port1, "m3rec_impressions_total", (double)s.n_impressions,
                                     120000, &body);
    promtool_check(t);
    /* 1. through Prometheus: the lag of every assigned partition, every AUC series */
    size_t lag = prom_wait_series(prom, "m3rec_consumer_lag_messages", 4 * PARTS);
    CHECK_EQ_INT(lag, 4 * PARTS);
    prom_wait_series(prom, "m3rec_consumer_lag_messages{topic=\"itl.events.home\",partition=\"3\"}", 1);
    size_t aucs = prom_wait_series(prom, "m3rec_window_auc", 4 * MET_NTASKS);
    CHECK_EQ_INT(aucs, 4 * MET_NTASKS);   /* 3 scenarios and overall, x 3 tasks */
    prom_wait_series(prom, "m3rec_window_predictions{task=\"ctr\",scenario=\"\"} >= 10000", 1);
    double auc = prom_value(prom, "m3rec_window_auc{task=\"ctr\",scenario=\"\"}");
    double total_lag = prom_value(prom, "sum(m3rec_consumer_lag_messages)");
    fprintf(stderr, "it_live: Prometheus: %zu lag series (sum %.0f), %zu AUC series, overall ctr "
            "auc %.4f\n", lag, total_lag, aucs, auc);
    CHECK_MSG(auc > 0.5, "overall ctr auc %.4f", auc);
    CHECK_EQ_INT(prom_value(prom, "m3rec_worker_ready"), 1);
    /* 2. a second worker joins: worker 1 is not ready during the rebalance, then is again */
    pid_t w2 = spawn(&s, 2, dir2, sizeof dir2, log2);
    watch_rebalance(port1);
    int port2 = http_worker_port(log2);
    http_wait_status(port2, "/ready", 200, 60000, &body);
    http_wait_status(port1, "/ready", 200, 10000, &body);
    http_wait_sample(port1, "m3rec_consumer_revocations_total", 1, 10000, &body);
    /* the range assignor splits the 16 input partitions 8 + 8 (the gauges follow within
     * a publish period) */
    int a1 = 0, a2 = 0;
    for (int64_t end = clk_mono_ms() + 10000; clk_mono_ms() < end && !(a1 == 8 && a2 == 8);) {
        usleep(200 * 1000);
        a1 = (int)http_sample_of(http_wait_sample(port1, "m3rec_worker_up", 1, 5000, &body),
                                 "m3rec_consumer_assigned_partitions");
        a2 = (int)http_sample_of(http_wait_sample(port2, "m3rec_worker_up", 1, 5000, &body),
                                 "m3rec_consumer_assigned_partitions");
    }
    CHECK_MSG(a1 == 2 * PARTS && a2 == 2 * PARTS, "assigned %d and %d", a1, a2);
    http_body_free(&body);
    kill(w1, SIGTERM);
    kill(w2, SIGTERM);
    CHECK_EQ_INT(proc_wait(w1, clk_mono_ms() + 60000, "worker 1"), 0);
    CHECK_EQ_INT(proc_wait(w2, clk_mono_ms() + 60000, "worker 2"), 0);
    prom_stop();
    codec_destroy(cd);
    curl_global_cleanup();
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir1 + strlen("store.dir="), dir2 + strlen("store.dir="));
    CHECK(system(cmd) == 0);
    return 0;
}
