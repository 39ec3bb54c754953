#!/usr/bin/env bash
# On the GPU machine, after setup_part.sh a, b and c: start Kafka and Redis from the kit through
# the project's own services.sh, then run `ingestor bench` on the GPU in fp16. Results go to $OUT.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
kit=/tmp/ingestor-kit
out="${OUT:-/tmp/ingestor-out}"
mkdir -p "$out" "$kit/venv/bin"
export PYTHONPATH="$repo:$kit/site" PYTHONUNBUFFERED=1
export JAVA_HOME="$kit/jre" PATH="$kit/jre/bin:$kit/redis:$PATH" LD_LIBRARY_PATH="$kit/redis:${LD_LIBRARY_PATH:-}"
# services.sh checks readiness with "$INGESTOR_VENV/bin/python": point it at the image's python.
ln -sf "$(command -v python3)" "$kit/venv/bin/python"
# A jlink'd runtime has no base class-data archive to extend.
export INGESTOR_HOME="$kit/home" INGESTOR_VENV="$kit/venv" INGESTOR_STATE_DIR="$kit/state" INGESTOR_KAFKA_CDS=0
bash "$repo/deploy/local/services.sh" up
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -m ingestor bench --device cuda --precision fp16 --model "$kit/model" --redis-url redis://127.0.0.1:6379/0 \
  --json "$out/bench.json" "$@" 2>&1 | tee "$out/bench.log"
