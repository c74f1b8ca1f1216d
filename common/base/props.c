/* props.c - the properties-file reader (see props.h). */
#include "base/props.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

char *props_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

/* A text being read: the bytes and the position of the next one. */
typedef struct {
    const char *text;
    size_t len, pos;
} props__src;

/* Read the next line of src into line (without its '\n', NUL-terminated). Returns its
 * length; PROPS__EOF at the end of the text; PROPS__LONG when it has more than
 * PROPS_LINE_MAX bytes; PROPS__NUL when it holds a NUL byte (*col = its 1-based column);
 * PROPS__BIG when the text passes PROPS_FILE_MAX bytes (*total counts the bytes read).
 * Reading stops at the first fault, so no input makes it read more than PROPS_FILE_MAX
 * bytes or hold a longer line. */
enum { PROPS__EOF = -1, PROPS__LONG = -2, PROPS__NUL = -3, PROPS__BIG = -4 };
static long props__getline(props__src *src, char *line, long *total, long *col) {
    long n = 0;
    int ch = EOF;
    while (src->pos < src->len) {
        ch = (unsigned char)src->text[src->pos++];
        if (++*total > PROPS_FILE_MAX) return PROPS__BIG;
        if (ch == '\n') break;
        if (ch == '\0') {
            *col = n + 1;
            return PROPS__NUL;
        }
        if (n == PROPS_LINE_MAX) return PROPS__LONG;
        line[n++] = (char)ch;
    }
    line[n] = '\0';
    return ch != '\n' && n == 0 ? PROPS__EOF : n;
}

/* The message of a refused line or text. */
static void props__fault(long r, const char *path, int lineno, long col, char *errstr,
                         size_t errstr_size) {
    if (r == PROPS__LONG)
        err_set(errstr, errstr_size, "%s:%d: line longer than %d bytes", path, lineno,
                PROPS_LINE_MAX);
    else if (r == PROPS__NUL)
        err_set(errstr, errstr_size, "%s:%d: NUL byte at column %ld", path, lineno, col);
    else
        err_set(errstr, errstr_size, "%s: larger than %d bytes (line %d)", path,
                PROPS_FILE_MAX, lineno);
}

int props_load_mem(const char *text, size_t len, const char *origin, props_line_fn apply,
                   void *ctx, char *errstr, size_t errstr_size) {
    char *line = malloc(PROPS_LINE_MAX + 1);
    if (!line) {
        err_set(errstr, errstr_size, "%s: out of memory", origin);
        return -1;
    }
    props__src src = {text, len, 0};
    int lineno = 0, rc = 0;
    long total = 0, col = 0, r;
    while ((r = props__getline(&src, line, &total, &col)) != PROPS__EOF) {
        lineno++;
        if (r < 0) {
            props__fault(r, origin, lineno, col, errstr, errstr_size);
            rc = -1;
            break;
        }
        char *s = props_trim(line);
        if (!*s || *s == '#' || *s == '!') continue;
        if (apply(ctx, s, origin, lineno, errstr, errstr_size) != 0) {
            rc = -1;
            break;
        }
    }
    free(line);
    return rc;
}

/* The lines of text[0..n) (a last one without '\n' counts). */
static int props__lines(const char *text, size_t n) {
    int lines = 0;
    for (const char *p = text, *end = text + n; p < end; lines++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    return lines;
}

int props_load(const char *path, props_line_fn apply, void *ctx, char *errstr,
               size_t errstr_size) {
    FILE *f = fopen(path, "r");
    if (!f) {
        err_set(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* one byte past the limit, so props_load_mem sees that the file is too large */
    char *text = malloc(PROPS_FILE_MAX + 1);
    if (!text) {
        fclose(f);
        err_set(errstr, errstr_size, "%s: out of memory", path);
        return -1;
    }
    size_t n = fread(text, 1, PROPS_FILE_MAX + 1, f);
    int rc;
    if (ferror(f)) {
        err_set(errstr, errstr_size, "%s: read error after line %d", path, props__lines(text, n));
        rc = -1;
    } else {
        rc = props_load_mem(text, n, path, apply, ctx, errstr, errstr_size);
    }
    free(text);
    fclose(f);
    return rc;
}

int props_split(char *line, char **key, char **value) {
    char *eq = strchr(line, '=');
    if (!eq) {
        *key = props_trim(line);
        *value = NULL;
        return -1;
    }
    *eq = '\0';
    *key = props_trim(line);
    *value = props_trim(eq + 1);
    return 0;
}

void props_where(char *out, size_t n, const char *origin, int line) {
    if (line > 0) snprintf(out, n, "%s:%d", origin, line);
    else snprintf(out, n, "%s", origin);
}

int props_parse_i64(const char *s, int64_t *out) {
    /* strtoll would skip leading blanks and take "0x..." prefixes' 0: refuse both */
    int digit_at = s[0] == '-' || s[0] == '+';
    if (!isdigit((unsigned char)s[digit_at])) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end) return -1;
    if (errno == ERANGE) return -2;
    *out = v;
    return 0;
}

/* The Levenshtein distance of a (la bytes) and b (lb bytes, both at most 63) when it is at
 * most k, else k + 1. Each row of the table only gets larger at its minimum, so once that
 * passes k the answer is known: a name far from the target costs a few rows, not la x lb. */
static int props__distance_within(const char *a, size_t la, const char *b, size_t lb, int k) {
    size_t diff = la > lb ? la - lb : lb - la;
    if (diff > (size_t)k) return k + 1;   /* at least that many insertions or deletions */
    int prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        int row_min = cur[0];
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            if (cur[j] < row_min) row_min = cur[j];
        }
        if (row_min > k) return k + 1;
        memcpy(prev, cur, (lb + 1) * sizeof prev[0]);
    }
    return prev[lb] <= k ? prev[lb] : k + 1;
}

int props_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return PROPS_FAR;
    return props__distance_within(a, la, b, lb, PROPS_FAR);
}

const char *props_closest(const char *name, const char *const *names, int n, int max_distance) {
    size_t ln = strlen(name);
    if (ln > 63 || max_distance < 0) return NULL;
    int best = max_distance + 1;   /* only a strictly closer name replaces the first found */
    const char *hit = NULL;
    for (int i = 0; i < n && best > 0; i++) {
        size_t li = strlen(names[i]);
        if (li > 63) continue;
        int d = props__distance_within(name, ln, names[i], li, best - 1);
        if (d < best) {
            best = d;
            hit = names[i];
        }
    }
    return hit;
}

/* Non-secret librdkafka properties (CONFIGURATION.md): addresses, names, file locations,
 * mechanisms, timings and sizes. Deliberately absent: sasl.password, ssl.key.password,
 * ssl.keystore.password, ssl.key.pem, ssl.certificate.pem, ssl.ca.pem, every
 * sasl.oauthbearer.* but the method (config, client.secret, assertion keys, token
 * endpoint), sasl.kerberos.kinit.cmd and .keytab, plugin and interceptor settings. */
static const char *const props__kafka_shown[] = {
    "acks", "allow.auto.create.topics", "api.version.request", "auto.commit.interval.ms",
    "auto.offset.reset", "batch.num.messages", "batch.size", "bootstrap.servers",
    "broker.address.family", "check.crcs", "client.dns.lookup", "client.id", "client.rack",
    "compression.codec", "compression.level", "compression.type", "connections.max.idle.ms",
    "debug", "delivery.timeout.ms", "enable.auto.commit", "enable.auto.offset.store",
    "enable.idempotence", "enable.partition.eof", "enable.ssl.certificate.verification",
    "fetch.error.backoff.ms", "fetch.max.bytes", "fetch.message.max.bytes",
    "fetch.min.bytes", "fetch.wait.max.ms", "group.id", "group.instance.id", "group.protocol",
    "group.remote.assignor", "heartbeat.interval.ms", "isolation.level", "linger.ms",
    "log.connection.close", "log_level", "max.in.flight", "max.in.flight.requests.per.connection",
    "max.partition.fetch.bytes", "max.poll.interval.ms", "message.max.bytes",
    "message.send.max.retries", "message.timeout.ms", "metadata.broker.list",
    "metadata.max.age.ms", "partition.assignment.strategy", "partitioner",
    "queue.buffering.max.kbytes", "queue.buffering.max.messages", "queue.buffering.max.ms",
    "queued.max.messages.kbytes", "queued.min.messages", "receive.message.max.bytes",
    "reconnect.backoff.max.ms", "reconnect.backoff.ms", "request.required.acks",
    "request.timeout.ms", "retries", "retry.backoff.max.ms", "retry.backoff.ms",
    "sasl.kerberos.principal", "sasl.kerberos.service.name", "sasl.mechanism",
    "sasl.mechanisms", "sasl.oauthbearer.method", "sasl.username", "security.protocol",
    "session.timeout.ms", "socket.connection.setup.timeout.ms", "socket.keepalive.enable",
    "socket.nagle.disable", "socket.timeout.ms", "ssl.ca.certificate.stores",
    "ssl.ca.location", "ssl.certificate.location", "ssl.cipher.suites", "ssl.crl.location",
    "ssl.curves.list", "ssl.endpoint.identification.algorithm", "ssl.key.location",
    "ssl.keystore.location", "ssl.sigalgs.list", "statistics.interval.ms",
    "sticky.partitioning.linger.ms", "topic.metadata.refresh.interval.ms",
    "transaction.timeout.ms", "transactional.id",
};

int props_kafka_shown(const char *key) {
    for (size_t i = 0; i < sizeof props__kafka_shown / sizeof props__kafka_shown[0]; i++)
        if (strcmp(key, props__kafka_shown[i]) == 0) return 1;
    return 0;
}
