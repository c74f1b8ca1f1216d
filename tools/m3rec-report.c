/* m3rec-report - compare reports: a table of AUCs per scenario and task next to the
 * oracle's, or a page (HTML with gnuplot figures, and a PNG of AUC over time) of several
 * runs side by side.
 *
 * Usage:
 *   m3rec-report [--oracle ORACLE.json] [--min-gap X] RUN.json [RUN.json ...]
 *   m3rec-report --merge [--oracle ORACLE.json] WORKER.json WORKER.json [...]
 *   m3rec-report --html OUT.html [--png OUT.png] [--title TEXT] [--bench RESULT.json]
 *                [--oracle ORACLE.json] [--gnuplot PROG] [LABEL=]RUN.json [...]
 * With --min-gap, exits 1 unless every non-lr model of every run closes at least X of the
 * gap between lr and the oracle in every scenario for ctr and ctcvr (the foundation's
 * quality bar; the table's cvr rows are not held to it).
 * A run's label on the page is LABEL, or its file name without ".json".
 * --merge: the reports of a group's workers (each predicted its own share of one stream)
 * make one table of the group's prequential AUCs: their histograms add, per scenario x
 * task x model, and so do their counters. Reports from another configuration (their
 * "config" keys differ) or another model set are refused with the reason. Exit codes: 0,
 * 1 (an unreadable report, a failed bar, gnuplot failing or missing for --png), 2 (usage). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "base/buf.h"
#include "base/json.h"
#include "report/metrics.h"
#include "report/page.h"

#define USAGE                                                                                \
    "usage: m3rec-report [--oracle ORACLE.json] [--min-gap X] RUN.json [RUN.json ...]\n"     \
    "       m3rec-report --merge [--oracle ORACLE.json] WORKER.json WORKER.json [...]\n"     \
    "       m3rec-report --html OUT.html [--png OUT.png] [--title TEXT] [--bench RESULT.json]\n" \
    "                    [--oracle ORACLE.json] [--gnuplot PROG] [LABEL=]RUN.json [...]\n"

static char *slurp(const char *path, char *err, size_t n) {
    buf b = {0};
    if (buf_read_file(&b, path) != 0) {
        snprintf(err, n, "%s: %s", path, strerror(errno));
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b);
}

static json_node *load(const char *path, char *err, size_t n) {
    char *text = slurp(path, err, n);
    if (!text) return NULL;
    char perr[256];
    json_node *j = json_parse(text, perr, sizeof perr);
    if (!j) snprintf(err, n, "%s: %s", path, perr);
    free(text);
    return j;
}

/* The smallest gap fraction closed by any non-lr model over scenarios x {ctr, ctcvr} (and
 * overall): the bar is on the two tasks scored on every impression; the cvr rows (clicked
 * impressions only) are printed, not held to it. */
static double min_gap(const json_node *run, const json_node *orc) {
    const json_node *models = json_member(run, "models"), *scens = json_member(run, "scenarios");
    double worst = INFINITY;
    static const char *tasks[] = {"ctr", "ctcvr"};
    for (size_t m = 0; models && m < models->n; m++) {
        if (strcmp(models->keys[m], "lr") == 0) continue;
        for (size_t s = 0; s <= scens->n; s++)
            for (int t = 0; t < 2; t++) {
                char pm[256], pl[256], po[256];
                const char *where = s < scens->n ? scens->keys[s] : NULL;
                if (where) {
                    snprintf(pm, sizeof pm, "%s.scenarios.%s.%s.auc", models->keys[m], where, tasks[t]);
                    snprintf(pl, sizeof pl, "lr.scenarios.%s.%s.auc", where, tasks[t]);
                    snprintf(po, sizeof po, "oracle.scenarios.%s.%s.auc", where, tasks[t]);
                } else {
                    snprintf(pm, sizeof pm, "%s.overall.%s.auc", models->keys[m], tasks[t]);
                    snprintf(pl, sizeof pl, "lr.overall.%s.auc", tasks[t]);
                    snprintf(po, sizeof po, "oracle.overall.%s.auc", tasks[t]);
                }
                double a = json_number(json_get(models, pm), NAN);
                double lr = json_number(json_get(models, pl), NAN);
                double o = json_number(json_get(json_member(orc, "models"), po), NAN);
                double g = (a - lr) / (o - lr);
                if (!(g >= worst)) worst = g; /* NaN counts as a failure */
            }
    }
    return worst;
}

/* "dir/name.json" -> "name"; "label=path" -> "label" (path in *path). */
static void run_label(const char *arg, char *label, size_t n, const char **path) {
    const char *eq = strchr(arg, '=');
    if (eq && eq != arg && !memchr(arg, '/', (size_t)(eq - arg))) {
        snprintf(label, n, "%.*s", (int)(eq - arg), arg);
        *path = eq + 1;
        return;
    }
    *path = arg;
    const char *base = strrchr(arg, '/');
    base = base ? base + 1 : arg;
    size_t len = strlen(base);
    if (len > 5 && strcmp(base + len - 5, ".json") == 0) len -= 5;
    snprintf(label, n, "%.*s", (int)len, base);
}

/* Do two reports' "config" objects agree? Returns 1, or 0 with why naming the first key that
 * differs. */
static int same_config(const json_node *a, const json_node *b, const char *pa, char *why, size_t n) {
    const json_node *ca = json_member(a, "config"), *cb = json_member(b, "config");
    if (!ca || !cb || ca->type != JSON_OBJECT || cb->type != JSON_OBJECT) {
        snprintf(why, n, "no \"config\" in %s (a report from before --merge existed?)",
                 !ca ? "this report" : pa);
        return 0;
    }
    for (int pass = 0; pass < 2; pass++) {   /* every key of a in b, then of b in a */
        const json_node *x = pass ? cb : ca, *y = pass ? ca : cb;
        for (size_t i = 0; i < x->n; i++) {
            const char *vx = json_string(&x->items[i], ""), *vy = json_string(json_member(y, x->keys[i]), NULL);
            if (vy && strcmp(vx, vy) == 0) continue;
            const char *here = pass ? vy : vx, *there = pass ? vx : vy;
            snprintf(why, n, "another configuration: %s=%s here, %s in %s", x->keys[i],
                     here ? here : "(unset)", there ? there : "(unset)", pa);
            return 0;
        }
    }
    return 1;
}

/* A board shaped like report r: its models, its scenarios, its histograms' bins. NULL with
 * err when r has none of them. */
static met_board *board_like(const json_node *r, char *err, size_t n) {
    const json_node *models = json_member(r, "models");
    const json_node *first = models && models->type == JSON_OBJECT && models->n ? &models->items[0] : NULL;
    const json_node *scens = json_member(first, "scenarios");
    if (!first || !scens || scens->type != JSON_OBJECT || !scens->n || scens->n > M3_MAX_SCEN ||
        models->n > MET_MAX_MODELS) {
        snprintf(err, n, "no models or scenarios: not an m3rec report?");
        return NULL;
    }
    const char *mn[MET_MAX_MODELS], *sn[M3_MAX_SCEN];
    for (size_t i = 0; i < models->n; i++) mn[i] = models->keys[i];
    for (size_t i = 0; i < scens->n; i++) sn[i] = scens->keys[i];
    int bits = (int)json_number(json_get(first, "hist.overall.ctr.bits"), 0);
    return met_board_new((int)scens->n, sn, (int)models->n, mn, bits, err, n);
}

/* --merge: the group's table. Returns the exit code. */
static int merge_reports(json_node *const *runs, const page_run *pr, int n, const json_node *orc) {
    char err[512];
    met_board *b = board_like(runs[0], err, sizeof err);
    if (!b) {
        fprintf(stderr, "m3rec-report: %s: %s\n", pr[0].path, err);
        return 1;
    }
    double pending = 0;
    int rc = 0;
    for (int r = 0; r < n && !rc; r++) {
        if ((r > 0 && !same_config(runs[r], runs[0], pr[0].path, err, sizeof err)) ||
            met_board_merge_report(b, runs[r], err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-report: %s: refused: %s\n", pr[r].path, err);
            rc = 1;
        }
        pending += json_number(json_member(runs[r], "pending"), 0);
    }
    json_writer *w = rc ? NULL : json_writer_new_buf(0);
    json_node *merged = NULL;
    if (w) {
        met_board_write_json(b, w, NULL, NULL);
        size_t len;
        const char *text = json_writer_buf(w, &len);
        merged = text ? json_parse(text, err, sizeof err) : NULL;
        json_writer_destroy(w);
    }
    if (!rc && !merged) {
        fprintf(stderr, "m3rec-report: cannot render the merged board: %s\n", err);
        rc = 1;
    }
    if (!rc) {
        const met_counters *c = met_board_counters(b);
        printf("group of %d reports: %llu events, %llu impressions, %llu clicks, %llu conversions "
               "(%llu late, %llu unmatched), %llu dlq, %.0f pending\n", n,
               (unsigned long long)c->events, (unsigned long long)c->impressions,
               (unsigned long long)c->clicks, (unsigned long long)c->conversions,
               (unsigned long long)c->late_conversions, (unsigned long long)c->unmatched_conversions,
               (unsigned long long)c->dlq, pending);
        if (app_print_comparison(stdout, merged, orc, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-report: %s\n", err);
            rc = 1;
        }
        printf("not merged (per worker, in each report): slices, timeline, latency, rss, "
               "elapsed and cpu time, events per second\n");
    }
    json_free(merged);
    met_board_destroy(b);
    return rc;
}

int main(int argc, char **argv) {
    const char *oracle = NULL, *html = NULL, *png = NULL, *title = NULL, *bench = NULL;
    const char *gnuplot = NULL;
    int merge = 0;
    const char *args[PAGE_MAX_RUNS];
    int n_args = 0;
    double want = NAN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (strcmp(a, "--oracle") == 0 && more) oracle = argv[++i];
        else if (strcmp(a, "--min-gap") == 0 && more) want = atof(argv[++i]);
        else if (strcmp(a, "--html") == 0 && more) html = argv[++i];
        else if (strcmp(a, "--png") == 0 && more) png = argv[++i];
        else if (strcmp(a, "--title") == 0 && more) title = argv[++i];
        else if (strcmp(a, "--bench") == 0 && more) bench = argv[++i];
        else if (strcmp(a, "--gnuplot") == 0 && more) gnuplot = argv[++i];
        else if (strcmp(a, "--merge") == 0) merge = 1;
        else if (a[0] != '-' && n_args < PAGE_MAX_RUNS) args[n_args++] = a;
        else {
            fprintf(stderr, "%s%s", a[0] == '-' ? "" : "m3rec-report: too many runs\n", USAGE);
            return 2;
        }
    }
    if (n_args == 0 || ((png || title || bench || gnuplot) && !html) ||
        (merge && (html || !isnan(want) || n_args < 2))) {
        fprintf(stderr, USAGE);
        return 2;
    }
    char err[512];
    int rc = 0;
    json_node *orc = NULL, *bj = NULL, *runs[PAGE_MAX_RUNS] = {0};
    page_run pr[PAGE_MAX_RUNS];
    char labels[PAGE_MAX_RUNS][128];
    if (oracle && !(orc = load(oracle, err, sizeof err))) rc = 1;
    if (!rc && bench && !(bj = load(bench, err, sizeof err))) rc = 1;
    for (int r = 0; !rc && r < n_args; r++) {
        run_label(args[r], labels[r], sizeof labels[r], &pr[r].path);
        pr[r].label = labels[r];
        if (!(runs[r] = load(pr[r].path, err, sizeof err))) rc = 1;
        pr[r].report = runs[r];
    }
    if (rc) fprintf(stderr, "m3rec-report: %s\n", err);
    if (!rc && merge) rc = merge_reports(runs, pr, n_args, orc);
    for (int r = 0; !rc && !html && !merge && r < n_args; r++) {
        if (n_args > 1) printf("%s== %s (%s)\n", r ? "\n" : "", pr[r].label, pr[r].path);
        if (app_print_comparison(stdout, runs[r], orc, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-report: %s: %s\n", pr[r].path, err);
            rc = 1;
            break;
        }
        if (isnan(want)) continue;
        if (!orc || !json_get(runs[r], "models.lr")) {
            fprintf(stderr, "m3rec-report: --min-gap needs --oracle and an lr model in the run\n");
            rc = 1;
            break;
        }
        double g = min_gap(runs[r], orc);
        printf("smallest gap closed: %.2f (bar %.2f): %s\n", g, want, g >= want ? "PASS" : "FAIL");
        if (!(g >= want)) rc = 1;
    }
    if (!rc && html) {
        page_input in = {.title = title, .runs = pr, .n_runs = n_args, .oracle = orc,
                         .bench = bj, .gnuplot = gnuplot};
        int plotted = 0;
        if (page_write(&in, html, png, &plotted, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-report: %s\n", err);
            rc = 1;
        }
        if (!plotted) fprintf(stderr, "m3rec-report: %s has tables only (no figures)\n", html);
    }
    json_free(orc);
    json_free(bj);
    for (int r = 0; r < n_args; r++) json_free(runs[r]);
    return rc;
}
