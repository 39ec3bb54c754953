"""The model identity in the collection, through the sink, on Milvus Lite and on the Milvus server:
recorded at create, adopted by a collection from before identities, refused when it differs (by
`ingestor run` and by a search that only reads)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from bench import milvus
from ingestor.config import MilvusSettings
from ingestor.errors import StartupError
from ingestor.identity import PROPERTY, ModelIdentity, from_properties
from ingestor.sink import MilvusSink
from tests.support import harness

pytestmark = pytest.mark.services

DIM = 8
OURS = ModelIdentity("m", "torch", "fp32", DIM, True, "off")


@pytest.fixture(params=["lite", "server"])
def place(request, tmp_path) -> Iterator[tuple[str, str]]:
    """(uri, collection) of a collection that does not exist yet."""
    if request.param == "server":
        yield request.getfixturevalue("milvus_server"), harness.unique("identity").replace("-", "_")
    else:
        yield str(tmp_path / "identity.db"), "docs"


def _sink(uri: str, collection: str) -> MilvusSink:
    sink = MilvusSink(MilvusSettings(uri=uri, collection=collection))
    sink.connect()
    return sink


def _properties(sink: MilvusSink) -> dict:
    return sink._client.describe_collection(sink.collection).get("properties") or {}


def test_identity_is_recorded_at_create_kept_and_another_one_refused(place):
    uri, collection = place
    sink = _sink(uri, collection)
    try:
        sink.ensure_collection(DIM, "m@fp32", OURS)
        assert from_properties(_properties(sink)) == OURS
        sink.ensure_collection(DIM, "m@fp32", OURS)  # the same identity starts again
        other = replace(OURS, precision="bf16")
        with pytest.raises(StartupError) as refused:
            sink.ensure_collection(DIM, "m@bf16", other)
        assert OURS.describe() in str(refused.value) and other.describe() in str(refused.value)
        assert "model.precision" in str(refused.value)
        with pytest.raises(StartupError, match="model.name"):
            sink.open_existing(DIM, "m@fp32", replace(OURS, model="other"))
        assert sink.open_existing(DIM, "m@fp32", OURS)
    finally:
        milvus.drop(sink)
        sink.close()


def test_a_collection_from_before_identities_is_adopted_with_one_line(place, caplog):
    uri, collection = place
    sink = _sink(uri, collection)
    try:
        sink.ensure_collection(DIM, "m@fp32")  # as the daemon made collections before identities
        assert PROPERTY not in _properties(sink)
        assert sink.open_existing(DIM, "m@fp32", OURS)  # a search reads, and writes nothing
        assert PROPERTY not in _properties(sink)
        with caplog.at_level("INFO", logger="ingestor.sink"):
            sink.ensure_collection(DIM, "m@fp32", OURS)
        adopted = [r.getMessage() for r in caplog.records if "adopted" in r.getMessage()]
        assert len(adopted) == 1 and OURS.describe() in adopted[0], adopted
        assert from_properties(_properties(sink)) == OURS
        with pytest.raises(StartupError, match="chunking"):
            sink.ensure_collection(DIM, "m@fp32", replace(OURS, chunking="256/32"))
    finally:
        milvus.drop(sink)
        sink.close()


def test_a_search_on_a_missing_collection_says_so_without_creating_it(place):
    uri, collection = place
    sink = _sink(uri, collection)
    try:
        assert not sink.open_existing(DIM, "m@fp32", OURS)
        assert not sink.exists()
    finally:
        sink.close()
