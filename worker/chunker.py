"""Splitting documents into chunks that a model reads whole.

:class:`Chunker` counts tokens with the model's own tokenizer (untruncated, through a word
cache as the encoder does) and lets `semchunk <https://github.com/isaacus-dev/semchunk>`_ choose
the boundaries: paragraphs first, then lines, sentences, clauses and words, and characters only
when nothing else fits. Chunks are slices of the document, so their offsets are exact.
``bench/chunkers.py`` measures it beside chonkie's recursive chunker; docs/documents.md says why
this one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from semchunk.semchunk import chunkerify

from embedq.config.contract import MAX_CHUNK_BYTES
from embedq.config.models import DEFAULT_WORD_CACHE

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["Chunker", "Span", "fit_bytes", "token_counter"]

#: A prefix this many characters per token long holds the first ``limit`` tokens of nearly any
#: text (English averages under 5); cutting a longer run keeps less, never more.
_CHARS_PER_TOKEN_BOUND = 64

#: Token counts semchunk keeps per process (it asks for the same pieces repeatedly).
_COUNT_CACHE = 65_536


@dataclass(frozen=True)
class Span:
    """``text == document[start:end]``."""

    start: int
    end: int
    text: str


def token_counter(
    tokenizer: Tokenizer, cache_size: int = DEFAULT_WORD_CACHE
) -> Callable[[str], int]:
    """How many tokens the model sees in a text, before it truncates: a copy of ``tokenizer``
    without truncation or padding, looked up word by word when it is a WordPiece tokenizer."""
    from tokenizers import Tokenizer

    from embedq.worker.speedups.wordcache import WordCache

    counting = Tokenizer.from_str(tokenizer.to_str())
    counting.no_truncation()
    counting.no_padding()
    cache = WordCache.for_tokenizer(counting, cache_size)
    if cache is not None:
        return cache.count
    return lambda text: len(counting.encode(text, add_special_tokens=False).ids)


class Chunker:
    """Chunks of at most ``tokens`` tokens, each repeating up to ``overlap`` tokens of the one
    before; and the cut of a text to the tokens a model reads."""

    def __init__(self, count: Callable[[str], int], tokens: int, overlap: int = 0) -> None:
        self.count = count
        self.tokens = tokens
        self.overlap = overlap
        self._chunk = chunkerify(count, tokens, cache_maxsize=_COUNT_CACHE)
        self._cutters: dict[int, Any] = {}

    def split(self, text: str) -> list[Span]:
        """The chunks of ``text``, in order; a text that fits is one chunk, itself."""
        if len(text) <= self.tokens or self.count(text) <= self.tokens:
            return fit_bytes(Span(0, len(text), text))
        pieces, offsets = cast(
            "tuple[list[str], list[tuple[int, int]]]",
            self._chunk(text, offsets=True, overlap=self.overlap or None),
        )
        spans: list[Span] = []
        for piece, (start, end) in zip(pieces, offsets, strict=True):
            spans += fit_bytes(Span(start, end, piece))
        return spans

    def fits(self, text: str, limit: int) -> bool:
        """Whether a model reading ``limit`` tokens reads all of ``text``."""
        # Every token covers at least one character: a text this short cannot be over.
        return len(text) <= limit or self.count(text) <= limit

    def cut(self, text: str, limit: int) -> Span:
        """The longest start of ``text`` (ending at a word boundary where possible) of at most
        ``limit`` tokens: what a model reading ``limit`` tokens reads of it."""
        # Only the start matters: chunking a long text whole would cost its every token. The
        # model skips leading whitespace; so does the cut.
        start = len(text) - len(text.lstrip())
        head = text[start : start + limit * _CHARS_PER_TOKEN_BOUND]
        cutter = self._cutters.get(limit)
        if cutter is None:
            cutter = self._cutters[limit] = chunkerify(self.count, limit)
        _, offsets = cast("tuple[list[str], list[tuple[int, int]]]", cutter(head, offsets=True))
        end = start + (offsets[0][1] if offsets else len(head))
        return fit_bytes(Span(start, end, text[start:end]))[0]


def fit_bytes(span: Span) -> list[Span]:
    """Split a span whose text is over Milvus's VARCHAR limit (a run of characters the
    tokenizer reads as a few unknown tokens can be), by characters."""
    if len(span.text) * 4 <= MAX_CHUNK_BYTES or len(span.text.encode()) <= MAX_CHUNK_BYTES:
        return [span]
    out: list[Span] = []
    start = 0
    step = MAX_CHUNK_BYTES // 4  # at most 4 bytes per character
    while start < len(span.text):
        piece = span.text[start : start + step]
        out.append(Span(span.start + start, span.start + start + len(piece), piece))
        start += len(piece)
    return out
