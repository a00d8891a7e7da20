#!/usr/bin/env bash
# Builds libkafka_dataset.so with Bazel (Debian's bazel-bootstrap 4.2.3, offline: WORKSPACE, BUILD,
# bazel/), then loads it into the project's TensorFlow and reads messages from a real broker.
#
#   bash scripts/bazel_build.sh          # prints the path of the Bazel-built library at the end
#
# Needs what scripts/setup.sh installs (.venv with TensorFlow, the crates in ~/.cargo/registry,
# Apache Kafka from .tools/ or $KAFKA_BOOTSTRAP_SERVERS). Bazel's output base and the convenience symlinks
# live in .tools/ (git-ignored); cargo's cache for this build in target/bazel. Environment:
#   KAFKA_DATASET_PYTHON  the Python whose TensorFlow to build against (default .venv/bin/python)
#   BAZEL                 the bazel binary (default: bazel from bazel-bootstrap)
#   BAZEL_TIMEOUT         seconds allowed for `bazel build` (default 840)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

log "bazel (Debian bazel-bootstrap)"
BAZEL=${BAZEL:-bazel}
if ! command -v "$BAZEL" >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q bazel-bootstrap
fi

PYTHON_TF=${KAFKA_DATASET_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON_TF" ] || { echo "no $PYTHON_TF: run scripts/setup.sh first (or set KAFKA_DATASET_PYTHON)" >&2; exit 1; }

startup=(
  --output_user_root="$ROOT/.tools/bazel-root"
  # A warm rebuild within 10 minutes reuses the server; it does not linger for hours after CI.
  --max_idle_secs=600
)
flags=(
  -c opt
  --symlink_prefix=.tools/bazel-
  --repo_env=KAFKA_DATASET_PYTHON="$PYTHON_TF"
  # /etc/bazel/bazelrc of bazel-bootstrap turns on --sandbox_debug, which floods the log.
  --nosandbox_debug
  --color=no
  --curses=no
  --show_progress_rate_limit=30
)
# The cargo genrule runs with Bazel's action environment: hand it non-default Rust locations.
for var in CARGO CARGO_HOME RUSTUP_HOME RUSTUP_TOOLCHAIN; do
  [ -z "${!var:-}" ] || flags+=(--action_env="$var")
done

log "bazel build //:libkafka_dataset.so (Rust core via cargo --offline, shim via Bazel)"
timeout "${BAZEL_TIMEOUT:-840}" "$BAZEL" "${startup[@]}" build "${flags[@]}" //:libkafka_dataset.so
LIB=$ROOT/.tools/bazel-bin/libkafka_dataset.so
[ -f "$LIB" ] || { echo "bazel build succeeded but $LIB is missing" >&2; exit 1; }

log "exported symbols: none (statically linked OpenSSL, librdkafka, Rust std stay local)"
# Defined GLOBAL/WEAK dynamic symbols other than the linker's own. (gold lists the archives'
# thread-locals in .dynsym as LOCAL HIDDEN: not exported, not counted.)
exported=$(readelf -W --dyn-syms "$LIB" | awk '$5 == "GLOBAL" || $5 == "WEAK"' | awk '$7 != "UND"' |
  awk '{print $8}' | grep -v -x -E '_end|_edata|__bss_start|_init|_fini' || true)
if [ -n "$exported" ]; then
  echo "libkafka_dataset.so exports symbols; everything must stay local (DESIGN.md §5):" >&2
  echo "$exported" | head -20 >&2
  exit 1
fi

log "load into TensorFlow and read from a real broker"
KAFKA_DATASET_LIBRARY=$LIB PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=2 \
  timeout 300 "$PYTHON_TF" - <<'PY'
import os

import tensorflow as tf

import kafka_dataset
from kafka_dataset import testing

lib = kafka_dataset.library_path()
assert lib == os.environ["KAFKA_DATASET_LIBRARY"], lib
built = kafka_dataset.built_for_tensorflow()
assert built == tf.__version__, "built for %r, running %s" % (built, tf.__version__)
ops = kafka_dataset.load_library()
assert hasattr(ops, "kd_kafka_dataset"), dir(ops)

with testing.broker_from_env_or_start() as broker:
    topic = testing.create_topic(broker.bootstrap, testing.unique_name("bazel"), partitions=2)
    # (partition, value, key, CreateTime ms): the merge must interleave the partitions by time.
    testing.produce(
        broker.bootstrap,
        topic,
        [(0, b"first", None, 1000), (0, b"third", None, 3000), (1, b"second", None, 2000)],
    )
    ds = kafka_dataset.KafkaDataset(
        ["%s:0:0:-1" % topic, "%s:1:0:-1" % topic], servers=broker.bootstrap, eof=True
    )
    values = [v.numpy() for v in ds]
    assert values == [b"first", b"second", b"third"], values
print("OK: %s (built for TensorFlow %s) read %r from %s" % (lib, built, values, broker.bootstrap))
PY
log "done: $LIB"
