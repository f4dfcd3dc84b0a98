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
# The project's README is about the project, not the template.
grep -q '^# my-ingest$' README.md
grep -q 'ORDERS' README.md && grep -q 'my-ingest-worker' README.md && grep -q 'psql .* orders ' README.md
! grep -q 'cargo generate' README.md
# What the template keeps for itself is not here: tests about its own entities only.
test "$(ls tests)" = "$(printf 'common\nentities.rs')"
test ! -e codegen/tests && test ! -e codegen/fixture-crate && test ! -e benches
test ! -e scripts/test-template.sh && test ! -e scripts/bench-compare.sh
! grep -rqE 'tpch|order_line_item|Order(LineItem)?\b' tests
# A user replaces the example entities with their own: the project's test command must pass
# with no other edit. This schema shares nothing with TPC-H (names, types, a derived entity with
# a nested path, reference data read from CSV, an append-only log).
rm entities/*.yaml
cp "$repo/tests/schemas/library/"*.yaml entities/
echo "generated project looks right; its entities replaced; building and testing it"
cargo test --workspace
cargo run --quiet --bin worker -- entities
# And the generator's kitchen sink: every type, nested paths, coalesce, constants, Json fields.
rm entities/*.yaml
cp "$repo/codegen/tests/fixtures/kitchen_sink/"*.yaml entities/
cargo test --test entities
# Fields computed by the project's own functions (src/transforms.rs), named from its YAML.
rm entities/*.yaml
cp "$repo/codegen/tests/fixtures/hl7/"*.yaml entities/
cargo test --test entities
# The schema ledger: recorded by nomnom-schema, then a narrowing refused at cargo build naming
# its YAML line; the recorded shape builds again.
cargo run --quiet -p nomnom-codegen --bin nomnom-schema -- lock
test -f entities.lock
sed -i 's/max_length: 50$/max_length: 5/' entities/b_diagnosis.yaml
if cargo build --quiet 2> ledger.err; then
  echo "a narrowed max_length built against the ledger" >&2
  exit 1
fi
if ! grep -q 'entities/b_diagnosis.yaml:[0-9]*:[0-9]*: breaking schema change' ledger.err; then
  echo "the refused narrowing does not name its YAML line:" >&2
  cat ledger.err >&2
  exit 1
fi
sed -i 's/max_length: 5$/max_length: 50/' entities/b_diagnosis.yaml
cargo build --quiet
rm entities.lock
echo "the ledger refuses a narrowing at cargo build"
# A function the YAML names but the crate lacks: the build fails, and rustc's error quotes the
# constant named after the YAML file and line.
sed -i 's/crate::transforms::hl7_field, args: \["DG1.3.1"\]/crate::transforms::hl7_fild, args: ["DG1.3.1"]/' \
  entities/b_diagnosis.yaml
grep -q 'hl7_fild' entities/b_diagnosis.yaml
line="$(grep -n 'hl7_fild' entities/b_diagnosis.yaml | cut -d: -f1)"
if cargo build --quiet 2> build.err; then
  echo "a transform the crate lacks was built" >&2
  exit 1
fi
if ! grep -qi "B_DIAGNOSIS_YAML_LINE_${line}_CODE" build.err || ! grep -q 'hl7_fild' build.err; then
  echo "the build error does not name the YAML line:" >&2
  cat build.err >&2
  exit 1
fi
echo "a missing transform fails the build naming entities/b_diagnosis.yaml line $line"
