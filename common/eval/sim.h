/* sim.h - a deterministic stream simulator: multi-scenario impressions, clicks and
 * delayed conversions with known true probabilities (the oracle).
 *
 * The world: users have a latent taste that is mostly a function of their profile
 * fields (age, gender, city, tier) plus an individual part shared by every scenario (so
 * knowing a user in one scenario helps in another) and a smaller scenario-specific
 * offset; items have a latent vector that is mostly a function of their features -
 * category, brand and, through a fixed non-linear map, price and rating - plus noise, a
 * quality and a price. Click and conversion logits use partly different
 * factors (price sensitivity and a rotated taste matter for conversion), so the two
 * tasks partly conflict, and each scenario scores relevance through its own partly
 * rotated map of the item latent (search most, the product page least), so the scenarios
 * partly conflict too. New items arrive steadily; segment tastes drift slowly. Knobs off by
 * default reshape the population: per-user scenario habits, newcomers during the stream,
 * and visits (runs of one user's impressions) with an intent of their own.
 * Conversions follow clicks after an event-time delay drawn from a configurable
 * distribution (sim_delay: log-normal by default, heavy-tailed, some beyond the
 * attribution window). Feature field names match config/ defaults. */
#ifndef M3_SIM_H
#define M3_SIM_H
#include <stddef.h>
#include <stdint.h>
#include "base/event.h"

#define SIM_MAX_SCEN 8

/* A conversion's delay after its click, in event time. */
typedef enum { SIM_DELAY_LOGNORMAL = 0, SIM_DELAY_FIXED = 1 } sim_delay_kind;
typedef struct {
    int kind;                      /* sim_delay_kind */
    double median_ms;              /* log-normal: the median; fixed: the delay */
    double sigma;                  /* log-normal: the std of ln(delay); fixed: unused */
} sim_delay;

/* Parse a delay distribution: "lognormal:median=D,sigma=X" or "fixed:D", D a duration
 * (sim_duration_parse). Returns 0, or -1 with errstr saying what was expected (d is then
 * unchanged). */
int sim_delay_parse(const char *spec, sim_delay *d, char *errstr, size_t n);
/* A duration: a number with a unit ms, s, m, h or d ("2h", "1.5d", "900000ms"); a bare
 * number is milliseconds. 0 .. 3650 days. Returns 0 with *ms, or -1. */
int sim_duration_parse(const char *s, int64_t *ms);
/* The delay for a standard normal draw z (a fixed delay ignores it). */
int64_t sim_delay_draw(const sim_delay *d, double z);
/* The probability that a delay exceeds window_ms. */
double sim_delay_tail(const sim_delay *d, int64_t window_ms);

typedef struct {
    uint64_t seed;                 /* everything follows from it */
    int64_t n_impressions;         /* stream length in impressions */
    int n_scen;                    /* scenarios, with the names below */
    char scen_names[SIM_MAX_SCEN][M3_NAME_MAX];
    int n_users;                   /* default 20000 (~100 impressions each over 2M) */
    int n_items;                   /* items at the start, default 20000 */
    double new_items_per_1k;       /* items arriving per 1000 impressions, default 4 */
    double requests_per_1k;        /* score requests per 1000 impressions, default 2 */
    int request_candidates;        /* candidates per score request, default 10 */
    int64_t start_ms;              /* event time of the first impression */
    double rate_per_sec;           /* impressions per second of event time, default 50 (the
                                      stream spans n_impressions / rate_per_sec seconds) */
    sim_delay delay;               /* a conversion's delay after its click; default
                                      log-normal, median 15 min, sigma 1.2 */
    int64_t immediate_ms;          /* > 0: a conversion due within this delay of its click
                                      comes at the click's event time instead (immediate
                                      labels on the same stream: the same draws, the same
                                      conversions); later ones keep their delay. 0 = off */
    int64_t window_ms;             /* attribution window, for the oracle's CTCVR label */
    double drift;                  /* turns of the segment tastes per day of event time, default 0.1 */
    double difficulty;             /* scales every logit's spread, default 1 */
    double noise;                  /* the part of an item's latent no feature explains, per
                                      latent dimension (std); default 0.25 */
    double taste;                  /* the std of a user's individual taste per latent
                                      dimension (the part no profile field explains, shared by
                                      every scenario); each scenario offset has half of it;
                                      default 0.5 */
    double mix;                    /* how users split their visits over scenarios: each user's
                                      shares are drawn from Dirichlet(mix * global shares), so
                                      small values make habits (mostly home, sometimes search);
                                      0 = every user follows the global shares; default 0.5 */
    double visit_len;              /* mean impressions per visit: a visit is one user's run of
                                      impressions (interleaved with other visits), with an
                                      intent of its own; <= 1 = every impression is drawn on
                                      its own, as a visit of one; default 1 */
    double intent;                 /* the std per latent dimension of a visit's intent, added
                                      to the user's taste in every scenario of that visit (what
                                      the user is after today); default 0 */
    double new_users_per_1k;       /* users arriving per 1000 impressions (the population
                                      grows; each newcomer is as active as an initial user
                                      would be); default 0 */
    double conflict;               /* scales how far each scenario's click relevance departs
                                      from the shared one: scenario s scores t . M_s v with
                                      M_s = sqrt(1 - c_s^2) I + c_s R_s / sqrt(K), R_s random
                                      normal, c_s = conflict * (0.4 home, 0.7 search, 0.2
                                      product, 0.5 others), capped at 1; 0 = one relevance
                                      for all scenarios; default 1 */
} sim_cfg;

/* The truth behind one impression, for the oracle. */
typedef struct {
    int scen;
    float p_click;                 /* true click probability */
    float p_conv;                  /* true conversion probability given a click */
    int clicked, converted;        /* converted: a conversion will follow (any delay) */
    int in_window;                 /* converted within the attribution window */
    int item_age_impressions;      /* impressions since the item arrived (0 for initial items = large) */
    /* Reference predictors, for how much a slice has to gain from knowing the user (both
     * know the world - item latents, scenario maps, segment tastes, context - but not the
     * visit's intent):
     *   profile: without the user's own taste (individual part and scenario offsets) -
     *            the best any model without per-user state can do;
     *   learner: profile plus an online Bayesian estimate of the user's own taste from
     *            every earlier impression of the user's, in any scenario (a Laplace /
     *            extended-Kalman update on the click, prior = the taste's spread), the
     *            label used at once - about the best a per-user state (a user-id row,
     *            UPT) can do with the user's history. */
    float p_click_profile, p_conv_profile;
    float p_click_learner, p_conv_learner;
    /* Counts before this impression, for slicing like the models do. */
    uint32_t user_scen_imps;       /* the user's impressions in this scenario */
    uint32_t user_other_imps;      /* ... in the other scenarios */
    uint32_t item_imps;            /* the item's impressions */
} sim_truth;

typedef struct sim sim;

/* Defaults for n_scen scenarios named home, search, product (more get s3, s4...). */
void sim_cfg_defaults(sim_cfg *c);

/* Create a simulator. On error, NULL is returned and errstr says why. */
sim *sim_new(const sim_cfg *c, char *errstr, size_t errstr_size);
void sim_destroy(sim *s);

/* Next event in event-time order: an impression (truth filled), a conversion or a
 * score request (truth->scen set). Returns 1, or 0 when the stream is over (the
 * conversions still due are emitted before that). ev is overwritten; a ScoreRequest's
 * candidates stay valid until the next call (the simulator owns them). */
int sim_next(sim *s, m3_event *ev, sim_truth *truth);

/* Counters so far. */
typedef struct {
    int64_t impressions, clicks, conversions, late_conversions, requests, items, users;
} sim_stats;
void sim_get_stats(const sim *s, sim_stats *st);

#endif
