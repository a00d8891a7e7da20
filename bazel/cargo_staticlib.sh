#!/usr/bin/env bash
# Run by the //:kafka_dataset_core_a genrule (unsandboxed, local): builds the Rust core as a static
# library with cargo, offline, and copies it to the genrule's output ($1).
#
# The Rust core is built with `cargo rustc --crate-type staticlib` (Cargo.toml keeps rlib+cdylib)
# and without the `tensorflow` feature: Bazel compiles the C++ shim itself. The target directory
# is <repo>/target/bazel (override: $KAFKA_DATASET_CARGO_TARGET_DIR): outside Bazel's output tree,
# so cargo's own incremental cache survives `bazel clean`, and apart from the main target/.
set -euo pipefail
out=$(realpath -m "$1")
manifest=$2
# The execroot links the workspace's top-level entries; resolve one to find the real checkout.
root=$(dirname "$(readlink -f "$manifest")")
cd "$root"

# Bazel runs actions with a reduced environment: find HOME (~/.cargo) and cargo explicitly.
if [ -z "${HOME:-}" ]; then
  HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
  export HOME
fi
cargo=${CARGO:-}
if [ -z "$cargo" ]; then
  cargo=$(command -v cargo || true)
  [ -n "$cargo" ] || cargo=${CARGO_HOME:-$HOME/.cargo}/bin/cargo
fi
[ -x "$cargo" ] || { echo "cargo_staticlib.sh: cargo not found (set --action_env=CARGO=/path/to/cargo)" >&2; exit 1; }
export PATH="$(dirname "$cargo"):$PATH"

export CARGO_TARGET_DIR=${KAFKA_DATASET_CARGO_TARGET_DIR:-$root/target/bazel}
# --offline: every crate is in ~/.cargo/registry already (scripts/setup.sh); nothing is fetched.
"$cargo" rustc --release --lib --locked --offline --quiet --crate-type staticlib
cp -f "$CARGO_TARGET_DIR/release/libkafka_dataset.a" "$out"
