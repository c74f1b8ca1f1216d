/* trace.h - the minibatches a learner trains on, recorded to a file and read back.
 *
 * m3rec-offline --dump-batches writes one; m3rec-batchbench replays it through the C
 * engine and reference/bench.py through the PyTorch twin, so both train on exactly the
 * same batches in the same order. Format (little-endian, version 1):
 *   "M3BT", u32 version,
 *   i32 x32: arch, n_scen, n_cat, n_num, emb_dim, n_hidden, hidden[4], tower_hidden,
 *            experts shared/scenario/task, mieg, upt, item_warm, mieg_hidden, upt_heads,
 *            upt_ffn, item_cat_from, item_cat_n, item_num_from, item_num_n, max_batch, dots,
 *            0 x6
 *   f32 x8:  lr_dense, lr_emb, l2_emb, clip_norm, mieg_align, upt_step, upt_step_conv, acc0_emb
 *   u64 seed
 *   batches until the end of the file: u32 B, u32 n_imp, then B rows of
 *     i32 scenario, i64 ts_ms, u64 cat[n_cat], f32 num[n_num],
 *     f32 y_click, y_conv, w_ctr, w_ctcvr, u64 ref (FNV-1a 64 of the impression id)
 *   The first n_imp rows of a batch are impressions (predicted, then trained); the rest
 *   are settled CTCVR rows of earlier impressions (the same ref). */
#ifndef M3_TRACE_H
#define M3_TRACE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "engine/model.h"

typedef struct {
    m3_model_cfg cfg;      /* the model configuration of the recording run */
    int n_batches;
    int *B, *n_imp;        /* (n_batches) */
    size_t *first;         /* (n_batches) index of each batch's first row */
    size_t n_rows;
    m3_example *ex;        /* (n_rows) */
    uint64_t *ref;         /* (n_rows) */
} trace;

/* Write the header for model configuration c. Returns 0, or -1 on a write error. */
int trace_write_header(FILE *f, const m3_model_cfg *c);
/* Append one batch (n_cat, n_num from c; ids[i] the impression id of row i). Returns 0,
 * or -1 on a write error. */
int trace_write_batch(FILE *f, const m3_model_cfg *c, const m3_example *ex,
                      const char *const *ids, int B, int n_imp);
/* Read a whole trace. On error, NULL is returned and errstr names the file and the
 * problem (cannot open, bad magic or version, truncated batch). */
trace *trace_read(const char *path, char *errstr, size_t errstr_size);
/* Free a trace; NULL is a no-op. */
void trace_free(trace *t);

#endif
