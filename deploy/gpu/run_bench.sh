#!/usr/bin/env bash
# On the GPU machine, after setup_part.sh a, b, c and d: start Kafka, Redis and the Milvus server
# from the kit through the project's own services.sh; measure the server's write rate alone
# (`python -m bench --sink-rate`); run `python -m bench` on the GPU in fp16 with the server as the
# sink ((a) plain encode, (c) the pipeline with one worker, (f) its ceiling with a null forward
# pass); then (c) again with K = 1, 2 and 4 worker processes on the GPU (`python -m bench --workers-per-device
# 1,2,4 --devices 0`, which runs `ingestor run --devices 0 --workers-per-device K` for each K). Results go to $OUT.
#
# The bundled sample (3,000 records) is about a third of a second of work for a GPU, too short to
# measure a pipeline whose start-up is excluded but whose first fetches are not. The corpus here is
# the sample ten times over (`--cycles 10`: 30,000 records), each cycle's texts made distinct by a
# suffix so that none comes from the cache; (a)-(c) use 20,000 of them. With PROFILE=1 the bench
# runs under `py-spy record --gil` (in the kit), which samples whichever thread holds the GIL (its
# children too); on a 16-core H100 box it fell far behind at 100 Hz, so it is off by default.
#
# Usage: run_bench.sh [extra `python -m bench` options]   (env LIMIT, CYCLES, STEADY_S, PROFILE, WORKERS,
# LONG_DOCS=0 to skip the long-document bench, WORKERS= to skip the worker processes)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
kit=/tmp/ingestor-kit
out="${OUT:-/tmp/ingestor-out}"
mkdir -p "$out" "$kit/venv/bin"
export PYTHONPATH="$repo:$kit/site" PYTHONUNBUFFERED=1
export JAVA_HOME="$kit/jre" PATH="$kit/jre/bin:$kit/redis:$kit/site/bin:$PATH" LD_LIBRARY_PATH="$kit/redis:${LD_LIBRARY_PATH:-}"
# services.sh checks readiness with "$INGESTOR_VENV/bin/python": point it at the image's python.
# A wrapper, not a symlink: python3 there lives in a virtual environment, found from its own path.
rm -f "$kit/venv/bin/python"
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" >"$kit/venv/bin/python" && chmod +x "$kit/venv/bin/python"
# A jlink'd runtime has no base class-data archive to extend.
export INGESTOR_HOME="$kit/home" INGESTOR_VENV="$kit/venv" INGESTOR_STATE_DIR="$kit/state" INGESTOR_KAFKA_CDS=0
# --milvus-server: a real Milvus 2.3.5 standalone server on 19530, the sink of every variant.
bash "$repo/deploy/local/services.sh" up --milvus-server
milvus=http://127.0.0.1:19530
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; lscpu | grep -m1 "Model name"; } | tee "$out/machine.txt"

# The bench is the repository's bench/ package (on PYTHONPATH above), not part of the installed ingestor.
cli=(python3 -m bench --milvus-uri "$milvus" --redis-url redis://127.0.0.1:6379/0)
gpu=(--device cuda --precision fp16 --model "$kit/model")
corpus=(--cycles "${CYCLES:-10}" --limit "${LIMIT:-20000}")

"${cli[@]}" --sink-rate --json "$out/sink_rate.json" || true

bench=("${cli[@]}" "${gpu[@]}" "${corpus[@]}" --steady-seconds "${STEADY_S:-10}" --json "$out/bench.json" "$@")
if [ "${PROFILE:-0}" = 1 ] && command -v py-spy >/dev/null; then
  py-spy record --gil --threads --subprocesses --nonblocking -r 100 -f raw -o "$out/gil.raw" -- "${bench[@]}" \
    2>&1 | tee "$out/bench.log"
else
  "${bench[@]}" 2>&1 | tee "$out/bench.log"
fi

# Long documents with chunking on: chunks/s against plain encode of the same chunks, and the share
# of chunks an edit takes from the cache (`python -m bench --long-documents`).
if [ "${LONG_DOCS:-1}" = 1 ]; then
  "${cli[@]}" "${gpu[@]}" --long-documents --json "$out/chunks.json" 2>&1 | tee "$out/chunks.log" || true
fi

# Worker processes per GPU through the real CLI, all writing to the server: does spreading the
# per-record Python over processes feed the GPU better?
workers="${WORKERS-1,2,4}"  # WORKERS= (empty) skips it
if [ -n "$workers" ]; then
  "${cli[@]}" "${gpu[@]}" "${corpus[@]}" --workers-per-device "$workers" --devices 0 --timeout-s 90 \
    --json "$out/workers.json" 2>&1 | tee "$out/workers.log" || true
fi
