#!/usr/bin/env bash
# The fault battery at full size (the default test command runs the same scenarios with 600
# messages each). Usage: scripts/faults.sh [MESSAGES]   (default 20000)
#   - kill -9 the worker every 0.7 s during the run → rows == accepted messages, 0 duplicates
#   - restart NATS (its own server on a free port) mid-run → no accepted message lost
#   - 3-node NATS cluster on loopback, stream replicas 3, kill -9 one node mid-run → no loss
#   - 1000 malformed messages → each dead-lettered with its reason, the worker keeps going
# A PostgreSQL outage (the worker's database refuses connections, open ones are dropped) is in
# tests/worker.rs; FAULT_PG_OUTAGE_SECS=20 makes it last 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."
export FAULT_MESSAGES="${1:-20000}"
export FAULT_PG_OUTAGE_SECS="${FAULT_PG_OUTAGE_SECS:-20}"
time cargo test --release --test faults -- --test-threads 1 --nocapture
time cargo test --release --test worker a_database_outage -- --nocapture
