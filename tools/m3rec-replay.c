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
 * only parses and counts. Into the embedded broker (~5 MB per partition) production
 * waits for the worker's consumer group (its kafka.group.id), as m3rec-sim's does. A bad
 * row stops the replay with "path:line: message" and
 * exit code 1 (the rows before it are already produced: run --check first), unless
 * --skip-bad counts and skips it. Exit codes: 0 done, 1 data or Kafka error, 2 usage,
 * mapping or configuration error. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/app.h"
#include "app/sink.h"
#include "config/cfg.h"
#include "app/sink.h"
#include "eval/replay.h"

#define MAX_ARGS 256

typedef struct {
    const char *mappings[MAX_ARGS], *overrides[MAX_ARGS], *files[MAX_ARGS];
    int n_mappings, n_overrides, n_files;
    int have_cfg;        /* --config or --set: check the worker configuration */
    int have_cfg_file;   /* --config: compare the mapping with that worker */
    const char *bootstrap, *out;
    int create_parts, check, print_worker;
    rpl_opts ropts;
    double rate;
    char delay_kv[64];   /* --conversion-delay-ms as a --map override */
} opts;

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

/* One option that is not --config/--set into o. Returns 0, or 2 after saying why. */
static int parse_opt(int argc, char **argv, int *i, opts *o) {
    const char *a = argv[*i];
    int more = *i + 1 < argc;
    if (a[0] != '-') {
        if (o->n_files == MAX_ARGS) {
            fprintf(stderr, "m3rec-replay: more than %d data files\n", MAX_ARGS);
            return 2;
        }
        o->files[o->n_files++] = a;
    } else if (strcmp(a, "--mapping") == 0 && more && o->n_mappings < MAX_ARGS) o->mappings[o->n_mappings++] = argv[++*i];
    else if (strcmp(a, "--map") == 0 && more && o->n_overrides < MAX_ARGS) o->overrides[o->n_overrides++] = argv[++*i];
    else if (strcmp(a, "--bootstrap") == 0 && more) o->bootstrap = argv[++*i];
    else if (strcmp(a, "--out") == 0 && more) o->out = argv[++*i];
    else if (strcmp(a, "--create-topics") == 0 && more) o->create_parts = atoi(argv[++*i]);
    else if (strcmp(a, "--rate") == 0 && more) o->rate = atof(argv[++*i]);
    else if (strcmp(a, "--max-rows") == 0 && more) o->ropts.max_rows = atoll(argv[++*i]);
    else if (strcmp(a, "--conversion-delay-ms") == 0 && more && o->n_overrides < MAX_ARGS) {
        snprintf(o->delay_kv, sizeof o->delay_kv, "conversion.delay.ms=%s", argv[++*i]);
        o->overrides[o->n_overrides++] = o->delay_kv;
    } else if (strcmp(a, "--check") == 0) o->check = 1;
    else if (strcmp(a, "--skip-bad") == 0) o->ropts.skip_bad = 1;
    else if (strcmp(a, "--print-worker-config") == 0) o->print_worker = 1;
    else {
        usage();
        return 2;
    }
    return 0;
}

/* Read the command line into cfg and o. Returns 0, or 2 after saying why. */
static int parse_args(int argc, char **argv, m3_cfg *cfg, opts *o) {
    char err[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int used = app_config_arg(cfg, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-replay: %s\n", err);
            return 2;
        }
        if (used) {
            o->have_cfg = 1;
            /* compare with the worker only when its configuration file is given: --set
             * alone (e.g. kafka.* keys) leaves the other keys at their defaults */
            if (strcmp(a, "--config") == 0) o->have_cfg_file = 1;
            continue;
        }
        if (parse_opt(argc, argv, &i, o) != 0) return 2;
    }
    if (o->n_mappings == 0) {
        fprintf(stderr, "m3rec-replay: --mapping FILE is required (see config/replay-*.properties)\n");
        usage();
        return 2;
    }
    return 0;
}

/* The mapping files, then the --map overrides, checked (and the worker configuration when
 * one is given). Returns 0, or the exit code after saying why. */
static int load_mapping(rpl_map *map, const opts *o, m3_cfg *cfg) {
    char err[1024];
    int rc = 0;
    for (int i = 0; i < o->n_mappings && rc == 0; i++) rc = rpl_map_load(map, o->mappings[i], err, sizeof err);
    for (int i = 0; i < o->n_overrides && rc == 0; i++) rc = rpl_map_set(map, o->overrides[i], "--map", 0, err, sizeof err);
    if (rc == 0) rc = rpl_map_check(map, err, sizeof err);
    if (rc == 0 && o->have_cfg) rc = cfg_check(cfg, err, sizeof err);
    if (rc == 0) return 0;
    fprintf(stderr, "m3rec-replay: %s\n", err);
    return 2;
}

/* Warn about what the given worker would not consume or read of this mapping's events. */
static void warn_worker(const rpl_map *map, const m3_cfg *cfg) {
    static char warn[8192];
    if (rpl_map_compare_worker(map, cfg, warn, sizeof warn) == 0) return;
    for (char *save = NULL, *l = strtok_r(warn, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        fprintf(stderr, "m3rec-replay: warning: %s\n", l);
    fprintf(stderr, "m3rec-replay: warning: see --print-worker-config for the settings this mapping needs\n");
}

/* What to do once the mapping is read: 0 to replay, or an exit code (after printing the
 * worker settings, or saying what is missing). */
static int before_replay(const rpl_map *map, const m3_cfg *cfg, const opts *o) {
    if (o->print_worker) {
        char *s = rpl_map_worker_settings(map);
        fputs(s ? s : "", stdout);
        free(s);
        return s ? -1 : 1;   /* -1: done, exit 0 */
    }
    if (o->have_cfg_file) warn_worker(map, cfg);
    if (o->n_files == 0) {
        fprintf(stderr, "m3rec-replay: no data files given\n");
        usage();
        return 2;
    }
    if (!o->check && !o->out && !o->bootstrap && !cfg_kafka_get(cfg, "bootstrap.servers")) {
        fprintf(stderr, "m3rec-replay: give --bootstrap HOST:PORT (or kafka.bootstrap.servers), --out FILE or --check\n");
        return 2;
    }
    return 0;
}

/* Every event of the replay into out (NULL: --check, count only), on the events topic of
 * its scenario (scen[s] is t->all[s]'s). Returns 0 or 1. */
static int replay_events(rpl_replay *r, sink *out, const topics *t, const char *const *scen,
                         long long *messages) {
    static m3_event ev;
    char err[1024];
    for (;;) {
        int got = rpl_next(r, &ev, err, sizeof err);
        if (got < 0) {
            fprintf(stderr, "m3rec-replay: %s\n", err);
            return 1;
        }
        if (got == 0) return 0;
        if (out) {
            const char *scenario = ev.type == M3_EV_IMPRESSION ? ev.u.imp.scenario : ev.u.conv.scenario;
            int s = 0;
            while (s < t->n_scen && strcmp(scen[s], scenario) != 0) s++;
            if (s == t->n_scen) {
                fprintf(stderr, "m3rec-replay: encode: scenario not in the mapping\n");
                return 1;
            }
            if (sink_put(out, t->all[s], &ev, err, sizeof err) != 0) {
                fprintf(stderr, "m3rec-replay: %s\n", err);
                return 1;
            }
        }
        (*messages)++;
    }
}

/* Replay the data files with a checked mapping into Kafka, a file or nowhere (--check),
 * then print the summary. Returns the exit code. */
static int replay(const rpl_map *map, const m3_cfg *cfg, const opts *o) {
    char err[1024];
    const char *scen[RPL_MAX_SCEN];
    int n_scen = rpl_map_scenarios(map, scen), n_props;
    topics t;
    /* the events topics, then what else the worker needs: <prefix>.requests (the same
     * partition count), .predictions and .dlq (the worker produces to them) */
    if (topics_init(&t, rpl_map_prefix(map), scen, n_scen, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-replay: %s\n", err);
        return 2;
    }
    kio_prop *props = app_kafka_props(cfg, o->bootstrap, 0, &n_props);
    rpl_replay *r = props ? rpl_new(map, o->files, o->n_files, &o->ropts, err, sizeof err) : NULL;
    sink_opts so = {o->out, props, n_props, t.all, topics_count(&t), o->create_parts, o->rate,
                    /* the worker's group: on the embedded broker production waits for it */
                    cfg_kafka_get(cfg, "group.id") ? cfg_kafka_get(cfg, "group.id") : "m3rec"};
    sink *out = NULL;
    long long messages = 0;
    int rc = 0;
    if (!r) {
        fprintf(stderr, "m3rec-replay: %s\n", props ? err : "out of memory");
        rc = 1;
    } else if (!o->check && !(out = sink_open(&so, err, sizeof err))) {
        fprintf(stderr, "m3rec-replay: %s\n", err);
        rc = 1;
    }
    if (rc == 0) rc = replay_events(r, out, &t, scen, &messages);
    if (sink_close(out, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-replay: %s\n", err);
        rc = 1;
    }
    if (r) {
        rpl_stats st;
        rpl_get_stats(r, &st);
        summary(&st, rpl_map_prefix(map), o->n_files, o->check ? "checked" : o->out ? "wrote" : "produced",
                messages, st.next_row_ts_ms);
        char span[512];   /* the worker's windows against the stream's event time */
        if (o->have_cfg && rpl_span_warning(&st, cfg, span, sizeof span))
            fprintf(stderr, "m3rec-replay: warning: %s", span);
        if (rc == 0 && st.impressions == 0 && st.bad > 0) {
            fprintf(stderr, "m3rec-replay: every row was bad\n");
            rc = 1;
        }
    }
    rpl_destroy(r);
    free(props);
    return rc;
}

int main(int argc, char **argv) {
    m3_cfg cfg;
    cfg_defaults(&cfg);
    static opts o;
    int rc = parse_args(argc, argv, &cfg, &o);
    if (rc != 0) {
        cfg_free(&cfg);
        return rc;
    }
    rpl_map *map = rpl_map_new();
    if (!map) {
        fprintf(stderr, "m3rec-replay: out of memory\n");
        return 1;
    }
    rc = load_mapping(map, &o, &cfg);
    if (rc == 0) rc = before_replay(map, &cfg, &o);
    if (rc == 0) rc = replay(map, &cfg, &o);
    rpl_map_destroy(map);
    cfg_free(&cfg);
    return rc < 0 ? 0 : rc;
}
