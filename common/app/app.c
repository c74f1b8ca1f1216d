/* app.c - what the m3rec executables share: options, the oracle, reports, the summary. */
#include "app/app.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "report/metrics.h"
#include "engine/model.h"

int app_config_arg(m3_cfg *cfg, int argc, char **argv, int *i, char *errstr, size_t n) {
    const char *a = argv[*i];
    if (strcmp(a, "--config") != 0 && strcmp(a, "--set") != 0) return 0;
    if (*i + 1 >= argc) {
        snprintf(errstr, n, "%s needs a value", a);
        return -1;
    }
    const char *v = argv[++*i];
    int rc = a[2] == 'c' ? cfg_load(cfg, v, errstr, n) : cfg_set(cfg, v, "--set", 0, errstr, n);
    return rc == 0 ? 1 : -1;
}

int app_sim_arg(sim_cfg *sc, int argc, char **argv, int *i, char *errstr, size_t n) {
    /* kind: 'i' a positive integer, 'p' a positive number, 'z' a number >= 0, 'c' in [0, 2];
     * type: the sim_cfg field's, 'l' int64_t, 'u' uint64_t, 'n' int, 'd' double */
    static const struct { const char *opt; char kind, type; size_t off; } opts[] = {
        {"--events", 'i', 'l', offsetof(sim_cfg, n_impressions)},
        {"--seed", 'i', 'u', offsetof(sim_cfg, seed)},
        {"--users", 'i', 'n', offsetof(sim_cfg, n_users)},
        {"--items", 'i', 'n', offsetof(sim_cfg, n_items)},
        {"--difficulty", 'p', 'd', offsetof(sim_cfg, difficulty)},
        {"--noise", 'z', 'd', offsetof(sim_cfg, noise)},
        {"--conflict", 'c', 'd', offsetof(sim_cfg, conflict)},
        {"--taste", 'z', 'd', offsetof(sim_cfg, taste)},
        {"--mix", 'z', 'd', offsetof(sim_cfg, mix)},
        {"--new-users", 'z', 'd', offsetof(sim_cfg, new_users_per_1k)},
        {"--visit-len", 'z', 'd', offsetof(sim_cfg, visit_len)},
        {"--intent", 'z', 'd', offsetof(sim_cfg, intent)},
        {"--drift", 'z', 'd', offsetof(sim_cfg, drift)},
        {"--time-rate", 'p', 'd', offsetof(sim_cfg, rate_per_sec)}};
    enum { N_OPTS = (int)(sizeof opts / sizeof opts[0]) };
    int delay = strcmp(argv[*i], "--conversion-delay") == 0;
    if (delay || strcmp(argv[*i], "--immediate-labels") == 0) {
        if (*i + 1 >= argc) {
            snprintf(errstr, n, "%s needs a value", argv[*i]);
            return -1;
        }
        const char *v = argv[++*i];
        if (delay) return sim_delay_parse(v, &sc->delay, errstr, n) == 0 ? 1 : -1;
        if (sim_duration_parse(v, &sc->immediate_ms) == 0) return 1;
        snprintf(errstr, n, "--immediate-labels %s: expected a duration (e.g. 7d, 1h)", v);
        return -1;
    }
    int k = 0;
    while (k < N_OPTS && strcmp(argv[*i], opts[k].opt) != 0) k++;
    if (k == N_OPTS) return 0;
    if (*i + 1 >= argc) {
        snprintf(errstr, n, "%s needs a value", opts[k].opt);
        return -1;
    }
    const char *v = argv[++*i];
    char *end;
    double x = strtod(v, &end);
    char kind = opts[k].kind;
    int ok = !*end && end != v && (kind == 'i'   ? x > 0 && x == (double)(long long)x
                                   : kind == 'p' ? x > 0
                                   : kind == 'z' ? x >= 0 && x < 1e9
                                                 : x >= 0 && x <= 2);
    if (!ok) {
        snprintf(errstr, n, "%s %s: expected %s", opts[k].opt, v,
                 kind == 'i' ? "a positive integer" : kind == 'p' ? "a positive number"
                 : kind == 'z' ? "a number >= 0" : "a number in [0, 2]");
        return -1;
    }
    void *f = (char *)sc + opts[k].off;
    switch (opts[k].type) {
    case 'l': *(int64_t *)f = (int64_t)x; break;
    case 'u': *(uint64_t *)f = strtoull(v, NULL, 10); break;   /* exact beyond 2^53 */
    case 'n': *(int *)f = (int)x; break;
    default: *(double *)f = x; break;
    }
    return 1;
}

kio_prop *app_kafka_props(const m3_cfg *cfg, const char *bootstrap, int spare, int *n) {
    kio_prop *props = calloc((size_t)cfg->n_kafka + 1 + (size_t)spare, sizeof *props);
    *n = 0;
    if (!props) return NULL;
    for (int i = 0; i < cfg->n_kafka; i++)
        props[(*n)++] = (kio_prop){cfg->kafka[i].key, cfg->kafka[i].value};
    if (bootstrap) props[(*n)++] = (kio_prop){"bootstrap.servers", bootstrap};
    return props;
}

int app_topics(topics *t, const m3_cfg *cfg, char *errstr, size_t n) {
    const char *scen[CFG_LIST_MAX];
    for (int s = 0; s < cfg->scenarios.n; s++) scen[s] = cfg->scenarios.names[s];
    return topics_init(t, cfg->topic_prefix, scen, cfg->scenarios.n, errstr, n);
}

void app_sim_from_cfg(sim_cfg *sc, const m3_cfg *cfg) {
    sc->n_scen = cfg->scenarios.n < SIM_MAX_SCEN ? cfg->scenarios.n : SIM_MAX_SCEN;
    for (int i = 0; i < sc->n_scen; i++)
        snprintf(sc->scen_names[i], M3_NAME_MAX, "%s", cfg->scenarios.names[i]);
    sc->window_ms = cfg->join_window_ms;
}

/* ---- the oracle ---- */

struct app_oracle {
    met_board *b;
    int64_t imps, burnin;      /* impressions counted; none is in a slice before burnin */
    uint32_t item_warm, user_new;
};

app_oracle *app_oracle_new(const m3_cfg *cfg, char *errstr, size_t n) {
    app_oracle *o = calloc(1, sizeof *o);
    if (!o) {
        snprintf(errstr, n, "out of memory");
        return NULL;
    }
    const char *scen[M3_MAX_SCEN], *names[] = {"oracle", "oracle_profile", "oracle_learner"};
    for (int i = 0; i < cfg->scenarios.n; i++) scen[i] = cfg->scenarios.names[i];
    o->b = met_board_new(cfg->scenarios.n, scen, 3, names, 0, errstr, n);
    if (!o->b) {
        free(o);
        return NULL;
    }
    /* the models' slices start after model.slice.burnin.impressions */
    o->burnin = cfg->slice_burnin_imps;
    o->item_warm = (uint32_t)cfg->model.item_warm;
    o->user_new = (uint32_t)cfg->model.slice_user_new;
    return o;
}

void app_oracle_destroy(app_oracle *o) {
    if (!o) return;
    met_board_destroy(o->b);
    free(o);
}

void app_oracle_add(app_oracle *o, const sim_truth *t) {
    met_counters *c = met_board_counters(o->b);
    c->events++;
    c->impressions++;
    c->clicks += t->clicked;
    unsigned sl = 0;   /* the slices as the models define them (model.h) */
    if (t->item_imps < o->item_warm) sl |= 1u << MET_SLICE_NEW_ITEM;
    if (t->user_scen_imps < o->user_new && t->user_other_imps > 0)
        sl |= 1u << MET_SLICE_NEW_USER_SCEN;
    if (o->imps++ < o->burnin) sl = 0;
    const float pc[3] = {t->p_click, t->p_click_profile, t->p_click_learner};
    const float pv[3] = {t->p_conv, t->p_conv_profile, t->p_conv_learner};
    for (int m = 0; m < 3; m++) {
        double ctcvr = (double)pc[m] * pv[m];
        met_board_add(o->b, m, t->scen, MET_CTR, pc[m], t->clicked);
        met_board_add(o->b, m, t->scen, MET_CTCVR, ctcvr, t->in_window);
        met_board_add_slices(o->b, m, t->scen, sl, MET_CTR, pc[m], t->clicked);
        met_board_add_slices(o->b, m, t->scen, sl, MET_CTCVR, ctcvr, t->in_window);
        if (!t->clicked) continue;   /* the CVR AUC is over clicked impressions */
        met_board_add(o->b, m, t->scen, MET_CVR, pv[m], t->in_window);
        met_board_add_slices(o->b, m, t->scen, sl, MET_CVR, pv[m], t->in_window);
    }
}

static char *board_json(const met_board *b, void (*extra)(json_writer *, void *), void *arg) {
    json_writer *w = json_writer_new_buf(2);
    if (!w) return NULL;
    met_board_write_json(b, w, extra, arg);
    size_t len;
    const char *s = json_writer_buf(w, &len);
    char *out = s && !json_writer_error(w) ? strndup(s, len) : NULL;
    json_writer_destroy(w);
    return out;
}

static int write_text(const char *path, const char *text, char *errstr, size_t n) {
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(errstr, n, "%s: %s", path, strerror(errno));
        return -1;
    }
    int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
    bad |= fclose(f) != 0;
    if (bad) snprintf(errstr, n, "%s: write failed: %s", path, strerror(errno));
    return bad ? -1 : 0;
}

char *app_oracle_json(const app_oracle *o) { return board_json(o->b, NULL, NULL); }

/* Write a rendered report (NULL: rendering failed) to path, and free it. */
static int write_report(const char *path, char *text, char *errstr, size_t n) {
    if (!text) {
        snprintf(errstr, n, "%s: cannot render the report (out of memory?)", path);
        return -1;
    }
    int rc = write_text(path, text, errstr, n);
    free(text);
    return rc;
}

int app_oracle_write(const app_oracle *o, const char *path, char *errstr, size_t n) {
    return write_report(path, app_oracle_json(o), errstr, n);
}

/* ---- the learner's report ---- */

typedef struct {
    lrn *L;
    state *st;
    app_extra_fn extra;
    void *arg;
} report_ctx;

/* The keys whose values decide what the models predict: workers whose reports are merged
 * (m3rec-report --merge) must agree on them. The others (store, Kafka, the worker's run
 * control, metrics) may differ from worker to worker. */
static int model_key(const char *line) {
    static const char *const pre[] = {"scenarios=", "features.", "batch.size=", "model.",
                                      "join.", "emb.", "time."};
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
        if (strncmp(line, pre[i], strlen(pre[i])) == 0) return 1;
    return 0;
}

/* "config": {key: value} of the model keys, from the configuration's dump. */
static void write_model_config(json_writer *w, const m3_cfg *cfg) {
    char *dump = cfg_dump(cfg);
    json_key(w, "config");
    json_obj_begin(w);
    for (char *save = NULL, *l = dump ? strtok_r(dump, "\n", &save) : NULL; l;
         l = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(l, '=');
        if (l[0] == '#' || !eq || !model_key(l)) continue;
        *eq = '\0';
        json_key(w, l);
        json_str(w, eq + 1);
    }
    json_obj_end(w);
    free(dump);
}

static void report_extra(json_writer *w, void *arg) {
    const report_ctx *c = arg;
    lrn *L = c->L;
    write_model_config(w, lrn_cfg(L));
    json_key(w, "model_version");
    json_int(w, lrn_model_version(L));
    json_key(w, "flops_per_example");
    json_num(w, lrn_flops_per_example(L));
    json_key(w, "pending");
    json_uint(w, lrn_pending(L));
    if (c->extra) c->extra(w, c->arg);
    json_key(w, "trained_ctr");
    json_uint(w, lrn_trained_ctr(L));
    json_key(w, "trained_ctcvr");
    json_uint(w, lrn_trained_ctcvr(L));
    if (c->st) {
        json_key(w, "state");
        state_write_json(c->st, w);
    }
}

char *app_report_json(lrn *L, state *st, app_extra_fn extra, void *arg) {
    report_ctx c = {L, st, extra, arg};
    return board_json(lrn_board(L), report_extra, &c);
}

int app_write_report(const char *path, lrn *L, state *st, app_extra_fn extra, void *arg,
                     char *errstr, size_t n) {
    return write_report(path, app_report_json(L, st, extra, arg), errstr, n);
}

/* ---- the comparison table ---- */

static double auc_at(const json_node *models, const char *model, const char *scen, const char *task) {
    char path[256];
    if (scen)
        snprintf(path, sizeof path, "%s.scenarios.%s.%s.auc", model, scen, task);
    else
        snprintf(path, sizeof path, "%s.overall.%s.auc", model, task);
    return json_number(json_get(models, path), NAN);
}

static void print_row(FILE *out, const json_node *models, int n_models, const char **names,
                      const json_node *orc_models, const char *scen, const char *task,
                      int has_lr) {
    fprintf(out, "%-10s %-6s", scen ? scen : "overall", task);
    double lr = has_lr ? auc_at(models, "lr", scen, task) : NAN;
    double oracle = orc_models ? auc_at(orc_models, "oracle", scen, task) : NAN;
    for (int m = 0; m < n_models; m++) fprintf(out, " %13.4f", auc_at(models, names[m], scen, task));
    if (orc_models) fprintf(out, " %8.4f", oracle);
    for (int m = 0; m < n_models && has_lr && orc_models; m++) {
        if (strcmp(names[m], "lr") == 0) continue;
        double a = auc_at(models, names[m], scen, task);
        fprintf(out, " %12.2f", (a - lr) / (oracle - lr));
    }
    fputc('\n', out);
}

int app_print_comparison(FILE *out, const json_node *run, const json_node *oracle,
                         char *errstr, size_t n) {
    const json_node *models = json_member(run, "models");
    const json_node *scens = json_member(run, "scenarios");
    if (!models || !scens || models->type != JSON_OBJECT || models->n < 1) {
        snprintf(errstr, n, "the report has no models/scenarios: not an m3rec report?");
        return -1;
    }
    const json_node *orc_models = oracle ? json_member(oracle, "models") : NULL;
    if (!json_member(orc_models, "oracle")) orc_models = NULL;   /* no column of NaN */
    int n_models = (int)models->n;
    if (n_models > 8) n_models = 8;
    const char *names[8];
    int has_lr = 0;
    for (int m = 0; m < n_models; m++) {
        names[m] = models->keys[m];
        has_lr |= strcmp(names[m], "lr") == 0;
    }
    fprintf(out, "%-10s %-6s", "scenario", "task");
    for (int m = 0; m < n_models; m++) fprintf(out, " %13s", names[m]);
    if (orc_models) fprintf(out, " %8s", "oracle");
    for (int m = 0; m < n_models && has_lr && orc_models; m++)
        if (strcmp(names[m], "lr") != 0) fprintf(out, " %12.12s", names[m]);
    fputc('\n', out);
    if (has_lr && orc_models) {
        fprintf(out, "%-17s %*s", "", 14 * n_models + 9, "");
        fprintf(out, " (gap to oracle closed vs lr; >= 0.5 is the bar)\n");
    }
    for (size_t s = 0; scens->type == JSON_OBJECT && s < scens->n; s++)
        for (int t = 0; t < MET_NTASKS; t++)
            print_row(out, models, n_models, names, orc_models, scens->keys[s],
                      met_task_name(t), has_lr);
    for (int t = 0; t < MET_NTASKS; t++)
        print_row(out, models, n_models, names, orc_models, NULL, met_task_name(t), has_lr);
    if (!orc_models)
        fprintf(out, "no oracle: %s\n", oracle ? "the oracle report has no model \"oracle\""
                : "the true probabilities are unknown (a replay has them with m3rec-offline "
                  "--oracle-rows, docs/replay.md)");
    return 0;
}

int app_print_comparison_live(FILE *out, lrn *L, const app_oracle *o, char *errstr, size_t n) {
    char *rs = app_report_json(L, NULL, NULL, NULL), *os = o ? app_oracle_json(o) : NULL;
    json_node *run = rs ? json_parse(rs, errstr, n) : NULL;
    json_node *orc = os ? json_parse(os, errstr, n) : NULL;
    int rc = run ? app_print_comparison(out, run, orc, errstr, n) : -1;
    json_free(run);
    json_free(orc);
    free(rs);
    free(os);
    return rc;
}
