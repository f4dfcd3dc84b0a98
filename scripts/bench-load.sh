#!/usr/bin/env bash
# Bulk loading against PostgreSQL's own COPY, in one run on this machine: generates a TPC-H
# customer file as dbgen writes it (`|`-separated, no header, trailing `|`; what
# entities/customer.yaml's csv block reads), loads it end to end with the release binaries
# (`worker load` → JetStream → worker → PostgreSQL, until every row is committed), then COPYs
# the same file into a plain table of the same columns, and prints rows/s of both, their ratio
# and the peak RSS of the loader and the worker. The api is not involved: `worker load`
# publishes to JetStream itself.
#
# The stream BENCH_LOAD_<id> stays on the NATS server, empty (its messages are acked and
# removed), as compare.sh's streams do; the database is dropped.
#
# usage: scripts/bench-load.sh [rows=1000000]
# needs: psql, NATS on 127.0.0.1:4222, PostgreSQL on 127.0.0.1:5432 (trust auth).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ID=$(date +%s)$$
DB=nomnom_bench_load_$ID
STREAM=BENCH_LOAD_$ID
DIR=$(mktemp -d)
FILE=$DIR/customer.tbl
PG="psql -q -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1"
cleanup() {
  [ -n "${WORKER:-}" ] && kill "$WORKER" 2>/dev/null || true
  wait 2>/dev/null || true
  $PG -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

cargo build -q --release --bin worker
BIN=target/release/worker

# dbgen-shaped rows: key, name, address, nation, phone, balance, segment, comment, trailing |.
awk -v n="$ROWS" 'BEGIN {
  split("AUTOMOBILE BUILDING FURNITURE HOUSEHOLD MACHINERY", seg, " ");
  srand(42);
  for (i = 1; i <= n; i++) {
    printf "%d|Customer#%09d|%s|%d|%02d-%03d-%03d-%04d|%.2f|%s|regular deposits haggle carefully %d|\n",
      i, i, substr("IVhzIApeRb ot,c,E XSTf4,NCwDVaWNe6tEgvwfmRchLXak MG9kdTD2WBHm", 1 + i % 20, 20),
      i % 25, 10 + i % 25, i % 1000, (i * 7) % 1000, i % 10000, (i % 1099999) / 100 - 999.99,
      seg[1 + i % 5], i
  }
}' > "$FILE"
SIZE_MB=$(( $(stat -c %s "$FILE") / 1024 / 1024 ))
echo "file: $ROWS rows, $SIZE_MB MB"

peak_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# 1. The pipeline: the worker creates the database and tables, the loader publishes.
export NATS_URL=nats://127.0.0.1:4222 NATS_STREAM=$STREAM NATS_CONSUMER=c_$ID
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" WORKER_METRICS_PORT=0 RUST_LOG=warn
$BIN > "$DIR/worker.log" 2>&1 & WORKER=$!
for _ in $(seq 1 100); do
  $PG -d "$DB" -Atc "SELECT 1 FROM customers LIMIT 0" >/dev/null 2>&1 && break
  sleep 0.2
done
START=$(date +%s.%N)
$BIN load --entity customer "$FILE" > "$DIR/load.out" 2> "$DIR/load.err" & LOADER=$!
LOADER_KB=0; WORKER_KB=0
while kill -0 $LOADER 2>/dev/null; do
  k=$(peak_kb $LOADER); [ "${k:-0}" -gt $LOADER_KB ] && LOADER_KB=$k
  k=$(peak_kb $WORKER); [ "${k:-0}" -gt $WORKER_KB ] && WORKER_KB=$k
  sleep 0.1
done
wait $LOADER || { cat "$DIR/load.err" >&2; exit 1; }
LOADED=$(date +%s.%N)
cat "$DIR/load.out"
while [ "$($PG -d "$DB" -Atc 'SELECT count(*) FROM customers')" -lt "$ROWS" ]; do
  k=$(peak_kb $WORKER); [ "${k:-0}" -gt $WORKER_KB ] && WORKER_KB=$k
  sleep 0.2
done
STORED=$(date +%s.%N)
k=$(peak_kb $WORKER); [ "${k:-0}" -gt $WORKER_KB ] && WORKER_KB=$k
kill $WORKER; wait $WORKER 2>/dev/null || true; WORKER=
PIPE_S=$(echo "$STORED - $START" | bc -l)
LOAD_S=$(echo "$LOADED - $START" | bc -l)

# 2. COPY of the same file into a table of the same columns (the trailing | is one more).
$PG -d "$DB" -c "CREATE TABLE copy_customers (customer_key varchar(32), name varchar(25),
  address varchar(40), nation_key integer, phone varchar(15), account_balance numeric,
  market_segment varchar(10), comment text, trailing_empty text)"
C0=$(date +%s.%N)
$PG -d "$DB" -c "\\copy copy_customers FROM '$FILE' WITH (FORMAT csv, DELIMITER '|')"
C1=$(date +%s.%N)
COPY_S=$(echo "$C1 - $C0" | bc -l)

printf 'pipeline: %d rows published in %.1f s, all committed after %.1f s: %.0f rows/s\n' \
  "$ROWS" "$LOAD_S" "$PIPE_S" "$(echo "$ROWS / $PIPE_S" | bc -l)"
printf 'COPY:     %d rows in %.1f s: %.0f rows/s\n' "$ROWS" "$COPY_S" "$(echo "$ROWS / $COPY_S" | bc -l)"
printf 'ratio (pipeline rows/s / COPY rows/s): %.3f\n' "$(echo "$COPY_S / $PIPE_S" | bc -l)"
printf 'peak RSS: loader %d MB, worker %d MB\n' $((LOADER_KB / 1024)) $((WORKER_KB / 1024))
