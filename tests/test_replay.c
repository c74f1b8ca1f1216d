/* test_replay.c - the dataset replay: shipped mappings, the public dataset samples in
 * tests/data/samples (values hand-checked against the files), the raw Ali-CCP format, every
 * kind of bad data with its exact message, --skip-bad counting, event-time order, the
 * m3rec-replay tool, and the whole path: samples replayed into an embedded broker,
 * consumed by the real m3rec-worker, every impression predicted and counted. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <librdkafka/rdkafka.h>

#include "config/cfg.h"
#include "check.h"
#include "proc.h"
#include "stream/codec.h"
#include "base/json.h"
#include "stream/kio.h"
#include "eval/replay.h"

#define T0 1767225600000LL /* time.start.ms of the shipped mappings */
#define DELAY 600000LL     /* their conversion.delay.ms */

static char err[2048];

/* ---- helpers ---- */

/* A public dataset sample shipped with the tests (tests/data/samples, see its README). */
static const char *data(const char *rel) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ % 8];
    struct stat st;
    snprintf(b, 512, "%s/tests/data/samples/%s", M3_SOURCE_DIR, rel);
    CHECK_MSG(stat(b, &st) == 0, "sample %s not found", b);
    return b;
}

static rpl_map *shipped(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/config/%s", M3_SOURCE_DIR, name);
    rpl_map *m = rpl_map_new();
    CHECK(m);
    CHECK_MSG(rpl_map_load(m, path, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(rpl_map_check(m, err, sizeof err) == 0, "%s", err);
    return m;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK_MSG(f, "cannot write %s", path);
    fputs(text, f);
    CHECK(fclose(f) == 0);
}

/* Every event of a replay. Returns the count; *rc is rpl_next's last return (0 or -1). */
static int replay_all(const rpl_map *m, const char *const *paths, int n_paths, const rpl_opts *o,
                      m3_event **out, rpl_stats *st, int *rc) {
    rpl_replay *r = rpl_new(m, paths, n_paths, o, err, sizeof err);
    CHECK_MSG(r, "%s", err);
    int cap = 64, n = 0;
    m3_event *ev = malloc((size_t)cap * sizeof *ev);
    CHECK(ev);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            ev = realloc(ev, (size_t)cap * sizeof *ev);
            CHECK(ev);
        }
        *rc = rpl_next(r, &ev[n], err, sizeof err);
        if (*rc != 1) break;
        n++;
    }
    if (st) rpl_get_stats(r, st);
    if (*rc < 0) { /* sticky */
        m3_event again;
        char err2[sizeof err];
        CHECK_EQ_INT(rpl_next(r, &again, err2, sizeof err2), -1);
        CHECK_EQ_STR(err2, err);
    }
    rpl_destroy(r);
    if (out) *out = ev;
    else free(ev);
    return n;
}

static int64_t cat(const m3_catmap *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].name, name) == 0) return m->kv[i].value;
    CHECK_MSG(0, "no categorical field '%s'", name);
    return 0;
}

static int has_cat(const m3_catmap *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].name, name) == 0) return 1;
    return 0;
}

static float num(const m3_nummap *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].name, name) == 0) return m->kv[i].value;
    CHECK_MSG(0, "no numeric field '%s'", name);
    return 0;
}

static const m3_impression *find_imp(const m3_event *ev, int n, const char *id) {
    for (int i = 0; i < n; i++)
        if (ev[i].type == M3_EV_IMPRESSION && strcmp(ev[i].u.imp.impression_id, id) == 0) return &ev[i].u.imp;
    CHECK_MSG(0, "no impression '%s'", id);
    return NULL;
}

/* Event-time order, and every conversion follows its clicked impression by the delay. */
static void check_order(const m3_event *ev, int n, int64_t delay) {
    for (int i = 0; i < n; i++) {
        int64_t ts = ev[i].type == M3_EV_IMPRESSION ? ev[i].u.imp.ts_ms : ev[i].u.conv.ts_ms;
        if (i > 0) {
            int64_t prev = ev[i - 1].type == M3_EV_IMPRESSION ? ev[i - 1].u.imp.ts_ms : ev[i - 1].u.conv.ts_ms;
            CHECK_MSG(prev <= ts, "event %d at %" PRId64 " follows one at %" PRId64, i, ts, prev);
        }
        if (ev[i].type != M3_EV_CONVERSION) continue;
        const m3_conversion *c = &ev[i].u.conv;
        int j = 0;
        while (j < i && !(ev[j].type == M3_EV_IMPRESSION && strcmp(ev[j].u.imp.impression_id, c->impression_id) == 0))
            j++;
        CHECK_MSG(j < i, "conversion %s before its impression", c->conversion_id);
        const m3_impression *im = &ev[j].u.imp;
        CHECK(im->clicked);
        CHECK_EQ_INT(c->ts_ms, im->ts_ms + delay);
        CHECK_EQ_INT(c->user_id, im->user_id);
        CHECK_EQ_INT(c->item_id, im->item_id);
        CHECK_EQ_STR(c->scenario, im->scenario);
        char id[M3_ID_MAX + 8];
        snprintf(id, sizeof id, "%s:conv", im->impression_id);
        CHECK_EQ_STR(c->conversion_id, id);
    }
}

/* ---- mappings ---- */

static void test_shipped_mappings(void) {
    rpl_map *m = shipped("replay-aliccp.properties");
    const char *names[RPL_MAX_SCEN];
    CHECK_EQ_INT(rpl_map_scenarios(m, names), 3);
    CHECK_EQ_STR(names[0], "pos1");
    CHECK_EQ_STR(names[2], "pos3");
    CHECK_EQ_INT(rpl_map_format(m), RPL_CSV);
    char *s = rpl_map_worker_settings(m);
    CHECK_EQ_STR(s, "topic.prefix=m3rec\n"
                    "scenarios=pos1,pos2,pos3\n"
                    "features.user_cat=121,122,124,125,126,127,128,129,109_14,110_14,127_14,150_14\n"
                    "features.item_cat=206,207,210,216,508,509,702,853\n"
                    "features.ctx_cat=\n"
                    "features.user_num=D109_14,D110_14,D127_14,D150_14\n"
                    "features.item_num=D508,D509,D702,D853\n");
    /* a worker given exactly these settings matches; the defaults do not */
    m3_cfg cfg;
    cfg_defaults(&cfg);
    char warn[4096];
    CHECK_EQ_INT(rpl_map_compare_worker(m, &cfg, warn, sizeof warn), 7); /* 3 scenarios, 4 maps */
    CHECK_CONTAINS(warn, "the worker's scenarios (home,search,product) lack 'pos1': it would not read m3rec.events.pos1\n");
    CHECK_CONTAINS(warn, "the worker's features.item_num lacks 'D508', 'D509', 'D702', 'D853' (4 of 4 mapped fields)");
    int line = 0;
    for (char *save = NULL, *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        CHECK_MSG(cfg_set(&cfg, l, "settings", ++line, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(cfg_check(&cfg, err, sizeof err) == 0, "%s", err);
    CHECK_EQ_INT(rpl_map_compare_worker(m, &cfg, warn, sizeof warn), 0);
    CHECK_EQ_STR(warn, "");
    CHECK(cfg_set(&cfg, "join.window.ms=60000", "t", 1, err, sizeof err) == 0);
    CHECK(cfg_set(&cfg, "topic.prefix=other", "t", 2, err, sizeof err) == 0);
    CHECK_EQ_INT(rpl_map_compare_worker(m, &cfg, warn, sizeof warn), 2);
    CHECK_EQ_STR(warn, "the worker's topic.prefix is 'other', the mapping's 'm3rec'\n"
                       "conversion.delay.ms=600000 exceeds the worker's join.window.ms=60000: "
                       "every conversion would be late\n");
    cfg_free(&cfg);
    free(s);
    rpl_map_destroy(m);

    m = shipped("replay-aliccp-raw.properties");
    CHECK_EQ_INT(rpl_map_format(m), RPL_ALICCP_RAW);
    CHECK_EQ_INT(rpl_map_scenarios(m, names), 1);
    CHECK_EQ_STR(names[0], "pos1");
    rpl_map_destroy(m);

    m = shipped("replay-aliexpress.properties");
    CHECK_EQ_INT(rpl_map_scenarios(m, names), 1);
    CHECK_EQ_STR(names[0], "us");
    s = rpl_map_worker_settings(m);
    CHECK_CONTAINS(s, "scenarios=us\nfeatures.user_cat=categorical_1,categorical_2,");
    CHECK_CONTAINS(s, ",categorical_9\nfeatures.item_cat=categorical_10,");
    CHECK_CONTAINS(s, "features.item_num=numerical_24,");
    CHECK_CONTAINS(s, ",numerical_55\n");
    free(s);
    /* --map switches the constant scenario */
    CHECK(rpl_map_set(m, "scenario.constant=nl", "--map", 0, err, sizeof err) == 0);
    CHECK(rpl_map_check(m, err, sizeof err) == 0);
    CHECK_EQ_INT(rpl_map_scenarios(m, names), 1);
    CHECK_EQ_STR(names[0], "nl");
    rpl_map_destroy(m);
}

/* One `key=value` on a valid base mapping; returns rpl_map_set's or rpl_map_check's error. */
static const char *map_error(const char *kv) {
    rpl_map *m = rpl_map_new();
    static const char *base[] = {"scenario.column=s", "scenario.values=1:a", "user.column=u",
                                 "item.column=i", "click.column=c", "conversion.column=v"};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        CHECK(rpl_map_set(m, base[i], "base", (int)i + 1, err, sizeof err) == 0);
    CHECK_MSG(rpl_map_check(m, err, sizeof err) == 0, "%s", err);
    err[0] = 0;
    if (rpl_map_set(m, kv, "t.properties", 9, err, sizeof err) == 0) rpl_map_check(m, err, sizeof err);
    rpl_map_destroy(m);
    return err;
}

static void test_mapping_errors(void) {
    CHECK_EQ_STR(map_error("features.user_cat=a,b:x"), "");
    CHECK_EQ_STR(map_error("format=tsv"), "t.properties:9: format=tsv is not a known format (csv|aliccp_raw)");
    CHECK_EQ_STR(map_error("user.colum=u"), "t.properties:9: unknown key 'user.colum' (did you mean 'user.column'?)");
    CHECK_EQ_STR(map_error("colour=blue"), "t.properties:9: unknown key 'colour' (see docs/replay.md)");
    CHECK_EQ_STR(map_error("user.column"), "t.properties:9: 'user.column' is not a key=value line");
    CHECK_EQ_STR(map_error("features.user_cat=a,,b"), "t.properties:9: features.user_cat: empty entry");
    CHECK_EQ_STR(map_error("features.user_cat=a:x,b:x"), "t.properties:9: features.user_cat: field name 'x' is listed twice");
    CHECK_EQ_STR(map_error("features.item_cat=my col"),
                 "t.properties:9: features.item_cat: field name 'my col' of column 'my col' is not a name "
                 "(1..31 characters of A-Z a-z 0-9 _ . -; rename it with 'my col:NAME')");
    CHECK_EQ_STR(map_error("features.item_cat=my col:mycol"), "");
    char many[1024] = "features.item_num=";
    for (int i = 0; i < 33; i++) snprintf(many + strlen(many), sizeof many - strlen(many), "%sn%d", i ? "," : "", i);
    CHECK_EQ_STR(map_error(many), "t.properties:9: features.item_num: more than 32 fields; an Impression map holds at most 32");
    CHECK_EQ_STR(map_error("scenario.values=1:a,2"), "t.properties:9: scenario.values: entry '2' is not value:scenario");
    CHECK_EQ_STR(map_error("scenario.values=1:a,1:b"), "t.properties:9: scenario.values: value '1' is listed twice");
    CHECK_EQ_STR(map_error("scenario.values=1:a/b"),
                 "t.properties:9: scenario.values: scenario 'a/b' is not a name (1..31 characters of A-Z a-z 0-9 _ . -)");
    CHECK_EQ_STR(map_error("scenario.values="), "t.properties:9: scenario.values: needs value:scenario entries, e.g. 1:home,2:search");
    char scen17[512] = "scenario.values=";
    for (int i = 0; i < 17; i++) snprintf(scen17 + strlen(scen17), sizeof scen17 - strlen(scen17), "%s%d:s%d", i ? "," : "", i, i);
    CHECK_EQ_STR(map_error(scen17), "t.properties:9: scenario.values names 17 scenarios; the worker takes at most 16");
    CHECK_EQ_STR(map_error("time.rows.per.sec=0"), "t.properties:9: time.rows.per.sec=0 is not a number in >0..1e9");
    CHECK_EQ_STR(map_error("conversion.delay.ms=-1"),
                 "t.properties:9: conversion.delay.ms=-1 is not an integer in 0..2592000000 (30 days)");
    CHECK_EQ_STR(map_error("item.constant=12x"), "t.properties:9: item.constant=12x is not a 64-bit integer");
    CHECK_EQ_STR(map_error("topic.prefix=a b"),
                 "t.properties:9: topic.prefix=a b is not a name (1..63 characters of A-Z a-z 0-9 _ . -)");
    CHECK_EQ_STR(map_error("scenario.constant=x"),
                 "t.properties:9: scenario.constant and scenario.column (base:1) are both set; keep one");
    CHECK_EQ_STR(map_error("item.constant=0"), "t.properties:9: item.constant and item.column (base:4) are both set; keep one");
    CHECK_EQ_STR(map_error("scenario.column="), "mapping: set scenario.column (with scenario.values) or scenario.constant");

    /* file-based: line numbers, comments, missing keys, the file's name for missing keys */
    write_file("test_replay_map1.properties", "# comment\n\n! also a comment\nformat = aliccp_raw\nscenario.column=301\n"
                                              "user.column=101\n  item.constant = 7  \nclick.column=click\n");
    rpl_map *m = rpl_map_new();
    CHECK(rpl_map_load(m, "test_replay_map1.properties", err, sizeof err) == 0);
    CHECK_EQ_INT(rpl_map_check(m, err, sizeof err), -1);
    CHECK_EQ_STR(err, "test_replay_map1.properties:5: scenario.column needs scenario.values (value:scenario, ...)");
    CHECK(rpl_map_set(m, "scenario.values=5:x", "--map", 0, err, sizeof err) == 0);
    CHECK_EQ_INT(rpl_map_check(m, err, sizeof err), -1);
    CHECK_EQ_STR(err, "test_replay_map1.properties: conversion.column is not set");
    CHECK_EQ_INT(rpl_map_set(m, "scenario.constant=no way", "--map", 0, err, sizeof err), -1);
    CHECK_EQ_STR(err, "--map: scenario.constant=no way is not a name (1..31 characters of A-Z a-z 0-9 _ . -)");
    rpl_map_destroy(m);
    write_file("test_replay_map2.properties", "format=csv\nuser.column=u\nbogus line\n");
    m = rpl_map_new();
    CHECK_EQ_INT(rpl_map_load(m, "test_replay_map2.properties", err, sizeof err), -1);
    CHECK_EQ_STR(err, "test_replay_map2.properties:3: 'bogus line' is not a key=value line");
    CHECK_EQ_INT(rpl_map_load(m, "test_replay_missing.properties", err, sizeof err), -1);
    CHECK_EQ_STR(err, "test_replay_missing.properties: No such file or directory");
    rpl_map_destroy(m);
}

/* ---- the shared samples ---- */

static void check_sample(const char *mapping, const char *rel, int rows, int clicks, int convs) {
    rpl_map *m = shipped(mapping);
    const char *paths[] = {data(rel)};
    rpl_stats st;
    m3_event *ev;
    int rc, n = replay_all(m, paths, 1, NULL, &ev, &st, &rc);
    CHECK_MSG(rc == 0, "%s: %s", rel, err);
    CHECK_EQ_INT(st.rows, rows);
    CHECK_EQ_INT(st.impressions, rows);
    CHECK_EQ_INT(st.clicks, clicks);
    CHECK_EQ_INT(st.conversions, convs);
    CHECK_EQ_INT(st.bad, 0);
    CHECK_EQ_INT(n, rows + convs);
    CHECK_EQ_INT(st.first_ts_ms, T0);
    CHECK_EQ_INT(st.next_row_ts_ms, T0 + rows * 10); /* 100 rows per second */
    check_order(ev, n, DELAY);
    free(ev);
    rpl_map_destroy(m);
}

static void test_samples(void) {
    check_sample("replay-aliccp.properties", "ali_ccp/torchrechub_ali_ccp_train_sample.csv", 100, 7, 1);
    check_sample("replay-aliccp.properties", "ali_ccp/torchrechub_ali_ccp_val_sample.csv", 50, 3, 1);
    check_sample("replay-aliccp.properties", "ali_ccp/torchrechub_ali_ccp_test_sample.csv", 50, 2, 1);
    check_sample("replay-aliccp-raw.properties", "ali_ccp/paddlerec_esmm_small_raw.txt", 10, 2, 1);
    check_sample("replay-aliexpress.properties", "aliexpress/torchrechub_aliexpress_train_sample.csv", 100, 60, 2);
    check_sample("replay-aliexpress.properties", "aliexpress/torchrechub_aliexpress_test_sample.csv", 20, 10, 2);
    check_sample("replay-aliexpress.properties", "aliexpress/fuxictr_tiny_mtl_train.csv", 100, 3, 2);
    check_sample("replay-aliexpress.properties", "aliexpress/fuxictr_tiny_mtl_test.csv", 100, 6, 1);
}

/* Field values of specific rows, read off the files by hand. */
static void test_sample_values_aliccp(void) {
    /* Ali-CCP train line 4: 1,1,1,1,1,1,1,0,1,1,1,2,3,3,3,2,2,0,1,1,1,1,1,1,1,
     * 0.4734,0.562,0.0856,0.1902,0.5605,0.256,0.4626,0.344 (the one purchase) */
    rpl_map *m = shipped("replay-aliccp.properties");
    const char *ccp[] = {data("ali_ccp/torchrechub_ali_ccp_train_sample.csv"),
                         data("ali_ccp/torchrechub_ali_ccp_val_sample.csv"),
                         data("ali_ccp/torchrechub_ali_ccp_test_sample.csv")};
    m3_event *ev;
    rpl_stats st;
    int rc, n = replay_all(m, ccp, 3, NULL, &ev, &st, &rc);
    CHECK_MSG(rc == 0, "%s", err);
    CHECK_EQ_INT(st.rows, 200);
    CHECK_EQ_INT(st.conversions, 3);
    CHECK_EQ_INT(st.scen_impressions[0], 200);
    CHECK_EQ_INT(st.scen_impressions[1], 0);
    CHECK_EQ_INT(n, 203);
    const m3_impression *im = find_imp(ev, n, "torchrechub_ali_ccp_train_sample.csv:4");
    CHECK_EQ_INT(im->ts_ms, T0 + 20); /* row index 2 at 100 rows/s */
    CHECK_EQ_STR(im->scenario, "pos1");
    CHECK_EQ_INT(im->user_id, 1);
    CHECK_EQ_INT(im->item_id, 2);
    CHECK(im->clicked);
    CHECK_EQ_INT(im->user_cat.n, 12);
    CHECK_EQ_INT(cat(&im->user_cat, "121"), 1);
    CHECK_EQ_INT(cat(&im->user_cat, "126"), 0);
    CHECK_EQ_INT(cat(&im->user_cat, "150_14"), 1);
    CHECK_EQ_INT(im->item_cat.n, 8);
    CHECK_EQ_INT(cat(&im->item_cat, "206"), 3);
    CHECK_EQ_INT(cat(&im->item_cat, "216"), 2);
    CHECK_EQ_INT(cat(&im->item_cat, "508"), 2);
    CHECK_EQ_INT(cat(&im->item_cat, "509"), 0);
    CHECK_EQ_INT(cat(&im->item_cat, "853"), 1);
    CHECK_EQ_INT(im->ctx_cat.n, 0);
    CHECK_EQ_INT(im->user_num.n, 4);
    CHECK_EQ_INT(num(&im->user_num, "D109_14") == 0.4734f, 1);
    CHECK_EQ_INT(num(&im->user_num, "D150_14") == 0.1902f, 1);
    CHECK_EQ_INT(num(&im->item_num, "D508") == 0.5605f, 1);
    CHECK_EQ_INT(num(&im->item_num, "D853") == 0.344f, 1);
    /* the val file continues the clock: its first row is row 100 */
    im = find_imp(ev, n, "torchrechub_ali_ccp_val_sample.csv:2");
    CHECK_EQ_INT(im->ts_ms, T0 + 1000);
    CHECK_EQ_INT(im->item_id, 0);
    CHECK_EQ_INT(cat(&im->item_cat, "206"), 27);
    CHECK(num(&im->item_num, "D508") == 0.4243f);
    im = find_imp(ev, n, "torchrechub_ali_ccp_test_sample.csv:51");
    CHECK_EQ_INT(im->ts_ms, T0 + 1990);
    /* conversions: train:4, val:27, test:28, each 10 min after its impression */
    const char *conv_ids[3] = {"torchrechub_ali_ccp_train_sample.csv:4", "torchrechub_ali_ccp_val_sample.csv:27",
                               "torchrechub_ali_ccp_test_sample.csv:28"};
    int k = 0;
    for (int i = 0; i < n; i++)
        if (ev[i].type == M3_EV_CONVERSION) {
            CHECK(k < 3);
            CHECK_EQ_STR(ev[i].u.conv.impression_id, conv_ids[k++]);
        }
    CHECK_EQ_INT(k, 3);
    /* the delay is 10 min and the 200 rows span 2 s, so the conversions come last */
    CHECK_EQ_INT(ev[200].type, M3_EV_CONVERSION);
    CHECK_EQ_INT(ev[200].u.conv.ts_ms, T0 + 20 + DELAY);
    check_order(ev, n, DELAY);
    free(ev);

    /* a short delay interleaves: row index 2 (t+20) converts at t+35, between rows 3 and 4 */
    CHECK(rpl_map_set(m, "conversion.delay.ms=15", "--map", 0, err, sizeof err) == 0);
    n = replay_all(m, ccp, 1, NULL, &ev, &st, &rc);
    CHECK_EQ_INT(n, 101);
    CHECK_EQ_STR(ev[3].u.imp.impression_id, "torchrechub_ali_ccp_train_sample.csv:5");
    CHECK_EQ_INT(ev[4].type, M3_EV_CONVERSION);
    CHECK_EQ_INT(ev[4].u.conv.ts_ms, T0 + 35);
    CHECK_EQ_STR(ev[5].u.imp.impression_id, "torchrechub_ali_ccp_train_sample.csv:6");
    check_order(ev, n, 15);
    free(ev);
    /* delay 0: the conversion right after its impression */
    CHECK(rpl_map_set(m, "conversion.delay.ms=0", "--map", 0, err, sizeof err) == 0);
    n = replay_all(m, ccp, 1, NULL, &ev, &st, &rc);
    CHECK_EQ_STR(ev[2].u.imp.impression_id, "torchrechub_ali_ccp_train_sample.csv:4");
    CHECK_EQ_INT(ev[3].type, M3_EV_CONVERSION);
    CHECK_EQ_STR(ev[4].u.imp.impression_id, "torchrechub_ali_ccp_train_sample.csv:5");
    check_order(ev, n, 0);
    free(ev);
    /* max_rows, and a second rate */
    CHECK(rpl_map_set(m, "time.rows.per.sec=3", "--map", 0, err, sizeof err) == 0);
    rpl_opts o = {.max_rows = 5};
    n = replay_all(m, ccp, 3, &o, &ev, &st, &rc);
    CHECK_EQ_INT(st.rows, 5);
    CHECK_EQ_INT(st.impressions, 5);
    CHECK_EQ_INT(ev[5].type, M3_EV_IMPRESSION);
    CHECK_EQ_INT(ev[5].u.imp.ts_ms, T0 + 1333); /* row index 4 at 3 rows/s: 4000/3 ms */
    CHECK_EQ_INT(st.next_row_ts_ms, T0 + 1666);
    free(ev);
    rpl_map_destroy(m);
}

static void test_sample_values_raw(void) {
    /* raw Ali-CCP line 3: 3,1,0,210:886,210:887,509:888,508:889,702:890,853:891,207:892,
     * 206:893,205:894,301:5,216:895,210:896,...,121:10,...,101:12,...,150_14:18,... (no 126) */
    rpl_map *m = shipped("replay-aliccp-raw.properties");
    const char *raw[] = {data("ali_ccp/paddlerec_esmm_small_raw.txt")};
    m3_event *ev;
    rpl_stats st;
    int rc, n = replay_all(m, raw, 1, NULL, &ev, &st, &rc);
    CHECK_MSG(rc == 0, "%s", err);
    const m3_impression *im = find_imp(ev, n, "paddlerec_esmm_small_raw.txt:3");
    CHECK_EQ_INT(im->ts_ms, T0 + 20);
    CHECK_EQ_STR(im->scenario, "pos1");
    CHECK_EQ_INT(im->user_id, 12);
    CHECK_EQ_INT(im->item_id, 894);
    CHECK(im->clicked);
    CHECK_EQ_INT(cat(&im->item_cat, "210"), 886); /* the first of its eleven 210 tokens */
    CHECK_EQ_INT(cat(&im->item_cat, "206"), 893);
    CHECK_EQ_INT(cat(&im->item_cat, "216"), 895);
    CHECK_EQ_INT(cat(&im->item_cat, "509"), 888);
    CHECK_EQ_INT(cat(&im->item_cat, "853"), 891);
    CHECK_EQ_INT(im->item_cat.n, 8);
    CHECK_EQ_INT(cat(&im->user_cat, "121"), 10);
    CHECK_EQ_INT(cat(&im->user_cat, "150_14"), 18);
    CHECK(!has_cat(&im->user_cat, "126")); /* absent from the line: a missing feature */
    CHECK_EQ_INT(im->user_cat.n, 11);
    CHECK_EQ_INT(im->user_num.n + im->item_num.n, 0);
    /* line 2 has no combination fields 508/509/702/853 */
    im = find_imp(ev, n, "paddlerec_esmm_small_raw.txt:2");
    CHECK_EQ_INT(im->item_id, 883);
    CHECK(!im->clicked);
    CHECK_EQ_INT(im->item_cat.n, 4);
    CHECK(!has_cat(&im->item_cat, "508"));
    CHECK_EQ_INT(ev[n - 1].type, M3_EV_CONVERSION);
    CHECK_EQ_STR(ev[n - 1].u.conv.impression_id, "paddlerec_esmm_small_raw.txt:1");
    free(ev);
    rpl_map_destroy(m);
}

static void test_sample_values_aliexpress(void) {
    /* AliExpress train line 26: search_id 861, categorical_7 26, categorical_9 0,
     * numerical_1 1.0, numerical_23 0.38359, numerical_55 0.351549, click 1, conversion 1;
     * line 2: search_id 81, categorical_1 9, numerical_24 0.116248, click 1, conversion 0 */
    rpl_map *m = shipped("replay-aliexpress.properties");
    const char *ae[] = {data("aliexpress/torchrechub_aliexpress_train_sample.csv")};
    m3_event *ev;
    rpl_stats st;
    int rc, n = replay_all(m, ae, 1, NULL, &ev, &st, &rc);
    CHECK_MSG(rc == 0, "%s", err);
    const m3_impression *im = find_imp(ev, n, "torchrechub_aliexpress_train_sample.csv:26");
    CHECK_EQ_STR(im->scenario, "us");
    CHECK_EQ_INT(im->user_id, 861);
    CHECK_EQ_INT(im->item_id, 0);
    CHECK(im->clicked);
    CHECK_EQ_INT(im->user_cat.n, 9);
    CHECK_EQ_INT(im->item_cat.n, 7);
    CHECK_EQ_INT(im->user_num.n, 23);
    CHECK_EQ_INT(im->item_num.n, 32);
    CHECK_EQ_INT(cat(&im->user_cat, "categorical_7"), 26);
    CHECK_EQ_INT(cat(&im->user_cat, "categorical_9"), 0);
    CHECK(num(&im->user_num, "numerical_1") == 1.0f);
    CHECK(num(&im->user_num, "numerical_23") == 0.38359f);
    CHECK(num(&im->item_num, "numerical_55") == 0.351549f);
    im = find_imp(ev, n, "torchrechub_aliexpress_train_sample.csv:2");
    CHECK_EQ_INT(im->user_id, 81);
    CHECK_EQ_INT(im->ts_ms, T0);
    CHECK_EQ_INT(cat(&im->user_cat, "categorical_1"), 9);
    CHECK(num(&im->item_num, "numerical_24") == 0.116248f);
    CHECK(im->clicked);
    CHECK_EQ_STR(ev[n - 2].u.conv.conversion_id, "torchrechub_aliexpress_train_sample.csv:26:conv");
    CHECK_EQ_STR(ev[n - 1].u.conv.conversion_id, "torchrechub_aliexpress_train_sample.csv:31:conv");
    free(ev);
    /* id.prefix, and a file name too long for ids */
    CHECK(rpl_map_set(m, "id.prefix=us/", "--map", 0, err, sizeof err) == 0);
    n = replay_all(m, ae, 1, NULL, &ev, &st, &rc);
    CHECK_EQ_STR(ev[0].u.imp.impression_id, "us/torchrechub_aliexpress_train_sample.csv:2");
    free(ev);
    CHECK(rpl_map_set(m, "id.prefix=", "--map", 0, err, sizeof err) == 0);
    const char *twice[] = {ae[0], ae[0]};
    CHECK(!rpl_new(m, twice, 2, NULL, err, sizeof err));
    char expect[1200];
    snprintf(expect, sizeof expect, "%s: same file name as %s, so their impression ids would collide "
             "(replay them in separate runs with different id.prefix)", ae[0], ae[0]);
    CHECK_EQ_STR(err, expect);
    const char *longname[] = {"test_replay_a_file_name_longer_than_forty_bytes.csv"};
    write_file(longname[0], "x\n");
    CHECK(!rpl_new(m, longname, 1, NULL, err, sizeof err));
    CHECK_EQ_STR(err, "test_replay_a_file_name_longer_than_forty_bytes.csv: impression ids are id.prefix + file "
                      "name + :line, and 'test_replay_a_file_name_longer_than_forty_bytes.csv' is not 1..47 bytes "
                      "(rename the file or shorten id.prefix)");
    const char *missing[] = {"test_replay_no_such.csv"};
    CHECK(!rpl_new(m, missing, 1, NULL, err, sizeof err));
    CHECK_EQ_STR(err, "test_replay_no_such.csv: No such file or directory");
    rpl_map_destroy(m);
}

/* ---- bad data ---- */

/* A small csv mapping: scen 1 -> a, 2 -> b; user, item; one categorical, one numeric. */
static rpl_map *small_map(void) {
    rpl_map *m = rpl_map_new();
    static const char *kv[] = {"scenario.column=scen", "scenario.values=1:a,2:b", "user.column=uid",
                               "item.column=iid", "click.column=click", "conversion.column=purchase",
                               "features.user_cat=c1:cat1", "features.item_num=n1:num1"};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) CHECK(rpl_map_set(m, kv[i], "t", 1, err, sizeof err) == 0);
    CHECK_MSG(rpl_map_check(m, err, sizeof err) == 0, "%s", err);
    return m;
}

#define HDR "click,purchase,uid,iid,scen,c1,n1\n"
#define GOOD "1,1,7,8,1,5,0.5\n"

/* The error of a file whose line 3 is `bad` (line 2 is good and comes out first). */
static const char *bad_row(const rpl_map *m, const char *bad) {
    const char *path = "test_replay_bad.csv";
    char text[1024];
    snprintf(text, sizeof text, HDR GOOD "%s\n" GOOD, bad);
    write_file(path, text);
    m3_event *ev;
    int rc, n = replay_all(m, &path, 1, NULL, &ev, NULL, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_INT(n, 1); /* line 2's impression; its conversion is not due before the error */
    CHECK_EQ_STR(ev[0].u.imp.impression_id, "test_replay_bad.csv:2");
    free(ev);
    return err;
}

static void test_bad_data(void) {
    rpl_map *m = small_map();
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5"), "test_replay_bad.csv:3: 6 columns, the header has 7");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5,0.5,9"), "test_replay_bad.csv:3: 8 columns, the header has 7");
    CHECK_EQ_STR(bad_row(m, ""), "test_replay_bad.csv:3: empty line");
    CHECK_EQ_STR(bad_row(m, "x,0,7,8,1,5,0.5"), "test_replay_bad.csv:3: column 'click': \"x\" is not 0 or 1");
    CHECK_EQ_STR(bad_row(m, "2,0,7,8,1,5,0.5"), "test_replay_bad.csv:3: column 'click': \"2\" is not 0 or 1");
    CHECK_EQ_STR(bad_row(m, "1.0,0,7,8,1,5,0.5"), "test_replay_bad.csv:3: column 'click': \"1.0\" is not 0 or 1");
    CHECK_EQ_STR(bad_row(m, ",0,7,8,1,5,0.5"), "test_replay_bad.csv:3: column 'click': missing label");
    CHECK_EQ_STR(bad_row(m, "1,,7,8,1,5,0.5"), "test_replay_bad.csv:3: column 'purchase': missing label");
    CHECK_EQ_STR(bad_row(m, "0,1,7,8,1,5,0.5"),
                 "test_replay_bad.csv:3: column 'purchase': conversion without a click (click is 0)");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,3,5,0.5"),
                 "test_replay_bad.csv:3: column 'scen': value \"3\" has no scenario in scenario.values");
    CHECK_EQ_STR(bad_row(m, "0,0,x7,8,1,5,0.5"), "test_replay_bad.csv:3: column 'uid': \"x7\" is not an integer");
    CHECK_EQ_STR(bad_row(m, "0,0,7,,1,5,0.5"), "test_replay_bad.csv:3: column 'iid': \"\" is not an integer");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1, 5,0.5"), "test_replay_bad.csv:3: column 'c1': \" 5\" is not an integer");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5.5,0.5"), "test_replay_bad.csv:3: column 'c1': \"5.5\" is not an integer");
    CHECK_EQ_STR(bad_row(m, "0,0,99999999999999999999,8,1,5,0.5"),
                 "test_replay_bad.csv:3: column 'uid': \"99999999999999999999\" is out of range for a 64-bit integer");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5,abc"), "test_replay_bad.csv:3: column 'n1': \"abc\" is not a number");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5,"), "test_replay_bad.csv:3: column 'n1': \"\" is not a number");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5,0.5x"), "test_replay_bad.csv:3: column 'n1': \"0.5x\" is not a number");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5,nan"), "test_replay_bad.csv:3: column 'n1': \"nan\" is not a finite float");
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5,1e39"), "test_replay_bad.csv:3: column 'n1': \"1e39\" is not a finite float");
    /* a long value is shown cut at 40 bytes */
    CHECK_EQ_STR(bad_row(m, "0,0,7,8,1,5,0.12345678901234567890123456789012345678901234567890x"),
                 "test_replay_bad.csv:3: column 'n1': \"0.12345678901234567890123456789012345678...\" is not a number");

    /* whole-file problems stop the replay whatever skip_bad says */
    rpl_opts skip = {.skip_bad = 1};
    const char *path = "test_replay_hdr.csv";
    int rc;
    write_file(path, "click,purchase,uid,scen,c1,n1\n" GOOD);
    CHECK_EQ_INT(replay_all(m, &path, 1, &skip, NULL, NULL, &rc), 0);
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_STR(err, "test_replay_hdr.csv:1: the mapping's column 'iid' is not in the header");
    write_file(path, "click,purchase,uid,iid,scen,c1,n1,uid\n" GOOD);
    replay_all(m, &path, 1, &skip, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_hdr.csv:1: column 'uid' appears twice in the header (columns 3 and 8)");
    write_file(path, "");
    replay_all(m, &path, 1, &skip, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_hdr.csv: empty file, expected a header row");
    /* a header alone is no rows; CRLF line ends, a byte-order mark, no final newline */
    write_file(path, HDR);
    CHECK_EQ_INT(replay_all(m, &path, 1, NULL, NULL, NULL, &rc), 0);
    CHECK_EQ_INT(rc, 0);
    write_file(path, "\xEF\xBB\xBF" "click,purchase,uid,iid,scen,c1,n1\r\n1,0,-7,8,2,5,-0.25\r\n0,0,1,2,1,3,1");
    m3_event *ev;
    CHECK_EQ_INT(replay_all(m, &path, 1, NULL, &ev, NULL, &rc), 2);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(ev[0].u.imp.scenario, "b");
    CHECK_EQ_INT(ev[0].u.imp.user_id, -7);
    CHECK(ev[0].u.imp.item_num.kv[0].value == -0.25f);
    CHECK_EQ_STR(ev[0].u.imp.item_num.kv[0].name, "num1");
    CHECK_EQ_STR(ev[0].u.imp.user_cat.kv[0].name, "cat1");
    CHECK_EQ_INT(ev[1].u.imp.user_cat.kv[0].value, 3);
    CHECK(ev[1].u.imp.item_num.kv[0].value == 1.0f);
    free(ev);
    rpl_map_destroy(m);

    /* the raw format */
    m = shipped("replay-aliccp-raw.properties");
    const char *raw = "test_replay_bad.txt";
    write_file(raw, "1,0,0,101:3,205:4,301:5\n2,1,0,101:3,205:4\n");
    replay_all(m, &raw, 1, NULL, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_bad.txt:2: field '301' is missing");
    write_file(raw, "1,0,0,101:3,205:4,301:5\n2,1,0,101:3,205:x,301:5\n");
    replay_all(m, &raw, 1, NULL, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_bad.txt:2: field '205': \"x\" is not an integer");
    write_file(raw, "1,0,0,101:3,205:4,301:5\n2,1,0,101:3,205:4,301:6\n");
    replay_all(m, &raw, 1, NULL, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_bad.txt:2: field '301': value \"6\" has no scenario in scenario.values");
    write_file(raw, "1,0,0,101:3,205:4,301:5\n2,1,0,101:3,205:4,301:5,oops\n");
    replay_all(m, &raw, 1, NULL, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_bad.txt:2: token 7 \"oops\" is not field:feasign");
    write_file(raw, "1,0,0,101:3,205:4,301:5\n2,1,0,101:3,:4,301:5\n");
    replay_all(m, &raw, 1, NULL, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_bad.txt:2: token 5 \":4\" is not field:feasign");
    write_file(raw, "1,0,0,101:3,205:4,301:5\n2,1\n");
    replay_all(m, &raw, 1, NULL, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_bad.txt:2: 2 columns, expected sample_id,click,conversion then field:feasign tokens");
    write_file(raw, "1,0,0,101:3,205:4,301:5\n2,0,1,101:3,205:4,301:5\n");
    replay_all(m, &raw, 1, NULL, NULL, NULL, &rc);
    CHECK_EQ_STR(err, "test_replay_bad.txt:2: column 'conversion': conversion without a click (click is 0)");
    /* a repeated field: the first occurrence; an unknown field: ignored */
    write_file(raw, "1,1,0,999:1,101:3,205:4,301:5,206:10,206:11,101:99\n");
    CHECK_EQ_INT(replay_all(m, &raw, 1, NULL, &ev, NULL, &rc), 1);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(ev[0].u.imp.user_id, 3);
    CHECK_EQ_INT(cat(&ev[0].u.imp.item_cat, "206"), 10);
    CHECK_EQ_INT(ev[0].u.imp.item_cat.n, 1);
    free(ev);
    rpl_map_destroy(m);
}

/* --skip-bad: bad rows are counted, the first RPL_REASONS reasons kept, good rows go on
 * at the time their row number gives them. */
static void test_skip_bad(void) {
    rpl_map *m = small_map();
    const char *path = "test_replay_skip.csv";
    write_file(path, HDR GOOD                  /* line 2 */
               "0,0,7,8,1,5,0.5\n"             /* 3 */
               "0,0,7,8,9,5,0.5\n"             /* 4: bad scenario */
               "0,1,7,8,1,5,0.5\n"             /* 5: conversion without click */
               "0,0,7,8,1,5,0.5\n"             /* 6 */
               "0,0,7,8,1\n"                   /* 7: 5 columns */
               GOOD                            /* 8 */
               "y,0,7,8,1,5,0.5\n"             /* 9 */
               "0,0,7,8,1,5,inf\n"             /* 10 */
               "0,0,7,8,1,q,0.5\n"             /* 11 */
               "0,0,7,8,1,5,0.5\n");           /* 12 */
    rpl_opts o = {.skip_bad = 1};
    m3_event *ev;
    rpl_stats st;
    int rc, n = replay_all(m, &path, 1, &o, &ev, &st, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(st.rows, 11);
    CHECK_EQ_INT(st.bad, 6);
    CHECK_EQ_INT(st.impressions, 5);
    CHECK_EQ_INT(st.conversions, 2);
    CHECK_EQ_INT(st.scen_impressions[0], 5);
    CHECK_EQ_INT(n, 7);
    CHECK_EQ_INT(st.n_reasons, RPL_REASONS);
    CHECK_EQ_STR(st.reasons[0], "test_replay_skip.csv:4: column 'scen': value \"9\" has no scenario in scenario.values");
    CHECK_EQ_STR(st.reasons[1], "test_replay_skip.csv:5: column 'purchase': conversion without a click (click is 0)");
    CHECK_EQ_STR(st.reasons[2], "test_replay_skip.csv:7: 5 columns, the header has 7");
    CHECK_EQ_STR(st.reasons[3], "test_replay_skip.csv:9: column 'click': \"y\" is not 0 or 1");
    CHECK_EQ_STR(st.reasons[4], "test_replay_skip.csv:10: column 'n1': \"inf\" is not a finite float");
    const m3_impression *im = find_imp(ev, n, "test_replay_skip.csv:8");
    CHECK_EQ_INT(im->ts_ms, T0 + 60); /* row index 6: bad rows keep their place in time */
    check_order(ev, n, DELAY);
    free(ev);
    /* without skip_bad the first bad row stops it, after the rows before it */
    n = replay_all(m, &path, 1, NULL, &ev, &st, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_STR(err, "test_replay_skip.csv:4: column 'scen': value \"9\" has no scenario in scenario.values");
    CHECK_EQ_INT(st.impressions, 2);
    CHECK_EQ_INT(st.bad, 0);
    free(ev);
    rpl_map_destroy(m);
}

/* ---- the tool ---- */

#define REPLAY M3_BINARY_DIR "/m3rec-replay"
#define MAP(name) M3_SOURCE_DIR "/config/" name

/* Run m3rec-replay with the given arguments; *out and *errs get its stdout and stderr. */
static int run_replay(char **out, char **errs, ...) {
    char *argv[32] = {REPLAY};
    int n = 1;
    va_list ap;
    va_start(ap, errs);
    for (char *a; (a = va_arg(ap, char *)) != NULL && n < 31;) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    pid_t pid = proc_spawn(argv, "test_replay_tool.out", "test_replay_tool.err");
    int rc = proc_wait(pid, clk_mono_ms() + 30000, "m3rec-replay");
    *out = proc_read_file("test_replay_tool.out", NULL);
    *errs = proc_read_file("test_replay_tool.err", NULL);
    CHECK_MSG(*out && *errs, "m3rec-replay left no output files");
    return rc;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void test_tool(void) {
    char *out, *errs;
    char *ae = (char *)data("aliexpress/torchrechub_aliexpress_train_sample.csv");
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", MAP("replay-aliexpress.properties"), "--check", ae, NULL), 0);
    CHECK_CONTAINS(out, "m3rec-replay: 100 rows from 1 file: 100 impressions (60 clicks), 2 conversions, "
                        "0 bad rows skipped; checked 102 messages\n");
    CHECK_CONTAINS(out, "m3rec-replay: scenario us: 100 impressions, 60 clicks, 2 conversions -> m3rec.events.us\n");
    CHECK_CONTAINS(out, "event time 2026-01-01T00:00:00.000Z .. 2026-01-01T00:10:00.290Z; to continue the clock "
                        "in another run: --map time.start.ms=1767225601000\n");
    CHECK_EQ_STR(errs, "");
    free(out), free(errs);

    /* a worker configuration that lacks the scenario and the features: warnings */
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", MAP("replay-aliexpress.properties"), "--config",
                            M3_SOURCE_DIR "/config/demo.properties", "--check", ae, NULL), 0);
    CHECK_CONTAINS(errs, "m3rec-replay: warning: the worker's scenarios (home,search,product) lack 'us': "
                         "it would not read m3rec.events.us\n");
    CHECK_CONTAINS(errs, "m3rec-replay: warning: the worker's features.user_num lacks 'numerical_1', 'numerical_2', "
                         "'numerical_3', 'numerical_4', ... (23 of 23 mapped fields): it would ignore them\n");
    free(out), free(errs);
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", MAP("replay-aliexpress.properties"), "--map",
                            "scenario.constant=nl", "--print-worker-config", NULL), 0);
    CHECK_EQ_INT(strncmp(out, "topic.prefix=m3rec\nscenarios=nl\nfeatures.user_cat=categorical_1,", 63), 0);
    free(out), free(errs);

    /* bad data: exit 1 and the message; --skip-bad: exit 0 and the count */
    write_file("test_replay_small.properties",
               "scenario.column=scen\nscenario.values=1:a,2:b\nuser.column=uid\nitem.column=iid\n"
               "click.column=click\nconversion.column=purchase\nfeatures.user_cat=c1:cat1\n"
               "features.item_num=n1:num1\n");
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", "test_replay_small.properties", "--check",
                            "test_replay_skip.csv", NULL), 1);
    CHECK_EQ_STR(errs, "m3rec-replay: test_replay_skip.csv:4: column 'scen': value \"9\" has no scenario in "
                       "scenario.values\n");
    free(out), free(errs);
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", "test_replay_small.properties", "--check", "--skip-bad",
                            "test_replay_skip.csv", NULL), 0);
    CHECK_CONTAINS(out, "m3rec-replay: 11 rows from 1 file: 5 impressions (2 clicks), 2 conversions, "
                        "6 bad rows skipped; checked 7 messages\n");
    CHECK_CONTAINS(out, "m3rec-replay: skipped 6 bad rows; the first 5:\n"
                        "  test_replay_skip.csv:4: column 'scen': value \"9\" has no scenario in scenario.values\n"
                        "  test_replay_skip.csv:5: column 'purchase': conversion without a click (click is 0)\n");
    free(out), free(errs);
    /* mapping and usage errors: exit 2 */
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", "test_replay_map2.properties", "--check", ae, NULL), 2);
    CHECK_EQ_STR(errs, "m3rec-replay: test_replay_map2.properties:3: 'bogus line' is not a key=value line\n");
    free(out), free(errs);
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", MAP("replay-aliexpress.properties"), "--map",
                            "scenario.column=search_id", "--check", ae, NULL), 2);
    CHECK_EQ_STR(errs, "m3rec-replay: " MAP("replay-aliexpress.properties") ":10: scenario.constant and "
                       "scenario.column (--map) are both set; keep one\n");
    free(out), free(errs);
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", MAP("replay-aliexpress.properties"), ae, NULL), 2);
    CHECK_CONTAINS(errs, "give --bootstrap HOST:PORT (or kafka.bootstrap.servers), --out FILE or --check");
    free(out), free(errs);
}

/* --out: m3rec-sim's framing; every record decodes, keyed by the user id */
static void test_tool_out(void) {
    char *out, *errs;
    char *raw = (char *)data("ali_ccp/paddlerec_esmm_small_raw.txt");
    CHECK_EQ_INT(run_replay(&out, &errs, "--mapping", MAP("replay-aliccp-raw.properties"), "--out",
                            "test_replay.out", raw, NULL), 0);
    CHECK_CONTAINS(out, "10 rows from 1 file: 10 impressions (2 clicks), 1 conversions, 0 bad rows skipped; "
                        "wrote 11 messages\n");
    free(out), free(errs);
    size_t len;
    unsigned char *buf = (unsigned char *)proc_read_file("test_replay.out", &len);
    CHECK(buf);
    char reason[CODEC_REASON_MAX];
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    int k = 0;
    m3_event ev;
    for (size_t at = 0; at < len; k++) {
        const char *topic = (const char *)buf + at;
        CHECK_EQ_STR(topic, "m3rec.events.pos1");
        at += strlen(topic) + 1;
        uint32_t klen = be32(buf + at);
        CHECK_EQ_INT(klen, 2);
        CHECK(memcmp(buf + at + 4, "12", 2) == 0);
        at += 4 + klen;
        uint32_t vlen = be32(buf + at);
        at += 4;
        CHECK(at + vlen <= len);
        CHECK_MSG(codec_decode(cd, buf + at, vlen, &ev, reason, sizeof reason) == 0, "record %d: %s", k, reason);
        at += vlen;
        if (k < 10) {
            char id[64];
            snprintf(id, sizeof id, "paddlerec_esmm_small_raw.txt:%d", k + 1);
            CHECK_EQ_INT(ev.type, M3_EV_IMPRESSION);
            CHECK_EQ_STR(ev.u.imp.impression_id, id);
            CHECK_EQ_INT(ev.u.imp.user_id, 12);
        } else {
            CHECK_EQ_INT(ev.type, M3_EV_CONVERSION);
            CHECK_EQ_STR(ev.u.conv.conversion_id, "paddlerec_esmm_small_raw.txt:1:conv");
            CHECK_EQ_INT(ev.u.conv.item_id, 6);
        }
        m3_event_clear(&ev);
    }
    CHECK_EQ_INT(k, 11);
    codec_destroy(cd);
    free(buf);
}

/* ---- end to end: samples -> embedded broker -> m3rec-worker -> predictions ---- */

typedef struct {
    const char *prefix;            /* topic prefix of this dataset's run */
    const char *mapping;           /* a config/ file name */
    const char *files[3];
    int n_files;
    rpl_map *map;
    char ids[256][M3_ID_MAX];      /* the impression ids replayed */
    int n_imp, n_conv;
    int seen[256];
    pid_t worker;
    char report[128];
} e2e_set;

static void e2e_prepare(e2e_set *e) {
    e->map = shipped(e->mapping);
    char kv[128];
    snprintf(kv, sizeof kv, "topic.prefix=%s", e->prefix);
    CHECK(rpl_map_set(e->map, kv, "--map", 0, err, sizeof err) == 0);
    m3_event *ev;
    rpl_stats st;
    int rc, n = replay_all(e->map, e->files, e->n_files, NULL, &ev, &st, &rc);
    CHECK_MSG(rc == 0, "%s", err);
    for (int i = 0; i < n; i++)
        if (ev[i].type == M3_EV_IMPRESSION) {
            CHECK(e->n_imp < 256);
            memcpy(e->ids[e->n_imp++], ev[i].u.imp.impression_id, M3_ID_MAX);
        }
    e->n_conv = (int)st.conversions;
    free(ev);
}

static pid_t e2e_replay(const e2e_set *e, const char *bootstrap) {
    char kv[128], mapping[512];
    snprintf(kv, sizeof kv, "topic.prefix=%s", e->prefix);
    snprintf(mapping, sizeof mapping, "%s/config/%s", M3_SOURCE_DIR, e->mapping);
    char *argv[16] = {REPLAY, "--mapping", mapping, "--map", kv, "--bootstrap", (char *)bootstrap};
    int n = 7;
    for (int i = 0; i < e->n_files; i++) argv[n++] = (char *)e->files[i];
    argv[n] = NULL;
    char log[128];
    snprintf(log, sizeof log, "test_replay_%s_replay.log", e->prefix);
    return proc_spawn(argv, log, log);
}

/* The worker, configured from the mapping's own settings (scenarios, feature names). */
static void e2e_start_worker(e2e_set *e, const char *bootstrap) {
    static char sets[2][16][4096];
    static int which;
    char (*set)[4096] = sets[which++];
    char *argv[64] = {M3_BINARY_DIR "/m3rec-worker"};
    int n = 1, k = 0;
    char *s = rpl_map_worker_settings(e->map);
    for (char *save = NULL, *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        snprintf(set[k], sizeof set[k], "%s", l);
        argv[n++] = "--set";
        argv[n++] = set[k++];
    }
    free(s);
    snprintf(set[k], sizeof set[k], "kafka.bootstrap.servers=%s", bootstrap);
    argv[n++] = "--set";
    argv[n++] = set[k++];
    snprintf(set[k], sizeof set[k], "kafka.group.id=replay-%s", e->prefix);
    argv[n++] = "--set";
    argv[n++] = set[k++];
    static char *fixed[] = {"--set", "worker.exit.idle.ms=2500", "--set", "metrics.progress.ms=0",
                            "--set", "batch.size=64"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) argv[n++] = fixed[i];
    snprintf(e->report, sizeof e->report, "test_replay_%s_report.json", e->prefix);
    remove(e->report);
    argv[n++] = "--report";
    argv[n++] = e->report;
    argv[n] = NULL;
    char log[128];
    snprintf(log, sizeof log, "test_replay_%s_worker.log", e->prefix);
    e->worker = proc_spawn(argv, log, log);
}

static void e2e_check_report(const e2e_set *e) {
    char *text = proc_read_file(e->report, NULL);
    CHECK_MSG(text, "cannot read %s", e->report);
    json_node *j = json_parse(text, err, sizeof err);
    CHECK_MSG(j, "%s: %s", e->report, err);
    CHECK_EQ_INT(json_number(json_get(j, "counters.impressions"), -1), e->n_imp);
    CHECK_EQ_INT(json_number(json_get(j, "counters.events"), -1), e->n_imp + e->n_conv);
    CHECK_EQ_INT(json_number(json_get(j, "counters.conversions"), -1), e->n_conv);
    CHECK_EQ_INT(json_number(json_get(j, "counters.late_conversions"), -1), 0);
    CHECK_EQ_INT(json_number(json_get(j, "counters.unmatched_conversions"), -1), 0);
    CHECK_EQ_INT(json_number(json_get(j, "counters.dlq"), -1), 0);
    CHECK_EQ_INT(json_number(json_get(j, "counters.predictions"), -1), e->n_imp);
    fprintf(stderr, "test_replay: %s: worker counted %d impressions, %d conversions; prequential AUC ctr %.3f "
            "(meaningless on so few rows)\n", e->prefix, e->n_imp, e->n_conv,
            json_number(json_get(j, "overall.ctr.auc"), 0));
    json_free(j);
    free(text);
}

static void test_e2e(void) {
    int64_t t0 = clk_mono_ms();
    e2e_set sets[2] = {
        {.prefix = "rx", .mapping = "replay-aliexpress.properties", .n_files = 2,
         .files = {data("aliexpress/torchrechub_aliexpress_train_sample.csv"),
                   data("aliexpress/torchrechub_aliexpress_test_sample.csv")}},
        {.prefix = "rc", .mapping = "replay-aliccp.properties", .n_files = 3,
         .files = {data("ali_ccp/torchrechub_ali_ccp_train_sample.csv"),
                   data("ali_ccp/torchrechub_ali_ccp_val_sample.csv"),
                   data("ali_ccp/torchrechub_ali_ccp_test_sample.csv")}},
    };
    static const char *topics[] = {"rx.events.us", "rx.requests", "rx.predictions", "rx.dlq",
                                   "rc.events.pos1", "rc.events.pos2", "rc.events.pos3", "rc.requests",
                                   "rc.predictions", "rc.dlq"};
    kio_mock *mock = kio_mock_new(2, topics, 10, err, sizeof err);
    CHECK_MSG(mock, "%s", err);
    const char *bs = kio_mock_bootstraps(mock);
    pid_t replays[2];
    for (int i = 0; i < 2; i++) {
        e2e_prepare(&sets[i]);
        replays[i] = e2e_replay(&sets[i], bs);
    }
    for (int i = 0; i < 2; i++) {
        int rc = proc_wait(replays[i], clk_mono_ms() + 30000, "m3rec-replay");
        CHECK_MSG(rc == 0, "m3rec-replay exited with %d (see test_replay_%s_replay.log)", rc, sets[i].prefix);
    }
    CHECK_EQ_INT(sets[0].n_imp, 120);
    CHECK_EQ_INT(sets[0].n_conv, 4);
    CHECK_EQ_INT(sets[1].n_imp, 200);
    CHECK_EQ_INT(sets[1].n_conv, 3);
    fprintf(stderr, "test_replay: replayed into the embedded broker in %.1f s\n", (double)(clk_mono_ms() - t0) / 1000);
    for (int i = 0; i < 2; i++) e2e_start_worker(&sets[i], bs);
    for (int i = 0; i < 2; i++) {
        char what[64];
        snprintf(what, sizeof what, "m3rec-worker (%s)", sets[i].prefix);
        int rc = proc_wait(sets[i].worker, clk_mono_ms() + 60000, what);
        CHECK_MSG(rc == 0, "%s exited with %d (see test_replay_%s_worker.log)", what, rc, sets[i].prefix);
    }
    fprintf(stderr, "test_replay: workers done at %.1f s\n", (double)(clk_mono_ms() - t0) / 1000);
    for (int i = 0; i < 2; i++) e2e_check_report(&sets[i]);

    /* every replayed impression has a Prediction on its prefix's predictions topic */
    const char *out_topics[] = {"rx.predictions", "rc.predictions"};
    kio_prop cprops[] = {{"bootstrap.servers", bs}, {"group.id", "replay-check"}};
    kio_consumer *c = kio_consumer_new(cprops, 2, out_topics, 2, err, sizeof err);
    CHECK_MSG(c, "%s", err);
    codec *cd = codec_new(err, sizeof err);
    CHECK_MSG(cd, "%s", err);
    int want = sets[0].n_imp + sets[1].n_imp, got = 0;
    int64_t deadline = clk_mono_ms() + 20000;
    while (got < want && clk_mono_ms() < deadline) {
        rd_kafka_message_t *msgs[256];
        int n = kio_consumer_poll(c, msgs, 256, 200, err, sizeof err);
        CHECK_MSG(n >= 0, "poll: %s", err);
        for (int i = 0; i < n; i++) {
            m3_event ev;
            char reason[CODEC_REASON_MAX];
            CHECK_MSG(codec_decode(cd, msgs[i]->payload, msgs[i]->len, &ev, reason, sizeof reason) == 0, "%s", reason);
            CHECK_EQ_INT(ev.type, M3_EV_PREDICTION);
            const m3_prediction *p = &ev.u.pred;
            CHECK(p->p_ctr > 0 && p->p_ctr < 1 && p->p_cvr > 0 && p->p_cvr < 1);
            e2e_set *e = strcmp(rd_kafka_topic_name(msgs[i]->rkt), "rx.predictions") == 0 ? &sets[0] : &sets[1];
            char key[32];
            snprintf(key, sizeof key, "%" PRId64, p->user_id);
            CHECK(msgs[i]->key_len == strlen(key) && memcmp(msgs[i]->key, key, msgs[i]->key_len) == 0);
            int k = 0;
            while (k < e->n_imp && strcmp(e->ids[k], p->id) != 0) k++;
            CHECK_MSG(k < e->n_imp, "prediction for unknown id '%s'", p->id);
            if (!e->seen[k]++) got++;
            rd_kafka_message_destroy(msgs[i]);
        }
    }
    kio_consumer_close(c);
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < sets[s].n_imp; k++) CHECK_MSG(sets[s].seen[k], "no prediction for %s", sets[s].ids[k]);
    CHECK_EQ_INT(got, want);
    fprintf(stderr, "test_replay: end to end: %d impressions replayed, all predicted, in %.1f s\n", want,
            (double)(clk_mono_ms() - t0) / 1000);
    codec_destroy(cd);
    for (int i = 0; i < 2; i++) rpl_map_destroy(sets[i].map);
    kio_mock_destroy(mock);
}

/* conversion.delay: a log-normal draw per converted row, the same on every replay, the
 * events still in event-time order; fixed:D is conversion.delay.ms=D; a bad spec is
 * refused with what is expected; the worker warning counts the share past its window. */
static void test_delay_distribution(void) {
    rpl_map *m = small_map();
    CHECK(rpl_map_set(m, "time.rows.per.sec=1", "t", 1, err, sizeof err) == 0);
    CHECK_MSG(rpl_map_set(m, "conversion.delay=lognormal:median=1h,sigma=1", "t", 2, err,
                          sizeof err) == 0, "%s", err);
    const char *path = "test_replay_delay.csv";
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs(HDR, f);
    for (int i = 0; i < 2000; i++) fprintf(f, "1,1,%d,8,1,5,0.5\n", i);
    CHECK(fclose(f) == 0);
    const char *paths[] = {path};
    m3_event *ev, *ev2;
    rpl_stats st;
    int rc, n = replay_all(m, paths, 1, NULL, &ev, &st, &rc);
    CHECK_MSG(rc == 0, "%s", err);
    CHECK_EQ_INT(n, 4000);
    int64_t *d = calloc(2000, sizeof *d);
    int k = 0, past = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0) {
            int64_t a = ev[i - 1].type == M3_EV_IMPRESSION ? ev[i - 1].u.imp.ts_ms : ev[i - 1].u.conv.ts_ms;
            int64_t b = ev[i].type == M3_EV_IMPRESSION ? ev[i].u.imp.ts_ms : ev[i].u.conv.ts_ms;
            CHECK(a <= b);
        }
        if (ev[i].type != M3_EV_CONVERSION) continue;
        const m3_impression *im = find_imp(ev, i, ev[i].u.conv.impression_id);
        CHECK(im);
        d[k] = ev[i].u.conv.ts_ms - im->ts_ms;
        past += d[k] > 4 * 3600000;   /* ln 4 = 1.39 sigmas: 8.3 % */
        k++;
    }
    CHECK_EQ_INT(k, 2000);
    int below = 0;
    for (int i = 0; i < k; i++) below += d[i] < 3600000;
    CHECK_MSG(below > 900 && below < 1100, "%d of 2000 below the median", below);
    CHECK_MSG(past > 120 && past < 220, "%d of 2000 past 4 h", past);
    int n2 = replay_all(m, paths, 1, NULL, &ev2, &st, &rc);
    CHECK_EQ_INT(n2, n);
    for (int i = 0; i < n; i++) {
        CHECK(ev[i].type == ev2[i].type);
        if (ev[i].type == M3_EV_CONVERSION) {
            CHECK_EQ_STR(ev[i].u.conv.impression_id, ev2[i].u.conv.impression_id);
            CHECK(ev[i].u.conv.ts_ms == ev2[i].u.conv.ts_ms);
        }
    }
    free(ev2);
    m3_cfg cfg;
    cfg_defaults(&cfg);
    char warn[1024];
    CHECK(rpl_map_set(m, "conversion.delay=lognormal:median=2h,sigma=1", "t", 3, err, sizeof err) == 0);
    CHECK(rpl_map_compare_worker(m, &cfg, warn, sizeof warn) >= 1);
    CHECK_CONTAINS(warn, "conversion.delay puts 76% of the conversions after the worker's "
                         "join.window.ms=3600000: most would be late");
    /* fixed:15 is conversion.delay.ms=15 */
    CHECK(rpl_map_set(m, "conversion.delay=fixed:15", "t", 4, err, sizeof err) == 0);
    free(ev);
    n = replay_all(m, paths, 1, NULL, &ev, &st, &rc);
    check_order(ev, n, 15);
    free(ev);
    free(d);
    cfg_free(&cfg);
    rpl_map_destroy(m);
    remove(path);
    CHECK_EQ_STR(map_error("conversion.delay=lognormal:median=2h"),
                 "t.properties:9: conversion.delay=lognormal:median=2h: conversion delay "
                 "'lognormal:median=2h': expected lognormal:median=DURATION,sigma=X (e.g. "
                 "lognormal:median=2h,sigma=1.5; sigma 0..10) or fixed:DURATION (e.g. "
                 "fixed:10m; units ms s m h d)");
}

int main(void) {
    test_delay_distribution();
    test_shipped_mappings();
    test_mapping_errors();
    test_samples();
    test_sample_values_aliccp();
    test_sample_values_raw();
    test_sample_values_aliexpress();
    test_bad_data();
    test_skip_bad();
    test_tool();
    test_tool_out();
    test_e2e();
    return 0;
}
