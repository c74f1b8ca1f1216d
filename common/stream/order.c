/* order.c - event-time order across input partitions, offset continuity (see order.h). */
#include "stream/order.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

typedef struct {
    void *item;
    int64_t ts;
    int64_t arrived;        /* monotonic ms: when it was pushed (the live wait's clock) */
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
    int64_t jump_ts;        /* the last item taken from it was this far-ahead time, not
                               yet confirmed by a neighbour (ORD_TS_UNKNOWN: it was not) */
} ord__src;

struct ord {
    ord__src *src;
    int n_src, cap;
    int64_t idle_ms;
    int64_t live_ms;        /* the live wait: while an assigned source is empty, whatever
                               its lag, nothing goes out before the longest-buffered item
                               has been here this long */
    long long total;
    int64_t stream_ts;      /* the newest event time handed out (ORD_TS_UNKNOWN: none) */
    long long behind;       /* items handed out with an event time below it */
    int64_t ahead_ms;       /* ord_set_ahead: an item this far past stream_ts goes out
                               at once; 0 = no such bound */
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
    o->stream_ts = ORD_TS_UNKNOWN;
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

int ord_push(ord *o, int src, int64_t ts, void *item, int64_t now_ms) {
    ord__src *s = &o->src[src];
    if (ord__grow(s) != 0) return -1;
    if (ts == ORD_TS_UNKNOWN) ts = s->last_ts;   /* keeps its place behind its predecessor */
    s->ring[(s->head + s->n) % s->alloc] = (ord__slot){item, ts, now_ms};
    s->n++;
    s->last_ts = ts;
    s->asked = 0;
    o->total++;
    return 0;
}

void ord_set_ahead(ord *o, int64_t ahead_ms) {
    o->ahead_ms = ahead_ms > 0 ? ahead_ms : 0;
}

/* |a - b| <= d, without overflow whatever the times. */
static int ord__within(int64_t a, int64_t b, int64_t d) {
    uint64_t gap = a >= b ? (uint64_t)a - (uint64_t)b : (uint64_t)b - (uint64_t)a;
    return gap <= (uint64_t)d;
}

/* Whether event time ts is more than ahead_ms past the stream time. */
static int ord__far(const ord *o, int64_t ts) {
    return o->ahead_ms > 0 && ts != ORD_TS_UNKNOWN && o->stream_ts != ORD_TS_UNKNOWN &&
           ts > o->stream_ts && !ord__within(ts, o->stream_ts, o->ahead_ms);
}

/* The source with the earliest head (the lowest index among equal times), or -1. A head
 * far ahead of the stream time counts as at the stream time: it goes out now. */
static int ord__earliest(const ord *o) {
    int best = -1;
    int64_t best_ts = 0;
    for (int i = 0; i < o->n_src; i++) {
        const ord__src *s = &o->src[i];
        if (!s->n) continue;
        int64_t ts = s->ring[s->head].ts;
        if (ord__far(o, ts)) ts = o->stream_ts;
        if (best < 0 || ts < best_ts) {
            best = i;
            best_ts = ts;
        }
    }
    return best;
}

/* When the longest-buffered item arrived (the FIFOs are in arrival order: a head's). */
static int64_t ord__oldest_arrival(const ord *o) {
    int64_t oldest = INT64_MAX;
    for (int i = 0; i < o->n_src; i++)
        if (o->src[i].n && o->src[i].ring[o->src[i].head].arrived < oldest)
            oldest = o->src[i].ring[o->src[i].head].arrived;
    return oldest;
}

/* Whether far-ahead time ts, taken from s, is a jump its neighbours agree with: the item
 * taken from s before it, or the one after it, within ahead_ms of it (two in a row, as the
 * learner's admission confirms a jump). */
static int ord__confirmed(const ord *o, const ord__src *s, int64_t ts) {
    if (s->jump_ts != ORD_TS_UNKNOWN && ord__within(ts, s->jump_ts, o->ahead_ms)) return 1;
    if (s->n < 2) return 0;
    int64_t next = s->ring[(s->head + 1) % s->alloc].ts;
    return next != ORD_TS_UNKNOWN && ord__within(next, ts, o->ahead_ms);
}

/* Remove src's head; a source that runs empty starts its idle clock. A far-ahead item
 * moves the stream time only when confirmed: one absurd time neither holds its partition
 * back behind every other nor sets the order for the rest. */
static void *ord__take(ord *o, int src, int64_t now_ms) {
    ord__src *s = &o->src[src];
    void *item = s->ring[s->head].item;
    int64_t ts = s->ring[s->head].ts;
    int far = ord__far(o, ts);
    if (far && !ord__confirmed(o, s, ts)) {
        s->jump_ts = ts;
    } else {
        s->jump_ts = ORD_TS_UNKNOWN;
        if (ts != ORD_TS_UNKNOWN && o->stream_ts != ORD_TS_UNKNOWN && ts < o->stream_ts)
            o->behind++;
        if (ts != ORD_TS_UNKNOWN && (o->stream_ts == ORD_TS_UNKNOWN || ts > o->stream_ts))
            o->stream_ts = ts;
    }
    s->head = (s->head + 1) % s->alloc;
    s->n--;
    o->total--;
    if (!s->n) {
        s->empty_since = now_ms;
        s->asked = 0;
    }
    return item;
}

/* Whether an empty source holds everything back now: one that lags, for idle_ms after it
 * ran empty (*live_hold untouched); *live_hold is set when an empty source is assigned
 * here at all (the live wait applies). lag is asked once per emptying, again while the
 * answer is not known. */
static int ord__waiting(ord *o, int64_t now_ms, ord_lag_fn lag, void *ud, int *live_hold) {
    int wait = 0;
    for (int i = 0; i < o->n_src; i++) {
        ord__src *s = &o->src[i];
        if (s->n) continue;
        if (!s->asked || s->lagging == -1) {   /* not known yet: asked again */
            int l = lag ? lag(ud, i) : 0;
            s->lagging = l == ORD_UNASSIGNED ? ORD_UNASSIGNED : l < 0 ? -1 : l != 0;
            s->asked = 1;
        }
        if (s->lagging == ORD_UNASSIGNED) continue;
        *live_hold = 1;
        if (s->lagging && now_ms - s->empty_since < o->idle_ms) wait = 1;
    }
    return wait;
}

void *ord_pop(ord *o, int64_t now_ms, ord_lag_fn lag, void *ud, int *src_out) {
    int live_hold = 0;
    if (!o->total || ord__waiting(o, now_ms, lag, ud, &live_hold)) return NULL;
    /* the live wait: while a partition is empty its next message may be on its way (a
     * live stream's). Once some message has been here live_ms, whatever was produced
     * before it is here too (the bound on lateness live_ms stands for), and with it every
     * message of an earlier event time: the earliest head may go */
    if (o->live_ms > 0 && live_hold && now_ms - ord__oldest_arrival(o) < o->live_ms)
        return NULL;
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
    int live_hold = 0;
    for (int i = 0; i < o->n_src; i++) {
        const ord__src *s = &o->src[i];
        if (s->n || (s->asked && s->lagging == ORD_UNASSIGNED)) continue;
        live_hold = 1;   /* not asked yet: it may hold back */
        if (!s->asked || !s->lagging) continue;
        int64_t l = s->empty_since + o->idle_ms - now_ms;
        if (l < 0) continue;
        if (left < 0 || l < left) left = l;
    }
    if (live_hold && o->live_ms > 0) {   /* when the longest-buffered has waited live_ms */
        int64_t l = ord__oldest_arrival(o) + o->live_ms - now_ms;
        if (l >= 0 && (left < 0 || l < left)) left = l;
    }
    return left;
}

long long ord_behind(const ord *o) {
    return o->behind;
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
        s->last_ts = s->jump_ts = ORD_TS_UNKNOWN;
        s->empty_since = now_ms;
        s->asked = s->lagging = s->held = 0;
    }
    o->total = 0;
    o->n_held = 0;
    o->stream_ts = ORD_TS_UNKNOWN;   /* a new assignment's stream (behind stays counted) */
}
