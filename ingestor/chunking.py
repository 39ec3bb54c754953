"""Splitting a record's text into chunks that each fit the model, cut where an edit stays local.

Pure: the same text and settings always give the same chunks.

A chunk has a budget of `max_tokens - specials - overlap_tokens` own tokens (the first chunk, with
no overlap prefix, may use the overlap's share too). A record that fits whole is one chunk. A
longer one is cut in *sections*, each chunked on its own:

* A paragraph (text between blank lines) over the budget is a section of its own, cut first at
  *sentence anchors*: sentence boundaries picked by a hash of the sentence before them (by content,
  not position), about one per `ANCHOR_SPACING + 1` budgets of text and never within one budget of
  the previous anchor. Between anchors sentences are packed greedily; a sentence over the budget is
  cut at whitespace, a word over it at token starts.
* Runs of paragraphs within the budget are cut into sections at *paragraph anchors* (after a
  paragraph picked by a hash of its text, once the section holds a budget of tokens), and each
  section's paragraphs are packed greedily into chunks. Greedy packing alone resyncs after an edit
  only by luck (one line inserted in a log moves every later cut); anchors, picked by content,
  bring the cuts back in step.
* Chunk i+1 starts up to `overlap_tokens` tokens before chunk i's end, moved forward to a word
  start, inside chunk i's own text.

So, for a tokenizer whose tokens never straddle whitespace (BERT's WordPiece), an edit changes only
the chunks from the one before it to the first section edge after it that both versions share,
plus one (docs/performance.md has what edits cost on real documents).

Boundaries come from one tokenisation of the whole text. Each chunk is then counted on its own
(one batch call), since a substring may tokenise differently (a word cut at a token start); a chunk
over `max_tokens` is cut shorter, down to single characters if the tokenizer demands it. A text
with no non-whitespace character is one chunk spanning all of it, so every record has a chunk.
"""

from __future__ import annotations

import re
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ingestor.config import ChunkingSettings
from ingestor.errors import StartupError
from ingestor.parsing import sha256_hex
from ingestor.records import Chunked, ChunkOf, Document
from ingestor.tokenizer import Tokens

ANCHOR_SPACING = 3  # expected budgets of text between candidate anchors, beyond the 1 guaranteed

_BREAK = re.compile(r"\n[^\S\n]*\n")  # a blank line, which may hold spaces, tabs or a \r
# Where a sentence starts: after terminal punctuation (and closing quotes) then whitespace, after
# full-width terminals with or without it (CJK has no spaces), or after any single newline.
_SENTENCE = re.compile(r"""(?:[.!?…]+['"”’)\]]*\s+|[。！？]+['"”’」』)\]]*\s*|\n\s*)(?=\S)""")
_WORD = re.compile(r"(?<=\s)\S")


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int  # 0-based, in the order of char_start
    text: str  # exactly the record's text[char_start:char_end]
    char_start: int
    char_end: int
    tokens: int  # what the model sees for `text`, special tokens included
    # Those tokens' ids, when the tokenizer gave them while counting: the forward pass takes them
    # as they are (the chunk fits), so the text is not tokenised a second time.
    token_ids: list[int] | None = field(default=None, compare=False, repr=False)


class TokenCounter(Protocol):
    """What the splitter needs of a tokenizer. One with a `counts(texts) -> list[int]` method as
    well (a batch `count`, as `ingestor.tokenizer.Tokenizer` has) is counted in one call; one whose
    `encode_many(texts)` gives token ids (or None where it cannot) hands them on with each chunk."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token, special tokens left out."""
        ...

    def count(self, text: str) -> int:
        """Tokens the model sees for the text, special tokens included."""
        ...


@dataclass(frozen=True)
class Splitter:
    tokenizer: TokenCounter
    max_tokens: int
    overlap_tokens: int
    specials: int = field(init=False)  # the model's special tokens, which every chunk carries

    def __post_init__(self) -> None:
        specials = self.tokenizer.count("")
        if self.overlap_tokens < 0:
            raise ValueError(f"overlap_tokens is {self.overlap_tokens}: make it 0 or more")
        if self.max_tokens - specials - self.overlap_tokens < 1:
            raise ValueError(
                f"max_tokens ({self.max_tokens}) leaves no room for text after the model's {specials} "
                f"special tokens and overlap_tokens ({self.overlap_tokens}): raise max_tokens above "
                f"{specials + self.overlap_tokens} or lower overlap_tokens"
            )
        object.__setattr__(self, "specials", specials)

    @property
    def layout(self) -> str:
        """What the chunk boundaries depend on besides the text and the tokenizer (part of each
        record's content hash: new settings re-chunk a record instead of skipping it)."""
        return f"chunks:{self.max_tokens}/{self.overlap_tokens}"

    def split(self, text: str) -> list[Chunk]:
        return self.split_many([text])[0]

    def split_many(self, texts: list[str]) -> list[list[Chunk]]:
        """The chunks of each text, with every text counted whole in one tokenizer call when it
        has `counts` or `encode_many` (most records are short: one chunk each, and no further
        call). A record that fits whole is one chunk, paragraphs or not: most records are short,
        and one entity each is what they were before chunking; locality matters for long
        documents."""
        # What `split` counts of each: a text of only whitespace as it is, else stripped.
        edges = [(0, len(t)) if t.isspace() else (len(t) - len(t.lstrip()), len(t.rstrip())) for t in texts]
        pieces = [t[s:e] for t, (s, e) in zip(texts, edges)]
        # A text that is whole (nothing stripped) and could be over the limit (more characters than
        # tokens allowed) is tokenised with offsets at once: if it is long, they are its cut points.
        counts, tokens = self._measure(
            pieces, [len(p) > self.max_tokens and len(p) == len(t) for p, t in zip(pieces, texts)]
        )
        out: list[list[Chunk]] = []
        walks: list[tuple[int, str, _Walk, list[tuple[int, int]]]] = []  # long texts: their first cut
        for t, (s, e), whole, known in zip(texts, edges, counts, tokens):
            if not t or t.isspace():
                out.append([Chunk(0, t, 0, len(t), whole, _ids(known))])
            elif whole <= self.max_tokens:
                out.append([Chunk(0, t[s:e], s, e, whole, _ids(known))])
            else:
                # The first cut trusts the whole-text tokens.
                offsets = known.offsets if known is not None and (s, e) == (0, len(t)) else None
                walk = _Walk(t, self, offsets)
                walks.append((len(out), t, walk, walk.run(lambda a, b: 0)))
                out.append([])
        # Every chunk of the first cuts, counted on its own, in one tokenizer call.
        span_counts, span_tokens = self._measure([t[a:b] for _, t, _, spans in walks for a, b in spans])
        at = 0
        for i, text, walk, spans in walks:
            n, at = at, at + len(spans)
            out[i] = self._cut(text, walk, spans, span_counts[n:at], span_tokens[n:at])
        return out

    def _measure(
        self, pieces: list[str], with_offsets: list[bool] | None = None
    ) -> tuple[list[int], list[Tokens | None]]:
        """Each piece's token count, and its tokens where the tokenizer gives them."""
        if not pieces:
            return [], []
        encode = getattr(self.tokenizer, "encode_many", None)
        tokens = encode(pieces, with_offsets or ()) if encode is not None else None
        if tokens is not None:
            return [len(t.ids) for t in tokens], list(tokens)
        batch = getattr(self.tokenizer, "counts", None)
        return (batch(pieces) if batch else [self.tokenizer.count(p) for p in pieces]), [None] * len(pieces)

    def _cut(
        self,
        text: str,
        walk: _Walk,
        spans: list[tuple[int, int]],
        counts: list[int],
        span_tokens: list[Tokens | None],
    ) -> list[Chunk]:
        """The chunks of a long text from its first cut (`spans`, each counted on its own). Should
        one be over, a second pass retraces the first (its counts known) and cuts shorter there."""
        known = dict(zip(spans, counts))
        known_ids = dict(zip(spans, map(_ids, span_tokens)))
        if any(known[span] > self.max_tokens for span in spans):

            def over(s: int, e: int) -> int:
                if (s, e) not in known:
                    known[(s, e)] = self.tokenizer.count(text[s:e])
                return known[(s, e)] - self.max_tokens

            spans = walk.run(over)
        return [Chunk(i, text[s:e], s, e, known[(s, e)], known_ids.get((s, e))) for i, (s, e) in enumerate(spans)]


class _Walk:
    """Cut points of one text: its whole-text token starts, sentence starts and word starts."""

    def __init__(self, text: str, settings: Splitter, offsets: list[tuple[int, int]] | None = None) -> None:
        """`offsets`: the text's token spans, special tokens left out, if already known."""
        self.text, self.overlap = text, settings.overlap_tokens
        self.budget = settings.max_tokens - settings.specials - settings.overlap_tokens
        self.first_budget = settings.max_tokens - settings.specials  # no prefix to make room for
        self.starts = sorted(s for s, _ in (offsets if offsets is not None else settings.tokenizer.offsets(text)))
        self.cuts = sorted(set(self.starts))
        self.sentences = [m.end() for m in _SENTENCE.finditer(text)]
        self.words = [m.start() for m in _WORD.finditer(text)]

    def tokens(self, a: int, b: int) -> int:
        return bisect_left(self.starts, b) - bisect_left(self.starts, a)

    def run(self, over: Callable[[int, int], int]) -> list[tuple[int, int]]:
        """Chunk spans, each shortened until `over` (tokens past max_tokens) says it fits."""
        spans: list[tuple[int, int]] = []
        own = 0  # where the previous chunk's own text (after its prefix) starts
        for long, paras in self.sections():
            if long:
                edges = self.regions(*paras[0], first=not spans)
            else:
                edges = self.packs(paras, first=not spans)
            for rs, re_ in zip(edges, edges[1:]):
                c = rs
                while c < re_:
                    limit = self.budget if spans else self.first_budget
                    start, end = self.chunk(self.prefix(own, c) if spans else c, c, re_, limit, over)
                    spans.append((start, self.rstrip(end)))
                    own, c = c, end
                    while c < re_ and self.text[c].isspace():
                        c += 1
        return spans

    def sections(self) -> list[tuple[bool, list[tuple[int, int]]]]:
        """The paragraphs in the groups that are cut independently of each other, in order: a
        paragraph over the budget alone, (True, [its span]); else a run of paragraphs within the
        budget, (False, their spans), that ends before a long paragraph, at the document's end, or
        at a *paragraph anchor*: after a paragraph picked by a hash of its text, once the run holds
        at least one budget of tokens."""
        out: list[tuple[bool, list[tuple[int, int]]]] = []
        run: list[tuple[int, int]] = []
        for i, (ps, pe) in enumerate(self.paragraphs()):
            n = self.tokens(ps, pe)
            if n > (self.first_budget if i == 0 else self.budget):
                if run:
                    out.append((False, run))
                    run = []
                out.append((True, [(ps, pe)]))
                continue
            run.append((ps, pe))
            key = zlib.crc32(self.text[ps:pe].encode("utf-8", "surrogatepass"))
            # As for sentence anchors: the chance grows with the paragraph's tokens, so anchors come
            # about every ANCHOR_SPACING budgets of text (plus the one kept clear), whatever the
            # paragraphs' lengths; and a run of copies of one paragraph still packs a budget a run.
            if self.tokens(run[0][0], pe) >= self.budget and key * ANCHOR_SPACING * self.budget < n << 32:
                out.append((False, run))
                run = []
        if run:
            out.append((False, run))
        return out

    def packs(self, paras: list[tuple[int, int]], first: bool) -> list[int]:
        """Edges of the packs a run of paragraphs within the budget is cut in: from the run's
        start, each pack takes the next paragraphs while they fit the budget together (the
        document's first pack: the first chunk's budget); a new pack starts at a paragraph."""
        edges, limit = [paras[0][0]], self.first_budget if first else self.budget
        for ps, pe in paras[1:]:
            if self.tokens(edges[-1], pe) > limit:
                edges.append(ps)
                limit = self.budget
        return [*edges, paras[-1][1]]

    def paragraphs(self) -> list[tuple[int, int]]:
        """Spans of the paragraphs' text, whitespace at their edges left out; blank ones skipped."""
        bounds = [0, *(x for m in _BREAK.finditer(self.text) for x in m.span()), len(self.text)]
        out = []
        for a, b in zip(bounds[::2], bounds[1::2]):
            piece = self.text[a:b]
            body = piece.strip()
            if body:
                s = a + len(piece) - len(piece.lstrip())
                out.append((s, s + len(body)))
        return out

    def regions(self, ps: int, pe: int, first: bool) -> list[int]:
        """Edges of the regions a paragraph is cut in independently: its ends, and between them,
        if it is over the budget, anchors (sentence starts)."""
        if self.tokens(ps, pe) <= (self.first_budget if first else self.budget):
            return [ps, pe]
        edges, prev = [ps], ps
        for s in self.sentences[bisect_right(self.sentences, ps) : bisect_left(self.sentences, pe)]:
            n = self.tokens(prev, s)
            key = zlib.crc32(self.text[prev:s].strip().encode("utf-8", "surrogatepass"))
            # An anchor's chance grows with its sentence's tokens: anchors come about every
            # ANCHOR_SPACING budgets of text (plus the one kept clear), sentences short or long.
            if self.tokens(edges[-1], s) >= self.budget and key * ANCHOR_SPACING * self.budget < n << 32:
                edges.append(s)
            prev = s
        return [*edges, pe]

    def prefix(self, own: int, c: int) -> int:
        """Where a chunk whose own text starts at c begins: the first word start after the previous
        chunk's own start with at most `overlap` tokens from there to c; else c."""
        if self.overlap == 0:
            return c
        i = bisect_left(self.starts, c) - self.overlap
        lo = 0 if i <= 0 else self.starts[i] + (self.starts[i - 1] == self.starts[i])
        j = bisect_left(self.words, max(lo, own + 1))
        return self.words[j] if j < len(self.words) and self.words[j] < c else c

    def best_cut(self, c: int, re_: int, limit: int) -> int:
        """The end of the own text from c: the last sentence start, else word start, else token
        start that leaves at most `limit` tokens; the region's end if all of it fits."""
        i = bisect_left(self.starts, c) + limit
        q = self.starts[i] if i < len(self.starts) else len(self.text)
        if q >= re_:
            return re_
        for level in (self.sentences, self.words, self.cuts):
            k = bisect_right(level, q) - 1
            if k >= 0 and level[k] > c:
                return level[k]
        k = bisect_right(self.cuts, c)  # more than `limit` tokens start at c itself: take them
        return min(self.cuts[k], re_) if k < len(self.cuts) else re_

    def chunk(self, start: int, c: int, re_: int, limit: int, over: Callable[[int, int], int]) -> tuple[int, int]:
        """(start, end) of the chunk with own text from c, made to fit: its overlap prefix dropped
        first (that leaves later cuts alone), then its own text cut shorter."""
        while True:
            end = self.best_cut(c, re_, limit)
            excess = over(start, self.rstrip(end))
            own = self.tokens(c, end)
            if excess <= 0:
                return start, end
            if start < c:
                start = c
            elif own > 1 and limit > 1:
                limit = max(1, min(limit, own) - excess)
            else:
                break
        # Fewer tokens than one whole-text token holds: cut between characters.
        lo, hi = c + 1, end
        if over(c, lo) > 0:
            raise ValueError(f"the character at {c} alone is over max_tokens: raise max_tokens")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if over(c, self.rstrip(mid)) <= 0 else (lo, mid)
        return c, lo

    def rstrip(self, end: int) -> int:
        while self.text[end - 1].isspace():
            end -= 1
        return end


def _ids(tokens: Tokens | None) -> list[int] | None:
    return tokens.ids if tokens is not None else None


def chunk_id(record_id: str, index: int) -> str:
    """The primary key of a record's chunk."""
    return f"{record_id}#{index}"


def chunk_all(docs: list[Document], splitter: Splitter) -> list[Document]:
    """The documents each record's chunks become (`attach_chunks`), flattened, with the records
    counted in one tokenizer call (`Splitter.split_many`); a record whose chunks were made already
    keeps them."""
    attach_chunks([d for d in docs if d.parts is None], splitter)
    return [c for doc in docs for c in doc.parts or ()]


def attach_chunks(docs: list[Document], splitter: Splitter) -> None:
    """Cut each record into its chunk documents now (`Document.parts`), in one tokenizer call."""
    if docs:
        for doc, chunks in zip(docs, splitter.split_many([d.text for d in docs])):
            doc.parts = _chunk_documents(doc, chunks)


def _chunk_documents(doc: Document, chunks: list[Chunk]) -> list[Document]:
    """One document per chunk, each with its own id and text and the record's metadata, all
    settling the record together (`Chunked`)."""
    progress = Chunked(record=doc, count=len(chunks), left=len(chunks))
    return [
        Document(
            raw=doc.raw,
            id=chunk_id(doc.id, c.index),
            text=c.text,
            text_sha256=doc.text_sha256 if c.text == doc.text else sha256_hex(c.text),
            metadata=doc.metadata,
            metadata_json=doc.metadata_json,
            chunk=ChunkOf(
                progress=progress, index=c.index, char_start=c.char_start, char_end=c.char_end, token_ids=c.token_ids
            ),
        )
        for c in chunks
    ]


class Model(Protocol):
    """What the splitter needs of the embedder."""

    @property
    def tokenizer(self) -> TokenCounter: ...

    @property
    def max_seq_length(self) -> int: ...


def splitter_for(settings: ChunkingSettings, model: Model) -> Splitter | None:
    """The splitter the settings ask for with this model, or None when chunking is off. Settings
    the model cannot honour stop the start (StartupError: exit 2) with what to change."""
    if not settings.enabled:
        return None
    model_max_tokens = model.max_seq_length
    max_tokens = settings.max_tokens or model_max_tokens
    if max_tokens > model_max_tokens:
        raise StartupError(
            f"chunking.max_tokens is {max_tokens}, but the model takes at most {model_max_tokens} tokens: "
            f"lower chunking.max_tokens (INGESTOR_CHUNKING__MAX_TOKENS) or unset it"
        )
    try:
        return Splitter(model.tokenizer, max_tokens, settings.overlap_tokens)
    except ValueError as exc:
        raise StartupError(f"chunking settings do not fit the model: {exc}") from None
