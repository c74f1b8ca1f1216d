#!/bin/sh
# delay_quality.sh - delayed-feedback learning on a simulator stream with log-normal
# conversion delays (median 3 h, sigma 1.5) and a 1-day window spanning 3.5 days, no Kafka:
# with join.feedback fnw, defer, esdfm and esdfm with an elapsed time of 7 hours (2/7 of the
# window), mean p_ctcvr after the first 100,000 impressions is within 10 % of the observed
# CTCVR rate, and the CTCVR AUC is at most 0.01 below the wait-for-the-window learner's on
# the same stream. (Quality, not time: nothing is timed.)
#   usage: delay_quality.sh BUILD_DIR
set -eu
B=$1
command -v python3 >/dev/null || { echo "python3 not found: skipped"; exit 77; }
for mode in window fnw defer esdfm esdfm_e; do
    elapsed=0
    [ $mode = esdfm_e ] && elapsed=25200000
    OPENBLAS_NUM_THREADS=1 "$B/m3rec-offline" --events 300000 --seed 5 --time-rate 1 \
        --conversion-delay lognormal:median=3h,sigma=1.5 --set join.window.ms=86400000 \
        --set join.feedback=${mode%_e} --set join.esdfm.elapsed.ms=$elapsed \
        --set time.max.ahead.ms=0 --set time.max.behind.ms=0 \
        --drain --quiet --report "$B/delay_quality_$mode.json" >/dev/null
done
python3 - "$B" <<'PY'
import json, sys
b = sys.argv[1]
def summary(mode):
    r = json.load(open(f'{b}/delay_quality_{mode}.json'))
    t = r['models'][r['primary']]['timeline']['overall']['ctcvr']
    x, w = r['timeline']['x'], r['timeline']['width']
    idx = [i for i in range(len(x)) if x[i] - w[i] >= 100000 and t['n'][i]]
    n = sum(t['n'][i] for i in idx)
    p = sum(t['n'][i] * t['mean_p'][i] for i in idx) / n
    rate = sum(t['n'][i] * t['rate'][i] for i in idx) / n
    return r['overall']['ctcvr']['auc'], p / rate
bad = 0
auc_w, _ = summary('window')
for mode in ('fnw', 'defer', 'esdfm', 'esdfm_e'):
    auc, cal = summary(mode)
    ok = abs(cal - 1) <= 0.10 and auc >= auc_w - 0.01
    print(f'{mode}: ctcvr auc {auc:.4f} (window {auc_w:.4f}), mean p_ctcvr / rate after 100k '
          f'{cal:.3f}: {"PASS" if ok else "FAIL"}')
    bad += not ok
sys.exit(1 if bad else 0)
PY
