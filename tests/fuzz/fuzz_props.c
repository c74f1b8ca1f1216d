/* fuzz_props - libFuzzer harness of the properties reader (base/props) through both of its
 * users: the input is a properties file, loaded as the worker's configuration (cfg_load,
 * cfg_check) and as a replay mapping (rpl_map_load, rpl_map_check), read from memory
 * (cfg_load_mem, rpl_map_load_mem: the file readers' one code path, without a scratch
 * file per input).
 *
 * Properties, beyond no crash, no sanitizer report and no leak:
 *  - a refused file gets an error that starts with its name (`name:line: ...`);
 *  - a loaded configuration's dump (--print-config) is itself a configuration that
 *    cfg_set accepts line by line, and that dumps to the same text;
 *  - a checked mapping's worker settings (m3rec-replay --print-worker-config) are accepted
 *    by cfg_set. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg.h"
#include "eval/replay.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

/* Apply every line of text to c with cfg_set; aborts on a refused line. */
static void fz_apply_lines(m3_cfg *c, const char *text, const char *what) {
    char *copy = strdup(text), err[1024];
    CHECK(copy);
    int line = 0;
    for (char *s = copy, *nl; *s; s = nl + 1) {
        nl = strchr(s, '\n');
        CHECK_MSG(nl, "%s does not end with a newline: \"%s\"", what, s);
        *nl = 0;
        line++;
        CHECK_MSG(cfg_set(c, s, what, line, err, sizeof err) == 0, "%s refused: %s", what, err);
    }
    free(copy);
}

/* The name the input goes by in messages. */
#define FZ_ORIGIN "fuzz-input.properties"

static void fz_config(const char *text, size_t n) {
    const char *path = FZ_ORIGIN;
    m3_cfg c, again;
    char err[1024];
    cfg_defaults(&c);
    if (cfg_load_mem(&c, text, n, path, err, sizeof err) != 0) {
        fuzz_check_errstr(err, sizeof err, path);
        cfg_free(&c);
        return;
    }
    if (cfg_check(&c, err, sizeof err) != 0) CHECK(memchr(err, 0, sizeof err) && err[0]);
    char *dump = cfg_dump(&c);
    CHECK(dump);
    cfg_defaults(&again);
    fz_apply_lines(&again, dump, "the dump");
    char *dump2 = cfg_dump(&again);
    CHECK(dump2);
    CHECK_EQ_STR(dump2, dump);
    free(dump);
    free(dump2);
    cfg_free(&again);
    cfg_free(&c);
}

static void fz_mapping(const char *text, size_t n) {
    const char *path = FZ_ORIGIN;
    char err[1024];
    rpl_map *m = rpl_map_new();
    CHECK(m);
    if (rpl_map_load_mem(m, text, n, path, err, sizeof err) != 0) {
        fuzz_check_errstr(err, sizeof err, path);
    } else if (rpl_map_check(m, err, sizeof err) != 0) {
        fuzz_check_errstr(err, sizeof err, path);
    } else {
        char *settings = rpl_map_worker_settings(m);
        CHECK(settings);
        m3_cfg c;
        cfg_defaults(&c);
        fz_apply_lines(&c, settings, "the mapping's worker settings");
        char out[4096];
        rpl_map_compare_worker(m, &c, out, sizeof out);
        cfg_free(&c);
        free(settings);
    }
    rpl_map_destroy(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_config((const char *)data, n);
    fz_mapping((const char *)data, n);
    return 0;
}
