/* app.h - what the m3rec executables share: options, the oracle, reports, the summary. */
#ifndef M3_APP_H
#define M3_APP_H
#include <stdio.h>
#include "config/cfg.h"
#include "base/json.h"
#include "stream/kio.h"
#include "stream/learner.h"
#include "stream/topics.h"
#include "eval/sim.h"
#include "state/state.h"

/* Handle the options every program takes: `--config FILE` (load a properties file) and
 * `--set key=value` (override one key), applied in command-line order. Returns 1 when
 * argv[*i] was one of them (*i then points at its last word), 0 when it was not, -1 on
 * error with errstr = "file:line: message". */
int app_config_arg(m3_cfg *cfg, int argc, char **argv, int *i, char *errstr, size_t n);

/* Handle the simulator's options: --events N, --seed S, --users N, --items N,
 * --difficulty X, --noise X, --conflict X (0..2), --taste X, --mix X, --new-users X,
 * --time-rate X (impressions per second of event time), --conversion-delay DIST
 * (sim_delay_parse), --immediate-labels WINDOW (sim_cfg.immediate_ms; see sim_cfg). Returns 1 when argv[*i] was one (*i then
 * points at its value), 0 when not, -1 with errstr when its value is missing or out of range. */
int app_sim_arg(sim_cfg *sc, int argc, char **argv, int *i, char *errstr, size_t n);
#define APP_SIM_USAGE \
    "[--events N] [--seed S] [--users N] [--items N] [--difficulty X] [--noise X] [--conflict X] " \
    "[--taste X] [--mix X] [--new-users X] [--drift TURNS_PER_DAY] [--time-rate IMPS_PER_SEC] " \
    "[--conversion-delay DIST] [--immediate-labels WINDOW]"

/* The librdkafka properties of a program: cfg's kafka.* keys in file order, then
 * bootstrap.servers = bootstrap when bootstrap is non-NULL (a later entry overrides an
 * earlier one), with room for `spare` more entries the caller may append. The strings are
 * views into cfg and bootstrap, which must outlive the array. Returns the malloc'd array
 * (the caller frees it) with *n entries used, or NULL when out of memory. */
kio_prop *app_kafka_props(const m3_cfg *cfg, const char *bootstrap, int spare, int *n);

/* Fill t with the pipeline's topic names from cfg's topic.prefix and scenarios (checked
 * by cfg_check). Returns 0, or -1 with errstr when a name would be too long. */
int app_topics(topics *t, const m3_cfg *cfg, char *errstr, size_t n);

/* Take the simulator's scenarios and attribution window from the configuration. */
void app_sim_from_cfg(sim_cfg *sc, const m3_cfg *cfg);

/* The oracle: the true probabilities of the simulator scored like a model ("oracle"),
 * next to its reference predictors (sim_truth: "oracle_profile", "oracle_learner"), each
 * with the models' slices (new_item: the item's impressions < model.item.warm;
 * new_user_in_scenario: the user's first model.slice.user.new impressions in the
 * scenario, known in another;
 * none in the first model.slice.burnin.impressions impressions - the scoreboard's
 * burn-in, the same impressions up to a partial minibatch). */
typedef struct app_oracle app_oracle;
app_oracle *app_oracle_new(const m3_cfg *cfg, char *errstr, size_t n);
void app_oracle_destroy(app_oracle *o);
void app_oracle_add(app_oracle *o, const sim_truth *t);
/* Write the oracle's report (same shape as the worker's; primary model "oracle"). */
int app_oracle_write(const app_oracle *o, const char *path, char *errstr, size_t n);
/* The oracle's report as a malloc'd JSON string. */
char *app_oracle_json(const app_oracle *o);

/* Writes a program's own top-level report keys (may be NULL). */
typedef void (*app_extra_fn)(json_writer *w, void *arg);

/* Write the learner's report to path: metrics, model facts ("config": the keys that decide
 * what the models predict - scenarios, features.*, batch.size, model.*, join.*, emb.*,
 * time.* - as {key: value}, which m3rec-report --merge requires equal), extra's keys, the
 * rows trained and, with a store (st not NULL), the state's counters. Returns 0, or -1 with
 * errstr. */
int app_write_report(const char *path, lrn *L, state *st, app_extra_fn extra, void *arg,
                     char *errstr, size_t n);
/* The learner's report as app_write_report writes it, as a malloc'd JSON string (NULL when
 * out of memory). */
char *app_report_json(lrn *L, state *st, app_extra_fn extra, void *arg);

/* Print, per scenario and overall, CTR and CTCVR AUC of every model in `run` next to the
 * oracle's, and the fraction of the LR-to-oracle gap each model closes when `run` has an
 * `lr` model. oracle may be NULL, or lack a model "oracle": then the table has no oracle
 * column and ends with a line "no oracle: <why>". Returns 0, or -1 when run lacks the
 * report keys. */
int app_print_comparison(FILE *out, const json_node *run, const json_node *oracle,
                         char *errstr, size_t n);
/* Same, from a live learner and oracle. */
int app_print_comparison_live(FILE *out, lrn *L, const app_oracle *o, char *errstr, size_t n);

#endif
