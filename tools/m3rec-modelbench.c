/* m3rec-modelbench.c - times the model's forward + train step on random examples and
 * compares its FLOP rate with this core's square-SGEMM peak.
 *
 * usage: m3rec-modelbench [arch=m3rec] [B=256] [n_cat=N] [n_num=N] [d=N] [hidden=N,N]
 *                         [tower=N] [steps=2000] [values=100000] [scen=N] [seed=1] [peak=1]
 * Every size not given (fields, scenarios, layers, experts, MIEG, UPT, interactions) is the
 * worker's at its default configuration (cfg_defaults), so the benchmark follows the
 * product's defaults instead of repeating them.
 * It also reports the measured bytes per embedding row and per tracked user.
 * `values` is the number of distinct values per categorical slot (embedding rows grow
 * towards n_cat*values). Train FLOPs are counted as 3x m3_flops_per_example(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "base/clock.h"
#include "config/cfg.h"
#include "report/metrics.h"
#include "engine/model.h"

static uint64_t rng = 0x1234567;
static uint64_t next_u64(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

/* Best of a few n x n x n SGEMMs, in GFLOP/s. */
static double sgemm_peak(int n) {
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n);
    float *c = calloc((size_t)n * n, sizeof(float));
    if (!a || !b || !c) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (int i = 0; i < n * n; i++) {
        a[i] = (float)(next_u64() % 1000) * 1e-3f;
        b[i] = (float)(next_u64() % 1000) * 1e-3f;
    }
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = clk_mono_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n,
                    0.0f, c, n);
        double g = 2.0 * n * n * (double)n / (clk_mono_s() - t0) / 1e9;
        if (g > best) best = g;
    }
    free(a); free(b); free(c);
    return best;
}

static void usage(const char *bad) {
    fprintf(stderr, "m3rec-modelbench: bad argument '%s'\n"
            "usage: m3rec-modelbench [arch=lr|shared_bottom|mmoe|ple|star|m3rec|...] [B=256] [n_cat=N] "
            "[n_num=N] [d=N] [hidden=N,N] [tower=N] [steps=2000] [values=100000] [scen=N] "
            "[seed=1] [peak=1]\n(sizes not given: the worker's default configuration)\n", bad);
    exit(2);
}

/* What to run: the model's configuration, the steps and the value range. */
typedef struct {
    m3_model_cfg c;
    int steps, want_peak;
    long values;
} bench_args;

/* The worker's model at its default configuration, with the bench's own step sizes and
 * batch, then the sizes the command line gives. Exits 1 when the defaults are refused,
 * 2 on a bad argument. */
static void parse_args(bench_args *a, int argc, char **argv) {
    char err[256];
    m3_cfg wc;
    cfg_defaults(&wc);
    if (cfg_check(&wc, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-modelbench: the default configuration is refused: %s\n", err);
        exit(1);
    }
    m3_model_cfg c = wc.model;
    cfg_free(&wc);
    c.arch = M3_ARCH_M3REC;
    c.max_batch = 256;
    c.lr_dense = 1e-3f; c.lr_emb = 0.05f; c.l2_emb = 1e-6f; c.clip_norm = 10.0f;
    c.seed = 1;
    a->steps = 2000;
    a->want_peak = 1;
    a->values = 100000;
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) usage(argv[i]);
        *eq = '\0';
        const char *k = argv[i], *v = eq + 1;
        if (!strcmp(k, "arch")) {
            if ((c.arch = m3_arch_parse(v)) < 0) usage(v);
        } else if (!strcmp(k, "B")) c.max_batch = atoi(v);
        else if (!strcmp(k, "n_cat")) c.n_cat = atoi(v);
        else if (!strcmp(k, "n_num")) c.n_num = atoi(v);
        else if (!strcmp(k, "d")) c.emb_dim = atoi(v);
        else if (!strcmp(k, "tower")) c.tower_hidden = atoi(v);
        else if (!strcmp(k, "steps")) a->steps = atoi(v);
        else if (!strcmp(k, "values")) a->values = atol(v);
        else if (!strcmp(k, "scen")) c.n_scen = atoi(v);
        else if (!strcmp(k, "seed")) c.seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "peak")) a->want_peak = atoi(v);
        else if (!strcmp(k, "hidden")) {
            c.n_hidden = 0;
            for (char *tok = strtok((char *)v, ","); tok && c.n_hidden < M3_MAX_LAYERS;
                 tok = strtok(NULL, ","))
                c.hidden[c.n_hidden++] = atoi(tok);
        } else usage(k);
    }
    if (a->steps < 1 || a->values < 1) usage("steps/values");
    a->c = c;
}

/* n random examples, values distinct values per slot. Exits 1 when out of memory. */
static m3_example *make_pool(const m3_model_cfg *c, size_t n, long values) {
    m3_example *pool = calloc(n, sizeof *pool);
    if (!pool) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) {
        m3_example *e = &pool[i];
        e->scenario = (int32_t)(next_u64() % c->n_scen);
        for (int s = 0; s < c->n_cat; s++)
            e->cat[s] = m3_feat_key(s, (int64_t)(next_u64() % (uint64_t)values));
        for (int k = 0; k < c->n_num; k++) e->num[k] = (float)(next_u64() % 1000) * 1e-3f;
        e->y_click = (float)(next_u64() % 10 == 0);
        e->y_conv = e->y_click * (float)(next_u64() % 5 == 0);
        e->w_ctr = 1.0f;
        e->w_ctcvr = 1.0f;
    }
    return pool;
}

/* The timed run: wall time of the forward passes and of the training steps apart, and
 * the process's CPU time of all of it (on a shared machine, wall time includes waiting;
 * the process is one thread here, OpenBLAS being pinned to one). */
typedef struct {
    double fwd_s, train_s, process_cpu_s, loss;
} bench_times;

static bench_times run_steps(m3_model *m, const m3_example *pool, int n_pool, int B, int steps,
                             float *pc, float *pv) {
    bench_times r = {0};
    double cpu0 = clk_process_cpu_s();
    for (int s = 0; s < steps; s++) {
        const m3_example *ex = pool + (size_t)(s % n_pool) * B;
        double t0 = clk_mono_s();
        m3_forward(m, ex, B, pc, pv);
        double t1 = clk_mono_s();
        r.loss += m3_train(m, ex);
        r.fwd_s += t1 - t0;
        r.train_s += clk_mono_s() - t1;
    }
    r.process_cpu_s = clk_process_cpu_s() - cpu0;
    return r;
}

static void report(m3_model *m, const m3_model_cfg *c, const bench_times *r, int steps,
                   double peak) {
    int B = c->max_batch;
    double n_ex = (double)steps * B, total = r->fwd_s + r->train_s, cpu = r->process_cpu_s;
    double fpe = m3_flops_per_example(m);
    double eps = n_ex / total, gflops = eps * 3.0 * fpe / 1e9;
    double row_bytes = (double)m3_emb_bytes(m) / (double)(m3_emb_rows(m) ? m3_emb_rows(m) : 1);
    double user_bytes = (double)m3_user_bytes(m) / (double)(m3_user_rows(m) ? m3_user_rows(m) : 1);
    printf("arch=%s B=%d n_cat=%d n_num=%d d=%d hidden=", m3_arch_name(c->arch), B, c->n_cat,
           c->n_num, c->emb_dim);
    for (int l = 0; l < c->n_hidden; l++) printf(l ? ",%d" : "%d", c->hidden[l]);
    printf(" tower=%d input_dim=%d dense_params=%zu emb_rows=%zu\n", c->tower_hidden,
           m3_input_dim(m), m3_n_params(m), m3_emb_rows(m));
    printf("flops/example (forward) %.0f; train counted as 3x = %.0f\n", fpe, 3 * fpe);
    printf("forward %.2f us/example, train (backward+update) %.2f us/example\n",
           1e6 * r->fwd_s / n_ex, 1e6 * r->train_s / n_ex);
    printf("examples/s %.0f   train GFLOP/s %.2f   sgemm peak (1024^3) %.2f GFLOP/s  "
           "-> %.1f%% of peak   mean loss %.4f\n", eps, gflops, peak,
           100.0 * gflops / peak, r->loss / steps);
    printf("by CPU time: examples/s %.0f   train GFLOP/s %.2f\n", n_ex / cpu,
           n_ex / cpu * 3.0 * fpe / 1e9);
    printf("memory: %zu embedding rows, %.1f bytes/row; %zu users, %.1f bytes/user "
           "(mieg %d, upt %d)\n", m3_emb_rows(m), row_bytes, m3_user_rows(m), user_bytes,
           m3_uses_mieg(m), m3_uses_upt(m));
    double rss_peak;
    met_rss_mb(&rss_peak);
    printf("RESULT arch=%s examples_per_s=%.0f flops_per_example=%.0f train_gflops=%.2f "
           "peak_gflops=%.2f frac_peak=%.3f emb_bytes_per_row=%.1f user_bytes=%.1f "
           "rss_peak_mb=%.0f cpu_examples_per_s=%.0f\n",
           m3_arch_name(c->arch), eps, fpe, gflops, peak, peak > 0 ? gflops / peak : 0.0,
           row_bytes, user_bytes, rss_peak, n_ex / cpu);
}

int main(int argc, char **argv) {
    bench_args a;
    parse_args(&a, argc, argv);
    char err[256];
    m3_model *m = m3_new(&a.c, err, sizeof err);   /* also pins OpenBLAS to one thread */
    if (!m) { fprintf(stderr, "m3rec-modelbench: %s\n", err); return 1; }
    int B = a.c.max_batch;
    /* a pool of batches made up front, so generation is not timed */
    enum { POOL = 32 };
    m3_example *pool = make_pool(&a.c, (size_t)POOL * B, a.values);
    float *pc = malloc(sizeof(float) * B), *pv = malloc(sizeof(float) * B);
    if (!pc || !pv) { fprintf(stderr, "out of memory\n"); return 1; }
    /* warm-up: creates most rows, faults in the buffers */
    for (int s = 0; s < POOL; s++) {
        m3_forward(m, pool + (size_t)s * B, B, pc, pv);
        m3_train(m, pool + (size_t)s * B);
    }
    bench_times r = run_steps(m, pool, POOL, B, a.steps, pc, pv);
    double peak = a.want_peak ? sgemm_peak(1024) : 0.0;
    report(m, &a.c, &r, a.steps, peak);
    free(pool); free(pc); free(pv);
    m3_destroy(m);
    return 0;
}
