#!/usr/bin/env bash
# Bulk loading against PostgreSQL's own COPY, in one run on this machine: generates a TPC-H
# customer file as dbgen writes it (`|`-separated, no header, trailing `|`; what
# entities/customer.yaml's csv block reads), loads it end to end with the release binaries
# (`worker load` → JetStream → worker → PostgreSQL, until every row is committed), then COPYs
# the same file into a table of the same columns with what the entity table has too — a
# bigserial id and the same unique key (a fair baseline: the index is part of what storing a
# row costs) — and prints rows/s of both, their ratio and the peak RSS of the loader and the
# worker. The api is not involved: `worker load` publishes to JetStream itself.
#
# Then a re-load: the same file with every tenth row changed, through `worker load` (upserts
# on the unique key, newest wins) against what one would write by hand — `\copy` into a staging
# table and `INSERT … ON CONFLICT DO UPDATE` into the COPY table.
#
# The stream BENCH_LOAD_<id> stays on the NATS server, empty (its messages are acked and
# removed), as compare.sh's streams do; the database is dropped.
#
# Then the same customer file goes through the api instead, as CSV batches of 10 000 rows
# (`POST /ingest/batch/customer`, text/csv, two clients), timed until every row is committed,
# with the api's peak RSS.
#
# A second file is line-item-sized: ROWS line items, as NDJSON orders of 4 line items each
# (ROWS/4 orders), loaded the same way and timed until every line item is committed, against
# COPY of the same line items as CSV into a table with a bigserial id and their unique key;
# then the same orders through the api as NDJSON batches and as JSON-array batches.
#
# usage: [BIG_MB=1024] scripts/bench-load.sh [rows=1000000] [line_items=ROWS]
# needs: psql, NATS on 127.0.0.1:4222, PostgreSQL on 127.0.0.1:5432 (trust auth).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ITEMS=${2:-$ROWS}
ID=$(date +%s)$$
DB=nomnom_bench_load_$ID
STREAM=BENCH_LOAD_$ID
DIR=$(mktemp -d)
FILE=$DIR/customer.tbl
PG="psql -q -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1"
cleanup() {
  [ -n "${WORKER:-}" ] && kill "$WORKER" 2>/dev/null || true
  [ -n "${API:-}" ] && kill "$API" 2>/dev/null || true
  wait 2>/dev/null || true
  $PG -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

cargo build -q --release --bin worker --bin api
BIN=target/release/worker
API_BIN=target/release/api

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

# Peak RSS of a process in kB. VmHWM is a high-water mark: one reading just before the process
# ends (or is stopped) is its peak.
peak_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Waits for a process that ends by itself, reading its peak RSS until then; prints it.
wait_peak_kb() {
  local kb=0 now
  while kill -0 "$1" 2>/dev/null; do
    now=$(peak_kb "$1"); [ "${now:-0}" -gt "$kb" ] && kb=$now
    sleep 0.1
  done
  echo "$kb"
}

# Waits until the status rows say N messages of ENTITY are stored (a chunk's run counts its
# members). Polling `count(*)` of a million-row table instead would cost PostgreSQL a scan every
# poll — work the COPY baseline does not pay — so tables are counted once, after the timing.
wait_members() {
  while [ "$($PG -d "$DB" -Atc "SELECT COALESCE(sum(COALESCE(members, 1)), 0) FROM message_status WHERE entity = '$1'")" -lt "$2" ]; do
    sleep 0.2
  done
}
# Fails unless TABLE holds N rows.
expect_rows() {
  local n; n=$($PG -d "$DB" -Atc "SELECT count(*) FROM $1")
  [ "$n" -eq "$2" ] || { echo "$1 holds $n rows, expected $2" >&2; exit 1; }
}

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
LOADER_KB=$(wait_peak_kb $LOADER)
wait $LOADER || { cat "$DIR/load.err" >&2; exit 1; }
LOADED=$(date +%s.%N)
cat "$DIR/load.out"
wait_members Customer "$ROWS"
STORED=$(date +%s.%N)
expect_rows customers "$ROWS"
WORKER_KB=$(peak_kb $WORKER)
PIPE_S=$(echo "$STORED - $START" | bc -l)
LOAD_S=$(echo "$LOADED - $START" | bc -l)
# 1b. The same command again: the database holds every chunk, so nothing is sent.
AGAIN0=$(date +%s.%N)
$BIN load --entity customer "$FILE" > "$DIR/again.out" 2> "$DIR/again.err" \
  || { cat "$DIR/again.err" >&2; exit 1; }
AGAIN_S=$(echo "$(date +%s.%N) - $AGAIN0" | bc -l)
grep -q " 0 chunks published" "$DIR/again.out" || { cat "$DIR/again.out" >&2; exit 1; }
kill $WORKER; wait $WORKER 2>/dev/null || true; WORKER=

# 2. COPY of the same file into a table of the same columns, a bigserial id and the same unique
#    key as `customers` (the trailing | is one more column).
CUSTOMER_COLUMNS="customer_key, name, address, nation_key, phone, account_balance, market_segment, comment"
$PG -d "$DB" -c "CREATE TABLE copy_customers (id bigserial PRIMARY KEY,
  customer_key varchar(32) NOT NULL UNIQUE, name varchar(25), address varchar(40),
  nation_key integer, phone varchar(15), account_balance numeric, market_segment varchar(10),
  comment text, trailing_empty text)"
C0=$(date +%s.%N)
$PG -d "$DB" -c "\\copy copy_customers ($CUSTOMER_COLUMNS, trailing_empty) FROM '$FILE' WITH (FORMAT csv, DELIMITER '|')"
C1=$(date +%s.%N)
COPY_S=$(echo "$C1 - $C0" | bc -l)

# 2b. A re-load with every tenth row changed (its balance and comment): `worker load` of the new
#     file (every row a new message: upserted, the newest wins) until every row is committed,
#     against `\copy` into a staging table + `INSERT … ON CONFLICT DO UPDATE` (same run).
awk -F'|' 'BEGIN { OFS = "|" } NR % 10 == 0 { $6 = sprintf("%.2f", $6 + 1); $8 = $8 " (changed)" } { print }' \
  "$FILE" > "$DIR/customer-changed.tbl"
$BIN > "$DIR/worker-reload.log" 2>&1 & WORKER=$!
R0=$(date +%s.%N)
$BIN load --entity customer "$DIR/customer-changed.tbl" > "$DIR/reload.out" 2> "$DIR/reload.err" & LOADER=$!
RELOADER_KB=$(wait_peak_kb $LOADER)
wait $LOADER || { cat "$DIR/reload.err" >&2; exit 1; }
wait_members Customer "$((2 * ROWS))"
R1=$(date +%s.%N)
RELOAD_WORKER_KB=$(peak_kb $WORKER)
kill $WORKER; wait $WORKER 2>/dev/null || true; WORKER=
RELOAD_S=$(echo "$R1 - $R0" | bc -l)
CHANGED=$($PG -d "$DB" -Atc "SELECT count(*) FROM customers WHERE comment LIKE '%(changed)'")
[ "$CHANGED" -eq "$((ROWS / 10))" ] || { echo "re-load: $CHANGED rows changed, expected $((ROWS / 10))" >&2; exit 1; }
U0=$(date +%s.%N)
$PG -d "$DB" <<SQL
CREATE TEMP TABLE staging (LIKE copy_customers INCLUDING DEFAULTS);
ALTER TABLE staging DROP COLUMN id;
\\copy staging ($CUSTOMER_COLUMNS, trailing_empty) FROM '$DIR/customer-changed.tbl' WITH (FORMAT csv, DELIMITER '|')
INSERT INTO copy_customers ($CUSTOMER_COLUMNS)
SELECT $CUSTOMER_COLUMNS FROM staging
ON CONFLICT (customer_key) DO UPDATE SET name = EXCLUDED.name, address = EXCLUDED.address,
  nation_key = EXCLUDED.nation_key, phone = EXCLUDED.phone,
  account_balance = EXCLUDED.account_balance, market_segment = EXCLUDED.market_segment,
  comment = EXCLUDED.comment;
SQL
U1=$(date +%s.%N)
UPSERT_S=$(echo "$U1 - $U0" | bc -l)

# 3. The same file through the api, in CSV batches, into emptied tables.
$PG -d "$DB" -c "TRUNCATE customers, message_status"
API_PORT=$((20000 + RANDOM % 20000))
PORT=$API_PORT METRICS_PORT=0 $API_BIN > "$DIR/api.log" 2>&1 & API=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$API_PORT/health" >/dev/null && break; sleep 0.1; done
$BIN > "$DIR/worker3.log" 2>&1 & WORKER=$!
split -l 10000 "$FILE" "$DIR/part."
A0=$(date +%s.%N)
ls "$DIR"/part.* | xargs -P 2 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
  -H 'content-type: text/csv' --data-binary @{} "http://127.0.0.1:$API_PORT/ingest/batch/customer" \
  > "$DIR/codes.txt" & POSTERS=$!
wait $POSTERS
echo "api answers: $(sort "$DIR/codes.txt" | uniq -c | tr '\n' ' ')"
wait_members Customer "$ROWS"
A1=$(date +%s.%N)
expect_rows customers "$ROWS"
API_KB=$(peak_kb $API); WORKER3_KB=$(peak_kb $WORKER)
kill $WORKER $API; wait $WORKER $API 2>/dev/null || true; WORKER=; API=
API_S=$(echo "$A1 - $A0" | bc -l)

# 4. Line items: NDJSON orders of 4 line items, and the same line items as CSV for COPY.
ORDERS=$((ITEMS / 4))
awk -v n="$ORDERS" -v csv="$DIR/items.csv" 'BEGIN {
  for (o = 1; o <= n; o++) {
    items = "";
    for (l = 1; l <= 4; l++) {
      price = sprintf("%d.%02d", 1000 + o % 9000 + l, (o + l) % 100);
      items = items sprintf("%s{\"line_number\":%d,\"part_key\":\"P-%d\",\"supplier_key\":\"S-%d\",\"quantity\":%d,\"extended_price\":\"%s\",\"discount\":\"0.05\",\"tax\":\"0.10\",\"return_flag\":\"N\",\"line_status\":\"O\",\"ship_date\":\"1996-03-1%d\",\"commit_date\":\"1996-02-1%d\",\"receipt_date\":\"1996-04-1%d\",\"ship_mode\":\"TRUCK\"}",
        (l > 1 ? "," : ""), l, o * 10 + l, l * 7, 5 + l, price, l, l, l);
      printf "ORD-%d,%d,P-%d,S-%d,%d,%s,0.05,0.10,N,O,1996-03-1%d,1996-02-1%d,1996-04-1%d,TRUCK\n",
        o, l, o * 10 + l, l * 7, 5 + l, price, l, l, l > csv;
    }
    printf "{\"order_key\":\"ORD-%d\",\"customer_key\":\"CUST-%d\",\"order_status\":\"O\",\"total_price\":\"%d.47\",\"order_date\":\"1996-01-02\",\"order_priority\":\"5-LOW\",\"clerk\":\"Clerk#000000951\",\"ship_priority\":0,\"comment\":\"order %d\",\"line_items\":[%s]}\n",
      o, o % 97, 170000 + o, o, items;
  }
}' > "$DIR/orders.ndjson"
ORDERS_MB=$(( $(stat -c %s "$DIR/orders.ndjson") / 1024 / 1024 ))
echo "line-item file: $ORDERS orders, $((ORDERS * 4)) line items, $ORDERS_MB MB of NDJSON"
$BIN > "$DIR/worker2.log" 2>&1 & WORKER=$!
I0=$(date +%s.%N)
$BIN load --entity order "$DIR/orders.ndjson" > "$DIR/load2.out" 2> "$DIR/load2.err" & LOADER=$!
LOADER2_KB=$(wait_peak_kb $LOADER)
wait $LOADER || { cat "$DIR/load2.err" >&2; exit 1; }
cat "$DIR/load2.out"
wait_members Order "$ORDERS"
I1=$(date +%s.%N)
expect_rows order_line_items "$((ORDERS * 4))"
WORKER2_KB=$(peak_kb $WORKER)
kill $WORKER; wait $WORKER 2>/dev/null || true; WORKER=
ITEMS_S=$(echo "$I1 - $I0" | bc -l)
$PG -d "$DB" -c "CREATE TABLE copy_items (id bigserial PRIMARY KEY, order_key varchar(32),
  line_number integer, part_key varchar(32), supplier_key varchar(32), quantity integer,
  extended_price numeric, discount numeric, tax numeric, return_flag char(1),
  line_status char(1), ship_date date, commit_date date, receipt_date date, ship_mode varchar(10),
  UNIQUE (order_key, line_number))"
C2=$(date +%s.%N)
$PG -d "$DB" -c "\\copy copy_items (order_key, line_number, part_key, supplier_key, quantity, extended_price, discount, tax, return_flag, line_status, ship_date, commit_date, receipt_date, ship_mode) FROM '$DIR/items.csv' WITH (FORMAT csv)"
C3=$(date +%s.%N)
COPY2_S=$(echo "$C3 - $C2" | bc -l)

# 4b. The same orders through the api, as NDJSON batches and as JSON-array batches of 2 500
#     orders (10 000 line items each, two clients), each into emptied tables, timed until every
#     line item is committed, against the line items' COPY above.
split -l 2500 "$DIR/orders.ndjson" "$DIR/orders-part."
for p in "$DIR"/orders-part.*; do
  { printf '['; paste -sd, "$p"; printf ']'; } > "$p.json"
done
api_orders() { # FORMAT (ndjson|json) MEDIA_TYPE -> seconds until every line item is committed
  $PG -d "$DB" -c "TRUNCATE orders, order_line_items, message_status" >/dev/null
  PORT=$API_PORT METRICS_PORT=0 $API_BIN > "$DIR/api-$1.log" 2>&1 & API=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$API_PORT/health" >/dev/null && break; sleep 0.1; done
  $BIN > "$DIR/worker-$1.log" 2>&1 & WORKER=$!
  local t0 t1 files
  if [ "$1" = json ]; then files=$(ls "$DIR"/orders-part.*.json); else files=$(ls "$DIR"/orders-part.* | grep -v '\.json$'); fi
  t0=$(date +%s.%N)
  echo "$files" | xargs -P 2 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
    -H "content-type: $2" --data-binary @{} "http://127.0.0.1:$API_PORT/ingest/batch/order" \
    > "$DIR/codes-$1.txt"
  wait_members Order "$ORDERS"
  t1=$(date +%s.%N)
  expect_rows order_line_items "$((ORDERS * 4))"
  echo "$(echo "$t1 - $t0" | bc -l) $(peak_kb $API) $(peak_kb $WORKER) $(sort "$DIR/codes-$1.txt" | uniq -c | tr '\n' ' ')"
  kill $WORKER $API; wait $WORKER $API 2>/dev/null || true; WORKER=; API=
}
read -r NDJSON_S NDJSON_API_KB NDJSON_WORKER_KB NDJSON_CODES < <(api_orders ndjson application/x-ndjson)
read -r ARRAY_S ARRAY_API_KB ARRAY_WORKER_KB ARRAY_CODES < <(api_orders json application/json)

printf 'pipeline: %d rows published in %.1f s, all committed after %.1f s: %.0f rows/s\n' \
  "$ROWS" "$LOAD_S" "$PIPE_S" "$(echo "$ROWS / $PIPE_S" | bc -l)"
printf 'COPY:     %d rows in %.1f s: %.0f rows/s\n' "$ROWS" "$COPY_S" "$(echo "$ROWS / $COPY_S" | bc -l)"
printf 'ratio (pipeline rows/s / COPY rows/s): %.3f\n' "$(echo "$COPY_S / $PIPE_S" | bc -l)"
printf 'peak RSS: loader %d MB, worker %d MB\n' $((LOADER_KB / 1024)) $((WORKER_KB / 1024))
printf 'the same command again: %.1f s (%.0f %% of the first load), nothing sent\n' \
  "$AGAIN_S" "$(echo "100 * $AGAIN_S / $PIPE_S" | bc -l)"
printf 're-load, every tenth row changed: all committed after %.1f s: %.0f rows/s\n' \
  "$RELOAD_S" "$(echo "$ROWS / $RELOAD_S" | bc -l)"
printf 'staging \\copy + INSERT ON CONFLICT of the same file: %.1f s: %.0f rows/s\n' \
  "$UPSERT_S" "$(echo "$ROWS / $UPSERT_S" | bc -l)"
printf 'ratio (re-load rows/s / staging upsert rows/s): %.3f\n' "$(echo "$UPSERT_S / $RELOAD_S" | bc -l)"
printf 'peak RSS: loader %d MB, worker %d MB\n' $((RELOADER_KB / 1024)) $((RELOAD_WORKER_KB / 1024))
printf 'through the api (CSV batches of 10 000): all committed after %.1f s: %.0f rows/s, ratio to COPY %.3f\n' \
  "$API_S" "$(echo "$ROWS / $API_S" | bc -l)" "$(echo "$COPY_S / $API_S" | bc -l)"
printf 'peak RSS: api %d MB, worker %d MB\n' $((API_KB / 1024)) $((WORKER3_KB / 1024))
printf 'line items: %d in %d orders committed after %.1f s: %.0f line items/s (%.0f orders/s)\n' \
  "$((ORDERS * 4))" "$ORDERS" "$ITEMS_S" "$(echo "$ORDERS * 4 / $ITEMS_S" | bc -l)" "$(echo "$ORDERS / $ITEMS_S" | bc -l)"
printf 'COPY of the same line items: %.1f s: %.0f rows/s\n' "$COPY2_S" "$(echo "$ORDERS * 4 / $COPY2_S" | bc -l)"
printf 'ratio (pipeline line items/s / COPY rows/s): %.3f\n' "$(echo "$COPY2_S / $ITEMS_S" | bc -l)"
printf 'peak RSS: loader %d MB, worker %d MB\n' $((LOADER2_KB / 1024)) $((WORKER2_KB / 1024))
for run in "NDJSON $NDJSON_S $NDJSON_API_KB $NDJSON_WORKER_KB $NDJSON_CODES" "JSON-array $ARRAY_S $ARRAY_API_KB $ARRAY_WORKER_KB $ARRAY_CODES"; do
  read -r what secs api_kb worker_kb codes <<< "$run"
  printf 'through the api (%s batches of 2 500 orders, answers: %s): line items committed after %.1f s: %.0f line items/s, ratio to COPY %.3f\n' \
    "$what" "$codes" "$secs" "$(echo "$ORDERS * 4 / $secs" | bc -l)" "$(echo "$COPY2_S / $secs" | bc -l)"
  printf 'peak RSS: api %d MB, worker %d MB\n' $((api_kb / 1024)) $((worker_kb / 1024))
done
# The servers run before and after this script: their high-water marks are since they started.
NATS_PID=$(pgrep -x nats-server | head -1 || true)
PG_MAX_KB=0
for p in $(pgrep -x postgres); do k=$(peak_kb "$p"); [ "${k:-0}" -gt "$PG_MAX_KB" ] && PG_MAX_KB=$k; done
printf 'servers (peak RSS since they started): nats-server %d MB, largest PostgreSQL process %d MB\n' \
  $(( $(peak_kb "${NATS_PID:-0}") / 1024 )) $((PG_MAX_KB / 1024))

# 5. With BIG_MB set (e.g. BIG_MB=1024): a generated customer file of that many MB through
#    `worker load` into a fresh table, with the loader's and the worker's peak RSS — the
#    loader's memory is bounded by its settings, not by the file.
if [ "${BIG_MB:-0}" -gt 0 ]; then
  BIG_ROWS=$(( BIG_MB * 1024 * 1024 / 103 ))
  awk -v n="$BIG_ROWS" 'BEGIN {
    for (i = 1; i <= n; i++) printf "%d|Customer#%09d|addr %d|%d|25-989-741-2988|%d.56|BUILDING|regular deposits %d|\n", i, i, i, i % 25, i % 9999, i
  }' > "$DIR/big.tbl"
  $PG -d "$DB" -c "TRUNCATE customers, message_status"
  $BIN > "$DIR/worker-big.log" 2>&1 & WORKER=$!
  B0=$(date +%s.%N)
  $BIN load --entity customer "$DIR/big.tbl" > "$DIR/big.out" 2> "$DIR/big.err" & LOADER=$!
  BIG_LOADER_KB=$(wait_peak_kb $LOADER)
  wait $LOADER || { cat "$DIR/big.err" >&2; exit 1; }
  wait_members Customer "$BIG_ROWS"
  B1=$(date +%s.%N)
  expect_rows customers "$BIG_ROWS"
  BIG_WORKER_KB=$(peak_kb $WORKER)
  kill $WORKER; wait $WORKER 2>/dev/null || true; WORKER=
  printf 'big file: %d MB, %d rows, all committed after %.1f s: %.0f rows/s; peak RSS: loader %d MB, worker %d MB\n' \
    "$(( $(stat -c %s "$DIR/big.tbl") / 1024 / 1024 ))" "$BIG_ROWS" "$(echo "$B1 - $B0" | bc -l)" \
    "$(echo "$BIG_ROWS / ($B1 - $B0)" | bc -l)" $((BIG_LOADER_KB / 1024)) $((BIG_WORKER_KB / 1024))
fi
