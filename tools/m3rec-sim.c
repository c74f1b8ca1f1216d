/* m3rec-sim - the stream simulator: produce impressions, conversions and score requests
 * into the scenario topics (or a file) and write the oracle's report.
 *
 * Usage: m3rec-sim [--config FILE] [--set key=value]... [--bootstrap HOST:PORT]
 *                  [--events N] [--seed S] [--users N] [--items N] [--difficulty X]
 *                  [--noise X] [--conflict X] [--taste X] [--mix X] [--new-users X]
 *                  [--report PATH]
 *                  [--out FILE] [--create-topics PARTITIONS] [--rate MSGS_PER_SEC]
 *
 * --rate paces production in wall-clock time (0 = as fast as possible); the embedded
 * broker keeps only ~5 MB per partition, so a demo paces the stream to what the worker
 * can follow.
 * Topics and scenarios come from the same configuration as the worker's; messages are
 * keyed by the decimal user id (murmur2 partitioner, like Java clients). --out writes
 * the messages to a file instead, each as: topic, NUL, 4-byte big-endian key length,
 * key, 4-byte big-endian value length, value. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/app.h"
#include "config/cfg.h"
#include "stream/codec.h"
#include "stream/kio.h"
#include "report/metrics.h"
#include "eval/sim.h"

static void usage(void) {
    fprintf(stderr,
            "usage: m3rec-sim [--config FILE] [--set key=value]... [--bootstrap HOST:PORT]\n"
            "                 " APP_SIM_USAGE "\n"
            "                 [--report PATH]\n"
            "                 [--out FILE] [--create-topics PARTITIONS] [--rate MSGS_PER_SEC]\n");
}


int main(int argc, char **argv) {
    m3_cfg cfg;
    cfg_defaults(&cfg);
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    const char *bootstrap = NULL, *report = NULL, *out = NULL;
    int create_parts = 0;
    double rate = 0;
    char err[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int used = app_config_arg(&cfg, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-sim: %s\n", err);
            return 2;
        }
        if (used) continue;
        used = app_sim_arg(&sc, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-sim: %s\n", err);
            return 2;
        }
        if (used) continue;
        int more = i + 1 < argc;
        if (strcmp(a, "--bootstrap") == 0 && more) bootstrap = argv[++i];
        else if (strcmp(a, "--report") == 0 && more) report = argv[++i];
        else if (strcmp(a, "--out") == 0 && more) out = argv[++i];
        else if (strcmp(a, "--create-topics") == 0 && more) create_parts = atoi(argv[++i]);
        else if (strcmp(a, "--rate") == 0 && more) rate = atof(argv[++i]);
        else {
            usage();
            return 2;
        }
    }
    if (cfg_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-sim: %s\n", err);
        return 2;
    }
    app_sim_from_cfg(&sc, &cfg);
    /* Kafka properties: the kafka.* keys, with --bootstrap on top */
    kio_prop *props = calloc((size_t)cfg.n_kafka + 1, sizeof *props);
    int n_props = 0;
    for (int i = 0; i < cfg.n_kafka; i++)
        props[n_props++] = (kio_prop){cfg.kafka[i].key, cfg.kafka[i].value};
    if (bootstrap) props[n_props++] = (kio_prop){"bootstrap.servers", bootstrap};
    char topics[M3_MAX_SCEN + 3][256];
    const char *names[M3_MAX_SCEN + 3];
    for (int s = 0; s < cfg.scenarios.n; s++) {
        snprintf(topics[s], sizeof topics[s], "%s.events.%s", cfg.topic_prefix, cfg.scenarios.names[s]);
        names[s] = topics[s];
    }
    snprintf(topics[cfg.scenarios.n], sizeof topics[0], "%s.requests", cfg.topic_prefix);
    names[cfg.scenarios.n] = topics[cfg.scenarios.n];
    /* the worker's outputs, so --create-topics sets up the whole pipeline */
    snprintf(topics[cfg.scenarios.n + 1], sizeof topics[0], "%s.predictions", cfg.topic_prefix);
    snprintf(topics[cfg.scenarios.n + 2], sizeof topics[0], "%s.dlq", cfg.topic_prefix);
    names[cfg.scenarios.n + 1] = topics[cfg.scenarios.n + 1];
    names[cfg.scenarios.n + 2] = topics[cfg.scenarios.n + 2];

    codec *cd = codec_new(err, sizeof err);
    sim *s = cd ? sim_new(&sc, err, sizeof err) : NULL;
    app_oracle *orc = s ? app_oracle_new(&cfg, err, sizeof err) : NULL;
    if (!orc) {
        fprintf(stderr, "m3rec-sim: %s\n", err);
        return 1;
    }
    FILE *fout = NULL;
    kio_producer *p = NULL;
    if (out) {
        fout = fopen(out, "wb");
        if (!fout) {
            perror(out);
            return 1;
        }
    } else {
        if (create_parts > 0 &&
            kio_create_topics(props, n_props, names, cfg.scenarios.n + 3, create_parts, 30000,
                              err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-sim: %s\n", err);
            return 1;
        }
        p = kio_producer_new(props, n_props, err, sizeof err);
        if (!p) {
            fprintf(stderr, "m3rec-sim: %s\n", err);
            return 1;
        }
    }
    size_t cap = 1 << 16;
    unsigned char *buf = malloc(cap);
    m3_event ev;
    sim_truth tr;
    long long produced = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int rc = 0;
    while (buf && sim_next(s, &ev, &tr)) {
        if (ev.type == M3_EV_IMPRESSION) app_oracle_add(orc, &tr);
        int64_t uid = ev.type == M3_EV_IMPRESSION ? ev.u.imp.user_id
                    : ev.type == M3_EV_CONVERSION ? ev.u.conv.user_id : ev.u.req.user_id;
        const char *topic = ev.type == M3_EV_SCORE_REQUEST ? names[cfg.scenarios.n] : names[tr.scen];
        char reason[CODEC_REASON_MAX], key[32];
        long len = codec_encode(cd, &ev, buf, cap, reason, sizeof reason);
        if (len < 0) {
            fprintf(stderr, "m3rec-sim: encode: %s\n", reason);
            rc = 1;
            break;
        }
        int klen = snprintf(key, sizeof key, "%" PRId64, uid);
        if (fout) {
            app_write_frame(fout, topic, key, (size_t)klen, buf, (size_t)len);
        } else if (kio_produce(p, topic, key, (size_t)klen, buf, (size_t)len, NULL, 0, err,
                               sizeof err) != 0) {
            fprintf(stderr, "m3rec-sim: produce: %s\n", err);
            rc = 1;
            break;
        }
        produced++;
        if (p && (produced & 1023) == 0) kio_producer_poll(p);
        if (rate > 0 && (produced & 255) == 0) app_pace(start, produced, rate);
    }
    if (p && kio_producer_flush(p, 60000, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-sim: flush: %s\n", err);
        rc = 1;
    }
    if (fout && fclose(fout) != 0) {
        perror(out);
        rc = 1;
    }
    sim_stats st;
    sim_get_stats(s, &st);
    fprintf(stderr,
            "m3rec-sim: produced %lld messages: %lld impressions (%lld clicks), %lld conversions "
            "(%lld after the window), %lld score requests, %lld items\n",
            produced, (long long)st.impressions, (long long)st.clicks, (long long)st.conversions,
            (long long)st.late_conversions, (long long)st.requests, (long long)st.items);
    if (report && app_oracle_write(orc, report, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-sim: %s\n", err);
        rc = 1;
    }
    free(buf);
    kio_producer_destroy(p);
    app_oracle_destroy(orc);
    sim_destroy(s);
    codec_destroy(cd);
    free(props);
    cfg_free(&cfg);
    return rc;
}
