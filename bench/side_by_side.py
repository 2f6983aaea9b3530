#!/usr/bin/env python3
"""One command for BENCHMARKS.md's side-by-side table: adamllm against PyTorch on this machine.

For each preset it writes a random-weight model folder with `adamllm init`, then runs, one after
the other on the same folder:
  - training, full and LoRA: `adamllm bench train` and `bench/torch_reference.py train` (same workload:
    4 random sequences of 256 tokens, AdamW, clipping at 1.0; same warm-up and timed steps);
  - generation: `adamllm bench forward` and `bench/torch_reference.py generate` (same 176-token prompt with
    one image, prefill then a greedy KV-cache decode).
It prints a markdown table (ours ÷ PyTorch for tokens/s, and for peak memory in training) headed
with the machine and date, and writes the raw rows as JSON lines.

Usage: python3 bench/side_by_side.py [--adamllm PATH] [--presets tiny,small] [--out FILE.jsonl]
Needs Debian's python3-torch and pip transformers==4.47.1 / peft (see bench/torch_train.py).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# Timed steps per preset (warm-up, timed): small steps take seconds on 2 cores.
STEPS = {"tiny": (3, 10), "small": (1, 3), "qwen2vl-2b": (1, 2)}


def json_lines(text):
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def run(cmd):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return json_lines(done.stdout)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def default_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "adamllm")
        if os.path.exists(path):
            return path
    return "adamllm"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adamllm", default=default_binary(), help="the adamllm binary")
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                    else sys.executable, help="the Python that has torch (Debian's python3-torch)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "side-by-side.jsonl"))
    args = ap.parse_args()
    python = args.python
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            folder = os.path.join(tmp, preset)
            subprocess.run(
                [args.adamllm, "init", "--preset", preset, "--out", folder],
                check=True, capture_output=True,
            )
            warmup, steps = STEPS.get(preset, (1, 3))
            for mode in ("full", "lora"):
                ours = run([args.adamllm, "bench", "train", "--presets", preset, "--modes", mode,
                            "--devices", "cpu", "--warmup", str(warmup), "--steps", str(steps)])
                theirs = run([python, os.path.join(HERE, "torch_reference.py"), "train", "--model", folder,
                              "--mode", mode, "--warmup-steps", str(warmup), "--steps", str(steps),
                              "--threads", str(args.threads)])
                for r in ours + theirs:
                    r.update(preset=preset, mode=mode, bench="train")
                    rows.append(r)
            ours = run([args.adamllm, "bench", "forward", "--presets", preset, "--devices", "cpu"])
            theirs = run([python, os.path.join(HERE, "torch_reference.py"), "generate", "--model", folder,
                          "--threads", str(args.threads)])
            for r in ours:
                r["framework"] = "adamllm"
            for r in ours + theirs:
                r.update(preset=preset, bench="forward")
                rows.append(r)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")

    def pick(bench, preset, framework, mode=None):
        for r in rows:
            if (r["bench"], r["preset"], r.get("framework")) == (bench, preset, framework) and (
                mode is None or r.get("mode") == mode
            ):
                return r
        return {}

    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}; date {datetime.date.today().isoformat()}; adamllm on flex, "
          f"PyTorch {pick('train', args.presets.split(',')[0], 'pytorch', 'full').get('torch', '?')} "
          f"on {args.threads} threads.\n")
    print("| preset | job | adamllm tok/s | PyTorch tok/s | speed ratio | adamllm peak MiB | "
          "PyTorch peak MiB | memory ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for preset in args.presets.split(","):
        for mode in ("full", "lora"):
            a, t = pick("train", preset, "adamllm", mode), pick("train", preset, "pytorch", mode)
            print(f"| {preset} | train {mode} | {a.get('tokens_per_s', 0):,.1f} | "
                  f"{t.get('tokens_per_s', 0):,.1f} | {ratio(a.get('tokens_per_s'), t.get('tokens_per_s'))} | "
                  f"{a.get('peak_rss_mib', 0):,.0f} | {t.get('peak_rss_mib', 0):,.0f} | "
                  f"{ratio(a.get('peak_rss_mib'), t.get('peak_rss_mib'))} |")
        a, t = pick("forward", preset, "adamllm"), pick("forward", preset, "pytorch")
        for phase in ("prefill", "decode"):
            key = f"{phase}_tokens_per_s"
            print(f"| {preset} | {phase} | {a.get(key, 0):,.1f} | {t.get(key, 0):,.1f} | "
                  f"{ratio(a.get(key), t.get(key))} | | | |")
    print(f"\nRaw rows: {os.path.relpath(args.out, os.path.join(HERE, '..'))}")


if __name__ == "__main__":
    main()
