#!/usr/bin/env bash
# Builds the browser page: the adamllm-web crate for wasm32 (release speed, stripped), then
# wasm-bindgen's JS glue into web/www/pkg/. Works on a fresh machine with rustup: it adds the
# wasm32 target and installs wasm-bindgen-cli at exactly the version in Cargo.lock (cached).
# Serve web/www/ with any static file server afterwards, e.g.
#   python3 -m http.server -d web/www 8080   →   http://127.0.0.1:8080/
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
cache="${ADAMLLM_CACHE:-$HOME/.cache/adamllm}"

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
fi

version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$version" ] || { echo "web/build.sh: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
bindgen="$cache/wasm-bindgen-$version/bin/wasm-bindgen"
if [ ! -x "$bindgen" ]; then
  # Not --locked: one of the CLI's locked dependencies is missing from some registry mirrors.
  cargo install wasm-bindgen-cli --version "$version" --root "$cache/wasm-bindgen-$version"
fi

cargo build -p adamllm-web --target wasm32-unknown-unknown --profile wasm
wasm="$target_dir/wasm32-unknown-unknown/wasm/adamllm_web.wasm"
rm -rf web/www/pkg
"$bindgen" --target web --no-typescript --out-dir web/www/pkg "$wasm"

raw=$(stat -c %s web/www/pkg/adamllm_web_bg.wasm)
gz=$(gzip -9 -c web/www/pkg/adamllm_web_bg.wasm | wc -c)
echo "web/www/pkg/adamllm_web_bg.wasm: $raw bytes ($((raw / 1024 / 1024)) MiB), gzip -9: $gz bytes ($((gz / 1024 / 1024)) MiB)"
