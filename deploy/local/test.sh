#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): install what is missing, start the
# local services, run the whole test suite: unit, integration, deploy manifests and the fault suite.
#
# The fault suite runs on services of its own (other ports, its own state dir), so it runs beside
# the rest, as a second pytest process: much of its time is waiting (outages held for seconds, a
# restarted Milvus server settling), which the other half fills. The rest's output streams as it
# runs; the fault suite's follows when both are done, each line prefixed with "[faults]" (its
# temporary files stay in .state/pytest-faults); the exit code is the worse of the two.
#
# Environment: INGESTOR_FAULT_TESTS=0 leaves the fault suite out (a quick local run);
# INGESTOR_TEST_JOBS=1 runs everything in one pytest process, one test after another;
# INGESTOR_SLOW_TESTS=1 adds the long soak. Extra arguments go to pytest.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # sets here, repo, home, venv; bootstrap; services up
cd "$repo"
pytest=("$venv/bin/python" -m pytest -p no:cacheprovider)
if [ "${INGESTOR_FAULT_TESTS:-1}" = 0 ]; then
  exec "${pytest[@]}" --ignore=tests/faults "$@"
fi
if [ "${INGESTOR_TEST_JOBS:-2}" = 1 ]; then
  exec "${pytest[@]}" "$@"
fi

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
"${pytest[@]}" --basetemp="$repo/.state/pytest-faults" tests/faults "$@" >"$logs/faults" 2>&1 &
faults=$!
rest_rc=0
"${pytest[@]}" --ignore=tests/faults "$@" 2>&1 || rest_rc=$?
faults_rc=0
wait "$faults" || faults_rc=$?
sed 's/^/[faults] /' "$logs/faults"
echo "tests: rc $rest_rc; fault suite: rc $faults_rc" >&2
exit $((rest_rc > faults_rc ? rest_rc : faults_rc))
