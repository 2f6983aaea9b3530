#!/usr/bin/env bash
# Sharded synthesis on this machine: one `adamllm synthesize` process against the same job split
# into N shards run side by side with `xargs -P N`, then `adamllm merge`; the merged file must
# equal the one-process file byte for byte. One JSON line per run in bench/results/shards.jsonl.
#   bash bench/shards.sh [PRESET] [ROWS] [SHARDS] [MAX_NEW_TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-small}"; rows="${2:-16}"; shards="${3:-2}"; tokens="${4:-64}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/adamllm-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# The test command's build (dev profile: Burn and every dependency at opt-level 3, our crates
# at 1); a release build of Burn is another 40 minutes on 2 cores.
cargo build -p adamllm-cli >&2
bin="$CARGO_TARGET_DIR/debug/adamllm"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
report="$PWD/bench/results/shards.jsonl"
"$bin" init --preset "$preset" --out "$work/model" >/dev/null
# One fixture picture under several captions (random weights write the whole budget anyway).
cp tests/fixtures/qwen2vl/cfg_a/one_image_0.png "$work/slide.png"
for i in $(seq 0 $((rows - 1))); do
  printf '{"images": ["slide.png"], "messages": [{"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": "Slide %d: %d round cells beside a pale duct."}]}\n' "$i" "$((i + 2))"
done > "$work/pairs.jsonl"
args=(synthesize --synthesizer "$work/model" --data "$work/pairs.jsonl" --batch-size 8
      --max-new-tokens "$tokens" --device cpu)
seconds() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.2f}")' "$1"; }

start=$(python3 -c 'import time; print(time.time())')
"$bin" "${args[@]}" --out "$work/one" >/dev/null 2>&1
one=$(seconds "$start")

start=$(python3 -c 'import time; print(time.time())')
seq 0 $((shards - 1)) | xargs -P "$shards" -I{} \
  "$bin" "${args[@]}" --out "$work/sharded" --shard "{}/$shards" >/dev/null 2>&1
"$bin" merge "$work/sharded" >/dev/null 2>&1
sharded=$(seconds "$start")

cmp "$work/one/syn_task_triplets.jsonl" "$work/sharded/syn_task_triplets.jsonl"
version=$("$bin" --version | awk '{print $2}')
python3 - "$report" "$preset" "$rows" "$shards" "$tokens" "$one" "$sharded" "$version" <<'PY'
import json, sys, datetime
report, preset, rows, shards, tokens, one, sharded, version = sys.argv[1:]
rows, shards, tokens, one, sharded = int(rows), int(shards), int(tokens), float(one), float(sharded)
common = {"bench": "shards", "build": "dev profile", "preset": preset, "rows": rows, "max_new_tokens": tokens,
          "device": "cpu (flex)", "adamllm": version, "date": str(datetime.date.today())}
lines = [dict(common, processes=1, seconds=one, images_per_s=rows / one),
         dict(common, processes=shards, seconds=sharded, images_per_s=rows / sharded,
              merged_equals_one_process=True)]
with open(report, "a") as f:
    for line in lines:
        f.write(json.dumps(line) + "\n")
print("| processes | seconds (merge included) | images/s | vs 1 process |")
print("| ---: | ---: | ---: | ---: |")
for line in lines:
    print(f"| {line['processes']} | {line['seconds']:.1f} | {line['images_per_s']:.2f} | {one / line['seconds']:.2f}× |")
PY
