/* test_nn.c - nn layers: BLAS paths vs plain loops, backward vs finite differences,
 * the ESMM head's gradient and stability, Adam and clipping. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "check.h"
#include "engine/nn.h"

static uint64_t rng_state = 12345;
static float frand(void) {   /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rnd(size_t n, float scale) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = scale * frand();
    return p;
}
static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

static void check_vec_close(const float *a, const float *b, size_t n, double rtol,
                            double atol) {
    for (size_t i = 0; i < n; i++) CHECK_CLOSE(a[i], b[i], rtol, atol);
}

/* BLAS forward/backward equal the plain-loop twins, with and without bias/dinp. */
static void test_linear_blas_vs_ref(int B, int IN, int OUT, int with_bias, int with_dinp) {
    float *inp = rnd((size_t)B * IN, 1.0f), *W = rnd((size_t)OUT * IN, 0.5f);
    float *b = with_bias ? rnd(OUT, 0.5f) : NULL;
    float *o1 = zeros((size_t)B * OUT), *o2 = zeros((size_t)B * OUT);
    nn_linear_forward(o1, inp, W, b, B, IN, OUT);
    nn_linear_forward_ref(o2, inp, W, b, B, IN, OUT);
    check_vec_close(o1, o2, (size_t)B * OUT, 1e-5, 1e-5);

    float *dout = rnd((size_t)B * OUT, 1.0f);
    /* start gradients non-zero to check both accumulate */
    float *di1 = rnd((size_t)B * IN, 0.3f), *di2 = malloc(sizeof(float) * B * IN);
    float *dW1 = rnd((size_t)OUT * IN, 0.3f), *dW2 = malloc(sizeof(float) * OUT * IN);
    float *db1 = rnd(OUT, 0.3f), *db2 = malloc(sizeof(float) * OUT);
    memcpy(di2, di1, sizeof(float) * B * IN);
    memcpy(dW2, dW1, sizeof(float) * OUT * IN);
    memcpy(db2, db1, sizeof(float) * OUT);
    float *di0 = malloc(sizeof(float) * B * IN);
    memcpy(di0, di1, sizeof(float) * B * IN);
    nn_linear_backward(with_dinp ? di1 : NULL, dW1, with_bias ? db1 : NULL, dout, inp, W,
                       B, IN, OUT);
    nn_linear_backward_ref(with_dinp ? di2 : NULL, dW2, with_bias ? db2 : NULL, dout, inp,
                           W, B, IN, OUT);
    check_vec_close(di1, di2, (size_t)B * IN, 1e-5, 1e-5);
    check_vec_close(dW1, dW2, (size_t)OUT * IN, 1e-5, 1e-5);
    check_vec_close(db1, db2, OUT, 1e-5, 1e-5);
    if (!with_dinp) check_vec_close(di1, di0, (size_t)B * IN, 0, 0);   /* untouched */
    /* accumulation really happened: backward twice doubles the increment */
    float *dW3 = zeros((size_t)OUT * IN), *dW4 = zeros((size_t)OUT * IN);
    nn_linear_backward(NULL, dW3, NULL, dout, inp, W, B, IN, OUT);
    nn_linear_backward(NULL, dW4, NULL, dout, inp, W, B, IN, OUT);
    nn_linear_backward(NULL, dW4, NULL, dout, inp, W, B, IN, OUT);
    for (int i = 0; i < OUT * IN; i++) CHECK_CLOSE(dW4[i], 2 * dW3[i], 1e-5, 1e-6);
    free(inp); free(W); free(b); free(o1); free(o2); free(dout); free(di0);
    free(di1); free(di2); free(dW1); free(dW2); free(db1); free(db2); free(dW3); free(dW4);
}

/* L = sum(R .* linear(inp)); compare the backward with central differences. */
static double linear_obj(const float *inp, const float *W, const float *b, const float *R,
                         int B, int IN, int OUT, float *tmp) {
    nn_linear_forward(tmp, inp, W, b, B, IN, OUT);
    double s = 0;
    for (int i = 0; i < B * OUT; i++) s += (double)R[i] * tmp[i];
    return s;
}

static void fd_check(float *x, size_t n, const float *grad, double (*f)(void *), void *ctx,
                     float eps, double rtol, double atol) {
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + eps;
        double lp = f(ctx);
        x[i] = keep - eps;
        double lm = f(ctx);
        x[i] = keep;
        double num = (lp - lm) / (2.0 * eps);
        CHECK_CLOSE(grad[i], num, rtol, atol);
    }
}

typedef struct { float *inp, *W, *b, *R, *tmp; int B, IN, OUT; } lin_ctx;
static double lin_f(void *p) {
    lin_ctx *c = p;
    return linear_obj(c->inp, c->W, c->b, c->R, c->B, c->IN, c->OUT, c->tmp);
}

static void test_linear_fd(void) {
    int B = 7, IN = 13, OUT = 5;
    lin_ctx c = { rnd((size_t)B * IN, 1.0f), rnd((size_t)OUT * IN, 0.5f), rnd(OUT, 0.5f),
                  rnd((size_t)B * OUT, 1.0f), zeros((size_t)B * OUT), B, IN, OUT };
    float *di = zeros((size_t)B * IN), *dW = zeros((size_t)OUT * IN), *db = zeros(OUT);
    nn_linear_backward(di, dW, db, c.R, c.inp, c.W, B, IN, OUT);   /* dL/dout = R */
    fd_check(c.inp, (size_t)B * IN, di, lin_f, &c, 1e-2f, 1e-3, 1e-3);
    fd_check(c.W, (size_t)OUT * IN, dW, lin_f, &c, 1e-2f, 1e-3, 1e-3);
    fd_check(c.b, OUT, db, lin_f, &c, 1e-2f, 1e-3, 1e-3);
    free(c.inp); free(c.W); free(c.b); free(c.R); free(c.tmp); free(di); free(dW); free(db);
}

typedef struct { float *x, *R, *tmp; size_t n; } relu_ctx;
static double relu_f(void *p) {
    relu_ctx *c = p;
    nn_relu_forward(c->tmp, c->x, c->n);
    double s = 0;
    for (size_t i = 0; i < c->n; i++) s += (double)c->R[i] * c->tmp[i];
    return s;
}

static void test_relu(void) {
    size_t n = 64;
    relu_ctx c = { rnd(n, 1.0f), rnd(n, 1.0f), zeros(n), n };
    for (size_t i = 0; i < n; i++)   /* keep away from the kink */
        if (fabsf(c.x[i]) < 0.05f) c.x[i] = c.x[i] < 0 ? -0.1f : 0.1f;
    float *out = zeros(n), *dx = zeros(n);
    nn_relu_forward(out, c.x, n);
    nn_relu_backward(dx, c.R, out, n);
    fd_check(c.x, n, dx, relu_f, &c, 1e-2f, 1e-4, 1e-4);
    /* in place forward, then backward from the output */
    float *y = malloc(n * sizeof(float)), *dx2 = zeros(n);
    memcpy(y, c.x, n * sizeof(float));
    nn_relu_forward(y, y, n);
    nn_relu_backward(dx2, c.R, y, n);
    check_vec_close(dx, dx2, n, 0, 0);
    CHECK_EQ_INT(y[0] >= 0, 1);
    free(c.x); free(c.R); free(c.tmp); free(out); free(dx); free(y); free(dx2);
}

/* ESMM head, compared with a direct (naive) double-precision formula and FD. */
typedef struct { float *zc, *zv, *yc, *yv, *wc, *wv; int B; } esmm_ctx;
static double esmm_f(void *p) {
    esmm_ctx *c = p;
    return nn_esmm_forward(NULL, NULL, c->zc, c->zv, c->yc, c->yv, c->wc, c->wv, c->B);
}

static void test_esmm(float wctr, float wctcvr) {
    enum { B = 16 };
    float zc[B], zv[B], yc[B], yv[B], wc[B], wv[B], pc[B], pv[B];
    for (int i = 0; i < B; i++) {
        zc[i] = 3.0f * frand();
        zv[i] = 3.0f * frand();
        yc[i] = (i % 3) != 0;
        yv[i] = yc[i] && (i % 2);
        wc[i] = wctr;
        wv[i] = wctcvr;
    }
    esmm_ctx c = { zc, zv, yc, yv, wc, wv, B };
    double L = nn_esmm_forward(pc, pv, zc, zv, yc, yv, wc, wv, B);
    double naive = 0;
    for (int i = 0; i < B; i++) {
        double a = 1 / (1 + exp(-(double)zc[i])), v = 1 / (1 + exp(-(double)zv[i]));
        double q = a * v;
        CHECK_CLOSE(pc[i], a, 1e-6, 1e-7);
        CHECK_CLOSE(pv[i], v, 1e-6, 1e-7);
        naive += wc[i] * -(yc[i] * log(a) + (1 - yc[i]) * log(1 - a));
        naive += wv[i] * -(yv[i] * log(q) + (1 - yv[i]) * log(1 - q));
    }
    CHECK_CLOSE(L, naive, 1e-9, 1e-9);
    float dzc[B] = {0}, dzv[B] = {0};
    nn_esmm_backward(dzc, dzv, zc, zv, yc, yv, wc, wv, 1.0f, B);
    fd_check(zc, B, dzc, esmm_f, &c, 1e-3f, 1e-3, 1e-4);
    fd_check(zv, B, dzv, esmm_f, &c, 1e-3f, 1e-3, 1e-4);
    if (wctcvr == 0)
        for (int i = 0; i < B; i++) CHECK_EQ_INT(dzv[i] == 0.0f, 1);
    if (wctr == 0 && wctcvr == 0)
        for (int i = 0; i < B; i++) CHECK_EQ_INT(dzc[i] == 0.0f, 1);
    /* scale multiplies, and backward accumulates */
    float dzc2[B], dzv2[B];
    for (int i = 0; i < B; i++) dzc2[i] = dzv2[i] = 1.0f;
    nn_esmm_backward(dzc2, dzv2, zc, zv, yc, yv, wc, wv, 0.25f, B);
    for (int i = 0; i < B; i++) {
        CHECK_CLOSE(dzc2[i], 1.0f + 0.25f * dzc[i], 1e-6, 1e-7);
        CHECK_CLOSE(dzv2[i], 1.0f + 0.25f * dzv[i], 1e-6, 1e-7);
    }
}

/* Extreme logits: loss finite, gradient finite and bounded by w_ctr + w_ctcvr. */
static void test_esmm_extremes(void) {
    float zs[] = { -200.0f, -40.0f, -17.0f, 0.0f, 17.0f, 40.0f, 200.0f };
    int n = (int)(sizeof zs / sizeof zs[0]);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            for (int y = 0; y < 3; y++) {
                float zc = zs[i], zv = zs[j], yc = y >= 1, yv = y == 2, w = 1.0f;
                double L = nn_esmm_forward(NULL, NULL, &zc, &zv, &yc, &yv, &w, &w, 1);
                float dc = 0, dv = 0;
                nn_esmm_backward(&dc, &dv, &zc, &zv, &yc, &yv, &w, &w, 1.0f, 1);
                CHECK_MSG(isfinite(L) && L >= 0, "L=%g at zc=%g zv=%g y=%d", L, zc, zv, y);
                CHECK_MSG(isfinite(dc) && fabsf(dc) <= 2.0f, "dc=%g", dc);
                CHECK_MSG(isfinite(dv) && fabsf(dv) <= 1.0f, "dv=%g", dv);
            }
    /* exact log-sigmoid form: a confident wrong positive costs ~|z| */
    float zc = -40.0f, zv = 0.0f, yc = 1, yv = 0, w1 = 1, w0 = 0;
    double L = nn_esmm_forward(NULL, NULL, &zc, &zv, &yc, &yv, &w1, &w0, 1);
    CHECK_CLOSE(L, 40.0, 1e-6, 0);
}

static void test_adam(void) {
    enum { N = 5 };
    float p[N], g[N], m[N] = {0}, v[N] = {0};
    double pr[N], mr[N] = {0}, vr[N] = {0};
    for (int i = 0; i < N; i++) { p[i] = frand(); pr[i] = p[i]; }
    double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (int t = 1; t <= 4; t++) {
        for (int i = 0; i < N; i++) g[i] = frand() * (i + 1);
        nn_adam_step(p, g, m, v, N, (float)lr, (float)b1, (float)b2, (float)eps, t);
        for (int i = 0; i < N; i++) {
            mr[i] = b1 * mr[i] + (1 - b1) * g[i];
            vr[i] = b2 * vr[i] + (1 - b2) * g[i] * g[i];
            double mh = mr[i] / (1 - pow(b1, t)), vh = vr[i] / (1 - pow(b2, t));
            pr[i] -= lr * mh / (sqrt(vh) + eps);
        }
        for (int i = 0; i < N; i++) CHECK_CLOSE(p[i], pr[i], 1e-5, 1e-6);
    }
    /* first step moves each parameter by ~lr against its gradient sign */
    float q = 1.0f, gq = -3.0f, mq = 0, vq = 0;
    nn_adam_step(&q, &gq, &mq, &vq, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 1);
    CHECK_CLOSE(q, 1.01f, 1e-5, 0);
}

/* SSE paths vs plain-loop twins, bitwise, at sizes with a scalar remainder. */
static void test_simd_twins(size_t n) {
    float *x = rnd(n, 1.0f), *a = zeros(n), *b = zeros(n);
    x[0] = 0.0f;
    x[n - 1] = -0.0f;
    nn_relu_forward(a, x, n);
    nn_relu_forward_ref(b, x, n);
    for (size_t i = 0; i < n; i++) CHECK_EQ_INT(a[i] == b[i], 1);
    float *d = rnd(n, 1.0f), *g1 = rnd(n, 0.5f), *g2 = malloc(n * sizeof(float));
    memcpy(g2, g1, n * sizeof(float));
    nn_relu_backward(g1, d, a, n);
    nn_relu_backward_ref(g2, d, a, n);
    for (size_t i = 0; i < n; i++) CHECK_EQ_INT(g1[i] == g2[i], 1);
    float *p1 = rnd(n, 1.0f), *p2 = malloc(n * sizeof(float));
    float *m1 = zeros(n), *m2 = zeros(n), *v1 = zeros(n), *v2 = zeros(n);
    memcpy(p2, p1, n * sizeof(float));
    for (int t = 1; t <= 3; t++) {
        float *gr = rnd(n, 2.0f);
        nn_adam_step(p1, gr, m1, v1, n, 0.01f, 0.9f, 0.999f, 1e-8f, t);
        nn_adam_step_ref(p2, gr, m2, v2, n, 0.01f, 0.9f, 0.999f, 1e-8f, t);
        free(gr);
    }
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(p1[i] == p2[i], "adam param %zu: %.9g vs %.9g", i, p1[i], p2[i]);
        CHECK_EQ_INT(m1[i] == m2[i] && v1[i] == v2[i], 1);
    }
    free(x); free(a); free(b); free(d); free(g1); free(g2);
    free(p1); free(p2); free(m1); free(m2); free(v1); free(v2);
}

static void test_clip(void) {
    float g[4] = { 3, 4, 0, 0 };
    CHECK_CLOSE(nn_clip_grad_norm(g, 4, 10.0f), 5.0f, 1e-6, 0);
    CHECK_CLOSE(g[0], 3.0f, 0, 0);                      /* under the limit: unchanged */
    CHECK_CLOSE(nn_clip_grad_norm(g, 4, 1.0f), 5.0f, 1e-6, 0);
    CHECK_CLOSE(g[0], 0.6f, 1e-6, 0);
    CHECK_CLOSE(g[1], 0.8f, 1e-6, 0);
    CHECK_CLOSE(nn_clip_grad_norm(g, 4, 0.0f), 1.0f, 1e-6, 0);   /* measure only */
    CHECK_CLOSE(g[1], 0.8f, 1e-6, 0);
}

/* ---- the new layers: each backward against central differences of sum(R .* out) ---- */

typedef struct { float *x, *R, *out; int B, N; } sm_ctx;
static double sm_f(void *p) {
    sm_ctx *c = p;
    nn_softmax_forward(c->out, c->x, c->B, c->N);
    double s = 0;
    for (int i = 0; i < c->B * c->N; i++) s += (double)c->R[i] * c->out[i];
    return s;
}

static void test_softmax(void) {
    int B = 5, N = 7;
    sm_ctx c = { rnd((size_t)B * N, 3.0f), rnd((size_t)B * N, 1.0f), zeros((size_t)B * N), B, N };
    sm_f(&c);
    for (int i = 0; i < B; i++) {   /* rows are distributions */
        double s = 0;
        for (int j = 0; j < N; j++) { s += c.out[i * N + j]; CHECK(c.out[i * N + j] > 0); }
        CHECK_CLOSE(s, 1.0, 1e-6, 0);
    }
    float *dx = zeros((size_t)B * N);
    nn_softmax_backward(dx, c.R, c.out, B, N);
    fd_check(c.x, (size_t)B * N, dx, sm_f, &c, 1e-2f, 2e-3, 2e-4);
    /* extreme logits stay finite (max subtraction) */
    float big[3] = { 1000.0f, 999.0f, -1000.0f }, o[3];
    nn_softmax_forward(o, big, 1, 3);
    CHECK_CLOSE(o[0], 1.0 / (1.0 + exp(-1.0)), 1e-6, 0);
    CHECK_EQ_INT(o[2] == 0.0f, 1);
    free(c.x); free(c.R); free(c.out); free(dx);
}

typedef struct { float *x, *g, *b, *R, *out, *mean, *rstd; int B, C; } ln_ctx;
static double ln_f(void *p) {
    ln_ctx *c = p;
    nn_layernorm_forward(c->out, c->mean, c->rstd, c->x, c->g, c->b, c->B, c->C);
    double s = 0;
    for (int i = 0; i < c->B * c->C; i++) s += (double)c->R[i] * c->out[i];
    return s;
}

static void test_layernorm(void) {
    int B = 4, C = 9;
    ln_ctx c = { rnd((size_t)B * C, 2.0f), rnd(C, 1.0f), rnd(C, 1.0f), rnd((size_t)B * C, 1.0f),
                 zeros((size_t)B * C), zeros(B), zeros(B), B, C };
    for (int j = 0; j < C; j++) c.g[j] += 1.5f;
    ln_f(&c);
    /* with g = 1, b = 0 each row has mean 0 and variance ~1 */
    float g1[9], b0[9] = {0}, y[36], mn[4], rs[4];
    for (int j = 0; j < C; j++) g1[j] = 1.0f;
    nn_layernorm_forward(y, mn, rs, c.x, g1, b0, B, C);
    for (int i = 0; i < B; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < C; j++) m += y[i * C + j];
        for (int j = 0; j < C; j++) v += (y[i * C + j] - m / C) * (y[i * C + j] - m / C);
        CHECK_CLOSE(m / C, 0.0, 0, 1e-6);
        CHECK_CLOSE(v / C, 1.0, 1e-3, 0);
    }
    float *dx = zeros((size_t)B * C), *dg = zeros(C), *db = zeros(C);
    nn_layernorm_backward(dx, dg, db, c.R, c.x, c.mean, c.rstd, c.g, B, C);
    fd_check(c.x, (size_t)B * C, dx, ln_f, &c, 1e-2f, 5e-3, 5e-4);
    fd_check(c.g, C, dg, ln_f, &c, 1e-2f, 2e-3, 2e-4);
    fd_check(c.b, C, db, ln_f, &c, 1e-2f, 2e-3, 2e-4);
    free(c.x); free(c.g); free(c.b); free(c.R); free(c.out); free(c.mean); free(c.rstd);
    free(dx); free(dg); free(db);
}

typedef struct { float *q, *k, *v, *R, *ctx, *att; unsigned char *mask; int B, L, H, dh; } at_ctx;
static double at_f(void *p) {
    at_ctx *c = p;
    nn_attn_forward(c->ctx, c->att, c->q, c->k, c->v, c->mask, c->B, c->L, c->H, c->dh);
    double s = 0;
    for (int i = 0; i < c->B * c->H * c->dh; i++) s += (double)c->R[i] * c->ctx[i];
    return s;
}

static void test_attention(void) {
    int B = 3, L = 5, H = 2, dh = 3, D = H * dh;
    unsigned char mask[15] = { 1, 1, 1, 1, 1,   1, 0, 1, 0, 1,   1, 0, 0, 0, 0 };
    at_ctx c = { rnd((size_t)B * D, 1.5f), rnd((size_t)B * L * D, 1.5f),
                 rnd((size_t)B * L * D, 1.0f), rnd((size_t)B * D, 1.0f), zeros((size_t)B * D),
                 zeros((size_t)B * H * L), mask, B, L, H, dh };
    at_f(&c);
    /* masked keys get no weight; a single unmasked key gets all of it */
    CHECK_EQ_INT(c.att[(1 * H + 0) * L + 1] == 0.0f, 1);
    CHECK_EQ_INT(c.att[(1 * H + 1) * L + 3] == 0.0f, 1);
    CHECK_CLOSE(c.att[(2 * H + 1) * L + 0], 1.0, 1e-6, 0);
    for (int j = 0; j < dh; j++)
        CHECK_CLOSE(c.ctx[2 * D + dh + j], c.v[(2 * L + 0) * D + dh + j], 1e-6, 1e-7);
    /* a naive recomputation of one head */
    double sc[5], mx = -1e30, z = 0;
    for (int j = 0; j < L; j++) {
        sc[j] = 0;
        for (int e = 0; e < dh; e++) sc[j] += (double)c.q[e] * c.k[j * D + e];
        sc[j] /= sqrt((double)dh);
        mx = fmax(mx, sc[j]);
    }
    for (int j = 0; j < L; j++) z += exp(sc[j] - mx);
    for (int j = 0; j < L; j++) CHECK_CLOSE(c.att[j], exp(sc[j] - mx) / z, 1e-5, 1e-7);
    float *dq = zeros((size_t)B * D), *dk = zeros((size_t)B * L * D), *dv = zeros((size_t)B * L * D);
    nn_attn_backward(dq, dk, dv, c.R, c.att, c.q, c.k, c.v, B, L, H, dh);
    fd_check(c.q, (size_t)B * D, dq, at_f, &c, 1e-2f, 2e-3, 2e-4);
    fd_check(c.k, (size_t)B * L * D, dk, at_f, &c, 1e-2f, 2e-3, 2e-4);
    fd_check(c.v, (size_t)B * L * D, dv, at_f, &c, 1e-2f, 2e-3, 2e-4);
    for (int j = 0; j < D; j++) CHECK_EQ_INT(dk[(1 * L + 1) * D + j] == 0.0f, 1);  /* masked */
    free(c.q); free(c.k); free(c.v); free(c.R); free(c.ctx); free(c.att);
    free(dq); free(dk); free(dv);
}

typedef struct { float *x, *R, *out, *th; float gamma; size_t n; } th_ctx;
static double th_f(void *p) {
    th_ctx *c = p;
    nn_scaled_tanh_forward(c->out, c->th, c->x, c->gamma, c->n);
    double s = 0;
    for (size_t i = 0; i < c->n; i++) s += (double)c->R[i] * c->out[i];
    return s;
}

static void test_scaled_tanh(void) {
    size_t n = 20;
    th_ctx c = { rnd(n, 2.0f), rnd(n, 1.0f), zeros(n), zeros(n), 0.7f, n };
    th_f(&c);
    CHECK_CLOSE(c.out[3], 0.7 * tanh((double)c.x[3]), 1e-6, 1e-7);
    float *dx = zeros(n), dg = 0.0f;
    nn_scaled_tanh_backward(dx, &dg, c.R, c.th, c.gamma, n);
    fd_check(c.x, n, dx, th_f, &c, 1e-2f, 2e-3, 2e-4);
    fd_check(&c.gamma, 1, &dg, th_f, &c, 1e-2f, 2e-3, 2e-4);
    free(c.x); free(c.R); free(c.out); free(c.th); free(dx);
}

int main(void) {
    test_linear_blas_vs_ref(7, 13, 5, 1, 1);
    test_linear_blas_vs_ref(7, 13, 5, 0, 0);
    test_linear_blas_vs_ref(1, 1, 1, 1, 1);
    test_linear_blas_vs_ref(3, 9, 1, 1, 1);
    test_linear_blas_vs_ref(65, 195, 128, 1, 1);
    test_linear_fd();
    test_relu();
    test_esmm(1.0f, 1.0f);
    test_esmm(0.0f, 1.0f);
    test_esmm(1.0f, 0.0f);
    test_esmm(0.0f, 0.0f);
    test_esmm(0.5f, 2.0f);
    test_esmm_extremes();
    test_adam();
    test_simd_twins(1);
    test_simd_twins(37);
    test_simd_twins(4096);
    test_clip();
    test_softmax();
    test_layernorm();
    test_attention();
    test_scaled_tanh();
    return 0;
}
