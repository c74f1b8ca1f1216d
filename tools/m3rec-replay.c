/* m3rec-replay - replay a public dataset (Ali-CCP, AliExpress) as Impression and
 * Conversion events into the scenario topics (or a file), in event-time order.
 *
 * Usage: m3rec-replay --mapping FILE [--map key=value]... [--config FILE] [--set key=value]...
 *                     [--bootstrap HOST:PORT] [--create-topics PARTITIONS] [--out FILE]
 *                     [--check] [--skip-bad] [--max-rows N] [--conversion-delay-ms MS]
 *                     [--rate MSGS_PER_SEC] [--print-worker-config] DATA_FILE...
 *
 * The mapping (config/replay-*.properties, docs/replay.md) says how columns become
 * events; --map overrides one of its keys after the files. --config/--set take the
 * worker's configuration, like m3rec-sim: its kafka.* keys reach the producer, and,
 * given --config, the replay warns when that worker would not consume a replayed
 * scenario or read a mapped feature. Messages are keyed by the decimal user id (murmur2 partitioner, like Java
 * clients); --out writes them to a file instead in m3rec-sim's format (topic, NUL,
 * 4-byte big-endian key length, key, 4-byte big-endian value length, value); --check
 * only parses and counts. A bad row stops the replay with "path:line: message" and
 * exit code 1 (the rows before it are already produced: run --check first), unless
 * --skip-bad counts and skips it. Exit codes: 0 done, 1 data or Kafka error, 2 usage,
 * mapping or configuration error. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/app.h"
#include "config/cfg.h"
#include "stream/codec.h"
#include "stream/kio.h"
#include "eval/replay.h"

#define MAX_ARGS 256

static void usage(void) {
    fprintf(stderr,
            "usage: m3rec-replay --mapping FILE [--map key=value]... [--config FILE] [--set key=value]...\n"
            "                    [--bootstrap HOST:PORT] [--create-topics PARTITIONS] [--out FILE]\n"
            "                    [--check] [--skip-bad] [--max-rows N] [--conversion-delay-ms MS]\n"
            "                    [--rate MSGS_PER_SEC] [--print-worker-config] DATA_FILE...\n"
            "  --mapping FILE          how columns become events (config/replay-*.properties)\n"
            "  --map key=value         override one mapping key (after the mapping files)\n"
            "  --config, --set         the worker's configuration: kafka.* keys, and a check that\n"
            "                          the worker consumes what is replayed\n"
            "  --bootstrap HOST:PORT   Kafka to produce to (or kafka.bootstrap.servers)\n"
            "  --create-topics N       create the scenario topics, <prefix>.requests, .predictions\n"
            "                          and .dlq with N partitions first\n"
            "  --out FILE              write the messages to FILE instead (m3rec-sim's format)\n"
            "  --check                 parse and count only\n"
            "  --skip-bad              skip bad rows (counted, the first reasons printed)\n"
            "  --max-rows N            stop after N data rows\n"
            "  --conversion-delay-ms   = --map conversion.delay.ms=MS\n"
            "  --rate R                pace production at R messages per wall-clock second\n"
            "  --print-worker-config   print the worker settings this mapping needs, and exit\n");
}


/* "2026-01-01T00:00:00.000Z" */
static const char *iso(int64_t ms, char *buf, size_t n) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[32];
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03dZ", s, (int)(ms % 1000));
    return buf;
}

static void summary(const rpl_stats *st, const char *prefix, int n_files, const char *mode,
                    long long messages, int64_t next_start_ms) {
    printf("m3rec-replay: %" PRId64 " rows from %d file%s: %" PRId64 " impressions (%" PRId64
           " clicks), %" PRId64 " conversions, %" PRId64 " bad rows skipped; %s %lld messages\n",
           st->rows, n_files, n_files == 1 ? "" : "s", st->impressions, st->clicks, st->conversions,
           st->bad, mode, messages);
    for (int s = 0; s < st->n_scen; s++)
        printf("m3rec-replay: scenario %s: %" PRId64 " impressions, %" PRId64 " clicks, %" PRId64
               " conversions -> %s.events.%s\n", st->scen[s], st->scen_impressions[s],
               st->scen_clicks[s], st->scen_conversions[s], prefix, st->scen[s]);
    if (st->impressions + st->conversions > 0) {
        char a[40], b[40];
        printf("m3rec-replay: event time %s .. %s; to continue the clock in another run: "
               "--map time.start.ms=%" PRId64 "\n", iso(st->first_ts_ms, a, sizeof a),
               iso(st->last_ts_ms, b, sizeof b), next_start_ms);
    }
    if (st->bad) {
        printf("m3rec-replay: skipped %" PRId64 " bad rows; the first %d:\n", st->bad, st->n_reasons);
        for (int i = 0; i < st->n_reasons; i++) printf("  %s\n", st->reasons[i]);
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    m3_cfg cfg;
    cfg_defaults(&cfg);
    const char *mappings[MAX_ARGS], *overrides[MAX_ARGS], *files[MAX_ARGS];
    int n_mappings = 0, n_overrides = 0, n_files = 0, have_cfg = 0, have_cfg_file = 0;
    const char *bootstrap = NULL, *out = NULL;
    int create_parts = 0, check = 0, print_worker = 0;
    rpl_opts opts = {0};
    double rate = 0;
    char err[1024], delay_kv[64];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int used = app_config_arg(&cfg, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-replay: %s\n", err);
            return 2;
        }
        if (used) {
            have_cfg = 1;
            /* compare with the worker only when its configuration file is given: --set
             * alone (e.g. kafka.* keys) leaves the other keys at their defaults */
            if (strcmp(a, "--config") == 0) have_cfg_file = 1;
            continue;
        }
        int more = i + 1 < argc;
        if (a[0] != '-') {
            if (n_files == MAX_ARGS) {
                fprintf(stderr, "m3rec-replay: more than %d data files\n", MAX_ARGS);
                return 2;
            }
            files[n_files++] = a;
        } else if (strcmp(a, "--mapping") == 0 && more && n_mappings < MAX_ARGS) mappings[n_mappings++] = argv[++i];
        else if (strcmp(a, "--map") == 0 && more && n_overrides < MAX_ARGS) overrides[n_overrides++] = argv[++i];
        else if (strcmp(a, "--bootstrap") == 0 && more) bootstrap = argv[++i];
        else if (strcmp(a, "--out") == 0 && more) out = argv[++i];
        else if (strcmp(a, "--create-topics") == 0 && more) create_parts = atoi(argv[++i]);
        else if (strcmp(a, "--rate") == 0 && more) rate = atof(argv[++i]);
        else if (strcmp(a, "--max-rows") == 0 && more) opts.max_rows = atoll(argv[++i]);
        else if (strcmp(a, "--conversion-delay-ms") == 0 && more && n_overrides < MAX_ARGS) {
            snprintf(delay_kv, sizeof delay_kv, "conversion.delay.ms=%s", argv[++i]);
            overrides[n_overrides++] = delay_kv;
        } else if (strcmp(a, "--check") == 0) check = 1;
        else if (strcmp(a, "--skip-bad") == 0) opts.skip_bad = 1;
        else if (strcmp(a, "--print-worker-config") == 0) print_worker = 1;
        else {
            usage();
            return 2;
        }
    }
    if (n_mappings == 0) {
        fprintf(stderr, "m3rec-replay: --mapping FILE is required (see config/replay-*.properties)\n");
        usage();
        return 2;
    }
    rpl_map *map = rpl_map_new();
    if (!map) {
        fprintf(stderr, "m3rec-replay: out of memory\n");
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n_mappings && rc == 0; i++) rc = rpl_map_load(map, mappings[i], err, sizeof err);
    for (int i = 0; i < n_overrides && rc == 0; i++) rc = rpl_map_set(map, overrides[i], "--map", 0, err, sizeof err);
    if (rc == 0) rc = rpl_map_check(map, err, sizeof err);
    if (rc == 0 && have_cfg) rc = cfg_check(&cfg, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "m3rec-replay: %s\n", err);
        rpl_map_destroy(map);
        cfg_free(&cfg);
        return 2;
    }
    if (print_worker) {
        char *s = rpl_map_worker_settings(map);
        fputs(s ? s : "", stdout);
        free(s);
        rpl_map_destroy(map);
        cfg_free(&cfg);
        return s ? 0 : 1;
    }
    if (have_cfg_file) {
        static char warn[8192];
        if (rpl_map_compare_worker(map, &cfg, warn, sizeof warn) > 0) {
            for (char *save = NULL, *l = strtok_r(warn, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                fprintf(stderr, "m3rec-replay: warning: %s\n", l);
            fprintf(stderr, "m3rec-replay: warning: see --print-worker-config for the settings this mapping needs\n");
        }
    }
    if (n_files == 0) {
        fprintf(stderr, "m3rec-replay: no data files given\n");
        usage();
        rpl_map_destroy(map);
        cfg_free(&cfg);
        return 2;
    }
    /* Kafka properties: the kafka.* keys, with --bootstrap on top */
    kio_prop *props = calloc((size_t)cfg.n_kafka + 1, sizeof *props);
    int n_props = 0;
    for (int i = 0; props && i < cfg.n_kafka; i++)
        props[n_props++] = (kio_prop){cfg.kafka[i].key, cfg.kafka[i].value};
    if (props && bootstrap) props[n_props++] = (kio_prop){"bootstrap.servers", bootstrap};
    if (!check && !out && !bootstrap && !cfg_kafka_get(&cfg, "bootstrap.servers")) {
        fprintf(stderr, "m3rec-replay: give --bootstrap HOST:PORT (or kafka.bootstrap.servers), --out FILE or --check\n");
        free(props);
        rpl_map_destroy(map);
        cfg_free(&cfg);
        return 2;
    }
    const char *prefix = rpl_map_prefix(map);
    const char *scen[RPL_MAX_SCEN];
    int n_scen = rpl_map_scenarios(map, scen);
    /* the events topics, then what else the worker needs: <prefix>.requests (the same
     * partition count), .predictions and .dlq (the worker produces to them) */
    char topics[RPL_MAX_SCEN + 3][256];
    const char *names[RPL_MAX_SCEN + 3];
    for (int s = 0; s < n_scen; s++) snprintf(topics[s], sizeof topics[s], "%s.events.%s", prefix, scen[s]);
    snprintf(topics[n_scen], sizeof topics[0], "%s.requests", prefix);
    snprintf(topics[n_scen + 1], sizeof topics[0], "%s.predictions", prefix);
    snprintf(topics[n_scen + 2], sizeof topics[0], "%s.dlq", prefix);
    for (int s = 0; s < n_scen + 3; s++) names[s] = topics[s];

    codec *cd = codec_new(err, sizeof err);
    rpl_replay *r = cd && props ? rpl_new(map, files, n_files, &opts, err, sizeof err) : NULL;
    FILE *fout = NULL;
    kio_producer *p = NULL;
    if (!r) {
        fprintf(stderr, "m3rec-replay: %s\n", props ? err : "out of memory");
        rc = 1;
    } else if (check) {
        /* parse only */
    } else if (out) {
        fout = fopen(out, "wb");
        if (!fout) {
            perror(out);
            rc = 1;
        }
    } else {
        if (create_parts > 0 &&
            kio_create_topics(props, n_props, names, n_scen + 3, create_parts, 30000, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-replay: %s\n", err);
            rc = 1;
        } else if (!(p = kio_producer_new(props, n_props, err, sizeof err))) {
            fprintf(stderr, "m3rec-replay: %s\n", err);
            rc = 1;
        }
    }
    size_t cap = 1 << 16;
    unsigned char *buf = malloc(cap);
    static m3_event ev;
    long long messages = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (rc == 0 && buf) {
        int got = rpl_next(r, &ev, err, sizeof err);
        if (got < 0) {
            fprintf(stderr, "m3rec-replay: %s\n", err);
            rc = 1;
            break;
        }
        if (got == 0) break;
        if (check) {
            messages++;
            continue;
        }
        const char *scenario = ev.type == M3_EV_IMPRESSION ? ev.u.imp.scenario : ev.u.conv.scenario;
        int64_t uid = ev.type == M3_EV_IMPRESSION ? ev.u.imp.user_id : ev.u.conv.user_id;
        int t = 0;
        while (t < n_scen && strcmp(scen[t], scenario) != 0) t++;
        char reason[CODEC_REASON_MAX], key[32];
        long len = codec_encode(cd, &ev, buf, cap, reason, sizeof reason);
        if (len < 0 || t == n_scen) {
            fprintf(stderr, "m3rec-replay: encode: %s\n", len < 0 ? reason : "scenario not in the mapping");
            rc = 1;
            break;
        }
        int klen = snprintf(key, sizeof key, "%" PRId64, uid);
        if (fout) {
            app_write_frame(fout, names[t], key, (size_t)klen, buf, (size_t)len);
        } else if (kio_produce(p, names[t], key, (size_t)klen, buf, (size_t)len, NULL, 0, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-replay: produce: %s\n", err);
            rc = 1;
            break;
        }
        messages++;
        if (p && (messages & 1023) == 0) kio_producer_poll(p);
        if (rate > 0 && (rate < 1000 || (messages & 255) == 0)) app_pace(start, messages, rate);
    }
    if (!buf) {
        fprintf(stderr, "m3rec-replay: out of memory\n");
        rc = 1;
    }
    if (p && kio_producer_flush(p, 60000, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-replay: flush: %s\n", err);
        rc = 1;
    }
    if (fout && fclose(fout) != 0) {
        perror(out);
        rc = 1;
    }
    if (r) {
        rpl_stats st;
        rpl_get_stats(r, &st);
        summary(&st, prefix, n_files, check ? "checked" : out ? "wrote" : "produced", messages, st.next_row_ts_ms);
        if (rc == 0 && st.impressions == 0 && st.bad > 0) {
            fprintf(stderr, "m3rec-replay: every row was bad\n");
            rc = 1;
        }
    }
    free(buf);
    kio_producer_destroy(p);
    rpl_destroy(r);
    codec_destroy(cd);
    free(props);
    rpl_map_destroy(map);
    cfg_free(&cfg);
    return rc;
}
