#!/usr/bin/env bash
# The fault battery at full size (the default test command runs the same scenarios with 600
# messages each). Usage: scripts/faults.sh [MESSAGES]   (default 20000)
#   - kill -9 the worker every 0.7 s during the run → rows == accepted messages, 0 duplicates
#   - restart NATS (its own server on a free port) mid-run → no accepted message lost
#   - 3-node NATS cluster on loopback, stream replicas 3, kill -9 one node mid-run → no loss
#   - stop a PostgreSQL server of the test's own for 60 s mid-run, worker at default settings
#     → every accepted message stored once, 0 dead letters (printed)
#   - a message whose every delivery dies with the worker (kill -9) → dead-lettered, not stuck
#   - 1000 malformed messages → each dead-lettered with its reason, the worker keeps going
# FAULT_PG_SERVER_OUTAGE_SECS (default 60) sets the server outage; FAULT_PG_OUTAGE_SECS
# (default 20 here) the per-database outage of tests/template/worker.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
export FAULT_MESSAGES="${1:-20000}"
export FAULT_PG_OUTAGE_SECS="${FAULT_PG_OUTAGE_SECS:-20}"
export FAULT_PG_SERVER_OUTAGE_SECS="${FAULT_PG_SERVER_OUTAGE_SECS:-60}"
time cargo test --release --test template faults:: -- --test-threads 1 --nocapture
time cargo test --release --test template worker::a_database_outage -- --nocapture
