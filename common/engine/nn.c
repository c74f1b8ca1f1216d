/* nn.c - dense layers for the model: linear, ReLU, the ESMM loss head, Adam, clipping. */
#include <math.h>
#include <string.h>
#include <cblas.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include "engine/nn.h"

void nn_linear_forward(float *out, const float *inp, const float *W, const float *b,
                       int B, int IN, int OUT) {
    float beta = 0.0f;
    if (b) {
        for (int i = 0; i < B; i++) memcpy(out + (size_t)i * OUT, b, sizeof(float) * OUT);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OUT, IN,
                1.0f, inp, IN, W, IN, beta, out, OUT);
}

void nn_linear_backward(float *dinp, float *dW, float *db, const float *dout,
                        const float *inp, const float *W, int B, int IN, int OUT) {
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, IN, OUT,
                    1.0f, dout, OUT, W, IN, 1.0f, dinp, IN);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, B,
                1.0f, dout, OUT, inp, IN, 1.0f, dW, IN);
    if (db)
        for (int i = 0; i < B; i++) {
            const float *d = dout + (size_t)i * OUT;
            int o = 0;
#ifdef __SSE2__
            for (; o + 4 <= OUT; o += 4)
                _mm_storeu_ps(db + o, _mm_add_ps(_mm_loadu_ps(db + o), _mm_loadu_ps(d + o)));
#endif
            for (; o < OUT; o++) db[o] += d[o];
        }
}

void nn_linear_forward_ref(float *out, const float *inp, const float *W, const float *b,
                           int B, int IN, int OUT) {
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OUT; o++) {
            float s = b ? b[o] : 0.0f;
            for (int k = 0; k < IN; k++) s += inp[(size_t)i * IN + k] * W[(size_t)o * IN + k];
            out[(size_t)i * OUT + o] = s;
        }
}

void nn_linear_backward_ref(float *dinp, float *dW, float *db, const float *dout,
                            const float *inp, const float *W, int B, int IN, int OUT) {
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OUT; o++) {
            float d = dout[(size_t)i * OUT + o];
            for (int k = 0; k < IN; k++) {
                if (dinp) dinp[(size_t)i * IN + k] += d * W[(size_t)o * IN + k];
                dW[(size_t)o * IN + k] += d * inp[(size_t)i * IN + k];
            }
            if (db) db[o] += d;
        }
}

void nn_relu_forward_ref(float *out, const float *inp, size_t N) {
    for (size_t i = 0; i < N; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void nn_relu_backward_ref(float *dinp, const float *dout, const float *out, size_t N) {
    for (size_t i = 0; i < N; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void nn_relu_forward(float *out, const float *inp, size_t N) {
    size_t i = 0;
#ifdef __SSE2__
    const __m128 zero = _mm_setzero_ps();
    /* max(x, 0) with x first: a NaN input gives 0, as the plain loop's comparison does */
    for (; i + 4 <= N; i += 4) _mm_storeu_ps(out + i, _mm_max_ps(_mm_loadu_ps(inp + i), zero));
#endif
    for (; i < N; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void nn_relu_backward(float *dinp, const float *dout, const float *out, size_t N) {
    size_t i = 0;
#ifdef __SSE2__
    const __m128 zero = _mm_setzero_ps();
    for (; i + 4 <= N; i += 4) {
        __m128 mask = _mm_cmpgt_ps(_mm_loadu_ps(out + i), zero);
        __m128 d = _mm_and_ps(mask, _mm_loadu_ps(dout + i));
        _mm_storeu_ps(dinp + i, _mm_add_ps(_mm_loadu_ps(dinp + i), d));
    }
#endif
    for (; i < N; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

double nn_sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

double nn_softplus(double x) {
    return (x > 0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

double nn_esmm_forward(float *p_ctr, float *p_cvr, const float *z_ctr, const float *z_cvr,
                       const float *y_click, const float *y_conv, const float *w_ctr,
                       const float *w_ctcvr, int B) {
    double total = 0.0;
    for (int i = 0; i < B; i++) {
        double a = z_ctr[i], c = z_cvr[i];
        double sa = nn_sigmoid(a), sc = nn_sigmoid(c);
        if (p_ctr) p_ctr[i] = (float)sa;
        if (p_cvr) p_cvr[i] = (float)sc;
        double y1 = y_click[i], y2 = y_conv[i];
        /* BCE(s(a), y) = y softplus(-a) + (1-y) softplus(a) */
        double l1 = y1 * nn_softplus(-a) + (1.0 - y1) * nn_softplus(a);
        /* -log q = softplus(-a) + softplus(-c);  1 - q = s(-a) + s(a) s(-c) */
        double one_m_q = nn_sigmoid(-a) + sa * nn_sigmoid(-c);
        if (one_m_q < NN_ESMM_EPS) one_m_q = NN_ESMM_EPS;
        double l2 = y2 * (nn_softplus(-a) + nn_softplus(-c)) - (1.0 - y2) * log(one_m_q);
        total += w_ctr[i] * l1 + w_ctcvr[i] * l2;
    }
    return total;
}

void nn_esmm_backward(float *dz_ctr, float *dz_cvr, const float *z_ctr, const float *z_cvr,
                      const float *y_click, const float *y_conv, const float *w_ctr,
                      const float *w_ctcvr, float scale, int B) {
    for (int i = 0; i < B; i++) {
        double a = z_ctr[i], c = z_cvr[i];
        double sa = nn_sigmoid(a), sc = nn_sigmoid(c);
        double sma = nn_sigmoid(-a), smc = nn_sigmoid(-c);
        double y1 = y_click[i], y2 = y_conv[i];
        double ga = w_ctr[i] * (sa - y1), gc = 0.0;
        /* d(-log q)/da = -s(-a);  d(-log(1-q))/da = s(a)s(-a)s(c)/(1-q), each <= 1 */
        double one_m_q = sma + sa * smc;
        if (one_m_q < NN_ESMM_EPS) one_m_q = NN_ESMM_EPS;
        double r = sa * sc / one_m_q;
        ga += w_ctcvr[i] * (-y2 * sma + (1.0 - y2) * r * sma);
        gc += w_ctcvr[i] * (-y2 * smc + (1.0 - y2) * r * smc);
        dz_ctr[i] += (float)(scale * ga);
        dz_cvr[i] += (float)(scale * gc);
    }
}

/* Both bias corrections folded into the step size and epsilon:
 * lr * mhat / (sqrt(vhat) + eps) = lr_t * m / (sqrt(v) + eps_t),
 * lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), eps_t = eps sqrt(1 - b2^t). */
static void nn__adam_consts(float lr, float beta1, float beta2, float eps, int t,
                            float *lr_t, float *eps_t) {
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    *lr_t = lr * sqrtf(bc2) / bc1;
    *eps_t = eps * sqrtf(bc2);
}

void nn_adam_step_ref(float *param, const float *grad, float *m, float *v, size_t n,
                      float lr, float beta1, float beta2, float eps, int t) {
    float lr_t, eps_t;
    nn__adam_consts(lr, beta1, beta2, eps, t, &lr_t, &eps_t);
    float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        float mi = beta1 * m[i] + c1 * g;
        float vi = beta2 * v[i] + c2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        param[i] -= lr_t * mi / (sqrtf(vi) + eps_t);
    }
}

void nn_adam_step(float *param, const float *grad, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, int t) {
    size_t i = 0;
#ifdef __SSE2__
    float lr_t, eps_t;
    nn__adam_consts(lr, beta1, beta2, eps, t, &lr_t, &eps_t);
    const __m128 b1 = _mm_set1_ps(beta1), b2 = _mm_set1_ps(beta2);
    const __m128 c1 = _mm_set1_ps(1.0f - beta1), c2 = _mm_set1_ps(1.0f - beta2);
    const __m128 lr4 = _mm_set1_ps(lr_t), eps4 = _mm_set1_ps(eps_t);
    for (; i + 4 <= n; i += 4) {
        __m128 g = _mm_loadu_ps(grad + i);
        __m128 mi = _mm_add_ps(_mm_mul_ps(b1, _mm_loadu_ps(m + i)), _mm_mul_ps(c1, g));
        __m128 vi = _mm_add_ps(_mm_mul_ps(b2, _mm_loadu_ps(v + i)),
                               _mm_mul_ps(c2, _mm_mul_ps(g, g)));
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        __m128 step = _mm_div_ps(_mm_mul_ps(lr4, mi), _mm_add_ps(_mm_sqrt_ps(vi), eps4));
        _mm_storeu_ps(param + i, _mm_sub_ps(_mm_loadu_ps(param + i), step));
    }
#endif
    if (i < n)
        nn_adam_step_ref(param + i, grad + i, m + i, v + i, n - i, lr, beta1, beta2, eps, t);
}

float nn_clip_grad_norm(float *grad, size_t n, float max_norm) {
    double ss = 0.0;
    size_t i = 0;
#ifdef __SSE2__
    /* float partial sums in blocks of 1024, folded into a double: fast and accurate */
    while (i + 4 <= n) {
        __m128 acc = _mm_setzero_ps();
        size_t end = i + 1024 < n ? i + 1024 : n;
        for (; i + 4 <= end; i += 4) {
            __m128 g = _mm_loadu_ps(grad + i);
            acc = _mm_add_ps(acc, _mm_mul_ps(g, g));
        }
        float part[4];
        _mm_storeu_ps(part, acc);
        ss += (double)part[0] + part[1] + part[2] + part[3];
    }
#endif
    for (; i < n; i++) ss += (double)grad[i] * grad[i];
    float norm = (float)sqrt(ss);
    if (max_norm > 0.0f && norm > max_norm) {
        float s = max_norm / norm;
        for (size_t k = 0; k < n; k++) grad[k] *= s;
    }
    return norm;
}

void nn_softmax_forward(float *out, const float *inp, int B, int N) {
    for (int i = 0; i < B; i++) {
        const float *x = inp + (size_t)i * N;
        float *y = out + (size_t)i * N;
        float mx = x[0];
        for (int j = 1; j < N; j++) mx = x[j] > mx ? x[j] : mx;
        float s = 0.0f;
        for (int j = 0; j < N; j++) { y[j] = expf(x[j] - mx); s += y[j]; }
        float r = 1.0f / s;
        for (int j = 0; j < N; j++) y[j] *= r;
    }
}

void nn_softmax_backward(float *dinp, const float *dout, const float *out, int B, int N) {
    for (int i = 0; i < B; i++) {
        const float *dy = dout + (size_t)i * N, *y = out + (size_t)i * N;
        float *dx = dinp + (size_t)i * N;
        float dot = 0.0f;
        for (int j = 0; j < N; j++) dot += dy[j] * y[j];
        for (int j = 0; j < N; j++) dx[j] += y[j] * (dy[j] - dot);
    }
}

void nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *g, const float *b, int B, int C) {
    for (int i = 0; i < B; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        float m = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        float v = 0.0f;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        float r = 1.0f / sqrtf(v + NN_LN_EPS);
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * r * g[c] + b[c];
        mean[i] = m;
        rstd[i] = r;
    }
}

void nn_layernorm_backward(float *dinp, float *dg, float *db, const float *dout,
                           const float *inp, const float *mean, const float *rstd,
                           const float *g, int B, int C) {
    for (int i = 0; i < B; i++) {
        const float *dy = dout + (size_t)i * C, *x = inp + (size_t)i * C;
        float *dx = dinp + (size_t)i * C;
        float m = mean[i], r = rstd[i];
        /* dxhat = dy g; dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) */
        float s1 = 0.0f, s2 = 0.0f;
        for (int c = 0; c < C; c++) {
            float xh = (x[c] - m) * r, dxh = dy[c] * g[c];
            s1 += dxh;
            s2 += dxh * xh;
        }
        s1 /= C;
        s2 /= C;
        for (int c = 0; c < C; c++) {
            float xh = (x[c] - m) * r;
            dg[c] += dy[c] * xh;
            db[c] += dy[c];
            dx[c] += r * (dy[c] * g[c] - s1 - xh * s2);
        }
    }
}

void nn_attn_forward(float *ctx, float *att, const float *q, const float *k, const float *v,
                     const unsigned char *mask, int B, int L, int H, int dh) {
    int D = H * dh;
    float scale = 1.0f / sqrtf((float)dh);
    for (int i = 0; i < B; i++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + (size_t)i * D + h * dh;
            float *a = att + ((size_t)i * H + h) * L;
            float mx = -INFINITY;
            for (int j = 0; j < L; j++) {
                if (!mask[(size_t)i * L + j]) continue;
                const float *kj = k + ((size_t)i * L + j) * D + h * dh;
                float s = 0.0f;
                for (int c = 0; c < dh; c++) s += qh[c] * kj[c];
                a[j] = s * scale;
                mx = a[j] > mx ? a[j] : mx;
            }
            float sum = 0.0f;
            for (int j = 0; j < L; j++) {
                a[j] = mask[(size_t)i * L + j] ? expf(a[j] - mx) : 0.0f;
                sum += a[j];
            }
            float r = 1.0f / sum;
            float *o = ctx + (size_t)i * D + h * dh;
            for (int c = 0; c < dh; c++) o[c] = 0.0f;
            for (int j = 0; j < L; j++) {
                a[j] *= r;
                if (a[j] == 0.0f) continue;
                const float *vj = v + ((size_t)i * L + j) * D + h * dh;
                for (int c = 0; c < dh; c++) o[c] += a[j] * vj[c];
            }
        }
}

void nn_attn_backward(float *dq, float *dk, float *dv, const float *dctx, const float *att,
                      const float *q, const float *k, const float *v, int B, int L, int H,
                      int dh) {
    int D = H * dh;
    float scale = 1.0f / sqrtf((float)dh);
    float da[NN_ATTN_MAX_L];
    for (int i = 0; i < B; i++)
        for (int h = 0; h < H; h++) {
            const float *a = att + ((size_t)i * H + h) * L;
            const float *qh = q + (size_t)i * D + h * dh;
            const float *dov = dctx + (size_t)i * D + h * dh;
            float *dqh = dq + (size_t)i * D + h * dh;
            float dot = 0.0f;
            for (int j = 0; j < L && j < NN_ATTN_MAX_L; j++) {
                const float *vj = v + ((size_t)i * L + j) * D + h * dh;
                float *dvj = dv + ((size_t)i * L + j) * D + h * dh;
                float s = 0.0f;
                for (int c = 0; c < dh; c++) {
                    s += dov[c] * vj[c];
                    dvj[c] += a[j] * dov[c];
                }
                da[j] = s;
                dot += a[j] * s;
            }
            for (int j = 0; j < L && j < NN_ATTN_MAX_L; j++) {
                float ds = a[j] * (da[j] - dot) * scale;   /* masked: a = 0, ds = 0 */
                if (ds == 0.0f) continue;
                const float *kj = k + ((size_t)i * L + j) * D + h * dh;
                float *dkj = dk + ((size_t)i * L + j) * D + h * dh;
                for (int c = 0; c < dh; c++) {
                    dqh[c] += ds * kj[c];
                    dkj[c] += ds * qh[c];
                }
            }
        }
}

void nn_scaled_tanh_forward(float *out, float *th, const float *inp, float gamma, size_t N) {
    for (size_t i = 0; i < N; i++) {
        th[i] = tanhf(inp[i]);
        out[i] = gamma * th[i];
    }
}

void nn_scaled_tanh_backward(float *dinp, float *dgamma, const float *dout, const float *th,
                             float gamma, size_t N) {
    float dg = 0.0f;
    for (size_t i = 0; i < N; i++) {
        dinp[i] += dout[i] * gamma * (1.0f - th[i] * th[i]);
        dg += dout[i] * th[i];
    }
    *dgamma += dg;
}
