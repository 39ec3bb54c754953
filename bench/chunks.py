"""`python -m bench --long-documents`: chunking's throughput and the re-embedding it saves.

On long documents (`bench.corpus.long_documents`, real prose of 2,000 to 40,000 characters), in one
run, on one loaded model:

  (a) plain     `SentenceTransformer.encode` over the very chunks the splitter makes of the
                documents, at its best batch size: the ceiling, in chunks/s and tokens/s.
  (c) pipeline  the daemon with chunking on, through real Kafka, Redis and Milvus: the documents
                in, their chunks out, timed as the short-text bench times (c).
  (g) edits     every document again with one word changed in its middle paragraph (new
                versions of the same ids): the share of their chunks that came from the cache
                instead of the model.

Tokens are the chunks' own (special tokens included), one count for every variant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.accounting import cpu_name, ratio, with_cpu
from bench.corpus import edit_middle_paragraph, long_documents
from bench.services import DEFAULT_REDIS_URL, Services, milvus_rows
from bench.variants import bench_daemon, bench_plain, daemon_settings, warm_up
from ingestor.chunking import splitter_for
from ingestor.config import Settings
from ingestor.corpus import Record


def run_chunk_bench(
    settings: Settings,
    milvus_uri: str | None = None,
    limit: int | None = None,
    partitions: int = 4,
    keep: bool = False,
    progress: Callable[[str], None] = lambda s: None,
    embedder: Any = None,
) -> dict[str, Any]:
    import torch

    from ingestor.embedder import Embedder, resolve_device

    settings = settings.model_copy(update={"chunking": settings.chunking.model_copy(update={"enabled": True})})
    device = resolve_device(settings.model.device, settings.model.backend)
    if embedder is None:
        progress(f"loading the model on {device} ({settings.model.precision})")
        embedder = Embedder(settings.model.model_copy(update={"device": device}), settings.runtime.torch_threads)
    docs = long_documents()[:limit] if limit else long_documents()
    splitter = splitter_for(settings.chunking, embedder)
    assert splitter is not None
    chunks = [c for d in docs for c in splitter.split(d.text)]
    texts = [c.text for c in chunks]
    tokens = sum(c.tokens for c in chunks)
    result: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name(),
        "precision": settings.model.variant,
        "documents": len(docs),
        "characters": sum(len(d.text) for d in docs),
        "chunks": len(chunks),
        "tokens": tokens,
        "chunk_settings": splitter.layout,
    }
    redis_url = settings.redis.url.get_secret_value() if settings.redis.url is not None else DEFAULT_REDIS_URL
    svc = Services(settings, redis_url, partitions, keep, milvus_uri)
    result["sink"] = milvus_uri or "Milvus Lite (a file, served from a child process)"
    try:
        progress("warming the model up")
        warm_up(embedder.model, texts)
        progress(f"(a) plain encode of the {len(chunks)} chunks of {len(docs)} documents")
        plain = with_cpu(lambda: bench_plain(embedder.model, texts, tokens))
        plain.pop("_vectors")
        plain["chunks_per_s"] = plain["texts_per_s"]
        result["plain"] = plain

        progress(f"(c) the daemon, chunking on, on the {len(docs)} documents (cold cache)")
        uri, collection, prefix = svc.milvus_uri("chunks"), svc.collection("chunks"), svc.redis_prefix("chunks")
        s_c = daemon_settings(
            settings, svc.topic("chunks", docs), svc.name("chunks-group"), uri, collection, redis_url, prefix
        )
        pipeline = with_cpu(lambda: bench_daemon(s_c, embedder, docs, tokens))
        pipeline["chunks_per_s"] = round(len(chunks) / pipeline["seconds"], 2) if pipeline["seconds"] else None
        pipeline["milvus_rows"] = len(milvus_rows(uri, collection, ["id"], settings.milvus.lite_in_process))
        pipeline["milvus_rows_match"] = pipeline["milvus_rows"] == len(chunks)
        result["pipeline"] = pipeline

        edited = [Record(d.id, edit_middle_paragraph(d.text), d.metadata) for d in docs]
        new_chunks = [c for d in edited for c in splitter.split(d.text)]
        progress(f"(g) the daemon on the {len(edited)} documents again, one word of each edited")
        s_g = daemon_settings(
            settings, svc.topic("edits", edited), svc.name("edits-group"), uri, collection, redis_url, prefix
        )
        edits = with_cpu(lambda: bench_daemon(s_g, embedder, edited, sum(c.tokens for c in new_chunks)))
        counts = edits["counts"]
        edits["chunks"] = len(new_chunks)
        edits["chunks_unchanged"] = len({c.text for c in new_chunks} & set(texts))
        edits["cache_hit_share"] = ratio(counts["cache_hits"], counts["cache_hits"] + counts["embedded"])
        result["edits"] = edits
    finally:
        svc.cleanup()
    result["ratios"] = {"pipeline_vs_plain": ratio(pipeline["chunks_per_s"], plain["chunks_per_s"])}
    return result


def render_chunks(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    console.print(
        f"device [bold]{result['device']}[/bold] ({result['device_name']}), precision "
        f"[bold]{result['precision']}[/bold]; {result['documents']} documents, "
        f"{result['characters']:,} characters, {result['chunks']:,} chunks ({result['chunk_settings']}), "
        f"{result['tokens']:,} tokens; sink: {result['sink']}",
        highlight=False,
    )
    table = Table(title="long documents, chunked")
    for col in ("variant", "seconds", "chunks/s", "tokens/s", "documents/s"):
        table.add_column(col, justify="right", no_wrap=True)
    plain, pipeline, edits = result["plain"], result["pipeline"], result["edits"]
    table.add_row(
        "(a) plain encode of the chunks",
        f"{plain['seconds']:.2f}",
        f"{plain['chunks_per_s']:.1f}",
        f"{plain['tokens_per_s']:.0f}",
        "–",
    )
    table.add_row(
        "(c) pipeline, chunking on",
        f"{pipeline['seconds']:.2f}",
        f"{pipeline['chunks_per_s']:.1f}",
        f"{pipeline['tokens_per_s']:.0f}",
        f"{pipeline['texts_per_s']:.1f}",
    )
    console.print(table)
    ratio_ = result["ratios"]["pipeline_vs_plain"]
    expected = "as expected" if pipeline["milvus_rows_match"] else "NOT the chunk count"
    console.print(
        f"(c)/(a) in chunks/s: [bold]{'–' if ratio_ is None else f'{ratio_:.2f}'}[/bold]; Milvus holds "
        f"{pipeline['milvus_rows']} chunk entities ({expected})"
    )
    share = edits["cache_hit_share"]
    console.print(
        f"(g) one word edited in each document: {int(edits['counts']['embedded'])} chunks embedded, "
        f"{int(edits['counts']['cache_hits'])} from the cache ({'–' if share is None else f'{100 * share:.0f}%'} "
        f"of the edited documents' chunks; {edits['chunks_unchanged']} of {edits['chunks']} distinct chunk texts "
        f"were unchanged)",
        highlight=False,
    )
