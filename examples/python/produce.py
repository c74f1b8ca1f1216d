"""produce.py - an m3rec input producer in Python (confluent-kafka + fastavro): Impressions
and Conversions to <prefix>.events.<scenario>, ScoreRequests to <prefix>.requests, keyed by
the decimal user id with the murmur2 partitioner, as docs/contract.md requires.
    python produce.py --bootstrap 127.0.0.1:9092 --impressions 3000"""
import argparse
import random
import sys
import time

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from m3rec_avro import Codec


def cats(i, *names):
    return {n: (i * 31 + k * 7) % (5 + 3 * k) for k, n in enumerate(names)}


def nums(i, *names):
    return {n: ((i * 13 + k) % 100) / 10.0 for k, n in enumerate(names)}


def stream(a, counts):
    """Yields (scenario or None for a request, codec name, record); counts what it made."""
    rnd, ts = random.Random(a.seed), int(time.time() * 1000)
    for i in range(a.impressions):
        scen = a.scenarios[i % len(a.scenarios)]
        user, item = rnd.randint(1, a.users), rnd.randint(1, a.items)
        ts += 10
        # a click is likelier when user and item "match": something for the model to learn
        clicked = rnd.random() < (0.3 if (user + item) % 3 == 0 else 0.05)
        imp_id = f"{a.run_id}-imp-{i}"
        yield scen, "Impression", dict(
            impression_id=imp_id, ts_ms=ts, scenario=scen, user_id=user, item_id=item,
            user_cat=cats(user, "age", "gender", "city", "tier"), item_cat=cats(item, "category", "brand", "shop"),
            ctx_cat={"device": rnd.randint(0, 2)}, user_num=nums(user, "activity"),
            item_num=nums(item, "price", "rating"), clicked=clicked)
        counts["impressions"] += 1
        if clicked and rnd.random() < 0.3:
            yield scen, "Conversion", dict(conversion_id=f"{a.run_id}-conv-{i}", impression_id=imp_id,
                                           ts_ms=ts + 5, scenario=scen, user_id=user, item_id=item)
            counts["conversions"] += 1
        if i % 10 == 9:
            user = rnd.randint(1, a.users)
            items = rnd.sample(range(1, a.items + 1), min(a.candidates, a.items))  # distinct: one prediction each
            yield None, "ScoreRequest", dict(
                request_id=f"{a.run_id}-req-{i}", ts_ms=ts, scenario=scen, user_id=user,
                user_cat=cats(user, "age", "gender", "city", "tier"), ctx_cat={"device": 1},
                user_num=nums(user, "activity"),
                candidates=[dict(item_id=it, item_cat=cats(it, "category", "brand", "shop"),
                                 item_num=nums(it, "price", "rating")) for it in items])
            counts["requests"] += 1
            counts["candidates"] += len(items)


def create_topics(a, parts):
    """The worker's six topics with `parts` partitions each (equal counts for the inputs),
    replication factor 1 (the test broker of scripts/kafka); existing ones are left alone."""
    names = [f"{a.prefix}.events.{s}" for s in a.scenarios] + [f"{a.prefix}.{t}" for t in ("requests", "predictions", "dlq")]
    admin = AdminClient({"bootstrap.servers": a.bootstrap})  # kept alive until the results are in
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=parts, replication_factor=1) for n in names], request_timeout=30)
    for f in futures.values():
        try:
            f.result()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="localhost:9092")
    ap.add_argument("--prefix", default="m3rec")
    ap.add_argument("--scenarios", default="home,search,product", type=lambda s: s.split(","))
    ap.add_argument("--impressions", type=int, default=3000)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run-id", default="py")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--create-topics", type=int, default=0, metavar="PARTITIONS",
                    help="first create the worker's six topics with that many partitions (if missing)")
    a = ap.parse_args()
    if a.create_topics > 0:
        create_topics(a, a.create_topics)
    codecs = {n: Codec(n) for n in ("Impression", "Conversion", "ScoreRequest")}
    # murmur2_random: the Java clients' partitioner (librdkafka's default hashes with CRC32)
    p = Producer({"bootstrap.servers": a.bootstrap, "partitioner": "murmur2_random", "acks": "all",
                  "linger.ms": 5})
    counts = dict(impressions=0, conversions=0, requests=0, candidates=0)
    failed = []

    def report(err, msg):
        if err is not None:
            failed.append(err)

    for scen, name, rec in stream(a, counts):
        topic = f"{a.prefix}.events.{scen}" if scen else f"{a.prefix}.requests"
        while True:
            try:
                p.produce(topic, codecs[name].encode(rec), key=str(rec["user_id"]), on_delivery=report)
                break
            except BufferError:  # local queue full: let deliveries drain
                p.poll(0.1)
        p.poll(0)
    left = p.flush(30)
    if failed:
        print(f"produce.py: {len(failed)} failed, the first: {failed[0]}", file=sys.stderr)
    print("produced " + " ".join(f"{k}={v}" for k, v in counts.items()) + f" failed={len(failed) + left}"
          f" expected_predictions={counts['impressions'] + counts['candidates']}")
    return 0 if not failed and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
