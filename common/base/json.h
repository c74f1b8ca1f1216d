/* json.h - a small streaming JSON writer and a minimal tree reader for m3rec's reports.
 *
 * The writer tracks nesting and commas, so callers emit keys and values in order and
 * never write punctuation themselves. It writes to a FILE* or to a growable buffer.
 * Non-finite numbers are written as null (JSON has no NaN). A misuse (a value where a
 * key is due, unbalanced end, nesting deeper than JSON_MAX_DEPTH) or an I/O or memory
 * failure makes the writer sticky-failed: later calls do nothing and json_writer_error()
 * says why.
 *
 * The reader parses a whole document into a tree that json_free() releases; it is meant
 * for reading our own reports back (the demo compares worker and simulator reports). */
#ifndef M3_JSON_H
#define M3_JSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 64   /* writer nesting limit; the reader allows 512 */

/* ---- writer ---- */

typedef struct json_writer json_writer;

/* A writer that appends to `f` (not owned: the caller closes it). `indent` > 0 pretty-
 * prints with that many spaces per level; 0 writes one compact line.
 * Returns NULL when out of memory. */
json_writer *json_writer_new_file(FILE *f, int indent);
/* A writer that appends to an internal buffer; see json_writer_buf(). NULL on OOM. */
json_writer *json_writer_new_buf(int indent);
/* Free a writer; NULL is a no-op. Does not close a FILE*. */
void json_writer_destroy(json_writer *w);

/* The NUL-terminated text written so far to a buffer writer (owned by the writer, valid
 * until the next write or destroy); its length goes to *len when len is not NULL.
 * Returns "" for a FILE* writer. */
const char *json_writer_buf(const json_writer *w, size_t *len);
/* NULL while the writer is healthy, else a static message naming the first failure. */
const char *json_writer_error(const json_writer *w);
/* True when every opened object/array was closed and one top-level value was written. */
bool json_writer_done(const json_writer *w);

void json_obj_begin(json_writer *w);
void json_obj_end(json_writer *w);
void json_arr_begin(json_writer *w);
/* An array written on one line even when pretty-printing (for long series of numbers);
 * closed with json_arr_end(). Its items are separated by ", " (by "," when compact). */
void json_arr_begin_flat(json_writer *w);
void json_arr_end(json_writer *w);
/* The key of the next member; only inside an object, before each value. */
void json_key(json_writer *w, const char *key);
/* A number written so that it reads back exactly; NaN and +-inf are written as null. */
void json_num(json_writer *w, double x);
void json_int(json_writer *w, int64_t x);
void json_uint(json_writer *w, uint64_t x);
/* A string with ", \, and control characters escaped; NULL is written as null. Bytes
 * >= 0x80 pass through unchanged (the input is assumed to be UTF-8). */
void json_str(json_writer *w, const char *s);
void json_bool(json_writer *w, bool b);
void json_null(json_writer *w);

/* ---- reader ---- */

typedef enum { JSON_NULL = 0, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_node json_node;
struct json_node {
    json_type type;
    bool b;            /* JSON_BOOL */
    double num;        /* JSON_NUMBER */
    char *str;         /* JSON_STRING: NUL-terminated UTF-8 (an embedded \u0000 ends it) */
    size_t n;          /* JSON_ARRAY / JSON_OBJECT: number of children */
    char **keys;       /* JSON_OBJECT: keys[n] */
    json_node *items;  /* JSON_ARRAY / JSON_OBJECT: items[n] */
};

/* Parse one JSON document (trailing whitespace only). Returns the root, which the caller
 * frees with json_free(). On error, NULL is returned and errstr names the byte offset
 * and what was expected ("offset 17: expected ':' after object key"). */
json_node *json_parse(const char *text, char *errstr, size_t errstr_size);
/* Free a tree returned by json_parse(); NULL is a no-op. */
void json_free(json_node *root);

/* Look up a dotted path: "scenarios.home.ctr.auc". Path components select object
 * members by key (the first match when a key repeats) or array items by decimal index
 * ("models.0"). Keys containing '.' cannot be reached. An empty path returns `node`.
 * Returns NULL when any component is missing or node is NULL. The node is owned by the tree. */
const json_node *json_get(const json_node *node, const char *path);
/* The member `key` of an object (no dot splitting); NULL when absent or not an object. */
const json_node *json_member(const json_node *obj, const char *key);
/* The number held by `node`, or `dflt` when node is NULL or not a number (e.g. null). */
double json_number(const json_node *node, double dflt);
/* The string held by `node`, or `dflt` when node is NULL or not a string. */
const char *json_string(const json_node *node, const char *dflt);
/* The boolean held by `node`, or `dflt` when node is NULL or not a bool. */
bool json_boolean(const json_node *node, bool dflt);

#endif
