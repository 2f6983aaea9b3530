#!/usr/bin/env bash
# Creates the Python environment the PyTorch reference rows of BENCHMARKS.md are measured in:
# the current torch release from PyPI (what users install today; Debian's torch 1.13 is ~3x
# slower on the CPU), transformers 4.47.1 (the version every port names) and peft. Prints the
# interpreter's path; `bench/torch_train.py` and `bench/torch_generate.py` run under it.
# Usage: bash bench/torch-venv.sh [VENV_DIR]   (default: ~/.cache/adamllm/torch-venv)
set -euo pipefail
venv="${1:-${ADAMLLM_CACHE:-$HOME/.cache/adamllm}/torch-venv}"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3-venv
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  torch 'transformers==4.47.1' peft accelerate pillow >&2
"$venv/bin/python" - >&2 <<'PY'
import torch, transformers, peft
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
PY
echo "$venv/bin/python"
