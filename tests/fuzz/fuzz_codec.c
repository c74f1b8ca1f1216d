/* fuzz_codec - libFuzzer harness of the message decoder (stream/codec): any bytes, as a
 * message of any topic (the fingerprint in the header picks the record type and the
 * writer schema: the reader's own, or one of tests/data/evolve/, resolved to it).
 *
 * Properties, beyond no crash, no sanitizer report and no leak:
 *  - a refused message has a reason (terminated, not empty) and needs no clearing;
 *  - an accepted one is an event the encoder accepts, within codec_encoded_size_max();
 *  - round trip (docs/contract.md): the decoder accepts only what the encoder would write,
 *    except the block structure of maps and arrays, which Avro leaves to the writer
 *    (several blocks, negative counts with byte sizes). So the re-encoding y of an input x
 *    is canonical and never longer: decoding y and encoding again gives y (a fixed point),
 *    |y| <= |x|, and |y| == |x| only when y == x (a one-block message comes back byte for
 *    byte). M3_FUZZ_ROUNDTRIP=0 in the environment turns this one off, to look for other
 *    findings past a known one. A message of another writer schema (schema evolution) is
 *    re-encoded with the reader's, so for it the round trip starts at y: y decodes, and
 *    encodes to y again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "stream/codec.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static codec *fz_codec;
static int fz_roundtrip;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[512];
    fz_codec = codec_new(err, sizeof err);
    CHECK_MSG(fz_codec, "codec_new: %s", err);
    CHECK_MSG(codec_add_dir(fz_codec, M3_SOURCE_DIR "/tests/data/evolve", NULL, NULL, err,
                            sizeof err) > 0, "codec_add_dir: %s", err);
    fz_roundtrip = fuzz_switch("M3_FUZZ_ROUNDTRIP");
    return 0;
}

/* Print the first difference of the re-encoded bytes from the input, then abort. */
static void fz_mismatch(const uint8_t *in, size_t n, const uint8_t *out, size_t k,
                        const char *type) {
    size_t i = 0;
    while (i < n && i < k && in[i] == out[i]) i++;
    CHECK__FAIL("round trip: %s of %zu bytes re-encodes to %zu bytes, first difference at "
                "offset %zu (input 0x%02x, encoder 0x%02x)",
                type, n, k, i, i < n ? in[i] : 0, i < k ? out[i] : 0);
}

/* Encode ev into a malloc'd buffer of codec_encoded_size_max bytes; *k is its length. */
static uint8_t *fz_encode(const m3_event *ev, long *k) {
    char reason[CODEC_REASON_MAX];
    size_t cap = codec_encoded_size_max(ev);
    uint8_t *out = malloc(cap ? cap : 1);
    CHECK(out);
    *k = codec_encode(fz_codec, ev, out, cap, reason, sizeof reason);
    CHECK_MSG(*k >= 0, "a decoded %s is refused by the encoder: %s", codec_type_name(ev->type),
              reason);
    return out;
}

/* y = encode(decode(x)) is canonical: a fixed point, no longer than x, x itself when as long. */
static void fz_roundtrip_check(const uint8_t *x, size_t n, const uint8_t *y, size_t k,
                               const char *type) {
    if (k > n || (k == n && memcmp(x, y, n) != 0)) fz_mismatch(x, n, y, k, type);
    if (k == n) return;
    m3_event again;
    char reason[CODEC_REASON_MAX];
    CHECK_MSG(codec_decode(fz_codec, y, k, &again, reason, sizeof reason) == 0,
              "the re-encoded %s is refused by the decoder: %s", type, reason);
    long k2;
    uint8_t *z = fz_encode(&again, &k2);
    if ((size_t)k2 != k || memcmp(y, z, k) != 0) fz_mismatch(y, k, z, (size_t)k2, type);
    free(z);
    m3_event_clear(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    m3_event ev;
    char reason[CODEC_REASON_MAX];
    if (codec_decode(fz_codec, data, n, &ev, reason, sizeof reason) != 0) {
        CHECK_MSG(memchr(reason, 0, sizeof reason) && reason[0], "refused without a reason");
        CHECK_EQ_INT(ev.type, M3_EV_NONE);
        return 0;
    }
    long k;
    uint8_t *out = fz_encode(&ev, &k);
    uint64_t fp = 0;   /* the input's writer fingerprint (it decoded: the header is there) */
    for (int i = 7; i >= 0; i--) fp = fp << 8 | data[2 + i];
    if (fz_roundtrip && fp == codec_fingerprint(fz_codec, ev.type))
        fz_roundtrip_check(data, n, out, (size_t)k, codec_type_name(ev.type));
    else if (fz_roundtrip)   /* resolved: its re-encoding is canonical */
        fz_roundtrip_check(out, (size_t)k, out, (size_t)k, codec_type_name(ev.type));
    free(out);
    m3_event_clear(&ev);
    return 0;
}
