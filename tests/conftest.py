from __future__ import annotations

import os

import pytest

from tests.support import harness

# Every `python -m ingestor` the tests start runs this checkout, whatever the shared venv's editable
# install links to and whatever directory a test starts it in.
os.environ["PYTHONPATH"] = os.pathsep.join([str(harness.REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("INGESTOR_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set INGESTOR_SLOW_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def services() -> None:
    """Kafka and Redis from deploy/local/services.sh (started if not running)."""
    result = harness.services("up")
    if result.returncode != 0:
        pytest.fail(f"services.sh up failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def milvus_server(services) -> str:
    """The URI of a real Milvus server (deploy/local/services.sh's `milvus`, started if needed)."""
    result = harness.services("start", "milvus", timeout=300)
    if result.returncode != 0:
        pytest.fail(f"services.sh start milvus failed:\n{result.stdout}\n{result.stderr}")
    harness.wait_milvus_server(harness.MILVUS_SERVER)
    return harness.MILVUS_SERVER


@pytest.fixture(scope="session")
def reference_model():
    """The model as plain sentence-transformers loads it: the oracle for stored vectors."""
    from sentence_transformers import SentenceTransformer

    from ingestor.config import DEFAULT_MODEL
    from ingestor.embedder import resolve_model_path

    return SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")


@pytest.fixture(scope="session")
def reference_splitter(reference_model):
    """The splitter the daemon builds for the default model and chunk settings (the expected
    chunks of a record's text)."""
    from ingestor.chunking import splitter_for
    from ingestor.config import ChunkingSettings
    from ingestor.tokenizer import Tokenizer

    class Model:
        max_seq_length = reference_model.max_seq_length
        tokenizer = Tokenizer(reference_model.tokenizer, max_seq_length)

    return splitter_for(ChunkingSettings(enabled=True), Model())
