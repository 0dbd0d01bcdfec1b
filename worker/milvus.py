"""The Milvus implementation of :class:`~embedq.worker.store.VectorStore`.

Works against a Milvus server, a Milvus Lite server (``embedq standalone``) or Zilliz Cloud.
The client connects lazily, so a worker starts (and keeps its messages) while Milvus is down;
calls that fail because Milvus is unreachable raise :class:`StoreUnavailableError`, which the
task retries with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import numpy as np

from embedq.config.contract import MAX_CHUNK_BYTES, Hit
from embedq.config.errors import (
    ModelMismatchError,
    SearchError,
    StoreRejectedError,
    StoreUnavailableError,
)
from embedq.config.names import SERIALIZED
from embedq.config.settings import MilvusSettings
from embedq.worker.encoder import ModelInfo, Vectors
from embedq.worker.speedups.upsert import row_dicts, send_upsert, upsert_request
from embedq.worker.store import Layout, Rows, check_binding

__all__ = ["MilvusStore", "WriteLock"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Given a collection name, a lock that the writers of that collection share, with the time
#: the last flush of the collection started; see :meth:`MilvusStore.upsert`.
WriteLock = Callable[[str], AbstractContextManager["FlushLedger"]]


class FlushLedger(Protocol):
    def read(self) -> float: ...
    def write(self, stamp: float) -> None: ...


class _LocalLedger:
    """The ledger of a store used by one process only."""

    def __init__(self) -> None:
        self._stamp = 0.0

    def read(self) -> float:
        return self._stamp

    def write(self, stamp: float) -> None:
        self._stamp = stamp


ID_MAX_LENGTH = 512
#: Row keys are 24 hex digits (embedq.worker.batch.row_key); room to spare.
PK_MAX_LENGTH = 64
_PROPS = ("embedq.model", "embedq.source", "embedq.dim", "embedq.revision")
_ROW_OVERHEAD = 64
#: The scalar fields of a row in the documents layout, beside id, vector, text and metadata.
_CHUNK_FIELDS = ("chunk", "start", "end", "version", "seq")


class MilvusStore:
    """Rows ``(pk, id, chunk, start, end, version, seq, vector, text, metadata)``; collections
    in the texts layout ``(id primary key, vector, text, metadata)``."""

    def __init__(self, settings: MilvusSettings, write_lock: WriteLock | None = None) -> None:
        self._settings = settings
        self._write_lock = write_lock
        self._ledger = _LocalLedger()
        self._client: Any = None
        self._lock = threading.Lock()
        self._prepared: dict[str, tuple[ModelInfo, Layout]] = {}
        self._flush: bool | None = None if settings.flush == "auto" else settings.flush == "always"

    # -- connection -------------------------------------------------------------------------

    def _connect(self) -> Any:
        from pymilvus import MilvusClient

        s = self._settings
        with self._lock:
            if self._client is None:
                self._client = MilvusClient(
                    uri=s.uri,
                    user=s.user or "",
                    password=s.password.get_secret_value() if s.password else "",
                    token=s.token.get_secret_value() if s.token else "",
                    db_name=s.db_name,
                    timeout=s.timeout,
                )
            return self._client

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)``. Failures of the connection or the server become
        :class:`StoreUnavailableError` (retried, after dropping the client so the next attempt
        reconnects); requests the server refuses as bad input become
        :class:`StoreRejectedError` (not retried)."""
        import grpc
        from pymilvus.exceptions import MilvusException

        try:
            return fn(self._connect())
        except MilvusException as exc:
            if _is_input_error(exc):
                raise StoreRejectedError(f"Milvus refused the {what}: {_describe(exc)}") from exc
            self._reset()
            raise StoreUnavailableError(
                f"Milvus at {self._settings.uri}: {what} failed: {_describe(exc)}"
            ) from exc
        except (grpc.RpcError, grpc.FutureTimeoutError, OSError) as exc:
            self._reset()
            raise StoreUnavailableError(
                f"Milvus at {self._settings.uri}: {what} failed, unreachable: {_describe(exc)}"
            ) from exc

    def _reset(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._prepared.clear()
        if client is not None:
            # Closing a broken client may fail; there is nothing more to do with it.
            with contextlib.suppress(Exception):
                client.close()

    def close(self) -> None:
        self._reset()

    # -- collections ------------------------------------------------------------------------

    def prepare(self, collection: str, model: ModelInfo) -> Layout:
        if collection in self._prepared:
            recorded, layout = self._prepared[collection]
            check_binding(collection, recorded, model)
            return layout
        layout = self._call("prepare", lambda client: self._prepare(client, collection, model))
        self._prepared[collection] = (model, layout)
        return layout

    def _prepare(self, client: Any, collection: str, model: ModelInfo) -> Layout:
        if not client.has_collection(collection):
            try:
                self._create(client, collection, model)
            except Exception:
                # Another worker may have created it at the same moment: use theirs if so.
                if not client.has_collection(collection):
                    raise
        return self._check_and_load(client, collection, model)

    def _check_and_load(self, client: Any, collection: str, model: ModelInfo) -> Layout:
        recorded, layout = self._binding(client, collection)
        check_binding(collection, recorded, model)
        # A collection is released after a server restart; searching it needs it loaded.
        state = client.get_load_state(collection).get("state")
        if "Loaded" not in str(state):
            client.load_collection(collection)
        return layout

    def layout(self, collection: str) -> Layout | None:
        """The layout of a collection, or None when there is no such collection."""

        def run(client: Any) -> Layout | None:
            if not client.has_collection(collection):
                return None
            return self._binding(client, collection)[1]

        return self._call("describe", run)

    def _create(self, client: Any, collection: str, model: ModelInfo) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=PK_MAX_LENGTH)
        schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_LENGTH)
        schema.add_field("chunk", DataType.INT64)
        schema.add_field("start", DataType.INT64)
        schema.add_field("end", DataType.INT64)
        schema.add_field("version", DataType.DOUBLE)
        schema.add_field("seq", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=model.dim)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_CHUNK_BYTES)
        schema.add_field("metadata", DataType.JSON)
        properties = dict(zip(_PROPS, _binding_values(model), strict=True))
        try:
            # An inverted index on the document id, where the server has one (Milvus Lite,
            # servers from 2.4), so that finding a document's rows never scans the collection.
            self._create_with(client, collection, schema, properties, id_index=True)
        except Exception as exc:
            if client.has_collection(collection):
                raise
            log.info("collection %s: no index on the document id (%s)", collection, exc)
            self._create_with(client, collection, schema, properties, id_index=False)
        log.info("created collection %s for model %s (dim %d)", collection, model.name, model.dim)

    def _create_with(
        self,
        client: Any,
        collection: str,
        schema: Any,
        properties: dict[str, str],
        id_index: bool,
    ) -> None:
        index = client.prepare_index_params()
        index.add_index(
            field_name="vector", index_type="AUTOINDEX", metric_type=self._settings.metric_type
        )
        if id_index:
            index.add_index(field_name="id", index_type="INVERTED")
        client.create_collection(
            collection,
            schema=schema,
            index_params=index,
            consistency_level=self._settings.consistency_level,
            properties=properties,
        )

    def _binding(self, client: Any, collection: str) -> tuple[ModelInfo, Layout]:
        described = client.describe_collection(collection)
        props = described.get("properties") or {}
        dim = next(
            (int(f["params"]["dim"]) for f in described["fields"] if f["name"] == "vector"), None
        )
        names = {f["name"] for f in described["fields"]}
        if dim is None or not {"id", "text", "metadata"} <= names or _PROPS[0] not in props:
            raise ModelMismatchError(
                f"collection {collection!r} was not created by embedq (it lacks the id, vector, "
                "text and metadata fields or the embedq.model property); use another collection"
            )
        layout: Layout = "documents" if {"pk", *_CHUNK_FIELDS} <= names else "texts"
        model = ModelInfo(
            name=props["embedq.model"],
            source=props.get("embedq.source", ""),
            dim=dim,
            revision=props.get("embedq.revision", ""),
        )
        return model, layout

    # -- data -------------------------------------------------------------------------------

    def upsert(self, collection: str, rows: Rows) -> int:
        written = self._upsert(collection, rows)
        if self._should_flush():
            self._flush_after(collection, time.monotonic())
        return written

    def _flush_after(self, collection: str, upserted: float) -> None:
        """Make rows upserted before ``upserted`` safe from a crash of the server.

        Milvus Lite acknowledges a write before it is safe from a crash of its process, so the
        batch is flushed before it is acknowledged. Its flush returns at once when another
        flush has just taken the pending rows, before those are on disk: flushes of one
        collection therefore take turns under a lock. And one flush covers every row upserted
        before it started, so a writer that finds such a flush already done skips its own
        (group commit: concurrent writers share flushes).
        """
        if self._write_lock is None:
            lock: AbstractContextManager[FlushLedger] = contextlib.nullcontext(self._ledger)
        else:
            lock = self._write_lock(collection)
        with lock as ledger:
            if ledger.read() > upserted:
                return
            started = time.monotonic()
            self._call(
                "flush", lambda client: client.flush(collection, timeout=self._settings.timeout)
            )
            ledger.write(started)

    def delete(self, collection: str, pks: Sequence[str]) -> None:
        if not pks:
            return
        started = time.monotonic()
        for start in range(0, len(pks), 1000):
            listed = list(pks[start : start + 1000])
            self._call(
                "delete",
                lambda client, listed=listed: client.delete(  # type: ignore[misc]
                    collection, ids=listed, timeout=self._settings.timeout
                ),
            )
        if self._should_flush():
            self._flush_after(collection, started)

    def _upsert(self, collection: str, rows: Rows) -> int:
        written = 0
        timeout = self._settings.timeout
        for chunk in _chunks(rows, self._settings.upsert_max_bytes):
            if self._settings.column_upsert:
                request = upsert_request(collection, chunk)
                written += self._call(
                    "upsert",
                    lambda client, request=request: send_upsert(  # type: ignore[misc]
                        client, request, timeout
                    ),
                )
            else:
                entities = row_dicts(chunk)
                written += self._call(
                    "upsert",
                    lambda client, entities=entities: int(  # type: ignore[misc]
                        client.upsert(collection, entities, timeout=timeout)["upsert_count"]
                    ),
                )
        return written

    def _should_flush(self) -> bool:
        if self._flush is None:
            version = self._call("version", lambda client: str(client.get_server_version()))
            # embedq's own Lite server writes each call to its log before answering; a plain
            # Milvus Lite server does not (embedq/stack/lite_server.py), so its writes are flushed.
            self._flush = version.lower().startswith("milvus_lite") and not version.endswith(
                SERIALIZED
            )
        return self._flush

    def search(
        self,
        collection: str,
        vector: Vectors,
        k: int,
        model: ModelInfo,
        filter: str = "",
        per_document: bool = False,
    ) -> list[Hit]:
        def run(client: Any) -> list[Hit]:
            if not client.has_collection(collection):
                raise SearchError(
                    f"collection {collection!r} does not exist; ingest some texts first"
                )
            if collection not in self._prepared:
                layout = self._check_and_load(client, collection, model)
                self._prepared[collection] = (model, layout)
            layout = self._prepared[collection][1]
            fields = ["text", "metadata"]
            if layout == "documents":
                fields += ["id", *_CHUNK_FIELDS]
            grouped = per_document and layout == "documents"

            def nearest(limit: int, group: bool) -> list[Hit]:
                # One hit per document is Milvus's grouping search (servers from 2.4).
                options = {"group_by_field": "id"} if group else {}
                results = client.search(
                    collection,
                    data=[vector.reshape(-1)],
                    limit=limit,
                    filter=filter,
                    output_fields=fields,
                    search_params={"metric_type": self._settings.metric_type},
                    consistency_level=self._settings.consistency_level,
                    timeout=self._settings.timeout,
                    **options,
                )
                return [_hit(hit, layout) for hit in results[0]]

            hits = nearest(k, grouped)
            if not grouped:
                return hits
            best = _best_per_document(hits)
            # A server without grouping search (Milvus 2.3) answers with every chunk: take
            # more and keep each document's best.
            limit = k
            while len(best) < len(hits) and len(best) < k and limit < _GROUPING_LIMIT:
                limit = min(limit * 4, _GROUPING_LIMIT)
                hits = nearest(limit, False)
                best = _best_per_document(hits)
            return best[:k]

        try:
            return self._call("search", run)
        except StoreUnavailableError:
            # A restarted server drops loaded state behind a live channel; the failed call
            # reset the client, so one more try reconnects and reloads.
            return self._call("search", run)

    def binding(self, collection: str) -> ModelInfo | None:
        """The model a collection was built with, or None when there is no such collection."""

        def run(client: Any) -> ModelInfo | None:
            if not client.has_collection(collection):
                return None
            return self._binding(client, collection)[0]

        return self._call("describe", run)

    def document_ids(self, collection: str, batch_size: int = 5000) -> list[str]:
        """Every document id in the collection, sorted (one per document, however many
        chunks it has)."""
        found = {str(row["id"]) for row in self._drain(collection, "", ["id"], batch_size)}
        return sorted(found)

    def _drain(
        self, collection: str, where: str, fields: list[str], batch_size: int = 1000
    ) -> list[dict[str, Any]]:
        """Every row matching ``where``, through a query iterator (no 16,384-row cap)."""
        iterator = self._call(
            "scan",
            lambda client: client.query_iterator(
                collection,
                batch_size=batch_size,
                filter=where,
                output_fields=fields,
                consistency_level="Strong",
            ),
        )
        rows: list[dict[str, Any]] = []
        try:
            while batch := self._call("scan", lambda _: iterator.next()):
                rows += batch
        finally:
            with contextlib.suppress(Exception):
                iterator.close()
        return rows

    def rows_of(self, collection: str, ids: Sequence[str]) -> Rows:
        """Every stored row of these documents, without vectors (an empty array); in the texts
        layout one row per id, chunk 0."""
        layout = self.layout(collection)
        fields = ["id", "text", "metadata"]
        if layout == "documents":
            fields += list(_CHUNK_FIELDS)
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 1000):
            where = "id in [" + ", ".join(_literal(i) for i in ids[start : start + 1000]) + "]"
            found += self._drain(collection, where, fields)
        found.sort(key=lambda row: (row["id"], row.get("chunk", 0)))
        return Rows(
            ids=[str(row["id"]) for row in found],
            texts=[row["text"] for row in found],
            metadata=[row.get("metadata") or {} for row in found],
            vectors=np.empty((len(found), 0), dtype=np.float32),
            chunks=[int(row.get("chunk", 0)) for row in found],
            starts=[int(row.get("start", 0)) for row in found],
            ends=[int(row.get("end", len(row["text"]))) for row in found],
            versions=[float(row["version"]) for row in found] if layout == "documents" else (),
        )

    def count(self, collection: str) -> int:
        def run(client: Any) -> int:
            if not client.has_collection(collection):
                return 0
            result = client.query(
                collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
            )
            return int(result[0]["count(*)"])

        return self._call("count", run)


#: The most chunks a search without server-side grouping reads to find ``k`` documents.
_GROUPING_LIMIT = 16_384


def _best_per_document(hits: list[Hit]) -> list[Hit]:
    """Each document's first (best) hit, in order."""
    seen: set[str] = set()
    best = []
    for hit in hits:
        if hit.id not in seen:
            seen.add(hit.id)
            best.append(hit)
    return best


def _hit(hit: dict[str, Any], layout: Layout) -> Hit:
    entity = hit["entity"]
    if layout == "texts":
        return Hit(
            id=str(hit["id"]),
            text=entity["text"],
            metadata=entity.get("metadata") or {},
            score=float(hit["distance"]),
            end=len(entity["text"]),
        )
    return Hit(
        id=str(entity["id"]),
        text=entity["text"],
        metadata=entity.get("metadata") or {},
        score=float(hit["distance"]),
        chunk=int(entity["chunk"]),
        start=int(entity["start"]),
        end=int(entity["end"]),
        version=float(entity["version"]),
    )


def _literal(value: str) -> str:
    """A string as a Milvus expression literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _binding_values(model: ModelInfo) -> tuple[str, str, str, str]:
    return model.name, model.source, str(model.dim), model.revision


def _row_bytes(text: str, metadata: dict[str, Any], dim: int) -> int:
    return len(text.encode()) + len(json.dumps(metadata)) + dim * 4 + _ROW_OVERHEAD


def _chunks(rows: Rows, max_bytes: int) -> Iterator[Rows]:
    """Split rows so that no upsert request exceeds ``max_bytes`` (Milvus refuses > 64 MB)."""
    dim = rows.vectors.shape[1] if rows.vectors.ndim == 2 else 0
    start, size = 0, 0
    for i in range(len(rows)):
        row = _row_bytes(rows.texts[i], rows.metadata[i], dim) + len(rows.ids[i])
        if i > start and size + row > max_bytes:
            yield rows.slice(start, i)
            start, size = i, 0
        size += row
    if start < len(rows):
        yield rows.slice(start, len(rows))


def _is_input_error(exc: Exception) -> bool:
    """Errors caused by the request itself (the server says so, or the client refused to send
    it); everything else from Milvus may pass and is retried."""
    from pymilvus.exceptions import (
        DataNotMatchException,
        DataTypeNotMatchException,
        ParamError,
        PrimaryKeyException,
    )

    client_side = (
        ParamError,
        DataNotMatchException,
        DataTypeNotMatchException,
        PrimaryKeyException,
    )
    return isinstance(exc, client_side) or bool(getattr(exc, "is_input_error", False))


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
