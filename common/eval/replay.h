/* replay.h - dataset replay: rows of public CTR/CVR datasets become Impression and
 * Conversion events, in event-time order.
 *
 * A mapping (a properties file, config/replay-*.properties; reference in docs/replay.md)
 * says which columns hold the scenario, the user and item ids, the click and conversion
 * labels and the features, and under which field names the features go into the
 * Impression's maps. Two input formats:
 *  - csv: comma-separated with a header row naming the columns, no quoting (Ali-CCP as
 *    preprocessed by torch-rechub, AliExpress);
 *  - aliccp_raw: the raw Ali-CCP lines `sample_id,click,conversion,field:feasign,...`,
 *    no header. The three leading columns are named sample_id, click and conversion;
 *    the other "columns" are field ids (`101`, `150_14`). A field may repeat in a line
 *    (multi-valued fields): the first occurrence is used. A field absent from a line is
 *    a missing feature (left out of the map); an absent id, scenario or label is an error.
 * The datasets carry no timestamps: the event time of data row k (0-based, counted over
 * all files of a replay, bad rows included) is time.start.ms + k * 1000 / time.rows.per.sec.
 * A converted row (conversion label 1) also yields a Conversion conversion.delay.ms later;
 * rpl_next() merges the two streams so events come out in event-time order.
 * A row with conversion=1 and click=0 is bad data: the contract attributes conversions
 * to clicked impressions only (Ali-CCP's purchase=1 implies click=1).
 * Library code: nothing exits; errors are returned with errstr = "where: message", where
 * `where` is "path:line" of the data or mapping file (or "--map" for an override). */
#ifndef M3_REPLAY_H
#define M3_REPLAY_H
#include <stddef.h>
#include <stdint.h>
#include "config/cfg.h"
#include "base/event.h"

#define RPL_MAX_SCEN 16       /* distinct scenario names (the worker's M3_MAX_SCEN) */
#define RPL_MAX_VALUES 64     /* entries in scenario.values */
#define RPL_COL_MAX 64        /* bytes in a column name, including the NUL */
#define RPL_REASONS 5         /* bad-row reasons kept for the summary */
#define RPL_REASON_MAX 256    /* bytes in one kept reason */
#define RPL_ID_BASE_MAX 48    /* id.prefix + file basename < this; with ":<line>:conv" for
                                 lines below 10^10 an id fits in M3_ID_MAX */

typedef enum { RPL_CSV = 0, RPL_ALICCP_RAW = 1 } rpl_format;

/* The five feature maps of an Impression, in the order of the mapping keys
 * features.user_cat, features.item_cat, features.ctx_cat, features.user_num,
 * features.item_num (and of the worker's keys of the same names). */
enum { RPL_USER_CAT, RPL_ITEM_CAT, RPL_CTX_CAT, RPL_USER_NUM, RPL_ITEM_NUM, RPL__NMAPS };

/* ---- the mapping ---- */

typedef struct rpl_map rpl_map;

/* A mapping with the defaults (format csv, topic.prefix m3rec, time.start.ms
 * 1767225600000 = 2026-01-01T00:00:00Z, time.rows.per.sec 100, conversion.delay.ms
 * 600000, no columns). Returns NULL when out of memory. */
rpl_map *rpl_map_new(void);

/* Free a mapping; NULL is a no-op. */
void rpl_map_destroy(rpl_map *m);

/* Read a properties file into m, line by line (`key=value`, `#`/`!` comments, blank
 * lines; a later setting of a key replaces the earlier one). Returns 0, or -1 with
 * errstr = "path:line: message" ("path: <strerror>" when unreadable); the lines before
 * the bad one stay applied. */
int rpl_map_load(rpl_map *m, const char *path, char *errstr, size_t errstr_size);
/* The same for a properties text in memory, named origin in messages (props_load_mem). */
int rpl_map_load_mem(rpl_map *m, const char *text, size_t len, const char *origin,
                     char *errstr, size_t errstr_size);

/* Apply one `key=value` setting; origin and line name it in errors ("origin:line: msg",
 * or "origin: msg" when line is 0, e.g. "--map", 0). Returns 0, or -1 with errstr
 * filled and m unchanged. */
int rpl_map_set(rpl_map *m, const char *key_eq_value, const char *origin, int line,
                char *errstr, size_t errstr_size);

/* Cross-key checks once everything is set: exactly one of scenario.column and
 * scenario.constant (scenario.values with the column only), exactly one of item.column
 * and item.constant, user.column, click.column and conversion.column present, at most
 * RPL_MAX_SCEN distinct scenario names, at most 62 categorical and 64 numeric fields in
 * all (the worker's slots). Returns 0, or -1 with errstr = "where: message" naming the
 * mapping file (and line when one key is to blame). */
int rpl_map_check(const rpl_map *m, char *errstr, size_t errstr_size);

/* The topic prefix, the format and the scenario names (distinct, in the order of
 * scenario.values, or the one constant) of a checked mapping. names[i] stay owned by m. */
const char *rpl_map_prefix(const rpl_map *m);
rpl_format rpl_map_format(const rpl_map *m);
int rpl_map_scenarios(const rpl_map *m, const char *names[RPL_MAX_SCEN]);

/* The worker settings this mapping's events need, one `key=value` per line: topic.prefix,
 * scenarios, features.user_cat .. features.item_num (field names in mapping order).
 * Returns a malloc'd string the caller frees, or NULL when out of memory. */
char *rpl_map_worker_settings(const rpl_map *m);

/* Compare a checked mapping with a worker configuration: a scenario the worker does not
 * consume, a different topic prefix, a mapped feature field the worker does not read,
 * and a conversion delay longer than the worker's join.window.ms. Writes one warning per
 * line into out (truncated to out_size) and returns the number of warnings (0 = they
 * match). */
int rpl_map_compare_worker(const rpl_map *m, const m3_cfg *cfg, char *out, size_t out_size);

/* ---- the replay ---- */

typedef struct {
    int skip_bad;       /* 1: count a bad row and go on; 0: a bad row stops the replay */
    int64_t max_rows;   /* stop after this many data rows (all files); 0 = no limit */
} rpl_opts;

typedef struct {
    int64_t rows;                         /* data rows read, bad ones included */
    int64_t impressions, clicks, conversions;   /* events returned so far */
    int64_t bad;                          /* rows skipped as bad (skip_bad) */
    int n_scen;                           /* the mapping's scenarios, as rpl_map_scenarios */
    char scen[RPL_MAX_SCEN][M3_NAME_MAX];
    int64_t scen_impressions[RPL_MAX_SCEN], scen_clicks[RPL_MAX_SCEN],
            scen_conversions[RPL_MAX_SCEN];
    int64_t first_ts_ms, last_ts_ms;      /* event-time span of the events returned */
    int64_t next_row_ts_ms;               /* the time the next row would get: time.start.ms
                                             for a run that continues this one's clock */
    int n_reasons;                        /* the first RPL_REASONS bad-row reasons */
    char reasons[RPL_REASONS][RPL_REASON_MAX];
} rpl_stats;

typedef struct rpl_replay rpl_replay;

/* Prepare a replay of n_paths data files, read in order, with a checked mapping m (which
 * must outlive the replay). Opens every file now. Impression ids are
 * "<id.prefix><file basename>:<line>" and conversion ids that plus ":conv"; two files
 * with the same basename, or id.prefix + basename longer than RPL_ID_BASE_MAX bytes, are
 * refused. Returns the replay, or NULL with errstr filled ("path: <strerror>", ...). */
rpl_replay *rpl_new(const rpl_map *m, const char *const *paths, int n_paths,
                    const rpl_opts *opts, char *errstr, size_t errstr_size);

/* The same for one data file already in memory, data[0..len) (a fuzzer's input), named
 * name (its basename makes the impression ids; errors start with it). data must outlive
 * the replay. */
rpl_replay *rpl_new_mem(const rpl_map *m, const char *name, const void *data, size_t len,
                        const rpl_opts *opts, char *errstr, size_t errstr_size);

/* Free a replay and close its files; NULL is a no-op. */
void rpl_destroy(rpl_replay *r);

/* The next event in event-time order (ties: the conversion first): an Impression, or a
 * Conversion of an earlier converted impression. *ev is overwritten. Returns 1, 0 at the
 * end (every conversion has been returned), or -1 with errstr filled:
 *  - a bad row without skip_bad: "path:line: ..." e.g.
 *    `data.csv:7: column 'click': "x" is not 0 or 1`;
 *  - a header that lacks a mapped column, an unreadable file, an id too long.
 * After -1, every further call returns -1 with the same error. */
int rpl_next(rpl_replay *r, m3_event *ev, char *errstr, size_t errstr_size);

/* Counters so far. */
void rpl_get_stats(const rpl_replay *r, rpl_stats *st);

/* Compare a replay's event-time span (st: its counters, at the end) with a worker
 * configuration: a span shorter than join.window.ms leaves every click that does not
 * convert pending. Writes the warning (one line, truncated to out_size) into out and
 * returns 1, or returns 0 with out empty. */
int rpl_span_warning(const rpl_stats *st, const m3_cfg *cfg, char *out, size_t out_size);

#endif
