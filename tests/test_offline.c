/* test_offline.c - datasets without Kafka and the group's scoreboard: m3rec-offline
 * --mapping (every architecture, the per-row oracle file or "no oracle", the progress
 * line's settled CTCVR), the replay's event-time span warning, the slices' burn-in in
 * impressions, and m3rec-report --merge (the group's AUCs from the halves' histograms;
 * another configuration refused). */
#define _GNU_SOURCE   /* memmem */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proc.h"
#include "base/json.h"
#include "config/cfg.h"
#include "eval/replay.h"
#include "report/metrics.h"

#define SAMPLES M3_SOURCE_DIR "/tests/data/samples/ali_ccp/"
#define TRAIN SAMPLES "torchrechub_ali_ccp_train_sample.csv"
#define VAL SAMPLES "torchrechub_ali_ccp_val_sample.csv"
#define TEST SAMPLES "torchrechub_ali_ccp_test_sample.csv"
#define MAPPING M3_SOURCE_DIR "/config/replay-aliccp.properties"
#define OFFLINE M3_BINARY_DIR "/m3rec-offline"
#define REPORT M3_BINARY_DIR "/m3rec-report"
#define ALL8 "model.shadow=lr,shared_bottom,mmoe,ple,star,m3rec_nomieg,m3rec_noupt"

static char dir[256];

/* Run argv with stdout and stderr into dir/<name>.out and .err; its exit code. */
static int run(char *const argv[], const char *name) {
    char out[512], err[512];
    snprintf(out, sizeof out, "%s/%s.out", dir, name);
    snprintf(err, sizeof err, "%s/%s.err", dir, name);
    return proc_wait(proc_spawn(argv, out, err), clk_mono_ms() + 120000, name);
}

static const char *output(const char *name, const char *ext) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    return proc_slurp(path);
}

static json_node *load_json(const char *path) {
    char *text = proc_read_file(path, NULL), err[256];
    CHECK_MSG(text != NULL, "cannot read %s", path);
    json_node *j = json_parse(text, err, sizeof err);
    CHECK_MSG(j != NULL, "%s: %s", path, err);
    free(text);
    return j;
}

/* A stream shorter than the join window leaves every unconverted click pending: said. */
static void test_span_warning(void) {
    m3_cfg cfg;
    cfg_defaults(&cfg);
    rpl_stats st = {0};
    char out[512];
    st.impressions = 100;
    st.first_ts_ms = 1000;
    st.last_ts_ms = 1000 + 13 * 60000;
    CHECK_EQ_INT(rpl_span_warning(&st, &cfg, out, sizeof out), 1);
    CHECK_CONTAINS(out, "the stream spans 13.0 min of event time, less than the worker's "
                        "join.window.ms (60.0 min)");
    st.last_ts_ms = 1000 + 3600000;
    CHECK_EQ_INT(rpl_span_warning(&st, &cfg, out, sizeof out), 0);
    CHECK_EQ_STR(out, "");
    st.impressions = 0;
    CHECK_EQ_INT(rpl_span_warning(&st, &cfg, out, sizeof out), 0);
    cfg_free(&cfg);
    /* m3rec-replay says it at the end when it knows the worker's configuration */
    char *argv[] = {M3_BINARY_DIR "/m3rec-replay", "--mapping", MAPPING, "--config",
                    M3_SOURCE_DIR "/config/worker.properties", "--set", "scenarios=pos1,pos2,pos3",
                    "--check", TRAIN, NULL};
    CHECK_EQ_INT(run(argv, "replay"), 0);
    CHECK_CONTAINS(output("replay", "err"), "m3rec-replay: warning: the stream spans 10.0 min of "
                                            "event time, less than the worker's join.window.ms");
}

/* Every architecture on the three sample files through the mapping: one model per
 * architecture in the report, every row an impression, no oracle said plainly (no NaN
 * column), the progress line's CTCVR counted on settled labels with the pending ones. */
static void test_replay_all_archs(void) {
    char report[512];
    snprintf(report, sizeof report, "%s/all.json", dir);
    char *argv[] = {OFFLINE, "--mapping", MAPPING, "--set", ALL8, "--set", "metrics.progress.ms=1",
                    "--report", report, TRAIN, VAL, TEST, NULL};
    CHECK_EQ_INT(run(argv, "all"), 0);
    const char *out = output("all", "out");
    CHECK_CONTAINS(out, "no oracle: the true probabilities are unknown");
    const char *nl = strchr(out, '\n');   /* the header has no oracle column (of NaN) */
    CHECK(nl && !memmem(out, (size_t)(nl - out), "oracle", 6));
    const char *err = output("all", "err");
    CHECK_CONTAINS(err, "m3rec-offline: replayed 200 rows: 200 impressions");
    CHECK_CONTAINS(err, "warning: the stream spans");
    CHECK_CONTAINS(err, " settled)");
    CHECK_CONTAINS(err, "pending ");
    json_node *r = load_json(report);
    CHECK_EQ_INT((int)json_member(r, "models")->n, 8);
    CHECK_EQ_INT((int)json_number(json_get(r, "counters.impressions"), -1), 200);
    CHECK_EQ_INT((int)json_number(json_get(r, "models.star.overall.ctr.n"), -1), 200);
    CHECK_EQ_STR(json_string(json_get(r, "config.scenarios"), ""), "pos1,pos2,pos3");
    json_free(r);
}

/* The per-row oracle file scores the dataset's truth as the model "oracle"; a file shorter
 * than the data, or without its header, stops the run at its line. */
static void test_oracle_rows(void) {
    char rows[512], orc[512], shortf[512], bad[512];
    snprintf(rows, sizeof rows, "%s/rows.csv", dir);
    snprintf(orc, sizeof orc, "%s/oracle.json", dir);
    snprintf(shortf, sizeof shortf, "%s/short.csv", dir);
    snprintf(bad, sizeof bad, "%s/bad.csv", dir);
    FILE *f = fopen(rows, "w"), *s = fopen(shortf, "w"), *b = fopen(bad, "w");
    CHECK(f && s && b);
    fprintf(f, "p_ctr,p_cvr\n");
    fprintf(s, "p_ctr,p_cvr\n");
    fprintf(b, "ctr,cvr\n0.1,0.2\n");
    for (int i = 0; i < 100; i++) fprintf(f, "%g,0.3\n", 0.01 * (i % 50));
    for (int i = 0; i < 20; i++) fprintf(s, "0.1,0.3\n");
    fclose(f);
    fclose(s);
    fclose(b);
    char *argv[] = {OFFLINE, "--mapping", MAPPING, "--oracle-rows", rows, "--oracle-report", orc,
                    "--set", "model.slice.burnin.impressions=0", "--quiet", TRAIN, NULL};
    CHECK_EQ_INT(run(argv, "orc"), 0);
    CHECK_CONTAINS(output("orc", "out"), "   oracle\n");
    CHECK(!strstr(output("orc", "out"), "no oracle"));
    json_node *o = load_json(orc);
    CHECK_EQ_INT((int)json_number(json_get(o, "models.oracle.overall.ctr.n"), -1), 100);
    CHECK_EQ_INT((int)json_number(json_get(o, "models.oracle.overall.ctcvr.n"), -1), 100);
    /* its CVR: the file's p_cvr on the clicked rows, each once */
    int clicks = (int)json_number(json_get(o, "counters.clicks"), -1);
    CHECK(clicks > 0 && clicks < 100);
    CHECK_EQ_INT((int)json_number(json_get(o, "models.oracle.overall.cvr.n"), -1), clicks);
    CHECK_CLOSE(json_number(json_get(o, "models.oracle.overall.cvr.mean_p"), -1), 0.3, 1e-6, 0);
    CHECK_CONTAINS(output("orc", "out"), "\noverall    cvr ");
    /* its slices from the replay's own counts: item 0 has 35 of the 100 impressions, the
     * last 15 of them past model.item.warm (20); every other item stays young */
    CHECK_EQ_INT((int)json_number(json_get(o, "models.oracle.slices.new_item.ctr.n"), -1), 85);
    CHECK_EQ_INT((int)json_number(json_get(o, "models.oracle.slices.new_user_in_scenario.ctr.n"), -1), 0);
    json_free(o);
    argv[4] = shortf;
    CHECK_EQ_INT(run(argv, "short"), 1);
    CHECK_CONTAINS(output("short", "err"), "short.csv:22: the file ends before the data");
    argv[4] = bad;
    CHECK_EQ_INT(run(argv, "bad"), 1);
    CHECK_CONTAINS(output("bad", "err"), "bad.csv:1: expected the header p_ctr,p_cvr");
    char *none[] = {OFFLINE, "--mapping", MAPPING, "--oracle-report", orc, "--quiet", TRAIN, NULL};
    CHECK_EQ_INT(run(none, "none"), 1);
    CHECK_CONTAINS(output("none", "err"), "--oracle-report: no oracle");
}

/* The slices count from model.slice.burnin.impressions on: 120,000 simulated impressions
 * have them by default (the step-counted burn-in, 4000 x 256 impressions, left them empty). */
static void test_slice_burnin(void) {
    char report[512];
    snprintf(report, sizeof report, "%s/sim.json", dir);
    char *argv[] = {OFFLINE, "--events", "130000", "--quiet", "--report", report, NULL};
    CHECK_EQ_INT(run(argv, "sim"), 0);
    json_node *r = load_json(report);
    double imps = json_number(json_get(r, "counters.impressions"), 0);
    double item = json_number(json_get(r, "slices.new_item.ctr.n"), 0);
    double user = json_number(json_get(r, "slices.new_user_in_scenario.ctr.n"), 0);
    printf("test_offline: %.0f impressions, slices new_item %.0f, new_user_in_scenario %.0f\n",
           imps, item, user);
    CHECK(imps > 100000);
    CHECK(item > 0 && user > 0);
    CHECK(item < imps - 100000 + 1);   /* nothing from the first 100,000 */
    json_free(r);
    char *old[] = {OFFLINE, "--set", "model.slice.burnin=4000", NULL};
    CHECK_EQ_INT(run(old, "old"), 2);
    CHECK_CONTAINS(output("old", "err"), "'model.slice.burnin' is no longer a key");
}

/* AUC of one accumulator of a merged pair of reports, in process. */
static double merged_auc(const char *a, const char *b, int model, met_task task) {
    char err[256];
    const char *scen[] = {"pos1", "pos2", "pos3"}, *models[] = {"m3rec", "lr"};
    met_board *m = met_board_new(3, scen, 2, models, 0, err, sizeof err);
    json_node *ja = load_json(a), *jb = load_json(b);
    CHECK(met_board_merge_report(m, ja, err, sizeof err) == 0);
    CHECK(met_board_merge_report(m, jb, err, sizeof err) == 0);
    double auc = met_auc_value(met_board_auc(m, model, -1, task), NULL);
    json_free(ja);
    json_free(jb);
    met_board_destroy(m);
    return auc;
}

/* Two workers' reports (the stream's halves) merged into the group's table: counters add,
 * the AUCs are those of the added histograms; another configuration is refused. */
static void test_merge(void) {
    char a[512], b[512], c[512];
    snprintf(a, sizeof a, "%s/a.json", dir);
    snprintf(b, sizeof b, "%s/b.json", dir);
    snprintf(c, sizeof c, "%s/c.json", dir);
    char *wa[] = {OFFLINE, "--mapping", MAPPING, "--set", "model.shadow=lr", "--quiet",
                  "--report", a, TRAIN, NULL};
    char *wb[] = {OFFLINE, "--mapping", MAPPING, "--set", "model.shadow=lr", "--quiet",
                  "--report", b, VAL, TEST, NULL};
    char *wc[] = {OFFLINE, "--mapping", MAPPING, "--set", "model.shadow=lr", "--set",
                  "model.emb.dim=8", "--quiet", "--report", c, VAL, TEST, NULL};
    CHECK_EQ_INT(run(wa, "wa"), 0);
    CHECK_EQ_INT(run(wb, "wb"), 0);
    CHECK_EQ_INT(run(wc, "wc"), 0);
    char *merge[] = {REPORT, "--merge", a, b, NULL};
    CHECK_EQ_INT(run(merge, "merge"), 0);
    const char *out = output("merge", "out");
    CHECK_CONTAINS(out, "group of 2 reports: ");
    CHECK_CONTAINS(out, " 200 impressions");
    CHECK_CONTAINS(out, "not merged (per worker, in each report): slices, timeline");
    char want[128];
    snprintf(want, sizeof want, "overall    ctr    %13.4f %13.4f\n", merged_auc(a, b, 0, MET_CTR),
             merged_auc(a, b, 1, MET_CTR));
    CHECK_CONTAINS(out, want);
    char *other[] = {REPORT, "--merge", a, c, NULL};
    CHECK_EQ_INT(run(other, "other"), 1);
    CHECK_CONTAINS(output("other", "err"),
                   "c.json: refused: another configuration: model.emb.dim=8 here, 16 in");
    char *one[] = {REPORT, "--merge", a, NULL};
    CHECK_EQ_INT(run(one, "one"), 2);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/test_offline.d", M3_BINARY_DIR);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    CHECK(system(cmd) == 0);
    test_span_warning();
    test_replay_all_archs();
    test_oracle_rows();
    test_slice_burnin();
    test_merge();
    printf("test_offline: all checks passed\n");
    return 0;
}
