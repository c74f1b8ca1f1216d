/* event.h - the in-memory form of m3rec's messages (see schemas/ for the wire contract).
 *
 * Fixed-capacity structs: decoding never allocates for impressions, conversions and
 * predictions, and a message that exceeds a capacity is rejected (to the DLQ) with a
 * reason rather than truncated. ScoreRequest candidates are the one owned array. */
#ifndef M3_EVENT_H
#define M3_EVENT_H
#include <stdbool.h>
#include <stdint.h>

#define M3_ID_MAX 64      /* bytes in an id string, including the NUL */
#define M3_NAME_MAX 32    /* bytes in a scenario or feature name, including the NUL */
#define M3_MAP_MAX 32     /* entries in one feature map */
#define M3_CAND_MAX 1024  /* candidates in one score request */

typedef struct { char name[M3_NAME_MAX]; int64_t value; } m3_catkv;
typedef struct { char name[M3_NAME_MAX]; float value; } m3_numkv;
typedef struct { int n; m3_catkv kv[M3_MAP_MAX]; } m3_catmap; /* Avro map<long> */
typedef struct { int n; m3_numkv kv[M3_MAP_MAX]; } m3_nummap; /* Avro map<float> */

typedef enum {
    M3_EV_NONE = 0,
    M3_EV_IMPRESSION,
    M3_EV_CONVERSION,
    M3_EV_SCORE_REQUEST,
    M3_EV_PREDICTION,
} m3_ev_type;

typedef struct {
    char impression_id[M3_ID_MAX];
    int64_t ts_ms;                  /* event time, ms since the epoch */
    char scenario[M3_NAME_MAX];
    int64_t user_id, item_id;
    m3_catmap user_cat, item_cat, ctx_cat;
    m3_nummap user_num, item_num;
    bool clicked;
} m3_impression;

typedef struct {
    char conversion_id[M3_ID_MAX];
    char impression_id[M3_ID_MAX];  /* the impression it is attributed to */
    int64_t ts_ms;
    char scenario[M3_NAME_MAX];
    int64_t user_id, item_id;
} m3_conversion;

typedef struct {
    int64_t item_id;
    m3_catmap item_cat;
    m3_nummap item_num;
} m3_candidate;

typedef struct {
    char request_id[M3_ID_MAX];
    int64_t ts_ms;
    char scenario[M3_NAME_MAX];
    int64_t user_id;
    m3_catmap user_cat, ctx_cat;
    m3_nummap user_num;
    int n_cands;
    m3_candidate *cands;            /* owned; freed by m3_event_clear() */
} m3_score_request;

typedef struct {
    char id[M3_ID_MAX];             /* impression_id or request_id it answers */
    int64_t ts_ms;                  /* event time of what it answers */
    char scenario[M3_NAME_MAX];
    int64_t user_id, item_id;
    float p_ctr, p_cvr, p_ctcvr;
    int64_t model_version;
} m3_prediction;

typedef struct {
    m3_ev_type type;
    union {
        m3_impression imp;
        m3_conversion conv;
        m3_score_request req;
        m3_prediction pred;
    } u;
} m3_event;

#endif
