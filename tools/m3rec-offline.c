/* m3rec-offline - the simulator's stream straight into the learner, no Kafka.
 *
 * Measures the model step alone (events/s, FLOPs) and its prequential quality next to
 * the oracle, with exactly the learner the worker runs. Usage:
 *   m3rec-offline [--config FILE] [--set key=value]... [--events N] [--seed S] [--users N]
 *                 [--items N] [--difficulty X] [--noise X] [--conflict X] [--taste X] [--mix X]
 *                 [--new-users X]
 *                 [--report PATH] [--oracle-report PATH] [--dump-batches PATH] [--quiet]
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
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "config/cfg.h"
#include "stream/learner.h"
#include "report/metrics.h"
#include "eval/sim.h"
#include "eval/trace.h"
#include "state/state.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* The report's own keys: trained rows, and the state's counters with a store. */
static void report_extra(json_writer *w, void *arg) {
    lrn *L = ((void **)arg)[0];
    state *st = ((void **)arg)[1];
    json_key(w, "trained_ctr");
    json_uint(w, lrn_trained_ctr(L));
    json_key(w, "trained_ctcvr");
    json_uint(w, lrn_trained_ctcvr(L));
    if (st) {
        json_key(w, "state");
        state_write_json(st, w);
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: m3rec-offline [--config FILE] [--set key=value]...\n"
            "                     " APP_SIM_USAGE "\n"
            "                     [--report PATH] [--oracle-report PATH] [--dump-batches PATH]\n"
            "                     [--quiet]\n");
}

typedef struct {
    FILE *f;
    const m3_model_cfg *cfg;
    int failed;
} dump_ctx;

static void dump_batch(void *ud, const m3_example *ex, const char *const *ids, int B, int n_imp) {
    dump_ctx *d = ud;
    if (!d->failed && trace_write_batch(d->f, d->cfg, ex, ids, B, n_imp) != 0) d->failed = 1;
}

int main(int argc, char **argv) {
    /* Blocks of 1 MB and more come from mmap and go back to the OS when freed: eviction
     * grows and shrinks the tables' arrays, and glibc's adaptive threshold would otherwise
     * keep the freed ones in the heap (measured: 15-25 MB more RSS in a budgeted run). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    m3_cfg cfg;
    cfg_defaults(&cfg);
    sim_cfg sc;
    sim_cfg_defaults(&sc);
    const char *report = NULL, *oracle_report = NULL, *dump = NULL;
    int quiet = 0;
    char err[512];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        int used = app_config_arg(&cfg, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-offline: %s\n", err);
            return 2;
        } else if (used) {
            continue;
        } else if ((used = app_sim_arg(&sc, argc, argv, &i, err, sizeof err)) != 0) {
            if (used < 0) {
                fprintf(stderr, "m3rec-offline: %s\n", err);
                return 2;
            }
        } else if (strcmp(a, "--report") == 0 && more) {
            report = argv[++i];
        } else if (strcmp(a, "--oracle-report") == 0 && more) {
            oracle_report = argv[++i];
        } else if (strcmp(a, "--dump-batches") == 0 && more) {
            dump = argv[++i];
        } else if (strcmp(a, "--quiet") == 0) {
            quiet = 1;
        } else {
            usage();
            return 2;
        }
    }
    if (cfg_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return 2;
    }
    app_sim_from_cfg(&sc, &cfg);
    sim *s = sim_new(&sc, err, sizeof err);
    lrn *L = s ? lrn_new(&cfg, err, sizeof err) : NULL;
    app_oracle *orc = L ? app_oracle_new(&cfg, err, sizeof err) : NULL;
    if (!orc) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return 1;
    }
    dump_ctx dc = { NULL, &cfg.model, 0 };
    if (dump) {
        if (!(dc.f = fopen(dump, "wb")) || trace_write_header(dc.f, &cfg.model) != 0 ||
            lrn_set_batch_hook(L, dump_batch, &dc) != 0) {
            fprintf(stderr, "m3rec-offline: --dump-batches %s: cannot write\n", dump);
            return 1;
        }
    }
    m3_event ev;
    sim_truth tr;
    char reason[256];
    double next_progress = cfg.progress_ms / 1000.0;
    met_board *b = lrn_board(L);
    state *st = NULL;
    int64_t pos = 0;   /* simulator events handled, the state's offset */
    double last_ckpt = now_ms();
    if (cfg.store_dir[0]) {
        char layout[256];   /* the store holds the state of this one stream */
        snprintf(layout, sizeof layout, "simulator seed=%llu users=%d items=%d difficulty=%g "
                 "noise=%g conflict=%g taste=%g mix=%g new_users=%g", (unsigned long long)sc.seed,
                 sc.n_users, sc.n_items, sc.difficulty, sc.noise, sc.conflict, sc.taste, sc.mix,
                 sc.new_users_per_1k);
        st = state_open(&cfg, L, layout, err, sizeof err);
        if (!st) {
            fprintf(stderr, "m3rec-offline: %s\n", err);
            return 1;
        }
        if (!state_offset_get(st, "sim", 0, &pos)) pos = 0;
        state_stats ss;
        state_stats_get(st, &ss);
        fprintf(stderr, "m3rec-offline: state %s %s in %.1f ms (store open %.1f ms), %llu "
                "pending; resuming at event %lld\n", cfg.store_dir,
                state_fresh(st) ? "created" : "restored", ss.open_ms, ss.store_open_ms,
                (unsigned long long)ss.pending_restored, (long long)pos);
        for (int64_t i = 0; i < pos && sim_next(s, &ev, &tr); i++) {}
    }
    while (sim_next(s, &ev, &tr)) {
        met_board_counters(b)->events++;
        int rc = 0;
        if (ev.type == M3_EV_IMPRESSION) {
            app_oracle_add(orc, &tr);
            rc = lrn_impression(L, &ev.u.imp, tr.scen, 0, NULL, NULL, reason, sizeof reason);
        } else if (ev.type == M3_EV_CONVERSION) {
            rc = lrn_conversion(L, &ev.u.conv, tr.scen, NULL, NULL, reason, sizeof reason);
        } else if (ev.type == M3_EV_SCORE_REQUEST) {
            rc = lrn_request(L, &ev.u.req, 0, NULL, NULL, reason, sizeof reason);
        }
        if (rc != 0) {
            fprintf(stderr, "m3rec-offline: simulator event rejected: %s\n", reason);
            return 1;
        }
        pos++;
        if (st) {
            if (state_failed(st, err, sizeof err)) {
                fprintf(stderr, "m3rec-offline: %s\n", err);
                return 1;
            }
            if (lrn_at_boundary(L) && (state_want_checkpoint(st) ||
                                       now_ms() - last_ckpt >= (double)cfg.checkpoint_interval_ms)) {
                state_offset o = {"sim", 0, pos};
                if (state_checkpoint(st, &o, 1, err, sizeof err) != 0) {
                    fprintf(stderr, "m3rec-offline: checkpoint: %s\n", err);
                    return 1;
                }
                last_ckpt = now_ms();
            }
        }
        if (!quiet && cfg.progress_ms > 0 && met_board_elapsed(b) >= next_progress) {
            char line[256];
            met_board_progress_line(b, line, sizeof line);
            fprintf(stderr, "%s\n", line);
            next_progress += cfg.progress_ms / 1000.0;
        }
    }
    lrn_run_batch(L, NULL, NULL);
    if (dc.f && (fclose(dc.f) != 0 || dc.failed)) {
        fprintf(stderr, "m3rec-offline: --dump-batches %s: write failed\n", dump);
        return 1;
    }
    if (st) {
        state_offset o = {"sim", 0, pos};
        if (state_checkpoint(st, &o, 1, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-offline: checkpoint: %s\n", err);
            return 1;
        }
    }
    void *extra_arg[2] = {L, st};
    if (report && app_write_report(report, L, report_extra, extra_arg, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return 1;
    }
    if (oracle_report && app_oracle_write(orc, oracle_report, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return 1;
    }
    if (app_print_comparison_live(stdout, L, orc, err, sizeof err) != 0)
        fprintf(stderr, "m3rec-offline: %s\n", err);
    app_oracle_destroy(orc);
    if (state_close(st, err, sizeof err) != 0) fprintf(stderr, "m3rec-offline: %s\n", err);
    lrn_destroy(L);
    sim_destroy(s);
    cfg_free(&cfg);
    return 0;
}
