"""consume_predictions.py - reads <prefix>.predictions from the beginning, decodes every
message as a Prediction (m3rec_avro) and prints a summary. With --expect N it waits (at most
--timeout-ms) for N distinct (id, item_id) and exits 0 only if it got exactly them, every
message decoded and every key was the prediction's user id; without it, it stops after 5 s
of silence."""
import argparse
import sys
import time
from collections import defaultdict

from confluent_kafka import Consumer

from m3rec_avro import Codec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="localhost:9092")
    ap.add_argument("--prefix", default="m3rec")
    ap.add_argument("--expect", type=int, default=-1)
    ap.add_argument("--timeout-ms", type=int, default=60000)
    ap.add_argument("--group", default=f"m3rec-example-{time.time_ns()}")
    a = ap.parse_args()
    codec = Codec("Prediction")
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": a.group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([f"{a.prefix}.predictions"])
    messages = failed = bad_keys = 0
    distinct, per_scen = set(), defaultdict(lambda: [0, 0.0, 0.0])
    deadline, last = time.monotonic() + a.timeout_ms / 1000, time.monotonic()
    while time.monotonic() < deadline:
        quiet = time.monotonic() - last
        if (len(distinct) >= a.expect and quiet > 1) if a.expect >= 0 else quiet > 5:
            break
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            print(f"consume_predictions.py: {m.error()}", file=sys.stderr)
            continue
        messages += 1
        last = time.monotonic()
        try:
            p = codec.decode(m.value())
        except (ValueError, EOFError) as e:  # EOFError: a truncated datum
            if failed == 0:
                print(f"consume_predictions.py: offset {m.offset()}: {e}", file=sys.stderr)
            failed += 1
            continue
        bad_keys += m.key() != str(p["user_id"]).encode()
        distinct.add((p["id"], p["item_id"]))
        s = per_scen[p["scenario"]]
        s[0] += 1
        s[1] += p["p_ctr"]
        s[2] += p["p_ctcvr"]
    c.close()
    print(f"predictions messages={messages} decoded={messages - failed} distinct={len(distinct)}"
          f" failed={failed} bad_keys={bad_keys}")
    for k in sorted(per_scen):
        n, ctr, ctcvr = per_scen[k]
        print(f"  {k:<10} {n:8d} predictions, mean p_ctr {ctr / n:.4f}, mean p_ctcvr {ctcvr / n:.5f}")
    ok = failed == 0 and bad_keys == 0 and (a.expect < 0 or len(distinct) == a.expect)
    if not ok and a.expect >= 0:
        print(f"consume_predictions.py: expected {a.expect} distinct predictions", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
