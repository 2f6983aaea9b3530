#!/usr/bin/env python3
"""The PyTorch reference for adamllm's benchmarks, one entry point for both workloads:

    python3 bench/torch_reference.py train    --model DIR --mode full|lora [...]   (bench/torch_train.py)
    python3 bench/torch_reference.py generate --model DIR [...]                    (bench/torch_generate.py)

Each workload lives in its own script (same configs as `adamllm bench train` / `bench forward`,
timed the same way: warm-up, then the median or mean of the timed steps); this file picks one and
passes the remaining arguments on. `bench/side_by_side.py` runs it next to adamllm.
"""

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = {"train": "torch_train.py", "generate": "torch_generate.py"}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in WORKLOADS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(WORKLOADS)}}} [arguments of that script]")
    script = os.path.join(HERE, WORKLOADS[sys.argv[1]])
    sys.argv = [script] + sys.argv[2:]
    runpy.run_path(script, run_name="__main__")
