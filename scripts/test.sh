#!/usr/bin/env bash
# The test command. With no stage (or --full) it is what CI runs: sets everything up
# (scripts/setup.sh), runs the style checks, the Rust tests (core, C ABI, librdkafka mock
# cluster), the Python tests against a real local broker (Apache Kafka, started by the tests
# themselves; $KAFKA_BOOTSTRAP_SERVERS points them at another cluster instead), the examples,
# the second TensorFlow of the version matrix and the Bazel build (KAFKA_DATASET_SKIP_TF216=1 /
# KAFKA_DATASET_SKIP_BAZEL=1 skip those two). Other arguments go to pytest.
#
# Stages for a contributor's inner loop (docs/design.md, "Working on it"):
#   --rust          the Rust tests only (no TensorFlow, no broker to start)
#   --py [ARGS]     rebuild and reinstall the library (incremental), then pytest ARGS
#                   (default: the whole suite), e.g. --py tests/test_restore_exact.py -x
#   --style         the style checks only
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
CBINDGEN_VERSION=0.29.0

stage=full
case "${1:-}" in
  --full | --rust | --py | --style) stage=${1#--}; shift ;;
esac

style() {
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
}

rust_tests() {
  log "Rust tests"
  cargo test --release --locked --features test-hooks
}

python_tests() {
  log "Python tests"
  .venv/bin/python -m pytest tests -q "$@"
}

case $stage in
  rust)
    rust_tests
    exit
    ;;
  style)
    [ -x .venv/bin/ruff ] || bash scripts/setup.sh
    style
    exit
    ;;
  py)
    if [ -x .venv/bin/python ]; then
      log "rebuild and reinstall the library"
      .venv/bin/pip install -q --no-build-isolation --no-deps --force-reinstall .
    else
      bash scripts/setup.sh
    fi
    if (($#)); then
      log "Python tests: $*"
      .venv/bin/python -m pytest -q "$@"
    else
      python_tests
    fi
    exit
    ;;
esac

bash scripts/setup.sh
style
rust_tests
python_tests "$@"

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
