/* kio.c - Kafka I/O over librdkafka: mock broker, admin, consumer, producer (see kio.h). */
#include "stream/kio.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <librdkafka/rdkafka_mock.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/props.h"

#define KIO__ERR_MAX 512
#define KIO__QFULL_RETRIES 100   /* x 100 ms of polling: ~10 s bound on a full queue */

/* A client handle of type made from conf, which it then owns. On failure conf is
 * destroyed, NULL is returned and errstr reads "<what>: <librdkafka's reason>". */
static rd_kafka_t *kio__client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
                                   const char *what, char *errstr, size_t n) {
    char err[KIO__ERR_MAX];
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        err_set(errstr, n, "%s: %s", what, err);
    }
    return rk;
}

/* Properties only one side of the client takes (librdkafka's CONFIGURATION.md, C or P).
 * One kafka.* list configures the worker's consumer and producer alike, so each handle
 * skips the other side's keys instead of warning about them. */
static const char *const kio__consumer_only[] = {
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "coordinator.query.interval.ms",
    "max.poll.interval.ms", "enable.auto.commit", "auto.commit.interval.ms",
    "enable.auto.offset.store", "queued.min.messages", "queued.max.messages.kbytes",
    "fetch.wait.max.ms", "fetch.message.max.bytes", "max.partition.fetch.bytes",
    "fetch.max.bytes", "fetch.min.bytes", "fetch.error.backoff.ms", "isolation.level",
    "enable.partition.eof", "check.crcs", "auto.offset.reset", "allow.auto.create.topics",
    "consume.callback.max.messages", NULL};
static const char *const kio__producer_only[] = {
    "transactional.id", "transaction.timeout.ms", "enable.idempotence",
    "enable.gapless.guarantee", "queue.buffering.max.messages", "queue.buffering.max.kbytes",
    "queue.buffering.max.ms", "linger.ms", "message.send.max.retries", "retries",
    "queue.buffering.backpressure.threshold", "compression.codec", "compression.type",
    "batch.num.messages", "batch.size", "delivery.report.only.error", "acks",
    "request.required.acks", "request.timeout.ms", "message.timeout.ms",
    "delivery.timeout.ms", "partitioner", "compression.level", "sticky.partitioning.linger.ms",
    NULL};

static int kio__in(const char *const *list, const char *key) {
    for (; *list; list++)
        if (strcmp(*list, key) == 0) return 1;
    return 0;
}

/* Build a conf: defaults, then the caller's props, then the required settings (so the
 * required ones win). The caller's props of the other side (`skip`) are left out.
 * Returns NULL with errstr filled on an unknown key or bad value. */
static rd_kafka_conf_t *kio__conf(const kio_prop *defaults, int n_defaults,
                                  const kio_prop *props, int n_props,
                                  const kio_prop *required, int n_required,
                                  const char *const *skip, char *errstr, size_t n) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const kio_prop *lists[3] = {defaults, props, required};
    int counts[3] = {n_defaults, n_props, n_required};
    char err[KIO__ERR_MAX];
    for (int l = 0; l < 3; l++) {
        for (int i = 0; i < counts[l]; i++) {
            const kio_prop *p = &lists[l][i];
            if (!p->key || !p->value) {
                err_set(errstr, n, "kafka property %d has a NULL key or value", i);
                rd_kafka_conf_destroy(conf);
                return NULL;
            }
            if (l == 1 && p->key && kio__in(skip, p->key)) continue;
            if (rd_kafka_conf_set(conf, p->key, p->value, err, sizeof(err)) !=
                RD_KAFKA_CONF_OK) {
                err_set(errstr, n, "kafka property %s=%s: %s", p->key,
                        props_kafka_shown(p->key) ? p->value : "***", err);
                rd_kafka_conf_destroy(conf);
                return NULL;
            }
        }
    }
    return conf;
}

/* The last value given for key in props, or NULL. */
static const char *kio__prop_get(const kio_prop *props, int n_props, const char *key) {
    const char *v = NULL;
    for (int i = 0; i < n_props; i++)
        if (props[i].key && strcmp(props[i].key, key) == 0) v = props[i].value;
    return v;
}

/* ---------------------------------------------------------------- mock cluster */

struct kio_mock {
    rd_kafka_t *rk;               /* hosts the mock cluster's threads */
    rd_kafka_mock_cluster_t *mc;
    char *bootstraps;
};

kio_mock *kio_mock_new(int partitions, const char *const *topics, int n_topics,
                       char *errstr, size_t n) {
    char err[KIO__ERR_MAX];
    kio_mock *m = calloc(1, sizeof(*m));
    if (!m) {
        err_set(errstr, n, "out of memory");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The host never connects anywhere: hide its "no bootstrap.servers" notice. */
    rd_kafka_conf_set(conf, "log_level", "4", err, sizeof(err));
    m->rk = kio__client_new(RD_KAFKA_PRODUCER, conf, "mock cluster host", errstr, n);
    conf = NULL; /* now owned by m->rk, or destroyed */
    if (!m->rk) {
        free(m);
        return NULL;
    }
    m->mc = rd_kafka_mock_cluster_new(m->rk, 1);
    if (!m->mc) {
        err_set(errstr, n, "cannot start the mock cluster (librdkafka)");
        kio_mock_destroy(m);
        return NULL;
    }
    m->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(m->mc));
    if (!m->bootstraps) {
        err_set(errstr, n, "out of memory");
        kio_mock_destroy(m);
        return NULL;
    }
    for (int i = 0; i < n_topics; i++) {
        if (kio_mock_create_topic(m, topics[i], partitions, errstr, n) != 0) {
            kio_mock_destroy(m);
            return NULL;
        }
    }
    return m;
}

int kio_mock_set_down(kio_mock *m, int down, char *errstr, size_t n) {
    rd_kafka_resp_err_t e = down ? rd_kafka_mock_broker_set_down(m->mc, 1)
                                 : rd_kafka_mock_broker_set_up(m->mc, 1);
    if (!e) return 0;
    err_set(errstr, n, "mock broker %s: %s", down ? "down" : "up", rd_kafka_err2str(e));
    return -1;
}

const char *kio_mock_bootstraps(const kio_mock *m) {
    return m->bootstraps;
}

int kio_mock_create_topic(kio_mock *m, const char *topic, int partitions,
                          char *errstr, size_t n) {
    if (partitions < 1) {
        err_set(errstr, n, "topic %s: partitions must be >= 1, got %d", topic, partitions);
        return -1;
    }
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(m->mc, topic, partitions, 1);
    if (err) {
        err_set(errstr, n, "mock topic %s: %s", topic, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

void kio_mock_destroy(kio_mock *m) {
    if (!m) return;
    if (m->mc) rd_kafka_mock_cluster_destroy(m->mc);
    if (m->rk) rd_kafka_destroy(m->rk);
    free(m->bootstraps);
    free(m);
}

/* ---------------------------------------------------------------- admin */

/* Errors reported by an admin/metadata handle; served by rd_kafka_poll on our thread. */
typedef struct {
    char first[KIO__ERR_MAX];  /* first specific error (not "all brokers down") */
    char last[KIO__ERR_MAX];
} kio__errcap;

static void kio__errcap_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    kio__errcap *cap = opaque;
    (void)rk;
    if (!cap->first[0] && err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        snprintf(cap->first, sizeof(cap->first), "%s", reason);
    snprintf(cap->last, sizeof(cap->last), "%s", reason);
}

/* A short-lived producer handle for admin and metadata requests. */
static rd_kafka_t *kio__admin_new(const kio_prop *props, int n_props, kio__errcap *cap,
                                  char *errstr, size_t n) {
    rd_kafka_conf_t *conf = kio__conf(NULL, 0, props, n_props, NULL, 0, kio__consumer_only, errstr, n);
    if (!conf) return NULL;
    rd_kafka_conf_set_error_cb(conf, kio__errcap_cb);
    rd_kafka_conf_set_opaque(conf, cap);
    return kio__client_new(RD_KAFKA_PRODUCER, conf, "kafka client", errstr, n);
}

static void kio__unreachable(char *errstr, size_t n, const kio_prop *props, int n_props,
                             int timeout_ms, rd_kafka_resp_err_t err, rd_kafka_t *rk,
                             kio__errcap *cap) {
    const char *bs = kio__prop_get(props, n_props, "bootstrap.servers");
    if (!bs) bs = kio__prop_get(props, n_props, "metadata.broker.list");
    rd_kafka_poll(rk, 0); /* serve error_cb: the connection errors tell why */
    const char *why = cap->first[0] ? cap->first : cap->last;
    err_set(errstr, n, "cannot reach Kafka at %s within %d ms: %s%s%s%s",
             bs ? bs : "(bootstrap.servers not set)", timeout_ms, rd_kafka_err2str(err),
             why[0] ? " (" : "", why, why[0] ? ")" : "");
}

/* Wait (bounded) until metadata lists every topic with its partitions. Returns 0 or -1. */
static int kio__wait_visible(rd_kafka_t *rk, const char *const *topics, int n_topics,
                             int timeout_ms, char *errstr, size_t n) {
    int64_t deadline = clk_mono_ms() + timeout_ms;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        int missing = -1;
        if (rd_kafka_metadata(rk, 1, NULL, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            missing = 0;
            for (int i = 0; i < n_topics && !missing; i++) {
                int found = 0;
                for (int t = 0; t < md->topic_cnt; t++)
                    found |= strcmp(md->topics[t].topic, topics[i]) == 0 && !md->topics[t].err &&
                             md->topics[t].partition_cnt > 0;
                if (!found) missing = i + 1;
            }
            rd_kafka_metadata_destroy(md);
        }
        if (missing == 0) return 0;
        if (clk_mono_ms() >= deadline) {
            err_set(errstr, n, "created topic %s is not visible in the metadata after %d ms",
                     missing > 0 ? topics[missing - 1] : topics[0], timeout_ms);
            return -1;
        }
        struct timespec d = {0, 100 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
}

int kio_create_topics(const kio_prop *props, int n_props, const char *const *topics,
                      int n_topics, int partitions, int timeout_ms, char *errstr, size_t n) {
    return kio_create_topics_cfg(props, n_props, topics, n_topics, partitions, NULL, 0,
                                 timeout_ms, errstr, n);
}

int kio_create_topics_cfg(const kio_prop *props, int n_props, const char *const *topics,
                          int n_topics, int partitions, const kio_prop *configs, int n_configs,
                          int timeout_ms, char *errstr, size_t n) {
    kio__errcap cap = {{0}, {0}};
    char err[KIO__ERR_MAX];
    int rc = -1;
    rd_kafka_NewTopic_t **nt = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_t *rk = kio__admin_new(props, n_props, &cap, errstr, n);
    if (!rk) return -1;
    if (n_topics <= 0) {
        rc = 0;
        goto out;
    }
    nt = calloc((size_t)n_topics, sizeof(*nt));
    if (!nt) {
        err_set(errstr, n, "out of memory");
        goto out;
    }
    for (int i = 0; i < n_topics; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, -1, err, sizeof(err));
        if (!nt[i]) {
            err_set(errstr, n, "topic %s: %s", topics[i], err);
            goto out;
        }
        for (int c = 0; c < n_configs; c++)
            if (rd_kafka_NewTopic_set_config(nt[i], configs[c].key, configs[c].value)) {
                err_set(errstr, n, "topic %s: config %s=%s refused", topics[i], configs[c].key,
                        configs[c].value);
                goto out;
            }
    }
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    if (rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, err, sizeof(err)) ||
        rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, err, sizeof(err))) {
        err_set(errstr, n, "CreateTopics options: %s", err);
        goto out;
    }
    /* Tell "unreachable" apart from "the broker does not answer CreateTopics". */
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t merr = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (merr) {
        kio__unreachable(errstr, n, props, n_props, timeout_ms, merr, rk, &cap);
        goto out;
    }
    rd_kafka_metadata_destroy(md);
    q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, nt, (size_t)n_topics, opts, q);
    /* The request timeout bounds the result; the margin covers its delivery. */
    ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    if (!ev || rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        err_set(errstr, n, "CreateTopics got no answer within %d ms (the broker is "
                 "reachable; it may not support CreateTopics, as librdkafka's mock "
                 "cluster does not)", timeout_ms);
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        err_set(errstr, n, "CreateTopics: %s", rd_kafka_event_error_string(ev));
        goto out;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
        if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            const char *s = rd_kafka_topic_result_error_string(res[i]);
            err_set(errstr, n, "cannot create topic %s: %s",
                     rd_kafka_topic_result_name(res[i]), s ? s : rd_kafka_err2str(e));
            goto out;
        }
    }
    /* The controller answers before every broker's metadata lists the new topics; wait
     * until they are visible, so a consumer started next finds them. */
    rc = kio__wait_visible(rk, topics, n_topics, timeout_ms, errstr, n);
out:
    if (ev) rd_kafka_event_destroy(ev);
    if (q) rd_kafka_queue_destroy(q);
    if (opts) rd_kafka_AdminOptions_destroy(opts);
    if (nt) {
        for (int i = 0; i < n_topics; i++)
            if (nt[i]) rd_kafka_NewTopic_destroy(nt[i]);
        free(nt);
    }
    rd_kafka_destroy(rk);
    return rc;
}

/* Partition count of topic in md, 0 if it does not exist, -1 on another topic error. */
static int kio__md_partitions(const struct rd_kafka_metadata *md, const char *topic,
                              rd_kafka_resp_err_t *err) {
    *err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) != 0) continue;
        if (md->topics[i].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return 0;
        if (md->topics[i].err) {
            *err = md->topics[i].err;
            return -1;
        }
        return md->topics[i].partition_cnt;
    }
    return 0;
}

int kio_check_topics(const kio_prop *props, int n_props, const char *const *topics,
                     int n_topics, int timeout_ms, char *errstr, size_t n) {
    kio__errcap cap = {{0}, {0}};
    const struct rd_kafka_metadata *md = NULL;
    int rc = -1;
    if (n_topics <= 0) {
        err_set(errstr, n, "no topics to check");
        return -1;
    }
    rd_kafka_t *rk = kio__admin_new(props, n_props, &cap, errstr, n);
    if (!rk) return -1;
    /* all_topics=1: a request naming topics could make the broker auto-create them. */
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    if (err) {
        kio__unreachable(errstr, n, props, n_props, timeout_ms, err, rk, &cap);
        goto out;
    }
    int ref = -1, ref_cnt = 0; /* the first existing topic: the partition count to match */
    for (int i = 0; i < n_topics && ref < 0; i++) {
        rd_kafka_resp_err_t terr;
        int cnt = kio__md_partitions(md, topics[i], &terr);
        if (cnt > 0) {
            ref = i;
            ref_cnt = cnt;
        }
    }
    for (int i = 0; i < n_topics; i++) {
        rd_kafka_resp_err_t terr;
        int cnt = kio__md_partitions(md, topics[i], &terr);
        if (cnt < 0) {
            err_set(errstr, n, "topic %s: %s", topics[i], rd_kafka_err2str(terr));
            goto out;
        }
        if (cnt == 0) {
            if (ref >= 0)
                err_set(errstr, n, "topic %s does not exist (create it with %d partitions like %s)",
                         topics[i], ref_cnt, topics[ref]);
            else if (n_topics > 1)
                err_set(errstr, n, "topic %s does not exist (create all %d topics with the "
                         "same partition count)", topics[i], n_topics);
            else
                err_set(errstr, n, "topic %s does not exist (create it first)", topics[i]);
            goto out;
        }
        if (cnt != ref_cnt) {
            err_set(errstr, n, "topics must have equal partition counts for co-partitioning: "
                     "%s has %d, %s has %d", topics[ref], ref_cnt, topics[i], cnt);
            goto out;
        }
    }
    rc = ref_cnt;
out:
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---------------------------------------------------------------- consumer */

struct kio_consumer {
    rd_kafka_t *rk;
    int assigned;            /* partitions in the current assignment */
    unsigned rebalances;     /* assignments and revocations served so far */
    kio_assign_fn on_assign;
    kio_revoke_fn on_revoke;
    void *hook_opaque;
    int fatal;               /* a fatal error was reported */
    int paused;              /* kio_consumer_pause: every assignment is paused */
    rd_kafka_topic_partition_list_t *paused_parts;   /* every partition paused since: the
                                        pause outlives a revocation in librdkafka */
    rd_kafka_topic_partition_list_t *held_parts;     /* paused one by one (kio_consumer_hold) */
    rd_kafka_topic_partition_list_t *assignment;     /* the current one, NULL when none */
    long long resets;        /* offset out of range: the position was reset */
    char last_reset[KIO__ERR_MAX];
    long long errors;
    char last_err[KIO__ERR_MAX];
};

static void kio__consumer_error(kio_consumer *c, const char *fmt, ...) {
    va_list ap;
    c->errors++;
    va_start(ap, fmt);
    vsnprintf(c->last_err, sizeof(c->last_err), fmt, ap);
    va_end(ap);
}

/* Pause parts too (a new assignment while paused) and remember them for the resume. */
static void kio__pause_more(kio_consumer *c, const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_resp_err_t e = rd_kafka_pause_partitions(c->rk, (rd_kafka_topic_partition_list_t *)parts);
    if (e) kio__consumer_error(c, "pause: %s", rd_kafka_err2str(e));
    for (int i = 0; i < parts->cnt; i++)
        if (!rd_kafka_topic_partition_list_find(c->paused_parts, parts->elems[i].topic,
                                                parts->elems[i].partition))
            rd_kafka_topic_partition_list_add(c->paused_parts, parts->elems[i].topic,
                                              parts->elems[i].partition);
}

/* Remember the assignment (kio_consumer_lag asks it); NULL: none. */
static void kio__set_assignment(kio_consumer *c, const rd_kafka_topic_partition_list_t *parts) {
    if (c->assignment) rd_kafka_topic_partition_list_destroy(c->assignment);
    c->assignment = parts ? rd_kafka_topic_partition_list_copy(parts) : NULL;
}

/* Resume parts; a failure is counted. */
static void kio__resume_list(kio_consumer *c, rd_kafka_topic_partition_list_t *parts) {
    if (!parts->cnt) return;
    rd_kafka_resp_err_t e = rd_kafka_resume_partitions(c->rk, parts);
    if (e) kio__consumer_error(c, "resume: %s", rd_kafka_err2str(e));
}

/* A revocation ends every hold: the partitions are resumed now unless the whole consumer
 * is paused (its resume covers them), since librdkafka keeps a revoked partition paused
 * and a later assignment of it would not fetch. */
static void kio__release_holds(kio_consumer *c) {
    if (!c->paused) {
        kio__resume_list(c, c->held_parts);
        for (int i = 0; i < c->held_parts->cnt; i++)
            rd_kafka_topic_partition_list_del(c->paused_parts, c->held_parts->elems[i].topic,
                          c->held_parts->elems[i].partition);
    }
    rd_kafka_topic_partition_list_destroy(c->held_parts);
    c->held_parts = rd_kafka_topic_partition_list_new(16);
}

/* Eager (range) protocol: the whole assignment is replaced at each rebalance. */
static void kio__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts, void *opaque) {
    kio_consumer *c = opaque;
    rd_kafka_resp_err_t e;
    c->rebalances++;
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        if (c->on_assign) c->on_assign(c->hook_opaque, rk, parts);
        e = rd_kafka_assign(rk, parts);
        if (e) kio__consumer_error(c, "assign: %s", rd_kafka_err2str(e));
        else c->assigned = parts->cnt;
        kio__set_assignment(c, e ? NULL : parts);
        if (!e && c->paused) kio__pause_more(c, parts);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        if (c->on_revoke) c->on_revoke(c->hook_opaque, rk, parts);
        /* Commit what was stored while the partitions are still ours (lag monitoring). */
        e = rd_kafka_commit(rk, NULL, 1);
        if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
            kio__consumer_error(c, "commit on revoke: %s", rd_kafka_err2str(e));
        kio__release_holds(c);
        rd_kafka_assign(rk, NULL);
        c->assigned = 0;
        kio__set_assignment(c, NULL);
        break;
    default:
        kio__consumer_error(c, "rebalance: %s", rd_kafka_err2str(err));
        kio__release_holds(c);
        rd_kafka_assign(rk, NULL);
        c->assigned = 0;
        kio__set_assignment(c, NULL);
        break;
    }
}

static void kio__commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *offsets, void *opaque) {
    kio_consumer *c = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    if (err) {
        kio__consumer_error(c, "offset commit: %s", rd_kafka_err2str(err));
        return;
    }
    for (int i = 0; offsets && i < offsets->cnt; i++)
        if (offsets->elems[i].err)
            kio__consumer_error(c, "offset commit %s [%d]: %s", offsets->elems[i].topic,
                                (int)offsets->elems[i].partition,
                                rd_kafka_err2str(offsets->elems[i].err));
}

static void kio__consumer_error_cb(rd_kafka_t *rk, int err, const char *reason,
                                   void *opaque) {
    kio_consumer *c = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__FATAL) c->fatal = 1;
    kio__consumer_error(c, "%s", reason);
}

static void kio__consumer_free(kio_consumer *c) {
    if (c->paused_parts) rd_kafka_topic_partition_list_destroy(c->paused_parts);
    if (c->held_parts) rd_kafka_topic_partition_list_destroy(c->held_parts);
    if (c->assignment) rd_kafka_topic_partition_list_destroy(c->assignment);
    free(c);
}

kio_consumer *kio_consumer_new(const kio_prop *props, int n_props,
                               const char *const *topics, int n_topics,
                               char *errstr, size_t n) {
    static const kio_prop defaults[] = {{"auto.offset.reset", "earliest"}};
    static const kio_prop required[] = {
        {"partition.assignment.strategy", "range"},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
    };
    const char *gid = kio__prop_get(props, n_props, "group.id");
    if (!gid || !gid[0]) {
        err_set(errstr, n, "kafka property group.id is required for the consumer");
        return NULL;
    }
    if (n_topics <= 0) {
        err_set(errstr, n, "consumer: no topics to subscribe to");
        return NULL;
    }
    kio_consumer *c = calloc(1, sizeof(*c));
    if (!c || !(c->paused_parts = rd_kafka_topic_partition_list_new(16)) ||
        !(c->held_parts = rd_kafka_topic_partition_list_new(16))) {
        if (c) kio__consumer_free(c);
        err_set(errstr, n, "out of memory");
        return NULL;
    }
    rd_kafka_conf_t *conf = kio__conf(defaults, 1, props, n_props, required, 3, kio__producer_only, errstr, n);
    if (!conf) {
        kio__consumer_free(c);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, kio__rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, kio__commit_cb);
    rd_kafka_conf_set_error_cb(conf, kio__consumer_error_cb);
    rd_kafka_conf_set_opaque(conf, c);
    c->rk = kio__client_new(RD_KAFKA_CONSUMER, conf, "consumer", errstr, n);
    conf = NULL; /* now owned by c->rk, or destroyed */
    if (!c->rk) {
        kio__consumer_free(c);
        return NULL;
    }
    rd_kafka_poll_set_consumer(c->rk); /* one queue: callbacks are served by our poll */

    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(n_topics);
    for (int i = 0; i < n_topics; i++)
        rd_kafka_topic_partition_list_add(sub, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (e) {
        err_set(errstr, n, "subscribe: %s", rd_kafka_err2str(e));
        rd_kafka_destroy(c->rk);
        kio__consumer_free(c);
        return NULL;
    }
    return c;
}

/* Destroy the n messages polled so far and not handed out. Returns 0 (the new count). */
static int kio__drop(rd_kafka_message_t **msgs, int n) {
    for (int i = 0; i < n; i++) rd_kafka_message_destroy(msgs[i]);
    return 0;
}

int kio_consumer_poll(kio_consumer *c, rd_kafka_message_t **msgs, int max, int timeout_ms,
                      char *errstr, size_t n) {
    int got = 0;
    int64_t deadline = clk_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    unsigned rebalances = c->rebalances;
    while (got < max) {
        if (c->rebalances != rebalances) {
            /* Messages fetched under the assignment that just ended were not handed out:
             * drop them. Their offsets were not stored, so whoever owns the partitions now
             * reads them again (and a revocation handler saw a consistent position). */
            got = kio__drop(msgs, got);
            rebalances = c->rebalances;
        }
        /* Wait (up to the deadline) only for the first message; then take what is there. */
        int wait = 0;
        if (got == 0) {
            int64_t left = deadline - clk_mono_ms();
            wait = left > 0 ? (int)left : 0;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, wait);
        if (m && c->rebalances != rebalances) {
            got = kio__drop(msgs, got);
            rebalances = c->rebalances;
        }
        if (!m) {
            if (got > 0 || wait == 0) break;
            continue; /* woke early without a message: wait out the rest */
        }
        if (!m->err) {
            msgs[got++] = m; /* ownership to the caller */
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__FATAL || c->fatal) {
            char fe[KIO__ERR_MAX];
            rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(c->rk, fe, sizeof(fe));
            err_set(errstr, n, "fatal consumer error: %s",
                     ferr ? fe : rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            kio__drop(msgs, got);
            return -1;
        }
        if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
            m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
            c->resets++;
            snprintf(c->last_reset, sizeof(c->last_reset), "%s [%d]: %s",
                     m->rkt ? rd_kafka_topic_name(m->rkt) : "-", (int)m->partition,
                     rd_kafka_message_errstr(m));
        }
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            kio__consumer_error(c, "consume %s [%d]: %s",
                                m->rkt ? rd_kafka_topic_name(m->rkt) : "-",
                                (int)m->partition, rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
    }
    if (c->rebalances != rebalances)   /* the last poll served a rebalance */
        got = kio__drop(msgs, got);
    if (got == 0 && c->fatal) {
        char fe[KIO__ERR_MAX];
        rd_kafka_fatal_error(c->rk, fe, sizeof(fe));
        err_set(errstr, n, "fatal consumer error: %s", fe);
        return -1;
    }
    return got;
}

int kio_consumer_store(kio_consumer *c, const rd_kafka_message_t *msg,
                       char *errstr, size_t n) {
    (void)c;
    rd_kafka_resp_err_t e = rd_kafka_offset_store(msg->rkt, msg->partition, msg->offset);
    if (e) {
        err_set(errstr, n, "store offset %s [%d] %lld: %s", rd_kafka_topic_name(msg->rkt),
                 (int)msg->partition, (long long)msg->offset, rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

int kio_consumer_store_offset(kio_consumer *c, const char *topic, int32_t partition,
                              int64_t next_offset, char *errstr, size_t n) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = next_offset;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
    if (!e) e = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        err_set(errstr, n, "store offset %s [%d] %lld: %s", topic, (int)partition,
                 (long long)next_offset, rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

int kio_consumer_commit(kio_consumer *c, char *errstr, size_t n) {
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, NULL, 1);
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        err_set(errstr, n, "commit: %s", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

int kio_consumer_assigned(const kio_consumer *c) {
    return c->assigned;
}

int kio_consumer_pause(kio_consumer *c, int pause, char *errstr, size_t n) {
    pause = pause != 0;
    if (pause == c->paused) return 0;
    rd_kafka_resp_err_t e;
    if (pause) {
        rd_kafka_topic_partition_list_t *parts = NULL;
        e = rd_kafka_assignment(c->rk, &parts);
        if (!e) {
            long long before = c->errors;
            kio__pause_more(c, parts);
            if (c->errors != before) e = RD_KAFKA_RESP_ERR__FAIL;
        }
        if (parts) rd_kafka_topic_partition_list_destroy(parts);
    } else {
        /* every partition paused since, assigned now or not: librdkafka keeps a revoked
         * partition paused, and a later assignment of it would not fetch */
        rd_kafka_topic_partition_list_t *held = c->held_parts;
        rd_kafka_topic_partition_list_t *go = rd_kafka_topic_partition_list_new(16);
        for (int i = 0; i < c->paused_parts->cnt; i++) {
            const rd_kafka_topic_partition_t *p = &c->paused_parts->elems[i];
            if (!rd_kafka_topic_partition_list_find(held, p->topic, p->partition))
                rd_kafka_topic_partition_list_add(go, p->topic, p->partition);
        }
        e = go->cnt ? rd_kafka_resume_partitions(c->rk, go) : RD_KAFKA_RESP_ERR_NO_ERROR;
        if (!e) {   /* the held ones stay paused */
            rd_kafka_topic_partition_list_destroy(c->paused_parts);
            c->paused_parts = rd_kafka_topic_partition_list_copy(held);
        }
        rd_kafka_topic_partition_list_destroy(go);
    }
    if (e) {
        err_set(errstr, n, "%s: %s", pause ? "pause" : "resume",
                pause ? c->last_err : rd_kafka_err2str(e));
        return -1;
    }
    c->paused = pause;
    return 0;
}

int kio_consumer_paused(const kio_consumer *c) {
    return c->paused;
}

int kio_consumer_hold(kio_consumer *c, const char *topic, int32_t partition, int hold,
                      char *errstr, size_t n) {
    int held = rd_kafka_topic_partition_list_find(c->held_parts, topic, partition) != NULL;
    if (!!hold == held) return 0;
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, topic, partition);
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (hold) {
        e = rd_kafka_pause_partitions(c->rk, one);
        if (!e) {
            rd_kafka_topic_partition_list_add(c->held_parts, topic, partition);
            if (!rd_kafka_topic_partition_list_find(c->paused_parts, topic, partition))
                rd_kafka_topic_partition_list_add(c->paused_parts, topic, partition);
        }
    } else {
        rd_kafka_topic_partition_list_del(c->held_parts, topic, partition);
        if (!c->paused) {   /* else the consumer's resume covers it */
            e = rd_kafka_resume_partitions(c->rk, one);
            rd_kafka_topic_partition_list_del(c->paused_parts, topic, partition);
        }
    }
    if (!e) e = one->elems[0].err;
    rd_kafka_topic_partition_list_destroy(one);
    if (e) {
        err_set(errstr, n, "%s %s [%d]: %s", hold ? "pause" : "resume", topic, (int)partition,
                rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

int64_t kio_consumer_lag(kio_consumer *c, const char *topic, int32_t partition,
                         int64_t position) {
    if (!c->assignment || !rd_kafka_topic_partition_list_find(c->assignment, topic, partition))
        return 0;
    int64_t lo = -1, hi = -1;
    if (rd_kafka_get_watermark_offsets(c->rk, topic, partition, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        hi < 0)
        return -1;
    if (position < 0)   /* where it starts is not known: an empty log has nothing to wait for */
        return lo >= 0 && hi > lo ? -1 : 0;
    return hi > position ? hi - position : 0;
}

unsigned kio_consumer_rebalances(const kio_consumer *c) {
    return c->rebalances;
}

long long kio_consumer_resets(const kio_consumer *c, char *last, size_t last_size) {
    if (last && last_size) snprintf(last, last_size, "%s", c->last_reset);
    return c->resets;
}

long long kio_consumer_errors(kio_consumer *c, char *last, size_t last_size) {
    if (last && last_size) snprintf(last, last_size, "%s", c->last_err);
    return c->errors;
}

rd_kafka_t *kio_consumer_handle(kio_consumer *c) {
    return c->rk;
}

void kio_consumer_set_rebalance_hooks(kio_consumer *c, kio_assign_fn on_assign,
                                      kio_revoke_fn on_revoke, void *opaque) {
    c->on_assign = on_assign;
    c->on_revoke = on_revoke;
    c->hook_opaque = opaque;
}

void kio_consumer_close(kio_consumer *c) {
    if (!c) return;
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    kio__consumer_free(c);
}

#define KIO__ABANDON_MS 5000   /* how long an abandoned consumer's destruction is waited for */

typedef struct {
    rd_kafka_t *rk;
    atomic_int done;
} kio__destroyer;

static void *kio__destroy_main(void *arg) {
    kio__destroyer *d = arg;
    rd_kafka_destroy_flags(d->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    atomic_store(&d->done, 1);
    return NULL;
}

/* librdkafka 2.0.2's destruction of a consumer whose broker went away can spin forever:
 * its main thread never ends and rd_kafka_destroy joins it (caught by its stacks in
 * test_worker's outage-limit case on a loaded machine, about one run in three). The
 * assignment is cleared first (local: it stops the fetchers), and the destruction runs on
 * a thread of its own, waited for at most KIO__ABANDON_MS; past that the handle is left to
 * the process, which is on its way out (the abandon is for a worker that stops). */
void kio_consumer_abandon(kio_consumer *c) {
    if (!c) return;
    rd_kafka_assign(c->rk, NULL);
    kio__destroyer *d = malloc(sizeof(*d));
    pthread_t t;
    if (!d || (d->rk = c->rk, atomic_init(&d->done, 0),
               pthread_create(&t, NULL, kio__destroy_main, d) != 0)) {
        rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        free(d);
        kio__consumer_free(c);
        return;
    }
    int64_t end = clk_mono_ms() + KIO__ABANDON_MS;
    while (!atomic_load(&d->done) && clk_mono_ms() < end) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&d->done)) {
        pthread_join(t, NULL);
        free(d);
    } else {
        pthread_detach(t);   /* d stays with the thread */
        fprintf(stderr, "kio: the consumer was not destroyed within %d ms of being abandoned "
                "(a librdkafka hang after the broker went away); the process leaves it\n",
                KIO__ABANDON_MS);
    }
    kio__consumer_free(c);
}

/* ---------------------------------------------------------------- lag probe */

struct kio_probe {
    rd_kafka_t *rk;   /* a consumer of the group that never joins it: it only reads offsets */
};

kio_probe *kio_probe_new(const kio_prop *props, int n_props, const char *group,
                         char *errstr, size_t n) {
    const kio_prop required[] = {{"group.id", group}, {"enable.auto.commit", "false"}};
    kio_probe *p = calloc(1, sizeof(*p));
    if (!p) {
        err_set(errstr, n, "out of memory");
        return NULL;
    }
    rd_kafka_conf_t *conf = kio__conf(NULL, 0, props, n_props, required, 2, kio__producer_only,
                                      errstr, n);
    if (conf) p->rk = kio__client_new(RD_KAFKA_CONSUMER, conf, "lag probe", errstr, n);
    if (!p->rk) {
        free(p);
        return NULL;
    }
    return p;
}

int64_t kio_probe_lag(kio_probe *p, const char *topic, int32_t partition, int timeout_ms,
                      char *errstr, size_t n) {
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(p->rk, topic, partition, &lo, &hi,
                                                             timeout_ms);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    if (!e) e = rd_kafka_committed(p->rk, l, timeout_ms);
    int64_t committed = l->elems[0].offset;
    if (!e) e = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        err_set(errstr, n, "lag of %s [%d]: %s", topic, (int)partition, rd_kafka_err2str(e));
        return -1;
    }
    if (committed < lo) committed = lo;   /* none (-1001), or below what the log still has */
    return hi > committed ? hi - committed : 0;
}

void kio_probe_destroy(kio_probe *p) {
    if (!p) return;
    rd_kafka_destroy(p->rk);
    free(p);
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    char *topic;
    int32_t partition;
    int active;        /* read now; a removed partition stays assigned, paused */
    int at_end;        /* the last thing fetched of it was its end */
} kio__rpart;

/* A removed partition is paused, not unassigned: librdkafka stops an unassigned partition
 * asynchronously (clearing its queue's forwarding when the stop is served, and refusing a
 * new start until it is done), so an unassign followed by a quick re-add could lose the
 * re-added partition's messages. Pause, seek and resume are ordered by op versions. */
struct kio_reader {
    rd_kafka_t *rk;           /* a consumer with a group.id it never joins: assign() needs one */
    rd_kafka_queue_t *q;      /* the reader's own queue, fed by its partitions' queues */
    kio__rpart *parts;
    int n_parts, cap_parts;
};

/* Properties a reader takes none of: it joins no group and sets how it reads itself. */
static const char *const kio__reader_skip[] = {
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "max.poll.interval.ms", "enable.auto.commit",
    "auto.commit.interval.ms", "enable.auto.offset.store", "isolation.level",
    "enable.partition.eof", "auto.offset.reset", "group.protocol.type",
    "coordinator.query.interval.ms", NULL};

kio_reader *kio_reader_new(const kio_prop *props, int n_props, int read_committed,
                           char *errstr, size_t n) {
    const kio_prop required[] = {
        {"group.id", "m3rec-reader"},   /* never joined, nothing committed */
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "error"},
        {"isolation.level", read_committed ? "read_committed" : "read_uncommitted"}};
    kio_reader *r = calloc(1, sizeof(*r));
    kio_prop *kept = calloc((size_t)(n_props > 0 ? n_props : 1), sizeof(*kept));
    if (!r || !kept) {
        free(r);
        free(kept);
        err_set(errstr, n, "out of memory");
        return NULL;
    }
    int n_kept = 0;
    for (int i = 0; i < n_props; i++)
        if (!props[i].key || !kio__in(kio__reader_skip, props[i].key)) kept[n_kept++] = props[i];
    rd_kafka_conf_t *conf = kio__conf(NULL, 0, kept, n_kept, required,
                                      (int)(sizeof(required) / sizeof(required[0])),
                                      kio__producer_only, errstr, n);
    free(kept);
    if (conf) r->rk = kio__client_new(RD_KAFKA_CONSUMER, conf, "reader", errstr, n);
    if (!r->rk) {
        free(r);
        return NULL;
    }
    r->q = rd_kafka_queue_new(r->rk);
    return r;
}

static kio__rpart *kio__rpart_find(const kio_reader *r, const char *topic, int32_t partition) {
    for (int i = 0; i < r->n_parts; i++)
        if (r->parts[i].partition == partition && strcmp(r->parts[i].topic, topic) == 0)
            return &r->parts[i];
    return NULL;
}

/* Where topic/partition's messages go: `to` (the reader's queue), or NULL (they stay in the
 * partition's own queue). 0, or -1 with errstr. */
static int kio__reader_route(kio_reader *r, const char *topic, int32_t partition,
                             rd_kafka_queue_t *to, char *errstr, size_t n) {
    rd_kafka_queue_t *pq = rd_kafka_queue_get_partition(r->rk, topic, partition);
    if (!pq) {
        err_set(errstr, n, "reader: %s [%d]: no partition queue", topic, (int)partition);
        return -1;
    }
    rd_kafka_queue_forward(pq, to);
    rd_kafka_queue_destroy(pq);
    return 0;
}

/* Pause (pause != 0) or resume one partition, or seek it to `from` (seek != 0, waiting for
 * the seek to be applied). 0, or -1 with errstr. */
static int kio__reader_move(kio_reader *r, const char *topic, int32_t partition, int pause,
                            int seek, int64_t from, char *errstr, size_t n) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = from;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (seek) {
        rd_kafka_error_t *se = rd_kafka_seek_partitions(r->rk, l, 10000);
        if (se) {
            e = rd_kafka_error_code(se);
            rd_kafka_error_destroy(se);
        }
        if (!e) e = l->elems[0].err;
    } else {
        e = pause ? rd_kafka_pause_partitions(r->rk, l) : rd_kafka_resume_partitions(r->rk, l);
        if (!e) e = l->elems[0].err;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (!e) return 0;
    err_set(errstr, n, "reader: %s %s [%d]: %s", seek ? "seek" : pause ? "pause" : "resume",
            topic, (int)partition, rd_kafka_err2str(e));
    return -1;
}

/* A new partition entry, assigned from `from`, its messages going to `to`. */
static int kio__reader_assign(kio_reader *r, const char *topic, int32_t partition,
                              int64_t from, rd_kafka_queue_t *to, char *errstr, size_t n) {
    if (r->n_parts == r->cap_parts) {
        int cap = r->cap_parts ? 2 * r->cap_parts : 8;
        kio__rpart *np = realloc(r->parts, (size_t)cap * sizeof(*np));
        if (!np) {
            err_set(errstr, n, "out of memory");
            return -1;
        }
        r->parts = np;
        r->cap_parts = cap;
    }
    char *t = strdup(topic);
    if (!t) {
        err_set(errstr, n, "out of memory");
        return -1;
    }
    if (kio__reader_route(r, topic, partition, to, errstr, n) != 0) {
        free(t);
        return -1;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = from;
    rd_kafka_error_t *e = rd_kafka_incremental_assign(r->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        err_set(errstr, n, "reader: read %s [%d]: %s", topic, (int)partition,
                rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        free(t);
        return -1;
    }
    r->parts[r->n_parts++] = (kio__rpart){t, partition, 1, 0};
    return 0;
}

/* kio_reader_add, the partition's messages going to `to` (see kio__reader_route). */
static int kio__reader_add(kio_reader *r, const char *topic, int32_t partition, int64_t from,
                           rd_kafka_queue_t *to, char *errstr, size_t n) {
    if (from < 0 && from != KIO_FROM_BEGINNING && from != KIO_FROM_END) {
        err_set(errstr, n, "reader: %s [%d]: offset %lld is neither >= 0 nor KIO_FROM_*",
                topic, (int)partition, (long long)from);
        return -1;
    }
    kio__rpart *p = kio__rpart_find(r, topic, partition);
    if (!p) return kio__reader_assign(r, topic, partition, from, to, errstr, n);
    if (p->active && kio__reader_move(r, topic, partition, 1, 0, 0, errstr, n) != 0) return -1;
    p->active = 0;
    if (kio__reader_route(r, topic, partition, to, errstr, n) != 0 ||
        kio__reader_move(r, topic, partition, 0, 1, from, errstr, n) != 0 ||
        kio__reader_move(r, topic, partition, 0, 0, 0, errstr, n) != 0)
        return -1;
    p->active = 1;
    p->at_end = 0;
    return 0;
}

int kio_reader_add(kio_reader *r, const char *topic, int32_t partition, int64_t from,
                   char *errstr, size_t n) {
    return kio__reader_add(r, topic, partition, from, r->q, errstr, n);
}

int kio_reader_remove(kio_reader *r, const char *topic, int32_t partition, char *errstr,
                      size_t n) {
    kio__rpart *p = kio__rpart_find(r, topic, partition);
    if (!p || !p->active) return 0;
    p->active = 0;
    p->at_end = 0;
    if (kio__reader_move(r, topic, partition, 1, 0, 0, errstr, n) != 0) return -1;
    return kio__reader_route(r, topic, partition, NULL, errstr, n);
}

int kio_reader_at_end(const kio_reader *r, const char *topic, int32_t partition) {
    const kio__rpart *p = kio__rpart_find(r, topic, partition);
    return p && p->active && p->at_end;
}

/* Take up to max messages from q (wait up to timeout_ms for the first, then what is
 * there), keeping the partitions' end marks. Returns the count, or -1 with errstr (the
 * messages taken are destroyed then). */
static int kio__reader_take(kio_reader *r, rd_kafka_queue_t *q, rd_kafka_message_t **msgs,
                            int max, int timeout_ms, char *errstr, size_t n) {
    int got = 0;
    int64_t deadline = clk_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    while (got < max) {
        int64_t left = deadline - clk_mono_ms();
        int wait = got == 0 && left > 0 ? (int)left : 0;
        rd_kafka_message_t *m = rd_kafka_consume_queue(q, wait);
        if (!m) {
            if (got > 0 || wait == 0) break;
            continue;
        }
        const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "-";
        kio__rpart *p = m->rkt ? kio__rpart_find(r, topic, m->partition) : NULL;
        if (m->rkt && (!p || !p->active)) {   /* fetched before it was removed */
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!m->err) {
            p->at_end = 0;
            msgs[got++] = m;
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            p->at_end = 1;
            rd_kafka_message_destroy(m);
            if (got > 0) break;   /* hand out what came before the end now */
            continue;
        }
        err_set(errstr, n, "reader: %s [%d]: %s", topic, (int)m->partition,
                rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        kio__drop(msgs, got);
        return -1;
    }
    return got;
}

int kio_reader_poll(kio_reader *r, rd_kafka_message_t **msgs, int max, int timeout_ms,
                    char *errstr, size_t n) {
    rd_kafka_poll(r->rk, 0);   /* client-level events (errors, logs) */
    return kio__reader_take(r, r->q, msgs, max, timeout_ms, errstr, n);
}

int kio_reader_drain(kio_reader *r, const char *topic, int32_t partition, int64_t from,
                     kio_reader_fn fn, void *ud, int timeout_ms, char *errstr, size_t n) {
    /* Read from the partition's own queue, not forwarded to the reader's, so that only its
     * messages are taken and the reader's other partitions keep theirs. */
    rd_kafka_queue_t *pq = rd_kafka_queue_get_partition(r->rk, topic, partition);
    if (!pq) {
        err_set(errstr, n, "reader: %s [%d]: no partition queue", topic, (int)partition);
        return -1;
    }
    int rc = kio__reader_add(r, topic, partition, from, NULL, errstr, n);
    int64_t deadline = clk_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    rd_kafka_message_t *batch[256];
    while (rc == 0 && !kio_reader_at_end(r, topic, partition)) {
        int64_t left = deadline - clk_mono_ms();
        if (left <= 0) {
            err_set(errstr, n, "reader: %s [%d]: not at its end after %d ms", topic,
                    (int)partition, timeout_ms);
            rc = -1;
            break;
        }
        int got = kio__reader_take(r, pq, batch, 256, left > 100 ? 100 : (int)left, errstr, n);
        if (got < 0) rc = -1;
        for (int i = 0; i < got; i++) {
            if (rc == 0) rc = fn(ud, batch[i]);
            rd_kafka_message_destroy(batch[i]);
        }
    }
    char e2[KIO__ERR_MAX];
    kio_reader_remove(r, topic, partition, e2, sizeof(e2));
    rd_kafka_queue_destroy(pq);
    return rc;
}

void kio_reader_destroy(kio_reader *r) {
    if (!r) return;
    for (int i = 0; i < r->n_parts; i++) free(r->parts[i].topic);
    free(r->parts);
    rd_kafka_queue_destroy(r->q);
    /* Nothing to leave or commit: return at once even when the broker is away. */
    rd_kafka_destroy_flags(r->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    free(r);
}

/* ---------------------------------------------------------------- producer */

struct kio_producer {
    rd_kafka_t *rk;
    long long delivered, failed;
    long long failed_at_flush;   /* `failed` when kio_producer_flush last returned */
    long long produced;          /* enqueued by kio_produce */
    long long queued_bytes;      /* keys and values of those not reported yet */
    long long max_messages, max_bytes;   /* the local queue's bound, as configured */
    int64_t progress_ms;         /* monotonic: the last delivery report, or the moment the
                                    queue was empty before the oldest message waiting */
    int64_t down_since;          /* monotonic; 0 while the cluster answers */
    int64_t last_probe;          /* the last metadata request made while down */
    int txn;                     /* transactional, with a transaction open */
    char last_err[KIO__ERR_MAX];
};

static void kio__dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    kio_producer *p = opaque;
    (void)rk;
    p->queued_bytes -= (long long)(m->len + m->key_len);
    p->progress_ms = clk_mono_ms();
    if (!m->err) {
        p->delivered++;
        p->down_since = 0;
        return;
    }
    p->failed++;
    snprintf(p->last_err, sizeof(p->last_err), "delivery to %s failed: %s",
             rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
}

static void kio__producer_error_cb(rd_kafka_t *rk, int err, const char *reason,
                                   void *opaque) {
    kio_producer *p = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && !p->down_since) p->down_since = clk_mono_ms();
    snprintf(p->last_err, sizeof(p->last_err), "%s", reason);
}

/* A numeric property of the producer's configuration, or dflt. */
static long long kio__conf_num(rd_kafka_t *rk, const char *name, long long dflt) {
    char v[64];
    size_t len = sizeof(v);
    if (rd_kafka_conf_get(rd_kafka_conf(rk), name, v, &len) != RD_KAFKA_CONF_OK) return dflt;
    return atoll(v);
}

kio_producer *kio_producer_new(const kio_prop *props, int n_props, char *errstr, size_t n) {
    static const kio_prop defaults[] = {{"linger.ms", "5"}};
    static const kio_prop required[] = {
        {"enable.idempotence", "true"},
        {"partitioner", "murmur2_random"},
    };
    kio_producer *p = calloc(1, sizeof(*p));
    if (!p) {
        err_set(errstr, n, "out of memory");
        return NULL;
    }
    rd_kafka_conf_t *conf = kio__conf(defaults, 1, props, n_props, required, 2, kio__consumer_only, errstr, n);
    if (!conf) {
        free(p);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, kio__dr_cb);
    rd_kafka_conf_set_error_cb(conf, kio__producer_error_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = kio__client_new(RD_KAFKA_PRODUCER, conf, "producer", errstr, n);
    conf = NULL; /* now owned by p->rk, or destroyed */
    if (!p->rk) {
        free(p);
        return NULL;
    }
    p->max_messages = kio__conf_num(p->rk, "queue.buffering.max.messages", 100000);
    p->max_bytes = kio__conf_num(p->rk, "queue.buffering.max.kbytes", 1048576) * 1024;
    p->progress_ms = clk_mono_ms();
    return p;
}

/* Enqueue a copy of key and val (NULL: a tombstone) for topic's partition
 * (RD_KAFKA_PARTITION_UA: the partitioner's choice), with headers h (owned by the message
 * once enqueued, destroyed here otherwise). */
static int kio__produce(kio_producer *p, const char *topic, int32_t partition, const void *key,
                        size_t keylen, const void *val, size_t len, rd_kafka_headers_t *h,
                        char *errstr, size_t n) {
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int tries = 0; tries <= KIO__QFULL_RETRIES; tries++) {
        /* F_COPY: val is copied, so casting away const is safe; the key is always copied. */
        e = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                              RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_VALUE((void *)val, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) break;
        rd_kafka_poll(p->rk, 100); /* deliveries free queue space */
    }
    if (!e) {
        h = NULL; /* now owned by the message */
        if (p->produced - p->delivered - p->failed == 0) p->progress_ms = clk_mono_ms();
        p->produced++;
        p->queued_bytes += (long long)(len + keylen);
        return 0;
    }
    if (h) rd_kafka_headers_destroy(h);
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        char fe[KIO__ERR_MAX];
        rd_kafka_fatal_error(p->rk, fe, sizeof(fe));
        err_set(errstr, n, "produce to %s: fatal: %s", topic, fe);
    } else {
        err_set(errstr, n, "produce to %s: %s", topic, rd_kafka_err2str(e));
    }
    return -1;
}

int kio_produce(kio_producer *p, const char *topic, const void *key, size_t keylen,
                const void *val, size_t len, const char *const *hdrs, int n_hdr_pairs,
                char *errstr, size_t n) {
    rd_kafka_headers_t *h = NULL;
    if (n_hdr_pairs > 0) {
        h = rd_kafka_headers_new((size_t)n_hdr_pairs);
        for (int i = 0; i < n_hdr_pairs; i++)
            rd_kafka_header_add(h, hdrs[2 * i], -1, hdrs[2 * i + 1], -1);
    }
    return kio__produce(p, topic, RD_KAFKA_PARTITION_UA, key, keylen, val, len, h, errstr, n);
}

int kio_produce_to(kio_producer *p, const char *topic, int32_t partition, const void *key,
                   size_t keylen, const void *val, size_t len, char *errstr, size_t n) {
    return kio__produce(p, topic, partition, key, keylen, val, len, NULL, errstr, n);
}

void kio_producer_poll(kio_producer *p) {
    rd_kafka_poll(p->rk, 0);
}

int kio_producer_embedded(kio_producer *p, int timeout_ms) {
    char *id = rd_kafka_clusterid(p->rk, timeout_ms);
    if (!id) return -1;
    int mock = strncmp(id, "mockCluster", 11) == 0;
    rd_kafka_mem_free(p->rk, id);
    return mock;
}

int kio_producer_flush(kio_producer *p, int timeout_ms, char *errstr, size_t n) {
    rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, timeout_ms);
    long long new_failed = p->failed - p->failed_at_flush;
    if (new_failed > 0) {
        p->failed_at_flush = p->failed;
        err_set(errstr, n, "%lld deliveries failed; last: %s", new_failed, p->last_err);
        return -1;
    }
    if (e) {
        err_set(errstr, n, "flush: %d messages not delivered within %d ms (%s)%s%s",
                 rd_kafka_outq_len(p->rk), timeout_ms, rd_kafka_err2str(e),
                 p->last_err[0] ? ": " : "", p->last_err);
        return 1;
    }
    return 0;
}

void kio_producer_state_get(kio_producer *p, kio_producer_state *out) {
    int64_t now = clk_mono_ms();
    long long queued = p->produced - p->delivered - p->failed;
    if (queued < 0) queued = 0;   /* reports of messages produced past kio_produce */
    if (queued > 0 && !p->down_since && now - p->progress_ms >= KIO_STALL_MS)
        p->down_since = p->progress_ms;   /* deliveries stopped: unreachable since then */
    if (queued == 0 && p->down_since && now - p->last_probe >= 1000) {
        /* nothing to deliver, so no report will say it is back: ask it */
        const struct rd_kafka_metadata *md = NULL;
        p->last_probe = now;
        if (rd_kafka_metadata(p->rk, 0, NULL, &md, 200) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_metadata_destroy(md);
            p->down_since = 0;
        }
    }
    out->queued = queued;
    out->queued_bytes = p->queued_bytes;
    out->max_messages = p->max_messages;
    out->max_bytes = p->max_bytes;
    out->down_ms = p->down_since ? clk_mono_ms() - p->down_since : 0;
    if (p->down_since && out->down_ms == 0) out->down_ms = 1;
}

void kio_producer_stats(const kio_producer *p, long long *delivered, long long *failed) {
    if (delivered) *delivered = p->delivered;
    if (failed) *failed = p->failed;
}

const char *kio_producer_last_error(const kio_producer *p) {
    return p->last_err;
}

rd_kafka_t *kio_producer_handle(kio_producer *p) {
    return p->rk;
}

void kio_producer_destroy(kio_producer *p) {
    if (!p) return;
    /* what was not delivered is dropped (deliveries may wait forever: message.timeout.ms 0) */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(p->rk, 0);
    rd_kafka_destroy(p->rk);
    free(p);
}

/* ---------------------------------------------------------------- transactions */

/* Fill errstr from a transactional call's error and destroy it. */
static void kio__txn_err(rd_kafka_error_t *e, const char *what, char *errstr, size_t n) {
    err_set(errstr, n, "%s: %s%s", what, rd_kafka_error_string(e),
            rd_kafka_error_is_fatal(e) ? " (fatal)"
            : rd_kafka_error_txn_requires_abort(e) ? " (the transaction must abort)" : "");
    rd_kafka_error_destroy(e);
}

int kio_txn_start(kio_producer *p, int timeout_ms, char *errstr, size_t n) {
    rd_kafka_error_t *e = rd_kafka_init_transactions(p->rk, timeout_ms);
    if (e) {
        kio__txn_err(e, "init_transactions", errstr, n);
        return -1;
    }
    if ((e = rd_kafka_begin_transaction(p->rk))) {
        kio__txn_err(e, "begin_transaction", errstr, n);
        return -1;
    }
    p->txn = 1;
    return 0;
}

/* Run one step of a commit until it succeeds, fails for good, or the deadline passes
 * (1). step 0: send the offsets, 1: commit. */
static int kio__txn_step(kio_producer *p, int step, kio_consumer *c,
                         const rd_kafka_topic_partition_list_t *offs, int64_t deadline,
                         char *errstr, size_t n) {
    for (;;) {
        int64_t left = deadline - clk_mono_ms();
        if (left <= 0) return 1;
        rd_kafka_error_t *e;
        if (step == 0) {
            rd_kafka_consumer_group_metadata_t *gm =
                rd_kafka_consumer_group_metadata(kio_consumer_handle(c));
            e = rd_kafka_send_offsets_to_transaction(p->rk, offs, gm, (int)left);
            rd_kafka_consumer_group_metadata_destroy(gm);
        } else {
            e = rd_kafka_commit_transaction(p->rk, (int)left);
        }
        if (!e) return 0;
        if (rd_kafka_error_is_retriable(e) && !rd_kafka_error_is_fatal(e) &&
            !rd_kafka_error_txn_requires_abort(e)) {
            rd_kafka_error_destroy(e);
            continue;
        }
        p->txn = 0;
        kio__txn_err(e, step == 0 ? "send_offsets_to_transaction" : "commit_transaction",
                     errstr, n);
        return -1;
    }
}

int kio_txn_commit(kio_producer *p, kio_consumer *c, const rd_kafka_topic_partition_list_t *offs,
                   int timeout_ms, char *errstr, size_t n) {
    if (!p->txn) return err_set(errstr, n, "no transaction is open");
    int64_t deadline = clk_mono_ms() + timeout_ms;
    int rc = 0;
    if (offs && offs->cnt > 0) rc = kio__txn_step(p, 0, c, offs, deadline, errstr, n);
    if (rc == 0) rc = kio__txn_step(p, 1, c, offs, deadline, errstr, n);
    if (rc == 1)
        err_set(errstr, n, "the transaction did not commit within %d ms (%d messages waiting)",
                timeout_ms, rd_kafka_outq_len(p->rk));
    if (rc != 0) return rc;
    rd_kafka_error_t *e = rd_kafka_begin_transaction(p->rk);
    if (e) {
        p->txn = 0;
        kio__txn_err(e, "begin_transaction", errstr, n);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- partitioning */

int32_t kio_murmur2(const void *key, size_t keylen) {
    const unsigned char *d = key;
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)keylen;
    size_t n4 = keylen / 4;
    for (size_t i = 0; i < n4; i++) {
        const unsigned char *b = d + 4 * i;
        uint32_t k = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                     (uint32_t)b[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char *t = d + 4 * n4;
    switch (keylen & 3) {
    case 3: h ^= (uint32_t)t[2] << 16; /* fall through */
    case 2: h ^= (uint32_t)t[1] << 8;  /* fall through */
    case 1: h ^= t[0]; h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

int kio_partition_for_key(const void *key, size_t keylen, int partitions) {
    return (int)(((uint32_t)kio_murmur2(key, keylen) & 0x7fffffffu) % (uint32_t)partitions);
}
