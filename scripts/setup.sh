#!/usr/bin/env bash
# Installs everything the build, the tests and the demo need, into project-local, git-ignored
# folders (.venv/, .tools/, target/), then builds and installs the package. Idempotent: a second
# run reuses the caches and takes seconds; it never depends on them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools
export PIP_CACHE_DIR=$TOOLS/pip-cache
export PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$TOOLS"
log() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

log "system packages"
missing=()
for tool in g++:g++ make:make perl:perl clang-format:clang-format openssl:openssl \
  java:openjdk-17-jre-headless mvn:maven; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }

log "Apache Kafka broker jars (scripts/kafka/pom.xml, from Maven Central)"
# The broker's runtime classpath, copied into .tools/kafka/libs; the local Maven repository is
# kept in .tools/m2 so a second run resolves nothing. A pom change refreshes both.
stamp=$TOOLS/kafka/pom.sha
want=$(sha256sum scripts/kafka/pom.xml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! ls "$TOOLS"/kafka/libs/kafka_2.13-*.jar >/dev/null 2>&1; then
  rm -rf "$TOOLS/kafka"
  mvn -q -B -f scripts/kafka/pom.xml -Dmaven.repo.local="$TOOLS/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$TOOLS/kafka/libs"
  echo "$want" >"$stamp"
fi
java -version 2>&1 | head -1

log "Python venv with the pinned TensorFlow"
stamp=.venv/.requirements.sha
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$want" >"$stamp"
fi

log "build libkafka_dataset.so and install the kafka_dataset package"
.venv/bin/pip install -q --no-build-isolation --no-deps --force-reinstall .
.venv/bin/python -c 'import kafka_dataset; kafka_dataset.load_library(); print("kafka_dataset ready:", kafka_dataset.library_path())' 2>&1 | grep -v -E '^(WARNING|I0000|W0000|To enable)'
log "setup done"
