/* http.h - the tests' HTTP client (libcurl, loopback): GET a URL with a deadline, read one
 * sample of a Prometheus text exposition, and wait for a worker's live view (app/live.h)
 * to say something.
 *
 * Header-only (static inline) so that each test program includes what it uses; every
 * helper fails the test (check.h) rather than return an error the caller could forget. */
#ifndef M3_TESTS_HTTP_H
#define M3_TESTS_HTTP_H
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "check.h"
#include "proc.h"

/* A response body: malloc'd, NUL-terminated (data NULL before anything came). */
typedef struct {
    char *data;
    size_t len;
} http_body;

static inline void http_body_free(http_body *b) {
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

static size_t http__write(char *p, size_t size, size_t n, void *ud) {
    http_body *b = ud;
    char *more = realloc(b->data, b->len + size * n + 1);
    CHECK(more);
    memcpy(more + b->len, p, size * n);
    b->len += size * n;
    more[b->len] = '\0';
    b->data = more;
    return size * n;
}

/* Request url with handle h (NULL: a new one each time; reuse one to keep the connection
 * open), at most timeout_ms; method NULL is GET. Returns the status (0 when the request
 * failed: refused, reset, timed out); the body replaces *body (http_body_free; body may be
 * NULL). */
static inline long http_request(CURL *h, const char *method, const char *url, int timeout_ms,
                                http_body *body) {
    CURL *c = h ? h : curl_easy_init();
    CHECK(c);
    http_body local = {0};
    http_body *out = body ? body : &local;
    http_body_free(out);
    curl_easy_setopt(c, CURLOPT_URL, url);
    int head = method && strcmp(method, "HEAD") == 0;
    curl_easy_setopt(c, CURLOPT_NOBODY, (long)head);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, head ? NULL : method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http__write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (!h) curl_easy_cleanup(c);
    http_body_free(&local);
    return status;
}

static inline long http_get(const char *url, int timeout_ms, http_body *body) {
    return http_request(NULL, NULL, url, timeout_ms, body);
}

/* The value of the sample whose line starts with `series ` (name and labels exactly as
 * written, e.g. "m3rec_window_auc{task=\"ctr\"}") in an exposition text into *v.
 * Returns 1 when found, 0 when absent. */
static inline int http_sample(const char *text, const char *series, double *v) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            *v = strtod(p + n + 1, NULL);
            return 1;
        }
    return 0;
}

/* The sample's value; the test fails when it is absent. */
static inline double http_sample_of(const char *text, const char *series) {
    double v = NAN;
    CHECK_MSG(http_sample(text, series, &v), "no %s in:\n%s", series, text);
    return v;
}

/* The port of the worker whose log is at `log` (its start-up line "metrics and health at
 * http://127.0.0.1:PORT"), waiting for that line at most 30 s. */
static inline int http_worker_port(const char *log) {
    static const char at[] = "metrics and health at http://127.0.0.1:";
    proc_wait_log(log, at, 30000);
    return atoi(strstr(proc_slurp(log), at) + strlen(at));
}

/* GET http://127.0.0.1:port<path> until it answers status want (every 50 ms, at most
 * timeout_ms; the test fails then); the last body is in *body. */
static inline void http_wait_status(int port, const char *path, long want, int timeout_ms,
                                    http_body *body) {
    char url[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    int64_t deadline = clk_mono_ms() + timeout_ms;
    long st = 0;
    while ((st = http_get(url, 5000, body)) != want && clk_mono_ms() < deadline) usleep(50 * 1000);
    CHECK_MSG(st == want, "%s answered %ld, want %ld: %s", url, st, want,
              body->data ? body->data : "");
}

/* Poll the worker's /metrics until `series` is at least want (every 200 ms, at most
 * timeout_ms; the test fails then). Returns the text (in *body). */
static inline const char *http_wait_sample(int port, const char *series, double want,
                                           int timeout_ms, http_body *body) {
    char url[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    int64_t deadline = clk_mono_ms() + timeout_ms;
    double v = NAN;
    while (clk_mono_ms() < deadline) {
        if (http_get(url, 5000, body) == 200 && http_sample(body->data, series, &v) && v >= want)
            return body->data;
        usleep(200 * 1000);
    }
    CHECK_MSG(0, "%s stayed at %g (want %g)", series, v, want);
    return NULL;
}

#endif
