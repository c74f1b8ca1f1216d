/* test_twin.c - the C engine against its PyTorch twin (reference/twin.py): forward pass,
 * loss and every gradient, for every architecture, on the fixtures in tests/data.
 *
 * Each fixture (reference/make_fixture.py; format there) holds the configuration, the
 * dense parameters as a C blob written by the twin, embedding rows with their
 * trained-impression counts, UPT preference vectors, one minibatch, and what the twin
 * computed in float64: p_ctr, p_cvr, the loss, the gradient of every dense parameter and
 * of every embedding row. The test sets the same state up in a model, runs forward and
 * backward without an update (m3_debug_grad) and compares.
 *
 * It includes model.c to reach the embedding table and the user table: the counters and
 * the preference vectors are stream state that no public call sets directly.
 *
 * Tolerances (float32 engine against the float64 twin), |c - t| <= RTOL |t| + ATOL s,
 * s = the largest |t| of that quantity (the outputs, the dense block, the rows):
 * RTOL 1e-5 on every element; ATOL 1e-6 only covers elements that are sums with
 * cancellation (a gradient of ~0 made of terms of size s carries float32 rounding of
 * ~1e-7 s per term). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "engine/model.c"

#define RTOL 1e-5
#define ATOL 1e-6

typedef struct {
    const unsigned char *p, *end;
    const char *path;
} rd;

static const void *take(rd *r, size_t n) {
    CHECK_MSG((size_t)(r->end - r->p) >= n, "%s: truncated (need %zu more bytes)", r->path, n);
    const void *q = r->p;
    r->p += n;
    return q;
}
static int32_t take_i32(rd *r) { int32_t v; memcpy(&v, take(r, 4), 4); return v; }
static uint32_t take_u32(rd *r) { uint32_t v; memcpy(&v, take(r, 4), 4); return v; }
static int64_t take_i64(rd *r) { int64_t v; memcpy(&v, take(r, 8), 8); return v; }
static uint64_t take_u64(rd *r) { uint64_t v; memcpy(&v, take(r, 8), 8); return v; }
static float take_f32(rd *r) { float v; memcpy(&v, take(r, 4), 4); return v; }
static double take_f64(rd *r) { double v; memcpy(&v, take(r, 8), 8); return v; }

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s (regenerate with reference/make_fixtures.sh)", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    CHECK(sz > 0);
    unsigned char *b = malloc((size_t)sz);
    CHECK(b != NULL);
    CHECK_EQ_INT(fread(b, 1, (size_t)sz, f), sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* Compare n values; returns the largest |c - t| / (RTOL |t| + ATOL s) (must be <= 1). */
static double compare(const char *arch, const char *what, const float *c, const float *t,
                      size_t n) {
    double s = 0, worst = 0;
    for (size_t i = 0; i < n; i++) s = fmax(s, fabs(t[i]));
    for (size_t i = 0; i < n; i++) {
        double tol = RTOL * fabs(t[i]) + ATOL * s;
        double e = fabs((double)c[i] - t[i]);
        double q = tol > 0 ? e / tol : (e > 0 ? INFINITY : 0);
        if (q > worst) worst = q;
        CHECK_MSG(e <= tol, "%s %s[%zu]: engine %.9g, twin %.9g (|diff| %.3g > tol %.3g)",
                  arch, what, i, c[i], t[i], e, tol);
    }
    return worst;
}

static void check_arch(const char *arch, const char *variant) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/data/twin_%s%s.bin", M3_SOURCE_DIR, arch, variant);
    size_t size;
    unsigned char *buf = read_file(path, &size);
    rd r = { buf, buf + size, path };
    CHECK_MSG(memcmp(take(&r, 4), "M3TF", 4) == 0, "%s: bad magic", path);
    CHECK_MSG(take_u32(&r) == 2, "%s: fixture version (regenerate with reference/make_fixtures.sh)",
              path);
    int32_t v[32];
    for (int i = 0; i < 32; i++) v[i] = take_i32(&r);
    m3_model_cfg c;
    m3_model_cfg_defaults(&c);
    c.slice_user_new = 1;   /* the fixtures were made with it */
    int k = 0;
    c.arch = v[k++]; c.n_scen = v[k++]; c.n_cat = v[k++]; c.n_num = v[k++];
    c.emb_dim = v[k++]; c.n_hidden = v[k++];
    for (int l = 0; l < 4; l++) c.hidden[l] = v[k++];
    c.tower_hidden = v[k++];
    c.n_exp_shared = v[k++]; c.n_exp_scen = v[k++]; c.n_exp_task = v[k++];
    c.mieg = v[k++]; c.upt = v[k++]; c.item_warm = v[k++]; c.mieg_hidden = v[k++];
    c.upt_heads = v[k++]; c.upt_ffn = v[k++];
    c.item_cat_from = v[k++]; c.item_cat_n = v[k++];
    c.item_num_from = v[k++]; c.item_num_n = v[k++];
    int B = v[k++], n_keys = v[k++], n_users = v[k++], n_params = v[k++];
    c.dots = v[k++];   /* a spare 0 in fixtures made before model.dots */
    c.mieg_align = take_f32(&r);
    c.upt_step = take_f32(&r);
    c.upt_step_conv = take_f32(&r);
    c.gate_scale = take_f32(&r);
    c.max_batch = B;
    CHECK_EQ_STR(m3_arch_name(c.arch), arch);
    char err[256];
    m3_model *m = m3_new(&c, err, sizeof err);
    CHECK_MSG(m != NULL, "%s: %s", arch, err);
    /* the twin's layout: the same parameter count, and a blob this engine accepts */
    CHECK_EQ_INT(m3_n_params(m), n_params);
    size_t blob_n = (size_t)take_u64(&r);
    const void *blob = take(&r, blob_n);
    CHECK_MSG(m3_blob_load(m, blob, blob_n, err, sizeof err) == 0, "%s: %s", arch, err);

    int d = c.emb_dim, S = c.n_scen;
    uint64_t *keys = malloc(sizeof(uint64_t) * (size_t)n_keys);
    CHECK(keys != NULL);
    for (int i = 0; i < n_keys; i++) {
        keys[i] = take_u64(&r);
        uint32_t cnt = take_u32(&r);
        int64_t row = emb_lookup(m->emb, keys[i]);
        CHECK(row >= 0);
        memcpy(emb_weights(m->emb, row), take(&r, sizeof(float) * (size_t)d), sizeof(float) * d);
        *emb_count(m->emb, row) = cnt;
    }
    for (int i = 0; i < n_users; i++) {
        uint64_t key = take_u64(&r);
        uint32_t mask = take_u32(&r);
        const unsigned char *pref = take(&r, sizeof(float) * (size_t)S * d);
        int64_t u = users_lookup(m->users, key);
        CHECK(u >= 0);
        for (int s = 0; s < S; s++) {
            if (!(mask >> s & 1u)) continue;
            float e[1024];
            memcpy(e, pref + sizeof(float) * (size_t)s * d, sizeof(float) * d);
            /* one update of step 1 from zero sets P to e exactly and makes it present */
            users_update(m->users, u, s, e, 1.0f);
        }
    }
    m3_example *ex = calloc((size_t)B, sizeof *ex);
    CHECK(ex != NULL);
    for (int i = 0; i < B; i++) {
        ex[i].scenario = take_i32(&r);
        ex[i].ts_ms = take_i64(&r);
        for (int s = 0; s < c.n_cat; s++) ex[i].cat[s] = take_u64(&r);
        for (int s = 0; s < c.n_num; s++) ex[i].num[s] = take_f32(&r);
        ex[i].y_click = take_f32(&r);
        ex[i].y_conv = take_f32(&r);
        ex[i].w_ctr = take_f32(&r);
        ex[i].w_ctcvr = take_f32(&r);
    }
    double loss_t = take_f64(&r);
    const float *pc_t = take(&r, sizeof(float) * (size_t)B);
    const float *pv_t = take(&r, sizeof(float) * (size_t)B);
    const float *dp_t = take(&r, sizeof(float) * (size_t)n_params);
    const float *de_t = take(&r, sizeof(float) * (size_t)n_keys * d);
    CHECK_MSG(r.p == r.end, "%s: %zu trailing bytes", path, (size_t)(r.end - r.p));

    float *pc = malloc(sizeof(float) * (size_t)B * 2), *pv = pc + B;
    float *de = malloc(sizeof(float) * (size_t)n_keys * d);
    float *pt = malloc(sizeof(float) * (size_t)B * 2);
    CHECK(pc != NULL && de != NULL && pt != NULL);
    size_t rows_before = m3_emb_rows(m);
    m3_forward(m, ex, B, pc, pv);
    float loss = m3_debug_grad(m, ex, B);
    CHECK_EQ_INT(m3_emb_rows(m), rows_before);   /* the fixture's keys are all its rows */
    memcpy(pt, pc_t, sizeof(float) * B);
    memcpy(pt + B, pv_t, sizeof(float) * B);
    double q_out = compare(arch, "p_ctr,p_cvr", pc, pt, 2 * (size_t)B);
    float lt = (float)loss_t;
    double q_loss = compare(arch, "loss", &loss, &lt, 1);
    double q_dense = compare(arch, "dparams", m3_debug_dense_grads(m), dp_t, (size_t)n_params);
    int nonzero = 0;
    for (int i = 0; i < n_params; i++) nonzero += dp_t[i] != 0.0f;
    CHECK_MSG(nonzero > n_params / 3, "%s: only %d of %d dense gradients are nonzero", arch,
              nonzero, n_params);
    for (int i = 0; i < n_keys; i++) {
        const float *g = m3_debug_emb_grad(m, keys[i]);
        CHECK_MSG(g != NULL, "%s: row of key %d has no gradient", arch, i);
        memcpy(de + (size_t)i * d, g, sizeof(float) * d);
    }
    double q_rows = compare(arch, "drows", de, de_t, (size_t)n_keys * d);
    char name[64];
    snprintf(name, sizeof name, "%s%s", arch, variant);
    printf("%-18s B=%d params=%d rows=%d  loss %.7f (twin %.7f)  worst |diff|/tol: "
           "outputs %.3f loss %.3f dense %.3f rows %.3f\n", name, B, n_params, n_keys, loss,
           loss_t, q_out, q_loss, q_dense, q_rows);
    free(pc); free(de); free(pt); free(ex); free(keys); free(buf);
    m3_destroy(m);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int a = 0; a < M3_ARCH__COUNT; a++) {
        check_arch(m3_arch_name(a), "");
        if (a != M3_ARCH_LR) check_arch(m3_arch_name(a), "_dots");   /* model.dots */
    }
    return 0;
}
