/* esdfm.h - ES-DFM's auxiliary model (join.feedback=esdfm): how likely a click trained at
 * once as a fake negative is a real negative.
 *
 * ES-DFM (Yang et al. 2021) trains a click at once as a negative, a positive copy when its
 * conversion arrives, and weighs the rows with an auxiliary model of the delay: p_dp(x), a
 * conversion still to come after the elapsed time, and p_rn(x), an observed negative being
 * a real one. m3rec's fake negative trains at the click (elapsed time 0, the batch's own
 * linger: a conversion that arrives while its impression is queued is a plain positive),
 * and its weights are divided by the click's expected row count 1 + p_dp (docs/model.md,
 * "Delayed feedback"), so only p_rn is needed: positive 1, fake negative p_rn(x).
 *
 * The model here is a logistic regression of p_rn on the row's features, trained on the
 * settled labels of the fake negatives: 1 when the window closed unconverted, 0 when the
 * conversion arrived. Every categorical key of the row (hashed into ESD_BUCKETS weights),
 * each numeric value (one weight each), the scenario and a bias; lazy Adagrad per weight
 * (engine/emb.h's table, one-wide rows). Its memory is bounded: at most ESD_BUCKETS +
 * M3_MAX_NUM + M3_MAX_SCEN + 1 weights, 27 MB with the table's index and bookkeeping when
 * every bucket is used. It is not durable: a restarted learner starts it again (esdfm
 * then weighs as fnw until it is warm, see learner.c). */
#ifndef M3_ESDFM_H
#define M3_ESDFM_H
#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"

#define ESD_BUCKETS (1u << 18)   /* weights the categorical keys hash into */

typedef struct esd esd;

/* A model for examples with n_cat categorical and n_num numeric slots; max_rows bounds the
 * rows one step sees (more are accepted: buffers grow). NULL with errstr on error. */
esd *esd_new(int n_cat, int n_num, int max_rows, char *errstr, size_t errstr_size);
/* Free it; NULL is a no-op. */
void esd_destroy(esd *m);

/* p_rn(x): the probability that the fake negative of the clicked example ex is a real
 * negative (no conversion within the window), from the weights as they are; in (0, 1). */
float esd_p_rn(const esd *m, const m3_example *ex);

/* One training step: esd_begin(), esd_add() for each settled label (real_negative 1: the
 * window closed unconverted; 0: the conversion arrived), then esd_apply() takes one
 * Adagrad step with the summed gradients. esd_p_rn between add and apply sees the
 * weights before the step. esd_add returns 0, or -1 when out of memory (the label is
 * lost; the model stays usable). */
void esd_begin(esd *m);
int esd_add(esd *m, const m3_example *ex, int real_negative);
void esd_apply(esd *m);

/* Labels trained on so far (added, whether or not their step was applied yet). */
uint64_t esd_labels(const esd *m);

#endif
