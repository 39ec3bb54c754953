# shellcheck shell=bash
# Sourced (not run) by quickstart.sh and test.sh, after their `set -euo pipefail`: the repository
# root, the ingestor home and virtual environment (INGESTOR_HOME, INGESTOR_VENV), then install
# what is missing and start the local services.
# shellcheck disable=SC2034  # repo and venv are used by the scripts that source this
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
home="${INGESTOR_HOME:-$HOME/.cache/ingestor}"
venv="${INGESTOR_VENV:-$home/venv}"
# The shared venv's editable install links one checkout; this one's code goes first on the path.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

bash "$here/bootstrap.sh"
bash "$here/services.sh" up
