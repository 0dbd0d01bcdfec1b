"""Where vectors go: the :class:`VectorStore` protocol and an in-memory implementation.

A collection holds one row per chunk: its own primary key (``pk``), the document id (``id``),
the chunk's number and character offsets, the order key of the operation that wrote it
(``version``, ``seq``), its vector, text and the document's metadata. Collections created
before documents existed hold one row per text keyed by ``id`` (the *texts* layout); they
keep taking plain texts and deletes.

The in-memory store follows the same contract as :class:`embedq.worker.milvus.MilvusStore` so unit
tests exercise the worker's logic without a server; integration tests use the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from embedq.config.contract import Hit
from embedq.config.errors import ModelMismatchError, SearchError
from embedq.worker.encoder import ModelInfo, Vectors

__all__ = [
    "InMemoryStore",
    "Layout",
    "Rows",
    "VectorStore",
    "check_binding",
]

#: ``documents``: a row per chunk with its document id; ``texts``: a row per text, keyed by id.
Layout = Literal["documents", "texts"]


@dataclass(frozen=True)
class Rows:
    """Columns of rows to upsert; ``vectors`` is float32 of shape (n, dim). In the texts
    layout only ``ids`` (the primary key), ``texts``, ``metadata`` and ``vectors`` are
    stored."""

    ids: Sequence[str]
    texts: Sequence[str]
    metadata: Sequence[dict[str, Any]]
    vectors: Vectors
    pks: Sequence[str] = ()
    chunks: Sequence[int] = ()
    starts: Sequence[int] = ()
    ends: Sequence[int] = ()
    versions: Sequence[float] = ()
    seqs: Sequence[int] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> Rows:
        def cut(column: Sequence[Any]) -> Sequence[Any]:
            return column[start:stop] if len(column) else column

        return Rows(
            ids=self.ids[start:stop],
            texts=self.texts[start:stop],
            metadata=self.metadata[start:stop],
            vectors=self.vectors[start:stop],
            pks=cut(self.pks),
            chunks=cut(self.chunks),
            starts=cut(self.starts),
            ends=cut(self.ends),
            versions=cut(self.versions),
            seqs=cut(self.seqs),
        )


class VectorStore(Protocol):
    """A vector database holding chunk rows per collection."""

    def prepare(self, collection: str, model: ModelInfo) -> Layout:
        """Create the collection for ``model`` (documents layout) or check an existing one
        was built with it; returns its layout."""
        ...

    def upsert(self, collection: str, rows: Rows) -> int:
        """Insert or overwrite rows by primary key; returns how many were written."""
        ...

    def delete(self, collection: str, pks: Sequence[str]) -> None:
        """Delete rows by primary key; absent ones are no error."""
        ...

    def search(
        self,
        collection: str,
        vector: Vectors,
        k: int,
        model: ModelInfo,
        filter: str = "",
        per_document: bool = False,
    ) -> list[Hit]:
        """The ``k`` stored rows nearest to ``vector``, best first; with ``per_document``,
        the best row of each of the ``k`` best documents."""
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


@dataclass
class _Row:
    vector: Vectors
    id: str
    text: str
    metadata: dict[str, Any]
    chunk: int = 0
    start: int = 0
    end: int | None = None
    version: float = 0.0
    seq: int = 0


@dataclass
class _Collection:
    model: ModelInfo
    layout: Layout
    rows: dict[str, _Row] = field(default_factory=dict)


class InMemoryStore:
    """A dict-backed :class:`VectorStore` for unit tests (brute-force cosine search)."""

    def __init__(self) -> None:
        self.collections: dict[str, _Collection] = {}
        self.upsert_calls = 0

    def add_texts_collection(self, collection: str, model: ModelInfo) -> None:
        """A collection in the texts layout, as embedq created them before documents."""
        self.collections[collection] = _Collection(model, "texts")

    def prepare(self, collection: str, model: ModelInfo) -> Layout:
        found = self.collections.setdefault(collection, _Collection(model, "documents"))
        check_binding(collection, found.model, model)
        return found.layout

    def upsert(self, collection: str, rows: Rows) -> int:
        self.upsert_calls += 1
        table = self.collections[collection]
        for i, key in enumerate(rows.ids):
            row = _Row(rows.vectors[i].copy(), key, rows.texts[i], dict(rows.metadata[i]))
            if table.layout == "documents":
                row.chunk, row.start, row.end = rows.chunks[i], rows.starts[i], rows.ends[i]
                row.version, row.seq = rows.versions[i], rows.seqs[i]
                table.rows[rows.pks[i]] = row
            else:
                table.rows[key] = row
        return len(rows)

    def delete(self, collection: str, pks: Sequence[str]) -> None:
        table = self.collections[collection]
        for pk in pks:
            table.rows.pop(pk, None)

    def search(
        self,
        collection: str,
        vector: Vectors,
        k: int,
        model: ModelInfo,
        filter: str = "",
        per_document: bool = False,
    ) -> list[Hit]:
        if filter:
            raise SearchError("the in-memory store does not evaluate filters")
        if collection not in self.collections:
            raise SearchError(f"collection {collection!r} does not exist")
        table = self.collections[collection]
        check_binding(collection, table.model, model)
        if not table.rows:
            return []
        rows = list(table.rows.values())
        matrix = np.stack([row.vector for row in rows])
        norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(vector)) + 1e-12
        scores = matrix @ vector.reshape(-1) / norms
        hits: list[Hit] = []
        seen: set[str] = set()
        for i in np.argsort(-scores).tolist():
            row = rows[i]
            if per_document and row.id in seen:
                continue
            seen.add(row.id)
            hits.append(
                Hit(
                    id=row.id,
                    text=row.text,
                    metadata=row.metadata,
                    score=float(scores[i]),
                    chunk=row.chunk,
                    start=row.start,
                    end=row.end if row.end is not None else len(row.text),
                    version=row.version if table.layout == "documents" else None,
                )
            )
            if len(hits) == k:
                break
        return hits

    def count(self, collection: str) -> int:
        table = self.collections.get(collection)
        return 0 if table is None else len(table.rows)

    def documents(self, collection: str) -> dict[str, list[_Row]]:
        """The stored rows by document id, each document's in chunk order."""
        found: dict[str, list[_Row]] = {}
        for row in self.collections[collection].rows.values():
            found.setdefault(row.id, []).append(row)
        return {doc: sorted(rows, key=lambda r: r.chunk) for doc, rows in found.items()}

    def close(self) -> None:
        pass
