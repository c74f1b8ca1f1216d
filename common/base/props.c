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

int props_load(const char *path, props_line_fn apply, void *ctx, char *errstr,
               size_t errstr_size) {
    FILE *f = fopen(path, "r");
    if (!f) {
        err_set(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        char *s = props_trim(line);
        if (!*s || *s == '#' || *s == '!') continue;
        if (apply(ctx, s, path, lineno, errstr, errstr_size) != 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        err_set(errstr, errstr_size, "%s: read error after line %d", path, lineno);
        rc = -1;
    }
    free(line);
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

int props_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return PROPS_FAR;
    int prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof prev[0]);
    }
    return prev[lb];
}

const char *props_closest(const char *name, const char *const *names, int n, int max_distance) {
    int best = PROPS_FAR;
    const char *hit = NULL;
    for (int i = 0; i < n; i++) {
        int d = props_distance(name, names[i]);
        if (d < best) {
            best = d;
            hit = names[i];
        }
    }
    return best <= max_distance ? hit : NULL;
}
