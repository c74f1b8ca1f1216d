/* fuzz_replay - libFuzzer harness of the replay's row parser (eval/replay): the input is a
 * data file (in memory: rpl_new_mem, the file reader's row parser on a memory stream),
 * replayed with each shipped mapping (config/replay-*.properties: the csv
 * layouts of Ali-CCP and AliExpress, and the raw Ali-CCP lines), bad rows skipped.
 *
 * Properties, beyond no crash, no sanitizer report and no leak:
 *  - events come out in event-time order;
 *  - every event is one the encoder accepts (the replay writes only valid messages);
 *  - at the end, impressions + bad rows = rows read, and conversions <= clicks;
 *  - a fatal error names the data file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/replay.h"
#include "fuzz.h"
#include "stream/codec.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static const char *const fz_map_files[] = {
    "replay-aliccp.properties", "replay-aliexpress.properties", "replay-aliccp-raw.properties"};
#define FZ_MAPS (int)(sizeof fz_map_files / sizeof fz_map_files[0])
static rpl_map *fz_maps[FZ_MAPS];
static codec *fz_codec;
static uint8_t fz_buf[1 << 16];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[1024], path[1024];
    fz_codec = codec_new(err, sizeof err);
    CHECK_MSG(fz_codec, "codec_new: %s", err);
    for (int i = 0; i < FZ_MAPS; i++) {
        snprintf(path, sizeof path, "%s/config/%s", M3_SOURCE_DIR, fz_map_files[i]);
        fz_maps[i] = rpl_map_new();
        CHECK(fz_maps[i]);
        CHECK_MSG(rpl_map_load(fz_maps[i], path, err, sizeof err) == 0, "%s", err);
        CHECK_MSG(rpl_map_check(fz_maps[i], err, sizeof err) == 0, "%s", err);
    }
    return 0;
}

/* The event's time, checked to be one the encoder accepts. */
static int64_t fz_check_event(const m3_event *ev) {
    char reason[CODEC_REASON_MAX];
    CHECK(codec_encoded_size_max(ev) <= sizeof fz_buf);
    long k = codec_encode(fz_codec, ev, fz_buf, sizeof fz_buf, reason, sizeof reason);
    CHECK_MSG(k > 0, "the replay made an event (%s) the encoder refuses: %s",
              codec_type_name(ev->type), reason);
    return ev->type == M3_EV_IMPRESSION ? ev->u.imp.ts_ms : ev->u.conv.ts_ms;
}

/* Replay data[0..n) with mapping m to its end or its first fatal error. The name is short:
 * the replay puts it in its impression ids. */
static void fz_replay(const rpl_map *m, const uint8_t *data, size_t n) {
    const char *path = "m3fz";
    char err[1024];
    rpl_opts opts = {.skip_bad = 1, .max_rows = 0};
    rpl_replay *r = rpl_new_mem(m, path, data, n, &opts, err, sizeof err);
    CHECK_MSG(r, "rpl_new: %s", err);
    m3_event ev;
    int64_t last_ts = INT64_MIN;
    int rc;
    while ((rc = rpl_next(r, &ev, err, sizeof err)) == 1) {
        int64_t ts = fz_check_event(&ev);
        CHECK_MSG(ts >= last_ts, "event time %lld after %lld", (long long)ts, (long long)last_ts);
        last_ts = ts;
    }
    rpl_stats st;
    rpl_get_stats(r, &st);
    if (rc == 0) {
        CHECK_EQ_INT(st.impressions + st.bad, st.rows);
        CHECK(st.conversions <= st.clicks);
    } else {
        CHECK_EQ_INT(rc, -1);
        fuzz_check_errstr(err, sizeof err, path);
    }
    rpl_destroy(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    for (int i = 0; i < FZ_MAPS; i++) fz_replay(fz_maps[i], data, n);
    return 0;
}
