#!/usr/bin/env bash
# The long mutation run: every reader of core/tests/mutation.rs at SCALE times CI's case counts
# (default 10), one JSON line per reader in bench/results/mutation.jsonl, then a table.
#   bash bench/mutation.sh [SCALE]
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-10}"
report="$PWD/bench/results/mutation.jsonl"
mkdir -p bench/results
rm -f "$report"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# The same build as the test command (a narrower cargo selection resolves other features and
# rebuilds Burn); then the mutation test binary alone.
binary=$(cargo test --workspace --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "mutation" and m.get("executable"):
        print(m["executable"])')
started=$(date +%s)
# A crash fails its reader's test; the table is printed either way and the exit status kept.
status=0
(cd core && ADAMLLM_MUTATION_SCALE="$scale" ADAMLLM_MUTATION_REPORT="$report" \
  "$binary" --test-threads 2 --skip regression_) || status=$?
echo "wall seconds: $(( $(date +%s) - started ))"
python3 - "$report" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| reader | cases | ok | errors | errors naming the file | crashes | seconds |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in sorted(rows, key=lambda r: r["reader"]):
    print(f"| {r['reader']} | {r['cases']} | {r['ok']} | {r['errors']} | {r['errors_naming_file']} | {r['crashes']} | {r['seconds']} |")
total = {k: sum(r[k] for r in rows) for k in ("cases", "ok", "errors", "errors_naming_file", "crashes")}
print(f"| **all {len(rows)} readers** | {total['cases']} | {total['ok']} | {total['errors']} | {total['errors_naming_file']} | {total['crashes']} | {sum(r['seconds'] for r in rows):.0f} |")
PY
exit "$status"
