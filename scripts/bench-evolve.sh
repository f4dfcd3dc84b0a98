#!/usr/bin/env bash
# How long each kind of schema change the worker applies holds the writes of a table of ROWS
# rows (issue 34): for each change class the `customers` table (ROWS dbgen-like rows) is put in
# an older shape (untimed), then `worker schema apply` (release build: what the worker does at
# start-up) brings it to the YAML's — while a writer inserts a row every 5 ms into the same
# table on its own connection. Printed per rep: the statement the plan ran, how long `apply`
# took, and the longest gap between two of the writer's commits during it (the pause of writes;
# the writer's longest gap without any change is printed first, the noise floor).
#
# Changes the example YAML does not declare (a rename, a new required field with a default)
# are timed as the statement the plan would run for them, run directly on the same table.
#
# usage: scripts/bench-evolve.sh [rows=1000000] [reps=3]
# needs: psql, PostgreSQL on 127.0.0.1:5432 (trust auth). The database is dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
REPS=${2:-3}
ID=$(date +%s)$$
DB=nomnom_bench_evolve_$ID
DIR=$(mktemp -d)
PG="psql -q -At -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -d $DB"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" NOMNOM_ENV_FILE=none RUST_LOG=warn
cleanup() {
  [ -n "${WRITER:-}" ] && kill "$WRITER" 2>/dev/null || true
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

cargo build -q --release --bin worker
BIN=target/release/worker
$BIN schema apply > /dev/null
$PG -c "INSERT INTO customers (customer_key, name, address, nation_key, phone, account_balance, market_segment, comment)
  SELECT 'C' || i, 'Customer#' || lpad(i::text, 9, '0'), 'address ' || i, i % 25, '25-989-741-2988',
         (i % 1000000) / 100.0, 'BUILDING', CASE WHEN i % 2 = 0 THEN 'regular deposits ' || i END
  FROM generate_series(1, $ROWS) AS i"
$PG -c "VACUUM ANALYZE customers"
echo "customers: $($PG -c 'SELECT count(*) FROM customers') rows, $($PG -c "SELECT pg_size_pretty(pg_total_relation_size('customers'))")"

# A writer: one INSERT every 5 ms on its own connection, printing each commit's time.
start_writer() {
  local n=0
  while :; do
    n=$((n + 1))
    echo "INSERT INTO customers (customer_key, name, address, nation_key, phone, account_balance, market_segment) VALUES ('W$1-$n', 'w', 'w', 1, 'p', 1, 'm'); SELECT extract(epoch FROM clock_timestamp());"
    sleep 0.005
  done | psql -q -At -h 127.0.0.1 -U postgres -d "$DB" > "$DIR/writer.log" 2>&1 &
  WRITER=$!
  sleep 0.5
}
stop_writer() { kill "$WRITER" 2>/dev/null || true; wait "$WRITER" 2>/dev/null || true; WRITER=; }
# The longest gap (ms) between consecutive commits in the writer's log between T0 and T1.
max_gap() {
  awk -v t0="$1" -v t1="$2" '/^[0-9.]+$/ { if (prev != "" && $1 >= t0 && prev <= t1 && $1 - prev > m) m = $1 - prev; prev = $1 }
    END { printf "%.0f", m * 1000 }' "$DIR/writer.log"
}
now() { date +%s.%N; }
# Runs COMMAND (timed) with the writer going; prints "<ms taken> <longest write gap ms>".
timed_under_writes() {
  start_writer "$RANDOM$RANDOM"
  local t0 t1
  t0=$(now)
  "$@" > "$DIR/step.out" 2>&1 || { cat "$DIR/step.out" >&2; exit 1; }
  t1=$(now)
  sleep 0.3
  stop_writer
  printf '%.0f %s\n' "$(echo "($t1 - $t0) * 1000" | bc -l)" "$(max_gap "$t0" "$t1")"
}
apply() { $BIN schema apply; }
sql() { $PG -c "$1"; }
report() { # REP CLASS STATEMENT "<ms> <gap>"
  read -r ms gap <<< "$4"
  printf '| %s | %s | `%s` | %s ms | %s ms |\n' "$1" "$2" "$3" "$ms" "$gap"
}
plan_of() { $BIN schema plan | grep -v '^--' | tr '\n' ' ' | sed 's/ $//'; }

echo "| rep | change | statement | apply (or statement) took | longest pause of the writer's commits |"
echo "|---|---|---|---|---|"
for rep in $(seq 1 "$REPS"); do
  report "$rep" "none (apply with nothing to change; the noise floor)" "-" "$(timed_under_writes apply)"

  sql "ALTER TABLE customers DROP COLUMN comment"
  report "$rep" "safe: new nullable field" "$(plan_of)" "$(timed_under_writes apply)"

  sql "UPDATE customers SET comment = '' WHERE comment IS NULL"
  sql "ALTER TABLE customers ALTER COLUMN comment SET NOT NULL"
  report "$rep" "safe: field made nullable" "$(plan_of)" "$(timed_under_writes apply)"

  sql "ALTER TABLE customers ALTER COLUMN name TYPE varchar(20)"
  report "$rep" "safe: longer max_length" "$(plan_of)" "$(timed_under_writes apply)"

  sql "ALTER TABLE customers ALTER COLUMN account_balance TYPE integer USING round(account_balance)"
  report "$rep" "safe: Integer -> Decimal (rewrites the table)" "$(plan_of)" "$(timed_under_writes apply)"

  rename='ALTER TABLE "customers" RENAME COLUMN "comment" TO "remark"'
  report "$rep" "declared: renamed_from (statement)" "$rename" "$(timed_under_writes sql "$rename")"
  sql 'ALTER TABLE customers RENAME COLUMN remark TO comment'

  add_default="ALTER TABLE \"customers\" ADD COLUMN IF NOT EXISTS \"channel\" TEXT NOT NULL DEFAULT 'web'::TEXT"
  report "$rep" "declared: new required field with default (statement)" "$add_default" "$(timed_under_writes sql "$add_default")"
  sql 'ALTER TABLE customers DROP COLUMN channel'
done
