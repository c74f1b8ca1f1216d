/* json.c - streaming JSON writer (FILE* or buffer) and a recursive-descent tree reader. */
#include "base/json.h"

#include "base/buf.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== writer */

enum { JSON__IN_OBJ = 1, JSON__IN_ARR = 2, JSON__IN_FLAT = 3 };   /* FLAT: an array on one line */

struct json_writer {
    FILE *f;                 /* NULL for a buffer writer */
    buf out;                 /* buffer writer: the text so far */
    int indent;
    int depth;
    unsigned char kind[JSON_MAX_DEPTH];   /* JSON__IN_OBJ / _ARR / _FLAT per level */
    unsigned char count[JSON_MAX_DEPTH];  /* 0 = no member yet at that level, 1 = some */
    bool key_pending;        /* json_key() written, its value is due */
    bool top_done;           /* the top-level value is complete */
    const char *err;
};

static json_writer *json__writer_new(FILE *f, int indent) {
    json_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->f = f;
    w->indent = indent > 0 ? indent : 0;
    if (!f) {   /* allocated now, so that json_writer_buf() has a text from the start */
        buf_put(&w->out, "", 0);
        if (w->out.oom) { free(w); return NULL; }
    }
    return w;
}

json_writer *json_writer_new_file(FILE *f, int indent) {
    if (!f) return NULL;
    return json__writer_new(f, indent);
}

json_writer *json_writer_new_buf(int indent) { return json__writer_new(NULL, indent); }

void json_writer_destroy(json_writer *w) {
    if (!w) return;
    buf_free(&w->out);
    free(w);
}

const char *json_writer_buf(const json_writer *w, size_t *len) {
    if (len) *len = w && w->out.data ? w->out.len : 0;
    return w && w->out.data ? w->out.data : "";
}

const char *json_writer_error(const json_writer *w) { return w ? w->err : "no writer"; }

bool json_writer_done(const json_writer *w) {
    return w && !w->err && w->depth == 0 && w->top_done;
}

static void json__fail(json_writer *w, const char *why) {
    if (!w->err) w->err = why;
}

static void json__put(json_writer *w, const char *s, size_t n) {
    if (w->err || n == 0) return;
    if (w->f) {
        if (fwrite(s, 1, n, w->f) != n) json__fail(w, "write error");
        return;
    }
    buf_put(&w->out, s, n);
    if (w->out.oom) json__fail(w, "out of memory");
}

static void json__puts(json_writer *w, const char *s) { json__put(w, s, strlen(s)); }

static void json__newline(json_writer *w) {
    if (!w->indent) return;
    json__put(w, "\n", 1);
    for (int i = 0; i < w->depth * w->indent; i++) json__put(w, " ", 1);
}

/* Punctuation before a value: checks that a value is allowed here and writes the comma
 * and indentation an array item needs. Returns false (and fails the writer) on misuse. */
static bool json__before_value(json_writer *w) {
    if (w->err) return false;
    if (w->depth == 0) {
        if (w->top_done) { json__fail(w, "second top-level value"); return false; }
        return true;
    }
    if (w->kind[w->depth - 1] == JSON__IN_OBJ) {
        if (!w->key_pending) { json__fail(w, "value without a key inside an object"); return false; }
        w->key_pending = false;
        return true;
    }
    int flat = w->kind[w->depth - 1] == JSON__IN_FLAT;
    if (w->count[w->depth - 1]) json__puts(w, flat && w->indent ? ", " : ",");
    w->count[w->depth - 1] = 1;
    if (!flat) json__newline(w);
    return true;
}

static void json__after_value(json_writer *w) {
    if (w->depth == 0) w->top_done = true;
}

static void json__begin(json_writer *w, int kind, const char *open) {
    if (!json__before_value(w)) return;
    if (w->depth >= JSON_MAX_DEPTH) { json__fail(w, "nesting too deep"); return; }
    json__puts(w, open);
    w->kind[w->depth] = (unsigned char)kind;
    w->count[w->depth] = 0;
    w->depth++;
}

static void json__end(json_writer *w, int kind, const char *close) {
    if (w->err) return;
    int open = w->depth ? w->kind[w->depth - 1] : 0;
    if (open == JSON__IN_FLAT && kind == JSON__IN_ARR) kind = JSON__IN_FLAT;
    if (w->depth == 0 || open != kind) { json__fail(w, "unbalanced end"); return; }
    if (w->key_pending) { json__fail(w, "key without a value"); return; }
    bool had = w->count[w->depth - 1] && kind != JSON__IN_FLAT;
    w->depth--;
    if (had) json__newline(w);
    json__puts(w, close);
    json__after_value(w);
}

void json_obj_begin(json_writer *w) { if (w) json__begin(w, JSON__IN_OBJ, "{"); }
void json_obj_end(json_writer *w) { if (w) json__end(w, JSON__IN_OBJ, "}"); }
void json_arr_begin(json_writer *w) { if (w) json__begin(w, JSON__IN_ARR, "["); }
void json_arr_begin_flat(json_writer *w) { if (w) json__begin(w, JSON__IN_FLAT, "["); }
void json_arr_end(json_writer *w) { if (w) json__end(w, JSON__IN_ARR, "]"); }

static void json__quoted(json_writer *w, const char *s) {
    static const char hex[] = "0123456789abcdef";
    json__put(w, "\"", 1);
    const char *run = s;   /* start of the bytes not yet written */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[7];
        const char *rep = NULL;
        switch (*p) {
        case '"': rep = "\\\""; break;
        case '\\': rep = "\\\\"; break;
        case '\n': rep = "\\n"; break;
        case '\r': rep = "\\r"; break;
        case '\t': rep = "\\t"; break;
        case '\b': rep = "\\b"; break;
        case '\f': rep = "\\f"; break;
        default:
            if (*p < 0x20) {
                esc[0] = '\\'; esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
                esc[4] = hex[*p >> 4]; esc[5] = hex[*p & 15]; esc[6] = '\0';
                rep = esc;
            }
        }
        if (rep) {
            json__put(w, run, (size_t)((const char *)p - run));
            json__puts(w, rep);
            run = (const char *)p + 1;
        }
    }
    json__puts(w, run);
    json__put(w, "\"", 1);
}

void json_key(json_writer *w, const char *key) {
    if (!w || w->err) return;
    if (w->depth == 0 || w->kind[w->depth - 1] != JSON__IN_OBJ) { json__fail(w, "key outside an object"); return; }
    if (w->key_pending) { json__fail(w, "two keys in a row"); return; }
    if (!key) { json__fail(w, "NULL key"); return; }
    if (w->count[w->depth - 1]) json__put(w, ",", 1);
    w->count[w->depth - 1] = 1;
    json__newline(w);
    json__quoted(w, key);
    json__puts(w, w->indent ? ": " : ":");
    w->key_pending = true;
}

/* A value written as it is: a number, true, false or null. */
static void json__literal(json_writer *w, const char *text) {
    if (!w || !json__before_value(w)) return;
    json__puts(w, text);
    json__after_value(w);
}

void json_num(json_writer *w, double x) {
    char tmp[40];
    if (!isfinite(x)) {
        strcpy(tmp, "null");
    } else {
        /* the shortest of %.15g / %.17g that reads back to the same double */
        snprintf(tmp, sizeof tmp, "%.15g", x);
        if (strtod(tmp, NULL) != x) snprintf(tmp, sizeof tmp, "%.17g", x);
    }
    json__literal(w, tmp);
}

void json_int(json_writer *w, int64_t x) {
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%" PRId64, x);
    json__literal(w, tmp);
}

void json_uint(json_writer *w, uint64_t x) {
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%" PRIu64, x);
    json__literal(w, tmp);
}

void json_str(json_writer *w, const char *s) {
    if (!s) {
        json__literal(w, "null");
        return;
    }
    if (!w || !json__before_value(w)) return;
    json__quoted(w, s);
    json__after_value(w);
}

void json_bool(json_writer *w, bool b) { json__literal(w, b ? "true" : "false"); }

void json_null(json_writer *w) { json__literal(w, "null"); }

/* ======================================================================== reader */

#define JSON__PARSE_DEPTH 512

typedef struct {
    const char *s;       /* whole text */
    size_t pos;
    char *errstr;
    size_t errstr_size;
    bool failed;
} json__parser;

static void json__perr(json__parser *p, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = true;
    if (!p->errstr || !p->errstr_size) return;
    int n = snprintf(p->errstr, p->errstr_size, "offset %zu: ", p->pos);
    if (n < 0 || (size_t)n >= p->errstr_size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errstr + n, p->errstr_size - (size_t)n, fmt, ap);
    va_end(ap);
}

static void json__ws(json__parser *p) {
    for (;;) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->pos++;
        else return;
    }
}

static void json__node_clear(json_node *n) {
    if (n->type == JSON_STRING) free(n->str);
    if (n->type == JSON_ARRAY || n->type == JSON_OBJECT) {
        for (size_t i = 0; i < n->n; i++) {
            json__node_clear(&n->items[i]);
            if (n->keys) free(n->keys[i]);
        }
        free(n->items);
        free(n->keys);
    }
    memset(n, 0, sizeof *n);
}

static int json__hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static size_t json__utf8(char *out, unsigned cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string at p->pos (which is at '"'); returns a malloc'd decoded copy. The
 * decoded text is never longer than the escaped text, so one allocation suffices. */
static char *json__string(json__parser *p) {
    size_t start = ++p->pos;
    size_t end = start;
    while (p->s[end] && p->s[end] != '"') {
        if (p->s[end] == '\\' && p->s[end + 1]) end++;
        end++;
    }
    if (!p->s[end]) { p->pos = start - 1; json__perr(p, "unterminated string"); return NULL; }
    char *out = malloc(end - start + 1);
    if (!out) { json__perr(p, "out of memory"); return NULL; }
    size_t o = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) { json__perr(p, "control character in string"); free(out); return NULL; }
        if (c != '\\') { out[o++] = (char)c; p->pos++; continue; }
        char e = p->s[p->pos + 1];
        p->pos += 2;
        switch (e) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (p->pos + 4 > end || json__hex4(p->s + p->pos, &cp)) {
                p->pos -= 2;
                json__perr(p, "bad \\u escape");
                free(out);
                return NULL;
            }
            p->pos += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* a high surrogate must be followed by \u and a low surrogate */
                if (p->pos + 6 <= end && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u' &&
                    !json__hex4(p->s + p->pos + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p->pos += 6;
                } else {
                    json__perr(p, "unpaired surrogate in \\u escape");
                    free(out);
                    return NULL;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                json__perr(p, "unpaired surrogate in \\u escape");
                free(out);
                return NULL;
            }
            o += json__utf8(out + o, cp);
            break;
        }
        default:
            p->pos -= 2;
            json__perr(p, "bad escape '\\%c'", e);
            free(out);
            return NULL;
        }
    }
    out[o] = '\0';
    p->pos = end + 1;
    return out;
}

static bool json__digit(char c) { return c >= '0' && c <= '9'; }

static void json__number(json__parser *p, json_node *n) {
    const char *s = p->s;
    size_t i = p->pos;
    /* JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    if (s[i] == '-') i++;
    if (s[i] == '0') i++;
    else if (json__digit(s[i])) while (json__digit(s[i])) i++;
    else { json__perr(p, "bad number"); return; }
    if (s[i] == '.') {
        i++;
        if (!json__digit(s[i])) { p->pos = i; json__perr(p, "digit expected after '.'"); return; }
        while (json__digit(s[i])) i++;
    }
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '+' || s[i] == '-') i++;
        if (!json__digit(s[i])) { p->pos = i; json__perr(p, "digit expected in exponent"); return; }
        while (json__digit(s[i])) i++;
    }
    n->type = JSON_NUMBER;
    n->num = strtod(s + p->pos, NULL);   /* overflow gives +-HUGE_VAL, which we accept */
    p->pos = i;
}

static void json__value(json__parser *p, json_node *n, int depth);

/* Appends a zeroed child to an array/object node; returns it, or NULL on OOM. */
static json_node *json__push(json__parser *p, json_node *n, size_t *cap, char *key) {
    if (n->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        json_node *ni = realloc(n->items, nc * sizeof *ni);
        if (!ni) { json__perr(p, "out of memory"); return NULL; }
        n->items = ni;
        if (n->type == JSON_OBJECT) {
            char **nk = realloc(n->keys, nc * sizeof *nk);
            if (!nk) { json__perr(p, "out of memory"); return NULL; }
            n->keys = nk;
        }
        *cap = nc;
    }
    json_node *c = &n->items[n->n];
    memset(c, 0, sizeof *c);
    if (n->keys) n->keys[n->n] = key;
    n->n++;
    return c;
}

static void json__container(json__parser *p, json_node *n, int depth, bool obj) {
    char close = obj ? '}' : ']';
    n->type = obj ? JSON_OBJECT : JSON_ARRAY;
    size_t cap = 0;
    p->pos++;
    json__ws(p);
    if (p->s[p->pos] == close) { p->pos++; return; }
    for (;;) {
        char *key = NULL;
        if (obj) {
            if (p->s[p->pos] != '"') { json__perr(p, "expected string key"); return; }
            key = json__string(p);
            if (!key) return;
            json__ws(p);
            if (p->s[p->pos] != ':') { free(key); json__perr(p, "expected ':' after object key"); return; }
            p->pos++;
        }
        json_node *c = json__push(p, n, &cap, key);
        if (!c) { free(key); return; }
        json__value(p, c, depth + 1);
        if (p->failed) return;
        json__ws(p);
        char ch = p->s[p->pos];
        if (ch == ',') { p->pos++; json__ws(p); continue; }
        if (ch == close) { p->pos++; return; }
        json__perr(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        return;
    }
}

static bool json__lit(json__parser *p, const char *word) {
    size_t n = strlen(word);
    if (strncmp(p->s + p->pos, word, n) != 0) return false;
    p->pos += n;
    return true;
}

static void json__value(json__parser *p, json_node *n, int depth) {
    if (depth > JSON__PARSE_DEPTH) { json__perr(p, "nesting too deep"); return; }
    json__ws(p);
    char c = p->s[p->pos];
    switch (c) {
    case '{': json__container(p, n, depth, true); return;
    case '[': json__container(p, n, depth, false); return;
    case '"': {
        char *s = json__string(p);
        if (!s) return;
        n->type = JSON_STRING;
        n->str = s;
        return;
    }
    case 't': if (json__lit(p, "true")) { n->type = JSON_BOOL; n->b = true; return; } break;
    case 'f': if (json__lit(p, "false")) { n->type = JSON_BOOL; n->b = false; return; } break;
    case 'n': if (json__lit(p, "null")) { n->type = JSON_NULL; return; } break;
    case '\0': json__perr(p, "unexpected end of input"); return;
    default:
        if (c == '-' || json__digit(c)) { json__number(p, n); return; }
    }
    json__perr(p, "unexpected character '%c'", c);
}

json_node *json_parse(const char *text, char *errstr, size_t errstr_size) {
    json__parser p = { text ? text : "", 0, errstr, errstr_size, false };
    if (errstr && errstr_size) errstr[0] = '\0';
    json_node *root = calloc(1, sizeof *root);
    if (!root) { json__perr(&p, "out of memory"); return NULL; }
    json__value(&p, root, 0);
    if (!p.failed) {
        json__ws(&p);
        if (p.s[p.pos] != '\0') json__perr(&p, "trailing characters after the document");
    }
    if (p.failed) { json_free(root); return NULL; }
    return root;
}

void json_free(json_node *root) {
    if (!root) return;
    json__node_clear(root);
    free(root);
}

const json_node *json_member(const json_node *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT || !key) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

const json_node *json_get(const json_node *node, const char *path) {
    if (!node || !path) return NULL;
    while (*path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        const json_node *next = NULL;
        if (node->type == JSON_OBJECT) {
            for (size_t i = 0; i < node->n; i++)
                if (strlen(node->keys[i]) == len && memcmp(node->keys[i], path, len) == 0) {
                    next = &node->items[i];
                    break;
                }
        } else if (node->type == JSON_ARRAY && len > 0) {
            size_t idx = 0;
            bool ok = true;
            for (size_t i = 0; i < len && ok; i++) {
                if (!json__digit(path[i]) || idx > (SIZE_MAX - 9) / 10) ok = false;
                else idx = idx * 10 + (size_t)(path[i] - '0');
            }
            if (ok && idx < node->n) next = &node->items[idx];
        }
        if (!next) return NULL;
        node = next;
        path += len;
        if (*path == '.') path++;
    }
    return node;
}

double json_number(const json_node *node, double dflt) {
    return node && node->type == JSON_NUMBER ? node->num : dflt;
}

const char *json_string(const json_node *node, const char *dflt) {
    return node && node->type == JSON_STRING ? node->str : dflt;
}

bool json_boolean(const json_node *node, bool dflt) {
    return node && node->type == JSON_BOOL ? node->b : dflt;
}
