/* fuzz_codec - libFuzzer harness of the message decoder (stream/codec): any bytes, as a
 * message of any topic (the fingerprint in the header picks the record type).
 *
 * Properties, beyond no crash, no sanitizer report and no leak:
 *  - a refused message has a reason (terminated, not empty) and needs no clearing;
 *  - an accepted one is an event the encoder accepts, within codec_encoded_size_max();
 *  - round trip: the encoder writes exactly the input bytes back (docs/contract.md: the
 *    decoder accepts only what the encoder would write). M3_FUZZ_ROUNDTRIP=0 in the
 *    environment turns this one off, to look for other findings past a known one. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    m3_event ev;
    char reason[CODEC_REASON_MAX];
    if (codec_decode(fz_codec, data, n, &ev, reason, sizeof reason) != 0) {
        CHECK_MSG(memchr(reason, 0, sizeof reason) && reason[0], "refused without a reason");
        CHECK_EQ_INT(ev.type, M3_EV_NONE);
        return 0;
    }
    size_t cap = codec_encoded_size_max(&ev);
    uint8_t *out = malloc(cap ? cap : 1);
    CHECK(out);
    long k = codec_encode(fz_codec, &ev, out, cap, reason, sizeof reason);
    const char *type = codec_type_name(ev.type);
    CHECK_MSG(k >= 0, "a decoded %s is refused by the encoder: %s", type, reason);
    if (fz_roundtrip && ((size_t)k != n || memcmp(out, data, n) != 0))
        fz_mismatch(data, n, out, (size_t)k, type);
    free(out);
    m3_event_clear(&ev);
    return 0;
}
