/* m3rec-offline - the simulator's stream straight into the learner, no Kafka.
 *
 * Measures the model step alone (events/s, FLOPs) and its prequential quality next to
 * the oracle, with exactly the learner the worker runs. Usage:
 *   m3rec-offline [--config FILE] [--set key=value]... [--events N] [--seed S] [--users N]
 *                 [--items N] [--difficulty X] [--noise X] [--conflict X] [--taste X] [--mix X]
 *                 [--new-users X]
 *                 [--report PATH] [--oracle-report PATH] [--dump-batches PATH] [--quiet]
 *                 [--drain]
 * --drain settles, at the end, every clicked impression whose window the stream's clock
 * has closed (lrn_drain), so the CTCVR metrics cover the whole stream (the simulator's
 * trailing conversions move the clock past nearly every window).
 * --dump-batches records every trained minibatch (common/eval/trace.h) for m3rec-batchbench
 * and the PyTorch twin (reference/bench.py).
 *
 * With store.dir set the state is durable (state.h), the simulator's position being the
 * input offset ("sim" partition 0): checkpoints every checkpoint.interval.ms at a minibatch
 * boundary and at the end, and a second run on the same store resumes where the last
 * checkpoint left off (the oracle and the metrics then cover only the resumed part). This
 * measures the state's cost without Kafka.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "base/clock.h"
#include "config/cfg.h"
#include "stream/learner.h"
#include "report/metrics.h"
#include "eval/sim.h"
#include "eval/trace.h"
#include "state/state.h"

typedef struct {
    FILE *f;
    const m3_model_cfg *cfg;
    int failed;
} dump_ctx;

/* One run: the configuration, the stream and what it feeds. */
typedef struct {
    m3_cfg cfg;
    sim_cfg sc;
    const char *report, *oracle_report, *dump;
    int quiet, drain;
    sim *s;
    lrn *L;
    app_oracle *orc;
    dump_ctx dc;
    state *st;             /* store.dir, else NULL */
    int64_t pos;           /* simulator events handled, the state's offset */
    int64_t last_ckpt_ms;  /* monotonic */
} offline;

static void usage(void) {
    fprintf(stderr,
            "usage: m3rec-offline [--config FILE] [--set key=value]...\n"
            "                     " APP_SIM_USAGE "\n"
            "                     [--report PATH] [--oracle-report PATH] [--dump-batches PATH]\n"
            "                     [--quiet] [--drain]\n");
}

static void dump_batch(void *ud, const m3_example *ex, const char *const *ids, int B, int n_imp) {
    dump_ctx *d = ud;
    if (!d->failed && trace_write_batch(d->f, d->cfg, ex, ids, B, n_imp) != 0) d->failed = 1;
}

/* The command line into o's configuration and options, then the configuration checked.
 * Returns 0, or 2 (the exit code) after saying why. */
static int parse_args(offline *o, int argc, char **argv) {
    char err[512];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        int used = app_config_arg(&o->cfg, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-offline: %s\n", err);
            return 2;
        } else if (used) {
            continue;
        } else if ((used = app_sim_arg(&o->sc, argc, argv, &i, err, sizeof err)) != 0) {
            if (used < 0) {
                fprintf(stderr, "m3rec-offline: %s\n", err);
                return 2;
            }
        } else if (strcmp(a, "--report") == 0 && more) {
            o->report = argv[++i];
        } else if (strcmp(a, "--oracle-report") == 0 && more) {
            o->oracle_report = argv[++i];
        } else if (strcmp(a, "--dump-batches") == 0 && more) {
            o->dump = argv[++i];
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
        } else if (strcmp(a, "--drain") == 0) {
            o->drain = 1;
        } else {
            usage();
            return 2;
        }
    }
    if (cfg_check(&o->cfg, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return 2;
    }
    return 0;
}

/* The simulator, the learner, the oracle and the --dump-batches recorder. Returns 0, or -1
 * after saying why. */
static int open_run(offline *o) {
    char err[512];
    app_sim_from_cfg(&o->sc, &o->cfg);
    o->s = sim_new(&o->sc, err, sizeof err);
    o->L = o->s ? lrn_new(&o->cfg, err, sizeof err) : NULL;
    o->orc = o->L ? app_oracle_new(&o->cfg, err, sizeof err) : NULL;
    if (!o->orc) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    o->dc = (dump_ctx){ NULL, &o->cfg.model, 0 };
    if (o->dump) {
        if (!(o->dc.f = fopen(o->dump, "wb")) || trace_write_header(o->dc.f, &o->cfg.model) != 0 ||
            lrn_set_batch_hook(o->L, dump_batch, &o->dc) != 0) {
            fprintf(stderr, "m3rec-offline: --dump-batches %s: cannot write\n", o->dump);
            return -1;
        }
    }
    o->last_ckpt_ms = clk_mono_ms();
    return 0;
}

/* store.dir: the state of this one stream, created or restored; a restored run skips the
 * simulator's events up to the stored offset. Returns 0, or -1 after saying why. */
static int open_state(offline *o) {
    char err[512], layout[256];   /* the store holds the state of this one stream */
    const sim_cfg *sc = &o->sc;
    snprintf(layout, sizeof layout, "simulator seed=%llu users=%d items=%d difficulty=%g "
             "noise=%g conflict=%g taste=%g mix=%g new_users=%g", (unsigned long long)sc->seed,
             sc->n_users, sc->n_items, sc->difficulty, sc->noise, sc->conflict, sc->taste,
             sc->mix, sc->new_users_per_1k);
    o->st = state_open(&o->cfg, o->L, layout, err, sizeof err);
    if (!o->st) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    if (!state_offset_get(o->st, "sim", 0, &o->pos)) o->pos = 0;
    state_stats ss;
    state_stats_get(o->st, &ss);
    fprintf(stderr, "m3rec-offline: state %s %s in %.1f ms (store open %.1f ms), %llu "
            "pending; resuming at event %lld\n", o->cfg.store_dir,
            state_fresh(o->st) ? "created" : "restored", ss.open_ms, ss.store_open_ms,
            (unsigned long long)ss.pending_restored, (long long)o->pos);
    m3_event ev;
    sim_truth tr;
    for (int64_t i = 0; i < o->pos && sim_next(o->s, &ev, &tr); i++) {}
    return 0;
}

/* The state at the simulator's position. Returns 0, or -1 after saying why. */
static int checkpoint(offline *o) {
    char err[512];
    state_offset off = {"sim", 0, o->pos};
    if (state_checkpoint(o->st, &off, 1, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: checkpoint: %s\n", err);
        return -1;
    }
    return 0;
}

/* One simulator event into the learner (and an impression's truth into the oracle).
 * An event the learner does not admit (a configuration stricter than the simulator's
 * values) counts as a DLQ message, as in the worker; the first few are shown. Returns 0,
 * or -1 after saying why: the simulator writes only valid events. */
static int feed(offline *o, const m3_event *ev, const sim_truth *tr) {
    char reason[256];
    int rc = 0;
    if (lrn_admit(o->L, ev, tr->scen, reason, sizeof reason)) {
        uint64_t n = ++met_board_counters(lrn_board(o->L))->dlq;
        if (n <= 10) fprintf(stderr, "m3rec-offline: refused (DLQ): %s\n", reason);
        return 0;
    }
    if (ev->type == M3_EV_IMPRESSION) {
        app_oracle_add(o->orc, tr);
        rc = lrn_impression(o->L, &ev->u.imp, tr->scen, 0, NULL, NULL, reason, sizeof reason);
    } else if (ev->type == M3_EV_CONVERSION) {
        rc = lrn_conversion(o->L, &ev->u.conv, tr->scen, NULL, NULL, reason, sizeof reason);
    } else if (ev->type == M3_EV_SCORE_REQUEST) {
        rc = lrn_request(o->L, &ev->u.req, 0, NULL, NULL, reason, sizeof reason);
    }
    if (rc != 0) {
        fprintf(stderr, "m3rec-offline: simulator event rejected: %s\n", reason);
        return -1;
    }
    return 0;
}

/* With a store: stop on a failed state; checkpoint at a minibatch boundary when the
 * interval is over or the state asks. Returns 0, or -1 after saying why. */
static int keep_state(offline *o) {
    char err[512];
    if (state_failed(o->st, err, sizeof err)) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    if (lrn_at_boundary(o->L) && (state_want_checkpoint(o->st) ||
                                  clk_mono_ms() - o->last_ckpt_ms >= o->cfg.checkpoint_interval_ms)) {
        if (checkpoint(o) != 0) return -1;
        o->last_ckpt_ms = clk_mono_ms();
    }
    return 0;
}

/* The whole stream through the learner, then the last minibatch. Returns 0, or -1 after
 * saying why. */
static int run_stream(offline *o) {
    m3_event ev;
    sim_truth tr;
    met_board *b = lrn_board(o->L);
    double next_progress = o->cfg.progress_ms / 1000.0;
    while (sim_next(o->s, &ev, &tr)) {
        met_board_counters(b)->events++;
        if (feed(o, &ev, &tr) != 0) return -1;
        o->pos++;
        if (o->st && keep_state(o) != 0) return -1;
        if (!o->quiet && o->cfg.progress_ms > 0 && met_board_elapsed(b) >= next_progress) {
            char line[256];
            met_board_progress_line(b, line, sizeof line);
            fprintf(stderr, "%s\n", line);
            next_progress += o->cfg.progress_ms / 1000.0;
        }
    }
    if (o->drain) lrn_drain(o->L, NULL, NULL);
    else lrn_run_batch(o->L, NULL, NULL);
    return 0;
}

/* The report's own keys: the admission counters. */
static void report_extra(json_writer *jw, void *arg) {
    const offline *o = arg;
    json_key(jw, "admission");
    lrn_admission_write_json(o->L, jw);
}

/* The recorder closed, the last checkpoint, the reports and the comparison table. Returns
 * 0, or -1 after saying why. */
static int finish(offline *o) {
    char err[512];
    if (o->dc.f && (fclose(o->dc.f) != 0 || o->dc.failed)) {
        fprintf(stderr, "m3rec-offline: --dump-batches %s: write failed\n", o->dump);
        return -1;
    }
    if (o->st && checkpoint(o) != 0) return -1;
    if (o->report &&
        app_write_report(o->report, o->L, o->st, report_extra, o, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    if (o->oracle_report && app_oracle_write(o->orc, o->oracle_report, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    if (app_print_comparison_live(stdout, o->L, o->orc, err, sizeof err) != 0)
        fprintf(stderr, "m3rec-offline: %s\n", err);
    return 0;
}

static void close_run(offline *o) {
    char err[512];
    app_oracle_destroy(o->orc);
    if (state_close(o->st, err, sizeof err) != 0) fprintf(stderr, "m3rec-offline: %s\n", err);
    lrn_destroy(o->L);
    sim_destroy(o->s);
    cfg_free(&o->cfg);
}

int main(int argc, char **argv) {
    /* Blocks of 1 MB and more come from mmap and go back to the OS when freed: eviction
     * grows and shrinks the tables' arrays, and glibc's adaptive threshold would otherwise
     * keep the freed ones in the heap (measured: 15-25 MB more RSS in a budgeted run). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    static offline o;
    cfg_defaults(&o.cfg);
    sim_cfg_defaults(&o.sc);
    int rc = parse_args(&o, argc, argv);
    if (rc != 0) return rc;
    /* on a failure the process ends at once: the store keeps its last checkpoint */
    if (open_run(&o) != 0 || (o.cfg.store_dir[0] && open_state(&o) != 0) ||
        run_stream(&o) != 0 || finish(&o) != 0)
        return 1;
    close_run(&o);
    return 0;
}
