#!/usr/bin/env bash
# Runs the pipeline locally: builds both binaries (release), starts the worker and the api, and
# stops both on Ctrl-C. Configuration comes from the environment (docs/OPERATIONS.md); NATS with
# JetStream and PostgreSQL must be up.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building the api and the worker in release mode (a few minutes the first time)..."
cargo build --release --bin api --bin worker
./target/release/worker &
worker=$!
./target/release/api &
api=$!
trap 'kill -TERM $api $worker 2>/dev/null; wait' INT TERM EXIT
echo "api on port ${PORT:-8080}; entities:"
./target/release/worker entities
echo "try: ./target/release/worker example <entity> | curl -X POST localhost:${PORT:-8080}/ingest/message/<entity> -H 'content-type: application/json' -d @-"
wait -n $api $worker
