#!/usr/bin/env bash
# Builds libkafka_dataset.so at another git revision (default: HEAD~1), against the same
# TensorFlow as this checkout's .venv, for a before/after comparison in one benchmark run:
#   bash bench/baseline.sh REV && .venv/bin/python bench/run.py --only small --baseline target/baseline/libkafka_dataset.so
# The revision is checked out in a temporary git worktree; its build reuses a copy of this
# checkout's compiled dependencies (target/) and lands in target/baseline/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REV=${1:-HEAD~1}
WORK=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WORK/tree" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git worktree add --detach "$WORK/tree" "$REV" >/dev/null
if [ -d target/release ]; then
  mkdir -p "$WORK/tree/target"
  cp -a target/release "$WORK/tree/target/"
fi
(cd "$WORK/tree" && PYTHON="$ROOT/.venv/bin/python" cargo build --release --quiet --features tensorflow --lib)
mkdir -p target/baseline
cp "$WORK/tree/target/release/libkafka_dataset.so" target/baseline/
echo "$(git rev-parse --short "$REV") -> $ROOT/target/baseline/libkafka_dataset.so"
