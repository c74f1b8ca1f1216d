/* test_worker.c - the m3rec-worker program's start-up and shutdown behaviour.
 *
 * A bad configuration stops start-up with `file:line: message` (exit 2); missing or
 * unequal topics stop it with a message naming them (exit 1); an unreachable broker is
 * reported within a bound; SIGTERM shuts it down cleanly (exit 0, report written); a
 * state directory that is locked, of an incompatible store format or of another
 * configuration is refused with a message naming it (exit 1), and left as it was, byte for
 * byte; a broker outage stops it only after worker.outage.max.ms. With --disk-full (its own CTest; root mounts a 6 MB tmpfs in a private mount
 * namespace, exit 77 where that is not permitted): a store that fills its disk stops the
 * worker with a clear message and exit 1, never an abort, and the restart with space
 * resumes exactly (every event counted and trained once). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fsutil.h"
#include "pipeline.h"
#include "proc.h"
#include "stream/kio.h"
#include "stream/learner.h"
#include "state/state.h"
#include "state/store.h"

#define WORKER M3_BINARY_DIR "/m3rec-worker"

/* Run the worker with argv (NULL-terminated, without the program), output to `log`.
 * Returns its pid. */
static pid_t start(char **args, const char *log) {
    char *argv[32] = {WORKER};
    int n = 1;
    for (; args[n - 1]; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    return proc_spawn(argv, log, log);
}

/* Run the worker to its end (at most timeout_ms); *out gets its output. Returns its exit code. */
static int run(char **args, int timeout_ms, const char **out) {
    const char *log = "test_worker.log";
    int rc = proc_wait(start(args, log), clk_mono_ms() + timeout_ms, "the worker");
    *out = proc_slurp(log);
    CHECK(*out);
    return rc;
}

static void test_bad_config(void) {
    const char *path = "test_worker_bad.properties";
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs("# a comment\nbatch.size=256\nbatch.linger.ms=soon\n", f);
    fclose(f);
    const char *out;
    char *a1[] = {"--config", (char *)path, NULL};
    CHECK_EQ_INT(run(a1, 10000, &out), 2);
    CHECK_CONTAINS(out, "test_worker_bad.properties:3: batch.linger.ms=soon");
    char *a2[] = {"--set", "model.arch=transformer9000", NULL};
    CHECK_EQ_INT(run(a2, 10000, &out), 2);
    CHECK_CONTAINS(out, "--set: ");
    CHECK_CONTAINS(out, "transformer9000");
    char *a3[] = {"--config", "no/such/file.properties", NULL};
    CHECK_EQ_INT(run(a3, 10000, &out), 2);
    CHECK_CONTAINS(out, "no/such/file.properties: No such file or directory");
    char *a4[] = {"--frobnicate", NULL};
    CHECK_EQ_INT(run(a4, 10000, &out), 2);
    CHECK_CONTAINS(out, "usage: m3rec-worker");
    char *a5[] = {"--config", M3_SOURCE_DIR "/config/worker.properties", "--print-config", NULL};
    CHECK_EQ_INT(run(a5, 10000, &out), 0);
    CHECK_CONTAINS(out, "batch.size=256\n");
    CHECK_CONTAINS(out, "kafka.bootstrap.servers=localhost:9092\n");
    /* what start-up refuses, --print-config refuses too, with the file and line */
    f = fopen(path, "w");
    CHECK(f);
    fputs("model.emb.dim=16\nmodel.upt.heads=3\n", f);
    fclose(f);
    char *a6[] = {"--config", (char *)path, "--print-config", NULL};
    CHECK_EQ_INT(run(a6, 10000, &out), 2);
    CHECK_CONTAINS(out, "test_worker_bad.properties:2: model.upt.heads 3 must divide "
                        "model.emb.dim 16\n");
    CHECK(strstr(out, "batch.size=") == NULL);
}

/* No secret reaches --print-config or a start-up error: a private key and an oauth
 * configuration print as "***", and so does the value of a property librdkafka refuses. */
static void test_secrets(void) {
    const char *out;
    char *a1[] = {"--set", "kafka.ssl.key.pem=SECRET-PEM", "--set",
                  "kafka.sasl.oauthbearer.config=principal=x extension_t=SECRET-TOKEN",
                  "--set", "kafka.sasl.username=alice", "--print-config", NULL};
    CHECK_EQ_INT(run(a1, 10000, &out), 0);
    CHECK_CONTAINS(out, "kafka.ssl.key.pem=***\n");
    CHECK_CONTAINS(out, "kafka.sasl.oauthbearer.config=***\n");
    CHECK_CONTAINS(out, "kafka.sasl.username=alice\n");
    CHECK(strstr(out, "SECRET") == NULL);
    char *a2[] = {"--set", "kafka.bootstrap.servers=127.0.0.1:1", "--set",
                  "kafka.sasl.oauthbearer.grant.type=SECRET-GRANT", NULL};
    CHECK_EQ_INT(run(a2, 30000, &out), 1);
    CHECK_CONTAINS(out, "kafka property sasl.oauthbearer.grant.type=***: ");
    CHECK(strstr(out, "SECRET") == NULL);
}

static void test_topics(void) {
    char err[512];
    const char *some[] = {"m3rec.events.home", "m3rec.events.search", "m3rec.requests"};
    kio_mock *m = kio_mock_new(4, some, 3, err, sizeof err);
    CHECK_MSG(m, "%s", err);
    char bs[256];
    snprintf(bs, sizeof bs, "kafka.bootstrap.servers=%s", kio_mock_bootstraps(m));
    const char *out;
    char *args[] = {"--set", bs, NULL};
    /* m3rec.events.product is missing */
    CHECK_EQ_INT(run(args, 30000, &out), 1);
    CHECK_CONTAINS(out, "m3rec.events.product does not exist");
    /* present, but with another partition count */
    CHECK(kio_mock_create_topic(m, "m3rec.events.product", 2, err, sizeof err) == 0);
    CHECK_EQ_INT(run(args, 30000, &out), 1);
    CHECK_CONTAINS(out, "equal partition counts");
    CHECK_CONTAINS(out, "m3rec.events.product has 2");
    kio_mock_destroy(m);
    /* inputs in order, but nowhere to publish */
    const char *inputs[] = {"m3rec.events.home", "m3rec.events.search", "m3rec.events.product",
                            "m3rec.requests"};
    m = kio_mock_new(4, inputs, 4, err, sizeof err);
    CHECK_MSG(m, "%s", err);
    snprintf(bs, sizeof bs, "kafka.bootstrap.servers=%s", kio_mock_bootstraps(m));
    CHECK_EQ_INT(run(args, 30000, &out), 1);
    CHECK_CONTAINS(out, "topic m3rec.predictions does not exist (create it first)");
    kio_mock_destroy(m);
    /* no broker at all: a clear message within the start-up bound, not a hang */
    char *none[] = {"--set", "kafka.bootstrap.servers=127.0.0.1:1", NULL};
    int64_t t0 = clk_mono_ms();
    CHECK_EQ_INT(run(none, 60000, &out), 1);
    CHECK_CONTAINS(out, "cannot reach Kafka at 127.0.0.1:1");
    CHECK(clk_mono_ms() - t0 < 30000);
}

static void test_sigterm(void) {
    const char *report = "test_worker_report.json";
    remove(report);
    char *args[] = {"--config", M3_SOURCE_DIR "/config/demo.properties",
                    "--set", "worker.exit.idle.ms=0", "--report", (char *)report, NULL};
    pid_t pid = start(args, "test_worker.log");
    /* wait until it consumes (its log says so), then ask it to stop */
    proc_wait_log("test_worker.log", "consuming", 30000);
    CHECK(kill(pid, SIGTERM) == 0);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 20000, "the worker"), 0);
    CHECK(proc_slurp(report) != NULL);
    CHECK_CONTAINS(proc_slurp(report), "\"events\"");
}

/* A store with one recognisable record, to see that a refusing worker leaves it alone. */
static void put_marker(store *s) {
    char err[256];
    store_batch *b = store_batch_new(s);
    CHECK(store_batch_put(b, STORE_EMB, "marker", 6, "kept", 4) == 0);
    CHECK_MSG(store_commit(s, b, 1, err, sizeof err) == 0, "%s", err);
    store_batch_destroy(b);
}

static void check_marker(const char *dir) {
    char err[512];
    store *s = store_open(dir, NULL, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    void *v;
    size_t n;
    CHECK_EQ_INT(store_get(s, STORE_EMB, "marker", 6, &v, &n, err, sizeof err), 1);
    CHECK(n == 4 && memcmp(v, "kept", 4) == 0);
    free(v);
    CHECK(store_close(s, 0, err, sizeof err) == 0);
}

/* Open (creating it if need be) and close the state of the default configuration with
 * `set_dir` ("store.dir=..."). */
static void open_default_state(const char *set_dir) {
    char err[1024];
    m3_cfg cfg;
    cfg_defaults(&cfg);
    CHECK(cfg_set(&cfg, set_dir, "test", 0, err, sizeof err) == 0);
    CHECK(cfg_check(&cfg, err, sizeof err) == 0);
    lrn *L = lrn_new(&cfg, err, sizeof err);
    CHECK_MSG(L, "%s", err);
    state *st = state_open(&cfg, L, "whatever", err, sizeof err);
    CHECK_MSG(st, "%s", err);
    CHECK(state_close(st, err, sizeof err) == 0);
    lrn_destroy(L);
    cfg_free(&cfg);
}

static void test_state_dir(void) {
    char err[1024], dir[512], set_dir[600];
    const char *out;
    snprintf(dir, sizeof dir, "%s/test_worker_state.%d", M3_BINARY_DIR, (int)getpid());
    snprintf(set_dir, sizeof set_dir, "store.dir=%s", dir);
    char *args[] = {"--config", M3_SOURCE_DIR "/config/demo.properties", "--set", "model.shadow=",
                    "--set", set_dir, "--set", "worker.exit.idle.ms=100",
                    "--set", "worker.max.events=1", NULL};
    /* shadows are not persisted: refused at the configuration check */
    char *shadow[] = {"--config", M3_SOURCE_DIR "/config/demo.properties", "--set", set_dir, NULL};
    CHECK_EQ_INT(run(shadow, 10000, &out), 2);
    CHECK_CONTAINS(out, "model.shadow must be empty with store.dir");

    /* locked: this process holds the store */
    store *s = store_open(dir, NULL, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    put_marker(s);
    CHECK_EQ_INT(run(args, 30000, &out), 1);
    char want[128];
    snprintf(want, sizeof want, "is locked by another process (pid %d)", (int)getpid());
    CHECK_CONTAINS(out, want);
    CHECK_CONTAINS(out, dir);
    CHECK(store_close(s, 0, err, sizeof err) == 0);
    check_marker(dir);

    /* written by an incompatible store format */
    s = store_open(dir, NULL, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    store_batch *b = store_batch_new(s);
    CHECK(store_batch_put(b, STORE_META, STORE_KEY_FORMAT, strlen(STORE_KEY_FORMAT),
                          "m3rec-store 99", 14) == 0);
    CHECK_MSG(store_commit(s, b, 1, err, sizeof err) == 0, "%s", err);
    store_batch_destroy(b);
    CHECK(store_close(s, 1, err, sizeof err) == 0);
    CHECK_EQ_INT(run(args, 30000, &out), 1);
    CHECK_CONTAINS(out, "has format \"m3rec-store 99\" but this build reads \"" STORE_FORMAT "\"");
    CHECK_CONTAINS(out, "nothing was changed");
    s = store_open(dir, NULL, err, sizeof err);
    CHECK(s == NULL);   /* still the same incompatible store: the worker changed nothing */

    /* the state of another configuration: an m3rec state, a shared_bottom worker */
    char dir2[600], set_dir2[700];
    snprintf(dir2, sizeof dir2, "%s-2", dir);
    snprintf(set_dir2, sizeof set_dir2, "store.dir=%s", dir2);
    open_default_state(set_dir2);
    char *other[] = {"--config", M3_SOURCE_DIR "/config/demo.properties", "--set", "model.shadow=",
                     "--set", "model.arch=shared_bottom", "--set", set_dir2,
                     "--set", "worker.exit.idle.ms=100", NULL};
    char *before = fs_snapshot(dir2);
    CHECK_EQ_INT(run(other, 30000, &out), 1);
    CHECK_CONTAINS(out, "holds the state of another configuration: it has model.arch=m3rec, "
                        "this worker has model.arch=shared_bottom");
    CHECK_CONTAINS(out, "its state was not changed");
    /* refused before RocksDB opened it for writing: no MANIFEST, OPTIONS or CURRENT
     * rewritten, no LOG rotated (names, sizes, times and bytes all as they were) */
    CHECK_UNCHANGED(before, dir2);
    free(before);
    /* the same configuration opens it */
    open_default_state(set_dir2);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, dir2);
    CHECK(system(cmd) == 0);
}

/* The broker goes away: the worker pauses and says so; it stops on its own only because
 * worker.outage.max.ms asks it to (exit 1, no checkpoint), within the limit plus a bound. */
static void test_outage_limit(void) {
    char err[512], bs[256];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    static pl_stream s = {.prefix = "lim", .seed = 3, .n_impressions = 2000};
    const char *topics[] = {"lim.events.home", "lim.events.search", "lim.events.product",
                            "lim.requests", "lim.predictions", "lim.dlq"};
    kio_mock *m = kio_mock_new(2, topics, 6, err, sizeof err);
    CHECK_MSG(m, "%s", err);
    kio_producer *p = pl_producer(kio_mock_bootstraps(m));
    pl_produce_stream(p, cd, &s, 0, s.n_impressions, 0);
    kio_producer_destroy(p);
    snprintf(bs, sizeof bs, "%s", kio_mock_bootstraps(m));
    char *extra[] = {"--set", "worker.outage.max.ms=3000", "--set", "metrics.progress.ms=500", NULL};
    const char *log = "test_worker_outage.log";
    pid_t pid = pl_spawn_worker(bs, &s, "lim", 0, "test_worker_outage.json", log, extra);
    proc_wait_log(log, "assigned", 30000);
    CHECK(kio_mock_set_down(m, 1, err, sizeof err) == 0);
    int64_t t0 = clk_mono_ms();
    int rc = proc_wait(pid, t0 + 30000, "the worker with worker.outage.max.ms=3000");
    const char *out = proc_slurp(log);
    CHECK_MSG(rc == 1, "exit %d:\n%s", rc, out);
    CHECK(clk_mono_ms() - t0 >= 3000);
    CHECK_CONTAINS(out, "broker unreachable for ");
    CHECK_CONTAINS(out, "(worker.outage.max.ms=3000): stopping without a checkpoint");
    kio_mock_destroy(m);
    codec_destroy(cd);
}

/* The worker's store fills a 6 MB disk: exit 1 with the message, then a restart with space
 * resumes exactly where the last checkpoint was. */
static int disk_full_main(void) {
    char mnt[600], err[1024], set_dir[700];
    snprintf(mnt, sizeof mnt, "%s/test_worker_full.%d", M3_BINARY_DIR, (int)getpid());
    rm_rf(mnt);
    CHECK(mkdir(mnt, 0755) == 0);
    if (fs_private_tmpfs(mnt, "6m", err, sizeof err) != 0) {
        printf("SKIP: a full disk is made with a 6 MB tmpfs: %s\n", err);
        rm_rf(mnt);
        return 77;
    }
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    static pl_stream s = {.prefix = "full", .seed = 17, .n_impressions = 30000};
    const char *topics[] = {"full.events.home", "full.events.search", "full.events.product",
                            "full.requests", "full.predictions", "full.dlq"};
    kio_mock *m = kio_mock_new(2, topics, 6, err, sizeof err);
    CHECK_MSG(m, "%s", err);
    kio_producer *p = pl_producer(kio_mock_bootstraps(m));
    pl_produce_stream(p, cd, &s, 0, s.n_impressions, 0);
    kio_producer_destroy(p);
    snprintf(set_dir, sizeof set_dir, "store.dir=%s/store", mnt);
    char *extra[] = {"--set", set_dir, "--set", "checkpoint.interval.ms=100",
                     "--set", "kafka.session.timeout.ms=6000",
                     "--set", "kafka.heartbeat.interval.ms=500", NULL};
    const char *log = "test_worker_full.log", *report = "test_worker_full.json";
    pid_t pid = pl_spawn_worker(kio_mock_bootstraps(m), &s, "full", 1500, report, log, extra);
    int rc = proc_wait(pid, clk_mono_ms() + 240000, "the worker on a full disk");
    const char *out = proc_slurp(log);
    CHECK_MSG(rc == 1, "exit %d (134: the RocksDB abort), log:\n%s", rc, out);
    CHECK_CONTAINS(out, "No space left on device: free space and restart");
    CHECK_CONTAINS(out, "nothing acknowledged was lost");
    CHECK(strstr(out, "Assertion") == NULL);
    const char *line = strstr(out, "checkpoint failed");
    printf("full disk: %.*s\n", line ? (int)strcspn(line, "\n") : 0, line ? line : "");
    /* space again: the restart resumes from the last checkpoint */
    fs_tmpfs_resize(mnt, "1g");
    pid = pl_spawn_worker(kio_mock_bootstraps(m), &s, "full", 1500, report, log, extra);
    rc = proc_wait(pid, clk_mono_ms() + 240000, "the worker after the disk was freed");
    CHECK_MSG(rc == 0, "exit %d, log:\n%s", rc, proc_slurp(log));
    json_node *r = pl_report(report);
    pl_check_exact(r, &s);
    json_free(r);
    kio_mock_destroy(m);
    codec_destroy(cd);
    CHECK(umount(mnt) == 0);
    rm_rf(mnt);
    printf("test_worker --disk-full: all checks passed\n");
    return 0;
}

/* worker.exit.idle.ms counts time spent polling: a worker stopped (SIGSTOP) for longer than
 * its idle limit goes on after SIGCONT and handles what came meanwhile, instead of leaving
 * at once because its clock says "no input for 4 s". */
static void test_idle_after_stall(void) {
    char err[512];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    static pl_stream s = {.prefix = "stall", .seed = 4, .n_impressions = 600};
    const char *topics[] = {"stall.events.home", "stall.events.search", "stall.events.product",
                            "stall.requests", "stall.predictions", "stall.dlq"};
    kio_mock *m = kio_mock_new(2, topics, 6, err, sizeof err);
    CHECK_MSG(m, "%s", err);
    const char *bs = kio_mock_bootstraps(m);
    const char *log = "test_worker_stall.log", *report = "test_worker_stall.json";
    remove(report);
    pid_t pid = pl_spawn_worker(bs, &s, "stall", 1500, report, log, NULL);
    proc_wait_log(log, "assigned", 30000);
    kio_producer *p = pl_producer(bs);
    pl_produce_stream(p, cd, &s, 0, 300, 0);
    usleep(1000 * 1000);   /* read while it arrives, well within the idle limit */
    CHECK(kill(pid, SIGSTOP) == 0);
    pl_produce_stream(p, cd, &s, 300, s.n_impressions, 0);
    usleep(4000 * 1000);   /* stopped for longer than worker.exit.idle.ms */
    CHECK(kill(pid, SIGCONT) == 0);
    CHECK_EQ_INT(proc_wait(pid, clk_mono_ms() + 60000, "the worker"), 0);
    json_node *r = pl_report(report);
    CHECK_EQ_INT(json_number(json_get(r, "counters.impressions"), -1), s.n_impressions);
    json_free(r);
    kio_producer_destroy(p);
    kio_mock_destroy(m);
    codec_destroy(cd);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--disk-full") == 0) return disk_full_main();
    test_state_dir();
    test_bad_config();
    test_secrets();
    test_topics();
    test_sigterm();
    test_outage_limit();
    test_idle_after_stall();
    return 0;
}
