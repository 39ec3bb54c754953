"""The model identity a collection records, and the comparison that refuses another one."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from ingestor.config import ModelSettings
from ingestor.identity import (
    PROPERTY,
    ModelIdentity,
    UnreadableIdentity,
    chunking_label,
    differences,
    from_properties,
    mismatch,
    of_model,
)

OURS = ModelIdentity("sentence-transformers/all-MiniLM-L6-v2", "torch", "fp32", 384, True, "256/32")


def test_round_trips_through_the_collection_property():
    assert from_properties({PROPERTY: OURS.to_json(), "other": "x"}) == OURS


def test_a_collection_without_the_property_has_no_identity():
    assert from_properties({}) is None and from_properties(None) is None


@pytest.mark.parametrize("raw", ["not json", "[]", json.dumps({"model": "m"}), '{"dimension": "x"}'])
def test_an_unreadable_property_is_an_error_not_a_missing_identity(raw):
    with pytest.raises(UnreadableIdentity, match=PROPERTY):
        from_properties({PROPERTY: raw})


def test_the_same_identity_agrees():
    assert mismatch(OURS, replace(OURS), "'docs' at x.db") is None


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"model": "BAAI/bge-small-en-v1.5"}, "model.name"),
        ({"precision": "bf16"}, "model.precision"),
        ({"backend": "onnx"}, "model.backend"),
        ({"dimension": 768}, "model.name"),
        ({"normalized": False}, "model.name"),
        ({"chunking": "off"}, "chunking.enabled"),
        ({"chunking": "128/32"}, "chunking.max_tokens"),
    ],
)
def test_a_mismatch_names_both_identities_and_the_setting_to_change(change, setting):
    stored = replace(OURS, **change)
    message = mismatch(stored, OURS, "'docs' at x.db")
    assert message is not None
    assert stored.describe() in message and OURS.describe() in message
    assert setting in message and "'docs' at x.db" in message
    assert differences(stored, OURS) == list(change)


def test_chunking_label():
    assert chunking_label(None, None) == "off"
    assert chunking_label(256, 32) == "256/32"


def test_of_model_reads_the_settings_the_dimension_and_the_splitter():
    embedder = SimpleNamespace(
        identity="m@onnx-int8",
        settings=ModelSettings(name="m", backend="onnx", precision="int8"),
        dimension=8,
        normalized=True,
    )
    splitter = SimpleNamespace(max_tokens=128, overlap_tokens=16)
    assert of_model(embedder, splitter) == ModelIdentity("m", "onnx", "int8", 8, True, "128/16")
    # A stand-in without settings (the test hooks' model) names itself.
    bare = SimpleNamespace(identity="stand-in@fp32", dimension=4)
    assert of_model(bare, None) == ModelIdentity("stand-in", "torch", "fp32", 4, False, "off")
