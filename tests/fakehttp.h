/* fakehttp.h - a tiny in-process HTTP server on loopback that answers every request with
 * one canned response: for testing how the registry client (and the worker) take a
 * registry that answers garbage, an error status or nothing useful.
 *
 * Header-only. One thread accepts connections on 127.0.0.1 (a free port the kernel
 * picks), reads the request head, writes the response, closes; at most FH_MAX_REQUESTS
 * requests, and it stops when fh_stop() is called. */
#ifndef M3_FAKEHTTP_H
#define M3_FAKEHTTP_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

#define FH_MAX_REQUESTS 10000

typedef struct {
    int fd;
    int port;
    volatile int stop;
    volatile long requests;
    char response[4096];
    pthread_t th;
} fakehttp;

static void *fh__serve(void *arg) {
    fakehttp *f = arg;
    while (!f->stop && f->requests < FH_MAX_REQUESTS) {
        struct pollfd p = {f->fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        int c = accept(f->fd, NULL, NULL);
        if (c < 0) continue;
        char req[8192];
        size_t got = 0;
        /* the head, and a body if any arrives within 200 ms (POST): then answer */
        for (int i = 0; i < 20 && got < sizeof req - 1; i++) {
            struct pollfd q = {c, POLLIN, 0};
            if (poll(&q, 1, 10) <= 0) {
                if (got && strstr(req, "\r\n\r\n")) break;
                continue;
            }
            ssize_t k = read(c, req + got, sizeof req - 1 - got);
            if (k <= 0) break;
            got += (size_t)k;
            req[got] = 0;
        }
        f->requests++;
        ssize_t w = write(c, f->response, strlen(f->response));
        (void)w;
        close(c);
    }
    return NULL;
}

/* Start serving `response` (a whole HTTP response: status line, headers, body). */
static inline void fh_start(fakehttp *f, const char *response) {
    memset(f, 0, sizeof *f);
    snprintf(f->response, sizeof f->response, "%s", response);
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(f->fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(f->fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    CHECK(getsockname(f->fd, (struct sockaddr *)&a, &len) == 0);
    f->port = ntohs(a.sin_port);
    CHECK(listen(f->fd, 16) == 0);
    CHECK(pthread_create(&f->th, NULL, fh__serve, f) == 0);
}

static inline void fh_stop(fakehttp *f) {
    f->stop = 1;
    pthread_join(f->th, NULL);
    close(f->fd);
}

#endif
