/* model.c - the multi-scenario multi-task model: embeddings, backbone, towers, ESMM loss.
 *
 * Input of the bottom, per example: x = [emb rows of the n_cat slots (n_cat*d) ;
 * numerics (n_num) ; scenario embedding (d)], D = n_cat*d + n_num + d.
 *   shared_bottom: a = ReLU MLP(x) over cfg.hidden; each task t in {ctr, cvr} has a tower
 *                  z_t = Linear(ReLU(Linear([a_last ; scen], th)), 1).
 *   lr:            z_t = Linear(x, 1): a per-feature-value weight (w . e_value) and a
 *                  per-scenario bias (w . scen_emb[s]), no interactions.
 * Loss: ESMM entire-space (nn_esmm_forward), mean over the batch. Dense parameters (scenario
 * embeddings included) live in one block trained by Adam after global-norm clipping;
 * embedding rows are trained by lazy Adagrad (emb.c). Every buffer is sized for
 * max_batch in m3_new(); a step allocates nothing except when the embedding table grows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "model.h"
#include "nn.h"
#include "emb.h"

#define M3__ADAM_B1 0.9f
#define M3__ADAM_B2 0.999f
#define M3__ADAM_EPS 1e-8f
/* Adagrad's starting accumulator. The loss is a batch MEAN, so a row's gradient is
 * ~1/B per occurrence; a start of 0.1 would swamp it and make id rows learn slowly.
 * Measured on a 20k-item stream (B=256, lr_emb=0.05, prequential logloss): 0.1 -> 0.316,
 * 1e-3 -> 0.315/0.304 (lr/shared_bottom), 1e-5 -> 0.302, 1e-6 -> 0.302. */
#define M3__EMB_INIT_ACC 1e-5f
#define M3__MAX_BUFS 32

/* Pointers into the dense parameter block (and, with the same layout, its gradient). */
typedef struct {
    float *scen;                       /* (n_scen, d) */
    float *W[M3_MAX_LAYERS];           /* (hidden[l], in_l), in_0 = D */
    float *b[M3_MAX_LAYERS];           /* (hidden[l]) */
    float *tw1[2], *tb1[2];            /* tower t: (th, T), (th), T = h_last + d */
    float *tw2[2], *tb2[2];            /* (1, th), (1) */
    float *lw[2], *lb[2];              /* lr: (1, D), (1) */
} m3__params;

struct m3_model {
    m3_model_cfg cfg;
    int D, T, h_last;                  /* bottom input, tower input, last hidden width */
    size_t n_params;
    float *params, *grads, *adam_m, *adam_v;   /* (n_params) each */
    m3__params p, g;
    int step;                          /* Adam steps taken */
    emb_table *emb;
    /* forward cache, for max_batch examples */
    int B;                             /* examples in the cache */
    int64_t *rows;                     /* (B, n_cat) embedding rows, -1 = none */
    int32_t *scen;                     /* (B) */
    float *x;                          /* (B, D) */
    float *act[M3_MAX_LAYERS];         /* (B, hidden[l]) post-ReLU */
    float *tin;                        /* (B, T) */
    float *t1[2];                      /* (B, th) post-ReLU */
    float *z[2];                       /* (B) logits */
    float *y_click, *y_conv, *w_ctr, *w_ctcvr;  /* (B) */
    /* activation gradients */
    float *dx;                         /* (B, D) */
    float *dact[M3_MAX_LAYERS], *dpre[M3_MAX_LAYERS];  /* (B, hidden[l]) */
    float *dtin;                       /* (B, T) */
    float *dt1[2], *dpre1[2];          /* (B, th) */
    float *dz[2];                      /* (B) */
    float *fwd_block, *grad_block;
    float *zero_ptr[M3__MAX_BUFS];     /* activation-gradient buffers and their widths */
    int zero_w[M3__MAX_BUFS], n_zero;
};

/* Lay the parameters out from base (NULL: only count). Returns the float count. */
static size_t m3__point(m3__params *p, float *base, const m3_model *m) {
    const m3_model_cfg *c = &m->cfg;
    size_t off = 0;
    memset(p, 0, sizeof *p);
#define M3__TAKE(ptr, n) do { (ptr) = base ? base + off : NULL; off += (size_t)(n); } while (0)
    M3__TAKE(p->scen, c->n_scen * c->emb_dim);
    if (c->arch == M3_ARCH_SHARED_BOTTOM) {
        int in = m->D;
        for (int l = 0; l < c->n_hidden; l++) {
            M3__TAKE(p->W[l], (size_t)c->hidden[l] * in);
            M3__TAKE(p->b[l], c->hidden[l]);
            in = c->hidden[l];
        }
        for (int t = 0; t < 2; t++) {
            M3__TAKE(p->tw1[t], (size_t)c->tower_hidden * m->T);
            M3__TAKE(p->tb1[t], c->tower_hidden);
            M3__TAKE(p->tw2[t], c->tower_hidden);
            M3__TAKE(p->tb2[t], 1);
        }
    } else {
        for (int t = 0; t < 2; t++) {
            M3__TAKE(p->lw[t], m->D);
            M3__TAKE(p->lb[t], 1);
        }
    }
#undef M3__TAKE
    return off;
}

/* splitmix64 stream + Box-Muller: deterministic from cfg.seed on every platform. */
static uint64_t m3__next(uint64_t *s) {
    uint64_t x = (*s += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void m3__randn(float *w, size_t n, float std, uint64_t *s) {
    for (size_t i = 0; i < n; i++) {
        double u1 = ((double)(m3__next(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
        double u2 = (double)(m3__next(s) >> 11) * (1.0 / 9007199254740992.0);
        w[i] = (float)(std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

static void m3__init_params(m3_model *m) {
    const m3_model_cfg *c = &m->cfg;
    uint64_t s = c->seed ^ 0x6d33726563ULL;
    m3__params *p = &m->p;
    memset(m->params, 0, m->n_params * sizeof(float));   /* biases start at 0 */
    m3__randn(p->scen, (size_t)c->n_scen * c->emb_dim, 0.03f, &s);
    if (c->arch == M3_ARCH_SHARED_BOTTOM) {
        int in = m->D;
        for (int l = 0; l < c->n_hidden; l++) {   /* He: ReLU follows */
            m3__randn(p->W[l], (size_t)c->hidden[l] * in, sqrtf(2.0f / in), &s);
            in = c->hidden[l];
        }
        for (int t = 0; t < 2; t++) {
            m3__randn(p->tw1[t], (size_t)c->tower_hidden * m->T, sqrtf(2.0f / m->T), &s);
            m3__randn(p->tw2[t], c->tower_hidden, sqrtf(1.0f / c->tower_hidden), &s);
        }
    } else {
        for (int t = 0; t < 2; t++) m3__randn(p->lw[t], m->D, sqrtf(1.0f / m->D), &s);
    }
}

static int m3__check_cfg(const m3_model_cfg *c, char *errstr, size_t n) {
#define M3__BAD(...) do { snprintf(errstr, n, __VA_ARGS__); return -1; } while (0)
    if (c->arch != M3_ARCH_LR && c->arch != M3_ARCH_SHARED_BOTTOM)
        M3__BAD("model.arch %d is not implemented (lr, shared_bottom)", c->arch);
    if (c->n_scen < 1 || c->n_scen > M3_MAX_SCEN)
        M3__BAD("%d scenarios, expected 1..%d", c->n_scen, M3_MAX_SCEN);
    if (c->n_cat < 0 || c->n_cat > M3_MAX_CAT)
        M3__BAD("%d categorical slots, expected 0..%d", c->n_cat, M3_MAX_CAT);
    if (c->n_num < 0 || c->n_num > M3_MAX_NUM)
        M3__BAD("%d numeric slots, expected 0..%d", c->n_num, M3_MAX_NUM);
    if (c->emb_dim < 1 || c->emb_dim > 1024)
        M3__BAD("model.emb.dim %d, expected 1..1024", c->emb_dim);
    if (c->max_batch < 1 || c->max_batch > 1 << 20)
        M3__BAD("max_batch %d, expected 1..%d", c->max_batch, 1 << 20);
    if (c->arch == M3_ARCH_SHARED_BOTTOM) {
        if (c->n_hidden < 1 || c->n_hidden > M3_MAX_LAYERS)
            M3__BAD("shared_bottom needs 1..%d hidden layers, got %d", M3_MAX_LAYERS,
                    c->n_hidden);
        for (int l = 0; l < c->n_hidden; l++)
            if (c->hidden[l] < 1 || c->hidden[l] > 65536)
                M3__BAD("model.hidden[%d] = %d, expected 1..65536", l, c->hidden[l]);
        if (c->tower_hidden < 1 || c->tower_hidden > 65536)
            M3__BAD("model.tower.hidden %d, expected 1..65536", c->tower_hidden);
    }
    if (!(c->lr_dense >= 0 && c->lr_emb >= 0 && c->l2_emb >= 0 && c->clip_norm >= 0) ||
        !isfinite(c->lr_dense) || !isfinite(c->lr_emb) || !isfinite(c->l2_emb) ||
        !isfinite(c->clip_norm))
        M3__BAD("learning rates, l2 and clip norm must be finite and >= 0");
    return 0;
#undef M3__BAD
}

m3_model *m3_new(const m3_model_cfg *cfg, char *errstr, size_t errstr_size) {
    openblas_set_num_threads(1);
    if (m3__check_cfg(cfg, errstr, errstr_size) != 0) return NULL;
    m3_model *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->cfg = *cfg;
    const m3_model_cfg *c = &m->cfg;
    int d = c->emb_dim, th = c->tower_hidden, nb = c->max_batch;
    int sb = c->arch == M3_ARCH_SHARED_BOTTOM;
    m->D = c->n_cat * d + c->n_num + d;
    m->h_last = sb ? c->hidden[c->n_hidden - 1] : 0;
    m->T = m->h_last + d;

    m->n_params = m3__point(&m->p, NULL, m);
    m->params = calloc(m->n_params, sizeof(float));
    m->grads = calloc(m->n_params, sizeof(float));
    m->adam_m = calloc(m->n_params, sizeof(float));
    m->adam_v = calloc(m->n_params, sizeof(float));
    if (!m->params || !m->grads || !m->adam_m || !m->adam_v) goto oom;
    m3__point(&m->p, m->params, m);
    m3__point(&m->g, m->grads, m);
    m3__init_params(m);

    m->emb = emb_new(d, c->seed, M3__EMB_INIT_ACC, (size_t)nb * (c->n_cat ? c->n_cat : 1),
                     errstr, errstr_size);
    if (!m->emb) goto fail;
    m->rows = malloc(sizeof(int64_t) * (size_t)nb * (c->n_cat ? c->n_cat : 1));
    m->scen = malloc(sizeof(int32_t) * (size_t)nb);
    if (!m->rows || !m->scen) goto oom;

    /* forward cache: widths per example, carved from one block */
    size_t fw = (size_t)m->D + 6;           /* x, z[2], labels and weights (4) */
    size_t gw = (size_t)m->D + 2;           /* dx, dz[2] */
    if (sb) {
        for (int l = 0; l < c->n_hidden; l++) { fw += c->hidden[l]; gw += 2 * c->hidden[l]; }
        fw += m->T + 2 * th;
        gw += m->T + 4 * th;
    }
    m->fwd_block = calloc(fw * nb, sizeof(float));
    m->grad_block = calloc(gw * nb, sizeof(float));
    if (!m->fwd_block || !m->grad_block) goto oom;
    float *f = m->fwd_block, *gb = m->grad_block;
#define M3__CUT(ptr, w) do { (ptr) = f; f += (size_t)(w) * nb; } while (0)
#define M3__GCUT(ptr, w) do { (ptr) = gb; gb += (size_t)(w) * nb;                    \
                              m->zero_ptr[m->n_zero] = (ptr);                         \
                              m->zero_w[m->n_zero++] = (w); } while (0)
    M3__CUT(m->x, m->D);
    M3__CUT(m->z[0], 1); M3__CUT(m->z[1], 1);
    M3__CUT(m->y_click, 1); M3__CUT(m->y_conv, 1);
    M3__CUT(m->w_ctr, 1); M3__CUT(m->w_ctcvr, 1);
    M3__GCUT(m->dx, m->D);
    M3__GCUT(m->dz[0], 1); M3__GCUT(m->dz[1], 1);
    if (sb) {
        for (int l = 0; l < c->n_hidden; l++) {
            M3__CUT(m->act[l], c->hidden[l]);
            M3__GCUT(m->dact[l], c->hidden[l]);
            M3__GCUT(m->dpre[l], c->hidden[l]);
        }
        M3__CUT(m->tin, m->T);
        M3__GCUT(m->dtin, m->T);
        for (int t = 0; t < 2; t++) {
            M3__CUT(m->t1[t], th);
            M3__GCUT(m->dt1[t], th);
            M3__GCUT(m->dpre1[t], th);
        }
    }
#undef M3__CUT
#undef M3__GCUT
    return m;
oom:
    snprintf(errstr, errstr_size, "out of memory creating the model");
fail:
    m3_destroy(m);
    return NULL;
}

void m3_destroy(m3_model *m) {
    if (!m) return;
    free(m->params);
    free(m->grads);
    free(m->adam_m);
    free(m->adam_v);
    emb_destroy(m->emb);
    free(m->rows);
    free(m->scen);
    free(m->fwd_block);
    free(m->grad_block);
    free(m);
}

/* Look up (creating) the rows of every slot and build x. */
static void m3__input(m3_model *m, const m3_example *ex, int B) {
    const m3_model_cfg *c = &m->cfg;
    int d = c->emb_dim, nc = c->n_cat, D = m->D;
    for (int i = 0; i < B; i++) {
        int64_t *r = m->rows + (size_t)i * nc;
        for (int s = 0; s < nc; s++) r[s] = emb_lookup(m->emb, ex[i].cat[s]);
    }
    /* gather only after all lookups: creating a row may move the row store */
    for (int i = 0; i < B; i++) {
        int32_t sc = ex[i].scenario;
        if (sc < 0 || sc >= c->n_scen) sc = 0;   /* unknown scenario: the first one's */
        m->scen[i] = sc;
        float *xi = m->x + (size_t)i * D;
        const int64_t *r = m->rows + (size_t)i * nc;
        for (int s = 0; s < nc; s++) {
            if (r[s] >= 0) memcpy(xi + s * d, emb_weights(m->emb, r[s]), sizeof(float) * d);
            else memset(xi + s * d, 0, sizeof(float) * d);   /* out of memory: zeros */
        }
        memcpy(xi + nc * d, ex[i].num, sizeof(float) * c->n_num);
        memcpy(xi + nc * d + c->n_num, m->p.scen + (size_t)sc * d, sizeof(float) * d);
    }
}

void m3_forward(m3_model *m, const m3_example *ex, int B, float *p_ctr, float *p_cvr) {
    const m3_model_cfg *c = &m->cfg;
    const m3__params *p = &m->p;
    if (B > c->max_batch) B = c->max_batch;
    if (B < 0) B = 0;
    m->B = B;
    m3__input(m, ex, B);
    if (c->arch == M3_ARCH_SHARED_BOTTOM) {
        int d = c->emb_dim, th = c->tower_hidden, T = m->T, hl = m->h_last;
        const float *in = m->x;
        int in_w = m->D;
        for (int l = 0; l < c->n_hidden; l++) {
            nn_linear_forward(m->act[l], in, p->W[l], p->b[l], B, in_w, c->hidden[l]);
            nn_relu_forward(m->act[l], m->act[l], (size_t)B * c->hidden[l]);
            in = m->act[l];
            in_w = c->hidden[l];
        }
        for (int i = 0; i < B; i++) {
            float *ti = m->tin + (size_t)i * T;
            memcpy(ti, in + (size_t)i * hl, sizeof(float) * hl);
            memcpy(ti + hl, p->scen + (size_t)m->scen[i] * d, sizeof(float) * d);
        }
        for (int t = 0; t < 2; t++) {
            nn_linear_forward(m->t1[t], m->tin, p->tw1[t], p->tb1[t], B, T, th);
            nn_relu_forward(m->t1[t], m->t1[t], (size_t)B * th);
            nn_linear_forward(m->z[t], m->t1[t], p->tw2[t], p->tb2[t], B, th, 1);
        }
    } else {
        for (int t = 0; t < 2; t++)
            nn_linear_forward(m->z[t], m->x, p->lw[t], p->lb[t], B, m->D, 1);
    }
    for (int i = 0; i < B; i++) {
        if (p_ctr) p_ctr[i] = (float)nn_sigmoid(m->z[0][i]);
        if (p_cvr) p_cvr[i] = (float)nn_sigmoid(m->z[1][i]);
    }
}

static float m3__loss(m3_model *m, const m3_example *ex, int B) {
    for (int i = 0; i < B; i++) {
        m->y_click[i] = ex[i].y_click;
        m->y_conv[i] = ex[i].y_conv;
        m->w_ctr[i] = ex[i].w_ctr;
        m->w_ctcvr[i] = ex[i].w_ctcvr;
    }
    double sum = nn_esmm_forward(NULL, NULL, m->z[0], m->z[1], m->y_click, m->y_conv,
                                 m->w_ctr, m->w_ctcvr, B);
    return B > 0 ? (float)(sum / B) : 0.0f;
}

/* Loss and gradients of the cached forward pass: dense ones into m->grads, embedding
 * rows' into the table's step buffer. Layers run in exact reverse order of m3_forward. */
static float m3__backward(m3_model *m, const m3_example *ex) {
    const m3_model_cfg *c = &m->cfg;
    const m3__params *p = &m->p;
    const m3__params *g = &m->g;
    int B = m->B, d = c->emb_dim, nc = c->n_cat, D = m->D;
    float loss = m3__loss(m, ex, B);
    memset(m->grads, 0, m->n_params * sizeof(float));
    for (int k = 0; k < m->n_zero; k++)
        memset(m->zero_ptr[k], 0, sizeof(float) * (size_t)m->zero_w[k] * B);
    emb_grad_begin(m->emb);
    if (B == 0) return loss;
    nn_esmm_backward(m->dz[0], m->dz[1], m->z[0], m->z[1], m->y_click, m->y_conv,
                     m->w_ctr, m->w_ctcvr, 1.0f / B, B);
    if (c->arch == M3_ARCH_SHARED_BOTTOM) {
        int th = c->tower_hidden, T = m->T, hl = m->h_last, L = c->n_hidden;
        for (int t = 1; t >= 0; t--) {
            nn_linear_backward(m->dt1[t], g->tw2[t], g->tb2[t], m->dz[t], m->t1[t],
                               p->tw2[t], B, th, 1);
            nn_relu_backward(m->dpre1[t], m->dt1[t], m->t1[t], (size_t)B * th);
            nn_linear_backward(m->dtin, g->tw1[t], g->tb1[t], m->dpre1[t], m->tin,
                               p->tw1[t], B, T, th);
        }
        for (int i = 0; i < B; i++) {
            const float *dti = m->dtin + (size_t)i * T;
            float *da = m->dact[L - 1] + (size_t)i * hl;
            float *ds = g->scen + (size_t)m->scen[i] * d;
            for (int j = 0; j < hl; j++) da[j] += dti[j];
            for (int j = 0; j < d; j++) ds[j] += dti[hl + j];
        }
        for (int l = L - 1; l >= 0; l--) {
            size_t n = (size_t)B * c->hidden[l];
            nn_relu_backward(m->dpre[l], m->dact[l], m->act[l], n);
            const float *in = l ? m->act[l - 1] : m->x;
            float *din = l ? m->dact[l - 1] : m->dx;
            int in_w = l ? c->hidden[l - 1] : D;
            nn_linear_backward(din, g->W[l], g->b[l], m->dpre[l], in, p->W[l], B, in_w,
                               c->hidden[l]);
        }
    } else {
        for (int t = 1; t >= 0; t--)
            nn_linear_backward(m->dx, g->lw[t], g->lb[t], m->dz[t], m->x, p->lw[t], B, D, 1);
    }
    /* scatter dx: embedding slots to their rows, the scenario part to its dense row */
    for (int i = 0; i < B; i++) {
        const float *dxi = m->dx + (size_t)i * D;
        const int64_t *r = m->rows + (size_t)i * nc;
        for (int s = 0; s < nc; s++)
            if (r[s] >= 0) emb_grad_add(m->emb, r[s], dxi + s * d);
        float *ds = g->scen + (size_t)m->scen[i] * d;
        const float *dsx = dxi + nc * d + c->n_num;
        for (int j = 0; j < d; j++) ds[j] += dsx[j];
    }
    return loss;
}

float m3_train(m3_model *m, const m3_example *ex, int B) {
    const m3_model_cfg *c = &m->cfg;
    (void)B;   /* the cached forward pass fixes B */
    float loss = m3__backward(m, ex);
    if (c->clip_norm > 0) nn_clip_grad_norm(m->grads, m->n_params, c->clip_norm);
    m->step++;
    nn_adam_step(m->params, m->grads, m->adam_m, m->adam_v, m->n_params, c->lr_dense,
                 M3__ADAM_B1, M3__ADAM_B2, M3__ADAM_EPS, m->step);
    emb_grad_apply(m->emb, c->lr_emb, c->l2_emb);
    return loss;
}

double m3_flops_per_example(const m3_model *m) {
    const m3_model_cfg *c = &m->cfg;
    double mac = 0;
    if (c->arch == M3_ARCH_SHARED_BOTTOM) {
        int in = m->D;
        for (int l = 0; l < c->n_hidden; l++) {
            mac += (double)in * c->hidden[l];
            in = c->hidden[l];
        }
        mac += 2.0 * ((double)m->T * c->tower_hidden + c->tower_hidden);
    } else {
        mac = 2.0 * m->D;
    }
    return 2.0 * mac;
}

size_t m3_emb_rows(const m3_model *m) { return emb_rows(m->emb); }
size_t m3_n_params(const m3_model *m) { return m->n_params; }
int m3_input_dim(const m3_model *m) { return m->D; }

float m3_debug_loss(m3_model *m, const m3_example *ex, int B) {
    m3_forward(m, ex, B, NULL, NULL);
    return m3__loss(m, ex, m->B);
}

float m3_debug_grad(m3_model *m, const m3_example *ex, int B) {
    m3_forward(m, ex, B, NULL, NULL);
    return m3__backward(m, ex);
}

float *m3_debug_params(m3_model *m) { return m->params; }
const float *m3_debug_dense_grads(const m3_model *m) { return m->grads; }

float *m3_debug_emb_weights(m3_model *m, uint64_t key) {
    int64_t r = emb_find(m->emb, key);
    return r < 0 ? NULL : emb_weights(m->emb, r);
}

const float *m3_debug_emb_grad(const m3_model *m, uint64_t key) {
    int64_t r = emb_find(m->emb, key);
    return r < 0 ? NULL : emb_grad_get(m->emb, r);
}
