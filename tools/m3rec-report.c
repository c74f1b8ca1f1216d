/* m3rec-report - compare reports: a table of AUCs per scenario and task next to the
 * oracle's, or a page (HTML with gnuplot figures, and a PNG of AUC over time) of several
 * runs side by side.
 *
 * Usage:
 *   m3rec-report [--oracle ORACLE.json] [--min-gap X] RUN.json [RUN.json ...]
 *   m3rec-report --html OUT.html [--png OUT.png] [--title TEXT] [--bench RESULT.json]
 *                [--oracle ORACLE.json] [--gnuplot PROG] [LABEL=]RUN.json [...]
 * With --min-gap, exits 1 unless every non-lr model of every run closes at least X of the
 * gap between lr and the oracle in every scenario and task (the foundation's quality bar).
 * A run's label on the page is LABEL, or its file name without ".json". Exit codes: 0,
 * 1 (an unreadable report, a failed bar, gnuplot failing or missing for --png), 2 (usage). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "base/buf.h"
#include "base/json.h"
#include "report/page.h"

#define USAGE                                                                                \
    "usage: m3rec-report [--oracle ORACLE.json] [--min-gap X] RUN.json [RUN.json ...]\n"     \
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

/* The smallest gap fraction closed by any non-lr model over scenarios x tasks (and overall). */
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

int main(int argc, char **argv) {
    const char *oracle = NULL, *html = NULL, *png = NULL, *title = NULL, *bench = NULL;
    const char *gnuplot = NULL;
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
        else if (a[0] != '-' && n_args < PAGE_MAX_RUNS) args[n_args++] = a;
        else {
            fprintf(stderr, "%s%s", a[0] == '-' ? "" : "m3rec-report: too many runs\n", USAGE);
            return 2;
        }
    }
    if (n_args == 0 || ((png || title || bench || gnuplot) && !html)) {
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
    for (int r = 0; !rc && !html && r < n_args; r++) {
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
