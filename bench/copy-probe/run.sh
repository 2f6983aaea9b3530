#!/usr/bin/env bash
# The copy probe (see make_data.py): tunes the demo's general base model to repeat a word
# from its prompt, then scores exact matches on words it was and was not tuned on.
#
#   bench/copy-probe/run.sh DEMO_DIR OUT_DIR
#
# DEMO_DIR is a finished `adamllm demo` folder (its data/general-train and runs/base/model
# are used). Needs python3 and the adamllm binary ($ADAMLLM_BIN, else `adamllm` on PATH).
# Writes OUT_DIR/results.jsonl: one line per (training, test set). About 20 minutes on two
# CPU cores.
set -euo pipefail
demo=${1:?usage: run.sh DEMO_DIR OUT_DIR}
out=${2:?usage: run.sh DEMO_DIR OUT_DIR}
bin=${ADAMLLM_BIN:-adamllm}
here=$(cd "$(dirname "$0")" && pwd)
base="$demo/runs/base/model"
[ -f "$base/config.json" ] || { echo "$base: no model (run adamllm demo first)" >&2; exit 1; }
python3 "$here/make_data.py" "$demo" "$out"
pixels=(--image-min-pixels 12544 --image-max-pixels 12544)
results="$out/results.jsonl"
: >"$results"

# train NAME FROM DATA EPOCHS LR: full tuning, batch 8, the demo's 112x112 images.
train() {
  "$bin" train --model "$2" --data "$out/$3" --out "$out/$1" --finetuning-type full \
    --num-train-epochs "$4" --learning-rate "$5" --per-device-train-batch-size 8 \
    "${pixels[@]}" --device cpu >"$out/$1.log" 2>&1
}

# score NAME TEST: exact match of the tuned model on one test set, appended to results.
score() {
  "$bin" eval --model "$out/$1/model" --task "$out/copy.yaml" --data "$out/$2-test.jsonl" \
    --out "$out/$1-eval-$2" --batch-size 8 --min-pixels 12544 --max-pixels 12544 \
    --device cpu >/dev/null 2>&1
  python3 - "$out" "$1" "$2" >>"$results" <<'EOF'
import json, sys
out, run, test = sys.argv[1:]
result = json.load(open(f"{out}/{run}-eval-{test}/results.json"))
log = [l for l in open(f"{out}/{run}.log") if l.startswith("{")]
trained = json.loads(log[-1]) if log else {}
print(json.dumps({"training": run, "steps": trained.get("steps"),
                  "final_loss": trained.get("final_loss"), "test": test,
                  "exact_match": result["exact_match"], "examples": result["examples"]}))
EOF
  tail -n 1 "$results"
}

train nouns "$base" nouns-train.json 2 4e-3
score nouns seen
score nouns nouns
train pseudo "$base" pseudo-train.json 3 3e-3
score pseudo pseudo
score pseudo nouns
# Three more epochs on twice as many fresh made-up words: does copying appear with steps?
train pseudo-longer "$out/pseudo/model" pseudo-more-train.json 3 2e-3
score pseudo-longer pseudo
score pseudo-longer nouns
