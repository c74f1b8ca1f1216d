/* proc.h - the test programs' process helpers: start a program with its output in files,
 * wait for it (or for its log to say something) with a deadline, read files back, the
 * random seed a test prints.
 *
 * Header-only (static inline) so that each test program includes what it uses. Times are
 * clk_mono_ms() milliseconds (base/clock.h). Every helper fails the test (check.h) rather
 * than return an error the caller could forget. */
#ifndef M3_TESTS_PROC_H
#define M3_TESTS_PROC_H
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "check.h"

extern char **environ;

/* Start argv[0] (a path; argv NULL-terminated) with stdout into the file `out` and stderr
 * into `err` (each truncated; NULL keeps the test's own; err equal to out: both into one
 * file). Returns its pid; a program that cannot start fails the test. */
static inline pid_t proc_spawn(char *const argv[], const char *out, const char *err) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (out) posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err && out && strcmp(err, out) == 0) posix_spawn_file_actions_adddup2(&fa, 1, 2);
    else if (err) posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    CHECK_MSG(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) == 0, "cannot start %s", argv[0]);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

/* The stacks of pid's threads on the test's output, when gdb is installed: a child that
 * hangs only on a loaded machine is then diagnosable from the log of the run it hung in. */
static inline void proc_dump_stacks(pid_t pid) {
    if (access("/usr/bin/gdb", X_OK) != 0) return;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "/usr/bin/gdb -p %d -batch -nx -ex 'thread apply all bt' "
             "</dev/null 2>&1 | grep -E '^(Thread|#)' | head -200", (int)pid);
    printf("the stacks of process %d before it is killed:\n", (int)pid);
    fflush(stdout);
    if (system(cmd) != 0) printf("(gdb could not attach)\n");
}

/* Wait for pid to exit by deadline_ms (clk_mono_ms). Returns its exit code, 128 + the
 * signal when a signal ended it; past the deadline its stacks are printed (gdb), it is
 * killed and the test fails with "<what> did not finish in time". */
static inline int proc_wait(pid_t pid, int64_t deadline_ms, const char *what) {
    int status;
    while (clk_mono_ms() < deadline_ms) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(20 * 1000);
    }
    proc_dump_stacks(pid);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    CHECK_MSG(0, "%s did not finish in time", what);
    return -1;
}

/* The whole file at path, NUL-terminated (also when binary), in a block the caller frees;
 * *n (when n is not NULL) gets its size. NULL when the file cannot be opened. */
static inline char *proc_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long size = ftell(f);
    CHECK(size >= 0 && fseek(f, 0, SEEK_SET) == 0);
    char *s = malloc((size_t)size + 1);
    CHECK(s && fread(s, 1, (size_t)size, f) == (size_t)size);
    s[size] = '\0';
    fclose(f);
    if (n) *n = (size_t)size;
    return s;
}

/* The text of a file (its first MiB) in a static buffer that the next call overwrites:
 * for logs and reports read on the spot, in a check's message too. NULL when the file
 * cannot be opened. */
static inline const char *proc_slurp(const char *path) {
    static char text[1 << 20];
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    return text;
}

/* Wait until the file at path contains needle; fail the test, quoting the file, when it
 * does not within timeout_ms (for a program's log to say it got somewhere). */
static inline void proc_wait_log(const char *path, const char *needle, int timeout_ms) {
    int64_t deadline = clk_mono_ms() + timeout_ms;
    const char *t = NULL;
    while (clk_mono_ms() < deadline) {
        t = proc_slurp(path);
        if (t && strstr(t, needle)) return;
        usleep(100 * 1000);
    }
    CHECK_MSG(0, "%s never said '%s': %s", path, needle, t ? t : "(no log)");
}

/* The test's random seed: M3_TEST_SEED, else the time; printed as "<who>: seed N" so that
 * a failing run can be repeated. */
static inline unsigned proc_seed(const char *who) {
    const char *seed = getenv("M3_TEST_SEED");
    unsigned s = seed ? (unsigned)atoi(seed) : (unsigned)time(NULL);
    fprintf(stderr, "%s: seed %u (M3_TEST_SEED to repeat)\n", who, s);
    return s;
}

#endif
