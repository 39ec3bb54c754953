"""End to end on the query side: `ingestor run` ingests a corpus with chunking on (long documents
included) into a Milvus Lite file, then one `ingestor serve` on that file finds each sampled
record first from its exact text, one result per record with its best chunk's span; a metadata
filter excludes what it should, and hostile filter values stay values. A server or a daemon whose
model identity differs from the collection's refuses to start, naming both."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.corpus import long_documents
from ingestor.identity import ModelIdentity
from tests.support import harness

pytestmark = pytest.mark.services

SHORT = 150
LONG = 12
SAMPLE = 100


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    # Python's help topics as long documents, and no short record cut from them (their exact text
    # would be a long document's start).
    short = [r for r in harness.sample_records(2 * SHORT) if r["metadata"].get("module") != "pydoc_data.topics"]
    short = short[:SHORT]
    topics = sorted((d for d in long_documents() if d.id.startswith("long:topic:")), key=lambda d: len(d.text))
    long = [{"id": d.id, "text": d.text, "metadata": {"topic": d.metadata["topic"], "kind": "long"}} for d in topics]
    return short + long[:LONG]


@pytest.fixture(scope="module")
def ingested(services, corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-e2e")
    topic = harness.unique("serve")
    harness.create_topic(topic, partitions=2)
    harness.produce(topic, [harness.json_record(r) for r in corpus])
    uri = str(tmp / "serve.db")
    env = harness.ingestor_env(topic, harness.unique("g"), uri)
    result = harness.run_ingestor(env)
    assert result.returncode == 0, result.output[-4000:]
    assert result.summary()["upserted"] == len(corpus)
    return {"uri": uri, "tmp": tmp, "env": env}


def test_a_different_identity_makes_serve_run_and_check_exit_2_naming_both(ingested):
    """First in the module: the server of the tests below holds the Lite file once started."""
    # A Lite file has one user: the daemon and the check read copies, so that all start at once.
    copies = [ingested["tmp"] / f"copy{i}.db" for i in range(2)]
    for copy in copies:
        shutil.copytree(ingested["uri"], copy)
    serve_env = harness.serve_env(ingested["uri"], INGESTOR_MODEL__PRECISION="bf16")
    run_env = {**ingested["env"], "INGESTOR_CHUNKING__MAX_TOKENS": "128", "INGESTOR_MILVUS__URI": str(copies[0])}
    check_env = {**ingested["env"], "INGESTOR_CHUNKING__OVERLAP_TOKENS": "16", "INGESTOR_MILVUS__URI": str(copies[1])}
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "ingestor", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args, env in ((["serve"], serve_env), (["run", "--until-caught-up"], run_env), (["check"], check_env))
    ]
    outputs = [p.communicate(timeout=300)[0] for p in started]
    ours = ModelIdentity("sentence-transformers/all-MiniLM-L6-v2", "torch", "fp32", 384, True, "256/32")
    for proc, output, theirs, setting, says in zip(
        started,
        outputs,
        (
            ModelIdentity(ours.model, "torch", "bf16", 384, True, "256/32"),
            ModelIdentity(ours.model, "torch", "fp32", 384, True, "128/32"),
            ModelIdentity(ours.model, "torch", "fp32", 384, True, "256/16"),
        ),
        ("model.precision", "chunking.max_tokens", "chunking.overlap_tokens"),
        ("cannot start:", "cannot start:", "FAIL"),
    ):
        assert proc.returncode == 2, output[-3000:]
        [line] = [ln for ln in output.splitlines() if ln.startswith(says)]
        assert ours.describe() in line and theirs.describe() in line and setting in line, line
        assert "Traceback" not in output


@pytest.fixture(scope="module")
def server(ingested):
    env = harness.serve_env(ingested["uri"])
    server = harness.start_serve(env, ingested["tmp"] / "serve.log")
    yield server
    assert harness.stop(server.proc) == 0, server.log()[-3000:]


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def search(client: httpx.Client, query: str, k: int = 5, **extra) -> list[dict]:
    answer = client.post("/search", json={"query": query, "k": k, **extra})
    assert answer.status_code == 200, answer.text[:500]
    return answer.json()["results"]


def test_each_sampled_record_is_found_first_from_its_exact_text(client, corpus):
    long_ids = {r["id"] for r in corpus[SHORT:]}
    sample = random.Random(25).sample(corpus[:SHORT], SAMPLE - LONG) + corpus[SHORT:]
    # Concurrent, as clients are: the server batches the queries.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: search(client, r["text"]), sample))
    misses = []
    for record, results in zip(sample, answers):
        assert results and set(results[0]) == {
            "id", "score", "text", "metadata", "chunk_index", "char_start", "char_end"
        }  # fmt: skip
        if results[0]["id"] != record["id"]:
            misses.append((record["id"], [r["id"] for r in results]))
            continue
        best = results[0]
        assert best["metadata"] == record["metadata"]
        assert record["text"][best["char_start"] : best["char_end"]] == best["text"]
        if record["id"] in long_ids:
            assert best["chunk_index"] is not None and best["char_end"] > best["char_start"]
        ids = [r["id"] for r in results]
        assert len(ids) == len(set(ids)), f"a record came back twice: {ids}"
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert not misses, misses


def test_a_long_documents_later_chunk_is_found_with_its_span(client, corpus):
    doc = corpus[SHORT + LONG - 1]
    paragraphs = [p for p in doc["text"].split("\n\n") if len(p) > 200]
    query = paragraphs[len(paragraphs) // 2]
    [best] = search(client, query, k=1)
    assert best["id"] == doc["id"] and best["chunk_index"] > 0
    assert doc["text"][best["char_start"] : best["char_end"]] == best["text"]
    start = doc["text"].index(query)
    assert best["char_start"] < start + len(query) and start < best["char_end"], "the span misses the paragraph"


def test_a_metadata_filter_excludes_what_it_should(client, corpus):
    record = corpus[7]
    module = record["metadata"]["module"]
    assert search(client, record["text"])[0]["id"] == record["id"]
    excluded = search(client, record["text"], k=10, filter={"field": "module", "op": "!=", "value": module})
    assert excluded and all(r["metadata"].get("module") != module for r in excluded)
    kept = search(client, record["text"], k=10, filter={"field": "module", "op": "==", "value": module})
    assert kept[0]["id"] == record["id"] and all(r["metadata"]["module"] == module for r in kept)
    by_id = search(client, record["text"], k=10, filter={"field": "id", "op": "!=", "value": record["id"]})
    assert record["id"] not in [r["id"] for r in by_id]
    both = {"and": [{"field": "kind", "op": "==", "value": "long"}, {"field": "topic", "op": "in", "value": ["x"]}]}
    assert search(client, record["text"], filter=both) == []
    longs = search(client, record["text"], k=50, filter={"field": "metadata.kind", "op": "==", "value": "long"})
    assert {r["id"] for r in longs} == {r["id"] for r in corpus[SHORT:]}


@pytest.mark.parametrize("value", ['"] or id in ["x', 'x" or id != "', "back\\slash\\", "x' or 1==1 or '"])
def test_a_hostile_filter_value_is_only_a_value(client, corpus, value):
    record = corpus[3]
    for field in ("id", "module"):
        results = search(client, record["text"], filter={"field": field, "op": "==", "value": value})
        assert results == [], (field, value)
        results = search(client, record["text"], filter={"field": field, "op": "in", "value": [value, "none"]})
        assert results == [], (field, value)
    kept = search(client, record["text"], filter={"field": "id", "op": "in", "value": [value, record["id"]]})
    assert [r["id"] for r in kept] == [record["id"]]


def readme_examples() -> tuple[list[str], str]:
    """The shell commands (continuation lines joined) and the Python of README's "Query side"."""
    text = (harness.REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Query side\n", 1)[1].split("\n## ", 1)[0]
    bash = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    return [line for line in bash.splitlines() if line.strip()], python


def test_the_readmes_query_side_examples_run_as_written(server):
    commands, python = readme_examples()
    address = server.url.removeprefix("http://")
    # This module's server stands for the README's own `ingestor serve &`, on its own port.
    assert any(c.startswith("ingestor serve") for c in commands)
    curls = [c.replace("localhost:8080", address) for c in commands if c.startswith(("curl", "until"))]
    assert len(curls) == 4
    for command in curls:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (command, done.stderr)
        if command.startswith("until"):
            continue
        answer = json.loads(done.stdout)
        assert not (isinstance(answer, dict) and "error" in answer), (command, answer)
        if "/search" in command:
            assert answer["results"], command
            assert {r["metadata"]["module"] for r in answer["results"]} <= {"builtins", "functools", "itertools"}
    ran = subprocess.run(
        [sys.executable, "-c", python.replace("http://localhost:8080", server.url)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    dimension, tokens = ran.stdout.split()
    assert int(dimension) == 384 and int(tokens) > 2
