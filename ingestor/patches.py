"""Patches of library internals, and calls to their private parts: how each is checked.

A patch that replaces library code is applied only onto the code it was read against (its
`fingerprint`); one that wraps or calls it, wherever what it needs is there. One that cannot be
applied is never skipped silently: `not_applied` logs a WARNING naming what is lost.
tests/unit/test_patches.py fails as soon as the installed library's code differs from what each
was read against; docs/architecture.md ("Patches of library internals") lists them."""

from __future__ import annotations

import hashlib
import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)

_said: set[str] = set()


def fingerprint(obj: Any) -> str:
    """A short hash of `obj`'s source, "" where it has none (a builtin, a missing file)."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def not_applied(name: str, why: str, consequence: str) -> None:
    """Say once per process that the patch `name` is not in place, why, and what that costs."""
    if name in _said:
        return
    _said.add(name)
    log.warning("%s: cannot be used (%s); %s", name, why, consequence)
