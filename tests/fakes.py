"""Test doubles that satisfy the same protocols as the real parts."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from worker.encoder import ModelInfo, Vectors


class HashEncoder:
    """An :class:`~worker.encoder.Encoder` whose vectors are a deterministic function of the
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
