/* it_kafka.c - integration tests against a real Apache Kafka broker (scripts/kafka).
 *
 * CTest starts the broker as a fixture and passes its state directory in M3_KAFKA_DIR.
 *   1. Two workers in one consumer group split co-partitioned topics: every impression
 *      gets a prediction, bad messages reach the DLQ, each partition number of every
 *      input topic is consumed by exactly one worker (a user's scenarios stay together),
 *      and each worker learns (AUC clearly above 0.5).
 *   2. Topics with unequal partition counts: the worker refuses to start, saying why.
 *   3. The broker is gone for 65 s in the middle of a run (stopped while the worker still
 *      answers the first half; past the group session): the worker pauses consuming, says
 *      for how long the broker has been unreachable, neither exits nor goes idle, and
 *      resumes; every impression gets a prediction, and with its store every event is
 *      counted and trained exactly once. */
#include "pipeline.h"

#define PARTS 4

static char bootstrap[128];
static char kafka_dir[512];

static void create_topics(const char *prefix, int parts_requests) {
    char names[6][128], err[512];
    static const char *suffix[] = {"events.home", "events.search", "events.product", "requests",
                                   "predictions", "dlq"};
    const char *in[4], *out[2];
    for (int i = 0; i < 6; i++) pl_topic(names[i], sizeof names[i], prefix, suffix[i]);
    for (int i = 0; i < 3; i++) in[i] = names[i];
    in[3] = names[3];
    out[0] = names[4];
    out[1] = names[5];
    kio_prop props[] = {{"bootstrap.servers", bootstrap}};
    CHECK_MSG(kio_create_topics(props, 1, in, 3, PARTS, 30000, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(kio_create_topics(props, 1, &in[3], 1, parts_requests, 30000, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(kio_create_topics(props, 1, out, 2, PARTS, 30000, err, sizeof err) == 0, "%s", err);
}

/* The partition numbers a worker consumed, from its report, as a bit set. */
static unsigned partitions_of(const json_node *report, const char *prefix) {
    const json_node *parts = json_member(report, "partitions");
    CHECK(parts && parts->type == JSON_OBJECT);
    unsigned set = 0;
    for (size_t i = 0; i < parts->n; i++) {
        const char *k = parts->keys[i], *slash = strrchr(k, '/');
        CHECK(slash && strncmp(k, prefix, strlen(prefix)) == 0);
        set |= 1u << atoi(slash + 1);
    }
    return set;
}

/* Partition numbers owned per input topic must agree: the bit set of every topic equal. */
static void check_copartitioned(const json_node *report) {
    const json_node *parts = json_member(report, "partitions");
    unsigned per_topic[8] = {0};
    char topics[8][128];
    int n = 0;
    for (size_t i = 0; i < parts->n; i++) {
        const char *k = parts->keys[i], *slash = strrchr(k, '/');
        int t = 0;
        while (t < n && strncmp(topics[t], k, (size_t)(slash - k)) != 0) t++;
        if (t == n) {
            CHECK(n < 8);
            snprintf(topics[n++], sizeof topics[0], "%.*s", (int)(slash - k), k);
        }
        per_topic[t] |= 1u << atoi(slash + 1);
    }
    for (int t = 1; t < n; t++)
        CHECK_MSG(per_topic[t] == per_topic[0], "%s owns partitions %#x but %s owns %#x", topics[t],
                  per_topic[t], topics[0], per_topic[0]);
}

static void test_two_workers(codec *cd) {
    static pl_stream s = {.prefix = "it1", .seed = 11, .n_impressions = 80000};
    create_topics(s.prefix, PARTS);
    pl_make_bad(cd, &s);
    const char *reports[2] = {"it_kafka_w1.json", "it_kafka_w2.json"};
    const char *logs[2] = {"it_kafka_w1.log", "it_kafka_w2.log"};
    pid_t pid[2];
    for (int w = 0; w < 2; w++) {
        remove(reports[w]);
        pid[w] = pl_spawn_worker(bootstrap, &s, "it1-workers", 6000, reports[w], logs[w], NULL);
    }
    /* 4 input topics x 4 partitions: the range assignor gives each member 2 of every topic */
    for (int w = 0; w < 2; w++) proc_wait_log(logs[w], "assigned 8 partitions", 60000);
    kio_producer *p = pl_producer(bootstrap);
    pl_produce_stream(p, cd, &s, 0, s.n_impressions, 1);
    kio_producer_destroy(p);
    for (int w = 0; w < 2; w++) CHECK_EQ_INT(proc_wait(pid[w], clk_mono_ms() + 240000, "the worker"), 0);
    pl_verify_outputs(bootstrap, cd, &s, 1);
    json_node *r[2];
    long long imps = 0;
    for (int w = 0; w < 2; w++) {
        r[w] = pl_report(reports[w]);
        long long k = (long long)json_number(json_get(r[w], "counters.impressions"), -1);
        CHECK_MSG(k > s.n_impressions / 4, "worker %d trained on only %lld impressions", w + 1, k);
        imps += k;
        check_copartitioned(r[w]);
        double auc = json_number(json_get(r[w], "overall.ctr.auc"), 0);
        fprintf(stderr, "it_kafka: worker %d: %lld impressions, ctr auc %.4f, %.0f events/s\n", w + 1, k,
                auc, json_number(json_get(r[w], "input_events_per_sec"), 0));
        CHECK_MSG(auc > 0.6, "worker %d CTR AUC %.4f", w + 1, auc);
    }
    CHECK_EQ_INT(imps, s.n_impressions);
    unsigned a = partitions_of(r[0], s.prefix), b = partitions_of(r[1], s.prefix);
    CHECK_MSG((a & b) == 0 && (a | b) == (1u << PARTS) - 1, "partitions %#x and %#x", a, b);
    json_free(r[0]);
    json_free(r[1]);
}

static void test_unequal_partitions(void) {
    static pl_stream s = {.prefix = "it2", .seed = 1, .n_impressions = 1};
    create_topics(s.prefix, 2);
    pid_t pid = pl_spawn_worker(bootstrap, &s, "it2-workers", 1000, "it_kafka_w3.json", "it_kafka_w3.log", NULL);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 60000, "the worker"), 1);
    const char *log = proc_slurp("it_kafka_w3.log");
    CHECK_CONTAINS(log, "equal partition counts");
    CHECK_CONTAINS(log, "it2.requests has 2");
}

static void kafka_cmd(const char *what) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s/scripts/kafka --dir '%s' %s >/dev/null", M3_SOURCE_DIR, kafka_dir, what);
    CHECK_MSG(system(cmd) == 0, "%s failed", cmd);
}

/* The worker's log contains `what` now. */
static int log_has(const char *log, const char *what) {
    const char *t = proc_slurp(log);
    return t && strstr(t, what);
}

static void test_broker_outage(codec *cd) {
    static pl_stream s = {.prefix = "it3", .seed = 13, .n_impressions = 40000};
    create_topics(s.prefix, PARTS);
    const char *report = "it_kafka_w4.json", *log = "it_kafka_w4.log";
    remove(report);
    char set_dir[700];
    snprintf(set_dir, sizeof set_dir, "store.dir=%s/it_kafka_w4.store", M3_BINARY_DIR);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", set_dir + strlen("store.dir="));
    CHECK(system(cmd) == 0);
    /* with a store every event is trained exactly once, whatever the outage does to the group */
    char *extra[] = {"--set", set_dir, "--set", "checkpoint.interval.ms=500",
                     "--set", "metrics.progress.ms=5000", "--set", "kafka.session.timeout.ms=10000",
                     "--set", "kafka.heartbeat.interval.ms=1000", NULL};
    pid_t pid = pl_spawn_worker(bootstrap, &s, "it3-workers", 15000, report, log, extra);
    proc_wait_log(log, "assigned 16 partitions", 60000);
    kio_producer *p = pl_producer(bootstrap);
    pl_produce_stream(p, cd, &s, 0, s.n_impressions / 2, 0);
    kio_producer_destroy(p);
    /* stop the broker while the worker is still answering the first half: outputs wait */
    kafka_cmd("stop");
    int64_t t0 = clk_mono_ms();
    proc_wait_log(log, "consuming paused: the broker is unreachable", 60000);
    /* an outage of 65 s: past the group session (10 s), and the worker neither exits nor
     * goes idle; the progress line says for how long the broker has been unreachable */
    while (clk_mono_ms() - t0 < 65000) {
        CHECK_MSG(kill(pid, 0) == 0, "the worker exited during the outage:\n%s", proc_slurp(log));
        usleep(500 * 1000);
    }
    CHECK_MSG(log_has(log, "broker unreachable for 6"), "no progress line of a 60 s outage:\n%s",
              proc_slurp(log));
    kafka_cmd("start --keep");
    p = pl_producer(bootstrap);
    pl_produce_stream(p, cd, &s, s.n_impressions / 2, s.n_impressions, 0);
    kio_producer_destroy(p);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 300000, "the worker"), 0);
    CHECK(log_has(log, "consuming resumed"));
    pl_verify_outputs(bootstrap, cd, &s, 0);
    json_node *r = pl_report(report);
    pl_check_exact(r, &s);
    double longest = json_number(json_get(r, "outage.longest_ms"), -1);
    fprintf(stderr, "it_kafka: outage: longest %.0f ms, %.0f pauses, %.0f redelivered messages dropped\n",
            longest, json_number(json_get(r, "outage.pauses"), -1),
            json_number(json_get(r, "outage.redelivered_dropped"), -1));
    CHECK_MSG(longest >= 60000, "longest outage %.0f ms", longest);
    json_free(r);
    CHECK(system(cmd) == 0);
}

int main(void) {
    pl_read_bootstrap(bootstrap, sizeof bootstrap, kafka_dir, sizeof kafka_dir);
    fprintf(stderr, "it_kafka: broker at %s\n", bootstrap);
    char err[512];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    test_unequal_partitions();
    test_two_workers(cd);
    test_broker_outage(cd);
    codec_destroy(cd);
    return 0;
}
