/* test_cfg.c - tests of the configuration module: defaults, shipped files, kafka
 * passthrough, --set, every error message with its file:line, check, dump, free. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/props.h"
#include "config/cfg.h"
#include "check.h"

static char errbuf[2048];

/* Write content to <build>/cfg_test_<name>.properties; returns the path (static). */
static const char *write_tmp(const char *name, const char *content) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/cfg_test_%s.properties", M3_BINARY_DIR, name);
    FILE *f = fopen(path, "w");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    fputs(content, f);
    fclose(f);
    return path;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    CHECK(s != NULL);
    CHECK_EQ_INT(fread(s, 1, (size_t)n, f), n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* Loading content must fail with exactly "path:line: msg". */
static void load_fails(const char *content, int line, const char *msg) {
    static int seq;
    char name[32], want[2048];
    snprintf(name, sizeof name, "err%d", ++seq);
    const char *path = write_tmp(name, content);
    m3_cfg c;
    cfg_defaults(&c);
    errbuf[0] = '\0';
    CHECK_EQ_INT(cfg_load(&c, path, errbuf, sizeof errbuf), -1);
    snprintf(want, sizeof want, "%s:%d: %s", path, line, msg);
    CHECK_EQ_STR(errbuf, want);
    cfg_free(&c);
}

/* Loading content must succeed and cfg_check fail with exactly "path:line: msg". */
static void check_fails(const char *content, int line, const char *msg) {
    static int seq;
    char name[32], want[2048];
    snprintf(name, sizeof name, "chk%d", ++seq);
    const char *path = write_tmp(name, content);
    m3_cfg c;
    cfg_defaults(&c);
    CHECK_MSG(cfg_load(&c, path, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    errbuf[0] = '\0';
    CHECK_EQ_INT(cfg_check(&c, errbuf, sizeof errbuf), -1);
    snprintf(want, sizeof want, "%s:%d: %s", path, line, msg);
    CHECK_EQ_STR(errbuf, want);
    cfg_free(&c);
}

static void set_ok(m3_cfg *c, const char *kv) {
    CHECK_MSG(cfg_set(c, kv, "--set", 0, errbuf, sizeof errbuf) == 0, "%s: %s", kv, errbuf);
}

static void set_fails(const char *kv, const char *msg) {
    m3_cfg c;
    cfg_defaults(&c);
    char before[sizeof c];
    memcpy(before, &c, sizeof c);
    errbuf[0] = '\0';
    CHECK_EQ_INT(cfg_set(&c, kv, "--set", 0, errbuf, sizeof errbuf), -1);
    CHECK_EQ_STR(errbuf, msg);
    CHECK_MSG(memcmp(before, &c, sizeof c) == 0, "failed set of '%s' changed the config", kv);
    cfg_free(&c);
}

static const char *defaults_dump =
    "topic.prefix=m3rec\n"
    "scenarios=home,search,product\n"
    "features.user_cat=age,gender,city,tier\n"
    "features.item_cat=category,brand,shop\n"
    "features.ctx_cat=device\n"
    "features.user_num=activity\n"
    "features.item_num=price,rating\n"
    "batch.size=256\n"
    "batch.linger.ms=20\n"
    "model.arch=m3rec\n"
    "model.shadow=\n"
    "model.emb.dim=16\n"
    "model.hidden=128,64\n"
    "model.tower.hidden=32\n"
    "model.lr.dense=0.005\n"
    "model.lr.emb=0.5\n"
    "model.acc0.emb=0.1\n"
    "model.l2.emb=1e-06\n"
    "model.clip.norm=10\n"
    "model.seed=42\n"
    "model.experts.shared=2\n"
    "model.experts.scenario=1\n"
    "model.experts.task=1\n"
    "model.gate.scale=0.1\n"
    "model.dots=true\n"
    "model.mieg=true\n"
    "model.mieg.hidden=64\n"
    "model.mieg.align=0.1\n"
    "model.item.warm=20\n"
    "model.slice.user.new=10\n"
    "model.slice.burnin.impressions=100000\n"
    "model.upt=true\n"
    "model.upt.heads=2\n"
    "model.upt.ffn=32\n"
    "model.upt.step=0.5\n"
    "model.upt.step.conv=0.5\n"
    "join.window.ms=3600000\n"
    "join.lateness.ms=300000\n"
    "join.feedback=window\n"
    "join.esdfm.elapsed.ms=0\n"
    "store.dir=\n"
    "store.memory.max_mb=1024\n"
    "store.block_cache_mb=128\n"
    "store.write_buffer_mb=64\n"
    "store.compression=true\n"
    "checkpoint.interval.ms=10000\n"
    "checkpoint.sync=true\n"
    "emb.admit.count=1\n"
    "emb.expire.ms=2592000000\n"
    "features.num.max_abs=1e+06\n"
    "features.num.clip=false\n"
    "time.max.ahead.ms=86400000\n"
    "time.max.behind.ms=604800000\n"
    "broker.embedded=false\n"
    "broker.embedded.partitions=4\n"
    "worker.exit.idle.ms=0\n"
    "worker.max.events=0\n"
    "metrics.progress.ms=5000\n"
    "worker.outage.max.ms=0\n"
    "http.listen=\n"
    "http.live.max.ms=30000\n"
    "metrics.window.ms=300000\n"
    "input.schemas.dir=\n"
    "input.format=single-object\n"
    "output.format=single-object\n"
    "registry.url=\n"
    "registry.subject.strategy=topic\n"
    "registry.timeout.ms=5000\n"
    "registry.backoff.max.ms=5000\n"
    "input.order.event_time=true\n"
    "input.order.buffer=32768\n"
    "input.order.idle.ms=2000\n"
    "input.loss.fail=false\n"
    "input.order.live.wait.ms=0\n"
    "group.sync=none\n"
    "group.sync.every=1\n"
    "group.sync.stale=0\n"
    "group.sync.wait.ms=2000\n"
    "group.sync.bits=32\n"
    "group.snapshot.interval.ms=60000\n"
    "group.changelog=false\n";

static void test_defaults(void) {
    m3_cfg c;
    cfg_defaults(&c);
    CHECK_EQ_STR(c.topic_prefix, "m3rec");
    CHECK_EQ_INT(c.scenarios.n, 3);
    CHECK_EQ_STR(c.scenarios.names[2], "product");
    CHECK_EQ_INT(c.user_cat.n, 4);
    CHECK_EQ_STR(c.user_cat.names[3], "tier");
    CHECK_EQ_INT(c.item_cat.n, 3);
    CHECK_EQ_INT(c.ctx_cat.n, 1);
    CHECK_EQ_STR(c.ctx_cat.names[0], "device");
    CHECK_EQ_INT(c.user_num.n, 1);
    CHECK_EQ_STR(c.item_num.names[1], "rating");
    CHECK_EQ_INT(c.batch_size, 256);
    CHECK_EQ_INT(c.batch_linger_ms, 20);
    CHECK_EQ_INT(c.model.arch, M3_ARCH_M3REC);
    CHECK_EQ_INT(c.n_shadow, 0);
    CHECK_EQ_INT(c.model.emb_dim, 16);
    CHECK_EQ_INT(c.model.n_hidden, 2);
    CHECK_EQ_INT(c.model.hidden[0], 128);
    CHECK_EQ_INT(c.model.hidden[1], 64);
    CHECK_EQ_INT(c.model.tower_hidden, 32);
    CHECK_CLOSE(c.model.lr_dense, 0.005, 1e-6, 0);
    CHECK_CLOSE(c.model.lr_emb, 0.5, 1e-6, 0);
    CHECK_CLOSE(c.model.l2_emb, 1e-6, 1e-6, 0);
    CHECK_CLOSE(c.model.clip_norm, 10, 0, 0);
    CHECK_EQ_INT(c.model.seed, 42);
    CHECK_EQ_INT(c.join_window_ms, 3600000);
    CHECK_EQ_INT(c.broker_embedded, 0);
    CHECK_EQ_INT(c.broker_partitions, 4);
    CHECK_EQ_INT(c.exit_idle_ms, 0);
    CHECK_EQ_INT(c.max_events, 0);
    CHECK_EQ_INT(c.progress_ms, 5000);
    CHECK_EQ_INT(c.n_kafka, 0);
    CHECK(c.kafka == NULL);
    CHECK_EQ_INT(cfg_scenario_index(&c, "search"), 1);
    CHECK_EQ_INT(cfg_scenario_index(&c, "nope"), -1);
    CHECK(cfg_kafka_get(&c, "group.id") == NULL);
    CHECK_MSG(cfg_check(&c, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    CHECK_EQ_INT(c.model.n_scen, 3);
    CHECK_EQ_INT(c.model.n_cat, 2 + 4 + 3 + 1);
    CHECK_EQ_INT(c.model.n_num, 3);
    CHECK_EQ_INT(c.model.max_batch, 512);
    char *d = cfg_dump(&c);
    CHECK_EQ_STR(d, defaults_dump);
    free(d);
    cfg_free(&c);
}

static void test_shipped_files(void) {
    m3_cfg c;
    cfg_defaults(&c);
    CHECK_MSG(cfg_load(&c, M3_SOURCE_DIR "/config/worker.properties", errbuf, sizeof errbuf) == 0,
              "%s", errbuf);
    CHECK_MSG(cfg_check(&c, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    CHECK_EQ_STR(cfg_kafka_get(&c, "bootstrap.servers"), "localhost:9092");
    CHECK_EQ_STR(cfg_kafka_get(&c, "group.id"), "m3rec");
    CHECK_EQ_STR(cfg_kafka_get(&c, "client.id"), "m3rec-worker");
    CHECK_EQ_INT(c.n_kafka, 3);
    CHECK_EQ_INT(c.broker_embedded, 0);
    /* the file spells out every default: the dump is the defaults plus the kafka keys */
    char *d = cfg_dump(&c), want[4096];
    snprintf(want, sizeof want, "%skafka.bootstrap.servers=localhost:9092\n"
             "kafka.group.id=m3rec\nkafka.client.id=m3rec-worker\n", defaults_dump);
    CHECK_EQ_STR(d, want);
    free(d);
    cfg_free(&c);

    cfg_defaults(&c);
    CHECK_MSG(cfg_load(&c, M3_SOURCE_DIR "/config/demo.properties", errbuf, sizeof errbuf) == 0,
              "%s", errbuf);
    CHECK_MSG(cfg_check(&c, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    CHECK_EQ_INT(c.broker_embedded, 1);
    CHECK_EQ_STR(cfg_kafka_get(&c, "group.id"), "m3rec-demo");
    CHECK_EQ_INT(c.n_shadow, 2);
    CHECK_EQ_INT(c.shadow[0], M3_ARCH_SHARED_BOTTOM);
    CHECK_EQ_INT(c.shadow[1], M3_ARCH_LR);
    CHECK_EQ_INT(c.model.arch, M3_ARCH_M3REC);
    CHECK_EQ_INT(c.exit_idle_ms, 5000);
    CHECK_EQ_INT(c.progress_ms, 2000);
    CHECK_EQ_INT(c.batch_size, 256);
    CHECK_EQ_INT(c.model.n_cat, 10);
    cfg_free(&c);
}

static void test_kafka_passthrough(void) {
    const char *path = write_tmp("kafka",
                                 "kafka.bootstrap.servers=a:1\n"
                                 "  kafka.group.id  =  g1  \n"
                                 "kafka.bootstrap.servers=b:2\n"
                                 "kafka.sasl.password=hunter2\n"
                                 "kafka.debug=\n");
    m3_cfg c;
    cfg_defaults(&c);
    CHECK_MSG(cfg_load(&c, path, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    CHECK_EQ_INT(c.n_kafka, 4);
    /* a later identical key replaces the value and keeps the first position */
    CHECK_EQ_STR(c.kafka[0].key, "bootstrap.servers");
    CHECK_EQ_STR(c.kafka[0].value, "b:2");
    CHECK_EQ_STR(c.kafka[1].key, "group.id");
    CHECK_EQ_STR(c.kafka[1].value, "g1");
    CHECK_EQ_STR(c.kafka[3].key, "debug");
    CHECK_EQ_STR(c.kafka[3].value, "");
    set_ok(&c, "kafka.group.id=g2");
    set_ok(&c, "kafka.linger.ms=5");
    CHECK_EQ_STR(cfg_kafka_get(&c, "group.id"), "g2");
    CHECK_EQ_STR(cfg_kafka_get(&c, "linger.ms"), "5");
    CHECK_EQ_INT(c.n_kafka, 5);
    char *d = cfg_dump(&c);
    CHECK_CONTAINS(d, "\nkafka.bootstrap.servers=b:2\nkafka.group.id=g2\n"
                      "kafka.sasl.password=***\nkafka.debug=\nkafka.linger.ms=5\n");
    CHECK(strstr(d, "hunter2") == NULL);
    free(d);
    cfg_free(&c);
    CHECK_EQ_INT(c.n_kafka, 0);
    CHECK(c.kafka == NULL);
    set_fails("kafka.=x", "--set: 'kafka.' names no librdkafka property");
}

/* Only allowlisted librdkafka properties print in clear: keys, passwords, tokens and
 * oauth settings, and any property not on the list, print as "***". */
static void test_kafka_secrets(void) {
    static const char *const hidden[][2] = {
        {"ssl.key.pem", "-----BEGIN PRIVATE KEY-----MIIEv"},
        {"sasl.oauthbearer.config", "principal=admin extension_token=tok123"},
        {"sasl.oauthbearer.client.secret", "oidcsecret"},
        {"sasl.oauthbearer.assertion.private.key.passphrase", "pp"},
        {"ssl.key.password", "keypw"},
        {"ssl.keystore.password", "storepw"},
        {"sasl.password", "hunter2"},
        {"ssl.certificate.pem", "-----BEGIN CERTIFICATE-----"},
        {"sasl.kerberos.keytab", "/etc/krb5.keytab"},
        {"some.future.property", "unknown"},
    };
    static const char *const shown[][2] = {
        {"bootstrap.servers", "b:9093"}, {"group.id", "g"}, {"client.id", "c"},
        {"security.protocol", "SASL_SSL"}, {"sasl.mechanism", "SCRAM-SHA-512"},
        {"sasl.username", "alice"}, {"ssl.ca.location", "/ca.pem"},
        {"ssl.certificate.location", "/client.pem"}, {"ssl.key.location", "/client.key"},
    };
    m3_cfg c;
    cfg_defaults(&c);
    char kv[256], line[256];
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        snprintf(kv, sizeof kv, "kafka.%s=%s", hidden[i][0], hidden[i][1]);
        set_ok(&c, kv);
    }
    for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++) {
        snprintf(kv, sizeof kv, "kafka.%s=%s", shown[i][0], shown[i][1]);
        set_ok(&c, kv);
    }
    /* the registry's basic-authentication credentials in its URL */
    set_ok(&c, "registry.url=https://reg:p@ss@registry.example:8081/apis/ccompat/v7");
    char *d = cfg_dump(&c);
    CHECK_CONTAINS(d, "\nregistry.url=https://***@registry.example:8081/apis/ccompat/v7\n");
    CHECK_MSG(strstr(d, "p@ss") == NULL && strstr(d, "reg:") == NULL, "registry credentials printed");
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        snprintf(line, sizeof line, "\nkafka.%s=***\n", hidden[i][0]);
        CHECK_CONTAINS(d, line);
        CHECK_MSG(strstr(d, hidden[i][1]) == NULL, "%s printed in clear", hidden[i][0]);
    }
    for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++) {
        snprintf(line, sizeof line, "\nkafka.%s=%s\n", shown[i][0], shown[i][1]);
        CHECK_CONTAINS(d, line);
    }
    free(d);
    cfg_free(&c);
}

static void test_set(void) {
    m3_cfg c;
    cfg_defaults(&c);
    set_ok(&c, "batch.size = 64");
    set_ok(&c, "model.arch=lr");
    set_ok(&c, "model.shadow=shared_bottom");
    set_ok(&c, "scenarios= a , b ");
    set_ok(&c, "features.ctx_cat=");
    set_ok(&c, "model.hidden=7");
    set_ok(&c, "broker.embedded=ON");
    set_ok(&c, "model.seed=18446744073709551615");
    set_ok(&c, "worker.max.events=9223372036854775807");
    set_ok(&c, "model.lr.dense=1");
    set_ok(&c, "model.clip.norm=0");
    set_ok(&c, "join.window.ms=2592000000");
    set_ok(&c, "time.max.behind.ms=2600000000");   /* >= join.window.ms + join.lateness.ms */
    CHECK_EQ_INT(c.batch_size, 64);
    CHECK_EQ_INT(c.model.arch, M3_ARCH_LR);
    CHECK_EQ_INT(c.n_shadow, 1);
    CHECK_EQ_INT(c.shadow[0], M3_ARCH_SHARED_BOTTOM);
    CHECK_EQ_INT(c.scenarios.n, 2);
    CHECK_EQ_STR(c.scenarios.names[1], "b");
    CHECK_EQ_INT(c.ctx_cat.n, 0);
    CHECK_EQ_INT(c.model.n_hidden, 1);
    CHECK_EQ_INT(c.model.hidden[0], 7);
    CHECK_EQ_INT(c.broker_embedded, 1);
    CHECK(c.model.seed == UINT64_MAX);
    CHECK(c.max_events == INT64_MAX);
    CHECK_EQ_INT(c.join_window_ms, 2592000000LL);
    CHECK_MSG(cfg_check(&c, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    CHECK_EQ_INT(c.model.max_batch, 128);
    CHECK_EQ_INT(c.model.n_scen, 2);
    CHECK_EQ_INT(c.model.n_cat, 2 + 4 + 3);
    /* every bool spelling */
    const char *on[] = { "true", "1", "yes", "on", "TRUE" }, *off[] = { "false", "0", "no", "off" };
    char kv[64];
    for (int i = 0; i < 5; i++) {
        snprintf(kv, sizeof kv, "broker.embedded=%s", on[i]);
        c.broker_embedded = 0;
        set_ok(&c, kv);
        CHECK_EQ_INT(c.broker_embedded, 1);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(kv, sizeof kv, "broker.embedded=%s", off[i]);
        c.broker_embedded = 1;
        set_ok(&c, kv);
        CHECK_EQ_INT(c.broker_embedded, 0);
    }
    /* an origin with a line number */
    CHECK_EQ_INT(cfg_set(&c, "batch.size=x", "cli", 3, errbuf, sizeof errbuf), -1);
    CHECK_EQ_STR(errbuf, "cli:3: batch.size=x is not an integer (1..4096)");
    /* --set after a file: the later one wins, and cross-key errors name the --set */
    CHECK_EQ_INT(cfg_set(&c, "model.arch=shared_bottom", "--set", 0, errbuf, sizeof errbuf), 0);
    CHECK_EQ_INT(cfg_check(&c, errbuf, sizeof errbuf), -1);
    CHECK_EQ_STR(errbuf, "--set: model.shadow lists shared_bottom, the primary model.arch");
    cfg_free(&c);
    cfg_free(NULL);

    /* errors from --set have no line, and leave the config unchanged */
    set_fails("batch.size=0", "--set: batch.size=0 is out of range (1..4096)");
    set_fails("batch.size=4097", "--set: batch.size=4097 is out of range (1..4096)");
    set_fails("batch.size", "--set: 'batch.size' is not a key=value line");
    set_fails("=3", "--set: missing key before '='");
    set_fails("batch.size=", "--set: batch.size has an empty value");
    set_fails("model.seed=-1", "--set: model.seed=-1 is not an integer (0..18446744073709551615)");
    set_fails("model.seed=18446744073709551616",
              "--set: model.seed=18446744073709551616 is out of range (0..18446744073709551615)");
    set_fails("worker.max.events=-1", "--set: worker.max.events=-1 is out of range (>=0)");
    set_fails("model.lr.dense=0", "--set: model.lr.dense=0 is out of range (>0..1)");
    set_fails("model.lr.dense=1.5", "--set: model.lr.dense=1.5 is out of range (>0..1)");
    set_fails("model.lr.dense=inf", "--set: model.lr.dense=inf is not a finite number (>0..1)");
    set_fails("model.l2.emb=-1e-9", "--set: model.l2.emb=-1e-9 is out of range (0..1)");
    set_fails("model.clip.norm=1e7", "--set: model.clip.norm=1e7 is out of range (0..1000000)");
    set_fails("join.window.ms=999", "--set: join.window.ms=999 is out of range (1000..2592000000)");
    set_fails("topic.prefix=a b", "--set: topic.prefix=a b is not a valid name "
                                  "(1..63 characters of A-Z a-z 0-9 _ . -)");
    {
        char lkv[128], want[256];
        snprintf(lkv, sizeof lkv, "topic.prefix=%064d", 0); /* 64 characters, one too many */
        snprintf(want, sizeof want, "--set: %s is not a valid name "
                 "(1..63 characters of A-Z a-z 0-9 _ . -)", lkv);
        set_fails(lkv, want);
        m3_cfg t;
        cfg_defaults(&t);
        snprintf(lkv, sizeof lkv, "topic.prefix=%063d", 0);
        set_ok(&t, lkv);
        CHECK_EQ_INT(strlen(t.topic_prefix), 63);
        cfg_free(&t);
    }
    set_fails("model.hidden=", "--set: model.hidden has an empty value");
    set_fails("model.hidden=1,2,3,4,5", "--set: model.hidden=1,2,3,4,5: more than 4 entries");
    set_fails("model.hidden=64,0", "--set: model.hidden=64,0: '0' is out of range (each 1..4096)");
    set_fails("model.hidden=64,x", "--set: model.hidden=64,x: 'x' is not an integer (each 1..4096)");
    set_fails("model.shadow=lr,lr", "--set: model.shadow=lr,lr: 'lr' is listed twice");
    set_fails("model.shadow=mmoe2",
              "--set: model.shadow=mmoe2: 'mmoe2' is not a known architecture (lr|shared_bottom|mmoe|ple|star|m3rec|m3rec_nomieg|m3rec_noupt)");
    set_fails("zzz=1", "--set: unknown key 'zzz'");
    set_fails("model_seed=1", "--set: unknown key 'model_seed' (did you mean 'model.seed'?)");
    set_fails("scenarios=a,,b", "--set: scenarios=a,,b: empty entry in the list");
    set_fails("scenarios=a,", "--set: scenarios=a,: empty entry in the list");
}

static void test_load_errors(void) {
    load_fails("batch.size=8\nbatch.sise=8\n", 2,
               "unknown key 'batch.sise' (did you mean 'batch.size'?)");
    load_fails("batch.size=8\nmodel.upt.beta=0.2\n", 2,
               "'model.upt.beta' is no longer a key: replaced by model.upt.step, a different rule: "
               "UPT's preference now moves by the model's surprise on every impression "
               "(docs/configuration.md)");
    /* the burn-in counted training steps once: an old file stops at its line */
    load_fails("batch.size=8\nmodel.slice.burnin=4000\n", 2,
               "'model.slice.burnin' is no longer a key: it counted training steps; "
               "model.slice.burnin.impressions counts impressions (steps x batch.size: the old "
               "default 4000 x 256 = 1024000; docs/configuration.md)");
    load_fails("# c\nbatch.size=abc\n", 2, "batch.size=abc is not an integer (1..4096)");
    load_fails("batch.size=12x\n", 1, "batch.size=12x is not an integer (1..4096)");
    load_fails("\n\n! c\nbatch.size=0\n", 4, "batch.size=0 is out of range (1..4096)");
    load_fails("batch.size=4097\n", 1, "batch.size=4097 is out of range (1..4096)");
    load_fails("batch.size=99999999999999999999\n", 1,
               "batch.size=99999999999999999999 is out of range (1..4096)");
    load_fails("broker.embedded=maybe\n", 1,
               "broker.embedded=maybe is not a boolean (true/false, yes/no, on/off, 1/0)");
    load_fails("model.lr.emb=fast\n", 1, "model.lr.emb=fast is not a finite number (>0..10)");
    load_fails("model.lr.emb=nan\n", 1, "model.lr.emb=nan is not a finite number (>0..10)");
    load_fails("model.lr.emb=0.1x\n", 1, "model.lr.emb=0.1x is not a finite number (>0..10)");
    load_fails("scenarios=home,se arch\n", 1,
               "scenarios=home,se arch: 'se arch' is not a valid name "
               "(characters A-Z a-z 0-9 _ . -)");
    load_fails("features.user_cat=age,city,age\n", 1,
               "features.user_cat=age,city,age: 'age' is listed twice");
    load_fails("features.item_num=price,abcdefghijklmnopqrstuvwxyz012345\n", 1,
               "features.item_num=price,abcdefghijklmnopqrstuvwxyz012345: "
               "'abcdefghijklmnopqrstuvwxyz012345' is too long (at most 31 characters)");
    load_fails("topic.prefix=m3rec\nbatch.size 8\n", 2, "'batch.size 8' is not a key=value line");
    load_fails("model.arch=mmoe2\n", 1,
               "model.arch=mmoe2 is not a known architecture (lr|shared_bottom|mmoe|ple|star|m3rec|m3rec_nomieg|m3rec_noupt)");
    load_fails("model.arch=\n", 1, "model.arch has an empty value");
    /* 31 characters is the longest name */
    const char *path = write_tmp("long31", "features.item_num=abcdefghijklmnopqrstuvwxyz01234\n");
    m3_cfg c;
    cfg_defaults(&c);
    CHECK_MSG(cfg_load(&c, path, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    CHECK_EQ_STR(c.item_num.names[0], "abcdefghijklmnopqrstuvwxyz01234");
    cfg_free(&c);
    /* 33 entries is one too many */
    char big[512] = "scenarios=";
    for (int i = 0; i < 33; i++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "%ss%d", i ? "," : "", i);
    char want[600];
    snprintf(want, sizeof want, "%s: more than 32 entries", big);
    strcat(big, "\n");
    load_fails(big, 1, want);
    /* an unreadable file */
    const char *missing = M3_BINARY_DIR "/cfg_test_does_not_exist.properties";
    cfg_defaults(&c);
    CHECK_EQ_INT(cfg_load(&c, missing, errbuf, sizeof errbuf), -1);
    CHECK_EQ_STR(errbuf, M3_BINARY_DIR "/cfg_test_does_not_exist.properties: "
                         "No such file or directory");
    cfg_free(&c);
}

/* Write n bytes of content (NULs included) to <build>/cfg_test_<name>.properties. */
static const char *write_bytes(const char *name, const char *content, size_t n) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/cfg_test_%s.properties", M3_BINARY_DIR, name);
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    CHECK_EQ_INT(fwrite(content, 1, n, f), n);
    fclose(f);
    return path;
}

static void load_bytes_fails(const char *name, const char *content, size_t n, const char *msg) {
    const char *path = write_bytes(name, content, n);
    char want[2048];
    snprintf(want, sizeof want, "%s%s", path, msg);
    m3_cfg c;
    cfg_defaults(&c);
    errbuf[0] = '\0';
    CHECK_EQ_INT(cfg_load(&c, path, errbuf, sizeof errbuf), -1);
    CHECK_EQ_STR(errbuf, want);
    cfg_free(&c);
}

/* A line over PROPS_LINE_MAX bytes, a NUL byte, a file over PROPS_FILE_MAX bytes: each
 * refused with where it is, after reading no more than the limit. */
static void test_load_limits(void) {
    static const char nul[] = "batch.size=8\nbatch.size=16\0garbage\n";
    load_bytes_fails("nul", nul, sizeof nul - 1, ":2: NUL byte at column 14");
    size_t n = PROPS_LINE_MAX + 1;   /* the line and its newline */
    char *text = malloc(n + 2);
    CHECK(text != NULL);
    memset(text, 'x', n + 2);
    text[0] = '#';
    text[1] = ' ';
    text[n - 1] = '\n';   /* a comment line of PROPS_LINE_MAX bytes loads */
    const char *path = write_bytes("line_max", text, n);
    m3_cfg c;
    cfg_defaults(&c);
    CHECK_MSG(cfg_load(&c, path, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    cfg_free(&c);
    text[n - 1] = 'x';     /* one byte more does not */
    text[n] = '\n';
    load_bytes_fails("line_long", text, n + 1, ":1: line longer than 65536 bytes");
    free(text);
    /* comment lines of 64 bytes past 1 MiB */
    size_t big = PROPS_FILE_MAX + 64;
    text = malloc(big);
    CHECK(text != NULL);
    for (size_t i = 0; i < big; i++) text[i] = i % 64 == 63 ? '\n' : i % 64 ? 'c' : '#';
    char want[128];
    snprintf(want, sizeof want, ": larger than 1048576 bytes (line %d)", PROPS_FILE_MAX / 64 + 1);
    load_bytes_fails("big", text, big, want);
    free(text);
    /* an endless device: refused at its first byte, not read to the end */
    cfg_defaults(&c);
    CHECK_EQ_INT(cfg_load(&c, "/dev/zero", errbuf, sizeof errbuf), -1);
    CHECK_EQ_STR(errbuf, "/dev/zero:1: NUL byte at column 1");
    cfg_free(&c);
}

static void test_check_errors(void) {
    /* issue 16: the changelog restores into a local store */
    check_fails("batch.size=8\ngroup.changelog=true\n", 2,
                "group.changelog=true needs store.dir (the local store is the working copy the "
                "changelog restores into)");
    /* registry framing (issue 19): known names, and a registry to resolve ids at */
    check_fails("batch.size=8\ninput.format=confluent\n", 2,
                "input.format must be single-object, registry or auto");
    check_fails("output.format=auto\n", 1, "output.format must be single-object or registry");
    check_fails("input.format=single\n", 1, "input.format must be single-object, registry or auto");
    check_fails("registry.subject.strategy=TopicNameStrategy\n", 1,
                "registry.subject.strategy must be topic, record or topic-record");
    check_fails("batch.size=8\noutput.format=registry\n", 2,
                "registry framing needs registry.url (the schema registry's Confluent-compatible API)");
    check_fails("registry.url=localhost:8080\ninput.format=registry\n", 1,
                "registry.url must start with http:// or https://");
    check_fails("batch.size=8\nmodel.shadow=lr,m3rec\n", 2,
                "model.shadow lists m3rec, the primary model.arch");
    check_fails("model.shadow=lr\nmodel.arch=lr\nbatch.size=8\n", 2,
                "model.shadow lists lr, the primary model.arch");
    check_fails("topic.prefix=x\nscenarios=\n", 2,
                "scenarios is empty: at least one scenario is needed");
    check_fails("scenarios=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\n", 1,
                "17 scenarios, at most 16 are supported");
    /* the engine's checks, with the file:line of the last key they name */
    check_fails("model.emb.dim=16\nbatch.size=8\nmodel.upt.heads=3\n", 3,
                "model.upt.heads 3 must divide model.emb.dim 16");
    check_fails("model.upt.heads=4\n# c\nmodel.emb.dim=18\nbatch.size=8\n", 3,
                "model.upt.heads 4 must divide model.emb.dim 18");
    check_fails("model.upt.heads=3\nmodel.arch=lr\nmodel.shadow=m3rec\nbatch.size=8\n", 3,
                "model.shadow m3rec: model.upt.heads 3 must divide model.emb.dim 16");
    check_fails("model.experts.shared=0\nmodel.experts.scenario=0\nmodel.experts.task=0\n", 3,
                "model.experts.shared 0, model.experts.scenario 0, model.experts.task 0: need "
                ">= 0 each, >= 1 expert per example, <= 32 per example and <= 64 in all (with "
                "every scenario's)");
    check_fails("features.item_num=\nfeatures.item_cat=\nbatch.size=8\n", 2,
                "model.mieg needs item features (features.item_cat, features.item_num): "
                "item_cat 6+0 of 7 slots, item_num 1+0 of 1");
    check_fails("model.emb.dim=128\n", 1,
                "the UPT snapshots of a pending row take 1540 bytes, more than 1024 (4 x "
                "model.emb.dim 128 x 3 scenarios for each m3rec model): a smaller "
                "model.emb.dim, fewer scenarios or fewer m3rec models in model.shadow");
    check_fails("model.emb.dim=48\nmodel.arch=m3rec_noupt\nmodel.shadow=m3rec,m3rec_nomieg\n", 3,
                "the UPT snapshots of a pending row take 1160 bytes, more than 1024 (4 x "
                "model.emb.dim 48 x 3 scenarios for each m3rec model): a smaller "
                "model.emb.dim, fewer scenarios or fewer m3rec models in model.shadow");
    check_fails("batch.size=8\njoin.feedback=dfm\n", 2,
                "join.feedback=dfm: expected window, fnw, defer or esdfm");
    check_fails("join.window.ms=86400000\njoin.esdfm.elapsed.ms=86400001\n", 2,
                "join.esdfm.elapsed.ms=86400001 is above join.window.ms=86400000: a click "
                "would settle before its fake negative");
    check_fails("batch.size=8\ngroup.sync=average\n", 2,
                "group.sync must be none, sum, scaled, avg, mixed or grad");
    check_fails("group.sync=grad\ngroup.sync.stale=1\n", 2,
                "group.sync=grad takes synchronous rounds: group.sync.stale must be 0");
    check_fails("group.sync=grad\ngroup.sync.bits=24\n", 2, "group.sync.bits must be 16 or 32");
    check_fails("group.sync=sum\nmodel.shadow=lr\n", 2,
                "group.sync shares the primary model only: model.shadow must be empty "
                "(compare architectures with m3rec-offline --group)");
    check_fails("time.max.behind.ms=3600000\njoin.lateness.ms=1000\n", 2,
                "time.max.behind.ms=3600000 is below join.window.ms + join.lateness.ms = "
                "3601000: a conversion that can still join would be refused (raise it, or 0 = "
                "no check)");
    /* 2 ids + 32 + 31 + 2 = 67 slots: the error names the later of the features lines */
    char text[2048] = "features.user_cat=", line2[1024] = "features.item_cat=";
    for (int i = 0; i < 32; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "%su%d", i ? "," : "", i);
    for (int i = 0; i < 31; i++)
        snprintf(line2 + strlen(line2), sizeof line2 - strlen(line2), "%si%d", i ? "," : "", i);
    strcat(text, "\n# comment\n");
    strcat(text, line2);
    strcat(text, "\n");
    check_fails(text, 3, "too many categorical slots: 2 ids + 32 user_cat + 31 item_cat + "
                         "1 ctx_cat = 66, at most 64");
    /* with fewer item fields it fits exactly: 2 + 32 + 29 + 1 = 64 */
    m3_cfg c;
    cfg_defaults(&c);
    line2[0] = '\0';
    strcpy(line2, "features.item_cat=");
    for (int i = 0; i < 29; i++)
        snprintf(line2 + strlen(line2), sizeof line2 - strlen(line2), "%si%d", i ? "," : "", i);
    set_ok(&c, line2);
    strcpy(line2, "features.user_cat=");
    for (int i = 0; i < 32; i++)
        snprintf(line2 + strlen(line2), sizeof line2 - strlen(line2), "%su%d", i ? "," : "", i);
    set_ok(&c, line2);
    CHECK_MSG(cfg_check(&c, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    CHECK_EQ_INT(c.model.n_cat, M3_MAX_CAT);
    /* and one more does not */
    set_ok(&c, "features.ctx_cat=hour,device");
    CHECK_EQ_INT(cfg_check(&c, errbuf, sizeof errbuf), -1);
    CHECK_EQ_STR(errbuf, "--set: too many categorical slots: 2 ids + 32 user_cat + 29 item_cat"
                         " + 2 ctx_cat = 65, at most 64");
    cfg_free(&c);
}

/* A dump reloads into the same configuration. */
static void test_dump_roundtrip(void) {
    m3_cfg c;
    cfg_defaults(&c);
    CHECK_MSG(cfg_load(&c, M3_SOURCE_DIR "/config/demo.properties", errbuf, sizeof errbuf) == 0,
              "%s", errbuf);
    set_ok(&c, "model.lr.dense=0.0003");
    set_ok(&c, "model.hidden=256,128,64");
    set_ok(&c, "model.seed=12345678901234567890");
    char *d1 = cfg_dump(&c);
    CHECK(d1 != NULL);
    CHECK_CONTAINS(d1, "\nmodel.shadow=shared_bottom,lr\n");
    CHECK_CONTAINS(d1, "\nbroker.embedded=true\n");
    CHECK_CONTAINS(d1, "\nmodel.lr.dense=0.0003\n");
    CHECK_CONTAINS(d1, "\nmodel.hidden=256,128,64\n");
    CHECK_CONTAINS(d1, "\nmodel.seed=12345678901234567890\n");
    CHECK_CONTAINS(d1, "\nkafka.group.id=m3rec-demo\n");
    const char *path = write_tmp("dump", d1);
    m3_cfg c2;
    cfg_defaults(&c2);
    CHECK_MSG(cfg_load(&c2, path, errbuf, sizeof errbuf) == 0, "%s", errbuf);
    char *d2 = cfg_dump(&c2);
    CHECK_EQ_STR(d2, d1);
    free(d1);
    free(d2);
    cfg_free(&c);
    cfg_free(&c2);
}

/* Every known key (the dump lists them all) is documented and in worker.properties. */
static void test_documented(void) {
    m3_cfg c;
    cfg_defaults(&c);
    char *d = cfg_dump(&c);
    char *doc = read_all(M3_SOURCE_DIR "/docs/configuration.md");
    char *props = read_all(M3_SOURCE_DIR "/config/worker.properties");
    int n = 0;
    for (char *line = strtok(d, "\n"); line; line = strtok(NULL, "\n")) {
        char key[128], pat[160];
        size_t klen = strcspn(line, "=");
        CHECK(klen < sizeof key);
        memcpy(key, line, klen);
        key[klen] = '\0';
        snprintf(pat, sizeof pat, "`%s`", key);
        CHECK_CONTAINS(doc, pat);
        snprintf(pat, sizeof pat, "\n%s=", key);
        CHECK_CONTAINS(props, pat);
        n++;
    }
    CHECK_EQ_INT(n, 81);
    char *help = cfg_help();
    CHECK_CONTAINS(help, "batch.size                   impressions per minibatch "
                         "(predict, then train) (1..4096; default 256)\n");
    CHECK_CONTAINS(help, "(1..4 of 1..4096; default 128,64)\n");
    CHECK_CONTAINS(help, "(lr|shared_bottom|mmoe|ple|star|m3rec|m3rec_nomieg|m3rec_noupt, list; default empty)\n");
    CHECK_CONTAINS(help, "\nkafka.<property>");
    free(help);
    free(d);
    free(doc);
    free(props);
    cfg_free(&c);
}

/* One set of model defaults: the worker's (this key table) and the engine's
 * (m3_model_cfg_defaults, what tools and tests start from) are the same in every field. */
static void test_model_defaults_agree(void) {
    m3_cfg c;
    cfg_defaults(&c);
    m3_model_cfg e;
    m3_model_cfg_defaults(&e);
    const m3_model_cfg *w = &c.model;
    CHECK_EQ_STR(m3_arch_name(w->arch), m3_arch_name(e.arch));
    CHECK_EQ_INT(w->n_scen, e.n_scen);
    CHECK_EQ_INT(w->n_cat, e.n_cat);
    CHECK_EQ_INT(w->n_num, e.n_num);
    CHECK_EQ_INT(w->emb_dim, e.emb_dim);
    CHECK_EQ_INT(w->n_hidden, e.n_hidden);
    for (int l = 0; l < M3_MAX_LAYERS; l++) CHECK_EQ_INT(w->hidden[l], e.hidden[l]);
    CHECK_EQ_INT(w->tower_hidden, e.tower_hidden);
    CHECK_EQ_INT(w->max_batch, e.max_batch);
    CHECK_CLOSE((double)w->lr_dense, (double)e.lr_dense, 0, 0);
    CHECK_CLOSE((double)w->lr_emb, (double)e.lr_emb, 0, 0);
    CHECK_CLOSE((double)w->acc0_emb, (double)e.acc0_emb, 0, 0);
    CHECK_CLOSE((double)w->l2_emb, (double)e.l2_emb, 0, 0);
    CHECK_CLOSE((double)w->clip_norm, (double)e.clip_norm, 0, 0);
    CHECK_EQ_INT(w->seed == e.seed, 1);
    CHECK_EQ_INT(w->n_exp_shared, e.n_exp_shared);
    CHECK_EQ_INT(w->n_exp_scen, e.n_exp_scen);
    CHECK_EQ_INT(w->n_exp_task, e.n_exp_task);
    CHECK_CLOSE((double)w->gate_scale, (double)e.gate_scale, 0, 0);
    CHECK_EQ_INT(w->mieg, e.mieg);
    CHECK_EQ_INT(w->upt, e.upt);
    CHECK_EQ_INT(w->dots, e.dots);
    CHECK_EQ_INT(w->item_warm, e.item_warm);
    CHECK_EQ_INT(w->slice_user_new, e.slice_user_new);
    CHECK_EQ_INT(w->slice_burnin, e.slice_burnin);
    CHECK_EQ_INT(w->mieg_hidden, e.mieg_hidden);
    CHECK_CLOSE((double)w->mieg_align, (double)e.mieg_align, 0, 0);
    CHECK_EQ_INT(w->upt_heads, e.upt_heads);
    CHECK_EQ_INT(w->upt_ffn, e.upt_ffn);
    CHECK_CLOSE((double)w->upt_step, (double)e.upt_step, 0, 0);
    CHECK_CLOSE((double)w->upt_step_conv, (double)e.upt_step_conv, 0, 0);
    CHECK_EQ_INT(w->item_cat_from, e.item_cat_from);
    CHECK_EQ_INT(w->item_cat_n, e.item_cat_n);
    CHECK_EQ_INT(w->item_num_from, e.item_num_from);
    CHECK_EQ_INT(w->item_num_n, e.item_num_n);
    cfg_free(&c);
}

int main(void) {
    test_defaults();
    test_model_defaults_agree();
    test_shipped_files();
    test_kafka_passthrough();
    test_kafka_secrets();
    test_set();
    test_load_errors();
    test_load_limits();
    test_check_errors();
    test_dump_roundtrip();
    test_documented();
    printf("test_cfg: all checks passed\n");
    return 0;
}
