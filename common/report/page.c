/* page.c - the comparison page: JSON reports to one HTML page with gnuplot figures. */
#include "report/page.h"

#include "base/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PAGE__MAX_LINES 64      /* (run, model) curves drawn, oracle included */
#define PAGE__MAX_SCEN 16

/* ---- text for the page and the gnuplot script (base/buf.h) ---- */

/* Text with &, <, >, " escaped for HTML. */
static void page__html(buf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': buf_put(b, "&amp;", 5); break;
        case '<': buf_put(b, "&lt;", 4); break;
        case '>': buf_put(b, "&gt;", 4); break;
        case '"': buf_put(b, "&quot;", 6); break;
        default: buf_put(b, s, 1);
        }
    }
}

/* Text as a gnuplot single-quoted string ('' is a quote; newlines dropped). */
static void page__gpstr(buf *b, const char *s) {
    buf_put(b, "'", 1);
    for (; s && *s; s++) {
        if (*s == '\'') buf_put(b, "''", 2);
        else if (*s != '\n' && *s != '\r') buf_put(b, s, 1);
    }
    buf_put(b, "'", 1);
}

/* ---- reading reports ---- */

static double page__num(const json_node *n, const char *path) {
    return json_number(json_get(n, path), NAN);
}

/* models.<model>.(overall | scenarios.<scen>).<task>: an accumulator object. */
static const json_node *page__acc(const json_node *model, const char *scen, const char *task) {
    const json_node *where = scen ? json_member(json_member(model, "scenarios"), scen)
                                  : json_member(model, "overall");
    return json_member(where, task);
}

/* The same accumulator's timeline series (models.<m>.timeline...). */
static const json_node *page__series(const json_node *model, const char *scen, const char *task) {
    const json_node *tl = json_member(model, "timeline");
    const json_node *where = scen ? json_member(json_member(tl, "scenarios"), scen)
                                  : json_member(tl, "overall");
    return json_member(where, task);
}

/* The report's tasks, as metrics.h names them (a report from before "cvr" shows it empty).
 * The first PAGE__NT_BAR are the quality bar's: the mean and the gap closed are over them. */
#define PAGE__NT 3
#define PAGE__NT_BAR 2
static const char *page__tasks[PAGE__NT] = {"ctr", "ctcvr", "cvr"};

/* One curve: a model of a run (run -1: the --oracle report). */
typedef struct {
    int run;
    const char *label;       /* the run's label */
    const char *model;
    const json_node *m;      /* models.<model> */
    const json_node *rep;    /* the report (for its timeline axis) */
    int color;               /* palette index; the oracle report's lines (run -1): -1 the
                                oracle's black, -2, -3, ... the greys of its reference
                                predictors (oracle_profile, oracle_learner) */
} page__line;

typedef struct {
    const page_input *in;
    page__line lines[PAGE__MAX_LINES];
    int n_lines;
    const char *scen[PAGE__MAX_SCEN];
    int n_scen;
    const char *models[PAGE__MAX_LINES];   /* distinct model names, for colours */
    int n_models;
    double xscale;           /* impressions per x unit */
    const char *xunit;
} page__ctx;

static const char *page__palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
#define PAGE__NPAL (int)(sizeof page__palette / sizeof *page__palette)
/* dash patterns of the runs (gnuplot dt): solid, dashed, dotted, dash-dot, ... */
static const char *page__dashes[] = {"1", "2", "3", "4", "5", "(12,4,2,4,2,4)", "(2,6)", "(20,6)"};
#define PAGE__NDASH (int)(sizeof page__dashes / sizeof *page__dashes)

static const char *page__dash(int run) { return run < 0 ? "1" : page__dashes[run % PAGE__NDASH]; }

static const char *page__color(const page__line *l) {
    static const char *refs[] = {"#000000", "#777777", "#aaaaaa", "#cccccc"};
    if (l->color < 0) return refs[-l->color - 1 < 3 ? -l->color - 1 : 3];
    return page__palette[l->color % PAGE__NPAL];
}

static void page__add_line(page__ctx *c, int run, const char *label, const json_node *rep,
                           const char *model, const json_node *m) {
    if (c->n_lines >= PAGE__MAX_LINES) return;
    page__line *l = &c->lines[c->n_lines++];
    l->run = run;
    l->label = label;
    l->model = model;
    l->m = m;
    l->rep = rep;
    if (run < 0) {   /* the oracle report's lines, the oracle first: black, then greys */
        l->color = -1;
        for (int i = 0; i < c->n_lines - 1; i++) l->color -= c->lines[i].run < 0;
        return;
    }
    int k = 0;
    while (k < c->n_models && strcmp(c->models[k], model) != 0) k++;
    if (k == c->n_models) c->models[c->n_models++] = model;
    l->color = k;
}

static void page__add_scen(page__ctx *c, const json_node *rep) {
    const json_node *sc = json_member(rep, "scenarios");
    for (size_t i = 0; sc && sc->type == JSON_OBJECT && i < sc->n; i++) {
        int k = 0;
        while (k < c->n_scen && strcmp(c->scen[k], sc->keys[i]) != 0) k++;
        if (k == c->n_scen && c->n_scen < PAGE__MAX_SCEN) c->scen[c->n_scen++] = sc->keys[i];
    }
}

static int page__collect(page__ctx *c, char *errstr, size_t n) {
    const page_input *in = c->in;
    if (in->n_runs < 1 || in->n_runs > PAGE_MAX_RUNS) {
        snprintf(errstr, n, "%d runs, want 1..%d", in->n_runs, PAGE_MAX_RUNS);
        return -1;
    }
    for (int r = 0; r < in->n_runs; r++) {
        const json_node *models = json_member(in->runs[r].report, "models");
        if (!models || models->type != JSON_OBJECT || models->n < 1) {
            snprintf(errstr, n, "%s: no models: not an m3rec report?", in->runs[r].label);
            return -1;
        }
        for (size_t m = 0; m < models->n; m++)
            page__add_line(c, r, in->runs[r].label, in->runs[r].report, models->keys[m],
                           &models->items[m]);
        page__add_scen(c, in->runs[r].report);
    }
    const json_node *om = json_get(in->oracle, "models.oracle");
    if (in->oracle && !om) {
        snprintf(errstr, n, "the oracle report has no model \"oracle\"");
        return -1;
    }
    if (om) {   /* the oracle, then its reference predictors (sim.h) */
        page__add_line(c, -1, "oracle", in->oracle, "oracle", om);
        const json_node *all = json_member(in->oracle, "models");
        for (size_t m = 0; m < all->n; m++)
            if (strcmp(all->keys[m], "oracle") != 0)
                page__add_line(c, -1, "oracle", in->oracle, all->keys[m], &all->items[m]);
        page__add_scen(c, in->oracle);
    }
    double xmax = 0;
    for (int i = 0; i < c->n_lines; i++) {
        const json_node *x = json_get(c->lines[i].rep, "timeline.x");
        for (size_t k = 0; x && k < x->n; k++) xmax = fmax(xmax, json_number(&x->items[k], 0));
    }
    c->xscale = xmax >= 2e6 ? 1e6 : 1e3;
    c->xunit = xmax >= 2e6 ? "millions" : "thousands";
    return 0;
}

static const char *page__run_label(const page__ctx *c, int run) {
    return run < 0 ? "oracle" : c->in->runs[run].label;
}

/* "label/model", or the model alone when there is one run (and for the oracle). */
static void page__line_name(const page__ctx *c, const page__line *l, char *out, size_t n) {
    if (l->run < 0 || c->in->n_runs == 1) snprintf(out, n, "%s", l->model);
    else snprintf(out, n, "%s/%s", l->label, l->model);
}

/* ---- the figures (a gnuplot script) ---- */

/* Write one datablock $<name> (when emit) of x (scaled) and the values of a series (NaN
 * where null). Returns the number of finite values. */
static int page__datablock(buf *g, int emit, const char *name, const json_node *x,
                           double xscale, const json_node *y) {
    int good = 0;
    if (emit) buf_printf(g, "$%s << EOD\n", name);
    for (size_t k = 0; x && y && k < x->n && k < y->n; k++) {
        double v = json_number(&y->items[k], NAN);
        good += isfinite(v);
        if (emit) buf_printf(g, "%.6g %.6g\n", json_number(&x->items[k], NAN) / xscale, v);
    }
    if (emit) buf_printf(g, "EOD\n");
    return good;
}

/* The key of a figure as its own panel at the top: every line's style and name. */
static void page__key_panel(buf *g, const page__ctx *c, double y0, double h, int with_lines) {
    buf_printf(g, "set origin 0,%.4f\nset size 1,%.4f\n", y0, h);
    buf_printf(g, "unset border\nunset tics\nunset xlabel\nunset ylabel\nunset title\n"
                  "set xrange [0:1]\nset yrange [0:1]\n"
                  "set key center center horizontal maxcols 4 samplen 3 spacing 1.1 width 2\n");
    buf_printf(g, "plot ");
    int first = 1;
    for (int i = 0; i < c->n_lines; i++) {
        const page__line *l = &c->lines[i];
        if (!with_lines && l->run < 0) continue;
        char name[160];
        page__line_name(c, l, name, sizeof name);
        buf_printf(g, "%sNaN lc rgb '%s' dt %s lw %s title ", first ? "" : ", ", page__color(l),
                   page__dash(l->run), l->run < 0 ? "2.5" : "1.5");
        page__gpstr(g, name);
        first = 0;
    }
    buf_printf(g, "\nset border\nset tics\nunset key\n");
}

/* Figure 1: windowed AUC per (scenario or overall) x task; lines = (run, model). The data
 * is written once (emit_data), a second drawing (the PNG) reuses it. */
static void page__fig_auc(buf *g, page__ctx *c, const char *term, int w, int panel_h,
                          int emit_data) {
    int rows = 1 + c->n_scen;
    int key_rows = (c->n_lines + 3) / 4;
    int key_h = 30 + 18 * key_rows;
    int H = key_h + rows * panel_h;
    buf_printf(g, "set terminal %s size %d,%d\n", term, w, H);
    buf_printf(g, "set output OUT\nset multiplot\n");
    page__key_panel(g, c, (double)(rows * panel_h) / H, (double)key_h / H, 1);
    buf_printf(g, "set grid ytics lc rgb '#dddddd'\nset xrange [0:*]\nset yrange [*:*]\n"
                  "set format y '%%.2f'\nset ytics nomirror\nset xtics nomirror\n");
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < PAGE__NT; t++) {
            const char *scen = r == 0 ? NULL : c->scen[r - 1];
            buf_printf(g, "set origin %.4f,%.4f\nset size %.4f,%.4f\n", (double)t / PAGE__NT,
                       (double)((rows - 1 - r) * panel_h) / H, 1.0 / PAGE__NT,
                       (double)panel_h / H);
            buf_printf(g, "set title '%s %s: AUC of each window' font ',11'\n",
                       scen ? scen : "overall", page__tasks[t]);
            buf_printf(g, "set xlabel 'impressions (%s)' offset 0,0.5\n", c->xunit);
            int plotted = 0;
            buf cmd = {0};
            for (int i = 0; i < c->n_lines; i++) {
                const page__line *l = &c->lines[i];
                char name[32];
                snprintf(name, sizeof name, "a%d_%d_%d", i, r, t);
                const json_node *s = page__series(l->m, scen, page__tasks[t]);
                if (page__datablock(g, emit_data, name, json_get(l->rep, "timeline.x"), c->xscale,
                                    json_member(s, "auc")) == 0)
                    continue;
                buf_printf(&cmd, "%s$%s using 1:2 with lines lc rgb '%s' dt %s lw %s notitle",
                           plotted ? ", " : "plot ", name, page__color(l), page__dash(l->run),
                           l->run < 0 ? "2.5" : "1.5");
                plotted++;
            }
            if (plotted) buf_printf(g, "%s\n", cmd.data);
            else   /* (a fixed y range: gnuplot cannot autoscale a plot without a point) */
                buf_printf(g, "set label 1 'no timeline' at graph 0.5,0.5 center\n"
                              "set yrange [0:1]\nplot NaN notitle\nunset label 1\n"
                              "set yrange [*:*]\n");
            g->oom |= cmd.oom;
            buf_free(&cmd);
        }
    buf_printf(g, "unset multiplot\nunset output\nreset\n");
}

/* Figure 2: impressions per second between consecutive timeline points (the board's clock, from
 * its creation: the first point includes start-up), per run. */
static int page__fig_rate(buf *g, page__ctx *c, const char *term, int w, int h) {
    buf cmd = {0};
    int plotted = 0;
    for (int r = 0; r < c->in->n_runs; r++) {
        const json_node *rep = c->in->runs[r].report;
        const json_node *x = json_get(rep, "timeline.x"), *sec = json_get(rep, "timeline.sec");
        if (!x || !sec || x->n < 2) continue;
        buf_printf(g, "$r%d << EOD\n", r);
        /* the mean rate between consecutive points (evenly spaced, also after a decimation) */
        for (size_t k = 0; k < x->n && k < sec->n; k++) {
            double s = json_number(&sec->items[k], NAN), s0 = k ? json_number(&sec->items[k - 1], NAN) : 0;
            double span = json_number(&x->items[k], NAN) - (k ? json_number(&x->items[k - 1], NAN) : 0);
            buf_printf(g, "%.6g %.6g\n", json_number(&x->items[k], NAN) / c->xscale,
                       span > 0 && s > s0 ? span / (s - s0) : NAN);
        }
        buf_printf(g, "EOD\n");
        buf_printf(&cmd, "%s$r%d using 1:2 with lines lw 1.5 dt %s lc rgb '%s' title ",
                   plotted ? ", " : "plot ", r, page__dash(r), page__palette[r % PAGE__NPAL]);
        page__gpstr(&cmd, c->in->runs[r].label);
        plotted++;
    }
    if (plotted) {
        buf_printf(g, "set terminal %s size %d,%d\nset output OUT\n", term, w, h);
        buf_printf(g, "set title 'Throughput over time: impressions/s between timeline points' font ',11'\n"
                      "set xlabel 'impressions (%s)'\nset ylabel 'impressions/s'\n"
                      "set grid ytics lc rgb '#dddddd'\nset yrange [0:*]\nset xrange [0:*]\n"
                      "set key outside right top noenhanced\n%s\nunset output\nreset\n",
                   c->xunit, cmd.data ? cmd.data : "");
    }
    g->oom |= cmd.oom;
    buf_free(&cmd);
    return plotted;
}

/* Figure 3: calibration over time, overall: mean prediction / observed rate per window. */
static void page__fig_calib(buf *g, page__ctx *c, const char *term, int w, int panel_h) {
    int key_h = 30 + 18 * ((c->n_lines + 3) / 4);
    int H = key_h + panel_h;
    buf_printf(g, "set terminal %s size %d,%d\nset output OUT\nset multiplot\n", term, w, H);
    page__key_panel(g, c, (double)panel_h / H, (double)key_h / H, 1);
    buf_printf(g, "set grid ytics lc rgb '#dddddd'\nset xrange [0:*]\nset yrange [0:2]\n"
                  "set format y '%%.1f'\n");
    for (int t = 0; t < PAGE__NT; t++) {
        buf_printf(g, "set origin %.4f,0\nset size %.4f,%.4f\n", (double)t / PAGE__NT,
                   1.0 / PAGE__NT, (double)panel_h / H);
        buf_printf(g, "set title 'overall %s: mean prediction / observed rate, per window' font ',11'\n"
                      "set xlabel 'impressions (%s)' offset 0,0.5\n", page__tasks[t], c->xunit);
        buf cmd = {0};
        int plotted = 0;
        for (int i = 0; i < c->n_lines; i++) {
            const page__line *l = &c->lines[i];
            const json_node *s = page__series(l->m, NULL, page__tasks[t]);
            const json_node *x = json_get(l->rep, "timeline.x"), *mp = json_member(s, "mean_p"),
                            *rt = json_member(s, "rate");
            if (!x || !mp || !rt) continue;
            buf_printf(g, "$c%d_%d << EOD\n", i, t);
            int good = 0;   /* a line without a point (a report before "cvr") is not drawn */
            for (size_t k = 0; k < x->n && k < mp->n && k < rt->n; k++) {
                double a = json_number(&mp->items[k], NAN), b = json_number(&rt->items[k], NAN);
                good += b > 0 && isfinite(a);
                buf_printf(g, "%.6g %.6g\n", json_number(&x->items[k], NAN) / c->xscale,
                           b > 0 ? a / b : NAN);
            }
            buf_printf(g, "EOD\n");
            if (!good) continue;
            buf_printf(&cmd, "%s$c%d_%d using 1:2 with lines lc rgb '%s' dt %s lw %s notitle",
                       plotted ? ", " : "plot ", i, t, page__color(l), page__dash(l->run),
                       l->run < 0 ? "2.5" : "1.5");
            plotted++;
        }
        if (plotted) buf_printf(g, "%s, 1 with lines lc rgb '#888888' dt 3 notitle\n", cmd.data);
        else buf_printf(g, "plot NaN notitle\n");
        g->oom |= cmd.oom;
        buf_free(&cmd);
    }
    buf_printf(g, "unset multiplot\nunset output\nreset\n");
}

/* ---- running gnuplot ---- */

int page_have_gnuplot(const char *gnuplot) {
    if (!gnuplot) gnuplot = "gnuplot";
    if (strchr(gnuplot, '/')) return access(gnuplot, X_OK) == 0;
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin";
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < sizeof dir - 64) {
            snprintf(dir, sizeof dir, "%.*s/%s", (int)n, path, gnuplot);
            struct stat st;
            if (stat(dir, &st) == 0 && S_ISREG(st.st_mode) && access(dir, X_OK) == 0) return 1;
        }
        path += n + (path[n] == ':');
    }
    return 0;
}

static int page__write_file(const char *path, const char *text, size_t len, char *errstr, size_t n) {
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(errstr, n, "%s: %s", path, strerror(errno));
        return -1;
    }
    int bad = fwrite(text, 1, len, f) != len;
    bad |= fclose(f) != 0;
    if (bad) snprintf(errstr, n, "%s: write failed: %s", path, strerror(errno));
    return bad ? -1 : 0;
}

/* The file's text (the caller frees it), or NULL when it cannot be read. */
static char *page__slurp(const char *path) {
    buf b = {0};
    if (buf_read_file(&b, path) != 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b);
}

/* Run `gnuplot script` with stderr to log; 0 when it exits 0, else -1 with errstr holding
 * gnuplot's first error line. */
static int page__run_gnuplot(const char *gnuplot, const char *script, const char *log,
                             char *errstr, size_t n) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    char *argv[] = {(char *)gnuplot, (char *)script, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, gnuplot, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        snprintf(errstr, n, "cannot run %s: %s", gnuplot, strerror(rc));
        return -1;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) {
            snprintf(errstr, n, "waiting for %s: %s", gnuplot, strerror(errno));
            return -1;
        }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    char *text = page__slurp(log);
    const char *line = text ? text : "";
    /* gnuplot's message is the line after the echoed command and its caret */
    const char *e = strstr(line, "line ");
    if (e) while (e > line && e[-1] != '\n') e--;
    snprintf(errstr, n, "%s failed (%s %d): %.300s", gnuplot,
             WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
             e ? e : line);
    char *nl = strchr(errstr, '\n');
    if (nl) *nl = '\0';
    free(text);
    return -1;
}

/* A table row's first cells: the run, and the model with its colour swatch (the rows of
 * the oracle report - the oracle and its reference predictors - are marked). */
static void page__row_head(buf *b, const page__ctx *c, const page__line *l) {
    buf_printf(b, "<tr%s><td>", l->run < 0 ? " class=oracle" : "");
    page__html(b, page__run_label(c, l->run));
    buf_printf(b, "</td><td><span class=sw style='background:%s'></span>", page__color(l));
    page__html(b, l->model);
    buf_printf(b, "</td>");
}

/* ---- the tables ---- */

static void page__cell_num(buf *b, double x, const char *fmt, int bold) {
    buf_printf(b, "<td class=n>%s", bold ? "<b>" : "");
    if (isfinite(x)) buf_printf(b, fmt, x);
    else buf_printf(b, "&ndash;");
    buf_printf(b, "%s</td>", bold ? "</b>" : "");
}

static void page__runs_table(buf *b, const page__ctx *c) {
    buf_printf(b, "<h2 id=runs>Runs</h2>\n<table>\n<tr><th>run</th><th>file</th><th>primary</th>"
                  "<th>models</th><th>events</th><th>events/s</th><th>input events/s</th>"
                  "<th>elapsed s</th><th>CPU s</th><th>events per CPU s</th><th>latency p50 ms</th><th>p99 ms</th><th>peak RSS MB</th>"
                  "<th>FLOPs/example</th><th>impressions</th><th>clicks</th><th>conversions "
                  "(late, unmatched)</th><th>DLQ</th></tr>\n");
    for (int r = 0; r < c->in->n_runs; r++) {
        const page_run *run = &c->in->runs[r];
        const json_node *j = run->report;
        buf_printf(b, "<tr><td>");
        page__html(b, run->label);
        buf_printf(b, "</td><td>");
        page__html(b, run->path ? run->path : "");
        buf_printf(b, "</td><td>");
        page__html(b, json_string(json_member(j, "primary"), ""));
        buf_printf(b, "</td><td class=n>%zu</td>", json_member(j, "models")->n);
        page__cell_num(b, page__num(j, "events"), "%.0f", 0);
        page__cell_num(b, page__num(j, "events_per_sec"), "%.0f", 0);
        page__cell_num(b, page__num(j, "input_events_per_sec"), "%.0f", 0);
        page__cell_num(b, page__num(j, "elapsed_sec"), "%.1f", 0);
        page__cell_num(b, page__num(j, "cpu_sec"), "%.1f", 0);
        page__cell_num(b, page__num(j, "events") / page__num(j, "cpu_sec"), "%.0f", 0);
        page__cell_num(b, page__num(j, "latency_ms.p50"), "%.1f", 0);
        page__cell_num(b, page__num(j, "latency_ms.p99"), "%.1f", 0);
        page__cell_num(b, page__num(j, "rss_peak_mb"), "%.0f", 0);
        page__cell_num(b, page__num(j, "flops_per_example"), "%.0f", 0);
        page__cell_num(b, page__num(j, "counters.impressions"), "%.0f", 0);
        page__cell_num(b, page__num(j, "counters.clicks"), "%.0f", 0);
        buf_printf(b, "<td class=n>%.0f (%.0f, %.0f)</td>", page__num(j, "counters.conversions"),
                   page__num(j, "counters.late_conversions"),
                   page__num(j, "counters.unmatched_conversions"));
        page__cell_num(b, page__num(j, "counters.dlq"), "%.0f", 0);
        buf_printf(b, "</tr>\n");
    }
    buf_printf(b, "</table>\n");
}

/* The AUC of line l at column k: scenario k/PAGE__NT (== n_scen: overall), task k%PAGE__NT. */
static double page__auc_col(const page__ctx *c, const page__line *l, int k) {
    const char *scen = k / PAGE__NT < c->n_scen ? c->scen[k / PAGE__NT] : NULL;
    return json_number(json_member(page__acc(l->m, scen, page__tasks[k % PAGE__NT]), "auc"), NAN);
}

/* The line of model `name` in the same run as l (NULL when absent). */
static const page__line *page__sibling(const page__ctx *c, const page__line *l, const char *name) {
    for (int i = 0; i < c->n_lines; i++)
        if (c->lines[i].run == l->run && strcmp(c->lines[i].model, name) == 0) return &c->lines[i];
    return NULL;
}

static const page__line *page__oracle_line(const page__ctx *c) {
    for (int i = 0; i < c->n_lines; i++)
        if (c->lines[i].color == -1) return &c->lines[i];
    return NULL;
}

static void page__auc_table(buf *b, const page__ctx *c) {
    int ncol = PAGE__NT * (c->n_scen + 1);
    const page__line *orc = page__oracle_line(c);
    buf_printf(b, "<h2 id=auc>Prequential AUC</h2>\n<p>Every impression scored before the model "
                  "learned from it, over the whole run; <i>cvr</i>: p_cvr against the conversion "
                  "over the clicked impressions. <i>mean</i>: over the scenarios, ctr and ctcvr; "
                  "<i>gap closed</i>: the smallest, over scenarios, ctr and ctcvr, of (model &minus; lr) / "
                  "(oracle &minus; lr), when the run has <code>lr</code> and an oracle is given. "
                  "Bold: the best of a column (the oracle and its reference predictors aside).</p>\n<table>\n<tr><th>run</th>"
                  "<th>model</th>");
    for (int k = 0; k < ncol; k++)
        buf_printf(b, "<th>%s %s</th>", k / PAGE__NT < c->n_scen ? c->scen[k / PAGE__NT] : "overall",
                   page__tasks[k % PAGE__NT]);
    buf_printf(b, "<th>mean</th><th>gap to oracle</th><th>gap closed vs lr</th></tr>\n");
    double best[PAGE__NT * (PAGE__MAX_SCEN + 1) + 1];
    for (int k = 0; k <= ncol; k++) best[k] = -INFINITY;
    double means[PAGE__MAX_LINES];
    for (int i = 0; i < c->n_lines; i++) {
        double sum = 0;
        int cnt = 0;
        for (int k = 0; k < ncol; k++) {
            double a = page__auc_col(c, &c->lines[i], k);
            if (c->lines[i].run >= 0 && a > best[k]) best[k] = a;
            if (k / PAGE__NT < c->n_scen && k % PAGE__NT < PAGE__NT_BAR && isfinite(a)) {
                sum += a;
                cnt++;
            }
        }
        means[i] = cnt ? sum / cnt : NAN;
        if (c->lines[i].run >= 0 && means[i] > best[ncol]) best[ncol] = means[i];
    }
    double orc_mean = NAN;
    for (int i = 0; i < c->n_lines; i++)
        if (&c->lines[i] == orc) orc_mean = means[i];
    for (int i = 0; i < c->n_lines; i++) {
        const page__line *l = &c->lines[i];
        page__row_head(b, c, l);
        for (int k = 0; k < ncol; k++) {
            double a = page__auc_col(c, l, k);
            page__cell_num(b, a, "%.4f", l->run >= 0 && a == best[k]);
        }
        page__cell_num(b, means[i], "%.4f", l->run >= 0 && means[i] == best[ncol]);
        page__cell_num(b, orc_mean - means[i], "%+.4f", 0);
        const page__line *lr = page__sibling(c, l, "lr");
        double worst = NAN;
        if (orc && lr && lr != l && l->run >= 0) {
            worst = INFINITY;
            for (int k = 0; k < ncol; k++) {
                if (k % PAGE__NT >= PAGE__NT_BAR) continue;
                double a = page__auc_col(c, l, k), f = page__auc_col(c, lr, k),
                       o = page__auc_col(c, orc, k);
                double g = (a - f) / (o - f);
                if (!(g >= worst)) worst = g;
            }
        }
        page__cell_num(b, worst, "%.2f", 0);
        buf_printf(b, "</tr>\n");
    }
    buf_printf(b, "</table>\n");
}

static const char *page__slices[2] = {"new_item", "new_user_in_scenario"};

/* One row of slice cells: new_item and new_user_in_scenario, each task (AUC over n). */
static void page__slice_cells(buf *b, const json_node *slices) {
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < PAGE__NT; t++) {
            const json_node *a = json_member(json_member(slices, page__slices[s]), page__tasks[t]);
            double auc = json_number(json_member(a, "auc"), NAN);
            double cnt = json_number(json_member(a, "n"), NAN);
            if (isfinite(auc)) buf_printf(b, "<td class=n>%.4f<br><small>%.0f</small></td>", auc, cnt);
            else buf_printf(b, "<td class=n>&ndash;</td>");
        }
}

static void page__slice_table(buf *b, const page__ctx *c) {
    buf_printf(b, "<h2 id=slices>Slices</h2>\n<p><i>new_item</i>: impressions of a young item "
                  "(fewer than <code>model.item.warm</code> trained impressions); "
                  "<i>new_user_in_scenario</i>: a user's first impressions in a scenario, known in "
                  "another. AUC, and below it the impressions in the slice; over all scenarios, "
                  "then per scenario.</p>\n");
    for (int sc = -1; sc < c->n_scen; sc++) {
        if (sc == 0) buf_printf(b, "<h3>Slices per scenario</h3>\n");
        if (sc <= 0) {
            buf_printf(b, "<table>\n<tr><th>run</th><th>model</th>%s", sc < 0 ? "" : "<th>scenario</th>");
            for (int s = 0; s < 2; s++)
                for (int t = 0; t < PAGE__NT; t++)
                    buf_printf(b, "<th>%s %s</th>", page__slices[s], page__tasks[t]);
            buf_printf(b, "</tr>\n");
        }
        for (int i = 0; i < c->n_lines; i++) {
            const page__line *l = &c->lines[i];
            if (l->run < 0 && !json_member(l->m, "slices")) continue;   /* an older oracle */
            page__row_head(b, c, l);
            if (sc >= 0) {
                buf_printf(b, "<td>");
                page__html(b, c->scen[sc]);
                buf_printf(b, "</td>");
            }
            page__slice_cells(b, sc < 0 ? json_member(l->m, "slices")
                : json_member(json_member(json_member(l->m, "scenarios"), c->scen[sc]), "slices"));
            buf_printf(b, "</tr>\n");
        }
        if (sc < 0 || sc == c->n_scen - 1) buf_printf(b, "</table>\n");
    }
}

static void page__calib_table(buf *b, const page__ctx *c) {
    int ncol = PAGE__NT * (c->n_scen + 1);
    buf_printf(b, "<h2 id=calibration>Calibration</h2>\n<p>Mean prediction / observed rate, "
                  "and their ratio (1 is calibrated; highlighted beyond &plusmn;10%%). "
                  "Log loss overall.</p>\n<table>\n<tr><th>run</th><th>model</th>");
    for (int k = 0; k < ncol; k++)
        buf_printf(b, "<th>%s %s</th>", k / PAGE__NT < c->n_scen ? c->scen[k / PAGE__NT] : "overall",
                   page__tasks[k % PAGE__NT]);
    for (int t = 0; t < PAGE__NT; t++) buf_printf(b, "<th>log loss %s</th>", page__tasks[t]);
    buf_printf(b, "</tr>\n");
    for (int i = 0; i < c->n_lines; i++) {
        const page__line *l = &c->lines[i];
        page__row_head(b, c, l);
        for (int k = 0; k < ncol; k++) {
            const char *scen = k / PAGE__NT < c->n_scen ? c->scen[k / PAGE__NT] : NULL;
            const json_node *a = page__acc(l->m, scen, page__tasks[k % PAGE__NT]);
            double mp = json_number(json_member(a, "mean_p"), NAN), rt = json_number(json_member(a, "rate"), NAN);
            double ratio = mp / rt;
            if (!isfinite(mp) || !isfinite(rt)) {
                buf_printf(b, "<td class=n>&ndash;</td>");
                continue;
            }
            buf_printf(b, "<td class='n%s'>%.4f / %.4f<br><small>%.2f</small></td>",
                       fabs(ratio - 1) > 0.1 ? " off" : "", mp, rt, ratio);
        }
        for (int t = 0; t < PAGE__NT; t++)
            page__cell_num(b, json_number(json_member(page__acc(l->m, NULL, page__tasks[t]), "logloss"), NAN),
                           "%.4f", 0);
        buf_printf(b, "</tr>\n");
    }
    buf_printf(b, "</table>\n");
}

static void page__bench_table(buf *b, const json_node *bench) {
    const json_node *rows = json_member(bench, "rows");
    if (!rows || rows->type != JSON_ARRAY) return;
    buf_printf(b, "<h2 id=bench>Benchmark</h2>\n<p>");
    page__html(b, json_string(json_member(bench, "command"), ""));
    buf_printf(b, "<br>%.0f events, seed %.0f, medians of %.0f runs side by side; single-core "
                  "SGEMM peak %.1f GFLOP/s (measured in the run). ",
               page__num(bench, "events"), page__num(bench, "seed"), page__num(bench, "repeat"),
               page__num(bench, "sgemm_peak_gflops"));
    page__html(b, json_string(json_member(bench, "host"), ""));
    buf_printf(b, "</p>\n<table>\n<tr><th>path</th><th>events/s</th><th>runs</th>"
                  "<th>fraction of SGEMM peak</th><th>latency p50 ms</th><th>p99 ms</th>"
                  "<th>peak RSS MB</th><th>AUC ctr</th><th>AUC ctcvr</th><th>oracle ctr</th>"
                  "<th>oracle ctcvr</th><th>note</th></tr>\n");
    for (size_t i = 0; i < rows->n; i++) {
        const json_node *r = &rows->items[i];
        buf_printf(b, "<tr><td>");
        page__html(b, json_string(json_member(r, "path"), ""));
        buf_printf(b, "</td>");
        page__cell_num(b, page__num(r, "events_per_sec"), "%.0f", 0);
        buf_printf(b, "<td class=n><small>");
        const json_node *runs = json_member(r, "runs");
        for (size_t k = 0; runs && k < runs->n; k++)
            buf_printf(b, "%s%.0f", k ? " " : "", json_number(&runs->items[k], NAN));
        buf_printf(b, "</small></td>");
        double f = page__num(r, "frac_peak");
        page__cell_num(b, 100 * f, "%.1f%%", 0);
        page__cell_num(b, page__num(r, "latency_p50_ms"), "%.1f", 0);
        page__cell_num(b, page__num(r, "latency_p99_ms"), "%.1f", 0);
        page__cell_num(b, page__num(r, "rss_peak_mb"), "%.0f", 0);
        page__cell_num(b, page__num(r, "auc_ctr"), "%.4f", 0);
        page__cell_num(b, page__num(r, "auc_ctcvr"), "%.4f", 0);
        page__cell_num(b, page__num(r, "oracle_ctr"), "%.4f", 0);
        page__cell_num(b, page__num(r, "oracle_ctcvr"), "%.4f", 0);
        buf_printf(b, "<td>");
        page__html(b, json_string(json_member(r, "note"), ""));
        buf_printf(b, "</td></tr>\n");
    }
    buf_printf(b, "</table>\n");
}

static int page__cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The largest and the median timeline bound among the points drawn (NaN when none), and
 * the first window. */
static double page__bounds(const page__ctx *c, double *median, double *first_window) {
    *first_window = NAN;
    *median = NAN;
    size_t n = 0, cap = 0;
    double *all = NULL;
    for (int i = 0; i < c->n_lines; i++) {
        const page__line *l = &c->lines[i];
        *first_window = json_number(json_get(l->rep, "timeline.first_window"), *first_window);
        for (int sc = -1; sc < c->n_scen; sc++)
            for (int t = 0; t < PAGE__NT; t++) {
                const json_node *bd = json_member(page__series(l->m, sc < 0 ? NULL : c->scen[sc],
                                                               page__tasks[t]), "bound");
                for (size_t k = 0; bd && k < bd->n; k++) {
                    double v = json_number(&bd->items[k], NAN);
                    if (!isfinite(v)) continue;
                    if (n == cap) {
                        size_t nc = cap ? 2 * cap : 256;
                        double *t2 = realloc(all, nc * sizeof *all);
                        if (!t2) { free(all); return NAN; }
                        all = t2;
                        cap = nc;
                    }
                    all[n++] = v;
                }
            }
    }
    if (n == 0) { free(all); return NAN; }
    qsort(all, n, sizeof *all, page__cmp_double);
    *median = all[n / 2];
    double worst = all[n - 1];
    free(all);
    return worst;
}

/* Append an SVG file to the page without its XML prologue. */
static int page__inline_svg(buf *b, const char *path) {
    char *svg = page__slurp(path);
    if (!svg) return -1;
    const char *start = strstr(svg, "<svg");
    buf_printf(b, "<div class=fig>%s</div>\n", start ? start : svg);
    free(svg);
    return 0;
}

/* The scratch directory of the figures: the gnuplot script, its log and three SVGs. */
typedef struct {
    char dir[sizeof "/tmp/m3rec-page.XXXXXX"];
    char fig[3][sizeof "/tmp/m3rec-page.XXXXXX" + 32];
    char script[sizeof "/tmp/m3rec-page.XXXXXX" + 32], log[sizeof "/tmp/m3rec-page.XXXXXX" + 32];
} page__tmp;

static int page__tmp_make(page__tmp *t, char *errstr, size_t n) {
    snprintf(t->dir, sizeof t->dir, "/tmp/m3rec-page.XXXXXX");
    if (!mkdtemp(t->dir)) {
        snprintf(errstr, n, "mkdtemp: %s", strerror(errno));
        return -1;
    }
    for (int f = 0; f < 3; f++) snprintf(t->fig[f], sizeof t->fig[f], "%s/fig%d.svg", t->dir, f);
    snprintf(t->script, sizeof t->script, "%s/page.gp", t->dir);
    snprintf(t->log, sizeof t->log, "%s/gnuplot.log", t->dir);
    return 0;
}

/* Remove the scratch directory, or keep it (and say where) when M3REC_PAGE_KEEP is set. */
static void page__tmp_remove(const page__tmp *t) {
    if (getenv("M3REC_PAGE_KEEP")) {
        fprintf(stderr, "m3rec-report: gnuplot script and figures kept in %s\n", t->dir);
        return;
    }
    for (int f = 0; f < 3; f++) unlink(t->fig[f]);
    unlink(t->script);
    unlink(t->log);
    rmdir(t->dir);
}

/* The next figure goes to `out`. */
static void page__gp_output(buf *g, const char *out) {
    buf_printf(g, "OUT = ");
    page__gpstr(g, out);
    buf_printf(g, "\n");
}

/* Write the gnuplot script of the three figures (and the PNG when png_path is not NULL)
 * and run it. *has_rate: the throughput figure has data. Returns 0 when gnuplot drew
 * them, else -1 with errstr. */
static int page__plot(page__ctx *c, const page__tmp *t, const char *gp, const char *png_path,
                      int *has_rate, char *errstr, size_t n) {
    buf g = {0};
    const char *svg = "svg dynamic noenhanced font 'Helvetica,12' background '#ffffff'";
    buf_printf(&g, "set termoption noenhanced\nset datafile missing 'NaN'\n");
    page__gp_output(&g, t->fig[0]);
    page__fig_auc(&g, c, svg, 1500, 260, 1);
    page__gp_output(&g, t->fig[1]);
    *has_rate = page__fig_rate(&g, c, svg, 1200, 320);
    page__gp_output(&g, t->fig[2]);
    page__fig_calib(&g, c, svg, 1500, 300);
    if (png_path) {
        page__gp_output(&g, png_path);
        page__fig_auc(&g, c, "pngcairo noenhanced font 'Sans,10' background '#ffffff'", 1500, 260, 0);
    }
    int rc = 0;
    if (g.oom) {
        snprintf(errstr, n, "out of memory");
        rc = -1;
    }
    if (rc == 0) rc = page__write_file(t->script, g.data, g.len, errstr, n);
    buf_free(&g);
    if (rc == 0) rc = page__run_gnuplot(gp, t->script, t->log, errstr, n);
    return rc;
}

/* The page's head and its first paragraph: title, style, what it holds. */
static void page__head(buf *b, const page_input *in) {
    const char *title = in->title ? in->title : "m3rec comparison";
    buf_printf(b, "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n<title>");
    page__html(b, title);
    buf_printf(b, "</title>\n<style>\n"
               "body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1300px}\n"
               "table{border-collapse:collapse;margin:8px 0 24px;font-size:13px}\n"
               "th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}\n"
               "th{background:#f3f3f3;font-weight:600}\n td.n{text-align:right;font-variant-numeric:tabular-nums}\n"
               "td.off{background:#fde2e2}\n tr.oracle td{background:#f7f7f7;font-style:italic}\n"
               ".sw{display:inline-block;width:10px;height:10px;margin-right:5px;border-radius:2px}\n"
               ".fig svg{width:100%%;height:auto}\n small{color:#666}\n"
               "body>table{display:block;overflow-x:auto;max-width:100%%}\n"
               "</style>\n</head>\n<body>\n<h1>");
    page__html(b, title);
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    buf_printf(b, "</h1>\n<p>%d run%s", in->n_runs, in->n_runs == 1 ? "" : "s");
    if (in->oracle) buf_printf(b, " and the simulator's oracle");
    buf_printf(b, "; written %s by m3rec-report. Sections: ", when);
    if (in->bench) buf_printf(b, "<a href='#bench'>benchmark</a>, ");
    buf_printf(b, "<a href='#timeline'>AUC over time</a>, <a href='#auc'>prequential AUC</a>, "
               "<a href='#slices'>slices</a>, <a href='#calibration'>calibration</a>, "
               "<a href='#runs'>runs</a>.</p>\n");
}

/* The "AUC over time" section: what a point is, then the figures gnuplot drew (figs) or a
 * note saying why there are none (have: gnuplot was found). Returns -1 (with errstr) when
 * a figure is missing. */
static int page__timeline(buf *b, const page__ctx *c, const page__tmp *t, int have, int figs,
                          int has_rate, char *errstr, size_t n) {
    double w0, median, worst = page__bounds(c, &median, &w0);
    buf_printf(b, "<h2 id=timeline>AUC over time</h2>\n<p>Each point is the AUC of the "
               "predictions made in the window of impressions that ends there (first "
               "windows %.0f impressions; the window doubles as the run grows, to keep "
               "memory bounded), per scenario and task. A CTCVR label counts in the window "
               "in which it settled. A window's AUC is within its computed bound of the exact AUC "
               "of its raw scores: %.2g for the median point drawn, %.2g at most (early "
               "windows, whose predictions are still nearly equal). Colours: models; dash "
               "patterns: runs; black: the oracle.</p>\n", w0, median, worst);
    if (!figs) {
        buf_printf(b, "<p><b>No figures</b>: %s.</p>\n",
                   have ? "gnuplot failed (see the message of m3rec-report)"
                     : "gnuplot was not found (Debian: apt-get install gnuplot-nox)");
        return 0;
    }
    int rc = page__inline_svg(b, t->fig[0]);
    if (has_rate) {
        buf_printf(b, "<h3>Throughput over time</h3>\n");
        rc |= page__inline_svg(b, t->fig[1]);
    }
    buf_printf(b, "<h3>Calibration over time</h3>\n");
    rc |= page__inline_svg(b, t->fig[2]);
    if (rc) snprintf(errstr, n, "gnuplot wrote no figure in %s", t->dir);
    return rc;
}

int page_write(const page_input *in, const char *html_path, const char *png_path, int *plotted,
               char *errstr, size_t errstr_size) {
    page__ctx c = {.in = in};
    if (plotted) *plotted = 0;
    if (page__collect(&c, errstr, errstr_size) != 0) return -1;
    int have = page_have_gnuplot(in->gnuplot);
    page__tmp t;
    memset(&t, 0, sizeof t);
    int figs = 0, rc = 0, has_rate = 0;
    if (have) {
        if (page__tmp_make(&t, errstr, errstr_size) != 0) return -1;
        rc = page__plot(&c, &t, in->gnuplot ? in->gnuplot : "gnuplot", png_path, &has_rate,
                        errstr, errstr_size);
        figs = rc == 0;
    }

    buf b = {0};
    page__head(&b, in);
    if (in->bench) page__bench_table(&b, in->bench);
    rc |= page__timeline(&b, &c, &t, have, figs, has_rate, errstr, errstr_size);
    page__auc_table(&b, &c);
    page__slice_table(&b, &c);
    page__calib_table(&b, &c);
    page__runs_table(&b, &c);
    buf_printf(&b, "</body>\n</html>\n");
    int wrc = b.oom ? -1 : page__write_file(html_path, b.data, b.len, errstr, errstr_size);
    if (b.oom) snprintf(errstr, errstr_size, "out of memory");
    buf_free(&b);
    if (have) page__tmp_remove(&t);
    if (wrc != 0) return -1;
    if (plotted) *plotted = figs;
    if (!have && png_path) {
        snprintf(errstr, errstr_size, "no PNG: gnuplot was not found (Debian: apt-get install gnuplot-nox)");
        return -1;
    }
    return have && !figs ? -1 : rc ? -1 : 0;
}
