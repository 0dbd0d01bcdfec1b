"""Where vectors go: the :class:`VectorStore` protocol and an in-memory implementation.

The in-memory store follows the same contract as :class:`worker.milvus.MilvusStore` (upsert by
primary key, collections bound to one model) so unit tests exercise the worker's logic without a
server; integration tests use the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from config.contract import Hit
from config.errors import ModelMismatchError, SearchError
from worker.encoder import ModelInfo, Vectors

__all__ = ["InMemoryStore", "Rows", "VectorStore", "check_binding"]


@dataclass(frozen=True)
class Rows:
    """Columns of rows to upsert; ``vectors`` is float32 of shape (n, dim)."""

    ids: Sequence[str]
    texts: Sequence[str]
    metadata: Sequence[dict[str, Any]]
    vectors: Vectors

    def __len__(self) -> int:
        return len(self.ids)


class VectorStore(Protocol):
    """A vector database holding (id, vector, text, metadata) rows per collection."""

    def prepare(self, collection: str, model: ModelInfo) -> None:
        """Create the collection for ``model`` or check an existing one was built with it."""
        ...

    def upsert(self, collection: str, rows: Rows) -> int:
        """Insert or overwrite rows by id; returns how many were written."""
        ...

    def search(
        self, collection: str, vector: Vectors, k: int, model: ModelInfo, filter: str = ""
    ) -> list[Hit]:
        """The ``k`` stored rows nearest to ``vector``, best first."""
        ...

    def count(self, collection: str) -> int:
        """Number of rows in the collection (0 when it does not exist)."""
        ...

    def close(self) -> None: ...


def check_binding(collection: str, recorded: ModelInfo, model: ModelInfo) -> None:
    """Refuse to mix vector spaces: a collection serves only the model that filled it."""
    if (recorded.name, recorded.dim, recorded.revision) != (model.name, model.dim, model.revision):
        raise ModelMismatchError(
            f"collection {collection!r} was built with model {recorded.name!r} "
            f"(dim {recorded.dim}, revision {recorded.revision}) but this worker uses "
            f"{model.name!r} (dim {model.dim}, revision {model.revision}); use another "
            "collection, or configure the worker with the collection's model"
        )


class InMemoryStore:
    """A dict-backed :class:`VectorStore` for unit tests (brute-force cosine search)."""

    def __init__(self) -> None:
        self.bindings: dict[str, ModelInfo] = {}
        self.rows: dict[str, dict[str, tuple[Vectors, str, dict[str, Any]]]] = {}
        self.upsert_calls = 0

    def prepare(self, collection: str, model: ModelInfo) -> None:
        recorded = self.bindings.setdefault(collection, model)
        check_binding(collection, recorded, model)
        self.rows.setdefault(collection, {})

    def upsert(self, collection: str, rows: Rows) -> int:
        self.upsert_calls += 1
        table = self.rows[collection]
        for i, key in enumerate(rows.ids):
            table[key] = (rows.vectors[i].copy(), rows.texts[i], dict(rows.metadata[i]))
        return len(rows)

    def search(
        self, collection: str, vector: Vectors, k: int, model: ModelInfo, filter: str = ""
    ) -> list[Hit]:
        if filter:
            raise SearchError("the in-memory store does not evaluate filters")
        if collection not in self.rows:
            raise SearchError(f"collection {collection!r} does not exist")
        check_binding(collection, self.bindings[collection], model)
        table = self.rows[collection]
        if not table:
            return []
        keys = list(table)
        matrix = np.stack([table[key][0] for key in keys])
        norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(vector)) + 1e-12
        scores = matrix @ vector.reshape(-1) / norms
        order = np.argsort(-scores)[:k]
        return [
            Hit(id=keys[i], text=table[keys[i]][1], metadata=table[keys[i]][2], score=scores[i])
            for i in order
        ]

    def count(self, collection: str) -> int:
        return len(self.rows.get(collection, {}))

    def close(self) -> None:
        pass
