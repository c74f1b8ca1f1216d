/* hash.h - the hashes every module shares: splitmix64 (a finalizer and a random stream)
 * FNV-1a, and a word-wise checksum. Header-only: each is a few instructions on a hot path.
 *
 * Changing any of these changes stored keys, model initialisations and checkpoint
 * checksums: the test fixtures pin them. */
#ifndef M3_HASH_H
#define M3_HASH_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* splitmix64's finalizer (Stafford's mix 13): a bijection on 64 bits. */
static inline uint64_t hash_fin64(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The finalizer of x + golden gamma: one splitmix64 step from state x. */
static inline uint64_t hash_mix64(uint64_t x) { return hash_fin64(x + 0x9e3779b97f4a7c15ULL); }

/* The next number of the splitmix64 stream whose state is *s (the state advances). */
static inline uint64_t hash_splitmix64(uint64_t *s) {
    uint64_t x = *s;
    *s += 0x9e3779b97f4a7c15ULL;
    return hash_mix64(x);
}

/* A uniform double in [0, 1) from 53 bits of h. */
static inline double hash_unit(uint64_t h) { return (double)(h >> 11) * (1.0 / 9007199254740992.0); }

#define HASH_FNV64_INIT 0xcbf29ce484222325ULL
#define HASH_FNV32_INIT 2166136261u

/* 64-bit FNV-1a of n bytes, continuing from h (HASH_FNV64_INIT to start). */
static inline uint64_t hash_fnv64(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* A 64-bit checksum of n bytes at memory speed: FNV-1a's step on 8-byte words in four
 * independent lanes, the tail byte-wise, the length and a finaliser (byte-wise FNV-1a took
 * ~2 ms a megabyte). Each step is a bijection of its lane, so any one changed word changes
 * the sum. Not a hash for tables: for checksums of blobs and parameters. */
static inline uint64_t hash_words64(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t lane[4] = { HASH_FNV64_INIT, HASH_FNV64_INIT ^ 1, HASH_FNV64_INIT ^ 2,
                         HASH_FNV64_INIT ^ 3 };
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t w;
            memcpy(&w, b + i + 8 * k, 8);
            lane[k] = (lane[k] ^ w) * 0x100000001b3ULL;
        }
    uint64_t h = hash_fnv64(HASH_FNV64_INIT, b + i, n - i) ^ (uint64_t)n;
    for (int k = 0; k < 4; k++) h = hash_fin64(h ^ lane[k]);
    return h;
}

/* 64-bit FNV-1a of a NUL-terminated string. */
static inline uint64_t hash_fnv64_str(const char *s) {
    uint64_t h = HASH_FNV64_INIT;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

/* 32-bit FNV-1a of n bytes, from HASH_FNV32_INIT. */
static inline uint32_t hash_fnv32(const void *p, size_t n) {
    const unsigned char *b = p;
    uint32_t h = HASH_FNV32_INIT;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
    return h;
}

#endif
