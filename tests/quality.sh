#!/bin/sh
# quality.sh - the foundation's quality bar on the simulator's default stream, no Kafka:
# shared_bottom must close at least half of the gap between logistic regression and the
# oracle, in every scenario and task (the same check the demo prints).
#   usage: quality.sh BUILD_DIR
set -eu
B=$1
OPENBLAS_NUM_THREADS=1 "$B/m3rec-offline" --set model.arch=shared_bottom --set model.shadow=lr \
    --events 2000000 --quiet --report "$B/quality_report.json" --oracle-report "$B/quality_oracle.json" >/dev/null
"$B/m3rec-report" --oracle "$B/quality_oracle.json" --min-gap 0.5 "$B/quality_report.json"
