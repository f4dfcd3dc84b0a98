#!/usr/bin/env bash
# User-space instructions per order, counted by valgrind's callgrind: the project's api and
# worker against the reference pipeline's handler and worker (../shared/reference-pipeline), on
# the same TPC-H order. Instruction counts do not depend on what else the machine is doing, so
# a change of a few percent shows here when wall-clock benchmarks on this machine (±40 %
# between runs) cannot see it. They leave out the kernel, nats-server and PostgreSQL: the
# whole pipeline is scripts/bench-compare.sh's job.
#
# api: the handler under callgrind, counters zeroed once it answers, then wrk (1 thread, 8
# connections) for SECS seconds; instructions / requests answered.
# worker: the worker starts under callgrind on a fresh stream, its counters are zeroed once it
# is up, then the api (not under callgrind) fills the stream for 4 s while it drains;
# instructions / orders stored.
#
# usage: scripts/bench-instructions.sh [api|worker|both=both] [secs=20]
# KEEP_CALLGRIND=1 keeps the callgrind files (for callgrind_annotate) and prints where.
# needs: valgrind, wrk, psql, curl, NATS on 127.0.0.1:4222, PostgreSQL on 127.0.0.1:5432,
# ../shared beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-both}; SECS=${2:-20}
REF=../shared/reference-pipeline
[ -d "$REF" ] || { echo "bench-instructions: $REF not found (../shared must be beside the repository)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "bench-instructions: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
RTARGET=${REFERENCE_TARGET:-/tmp/reference-pipeline-target}
CARGO_TARGET_DIR=$RTARGET cargo build -q --release --manifest-path "$REF/Cargo.toml"
cargo build -q --release --bin api --bin worker
LBIN=$RTARGET/release/reference-pipeline
BIN=$(cd target/release && pwd)
LUA=$REF/post_order.lua
OUT=$(mktemp -d /tmp/bench-instructions.XXXXXX)
ADMIN=postgres://postgres@127.0.0.1:5432/postgres

# Deletes a JetStream stream over the NATS protocol (no client tool needed).
delete_stream() {
  exec 3<>/dev/tcp/127.0.0.1/4222
  printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$1" >&3
  timeout 5 grep -m1 -q PONG <&3 || true
  exec 3>&-
}
wait_port() { for _ in $(seq 1 150); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return; sleep 0.2; done; }
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(/,/,"",$1); print $1}'; }
requests() { awk '/requests in/{print $1}' "$1"; }

api_run() { # label port path command...
  local label=$1 port=$2 path=$3; shift 3
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$label.api.cg" "$@" >"$OUT/$label.api.log" 2>&1 &
  local pid=$!
  wait_port "$port"
  callgrind_control -z "$pid" >/dev/null 2>&1
  WRK_PATH=$path wrk -t1 -c8 -d"${SECS}s" -s "$LUA" "http://127.0.0.1:$port" >"$OUT/$label.api.wrk"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local n i
  n=$(requests "$OUT/$label.api.wrk"); i=$(total "$OUT/$label.api.cg")
  echo "$label api: requests=$n instructions_per_request=$((i / n))" | tee -a "$OUT/summary"
}

worker_run() { # label count_url count_sql fill_port fill_path fill_command... -- worker_command...
  local label=$1 url=$2 sql=$3 port=$4 path=$5; shift 5
  local fill=() ; while [ "$1" != -- ]; do fill+=("$1"); shift; done; shift
  # The worker starts first (its start-up is not counted), then the api fills the stream while
  # it drains.
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$label.worker.cg" "$@" >"$OUT/$label.worker.log" 2>&1 &
  local wp=$!
  for _ in $(seq 1 300); do psql -qtA "$url" -c "$sql" >/dev/null 2>&1 && break; sleep 0.2; done
  sleep 5
  callgrind_control -z "$wp" >/dev/null 2>&1
  "${fill[@]}" >"$OUT/$label.fill.log" 2>&1 &
  local fp=$!
  wait_port "$port"
  WRK_PATH=$path wrk -t2 -c30 -d4s -s "$LUA" "http://127.0.0.1:$port" >"$OUT/$label.fill.wrk"
  kill "$fp"; wait "$fp" 2>/dev/null || true
  local n stored=0
  n=$(requests "$OUT/$label.fill.wrk")
  for _ in $(seq 1 3000); do
    stored=$(psql -qtA "$url" -c "$sql" 2>/dev/null || echo 0)
    [ "${stored:-0}" -ge "$n" ] && break
    sleep 0.2
  done
  kill -TERM "$wp" 2>/dev/null || true; wait "$wp" 2>/dev/null || true
  echo "$label worker: orders=$stored instructions_per_order=$(($(total "$OUT/$label.worker.cg") / stored))" | tee -a "$OUT/summary"
}

if [ "$WHAT" = api ] || [ "$WHAT" = both ]; then
  "$LBIN" pipe-setup >/dev/null
  api_run reference 3001 /orders "$LBIN" serve --addr 127.0.0.1:3001 --publish
  "$LBIN" pipe-teardown >/dev/null
  ST=INSTR$RANDOM
  # valgrind runs the binary itself (an `env` in between would run under it instead).
  export NATS_STREAM=$ST PORT=3002 RUST_LOG=warn
  api_run project 3002 /ingest/message/order "$BIN/api"
  delete_stream "$ST"
fi
if [ "$WHAT" = worker ] || [ "$WHAT" = both ]; then
  "$LBIN" pipe-setup >/dev/null
  worker_run reference postgres://postgres@127.0.0.1:5432/pipe_bench "select count(*) from orders" 3001 /orders \
    "$LBIN" serve --addr 127.0.0.1:3001 --publish -- "$LBIN" worker --batch 500 --idle-exit-s 30 --cap-s 900
  "$LBIN" pipe-teardown >/dev/null
  ST=INSTR$RANDOM; DB=instr_$RANDOM
  export NATS_STREAM=$ST DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB PORT=3002 RUST_LOG=warn WORKER_METRICS_PORT=0
  worker_run project "$DATABASE_URL" "select count(*) from message_status" 3002 /ingest/message/order \
    "$BIN/api" -- "$BIN/worker"
  psql -qtA "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  delete_stream "$ST"; delete_stream "${ST}_DLQ"
fi
awk '
  / api:/    { split($NF, f, "="); A[$1] = f[2] }
  / worker:/ { split($NF, f, "="); W[$1] = f[2] }
  END {
    if (A["reference"]) printf "api instructions per request: project/reference %.2f\n", A["project"] / A["reference"]
    if (W["reference"]) printf "worker instructions per order: project/reference %.2f\n", W["project"] / W["reference"]
  }
' "$OUT/summary"
if [ -n "${KEEP_CALLGRIND:-}" ]; then echo "callgrind files: $OUT"; else rm -rf "$OUT"; fi
