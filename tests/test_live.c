/* test_live.c - the live view (app/live.c): the exposition text, the DLQ classes, the
 * recent window, http.listen, the server's answers, and a real worker's endpoints.
 *
 *  - The text is Prometheus text format: HELP and TYPE before each family's samples,
 *    counters named *_total, label values escaped, the overall quality without a scenario
 *    label; `promtool check metrics` finds nothing (when promtool is installed), and
 *    docker-compose's config/prometheus.yml scrapes the port its workers listen on.
 *  - Every DLQ reason the decoder and the worker give maps to a fixed class, never
 *    "other"; a window's AUC and counts are exactly those of the events in it.
 *  - A bad http.listen stops start-up with where it was set; the server answers GET and
 *    HEAD only (405), three paths (404 otherwise), at most LIVE_CONNECTIONS connections;
 *    /ready follows the assignment at once, /live fails when publishing stops, /ready
 *    fails at shutdown.
 *  - A worker on a broker in this process (librdkafka's mock cluster): after a stream with
 *    bad messages, /metrics has every series (lag per partition, AUC above 0.5, the DLQ by
 *    class exactly, checkpoints) and no configuration value; /ready fails while the broker
 *    is down and comes back with it. */
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "app/live.h"
#include "http.h"
#include "pipeline.h"

/* ---------------------------------------------------------------- DLQ classes */

static void test_dlq_classes(void) {
    CHECK_EQ_INT(live_dlq_class("unknown schema fingerprint 0x5bc9d726f79d74d9"), LIVE_DLQ_SCHEMA);
    CHECK_EQ_INT(live_dlq_class("bad magic 0x00 0x00"), LIVE_DLQ_MALFORMED);
    CHECK_EQ_INT(live_dlq_class("empty message"), LIVE_DLQ_MALFORMED);
    CHECK_EQ_INT(live_dlq_class("message of 3 bytes is shorter than the 10-byte header"), LIVE_DLQ_MALFORMED);
    CHECK_EQ_INT(live_dlq_class("truncated datum in Impression.user_cat"), LIVE_DLQ_MALFORMED);
    CHECK_EQ_INT(live_dlq_class("string length 4611686018427387904 exceeds 64 bytes in Impression.impression_id"), LIVE_DLQ_MALFORMED);
    CHECK_EQ_INT(live_dlq_class("4 trailing bytes after Impression datum"), LIVE_DLQ_MALFORMED);
    CHECK_EQ_INT(live_dlq_class("non-finite float in Impression.item_num"), LIVE_DLQ_RANGE);
    CHECK_EQ_INT(live_dlq_class("item_num.price=-3.4e+38 outside [-1e+06, 1e+06] (features.num.max_abs; or features.num.clip=true)"), LIVE_DLQ_RANGE);
    CHECK_EQ_INT(live_dlq_class("Impression ts_ms=10000000000000 is 8232774400000 ms ahead of the newest event time"), LIVE_DLQ_TIME);
    CHECK_EQ_INT(live_dlq_class("Conversion ts_ms=0 is 1767225600000 ms behind its partition's event time"), LIVE_DLQ_TIME);
    CHECK_EQ_INT(live_dlq_class("scenario 'mars' does not match topic m3rec.events.home"), LIVE_DLQ_ROUTING);
    CHECK_EQ_INT(live_dlq_class("Impression on the requests topic m3rec.requests"), LIVE_DLQ_ROUTING);
    CHECK_EQ_INT(live_dlq_class("ScoreRequest on events topic m3rec.events.home (send it to m3rec.requests)"), LIVE_DLQ_ROUTING);
    CHECK_EQ_INT(live_dlq_class("Prediction is not an input message"), LIVE_DLQ_ROUTING);
    CHECK_EQ_INT(live_dlq_class("unknown scenario 'mars'"), LIVE_DLQ_ROUTING);
    CHECK_EQ_INT(live_dlq_class("registry framing, schema id 17: set input.format=registry (or auto) and registry.url"), LIVE_DLQ_FORMAT);
    CHECK_EQ_INT(live_dlq_class("single-object encoding (C3 01): set input.format=single-object or auto"), LIVE_DLQ_FORMAT);
    CHECK_EQ_INT(live_dlq_class("an Avro object container file (Obj 01), not one message: write each record as its own message"), LIVE_DLQ_FORMAT);
    CHECK_EQ_INT(live_dlq_class("JSON text, not Avro binary: encode with the schema in schemas/"), LIVE_DLQ_FORMAT);
    CHECK_EQ_INT(live_dlq_class("something new"), LIVE_DLQ_OTHER);
    CHECK_EQ_INT(live_dlq_class(NULL), LIVE_DLQ_OTHER);
    CHECK_EQ_STR(live_dlq_name(LIVE_DLQ_SCHEMA), "schema");
    CHECK_EQ_STR(live_dlq_name(-1), "other");
    CHECK_EQ_STR(live_dlq_name(LIVE_DLQ__COUNT), "other");
    /* the decoder's own reasons for every malformed message of the end-to-end tests */
    char err[256], reason[CODEC_REASON_MAX];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    static pl_stream s;
    pl_make_bad(cd, &s);
    int decoded_bad = 0;
    for (int i = 0; i < s.n_bad; i++) {
        m3_event ev;
        if (codec_decode(cd, s.bad[i].bytes, s.bad[i].len, &ev, reason, sizeof reason) == 0) {
            m3_event_clear(&ev);
            continue;
        }
        decoded_bad++;
        int cls = live_dlq_class(reason);
        CHECK_MSG(cls != LIVE_DLQ_OTHER && cls != LIVE_DLQ_ROUTING && cls != LIVE_DLQ_TIME,
                  "'%s' is class %s", reason, live_dlq_name(cls));
    }
    CHECK(decoded_bad >= 5);
    codec_destroy(cd);
}

/* ---------------------------------------------------------------- the recent window */

/* now - then over the folded histograms is exactly the stream between them. */
static void test_window_arithmetic(void) {
    char err[128];
    met_auc all, first, later, f_all, f_first, f_later;
    CHECK(met_auc_init(&all, 16, err, sizeof err) == 0);
    CHECK(met_auc_init(&first, 16, err, sizeof err) == 0);
    CHECK(met_auc_init(&later, 16, err, sizeof err) == 0);
    CHECK(met_auc_init(&f_all, 12, err, sizeof err) == 0);
    CHECK(met_auc_init(&f_first, 12, err, sizeof err) == 0);
    CHECK(met_auc_init(&f_later, 12, err, sizeof err) == 0);
    unsigned x = 12345;
    for (int i = 0; i < 20000; i++) {
        x = x * 1103515245u + 12345u;
        double p = (double)(x >> 8) / 16777216.0;
        int y = ((x >> 3) % 1000) < (unsigned)(p * (i < 10000 ? 600 : 1000));  /* the model
                                                   gets better in the second half */
        met_auc_add(&all, p, y);
        met_auc_add(i < 10000 ? &first : &later, p, y);
        if (i == 9999) CHECK(met_auc_fold(&f_first, &all) == 0);
    }
    CHECK(met_auc_fold(&f_all, &all) == 0);
    CHECK(met_auc_fold(&f_later, &later) == 0);
    CHECK(met_auc_sub(&f_all, &f_first) == 0);
    CHECK_EQ_INT(f_all.n, later.n);
    CHECK_EQ_INT(f_all.n_pos, later.n_pos);
    CHECK_CLOSE(met_auc_logloss(&f_all), met_auc_logloss(&later), 1e-9, 0);
    CHECK_CLOSE(met_auc_mean_p(&f_all), met_auc_mean_p(&later), 1e-9, 0);
    double bound;
    CHECK_CLOSE(met_auc_value(&f_all, &bound), met_auc_value(&f_later, NULL), 1e-12, 0);
    /* folding keeps the AUC within the coarser bins' bound */
    CHECK(fabs(met_auc_value(&f_later, NULL) - met_auc_value(&later, NULL)) <= bound + 1e-12);
    CHECK(met_auc_value(&later, NULL) > met_auc_value(&first, NULL) + 0.02);
    /* mismatched scales are refused */
    CHECK(met_auc_fold(&all, &f_all) == -1);
    CHECK(met_auc_sub(&all, &f_all) == -1);
    met_auc *v[] = {&all, &first, &later, &f_all, &f_first, &f_later};
    for (int i = 0; i < 6; i++) met_auc_free(v[i]);
}

/* ---------------------------------------------------------------- exposition text */

/* Every line is a comment (HELP then TYPE of the family that follows) or a sample of the
 * family last typed; counters end in _total. Returns the number of samples. */
static int check_exposition(const char *text) {
    char family[128] = "", type[32] = "";
    int samples = 0, help_seen = 0;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        CHECK_MSG(e, "the text does not end with a newline");
        char line[1024];
        size_t n = (size_t)(e - p);
        CHECK(n < sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        p = e + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            CHECK(sscanf(line + 7, "%127s", family) == 1);
            CHECK_MSG(strncmp(family, "m3rec_", 6) == 0, "%s", line);
            help_seen = 1;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128];
            CHECK(sscanf(line + 7, "%127s %31s", name, type) == 2);
            CHECK_MSG(help_seen && strcmp(name, family) == 0, "TYPE without HELP: %s", line);
            CHECK_MSG(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0, "%s", line);
            CHECK_MSG(strcmp(type, "counter") != 0 || strstr(family, "_total"), "%s", line);
            help_seen = 0;
            continue;
        }
        size_t fl = strlen(family);
        CHECK_MSG(fl && strncmp(line, family, fl) == 0 && (line[fl] == ' ' || line[fl] == '{'),
                  "sample outside its family %s: %s", family, line);
        const char *value = strrchr(line, ' ');
        char *end;
        double v = strtod(value + 1, &end);
        CHECK_MSG(*end == '\0', "bad value: %s", line);
        CHECK_MSG(strcmp(type, "counter") != 0 || (v >= 0 && !isnan(v)), "%s", line);
        samples++;
    }
    return samples;
}

/* promtool check metrics on text: 0 when clean, 77 when promtool is not installed. */
static int promtool(const char *text) {
    if (system("command -v promtool >/dev/null 2>&1") != 0) return 77;
    const char *path = "test_live_promtool.txt";
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s > test_live_promtool.out 2>&1", path);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "promtool check metrics: %s", proc_slurp("test_live_promtool.out"));
    return 0;
}

static void test_render(void) {
    live_snap s;
    memset(&s, 0, sizeof s);
    s.events = 10;
    s.impressions = 7;
    s.dlq[LIVE_DLQ_SCHEMA] = 2;
    s.n_scen = 2;
    snprintf(s.scen[0], M3_NAME_MAX, "home");
    snprintf(s.scen[1], M3_NAME_MAX, "search");
    live_lag lag[2] = {{"m3rec.events.home", 3, 42}, {"we\"ird\\top\nic", 0, 0}};
    s.lag = lag;
    s.n_lag = 2;
    for (int sc = 0; sc <= 2; sc++)
        for (int t = 0; t < MET_NTASKS; t++) s.q[sc][t] = (live_quality){100, 0.75, 0.4, 0.1, 0.2};
    s.q[1][1].auc = NAN;
    s.q[2][MET_CVR].auc = 0.625;                  /* overall (index n_scen), the CVR */
    s.has_store = 1;
    s.ckpt_age_s = 1.5;
    s.rss_bytes = 1e8;
    s.consuming = 1;
    s.group = (live_group){1, 5, 4, 1, 12.5, 1};
    live_health h = {1, 1, 1, 0.25, 3};
    char *text = live_render(&s, &h);
    CHECK(text);
    int n = check_exposition(text);
    CHECK_MSG(n > 60, "%d samples", n);
    CHECK_CONTAINS(text, "\nm3rec_consumer_lag_messages{topic=\"m3rec.events.home\",partition=\"3\"} 42\n");
    CHECK_CONTAINS(text, "{topic=\"we\\\"ird\\\\top\\nic\",partition=\"0\"} 0\n");
    CHECK_CONTAINS(text, "\nm3rec_window_auc{scenario=\"home\",task=\"ctr\"} 0.75\n");
    CHECK_CONTAINS(text, "\nm3rec_window_auc{scenario=\"search\",task=\"ctcvr\"} NaN\n");
    CHECK_CONTAINS(text, "\nm3rec_window_auc{task=\"ctr\"} 0.75\n");   /* overall */
    CHECK_CONTAINS(text, "\nm3rec_window_calibration_ratio{task=\"ctcvr\"} 0.5\n");
    CHECK_CONTAINS(text, "\nm3rec_window_auc{task=\"cvr\"} 0.625\n");
    CHECK_CONTAINS(text, "\nm3rec_window_auc{scenario=\"home\",task=\"cvr\"} 0.75\n");
    CHECK_CONTAINS(text, "\nm3rec_dlq_messages_total{class=\"schema\"} 2\n");
    CHECK_CONTAINS(text, "\nm3rec_dlq_messages_total{class=\"other\"} 0\n");
    CHECK_CONTAINS(text, "\nm3rec_checkpoint_age_seconds 1.5\n");
    CHECK_CONTAINS(text, "\nm3rec_worker_ready 1\n");
    CHECK_CONTAINS(text, "\nm3rec_consumer_revocations_total 3\n");
    CHECK_CONTAINS(text, "\nm3rec_group_blobs_refused_total 1\n");
    CHECK_CONTAINS(text, "\nm3rec_group_staleness_seconds 0.0125\n");
    CHECK(promtool(text) != 1);
    free(text);
    /* without a store no checkpoint series; before the first snapshot only the health */
    s.has_store = 0;
    s.group.on = 0;
    text = live_render(&s, &h);
    CHECK(text && !strstr(text, "m3rec_checkpoint") && !strstr(text, "m3rec_group"));
    free(text);
    live_health h0 = {0, 0, 1, NAN, 0};
    text = live_render(NULL, &h0);
    CHECK(text);
    check_exposition(text);
    CHECK_CONTAINS(text, "\nm3rec_snapshot_age_seconds NaN\n");
    CHECK(!strstr(text, "m3rec_input"));
    free(text);
}

/* config/prometheus.yml (docker-compose's Prometheus) is valid and scrapes the port the
 * compose file's workers listen on. */
static void test_compose_prometheus(void) {
    const char *compose = proc_slurp(M3_SOURCE_DIR "/docker-compose.yml");
    CHECK(compose);
    CHECK_CONTAINS(compose, "\"http.listen=0.0.0.0:9464\"");
    CHECK_CONTAINS(compose, "./config/prometheus.yml:/etc/prometheus/prometheus.yml");
    const char *prom = proc_slurp(M3_SOURCE_DIR "/config/prometheus.yml");
    CHECK(prom);
    CHECK_CONTAINS(prom, "targets: [\"worker-1:9464\", \"worker-2:9464\"]");
    if (system("command -v promtool >/dev/null 2>&1") != 0) return;
    CHECK_MSG(system("promtool check config " M3_SOURCE_DIR "/config/prometheus.yml >/dev/null") == 0,
              "promtool check config config/prometheus.yml failed");
}

/* ---------------------------------------------------------------- http.listen */

static int listen_check(const char *value, m3_cfg *c, char *err, size_t n) {
    char kv[256];
    cfg_defaults(c);
    snprintf(kv, sizeof kv, "http.listen=%s", value);
    CHECK_MSG(cfg_set(c, kv, "--set", 0, err, n) == 0, "%s", err);
    return cfg_check(c, err, n);
}

static void test_listen_key(void) {
    m3_cfg c;
    char err[1024];
    CHECK(listen_check("", &c, err, sizeof err) == 0);
    CHECK_EQ_INT(c.http_port, -1);
    cfg_free(&c);
    CHECK(listen_check("127.0.0.1:9464", &c, err, sizeof err) == 0);
    CHECK_EQ_STR(c.http_host, "127.0.0.1");
    CHECK_EQ_INT(c.http_port, 9464);
    cfg_free(&c);
    CHECK(listen_check("localhost:0", &c, err, sizeof err) == 0);
    CHECK_EQ_STR(c.http_host, "127.0.0.1");
    CHECK_EQ_INT(c.http_port, 0);
    cfg_free(&c);
    CHECK(listen_check("[::1]:65535", &c, err, sizeof err) == 0);
    CHECK_EQ_STR(c.http_host, "::1");
    cfg_free(&c);
    static const char *bad[] = {"9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536",
                                "127.0.0.1:-1", "example.com:80", "::1:80", "[]:80",
                                "127.0.0.1:80x", ":80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_MSG(listen_check(bad[i], &c, err, sizeof err) != 0, "%s accepted", bad[i]);
        CHECK_CONTAINS(err, "--set: http.listen=");
        CHECK_CONTAINS(err, "is not host:port");
        cfg_free(&c);
    }
    /* off: no server, no error */
    cfg_defaults(&c);
    CHECK(cfg_check(&c, err, sizeof err) == 0);
    CHECK(live_start(&c, err, sizeof err) == NULL);
    CHECK_EQ_STR(err, "");
    cfg_free(&c);
}

/* ---------------------------------------------------------------- the server */

static void url_of(char *out, size_t n, int port, const char *path) {
    snprintf(out, n, "http://127.0.0.1:%d%s", port, path);
}

static long get_path(int port, const char *path, http_body *body) {
    char url[128];
    url_of(url, sizeof url, port, path);
    return http_get(url, 5000, body);
}

/* Publish a snapshot of board; returns how long live_publish took (ms). */
static double publish_board(live *l, met_board *board, int failed, int registry_wait) {
    uint64_t dlq[LIVE_DLQ__COUNT] = {0};
    live_src src = {.board = board, .dlq = dlq, .failed = failed, .assigned = 4,
                    .registry_wait = registry_wait};
    CHECK(live_due(l));
    double t0 = clk_mono_s();
    live_publish(l, &src);
    double ms = (clk_mono_s() - t0) * 1000;
    CHECK(!live_due(l));
    return ms;
}

/* Connections past LIVE_CONNECTIONS are refused; the server serves again once they go. */
static void check_connection_limit(int port) {
    int fds[LIVE_CONNECTIONS];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < LIVE_CONNECTIONS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(fds[i] >= 0 && connect(fds[i], (struct sockaddr *)&a, sizeof a) == 0);
    }
    usleep(200 * 1000);   /* the server accepts them */
    char url[128];
    url_of(url, sizeof url, port, "/live");
    int64_t t0 = clk_mono_ms();
    CHECK_EQ_INT(http_get(url, 1000, NULL), 0);   /* not served */
    fprintf(stderr, "test_live: connection %d: no answer in %lld ms\n", LIVE_CONNECTIONS + 1,
            (long long)(clk_mono_ms() - t0));
    for (int i = 0; i < LIVE_CONNECTIONS; i++) close(fds[i]);
    int64_t deadline = clk_mono_ms() + 5000;
    long st = 0;
    while (clk_mono_ms() < deadline && (st = http_get(url, 1000, NULL)) == 0) usleep(50 * 1000);
    CHECK_MSG(st != 0, "not served after the idle connections closed");
}

static void test_server(void) {
    m3_cfg c;
    char err[1024];
    cfg_defaults(&c);
    CHECK(cfg_set(&c, "http.listen=127.0.0.1:0", "--set", 0, err, sizeof err) == 0);
    CHECK(cfg_set(&c, "http.live.max.ms=1000", "--set", 0, err, sizeof err) == 0);
    CHECK(cfg_check(&c, err, sizeof err) == 0);
    live *l = live_start(&c, err, sizeof err);
    CHECK_MSG(l, "%s", err);
    int port = live_port(l);
    CHECK(port > 0);
    /* the same port again: refused, saying why */
    char kv[64];
    snprintf(kv, sizeof kv, "http.listen=127.0.0.1:%d", port);
    m3_cfg c2;
    cfg_defaults(&c2);
    CHECK(cfg_set(&c2, kv, "--set", 0, err, sizeof err) == 0 && cfg_check(&c2, err, sizeof err) == 0);
    CHECK(live_start(&c2, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "cannot listen there");
    cfg_free(&c2);
    http_body body = {0};
    /* start-up: live, not ready */
    CHECK_EQ_INT(get_path(port, "/live", &body), 200);
    CHECK_EQ_INT(get_path(port, "/ready", &body), 503);
    CHECK_CONTAINS(body.data, "not ready: starting");
    met_board *board = met_board_new(c.scenarios.n, (const char *const[]){"home", "search", "product"},
                                     1, (const char *const[]){"m3rec"}, 0, err, sizeof err);
    CHECK_MSG(board, "%s", err);
    publish_board(l, board, 0, 0);
    CHECK_EQ_INT(get_path(port, "/ready", &body), 503);   /* no assignment yet */
    CHECK_CONTAINS(body.data, "no partitions assigned");
    live_set_assigned(l, 4);   /* ready once the main loop publishes after it */
    CHECK_EQ_INT(get_path(port, "/ready", &body), 503);
    CHECK_CONTAINS(body.data, "not resumed consuming yet");
    usleep(LIVE_PUBLISH_MS * 1000);
    publish_board(l, board, 0, 0);
    CHECK_EQ_INT(get_path(port, "/ready", &body), 200);
    CHECK_EQ_STR(body.data, "ready\n");
    /* a message waiting for the schema registry stalls the input: not ready meanwhile */
    usleep(LIVE_PUBLISH_MS * 1000);
    publish_board(l, board, 0, 1);
    CHECK_EQ_INT(get_path(port, "/ready", &body), 503);
    CHECK_CONTAINS(body.data, "input waits for the schema registry");
    CHECK_EQ_INT(get_path(port, "/live", &body), 200);
    usleep(LIVE_PUBLISH_MS * 1000);
    publish_board(l, board, 0, 0);
    CHECK_EQ_INT(get_path(port, "/ready", &body), 200);
    live_set_assigned(l, 0);   /* a revocation shows at once */
    CHECK_EQ_INT(get_path(port, "/ready", &body), 503);
    CHECK_CONTAINS(body.data, "no partitions assigned");
    live_set_assigned(l, 4);
    usleep(LIVE_PUBLISH_MS * 1000);
    publish_board(l, board, 0, 0);
    CHECK_EQ_INT(get_path(port, "/metrics", &body), 200);
    CHECK_CONTAINS(body.data, "\nm3rec_consumer_revocations_total 1\n");
    CHECK_CONTAINS(body.data, "\nm3rec_worker_ready 1\n");
    check_exposition(body.data);
    /* methods and paths */
    char url[128];
    url_of(url, sizeof url, port, "/metrics");
    CHECK_EQ_INT(http_request(NULL, "POST", url, 5000, NULL), 405);
    CHECK_EQ_INT(http_request(NULL, "DELETE", url, 5000, NULL), 405);
    CHECK_EQ_INT(http_request(NULL, "HEAD", url, 5000, NULL), 200);
    CHECK_EQ_INT(get_path(port, "/", NULL), 404);
    CHECK_EQ_INT(get_path(port, "/metrics/x", NULL), 404);
    CHECK_EQ_INT(get_path(port, "/../etc/passwd", NULL), 404);
    check_connection_limit(port);
    /* the main loop stops publishing: /live fails after http.live.max.ms, /ready too */
    usleep(1300 * 1000);
    CHECK_EQ_INT(get_path(port, "/live", &body), 503);
    CHECK_CONTAINS(body.data, "not live: the main loop last published");
    CHECK_EQ_INT(get_path(port, "/ready", &body), 503);
    publish_board(l, board, 0, 0);
    CHECK_EQ_INT(get_path(port, "/live", &body), 200);
    CHECK_EQ_INT(get_path(port, "/ready", &body), 200);
    /* a failure, then shutdown */
    usleep(1000 * 1000);
    double ms = publish_board(l, board, 1, 0);
    fprintf(stderr, "test_live: one publish (3 scenarios, default 2^16-bin board) took %.2f ms "
            "of the main loop\n", ms);
    CHECK_EQ_INT(get_path(port, "/ready", &body), 503);
    CHECK_CONTAINS(body.data, "after a failure");
    live_stopping(l);
    CHECK_EQ_INT(get_path(port, "/ready", &body), 503);
    CHECK_CONTAINS(body.data, "not ready: stopping");
    CHECK_EQ_INT(get_path(port, "/live", &body), 200);
    http_body_free(&body);
    live_stop(l);
    CHECK_EQ_INT(get_path(port, "/live", NULL), 0);   /* closed */
    met_board_destroy(board);
    cfg_free(&c);
}

/* ---------------------------------------------------------------- a real worker */

#define SECRET "Secret-Marker-7f3a"

static void test_worker(void) {
    char err[512], bs[128], dir[600], set_dir[700];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    static pl_stream s = {.prefix = "live", .seed = 5, .n_impressions = 12000};
    pl_make_bad(cd, &s);
    const char *names[] = {"live.events.home", "live.events.search", "live.events.product",
                            "live.requests", "live.predictions", "live.dlq"};
    kio_mock *m = kio_mock_new(2, names, 6, err, sizeof err);
    CHECK_MSG(m, "%s", err);
    snprintf(bs, sizeof bs, "%s", kio_mock_bootstraps(m));
    snprintf(dir, sizeof dir, "%s/test_live_" SECRET ".store", M3_BINARY_DIR);
    snprintf(set_dir, sizeof set_dir, "store.dir=%s", dir);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    char *extra[] = {"--set", "http.listen=127.0.0.1:0", "--set", set_dir,
                     "--set", "checkpoint.interval.ms=500", "--set", "kafka.client.id=" SECRET,
                     NULL};
    const char *log = "test_live_worker.log";
    pid_t pid = pl_spawn_worker(bs, &s, "live", 0, "test_live_worker.json", log, extra);
    int port = http_worker_port(log);
    http_body body = {0};
    http_wait_status(port, "/ready", 200, 30000, &body);
    kio_producer *p = pl_producer(bs);
    pl_produce_stream(p, cd, &s, 0, s.n_impressions, 1);
    kio_producer_destroy(p);
    const char *t = http_wait_sample(port, "m3rec_impressions_total", (double)s.n_impressions, 120000, &body);
    t = http_wait_sample(port, "m3rec_window_predictions{task=\"ctr\"}", (double)s.n_impressions / 2, 10000, &body);
    t = http_wait_sample(port, "m3rec_checkpoints_total", 1, 10000, &body);
    check_exposition(t);
    CHECK(promtool(t) != 1);
    double auc = http_sample_of(t, "m3rec_window_auc{task=\"ctr\"}");
    fprintf(stderr, "test_live: worker window %.0f s, ctr auc %.4f over %.0f predictions\n",
            http_sample_of(t, "m3rec_window_seconds"), auc, http_sample_of(t, "m3rec_window_predictions{task=\"ctr\"}"));
    CHECK_MSG(auc > 0.5, "window ctr auc %.4f", auc);
    double window_n = http_sample_of(t, "m3rec_window_predictions{task=\"ctr\"}");
    CHECK(http_sample_of(t, "m3rec_window_auc{scenario=\"home\",task=\"ctr\"}") > 0.5);
    CHECK(http_sample_of(t, "m3rec_window_predictions{task=\"cvr\"}") >= 0);   /* the series exists */
    double lag = http_sample_of(t, "m3rec_consumer_lag_messages{topic=\"live.events.home\",partition=\"0\"}");
    CHECK(lag >= 0);
    CHECK_EQ_INT(http_sample_of(t, "m3rec_consumer_assigned_partitions"), 8);
    /* every bad message in its class: the decoder's, the worker's routing, the learner's */
    CHECK_EQ_INT(http_sample_of(t, "m3rec_dlq_messages_total{class=\"malformed\"}"), 4);
    CHECK_EQ_INT(http_sample_of(t, "m3rec_dlq_messages_total{class=\"schema\"}"), 1);
    CHECK_EQ_INT(http_sample_of(t, "m3rec_dlq_messages_total{class=\"range\"}"), 1);
    CHECK_EQ_INT(http_sample_of(t, "m3rec_dlq_messages_total{class=\"routing\"}"), 4);
    CHECK_EQ_INT(http_sample_of(t, "m3rec_dlq_messages_total{class=\"other\"}"), 0);
    CHECK(http_sample_of(t, "m3rec_model_version") > 0);
    CHECK(http_sample_of(t, "m3rec_resident_memory_bytes") > 1e6);
    CHECK(http_sample_of(t, "m3rec_checkpoint_age_seconds") < 60);
    /* no configuration value in any answer: the client id, the store path, the broker */
    const char *paths[] = {"/metrics", "/live", "/ready"};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(get_path(port, paths[i], &body), 200);
        CHECK_MSG(!strstr(body.data, SECRET) && !strstr(body.data, bs),
                  "%s shows a configuration value", paths[i]);
    }
    /* the broker goes down: not ready (the worker waits); back: ready again */
    CHECK(kio_mock_set_down(m, 1, err, sizeof err) == 0);
    http_wait_status(port, "/ready", 503, 30000, &body);
    CHECK_CONTAINS(body.data, "the broker is unreachable");
    CHECK_EQ_INT(get_path(port, "/live", NULL), 200);
    CHECK(kio_mock_set_down(m, 0, err, sizeof err) == 0);
    http_wait_status(port, "/ready", 200, 60000, &body);
    kill(pid, SIGTERM);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 60000, "the worker"), 0);
    CHECK_EQ_INT(get_path(port, "/live", NULL), 0);   /* gone with the worker */
    /* the window spans the whole run here (shorter than metrics.window.ms): its CTR AUC is
     * the report's, up to the coarser bins */
    json_node *r = pl_report("test_live_worker.json");
    CHECK_EQ_INT(json_number(json_get(r, "overall.ctr.n"), -1), window_n);
    CHECK_CLOSE(auc, json_number(json_get(r, "overall.ctr.auc"), -1), 0, 0.002);
    json_free(r);
    http_body_free(&body);
    kio_mock_destroy(m);
    codec_destroy(cd);
    CHECK(system(cmd) == 0);
}

int main(void) {
    CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == 0);
    test_dlq_classes();
    test_window_arithmetic();
    test_render();
    test_compose_prometheus();
    test_listen_key();
    test_server();
    test_worker();
    curl_global_cleanup();
    return 0;
}
