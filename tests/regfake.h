/* regfake.h - a registry client (registry.h) pointed at a fakehttp server: for the tests
 * of the client and of the decoder that uses it. Header-only. */
#ifndef M3_REGFAKE_H
#define M3_REGFAKE_H
#include "check.h"
#include "fakehttp.h"
#include "stream/registry.h"

/* Serve `response` and return a client of it; the URL carries credentials, which the
 * client's safe URL must not show. */
static inline reg *regfake_client(fakehttp *f, const char *response) {
    char url[128], err[256];
    fh_start(f, response);
    snprintf(url, sizeof url, "http://user:s3cret@127.0.0.1:%d/apis/ccompat/v7/", f->port);
    reg *r = reg_new(url, 2000, err, sizeof err);
    CHECK_MSG(r, "%s", err);
    CHECK_CONTAINS(reg_url_safe(r), "http://127.0.0.1:");
    CHECK(!strstr(reg_url_safe(r), "s3cret"));
    return r;
}

/* A whole HTTP response with a JSON content type. */
static inline void regfake_http(char *out, size_t n, const char *status, const char *body) {
    snprintf(out, n, "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s", status, strlen(body), body);
}

#endif
