#!/usr/bin/env bash
# Installs the system packages adamllm needs on a Debian/Ubuntu machine (idempotent):
# a Vulkan loader + Mesa's drivers (lavapipe gives wgpu a CPU Vulkan adapter where no GPU is),
# and a C toolchain for crates that build C code. Rust itself comes from rustup.
# `--browser` adds what the browser page's tests need: Debian's chromium and Node.js with npm.
set -euo pipefail
packages=(mesa-vulkan-drivers libvulkan1 build-essential pkg-config)
if [ "${1:-}" = "--browser" ]; then
  packages+=(chromium)
  command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
fi
need=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from https://rustup.rs first" >&2
  exit 1
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
