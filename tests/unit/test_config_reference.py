"""docs/configuration.md is generated from the settings; it must be what the code generates now."""

from __future__ import annotations

from pathlib import Path

from ingestor.config import Settings
from ingestor.config.names import settings_of
from ingestor.config.reference import reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/configuration.md is stale: regenerate it with "
        "`python -m ingestor config reference > docs/configuration.md`"
    )


def test_the_reference_lists_every_setting_with_its_variable():
    text = reference_markdown()
    for s in settings_of(Settings):
        assert f"| `{s.path}`" in text and f"`{s.env}`" in text, s.path
