#!/usr/bin/env bash
# Runs every example under examples/ the way the README shows them (each starts its own local
# broker and checks its own result: a non-zero exit fails the run).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
for example in examples/demo.py examples/keras_streaming.py; do
  printf -- '-- %s\n' "$example"
  start=$SECONDS
  timeout 600 .venv/bin/python "$example" >target/example.log 2>&1 || {
    tail -40 target/example.log >&2
    echo "$example failed" >&2
    exit 1
  }
  tail -3 target/example.log
  printf -- '-- %s passed (%ss)\n' "$example" "$((SECONDS - start))"
done
