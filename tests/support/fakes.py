"""Test doubles that satisfy the same protocols as the real parts."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from embedq.config.settings import BatchSettings
from embedq.state.versions import Claim, Claimed, OrderKey, Written
from embedq.worker.batch import Embedder
from embedq.worker.chunker import Chunker
from embedq.worker.encoder import Encoder, ModelInfo, Vectors
from embedq.worker.store import InMemoryStore, VectorStore


class HashEncoder:
    """An :class:`~embedq.worker.encoder.Encoder` whose vectors are a deterministic function of the
    text: equal texts, equal vectors."""

    def __init__(self, name: str = "fake", dim: int = 8) -> None:
        self._info = ModelInfo(name=name, source="fake", dim=dim, revision="r1")
        self.calls: list[list[str]] = []

    @property
    def info(self) -> ModelInfo:
        return self._info

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self._info.dim))
        return np.ascontiguousarray(np.array(rows, dtype=np.float32).reshape(-1, self._info.dim))


class MemoryRegister:
    """A :class:`~embedq.worker.batch.Register` in a dict, with the Lua scripts' semantics."""

    def __init__(self) -> None:
        #: (collection, document) -> (order key, chunks, pending operations)
        self.held: dict[tuple[str, str], tuple[OrderKey, int, list[Written]]] = {}
        self.named: dict[str, int] = {}
        self._seq = 0

    def next_seqs(self, count: int) -> int:
        first = self._seq + 1
        self._seq += count
        return first

    def seqs_for(self, name: str, count: int) -> int:
        if name not in self.named:
            self.named[name] = self.next_seqs(count)
        return self.named[name]

    def claim(self, collection: str, ops: Sequence[tuple[str, OrderKey, int]]) -> list[Claimed]:
        out: list[Claimed] = []
        for doc, key, chunks in ops:
            held = self.held.get((collection, doc))
            if held is None:
                self.held[(collection, doc)] = (key, chunks, [])
                out.append(Claimed(Claim.FIRST))
                continue
            old, old_chunks, pending = held
            if key > old:
                pending = [*pending, Written(old.seq, old_chunks)]
                self.held[(collection, doc)] = (key, chunks, pending)
                out.append(Claimed(Claim.NEWER, tuple(pending)))
            elif key == old:
                self.held[(collection, doc)] = (key, max(chunks, old_chunks), pending)
                out.append(Claimed(Claim.AGAIN, tuple(pending)))
            else:
                out.append(Claimed(Claim.STALE))
        return out

    def settle(self, collection: str, done: Sequence[tuple[str, Sequence[int]]]) -> None:
        for doc, seqs in done:
            key, chunks, pending = self.held[(collection, doc)]
            self.held[(collection, doc)] = (key, chunks, [w for w in pending if w.seq not in seqs])

    def latest(self, collection: str, docs: Sequence[str]) -> list[OrderKey | None]:
        return [
            None if (collection, doc) not in self.held else self.held[(collection, doc)][0]
            for doc in docs
        ]

    def overtake(self, collection: str, doc: str, key: OrderKey) -> None:
        """Another worker claims ``doc`` with a greater key (it writes one chunk)."""
        self.claim(collection, [(doc, key, 1)])


def word_chunker(tokens: int = 8, overlap: int = 0) -> Chunker:
    """A chunker whose tokens are whitespace-separated words."""
    return Chunker(lambda text: len(text.split()), tokens, overlap)


def make_embedder(
    encoder: Encoder | None = None,
    store: VectorStore | None = None,
    register: MemoryRegister | None = None,
    *,
    tokens: int = 8,
    max_length: int | None = 16,
    limits: BatchSettings | None = None,
) -> Embedder:
    return Embedder(
        encoder if encoder is not None else HashEncoder(),
        word_chunker(tokens),
        store if store is not None else InMemoryStore(),
        register if register is not None else MemoryRegister(),
        limits if limits is not None else BatchSettings(),
        max_length,
    )
