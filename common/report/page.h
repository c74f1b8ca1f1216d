/* page.h - the comparison page: one or more JSON reports (worker, m3rec-offline, the
 * simulator's oracle, a scripts/bench result) turned into one HTML page with gnuplot
 * figures (AUC over time per scenario and task, throughput and calibration over time)
 * and tables (runs, prequential AUC, slices, calibration, the benchmark), several runs
 * side by side.
 *
 * The figures are drawn by gnuplot (Debian package gnuplot-nox), run as a child process
 * on a generated script; their SVG is inlined into the page, so the page is one file.
 * Without gnuplot the page has its tables only. */
#ifndef M3_PAGE_H
#define M3_PAGE_H
#include <stddef.h>

#include "base/json.h"

#define PAGE_MAX_RUNS 16

typedef struct {
    const char *label;          /* the run's name on the page (e.g. the file's base name) */
    const char *path;           /* where it came from, shown in the runs table (may be NULL) */
    const json_node *report;    /* a worker / m3rec-offline / m3rec-sim report */
} page_run;

typedef struct {
    const char *title;          /* NULL: "m3rec comparison" */
    const page_run *runs;       /* (n_runs), 1..PAGE_MAX_RUNS */
    int n_runs;
    const json_node *oracle;    /* the simulator's report (model "oracle"); may be NULL */
    const json_node *bench;     /* a scripts/bench result.json; may be NULL */
    const char *gnuplot;        /* the gnuplot program; NULL: "gnuplot" on PATH */
} page_input;

/* Whether `gnuplot` (NULL: "gnuplot") is an executable file, by path or on PATH. */
int page_have_gnuplot(const char *gnuplot);

/* Write the page to html_path and, when png_path is not NULL, the AUC-over-time figure
 * as a PNG (1200 pixels wide) to png_path. When gnuplot is missing, the page is written
 * with its tables and a note, and *plotted (if not NULL) is 0; a PNG then cannot be made
 * and -1 is returned after the page is written. Returns 0, or -1 with errstr (a report
 * without models, a file that cannot be written, gnuplot failing: its first error line). */
int page_write(const page_input *in, const char *html_path, const char *png_path, int *plotted,
               char *errstr, size_t errstr_size);

#endif
