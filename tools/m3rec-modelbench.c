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
#include <time.h>
#include <cblas.h>
#include "config/cfg.h"
#include "report/metrics.h"
#include "engine/model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n,
                    0.0f, c, n);
        double g = 2.0 * n * n * (double)n / (now_s() - t0) / 1e9;
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

int main(int argc, char **argv) {
    char err[256];
    m3_cfg wc;   /* the worker's model at its default configuration */
    cfg_defaults(&wc);
    if (cfg_check(&wc, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-modelbench: the default configuration is refused: %s\n", err);
        return 1;
    }
    m3_model_cfg c = wc.model;
    cfg_free(&wc);
    c.arch = M3_ARCH_M3REC;
    c.max_batch = 256;
    c.lr_dense = 1e-3f; c.lr_emb = 0.05f; c.l2_emb = 1e-6f; c.clip_norm = 10.0f;
    c.seed = 1;
    int steps = 2000, want_peak = 1;
    long values = 100000;
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
        else if (!strcmp(k, "steps")) steps = atoi(v);
        else if (!strcmp(k, "values")) values = atol(v);
        else if (!strcmp(k, "scen")) c.n_scen = atoi(v);
        else if (!strcmp(k, "seed")) c.seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "peak")) want_peak = atoi(v);
        else if (!strcmp(k, "hidden")) {
            c.n_hidden = 0;
            for (char *tok = strtok((char *)v, ","); tok && c.n_hidden < M3_MAX_LAYERS;
                 tok = strtok(NULL, ","))
                c.hidden[c.n_hidden++] = atoi(tok);
        } else usage(k);
    }
    if (steps < 1 || values < 1) usage("steps/values");
    m3_model *m = m3_new(&c, err, sizeof err);   /* also pins OpenBLAS to one thread */
    if (!m) { fprintf(stderr, "m3rec-modelbench: %s\n", err); return 1; }
    int B = c.max_batch;

    /* a pool of batches made up front, so generation is not timed */
    enum { POOL = 32 };
    m3_example *pool = calloc((size_t)POOL * B, sizeof *pool);
    float *pc = malloc(sizeof(float) * B), *pv = malloc(sizeof(float) * B);
    if (!pool || !pc || !pv) { fprintf(stderr, "out of memory\n"); return 1; }
    for (int i = 0; i < POOL * B; i++) {
        m3_example *e = &pool[i];
        e->scenario = (int32_t)(next_u64() % c.n_scen);
        for (int s = 0; s < c.n_cat; s++)
            e->cat[s] = m3_feat_key(s, (int64_t)(next_u64() % (uint64_t)values));
        for (int k = 0; k < c.n_num; k++) e->num[k] = (float)(next_u64() % 1000) * 1e-3f;
        e->y_click = (float)(next_u64() % 10 == 0);
        e->y_conv = e->y_click * (float)(next_u64() % 5 == 0);
        e->w_ctr = 1.0f;
        e->w_ctcvr = 1.0f;
    }
    /* warm-up: creates most rows, faults in the buffers */
    for (int s = 0; s < POOL; s++) {
        m3_forward(m, pool + (size_t)s * B, B, pc, pv);
        m3_train(m, pool + (size_t)s * B);
    }
    double t_fwd = 0, t_train = 0, loss = 0, cpu0 = cpu_s();
    for (int s = 0; s < steps; s++) {
        const m3_example *ex = pool + (size_t)(s % POOL) * B;
        double t0 = now_s();
        m3_forward(m, ex, B, pc, pv);
        double t1 = now_s();
        loss += m3_train(m, ex);
        t_fwd += t1 - t0;
        t_train += now_s() - t1;
    }
    double cpu = cpu_s() - cpu0;   /* on a shared machine, wall time includes waiting */
    double n_ex = (double)steps * B, total = t_fwd + t_train;
    double fpe = m3_flops_per_example(m);
    double eps = n_ex / total, gflops = eps * 3.0 * fpe / 1e9;
    double peak = want_peak ? sgemm_peak(1024) : 0.0;
    printf("arch=%s B=%d n_cat=%d n_num=%d d=%d hidden=", m3_arch_name(c.arch), B, c.n_cat,
           c.n_num, c.emb_dim);
    for (int l = 0; l < c.n_hidden; l++) printf(l ? ",%d" : "%d", c.hidden[l]);
    printf(" tower=%d input_dim=%d dense_params=%zu emb_rows=%zu\n", c.tower_hidden,
           m3_input_dim(m), m3_n_params(m), m3_emb_rows(m));
    printf("flops/example (forward) %.0f; train counted as 3x = %.0f\n", fpe, 3 * fpe);
    printf("forward %.2f us/example, train (backward+update) %.2f us/example\n",
           1e6 * t_fwd / n_ex, 1e6 * t_train / n_ex);
    printf("examples/s %.0f   train GFLOP/s %.2f   sgemm peak (1024^3) %.2f GFLOP/s  "
           "-> %.1f%% of peak   mean loss %.4f\n", eps, gflops, peak,
           100.0 * gflops / peak, loss / steps);
    printf("by CPU time: examples/s %.0f   train GFLOP/s %.2f\n", n_ex / cpu,
           n_ex / cpu * 3.0 * fpe / 1e9);
    printf("memory: %zu embedding rows, %.1f bytes/row; %zu users, %.1f bytes/user "
           "(mieg %d, upt %d)\n", m3_emb_rows(m),
           (double)m3_emb_bytes(m) / (double)(m3_emb_rows(m) ? m3_emb_rows(m) : 1),
           m3_user_rows(m),
           (double)m3_user_bytes(m) / (double)(m3_user_rows(m) ? m3_user_rows(m) : 1),
           m3_uses_mieg(m), m3_uses_upt(m));
    double rss_peak;
    met_rss_mb(&rss_peak);
    printf("RESULT arch=%s examples_per_s=%.0f flops_per_example=%.0f train_gflops=%.2f "
           "peak_gflops=%.2f frac_peak=%.3f emb_bytes_per_row=%.1f user_bytes=%.1f "
           "rss_peak_mb=%.0f cpu_examples_per_s=%.0f\n",
           m3_arch_name(c.arch), eps, fpe, gflops, peak, peak > 0 ? gflops / peak : 0.0,
           (double)m3_emb_bytes(m) / (double)(m3_emb_rows(m) ? m3_emb_rows(m) : 1),
           (double)m3_user_bytes(m) / (double)(m3_user_rows(m) ? m3_user_rows(m) : 1),
           rss_peak, n_ex / cpu);
    free(pool); free(pc); free(pv);
    m3_destroy(m);
    return 0;
}
