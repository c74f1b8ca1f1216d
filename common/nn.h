/* nn.h - dense layers for the model: linear, ReLU, the ESMM loss head, Adam, clipping.
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
/* The build is -O2, where GCC does not vectorize loops, so the element-wise hot loops
 * (ReLU, Adam) have an SSE path on x86-64; these plain-loop twins are what the tests
 * compare it with (bitwise: both use correctly rounded IEEE operations in the same order). */
void nn_relu_forward_ref(float *out, const float *inp, size_t N);
void nn_relu_backward_ref(float *dinp, const float *dout, const float *out, size_t N);

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
