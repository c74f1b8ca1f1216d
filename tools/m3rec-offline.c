/* m3rec-offline - the simulator's stream, or a dataset through a replay mapping, straight
 * into the learner, no Kafka.
 *
 * Measures the model step alone (events/s, FLOPs) and its prequential quality next to
 * the oracle, with exactly the learner the worker runs. Usage:
 *   m3rec-offline [--config FILE] [--set key=value]... [--events N] [--seed S] [--users N]
 *                 [--items N] [--difficulty X] [--noise X] [--conflict X] [--taste X] [--mix X]
 *                 [--new-users X] [--drift TURNS_PER_DAY] [--time-rate X]
 *                 [--conversion-delay DIST] [--immediate-labels WINDOW]
 *                 [--report PATH] [--oracle-report PATH] [--dump-batches PATH] [--quiet]
 *                 [--drain] [--reveal-negatives DIST]
 *   m3rec-offline --mapping FILE [--map key=value]... [--oracle-rows FILE] [--max-rows N]
 *                 [--config FILE] [--set key=value]... [--report PATH] [--oracle-report PATH]
 *                 [--dump-batches PATH] [--quiet] [--drain] DATA_FILE...
 * --drain settles, at the end, every clicked impression whose window the stream's clock
 * has closed (lrn_drain), so the CTCVR metrics cover the whole stream (the simulator's
 * trailing conversions move the clock past nearly every window).
 * --reveal-negatives DIST (the simulator only; a diagnostic bound, docs/results.md) tells the
 * learner of each click that will not convert within the window that it is a negative, a delay
 * drawn from DIST after the click (lrn_reveal_negative; `fixed:0` at the click): with DIST the
 * stream's own --conversion-delay every label comes as late as the conversions do, no later.
 * --dump-batches records every trained minibatch (common/eval/trace.h) for m3rec-batchbench
 * and the PyTorch twin (reference/bench.py).
 *
 * With --mapping the events are the dataset's (common/eval/replay.h, docs/replay.md), in
 * event-time order as m3rec-replay would produce them; the mapping's worker settings
 * (scenarios, feature fields, topic prefix) are applied after the command line's. The
 * oracle is the dataset's own when --oracle-rows names a per-row oracle file (docs/replay.md:
 * a header `p_ctr,p_cvr`, then one line per data row); without one there is no oracle.
 *
 * --group N [--sync RULE] [--sync.every K] [--sync.delay D] [--sync.bits B]
 * [--sync.stale-lr 0|1]: N learners on the stream split by a hash of the user id (as a
 * consumer group's workers get it), one model shared through update blobs (engine/sync.h:
 * RULE none, sum, scaled, avg, mixed or grad, the default) exchanged every K minibatches
 * (1) and applied D rounds late (0); B 16 sends the grad rule's gradients in bfloat16
 * (32); --sync.stale-lr 0 keeps a stale round's full step size (1, the default, divides it
 * by 1 + its staleness). The measured setting adds --set batch.size=<256/N>: the group's
 * minibatch split across the learners. The report is the group's (the learners'
 * scoreboards merged), each learner's beside it as --report's
 * PATH.w0, .w1, ... (docs/architecture.md, "Scaling out"; figures: docs/results.md).
 *
 * With store.dir set the state is durable (state.h), the simulator's position being the
 * input offset ("sim" partition 0): checkpoints every checkpoint.interval.ms at a minibatch
 * boundary and at the end, and a second run on the same store resumes where the last
 * checkpoint left off (the oracle and the metrics then cover only the resumed part). This
 * measures the state's cost without Kafka.
 */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "base/clock.h"
#include "config/cfg.h"
#include "base/hash.h"
#include "engine/keymap.h"
#include "engine/sync.h"
#include "stream/learner.h"
#include "report/metrics.h"
#include "eval/replay.h"
#include "eval/sim.h"
#include "eval/trace.h"
#include "state/state.h"

typedef struct {
    FILE *f;
    const m3_model_cfg *cfg;
    int failed;
} dump_ctx;

/* Impressions so far per key (an item, or a user with one count per scenario): what the
 * replay's oracle slices are counted from, as the simulator counts them for its own. */
typedef struct {
    km_map idx;           /* key -> row */
    uint32_t *cnt;        /* (cap, width) */
    size_t n, cap;
    int width;
} counts;

/* key's counters (width of them, zero at first), or NULL when out of memory. */
static uint32_t *counts_of(counts *c, uint64_t key) {
    if (!c->idx.slots && km_resize(&c->idx, km_slots_for(1024)) != 0) return NULL;
    size_t h = km_probe(&c->idx, key);
    if (c->idx.slots[h].row != KM_EMPTY) return c->cnt + (size_t)c->idx.slots[h].row * c->width;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 4096;
        uint32_t *cnt = realloc(c->cnt, cap * (size_t)c->width * sizeof *cnt);
        if (!cnt) return NULL;
        c->cnt = cnt;
        c->cap = cap;
    }
    if (c->n >= UINT32_MAX || km_insert(&c->idx, key, (uint32_t)c->n, h, c->n + 1) != 0) return NULL;
    uint32_t *row = c->cnt + c->n++ * (size_t)c->width;
    memset(row, 0, (size_t)c->width * sizeof *row);
    return row;
}

/* A replayed clicked impression's truth, until its conversion arrives or a later one's does
 * (the replay's conversions come in the order of their impressions) or the stream ends. */
typedef struct {
    sim_truth tr;
    int64_t ts;
    char id[M3_ID_MAX];
} held;

/* --group N: N learners on one stream split by user, as a consumer group's workers, with
 * one model shared through update blobs (engine/sync.h) exchanged every `every` minibatches
 * (on average per learner) and applied `delay` sync rounds late (the transport's latency). */
#define GROUP_MAX 64
typedef struct {
    int n;                  /* learners; 0 or 1: the one learner of a plain run */
    int rule, every, delay; /* sync_rule, --sync.every K, --sync.delay D */
    int bits;               /* --sync.bits: 16 sends the grad rule's gradient in bfloat16 */
    int stale_lr;           /* --sync.stale-lr: 1 (the default) divides a stale round's step
                               (sync.h); -1 until given */
    lrn *L[GROUP_MAX];      /* L[0] is the run's own (offline.L) */
    int n_models;           /* each learner's models (primary and shadows), all synced */
    sync_state **ss;        /* (n, n_models) */
    unsigned char **q;      /* (delay + 1, n, n_models) blobs of the last rounds, a ring */
    size_t *qlen;           /* their sizes */
    int64_t next_steps;     /* the next round when the learners' steps add up to this */
    uint64_t rounds, blobs, rows;
    double bytes, dense_bytes, sync_s;
} group;

/* --reveal-negatives: a click's label revealed at event time ts. */
typedef struct {
    int64_t ts;
    int scen;
    char id[M3_ID_MAX];
} reveal_item;

typedef struct {
    int on;
    sim_delay delay;       /* the reveal delay's distribution */
    uint64_t rng;          /* its draws' own sequence */
    reveal_item *h;        /* (cap) min-heap by ts, n of them */
    size_t n, cap;
    uint64_t revealed;     /* labels the learner took (the others had settled already) */
} reveal;

/* One run: the configuration, the stream and what it feeds. */
typedef struct {
    m3_cfg cfg;
    sim_cfg sc;
    const char *report, *oracle_report, *dump;
    int quiet, drain;
    reveal rv;             /* --reveal-negatives */
    /* --mapping: a dataset instead of the simulator */
    const char *mappings[8], *overrides[64], *files[256], *oracle_rows;
    int n_mappings, n_overrides, n_files;
    int64_t max_rows;
    rpl_map *map;
    rpl_replay *rp;
    FILE *orows;            /* --oracle-rows, read one line per impression */
    int64_t orow_line;      /* its line last read */
    held *hq;               /* (hq_cap) ring: clicked impressions' truths awaiting the label */
    counts items, users;    /* the oracle's slices: impressions per item, per user x scenario */
    size_t hq_cap, hq_head, hq_n;
    sim *s;
    lrn *L;
    app_oracle *orc;
    dump_ctx dc;
    state *st;             /* store.dir, else NULL */
    int64_t pos;           /* simulator events handled, the state's offset */
    int64_t last_ckpt_ms;  /* monotonic */
    group g;               /* --group */
} offline;

static void usage(void) {
    fprintf(stderr,
            "usage: m3rec-offline [--config FILE] [--set key=value]...\n"
            "                     " APP_SIM_USAGE "\n"
            "                     [--report PATH] [--oracle-report PATH] [--dump-batches PATH]\n"
            "                     [--quiet] [--drain] [--oracle-negatives] [GROUP]\n"
            "       m3rec-offline --mapping FILE [--map key=value]... [--oracle-rows FILE]\n"
            "                     [--max-rows N] [--config FILE] [--set key=value]...\n"
            "                     [--report PATH] [--oracle-report PATH] [--dump-batches PATH]\n"
            "                     [--quiet] [--drain] [GROUP] DATA_FILE...\n"
            "GROUP: --group N [--sync none|sum|scaled|avg|mixed|grad] [--sync.every K] [--sync.delay D]\n"
            "       [--sync.bits 32|16] [--sync.stale-lr 0|1]\n");
}

/* --reveal-negatives: the clicks that will not convert, each with the event time its label
 * is revealed at, in a min-heap by that time. */
static int reveal_push(reveal *r, const m3_impression *im, int scen) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 1024;
        reveal_item *h = realloc(r->h, cap * sizeof *h);
        if (!h) return -1;
        r->h = h;
        r->cap = cap;
    }
    /* a standard normal draw (Box-Muller) from the run's own sequence: the stream is unchanged */
    double u1 = hash_unit(hash_splitmix64(&r->rng)), u2 = hash_unit(hash_splitmix64(&r->rng));
    double z = sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
    reveal_item it = {im->ts_ms + sim_delay_draw(&r->delay, z), scen, {0}};
    memcpy(it.id, im->impression_id, sizeof it.id);
    size_t i = r->n++;
    for (; i > 0 && r->h[(i - 1) / 2].ts > it.ts; i = (i - 1) / 2) r->h[i] = r->h[(i - 1) / 2];
    r->h[i] = it;
    return 0;
}

/* Every label due by event time now revealed to the learner, earliest first. */
static void reveal_due(reveal *r, lrn *L, int64_t now) {
    while (r->n > 0 && r->h[0].ts <= now) {
        r->revealed += (uint64_t)lrn_reveal_negative(L, r->h[0].scen, r->h[0].id, NULL, NULL);
        reveal_item last = r->h[--r->n];
        size_t i = 0;
        for (size_t c; (c = 2 * i + 1) < r->n; i = c) {
            if (c + 1 < r->n && r->h[c + 1].ts < r->h[c].ts) c++;
            if (last.ts <= r->h[c].ts) break;
            r->h[i] = r->h[c];
        }
        if (r->n) r->h[i] = last;
    }
}

static void dump_batch(void *ud, const m3_example *ex, const char *const *ids, int B, int n_imp) {
    dump_ctx *d = ud;
    if (!d->failed && trace_write_batch(d->f, d->cfg, ex, ids, B, n_imp) != 0) d->failed = 1;
}

/* --mapping: the mapping files and --map overrides read and checked, and the worker settings
 * its events need applied to the configuration. Returns 0, or -1 after saying why. */
static int load_mapping(offline *o) {
    char err[512];
    int rc = (o->map = rpl_map_new()) ? 0 : -1;
    if (rc) snprintf(err, sizeof err, "out of memory");
    for (int i = 0; i < o->n_mappings && rc == 0; i++)
        rc = rpl_map_load(o->map, o->mappings[i], err, sizeof err);
    for (int i = 0; i < o->n_overrides && rc == 0; i++)
        rc = rpl_map_set(o->map, o->overrides[i], "--map", 0, err, sizeof err);
    if (rc == 0) rc = rpl_map_check(o->map, err, sizeof err);
    char *settings = rc == 0 ? rpl_map_worker_settings(o->map) : NULL;
    if (rc == 0 && !settings) {
        snprintf(err, sizeof err, "out of memory");
        rc = -1;
    }
    for (char *save = NULL, *l = settings ? strtok_r(settings, "\n", &save) : NULL; l && rc == 0;
         l = strtok_r(NULL, "\n", &save))
        rc = cfg_set(&o->cfg, l, "--mapping (the settings its events need)", 0, err, sizeof err);
    free(settings);
    if (rc != 0) fprintf(stderr, "m3rec-offline: %s\n", err);
    return rc;
}

/* ---------------------------------------------------------------- --group: one shared model */

/* A --group option at argv[*i]: 1 when used (*i moved past its value), 0 when not a group
 * option, -1 after saying why. */
static int group_arg(group *g, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    int *num = strcmp(a, "--group") == 0 ? &g->n : strcmp(a, "--sync.every") == 0 ? &g->every
             : strcmp(a, "--sync.delay") == 0 ? &g->delay
             : strcmp(a, "--sync.bits") == 0 ? &g->bits
             : strcmp(a, "--sync.stale-lr") == 0 ? &g->stale_lr : NULL;
    if (!num && strcmp(a, "--sync") != 0) return 0;
    char *end = NULL;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || (num && (*end || x < 0 || x > 1000000)) ||
        (!num && (g->rule = sync_rule_parse(v)) < 0)) {
        fprintf(stderr, "m3rec-offline: %s %s: expected %s\n", a, v ? v : "(nothing)",
                num ? "a count 0..1000000" : "none, sum, scaled, avg, mixed or grad");
        return -1;
    }
    if (num) *num = (int)x;
    (*i)++;
    return 1;
}

/* The group's options together, after the command line. Returns 0, or -1 after saying why. */
static int group_check(offline *o) {
    group *g = &o->g;
    if (g->n > GROUP_MAX) {
        fprintf(stderr, "m3rec-offline: --group %d: at most %d learners\n", g->n, GROUP_MAX);
        return -1;
    }
    if (g->n > 1 && (o->cfg.store_dir[0] || o->dump)) {
        fprintf(stderr, "m3rec-offline: --group runs in memory: no store.dir, no --dump-batches\n");
        return -1;
    }
    if (g->every <= 0) g->every = 1;
    if (g->stale_lr < 0) g->stale_lr = 1;   /* measured: D = 2 loses a third as much */
    if (g->bits != 0 && g->bits != 16 && g->bits != 32) {
        fprintf(stderr, "m3rec-offline: --sync.bits %d: expected 16 or 32\n", g->bits);
        return -1;
    }
    if (g->rule < 0) g->rule = SYNC_GRAD;   /* the measured choice (docs/results.md) */
    if (g->bits == 16 && g->rule != SYNC_GRAD) {
        fprintf(stderr, "m3rec-offline: --sync.bits 16 is for the grad rule's gradients\n");
        return -1;
    }
    return 0;
}

/* The learner of an event: its user's, by a hash of the user id, as the worker's key (the
 * user id) picks a partition and the group's assignment a worker. */
static int group_route(const group *g, const m3_event *ev) {
    int64_t user = ev->type == M3_EV_IMPRESSION   ? ev->u.imp.user_id
                   : ev->type == M3_EV_CONVERSION ? ev->u.conv.user_id
                   : ev->type == M3_EV_SCORE_REQUEST ? ev->u.req.user_id : 0;
    return (int)(hash_mix64((uint64_t)user) % (uint64_t)g->n);
}

/* The other learners (L[0] is the run's), a sync state per model and the blob ring.
 * Every learner is made from one configuration, so every model starts from the same
 * parameters (cfg.seed): the group's common first sync point. Returns 0, or -1 after
 * saying why. */
static int group_open(offline *o) {
    char err[512];
    group *g = &o->g;
    if (g->n <= 1) return 0;
    g->L[0] = o->L;
    for (int k = 1; k < g->n; k++)
        if (!(g->L[k] = lrn_new(&o->cfg, err, sizeof err))) goto fail;
    g->n_models = lrn_n_models(o->L);
    size_t nq = (size_t)(g->delay + 1) * g->n * g->n_models;
    g->ss = calloc((size_t)g->n * g->n_models, sizeof *g->ss);
    g->q = calloc(nq, sizeof *g->q);
    g->qlen = calloc(nq, sizeof *g->qlen);
    if (!g->ss || !g->q || !g->qlen) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    for (int k = 0; k < g->n; k++)
        for (int i = 0; i < g->n_models; i++)
            if (!(g->ss[k * g->n_models + i] = sync_new(lrn_model(g->L[k], i), (uint32_t)k, err,
                                                       sizeof err)) ||
                sync_set_grad(g->ss[k * g->n_models + i], g->rule == SYNC_GRAD, err, sizeof err) ||
                sync_set_bf16(g->ss[k * g->n_models + i], g->bits == 16, err, sizeof err))
                goto fail;
            else
                sync_set_stale_lr(g->ss[k * g->n_models + i], g->stale_lr);
    g->next_steps = (int64_t)g->n * g->every;
    return 0;
fail:
    fprintf(stderr, "m3rec-offline: --group: %s\n", err);
    return -1;
}

/* Apply round `due`'s blobs (its ring slot) to every learner's models, with the rule's
 * weights: a peer's delta, and its own (avg, grad), in sender order (grad: every learner
 * then takes the same step). Returns 0, or -1 after saying why. */
static int group_apply(group *g, size_t slot) {
    char err[512];
    sync_weight wp, wo;
    sync_rule_weights(g->rule, g->n, &wp, &wo);
    for (int k = 0; k < g->n; k++)
        for (int i = 0; i < g->n_models; i++)
            for (int j = 0; j < g->n; j++) {
                sync_weight w = j == k ? wo : wp;
                size_t q = (slot * g->n + j) * g->n_models + i;
                if ((w.dense != 0.0f || w.rows != 0.0f) && sync_apply(lrn_model(g->L[k], i), g->ss[k * g->n_models + i],
                                            g->q[q], g->qlen[q], w, err, sizeof err) != 0) {
                    fprintf(stderr, "m3rec-offline: learner %d refused learner %d's update: "
                            "%s\n", k, j, err);
                    return -1;
                }
            }
    for (int k = 0; k < g->n * g->n_models; k++) sync_step(g->ss[k]);
    return 0;
}

/* A sync round when the learners have taken `every` more minibatches each, on average:
 * every model's update extracted into the ring, then the round `delay` rounds back applied.
 * Returns 0, or -1 after saying why. */
static int group_sync(group *g) {
    char err[512];
    int64_t steps = 0;
    for (int k = 0; k < g->n; k++) steps += (int64_t)sync_batches(g->ss[k * g->n_models]);
    if (steps < g->next_steps) return 0;
    double t0 = clk_process_cpu_s();
    g->next_steps += (int64_t)g->n * g->every;
    size_t slot = g->rounds % (size_t)(g->delay + 1);
    for (int k = 0; k < g->n; k++)
        for (int i = 0; i < g->n_models; i++) {
            size_t q = (slot * g->n + k) * g->n_models + i;
            sync_state *s = g->ss[k * g->n_models + i];
            free(g->q[q]);   /* the round delay + 1 back: applied already */
            if (!(g->qlen[q] = sync_extract(s, &g->q[q], err, sizeof err))) {
                fprintf(stderr, "m3rec-offline: learner %d: %s\n", k, err);
                return -1;
            }
            sync_stats st;
            sync_last_stats(s, &st);
            g->blobs++;
            g->bytes += (double)st.bytes;
            g->dense_bytes += (double)st.dense_bytes;
            g->rows += st.rows;
        }
    g->rounds++;
    int rc = 0;
    if (g->rounds > (uint64_t)g->delay)
        rc = group_apply(g, (g->rounds - 1 - (uint64_t)g->delay) % (size_t)(g->delay + 1));
    g->sync_s += clk_process_cpu_s() - t0;
    return rc;
}

/* The report's "sync" object: the group, the rule, its staleness and the blobs' sizes. */
static void group_write_json(const group *g, json_writer *w) {
    double nb = g->blobs ? (double)g->blobs : 1.0;
    json_key(w, "sync");
    json_obj_begin(w);
    json_key(w, "group"); json_int(w, g->n);
    json_key(w, "rule"); json_str(w, sync_rule_name(g->rule));
    json_key(w, "every_batches"); json_int(w, g->every);
    json_key(w, "delay_rounds"); json_int(w, g->delay);
    json_key(w, "dense_bits"); json_int(w, g->bits == 16 ? 16 : 32);
    json_key(w, "stale_lr"); json_int(w, g->stale_lr);
    json_key(w, "rounds"); json_int(w, (int64_t)g->rounds);
    json_key(w, "blob_bytes_mean"); json_num(w, g->bytes / nb);
    json_key(w, "blob_dense_bytes"); json_num(w, g->dense_bytes / nb);
    json_key(w, "blob_rows_mean"); json_num(w, (double)g->rows / nb);
    json_key(w, "bytes_total"); json_num(w, g->bytes);
    json_key(w, "sync_cpu_s"); json_num(w, g->sync_s);
    json_obj_end(w);
}

/* Each learner's report (--report PATH.wK) and the group's scoreboard: learners 1..N-1's
 * histograms and counters merged into learner 0's (met_board_merge_report), which the run's
 * report and table then show. Returns 0, or -1 after saying why. */
static int group_merge(offline *o) {
    char err[512], path[4096];
    group *g = &o->g;
    for (int k = 0; o->report && k < g->n; k++) {
        snprintf(path, sizeof path, "%s.w%d", o->report, k);
        if (app_write_report(path, g->L[k], NULL, NULL, NULL, err, sizeof err) != 0) goto fail;
    }
    for (int k = 1; k < g->n; k++) {
        char *text = app_report_json(g->L[k], NULL, NULL, NULL);
        json_node *j = text ? json_parse(text, err, sizeof err) : NULL;
        int rc = j ? met_board_merge_report(lrn_board(g->L[0]), j, err, sizeof err) : -1;
        if (!text) snprintf(err, sizeof err, "out of memory");
        free(text);
        json_free(j);
        if (rc != 0) goto fail;
    }
    fprintf(stderr, "m3rec-offline: group of %d, sync %s every %d batches, delay %d: %llu "
            "rounds, %.0f bytes per blob (%.0f dense, %.1f rows), %.2f CPU s syncing\n",
            g->n, sync_rule_name(g->rule), g->every, g->delay, (unsigned long long)g->rounds,
            g->blobs ? g->bytes / (double)g->blobs : 0.0,
            g->blobs ? g->dense_bytes / (double)g->blobs : 0.0,
            g->blobs ? (double)g->rows / (double)g->blobs : 0.0, g->sync_s);
    return 0;
fail:
    fprintf(stderr, "m3rec-offline: --group: %s\n", err);
    return -1;
}

static void group_close(group *g) {
    if (g->n <= 1) return;
    for (int k = 0; g->ss && k < g->n * g->n_models; k++) sync_destroy(g->ss[k]);
    for (size_t q = 0; g->q && q < (size_t)(g->delay + 1) * g->n * g->n_models; q++) free(g->q[q]);
    for (int k = 1; k < g->n; k++) lrn_destroy(g->L[k]);
    free(g->ss);
    free(g->q);
    free(g->qlen);
}

/* The command line into o's configuration and options, then the configuration checked.
 * Returns 0, or 2 (the exit code) after saying why. */
static int parse_args(offline *o, int argc, char **argv) {
    char err[512];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        int used = app_config_arg(&o->cfg, argc, argv, &i, err, sizeof err);
        if (used < 0) {
            fprintf(stderr, "m3rec-offline: %s\n", err);
            return 2;
        } else if (used) {
            continue;
        } else if ((used = app_sim_arg(&o->sc, argc, argv, &i, err, sizeof err)) != 0) {
            if (used < 0) {
                fprintf(stderr, "m3rec-offline: %s\n", err);
                return 2;
            }
        } else if (strcmp(a, "--report") == 0 && more) {
            o->report = argv[++i];
        } else if (strcmp(a, "--oracle-report") == 0 && more) {
            o->oracle_report = argv[++i];
        } else if (strcmp(a, "--dump-batches") == 0 && more) {
            o->dump = argv[++i];
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
        } else if (strcmp(a, "--drain") == 0) {
            o->drain = 1;
        } else if (strcmp(a, "--reveal-negatives") == 0 && more) {
            if (sim_delay_parse(argv[++i], &o->rv.delay, err, sizeof err) != 0) {
                fprintf(stderr, "m3rec-offline: --reveal-negatives: %s\n", err);
                return 2;
            }
            o->rv.on = 1;
        } else if (strcmp(a, "--mapping") == 0 && more && o->n_mappings < 8) {
            o->mappings[o->n_mappings++] = argv[++i];
        } else if (strcmp(a, "--map") == 0 && more && o->n_overrides < 64) {
            o->overrides[o->n_overrides++] = argv[++i];
        } else if (strcmp(a, "--oracle-rows") == 0 && more) {
            o->oracle_rows = argv[++i];
        } else if (strcmp(a, "--max-rows") == 0 && more) {
            o->max_rows = atoll(argv[++i]);
        } else if ((used = group_arg(&o->g, argc, argv, &i)) != 0) {
            if (used < 0) return 2;
        } else if (a[0] != '-' && o->n_files < 256) {
            o->files[o->n_files++] = a;
        } else {
            usage();
            return 2;
        }
    }
    if ((o->n_mappings > 0) != (o->n_files > 0) || (o->oracle_rows && !o->n_mappings)) {
        fprintf(stderr, "m3rec-offline: --mapping and data files go together (and --oracle-rows "
                "with them)\n");
        usage();
        return 2;
    }
    if (o->rv.on && (o->n_mappings || o->g.n > 1)) {
        fprintf(stderr, "m3rec-offline: --reveal-negatives needs the simulator's truth: not "
                "with --mapping or --group\n");
        return 2;
    }
    if (o->n_mappings && load_mapping(o) != 0) return 2;
    if (group_check(o) != 0) return 2;
    if (cfg_check(&o->cfg, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return 2;
    }
    return 0;
}

/* --mapping: the replay of the data files, the mapping's warnings about this configuration,
 * and the per-row oracle file with its header checked. Returns 0, or -1 with err. */
static int open_replay(offline *o, char *err, size_t n) {
    static char warn[8192];
    if (rpl_map_compare_worker(o->map, &o->cfg, warn, sizeof warn) > 0)
        for (char *save = NULL, *l = strtok_r(warn, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            fprintf(stderr, "m3rec-offline: warning: %s\n", l);
    rpl_opts ro = {0, o->max_rows};
    if (!(o->rp = rpl_new(o->map, o->files, o->n_files, &ro, err, n))) return -1;
    if (!o->oracle_rows) return 0;
    char head[64];
    if (!(o->orows = fopen(o->oracle_rows, "r"))) {
        snprintf(err, n, "--oracle-rows %s: %s", o->oracle_rows, strerror(errno));
        return -1;
    }
    o->orow_line = 1;
    if (!fgets(head, sizeof head, o->orows) || strncmp(head, "p_ctr,p_cvr", 11) != 0 ||
        (head[11] != '\n' && head[11] != '\r' && head[11] != '\0')) {
        snprintf(err, n, "%s:1: expected the header p_ctr,p_cvr (docs/replay.md)", o->oracle_rows);
        return -1;
    }
    return 0;
}

/* The simulator or the replay, the learner, the oracle (the simulator's, the per-row
 * file's, or none) and the --dump-batches recorder. Returns 0, or -1 after saying why. */
static int open_run(offline *o) {
    char err[512];
    int ok;
    if (o->map) {
        ok = open_replay(o, err, sizeof err) == 0;
    } else {
        app_sim_from_cfg(&o->sc, &o->cfg);
        o->rv.rng = hash_mix64(o->sc.seed ^ 0x72657665616cULL);   /* "reveal" */
        ok = (o->s = sim_new(&o->sc, err, sizeof err)) != NULL;
    }
    ok = ok && (o->L = lrn_new(&o->cfg, err, sizeof err)) != NULL;
    if (ok && (o->s || o->orows)) ok = (o->orc = app_oracle_new(&o->cfg, err, sizeof err)) != NULL;
    if (!ok) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    o->dc = (dump_ctx){ NULL, &o->cfg.model, 0 };
    if (o->dump) {
        if (!(o->dc.f = fopen(o->dump, "wb")) || trace_write_header(o->dc.f, &o->cfg.model) != 0 ||
            lrn_set_batch_hook(o->L, dump_batch, &o->dc) != 0) {
            fprintf(stderr, "m3rec-offline: --dump-batches %s: cannot write\n", o->dump);
            return -1;
        }
    }
    o->last_ckpt_ms = clk_mono_ms();
    return 0;
}

/* store.dir: the state of this one stream, created or restored; a restored run skips the
 * simulator's events up to the stored offset. Returns 0, or -1 after saying why. */
static int open_state(offline *o) {
    char err[512], layout[256];   /* the store holds the state of this one stream */
    const sim_cfg *sc = &o->sc;
    snprintf(layout, sizeof layout, "simulator seed=%llu users=%d items=%d difficulty=%g "
             "noise=%g conflict=%g taste=%g mix=%g new_users=%g", (unsigned long long)sc->seed,
             sc->n_users, sc->n_items, sc->difficulty, sc->noise, sc->conflict, sc->taste,
             sc->mix, sc->new_users_per_1k);
    o->st = state_open(&o->cfg, o->L, layout, err, sizeof err);
    if (!o->st) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    if (!state_offset_get(o->st, "sim", 0, &o->pos)) o->pos = 0;
    state_stats ss;
    state_stats_get(o->st, &ss);
    fprintf(stderr, "m3rec-offline: state %s %s in %.1f ms (store open %.1f ms), %llu "
            "pending; resuming at event %lld\n", o->cfg.store_dir,
            state_fresh(o->st) ? "created" : "restored", ss.open_ms, ss.store_open_ms,
            (unsigned long long)ss.pending_restored, (long long)o->pos);
    m3_event ev;
    sim_truth tr;
    for (int64_t i = 0; i < o->pos && sim_next(o->s, &ev, &tr); i++) {}
    return 0;
}

/* The state at the simulator's position. Returns 0, or -1 after saying why. */
static int checkpoint(offline *o) {
    char err[512];
    state_offset off = {"sim", 0, o->pos};
    if (state_checkpoint(o->st, &off, 1, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: checkpoint: %s\n", err);
        return -1;
    }
    return 0;
}

/* One event into the learner, from source (and scenario) scen; an impression's truth, when
 * there is one, into the oracle. An event the learner does not admit (a configuration
 * stricter than the input's values) counts as a DLQ message, as in the worker; the first
 * few are shown. Returns 0, or -1 after saying why: the simulator and the replay write
 * only valid events. */
static int feed(offline *o, const m3_event *ev, int scen, const sim_truth *tr) {
    char reason[256];
    int rc = 0;
    if (lrn_admit(o->L, ev, scen, reason, sizeof reason)) {
        uint64_t n = ++met_board_counters(lrn_board(o->L))->dlq;
        if (n <= 10) fprintf(stderr, "m3rec-offline: refused (DLQ): %s\n", reason);
        return 0;
    }
    if (ev->type == M3_EV_IMPRESSION) {
        if (tr) app_oracle_add(o->orc, tr);
        rc = lrn_impression(o->L, &ev->u.imp, scen, 0, NULL, NULL, reason, sizeof reason);
    } else if (ev->type == M3_EV_CONVERSION) {
        rc = lrn_conversion(o->L, &ev->u.conv, scen, NULL, NULL, reason, sizeof reason);
    } else if (ev->type == M3_EV_SCORE_REQUEST) {
        rc = lrn_request(o->L, &ev->u.req, 0, NULL, NULL, reason, sizeof reason);
    }
    if (rc != 0) {
        fprintf(stderr, "m3rec-offline: %s event rejected: %s\n", o->map ? "replayed" : "simulator",
                reason);
        return -1;
    }
    if (o->rv.on && ev->type == M3_EV_IMPRESSION && tr && tr->clicked && !tr->in_window &&
        reveal_push(&o->rv, &ev->u.imp, scen) != 0) {
        fprintf(stderr, "m3rec-offline: --reveal-negatives: out of memory\n");
        return -1;
    }
    if (o->rv.on) reveal_due(&o->rv, o->L, ev->type == M3_EV_IMPRESSION ? ev->u.imp.ts_ms
                                          : ev->type == M3_EV_CONVERSION ? ev->u.conv.ts_ms
                                                                         : INT64_MIN);
    return 0;
}

/* The truth of the replay's next impression from the per-row oracle file: its p_ctr and
 * p_cvr, the click from the event (the conversion label comes with settle_held), and the
 * counts its slices are decided by: the item's impressions so far, the user's in this
 * scenario and in the others. The file has no reference predictors (NaN). Returns 0, or
 * -1 with err (a short or malformed file, out of memory). */
static int oracle_row(offline *o, const m3_impression *im, int scen, sim_truth *tr, char *err,
                      size_t n) {
    char line[128], *end;
    o->orow_line++;
    if (!fgets(line, sizeof line, o->orows)) {
        snprintf(err, n, "%s:%lld: the file ends before the data (one line per data row)",
                 o->oracle_rows, (long long)o->orow_line);
        return -1;
    }
    double pc = strtod(line, &end), pv = *end == ',' ? strtod(end + 1, &end) : NAN;
    if (!(pc >= 0 && pc <= 1 && pv >= 0 && pv <= 1) || (*end != '\n' && *end != '\r' && *end)) {
        snprintf(err, n, "%s:%lld: expected p_ctr,p_cvr, two probabilities", o->oracle_rows,
                 (long long)o->orow_line);
        return -1;
    }
    o->items.width = 1;
    o->users.width = M3_MAX_SCEN;
    uint32_t *item = counts_of(&o->items, (uint64_t)im->item_id);
    uint32_t *user = item ? counts_of(&o->users, (uint64_t)im->user_id) : NULL;
    if (!user) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    uint32_t other = 0;
    for (int k = 0; k < M3_MAX_SCEN; k++) other += k == scen ? 0 : user[k];
    *tr = (sim_truth){.scen = scen, .p_click = (float)pc, .p_conv = (float)pv,
                      .clicked = im->clicked, .p_click_profile = NAN, .p_conv_profile = NAN,
                      .p_click_learner = NAN, .p_conv_learner = NAN, .item_imps = item[0],
                      .user_scen_imps = user[scen], .user_other_imps = other};
    item[0]++;
    user[scen]++;
    return 0;
}

/* With a store: stop on a failed state; checkpoint at a minibatch boundary when the
 * interval is over or the state asks. Returns 0, or -1 after saying why. */
static int keep_state(offline *o) {
    char err[512];
    if (state_failed(o->st, err, sizeof err)) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    if (lrn_at_boundary(o->L) && (state_want_checkpoint(o->st) ||
                                  clk_mono_ms() - o->last_ckpt_ms >= o->cfg.checkpoint_interval_ms)) {
        if (checkpoint(o) != 0) return -1;
        o->last_ckpt_ms = clk_mono_ms();
    }
    return 0;
}

/* Hold a clicked impression's truth for its label. Returns 0, or -1 when out of memory. */
static int hold(offline *o, const sim_truth *tr, const m3_impression *im) {
    if (o->hq_n == o->hq_cap) {
        size_t cap = o->hq_cap ? 2 * o->hq_cap : 1024;
        held *q = malloc(cap * sizeof *q);
        if (!q) return -1;
        for (size_t i = 0; i < o->hq_n; i++) q[i] = o->hq[(o->hq_head + i) % o->hq_cap];
        free(o->hq);
        o->hq = q;
        o->hq_cap = cap;
        o->hq_head = 0;
    }
    held *h = &o->hq[(o->hq_head + o->hq_n++) % o->hq_cap];
    h->tr = *tr;
    h->ts = im->ts_ms;
    snprintf(h->id, sizeof h->id, "%s", im->impression_id);
    return 0;
}

/* A conversion (NULL: the stream ended): the held impressions before its own are not
 * converted, its own is (in the window when its delay is within join.window.ms); at the end
 * every one left is not converted. Each goes to the oracle with its label. */
static void settle_held(offline *o, const m3_conversion *cv) {
    size_t k = 0;
    while (cv && k < o->hq_n && strcmp(o->hq[(o->hq_head + k) % o->hq_cap].id, cv->impression_id))
        k++;
    if (cv && k == o->hq_n) return;     /* not a held impression's: nothing is known */
    size_t upto = cv ? k + 1 : o->hq_n;
    for (size_t i = 0; i < upto; i++) {
        held *h = &o->hq[o->hq_head];
        h->tr.converted = cv && i == k;
        h->tr.in_window = h->tr.converted && cv->ts_ms - h->ts <= o->cfg.join_window_ms;
        app_oracle_add(o->orc, &h->tr);
        o->hq_head = (o->hq_head + 1) % o->hq_cap;
        o->hq_n--;
    }
}

/* The replay's event to the oracle: an impression's truth from the per-row file, at once
 * when not clicked, else held for its label; a conversion settles the held ones. Returns 0,
 * or -1 after saying why. */
static int oracle_event(offline *o, const m3_event *ev, int scen) {
    char err[512];
    sim_truth tr;
    if (ev->type == M3_EV_CONVERSION) {
        settle_held(o, &ev->u.conv);
    } else if (ev->type == M3_EV_IMPRESSION) {
        if (oracle_row(o, &ev->u.imp, scen, &tr, err, sizeof err) != 0) {
            fprintf(stderr, "m3rec-offline: %s\n", err);
            return -1;
        }
        if (!tr.clicked) app_oracle_add(o->orc, &tr);
        else if (hold(o, &tr, &ev->u.imp) != 0) {
            fprintf(stderr, "m3rec-offline: out of memory\n");
            return -1;
        }
    }
    return 0;
}

/* The next event of the simulator or the replay, its scenario (the learner's source) and,
 * from the simulator, its truth (*trp; NULL from the replay, whose truth oracle_event
 * handles). Returns 1, 0 at the end, or -1 after saying why. */
static int next_event(offline *o, m3_event *ev, int *scen, sim_truth *tr, const sim_truth **trp) {
    char err[512];
    if (o->s) {
        if (!sim_next(o->s, ev, tr)) return 0;
        *scen = tr->scen;
        *trp = tr;
        return 1;
    }
    int r = rpl_next(o->rp, ev, err, sizeof err);
    if (r < 0) fprintf(stderr, "m3rec-offline: %s\n", err);
    if (r <= 0) return r;
    const char *name = ev->type == M3_EV_IMPRESSION ? ev->u.imp.scenario : ev->u.conv.scenario;
    *scen = cfg_scenario_index(&o->cfg, name);   /* the mapping's settings made them the same */
    *trp = NULL;
    if (o->orows && oracle_event(o, ev, *scen) != 0) return -1;
    return 1;
}

/* The progress line, with the clicked impressions waiting for their label. */
static void progress(offline *o) {
    char line[256];
    met_board_progress_line(lrn_board(o->L), line, sizeof line);
    fprintf(stderr, "%s  pending %zu\n", line, lrn_pending(o->L));
}

/* The whole stream through the learner, then the last minibatch. Returns 0, or -1 after
 * saying why. */
static int run_stream(offline *o) {
    m3_event ev;
    sim_truth tr;
    const sim_truth *trp;
    int scen, r;
    double next_progress = o->cfg.progress_ms / 1000.0;
    while ((r = next_event(o, &ev, &scen, &tr, &trp)) == 1) {
        if (o->g.n > 1) o->L = o->g.L[group_route(&o->g, &ev)];
        met_board *b = lrn_board(o->L);
        met_board_counters(b)->events++;
        if (feed(o, &ev, scen, trp) != 0) return -1;
        if (o->g.n > 1 && o->g.rule != SYNC_NONE && group_sync(&o->g) != 0) return -1;
        o->pos++;
        if (o->st && keep_state(o) != 0) return -1;
        if (!o->quiet && o->cfg.progress_ms > 0 && met_board_elapsed(b) >= next_progress) {
            progress(o);
            next_progress += o->cfg.progress_ms / 1000.0;
        }
    }
    if (r < 0) return -1;
    if (o->orows) settle_held(o, NULL);
    for (int k = 0; k < (o->g.n > 1 ? o->g.n : 1); k++) {
        if (o->g.n > 1) o->L = o->g.L[k];
        if (o->drain) lrn_drain(o->L, NULL, NULL);
        else lrn_run_batch(o->L, NULL, NULL);
    }
    if (o->g.n > 1) o->L = o->g.L[0];
    return 0;
}

/* The replay's summary and its warning about the event-time span and the window. */
static void replay_summary(offline *o) {
    rpl_stats st;
    char warn[512];
    rpl_get_stats(o->rp, &st);
    fprintf(stderr, "m3rec-offline: replayed %lld rows: %lld impressions (%lld clicks), %lld "
            "conversions, event time %.1f min\n", (long long)st.rows, (long long)st.impressions,
            (long long)st.clicks, (long long)st.conversions,
            (double)(st.last_ts_ms - st.first_ts_ms) / 60000.0);
    if (rpl_span_warning(&st, &o->cfg, warn, sizeof warn))
        fprintf(stderr, "m3rec-offline: warning: %s", warn);
    if (o->orows && fgetc(o->orows) != EOF)
        fprintf(stderr, "m3rec-offline: warning: %s has more lines than the data has rows\n",
                o->oracle_rows);
}

/* The report's own keys: the admission counters. */
static void report_extra(json_writer *jw, void *arg) {
    const offline *o = arg;
    json_key(jw, "admission");
    lrn_admission_write_json(o->L, jw);
    if (o->g.n > 1) group_write_json(&o->g, jw);
}

/* The recorder closed, the last checkpoint, the reports and the comparison table. Returns
 * 0, or -1 after saying why. */
static int finish(offline *o) {
    char err[512];
    if (o->dc.f && (fclose(o->dc.f) != 0 || o->dc.failed)) {
        fprintf(stderr, "m3rec-offline: --dump-batches %s: write failed\n", o->dump);
        return -1;
    }
    if (o->st && checkpoint(o) != 0) return -1;
    if (o->g.n > 1 && group_merge(o) != 0) return -1;
    if (o->report &&
        app_write_report(o->report, o->L, o->st, report_extra, o, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    if (o->rp) replay_summary(o);
    if (o->rv.on)
        fprintf(stderr, "m3rec-offline: --reveal-negatives: %llu negatives revealed before their "
                "window closed\n", (unsigned long long)o->rv.revealed);
    if (o->oracle_report && !o->orc) {
        fprintf(stderr, "m3rec-offline: --oracle-report: no oracle (a replay has one with "
                "--oracle-rows)\n");
        return -1;
    }
    if (o->oracle_report && app_oracle_write(o->orc, o->oracle_report, err, sizeof err) != 0) {
        fprintf(stderr, "m3rec-offline: %s\n", err);
        return -1;
    }
    if (app_print_comparison_live(stdout, o->L, o->orc, err, sizeof err) != 0)
        fprintf(stderr, "m3rec-offline: %s\n", err);
    return 0;
}

static void close_run(offline *o) {
    char err[512];
    group_close(&o->g);
    app_oracle_destroy(o->orc);
    rpl_destroy(o->rp);
    rpl_map_destroy(o->map);
    if (o->orows) fclose(o->orows);
    free(o->hq);
    free(o->rv.h);
    km_free(&o->items.idx);
    km_free(&o->users.idx);
    free(o->items.cnt);
    free(o->users.cnt);
    if (state_close(o->st, err, sizeof err) != 0) fprintf(stderr, "m3rec-offline: %s\n", err);
    lrn_destroy(o->L);
    sim_destroy(o->s);
    cfg_free(&o->cfg);
}

int main(int argc, char **argv) {
    /* Blocks of 1 MB and more come from mmap and go back to the OS when freed: eviction
     * grows and shrinks the tables' arrays, and glibc's adaptive threshold would otherwise
     * keep the freed ones in the heap (measured: 15-25 MB more RSS in a budgeted run). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    static offline o;
    o.g.rule = -1;   /* --sync not given */
    o.g.stale_lr = -1;
    cfg_defaults(&o.cfg);
    sim_cfg_defaults(&o.sc);
    int rc = parse_args(&o, argc, argv);
    if (rc != 0) return rc;
    /* on a failure the process ends at once: the store keeps its last checkpoint */
    if (o.map && o.cfg.store_dir[0]) {
        fprintf(stderr, "m3rec-offline: store.dir is for the simulator's stream; a replay "
                "runs in memory\n");
        return 2;
    }
    if (open_run(&o) != 0 || group_open(&o) != 0 || (o.cfg.store_dir[0] && open_state(&o) != 0) ||
        run_stream(&o) != 0 || finish(&o) != 0)
        return 1;
    close_run(&o);
    return 0;
}
