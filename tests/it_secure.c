/* it_secure.c - m3rec against a secured Kafka broker (scripts/kafka --secure: TLS with
 * client certificates, then SASL; keys, CA and user made at the broker's start).
 *
 * CTest starts that broker as the kafka_secure fixture and passes its state directory in
 * M3_KAFKA_DIR; DIR/secure/m3rec.properties holds the client's kafka.* settings. Shown:
 *   1. the simulator (admin: --create-topics; producer), the worker (consumer, producer,
 *      topic check) and the replay (admin, producer) work through those kafka.* keys
 *      alone; every prediction is on the broker, read back with the same settings;
 *   2. a wrong password and an untrusted broker certificate end each program with exit
 *      code 1 and a message that says why, within a bounded time (run side by side);
 *   3. no secret (passwords, private-key PEM) reaches any output, report or
 *      --print-config.
 * librdkafka before 2.6.1 (Debian 12: 2.0.2) cannot do SCRAM with Kafka 4.x (the broker
 * refuses its nonce, CVE-2024-56128): with such a library the programs use SASL PLAIN over
 * the same TLS listener, and the test shows that SCRAM with the right password is refused
 * cleanly (docs/kafka.md). */
#include "pipeline.h"

#define MAX_PROPS 16
#define MAX_SECRETS 12
#define FAIL_DEADLINE_MS 90000   /* the programs give up on an unreachable broker in 15-30 s */

static char kdir[512], conf[600], bootstrap[512];
static char prop_kv[MAX_PROPS][2][512];
static kio_prop props[MAX_PROPS];
static int n_props;
static char secrets[MAX_SECRETS][256];
static int n_secrets;
static const char *mech_set;   /* "--set" value that picks the SASL mechanism */

static const char *file_text(const char *dir, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/secure/%s", dir, name);
    const char *t = proc_slurp(path);
    CHECK_MSG(t, "no %s: is the secure broker running (scripts/kafka --dir %s start --secure)?", path, dir);
    return t;
}

static void add_secret(const char *s, size_t len) {
    CHECK(n_secrets < MAX_SECRETS && len > 8 && len < sizeof secrets[0]);
    snprintf(secrets[n_secrets++], sizeof secrets[0], "%.*s", (int)len, s);
}

/* A secret file's first line; for a PEM key, its first base64 line too. */
static void add_secret_file(const char *name) {
    const char *t = file_text(kdir, name);
    if (strncmp(t, "-----BEGIN", 10) == 0) t = strchr(t, '\n') + 1;
    add_secret(t, strcspn(t, "\r\n"));
}

/* The kafka.* lines of m3rec.properties as librdkafka properties for the test's own
 * clients, with the mechanism this librdkafka can use; and the secrets to look for. */
static void read_setup(void) {
    const char *dir = getenv("M3_KAFKA_DIR");
    CHECK_MSG(dir, "M3_KAFKA_DIR is not set: run this through ctest (it starts the broker)");
    snprintf(kdir, sizeof kdir, "%s", dir);
    snprintf(conf, sizeof conf, "%s/secure/m3rec.properties", dir);
    int scram_ok = rd_kafka_version() >= 0x020601ff;
    /* scripts/test's SCRAM phase builds against scripts/librdkafka and sets this: there a
     * fallback to PLAIN would hide that SCRAM was never tried */
    CHECK_MSG(scram_ok || !getenv("M3_REQUIRE_SCRAM"),
              "M3_REQUIRE_SCRAM is set but this build links librdkafka %s (< 2.6.1: no SCRAM with Kafka 4.x)",
              rd_kafka_version_str());
    mech_set = scram_ok ? "kafka.sasl.mechanisms=SCRAM-SHA-512" : "kafka.sasl.mechanisms=PLAIN";
    const char *t = file_text(kdir, "m3rec.properties");
    for (const char *line = t; *line; line += strcspn(line, "\n") + (line[strcspn(line, "\n")] != 0)) {
        int len = (int)strcspn(line, "\n");
        const char *eq = memchr(line, '=', (size_t)len);
        if (strncmp(line, "kafka.", 6) != 0 || !eq) continue;
        CHECK(n_props < MAX_PROPS);
        snprintf(prop_kv[n_props][0], 512, "%.*s", (int)(eq - line - 6), line + 6);
        snprintf(prop_kv[n_props][1], 512, "%.*s", (int)(line + len - eq - 1), eq + 1);
        if (strcmp(prop_kv[n_props][0], "sasl.mechanisms") == 0) snprintf(prop_kv[n_props][1], 512, "%s", mech_set + 22);
        if (strcmp(prop_kv[n_props][0], "bootstrap.servers") == 0) snprintf(bootstrap, sizeof bootstrap, "%s", prop_kv[n_props][1]);
        props[n_props] = (kio_prop){prop_kv[n_props][0], prop_kv[n_props][1]};
        n_props++;
    }
    CHECK_MSG(bootstrap[0] && n_props >= 8, "%s: expected the TLS and SASL settings", conf);
    static const char *const files[] = {"client.password", "client.key.password", "broker.password",
                                        "broker.key.password", "client.key", "broker.key", "ca.key"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) add_secret_file(files[i]);
    fprintf(stderr, "it_secure: broker at %s, librdkafka %s, SASL %s\n", bootstrap, rd_kafka_version_str(),
            mech_set + 22);
}

/* No secret in the file at path (a program's output or report). */
static void check_no_secret(const char *path) {
    char *t = proc_read_file(path, NULL);
    CHECK_MSG(t, "no %s", path);
    for (int i = 0; i < n_secrets; i++)
        CHECK_MSG(!strstr(t, secrets[i]), "%s holds secret %d of %s/secure", path, i, kdir);
    free(t);
}

/* Start a program (argv NULL-terminated) with the secure configuration and more args. */
static pid_t spawn(const char *prog, const char *out, const char *err, char **args) {
    char *argv[48] = {(char *)prog};
    int n = 1;
    if (strstr(prog, "worker")) {   /* worker_args turn the demo's embedded broker off */
        argv[n++] = "--config";
        argv[n++] = M3_SOURCE_DIR "/config/demo.properties";
    }
    argv[n++] = "--config";
    argv[n++] = conf;
    argv[n++] = "--set";
    argv[n++] = (char *)mech_set;
    for (int i = 0; args[i]; i++) {
        CHECK(n < 47);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    return proc_spawn(argv, out, err);
}

static char *worker_args[] = {"--set", "broker.embedded=false", "--set", "model.shadow=", "--set",
                              "metrics.progress.ms=0", "--set", "worker.exit.idle.ms=3000", NULL};

/* Messages now in the given topics (all partitions), read with the secure settings. */
static long long count_messages(const char *const *topics, int n_topics, long long want) {
    char err[512], group[64];
    snprintf(group, sizeof group, "it-secure-count-%d", (int)getpid());
    kio_prop all[MAX_PROPS + 1];
    memcpy(all, props, (size_t)n_props * sizeof *props);
    all[n_props] = (kio_prop){"group.id", group};
    kio_consumer *c = kio_consumer_new(all, n_props + 1, topics, n_topics, err, sizeof err);
    CHECK_MSG(c, "%s", err);
    long long got = 0;
    int64_t deadline = clk_mono_ms() + 60000, last = clk_mono_ms();
    while (got < want && clk_mono_ms() < deadline && clk_mono_ms() - last < 15000) {
        rd_kafka_message_t *msgs[256];
        int n = kio_consumer_poll(c, msgs, 256, 200, err, sizeof err);
        CHECK_MSG(n >= 0, "poll: %s", err);
        if (n > 0) last = clk_mono_ms();
        for (int i = 0; i < n; i++) rd_kafka_message_destroy(msgs[i]);
        got += n;
    }
    kio_consumer_close(c);
    return got;
}

static void test_pipeline(void) {
    char *sim_args[] = {"--set", "topic.prefix=sec", "--events", "3000", "--seed", "5", "--create-topics", "2",
                        "--report", "it_secure_sim.json", NULL};
    pid_t pid = spawn(M3_BINARY_DIR "/m3rec-sim", "it_secure_sim.out", "it_secure_sim.err", sim_args);
    CHECK_MSG(proc_wait(pid, clk_mono_ms() + 60000, "m3rec-sim") == 0, "m3rec-sim: %s",
              proc_slurp("it_secure_sim.err"));
    char *args[32];
    int n = 0;
    for (; worker_args[n]; n++) args[n] = worker_args[n];
    char *more[] = {"--set", "topic.prefix=sec", "--set", "kafka.group.id=it-secure",
                    "--report", "it_secure_worker.json", NULL};
    for (int i = 0; more[i]; i++) args[n++] = more[i];
    args[n] = NULL;
    remove("it_secure_worker.json");
    pid = spawn(M3_BINARY_DIR "/m3rec-worker", "it_secure_worker.log", "it_secure_worker.log", args);
    CHECK_MSG(proc_wait(pid, clk_mono_ms() + 90000, "m3rec-worker") == 0, "m3rec-worker: %s",
              proc_slurp("it_secure_worker.log"));
    json_node *r = pl_report("it_secure_worker.json");
    long long imps = (long long)json_number(json_get(r, "counters.impressions"), -1);
    long long preds = (long long)json_number(json_get(r, "counters.predictions"), -1);
    json_free(r);
    CHECK_EQ_INT(imps, 3000);
    CHECK_MSG(preds >= imps, "%lld predictions for %lld impressions", preds, imps);
    CHECK_CONTAINS(proc_slurp("it_secure_worker.log"), "failed 0");
    const char *pred_topic[] = {"sec.predictions"};
    long long on_broker = count_messages(pred_topic, 1, preds);
    fprintf(stderr, "it_secure: %lld impressions, %lld predictions, %lld read back\n", imps, preds, on_broker);
    CHECK_EQ_INT(on_broker, preds);
    const char *files[] = {"it_secure_sim.out", "it_secure_sim.err", "it_secure_sim.json",
                           "it_secure_worker.log", "it_secure_worker.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) check_no_secret(files[i]);
}

#define SAMPLE M3_SOURCE_DIR "/tests/data/samples/aliexpress/torchrechub_aliexpress_train_sample.csv"

static void test_replay(void) {
    char *args[] = {"--mapping", M3_SOURCE_DIR "/config/replay-aliexpress.properties", "--map",
                    "topic.prefix=secr", "--create-topics", "1", SAMPLE, NULL};
    pid_t pid = spawn(M3_BINARY_DIR "/m3rec-replay", "it_secure_replay.out", "it_secure_replay.err", args);
    CHECK_MSG(proc_wait(pid, clk_mono_ms() + 60000, "m3rec-replay") == 0, "m3rec-replay: %s",
              proc_slurp("it_secure_replay.err"));
    CHECK_CONTAINS(proc_slurp("it_secure_replay.out"), "produced 102 messages");
    const char *topic[] = {"secr.events.us"};
    CHECK_EQ_INT(count_messages(topic, 1, 102), 102);
    check_no_secret("it_secure_replay.out");
    check_no_secret("it_secure_replay.err");
}

/* One run that must fail: the program, the setting that breaks it, what its stderr says. */
typedef struct {
    const char *prog, *set, *expect, *name;
    pid_t pid;
} bad_run;

static void test_refused(void) {
    static char untrusted[600];
    snprintf(untrusted, sizeof untrusted, "kafka.ssl.ca.location=%s/it_secure_other_ca.pem", M3_BINARY_DIR);
    CHECK(system("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=other "
                 "-keyout it_secure_other_ca.key -out it_secure_other_ca.pem 2>/dev/null") == 0);
    static const char wrong[] = "kafka.sasl.password=Wrong-Passw0rd-for-it_secure";
    add_secret(wrong + 20, strlen(wrong + 20));
    const char *bad_pw = rd_kafka_version() >= 0x020601ff ? "invalid credentials" : "Invalid username or password";
    bad_run runs[] = {
        {"m3rec-sim", wrong, bad_pw, "sim_pw", 0},
        {"m3rec-worker", wrong, bad_pw, "worker_pw", 0},
        {"m3rec-replay", wrong, bad_pw, "replay_pw", 0},
        {"m3rec-sim", untrusted, "certificate verify failed", "sim_ca", 0},
        {"m3rec-worker", untrusted, "certificate verify failed", "worker_ca", 0},
        {"m3rec-replay", untrusted, "certificate verify failed", "replay_ca", 0},
        /* this librdkafka's SCRAM with the right password: refused, not hung */
        {"m3rec-sim", "kafka.sasl.mechanisms=SCRAM-SHA-512", "invalid credentials", "sim_scram", 0}};
    int n_runs = rd_kafka_version() >= 0x020601ff ? 6 : 7;
    char out[16][128];
    int64_t t0 = clk_mono_ms();
    for (int i = 0; i < n_runs; i++) {
        static char *replay_args[] = {"--mapping", M3_SOURCE_DIR "/config/replay-aliexpress.properties",
                                      "--create-topics", "1", SAMPLE, NULL};
        static char *sim_args[] = {"--events", "100", "--create-topics", "1", NULL};
        char prog[256], *args[24] = {"--set", (char *)runs[i].set, "--set", "topic.prefix=secbad"};
        char **more = strstr(runs[i].prog, "worker") ? worker_args
                      : strstr(runs[i].prog, "replay") ? replay_args : sim_args;
        int n = 4;
        for (int k = 0; more[k]; k++) args[n++] = more[k];
        args[n] = NULL;
        snprintf(prog, sizeof prog, "%s/%s", M3_BINARY_DIR, runs[i].prog);
        snprintf(out[i], sizeof out[i], "it_secure_%s.log", runs[i].name);
        runs[i].pid = spawn(prog, out[i], out[i], args);
    }
    for (int i = 0; i < n_runs; i++) {
        int rc = proc_wait(runs[i].pid, t0 + FAIL_DEADLINE_MS, runs[i].name);
        const char *log = proc_slurp(out[i]);
        fprintf(stderr, "it_secure: %s exit %d after %.1f s\n", runs[i].name, rc, (clk_mono_ms() - t0) / 1000.0);
        CHECK_MSG(rc == 1, "%s: exit %d, expected 1: %s", runs[i].name, rc, log);
        CHECK_CONTAINS(log, runs[i].expect);
        CHECK_CONTAINS(log, "cannot reach Kafka");
        check_no_secret(out[i]);
    }
}

static void test_print_config(void) {
    char *args[] = {"--print-config", NULL};
    pid_t pid = spawn(M3_BINARY_DIR "/m3rec-worker", "it_secure_print.out", "it_secure_print.err", args);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 30000, "m3rec-worker --print-config"), 0);
    const char *t = proc_slurp("it_secure_print.out");
    CHECK_CONTAINS(t, "kafka.sasl.username");   /* the settings are there, their secrets not */
    CHECK_CONTAINS(t, "kafka.sasl.password");
    check_no_secret("it_secure_print.out");
    check_no_secret("it_secure_print.err");
}

int main(void) {
    read_setup();
    test_print_config();
    test_pipeline();
    test_replay();
    test_refused();
    return 0;
}
