#!/usr/bin/env bash
# Installs the real Milvus standalone server, idempotently: the PyPI package `milvus` (pinned: the
# v2.3.5 binary with embedded etcd and local storage, no Python dependencies) in its own small venv
# $INGESTOR_HOME/milvus-server, independent of the project's dependency stamp; services.sh runs it
# as its `milvus` service. Called by bootstrap.sh; with a wheel file as argument it installs from
# that file without a package index (the GPU kit).
# Environment: INGESTOR_HOME (default ~/.cache/ingestor), PYTHON (default python3.11, else python3).
set -euo pipefail
home="${INGESTOR_HOME:-$HOME/.cache/ingestor}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
wheel="${1:-}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# The Milvus server's own venv: the package only wraps a binary, and keeping it apart means a
# change of pyproject.toml never reinstalls it, nor it the project's dependencies. Its wrapper
# (`milvus-server`) would unpack the binary and its libraries (~250 MB) into every data dir and
# pick ports itself; services.sh runs the binary directly instead, so it is unpacked here, once,
# into $milvus_venv/milvus-$milvus_version/bin (all at once: a half-unpacked dir is never used).
milvus_version=2.3.5
milvus_venv="$home/milvus-server"
milvus_bin="$milvus_venv/milvus-$milvus_version/bin"
if [ "$(cat "$milvus_venv/.ingestor-milvus" 2>/dev/null)" != "$milvus_version" ] \
  || [ ! -x "$milvus_bin/milvus" ]; then
  log "installing the Milvus $milvus_version standalone server into $milvus_venv (~60 MB download)"
  [ -x "$milvus_venv/bin/python" ] || "$py" -m venv "$milvus_venv"
  if [ -n "$wheel" ]; then
    "$milvus_venv/bin/python" -m pip install -q --disable-pip-version-check --no-index "$wheel"
  else
    "$milvus_venv/bin/python" -m pip install -q --disable-pip-version-check "milvus==$milvus_version"
  fi
  rm -rf "$milvus_bin.tmp"
  "$milvus_venv/bin/python" - "$milvus_bin.tmp" <<'EOF2'
import lzma, os, shutil, sys
from pathlib import Path
import milvus
out = Path(sys.argv[1])
out.mkdir(parents=True)
for packed in sorted((Path(milvus.__file__).parent / "data" / "bin").glob("*.lzma")):
    with lzma.open(packed) as src, open(out / packed.stem, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(out / packed.stem, 0o755)
EOF2
  rm -rf "$milvus_bin"
  mv "$milvus_bin.tmp" "$milvus_bin"
  echo "$milvus_version" >"$milvus_venv/.ingestor-milvus"
fi
