/* test_page.c - the comparison page from small synthetic reports: its sections, values
 * and figures, the PNG, the page without gnuplot, a failing gnuplot, and m3rec-report's
 * command line. Exits 77 (CTest: skipped) after the gnuplot-free checks when gnuplot is
 * not installed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "proc.h"
#include "base/json.h"
#include "report/metrics.h"
#include "report/page.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static double urand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static char dir[] = "/tmp/m3rec-test-page.XXXXXX";

/* The whole of the file `name` in the test's directory (the caller frees it). */
static char *read_in_dir(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = proc_read_file(path, NULL);
    CHECK_MSG(s, "cannot read %s", path);
    return s;
}

/* A report of `n_models` models (names) on 3 scenarios with a timeline of windows of 500:
 * model 0 has signal `skill`, model 1 ("lr") less; "oracle" boards get skill 0.9. */
static json_node *make_report(int n_models, const char **names, double skill, int imps) {
    char err[160];
    const char *scen[] = {"home", "search", "product"};
    met_board *b = met_board_new(3, scen, n_models, names, 12, err, sizeof err);
    CHECK_MSG(b, "%s", err);
    CHECK(met_board_set_timeline(b, 500, 16, err, sizeof err) == 0);
    for (int i = 0; i < imps; i++) {
        int s = i % 3;
        double t = urand();
        int click = urand() < 0.05 + 0.2 * t, conv = click && urand() < 0.3;
        for (int m = 0; m < n_models; m++) {
            double k = m == 0 ? skill : skill / 3;
            double p = 0.1 * (k * t + (1 - k) * urand());
            met_board_add(b, m, s, MET_CTR, p, click);
            met_board_add(b, m, s, MET_CTCVR, p * 0.3, conv);
            if (click) met_board_add(b, m, s, MET_CVR, 0.2 + p, conv);
            met_board_add_slices(b, m, s, i % 7 == 0 ? 1u : i % 11 == 0 ? 2u : 0u, MET_CTR, p, click);
        }
    }
    met_counters *c = met_board_counters(b);
    c->events = c->impressions = (uint64_t)imps;
    json_writer *w = json_writer_new_buf(0);
    met_board_write_json(b, w, NULL, NULL);
    CHECK(json_writer_done(w));
    json_node *j = json_parse(json_writer_buf(w, NULL), err, sizeof err);
    CHECK_MSG(j, "%s", err);
    json_writer_destroy(w);
    met_board_destroy(b);
    return j;
}

/* A small report file for the command-line checks. */
static void write_json_file(const char *path, int n_models, const char **names, double skill) {
    char err[160];
    const char *scen[] = {"home", "search", "product"};
    met_board *b = met_board_new(3, scen, n_models, names, 12, err, sizeof err);
    CHECK(met_board_set_timeline(b, 500, 16, err, sizeof err) == 0);
    for (int i = 0; i < 3000; i++) {
        double t = urand();
        int click = urand() < 0.1 + 0.2 * t;
        for (int m = 0; m < n_models; m++) {
            double k = m == 0 ? skill : skill / 2;
            met_board_add(b, m, i % 3, MET_CTR, k * t + (1 - k) * urand(), click);
            met_board_add(b, m, i % 3, MET_CTCVR, 0.1 * (k * t + (1 - k) * urand()), click && t > 0.5);
        }
    }
    FILE *f = fopen(path, "w");
    CHECK(f);
    json_writer *w = json_writer_new_file(f, 2);
    met_board_write_json(b, w, NULL, NULL);
    CHECK(json_writer_done(w));
    json_writer_destroy(w);
    fclose(f);
    met_board_destroy(b);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Run a shell command; its exit code. */
static int run(const char *cmd) {
    int st = system(cmd);
    CHECK(st != -1 && WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_without_gnuplot(const page_input *base) {
    char html[256], png[256], err[256];
    snprintf(html, sizeof html, "%s/nogp.html", dir);
    snprintf(png, sizeof png, "%s/nogp.png", dir);
    page_input in = *base;
    in.gnuplot = "/nonexistent/gnuplot";
    CHECK(!page_have_gnuplot(in.gnuplot));
    CHECK(!page_have_gnuplot("no-such-program-m3rec"));
    int plotted = -1;
    CHECK(page_write(&in, html, NULL, &plotted, err, sizeof err) == 0);
    CHECK_EQ_INT(plotted, 0);
    char *s = read_in_dir("nogp.html");
    CHECK_CONTAINS(s, "<b>No figures</b>: gnuplot was not found");
    CHECK_CONTAINS(s, "id=auc");
    /* the oracle report's reference predictor: a marked row in the AUC and slice tables,
     * grey, never the bold best (its AUC is above every model's) */
    const char *ref = "<tr class=oracle><td>oracle</td><td><span class=sw style='background:#777777'>"
                      "</span>oracle_learner</td>";
    const char *auc = strstr(s, "id=auc"), *sl = strstr(s, "id=slices");
    CHECK(auc && sl);
    const char *r1 = strstr(auc, ref), *r2 = r1 ? strstr(r1 + 1, ref) : NULL;
    CHECK_MSG(r1 && r1 < sl && r2 && r2 > sl, "the reference predictor's rows are missing");
    const char *end = strstr(r1, "</tr>");
    const char *bold = strstr(r1, "<b>");
    CHECK(end && (!bold || bold > end));
    CHECK(!strstr(s, "<svg"));
    free(s);
    /* a PNG cannot be made: the page is still written, the call fails */
    unlink(html);
    CHECK(page_write(&in, html, png, &plotted, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "gnuplot was not found");
    CHECK(file_size(html) > 0);
    CHECK(file_size(png) == -1);
}

static void test_bad_input(const page_input *base) {
    char html[256], err[256];
    snprintf(html, sizeof html, "%s/bad.html", dir);
    page_input in = *base;
    json_node *empty = json_parse("{\"models\": {}}", err, sizeof err);
    page_run r = {"empty", NULL, empty};
    in.runs = &r;
    in.n_runs = 1;
    CHECK(page_write(&in, html, NULL, NULL, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "empty: no models");
    in = *base;
    in.n_runs = 0;
    CHECK(page_write(&in, html, NULL, NULL, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "0 runs");
    in = *base;
    in.oracle = empty;
    CHECK(page_write(&in, html, NULL, NULL, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "no model \"oracle\"");
    in = *base;
    CHECK(page_write(&in, "/nonexistent-dir/x.html", NULL, NULL, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "/nonexistent-dir/x.html");
    json_free(empty);
}

static void test_with_gnuplot(const page_input *base) {
    char html[256], png[256], err[256];
    snprintf(html, sizeof html, "%s/page.html", dir);
    snprintf(png, sizeof png, "%s/page.png", dir);
    int plotted = 0;
    CHECK_MSG(page_write(base, html, png, &plotted, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(plotted, 1);
    char *s = read_in_dir("page.html");
    /* the sections, in order */
    const char *want[] = {"<!DOCTYPE html>", "<title>test page</title>", "id=bench",
                          "model only (m3rec-offline)", "id=timeline", "<svg",
                          "Throughput over time", "Calibration over time", "id=auc",
                          "id=slices", "id=calibration", "id=runs", "</html>"};
    const char *at = s;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const char *p = strstr(at, want[i]);
        CHECK_MSG(p, "the page lacks \"%s\" (after offset %ld)", want[i], (long)(at - s));
        at = p;
    }
    /* three figures, inlined without their XML prologue */
    int svgs = 0;
    for (const char *p = s; (p = strstr(p, "<svg")); p++) svgs++;
    CHECK_EQ_INT(svgs, 3);
    CHECK(!strstr(s, "<?xml"));
    /* both runs and every model, the oracle; the label is escaped */
    CHECK_CONTAINS(s, "run&lt;1&gt;");
    CHECK_CONTAINS(s, "run2");
    CHECK_CONTAINS(s, ">lr<");
    CHECK_CONTAINS(s, "class=oracle");
    CHECK_CONTAINS(s, "search ctcvr");
    CHECK_CONTAINS(s, "<th>search cvr</th>");                 /* the CVR AUC, a column per scenario */
    CHECK_CONTAINS(s, "<th>log loss cvr</th>");
    CHECK_CONTAINS(s, "<th>new_item cvr</th>");
    CHECK_CONTAINS(s, "Slices per scenario");
    CHECK_CONTAINS(s, "<td>product</td>");
    /* the gnuplot curve titles name run/model */
    CHECK(strstr(s, "<text>run&lt;1>/m3rec</text>") != NULL);
    free(s);
    long n = file_size(png);
    CHECK_MSG(n > 10000, "png of %ld bytes", n);
    FILE *f = fopen(png, "rb");
    unsigned char magic[8];
    CHECK(fread(magic, 1, 8, f) == 8);
    fclose(f);
    CHECK(memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0);

    /* a gnuplot that fails: the page is written without figures, the call fails */
    page_input in = *base;
    in.gnuplot = "/bin/false";
    CHECK(page_write(&in, html, NULL, &plotted, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "/bin/false failed (exit 1)");
    CHECK_EQ_INT(plotted, 0);
    s = read_in_dir("page.html");
    CHECK_CONTAINS(s, "gnuplot failed");
    free(s);
}

static void test_cli(void) {
    char cmd[1024], a[256], b[256], o[256];
    snprintf(a, sizeof a, "%s/alpha.json", dir);
    snprintf(b, sizeof b, "%s/beta.json", dir);
    snprintf(o, sizeof o, "%s/oracle.json", dir);
    const char *two[] = {"shared_bottom", "lr"}, *orc[] = {"oracle"};
    write_json_file(a, 2, two, 0.6);
    write_json_file(b, 2, two, 0.5);
    write_json_file(o, 1, orc, 0.9);
    const char *bin = M3_BINARY_DIR "/m3rec-report";
    /* the text table for two runs, and the quality bar */
    snprintf(cmd, sizeof cmd, "%s --oracle %s %s %s > %s/table.txt", bin, o, a, b, dir);
    CHECK_EQ_INT(run(cmd), 0);
    char *t = read_in_dir("table.txt");
    CHECK_CONTAINS(t, "== alpha (");
    CHECK_CONTAINS(t, "== beta (");
    CHECK_CONTAINS(t, "overall    ctr");
    free(t);
    snprintf(cmd, sizeof cmd, "%s --oracle %s --min-gap 0.99 %s > /dev/null", bin, o, a);
    CHECK_EQ_INT(run(cmd), 1);
    snprintf(cmd, sizeof cmd, "%s --oracle %s --min-gap 0.01 %s > /dev/null", bin, o, a);
    CHECK_EQ_INT(run(cmd), 0);
    /* usage errors */
    snprintf(cmd, sizeof cmd, "%s 2>/dev/null", bin);
    CHECK_EQ_INT(run(cmd), 2);
    snprintf(cmd, sizeof cmd, "%s --png x.png %s 2>/dev/null", bin, a);
    CHECK_EQ_INT(run(cmd), 2);
    snprintf(cmd, sizeof cmd, "%s --bogus %s 2>/dev/null", bin, a);
    CHECK_EQ_INT(run(cmd), 2);
    snprintf(cmd, sizeof cmd, "%s %s/missing.json 2>/dev/null", bin, dir);
    CHECK_EQ_INT(run(cmd), 1);
    /* the page without gnuplot: tables only, exit 0; with --png: exit 1 */
    snprintf(cmd, sizeof cmd, "%s --gnuplot /nonexistent --html %s/cli0.html %s 2>/dev/null", bin, dir, a);
    CHECK_EQ_INT(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s --gnuplot /nonexistent --html %s/cli0.html --png %s/cli0.png %s 2>/dev/null",
             bin, dir, dir, a);
    CHECK_EQ_INT(run(cmd), 1);
}

static void test_cli_page(void) {
    char cmd[1024];
    const char *bin = M3_BINARY_DIR "/m3rec-report";
    snprintf(cmd, sizeof cmd, "%s --html %s/cli.html --png %s/cli.png --title 'CLI page' --oracle "
             "%s/oracle.json first=%s/alpha.json %s/beta.json", bin, dir, dir, dir, dir, dir);
    CHECK_EQ_INT(run(cmd), 0);
    char *s = read_in_dir("cli.html");
    CHECK_CONTAINS(s, "<h1>CLI page</h1>");
    CHECK_CONTAINS(s, ">first<");
    CHECK_CONTAINS(s, ">beta<");
    free(s);
    char path[256];
    snprintf(path, sizeof path, "%s/cli.png", dir);
    CHECK(file_size(path) > 10000);
}

int main(void) {
    CHECK(mkdtemp(dir));
    const char *models[] = {"m3rec", "lr"}, *orc[] = {"oracle", "oracle_learner"};
    json_node *r1 = make_report(2, models, 0.7, 6000);
    json_node *r2 = make_report(2, models, 0.5, 6000);
    json_node *o = make_report(2, orc, 0.9, 6000);   /* the oracle and a reference predictor */
    char err[256];
    json_node *bench = json_parse(
        "{\"command\": \"scripts/bench\", \"events\": 6000, \"seed\": 42, \"repeat\": 3,"
        " \"sgemm_peak_gflops\": 99.5, \"host\": \"test\", \"rows\": ["
        "{\"path\": \"model only (m3rec-offline)\", \"events_per_sec\": 50000, \"runs\": [1, 2, 3],"
        " \"frac_peak\": 0.5, \"latency_p50_ms\": null, \"auc_ctr\": 0.8}]}", err, sizeof err);
    CHECK_MSG(bench, "%s", err);
    page_run runs[2] = {{"run<1>", "a/run1.json", r1}, {"run2", "a/run2.json", r2}};
    page_input in = {.title = "test page", .runs = runs, .n_runs = 2, .oracle = o, .bench = bench};

    test_without_gnuplot(&in);
    test_bad_input(&in);
    test_cli();
    int have = page_have_gnuplot(NULL);
    if (have) {
        test_with_gnuplot(&in);
        test_cli_page();
    }
    json_free(r1);
    json_free(r2);
    json_free(o);
    json_free(bench);
    snprintf(err, sizeof err, "rm -rf '%s'", dir);
    CHECK_EQ_INT(run(err), 0);
    if (!have) {
        printf("test_page: gnuplot not found: figures not tested (skipped)\n");
        return 77;
    }
    printf("test_page: all checks passed\n");
    return 0;
}
