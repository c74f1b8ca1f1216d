/* state_changelog.c - the state's side of the changelog (group.changelog): the records a
 * checkpoint writes through it, and the sink a partition's restore installs into. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "state/state_int.h"

void state_set_changelog(state *st, chg *c, state_commit_fn commit, void *ud) {
    st->chg = c;
    st->commit_fn = commit;
    st->commit_ud = ud;
}

static int state__chg_done(state *st, int rc, const char *err) {
    if (rc >= 0) return 0;
    if (!st->chg_err[0]) snprintf(st->chg_err, sizeof st->chg_err, "%s", err);
    return 1;
}

int state__chg_key(state *st, int kind, uint64_t key, const void *val, size_t len) {
    if (!st->chg) return 0;
    char err[400];
    return state__chg_done(st, chg_put_key(st->chg, kind, key, val, len, err, sizeof err), err);
}

int state__chg_src(state *st, int kind, int src, const char *id, const void *val, size_t len) {
    if (!st->chg) return 0;
    char err[400];
    return state__chg_done(st, chg_put_src(st->chg, kind, src, id, val, len, err, sizeof err),
                           err);
}

int state__chg_metas(state *st) {
    if (!st->chg) return 0;
    char err[400];
    int bad = 0;
    for (int src = 0; src < chg_n_sources(st->chg); src++) {
        char e2[64];
        pend_table *t = src < lrn_n_sources(st->L) ? lrn_source_pending(st->L, src, 0, e2, sizeof e2)
                                                    : NULL;
        int64_t wm = t ? pend_watermark(t) : INT64_MIN;
        uint64_t seq = t ? pend_next_seq(t) : 0;
        bad |= state__chg_done(st, chg_put_meta(st->chg, src, wm, seq, err, sizeof err), err);
    }
    return bad;
}

/* ---- the restore's sink ---- */

static pend_table *state__source(state *st, int src, char *errstr, size_t n) {
    pend_table *t = lrn_source_pending(st->L, src, 1, errstr, n);
    if (!t && !errstr[0]) err_set(errstr, n, "source %d: no pending table", src);
    return t;
}

static int state__sink_clear(void *ud, int src, char *errstr, size_t n) {
    state *st = ud;
    pend_table *t = lrn_source_pending(st->L, src, 0, errstr, n);
    if (t) pend_clear(t);
    return 0;
}

static int state__sink_user(void *ud, uint64_t key, const void *val, size_t len, char *errstr,
                            size_t n) {
    state *st = ud;
    size_t ub = users_value_bytes(st->users);
    if (len != ub + 8)
        return err_set(errstr, n, "user state of %zu bytes, this configuration's are %zu", len,
                       ub + 8);
    int64_t seen;
    memcpy(&seen, (const unsigned char *)val + ub, 8);
    if (users_find(st->users, key) >= 0) users_remove(st->users, key);
    int64_t r = users_value_load(st->users, key, val, ub, seen);
    if (r < 0) return err_set(errstr, n, "user state: out of memory");
    users_set_dirty(st->users, r, 1);   /* the local store gets it at the next checkpoint */
    return 0;
}

static int state__sink_row(void *ud, uint64_t key, const void *val, size_t len, char *errstr,
                           size_t n) {
    state *st = ud;
    if (len != emb_value_bytes(st->emb))
        return err_set(errstr, n, "user-id row of %zu bytes, this configuration's are %zu", len,
                       emb_value_bytes(st->emb));
    if (emb_find(st->emb, key) >= 0) emb_remove(st->emb, key);
    int64_t r = emb_value_load(st->emb, key, val, len);
    if (r < 0) return err_set(errstr, n, "user-id row: out of memory");
    emb_set_dirty(st->emb, r, 1);
    return 0;
}

static int state__sink_pend(void *ud, int src, const char *id, const void *val, size_t len,
                            char *errstr, size_t n) {
    state *st = ud;
    pend_table *t = state__source(st, src, errstr, n);
    if (!t) return -1;
    pend_entry *e = malloc(sizeof *e);
    if (!e) return err_set(errstr, n, "out of memory");
    int rc = pend_entry_decode(e, id, st->nc, st->cfg->model.n_num, val, len);
    if (rc != 0) err_set(errstr, n, "pending impression %s: malformed value", id);
    else if (pend_add(t, id, &e->ex, e->p_ctcvr, e->has_cvr ? e->p_cvr : NULL, e->n_models,
                          e->snap, e->snap_len) < 0)
        rc = err_set(errstr, n, "pending impression %s: out of memory", id);
    free(e);
    return rc;
}

static int state__sink_late(void *ud, int src, const void *val, size_t len, char *errstr,
                            size_t n) {
    state *st = ud;
    pend_table *t = state__source(st, src, errstr, n);
    if (!t) return -1;
    if (pend_late_load(t, val, len) != 0)
        return err_set(errstr, n, "source %d: malformed ring of expired ids", src);
    return 0;
}

static int state__sink_meta(void *ud, int src, int64_t watermark, uint64_t next_seq,
                            char *errstr, size_t n) {
    state *st = ud;
    pend_table *t = state__source(st, src, errstr, n);
    if (!t) return -1;
    pend_set_clock(t, watermark, next_seq);
    return 0;
}

chg_sink state_changelog_sink(state *st) {
    chg_sink s = {st, state__sink_clear, state__sink_user, state__sink_row, state__sink_pend,
                  state__sink_late, state__sink_meta};
    return s;
}
