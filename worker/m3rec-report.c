/* m3rec-report - print a report's AUCs per scenario and task next to the oracle's.
 *
 * Usage: m3rec-report [--oracle ORACLE.json] [--min-gap X] REPORT.json
 * With --min-gap, exits 1 unless every non-lr model closes at least X of the gap
 * between lr and the oracle in every scenario and task (the foundation's quality bar). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "json.h"

static char *slurp(const char *path, char *err, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, n, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *s = malloc(cap);
    size_t got;
    while (s && (got = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) {
            char *t = realloc(s, cap *= 2);
            if (!t) { free(s); s = NULL; }
            else s = t;
        }
    }
    fclose(f);
    if (!s) snprintf(err, n, "%s: out of memory", path);
    else s[len] = 0;
    return s;
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

int main(int argc, char **argv) {
    const char *oracle = NULL, *path = NULL;
    double want = NAN;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--oracle") == 0 && i + 1 < argc) oracle = argv[++i];
        else if (strcmp(argv[i], "--min-gap") == 0 && i + 1 < argc) want = atof(argv[++i]);
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else {
            fprintf(stderr, "usage: m3rec-report [--oracle ORACLE.json] [--min-gap X] REPORT.json\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: m3rec-report [--oracle ORACLE.json] [--min-gap X] REPORT.json\n");
        return 2;
    }
    char err[512];
    json_node *run = load(path, err, sizeof err), *orc = NULL;
    if (run && oracle) orc = load(oracle, err, sizeof err);
    if (!run || (oracle && !orc)) {
        fprintf(stderr, "m3rec-report: %s\n", err);
        return 1;
    }
    int rc = app_print_comparison(stdout, run, orc, err, sizeof err) == 0 ? 0 : 1;
    if (rc) fprintf(stderr, "m3rec-report: %s\n", err);
    if (!rc && !isnan(want)) {
        if (!orc || !json_get(run, "models.lr")) {
            fprintf(stderr, "m3rec-report: --min-gap needs --oracle and an lr model in the run\n");
            rc = 1;
        } else {
            double g = min_gap(run, orc);
            printf("smallest gap closed: %.2f (bar %.2f): %s\n", g, want, g >= want ? "PASS" : "FAIL");
            rc = g >= want ? 0 : 1;
        }
    }
    json_free(run);
    json_free(orc);
    return rc;
}
