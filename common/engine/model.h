/* model.h - the multi-scenario multi-task model: embeddings, MIEG, UPT, experts with
 * aggregate gates, towers, ESMM loss.
 *
 * One engine, several architectures (model.arch), same inputs, embeddings and training
 * loop: `lr` (no interactions, the floor), `shared_bottom`, `mmoe`, `ple` (one CGC
 * level), `star` (shared-times-scenario weights), `m3rec` (MIEG + UPT + shared, scenario
 * and task experts with a gate per (scenario, task)), and the ablations `m3rec_nomieg`,
 * `m3rec_noupt`. docs/model.md describes each. The worker turns each event into an
 * m3_example, calls m3_forward() on a minibatch (predict first), publishes the
 * predictions, then m3_train() (train second) with the activations m3_forward() cached. */
#ifndef M3_MODEL_H
#define M3_MODEL_H
#include <stddef.h>
#include <stdint.h>

#define M3_MAX_SCEN 16    /* scenarios */
#define M3_MAX_CAT 64     /* categorical slots: user id, item id, then the configured fields */
#define M3_MAX_NUM 64     /* numeric slots: the configured user then item numeric fields */
#define M3_MAX_LAYERS 4   /* hidden layers in the bottom MLP / each expert */
#define M3_MAX_EXPERTS 64 /* experts of one model, all scenarios together */

/* Slot layout of m3_example.cat: */
#define M3_SLOT_USER 0
#define M3_SLOT_ITEM 1

typedef enum {
    M3_ARCH_LR = 0, M3_ARCH_SHARED_BOTTOM, M3_ARCH_MMOE, M3_ARCH_PLE, M3_ARCH_STAR,
    M3_ARCH_M3REC, M3_ARCH_M3REC_NOMIEG, M3_ARCH_M3REC_NOUPT, M3_ARCH__COUNT
} m3_arch;

/* Parse an architecture name ("lr", "shared_bottom", "mmoe", "ple", "star", "m3rec",
 * "m3rec_nomieg", "m3rec_noupt"); -1 when unknown. */
int m3_arch_parse(const char *name);
const char *m3_arch_name(int arch);

/* The 64-bit key of a categorical value in a slot. Different slots never share keys
 * for the same value; `value` M3_MISSING is the slot's learned "missing" row. */
#define M3_MISSING INT64_MIN
uint64_t m3_feat_key(int slot, int64_t value);

typedef struct {
    int32_t scenario;            /* index into the configured scenarios */
    int64_t ts_ms;               /* event time */
    uint64_t cat[M3_MAX_CAT];    /* n_cat keys from m3_feat_key() */
    float num[M3_MAX_NUM];       /* n_num values; a missing value is 0 */
    float y_click, y_conv;       /* labels: click; click AND conversion */
    float w_ctr, w_ctcvr;        /* loss weights for this step: 1 = train that term, 0 = skip */
    uint8_t slices;              /* the caller's copy of m3_slice_flags() at prediction time
                                    (the model neither reads nor writes it) */
} m3_example;

/* Slices of the evaluation (m3_slice_flags()): */
#define M3_SLICE_NEW_ITEM 1       /* the item has fewer than item_warm trained impressions */
#define M3_SLICE_NEW_USER_SCEN 2  /* the user has no impression in this scenario yet but
                                     has some in another one */

typedef struct {
    int arch;                    /* m3_arch */
    int n_scen, n_cat, n_num;    /* n_cat includes the user and item id slots */
    int emb_dim;                 /* d */
    int n_hidden;                /* bottom MLP layers, e.g. 2 */
    int hidden[M3_MAX_LAYERS];   /* their widths, e.g. 128, 64 */
    int tower_hidden;            /* hidden width of each task tower, e.g. 32 */
    int max_batch;               /* largest B passed to m3_forward() */
    float lr_dense;              /* Adam step size for dense parameters */
    float lr_emb;                /* Adagrad step size for embedding rows */
    float acc0_emb;              /* Adagrad's starting accumulator for a new embedding row */
    float l2_emb;                /* L2 on embedding rows touched by a step */
    float clip_norm;             /* dense gradient-norm clip; 0 = off */
    uint64_t seed;
    /* experts (mmoe, ple, m3rec), each an MLP over cfg.hidden */
    int n_exp_shared;            /* K_sh: shared experts */
    int n_exp_scen;              /* K_sc: experts of each scenario */
    int n_exp_task;              /* K_t: experts of each task */
    float gate_scale;            /* gate logits = gate_scale (W x + b) (mmoe, ple, m3rec): below
                                    1 the softmax gates move slower than the experts, which
                                    keeps them from collapsing early onto one expert */
    /* MIEG and UPT switches (arch m3rec; the ablation archs turn one off) */
    int mieg, upt;               /* 1 = on */
    int dots;                    /* 1 = the backbone also reads the dot product of every pair
                                    of field embeddings and the scenario's (not lr) */
    int item_warm;               /* an item is young below this many trained impressions */
    int slice_user_new;          /* new_user_in_scenario: the user's first this many
                                    impressions in a scenario (known in another) */
    int slice_burnin;            /* slices are reported once the model has taken this many
                                    training steps (its own start-up is no slice); 0 by
                                    default: the worker's burn-in is the scoreboard's, in
                                    impressions (model.slice.burnin.impressions) */
    int mieg_hidden;             /* generator hidden width */
    float mieg_align;            /* weight of ||e_gen - stopgrad(e_item)||^2 on warm items */
    int upt_heads, upt_ffn;      /* attention heads (divide d), FFN width */
    float upt_step, upt_step_conv;  /* preference step per unit of surprise: click, conversion */
    /* where the item's features sit (the generator's input): item_cat_n categorical
     * slots from item_cat_from, item_num_n numerics from item_num_from */
    int item_cat_from, item_cat_n, item_num_from, item_num_n;
} m3_model_cfg;

/* Fill c with the defaults of every field (shared_bottom over 3 scenarios, 11 slots,
 * 3 numerics, d 16, hidden 128,64, tower 32, B 512, experts 2/1/1, MIEG, UPT and the
 * interactions on),
 * the same values as config/worker.properties. */
void m3_model_cfg_defaults(m3_model_cfg *c);

typedef struct m3_model m3_model;

/* The checks m3_new() makes of cfg, for a configuration reader to run before building
 * anything. Returns 0, or -1 with errstr naming the configuration keys involved (e.g.
 * "model.upt.heads 3 must divide model.emb.dim 16"). */
int m3_check_cfg(const m3_model_cfg *cfg, char *errstr, size_t errstr_size);

/* The bytes m3_snap_bytes() gives for a model built from cfg (0 without UPT). */
size_t m3_cfg_snap_bytes(const m3_model_cfg *cfg);

/* Bytes of UPT snapshots one pending row carries, the models of a learner together. */
#define M3_SNAP_MAX 1024

/* Create a model; all step buffers are allocated here, for max_batch examples. Dense
 * weights are initialised (He for ReLU layers) from cfg.seed, deterministically. Also pins
 * OpenBLAS to one thread. On error, NULL is returned and errstr says why (a bad
 * dimension...). */
m3_model *m3_new(const m3_model_cfg *cfg, char *errstr, size_t errstr_size);
/* Free a model; NULL is a no-op. */
void m3_destroy(m3_model *m);

/* Forward pass over B <= max_batch examples: writes p_ctr[B] and p_cvr[B]
 * (p_ctcvr = p_ctr * p_cvr). Embedding rows seen for the first time are created.
 * The activations are kept for the next m3_train() on the same examples.
 * B above max_batch is cut to max_batch; a scenario outside 0..n_scen-1 uses scenario 0. */
void m3_forward(m3_model *m, const m3_example *ex, int B, float *p_ctr, float *p_cvr);

/* ---- UPT snapshots: a delayed row trains on what it was scored with ----
 * A clicked impression's CTCVR term trains when its label settles, up to the attribution
 * window later, in a second forward pass. Read live then, UPT's input would hold the
 * user's clicks that settled in between: only clicked rows take that path, so that is a
 * label-correlated skew between training and serving. After m3_forward(), m3_snap_save()
 * copies row i's UPT input (each scenario's preference and whether there was one) into
 * m3_snap_bytes() bytes (0 for a model without UPT: nothing to keep); m3_forward_snap()
 * forwards rows whose snaps[i] is non-NULL from such a copy instead of the live state
 * (snaps may be NULL: m3_forward). */
size_t m3_snap_bytes(const m3_model *m);
void m3_snap_save(const m3_model *m, int i, void *buf);
void m3_forward_snap(m3_model *m, const m3_example *ex, int B, const void *const *snaps,
                     float *p_ctr, float *p_cvr);

/* Backward and update for the examples of the last m3_forward() (ex: the same B
 * examples, which m3_forward cached the activations of; their labels are read here):
 * loss = sum_i w_ctr[i] BCE(p_ctr, y_click) + w_ctcvr[i] BCE(p_ctr p_cvr, y_conv),
 * divided by B, plus with MIEG mieg_align/B * sum over warm items ||e_gen - sg(e_item)||^2.
 * Returns that loss (before the update), or NaN when the guard refused the step (below).
 * Dense: global-norm clip (cfg.clip_norm), one Adam step; rows: one Adagrad step per
 * distinct touched row with its gradient summed over the batch. Then the stream state: each example with w_ctr > 0 counts one impression for its
 * item and for its user in its scenario, and moves the user's UPT preference in that
 * scenario by upt_step (y_click - p_ctr) e_item; a settled click (w_ctcvr > 0, y_click 1)
 * moves it by upt_step_conv (y_conv - p_cvr) e_item (e_item: the item input of the
 * forward pass, p_ctr and p_cvr its predictions); an item reaching item_warm gets its own
 * row (MIEG). */
float m3_train(m3_model *m, const m3_example *ex);
/* The guard: m3_train() refuses a step whose loss, dense gradient norm (before clipping)
 * or any touched embedding row's gradient is not finite (NaN or an infinity, e.g. from a
 * finite but extreme numeric input that overflows the forward pass). A refused step
 * changes nothing learned - dense parameters, Adam state and step, embedding rows, item
 * and user counters, UPT preferences - only the stream clock follows the batch; m3_train
 * then returns NaN (a step that runs returns a finite loss). The caller counts it. */

/* 1 when the dense parameters and their Adam state are all finite. O(n_params). */
int m3_params_finite(const m3_model *m);
/* Keep a copy of the dense parameters, Adam state and step as the model's last good
 * state (3 n_params floats, allocated on the first call). Returns 1 when kept, 0 when
 * refused because they are not finite (the previous copy stays), -1 when out of memory
 * (no copy). */
int m3_mark_good(m3_model *m);
/* Put the last good state back: the copy of m3_mark_good (returns 1), or without one the
 * initial parameters from cfg.seed with a fresh Adam state (returns 0). Embedding rows and
 * user state are untouched (the guard keeps them finite: it refuses non-finite steps). */
int m3_rollback(m3_model *m);

/* Slice flags (M3_SLICE_*) of example i of the last m3_forward(), as they were before
 * that batch trained (0 for i out of range, and for every example until the model has
 * taken cfg.slice_burnin training steps). Every architecture keeps the item counts and
 * the per-user scenario counts, so the slices are the same for every model fed the same
 * stream. */
unsigned m3_slice_flags(const m3_model *m, int i);

/* Multiply-adds x2 of one example's forward pass, from the configuration. */
double m3_flops_per_example(const m3_model *m);
/* Number of embedding rows the model holds now. */
size_t m3_emb_rows(const m3_model *m);
/* Number of dense parameters (the Adam-trained block). */
size_t m3_n_params(const m3_model *m);
/* Bytes held by the embedding table, users tracked and the bytes of their state. */
size_t m3_emb_bytes(const m3_model *m);
size_t m3_user_rows(const m3_model *m);
size_t m3_user_bytes(const m3_model *m);
/* Whether this model runs MIEG / UPT. */
int m3_uses_mieg(const m3_model *m);
int m3_uses_upt(const m3_model *m);

/* The dense parameters and their Adam state as one versioned blob:
 *   "M3RB", version, the dimensions and switches, a hash of the configuration, the Adam
 *   step, params, m, v (n_params floats each), FNV-1a 64 of everything before it.
 * m3_blob_size() is its size; m3_blob_save() writes it into buf (size bytes) and returns
 * the bytes written, or 0 when size is too small or the parameters are not finite
 * (m3_params_finite: a blob never holds a NaN or an infinity). m3_blob_load() reads a blob
 * back into a model made with the same configuration: bit-exact, or -1 with errstr naming
 * the mismatch (magic, version, a dimension, the config hash, size, checksum or
 * non-finite parameters) and the model unchanged. Embedding rows and user state are not in the blob. */
size_t m3_blob_size(const m3_model *m);
/* The hash of the configuration that fixes the parameter layout, as the blob carries it
 * (the sync module stamps its update blobs with it). */
uint64_t m3_cfg_hash(const m3_model *m);
/* The dense parameter block (m3_n_params() floats), writable: the sync module (sync.h)
 * adds peers' deltas to it between steps. Adam's state is not part of it. */
float *m3_params(m3_model *m);
/* Adam steps taken: the model's version. */
int64_t m3_steps(const m3_model *m);
/* The dense step's hook (one per model; fn NULL removes it): m3_train() hands it the
 * minibatch's dense gradient (n_params floats, clipped, finite) before the Adam step; when
 * fn returns 1 it has taken the gradient and the model does not step (the sync module's
 * `grad` rule ships it and every worker steps on the group's mean, sync.h); 0 lets the
 * model take its own step. The rows' step, the counters and UPT run either way. */
typedef int (*m3_grad_hook)(void *ud, m3_model *m, const float *grads, size_t n);
void m3_set_grad_hook(m3_model *m, m3_grad_hook fn, void *ud);
/* One Adam step of the dense parameters on grads (n_params floats), its step size
 * model.lr.dense x lr_scale; the model's version (m3_steps) moves by one. */
void m3_dense_step(m3_model *m, const float *grads, float lr_scale);
size_t m3_blob_save(const m3_model *m, void *buf, size_t size);
int m3_blob_load(m3_model *m, const void *buf, size_t size, char *errstr, size_t errstr_size);

/* --- persistence hooks (state.c keeps the tables in RocksDB) ---
 * The embedding table and the UPT user table the model trains (owned by the model), and
 * the stream clock: the newest event time trained on, which stamps UPT updates. Together
 * with the blob they are the whole trained state. Rows may be loaded or evicted at any
 * time except between an m3_forward() and the m3_train() that uses its activations. */
struct emb_table;
struct users_table;
struct emb_table *m3_emb_table(m3_model *m);
struct users_table *m3_user_table(m3_model *m);
int64_t m3_clock(const m3_model *m);
void m3_set_clock(m3_model *m, int64_t now_ms);

/* Width of the bottom input x = [UPT: r_u (d) and S match scores ; n_cat*d embeddings ;
 * n_num numerics ; d scenario]. */
int m3_input_dim(const m3_model *m);

/* --- testing hooks: gradients without an update ---
 * m3_debug_loss(): m3_forward() then the loss (same definition and scaling as m3_train's
 * return value); nothing is updated. m3_debug_grad(): the same, plus the backward pass:
 * the dense gradients land in m3_debug_dense_grads(), the summed gradient of each touched
 * embedding row in m3_debug_emb_grad(); nothing is updated (no clipping either).
 * m3_debug_params() is the dense parameter block (m3_n_params() floats), writable.
 * m3_debug_emb_weights() is the d weights of key's row (NULL if absent), writable, valid
 * until the next row is created. m3_debug_emb_grad() is NULL when the row was not touched
 * by the last m3_debug_grad(). */
float m3_debug_loss(m3_model *m, const m3_example *ex, int B);
float m3_debug_grad(m3_model *m, const m3_example *ex, int B);
float *m3_debug_params(m3_model *m);
const float *m3_debug_dense_grads(const m3_model *m);
float *m3_debug_emb_weights(m3_model *m, uint64_t key);
const float *m3_debug_emb_grad(const m3_model *m, uint64_t key);
/* The item embedding example i of the last m3_forward() read (emb_dim floats: the item's
 * row, or MIEG's generated embedding for a young item) - what a UPT update adds; NULL
 * without an item slot. Valid until the next forward. */
const float *m3_debug_item_input(const m3_model *m, int i);

#endif
