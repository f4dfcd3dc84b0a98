#!/usr/bin/env bash
# Generates a project from this repository with cargo-generate, then builds it and runs its
# tests. Usage: scripts/test-template.sh [OUT_DIR]   (cargo-generate must be on PATH)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
rm -rf "$out/my-ingest"
# A copy without build output or VCS data, as a git checkout of the template would be.
src="$out/template-src"
rm -rf "$src" && mkdir -p "$src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$src/")
cargo generate --path "$src" --destination "$out" --name my-ingest \
  --define stream_name=ORDERS --define database_name=orders --silent --vcs none
cd "$out/my-ingest"
grep -q '^name = "my-ingest"$' Cargo.toml
grep -q 'STREAM: &str = "ORDERS"' src/defaults.rs
grep -q 'NATS_STREAM: ORDERS' docker-compose.nats.yml
grep -q 'stream: ORDERS' deploy/k8s/worker.yaml
test ! -e hooks && test -z "$(find . -name '*.template')"
echo "generated project looks right; building and testing it"
cargo build --bins
cargo test --workspace
