#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), runs the style checks, the Rust tests (core, C ABI,
# librdkafka mock cluster), the Python tests against a real local broker (Apache Kafka, started by
# the tests themselves; $KAFKA_BOOTSTRAP_SERVERS points them at another cluster instead), the
# examples, the second TensorFlow of the version matrix and the Bazel build
# (KAFKA_DATASET_SKIP_TF216=1 / KAFKA_DATASET_SKIP_BAZEL=1 skip those two). Arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
CBINDGEN_VERSION=0.29.0

log "cbindgen $CBINDGEN_VERSION (C header generator; the header is checked, not needed to build)"
if ! .tools/cbindgen/bin/cbindgen --version 2>/dev/null | grep -q "$CBINDGEN_VERSION"; then
  cargo install cbindgen --locked --version "$CBINDGEN_VERSION" --root .tools/cbindgen
fi

log "style: rustfmt, clippy, clang-format, ruff, generated header"
cargo fmt --check
cargo clippy --release --locked --all-targets -- -D warnings
clang-format --style=file --dry-run --Werror cc/*.cc
.venv/bin/ruff format --check python tests examples bench setup.py
.venv/bin/ruff check python tests examples bench setup.py
.tools/cbindgen/bin/cbindgen --quiet --config cbindgen.toml --crate kafka_dataset -o target/kafka_dataset.h
diff -u include/kafka_dataset.h target/kafka_dataset.h || {
  echo "include/kafka_dataset.h is stale: regenerate it with .tools/cbindgen/bin/cbindgen --config cbindgen.toml --crate kafka_dataset -o include/kafka_dataset.h" >&2
  exit 1
}

log "Rust tests"
cargo test --release --locked --features test-hooks

log "Python tests"
.venv/bin/python -m pytest tests -q "$@"

log "examples"
bash scripts/examples.sh

if [ "${KAFKA_DATASET_SKIP_TF216:-0}" != 1 ]; then
  log "TensorFlow 2.16.2: wheel, reduced test set, version check"
  bash scripts/test_tf216.sh
fi

if [ "${KAFKA_DATASET_SKIP_BAZEL:-0}" != 1 ]; then
  log "Bazel 4.2.3 build of the library, loaded into TensorFlow"
  bash scripts/bazel_build.sh
fi
log "all tests passed"
