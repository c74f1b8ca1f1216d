/* clock.h - the clocks m3rec reads, in one place and with one meaning each.
 *
 * Durations and rates use the monotonic clock; costs use CPU time, either of the whole
 * process (every thread: librdkafka's and RocksDB's too) or of the calling thread only
 * (the work one call does, without background threads). Event time is never read from
 * here: it comes from the events. */
#ifndef M3_CLOCK_H
#define M3_CLOCK_H
#include <stdint.h>

/* Seconds on CLOCK_MONOTONIC (an arbitrary origin: subtract two readings). */
double clk_mono_s(void);
/* Milliseconds on CLOCK_MONOTONIC. */
int64_t clk_mono_ms(void);
/* Milliseconds since the Unix epoch (CLOCK_REALTIME): for timestamps others read. */
int64_t clk_real_ms(void);
/* CPU seconds of the process, all threads (CLOCK_PROCESS_CPUTIME_ID). */
double clk_process_cpu_s(void);
/* CPU seconds of the calling thread (CLOCK_THREAD_CPUTIME_ID). */
double clk_thread_cpu_s(void);

#endif
