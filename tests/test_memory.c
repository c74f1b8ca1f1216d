/* test_memory.c - the memory budget: a stream whose state is far larger than
 * store.memory.max_mb runs with the tables inside the budget and the process's memory
 * bounded by the budget plus a stated overhead, and trains exactly the model of a run
 * without a budget (eviction and loading back change no value).
 *
 * Two m3rec-offline runs (no Kafka) of the same simulated stream with a store: one without
 * a budget, one with BUDGET_MB; and a short one (BASE_EVENTS) with the budget, whose peak
 * RSS is the process's base: model, its step buffers, metrics, simulator, libraries, RocksDB
 * running, a checkpoint done, tables still small. Checked:
 *  - the same prequential AUCs and log losses, to the last digit (tolerance 0), and the
 *    same number of rows trained;
 *  - the unbounded run's tables are at least 4x the budget; the budgeted run's stay within it
 *    and it evicted and loaded rows back;
 *  - the budgeted run's peak RSS <= the base + the budget (tables) + RocksDB's memtables
 *    filling up (two per family) + a checkpoint (its write batch and RocksDB's memtable copy
 *    of it: the state checkpoints once a quarter of the budget is changed rows, so <= the
 *    budget) + the pending join (<= 1 KiB per pending impression) + 16 MiB (allocator slack,
 *    RocksDB's flushes and compactions);
 *  - the budgeted run's peak RSS is lower than the unbounded run's by at least half the
 *    difference of their tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pipeline.h"

extern char **environ;

#define BUDGET_MB 8
#define CACHE_MB 4
#define WBUF_MB 4
#define EVENTS "120000"
#define BASE_EVENTS "3000"

static char tmp_root[512];

/* Run m3rec-offline with a store (budget_mb: store.memory.max_mb) and return its report. */
static json_node *run(const char *name, int budget_mb, const char *events) {
    char dir[600], report[600], log[600], set_dir[700], set_budget[64], set_cache[64], set_wb[64];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    snprintf(report, sizeof report, "%s/%s.json", tmp_root, name);
    snprintf(log, sizeof log, "%s/%s.log", tmp_root, name);
    snprintf(set_dir, sizeof set_dir, "store.dir=%s", dir);
    snprintf(set_budget, sizeof set_budget, "store.memory.max_mb=%d", budget_mb);
    snprintf(set_cache, sizeof set_cache, "store.block_cache_mb=%d", CACHE_MB);
    snprintf(set_wb, sizeof set_wb, "store.write_buffer_mb=%d", WBUF_MB);
    /* many users and items, each seen about once: a state that only grows */
    char *argv[] = {M3_BINARY_DIR "/m3rec-offline", "--set", "model.arch=m3rec", "--set",
                    "model.shadow=", "--set", set_dir, "--set", set_budget, "--set", set_cache,
                    "--set", set_wb, "--set", "checkpoint.sync=false", "--users", "150000",
                    "--items", "60000", "--events", (char *)events, "--quiet", "--report", report,
                    NULL};
    pid_t pid = proc_spawn(argv, log, log);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "m3rec-offline failed: %s",
              proc_slurp(log));
    char err[256];
    json_node *j = json_parse(proc_slurp(report), err, sizeof err);
    CHECK_MSG(j, "%s: %s", report, err);
    return j;
}

static double num(const json_node *j, const char *path) {
    double v = json_number(json_get(j, path), NAN);
    CHECK_MSG(!isnan(v), "report has no %s", path);
    return v;
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "%s/test_memory.%d", M3_BINARY_DIR, (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", tmp_root, tmp_root);
    CHECK(system(cmd) == 0);
    json_node *a = run("unbounded", 0, EVENTS);
    json_node *b = run("budget", BUDGET_MB, EVENTS);
    json_node *c = run("base", BUDGET_MB, BASE_EVENTS);

    static const char *same[] = {"overall.ctr.auc", "overall.ctcvr.auc", "overall.ctr.logloss",
                                 "overall.ctcvr.logloss", "trained_ctr", "trained_ctcvr",
                                 "pending", "counters.late_conversions"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        CHECK_MSG(num(a, same[i]) == num(b, same[i]), "%s: %.17g unbounded, %.17g with the budget",
                  same[i], num(a, same[i]), num(b, same[i]));

    double tables_a = num(a, "state.mem_mb"), tables_b = num(b, "state.mem_mb");
    double peak_a = num(a, "rss_peak_mb"), peak_b = num(b, "rss_peak_mb");
    double base = num(c, "rss_peak_mb"), pending = num(b, "pending");
    double bound = base + BUDGET_MB + 2.0 * WBUF_MB * 4 + BUDGET_MB + pending / 1024.0 + 16;
    fprintf(stderr, "test_memory: tables %.1f MB unbounded, %.1f MB with a %d MB budget "
            "(%.0f rows evicted, %.0f loaded back, %.0f checkpoints); peak RSS %.0f MB "
            "unbounded, %.0f MB with the budget (base %.0f MB, bound %.0f MB); AUC %.6f both\n",
            tables_a, tables_b, BUDGET_MB, num(b, "state.emb_evicted") + num(b, "state.user_evicted"),
            num(b, "state.emb_loads") + num(b, "state.user_loads"), num(b, "state.checkpoints"),
            peak_a, peak_b, base, bound, num(b, "overall.ctr.auc"));
    CHECK(tables_a >= 4 * BUDGET_MB);
    CHECK(tables_b <= BUDGET_MB);
    CHECK(num(b, "state.emb_evicted") > 0 && num(b, "state.user_evicted") > 0);
    CHECK(num(b, "state.emb_loads") > 0 && num(b, "state.user_loads") > 0);
    CHECK_MSG(peak_b <= bound, "peak RSS %.1f MB above the bound %.1f MB", peak_b, bound);
    CHECK_MSG(peak_a - peak_b >= 0.5 * (tables_a - tables_b),
              "peak RSS %.1f vs %.1f MB: the budget did not bound the memory", peak_a, peak_b);
    json_free(a);
    json_free(b);
    json_free(c);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    CHECK(system(cmd) == 0);
    return 0;
}
