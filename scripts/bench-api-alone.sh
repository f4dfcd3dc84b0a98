#!/usr/bin/env bash
# The api alone (no worker) against the reference pipeline's handler, in one run on this
# machine: the same wrk script (a TPC-H order with 4 line items) drives
# `reference-pipeline serve --publish` (parse the order, publish it, await the JetStream ack)
# and then the project's release `api`; prints req/s, p50/p99, CPU µs per request and peak RSS
# of each, and the ratios.
#
# usage: scripts/bench-api-alone.sh [reps=2] [connections=30] [seconds=10]
# needs: wrk, NATS on 127.0.0.1:4222, PostgreSQL on 127.0.0.1:5432, ../shared beside the repo
# (the reference is built into /tmp/reference-pipeline-target, as compare.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-2}; CONNS=${2:-30}; SECS=${3:-10}
REF=../shared/reference-pipeline
[ -d "$REF" ] || { echo "bench-api-alone: $REF not found (../shared must be beside the repository)" >&2; exit 1; }
RTARGET=${REFERENCE_TARGET:-/tmp/reference-pipeline-target}
CARGO_TARGET_DIR=$RTARGET cargo build -q --release --manifest-path "$REF/Cargo.toml"
cargo build -q --release --bin api
LBIN=$RTARGET/release/reference-pipeline
LUA=$REF/post_order.lua
HZ=$(getconf CLK_TCK)

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Peak RSS (VmHWM, kB) of a live process.
hwm() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }
# Deletes a JetStream stream over the NATS protocol (no client tool needed).
delete_stream() {
  exec 3<>/dev/tcp/127.0.0.1/4222
  printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$1" >&3
  timeout 5 grep -m1 -q PONG <&3 || true
  exec 3>&-
}
# Waits until something answers HTTP on the port.
wait_port() { for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return; sleep 0.2; done; }

measure() { # label pid port path
  local label=$1 pid=$2 port=$3 path=$4 t0 t1
  sleep 1
  t0=$(ticks "$pid")
  WRK_PATH=$path wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$LUA" "http://127.0.0.1:$port" > /tmp/api_alone_wrk.txt
  t1=$(ticks "$pid")
  local reqs non ok
  reqs=$(awk '/requests in/{print $1}' /tmp/api_alone_wrk.txt); non=$(awk '/Non-2xx/{print $NF}' /tmp/api_alone_wrk.txt); ok=$((reqs-${non:-0}))
  printf '%s req_per_s=%d non2xx=%s p50=%s p99=%s cpu_us_per_req=%d peak_rss_mb=%d\n' "$label" $((ok/SECS)) "${non:-0}" \
    "$(awk '$1=="50%"{print $2}' /tmp/api_alone_wrk.txt)" "$(awk '$1=="99%"{print $2}' /tmp/api_alone_wrk.txt)" \
    $(( (t1-t0) * 1000000 / HZ / (ok > 0 ? ok : 1) )) $(( $(hwm "$pid") / 1024 ))
}

: > /tmp/bench-api-alone.txt
for rep in $(seq 1 "$REPS"); do
  "$LBIN" pipe-setup >/dev/null
  "$LBIN" serve --addr 127.0.0.1:3001 --publish >/tmp/api_alone_ref.log 2>&1 & SP=$!
  wait_port 3001
  measure "rep $rep reference:" $SP 3001 /orders | tee -a /tmp/bench-api-alone.txt
  kill $SP; wait $SP 2>/dev/null || true
  "$LBIN" pipe-teardown >/dev/null
  ST=APIALONE$RANDOM
  NATS_STREAM=$ST PORT=3002 RUST_LOG=warn target/release/api >/tmp/api_alone_project.log 2>&1 & AP=$!
  wait_port 3002
  measure "rep $rep project:  " $AP 3002 /ingest/message/order | tee -a /tmp/bench-api-alone.txt
  kill -TERM $AP; wait $AP 2>/dev/null || true
  delete_stream "$ST"
done
awk '
  function field(line, key,   re, m) { re = key "=[0-9.]+"; if (match(line, re)) { m = substr(line, RSTART, RLENGTH); sub(key "=", "", m); return m + 0 } return 0 }
  function ms(line,   m) { if (match(line, /p99=[0-9.]+(us|ms|s)/)) { m = substr(line, RSTART + 4, RLENGTH - 4); if (m ~ /us$/) return m / 1000; if (m ~ /ms$/) return m + 0; return m * 1000 } return 0 }
  / reference:/ { r = $2; R[r] = field($0, "req_per_s"); RP[r] = ms($0); RC[r] = field($0, "cpu_us_per_req") }
  / project:/   { r = $2; P[r] = field($0, "req_per_s"); PP[r] = ms($0); PC[r] = field($0, "cpu_us_per_req"); reps[r] = 1 }
  END { for (r in reps) printf "rep %s ratios: req/s %.2f  p99 %.2fx  cpu/req %.2fx\n", r, P[r] / (R[r] ? R[r] : 1), PP[r] / (RP[r] ? RP[r] : 1), PC[r] / (RC[r] ? RC[r] : 1) }
' /tmp/bench-api-alone.txt
