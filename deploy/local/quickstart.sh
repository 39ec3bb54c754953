#!/usr/bin/env bash
# The README's first command: install everything, start Kafka and Redis, publish the bundled
# sample corpus, run the daemon on the embedded default (Milvus Lite in a local file) until it
# has caught up, and print a sample search. Safe to run again: a second run skips every record
# as unchanged.
#
# Usage: quickstart.sh [RECORDS.jsonl [QUERY]]: your own records (one JSON object with "text", and
# optionally "id" and "metadata", per line) and search query instead of the bundled sample's.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # sets here, repo, home, venv; bootstrap; services up

mkdir -p "$repo/.state"
export INGESTOR_KAFKA__BOOTSTRAP_SERVERS="${INGESTOR_KAFKA__BOOTSTRAP_SERVERS:-127.0.0.1:${INGESTOR_KAFKA_PORT:-9092}}"
export INGESTOR_KAFKA__TOPICS="${INGESTOR_KAFKA__TOPICS:-documents}"
export INGESTOR_REDIS__URL="${INGESTOR_REDIS__URL:-redis://127.0.0.1:${INGESTOR_REDIS_PORT:-6379}/0}"
export INGESTOR_MILVUS__URI="${INGESTOR_MILVUS__URI:-$repo/.state/ingestor.db}"
export INGESTOR_METRICS__PORT="${INGESTOR_METRICS__PORT:-0}"

ingestor="$venv/bin/ingestor"
"$ingestor" produce "${1:-$repo/ingestor/data/sample.jsonl}"
"$ingestor" run --until-caught-up
"$ingestor" stats
"$ingestor" search "${2:-how do I read a file line by line}" -k 5
