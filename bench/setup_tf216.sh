#!/usr/bin/env bash
# Second TensorFlow for the benchmark's tensorflow-io comparison (issue 4 (e)): the TF 2.16.2
# venv of scripts/test_tf216.sh (.venv-tf216/) plus tensorflow-io 0.37.1 (its last release),
# and libkafka_dataset.so built against TF 2.16 (a .so built for one TF minor does not load in
# another). Idempotent; all in git-ignored folders: .venv-tf216/ and target/tf216/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_CACHE_DIR=$PWD/.tools/pip-cache
export PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv-tf216
bash scripts/test_tf216.sh --venv-only
if ! $VENV/bin/python -c 'import tensorflow_io' 2>/dev/null; then
  $VENV/bin/pip install -q tensorflow-io==0.37.1
fi
PYTHON=$PWD/$VENV/bin/python CARGO_TARGET_DIR=target/tf216 \
  cargo build --release --quiet --features tensorflow --lib
echo "$PWD/target/tf216/release/libkafka_dataset.so"
