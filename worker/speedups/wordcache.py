"""Token ids looked up per word instead of re-tokenized: the ids of a BERT WordPiece tokenizer,
several times faster, for static models.

A static model spends almost all of its time in the tokenizer (a 300-token passage: ~0.9 ms of
one core tokenizing, ~0.1 ms averaging vectors), most of it the Hugging Face tokenizer tracking
every character's alignment through normalization, which a static model never reads. With a
BERT normalizer and pre-tokenizer, a text's tokens are the tokens of its whitespace-separated
chunks, one after another: normalization works character by character and never removes a
space, tab, newline or carriage return; the pre-tokenizer splits at each of them; WordPiece
works word by word. So each distinct chunk ("world," or "café") is tokenized once, by the
tokenizer itself, and kept; a text is a join of lookups. A text holding an added token
(``[UNK]``) and any tokenizer built another way (or with an added token that holds a space)
go to the tokenizer whole. Ids therefore equal
``Tokenizer.encode_batch_fast(..., add_special_tokens=False)``; tests compare them on corpora
and random text, and the vectors bit for bit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

from model2vec import StaticModel

from embedq.config.models import DEFAULT_WORD_CACHE

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["CachedStaticModel", "WordCache"]
#: Longer chunks (a URL, a hash) are tokenized every time rather than kept.
_LONGEST_KEPT = 64
#: ... but their token counts are kept up to this length.
_LONGEST_COUNTED = 1024

# The only characters that always separate chunks (clean_text removes other control
# characters, which would join the chunks around them).
_SEPARATORS = re.compile(r"[ \t\n\r]+")
# ASCII whitespace str.split would split at but clean_text removes.
_REMOVED_SPACE = re.compile(r"[\x0b\x0c\x1c-\x1f]")
# Any whitespace str.split would split at other than the separators (re's \s is str.isspace).
_OTHER_SPACE = re.compile(r"[^\S \t\n\r]")


def _has_space(content: str) -> bool:
    return any(ch.isspace() for ch in content)


class WordCache:
    """Ids of a BERT WordPiece tokenizer, from a bounded cache of per-chunk ids."""

    def __init__(self, tokenizer: Tokenizer, *, lowercase: bool, size: int) -> None:
        self._tokenizer = tokenizer
        self._lowercase = lowercase
        # Added tokens match inside raw text before any splitting, so such a text is tokenized
        # whole. Compared in lower case when the normalizer lowercases (a superset of matches).
        contents = [t.content for t in tokenizer.get_added_tokens_decoder().values()]
        self._added = tuple(c.lower() for c in contents) if lowercase else tuple(contents)
        self._size = size
        self._known: dict[str, list[int]] = {}
        #: The same chunks' token counts, for :meth:`count`.
        self._lengths: dict[str, int] = {}

    @classmethod
    def for_tokenizer(
        cls, tokenizer: Tokenizer, size: int = DEFAULT_WORD_CACHE
    ) -> WordCache | None:
        """A cache for ``tokenizer``, or None when it is not a BERT WordPiece tokenizer (the
        only kind whose tokens are known to split at whitespace) or ``size`` is 0."""
        spec: dict[str, Any] = json.loads(tokenizer.to_str())
        normalizer = spec.get("normalizer") or {}
        pre_tokenizer = spec.get("pre_tokenizer") or {}
        if (
            size <= 0
            or normalizer.get("type") != "BertNormalizer"
            or pre_tokenizer.get("type") != "BertPreTokenizer"
            or (spec.get("model") or {}).get("type") != "WordPiece"
            or len(spec.get("added_tokens") or []) > 64  # each is a substring check per text
            # One that spans a space ("new york") can match across chunks, even as "new\tyork"
            or any(_has_space(t.get("content", "")) for t in spec.get("added_tokens") or [])
        ):
            return None
        return cls(tokenizer, lowercase=bool(normalizer.get("lowercase", True)), size=size)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """What ``encode_batch_fast(texts, add_special_tokens=False)`` gives as ids, truncated
        as the tokenizer is configured at the time of the call."""
        truncation, padding = self._tokenizer.truncation, self._tokenizer.padding
        # model2vec switches padding off by padding to length 0; any other padding would pad
        # each chunk, and any other truncation is not a plain cut: the tokenizer does those.
        if (padding is not None and (padding["length"] != 0 or padding["pad_to_multiple_of"])) or (
            truncation is not None and (truncation["direction"] != "right" or truncation["stride"])
        ):
            return self._whole(texts)
        limit: int | None = None if truncation is None else truncation["max_length"]
        known = self._known
        rows: list[list[int]] = []
        whole: list[int] = []
        pending: list[tuple[int, list[str]]] = []
        for i, text in enumerate(texts):
            rows.append([])
            chunks = self._chunks(text)
            if chunks is None:
                whole.append(i)
                continue
            looked_up = list(map(known.get, chunks))
            if None in looked_up:
                pending.append((i, chunks))
                continue
            rows[i] = list(chain.from_iterable(cast("list[list[int]]", looked_up)))[:limit]
        if pending:
            fresh = self._tokenize({c for _, chunks in pending for c in chunks if c not in known})
            for i, chunks in pending:
                parts = [fresh[c] if c in fresh else known[c] for c in chunks]
                rows[i] = list(chain.from_iterable(parts))[:limit]
            self._keep(fresh, limit)
        if whole:
            for i, ids in zip(whole, self._whole([texts[i] for i in whole]), strict=True):
                rows[i] = ids
        return rows

    def count(self, text: str) -> int:
        """How many ids :meth:`ids` gives ``text`` when the tokenizer does not truncate."""
        chunks = self._chunks(text)
        if chunks is None:
            return len(self._whole([text])[0])
        lengths = self._lengths
        try:
            return sum(map(lengths.__getitem__, chunks))
        except KeyError:
            pass
        fresh = self._tokenize({c for c in chunks if c not in lengths})
        self._keep(fresh, None)
        total = 0
        for chunk in chunks:
            found = lengths.get(chunk)
            total += len(fresh[chunk]) if found is None else found
        return total

    def _chunks(self, text: str) -> list[str] | None:
        plain = text.isascii()
        if self._lowercase:
            # ASCII lowercasing is the normalizer's; elsewhere Python's and Rust's differ, so
            # non-ASCII chunks are kept as written and normalized by the tokenizer.
            folded = text.lower()
            if any(added in folded for added in self._added):
                return None
            if plain:
                text = folded
        elif any(added in text for added in self._added):
            return None
        if plain and (text.isprintable() or not _REMOVED_SPACE.search(text)):
            return text.split()
        if not _OTHER_SPACE.search(text):
            # str.split splits at exactly the separators when there is no other whitespace.
            return text.split()
        return [chunk for chunk in _SEPARATORS.split(text) if chunk]

    def _tokenize(self, chunks: set[str]) -> dict[str, list[int]]:
        """The ids of unseen chunks, in one call to the tokenizer as it is set. A chunk cut at
        the text's token limit changes nothing: its text is cut there anyway."""
        listed = list(chunks)
        encodings = self._tokenizer.encode_batch_fast(listed, add_special_tokens=False)
        return {chunk: encoding.ids for chunk, encoding in zip(listed, encodings, strict=True)}

    def _keep(self, fresh: dict[str, list[int]], limit: int | None) -> None:
        # Only what no limit cut is kept: a later call may allow more tokens.
        keep = [
            (c, ids)
            for c, ids in fresh.items()
            if len(c) <= _LONGEST_KEPT and (limit is None or len(ids) < limit)
        ]
        # Counts are small: those of longer chunks (a URL) are kept too.
        counts = [
            (c, len(ids))
            for c, ids in fresh.items()
            if len(c) <= _LONGEST_COUNTED and (limit is None or len(ids) < limit)
        ]
        if len(self._known) + len(keep) > self._size or len(self._lengths) > 2 * self._size:
            # Started over rather than LRU bookkeeping on every lookup; new dicts, so that a
            # call reading the old ones on another thread still finds what it saw there.
            self._known = dict(keep[: self._size])
            self._lengths = dict(counts[: self._size])
        else:
            self._known.update(keep)
            self._lengths.update(counts)

    def _whole(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]


class CachedStaticModel(StaticModel):
    """A StaticModel whose tokenize looks chunks up in a :class:`WordCache`; every other step
    (truncation, weights, mean, normalization) is model2vec's own."""

    word_cache: WordCache | None = None

    def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
        if self.word_cache is None:
            return super().tokenize(sentences)
        ids = self.word_cache.ids(sentences)
        unknown = self.unk_token_id
        if unknown is None:
            return ids
        # As model2vec does: an unknown token carries no meaning in a static model.
        return [row if unknown not in row else [t for t in row if t != unknown] for row in ids]
