/* arch.c - names of the model architectures and the keys of categorical features. */
#include <string.h>
#include "base/hash.h"
#include "engine/model.h"

static const char *arch_names[M3_ARCH__COUNT] = {
    [M3_ARCH_LR] = "lr",
    [M3_ARCH_SHARED_BOTTOM] = "shared_bottom",
    [M3_ARCH_MMOE] = "mmoe",
    [M3_ARCH_PLE] = "ple",
    [M3_ARCH_STAR] = "star",
    [M3_ARCH_M3REC] = "m3rec",
    [M3_ARCH_M3REC_NOMIEG] = "m3rec_nomieg",
    [M3_ARCH_M3REC_NOUPT] = "m3rec_noupt",
};

int m3_arch_parse(const char *name) {
    for (int i = 0; i < M3_ARCH__COUNT; i++)
        if (arch_names[i] && strcmp(name, arch_names[i]) == 0) return i;
    return -1;
}

const char *m3_arch_name(int arch) {
    return arch >= 0 && arch < M3_ARCH__COUNT ? arch_names[arch] : "?";
}

uint64_t m3_feat_key(int slot, int64_t value) {
    /* mix the value (splitmix64's finalizer, a bijection), then tag the top byte with the
     * slot: distinct slots never collide (below 256 slots), and within a slot two values
     * collide only if their mixes agree in 56 bits. */
    uint64_t h = hash_mix64((uint64_t)value) & 0x00ffffffffffffffULL;
    return h | ((uint64_t)(slot & 0xff) << 56);
}
