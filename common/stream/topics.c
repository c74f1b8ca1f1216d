/* topics.c - the topic names of one pipeline (see topics.h). */
#include "stream/topics.h"

#include <stdio.h>
#include <string.h>

static int topics__set(topics *t, int i, const char *prefix, const char *suffix,
                       const char *scen, char *errstr, size_t errstr_size) {
    int n = scen ? snprintf(t->names[i], TOPICS_NAME_MAX, "%s.%s.%s", prefix, suffix, scen)
                 : snprintf(t->names[i], TOPICS_NAME_MAX, "%s.%s", prefix, suffix);
    if (n < 0 || n >= TOPICS_NAME_MAX) {
        snprintf(errstr, errstr_size, "topic name '%s.%s%s%s' is longer than %d bytes", prefix,
                 suffix, scen ? "." : "", scen ? scen : "", TOPICS_NAME_MAX - 1);
        return -1;
    }
    t->all[i] = t->names[i];
    return 0;
}

int topics_init(topics *t, const char *prefix, const char *const *scen, int n_scen,
                char *errstr, size_t errstr_size) {
    memset(t, 0, sizeof *t);
    if (n_scen < 1 || n_scen > M3_MAX_SCEN) {
        snprintf(errstr, errstr_size, "%d scenarios, expected 1..%d", n_scen, M3_MAX_SCEN);
        return -1;
    }
    t->n_scen = n_scen;
    for (int s = 0; s < n_scen; s++)
        if (topics__set(t, s, prefix, "events", scen[s], errstr, errstr_size) != 0) return -1;
    if (topics__set(t, n_scen, prefix, "requests", NULL, errstr, errstr_size) != 0 ||
        topics__set(t, n_scen + 1, prefix, "predictions", NULL, errstr, errstr_size) != 0 ||
        topics__set(t, n_scen + 2, prefix, "dlq", NULL, errstr, errstr_size) != 0 ||
        topics__set(t, n_scen + 3, prefix, "changelog", NULL, errstr, errstr_size) != 0)
        return -1;
    int a = snprintf(t->model, TOPICS_NAME_MAX, "%s.model", prefix);
    int b = snprintf(t->model_snapshot, TOPICS_NAME_MAX, "%s.model.snapshot", prefix);
    if (a < 0 || a >= TOPICS_NAME_MAX || b < 0 || b >= TOPICS_NAME_MAX) {
        snprintf(errstr, errstr_size, "topic name '%s.model.snapshot' is longer than %d bytes",
                 prefix, TOPICS_NAME_MAX - 1);
        return -1;
    }
    t->changelog = t->all[n_scen + 3];
    t->all[n_scen + 3] = NULL;   /* all[] lists the pipeline's own topics only */
    t->requests = t->all[n_scen];
    t->predictions = t->all[n_scen + 1];
    t->dlq = t->all[n_scen + 2];
    return 0;
}

