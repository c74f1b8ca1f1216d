/* sim.c - the deterministic stream simulator (see sim.h for the world it models). */
#include "eval/sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"

#define K 8               /* latent dimensions */
#define N_AGE 7
#define N_GENDER 3
#define N_CITY 100
#define N_TIER 4
#define N_CAT 100
#define N_BRAND 1000
#define N_SHOP 2000
#define N_HOUR 24
#define N_DEVICE 3
#define FRESH_ITEMS 1000  /* the newest items get a share of exposure */
#define FRESH_SHARE 0.2
#define N_VISITS 64       /* visits in progress at once (visit_len > 1) */
#define NUM_H 8           /* hidden units of the item numerics' map into the latent space */
/* Logit spread at difficulty 1: puts the oracle CTR AUC of every default scenario in
 * 0.78..0.87, inside the 0.70..0.88 that public benchmarks report. */
#define SPREAD 1.25
/* Item latent = CAT_W * category part + BRAND_W * brand part + NUM_W * g(price, rating)
 * + noise; g is a fixed random two-layer tanh map, so a generator can learn the latent of
 * an unseen item from its features, non-linearly. */
#define CAT_W 0.5
#define BRAND_W 0.35f
#define NUM_W 1.0

/* ---- random numbers: xoshiro256** seeded by splitmix64 ---- */

typedef struct { uint64_t s[4]; } rng;

static void rng_seed(rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = hash_splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_u64(rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

/* uniform in [0, 1) */
static double rng_unif(rng *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }
static int rng_int(rng *r, int n) { return (int)(rng_unif(r) * n); }

static double rng_normal(rng *r) {
    double u1 = rng_unif(r), u2 = rng_unif(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Zipf-like index in [0, n): small indices are popular. */
static int rng_skewed(rng *r, int n, double power) {
    int i = (int)(n * pow(rng_unif(r), power));
    return i < n ? i : n - 1;
}

static double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

static void randvec(rng *r, float *v, double scale) {
    for (int i = 0; i < K; i++) v[i] = (float)(scale * rng_normal(r));
}

/* ---- the world ---- */

typedef struct {
    int age, gender, city, tier, device;
    float activity;          /* log activity, standardised */
    float price_sens;
    float taste[K];          /* individual part of the latent taste */
    float off[SIM_MAX_SCEN][K];
    float scen_cum[SIM_MAX_SCEN];   /* cumulative scenario shares (mix > 0) */
    /* the reference learner's posterior over the user's own taste (sim_truth), and counts */
    float mu[K], cov[K][K];
    uint32_t imps[SIM_MAX_SCEN];
} sim_user;

typedef struct {
    int cat, brand, shop;
    float v[K];              /* latent vector */
    float quality, rating, price;
    int64_t born;            /* impression index when it arrived; -1 for initial items */
    uint32_t imps;           /* impressions so far */
} sim_item;

typedef struct {             /* a visit in progress */
    int user, left;          /* left: impressions still to come */
    float intent[K];
} sim_visit;

typedef struct {             /* a conversion due at ts */
    int64_t ts;
    int64_t imp_seq;
    int scen;
    int64_t user_id, item_id;
} sim_due;

struct sim {
    sim_cfg c;
    rng r;
    /* segment tables, two phases for drift: taste(t) = cos(a) T0 + sin(a) T1 */
    float age0[N_AGE][K], age1[N_AGE][K];
    float gen0[N_GENDER][K], gen1[N_GENDER][K];
    float tier0[N_TIER][K], tier1[N_TIER][K];
    float city0[N_CITY][K], city1[N_CITY][K];
    float catv[N_CAT][K], brandv[N_BRAND][K];
    float cat_price[N_CAT], brand_quality[N_BRAND];
    float conv_rot[K][K];    /* conversion uses a partly rotated taste */
    float scen_rot[SIM_MAX_SCEN][K][K];   /* each scenario's map of the item latent */
    float num_w1[NUM_H][2], num_b1[NUM_H], num_w2[K][NUM_H];   /* g(price, rating) */
    float hour_bias[N_HOUR], device_bias[N_DEVICE];
    float tier_price_sens[N_TIER];
    /* per scenario */
    float scen_share_cum[SIM_MAX_SCEN];
    float b_click[SIM_MAX_SCEN], a_click[SIM_MAX_SCEN], q_click[SIM_MAX_SCEN];
    float b_conv[SIM_MAX_SCEN], a_conv[SIM_MAX_SCEN];
    /* population */
    sim_user *users;
    double *user_cum;        /* cumulative activity weights for sampling, the initial
                                population's summing to 1 */
    int n_users, cap_users;
    double act_norm;         /* the initial population's total activity */
    double new_user_credit;
    rng ru;                  /* newcomers and scenario habits draw from their own stream */
    sim_visit visits[N_VISITS];
    rng rv;                  /* and visits from theirs */
    sim_item *items;
    int n_items, cap_items;
    /* the clock and the queue of due conversions (min-heap by ts) */
    int64_t seq, now_ms, next_req_seq;
    int64_t next_ms;         /* time of the next impression or request, once drawn */
    int next_drawn;
    double new_item_credit;
    sim_due *heap;
    size_t n_heap, cap_heap;
    m3_candidate *cands;
    sim_stats st;
};

void sim_cfg_defaults(sim_cfg *c) {
    memset(c, 0, sizeof *c);
    c->seed = 42;
    c->n_impressions = 200000;
    c->n_scen = 3;
    static const char *names[] = {"home", "search", "product"};
    for (int i = 0; i < SIM_MAX_SCEN; i++) {
        if (i < 3) snprintf(c->scen_names[i], M3_NAME_MAX, "%s", names[i]);
        else snprintf(c->scen_names[i], M3_NAME_MAX, "s%d", i);
    }
    c->n_users = 20000;
    c->n_items = 20000;
    c->new_items_per_1k = 4;
    c->requests_per_1k = 2;
    c->request_candidates = 10;
    c->start_ms = 1767225600000LL; /* 2026-01-01T00:00:00Z */
    c->rate_per_sec = 50;
    c->window_ms = 3600000;
    c->delay = (sim_delay){SIM_DELAY_LOGNORMAL, 900000.0, 1.2};
    c->drift = 0.1;
    c->difficulty = 1.0;
    c->noise = 0.25;
    c->taste = 0.5;
    c->mix = 0.5;
    c->conflict = 1.0;
    c->visit_len = 1.0;
}

static int sim__add_item(sim *s, int64_t born) {
    if (s->n_items == s->cap_items) {
        int cap = s->cap_items ? s->cap_items * 2 : 1024;
        sim_item *p = realloc(s->items, (size_t)cap * sizeof *p);
        if (!p) return -1;
        s->items = p;
        s->cap_items = cap;
    }
    rng *r = &s->r;
    sim_item *it = &s->items[s->n_items++];
    it->cat = rng_skewed(r, N_CAT, 2.0);
    it->brand = rng_skewed(r, N_BRAND, 1.5);
    it->shop = rng_int(r, N_SHOP);
    double nz[K];   /* drawn first: the order of draws is the same as before g existed */
    for (int k = 0; k < K; k++) nz[k] = rng_normal(r);
    it->quality = (float)(0.6 * s->brand_quality[it->brand] + 0.8 * rng_normal(r));
    it->rating = (float)(0.7 * it->quality + 0.5 * rng_normal(r));
    it->price = (float)(s->cat_price[it->cat] + 0.5 * rng_normal(r));
    float h[NUM_H];
    for (int j = 0; j < NUM_H; j++)
        h[j] = (float)tanh(s->num_w1[j][0] * it->price + s->num_w1[j][1] * it->rating +
                           s->num_b1[j]);
    for (int k = 0; k < K; k++) {
        double g = 0;
        for (int j = 0; j < NUM_H; j++) g += s->num_w2[k][j] * h[j];
        it->v[k] = (float)(CAT_W * s->catv[it->cat][k] + BRAND_W * s->brandv[it->brand][k] +
                           NUM_W * g + s->c.noise * nz[k]);
    }
    it->born = born;
    it->imps = 0;
    s->st.items = s->n_items;
    return 0;
}

/* Gamma(shape, 1) by Marsaglia and Tsang; shape < 1 through the boost U^(1/shape). */
static double rng_gamma(rng *r, double shape) {
    if (shape < 1) return rng_gamma(r, shape + 1) * pow(rng_unif(r) + 1e-300, 1.0 / shape);
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9 * d);
    for (;;) {
        double x = rng_normal(r), v = 1 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = rng_unif(r);
        if (log(u + 1e-300) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}

/* A user's profile, activity and taste from r; returns the activity weight. */
static double sim__draw_user(sim *s, rng *r, sim_user *us) {
    const sim_cfg *c = &s->c;
    us->age = rng_skewed(r, N_AGE, 1.3);
    us->gender = rng_int(r, N_GENDER);
    us->city = rng_skewed(r, N_CITY, 2.0);
    us->tier = rng_skewed(r, N_TIER, 1.5);
    us->device = rng_int(r, N_DEVICE);
    double act = exp(1.0 * rng_normal(r)); /* log-normal activity: heavy users exist */
    us->activity = (float)log(act);
    us->price_sens = (float)(s->tier_price_sens[us->tier] + 0.3 * rng_normal(r));
    /* the individual taste, shared by every scenario, and a smaller offset per scenario */
    randvec(r, us->taste, c->taste);
    for (int k = 0; k < c->n_scen; k++) randvec(r, us->off[k], 0.5 * c->taste);
    return act;
}

/* The user's scenario shares: Dirichlet(mix * global shares), from the habits stream. */
static void sim__draw_habits(sim *s, sim_user *us) {
    if (s->c.mix <= 0) return;
    double g[SIM_MAX_SCEN], tot = 0, prev = 0;
    for (int k = 0; k < s->c.n_scen; k++) {
        double share = s->scen_share_cum[k] - prev;
        prev = s->scen_share_cum[k];
        g[k] = rng_gamma(&s->ru, s->c.mix * share) + 1e-12;
        tot += g[k];
    }
    double cum = 0;
    for (int k = 0; k < s->c.n_scen; k++) {
        cum += g[k] / tot;
        us->scen_cum[k] = (float)cum;
    }
    us->scen_cum[s->c.n_scen - 1] = 1.0f;
}

/* A newcomer joins the population (drawn from the habits stream). */
static int sim__add_user(sim *s) {
    if (s->n_users == s->cap_users) {
        int cap = s->cap_users * 2;
        sim_user *p = realloc(s->users, (size_t)cap * sizeof *p);
        if (!p) return -1;
        s->users = p;
        double *q = realloc(s->user_cum, (size_t)cap * sizeof *q);
        if (!q) return -1;
        s->user_cum = q;
        s->cap_users = cap;
    }
    sim_user *us = &s->users[s->n_users];
    memset(us, 0, sizeof *us);
    double w = sim__draw_user(s, &s->ru, us) / s->act_norm;
    sim__draw_habits(s, us);
    s->user_cum[s->n_users] = s->user_cum[s->n_users - 1] + w;
    s->n_users++;
    s->st.users = s->n_users;
    return 0;
}

static int sim__cfg_ok(const sim_cfg *c) {
    return !(c->n_scen < 1 || c->n_scen > SIM_MAX_SCEN || c->n_users < 1 || c->n_items < 1 ||
             c->n_impressions < 0 || c->rate_per_sec <= 0 || c->request_candidates < 1 ||
             c->request_candidates > M3_CAND_MAX || c->difficulty <= 0 || !(c->noise >= 0) ||
             !(c->taste >= 0) || !(c->mix >= 0) || !(c->new_users_per_1k >= 0) ||
             !(c->intent >= 0) || !(c->visit_len < 1e6) || !(c->delay.median_ms >= 0) ||
             !(c->delay.sigma >= 0) || c->immediate_ms < 0);
}

/* The world's fixed tables from the main stream, in the order that pins every later draw:
 * segment tastes, categories, brands, the conversion rotation. */
static void sim__draw_segments(sim *s, rng *r) {
    /* segment tastes: four profile parts sum to a taste of unit variance per dim */
    for (int i = 0; i < N_AGE; i++) { randvec(r, s->age0[i], 0.6); randvec(r, s->age1[i], 0.6); }
    for (int i = 0; i < N_GENDER; i++) { randvec(r, s->gen0[i], 0.5); randvec(r, s->gen1[i], 0.5); }
    for (int i = 0; i < N_TIER; i++) { randvec(r, s->tier0[i], 0.4); randvec(r, s->tier1[i], 0.4); }
    for (int i = 0; i < N_CITY; i++) { randvec(r, s->city0[i], 0.35); randvec(r, s->city1[i], 0.35); }
    for (int i = 0; i < N_CAT; i++) {
        randvec(r, s->catv[i], 0.8);
        s->cat_price[i] = (float)rng_normal(r);
    }
    for (int i = 0; i < N_BRAND; i++) {
        randvec(r, s->brandv[i], 0.6);
        s->brand_quality[i] = (float)rng_normal(r);
    }
    /* conversion taste = 0.6 taste + 0.8 R taste, R a random matrix: partly shared */
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++)
            s->conv_rot[i][j] = (float)((i == j ? 0.6 : 0.0) + 0.8 * rng_normal(r) / sqrt(K));
}

/* g(price, rating), from its own stream so that every other draw stays as it was. */
static void sim__draw_numeric_map(sim *s, uint64_t seed) {
    rng r2;
    rng_seed(&r2, seed ^ 0x1234567ULL);
    for (int j = 0; j < NUM_H; j++) {
        s->num_w1[j][0] = (float)(1.5 * rng_normal(&r2));
        s->num_w1[j][1] = (float)(1.5 * rng_normal(&r2));
        s->num_b1[j] = (float)rng_normal(&r2);
    }
    for (int k = 0; k < K; k++)
        for (int j = 0; j < NUM_H; j++) s->num_w2[k][j] = (float)(rng_normal(&r2) / sqrt(NUM_H));
}

/* The scenarios' relevance maps (scenario conflict), from a stream of their own too. */
static void sim__draw_scenario_maps(sim *s, const sim_cfg *c) {
    static const double own_of[] = {0.4, 0.7, 0.2};   /* home, search, product */
    rng r3;
    rng_seed(&r3, c->seed ^ 0x5ce7a410ULL);
    for (int k = 0; k < SIM_MAX_SCEN; k++) {
        double own = c->conflict * (k < 3 ? own_of[k] : 0.5);
        if (own > 1) own = 1;
        double shared = sqrt(1.0 - own * own);
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++)
                s->scen_rot[k][i][j] =
                    (float)((i == j ? shared : 0.0) + own * rng_normal(&r3) / sqrt(K));
    }
}

/* Context biases, and per scenario: shares, base rates, how much relevance vs quality
 * matters. */
static void sim__set_scenarios(sim *s, const sim_cfg *c, rng *r) {
    for (int h = 0; h < N_HOUR; h++)
        s->hour_bias[h] = (float)(0.35 * sin(6.283185307179586 * (h - 8) / 24.0));
    for (int d = 0; d < N_DEVICE; d++) s->device_bias[d] = (float)(0.25 * rng_normal(r));
    for (int t = 0; t < N_TIER; t++) s->tier_price_sens[t] = (float)(1.2 - 0.3 * t);
    static const float share[] = {0.60f, 0.30f, 0.10f};
    static const float ctr[] = {0.05f, 0.10f, 0.07f};
    static const float cvr[] = {0.10f, 0.15f, 0.22f};
    static const float rel[] = {0.55f, 0.65f, 0.50f};
    static const float qual[] = {0.45f, 0.25f, 0.40f};
    float tot = 0;
    for (int i = 0; i < c->n_scen; i++) {
        float sh = i < 3 ? share[i] : 0.1f;
        tot += sh;
        s->scen_share_cum[i] = tot;
        s->b_click[i] = (float)log((i < 3 ? ctr[i] : 0.06) / (1 - (i < 3 ? ctr[i] : 0.06)));
        s->a_click[i] = i < 3 ? rel[i] : 0.6f;
        s->q_click[i] = i < 3 ? qual[i] : 0.35f;
        s->b_conv[i] = (float)log((i < 3 ? cvr[i] : 0.12) / (1 - (i < 3 ? cvr[i] : 0.12)));
        s->a_conv[i] = 0.5f;
    }
    for (int i = 0; i < c->n_scen; i++) s->scen_share_cum[i] /= tot;
}

/* The initial users (main stream), their habits (own stream) and the initial items.
 * Returns 0, or -1 when out of memory. */
static int sim__draw_population(sim *s, const sim_cfg *c, rng *r) {
    s->cap_users = c->n_users;
    s->users = calloc((size_t)s->cap_users, sizeof *s->users);
    s->user_cum = calloc((size_t)s->cap_users, sizeof *s->user_cum);
    if (!s->users || !s->user_cum) return -1;
    double cum = 0;
    for (int u = 0; u < c->n_users; u++) {
        cum += sim__draw_user(s, r, &s->users[u]);
        s->user_cum[u] = cum;
    }
    for (int u = 0; u < c->n_users; u++) s->user_cum[u] /= cum;
    s->n_users = c->n_users;
    s->st.users = s->n_users;
    s->act_norm = cum;
    rng_seed(&s->ru, c->seed ^ 0x05e75a11ULL);
    rng_seed(&s->rv, c->seed ^ 0x7a15175eULL);
    for (int u = 0; u < c->n_users; u++) sim__draw_habits(s, &s->users[u]);
    for (int i = 0; i < c->n_items; i++)
        if (sim__add_item(s, -1) != 0) return -1;
    return 0;
}

sim *sim_new(const sim_cfg *c, char *errstr, size_t errstr_size) {
    if (!sim__cfg_ok(c)) {
        snprintf(errstr, errstr_size,
                 "sim: bad configuration (scenarios 1..%d, users and items >= 1, rate > 0, "
                 "candidates 1..%d, difficulty > 0; noise, taste, mix, new users and intent >= 0; "
                 "visit length < 1e6)",
                 SIM_MAX_SCEN, M3_CAND_MAX);
        return NULL;
    }
    sim *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->c = *c;
    rng_seed(&s->r, c->seed);
    sim__draw_segments(s, &s->r);
    sim__draw_numeric_map(s, c->seed);
    sim__draw_scenario_maps(s, c);
    sim__set_scenarios(s, c, &s->r);
    if (sim__draw_population(s, c, &s->r) != 0) goto oom;
    s->cands = calloc((size_t)c->request_candidates, sizeof *s->cands);
    if (!s->cands) goto oom;
    s->now_ms = c->start_ms;
    return s;
oom:
    sim_destroy(s);
    snprintf(errstr, errstr_size, "sim: out of memory");
    return NULL;
}

void sim_destroy(sim *s) {
    if (!s) return;
    free(s->users);
    free(s->user_cum);
    free(s->items);
    free(s->heap);
    free(s->cands);
    free(s);
}

void sim_get_stats(const sim *s, sim_stats *st) { *st = s->st; }

/* ---- the heap of due conversions ---- */

static int heap_push(sim *s, const sim_due *d) {
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? s->cap_heap * 2 : 1024;
        sim_due *p = realloc(s->heap, cap * sizeof *p);
        if (!p) return -1;
        s->heap = p;
        s->cap_heap = cap;
    }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (s->heap[parent].ts <= d->ts) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = *d;
    return 0;
}

static sim_due heap_pop(sim *s) {
    sim_due top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l >= n) break;
        m = (l + 1 < n && s->heap[l + 1].ts < s->heap[l].ts) ? l + 1 : l;
        if (s->heap[m].ts >= last.ts) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* ---- drawing events ---- */

static int pick_user(sim *s) {
    /* the initial population's weights sum to 1; newcomers add theirs on top */
    double x = rng_unif(&s->r) * s->user_cum[s->n_users - 1];
    int lo = 0, hi = s->n_users - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (s->user_cum[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* The user of the next impression and the intent of their visit (NULL without visits). */
static int pick_visit(sim *s, const float **intent) {
    *intent = NULL;
    if (s->c.visit_len <= 1) return pick_user(s);
    sim_visit *v = &s->visits[rng_int(&s->r, N_VISITS)];
    if (v->left <= 0) {   /* a new visit: lengths geometric with the configured mean */
        v->user = pick_user(s);
        double q = 1.0 / s->c.visit_len;
        v->left = 1 + (int)floor(log(1.0 - rng_unif(&s->rv)) / log(1.0 - q));
        randvec(&s->rv, v->intent, s->c.intent);
    }
    v->left--;
    *intent = v->intent;
    return v->user;
}

static int pick_item(sim *s) {
    rng *r = &s->r;
    int n = s->n_items;
    if (n > FRESH_ITEMS && rng_unif(r) < FRESH_SHARE) return n - 1 - rng_int(r, FRESH_ITEMS);
    /* popularity by a fixed permutation of the catalogue: index i*7919 mod n */
    int i = rng_skewed(r, n, 2.5);
    return (int)(((int64_t)i * 7919) % n);
}

static int pick_scen(sim *s, const sim_user *u) {
    double x = rng_unif(&s->r);
    const float *cum = s->c.mix > 0 ? u->scen_cum : s->scen_share_cum;
    for (int i = 0; i < s->c.n_scen; i++)
        if (x < cum[i]) return i;
    return s->c.n_scen - 1;
}

/* The user's taste in scenario sc at the current point of the stream. */
static void user_taste(const sim *s, const sim_user *u, const float *intent, int sc, float *t) {
    double days = (double)(s->now_ms - s->c.start_ms) / 86400000.0;
    double a = 6.283185307179586 * s->c.drift * days, ca = cos(a), sa = sin(a);
    for (int k = 0; k < K; k++) {
        double seg0 = s->age0[u->age][k] + s->gen0[u->gender][k] + s->tier0[u->tier][k] +
                      s->city0[u->city][k];
        double seg1 = s->age1[u->age][k] + s->gen1[u->gender][k] + s->tier1[u->tier][k] +
                      s->city1[u->city][k];
        t[k] = (float)(ca * seg0 + sa * seg1 + u->taste[k] + u->off[sc][k] +
                       (intent ? intent[k] : 0.0f));
    }
}

static int local_hour(const sim *s, const sim_user *u) {
    return (int)(((s->now_ms / 3600000) + u->city % 6) % 24);
}

/* out = M v for a (K, K) map of the item latent. */
static void map_latent(const float M[K][K], const float *v, double *out) {
    for (int i = 0; i < K; i++) {
        double m = 0;
        for (int j = 0; j < K; j++) m += M[i][j] * v[j];
        out[i] = m;
    }
}

static void truth_probs(const sim *s, const sim_user *u, const float *intent,
                        const sim_item *it, int sc, int hour, int device, double *pc, double *pv) {
    float t[K];
    user_taste(s, u, intent, sc, t);
    double m[K], mc[K], rel = 0, relc = 0;   /* t . M_sc v (click) and t . R v (conversion) */
    map_latent(s->scen_rot[sc], it->v, m);
    map_latent(s->conv_rot, it->v, mc);
    for (int i = 0; i < K; i++) {
        rel += t[i] * m[i];
        relc += t[i] * mc[i];
    }
    double d = SPREAD * s->c.difficulty;
    double zc = s->b_click[sc] + d * (s->a_click[sc] * rel + s->q_click[sc] * it->quality +
                                      s->hour_bias[hour] + s->device_bias[device] +
                                      0.15 * u->activity);
    double zv = s->b_conv[sc] + d * (s->a_conv[sc] * relc - 0.6 * u->price_sens * it->price +
                                     0.2 * it->quality);
    *pc = sigmoid(zc);
    *pv = sigmoid(zv);
}

/* The reference predictors of sim_truth for this impression, then the learner's update
 * with its click. The learner's estimate t of the user's own taste enters the logit as
 * x . t, x = SPREAD difficulty a_click M_sc v (the logit's gradient in t); one Laplace
 * step: S <- S - h S x x'S / (1 + h x'Sx), t <- t + S x (y - p) / (1 + h x'Sx), h = p(1-p),
 * prior t ~ N(0, (taste^2 + offset^2) I) - the scenario offsets count as taste. */
static void sim__references(const sim *s, sim_user *u, sim_item *it, int sc, int hour,
                            int device, int clicked, sim_truth *tr) {
    sim_user w = *u;
    memset(w.off, 0, sizeof w.off);
    memset(w.taste, 0, sizeof w.taste);
    double pc, pv;
    truth_probs(s, &w, NULL, it, sc, hour, device, &pc, &pv);
    tr->p_click_profile = (float)pc;
    tr->p_conv_profile = (float)pv;
    uint32_t n = 0;
    for (int k = 0; k < s->c.n_scen; k++) n += u->imps[k];
    if (n == 0) {   /* the prior */
        double var = 1.25 * s->c.taste * s->c.taste;
        for (int i = 0; i < K; i++) u->cov[i][i] = (float)var;
    }
    memcpy(w.taste, u->mu, sizeof w.taste);
    truth_probs(s, &w, NULL, it, sc, hour, device, &pc, &pv);
    tr->p_click_learner = (float)pc;
    tr->p_conv_learner = (float)pv;
    tr->user_scen_imps = u->imps[sc];
    tr->user_other_imps = n - u->imps[sc];
    tr->item_imps = it->imps;
    double x[K], sx[K], xsx = 0, gain = SPREAD * s->c.difficulty * s->a_click[sc];
    map_latent(s->scen_rot[sc], it->v, x);
    for (int i = 0; i < K; i++) x[i] *= gain;
    for (int i = 0; i < K; i++) {
        double t = 0;
        for (int j = 0; j < K; j++) t += u->cov[i][j] * x[j];
        sx[i] = t;
        xsx += x[i] * t;
    }
    double h = pc * (1 - pc), den = 1 + h * xsx, g = (clicked ? 1.0 : 0.0) - pc;
    for (int i = 0; i < K; i++) {
        u->mu[i] += (float)(sx[i] * g / den);
        for (int j = 0; j < K; j++) u->cov[i][j] -= (float)(h * sx[i] * sx[j] / den);
    }
    if (u->imps[sc] != UINT32_MAX) u->imps[sc]++;
    if (it->imps != UINT32_MAX) it->imps++;
}

static void set_catkv(m3_catmap *m, const char *name, int64_t v) {
    m3_catkv *kv = &m->kv[m->n++];
    snprintf(kv->name, sizeof kv->name, "%s", name);
    kv->value = v;
}

static void set_numkv(m3_nummap *m, const char *name, float v) {
    m3_numkv *kv = &m->kv[m->n++];
    snprintf(kv->name, sizeof kv->name, "%s", name);
    kv->value = v;
}

static void user_fields(const sim_user *u, m3_catmap *cat, m3_nummap *num) {
    cat->n = 0;
    set_catkv(cat, "age", u->age);
    set_catkv(cat, "gender", u->gender);
    set_catkv(cat, "city", u->city);
    set_catkv(cat, "tier", u->tier);
    num->n = 0;
    set_numkv(num, "activity", u->activity);
}

static void item_fields(const sim_item *it, m3_catmap *cat, m3_nummap *num) {
    cat->n = 0;
    set_catkv(cat, "category", it->cat);
    set_catkv(cat, "brand", it->brand);
    set_catkv(cat, "shop", it->shop);
    num->n = 0;
    set_numkv(num, "price", it->price);
    set_numkv(num, "rating", it->rating);
}

static int draw_device(sim *s, const sim_user *u) {
    return rng_unif(&s->r) < 0.8 ? u->device : rng_int(&s->r, N_DEVICE);
}

static void ctx_fields(m3_catmap *cat, int hour, int device) {
    cat->n = 0;
    set_catkv(cat, "hour", hour);
    set_catkv(cat, "device", device);
}

/* Item ids: initial items 1..n_items, new ones continue the sequence. */
static int64_t item_id_of(int idx) { return 1000000 + idx; }
static int64_t user_id_of(int idx) { return 1 + idx; }

static void make_request(sim *s, m3_event *ev, sim_truth *tr) {
    memset(ev, 0, sizeof *ev);
    ev->type = M3_EV_SCORE_REQUEST;
    m3_score_request *q = &ev->u.req;
    int ui = pick_user(s);
    const sim_user *u = &s->users[ui];
    int sc = pick_scen(s, u);
    snprintf(q->request_id, sizeof q->request_id, "req-%llu-%lld",
             (unsigned long long)s->c.seed, (long long)s->st.requests);
    q->ts_ms = s->now_ms;
    snprintf(q->scenario, sizeof q->scenario, "%s", s->c.scen_names[sc]);
    q->user_id = user_id_of(ui);
    user_fields(u, &q->user_cat, &q->user_num);
    ctx_fields(&q->ctx_cat, local_hour(s, u), draw_device(s, u));
    q->n_cands = s->c.request_candidates;
    q->cands = s->cands;
    for (int i = 0; i < q->n_cands; i++) {
        int ii = pick_item(s);
        q->cands[i].item_id = item_id_of(ii);
        item_fields(&s->items[ii], &q->cands[i].item_cat, &q->cands[i].item_num);
    }
    memset(tr, 0, sizeof *tr);
    tr->scen = sc;
    s->st.requests++;
}

/* The due conversion at the top of the heap as ev. */
static void emit_conversion(sim *s, m3_event *ev, sim_truth *tr) {
    sim_due d = heap_pop(s);
    memset(ev, 0, sizeof *ev);
    ev->type = M3_EV_CONVERSION;
    m3_conversion *cv = &ev->u.conv;
    snprintf(cv->conversion_id, sizeof cv->conversion_id, "conv-%llu-%lld", (unsigned long long)s->c.seed, (long long)d.imp_seq);
    snprintf(cv->impression_id, sizeof cv->impression_id, "imp-%llu-%lld", (unsigned long long)s->c.seed, (long long)d.imp_seq);
    cv->ts_ms = d.ts;
    snprintf(cv->scenario, sizeof cv->scenario, "%s", s->c.scen_names[d.scen]);
    cv->user_id = d.user_id;
    cv->item_id = d.item_id;
    memset(tr, 0, sizeof *tr);
    tr->scen = d.scen;
}

/* New items and newcomers due by now. Returns 0, or -1 when out of memory. */
static int grow(sim *s) {
    s->new_item_credit += s->c.new_items_per_1k / 1000.0;
    while (s->new_item_credit >= 1.0) {
        if (sim__add_item(s, s->seq) != 0) return -1;
        s->new_item_credit -= 1.0;
    }
    s->new_user_credit += s->c.new_users_per_1k / 1000.0;
    while (s->new_user_credit >= 1.0) {
        if (sim__add_user(s) != 0) return -1;
        s->new_user_credit -= 1.0;
    }
    return 0;
}

/* Impression number s->seq of user ui and item ii as ev. */
static void fill_impression(const sim *s, m3_event *ev, int ui, int ii, int sc, int hour,
                            int device, int clicked) {
    memset(ev, 0, sizeof *ev);
    ev->type = M3_EV_IMPRESSION;
    m3_impression *im = &ev->u.imp;
    snprintf(im->impression_id, sizeof im->impression_id, "imp-%llu-%lld", (unsigned long long)s->c.seed, (long long)s->seq);
    im->ts_ms = s->now_ms;
    snprintf(im->scenario, sizeof im->scenario, "%s", s->c.scen_names[sc]);
    im->user_id = user_id_of(ui);
    im->item_id = item_id_of(ii);
    user_fields(&s->users[ui], &im->user_cat, &im->user_num);
    item_fields(&s->items[ii], &im->item_cat, &im->item_num);
    ctx_fields(&im->ctx_cat, hour, device);
    im->clicked = clicked;
}

int sim_next(sim *s, m3_event *ev, sim_truth *tr) {
    int more = s->seq < s->c.n_impressions;
    rng *r = &s->r;
    /* the clock: exponential gaps at the configured rate. The next event's time is drawn
     * first, so that the conversions due before it come out before it (drawn at the same
     * point of the random sequence as when the clock moved with the event itself). */
    if (more && !s->next_drawn) {
        s->next_ms = s->now_ms + (int64_t)(-log(1.0 - rng_unif(r)) * 1000.0 / s->c.rate_per_sec);
        s->next_drawn = 1;
    }
    /* a due conversion comes first when it is not later than the next event */
    if (s->n_heap && (!more || s->heap[0].ts <= s->next_ms)) {
        emit_conversion(s, ev, tr);
        return 1;
    }
    if (!more) return 0;
    s->now_ms = s->next_ms;
    s->next_drawn = 0;
    if (s->c.requests_per_1k > 0 && rng_unif(r) * 1000.0 < s->c.requests_per_1k) {
        make_request(s, ev, tr);
        return 1;
    }
    if (grow(s) != 0) return 0;
    const float *intent;
    int ui = pick_visit(s, &intent), ii = pick_item(s);
    sim_user *u = &s->users[ui];
    int sc = pick_scen(s, u);
    sim_item *it = &s->items[ii];
    int hour = local_hour(s, u), device = draw_device(s, u);
    double pc, pv;
    truth_probs(s, u, intent, it, sc, hour, device, &pc, &pv);
    int clicked = rng_unif(r) < pc;
    int converted = clicked && rng_unif(r) < pv;
    int64_t delay = 0;
    if (converted) {
        /* one normal draw whatever the distribution: every delay setting keeps the stream */
        delay = sim_delay_draw(&s->c.delay, rng_normal(r));
        if (s->c.immediate_ms > 0 && delay <= s->c.immediate_ms) delay = 0;
        sim_due d = {s->now_ms + delay, s->seq, sc, user_id_of(ui), item_id_of(ii)};
        if (heap_push(s, &d) != 0) return 0;
    }
    fill_impression(s, ev, ui, ii, sc, hour, device, clicked);
    tr->scen = sc;
    tr->p_click = (float)pc;
    tr->p_conv = (float)pv;
    tr->clicked = clicked;
    tr->converted = converted;
    tr->in_window = converted && delay <= s->c.window_ms;
    tr->item_age_impressions = it->born < 0 ? INT32_MAX : (int)(s->seq - it->born);
    sim__references(s, u, it, sc, hour, device, clicked, tr);
    s->st.impressions++;
    s->st.clicks += clicked;
    s->st.conversions += converted;
    s->st.late_conversions += converted && !tr->in_window;
    s->seq++;
    return 1;
}

/* ---- conversion delay distributions ---- */

#define SIM__MAX_DELAY_MS (3650.0 * 86400000.0)

int sim_duration_parse(const char *s, int64_t *ms) {
    static const struct { const char *unit; double ms; } units[] = {
        {"ms", 1.0}, {"s", 1000.0}, {"m", 60000.0}, {"h", 3600000.0}, {"d", 86400000.0}, {"", 1.0}};
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0)) return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) != 0) continue;
        double x = v * units[i].ms;
        if (!(x <= SIM__MAX_DELAY_MS)) return -1;
        *ms = (int64_t)llround(x);
        return 0;
    }
    return -1;
}

/* "name=value" pairs of a log-normal spec (after "lognormal:") into d. Returns 0 or -1. */
static int sim__lognormal_args(const char *args, sim_delay *d) {
    char buf[128];
    if (snprintf(buf, sizeof buf, "%s", args) >= (int)sizeof buf) return -1;
    int have_median = 0, have_sigma = 0;
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) return -1;
        *eq = '\0';
        const char *v = eq + 1;
        int64_t ms;
        char *end;
        if (strcmp(kv, "median") == 0 && !have_median++ && sim_duration_parse(v, &ms) == 0 && ms > 0) {
            d->median_ms = (double)ms;
        } else if (strcmp(kv, "sigma") == 0 && !have_sigma++) {
            d->sigma = strtod(v, &end);
            if (end == v || *end || !(d->sigma >= 0 && d->sigma <= 10)) return -1;
        } else {
            return -1;
        }
    }
    return have_median && have_sigma ? 0 : -1;
}

int sim_delay_parse(const char *spec, sim_delay *d, char *errstr, size_t n) {
    sim_delay t = {SIM_DELAY_LOGNORMAL, 0, 0};
    int64_t ms;
    int ok;
    if (strncmp(spec, "lognormal:", 10) == 0) {
        ok = sim__lognormal_args(spec + 10, &t) == 0;
    } else if (strncmp(spec, "fixed:", 6) == 0) {
        t.kind = SIM_DELAY_FIXED;
        ok = sim_duration_parse(spec + 6, &ms) == 0;
        t.median_ms = ok ? (double)ms : 0;
    } else {
        ok = 0;
    }
    if (!ok) {
        snprintf(errstr, n, "conversion delay '%s': expected lognormal:median=DURATION,sigma=X "
                 "(e.g. lognormal:median=2h,sigma=1.5; sigma 0..10) or fixed:DURATION "
                 "(e.g. fixed:10m; units ms s m h d)", spec);
        return -1;
    }
    *d = t;
    return 0;
}

int64_t sim_delay_draw(const sim_delay *d, double z) {
    if (d->kind == SIM_DELAY_FIXED) return (int64_t)d->median_ms;
    double x = d->median_ms * exp(d->sigma * z);
    return (int64_t)(x < SIM__MAX_DELAY_MS ? x : SIM__MAX_DELAY_MS);
}

double sim_delay_tail(const sim_delay *d, int64_t window_ms) {
    if (d->kind == SIM_DELAY_FIXED || d->sigma == 0) return d->median_ms > (double)window_ms;
    if (window_ms <= 0) return 1.0;
    /* P(median e^(sigma z) > w) = P(z > ln(w / median) / sigma) */
    return 0.5 * erfc(log((double)window_ms / d->median_ms) / (d->sigma * sqrt(2.0)));
}
