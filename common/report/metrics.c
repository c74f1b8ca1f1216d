/* metrics.c - binned streaming AUC/log loss, log-scale latency histogram, RSS, scoreboard
 * with slices and the AUC-over-time timeline. */
#include "report/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/clock.h"

#define MET__NO_TS INT64_MIN   /* an add without event time */

/* ======================================================================== AUC */

static int met__auc_init(met_auc *a, int bits, int logit, char *errstr, size_t errstr_size) {
    memset(a, 0, sizeof *a);
    if (bits == 0) bits = MET_AUC_BITS;
    if (bits < 1 || bits > 24) {
        snprintf(errstr, errstr_size, "met_auc_init: bits %d out of range 1..24", bits);
        return -1;
    }
    a->bits = bits;
    a->logit = logit;
    a->nbins = 1u << bits;
    a->pos = calloc(a->nbins, sizeof *a->pos);
    a->neg = calloc(a->nbins, sizeof *a->neg);
    if (!a->pos || !a->neg) {
        snprintf(errstr, errstr_size, "met_auc_init: out of memory for %u bins", a->nbins);
        met_auc_free(a);
        return -1;
    }
    return 0;
}

int met_auc_init(met_auc *a, int bits, char *errstr, size_t errstr_size) {
    return met__auc_init(a, bits, 0, errstr, errstr_size);
}

int met_auc_init_logit(met_auc *a, int bits, char *errstr, size_t errstr_size) {
    return met__auc_init(a, bits, 1, errstr, errstr_size);
}

void met_auc_free(met_auc *a) {
    if (!a) return;
    free(a->pos);
    free(a->neg);
    memset(a, 0, sizeof *a);
}

void met_auc_reset(met_auc *a) {
    if (a->pos) memset(a->pos, 0, a->nbins * sizeof *a->pos);
    if (a->neg) memset(a->neg, 0, a->nbins * sizeof *a->neg);
    a->n = a->n_pos = a->n_nan = 0;
    a->sum_p = a->sum_ll = 0;
}

void met_auc_add(met_auc *a, double p, int y) {
    if (isnan(p)) { a->n_nan++; return; }
    if (p < 0) p = 0;
    if (p > 1) p = 1;
    /* the bin is monotone in p, which is all the bound needs */
    uint32_t b;
    if (a->logit) {
        double z = log(p) - log1p(-p);   /* -inf at 0, +inf at 1 */
        double x = (z - MET_LOGIT_MIN) * (a->nbins / (MET_LOGIT_MAX - MET_LOGIT_MIN));
        b = x <= 0 ? 0 : x >= a->nbins ? a->nbins - 1 : (uint32_t)x;
    } else {
        b = (uint32_t)(p * a->nbins);
    }
    if (b >= a->nbins) b = a->nbins - 1;
    uint32_t *cnt = y ? &a->pos[b] : &a->neg[b];
    if (*cnt != UINT32_MAX) (*cnt)++;
    double q = p < MET_LOGLOSS_EPS ? MET_LOGLOSS_EPS : p > 1 - MET_LOGLOSS_EPS ? 1 - MET_LOGLOSS_EPS : p;
    a->sum_ll -= y ? log(q) : log1p(-q);
    a->sum_p += p;
    a->n++;
    if (y) a->n_pos++;
}

double met_auc_value(const met_auc *a, double *bound) {
    /* P and N from the bins (not n/n_pos) so that a saturated bin stays consistent */
    double P = 0, N = 0, num = 0, ties = 0;
    for (uint32_t b = 0; b < a->nbins; b++) {
        double pb = a->pos[b], nb = a->neg[b];
        num += pb * (N + 0.5 * nb);   /* N = negatives in lower bins so far */
        ties += pb * nb;
        P += pb;
        N += nb;
    }
    if (P == 0 || N == 0) {
        if (bound) *bound = NAN;
        return NAN;
    }
    if (bound) *bound = 0.5 * ties / (P * N);
    return num / (P * N);
}

double met_auc_se(double a, double P, double N) {
    if (!(P > 0 && N > 0) || a != a) return NAN;
    double q1 = a / (2 - a), q2 = 2 * a * a / (1 + a);
    double v = (a * (1 - a) + (P - 1) * (q1 - a * a) + (N - 1) * (q2 - a * a)) / (P * N);
    return v > 0 ? sqrt(v) : 0;
}

double met_auc_logloss(const met_auc *a) { return a->n ? a->sum_ll / (double)a->n : NAN; }
double met_auc_mean_p(const met_auc *a) { return a->n ? a->sum_p / (double)a->n : NAN; }
double met_auc_rate(const met_auc *a) { return a->n ? (double)a->n_pos / (double)a->n : NAN; }

static uint32_t met__sat_add(uint32_t x, uint32_t y) {
    return x > UINT32_MAX - y ? UINT32_MAX : x + y;
}

int met_auc_merge(met_auc *dst, const met_auc *src) {
    if (dst->nbins != src->nbins || dst->logit != src->logit || !dst->pos || !src->pos) return -1;
    for (uint32_t b = 0; b < dst->nbins; b++) {
        dst->pos[b] = met__sat_add(dst->pos[b], src->pos[b]);
        dst->neg[b] = met__sat_add(dst->neg[b], src->neg[b]);
    }
    dst->n += src->n;
    dst->n_pos += src->n_pos;
    dst->n_nan += src->n_nan;
    dst->sum_p += src->sum_p;
    dst->sum_ll += src->sum_ll;
    return 0;
}

int met_auc_fold(met_auc *dst, const met_auc *src) {
    if (dst->logit != src->logit || dst->bits > src->bits || !dst->pos || !src->pos) return -1;
    int shift = src->bits - dst->bits;
    memset(dst->pos, 0, dst->nbins * sizeof *dst->pos);
    memset(dst->neg, 0, dst->nbins * sizeof *dst->neg);
    for (uint32_t b = 0; b < src->nbins; b++) {
        dst->pos[b >> shift] = met__sat_add(dst->pos[b >> shift], src->pos[b]);
        dst->neg[b >> shift] = met__sat_add(dst->neg[b >> shift], src->neg[b]);
    }
    dst->n = src->n;
    dst->n_pos = src->n_pos;
    dst->n_nan = src->n_nan;
    dst->sum_p = src->sum_p;
    dst->sum_ll = src->sum_ll;
    return 0;
}

static uint64_t met__sub0(uint64_t x, uint64_t y) { return x > y ? x - y : 0; }

int met_auc_sub(met_auc *dst, const met_auc *src) {
    if (dst->nbins != src->nbins || dst->logit != src->logit || !dst->pos || !src->pos) return -1;
    for (uint32_t b = 0; b < dst->nbins; b++) {
        dst->pos[b] = (uint32_t)met__sub0(dst->pos[b], src->pos[b]);
        dst->neg[b] = (uint32_t)met__sub0(dst->neg[b], src->neg[b]);
    }
    dst->n = met__sub0(dst->n, src->n);
    dst->n_pos = met__sub0(dst->n_pos, src->n_pos);
    dst->n_nan = met__sub0(dst->n_nan, src->n_nan);
    dst->sum_p -= src->sum_p;
    dst->sum_ll -= src->sum_ll;
    return 0;
}

void met_auc_write_json(const met_auc *a, json_writer *w) {
    double bound;
    double auc = met_auc_value(a, &bound);
    json_obj_begin(w);
    json_key(w, "auc"); json_num(w, auc);
    json_key(w, "auc_bound"); json_num(w, bound);
    json_key(w, "auc_se");
    json_num(w, met_auc_se(auc, (double)a->n_pos, (double)(a->n - a->n_pos)));
    json_key(w, "logloss"); json_num(w, met_auc_logloss(a));
    json_key(w, "n"); json_uint(w, a->n);
    json_key(w, "pos"); json_uint(w, a->n_pos);
    json_key(w, "mean_p"); json_num(w, met_auc_mean_p(a));
    json_key(w, "rate"); json_num(w, met_auc_rate(a));
    json_obj_end(w);
}

/* ---- histograms in a report: the nonzero bins as varints (gap since the last nonzero bin,
 * positives, negatives), in base64 ---- */

static const char met__b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t met__varint(unsigned char *out, uint64_t x) {
    size_t n = 0;
    do {
        out[n++] = (unsigned char)((x & 0x7f) | (x > 0x7f ? 0x80 : 0));
        x >>= 7;
    } while (x);
    return n;
}

/* bytes -> NUL-terminated base64 (malloc'd), or NULL when out of memory */
static char *met__b64_encode(const unsigned char *in, size_t n) {
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        *o++ = met__b64[v >> 18];
        *o++ = met__b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? met__b64[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? met__b64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* base64 -> bytes (malloc'd, *n of them), or NULL on a bad character or out of memory */
static unsigned char *met__b64_decode(const char *s, size_t *n) {
    size_t len = strlen(s);
    unsigned char *out = malloc(len / 4 * 3 + 3);
    if (!out || len % 4) { free(out); return NULL; }
    size_t k = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            const char *c = s[i + j] == '=' ? NULL : strchr(met__b64, s[i + j]);
            if (s[i + j] == '=' && i + 4 == len && j >= 2) { pad++; v <<= 6; continue; }
            if (!c || !*c || pad) { free(out); return NULL; }
            v = v << 6 | (uint32_t)(c - met__b64);
        }
        out[k++] = (unsigned char)(v >> 16);
        if (pad < 2) out[k++] = (unsigned char)(v >> 8);
        if (pad < 1) out[k++] = (unsigned char)v;
    }
    *n = k;
    return out;
}

void met_auc_write_hist(const met_auc *a, json_writer *w) {
    unsigned char *bytes = malloc((size_t)a->nbins * 15 + 1);
    size_t n = 0;
    uint32_t last = 0;
    for (uint32_t b = 0; bytes && b < a->nbins; b++) {
        if (!a->pos[b] && !a->neg[b]) continue;
        n += met__varint(bytes + n, b - last);
        n += met__varint(bytes + n, a->pos[b]);
        n += met__varint(bytes + n, a->neg[b]);
        last = b + 1;
    }
    char *text = bytes ? met__b64_encode(bytes, n) : NULL;
    free(bytes);
    json_obj_begin(w);
    json_key(w, "bits"); json_int(w, a->bits);
    json_key(w, "logit"); json_bool(w, a->logit);
    json_key(w, "n"); json_uint(w, a->n);
    json_key(w, "pos"); json_uint(w, a->n_pos);
    json_key(w, "nan"); json_uint(w, a->n_nan);
    json_key(w, "sum_p"); json_num(w, a->sum_p);
    json_key(w, "sum_ll"); json_num(w, a->sum_ll);
    json_key(w, "bins");
    if (text) json_str(w, text);
    else json_null(w);   /* out of memory: the report says the histogram is missing */
    json_obj_end(w);
    free(text);
}

static int met__read_varint(const unsigned char *p, size_t n, size_t *at, uint64_t *x) {
    *x = 0;
    for (int shift = 0; *at < n && shift < 64; shift += 7) {
        unsigned char c = p[(*at)++];
        *x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return 0;
    }
    return -1;
}

int met_auc_read_hist(met_auc *a, const json_node *j, char *errstr, size_t errstr_size) {
    memset(a, 0, sizeof *a);
    const char *text = json_string(json_member(j, "bins"), NULL);
    int bits = (int)json_number(json_member(j, "bits"), -1);
    if (!text) {
        snprintf(errstr, errstr_size, "no histogram (\"bins\")");
        return -1;
    }
    if (met__auc_init(a, bits, json_boolean(json_member(j, "logit"), false), errstr,
                      errstr_size) != 0)
        return -1;
    size_t n = 0, at = 0;
    unsigned char *bytes = met__b64_decode(text, &n);
    uint64_t b = 0, gap, pos, neg;
    while (bytes && at < n) {
        if (met__read_varint(bytes, n, &at, &gap) || met__read_varint(bytes, n, &at, &pos) ||
            met__read_varint(bytes, n, &at, &neg) || gap >= a->nbins - b ||
            pos > UINT32_MAX || neg > UINT32_MAX)
            break;
        b += gap;
        a->pos[b] = (uint32_t)pos;
        a->neg[b] = (uint32_t)neg;
        b++;
    }
    int bad = !bytes || at < n;
    free(bytes);
    if (bad) {
        snprintf(errstr, errstr_size, "a histogram's \"bins\" are malformed");
        met_auc_free(a);
        return -1;
    }
    a->n = (uint64_t)json_number(json_member(j, "n"), 0);
    a->n_pos = (uint64_t)json_number(json_member(j, "pos"), 0);
    a->n_nan = (uint64_t)json_number(json_member(j, "nan"), 0);
    a->sum_p = json_number(json_member(j, "sum_p"), 0);
    a->sum_ll = json_number(json_member(j, "sum_ll"), 0);
    return 0;
}

/* ======================================================================== latency */

void met_latency_init(met_latency *l) { memset(l, 0, sizeof *l); }

static int met__lat_bucket(double ms) {
    if (!(ms >= MET_LAT_MIN_MS)) return 0;
    double i = 1 + floor(log(ms / MET_LAT_MIN_MS) / log(MET_LAT_GROWTH));
    if (i >= MET_LAT_NBUCKETS - 1) return MET_LAT_NBUCKETS - 1;
    return (int)i;
}

void met_latency_add(met_latency *l, double ms) {
    if (isnan(ms)) return;
    l->count[met__lat_bucket(ms)]++;
    if (l->n == 0 || ms < l->min) l->min = ms;
    if (l->n == 0 || ms > l->max) l->max = ms;
    l->n++;
    l->sum += ms;
}

double met_latency_percentile(const met_latency *l, double p) {
    if (l->n == 0) return NAN;
    if (p < 0) p = 0;
    if (p > 100) p = 100;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)l->n);
    if (rank < 1) rank = 1;
    uint64_t cum = 0;
    int i = 0;
    for (; i < MET_LAT_NBUCKETS; i++) {
        cum += l->count[i];
        if (cum >= rank) break;
    }
    double v;
    if (i == 0) v = l->min;
    else if (i >= MET_LAT_NBUCKETS - 1) v = l->max;
    else v = MET_LAT_MIN_MS * pow(MET_LAT_GROWTH, i - 0.5);   /* geometric bucket middle */
    if (v < l->min) v = l->min;
    if (v > l->max) v = l->max;
    return v;
}

double met_latency_mean(const met_latency *l) { return l->n ? l->sum / (double)l->n : NAN; }

void met_latency_merge(met_latency *dst, const met_latency *src) {
    if (src->n == 0) return;
    for (int i = 0; i < MET_LAT_NBUCKETS; i++) dst->count[i] += src->count[i];
    if (dst->n == 0 || src->min < dst->min) dst->min = src->min;
    if (dst->n == 0 || src->max > dst->max) dst->max = src->max;
    dst->n += src->n;
    dst->sum += src->sum;
}

/* ======================================================================== RSS */

double met_rss_mb(double *peak_mb) {
    double rss = -1, peak = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            double kb;
            if (sscanf(line, "VmRSS: %lf", &kb) == 1) rss = kb / 1024.0;
            else if (sscanf(line, "VmHWM: %lf", &kb) == 1) peak = kb / 1024.0;
        }
        fclose(f);
    }
    if (rss < 0) peak = -1;
    if (peak_mb) *peak_mb = peak;
    return rss;
}

/* ======================================================================== board */

struct met_board {
    int n_scen, n_models;
    char scen[M3_MAX_SCEN][M3_NAME_MAX];
    char model[MET_MAX_MODELS][M3_NAME_MAX];
    met_auc *auc;     /* (n_models, n_scen + 1, MET_NTASKS); scenario slot 0 = overall */
    met_auc *sl;      /* (n_models, n_scen + 1, MET_NSLICES, MET_NTASKS); slot 0 = overall */
    met_counters c;
    met_guard guard[MET_MAX_MODELS];
    uint64_t events_base;   /* events counted before this process (a restored state) */
    met_latency lat;
    double t0;        /* clk_mono_s() when the board was made */
    /* the timeline */
    met_auc *win;     /* (n_models, n_scen + 1, MET_NTASKS): the open window */
    int64_t tl_count; /* model 0's CTR predictions counted */
    int64_t tl_start; /* tl_count when the open window began */
    int64_t tl_window, tl_window0;
    int tl_max, tl_n; /* points held at most, and now */
    int64_t *tl_x, *tl_w;            /* (tl_max) end position and width of each point */
    double *tl_sec;                  /* (tl_max) */
    met_tl_value *tl_val;            /* (tl_max, n_models, n_scen + 1, MET_NTASKS) */
    /* the slices' burn-in (met_board_set_slice_burnin) */
    int64_t sl_burnin;               /* impressions before the slices count */
    int sl_open;                     /* the burn-in is over */
    int64_t sl_open_ts;              /* event time of the first impression after it */
    /* the primary's settled CTCVR and CVR (met_board_set_settle); [0] CTCVR, [1] CVR */
    int64_t st_window, st_width;     /* 0: off; bucket width in event-time ms */
    int64_t st_clock;                /* the newest event time counted */
    int64_t st_folded;               /* the newest bucket folded into st_done */
    int64_t st_id[MET_SETTLE_SLOTS]; /* the bucket each slot holds, MET__NO_TS = free */
    met_auc *st_slot;                /* (2, MET_SETTLE_SLOTS) counted per task and bucket */
    met_auc st_done[2];              /* the buckets every label of which has settled */
};

static const char *const met__task_names[MET_NTASKS] = {"ctr", "ctcvr", "cvr"};

const char *met_task_name(int task) {
    return task >= 0 && task < MET_NTASKS ? met__task_names[task] : "?";
}

/* The settled measure's index of a task: 0 CTCVR, 1 CVR, -1 none (CTR). */
static int met__st_task(int task) { return task == MET_CTCVR ? 0 : task == MET_CVR ? 1 : -1; }

/* Accumulators per model: (n_scen + 1) * MET_NTASKS, laid out as met__idx says. */
static size_t met__per_model(const met_board *b) { return (size_t)(b->n_scen + 1) * MET_NTASKS; }

static size_t met__idx(const met_board *b, int model, int scen, int task) {
    return ((size_t)model * (size_t)(b->n_scen + 1) + (size_t)(scen + 1)) * MET_NTASKS + (size_t)task;
}

static size_t met__sidx(const met_board *b, int model, int scen, int slice, int task) {
    return (((size_t)model * (size_t)(b->n_scen + 1) + (size_t)(scen + 1)) * MET_NSLICES +
            (size_t)slice) * MET_NTASKS + (size_t)task;
}

/* calloc n met_auc and init each (logit or not); NULL with errstr on failure. */
static met_auc *met__auc_array(size_t n, int bits, int logit, char *errstr, size_t errstr_size) {
    met_auc *a = calloc(n, sizeof *a);
    if (!a) {
        snprintf(errstr, errstr_size, "met_board_new: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (met__auc_init(&a[i], bits, logit, errstr, errstr_size) != 0) {
            for (size_t j = 0; j < i; j++) met_auc_free(&a[j]);
            free(a);
            return NULL;
        }
    return a;
}

static void met__auc_array_free(met_auc *a, size_t n) {
    if (!a) return;
    for (size_t i = 0; i < n; i++) met_auc_free(&a[i]);
    free(a);
}

/* (Re)allocate the timeline's points for max_points; 0, or -1 (nothing changed). */
static int met__tl_alloc(met_board *b, int max_points) {
    size_t per = (size_t)b->n_models * met__per_model(b);
    int64_t *x = calloc((size_t)max_points, sizeof *x), *w = calloc((size_t)max_points, sizeof *w);
    double *sec = calloc((size_t)max_points, sizeof *sec);
    met_tl_value *val = calloc((size_t)max_points * per, sizeof *val);
    if (!x || !w || !sec || !val) {
        free(x); free(w); free(sec); free(val);
        return -1;
    }
    free(b->tl_x); free(b->tl_w); free(b->tl_sec); free(b->tl_val);
    b->tl_x = x; b->tl_w = w; b->tl_sec = sec; b->tl_val = val;
    b->tl_max = max_points;
    return 0;
}

met_board *met_board_new(int n_scen, const char *const *scen_names, int n_models,
                         const char *const *model_names, int auc_bits,
                         char *errstr, size_t errstr_size) {
    if (n_scen < 1 || n_scen > M3_MAX_SCEN) {
        snprintf(errstr, errstr_size, "met_board_new: %d scenarios, want 1..%d", n_scen, M3_MAX_SCEN);
        return NULL;
    }
    if (n_models < 1 || n_models > MET_MAX_MODELS) {
        snprintf(errstr, errstr_size, "met_board_new: %d models, want 1..%d", n_models, MET_MAX_MODELS);
        return NULL;
    }
    if (!scen_names || !model_names) {
        snprintf(errstr, errstr_size, "met_board_new: scenario and model names are required");
        return NULL;
    }
    for (int i = 0; i < n_scen; i++)
        if (!scen_names[i] || strlen(scen_names[i]) >= M3_NAME_MAX) {
            snprintf(errstr, errstr_size, "met_board_new: scenario %d name missing or longer than %d bytes",
                     i, M3_NAME_MAX - 1);
            return NULL;
        }
    for (int i = 0; i < n_models; i++)
        if (!model_names[i] || strlen(model_names[i]) >= M3_NAME_MAX) {
            snprintf(errstr, errstr_size, "met_board_new: model %d name missing or longer than %d bytes",
                     i, M3_NAME_MAX - 1);
            return NULL;
        }
    met_board *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(errstr, errstr_size, "met_board_new: out of memory");
        return NULL;
    }
    b->n_scen = n_scen;
    b->n_models = n_models;
    for (int i = 0; i < n_scen; i++) strcpy(b->scen[i], scen_names[i]);
    for (int i = 0; i < n_models; i++) strcpy(b->model[i], model_names[i]);
    size_t n_auc = (size_t)n_models * met__per_model(b);
    b->auc = met__auc_array(n_auc, auc_bits, 0, errstr, errstr_size);
    /* the slices: the overall ones as fine as the main accumulators, the per-scenario
     * ones coarser (there are n_scen times more of them) */
    b->sl = b->auc ? calloc(n_auc * MET_NSLICES, sizeof *b->sl) : NULL;
    for (size_t i = 0; b->sl && i < n_auc * MET_NSLICES; i++) {
        int overall = (i / (MET_NSLICES * MET_NTASKS)) % (size_t)(n_scen + 1) == 0;
        if (met__auc_init(&b->sl[i], overall ? auc_bits : MET_SCEN_SLICE_BITS, !overall, errstr,
                          errstr_size) != 0) {
            met_board_destroy(b);
            return NULL;
        }
    }
    b->win = b->sl ? met__auc_array(n_auc, MET_TL_BITS, 1, errstr, errstr_size) : NULL;
    if (!b->win) {
        if (b->auc && !b->sl) snprintf(errstr, errstr_size, "met_board_new: out of memory");
        met_board_destroy(b);
        return NULL;
    }
    b->tl_window = b->tl_window0 = MET_TL_WINDOW;
    if (met__tl_alloc(b, MET_TL_POINTS) != 0) {
        snprintf(errstr, errstr_size, "met_board_new: out of memory");
        met_board_destroy(b);
        return NULL;
    }
    met_latency_init(&b->lat);
    b->t0 = clk_mono_s();
    b->sl_open = 1;
    b->sl_open_ts = MET__NO_TS;
    return b;
}

void met_board_destroy(met_board *b) {
    if (!b) return;
    size_t n_auc = (size_t)b->n_models * met__per_model(b);
    met__auc_array_free(b->auc, n_auc);
    met__auc_array_free(b->sl, n_auc * MET_NSLICES);
    met__auc_array_free(b->win, n_auc);
    met__auc_array_free(b->st_slot, 2 * MET_SETTLE_SLOTS);
    met_auc_free(&b->st_done[0]);
    met_auc_free(&b->st_done[1]);
    free(b->tl_x);
    free(b->tl_w);
    free(b->tl_sec);
    free(b->tl_val);
    free(b);
}

int met_board_set_timeline(met_board *b, int64_t window, int max_points, char *errstr,
                           size_t errstr_size) {
    if (window < 1 || max_points < 2 || max_points > 65536 || max_points % 2) {
        snprintf(errstr, errstr_size, "met_board_set_timeline: window %lld (want >= 1), points %d "
                 "(want even, 2..65536)", (long long)window, max_points);
        return -1;
    }
    if (b->tl_count || b->tl_n) {
        snprintf(errstr, errstr_size, "met_board_set_timeline: predictions were counted already");
        return -1;
    }
    if (met__tl_alloc(b, max_points) != 0) {
        snprintf(errstr, errstr_size, "met_board_set_timeline: out of memory");
        return -1;
    }
    b->tl_window = b->tl_window0 = window;
    return 0;
}

static float met__nanf(double x) { return isnan(x) ? NAN : (float)x; }

static void met__tl_measure(const met_auc *a, met_tl_value *v) {
    double bound, auc = met_auc_value(a, &bound);
    v->auc = met__nanf(auc);
    v->bound = met__nanf(bound);
    v->mean_p = met__nanf(met_auc_mean_p(a));
    v->rate = met__nanf(met_auc_rate(a));
    v->n = a->n > UINT32_MAX ? UINT32_MAX : (uint32_t)a->n;
    v->pos = a->n_pos > UINT32_MAX ? UINT32_MAX : (uint32_t)a->n_pos;
}

/* Close the open window: one point more, every accumulator's window reset; when the
 * points are full, keep those at odd positions and double the window. */
static void met__tl_close(met_board *b) {
    size_t per = (size_t)b->n_models * met__per_model(b);
    int i = b->tl_n++;
    b->tl_x[i] = b->tl_count;
    b->tl_w[i] = b->tl_count - b->tl_start;
    b->tl_sec[i] = met_board_elapsed(b);
    for (size_t k = 0; k < per; k++) {
        met__tl_measure(&b->win[k], &b->tl_val[(size_t)i * per + k]);
        met_auc_reset(&b->win[k]);
    }
    b->tl_start = b->tl_count;
    if (b->tl_n == b->tl_max) {
        for (int j = 0; j < b->tl_max / 2; j++) {
            b->tl_x[j] = b->tl_x[2 * j + 1];
            b->tl_w[j] = b->tl_w[2 * j + 1];
            b->tl_sec[j] = b->tl_sec[2 * j + 1];
            memcpy(&b->tl_val[(size_t)j * per], &b->tl_val[(size_t)(2 * j + 1) * per],
                   per * sizeof *b->tl_val);
        }
        b->tl_n = b->tl_max / 2;
        b->tl_window *= 2;
    }
}

/* ---- the settled CTCVR: counted by the event time of its impression, in buckets of
 * window/16; a bucket joins st_done once the clock is a window and a bucket past its end,
 * when every label of its impressions has settled (converted or its window closed; the
 * extra bucket covers the learner's lateness and a partial minibatch). */

static int64_t met__floor_div(int64_t a, int64_t b) { return a / b - (a % b < 0); }

static void met__settle_fold(met_board *b, int slot) {
    if (b->st_id[slot] > b->st_folded) b->st_folded = b->st_id[slot];
    for (int t = 0; t < 2; t++) {
        met_auc *a = &b->st_slot[t * MET_SETTLE_SLOTS + slot];
        met_auc_merge(&b->st_done[t], a);
        met_auc_reset(a);
    }
    b->st_id[slot] = MET__NO_TS;
}

/* The clock moved to ts: fold every bucket whose labels have all settled. */
static void met__settle_clock(met_board *b, int64_t ts) {
    if (ts <= b->st_clock) return;
    b->st_clock = ts;
    int64_t last = met__floor_div(ts - b->st_window, b->st_width) - 2; /* newest settled bucket */
    for (int i = 0; i < MET_SETTLE_SLOTS; i++)
        if (b->st_id[i] != MET__NO_TS && b->st_id[i] <= last) met__settle_fold(b, i);
    if (last > b->st_folded) b->st_folded = last;
}

static void met__settle_add(met_board *b, int t, int64_t ts, double p, int y) {
    int64_t k = met__floor_div(ts, b->st_width);
    if (k <= b->st_folded) {          /* a label of a bucket already folded: counts at once */
        met_auc_add(&b->st_done[t], p, y);
        return;
    }
    int slot = (int)(((k % MET_SETTLE_SLOTS) + MET_SETTLE_SLOTS) % MET_SETTLE_SLOTS);
    if (b->st_id[slot] != k) {
        /* the slot's bucket is a ring older: its stragglers are counted settled */
        if (b->st_id[slot] != MET__NO_TS) met__settle_fold(b, slot);
        b->st_id[slot] = k;
    }
    met_auc_add(&b->st_slot[t * MET_SETTLE_SLOTS + slot], p, y);
}

int met_board_set_settle(met_board *b, int64_t window_ms, char *errstr, size_t errstr_size) {
    if (window_ms < 1 || b->tl_count) {
        snprintf(errstr, errstr_size, "met_board_set_settle: window %lld ms (want >= 1), or "
                 "predictions were counted already", (long long)window_ms);
        return -1;
    }
    if (!b->st_slot) {
        b->st_slot = met__auc_array(2 * MET_SETTLE_SLOTS, MET_TL_BITS, 1, errstr, errstr_size);
        if (!b->st_slot) return -1;
        if (met__auc_init(&b->st_done[0], MET_TL_BITS, 1, errstr, errstr_size) != 0 ||
            met__auc_init(&b->st_done[1], MET_TL_BITS, 1, errstr, errstr_size) != 0) {
            met__auc_array_free(b->st_slot, 2 * MET_SETTLE_SLOTS);
            met_auc_free(&b->st_done[0]);
            b->st_slot = NULL;
            return -1;
        }
    }
    b->st_window = window_ms;
    b->st_width = window_ms / 16 > 0 ? window_ms / 16 : 1;
    b->st_clock = b->st_folded = MET__NO_TS;
    for (int i = 0; i < MET_SETTLE_SLOTS; i++) b->st_id[i] = MET__NO_TS;
    return 0;
}

const met_auc *met_board_settled_task(const met_board *b, met_task task, int64_t *horizon_ms) {
    if (horizon_ms)
        *horizon_ms = b->st_window && b->st_folded != MET__NO_TS
                          ? (b->st_folded + 1) * b->st_width : MET__NO_TS;
    int t = met__st_task(task);
    return b->st_window && t >= 0 ? &b->st_done[t] : NULL;
}

const met_auc *met_board_settled(const met_board *b, int64_t *horizon_ms) {
    return met_board_settled_task(b, MET_CTCVR, horizon_ms);
}

void met_board_set_slice_burnin(met_board *b, int64_t impressions) {
    b->sl_burnin = impressions > 0 ? impressions : 0;
    b->sl_open = b->sl_burnin == 0 && b->tl_count == 0;
    b->sl_open_ts = MET__NO_TS;
}

int met_board_add_at(met_board *b, int model, int scen, met_task task, double p, int y,
                     int64_t ts_ms) {
    if (model < 0 || model >= b->n_models || scen < 0 || scen >= b->n_scen ||
        (int)task < 0 || task >= MET_NTASKS)
        return -1;
    if (model == 0 && task == MET_CTR) {
        /* the window closes lazily, so that every model's predictions of the last
         * impression of a window (which follow model 0's) are still in it */
        if (b->tl_count - b->tl_start >= b->tl_window) met__tl_close(b);
        b->tl_count++;
        /* the stream position: impressions measured, or counted by the caller (restored
         * with a state, and ahead by the queued minibatch) */
        int64_t pos = b->tl_count > (int64_t)b->c.impressions ? b->tl_count
                                                              : (int64_t)b->c.impressions;
        if (!b->sl_open && pos > b->sl_burnin) {
            b->sl_open = 1;
            b->sl_open_ts = ts_ms;
        }
    }
    if (model == 0 && b->st_window && ts_ms != MET__NO_TS) {
        met__settle_clock(b, ts_ms);
        if (met__st_task(task) >= 0) met__settle_add(b, met__st_task(task), ts_ms, p, y);
    }
    size_t k = met__idx(b, model, scen, task), o = met__idx(b, model, -1, task);
    met_auc_add(&b->auc[k], p, y);
    met_auc_add(&b->auc[o], p, y);
    met_auc_add(&b->win[k], p, y);
    met_auc_add(&b->win[o], p, y);
    return 0;
}

int met_board_add(met_board *b, int model, int scen, met_task task, double p, int y) {
    return met_board_add_at(b, model, scen, task, p, y, MET__NO_TS);
}

int met_board_add_slices_at(met_board *b, int model, int scen, unsigned slices, met_task task,
                            double p, int y, int64_t ts_ms) {
    if (model < 0 || model >= b->n_models || scen < -1 || scen >= b->n_scen || (int)task < 0 ||
        task >= MET_NTASKS)
        return -1;
    /* during the burn-in nothing is a slice, nor later is a label of an impression from it */
    if (!b->sl_open || (ts_ms != MET__NO_TS && b->sl_open_ts != MET__NO_TS && ts_ms < b->sl_open_ts))
        return 0;
    for (int s = 0; s < MET_NSLICES; s++)
        if (slices & (1u << s)) {
            met_auc_add(&b->sl[met__sidx(b, model, -1, s, task)], p, y);
            if (scen >= 0) met_auc_add(&b->sl[met__sidx(b, model, scen, s, task)], p, y);
        }
    return 0;
}

int met_board_add_slices(met_board *b, int model, int scen, unsigned slices, met_task task,
                         double p, int y) {
    return met_board_add_slices_at(b, model, scen, slices, task, p, y, MET__NO_TS);
}

const met_auc *met_board_slice_auc(const met_board *b, int model, int scen, met_slice slice,
                                   met_task task) {
    if (model < 0 || model >= b->n_models || scen < -1 || scen >= b->n_scen || (int)slice < 0 ||
        slice >= MET_NSLICES || (int)task < 0 || task >= MET_NTASKS)
        return NULL;
    return &b->sl[met__sidx(b, model, scen, slice, task)];
}

void met_board_latency(met_board *b, double ms) { met_latency_add(&b->lat, ms); }
met_counters *met_board_counters(met_board *b) { return &b->c; }
met_guard *met_board_guard(met_board *b, int model) {
    return model >= 0 && model < b->n_models ? &b->guard[model] : NULL;
}

const met_auc *met_board_auc(const met_board *b, int model, int scen, met_task task) {
    if (model < 0 || model >= b->n_models || scen < -1 || scen >= b->n_scen ||
        (int)task < 0 || task >= MET_NTASKS)
        return NULL;
    return &b->auc[met__idx(b, model, scen, task)];
}

void met_board_set_events_base(met_board *b, uint64_t events) { b->events_base = events; }
uint64_t met_board_events_base(const met_board *b) { return b->events_base; }

double met_board_elapsed(const met_board *b) {
    return clk_mono_s() - b->t0;
}

int met_board_tl_points(const met_board *b) { return b->tl_n; }
int64_t met_board_tl_window(const met_board *b) { return b->tl_window; }

void met_board_tl_point(const met_board *b, int i, int64_t *x, int64_t *width, double *sec) {
    int ok = i >= 0 && i < b->tl_n;
    if (x) *x = ok ? b->tl_x[i] : 0;
    if (width) *width = ok ? b->tl_w[i] : 0;
    if (sec) *sec = ok ? b->tl_sec[i] : NAN;
}

const met_tl_value *met_board_tl_value(const met_board *b, int i, int model, int scen,
                                       met_task task) {
    if (i < 0 || i >= b->tl_n || model < 0 || model >= b->n_models || scen < -1 ||
        scen >= b->n_scen || (int)task < 0 || task >= MET_NTASKS)
        return NULL;
    size_t per = (size_t)b->n_models * met__per_model(b);
    return &b->tl_val[(size_t)i * per + met__idx(b, model, scen, task)];
}

/* ---- the report ---- */

/* x rounded to `digits` significant digits, so that long series stay short in JSON */
static double met__round(double x, int digits) {
    if (!isfinite(x) || x == 0) return x;
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.*g", digits, x);
    return strtod(tmp, NULL);
}

/* Is the open window reported as a last point (at least half a window)? */
static int met__tl_open_shown(const met_board *b) {
    int64_t w = b->tl_count - b->tl_start;
    return w > 0 && 2 * w >= b->tl_window;
}

static void met__write_series(const met_board *b, int model, int scen, int task, json_writer *w) {
    size_t per = (size_t)b->n_models * met__per_model(b), k = met__idx(b, model, scen, task);
    int n = b->tl_n, open = met__tl_open_shown(b);
    met_tl_value last;
    if (open) met__tl_measure(&b->win[k], &last);
    static const char *names[] = {"auc", "bound", "n", "mean_p", "rate"};
    json_obj_begin(w);
    for (int f = 0; f < 5; f++) {
        json_key(w, names[f]);
        json_arr_begin_flat(w);
        for (int i = 0; i < n + open; i++) {
            const met_tl_value *v = i < n ? &b->tl_val[(size_t)i * per + k] : &last;
            switch (f) {
            case 0: json_num(w, met__round(v->auc, 6)); break;
            case 1: json_num(w, met__round(v->bound, 3)); break;
            case 2: json_uint(w, v->n); break;
            case 3: json_num(w, met__round(v->mean_p, 6)); break;
            default: json_num(w, met__round(v->rate, 6)); break;
            }
        }
        json_arr_end(w);
    }
    json_obj_end(w);
}

static void met__write_series_tasks(const met_board *b, int model, int scen, json_writer *w) {
    json_obj_begin(w);
    for (int t = 0; t < MET_NTASKS; t++) {
        json_key(w, met__task_names[t]);
        met__write_series(b, model, scen, t, w);
    }
    json_obj_end(w);
}

/* The timeline's positions: {"window", "max_points", "bins", "x", "width", "sec"}. */
static void met__write_tl_axis(const met_board *b, json_writer *w) {
    int n = b->tl_n, open = met__tl_open_shown(b);
    json_obj_begin(w);
    json_key(w, "window"); json_int(w, b->tl_window);
    json_key(w, "first_window"); json_int(w, b->tl_window0);
    json_key(w, "max_points"); json_int(w, b->tl_max);
    json_key(w, "bins"); json_int(w, 1 << MET_TL_BITS);
    json_key(w, "x");
    json_arr_begin_flat(w);
    for (int i = 0; i < n; i++) json_int(w, b->tl_x[i]);
    if (open) json_int(w, b->tl_count);
    json_arr_end(w);
    json_key(w, "width");
    json_arr_begin_flat(w);
    for (int i = 0; i < n; i++) json_int(w, b->tl_w[i]);
    if (open) json_int(w, b->tl_count - b->tl_start);
    json_arr_end(w);
    json_key(w, "sec");
    json_arr_begin_flat(w);
    for (int i = 0; i < n; i++) json_num(w, met__round(b->tl_sec[i], 6));
    if (open) json_num(w, met__round(met_board_elapsed(b), 6));
    json_arr_end(w);
    json_obj_end(w);
}

static const char *met__slice_names[MET_NSLICES] = {"new_item", "new_user_in_scenario"};

static void met__write_slices(const met_board *b, int model, int scen, json_writer *w) {
    json_obj_begin(w);
    for (int sl = 0; sl < MET_NSLICES; sl++) {
        json_key(w, met__slice_names[sl]);
        json_obj_begin(w);
        for (int t = 0; t < MET_NTASKS; t++) {
            json_key(w, met__task_names[t]);
            met_auc_write_json(&b->sl[met__sidx(b, model, scen, sl, t)], w);
        }
        json_obj_end(w);
    }
    json_obj_end(w);
}

/* Writes every task ("ctr", "ctcvr", "cvr") of one model and scenario (-1: overall) into
 * the open object, each as fn writes an accumulator (its figures, or its histogram). */
static void met__write_task_keys(const met_board *b, int model, int scen,
                                 void (*fn)(const met_auc *, json_writer *), json_writer *w) {
    for (int t = 0; t < MET_NTASKS; t++) {
        json_key(w, met__task_names[t]);
        fn(&b->auc[met__idx(b, model, scen, t)], w);
    }
}

/* {"overall": {task}, "scenarios": {name: {task, and "slices" when slices}}} members of one
 * model into the open object, each accumulator as fn writes it. */
static void met__write_scopes(const met_board *b, int model, int slices,
                              void (*fn)(const met_auc *, json_writer *), json_writer *w) {
    json_key(w, "overall");
    json_obj_begin(w);
    met__write_task_keys(b, model, -1, fn, w);
    json_obj_end(w);
    json_key(w, "scenarios");
    json_obj_begin(w);
    for (int s = 0; s < b->n_scen; s++) {
        json_key(w, b->scen[s]);
        json_obj_begin(w);
        met__write_task_keys(b, model, s, fn, w);
        if (slices) {
            json_key(w, "slices");
            met__write_slices(b, model, s, w);
        }
        json_obj_end(w);
    }
    json_obj_end(w);
}

/* Writes the "overall", "scenarios" and "slices" members of one model into the open
 * object, and its "hist" and "timeline" when `timeline`. */
static void met__write_model_members(const met_board *b, int model, int timeline, json_writer *w) {
    met__write_scopes(b, model, 1, met_auc_write_json, w);
    json_key(w, "slices");
    met__write_slices(b, model, -1, w);
    const met_guard *g = &b->guard[model];
    json_key(w, "guard");
    json_obj_begin(w);
    json_key(w, "skipped_steps"); json_uint(w, g->skipped_steps);
    json_key(w, "skipped_rows"); json_uint(w, g->skipped_rows);
    json_key(w, "rollbacks"); json_uint(w, g->rollbacks);
    json_key(w, "nonfinite_predictions"); json_uint(w, g->nonfinite_predictions);
    json_obj_end(w);
    if (!timeline) return;
    /* the histograms, for merging reports (met_board_merge_report) */
    json_key(w, "hist");
    json_obj_begin(w);
    met__write_scopes(b, model, 0, met_auc_write_hist, w);
    json_obj_end(w);
    json_key(w, "timeline");
    json_obj_begin(w);
    json_key(w, "overall");
    met__write_series_tasks(b, model, -1, w);
    json_key(w, "scenarios");
    json_obj_begin(w);
    for (int s = 0; s < b->n_scen; s++) {
        json_key(w, b->scen[s]);
        met__write_series_tasks(b, model, s, w);
    }
    json_obj_end(w);
    json_obj_end(w);
}

void met_board_write_model(const met_board *b, int model, json_writer *w) {
    if (model < 0 || model >= b->n_models) { json_null(w); return; }
    json_obj_begin(w);
    met__write_model_members(b, model, 1, w);
    json_obj_end(w);
}

void met_board_write_json(const met_board *b, json_writer *w,
                          void (*extra)(json_writer *w, void *arg), void *arg) {
    double elapsed = met_board_elapsed(b);
    double peak, rss = met_rss_mb(&peak);
    const met_counters *c = &b->c;
    json_obj_begin(w);
    json_key(w, "events"); json_uint(w, c->events);
    json_key(w, "events_per_sec");
    json_num(w, elapsed > 0 ? (double)(c->events - b->events_base) / elapsed : 0.0);
    json_key(w, "elapsed_sec"); json_num(w, elapsed);
    /* CPU time of the whole process (every thread), steadier than wall time on a shared
     * machine: events per CPU second is the cost of an event */
    struct rusage ru;
    double cpu = getrusage(RUSAGE_SELF, &ru) == 0
        ? (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
          (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec : NAN;
    json_key(w, "cpu_sec"); json_num(w, cpu);
    json_key(w, "latency_ms");
    json_obj_begin(w);
    json_key(w, "p50"); json_num(w, met_latency_percentile(&b->lat, 50));
    json_key(w, "p99"); json_num(w, met_latency_percentile(&b->lat, 99));
    json_key(w, "mean"); json_num(w, met_latency_mean(&b->lat));
    json_key(w, "n"); json_uint(w, b->lat.n);
    json_obj_end(w);
    json_key(w, "rss_mb"); json_num(w, rss);
    json_key(w, "rss_peak_mb"); json_num(w, peak);
    json_key(w, "counters");
    json_obj_begin(w);
    json_key(w, "events"); json_uint(w, c->events);
    json_key(w, "impressions"); json_uint(w, c->impressions);
    json_key(w, "clicks"); json_uint(w, c->clicks);
    json_key(w, "conversions"); json_uint(w, c->conversions);
    json_key(w, "requests"); json_uint(w, c->requests);
    json_key(w, "predictions"); json_uint(w, c->predictions);
    json_key(w, "dlq"); json_uint(w, c->dlq);
    json_key(w, "late_conversions"); json_uint(w, c->late_conversions);
    json_key(w, "unmatched_conversions"); json_uint(w, c->unmatched_conversions);
    json_key(w, "cvr_unscored"); json_uint(w, c->cvr_unscored);
    json_obj_end(w);
    json_key(w, "primary"); json_str(w, b->model[0]);
    json_key(w, "timeline"); met__write_tl_axis(b, w);
    /* the primary's members at the top level (its timeline only under "models") */
    met__write_model_members(b, 0, 0, w);
    json_key(w, "models");
    json_obj_begin(w);
    for (int m = 0; m < b->n_models; m++) {
        json_key(w, b->model[m]);
        met_board_write_model(b, m, w);
    }
    json_obj_end(w);
    if (extra) extra(w, arg);
    json_obj_end(w);
}

/* ---- merging reports ---- */

/* Are the keys of obj exactly names[0..n), in order? */
static int met__same_keys(const json_node *obj, char names[][M3_NAME_MAX], int n) {
    if (!obj || obj->type != JSON_OBJECT || (int)obj->n != n) return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(obj->keys[i], names[i]) != 0) return 0;
    return 1;
}

/* Add the histograms of the report (hist = {"ctr": H, "ctcvr": H, "cvr": H}) into
 * dst[task]; a report without "cvr" (from before the CVR AUC) adds none to it. */
static int met__merge_tasks(met_auc *dst, const json_node *hist, const char *where,
                            char *errstr, size_t errstr_size) {
    const char *const *tasks = met__task_names;
    for (int t = 0; t < MET_NTASKS; t++) {
        met_auc a;
        char why[128];
        if (t == MET_CVR && hist && !json_member(hist, tasks[t])) continue;
        if (met_auc_read_hist(&a, json_member(hist, tasks[t]), why, sizeof why) != 0) {
            snprintf(errstr, errstr_size, "%s %s: %s", where, tasks[t], why);
            return -1;
        }
        int rc = met_auc_merge(&dst[t], &a);
        if (rc != 0)
            snprintf(errstr, errstr_size, "%s %s: %u bins%s where the first report has %u%s",
                     where, tasks[t], a.nbins, a.logit ? " (logit)" : "", dst[t].nbins,
                     dst[t].logit ? " (logit)" : "");
        met_auc_free(&a);
        if (rc != 0) return -1;
    }
    return 0;
}

int met_board_merge_report(met_board *b, const json_node *report, char *errstr,
                           size_t errstr_size) {
    const json_node *models = json_member(report, "models");
    const json_node *first = models && models->n ? &models->items[0] : NULL;
    if (!met__same_keys(models, b->model, b->n_models) ||
        !met__same_keys(json_member(first, "scenarios"), b->scen, b->n_scen)) {
        snprintf(errstr, errstr_size, "another model set or other scenarios (want models %s%s "
                 "and %d scenarios from %s)", b->model[0], b->n_models > 1 ? ",..." : "",
                 b->n_scen, b->scen[0]);
        return -1;
    }
    /* every histogram is read and checked before anything is added: a refused report
     * leaves the board as it was */
    size_t n_auc = (size_t)b->n_models * met__per_model(b);
    met_auc *sum = met__auc_array(n_auc, b->auc[0].bits, b->auc[0].logit, errstr, errstr_size);
    if (!sum) return -1;
    int rc = 0;
    for (int m = 0; !rc && m < b->n_models; m++) {
        const json_node *h = json_member(&models->items[m], "hist");
        char where[2 * M3_NAME_MAX + 32];
        for (int s = -1; !rc && s < b->n_scen; s++) {
            const json_node *hs = s < 0 ? json_member(h, "overall")
                                        : json_member(json_member(h, "scenarios"), b->scen[s]);
            snprintf(where, sizeof where, "model %s %s", b->model[m], s < 0 ? "overall" : b->scen[s]);
            if (!h) {
                snprintf(errstr, errstr_size, "model %s has no histograms (\"hist\"): a report "
                         "from before merging existed?", b->model[m]);
                rc = -1;
            } else {
                rc = met__merge_tasks(&sum[met__idx(b, m, s, 0)], hs, where, errstr,
                                      errstr_size);
            }
        }
    }
    for (size_t i = 0; !rc && i < n_auc; i++) met_auc_merge(&b->auc[i], &sum[i]);
    met__auc_array_free(sum, n_auc);
    if (rc) return -1;
    const json_node *c = json_member(report, "counters");
    uint64_t *dst[] = {&b->c.events, &b->c.impressions, &b->c.clicks, &b->c.conversions,
                       &b->c.requests, &b->c.predictions, &b->c.dlq, &b->c.late_conversions,
                       &b->c.unmatched_conversions, &b->c.cvr_unscored};
    static const char *names[] = {"events", "impressions", "clicks", "conversions", "requests",
                                  "predictions", "dlq", "late_conversions",
                                  "unmatched_conversions", "cvr_unscored"};
    for (int i = 0; i < 10; i++) *dst[i] += (uint64_t)json_number(json_member(c, names[i]), 0);
    for (int m = 0; m < b->n_models; m++) {
        const json_node *g = json_member(&models->items[m], "guard");
        b->guard[m].skipped_steps += (uint64_t)json_number(json_member(g, "skipped_steps"), 0);
        b->guard[m].rollbacks += (uint64_t)json_number(json_member(g, "rollbacks"), 0);
        b->guard[m].nonfinite_predictions +=
            (uint64_t)json_number(json_member(g, "nonfinite_predictions"), 0);
    }
    return 0;
}

/* "950", "31.2k", "1.20M" */
static void met__human(char *buf, size_t n, double x) {
    if (x >= 1e6) snprintf(buf, n, "%.2fM", x / 1e6);
    else if (x >= 1e3) snprintf(buf, n, "%.1fk", x / 1e3);
    else snprintf(buf, n, "%.0f", x);
}

int met_board_progress_line(const met_board *b, char *buf, size_t n) {
    double elapsed = met_board_elapsed(b);
    char rate[32];
    met__human(rate, sizeof rate,
               elapsed > 0 ? (double)(b->c.events - b->events_base) / elapsed : 0.0);
    double auc_ctr = met_auc_value(&b->auc[met__idx(b, 0, -1, MET_CTR)], NULL);
    const met_auc *ctcvr = b->st_window ? &b->st_done[0] : &b->auc[met__idx(b, 0, -1, MET_CTCVR)];
    const met_auc *cvr = b->st_window ? &b->st_done[1] : &b->auc[met__idx(b, 0, -1, MET_CVR)];
    double auc_ctcvr = met_auc_value(ctcvr, NULL), auc_cvr = met_auc_value(cvr, NULL);
    char auc_cv[64], settled[32], auc_v[16] = "-";
    if (isnan(auc_ctcvr)) snprintf(auc_cv, sizeof auc_cv, "-");
    else snprintf(auc_cv, sizeof auc_cv, "%.4f", auc_ctcvr);
    if (!isnan(auc_cvr)) snprintf(auc_v, sizeof auc_v, "%.4f", auc_cvr);
    if (b->st_window) {
        met__human(settled, sizeof settled, (double)ctcvr->n);
        size_t u = strlen(auc_cv);
        snprintf(auc_cv + u, sizeof auc_cv - u, " (%s settled)", settled);
    }
    double p99 = met_latency_percentile(&b->lat, 99);
    double rss = met_rss_mb(NULL);
    const met_guard *g = &b->guard[0];
    char guard[96] = "";
    if (g->skipped_steps || g->rollbacks || g->nonfinite_predictions)
        snprintf(guard, sizeof guard, "  guard %llu skipped %llu withheld %llu rollback%s",
                 (unsigned long long)g->skipped_steps,
                 (unsigned long long)g->nonfinite_predictions,
                 (unsigned long long)g->rollbacks, g->rollbacks == 1 ? "" : "s");
    return snprintf(buf, n, "events %llu  %s ev/s  ctr auc %.4f  ctcvr auc %s  cvr auc %s  "
                    "lag p99 %.1f ms  rss %.0f MB%s", (unsigned long long)b->c.events, rate,
                    auc_ctr, auc_cv, auc_v, p99, rss, guard);
}
