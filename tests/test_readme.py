"""The README against the code it documents: every setting its configuration table names is one
that ingestor.config reads, so a renamed or removed setting cannot linger there."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_deploy_manifests import setting_env_names

README = Path(__file__).resolve().parents[1] / "README.md"


def configuration_table() -> list[str]:
    """The variables in the first column of the table under "## Configuration", in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `(INGESTOR_\w+)` \|", section, flags=re.MULTILINE)


def test_every_setting_in_the_configuration_table_exists():
    named = configuration_table()
    assert len(named) >= 20, f"the configuration table is not where this test reads it: {named}"
    assert len(named) == len(set(named)), "a setting is in the table twice"
    unknown = sorted(set(named) - setting_env_names())
    assert not unknown, f"README's configuration table names settings that ingestor.config does not have: {unknown}"
