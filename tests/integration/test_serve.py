"""`ingestor serve`'s embeddings against one running server (a subprocess, started once): the real
`openai` client and httpx get plain `encode`'s vectors, in floats and base64, with the tokenizer's
token counts; TEI's `/embed` shape; every bad request gets its 4xx and a JSON error, and the server
keeps serving; 200 concurrent requests on a small queue get 429s with Retry-After, never a 5xx."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest

from ingestor.config import DEFAULT_MODEL
from tests.support import harness

pytestmark = pytest.mark.services

MAX_QUEUED_TOKENS = 512
MAX_INPUTS = 64
MAX_INPUT_CHARS = 20_000
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Offsets are committed only after the vectors are written.",
    "Ünïcödé, emoji 🚀 and CJK 日本語",
    "short",
]
LONG = " ".join(["a long text of many words"] * 200)  # over the model's 256 tokens


@pytest.fixture(scope="module")
def server(services, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    env = harness.serve_env(
        str(tmp / "serve.db"),
        redis=True,
        INGESTOR_SERVE__MAX_QUEUED_TOKENS=str(MAX_QUEUED_TOKENS),
        INGESTOR_SERVE__MAX_INPUTS_PER_REQUEST=str(MAX_INPUTS),
        INGESTOR_SERVE__MAX_INPUT_CHARS=str(MAX_INPUT_CHARS),
    )
    server = harness.start_serve(env, tmp / "serve.log")
    yield server
    assert harness.stop(server.proc) == 0, server.log()[-3000:]
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert not any(t in log for t in TEXTS), "a text reached the log"


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def reference_tokens(reference_model, texts: list[str]) -> list[int]:
    enc = reference_model.tokenizer(texts, truncation=True, max_length=reference_model.max_seq_length)
    return [len(ids) for ids in enc["input_ids"]]


def test_the_openai_client_gets_encodes_vectors(server, reference_model):
    import openai

    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    expected = reference_model.encode(TEXTS)
    # Unless told otherwise the client asks for base64 and decodes it itself.
    for got in (
        api.embeddings.create(model=DEFAULT_MODEL, input=TEXTS),
        api.embeddings.create(model=DEFAULT_MODEL, input=TEXTS, encoding_format="float"),
    ):
        vectors = np.array([d.embedding for d in sorted(got.data, key=lambda d: d.index)], dtype=np.float32)
        assert vectors.shape == expected.shape
        assert cosines(vectors, expected).min() >= 0.999
        assert got.model == DEFAULT_MODEL
        assert got.usage.prompt_tokens == sum(reference_tokens(reference_model, TEXTS))
    one = api.embeddings.create(model="all-MiniLM-L6-v2", input="short")
    assert cosines(np.array([one.data[0].embedding]), expected[3:]).min() >= 0.999


def test_httpx_float_and_base64_are_the_same_vectors(client, reference_model):
    body = {"model": DEFAULT_MODEL, "input": TEXTS}
    floats = client.post("/v1/embeddings", json=body).json()
    packed = client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    a = np.array([d["embedding"] for d in floats["data"]], dtype=np.float32)
    b = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]])
    assert np.array_equal(a, b)
    assert cosines(a, reference_model.encode(TEXTS)).min() >= 0.999
    assert [d["index"] for d in floats["data"]] == list(range(len(TEXTS)))
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] == packed["usage"]["prompt_tokens"]


def test_a_long_input_is_cut_as_run_cuts_it_and_says_so_unless_refused(client, reference_model):
    body = {"model": DEFAULT_MODEL, "input": [LONG, "short"]}
    answer = client.post("/v1/embeddings", json=body)
    assert answer.status_code == 200
    assert answer.headers["X-Ingestor-Truncated-Inputs"] == "1"
    usage = answer.json()["usage"]
    assert usage["truncated_inputs"] == 1
    assert usage["prompt_tokens"] == sum(reference_tokens(reference_model, [LONG, "short"]))
    vector = np.array([answer.json()["data"][0]["embedding"]])
    assert cosines(vector, reference_model.encode([LONG])).min() >= 0.999  # encode truncates alike
    refused = client.post("/v1/embeddings", json={**body, "truncate": False})
    assert refused.status_code == 413
    error = refused.json()
    assert error["type"] == "input_too_long" and "input 0" in error["error"] and "256" in error["error"]


def test_a_client_batch_over_the_pass_limits_is_split_and_answered_whole(client, reference_model):
    texts = [f"text number {i} of a batch larger than one forward pass" for i in range(MAX_INPUTS)]
    answer = client.post("/embed", json={"inputs": texts})
    assert answer.status_code == 200
    assert cosines(np.array(answer.json()), reference_model.encode(texts)).min() >= 0.999


def test_tei_embed_answers_teis_shape(client, reference_model):
    one = client.post("/embed", json={"inputs": "short"})
    assert one.status_code == 200
    vectors = one.json()
    assert isinstance(vectors, list) and len(vectors) == 1 and len(vectors[0]) == 384
    many = client.post("/embed", json={"inputs": TEXTS, "normalize": True, "truncate": True})
    got = np.array(many.json())
    assert got.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert cosines(got, reference_model.encode(TEXTS)).min() >= 0.999
    raw = client.post("/embed", json={"inputs": TEXTS, "normalize": False, "truncation_direction": "Right"})
    assert raw.status_code == 200


def test_models_lists_the_one_model(client):
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == [DEFAULT_MODEL]
    assert models["data"][0]["dimension"] == 384


def test_repeated_queries_come_from_the_redis_cache(client):
    before = harness.metric_value(client.get("/metrics").text, "ingestor_serve_texts_total", source="cache")
    text = "a query asked twice, cached under the key ingestion uses"
    first = client.post("/embed", json={"inputs": text}).json()
    second = client.post("/embed", json={"inputs": text}).json()
    assert np.allclose(first, second)
    after = harness.metric_value(client.get("/metrics").text, "ingestor_serve_texts_total", source="cache")
    assert after >= before + 1


M = {"model": DEFAULT_MODEL}
BAD: list[tuple[str, str, object, int, str]] = [
    # (name, path, body (bytes: sent as is), status, type)
    ("empty input", "/v1/embeddings", {**M, "input": ""}, 422, "invalid_request"),
    ("empty list", "/v1/embeddings", {**M, "input": []}, 422, "invalid_request"),
    ("empty list, TEI", "/embed", {"inputs": []}, 422, "invalid_request"),
    ("one empty text in a list", "/embed", {"inputs": ["a", ""]}, 422, "invalid_request"),
    ("10 MB body", "/embed", json.dumps({"inputs": ["x" * 1000] * 10_000}).encode(), 413, "body_too_large"),
    ("non-UTF-8 bytes", "/embed", b'{"inputs": "\xff\xfe caf\xe9"}', 400, "invalid_encoding"),
    ("a lone surrogate", "/embed", b'{"inputs": "\\ud800"}', 400, "invalid_json"),
    ("not JSON", "/embed", b'{"inputs": ', 400, "invalid_json"),
    ("input a number", "/v1/embeddings", {**M, "input": 5}, 422, "invalid_request"),
    ("token arrays", "/v1/embeddings", {**M, "input": [[1, 2, 3]]}, 422, "invalid_request"),
    ("model a number", "/v1/embeddings", {"model": 3, "input": "x"}, 422, "invalid_request"),
    ("no model", "/v1/embeddings", {"input": "x"}, 422, "invalid_request"),
    ("another model", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}, 404, "model_not_found"),
    ("encoding_format", "/v1/embeddings", {**M, "input": "x", "encoding_format": "int8"}, 422, "invalid_request"),
    ("dimensions", "/v1/embeddings", {**M, "input": "x", "dimensions": 64}, 422, "invalid_request"),
    ("body a list", "/embed", [{"inputs": "x"}], 422, "invalid_request"),
    ("normalize a string", "/embed", {"inputs": "x", "normalize": "yes"}, 422, "invalid_request"),
    ("unknown field", "/embed", {"inputs": "x", "truncate_dir": "left"}, 422, "invalid_request"),
    ("too many inputs", "/embed", {"inputs": ["x"] * (MAX_INPUTS + 1)}, 413, "too_many_inputs"),
    ("input too long", "/embed", {"inputs": "x" * (MAX_INPUT_CHARS + 1)}, 413, "input_too_long"),
    ("query a list", "/search", {"query": ["x"]}, 422, "invalid_request"),
    ("k zero", "/search", {"query": "x", "k": 0}, 422, "invalid_request"),
    ("k a string", "/search", {"query": "x", "k": "5"}, 422, "invalid_request"),
    ("raw expression", "/search", {"query": "x", "filter": 'id != ""'}, 422, "invalid_filter"),
    ("raw expression field", "/search", {"query": "x", "expr": 'id != ""'}, 422, "invalid_request"),
    ("unknown filter field", "/search", {"query": "x", "filter": {"field": "vector", "op": "==", "value": 1}}, 422,
     "unknown_field"),
    ("unknown operator", "/search", {"query": "x", "filter": {"field": "lang", "op": "~=", "value": "en"}}, 422,
     "unknown_operator"),
    ("operator with an expression", "/search",
     {"query": "x", "filter": {"field": "lang", "op": '== "en" or id !=', "value": "en"}}, 422, "unknown_operator"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "kind"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_request_gets_its_4xx_with_a_json_error_and_the_server_keeps_serving(client, path, body, status, kind):
    if isinstance(body, bytes):
        answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        answer = client.post(path, json=body)
    assert answer.status_code == status, answer.text[:500]
    error = answer.json()
    assert set(error) == {"error", "type", "detail"} and error["type"] == kind, error
    assert error["error"]
    assert client.post("/embed", json={"inputs": "still serving"}).status_code == 200


def test_200_concurrent_requests_on_a_small_queue_get_429s_and_no_5xx(server, reference_model):
    texts = [f"concurrent query {i}: " + "words " * (i % 20) for i in range(200)]
    expected = reference_model.encode(texts)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as c:
            return await asyncio.gather(*(c.post("/embed", json={"inputs": t}) for t in texts))

    answers = asyncio.run(burst())
    codes = [a.status_code for a in answers]
    assert not [c for c in codes if c >= 500], codes
    refused = [a for a in answers if a.status_code == 429]
    assert refused, f"no 429 for {len(texts)} requests on a queue of {MAX_QUEUED_TOKENS} tokens"
    for a in refused:
        assert int(a.headers["Retry-After"]) >= 1 and a.json()["type"] == "overloaded"
    ok = [i for i, a in enumerate(answers) if a.status_code == 200]
    assert ok and set(codes) <= {200, 429}
    got = np.array([answers[i].json()[0] for i in ok])
    assert cosines(got, expected[ok]).min() >= 0.999
    metrics = httpx.get(f"{server.url}/metrics").text
    assert harness.metric_value(metrics, "ingestor_serve_requests_total", endpoint="/embed", code="429") == len(refused)


def test_an_unknown_path_or_method_is_a_json_error(client):
    missing = client.post("/v2/embeddings", json={})
    assert missing.status_code == 404 and missing.json()["type"] == "not_found"
    wrong = client.get("/embed")
    assert wrong.status_code == 405 and wrong.json()["type"] == "method_not_allowed"


def test_health_and_metrics_in_the_daemons_conventions(client):
    assert client.post("/embed", json={"inputs": "x"}).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok", "reason": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    text = client.get("/metrics").text
    assert harness.metric_value(text, "ingestor_serve_requests_total", endpoint="/embed", code="200") > 0
    assert "ingestor_serve_queued_tokens" in text and "ingestor_batch_records_bucket" in text
