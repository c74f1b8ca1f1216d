/* props.h - the properties-file reader the worker configuration (config/cfg) and the replay
 * mappings (eval/replay) share: Java-properties style `key=value` lines, `#` or `!`
 * comments, blank lines; errors as `file:line: message`; "did you mean" suggestions.
 *
 * The reader knows no keys: a caller hands it a function that applies one line. */
#ifndef M3_PROPS_H
#define M3_PROPS_H
#include <stddef.h>
#include <stdint.h>

/* Apply one setting: line is a trimmed, non-blank, non-comment line of origin (a path) at
 * lineno (1-based). Returns 0, or -1 with errstr filled (the whole message, where: part
 * included); loading stops at the first -1. */
typedef int (*props_line_fn)(void *ctx, const char *line, const char *origin, int lineno,
                             char *errstr, size_t errstr_size);

/* Trim blanks on both sides of s in place; returns the first non-blank character. */
char *props_trim(char *s);

#define PROPS_LINE_MAX (64 * 1024)   /* bytes in one line, without its newline */
#define PROPS_FILE_MAX (1024 * 1024)  /* bytes in one file */

/* Read the file at path line by line and hand every setting line to apply(ctx, ...).
 * Returns 0; or -1 with errstr = "path: <strerror>" when the file cannot be opened,
 * apply's message when a line is refused (the lines before it stay applied),
 * "path:N: line longer than 65536 bytes", "path:N: NUL byte at column C",
 * "path: larger than 1048576 bytes (line N)" (nothing past the limit is read, so
 * /dev/zero or an endless pipe is refused in bounded memory and time), or
 * "path: read error after line N" when reading fails. */
int props_load(const char *path, props_line_fn apply, void *ctx, char *errstr,
               size_t errstr_size);

/* The same for text[0..len) already in memory (a file's content, a fuzzer's input), named
 * origin in messages: props_load reads the file (at most PROPS_FILE_MAX + 1 bytes) and
 * hands it here, so both take one path. The same returns, with origin for path. */
int props_load_mem(const char *text, size_t len, const char *origin, props_line_fn apply,
                   void *ctx, char *errstr, size_t errstr_size);

/* Cut `key=value` (in place) at its first '=' into trimmed *key and *value. Returns 0, or
 * -1 when line has no '=' (then *key is the whole line, trimmed). */
int props_split(char *line, char **key, char **value);

/* The origin of a setting in messages: "origin:line", or "origin" when line <= 0. */
void props_where(char *out, size_t n, const char *origin, int line);

/* Parse a whole base-10 integer with an optional sign and no blanks. Returns 0, -1 when s
 * is not an integer, -2 when it is out of range for int64_t (*out is set only on 0). */
int props_parse_i64(const char *s, int64_t *out);

/* The Levenshtein distance of a and b; PROPS_FAR when either is longer than 63 bytes. */
#define PROPS_FAR 1000
int props_distance(const char *a, const char *b);

/* The first of the n names closest to name (the smallest props_distance), when that
 * distance is at most max_distance; else NULL. Bounded: a name further than the best so
 * far costs a few rows of the distance table, or nothing when the lengths alone differ
 * by more (the "did you mean" of an unknown key is cheap next to loading the file). */
const char *props_closest(const char *name, const char *const *names, int n, int max_distance);

/* 1 when the value of the librdkafka property key (without "kafka.") may be shown: in
 * --print-config, the report, a log or an error message. Only properties known to hold no
 * key, password, token, credential or oauth setting are on the allowlist (props.c); every
 * other key, including one librdkafka adds later, is 0 and its value is shown as "***". */
int props_kafka_shown(const char *key);

#endif
