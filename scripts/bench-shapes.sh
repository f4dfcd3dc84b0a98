#!/usr/bin/env bash
# The pipeline against the hand-written reference at every load shape (issue 35), in one run:
# scripts/bench-compare.sh (../shared/reference-pipeline/compare.sh: the same wrk load on both,
# committed orders/s while it ran, CPU per committed order, wrk's p50/p99 of the answer) at 2,
# 4, 30 and 100 connections, REPS reps each, every rep printed with its ratios; then a
# fixed-rate (open-loop) run of SECS seconds at RATE orders/s on both — by default half the
# reference's median committed/s at 30 connections — with benches/fixed_rate.rs, printing the
# answer's p50/p99/p999 for both and, for the project, the whole pipeline's commit latency
# (arrival at the api → commit of the rows: the worker's nomnom_worker_commit_latency_seconds,
# p50/p99 interpolated within its buckets).
#
# usage: scripts/bench-shapes.sh [reps=3] [secs=15] [rate=auto]
# needs: wrk, psql, curl, NATS on 127.0.0.1:4222, PostgreSQL on 127.0.0.1:5432, ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}; SECS=${2:-15}; RATE=${3:-auto}
REF=../shared/reference-pipeline
OUT=$(mktemp -d)
trap 'kill ${API:-} ${WORKER:-} ${RAPI:-} ${RWORKER:-} 2>/dev/null || true; rm -rf "$OUT"' EXIT

for conns in 2 4 30 100; do
  echo "=== $conns connections, $REPS reps of $SECS s"
  scripts/bench-compare.sh "$REPS" "$conns" "$SECS" | tee "$OUT/c$conns.txt"
done

# The median over the reps of the reference's committed/s at 30 connections.
if [ "$RATE" = auto ]; then
  RATE=$(awk '/ reference:/ { if (match($0, /committed_during_load=[0-9]+/)) print substr($0, RSTART + 22, RLENGTH - 22) }' "$OUT/c30.txt" \
    | sort -n | awk '{ v[NR] = $1 } END { print int(v[int((NR + 1) / 2)] / 2) }')
fi
echo "=== fixed rate: $RATE orders/s for $SECS s (half the reference's median committed/s at 30 connections)"

cargo bench -q --bench fixed_rate --no-run 2>/dev/null
fixed_rate() { cargo bench -q --bench fixed_rate -- --url "$1" --rate "$RATE" --seconds "$SECS" --connections 100; }
RTARGET=${REFERENCE_TARGET:-/tmp/reference-pipeline-target}
LBIN=$RTARGET/release/reference-pipeline
BIN=target/release

# Reference: its own setup, api and worker, as compare.sh runs them.
$LBIN pipe-setup > /dev/null
$LBIN serve --addr 127.0.0.1:3001 --publish > "$OUT/ref-api.log" 2>&1 & RAPI=$!
$LBIN worker --batch 500 --idle-exit-s 3 --cap-s $((SECS + 120)) > "$OUT/ref-worker.log" 2>&1 & RWORKER=$!
sleep 1.5
echo "reference: $(fixed_rate http://127.0.0.1:3001/orders)"
kill $RAPI; wait $RAPI 2>/dev/null || true; wait $RWORKER 2>/dev/null || true; RAPI=; RWORKER=
$LBIN pipe-teardown > /dev/null

# The project: a fresh stream and database, the worker's metrics on a port of their own.
ID=$(date +%s)$$
DB=shapes_$ID; METRICS=$((20000 + RANDOM % 20000))
export NATS_STREAM=SHAPES$ID DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB RUST_LOG=warn NOMNOM_ENV_FILE=none
WORKER_METRICS_PORT=$METRICS "$BIN/worker" > "$OUT/worker.log" 2>&1 & WORKER=$!
sleep 3
PORT=3002 METRICS_PORT=0 ADMIN_PORT=0 "$BIN/api" > "$OUT/api.log" 2>&1 & API=$!
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:3002/health > /dev/null && break; sleep 0.2; done
LINE=$(fixed_rate http://127.0.0.1:3002/ingest/message/order)
echo "project:   $LINE"
ACCEPTED=$(sed -E 's/.* 202 ([0-9]+),.*/\1/' <<< "$LINE")
for _ in $(seq 1 600); do
  [ "$(psql -qtA "$DATABASE_URL" -c 'SELECT count(*) FROM message_status')" -ge "$ACCEPTED" ] && break
  sleep 0.1
done
curl -s "http://127.0.0.1:$METRICS/metrics" | awk '
  /^nomnom_worker_commit_latency_seconds_bucket/ {
    match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5); n++; B[n] = (le == "+Inf") ? 1e9 : le + 0; C[n] = $NF + 0 }
  END {
    total = C[n]
    split("0.5 0.99 0.999", qs, " ")
    printf "project commit latency (arrival at the api -> commit), %d messages:", total
    for (k = 1; k <= 3; k++) {
      want = qs[k] * total; prev_b = 0; prev_c = 0
      for (i = 1; i <= n; i++) {
        if (C[i] >= want) { v = (C[i] == prev_c) ? B[i] : prev_b + (B[i] - prev_b) * (want - prev_c) / (C[i] - prev_c); break }
        prev_b = B[i]; prev_c = C[i]
      }
      printf " p%s %.1f ms", qs[k] * 100, v * 1000
    }
    printf "\n"
  }'
kill -TERM $API $WORKER; wait $API $WORKER 2>/dev/null || true; API=; WORKER=
psql -qtA postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" > /dev/null

# Summary: the median of each shape's same-run ratios.
echo "=== medians of the same-run ratios (committed/s project/reference; CPU per order; p99 of the answer)"
for conns in 2 4 30 100; do
  awk -v c="$conns" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    function field(line, key,   re, m) { re = key "=[^ ]+"; if (match(line, re)) { m = substr(line, RSTART, RLENGTH); sub(key "=", "", m); return m } return "" }
    / reference:/ { r = $2; RCOM[r] = field($0, "committed_during_load"); RCPU[r] = field($0, "total"); RP99[r] = ms(field($0, "p99")) }
    / project:/   { r = $2; PCOM[r] = field($0, "committed_during_load"); PCPU[r] = field($0, "total"); PP99[r] = ms(field($0, "p99")); reps[++n] = r }
    function median(a, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } return a[int((k + 1) / 2)] }
    END {
      for (i = 1; i <= n; i++) { r = reps[i]; tp[i] = PCOM[r] / RCOM[r]; cpu[i] = PCPU[r] / RCPU[r]; p99[i] = PP99[r] / RP99[r] }
      printf "%3d connections: committed/s %.2fx (target >= 1.0), CPU/order %.2fx (<= 1.0), p99 %.2fx (<= 1.5)\n", c, median(tp, n), median(cpu, n), median(p99, n)
    }' "$OUT/c$conns.txt"
done
