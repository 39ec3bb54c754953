#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): install what is missing, start the
# local services, run the test suite (unit, integration, deploy manifests; the fault suite with
# INGESTOR_FAULT_TESTS=1, its long soak also with INGESTOR_SLOW_TESTS=1). Extra arguments go to
# pytest.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # sets here, repo, home, venv; bootstrap; services up
cd "$repo"
# The fault suite (tests/faults: kills and restarts its own dedicated set of services) is new and
# runs only with INGESTOR_FAULT_TESTS=1 until it has a record of green runs (see README).
if [ "${INGESTOR_FAULT_TESTS:-0}" = 1 ]; then
  exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
fi
exec "$venv/bin/python" -m pytest -p no:cacheprovider --ignore=tests/faults "$@"
