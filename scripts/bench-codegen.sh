#!/usr/bin/env bash
# Benchmark (not a test): incremental `cargo build` time after a one-field YAML edit, for a
# 50-entity schema with 20 fields each. Copies this crate to a scratch directory, replaces
# entities/ with the generated schema, builds once (warm-up), edits one field of one entity and
# times the rebuild of both binaries. Usage: scripts/bench-codegen.sh [ENTITIES] [FIELDS]
set -euo pipefail
cd "$(dirname "$0")/.."
entities=${1:-50}
fields=${2:-20}
work=${BENCH_DIR:-target/bench-codegen}
mkdir -p "$work/crate"
rsync -a --delete --exclude target --exclude .git --exclude entities ./ "$work/crate/"
rm -rf "$work/crate/entities" && mkdir -p "$work/crate/entities"
python3 - "$work/crate/entities" "$entities" "$fields" <<'PY'
import sys
out, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
types = ["String", "Integer", "BigInt", "Decimal", "Date", "Boolean", "Float", "DateTime", "Uuid", "Json"]
for e in range(n):
    lines = [f"entity:\n  name: Entity{e:02d}\n  source_type: root\n  fields:\n"]
    lines.append("    - name: key\n      type: String\n      max_length: 64\n")
    for f in range(1, m):
        t = types[f % len(types)]
        lines.append(f"    - name: field_{f:02d}\n      type: {t}\n      nullable: {'true' if f % 3 == 0 else 'false'}\n")
    lines.append(f"  persistence:\n    database:\n      conformant_table: entity_{e:02d}\n      unicity_fields: [key]\n")
    open(f"{out}/entity_{e:02d}.yaml", "w").write("".join(lines))
PY
export CARGO_TARGET_DIR="$PWD/$work/target"
cd "$work/crate"
echo "schema: $entities entities x $fields fields"
start=$(date +%s.%N)
cargo build --bin api --bin worker 2>&1 | tail -n 1
cold=$(echo "$(date +%s.%N) - $start" | bc)
# Touch-only rebuild: build.rs reruns, finds identical output, nothing else recompiles.
touch entities/entity_25.yaml
start=$(date +%s.%N)
cargo build --bin api --bin worker 2>&1 | tail -n 1
touch_only=$(echo "$(date +%s.%N) - $start" | bc)
# One-field edit: Integer -> BigInt of one field in one entity.
sed -i '0,/type: Integer/s//type: BigInt/' entities/entity_25.yaml
start=$(date +%s.%N)
cargo build --bin api --bin worker 2>&1 | tail -n 1
edit=$(echo "$(date +%s.%N) - $start" | bc)
# The same edit without the generated diesel `table!` definitions (feature `diesel-schema`).
cargo build --no-default-features --bin api --bin worker 2>&1 | tail -n 1
sed -i '0,/type: BigInt/s//type: Integer/' entities/entity_25.yaml
start=$(date +%s.%N)
cargo build --no-default-features --bin api --bin worker 2>&1 | tail -n 1
edit_lean=$(echo "$(date +%s.%N) - $start" | bc)
printf 'first build (deps cached or not): %.1f s\n' "$cold"
printf 'rebuild after touching a YAML file (no change): %.1f s\n' "$touch_only"
printf 'incremental build after a one-field YAML edit: %.1f s (target <= 30 s)\n' "$edit"
printf 'same edit with --no-default-features (no diesel table!): %.1f s\n' "$edit_lean"
