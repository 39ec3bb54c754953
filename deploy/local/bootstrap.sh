#!/usr/bin/env bash
# Installs everything ingestor needs on a fresh Debian machine, idempotently:
#   - Debian's redis-server, kcat (librdkafka's command-line client: the tests produce with it)
#     and openssl (the certificates of the secured services)
#   - the Apache Kafka broker jars, resolved from Maven Central (deploy/kafka/pom.xml)
#   - a Python virtual environment with ingestor and its dependencies (torch is large: the venv
#     lives outside the checkout so that later runs and fresh clones reuse it). ingestor is
#     installed editable, linked to the checkout that ran this last; `ingestor` run from inside
#     another checkout runs that one's code instead (ingestor/checkout.py), and the scripts here
#     put their own checkout first on PYTHONPATH (common.sh), so no clone runs another's code
#   - a second one, $INGESTOR_HOME/venv-backends, with the onnx and openvino extras, where test.sh
#     runs the backend tests (their optimum packages need an older transformers than the first)
#   - the real Milvus standalone server (PyPI package `milvus`, pinned: the v2.3.5 binary with
#     embedded etcd and local storage, no Python dependencies) in its own small venv
#     $INGESTOR_HOME/milvus-server, independent of the project's dependency stamp; services.sh runs
#     it as its `milvus` service
# Environment: INGESTOR_VENV (default ~/.cache/ingestor/venv), INGESTOR_HOME (default ~/.cache/ingestor),
# INGESTOR_BACKENDS_VENV (default $INGESTOR_HOME/venv-backends).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
home="${INGESTOR_HOME:-$HOME/.cache/ingestor}"
venv="${INGESTOR_VENV:-$home/venv}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
mkdir -p "$home"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # the secured services' certificates
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian's package starts a system instance; ours run under deploy/local/services.sh.
  (service redis-server stop || true) >/dev/null 2>&1
fi

kafka_lib="$home/kafka/lib"
if [ ! -f "$home/kafka/.resolved" ]; then
  log "resolving the Apache Kafka broker jars from Maven Central"
  mkdir -p "$kafka_lib"
  mvn -q -B -Dstyle.color=never -f "$repo/deploy/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$kafka_lib" -DincludeScope=runtime
  touch "$home/kafka/.resolved"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating the virtual environment at $venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip uv
fi
[ -x "$venv/bin/uv" ] || "$venv/bin/python" -m pip install -q uv
stamp="$venv/.ingestor-deps"
want="$(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies (torch is several GB on a cold machine)"
  VIRTUAL_ENV="$venv" "$venv/bin/uv" pip install --python "$venv/bin/python" -q -e "${repo}[test]"
  echo "$want" >"$stamp"
else
  # Dependencies are current; (re)link this checkout into the venv, which takes a second.
  VIRTUAL_ENV="$venv" "$venv/bin/uv" pip install --python "$venv/bin/python" -q --no-deps -e "$repo"
fi
# Bytecode, once per dependency set: uv installs none, and where PYTHONDONTWRITEBYTECODE is set
# (as on this project's CI) every process would compile torch, pymilvus and Milvus Lite from source
# on each start: seconds per daemon, per Lite child, per test that spawns one.
if [ "$(cat "$venv/.ingestor-pyc" 2>/dev/null)" != "$want" ]; then
  log "compiling the dependencies' bytecode (once)"
  "$venv/bin/python" -m compileall -q -j 0 "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
  echo "$want" >"$venv/.ingestor-pyc"
fi

# The ONNX and OpenVINO backends' environment, where test.sh runs their tests: optimum-onnx caps
# transformers below 4.58 and the main venv's sentence-transformers 6 needs 5, so the extras cannot
# join it. uv hard-links from its cache, so the torch both share is neither downloaded nor stored twice.
backends_venv="${INGESTOR_BACKENDS_VENV:-$home/venv-backends}"
if [ "$(cat "$backends_venv/.ingestor-deps" 2>/dev/null)" != "$want" ]; then
  log "installing the onnx and openvino extras into $backends_venv"
  [ -x "$backends_venv/bin/python" ] || "$py" -m venv --without-pip "$backends_venv"
  VIRTUAL_ENV="$backends_venv" "$venv/bin/uv" pip install --python "$backends_venv/bin/python" -q \
    -e "${repo}[test,onnx,openvino]"
  "$backends_venv/bin/python" -m compileall -q -j 0 \
    "$("$backends_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
  echo "$want" >"$backends_venv/.ingestor-deps"
else
  VIRTUAL_ENV="$backends_venv" "$venv/bin/uv" pip install --python "$backends_venv/bin/python" -q --no-deps -e "$repo"
fi

bash "$here/install_milvus.sh"
log "ready: $venv (Milvus server: $home/milvus-server)"
