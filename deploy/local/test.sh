#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): install what is missing, start the
# local services, run the whole test suite: unit, integration, deploy manifests and the fault suite
# (INGESTOR_FAULT_TESTS=0 leaves the fault suite out for a quick local run; INGESTOR_SLOW_TESTS=1
# adds the long soak). Extra arguments go to pytest.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # sets here, repo, home, venv; bootstrap; services up
cd "$repo"
if [ "${INGESTOR_FAULT_TESTS:-1}" = 0 ]; then
  exec "$venv/bin/python" -m pytest -p no:cacheprovider --ignore=tests/faults "$@"
fi
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
