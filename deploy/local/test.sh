#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): install what is missing, start the
# local services, run the whole test suite (unit, integration, fault tests; the long soak only
# with INGESTOR_SLOW_TESTS=1). Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
home="${INGESTOR_HOME:-$HOME/.cache/ingestor}"
venv="${INGESTOR_VENV:-$home/venv}"

bash "$here/bootstrap.sh"
bash "$here/services.sh" up
cd "$repo"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
