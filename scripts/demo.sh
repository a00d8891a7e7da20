#!/usr/bin/env bash
# Sets everything up, then runs the demo: local broker, a multi-partition click stream, a small
# model trained through KafkaDataset, a checkpoint mid-stream, and a restore in a new process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec .venv/bin/python examples/demo.py "$@"
