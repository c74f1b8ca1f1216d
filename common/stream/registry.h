/* registry.h - a client of a Confluent-compatible schema registry's REST API (Confluent
 * Schema Registry, Apicurio's /apis/ccompat/v7, Karapace, ...): fetch a schema by id and
 * register a schema under a subject. libcurl's easy API, one request at a time, bounded
 * by a timeout and a response size limit; answers parsed with base/json. Schemas fetched
 * by id are cached for the client's life (an id never changes its schema).
 *
 * Failures are told apart because the caller acts differently: REG_NOT_FOUND (the
 * registry answered that the id or subject does not exist: a permanent "no") and
 * REG_UNAVAILABLE (no answer, a timeout, 5xx, 401/403, a body that is not the JSON
 * expected: the same call may succeed later). Reasons never contain the URL's user
 * information (credentials). See docs/registry.md. */
#ifndef M3_REGISTRY_H
#define M3_REGISTRY_H
#include <stddef.h>
#include <stdint.h>

#define REG_RESPONSE_MAX (1u << 20)   /* a longer answer is refused as garbage */

typedef struct reg reg;

typedef enum { REG_OK = 0, REG_NOT_FOUND, REG_UNAVAILABLE, REG_REFUSED } reg_status;

/* A client of the registry at base `url` (http:// or https://, e.g.
 * http://127.0.0.1:8080/apis/ccompat/v7; user:password@ in it is sent as basic
 * authentication and never shown), each request bounded by timeout_ms (connecting
 * included). Sends nothing yet. Returns NULL with errstr filled for a bad URL or when
 * libcurl cannot start. */
reg *reg_new(const char *url, long timeout_ms, char *errstr, size_t errstr_size);

/* Free a client and its cache; NULL is a no-op. */
void reg_destroy(reg *r);

/* The base URL without user information, for log lines (owned by r). */
const char *reg_url_safe(const reg *r);

/* The schema (JSON text, owned by r's cache, valid until reg_destroy) with registry id
 * `id`: from the cache, else GET {url}/schemas/ids/{id}. Returns REG_OK with *schema and
 * *len set; REG_NOT_FOUND (404) or REG_UNAVAILABLE with reason filled ("schema id 17:
 * registry http://...: HTTP 503", "... not JSON: ..."). An answer whose schemaType is
 * not AVRO is REG_REFUSED. */
reg_status reg_schema(reg *r, uint32_t id, const char **schema, size_t *len, char *reason,
                      size_t reason_size);

/* Register `schema` (JSON text) under `subject` (POST {url}/subjects/{subject}/versions);
 * the registry answers the id, the same one when it has that schema already. Returns
 * REG_OK with *id set (and the schema cached under it); REG_REFUSED when the registry
 * refused the schema (409 incompatible, 422 invalid: its message in reason), or
 * REG_UNAVAILABLE. */
reg_status reg_register(reg *r, const char *subject, const char *schema, uint32_t *id,
                        char *reason, size_t reason_size);

/* Requests sent and requests that failed (any status but REG_OK), for reports. */
void reg_stats(const reg *r, long long *requests, long long *failures);

#endif
