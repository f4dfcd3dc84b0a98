#!/usr/bin/env bash
# The whole pipeline against the hand-written reference in one run on this machine: builds the
# release api and worker, then runs ../shared/reference-pipeline/compare.sh (same wrk load for
# both) and prints each rep's figures and the project/reference ratios, and the peak RSS of the
# project's api and worker (sampled every 0.2 s while compare.sh runs).
#
# usage: scripts/bench-compare.sh [reps=3] [connections=30] [seconds=15]
# needs: wrk, psql, NATS on 127.0.0.1:4222, PostgreSQL on 127.0.0.1:5432, ../shared beside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}; CONNS=${2:-30}; SECS=${3:-15}
COMPARE=../shared/reference-pipeline/compare.sh
[ -x "$COMPARE" ] || { echo "bench-compare: $COMPARE not found (../shared must be beside the repository)" >&2; exit 1; }
cargo build -q --release --bin api --bin worker
BIN=$(cd target/release && pwd)
# Peak resident memory (VmHWM) of the project's processes, in kB, checked once a second.
sample_rss() {
  local api=0 worker=0 pid name hwm
  while :; do
    for name in api worker; do
      for pid in $(pgrep -x "$name"); do
        [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$BIN/$name" ] || continue
        hwm=$(awk '/VmHWM/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        if [ "$name" = api ]; then [ "${hwm:-0}" -gt $api ] && api=$hwm; else [ "${hwm:-0}" -gt $worker ] && worker=$hwm; fi
      done
    done
    echo "$api $worker" > /tmp/bench-compare-rss.txt
    sleep 1
  done
}
# JetStream stream names (over the NATS protocol: no client tool needed).
stream_names() {
  exec 3<>/dev/tcp/127.0.0.1/4222
  printf 'CONNECT {"verbose":false}\r\nSUB _INBOX.bench 1\r\nPUB $JS.API.STREAM.NAMES _INBOX.bench 0\r\n\r\n' >&3
  timeout 5 grep -a -m1 stream_names_response <&3 | grep -o '"streams":\[[^]]*\]' | grep -o '"[^"]*"' | tr -d '"' | grep -v '^streams$' || true
  exec 3>&-
}
delete_stream() {
  exec 3<>/dev/tcp/127.0.0.1/4222
  printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$1" >&3
  timeout 5 grep -m1 -q PONG <&3 || true
  exec 3>&-
}
BEFORE=$(stream_names)
sample_rss & SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT
"$COMPARE" target/release "$REPS" "$CONNS" "$SECS" | tee /tmp/bench-compare.txt
kill $SAMPLER 2>/dev/null || true
# compare.sh leaves the project's streams (COMPARE<n> and its dead-letter stream) behind.
for name in $(stream_names); do
  if [[ $name =~ ^COMPARE[0-9]+(_DLQ)?$ ]] && ! grep -qx "$name" <<< "$BEFORE"; then delete_stream "$name"; fi
done
read -r API_KB WORKER_KB < /tmp/bench-compare-rss.txt
printf 'peak RSS over all reps: api %d MB, worker %d MB\n' $((API_KB / 1024)) $((WORKER_KB / 1024))
# Ratios per rep: committed orders/s (project/reference) and CPU per committed order, total and
# per process (project/reference).
awk '
  function field(line, key,   re, m) { re = key "=[0-9.]+"; if (match(line, re)) { m = substr(line, RSTART, RLENGTH); sub(key "=", "", m); return m + 0 } return 0 }
  / reference:/ { rep = $2; for (k in K) R[rep, k] = field($0, k) }
  / project:/   { rep = $2; for (k in K) P[rep, k] = field($0, k); reps[rep] = 1 }
  BEGIN { split("committed_during_load total api worker nats pg", ks, " "); for (i in ks) K[ks[i]] = 1 }
  END {
    for (rep in reps) {
      printf "rep %s ratios: committed/s %.2f  cpu/order total %.2fx  api %.2fx  worker %.2fx  nats %.2fx  pg %.2fx\n", rep,
        P[rep, "committed_during_load"] / (R[rep, "committed_during_load"] ? R[rep, "committed_during_load"] : 1),
        P[rep, "total"] / (R[rep, "total"] ? R[rep, "total"] : 1), P[rep, "api"] / (R[rep, "api"] ? R[rep, "api"] : 1),
        P[rep, "worker"] / (R[rep, "worker"] ? R[rep, "worker"] : 1), P[rep, "nats"] / (R[rep, "nats"] ? R[rep, "nats"] : 1),
        P[rep, "pg"] / (R[rep, "pg"] ? R[rep, "pg"] : 1)
    }
  }' /tmp/bench-compare.txt
