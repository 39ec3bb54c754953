#!/usr/bin/env bash
# On the GPU machine: unpack one part of the kit (see make_kit.sh) into /tmp/ingestor-kit, where
# run_bench.sh finds it. Usage: setup_part.sh a|b|c|d
set -euo pipefail
part="$1"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
kit=/tmp/ingestor-kit
mkdir -p "$kit"
case "$part" in
  a)
    tar -C "$kit" -xJf "$repo/.gpu/a/jre.tar.xz"
    cp -r "$repo/.gpu/a/redis" "$kit/"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$kit/site" "$repo"/.gpu/a/*.whl
    ;;
  b) mkdir -p "$kit/home/kafka" && cp -r "$repo/.gpu/b/kafka/lib" "$kit/home/kafka/" && touch "$kit/home/kafka/.resolved" ;;
  c) rm -rf "$kit/model" && cp -r "$repo/.gpu/c/model" "$kit/model" ;;
  d) INGESTOR_HOME="$kit/home" PYTHON=python3 bash "$repo/deploy/local/install_milvus.sh" "$repo"/.gpu/d/milvus-*.whl ;;
esac
ls "$kit"
