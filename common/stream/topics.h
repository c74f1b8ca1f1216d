/* topics.h - the topic names of one pipeline, made from its prefix and scenarios in one
 * place (docs/contract.md): <prefix>.events.<scenario> per scenario, <prefix>.requests,
 * <prefix>.predictions, <prefix>.dlq; <prefix>.changelog (group.changelog); and the group's
 * shared model (group.sync, app/group.h): <prefix>.model (the workers' update blobs) and
 * <prefix>.model.snapshot. The last three are not in `all`: the worker creates them with
 * their own settings (the changelog compacted with the inputs' partition count). */
#ifndef M3_TOPICS_H
#define M3_TOPICS_H
#include <stddef.h>
#include "engine/model.h"   /* M3_MAX_SCEN */

#define TOPICS_NAME_MAX 256
#define TOPICS_MAX (M3_MAX_SCEN + 4)

typedef struct {
    int n_scen;
    /* all[0 .. n_scen-1]: the events topics in scenario order; then requests, predictions,
     * dlq (the order kio_create_topics gets them in). Pointers into `names`. */
    const char *all[TOPICS_MAX];
    const char *requests, *predictions, *dlq;
    const char *changelog;   /* names[n_scen + 3]; not in all[] */
    char names[TOPICS_MAX][TOPICS_NAME_MAX];
    /* the model topics: not in `all` (the group's workers create them, with their own
     * partition count and limits: app/group.h) */
    char model[TOPICS_NAME_MAX], model_snapshot[TOPICS_NAME_MAX];
} topics;

/* Fill t for prefix and n_scen (1..M3_MAX_SCEN) scenario names. Returns 0, or -1 when a
 * name would not fit TOPICS_NAME_MAX - 1 bytes or n_scen is out of range (errstr says so).
 * t holds no pointers to prefix or scen. */
int topics_init(topics *t, const char *prefix, const char *const *scen, int n_scen,
                char *errstr, size_t errstr_size);
/* The number of names in t->all: n_scen + 3. */
static inline int topics_count(const topics *t) { return t->n_scen + 3; }

#endif
