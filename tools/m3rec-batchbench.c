/* m3rec-batchbench - the C engine's model step on recorded minibatches: the C side of the
 * side-by-side with the PyTorch twin (reference/bench.py, scripts/bench-twin).
 *
 * usage: m3rec-batchbench TRACE [arch=A] [init-out=FILE] [init-in=FILE] [pred-out=FILE]
 *                         [batches=N] [lr_dense=X] [lr_emb=X]
 * TRACE is a file from `m3rec-offline --dump-batches` (common/eval/trace.h). The model is made
 * with the recording run's configuration (arch= overrides the architecture); init-out
 * saves its initial dense blob (the twin starts from it), init-in starts from a blob
 * instead (e.g. one the twin wrote). Each batch is m3_forward (the impressions'
 * predictions are kept) then m3_train, timed together, single-threaded; the trace is read
 * before the clock starts. pred-out writes p_ctr, p_cvr (float32 pairs) of every
 * impression row, in trace order, for reference/bench.py's AUC. lr_dense= and lr_emb=
 * override the recorded step sizes (0 and 0: only the stream state moves, which checks
 * the twin's MIEG admission and UPT updates over a whole trace). Prints one line:
 *   RESULT engine=c arch=A rows=N batches=N seconds=S examples_per_s=R cpu_examples_per_s=R
 *          mean_loss=L */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/buf.h"
#include "base/clock.h"
#include "engine/model.h"
#include "eval/trace.h"

static void usage(const char *bad) {
    fprintf(stderr, "m3rec-batchbench: bad argument '%s'\n"
            "usage: m3rec-batchbench TRACE [arch=A] [init-out=FILE] [init-in=FILE] "
            "[pred-out=FILE] [batches=N] [lr_dense=X] [lr_emb=X]\n", bad);
    exit(2);
}

/* The file's bytes (the caller frees them) and their count, or NULL. */
static void *read_all(const char *path, size_t *n) {
    buf b = {0};
    if (buf_read_file(&b, path) != 0 || b.len == 0) {
        buf_free(&b);
        *n = 0;
        return NULL;
    }
    *n = b.len;
    return buf_take(&b);
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') usage(argc < 2 ? "" : argv[1]);
    const char *path = argv[1], *init_out = NULL, *init_in = NULL, *pred_out = NULL;
    int arch = -1, max_batches = -1;
    double lr_dense = -1, lr_emb = -1;
    for (int i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) usage(argv[i]);
        *eq = '\0';
        const char *k = argv[i], *v = eq + 1;
        if (!strcmp(k, "arch")) { if ((arch = m3_arch_parse(v)) < 0) usage(v); }
        else if (!strcmp(k, "init-out")) init_out = v;
        else if (!strcmp(k, "init-in")) init_in = v;
        else if (!strcmp(k, "pred-out")) pred_out = v;
        else if (!strcmp(k, "batches")) max_batches = atoi(v);
        else if (!strcmp(k, "lr_dense")) lr_dense = atof(v);
        else if (!strcmp(k, "lr_emb")) lr_emb = atof(v);
        else usage(k);
    }
    char err[512];
    trace *t = trace_read(path, err, sizeof err);
    if (!t) { fprintf(stderr, "m3rec-batchbench: %s\n", err); return 1; }
    m3_model_cfg c = t->cfg;
    if (arch >= 0) c.arch = arch;
    if (lr_dense >= 0) c.lr_dense = (float)lr_dense;
    if (lr_emb >= 0) c.lr_emb = (float)lr_emb;
    m3_model *m = m3_new(&c, err, sizeof err);   /* also pins OpenBLAS to one thread */
    if (!m) { fprintf(stderr, "m3rec-batchbench: %s\n", err); return 1; }
    if (init_in) {
        size_t n;
        void *b = read_all(init_in, &n);
        if (!b || m3_blob_load(m, b, n, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-batchbench: %s: %s\n", init_in, b ? err : "cannot read");
            return 1;
        }
        free(b);
    }
    if (init_out) {
        size_t n = m3_blob_size(m);
        void *b = malloc(n);
        FILE *f = fopen(init_out, "wb");
        if (!b || !f || m3_blob_save(m, b, n) != n || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
            fprintf(stderr, "m3rec-batchbench: %s: cannot write\n", init_out);
            return 1;
        }
        free(b);
    }
    int nb = max_batches >= 0 && max_batches < t->n_batches ? max_batches : t->n_batches;
    size_t n_pred = 0;
    for (int b = 0; b < nb; b++) n_pred += (size_t)t->n_imp[b];
    float *pred = malloc(sizeof(float) * 2 * (n_pred ? n_pred : 1));
    float *pc = malloc(sizeof(float) * (size_t)c.max_batch);
    float *pv = malloc(sizeof(float) * (size_t)c.max_batch);
    if (!pred || !pc || !pv) { fprintf(stderr, "m3rec-batchbench: out of memory\n"); return 1; }
    /* wall time of the steps alone; CPU time of the whole process (one thread: OpenBLAS
     * is pinned to one) over the loop */
    double loss = 0, secs = 0, process_cpu0 = clk_process_cpu_s();
    size_t rows = 0, o = 0;
    for (int b = 0; b < nb; b++) {
        const m3_example *ex = t->ex + t->first[b];
        int B = t->B[b];
        double t0 = clk_mono_s();
        m3_forward(m, ex, B, pc, pv);
        loss += m3_train(m, ex);
        secs += clk_mono_s() - t0;
        for (int i = 0; i < t->n_imp[b]; i++) { pred[o++] = pc[i]; pred[o++] = pv[i]; }
        rows += (size_t)B;
    }
    double process_cpu = clk_process_cpu_s() - process_cpu0;
    if (pred_out) {
        FILE *f = fopen(pred_out, "wb");
        if (!f || fwrite(pred, sizeof(float), o, f) != o || fclose(f) != 0) {
            fprintf(stderr, "m3rec-batchbench: %s: cannot write\n", pred_out);
            return 1;
        }
    }
    printf("RESULT engine=c arch=%s rows=%zu batches=%d seconds=%.3f examples_per_s=%.0f "
           "cpu_examples_per_s=%.0f mean_loss=%.5f\n", m3_arch_name(c.arch), rows, nb, secs,
           rows / secs, rows / process_cpu, nb ? loss / nb : 0.0);
    free(pred); free(pc); free(pv);
    m3_destroy(m);
    trace_free(t);
    return 0;
}
