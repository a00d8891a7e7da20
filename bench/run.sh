#!/usr/bin/env bash
# The benchmark in one command from a fresh clone: installs what it needs (scripts/setup.sh,
# the TensorFlow 2.16.2 + tensorflow-io venv, tcmalloc, matplotlib), then runs bench/run.py.
# Arguments go to bench/run.py (e.g. --quick). Results: bench/results/latest.{md,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash bench/setup_tf216.sh
if [ ! -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q libtcmalloc-minimal4
fi
PIP_CACHE_DIR=$PWD/.tools/pip-cache .venv/bin/pip install -q -r bench/requirements.txt
exec .venv/bin/python bench/run.py "$@"
