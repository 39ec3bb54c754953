"""The bench's corpora, made from the bundled sample: a corpus cycled into more records of
distinct texts, long documents for chunking, and a small edit of a document. The tests use them too."""

from __future__ import annotations

import json

from ingestor.corpus import SAMPLE, Record, load_corpus


def kafka_message(record: Record) -> tuple[bytes, bytes]:
    """The record as a Kafka message: its id as the key, its id, text and metadata as JSON the value."""
    value: dict[str, object] = {"id": record.id, "text": record.text}
    if record.metadata:
        value["metadata"] = record.metadata
    return record.id.encode("utf-8"), json.dumps(value, ensure_ascii=False).encode("utf-8")


def cycled(corpus: list[Record], n: int, tag: str = "") -> list[Record]:
    """`n` records cycling through the corpus, each with an id and a text of its own: the first
    cycle is the corpus itself, cycle c after it the same records with `~<tag>c` added to their
    ids and ` (<tag>c)` to their texts (a repeated text would come from the cache, and skip the
    very stages a bench measures). Metadata as in the corpus. A corpus cycled already stays
    distinct when cycled again under another tag (`python -m bench --cycles`, then its (f))."""
    out: list[Record] = []
    for i in range(n if corpus else 0):
        cycle, rec = divmod(i, len(corpus))
        source = corpus[rec]
        if cycle == 0:
            out.append(source)
        else:
            out.append(Record(f"{source.id}~{tag}{cycle}", f"{source.text} ({tag}{cycle})", source.metadata))
    return out


def long_documents(min_chars: int = 2_000, max_chars: int = 40_000) -> list[Record]:
    """Long documents of real prose, assembled offline: the bundled sample's paragraphs, module by
    module in order, cut at paragraph breaks into documents of `min_chars` to a few times that
    (the length varies from one document to the next), and Python's own help topics
    (`pydoc_data.topics`, the language reference) of `min_chars` to `max_chars`, cut there at a
    paragraph break. About 250 documents, for the tests and the bench of chunking. Deterministic
    for a given Python."""
    import zlib
    from pydoc_data.topics import topics

    docs: list[Record] = []
    paragraphs = [
        (str(r.metadata.get("module", "")), p) for r in load_corpus(SAMPLE) for p in r.text.split("\n\n") if p.strip()
    ]
    piece: list[str] = []
    modules: list[str] = []
    for module, paragraph in paragraphs:
        piece.append(paragraph)
        if module not in modules:
            modules.append(module)
        target = min_chars * (1 + zlib.crc32(modules[0].encode()) % 3)
        if len("\n\n".join(piece)) >= target:
            docs.append(Record(f"long:{modules[0]}:{len(docs)}", "\n\n".join(piece), {"modules": modules}))
            piece, modules = [], []
    for name in sorted(topics):
        text = topics[name].strip()
        while len(text) > max_chars:
            text = text[: text.rfind("\n\n", 0, max_chars)].rstrip()
        docs.append(Record(f"long:topic:{name}", text, {"topic": name}))
    return [d for d in docs if min_chars <= len(d.text) <= max_chars]


def edit_middle_paragraph(text: str) -> str:
    """The text with one word changed in its middle paragraph: a small edit, as a writer makes."""
    paragraphs = text.split("\n\n")
    middle = len(paragraphs) // 2
    words = paragraphs[middle].split(" ")
    words[len(words) // 2] = "EDITED" if words[len(words) // 2] != "EDITED" else "REVISED"
    paragraphs[middle] = " ".join(words)
    return "\n\n".join(paragraphs)
