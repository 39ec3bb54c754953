"""The shared venv runs the checkout it is invoked from, never another clone's code silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ingestor.checkout import checkout_of, running_checkout

REPO = Path(__file__).resolve().parents[2]


def test_this_code_runs_from_this_checkout():
    assert running_checkout() == REPO and checkout_of(REPO / "docs") == REPO


def test_run_from_inside_another_checkout_ingestor_runs_that_one(tmp_path):
    other = tmp_path / "other-clone"
    (other / "ingestor").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "ingestor"\n', encoding="utf-8")
    (other / "ingestor" / "__init__.py").write_text("", encoding="utf-8")
    (other / "ingestor" / "cli.py").write_text("", encoding="utf-8")
    (other / "ingestor" / "__main__.py").write_text("print('the other clone ran')\n", encoding="utf-8")
    (other / "docs").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    env["PYTHONPATH"] = str(REPO)  # as an editable install linked to this checkout resolves `ingestor`
    # The console script's code, from a directory inside the other clone.
    script = "import sys; sys.argv = ['ingestor', '--version']; from ingestor.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=other / "docs", env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "the other clone ran", done.stdout + done.stderr
    here = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert here.stdout.startswith("ingestor ") and str(REPO) in here.stdout, here.stdout + here.stderr
