/* order.h - the worker's input between the consumer and the learner: event-time order
 * across partitions in a bounded buffer, and each partition's offset continuity.
 *
 * Order (Kafka Streams' "stream time"): every input partition (a source: the learner's
 * index, topic x partitions + partition) has a FIFO of polled messages; the next message
 * handed out is the head with the earliest event time over all sources. While a source
 * is empty but may still have messages at the broker (its consumer position below the
 * high watermark, or not fetched yet), nothing is handed out for at most idle_ms (as
 * max.task.idle.ms), so a fetch that is on its way is not overtaken. With live_ms > 0 (a
 * positive max.task.idle.ms, KIP-695) an empty partition at its high watermark holds
 * things back too - a live stream's next message may be on its way - but no message
 * longer than live_ms after it arrived here: the earliest head goes out once every
 * assigned source has a message, or once the longest-buffered message has been here
 * live_ms (whatever was produced before that one has arrived by then, if live_ms bounds
 * how late a message can be, and with it every earlier event time). So as long as no
 * message reaches the buffer more than live_ms after one produced later than it (with
 * producers writing in event-time order), a stream that arrives paced is handed out in
 * the order its backlog is; the price is up to live_ms of latency per message while some
 * assigned partition is empty (a partition that never gets messages adds it to all). A
 * source not assigned to this consumer is never waited for. A source whose FIFO holds
 * `cap` messages should be paused by the caller (ord_hold tells which) until it drains
 * to half. Each hand-out below the newest event time handed out is counted (ord_behind).
 *
 * Continuity: each source's next expected offset; a message below it is a duplicate (a
 * re-fetch after a pause or a rebalance), one above it means messages were skipped (a
 * broker that dropped them, an offset reset, a transaction marker: one offset each).
 *
 * Kafka-free: items are opaque pointers (the worker's rd_kafka_message_t). Single thread.
 * Memory: the FIFOs grow past cap only by what arrives between a hold and its effect. */
#ifndef M3_ORDER_H
#define M3_ORDER_H
#include <stddef.h>
#include <stdint.h>

#define ORD_TS_UNKNOWN INT64_MIN   /* an item without an event time (undecodable): it keeps
                                      its place behind its source's previous item */

typedef struct ord ord;

#define ORD_UNASSIGNED (-2)   /* an ord_lag_fn answer: not this consumer's, never waited for */

/* 1 when source src has messages at the broker beyond what was polled (its position is
 * below the high watermark), 0 when it is caught up, ORD_UNASSIGNED when it is not
 * assigned to this consumer, -1 when that is not known yet (nothing fetched): it counts
 * as lagging and is asked again at the next ord_pop. Asked when a source runs empty. */
typedef int (*ord_lag_fn)(void *ud, int src);
/* Frees an item that is dropped rather than handed out. */
typedef void (*ord_drop_fn)(void *item);

/* n_sources FIFOs holding cap items each before ord_hold asks for a pause (cap >= 1),
 * waiting at most idle_ms (>= 0) for an empty source that lags, and while any assigned
 * source is empty holding everything until the longest-buffered item has been here
 * live_ms (>= 0; 0 = not at all). Every source starts as "just emptied" at now_ms. Returns the buffer, or NULL
 * with errstr filled. */
ord *ord_new(int n_sources, int cap, int64_t idle_ms, int64_t live_ms, int64_t now_ms,
             char *errstr, size_t errstr_size);
/* An item whose event time is more than ahead_ms (> 0; 0 = no bound, the default) past
 * the stream time (the newest handed out) goes out at once instead of waiting behind every
 * other partition's messages (the worker passes time.max.ahead.ms: the learner's
 * admission then judges it), and moves the stream time only when the item before or
 * after it in its partition is within ahead_ms of it (a real jump: two in a row). So one
 * message with an absurd future time neither holds its partition back nor reorders the
 * rest. */
void ord_set_ahead(ord *o, int64_t ahead_ms);

/* Drop every item (drop(item) on each, when drop is not NULL) and free o. NULL: no-op. */
void ord_free(ord *o, ord_drop_fn drop);

/* ---- continuity ---- */

/* Source src's next message is expected at offset next (e.g. where its assignment
 * starts); -1: not known (the first message sets it). */
void ord_expect(ord *o, int src, int64_t next);
/* Message of src at offset: returns 0 when it is the next expected (or nothing is
 * expected yet), -1 when it is below the expected offset (a duplicate: drop it; nothing
 * changes), or the number of offsets skipped before it (> 0). Unless -1, offset + 1 is
 * expected next. */
int64_t ord_check(ord *o, int src, int64_t offset);
/* The offset src expects next, -1 when not known. */
int64_t ord_position(const ord *o, int src);

/* ---- order ---- */

/* Append item (event time ts, or ORD_TS_UNKNOWN), arrived at now_ms (monotonic), to src's
 * FIFO. Returns 0, or -1 when out of memory (the item is not taken). */
int ord_push(ord *o, int src, int64_t ts, void *item, int64_t now_ms);
/* The item to hand to the learner next, removed from its FIFO (*src_out = its source), or
 * NULL when the buffer is empty or must wait for a lagging empty source (lag is asked
 * once per source each time it runs empty, and again while the answer is -1). now_ms: a monotonic clock. */
void *ord_pop(ord *o, int64_t now_ms, ord_lag_fn lag, void *ud, int *src_out);
/* Remove the next item regardless of waiting (at shutdown: hand out what was polled in
 * order). NULL when empty. */
void *ord_pop_any(ord *o, int *src_out);
/* How long (ms, >= 0) until a waiting ord_pop may hand out (the soonest any empty
 * source's wait ends; ask again then); -1 when it is not waiting. */
int64_t ord_wait_ms(const ord *o, int64_t now_ms);
/* Items handed out (ord_pop, ord_pop_any) with an event time below the newest one handed
 * out before them since the last ord_clear: out of event-time order. */
long long ord_behind(const ord *o);

/* Whether src must be paused (1) or resumed (0) now, given whether it is held: a held
 * source is released at cap / 2 items, a free one held at cap. Returns the new state and
 * records it. */
int ord_hold(ord *o, int src);
/* Sources held (paused) now. */
int ord_held(const ord *o);
/* Items in src's FIFO; all items when src < 0. */
long long ord_count(const ord *o, int src);

/* After a rebalance: drop every item (drop(item) each), forget every expected offset and
 * hold, and restart the sources' idle clocks at now_ms (their assignment is new). */
void ord_clear(ord *o, ord_drop_fn drop, int64_t now_ms);

#endif
