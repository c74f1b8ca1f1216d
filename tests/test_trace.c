/* test_trace.c - batch traces: written, read back field for field, and refused when
 * truncated, of another format or of another version. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "check.h"
#include "eval/trace.h"

static void tmp_path(char *buf, size_t n, const char *name) {
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/m3_test_trace_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
}

static void fill(m3_example *e, int i, const m3_model_cfg *c) {
    memset(e, 0, sizeof *e);
    e->scenario = i % c->n_scen;
    e->ts_ms = 1700000000000LL + i;
    for (int s = 0; s < c->n_cat; s++) e->cat[s] = m3_feat_key(s, i * 7 + s);
    for (int k = 0; k < c->n_num; k++) e->num[k] = 0.25f * (float)(i + k);
    e->y_click = (float)(i % 2);
    e->y_conv = (float)(i % 4 == 1);
    e->w_ctr = i < 5 ? 1.0f : 0.0f;
    e->w_ctcvr = (float)(i % 3 != 0);
}

/* Write a trace of two batches (5 impressions + 2 settled rows, then 3 impressions). */
static void write_trace(const char *path, const m3_model_cfg *c, m3_example *ex) {
    static const char *ids[10] = { "a", "b", "c", "d", "e", "b", "d", "f", "g", "h" };
    for (int i = 0; i < 10; i++) fill(&ex[i], i, c);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK_EQ_INT(trace_write_header(f, c), 0);
    CHECK_EQ_INT(trace_write_batch(f, c, ex, ids, 7, 5), 0);
    CHECK_EQ_INT(trace_write_batch(f, c, ex + 7, ids + 7, 3, 3), 0);
    CHECK_EQ_INT(fclose(f), 0);
}

static void truncate_to(const char *path, long n) {
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    CHECK_EQ_INT(ftruncate(fileno(f), n), 0);
    fclose(f);
}

int main(void) {
    m3_model_cfg c;
    m3_model_cfg_defaults(&c);
    c.arch = M3_ARCH_M3REC;
    c.n_cat = 11; c.slice_user_new = 1;   /* the configuration the test was written with */
    c.emb_dim = 8;
    c.hidden[0] = 32; c.hidden[1] = 16;
    c.lr_dense = 0.01f;
    c.seed = 0x1234567890abcdefULL;
    c.max_batch = 16;
    c.dots = 1;
    c.acc0_emb = 0.25f;
    char path[512], err[512];
    tmp_path(path, sizeof path, "trace.bin");
    m3_example ex[10];
    write_trace(path, &c, ex);

    trace *t = trace_read(path, err, sizeof err);
    CHECK_MSG(t != NULL, "%s", err);
    CHECK_EQ_INT(t->cfg.arch, M3_ARCH_M3REC);
    CHECK_EQ_INT(t->cfg.emb_dim, 8);
    CHECK_EQ_INT(t->cfg.n_hidden, 2);
    CHECK_EQ_INT(t->cfg.hidden[1], 16);
    CHECK_EQ_INT(t->cfg.max_batch, 16);
    CHECK_EQ_INT(t->cfg.item_cat_from, c.item_cat_from);
    CHECK(t->cfg.lr_dense == 0.01f);
    CHECK(t->cfg.seed == 0x1234567890abcdefULL);
    CHECK_EQ_INT(t->cfg.dots, 1);
    CHECK(t->cfg.acc0_emb == 0.25f);
    CHECK_EQ_INT(t->n_batches, 2);
    CHECK_EQ_INT(t->n_rows, 10);
    CHECK_EQ_INT(t->B[0], 7);
    CHECK_EQ_INT(t->n_imp[0], 5);
    CHECK_EQ_INT(t->B[1], 3);
    CHECK_EQ_INT(t->first[1], 7);
    for (int i = 0; i < 10; i++) {
        const m3_example *a = &t->ex[i], *b = &ex[i];
        CHECK_EQ_INT(a->scenario, b->scenario);
        CHECK_EQ_INT(a->ts_ms, b->ts_ms);
        CHECK(memcmp(a->cat, b->cat, sizeof(uint64_t) * (size_t)c.n_cat) == 0);
        CHECK(memcmp(a->num, b->num, sizeof(float) * (size_t)c.n_num) == 0);
        CHECK(a->y_click == b->y_click && a->y_conv == b->y_conv);
        CHECK(a->w_ctr == b->w_ctr && a->w_ctcvr == b->w_ctcvr);
    }
    /* a settled row carries the ref of its impression; distinct ids differ */
    CHECK(t->ref[5] == t->ref[1]);
    CHECK(t->ref[6] == t->ref[3]);
    CHECK(t->ref[0] != t->ref[1]);
    trace_free(t);
    trace_free(NULL);

    /* a batch cut short is refused, naming the batch */
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long full = ftell(f);
    fclose(f);
    truncate_to(path, full - 3);
    CHECK(trace_read(path, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "batch 1 truncated");
    /* another version, another format, no file */
    write_trace(path, &c, ex);
    f = fopen(path, "r+b");
    CHECK(f != NULL);
    uint32_t v = 2;
    fseek(f, 4, SEEK_SET);
    CHECK_EQ_INT(fwrite(&v, 4, 1, f), 1);
    fclose(f);
    CHECK(trace_read(path, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "trace version 2");
    f = fopen(path, "r+b");
    CHECK(f != NULL);
    CHECK_EQ_INT(fwrite("M3RB", 4, 1, f), 1);
    fclose(f);
    CHECK(trace_read(path, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "bad magic");
    write_trace(path, &c, ex);
    truncate_to(path, 100);   /* inside the header */
    CHECK(trace_read(path, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "truncated header");
    unlink(path);
    CHECK(trace_read(path, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "cannot open");
    return 0;
}
