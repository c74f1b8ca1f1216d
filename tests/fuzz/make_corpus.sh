#!/bin/sh
# make_corpus.sh - (re)write the committed seed corpus of the fuzz harnesses:
#   codec/   messages the encoder wrote: m3rec-sim's --out frames split per message (a few
#            of each type), the contract's example (docs/contract.md), a Prediction;
#            regress-*: non-canonical forms the decoder must refuse; and evolve-*: messages
#            of other writer schemas (tests/data/evolve/) by Avro C, from test_evolve --corpus
#            (built next to m3rec-sim)
#   props/   the shipped configuration files and mappings (config/*.properties)
#   replay/  the head of each public dataset sample (tests/data/samples/)
# Usage: tests/fuzz/make_corpus.sh PATH/TO/m3rec-sim    (from the repository's root)
set -eu
sim=${1:?usage: tests/fuzz/make_corpus.sh PATH/TO/m3rec-sim}
out=tests/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out"
mkdir -p "$out/codec" "$out/props" "$out/replay"

"$sim" --events 3000 --seed 7 --out "$tmp/sim.frames" --report "$tmp/report.json" >/dev/null 2>&1
python3 - "$tmp/sim.frames" "$out/codec" <<'EOF'
import struct, sys
frames, dest = sys.argv[1], sys.argv[2]
data = open(frames, "rb").read()
names = {bytes.fromhex("4112 05a1 bcba deb0"): "impression",
         bytes.fromhex("05ff 3fc4 9197 efe3"): "conversion",
         bytes.fromhex("2dde 7ab4 74cc 0ffe"): "scorerequest"}
keep, seen, p = {"impression": 4, "conversion": 3, "scorerequest": 3}, {}, 0
while p < len(data):
    end = data.index(b"\0", p)
    p = end + 1
    klen, = struct.unpack(">I", data[p:p + 4]); p += 4 + klen
    vlen, = struct.unpack(">I", data[p:p + 4]); p += 4
    value = data[p:p + vlen]; p += vlen
    kind = names[value[2:10]]
    seen[kind] = seen.get(kind, 0) + 1
    if seen[kind] <= keep[kind]:
        open(f"{dest}/sim-{kind}-{seen[kind]}", "wb").write(value)
assert all(seen.get(k, 0) >= n for k, n in keep.items()), seen

def zz(v):  # Avro long: zig-zag varint
    u, b = (v << 1) ^ (v >> 63), bytearray()
    u &= (1 << 64) - 1
    while True:
        b.append((u & 0x7F) | (0x80 if u > 0x7F else 0))
        u >>= 7
        if not b[-1] & 0x80:
            return bytes(b)
s = lambda t: zz(len(t)) + t.encode()
f = lambda x: struct.pack("<f", x)
conv = bytes.fromhex("c301 05ff3fc49197efe3") + s("c1") + s("i1") + zz(1000) + s("home") + zz(42) + zz(-1)
open(f"{dest}/contract-conversion", "wb").write(conv)
pred = (bytes.fromhex("c301 72576dec6cf4f3c7") + s("imp-1") + zz(1767225600000) + s("search")
        + zz(7) + zz(-3) + f(0.25) + f(0.125) + f(0.03125) + zz(12))
open(f"{dest}/prediction", "wb").write(pred)

# Regressions: forms the Avro spec allows but the encoder never writes, so the decoder must
# refuse them (the round trip fails on a decoder that accepts them): an overlong varint
# (1000 as d0 8f 00), a map in two blocks, a map block with a negative count and a size.
imp = lambda ts, m: (bytes.fromhex("c301 411205a1bcbadeb0") + s("i1") + ts + s("home") + zz(42)
                     + zz(7) + m + b"\0" * 4 + b"\0")
kv = s("a") + zz(1) + s("b") + zz(2)
open(f"{dest}/regress-overlong-varint", "wb").write(imp(bytes.fromhex("d08f00"), zz(0)))
open(f"{dest}/regress-map-two-blocks", "wb").write(imp(zz(1000), zz(1) + kv[:3] + zz(1) + kv[3:] + zz(0)))
open(f"{dest}/regress-map-negative-count", "wb").write(imp(zz(1000), zz(-2) + zz(len(kv)) + kv + zz(0)))
EOF

"$(dirname "$sim")/test_evolve" --corpus "$out/codec"

cp config/*.properties "$out/props/"
for f in tests/data/samples/*/*.csv; do
    head -n 6 "$f" >"$out/replay/$(basename "$f")"
done
# raw Ali-CCP lines run to 10 KB: keep the labels and the first token of each mapped field
head -n 3 tests/data/samples/ali_ccp/paddlerec_esmm_small_raw.txt | awk -F, -v OFS=, '
    BEGIN { n = split("101 121 122 124 125 126 127 128 129 109_14 110_14 127_14 150_14 205 206 207 210 216 301 508 509 702 853", f, " ")
            for (i = 1; i <= n; i++) want[f[i]] = 1 }
    { line = $1 OFS $2 OFS $3; delete got
      for (i = 4; i <= NF; i++) { split($i, kv, ":"); if (want[kv[1]] && !got[kv[1]]++) line = line OFS $i }
      print line }' >"$out/replay/paddlerec_esmm_small_raw.txt"
echo "make_corpus: $(ls "$out/codec" | wc -l) codec, $(ls "$out/props" | wc -l) props, $(ls "$out/replay" | wc -l) replay seeds"
