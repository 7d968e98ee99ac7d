#!/usr/bin/env bash
# Makes sure a static musl build can run here: the Rust target and musl-gcc (ring compiles C).
# Installs what is missing when it can (rustup; apt-get as root), else names the exact command.
set -euo pipefail
target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "+ rustup target add $target"
  rustup target add "$target" || { echo "run: rustup target add $target" >&2; exit 1; }
fi
if ! command -v musl-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "+ apt-get install musl-tools"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null; }
  else
    echo "musl-gcc is missing; run: sudo apt-get install musl-tools" >&2
    exit 1
  fi
fi
