"""One shared virtual environment, several checkouts: `ingestor` runs the checkout it is invoked
from. deploy/local/bootstrap.sh installs the package editable into a venv that every clone shares
(torch is downloaded and stored once), which links it to one checkout; run from inside another
checkout, the console script would silently run the linked one's code. So, when the code running is
itself a checkout and the working directory lies in a different one, `main` runs that one instead."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Set in the process that runs another checkout: a second redirect would mean PYTHONPATH was ignored.
MARK = "INGESTOR_CHECKOUT"


def checkout_of(path: Path) -> Path | None:
    """The ingestor checkout `path` lies in (a directory with pyproject.toml naming the project and
    the package beside it), or None."""
    for d in (path, *path.parents):
        pyproject = d / "pyproject.toml"
        if (d / "ingestor" / "cli.py").is_file() and pyproject.is_file():
            try:
                if 'name = "ingestor"' in pyproject.read_text(encoding="utf-8"):
                    return d
            except OSError:
                return None
    return None


def running_checkout() -> Path | None:
    """The checkout whose code this is, or None for an installed package."""
    here = Path(__file__).resolve().parent.parent
    return here if checkout_of(here) == here else None


def redirect_to_invoking_checkout(argv: list[str]) -> None:
    """Replace this process by `python -m ingestor ARGV` on the checkout the working directory lies
    in, when that is not the one running; return otherwise."""
    if os.environ.get(MARK):
        return
    running = running_checkout()
    if running is None:  # an installed package: no checkout of ours to mix up
        return
    try:
        invoking = checkout_of(Path.cwd().resolve())
    except OSError:  # a working directory that was deleted
        return
    if invoking is None or invoking == running:
        return
    env = dict(os.environ, **{MARK: str(invoking)})
    env["PYTHONPATH"] = os.pathsep.join([str(invoking), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "ingestor", *argv], env)
