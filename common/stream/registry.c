/* registry.c - a Confluent-compatible schema-registry client over libcurl (see registry.h). */
#include "stream/registry.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"

#define REG_CONTENT_TYPE "Content-Type: application/vnd.schemaregistry.v1+json"

typedef struct {
    uint32_t id;
    char *schema;   /* owned, NUL-terminated */
    size_t len;
} reg__entry;

struct reg {
    CURL *curl;
    char *url;        /* as configured, with any credentials: only ever given to libcurl */
    char *safe;       /* without user information: for reasons and logs */
    long timeout_ms;
    reg__entry *cache;
    size_t n, cap;
    long long requests, failures;
};

/* One answer: HTTP status and body (bounded). */
typedef struct {
    buf body;
    int too_long;
} reg__answer;

static size_t reg__write(char *p, size_t size, size_t n, void *ud) {
    reg__answer *a = ud;
    size_t len = size * n;
    if (a->body.len + len > REG_RESPONSE_MAX) {
        a->too_long = 1;
        return 0;   /* libcurl stops the transfer: CURLE_WRITE_ERROR */
    }
    buf_put(&a->body, p, len);
    return a->body.oom ? 0 : len;
}

/* The URL without "user:password@" after the scheme. */
static char *reg__strip_userinfo(const char *url) {
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = NULL;
    for (const char *p = host; p < end; p++)
        if (*p == '@') at = p;
    buf b = {0};
    if (!at) {
        buf_puts(&b, url);
    } else {
        buf_put(&b, url, (size_t)(host - url));
        buf_puts(&b, at + 1);
    }
    return buf_take(&b);
}

reg *reg_new(const char *url, long timeout_ms, char *errstr, size_t errstr_size) {
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        err_set(errstr, errstr_size, "registry.url must start with http:// or https://");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        err_set(errstr, errstr_size, "libcurl could not be initialised");
        return NULL;
    }
    reg *r = calloc(1, sizeof *r);
    if (!r) {
        curl_global_cleanup();
        err_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/') n--;   /* paths are appended with their own '/' */
    r->url = strndup(url, n);
    r->safe = r->url ? reg__strip_userinfo(r->url) : NULL;
    r->curl = curl_easy_init();
    r->timeout_ms = timeout_ms;
    if (!r->url || !r->safe || !r->curl) {
        reg_destroy(r);
        err_set(errstr, errstr_size, "out of memory or libcurl could not start");
        return NULL;
    }
    return r;
}

void reg_destroy(reg *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) free(r->cache[i].schema);
    free(r->cache);
    if (r->curl) curl_easy_cleanup(r->curl);
    free(r->url);
    free(r->safe);
    free(r);
    curl_global_cleanup();
}

const char *reg_url_safe(const reg *r) { return r->safe; }

void reg_stats(const reg *r, long long *requests, long long *failures) {
    *requests = r->requests;
    *failures = r->failures;
}

/* One request to {url}{path}; POST when body is not NULL. Returns REG_OK with the status
 * and the NUL-terminated body in *a (freed by the caller), or REG_UNAVAILABLE with reason
 * (no connection, timeout, too long an answer). `what` starts the reason. */
static reg_status reg__call(reg *r, const char *path, const char *body, long *status,
                            reg__answer *a, const char *what, char *reason, size_t n) {
    buf url = {0};
    buf_printf(&url, "%s%s", r->url, path);
    struct curl_slist *hdr = curl_slist_append(NULL, REG_CONTENT_TYPE);
    hdr = curl_slist_append(hdr, "Accept: application/vnd.schemaregistry.v1+json, application/json");
    char cerr[CURL_ERROR_SIZE] = "";
    CURL *c = r->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url.data);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);   /* a timeout must not raise SIGALRM */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, reg__write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    r->requests++;
    CURLcode rc = url.oom ? CURLE_OUT_OF_MEMORY : curl_easy_perform(c);
    curl_slist_free_all(hdr);
    buf_free(&url);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        buf_putc(&a->body, '\0');   /* json_parse wants a string; len keeps the NUL out */
        a->body.len--;
        if (!a->body.oom) return REG_OK;
    }
    if (a->too_long)
        err_set(reason, n, "%s: registry %s: answer longer than %u bytes", what, r->safe,
                REG_RESPONSE_MAX);
    else
        err_set(reason, n, "%s: registry %s unreachable: %s", what, r->safe,
                cerr[0] ? cerr : curl_easy_strerror(rc));
    return REG_UNAVAILABLE;
}

/* A JSON object from the body, or NULL with reason ("... not JSON: offset 0: ..."). */
static json_node *reg__json(reg *r, const reg__answer *a, long status, const char *what,
                            char *reason, size_t n) {
    char jerr[128];
    json_node *j = strlen(a->body.data) == a->body.len ? json_parse(a->body.data, jerr, sizeof jerr)
                                                      : NULL;
    if (!j && strlen(a->body.data) != a->body.len) snprintf(jerr, sizeof jerr, "a NUL byte");
    if (j && j->type == JSON_OBJECT) return j;
    if (j) snprintf(jerr, sizeof jerr, "not an object");
    json_free(j);
    err_set(reason, n, "%s: registry %s answered HTTP %ld, not the JSON expected (%s)", what,
            r->safe, status, jerr);
    return NULL;
}

/* The registry's own message of an error answer: "message" (Confluent, Apicurio). */
static void reg__error(reg *r, const reg__answer *a, long status, const char *what, char *reason,
                       size_t n) {
    char jerr[8];
    json_node *j = strlen(a->body.data) == a->body.len ? json_parse(a->body.data, jerr, sizeof jerr)
                                                      : NULL;
    const char *msg = json_string(json_member(j, "message"), "");
    err_set(reason, n, "%s: registry %s answered HTTP %ld%s%.200s", what, r->safe, status,
            msg[0] ? ": " : "", msg);
    json_free(j);
}

/* Keep schema (copied) under id. Returns the entry, or NULL when out of memory. */
static reg__entry *reg__keep(reg *r, uint32_t id, const char *schema) {
    for (size_t i = 0; i < r->n; i++)
        if (r->cache[i].id == id) return &r->cache[i];
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        reg__entry *e = realloc(r->cache, cap * sizeof *e);
        if (!e) return NULL;
        r->cache = e;
        r->cap = cap;
    }
    char *s = strdup(schema);
    if (!s) return NULL;
    r->cache[r->n] = (reg__entry){id, s, strlen(s)};
    return &r->cache[r->n++];
}

/* The JSON object of a 200 answer. Otherwise NULL with *st and reason: `no` for the
 * statuses in `nos` (0-terminated: the registry's permanent "no"), REG_UNAVAILABLE for any
 * other status or a body that is not a JSON object. */
static json_node *reg__object(reg *r, const reg__answer *a, long status, const long *nos,
                              reg_status no, const char *what, reg_status *st, char *reason,
                              size_t n) {
    *st = REG_UNAVAILABLE;
    if (status == 200) return reg__json(r, a, status, what, reason, n);
    for (int i = 0; nos[i]; i++)
        if (status == nos[i]) *st = no;
    reg__error(r, a, status, what, reason, n);
    return NULL;
}

/* The GET answer of /schemas/ids/{id}: {"schema": "...", "schemaType"?: "AVRO"}. */
static reg_status reg__schema_answer(reg *r, uint32_t id, const reg__answer *a, long status,
                                     const char *what, reg__entry **out, char *reason, size_t n) {
    static const long nos[] = {404, 0};
    reg_status st;
    json_node *j = reg__object(r, a, status, nos, REG_NOT_FOUND, what, &st, reason, n);
    if (!j) return st;
    const json_node *s = json_member(j, "schema");
    const char *type = json_string(json_member(j, "schemaType"), "AVRO");
    st = REG_OK;
    if (!s || s->type != JSON_STRING || !s->str[0]) {
        err_set(reason, n, "%s: registry %s answered without a \"schema\" string", what, r->safe);
        st = REG_UNAVAILABLE;
    } else if (strcmp(type, "AVRO") != 0) {
        err_set(reason, n, "%s: a %.20s schema, not Avro", what, type);
        st = REG_REFUSED;
    } else if (!(*out = reg__keep(r, id, s->str))) {
        err_set(reason, n, "%s: out of memory", what);
        st = REG_UNAVAILABLE;
    }
    json_free(j);
    return st;
}

reg_status reg_schema(reg *r, uint32_t id, const char **schema, size_t *len, char *reason,
                      size_t reason_size) {
    for (size_t i = 0; i < r->n; i++)
        if (r->cache[i].id == id) {
            *schema = r->cache[i].schema;
            *len = r->cache[i].len;
            return REG_OK;
        }
    char path[40], what[32];
    snprintf(path, sizeof path, "/schemas/ids/%u", id);
    snprintf(what, sizeof what, "schema id %u", id);
    reg__answer a = {0};
    long status = 0;
    reg__entry *e = NULL;
    reg_status st = reg__call(r, path, NULL, &status, &a, what, reason, reason_size);
    if (st == REG_OK) st = reg__schema_answer(r, id, &a, status, what, &e, reason, reason_size);
    buf_free(&a.body);
    if (st != REG_OK) {
        r->failures++;
        return st;
    }
    *schema = e->schema;
    *len = e->len;
    return REG_OK;
}

/* The POST answer of /subjects/{s}/versions: {"id": N}. */
static reg_status reg__register_answer(reg *r, const reg__answer *a, long status,
                                       const char *what, uint32_t *id, char *reason, size_t n) {
    static const long nos[] = {404, 409, 422, 0};   /* no such subject, incompatible, invalid */
    reg_status st;
    json_node *j = reg__object(r, a, status, nos, REG_REFUSED, what, &st, reason, n);
    if (!j) return st;
    double v = json_number(json_member(j, "id"), -1);
    json_free(j);
    if (!(v >= 0 && v <= 4294967295.0 && v == (double)(uint32_t)v)) {
        err_set(reason, n, "%s: registry %s answered without a valid \"id\"", what, r->safe);
        return REG_UNAVAILABLE;
    }
    *id = (uint32_t)v;
    return REG_OK;
}

reg_status reg_register(reg *r, const char *subject, const char *schema, uint32_t *id,
                        char *reason, size_t reason_size) {
    char what[200];
    snprintf(what, sizeof what, "registering subject %.160s", subject);
    char *esc = curl_easy_escape(r->curl, subject, 0);
    json_writer *w = json_writer_new_buf(0);
    if (!esc || !w) {
        curl_free(esc);
        json_writer_destroy(w);
        err_set(reason, reason_size, "%s: out of memory", what);
        return REG_UNAVAILABLE;
    }
    json_obj_begin(w);
    json_key(w, "schema");
    json_str(w, schema);
    json_obj_end(w);
    buf path = {0};
    buf_printf(&path, "/subjects/%s/versions", esc);
    curl_free(esc);
    reg__answer a = {0};
    long status = 0;
    reg_status st = REG_UNAVAILABLE;
    if (json_writer_error(w) || path.oom)
        err_set(reason, reason_size, "%s: out of memory", what);
    else
        st = reg__call(r, path.data, json_writer_buf(w, NULL), &status, &a, what, reason,
                       reason_size);
    if (st == REG_OK) st = reg__register_answer(r, &a, status, what, id, reason, reason_size);
    if (st == REG_OK && !reg__keep(r, *id, schema)) {
        err_set(reason, reason_size, "%s: out of memory", what);
        st = REG_UNAVAILABLE;
    }
    if (st != REG_OK) r->failures++;
    buf_free(&a.body);
    buf_free(&path);
    json_writer_destroy(w);
    return st;
}
