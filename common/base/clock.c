/* clock.c - the clocks m3rec reads (see clock.h). */
#include "base/clock.h"

#include <time.h>

static struct timespec clk__now(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts;
}

static double clk__s(struct timespec ts) { return (double)ts.tv_sec + ts.tv_nsec * 1e-9; }

double clk_mono_s(void) { return clk__s(clk__now(CLOCK_MONOTONIC)); }
double clk_process_cpu_s(void) { return clk__s(clk__now(CLOCK_PROCESS_CPUTIME_ID)); }
double clk_thread_cpu_s(void) { return clk__s(clk__now(CLOCK_THREAD_CPUTIME_ID)); }

int64_t clk_mono_ms(void) {
    struct timespec ts = clk__now(CLOCK_MONOTONIC);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clk_real_ms(void) {
    struct timespec ts = clk__now(CLOCK_REALTIME);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

