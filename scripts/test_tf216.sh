#!/usr/bin/env bash
# The second TensorFlow of the version matrix: builds the wheel against TensorFlow 2.16.2 in a
# venv of its own (.venv-tf216/), installs it there, runs a reduced set of the tests with it,
# and checks that the pinned TensorFlow refuses that library with a message naming both
# versions. Run by scripts/test.sh after the main tests; idempotent, cached in ignored folders.
# `--venv-only` only makes the venv (bench/setup_tf216.sh adds tensorflow-io to it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_CACHE_DIR=$PWD/.tools/pip-cache
export PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv-tf216
TF216="tensorflow-cpu==2.16.2"
log() { printf '\n== TF 2.16: %s (%ss)\n' "$*" "$SECONDS"; }

log "venv with $TF216"
stamp=$VENV/.tf216-requirements
want="$TF216 numpy<2 confluent-kafka==2.16.1 pytest==9.2.0 setuptools>=70 wheel"
if [ ! -x $VENV/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  python3 -m venv $VENV
  $VENV/bin/pip install -q --upgrade pip
  # shellcheck disable=SC2086 # word splitting intended: one requirement per word
  $VENV/bin/pip install -q $want
  echo "$want" >$stamp
fi
[ "${1:-}" = --venv-only ] && exit 0

log "pip wheel against TensorFlow 2.16 (its own cargo target: the flags differ)"
rm -rf target/tf216/wheels
CARGO_TARGET_DIR=$PWD/target/tf216 $VENV/bin/pip wheel -q --no-build-isolation --no-deps \
  -w target/tf216/wheels .
$VENV/bin/pip install -q --no-deps --force-reinstall target/tf216/wheels/kafka_dataset-*.whl

log "reduced test set"
# The classic API and DeepRec example, exact checkpoints (TF1 and TF2), native batches, the
# metadata (ragged headers through batch), the stats, the package (loader, aliases; the wheel
# test builds for the main TF only).
$VENV/bin/python -m pytest -q tests/test_classic.py tests/test_checkpoint.py \
  tests/test_restore_tf2.py tests/test_native_batch.py tests/test_metadata.py tests/test_stats.py \
  tests/test_package.py -k "not pip_wheel"

log "the pinned TensorFlow refuses the 2.16 library, naming both versions"
library=$($VENV/bin/python -c 'import kafka_dataset; print(kafka_dataset.library_path())')
KAFKA_DATASET_LIBRARY=$library .venv/bin/python - <<'PY'
import tensorflow as tf
import kafka_dataset
try:
    kafka_dataset.load_library()
except kafka_dataset.LibraryError as e:
    message = str(e)
    assert "built for TensorFlow 2.16.2" in message and tf.__version__ in message, message
    print("refused:", message)
else:
    raise SystemExit("TensorFlow %s loaded a library built for 2.16.2" % tf.__version__)
PY
log "done"
