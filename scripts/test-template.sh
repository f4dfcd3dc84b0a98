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

# A rolling upgrade, first half (the second is at the end): the binaries of this schema (shape
# N-1) accept books into JetStream that no worker takes yet, and dead-letter one the database
# refuses; the ledger records the shape.
export NOMNOM_ENV_FILE=none NATS_URL=nats://127.0.0.1:4222 METRICS_PORT=0 ADMIN_PORT=0 RUST_LOG=warn
drain_id="$(date +%s)$$"
export NATS_STREAM="DRAIN_$drain_id" NATS_CONSUMER="c_$drain_id"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/drain_$drain_id?sslmode=disable"
export WORKER_METRICS_PORT=$((20000 + RANDOM % 20000)) PORT=$((20000 + RANDOM % 20000))
# The binaries this part starts stop with the script, whatever happens.
trap 'kill ${worker_pid:-} ${api_pid:-} 2>/dev/null || true' EXIT
psql_drain() { psql -q -At -h 127.0.0.1 -U postgres -d "drain_$drain_id" -v ON_ERROR_STOP=1 -c "$1"; }
wait_for() { # DESCRIPTION SHELL-CONDITION (evaluated each time): up to 60 s
  for _ in $(seq 1 300); do eval "$2" >/dev/null 2>&1 && return 0; sleep 0.2; done
  local what="$1"
  echo "gave up waiting: $what" >&2; tail -n 20 drain-*.log >&2; return 1
}
book() { # ISBN TITLE
  printf '{"isbn":"%s","title":"%s","authors":["A. Writer"],"published_on":"2020-01-0%s","edition":2,"list_price":"10.50","in_print":true,"copies":[{"barcode":"B-%s","location":{"shelf":"S1"},"acquired_at":"2020-02-01T10:00:00Z"}]}' \
    "$1" "$2" "${1: -1}" "$1"
}
post_book() {
  test "$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary "$(book "$1" "$2")" "http://127.0.0.1:$PORT/ingest/message/book")" = 202
}
cargo run --quiet -p nomnom-codegen --bin nomnom-schema -- lock
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"
"$bin/worker" > drain-worker-old.log 2>&1 & worker_pid=$!
wait_for "the old worker's tables" 'psql_drain "SELECT 1 FROM books LIMIT 0"'
psql_drain "ALTER TABLE books ADD CONSTRAINT not_a_draft CHECK (title <> 'DRAFT')"
"$bin/api" > drain-api-old.log 2>&1 & api_pid=$!
wait_for "the old api" 'curl -sf "http://127.0.0.1:$PORT/ready"'
post_book 9780000000001 DRAFT
wait_for "the draft dead-lettered" 'test "$(psql_drain "SELECT count(*) FROM dead_letters")" = 1'
kill "$worker_pid"; wait "$worker_pid" || true
for n in 2 3 4; do post_book "978000000000$n" "Title $n"; done
kill "$api_pid"; wait "$api_pid" || true
test "$(psql_drain "SELECT count(*) FROM books")" = 0
cp entities.lock drain-entities.lock
rm entities.lock
echo "shape N-1: three books wait in JetStream, one is dead-lettered"
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

# The rolling upgrade's second half: shape N renames `title` (renamed_from), widens `edition`
# (Integer -> BigInt) and adds a nullable field. cargo build notes each change against the
# ledger of N-1; the new worker applies them and drains what N-1 accepted, then the dead letter
# is replayed: every book stored, none dead-lettered.
rm entities/*.yaml
cp "$repo/tests/schemas/library/"*.yaml entities/
cp drain-entities.lock entities.lock
python3 - entities/book.yaml <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
for old, new in [
    ("    - name: title\n      type: String\n",
     "    - name: name\n      type: String\n      renamed_from: title\n"
     "    - name: subtitle\n      type: String\n      nullable: true\n"),
    ("    - name: edition\n      type: Integer\n", "    - name: edition\n      type: BigInt\n"),
]:
    assert old in text, old
    text = text.replace(old, new)
open(path, "w").write(text)
PY
cargo build --bin api --bin worker 2> drain-build.err || { cat drain-build.err >&2; exit 1; }
for note in "declared schema change" "safe schema change"; do
  grep -q "entities/book.yaml:[0-9]*:[0-9]*: $note" drain-build.err \
    || { echo "cargo build did not note a $note:" >&2; cat drain-build.err >&2; exit 1; }
done
psql_drain "ALTER TABLE books DROP CONSTRAINT not_a_draft"
"$bin/worker" > drain-worker-new.log 2>&1 & worker_pid=$!
wait_for "the three books drained" 'test "$(psql_drain "SELECT count(*) FROM books")" = 3'
"$bin/worker" dead-letters replay > drain-replay.out
wait_for "the replayed draft stored" 'test "$(psql_drain "SELECT count(*) FROM books")" = 4'
test "$(psql_drain "SELECT string_agg(name, ',' ORDER BY isbn) FROM books")" = "DRAFT,Title 2,Title 3,Title 4"
test "$(psql_drain "SELECT count(*) FROM book_copies")" = 4
test "$(psql_drain "SELECT data_type FROM information_schema.columns WHERE table_name = 'books' AND column_name = 'edition'")" = bigint
test "$(psql_drain "SELECT count(*) FROM dead_letters")" = 0
# And a book of shape N, through the new api: its new name and its new field stored.
"$bin/api" > drain-api-new.log 2>&1 & api_pid=$!
wait_for "the new api" 'curl -sf "http://127.0.0.1:$PORT/ready"'
test "$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
  --data-binary "$(book 9780000000005 'Title 5' | sed 's/"title"/"name"/; s/^{/{"subtitle":"Five",/')" \
  "http://127.0.0.1:$PORT/ingest/message/book")" = 202
wait_for "the shape-N book stored" 'test "$(psql_drain "SELECT count(*) FROM books")" = 5'
test "$(psql_drain "SELECT name || '/' || subtitle FROM books WHERE isbn = '9780000000005'")" = "Title 5/Five"
kill "$api_pid"; wait "$api_pid" || true
kill "$worker_pid"; wait "$worker_pid" || true
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS drain_$drain_id WITH (FORCE)"
rm entities.lock
echo "shape N drained what N-1 accepted, replayed what it dead-lettered and stored its own: 5 books, 0 dead letters"
