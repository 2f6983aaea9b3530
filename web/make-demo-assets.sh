#!/usr/bin/env bash
# Regenerates the page's built-in demo (web/www/demo/): `adamllm demo` (seed 0, full scale,
# both domains; pass a folder holding an earlier run/ to reuse its finished stages) and its food
# domain gives the post-trained model (paper method), the synthesizer and the
# judge, 16 rows of its Food101-style test benchmark with their images, and one image-caption
# pair for the synthesis panel. Run it from anywhere; it needs a built `adamllm` (cargo) and
# python3 (to write the manifest). The outputs are committed, so CI and users need neither.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/web/www/demo"
work="${1:-$(mktemp -d)}"  # holds run/ (the demo folder)
rows=16
cd "$root"
# ADAMLLM_BIN: an already built `adamllm` (default: cargo run).
${ADAMLLM_BIN:-cargo run --quiet -p adamllm-cli --} demo --seed 0 --out "$work/run"
run="$work/run"
rm -rf "$out"
mkdir -p "$out/benchmark/images"
for role in model synthesizer judge; do
  case "$role" in
    model) src="$run/runs/food-paper_method/model" ;;
    *) src="$run/runs/$role/model" ;;
  esac
  mkdir -p "$out/$role"
  for f in config.json generation_config.json model.safetensors preprocessor_config.json tokenizer.json tokenizer_config.json; do
    [ -f "$src/$f" ] && cp "$src/$f" "$out/$role/"
  done
done
python3 - "$run" "$out" "$rows" <<'PY'
import json, os, shutil, sys
run, out, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
test = os.path.join(run, "data", "food-test")
lines = open(os.path.join(test, "food_dish.jsonl")).read().splitlines()[:rows]
images = []
for line in lines:
    image = json.loads(line)["image"]
    shutil.copy(os.path.join(test, image), os.path.join(out, "benchmark", image))
    images.append("benchmark/" + image)
open(os.path.join(out, "benchmark", "food_dish.jsonl"), "w").write("\n".join(lines) + "\n")
shutil.copy(os.path.join(test, "food_dish.yaml"), os.path.join(out, "benchmark", "food_dish.yaml"))
sample = None
for line in open(os.path.join(run, "runs", "food", "filtered_task_pairs.jsonl")):
    row = json.loads(line)
    if row.get("consistency") == "yes":
        sample = row
        break
caption = next(m["content"] for m in sample["messages"] if m["role"] == "assistant")
shutil.copy(os.path.join(run, "data", "food-train", sample["images"][0]), os.path.join(out, "sample.png"))
def files(role):
    return sorted(os.listdir(os.path.join(out, role)))
manifest = {
    "about": "adamllm demo, food domain, seed 0: regenerate with web/make-demo-assets.sh",
    "models": {role: {"name": f"demo-{role}", "files": [f"{role}/{f}" for f in files(role)]}
               for role in ["model", "synthesizer", "judge"]},
    "benchmark": {
        "file": "benchmark/food_dish.jsonl",
        "task_file": "benchmark/food_dish.yaml",
        "images": images,
        "min_pixels": 112 * 112,
        "max_pixels": 112 * 112,
    },
    "synthesis_sample": {"image": "sample.png", "caption": caption},
}
json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"), indent=2)
open(os.path.join(out, "manifest.json"), "a").write("\n")
PY
du -sh "$out"
