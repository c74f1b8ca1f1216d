/* trace.c - the minibatches a learner trains on, recorded to a file and read back. */
#include "eval/trace.h"

#include <stdlib.h>
#include <string.h>

#include "base/hash.h"

#define TRACE__MAGIC "M3BT"
#define TRACE__VERSION 1u
#define TRACE__NI 32
#define TRACE__NF 8

int trace_write_header(FILE *f, const m3_model_cfg *c) {
    int32_t v[TRACE__NI] = {0};
    int k = 0;
    v[k++] = c->arch; v[k++] = c->n_scen; v[k++] = c->n_cat; v[k++] = c->n_num;
    v[k++] = c->emb_dim; v[k++] = c->n_hidden;
    for (int l = 0; l < 4; l++) v[k++] = l < c->n_hidden ? c->hidden[l] : 0;
    v[k++] = c->tower_hidden;
    v[k++] = c->n_exp_shared; v[k++] = c->n_exp_scen; v[k++] = c->n_exp_task;
    v[k++] = c->mieg; v[k++] = c->upt; v[k++] = c->item_warm; v[k++] = c->mieg_hidden;
    v[k++] = c->upt_heads; v[k++] = c->upt_ffn;
    v[k++] = c->item_cat_from; v[k++] = c->item_cat_n;
    v[k++] = c->item_num_from; v[k++] = c->item_num_n; v[k++] = c->max_batch;
    v[k++] = c->dots;
    float fl[TRACE__NF] = { c->lr_dense, c->lr_emb, c->l2_emb, c->clip_norm, c->mieg_align,
                            c->upt_step, c->upt_step_conv, c->acc0_emb };
    uint32_t ver = TRACE__VERSION;
    uint64_t seed = c->seed;
    if (fwrite(TRACE__MAGIC, 4, 1, f) != 1 || fwrite(&ver, 4, 1, f) != 1 ||
        fwrite(v, sizeof v, 1, f) != 1 || fwrite(fl, sizeof fl, 1, f) != 1 ||
        fwrite(&seed, 8, 1, f) != 1)
        return -1;
    return 0;
}

int trace_write_batch(FILE *f, const m3_model_cfg *c, const m3_example *ex,
                      const char *const *ids, int B, int n_imp) {
    uint32_t h[2] = { (uint32_t)B, (uint32_t)n_imp };
    if (fwrite(h, sizeof h, 1, f) != 1) return -1;
    for (int i = 0; i < B; i++) {
        const m3_example *e = &ex[i];
        float lab[4] = { e->y_click, e->y_conv, e->w_ctr, e->w_ctcvr };
        uint64_t ref = hash_fnv64_str(ids[i]);
        if (fwrite(&e->scenario, 4, 1, f) != 1 || fwrite(&e->ts_ms, 8, 1, f) != 1 ||
            fwrite(e->cat, 8, (size_t)c->n_cat, f) != (size_t)c->n_cat ||
            fwrite(e->num, 4, (size_t)c->n_num, f) != (size_t)c->n_num ||
            fwrite(lab, sizeof lab, 1, f) != 1 || fwrite(&ref, 8, 1, f) != 1)
            return -1;
    }
    return 0;
}

void trace_free(trace *t) {
    if (!t) return;
    free(t->B);
    free(t->n_imp);
    free(t->first);
    free(t->ex);
    free(t->ref);
    free(t);
}

/* Grow the per-batch arrays to hold cap batches. */
static int trace__grow_batches(trace *t, int cap) {
    int *b = realloc(t->B, sizeof(int) * (size_t)cap);
    if (!b) return -1;
    t->B = b;
    int *n = realloc(t->n_imp, sizeof(int) * (size_t)cap);
    if (!n) return -1;
    t->n_imp = n;
    size_t *fi = realloc(t->first, sizeof(size_t) * (size_t)cap);
    if (!fi) return -1;
    t->first = fi;
    return 0;
}

/* The configuration a header recorded: the int and float words in trace.h's order, over
 * the defaults of every field the header does not hold. */
static void trace__cfg_from(m3_model_cfg *c, const int32_t *v, const float *fl, uint64_t seed) {
    m3_model_cfg_defaults(c);
    int k = 0;
    c->arch = v[k++]; c->n_scen = v[k++]; c->n_cat = v[k++]; c->n_num = v[k++];
    c->emb_dim = v[k++]; c->n_hidden = v[k++];
    for (int l = 0; l < 4; l++) c->hidden[l] = v[k++];
    c->tower_hidden = v[k++];
    c->n_exp_shared = v[k++]; c->n_exp_scen = v[k++]; c->n_exp_task = v[k++];
    c->mieg = v[k++]; c->upt = v[k++]; c->item_warm = v[k++]; c->mieg_hidden = v[k++];
    c->upt_heads = v[k++]; c->upt_ffn = v[k++];
    c->item_cat_from = v[k++]; c->item_cat_n = v[k++];
    c->item_num_from = v[k++]; c->item_num_n = v[k++]; c->max_batch = v[k++];
    c->dots = v[k++];   /* a spare 0 in traces made before model.dots */
    c->lr_dense = fl[0]; c->lr_emb = fl[1]; c->l2_emb = fl[2]; c->clip_norm = fl[3];
    c->mieg_align = fl[4]; c->upt_step = fl[5]; c->upt_step_conv = fl[6]; c->acc0_emb = fl[7];
    c->seed = seed;
}

/* Read and check the header into t->cfg. Returns 0, or -1 with errstr set. */
static int trace__read_header(FILE *f, trace *t, const char *path, char *errstr,
                              size_t errstr_size) {
    char magic[4];
    uint32_t ver;
    int32_t v[TRACE__NI];
    float fl[TRACE__NF];
    uint64_t seed;
    if (fread(magic, 4, 1, f) != 1 || memcmp(magic, TRACE__MAGIC, 4) != 0 ||
        fread(&ver, 4, 1, f) != 1) {
        snprintf(errstr, errstr_size, "%s: not a batch trace (bad magic)", path);
        return -1;
    }
    if (ver != TRACE__VERSION) {
        snprintf(errstr, errstr_size, "%s: trace version %u, this build reads %u", path, ver,
                 TRACE__VERSION);
        return -1;
    }
    if (fread(v, sizeof v, 1, f) != 1 || fread(fl, sizeof fl, 1, f) != 1 ||
        fread(&seed, 8, 1, f) != 1) {
        snprintf(errstr, errstr_size, "%s: truncated header", path);
        return -1;
    }
    m3_model_cfg *c = &t->cfg;
    trace__cfg_from(c, v, fl, seed);
    if (c->n_cat < 0 || c->n_cat > M3_MAX_CAT || c->n_num < 0 || c->n_num > M3_MAX_NUM ||
        c->max_batch < 1) {
        snprintf(errstr, errstr_size, "%s: bad header (n_cat %d, n_num %d, max_batch %d)",
                 path, c->n_cat, c->n_num, c->max_batch);
        return -1;
    }
    return 0;
}

/* Room for one more batch of B rows: the per-batch arrays double from 1024 batches, the
 * row arrays from 65536 rows. Returns 0, or -1 when out of memory. */
static int trace__make_room(trace *t, size_t *cap_b, size_t *cap_rows, uint32_t B) {
    if ((size_t)t->n_batches == *cap_b) {
        *cap_b = *cap_b ? 2 * *cap_b : 1024;
        if (trace__grow_batches(t, (int)*cap_b) != 0) return -1;
    }
    if (t->n_rows + B > *cap_rows) {
        size_t nc = *cap_rows ? 2 * *cap_rows : 65536;
        while (nc < t->n_rows + B) nc *= 2;
        m3_example *ex = realloc(t->ex, nc * sizeof *ex);
        if (!ex) return -1;
        t->ex = ex;
        uint64_t *ref = realloc(t->ref, nc * sizeof *ref);
        if (!ref) return -1;
        t->ref = ref;
        *cap_rows = nc;
    }
    return 0;
}

/* Read one row into t->ex[t->n_rows] and t->ref[t->n_rows]. Returns 0, or -1 when the
 * file ends inside it. */
static int trace__read_row(FILE *f, trace *t) {
    const m3_model_cfg *c = &t->cfg;
    m3_example *e = &t->ex[t->n_rows];
    float lab[4];
    memset(e, 0, sizeof *e);
    if (fread(&e->scenario, 4, 1, f) != 1 || fread(&e->ts_ms, 8, 1, f) != 1 ||
        fread(e->cat, 8, (size_t)c->n_cat, f) != (size_t)c->n_cat ||
        fread(e->num, 4, (size_t)c->n_num, f) != (size_t)c->n_num ||
        fread(lab, sizeof lab, 1, f) != 1 || fread(&t->ref[t->n_rows], 8, 1, f) != 1)
        return -1;
    e->y_click = lab[0]; e->y_conv = lab[1]; e->w_ctr = lab[2]; e->w_ctcvr = lab[3];
    return 0;
}

/* Read the batches until the end of the file. Returns 0, -1 with errstr set, or -2 when
 * out of memory. */
static int trace__read_batches(FILE *f, trace *t, const char *path, char *errstr,
                               size_t errstr_size) {
    size_t cap_rows = 0, cap_b = 0;
    uint32_t h[2];
    while (fread(h, sizeof h, 1, f) == 1) {
        if (h[0] > (uint32_t)t->cfg.max_batch || h[1] > h[0]) {
            snprintf(errstr, errstr_size, "%s: batch %d: %u rows (%u impressions), max_batch %d",
                     path, t->n_batches, h[0], h[1], t->cfg.max_batch);
            return -1;
        }
        if (trace__make_room(t, &cap_b, &cap_rows, h[0]) != 0) return -2;
        t->B[t->n_batches] = (int)h[0];
        t->n_imp[t->n_batches] = (int)h[1];
        t->first[t->n_batches] = t->n_rows;
        for (uint32_t i = 0; i < h[0]; i++) {
            if (trace__read_row(f, t) != 0) {
                snprintf(errstr, errstr_size, "%s: batch %d truncated", path, t->n_batches);
                return -1;
            }
            t->n_rows++;
        }
        t->n_batches++;
    }
    return 0;
}

trace *trace_read(const char *path, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errstr_size, "%s: cannot open", path);
        return NULL;
    }
    trace *t = calloc(1, sizeof *t);
    int r = t ? trace__read_header(f, t, path, errstr, errstr_size) : -2;
    if (r == 0) r = trace__read_batches(f, t, path, errstr, errstr_size);
    fclose(f);
    if (r == 0) return t;
    if (r == -2) snprintf(errstr, errstr_size, "%s: out of memory", path);
    trace_free(t);
    return NULL;
}
