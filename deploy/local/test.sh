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
# The ONNX and OpenVINO backend tests need extras that the main venv cannot hold (bootstrap.sh
# keeps them in $INGESTOR_HOME/venv-backends), so they run there first, in a pytest process of
# their own (about a minute: they export the model four ways), each line prefixed with
# "[backends]"; the main run leaves them out, and its exit code counts like the others'.
#
# Environment: INGESTOR_FAULT_TESTS=0 leaves the fault suite out (a quick local run);
# INGESTOR_BACKEND_TESTS=0 leaves the backend run out (the main run then skips those tests);
# INGESTOR_TEST_JOBS=1 runs the rest in one pytest process, one test after another;
# INGESTOR_SLOW_TESTS=1 adds the slow tests (docs/reliability.md lists them). Extra arguments go to
# each pytest process.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # sets here, repo, home, venv; bootstrap; services up
cd "$repo"
# Style and types first (seconds): a failure there fails the run as a test does.
checks_rc=0
"$venv/bin/ruff" check ingestor tests bench || checks_rc=1
"$venv/bin/ruff" format --check ingestor tests bench || checks_rc=1
"$venv/bin/mypy" || checks_rc=1  # its files and settings: pyproject.toml [tool.mypy]
checks="ruff and mypy: rc $checks_rc"
# The slowest tests are listed at the end of each run: where the time goes.
pytest=("$venv/bin/python" -m pytest -p no:cacheprovider --durations=30)
backend_tests=tests/unit/test_backend_models.py
backends_rc=0
backends="backend tests: left out"
if [ "${INGESTOR_BACKEND_TESTS:-1}" != 0 ]; then
  backends_venv="${INGESTOR_BACKENDS_VENV:-$home/venv-backends}"
  "$backends_venv/bin/python" -m pytest -p no:cacheprovider --basetemp="$repo/.state/pytest-backends" \
    "$backend_tests" "$@" 2>&1 | sed -u 's/^/[backends] /' || backends_rc=$?
  [ "$backends_rc" != 5 ] || backends_rc=0  # 5: the arguments selected none of them
  backends="backend tests: rc $backends_rc"
  pytest+=(--ignore="$backend_tests")
fi
if [ "${INGESTOR_FAULT_TESTS:-1}" = 0 ] || [ "${INGESTOR_TEST_JOBS:-2}" = 1 ]; then
  rest_rc=0
  if [ "${INGESTOR_FAULT_TESTS:-1}" = 0 ]; then
    "${pytest[@]}" --ignore=tests/faults "$@" || rest_rc=$?
  else
    "${pytest[@]}" "$@" || rest_rc=$?
  fi
  echo "tests: rc $rest_rc; $backends; $checks" >&2
  worst=$((rest_rc > backends_rc ? rest_rc : backends_rc))
  exit $((worst > checks_rc ? worst : checks_rc))
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
echo "tests: rc $rest_rc; fault suite: rc $faults_rc; $backends; $checks" >&2
worst=$((rest_rc > faults_rc ? rest_rc : faults_rc))
worst=$((worst > backends_rc ? worst : backends_rc))
exit $((worst > checks_rc ? worst : checks_rc))
