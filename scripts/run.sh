#!/usr/bin/env bash
# Runs the pipeline locally: builds both binaries, starts the worker and the api, and stops both
# on Ctrl-C. Configuration comes from the environment (see README); NATS and PostgreSQL must be up.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin api --bin worker
./target/release/worker &
worker=$!
./target/release/api &
api=$!
trap 'kill -TERM $api $worker 2>/dev/null; wait' INT TERM EXIT
echo "api on port ${PORT:-8080}; try: curl -X POST localhost:${PORT:-8080}/ingest/message/order -H 'content-type: application/json' -d @examples/order.json"
wait -n $api $worker
