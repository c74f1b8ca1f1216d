/* nn.h - dense layers for the model: linear, ReLU, softmax, LayerNorm, query attention,
 * scaled tanh, the ESMM loss head, Adam, clipping.
 *
 * llm.c style: each layer's forward sits next to its backward; outputs come first, then
 * inputs and weights, then sizes. Tensors are row-major float arrays; every pointer's
 * shape is given in its comment. Backward functions ACCUMULATE (+=) into their gradient
 * outputs, so the caller zeroes gradients once per step. The OpenBLAS paths have plain-loop
 * twins (`_ref`) that the tests compare them with. */
#ifndef M3_NN_H
#define M3_NN_H
#include <stddef.h>

/* out = inp W^T + b.  out (B,OUT), inp (B,IN), W (OUT,IN), b (OUT) or NULL.
 * Overwrites out. Uses cblas_sgemm. */
void nn_linear_forward(float *out, const float *inp, const float *W, const float *b,
                       int B, int IN, int OUT);
/* dinp += dout W;  dW += dout^T inp;  db += sum_rows dout.
 * dinp (B,IN) or NULL to skip, dW (OUT,IN), db (OUT) or NULL, dout (B,OUT). */
void nn_linear_backward(float *dinp, float *dW, float *db, const float *dout,
                        const float *inp, const float *W, int B, int IN, int OUT);
/* Plain-loop twins of the two above (same contracts), for the tests. */
void nn_linear_forward_ref(float *out, const float *inp, const float *W, const float *b,
                           int B, int IN, int OUT);
void nn_linear_backward_ref(float *dinp, float *dW, float *db, const float *dout,
                            const float *inp, const float *W, int B, int IN, int OUT);

/* out = max(inp, 0) over N floats; out may equal inp (in place). */
void nn_relu_forward(float *out, const float *inp, size_t N);
/* dinp += dout where out > 0. `out` is the forward OUTPUT (works after an in-place
 * forward). dinp must not alias dout. */
void nn_relu_backward(float *dinp, const float *dout, const float *out, size_t N);
/* The element-wise hot loops (ReLU, Adam) have an SSE path on x86-64 that does not rely
 * on the compiler's vectorizer (the build is -O3, CMakeLists.txt); these plain-loop twins
 * are what the tests compare it with (bitwise: both use correctly rounded IEEE operations
 * in the same order). */
void nn_relu_forward_ref(float *out, const float *inp, size_t N);
void nn_relu_backward_ref(float *dinp, const float *dout, const float *out, size_t N);

/* Row-wise softmax: out[i,:] = softmax(inp[i,:]).  out, inp (B,N); out may equal inp. */
void nn_softmax_forward(float *out, const float *inp, int B, int N);
/* dinp += out .* (dout - rowsum(dout .* out)).  `out` is the forward output. dinp must
 * not alias dout. */
void nn_softmax_backward(float *dinp, const float *dout, const float *out, int B, int N);

/* LayerNorm over the last dimension (eps NN_LN_EPS):
 * out = (inp - mean) * rstd * g + b.  out, inp (B,C); mean, rstd (B) are saved for the
 * backward; g, b (C). out must not alias inp. */
#define NN_LN_EPS 1e-5f
void nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *g, const float *b, int B, int C);
/* dinp += dL/dinp; dg += sum_rows dout .* xhat; db += sum_rows dout. */
void nn_layernorm_backward(float *dinp, float *dg, float *db, const float *dout,
                           const float *inp, const float *mean, const float *rstd,
                           const float *g, int B, int C);

/* Multi-head attention of ONE query per example over L keys (the query position of a
 * self-attention layer: the only output a one-block encoder needs).
 *   L <= NN_ATTN_MAX_L. q (B, H*dh); k, v (B, L, H*dh); mask (B, L): 1 = attend, 0 = masked (each row needs
 *   at least one 1). att (B, H, L) gets the probabilities (0 where masked);
 *   ctx (B, H*dh) = sum_j att[h,j] v[j, head h], scores scaled by 1/sqrt(dh). */
#define NN_ATTN_MAX_L 64
void nn_attn_forward(float *ctx, float *att, const float *q, const float *k, const float *v,
                     const unsigned char *mask, int B, int L, int H, int dh);
/* dq, dk, dv += the gradients given dctx (B, H*dh); att from the forward. */
void nn_attn_backward(float *dq, float *dk, float *dv, const float *dctx, const float *att,
                      const float *q, const float *k, const float *v, int B, int L, int H,
                      int dh);

/* Scaled tanh, the generator's output layer: th = tanh(inp), out = gamma * th (N).
 * th is saved for the backward; out may equal inp. */
void nn_scaled_tanh_forward(float *out, float *th, const float *inp, float gamma, size_t N);
/* dinp += dout * gamma * (1 - th^2);  *dgamma += sum dout * th. */
void nn_scaled_tanh_backward(float *dinp, float *dgamma, const float *dout, const float *th,
                             float gamma, size_t N);

/* Numerically stable sigmoid and softplus = log(1 + e^x). */
double nn_sigmoid(double x);
double nn_softplus(double x);

/* ESMM entire-space head over B examples.
 *   p_ctr = s(z_ctr), p_cvr = s(z_cvr), p_ctcvr = p_ctr p_cvr,
 *   loss_i = w_ctr_i BCE(p_ctr, y_click_i) + w_ctcvr_i BCE(p_ctcvr, y_conv_i).
 * Writes p_ctr[B], p_cvr[B] (either may be NULL) and returns sum_i loss_i.
 * log p uses log-sigmoids; log(1 - p_ctcvr) is log(s(-z_ctr) + s(z_ctr) s(-z_cvr)),
 * a sum of positives without cancellation, floored at NN_ESMM_EPS in the log. */
#define NN_ESMM_EPS 1e-30
double nn_esmm_forward(float *p_ctr, float *p_cvr, const float *z_ctr, const float *z_cvr,
                       const float *y_click, const float *y_conv, const float *w_ctr,
                       const float *w_ctcvr, int B);
/* dz_ctr += scale * dloss_i/dz_ctr_i, dz_cvr likewise (analytic; bounded by
 * |w_ctr| + |w_ctcvr| per example). Same inputs as nn_esmm_forward. */
void nn_esmm_backward(float *dz_ctr, float *dz_cvr, const float *z_ctr, const float *z_cvr,
                      const float *y_click, const float *y_conv, const float *w_ctr,
                      const float *w_ctcvr, float scale, int B);

/* One bias-corrected Adam step over n parameters; t is the 1-based step count.
 * m, v (n) are the moment buffers, updated in place. */
void nn_adam_step(float *param, const float *grad, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, int t);
void nn_adam_step_ref(float *param, const float *grad, float *m, float *v, size_t n,
                      float lr, float beta1, float beta2, float eps, int t);
/* Global L2 norm of grad (n); if it exceeds max_norm > 0, scale grad down to max_norm.
 * Returns the norm before clipping. max_norm <= 0 only measures. */
float nn_clip_grad_norm(float *grad, size_t n, float max_norm);

#endif
