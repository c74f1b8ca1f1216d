/* replay.c - dataset replay: a mapping file, CSV and raw Ali-CCP readers, synthesized
 * event time and the conversion queue that keeps the output in event-time order. */
#include "eval/replay.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/props.h"
#include "eval/sim.h"

#define RPL__WHERE_MAX 300                       /* "path:line" of a mapping setting */
#define RPL__SLOTS_MAX (5 + RPL__NMAPS * M3_MAP_MAX) /* distinct columns a mapping reads */
#define RPL__HASH 1024                           /* raw-format field table, > 2 x slots */
#define RPL__SHOW 40                             /* bytes of a bad value shown in errors */
#define RPL__DAY_MS (24LL * 3600 * 1000)

/* ---- the mapping ---- */

typedef enum {
    K_FORMAT, K_PREFIX, K_SCEN_COL, K_SCEN_CONST, K_SCEN_VALUES, K_USER_COL, K_ITEM_COL,
    K_ITEM_CONST, K_CLICK_COL, K_CONV_COL, K_USER_CAT, K_ITEM_CAT, K_CTX_CAT, K_USER_NUM,
    K_ITEM_NUM, K_START_MS, K_ROWS_PER_SEC, K_DELAY_MS, K_ID_PREFIX, K_DELAY, K__COUNT
} rpl__key;

/* Key names; features.* are in the order of the RPL_*_CAT / _NUM map indices. */
static const char *const rpl__keys[K__COUNT] = {
    "format", "topic.prefix", "scenario.column", "scenario.constant", "scenario.values",
    "user.column", "item.column", "item.constant", "click.column", "conversion.column",
    "features.user_cat", "features.item_cat", "features.ctx_cat", "features.user_num",
    "features.item_num", "time.start.ms", "time.rows.per.sec", "conversion.delay.ms",
    "id.prefix", "conversion.delay",
};

typedef struct {
    char col[RPL_COL_MAX];    /* the column (csv) or field id (aliccp_raw) */
    char name[M3_NAME_MAX];   /* the key in the Impression's map */
} rpl__feat;

typedef struct {
    rpl__feat f[M3_MAP_MAX];
    int n;
} rpl__feats;

typedef struct {
    char value[RPL_COL_MAX];  /* the cell text, e.g. "1" */
    char name[M3_NAME_MAX];   /* the scenario name, e.g. "pos1" */
} rpl__scenval;

struct rpl_map {
    rpl_format format;
    char prefix[M3_NAME_MAX * 2];
    char scen_col[RPL_COL_MAX], scen_const[M3_NAME_MAX];
    rpl__scenval values[RPL_MAX_VALUES];
    int n_values;
    char user_col[RPL_COL_MAX], item_col[RPL_COL_MAX];
    int64_t item_const;
    char click_col[RPL_COL_MAX], conv_col[RPL_COL_MAX];
    rpl__feats feats[RPL__NMAPS];
    int64_t start_ms;
    double rows_per_sec;
    sim_delay delay;                      /* conversion.delay (conversion.delay.ms: fixed) */
    char id_prefix[RPL_ID_BASE_MAX];
    char where[K__COUNT][RPL__WHERE_MAX]; /* where each key was last set; "" = default */
    char source[RPL__WHERE_MAX];          /* the last file loaded, for errors without a line */
};

/* 1..max-1 characters of A-Z a-z 0-9 _ . - (plus `extra`): the names the worker accepts. */
static int rpl__is_name(const char *s, size_t max, const char *extra) {
    size_t n = strlen(s);
    if (n == 0 || n >= max) return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_.-", *p) && !(extra && strchr(extra, *p)))
            return 0;
    return 1;
}

/* A column name: 1..RPL_COL_MAX-1 printable bytes (UTF-8 allowed), no comma. */
static int rpl__is_col(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= RPL_COL_MAX) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == ',') return 0;
    return 1;
}

/* The next comma-separated entry of *s (cut in place), or NULL after the last one.
 * Unlike strtok, empty entries come out as "" so that `a,,b` can be refused. */
static char *rpl__next_entry(char **s) {
    char *e = *s;
    if (!e) return NULL;
    char *c = strchr(e, ',');
    if (c) {
        *c = 0;
        *s = c + 1;
    } else {
        *s = NULL;
    }
    return e;
}

/* Parse a list `col[:name], ...` into *out. Returns 0, or -1 with msg filled. */
static int rpl__parse_feats(char *v, rpl__feats *out, char *msg, size_t n) {
    out->n = 0;
    if (!*v) return 0;
    for (char *rest = v, *e = rpl__next_entry(&rest); e; e = rpl__next_entry(&rest)) {
        e = props_trim(e);
        if (!*e) {
            err_set(msg, n, "empty entry");
            return -1;
        }
        if (out->n == M3_MAP_MAX) {
            err_set(msg, n, "more than %d fields; an Impression map holds at most %d", M3_MAP_MAX, M3_MAP_MAX);
            return -1;
        }
        char *colon = strrchr(e, ':');
        char *name = e;
        if (colon) {
            *colon = 0;
            name = props_trim(colon + 1);
            e = props_trim(e);
        }
        if (!rpl__is_col(e)) {
            err_set(msg, n, "'%s' is not a column name (1..%d bytes, no control characters)", e, RPL_COL_MAX - 1);
            return -1;
        }
        if (!rpl__is_name(name, M3_NAME_MAX, NULL)) {
            err_set(msg, n, "field name '%s' of column '%s' is not a name (1..%d characters of A-Z a-z 0-9 _ . -; "
                     "rename it with '%s:NAME')", name, e, M3_NAME_MAX - 1, e);
            return -1;
        }
        for (int i = 0; i < out->n; i++)
            if (strcmp(out->f[i].name, name) == 0) {
                err_set(msg, n, "field name '%s' is listed twice", name);
                return -1;
            }
        rpl__feat *f = &out->f[out->n++];
        snprintf(f->col, sizeof f->col, "%s", e);
        snprintf(f->name, sizeof f->name, "%s", name);
    }
    return 0;
}

/* Parse `value:name, ...` into values. Returns the count, or -1 with msg filled. */
static int rpl__parse_values(char *v, rpl__scenval *values, char *msg, size_t n) {
    int k = 0;
    if (!*v) {
        err_set(msg, n, "needs value:scenario entries, e.g. 1:home,2:search");
        return -1;
    }
    for (char *rest = v, *e = rpl__next_entry(&rest); e; e = rpl__next_entry(&rest)) {
        e = props_trim(e);
        if (!*e) {
            err_set(msg, n, "empty entry");
            return -1;
        }
        char *colon = strrchr(e, ':');
        if (!colon) {
            err_set(msg, n, "entry '%s' is not value:scenario", e);
            return -1;
        }
        *colon = 0;
        char *name = props_trim(colon + 1);
        e = props_trim(e);
        if (!rpl__is_col(e)) {
            err_set(msg, n, "'%s' is not a column value (1..%d bytes)", e, RPL_COL_MAX - 1);
            return -1;
        }
        if (!rpl__is_name(name, M3_NAME_MAX, NULL)) {
            err_set(msg, n, "scenario '%s' is not a name (1..%d characters of A-Z a-z 0-9 _ . -)",
                     name, M3_NAME_MAX - 1);
            return -1;
        }
        if (k == RPL_MAX_VALUES) {
            err_set(msg, n, "more than %d entries", RPL_MAX_VALUES);
            return -1;
        }
        for (int i = 0; i < k; i++)
            if (strcmp(values[i].value, e) == 0) {
                err_set(msg, n, "value '%s' is listed twice", e);
                return -1;
            }
        snprintf(values[k].value, sizeof values[k].value, "%s", e);
        snprintf(values[k].name, sizeof values[k].name, "%s", name);
        k++;
    }
    return k;
}

rpl_map *rpl_map_new(void) {
    rpl_map *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->format = RPL_CSV;
    snprintf(m->prefix, sizeof m->prefix, "m3rec");
    m->start_ms = 1767225600000LL; /* 2026-01-01T00:00:00Z */
    m->rows_per_sec = 100;
    m->delay = (sim_delay){SIM_DELAY_FIXED, 600000.0, 0.0};
    snprintf(m->source, sizeof m->source, "mapping");
    return m;
}

void rpl_map_destroy(rpl_map *m) { free(m); }

/* format=csv|aliccp_raw */
static int rpl__apply_format(rpl_map *m, const char *v, char *msg, size_t n) {
    if (strcmp(v, "csv") == 0) m->format = RPL_CSV;
    else if (strcmp(v, "aliccp_raw") == 0) m->format = RPL_ALICCP_RAW;
    else {
        err_set(msg, n, "format=%s is not a known format (csv|aliccp_raw)", v);
        return -1;
    }
    return 0;
}

/* topic.prefix and scenario.constant: names the worker accepts. */
static int rpl__apply_name(rpl_map *m, int k, const char *v, char *msg, size_t n) {
    char *dst = k == K_PREFIX ? m->prefix : m->scen_const;
    size_t cap = k == K_PREFIX ? sizeof m->prefix : sizeof m->scen_const;
    if (!rpl__is_name(v, cap, NULL)) {
        err_set(msg, n, "%s=%s is not a name (1..%zu characters of A-Z a-z 0-9 _ . -)",
                 rpl__keys[k], v, cap - 1);
        return -1;
    }
    snprintf(dst, cap, "%s", v);
    return 0;
}

static int rpl__apply_values(rpl_map *m, char *v, char *msg, size_t n) {
    rpl__scenval tmp[RPL_MAX_VALUES];
    char inner[256];
    int c = rpl__parse_values(v, tmp, inner, sizeof inner);
    if (c < 0) {
        err_set(msg, n, "scenario.values: %s", inner);
        return -1;
    }
    memcpy(m->values, tmp, (size_t)c * sizeof tmp[0]);
    m->n_values = c;
    return 0;
}

/* The *.column keys. */
static int rpl__apply_column(rpl_map *m, int k, const char *v, char *msg, size_t n) {
    if (!rpl__is_col(v)) {
        err_set(msg, n, "%s=%s is not a column name (1..%d bytes, no comma or control characters)",
                 rpl__keys[k], v, RPL_COL_MAX - 1);
        return -1;
    }
    char *dst = k == K_SCEN_COL ? m->scen_col : k == K_USER_COL ? m->user_col
              : k == K_ITEM_COL ? m->item_col : k == K_CLICK_COL ? m->click_col : m->conv_col;
    snprintf(dst, RPL_COL_MAX, "%s", v);
    return 0;
}

/* The features.* keys. */
static int rpl__apply_feats(rpl_map *m, int k, char *v, char *msg, size_t n) {
    rpl__feats tmp;
    char inner[256];
    if (rpl__parse_feats(v, &tmp, inner, sizeof inner) != 0) {
        err_set(msg, n, "%s: %s", rpl__keys[k], inner);
        return -1;
    }
    m->feats[k - K_USER_CAT] = tmp;
    return 0;
}

/* time.start.ms, time.rows.per.sec, conversion.delay.ms: the synthesized event time. */
static int rpl__apply_time(rpl_map *m, int k, const char *v, char *msg, size_t n) {
    int64_t i64 = 0;
    if (k == K_START_MS) {
        if (props_parse_i64(v, &i64) != 0 || i64 < 0 || i64 > 253402300799999LL) {
            err_set(msg, n, "time.start.ms=%s is not an integer in 0..253402300799999 (ms since the epoch)", v);
            return -1;
        }
        m->start_ms = i64;
        return 0;
    }
    if (k == K_ROWS_PER_SEC) {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (end == v || *end || !isfinite(d) || d <= 0 || d > 1e9) {
            err_set(msg, n, "time.rows.per.sec=%s is not a number in >0..1e9", v);
            return -1;
        }
        m->rows_per_sec = d;
        return 0;
    }
    if (props_parse_i64(v, &i64) != 0 || i64 < 0 || i64 > 30 * RPL__DAY_MS) {
        err_set(msg, n, "conversion.delay.ms=%s is not an integer in 0..%lld (30 days)", v,
                 30 * RPL__DAY_MS);
        return -1;
    }
    m->delay = (sim_delay){SIM_DELAY_FIXED, (double)i64, 0.0};
    return 0;
}

/* conversion.delay: a distribution (sim_delay_parse), drawn per converted row. */
static int rpl__apply_delay(rpl_map *m, const char *v, char *msg, size_t n) {
    sim_delay d;
    char e[256];
    if (sim_delay_parse(v, &d, e, sizeof e) != 0) {
        err_set(msg, n, "conversion.delay=%s: %s", v, e);
        return -1;
    }
    if (d.median_ms > 30.0 * RPL__DAY_MS) {
        err_set(msg, n, "conversion.delay=%s: the delay (median) is above 30 days", v);
        return -1;
    }
    m->delay = d;
    return 0;
}

/* item.constant and id.prefix. */
static int rpl__apply_ids(rpl_map *m, int k, const char *v, char *msg, size_t n) {
    if (k == K_ITEM_CONST) {
        int64_t i64;
        if (props_parse_i64(v, &i64) != 0) {
            err_set(msg, n, "item.constant=%s is not a 64-bit integer", v);
            return -1;
        }
        m->item_const = i64;
        return 0;
    }
    if (*v && !rpl__is_name(v, RPL_ID_BASE_MAX, "/:")) {
        err_set(msg, n, "id.prefix=%s is not 0..%d characters of A-Z a-z 0-9 _ . - / :", v,
                 RPL_ID_BASE_MAX - 1);
        return -1;
    }
    snprintf(m->id_prefix, sizeof m->id_prefix, "%s", v);
    return 0;
}

/* Apply `value` to key k of m. Returns 0, or -1 with msg (without the where: part). */
static int rpl__apply(rpl_map *m, int k, char *v, char *msg, size_t n) {
    switch (k) {
    case K_FORMAT: return rpl__apply_format(m, v, msg, n);
    case K_PREFIX: case K_SCEN_CONST: return rpl__apply_name(m, k, v, msg, n);
    case K_SCEN_VALUES: return rpl__apply_values(m, v, msg, n);
    case K_SCEN_COL: case K_USER_COL: case K_ITEM_COL: case K_CLICK_COL: case K_CONV_COL:
        return rpl__apply_column(m, k, v, msg, n);
    case K_USER_CAT: case K_ITEM_CAT: case K_CTX_CAT: case K_USER_NUM: case K_ITEM_NUM:
        return rpl__apply_feats(m, k, v, msg, n);
    case K_START_MS: case K_ROWS_PER_SEC: case K_DELAY_MS: return rpl__apply_time(m, k, v, msg, n);
    case K_DELAY: return rpl__apply_delay(m, v, msg, n);
    case K_ITEM_CONST: case K_ID_PREFIX: return rpl__apply_ids(m, k, v, msg, n);
    }
    return -1;
}

/* Why key is not one of the mapping's, with the key most likely meant. */
static void rpl__unknown(const char *key, const char *where, char *errstr, size_t errstr_size) {
    const char *hint = props_closest(key, rpl__keys, K__COUNT, 3);
    if (hint)
        err_set(errstr, errstr_size, "%s: unknown key '%s' (did you mean '%s'?)", where, key, hint);
    else
        err_set(errstr, errstr_size, "%s: unknown key '%s' (see docs/replay.md)", where, key);
}

int rpl_map_set(rpl_map *m, const char *key_eq_value, const char *origin, int line,
                char *errstr, size_t errstr_size) {
    char where[RPL__WHERE_MAX], text[4096], msg[512];
    props_where(where, sizeof where, origin, line);
    if (strlen(key_eq_value) >= sizeof text) {
        err_set(errstr, errstr_size, "%s: line longer than %zu bytes", where, sizeof text - 1);
        return -1;
    }
    snprintf(text, sizeof text, "%s", key_eq_value);
    char *key, *v;
    if (props_split(text, &key, &v) != 0) {
        err_set(errstr, errstr_size, "%s: '%s' is not a key=value line", where, key);
        return -1;
    }
    int k = 0;
    while (k < K__COUNT && strcmp(rpl__keys[k], key) != 0) k++;
    if (k == K__COUNT) {
        rpl__unknown(key, where, errstr, errstr_size);
        return -1;
    }
    /* an empty value of a one-of key unsets it, so an override can switch sides */
    if (!*v && (k == K_SCEN_COL || k == K_SCEN_CONST || k == K_ITEM_COL || k == K_ITEM_CONST)) {
        m->where[k][0] = 0;
        return 0;
    }
    if (rpl__apply(m, k, v, msg, sizeof msg) != 0) {
        err_set(errstr, errstr_size, "%s: %s", where, msg);
        return -1;
    }
    snprintf(m->where[k], sizeof m->where[k], "%s", where);
    return 0;
}

static int rpl__load_line(void *m, const char *line, const char *origin, int lineno,
                          char *errstr, size_t errstr_size) {
    return rpl_map_set(m, line, origin, lineno, errstr, errstr_size);
}

int rpl_map_load(rpl_map *m, const char *path, char *errstr, size_t errstr_size) {
    /* errors without a line (rpl_map_check) name the last file loaded */
    snprintf(m->source, sizeof m->source, "%s", path);
    return props_load(path, rpl__load_line, m, errstr, errstr_size);
}

int rpl_map_load_mem(rpl_map *m, const char *text, size_t len, const char *origin,
                     char *errstr, size_t errstr_size) {
    snprintf(m->source, sizeof m->source, "%s", origin);
    return props_load_mem(text, len, origin, rpl__load_line, m, errstr, errstr_size);
}

static int rpl__set(const rpl_map *m, int k) { return m->where[k][0] != 0; }

int rpl_map_scenarios(const rpl_map *m, const char *names[RPL_MAX_SCEN]) {
    if (m->where[K_SCEN_CONST][0]) {
        names[0] = m->scen_const;
        return 1;
    }
    int n = 0;
    for (int i = 0; i < m->n_values; i++) {
        int seen = 0;
        for (int j = 0; j < n && !seen; j++) seen = strcmp(names[j], m->values[i].name) == 0;
        if (!seen && n < RPL_MAX_SCEN) names[n++] = m->values[i].name;
    }
    return n;
}

int rpl_map_check(const rpl_map *m, char *errstr, size_t errstr_size) {
    const char *src = m->source;
    if (rpl__set(m, K_SCEN_COL) == rpl__set(m, K_SCEN_CONST)) {
        if (rpl__set(m, K_SCEN_COL))
            err_set(errstr, errstr_size, "%s: scenario.constant and scenario.column (%s) are both set; keep one",
                     m->where[K_SCEN_CONST], m->where[K_SCEN_COL]);
        else
            err_set(errstr, errstr_size, "%s: set scenario.column (with scenario.values) or scenario.constant", src);
        return -1;
    }
    if (rpl__set(m, K_SCEN_CONST) && rpl__set(m, K_SCEN_VALUES)) {
        err_set(errstr, errstr_size, "%s: scenario.values applies to scenario.column, not scenario.constant",
                 m->where[K_SCEN_VALUES]);
        return -1;
    }
    if (rpl__set(m, K_SCEN_COL) && !rpl__set(m, K_SCEN_VALUES)) {
        err_set(errstr, errstr_size, "%s: scenario.column needs scenario.values (value:scenario, ...)",
                 m->where[K_SCEN_COL]);
        return -1;
    }
    if (rpl__set(m, K_SCEN_COL)) {
        int n = 0;
        const char *names[RPL_MAX_VALUES];
        for (int i = 0; i < m->n_values; i++) {
            int seen = 0;
            for (int j = 0; j < n && !seen; j++) seen = strcmp(names[j], m->values[i].name) == 0;
            if (!seen) names[n++] = m->values[i].name;
        }
        if (n > RPL_MAX_SCEN) {
            err_set(errstr, errstr_size, "%s: scenario.values names %d scenarios; the worker takes at most %d",
                     m->where[K_SCEN_VALUES], n, RPL_MAX_SCEN);
            return -1;
        }
    }
    if (rpl__set(m, K_ITEM_COL) == rpl__set(m, K_ITEM_CONST)) {
        if (rpl__set(m, K_ITEM_COL))
            err_set(errstr, errstr_size, "%s: item.constant and item.column (%s) are both set; keep one",
                     m->where[K_ITEM_CONST], m->where[K_ITEM_COL]);
        else
            err_set(errstr, errstr_size, "%s: set item.column or item.constant", src);
        return -1;
    }
    static const int required[] = {K_USER_COL, K_CLICK_COL, K_CONV_COL};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!rpl__set(m, required[i])) {
            err_set(errstr, errstr_size, "%s: %s is not set", src, rpl__keys[required[i]]);
            return -1;
        }
    int n_cat = m->feats[RPL_USER_CAT].n + m->feats[RPL_ITEM_CAT].n + m->feats[RPL_CTX_CAT].n;
    int n_num = m->feats[RPL_USER_NUM].n + m->feats[RPL_ITEM_NUM].n;
    if (2 + n_cat > M3_MAX_CAT) {
        err_set(errstr, errstr_size, "%s: %d categorical fields plus the user and item ids exceed the worker's %d slots",
                 src, n_cat, M3_MAX_CAT);
        return -1;
    }
    if (n_num > M3_MAX_NUM) {
        err_set(errstr, errstr_size, "%s: %d numeric fields exceed the worker's %d slots", src, n_num,
                 M3_MAX_NUM);
        return -1;
    }
    return 0;
}

const char *rpl_map_prefix(const rpl_map *m) { return m->prefix; }
rpl_format rpl_map_format(const rpl_map *m) { return m->format; }

char *rpl_map_worker_settings(const rpl_map *m) {
    buf b = {0};
    const char *names[RPL_MAX_SCEN];
    int n = rpl_map_scenarios(m, names);
    buf_printf(&b, "topic.prefix=%s\nscenarios=", m->prefix);
    for (int i = 0; i < n; i++) buf_printf(&b, "%s%s", i ? "," : "", names[i]);
    for (int k = 0; k < RPL__NMAPS; k++) {
        buf_printf(&b, "\n%s=", rpl__keys[K_USER_CAT + k]);
        for (int i = 0; i < m->feats[k].n; i++)
            buf_printf(&b, "%s%s", i ? "," : "", m->feats[k].f[i].name);
    }
    buf_putc(&b, '\n');
    return buf_take(&b);
}

int rpl_map_compare_worker(const rpl_map *m, const m3_cfg *cfg, char *out, size_t out_size) {
    buf b = {0};
    int n_warn = 0;
    const char *names[RPL_MAX_SCEN];
    int n = rpl_map_scenarios(m, names);
    for (int i = 0; i < n; i++) {
        if (cfg_scenario_index(cfg, names[i]) >= 0) continue;
        n_warn++;
        buf_printf(&b, "the worker's scenarios (");
        for (int s = 0; s < cfg->scenarios.n; s++) buf_printf(&b, "%s%s", s ? "," : "", cfg->scenarios.names[s]);
        buf_printf(&b, ") lack '%s': it would not read %s.events.%s\n", names[i], m->prefix, names[i]);
    }
    if (strcmp(cfg->topic_prefix, m->prefix) != 0) {
        n_warn++;
        buf_printf(&b, "the worker's topic.prefix is '%s', the mapping's '%s'\n", cfg->topic_prefix, m->prefix);
    }
    const cfg_list *lists[RPL__NMAPS] = {&cfg->user_cat, &cfg->item_cat, &cfg->ctx_cat, &cfg->user_num,
                                         &cfg->item_num};
    for (int k = 0; k < RPL__NMAPS; k++) {
        int missing = 0;
        for (int i = 0; i < m->feats[k].n; i++) {
            int found = 0;
            for (int j = 0; j < lists[k]->n && !found; j++)
                found = strcmp(lists[k]->names[j], m->feats[k].f[i].name) == 0;
            if (found) continue;
            if (missing == 0) buf_printf(&b, "the worker's %s lacks ", rpl__keys[K_USER_CAT + k]);
            if (missing < 4) buf_printf(&b, "%s'%s'", missing ? ", " : "", m->feats[k].f[i].name);
            missing++;
        }
        if (missing) {
            n_warn++;
            buf_printf(&b, "%s (%d of %d mapped fields): it would ignore them\n", missing > 4 ? ", ..." : "",
                     missing, m->feats[k].n);
        }
    }
    double late = sim_delay_tail(&m->delay, cfg->join_window_ms);
    if (m->delay.kind == SIM_DELAY_FIXED && late > 0) {
        n_warn++;
        buf_printf(&b, "conversion.delay.ms=%" PRId64 " exceeds the worker's join.window.ms=%" PRId64
                 ": every conversion would be late\n", (int64_t)m->delay.median_ms,
                 cfg->join_window_ms);
    } else if (late >= 0.5) {
        n_warn++;
        buf_printf(&b, "conversion.delay puts %.0f%% of the conversions after the worker's "
                   "join.window.ms=%" PRId64 ": most would be late\n", 100.0 * late,
                   cfg->join_window_ms);
    }
    if (out && out_size) snprintf(out, out_size, "%s", b.data ? b.data : "");
    buf_free(&b);
    return n_warn;
}

int rpl_span_warning(const rpl_stats *st, const m3_cfg *cfg, char *out, size_t out_size) {
    int64_t span = st->impressions ? st->last_ts_ms - st->first_ts_ms : 0;
    if (!st->impressions || span >= cfg->join_window_ms) {
        if (out && out_size) out[0] = '\0';
        return 0;
    }
    snprintf(out, out_size, "the stream spans %.1f min of event time, less than the worker's "
             "join.window.ms (%.1f min): a click that does not convert settles only when its "
             "window closes, so none of this stream's does; their CTCVR labels stay pending "
             "(untrained, not in the AUC). Replay more rows, more event time per row "
             "(time.rows.per.sec) or a shorter window\n",
             (double)span / 60000.0, (double)cfg->join_window_ms / 60000.0);
    return 1;
}

/* ---- the replay ---- */

typedef struct {
    char *path;
    const char *base;   /* basename, inside path */
    FILE *f;
} rpl__file;

/* A conversion due, with its scenario and queue number. */
typedef struct {
    m3_conversion c;
    int scen;
    uint64_t seq;
} rpl__due;

struct rpl_replay {
    const rpl_map *m;
    rpl_opts opts;
    rpl__file *files;
    int n_files, cur;          /* cur: the file being read */
    int64_t line;              /* lines read from the current file */
    int header_done;
    /* slots: the distinct columns the mapping reads; cell[s] is slot s's text in a row */
    int n_slots;
    const char *slot_col[RPL__SLOTS_MAX];
    int slot_idx[RPL__SLOTS_MAX];       /* csv: column index; raw: 0..2 positional, else -1 */
    const char *cell[RPL__SLOTS_MAX];
    int s_scen, s_user, s_item, s_click, s_conv;  /* -1: a constant */
    int s_feat[RPL__NMAPS][M3_MAP_MAX];
    int value_scen[RPL_MAX_VALUES];     /* scenario.values entry -> stats scenario index */
    short hash[RPL__HASH];              /* raw: field id -> slot + 1 (0 = not read) */
    int n_header;                       /* csv: columns in the header */
    char **fields;
    int fields_cap;
    char *buf;
    size_t buf_cap;
    /* the look-ahead impression and the queue of conversions due */
    m3_impression next;
    int next_scen, next_converted, have_next, eof;
    rpl__due *q;                        /* min-heap of conversions due, on (ts, seq) */
    size_t q_cap, q_len;
    uint64_t q_seq;                     /* conversions queued so far: ties in queue order */
    rpl_stats st;
    char reason[RPL_REASON_MAX + 64];
    char fatal[1024];                   /* sticky error */
};

/* The slot of a raw-format field id of length n, or -1. */
static int rpl__raw_lookup(const rpl_replay *r, const char *s, size_t n) {
    for (uint32_t i = hash_fnv32(s, n) & (RPL__HASH - 1);; i = (i + 1) & (RPL__HASH - 1)) {
        int v = r->hash[i];
        if (v == 0) return -1;
        const char *c = r->slot_col[v - 1];
        if (strncmp(c, s, n) == 0 && c[n] == 0) return v - 1;
    }
}

/* The slot reading column col, added on first use. */
static int rpl__slot(rpl_replay *r, const char *col) {
    for (int s = 0; s < r->n_slots; s++)
        if (strcmp(r->slot_col[s], col) == 0) return s;
    int s = r->n_slots++;
    r->slot_col[s] = col;
    r->slot_idx[s] = -1;
    if (r->m->format == RPL_ALICCP_RAW) {
        static const char *const pos[3] = {"sample_id", "click", "conversion"};
        for (int p = 0; p < 3; p++)
            if (strcmp(col, pos[p]) == 0) r->slot_idx[s] = p;
        if (r->slot_idx[s] < 0) {
            uint32_t i = hash_fnv32(col, strlen(col)) & (RPL__HASH - 1);
            while (r->hash[i]) i = (i + 1) & (RPL__HASH - 1);
            r->hash[i] = (short)(s + 1);
        }
    }
    return s;
}

/* rpl_new, with data[0..len) as the content of the one file when data is not NULL: read
 * through a memory stream, by the same row reader as a file (rpl_new_mem). */
static rpl_replay *rpl__new(const rpl_map *m, const char *const *paths, int n_paths,
                            const rpl_opts *opts, const void *data, size_t len,
                            char *errstr, size_t errstr_size) {
    if (n_paths < 1) {
        err_set(errstr, errstr_size, "no data files");
        return NULL;
    }
    rpl_replay *r = calloc(1, sizeof *r);
    if (!r || !(r->files = calloc((size_t)n_paths, sizeof *r->files))) {
        free(r);
        err_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    r->m = m;
    if (opts) r->opts = *opts;
    r->n_files = n_paths;
    for (int i = 0; i < n_paths; i++) {
        rpl__file *f = &r->files[i];
        f->path = strdup(paths[i]);
        if (!f->path) {
            err_set(errstr, errstr_size, "out of memory");
            rpl_destroy(r);
            return NULL;
        }
        const char *slash = strrchr(f->path, '/');
        f->base = slash ? slash + 1 : f->path;
        if (!*f->base || strlen(m->id_prefix) + strlen(f->base) >= RPL_ID_BASE_MAX) {
            err_set(errstr, errstr_size,
                     "%s: impression ids are id.prefix + file name + :line, and '%s%s' is not 1..%d bytes "
                     "(rename the file or shorten id.prefix)", f->path, m->id_prefix, f->base, RPL_ID_BASE_MAX - 1);
            rpl_destroy(r);
            return NULL;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(r->files[j].base, f->base) == 0) {
                err_set(errstr, errstr_size, "%s: same file name as %s, so their impression ids would collide "
                         "(replay them in separate runs with different id.prefix)", f->path, r->files[j].path);
                rpl_destroy(r);
                return NULL;
            }
        f->f = data ? fmemopen((void *)(uintptr_t)data, len, "r") : fopen(f->path, "r");
        if (!f->f) {
            err_set(errstr, errstr_size, "%s: %s", f->path, strerror(errno));
            rpl_destroy(r);
            return NULL;
        }
    }
    /* slots, in a fixed order: labels, ids, scenario, then the features */
    r->s_click = rpl__slot(r, m->click_col);
    r->s_conv = rpl__slot(r, m->conv_col);
    r->s_user = rpl__slot(r, m->user_col);
    r->s_item = m->where[K_ITEM_COL][0] ? rpl__slot(r, m->item_col) : -1;
    r->s_scen = m->where[K_SCEN_COL][0] ? rpl__slot(r, m->scen_col) : -1;
    for (int k = 0; k < RPL__NMAPS; k++)
        for (int i = 0; i < m->feats[k].n; i++) r->s_feat[k][i] = rpl__slot(r, m->feats[k].f[i].col);
    /* stats scenarios and the scenario of each value */
    const char *names[RPL_MAX_SCEN];
    r->st.n_scen = rpl_map_scenarios(m, names);
    for (int s = 0; s < r->st.n_scen; s++) snprintf(r->st.scen[s], M3_NAME_MAX, "%s", names[s]);
    for (int i = 0; i < m->n_values; i++)
        for (int s = 0; s < r->st.n_scen; s++)
            if (strcmp(m->values[i].name, names[s]) == 0) r->value_scen[i] = s;
    return r;
}

rpl_replay *rpl_new(const rpl_map *m, const char *const *paths, int n_paths,
                    const rpl_opts *opts, char *errstr, size_t errstr_size) {
    return rpl__new(m, paths, n_paths, opts, NULL, 0, errstr, errstr_size);
}

rpl_replay *rpl_new_mem(const rpl_map *m, const char *name, const void *data, size_t len,
                        const rpl_opts *opts, char *errstr, size_t errstr_size) {
    static const char empty[1];
    return rpl__new(m, &name, 1, opts, data ? data : empty, data ? len : 0, errstr, errstr_size);
}

void rpl_destroy(rpl_replay *r) {
    if (!r) return;
    for (int i = 0; i < r->n_files; i++) {
        if (r->files[i].f) fclose(r->files[i].f);
        free(r->files[i].path);
    }
    free(r->files);
    free(r->fields);
    free(r->buf);
    free(r->q);
    free(r);
}

/* The event time of data row k (0-based over the run). */
static int64_t rpl__row_ts(const rpl_map *m, int64_t k) {
    return m->start_ms + (int64_t)((double)k * 1000.0 / m->rows_per_sec);
}

void rpl_get_stats(const rpl_replay *r, rpl_stats *st) {
    *st = r->st;
    st->next_row_ts_ms = rpl__row_ts(r->m, r->st.rows);
}

/* Split s in place at commas into r->fields. Returns the count, or -1 (out of memory). */
static int rpl__split(rpl_replay *r, char *s) {
    int n = 0;
    for (;;) {
        if (n == r->fields_cap) {
            int cap = r->fields_cap ? 2 * r->fields_cap : 128;
            char **p = realloc(r->fields, (size_t)cap * sizeof *p);
            if (!p) return -1;
            r->fields = p;
            r->fields_cap = cap;
        }
        r->fields[n++] = s;
        char *c = strchr(s, ',');
        if (!c) return n;
        *c = 0;
        s = c + 1;
    }
}

/* Fill r->reason with "path:line: message"; returns 0 (a bad row). */
static int rpl__bad(rpl_replay *r, const char *fmt, ...) {
    int k = snprintf(r->reason, sizeof r->reason, "%s:%" PRId64 ": ", r->files[r->cur].path, r->line);
    if (k < 0 || (size_t)k >= sizeof r->reason) return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason + k, sizeof r->reason - (size_t)k, fmt, ap);
    va_end(ap);
    return 0;
}

/* A value for an error message: at most RPL__SHOW bytes, then "...". */
static const char *rpl__show(const char *v, char *out, size_t n) {
    if (strlen(v) <= RPL__SHOW) snprintf(out, n, "%s", v);
    else snprintf(out, n, "%.*s...", RPL__SHOW, v);
    return out;
}

/* "column 'x'" for csv and the raw format's leading columns, "field 'x'" for raw tokens. */
static const char *rpl__what(const rpl_replay *r, int s, char *out, size_t n) {
    int field = r->m->format == RPL_ALICCP_RAW && r->slot_idx[s] < 0;
    snprintf(out, n, "%s '%s'", field ? "field" : "column", r->slot_col[s]);
    return out;
}

/* Parse a 0/1 label of slot s into *out. Returns 1, or 0 with the reason filled. */
static int rpl__label(rpl_replay *r, int s, int *out) {
    const char *v = r->cell[s];
    char w[RPL_COL_MAX + 16], sh[RPL__SHOW + 8];
    if (!v || !*v) return rpl__bad(r, "%s: missing label", rpl__what(r, s, w, sizeof w));
    if (strcmp(v, "0") == 0 || strcmp(v, "1") == 0) {
        *out = v[0] == '1';
        return 1;
    }
    return rpl__bad(r, "%s: \"%s\" is not 0 or 1", rpl__what(r, s, w, sizeof w), rpl__show(v, sh, sizeof sh));
}

/* Parse slot s as an int64 into *out. Returns 1, 0 with the reason filled, or 2 when the
 * cell is absent (raw format) and `optional`. */
static int rpl__int(rpl_replay *r, int s, int64_t *out, int optional) {
    const char *v = r->cell[s];
    char w[RPL_COL_MAX + 16], sh[RPL__SHOW + 8];
    if (!v) {
        if (optional) return 2;
        return rpl__bad(r, "%s is missing", rpl__what(r, s, w, sizeof w));
    }
    int rc = props_parse_i64(v, out);
    if (rc == 0) return 1;
    return rpl__bad(r, "%s: \"%s\" is %s", rpl__what(r, s, w, sizeof w), rpl__show(v, sh, sizeof sh),
                    rc == -2 ? "out of range for a 64-bit integer" : "not an integer");
}

/* Parse slot s as a finite float into *out. Returns 1, 0 with the reason filled, or 2
 * when the cell is absent. */
static int rpl__float(rpl_replay *r, int s, float *out) {
    const char *v = r->cell[s];
    char w[RPL_COL_MAX + 16], sh[RPL__SHOW + 8];
    if (!v) return 2;
    char *end;
    double d = *v && !isspace((unsigned char)*v) ? strtod(v, &end) : 0;
    if (!*v || isspace((unsigned char)*v) || *end)
        return rpl__bad(r, "%s: \"%s\" is not a number", rpl__what(r, s, w, sizeof w), rpl__show(v, sh, sizeof sh));
    if (!isfinite(d) || fabs(d) > FLT_MAX)
        return rpl__bad(r, "%s: \"%s\" is not a finite float", rpl__what(r, s, w, sizeof w),
                        rpl__show(v, sh, sizeof sh));
    *out = (float)d;
    return 1;
}

/* Turn the cells of the current row into r->next. Returns 1, or 0 (bad row, reason
 * filled), or -1 (fatal, r->fatal filled). */
static int rpl__build(rpl_replay *r, int64_t row_index) {
    const rpl_map *m = r->m;
    m3_impression *im = &r->next;
    int click, conv, rc;
    if (!rpl__label(r, r->s_click, &click) || !rpl__label(r, r->s_conv, &conv)) return 0;
    if (conv && !click) {
        char w[RPL_COL_MAX + 16];
        return rpl__bad(r, "%s: conversion without a click (%s is 0)", rpl__what(r, r->s_conv, w, sizeof w),
                        m->click_col);
    }
    const char *scen;
    int scen_idx = 0;
    if (r->s_scen < 0) {
        scen = m->scen_const;
    } else {
        const char *v = r->cell[r->s_scen];
        char w[RPL_COL_MAX + 16], sh[RPL__SHOW + 8];
        if (!v) return rpl__bad(r, "%s is missing", rpl__what(r, r->s_scen, w, sizeof w));
        int i = 0;
        while (i < m->n_values && strcmp(m->values[i].value, v) != 0) i++;
        if (i == m->n_values)
            return rpl__bad(r, "%s: value \"%s\" has no scenario in scenario.values",
                            rpl__what(r, r->s_scen, w, sizeof w), rpl__show(v, sh, sizeof sh));
        scen = m->values[i].name;
        scen_idx = r->value_scen[i];
    }
    int64_t user, item = m->item_const;
    if ((rc = rpl__int(r, r->s_user, &user, 0)) != 1) return 0;
    if (r->s_item >= 0 && (rc = rpl__int(r, r->s_item, &item, 0)) != 1) return 0;
    im->user_cat.n = im->item_cat.n = im->ctx_cat.n = im->user_num.n = im->item_num.n = 0;
    m3_catmap *cats[3] = {&im->user_cat, &im->item_cat, &im->ctx_cat};
    m3_nummap *nums[2] = {&im->user_num, &im->item_num};
    for (int k = 0; k < RPL__NMAPS; k++)
        for (int i = 0; i < m->feats[k].n; i++) {
            int s = r->s_feat[k][i];
            if (k <= RPL_CTX_CAT) {
                int64_t v;
                if ((rc = rpl__int(r, s, &v, 1)) == 0) return 0;
                if (rc == 2) continue;
                m3_catkv *kv = &cats[k]->kv[cats[k]->n++];
                memcpy(kv->name, m->feats[k].f[i].name, M3_NAME_MAX);
                kv->value = v;
            } else {
                float v = 0;
                if ((rc = rpl__float(r, s, &v)) == 0) return 0;
                if (rc == 2) continue;
                m3_numkv *kv = &nums[k - RPL_USER_NUM]->kv[nums[k - RPL_USER_NUM]->n++];
                memcpy(kv->name, m->feats[k].f[i].name, M3_NAME_MAX);
                kv->value = v;
            }
        }
    int len = snprintf(im->impression_id, sizeof im->impression_id, "%s%s:%" PRId64, m->id_prefix,
                       r->files[r->cur].base, r->line);
    if (len < 0 || (size_t)len + 5 >= sizeof im->impression_id) { /* + ":conv" */
        snprintf(r->fatal, sizeof r->fatal, "%s:%" PRId64 ": impression id '%s...' is longer than %d bytes",
                 r->files[r->cur].path, r->line, im->impression_id, M3_ID_MAX - 6);
        return -1;
    }
    im->ts_ms = rpl__row_ts(m, row_index);
    snprintf(im->scenario, sizeof im->scenario, "%s", scen);
    im->user_id = user;
    im->item_id = item;
    im->clicked = click;
    r->next_converted = conv;
    r->next_scen = scen_idx;
    return 1;
}

/* Read the header of the current csv file. Returns 0, or -1 with r->fatal filled. */
static int rpl__header(rpl_replay *r, char *s) {
    const rpl__file *f = &r->files[r->cur];
    if (strncmp(s, "\xEF\xBB\xBF", 3) == 0) s += 3; /* a UTF-8 byte-order mark */
    int n = rpl__split(r, s);
    if (n < 0) {
        snprintf(r->fatal, sizeof r->fatal, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(r->fields[i], r->fields[j]) == 0) {
                snprintf(r->fatal, sizeof r->fatal, "%s:1: column '%s' appears twice in the header (columns %d and %d)",
                         f->path, r->fields[i], j + 1, i + 1);
                return -1;
            }
    for (int s_ = 0; s_ < r->n_slots; s_++) {
        int i = 0;
        while (i < n && strcmp(r->fields[i], r->slot_col[s_]) != 0) i++;
        if (i == n) {
            snprintf(r->fatal, sizeof r->fatal, "%s:1: the mapping's column '%s' is not in the header",
                     f->path, r->slot_col[s_]);
            return -1;
        }
        r->slot_idx[s_] = i;
    }
    r->n_header = n;
    r->header_done = 1;
    return 0;
}

/* Split the current line into cells. Returns 1, 0 (bad row, reason filled) or -1. */
static int rpl__cells(rpl_replay *r, char *s) {
    int n = rpl__split(r, s);
    if (n < 0) {
        snprintf(r->fatal, sizeof r->fatal, "out of memory");
        return -1;
    }
    if (r->m->format == RPL_CSV) {
        if (n == 1 && !*s) return rpl__bad(r, "empty line");
        if (n != r->n_header) return rpl__bad(r, "%d columns, the header has %d", n, r->n_header);
        for (int k = 0; k < r->n_slots; k++) r->cell[k] = r->fields[r->slot_idx[k]];
        return 1;
    }
    if (n == 1 && !*s) return rpl__bad(r, "empty line");
    if (n < 3) return rpl__bad(r, "%d columns, expected sample_id,click,conversion then field:feasign tokens", n);
    for (int k = 0; k < r->n_slots; k++) r->cell[k] = r->slot_idx[k] >= 0 ? r->fields[r->slot_idx[k]] : NULL;
    for (int i = 3; i < n; i++) {
        char *t = r->fields[i], *colon = strchr(t, ':');
        if (!colon || colon == t) {
            char sh[RPL__SHOW + 8];
            return rpl__bad(r, "token %d \"%s\" is not field:feasign", i + 1, rpl__show(t, sh, sizeof sh));
        }
        int k = rpl__raw_lookup(r, t, (size_t)(colon - t));
        if (k >= 0 && !r->cell[k]) r->cell[k] = colon + 1; /* the first occurrence wins */
    }
    return 1;
}

/* Read the next good row into r->next. Returns 1, 0 at the end of the data, or -1
 * (r->fatal filled). Bad rows fail the replay, or are counted when skip_bad. */
static int rpl__read(rpl_replay *r) {
    while (r->cur < r->n_files) {
        rpl__file *f = &r->files[r->cur];
        if (r->opts.max_rows > 0 && r->st.rows >= r->opts.max_rows) return 0;
        errno = 0;
        ssize_t len = getline(&r->buf, &r->buf_cap, f->f);
        if (len < 0) {
            if (ferror(f->f)) {
                snprintf(r->fatal, sizeof r->fatal, "%s: %s", f->path, strerror(errno ? errno : EIO));
                return -1;
            }
            if (r->m->format == RPL_CSV && !r->header_done) {
                snprintf(r->fatal, sizeof r->fatal, "%s: empty file, expected a header row", f->path);
                return -1;
            }
            fclose(f->f);
            f->f = NULL;
            r->cur++;
            r->line = 0;
            r->header_done = 0;
            continue;
        }
        r->line++;
        char *s = r->buf;
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r')) s[--len] = 0;
        if ((size_t)len != strlen(s)) {
            snprintf(r->fatal, sizeof r->fatal, "%s:%" PRId64 ": NUL byte in the line (not a text file?)",
                     f->path, r->line);
            return -1;
        }
        if (r->m->format == RPL_CSV && !r->header_done) {
            if (rpl__header(r, s) != 0) return -1;
            continue;
        }
        int64_t row_index = r->st.rows++;
        int rc = rpl__cells(r, s);
        if (rc == 1) rc = rpl__build(r, row_index);
        if (rc < 0) return -1;
        if (rc == 1) return 1;
        if (!r->opts.skip_bad) {
            snprintf(r->fatal, sizeof r->fatal, "%s", r->reason);
            return -1;
        }
        if (r->st.n_reasons < RPL_REASONS)
            snprintf(r->st.reasons[r->st.n_reasons++], RPL_REASON_MAX, "%.*s", RPL_REASON_MAX - 1, r->reason);
        r->st.bad++;
    }
    return 0;
}

/* The delay of impression id's conversion: a draw from the mapping's distribution with a
 * standard normal from the id's hash (Box-Muller), so a replay is the same every time. */
static int64_t rpl__delay(const rpl_map *m, const char *id) {
    if (m->delay.kind == SIM_DELAY_FIXED) return (int64_t)m->delay.median_ms;
    uint64_t h1 = hash_fin64(hash_fnv64_str(id)), h2 = hash_fin64(h1 ^ 0x9e3779b97f4a7c15ULL);
    double u1 = ((double)(h1 >> 11) + 0.5) / 9007199254740992.0;   /* (0, 1) */
    double u2 = (double)(h2 >> 11) / 9007199254740992.0;
    double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    int64_t d = sim_delay_draw(&m->delay, z);
    return d < 30 * RPL__DAY_MS ? d : 30 * RPL__DAY_MS;
}

static int rpl__due_before(const rpl__due *a, const rpl__due *b) {
    return a->c.ts_ms < b->c.ts_ms || (a->c.ts_ms == b->c.ts_ms && a->seq < b->seq);
}

/* Take the earliest due conversion off the heap (q_len > 0). */
static rpl__due rpl__pop(rpl_replay *r) {
    rpl__due top = r->q[0], last = r->q[--r->q_len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= r->q_len) break;
        if (c + 1 < r->q_len && rpl__due_before(&r->q[c + 1], &r->q[c])) c++;
        if (!rpl__due_before(&r->q[c], &last)) break;
        r->q[i] = r->q[c];
        i = c;
    }
    if (r->q_len) r->q[i] = last;
    return top;
}

/* Queue the conversion of r->next (a converted impression). Returns 0 or -1. */
static int rpl__enqueue(rpl_replay *r) {
    if (r->q_len == r->q_cap) {
        size_t cap = r->q_cap ? 2 * r->q_cap : 64;
        rpl__due *q = realloc(r->q, cap * sizeof *q);
        if (!q) {
            snprintf(r->fatal, sizeof r->fatal, "out of memory");
            return -1;
        }
        r->q = q;
        r->q_cap = cap;
    }
    rpl__due d;
    m3_conversion *c = &d.c;
    const m3_impression *im = &r->next;
    size_t idlen = strlen(im->impression_id); /* rpl__build left room for ":conv" */
    memcpy(c->conversion_id, im->impression_id, idlen);
    memcpy(c->conversion_id + idlen, ":conv", 6);
    memcpy(c->impression_id, im->impression_id, sizeof c->impression_id);
    c->ts_ms = im->ts_ms + rpl__delay(r->m, im->impression_id);
    memcpy(c->scenario, im->scenario, sizeof c->scenario);
    c->user_id = im->user_id;
    c->item_id = im->item_id;
    d.scen = r->next_scen;
    d.seq = r->q_seq++;
    size_t i = r->q_len++;
    for (; i > 0 && rpl__due_before(&d, &r->q[(i - 1) / 2]); i = (i - 1) / 2)
        r->q[i] = r->q[(i - 1) / 2];
    r->q[i] = d;
    return 0;
}

static void rpl__seen_ts(rpl_stats *st, int64_t ts) {
    if (st->impressions + st->conversions == 0) st->first_ts_ms = ts;
    if (ts > st->last_ts_ms) st->last_ts_ms = ts;
}

int rpl_next(rpl_replay *r, m3_event *ev, char *errstr, size_t errstr_size) {
    if (!r->fatal[0] && !r->have_next && !r->eof) {
        int rc = rpl__read(r);
        if (rc == 1) r->have_next = 1;
        else if (rc == 0) r->eof = 1;
    }
    if (r->fatal[0]) {
        err_set(errstr, errstr_size, "%s", r->fatal);
        return -1;
    }
    if (r->q_len && (!r->have_next || r->q[0].c.ts_ms <= r->next.ts_ms)) {
        rpl__due d = rpl__pop(r);
        ev->type = M3_EV_CONVERSION;
        ev->u.conv = d.c;
        int s = d.scen;
        rpl__seen_ts(&r->st, ev->u.conv.ts_ms);
        r->st.conversions++;
        r->st.scen_conversions[s]++;
        return 1;
    }
    if (!r->have_next) return 0;
    if (r->next_converted && rpl__enqueue(r) != 0) {
        err_set(errstr, errstr_size, "%s", r->fatal);
        return -1;
    }
    ev->type = M3_EV_IMPRESSION;
    ev->u.imp = r->next;
    r->have_next = 0;
    rpl__seen_ts(&r->st, ev->u.imp.ts_ms);
    r->st.impressions++;
    r->st.clicks += ev->u.imp.clicked;
    r->st.scen_impressions[r->next_scen]++;
    r->st.scen_clicks[r->next_scen] += ev->u.imp.clicked;
    return 1;
}
