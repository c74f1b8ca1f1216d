/* state_stats.c - what the state reports: its counters, and the same as JSON for the
 * report (with RocksDB's estimate of the rows it stores). */
#include "state/state_int.h"

void state_stats_get(const state *st, state_stats *out) {
    *out = st->st;
    out->emb_rows = emb_rows(st->emb);
    out->user_rows = users_rows(st->users);
    out->mem_bytes = state__mem(st);
    out->budget_bytes = st->budget;
}

static void state__json_num(json_writer *w, const char *name, double v) {
    json_key(w, name);
    json_num(w, v);
}

/* RocksDB's estimate of the keys of family cf, when it has one. */
static void state__json_keys(state *st, json_writer *w, const char *name, store_cf cf) {
    uint64_t keys = 0;
    if (store_property(st->s, cf, "rocksdb.estimate-num-keys", &keys) == 0)
        state__json_num(w, name, (double)keys);
}

void state_write_json(state *st, json_writer *w) {
    state_stats s;
    state_stats_get(st, &s);
    const struct {
        const char *name;
        double v;
    } nums[] = {
        {"open_ms", s.open_ms},
        {"store_open_ms", s.store_open_ms},
        {"rss_open_mb", s.rss_open_mb},
        {"pending_restored", (double)s.pending_restored},
        {"checkpoints", (double)s.checkpoints},
        {"checkpoints_forced_by_memory", (double)s.forced},
        {"checkpoint_rollbacks", (double)s.ckpt_rollbacks},
        {"checkpoint_ms_mean", s.checkpoints ? s.ckpt_ms_total / (double)s.checkpoints : 0},
        {"checkpoint_ms_max", s.ckpt_ms_max},
        {"checkpoint_bytes", (double)s.ckpt_bytes},
        {"rows_written", (double)s.rows_written},
        {"users_written", (double)s.users_written},
        {"pending_written", (double)s.pending_written},
        {"deletes", (double)s.deletes},
        {"emb_rows", (double)s.emb_rows},
        {"emb_hits", (double)s.emb_hits},
        {"emb_misses", (double)s.emb_misses},
        {"emb_loads", (double)s.emb_loads},
        {"emb_created", (double)s.emb_created},
        {"emb_evicted", (double)s.emb_evicted},
        {"emb_expired", (double)s.emb_expired},
        {"fallback_uses", (double)s.fallback_uses},
        {"user_rows", (double)s.user_rows},
        {"user_hits", (double)s.user_hits},
        {"user_misses", (double)s.user_misses},
        {"user_loads", (double)s.user_loads},
        {"user_evicted", (double)s.user_evicted},
        {"user_expired", (double)s.user_expired},
    };
    json_obj_begin(w);
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        state__json_num(w, nums[i].name, nums[i].v);
    state__json_keys(st, w, "store_emb_rows", STORE_EMB);
    state__json_keys(st, w, "store_user_rows", STORE_USER);
    state__json_num(w, "mem_mb", (double)s.mem_bytes / 1048576.0);
    state__json_num(w, "budget_mb", (double)s.budget_bytes / 1048576.0);
    json_obj_end(w);
}
