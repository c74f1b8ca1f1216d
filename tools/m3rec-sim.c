/* m3rec-sim - the stream simulator: produce impressions, conversions and score requests
 * into the scenario topics (or a file) and write the oracle's report.
 *
 * Usage: m3rec-sim [--config FILE] [--set key=value]... [--bootstrap HOST:PORT]
 *                  [--events N] [--seed S] [--users N] [--items N] [--difficulty X]
 *                  [--noise X] [--conflict X] [--taste X] [--mix X] [--new-users X]
 *                  [--drift TURNS_PER_DAY] [--time-rate IMPS_PER_SEC] [--conversion-delay DIST]
 *                  [--immediate-labels WINDOW] [--report PATH]
 *                  [--out FILE] [--create-topics PARTITIONS] [--rate MSGS_PER_SEC]
 *
 * --drift sets how fast the segment tastes turn (per day of event time); --time-rate sets
 * the event-time rate (the stream's span); --conversion-delay the delay
 * distribution, e.g. lognormal:median=2h,sigma=1.5 (docs/simulator.md).
 * --rate paces production in wall-clock time (0 = as fast as possible). The embedded
 * broker keeps only ~5 MB per partition: there production also waits for the worker's
 * consumer group (its kafka.group.id from --config/--set, "m3rec" by default) so that no
 * partition runs more than app/sink.h's bound ahead of what the worker has committed.
 * Topics and scenarios come from the same configuration as the worker's; messages are
 * keyed by the decimal user id (murmur2 partitioner, like Java clients). --out writes
 * the messages to a file instead (app/sink.h has the format). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/sink.h"
#include "config/cfg.h"
#include "eval/sim.h"

typedef struct {
    const char *bootstrap, *report, *out;
    int create_parts;
    double rate;
} opts;

static void usage(void) {
    fprintf(stderr,
            "usage: m3rec-sim [--config FILE] [--set key=value]... [--bootstrap HOST:PORT]\n"
            "                 " APP_SIM_USAGE "\n"
            "                 [--report PATH]\n"
            "                 [--out FILE] [--create-topics PARTITIONS] [--rate MSGS_PER_SEC]\n");
}

/* Read the command line into cfg, sc and o. Returns 0, or 2 (the exit code) after saying why. */
static int parse_args(int argc, char **argv, m3_cfg *cfg, sim_cfg *sc, opts *o) {
    char err[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int used = app_config_arg(cfg, argc, argv, &i, err, sizeof err);
        if (used == 0) used = app_sim_arg(sc, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-sim: %s\n", err);
            return 2;
        }
        if (used) continue;
        int more = i + 1 < argc;
        if (strcmp(a, "--bootstrap") == 0 && more) o->bootstrap = argv[++i];
        else if (strcmp(a, "--report") == 0 && more) o->report = argv[++i];
        else if (strcmp(a, "--out") == 0 && more) o->out = argv[++i];
        else if (strcmp(a, "--create-topics") == 0 && more) o->create_parts = atoi(argv[++i]);
        else if (strcmp(a, "--rate") == 0 && more) o->rate = atof(argv[++i]);
        else {
            usage();
            return 2;
        }
    }
    if (cfg_check(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-sim: %s\n", err);
        return 2;
    }
    app_sim_from_cfg(sc, cfg);
    return 0;
}

/* Every event of the stream into out (impressions also to the oracle). Returns 0 or 1. */
static int produce(sim *s, app_oracle *orc, sink *out, const topics *t) {
    m3_event ev;
    sim_truth tr;
    char err[1024];
    while (sim_next(s, &ev, &tr)) {
        if (ev.type == M3_EV_IMPRESSION) app_oracle_add(orc, &tr);
        const char *topic = ev.type == M3_EV_SCORE_REQUEST ? t->requests : t->all[tr.scen];
        if (sink_put(out, topic, &ev, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-sim: %s\n", err);
            return 1;
        }
    }
    return 0;
}

static void print_stats(const sim *s, long long produced) {
    sim_stats st;
    sim_get_stats(s, &st);
    fprintf(stderr,
            "m3rec-sim: produced %lld messages: %lld impressions (%lld clicks), %lld conversions "
            "(%lld after the window), %lld score requests, %lld items\n",
            produced, (long long)st.impressions, (long long)st.clicks, (long long)st.conversions,
            (long long)st.late_conversions, (long long)st.requests, (long long)st.items);
}

int main(int argc, char **argv) {
    m3_cfg cfg;
    cfg_defaults(&cfg);
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    opts o = {0};
    int rc = parse_args(argc, argv, &cfg, &sc, &o);
    if (rc != 0) return rc;
    char err[1024];
    topics t;
    if (app_topics(&t, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-sim: %s\n", err);
        return 2;
    }
    int n_props;
    kio_prop *props = app_kafka_props(&cfg, o.bootstrap, 0, &n_props);
    sim *s = props ? sim_new(&sc, err, sizeof err) : NULL;
    app_oracle *orc = s ? app_oracle_new(&cfg, err, sizeof err) : NULL;
    /* the worker's outputs too, so --create-topics sets up the whole pipeline */
    sink_opts so = {o.out, props, n_props, t.all, topics_count(&t), o.create_parts, o.rate,
                    /* the worker's group: on the embedded broker production waits for it */
                    cfg_kafka_get(&cfg, "group.id") ? cfg_kafka_get(&cfg, "group.id") : "m3rec"};
    sink *out = orc ? sink_open(&so, err, sizeof err) : NULL;
    if (!out) {
        fprintf(stderr, "m3rec-sim: %s\n", props ? err : "out of memory");
        rc = 1;
    } else {
        rc = produce(s, orc, out, &t);
        long long produced = sink_count(out);
        if (sink_close(out, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-sim: %s\n", err);
            rc = 1;
        }
        print_stats(s, produced);
        if (o.report && app_oracle_write(orc, o.report, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-sim: %s\n", err);
            rc = 1;
        }
    }
    app_oracle_destroy(orc);
    sim_destroy(s);
    free(props);
    cfg_free(&cfg);
    return rc;
}
