#!/bin/sh
# examples.sh - the client examples (examples/java, examples/python) against a real broker
# and worker: the example producer writes Impressions, Conversions and ScoreRequests (and
# creates the topics), a worker answers them and exits when idle, then the example consumer
# must decode every prediction: 0 to the DLQ, one prediction per impression and candidate.
# The python run also checks the kcat recipe of examples/README.md: a message kcat sends
# is the only DLQ message, with its reason header; kcat counts the predictions.
# java-registry: the Java examples with a registry serde (schema-registry framing) against
# the registry of scripts/registry and a worker with input.format and output.format=registry.
#   usage: examples.sh java|java-registry|python SOURCE_DIR BUILD_DIR
#          (M3_KAFKA_DIR: the broker's state; M3_REGISTRY_DIR: the registry's, for java-registry)
# Maven (~/.m2) and PyPI (a venv in BUILD_DIR) must be reachable on the first run: a
# missing tool or registry fails the test, it never skips.
set -eu
LANG_=$1 SRC=$2 B=$3
IMPRESSIONS=3000 CANDIDATES=5
T0=$(date +%s)
say() { echo "examples.sh[$LANG_]: $* ($(( $(date +%s) - T0 )) s)"; }
fail() { echo "examples.sh[$LANG_]: FAILED: $*" >&2; exit 1; }

BS=$("$SRC/scripts/kafka" --dir "${M3_KAFKA_DIR:?M3_KAFKA_DIR: the broker state dir}" bootstrap) ||
    fail "no broker running in $M3_KAFKA_DIR"
PREFIX="ex-$LANG_-$$"   # fresh topics and group each run: the shared broker keeps old ones
OUT="$B/examples-$LANG_"
TARGET="$B/examples-java-target"   # one Maven build for java and java-registry
mkdir -p "$OUT"

# ---- build / install the example, then produce
FORMAT=single-object WORKER_FORMAT=""
case "$LANG_" in
java|java-registry)
    command -v mvn >/dev/null && command -v javac >/dev/null || fail "needs Maven and a JDK 17 (scripts/bootstrap --test)"
    POM="$SRC/examples/java/pom.xml"
    # offline when ~/.m2 has everything (fast); else resolve from Maven Central
    if ! timeout 120 mvn -B -q -o -f "$POM" -Dm3.out="$TARGET" package >"$OUT/mvn.log" 2>&1; then
        say "offline build failed, resolving from Maven Central"
        timeout 600 mvn -B -q -f "$POM" -Dm3.out="$TARGET" package >"$OUT/mvn.log" 2>&1 ||
            { cat "$OUT/mvn.log" >&2; fail "mvn package (Maven Central unreachable?)"; }
    fi
    JAR="$TARGET/m3rec-examples.jar"
    say "built $JAR"
    if [ "$LANG_" = java-registry ]; then
        CCOMPAT=$("$SRC/scripts/registry" --dir "${M3_REGISTRY_DIR:?M3_REGISTRY_DIR: the registry state dir}" url) ||
            fail "no registry running in $M3_REGISTRY_DIR"
        FORMAT="registry --registry ${CCOMPAT%/apis/ccompat/v7}"
        WORKER_FORMAT="--set input.format=registry --set output.format=registry --set registry.url=$CCOMPAT"
        say "registry at $CCOMPAT"
    fi
    # shellcheck disable=SC2086 # FORMAT: the --format option and its --registry
    timeout 60 java -cp "$JAR" io.m3rec.examples.Produce --bootstrap "$BS" --prefix "$PREFIX" --format $FORMAT \
        --create-topics 4 --impressions $IMPRESSIONS --candidates $CANDIDATES >"$OUT/produce.out" ||
        fail "the producer: $(cat "$OUT/produce.out")"
    ;;
python)
    VENV="$B/venv-examples"
    REQ="$SRC/examples/python/requirements.txt"
    if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" || fail "python3 -m venv (python3-venv: scripts/bootstrap --test)"
        timeout 300 "$VENV/bin/pip" install -q -r "$REQ" || fail "pip install -r $REQ (PyPI unreachable?)"
        cp "$REQ" "$VENV/requirements.txt"
    fi
    command -v kcat >/dev/null || fail "needs kcat (scripts/bootstrap --test)"
    cd "$SRC/examples/python"
    timeout 60 "$VENV/bin/python" produce.py --bootstrap "$BS" --prefix "$PREFIX" --create-topics 4 \
        --impressions $IMPRESSIONS --candidates $CANDIDATES >"$OUT/produce.out" ||
        fail "the producer: $(cat "$OUT/produce.out")"
    # the README's kcat recipe: one message that is not Avro single-object, to the DLQ
    printf 'hello' | timeout 20 kcat -b "$BS" -P -t "$PREFIX.events.home" -k 42 || fail "kcat -P"
    ;;
*) fail "usage: examples.sh java|java-registry|python SOURCE_DIR BUILD_DIR" ;;
esac
cat "$OUT/produce.out"
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" "$OUT/produce.out"; }
EXPECT=$(field expected_predictions)
[ "$EXPECT" = $((IMPRESSIONS + IMPRESSIONS / 10 * CANDIDATES)) ] || fail "the producer made $EXPECT predictions' worth"
say "produced"

# ---- the worker answers everything from the beginning and stops 3 s after the last input
DLQ_WANT=0
[ "$LANG_" = python ] && DLQ_WANT=1
OPENBLAS_NUM_THREADS=1 timeout 90 "$B/m3rec-worker" --config "$SRC/config/worker.properties" \
    --set "kafka.bootstrap.servers=$BS" --set "topic.prefix=$PREFIX" --set "kafka.group.id=$PREFIX" \
    --set worker.exit.idle.ms=3000 --set metrics.progress.ms=0 --report "$OUT/worker.json" $WORKER_FORMAT \
    >"$OUT/worker.out" 2>"$OUT/worker.log" || { cat "$OUT/worker.log" >&2; fail "the worker"; }
tail -n 1 "$OUT/worker.log"
python3 - "$OUT/worker.json" "$(field impressions)" "$(field conversions)" "$(field requests)" "$EXPECT" "$DLQ_WANT" <<'PY' ||
import json, sys
c = json.load(open(sys.argv[1]))["counters"]
want = dict(zip(("impressions", "conversions", "requests", "predictions", "dlq"), map(int, sys.argv[2:])))
got = {k: c.get(k) for k in want}
sys.exit(0 if got == want else f"worker counters {got}, expected {want}")
PY
    fail "the worker's report"
say "worker: every event answered, $DLQ_WANT to the DLQ"

# ---- the example consumer decodes every prediction
case "$LANG_" in
java*) timeout 60 java -cp "$JAR" io.m3rec.examples.ConsumePredictions --bootstrap "$BS" --prefix "$PREFIX" \
          --format $FORMAT --expect "$EXPECT" --timeout-ms 45000 ;;
python) timeout 60 "$VENV/bin/python" consume_predictions.py --bootstrap "$BS" --prefix "$PREFIX" \
          --expect "$EXPECT" --timeout-ms 45000 ;;
esac || fail "the consumer did not decode all $EXPECT predictions"

# ---- the kcat recipe (examples/README.md): the DLQ with its headers, the predictions counted
if [ "$LANG_" = python ]; then
    dlq=$(timeout 30 kcat -b "$BS" -C -t "$PREFIX.dlq" -o beginning -e -q \
        -f 'key %k, %S bytes, headers: %h\n') || fail "kcat -C the DLQ"
    echo "DLQ: $dlq"
    case "$dlq" in
    "key 42, 5 bytes, headers: m3rec.dlq.reason=message of 5 bytes is shorter than the 10-byte header,m3rec.dlq.topic=$PREFIX.events.home,m3rec.dlq.partition="*) ;;
    *) fail "kcat read the DLQ as: $dlq" ;;
    esac
    n=$(timeout 30 kcat -b "$BS" -C -t "$PREFIX.predictions" -o beginning -e -q -f '%k\n' | wc -l)
    [ "$n" -eq "$EXPECT" ] || fail "kcat counted $n predictions, not $EXPECT"
    say "kcat: the DLQ message with its reason, $n predictions"
fi
say "PASSED"
