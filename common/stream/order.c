/* order.c - event-time order across input partitions, offset continuity (see order.h). */
#include "stream/order.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

typedef struct {
    void *item;
    int64_t ts;
} ord__slot;

typedef struct {
    ord__slot *ring;        /* FIFO: ring[(head + i) % alloc], i < n */
    int head, n, alloc;
    int64_t next;           /* next expected offset, -1 unknown */
    int64_t last_ts;        /* event time of the last item pushed (ORD_TS_UNKNOWN: none) */
    int64_t empty_since;    /* monotonic ms: when it last ran empty */
    int asked;              /* lag asked since it ran empty */
    int lagging;            /* the answer: 1, 0, or -1 not known (asked again) */
    int held;
    int64_t wait_from;      /* monotonic ms: when the live wait for it (empty, something
                               else buffered) began; -1: not waiting. Stays set once the
                               wait ran out (given up) until an item arrives */
    int given_up;           /* that wait ran out */
} ord__src;

struct ord {
    ord__src *src;
    int n_src, cap;
    int64_t idle_ms;
    int64_t live_ms;        /* the live wait: for an empty source, whatever its lag */
    long long total;
    long long gave_up;      /* live waits that ran out */
    int n_held;
};

ord *ord_new(int n_sources, int cap, int64_t idle_ms, int64_t live_ms, int64_t now_ms,
             char *errstr, size_t errstr_size) {
    if (n_sources < 1 || cap < 1 || idle_ms < 0 || live_ms < 0) {
        err_set(errstr, errstr_size, "order buffer: %d sources, capacity %d, idle %lld ms, "
                "live wait %lld ms", n_sources, cap, (long long)idle_ms, (long long)live_ms);
        return NULL;
    }
    ord *o = calloc(1, sizeof *o);
    if (!o || !(o->src = calloc((size_t)n_sources, sizeof *o->src))) {
        free(o);
        err_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    o->n_src = n_sources;
    o->cap = cap;
    o->idle_ms = idle_ms;
    o->live_ms = live_ms;
    ord_clear(o, NULL, now_ms);
    return o;
}

void ord_free(ord *o, ord_drop_fn drop) {
    if (!o) return;
    ord_clear(o, drop, 0);
    for (int s = 0; s < o->n_src; s++) free(o->src[s].ring);
    free(o->src);
    free(o);
}

void ord_expect(ord *o, int src, int64_t next) {
    o->src[src].next = next < 0 ? -1 : next;
}

int64_t ord_check(ord *o, int src, int64_t offset) {
    ord__src *s = &o->src[src];
    if (s->next >= 0 && offset < s->next) return -1;
    int64_t skipped = s->next >= 0 ? offset - s->next : 0;
    s->next = offset + 1;
    return skipped;
}

int64_t ord_position(const ord *o, int src) {
    return o->src[src].next;
}

/* Room for one more item in s (the ring doubles, unwrapped into the new block). */
static int ord__grow(ord__src *s) {
    if (s->n < s->alloc) return 0;
    int alloc = s->alloc ? s->alloc * 2 : 64;
    ord__slot *r = malloc(sizeof *r * (size_t)alloc);
    if (!r) return -1;
    for (int i = 0; i < s->n; i++) r[i] = s->ring[(s->head + i) % s->alloc];
    free(s->ring);
    s->ring = r;
    s->head = 0;
    s->alloc = alloc;
    return 0;
}

int ord_push(ord *o, int src, int64_t ts, void *item) {
    ord__src *s = &o->src[src];
    if (ord__grow(s) != 0) return -1;
    if (ts == ORD_TS_UNKNOWN) ts = s->last_ts;   /* keeps its place behind its predecessor */
    s->ring[(s->head + s->n) % s->alloc] = (ord__slot){item, ts};
    s->n++;
    s->last_ts = ts;
    s->asked = 0;
    s->wait_from = -1;   /* it has an item: a later emptying is waited for afresh */
    s->given_up = 0;
    o->total++;
    return 0;
}

/* The source with the earliest head (the lowest index among equal times), or -1. */
static int ord__earliest(const ord *o) {
    int best = -1;
    int64_t best_ts = 0;
    for (int i = 0; i < o->n_src; i++) {
        const ord__src *s = &o->src[i];
        if (!s->n) continue;
        int64_t ts = s->ring[s->head].ts;
        if (best < 0 || ts < best_ts) {
            best = i;
            best_ts = ts;
        }
    }
    return best;
}

/* Remove src's head; a source that runs empty starts its idle clock. */
static void *ord__take(ord *o, int src, int64_t now_ms) {
    ord__src *s = &o->src[src];
    void *item = s->ring[s->head].item;
    s->head = (s->head + 1) % s->alloc;
    s->n--;
    o->total--;
    if (!s->n) {
        s->empty_since = now_ms;
        s->asked = 0;
    }
    return item;
}

/* Whether empty source s holds everything back now: while it lags, for idle_ms after it
 * ran empty; whatever its lag (a live stream's partition at its high watermark), for
 * live_ms after the first hand-out it held back - a clock that starts when the wait does,
 * not when it ran empty, so a partition quiet for a while is still waited for when input
 * resumes; once run out it is not waited for again until an item arrives. An unassigned
 * source is never waited for. */
static int ord__holds_back(ord *o, ord__src *s, int64_t now_ms) {
    if (s->lagging == ORD_UNASSIGNED) return 0;
    if (o->live_ms > 0 && s->wait_from < 0) s->wait_from = now_ms;   /* the wait starts */
    if (s->lagging && now_ms - s->empty_since < o->idle_ms) return 1;
    if (o->live_ms <= 0) return 0;
    if (now_ms - s->wait_from < o->live_ms) return 1;
    if (!s->given_up) o->gave_up++;
    s->given_up = 1;
    return 0;
}

/* Any empty source holding back? (lag is asked once per emptying, again while unknown.) */
static int ord__waiting(ord *o, int64_t now_ms, ord_lag_fn lag, void *ud) {
    int wait = 0;
    for (int i = 0; i < o->n_src; i++) {
        ord__src *s = &o->src[i];
        if (s->n) continue;
        if (!s->asked || s->lagging == -1) {   /* not known yet: asked again */
            int l = lag ? lag(ud, i) : 0;
            s->lagging = l == ORD_UNASSIGNED ? ORD_UNASSIGNED : l < 0 ? -1 : l != 0;
            s->asked = 1;
        }
        if (ord__holds_back(o, s, now_ms)) wait = 1;
    }
    return wait;
}

void *ord_pop(ord *o, int64_t now_ms, ord_lag_fn lag, void *ud, int *src_out) {
    if (!o->total || ord__waiting(o, now_ms, lag, ud)) return NULL;
    int src = ord__earliest(o);
    *src_out = src;
    return ord__take(o, src, now_ms);
}

void *ord_pop_any(ord *o, int *src_out) {
    if (!o->total) return NULL;
    int src = ord__earliest(o);
    *src_out = src;
    return ord__take(o, src, 0);
}

int64_t ord_wait_ms(const ord *o, int64_t now_ms) {
    if (!o->total) return -1;
    int64_t left = -1;
    for (int i = 0; i < o->n_src; i++) {
        const ord__src *s = &o->src[i];
        if (s->n || !s->asked || s->lagging == ORD_UNASSIGNED) continue;
        int64_t l = -1;   /* how long s still holds back: the later of its two clocks */
        if (s->lagging) l = s->empty_since + o->idle_ms - now_ms;
        if (o->live_ms > 0 && s->wait_from >= 0 && !s->given_up &&
            s->wait_from + o->live_ms - now_ms > l)
            l = s->wait_from + o->live_ms - now_ms;
        if (l < 0) continue;
        if (left < 0 || l < left) left = l;
    }
    return left;
}

long long ord_gave_up(const ord *o) {
    return o->gave_up;
}

int ord_hold(ord *o, int src) {
    ord__src *s = &o->src[src];
    int want = s->held ? s->n > o->cap / 2 : s->n >= o->cap;
    o->n_held += want - s->held;
    s->held = want;
    return want;
}

int ord_held(const ord *o) {
    return o->n_held;
}

long long ord_count(const ord *o, int src) {
    return src < 0 ? o->total : o->src[src].n;
}

void ord_clear(ord *o, ord_drop_fn drop, int64_t now_ms) {
    for (int i = 0; i < o->n_src; i++) {
        ord__src *s = &o->src[i];
        for (int k = 0; k < s->n; k++)
            if (drop) drop(s->ring[(s->head + k) % s->alloc].item);
        s->head = s->n = 0;
        s->next = -1;
        s->last_ts = ORD_TS_UNKNOWN;
        s->empty_since = now_ms;
        s->asked = s->lagging = s->held = 0;
        s->wait_from = -1;
        s->given_up = 0;
    }
    o->total = 0;
    o->n_held = 0;
}
