"""The Milvus store against a real Milvus Lite server."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from embedq.config.errors import ModelMismatchError, SearchError, StoreUnavailableError
from embedq.config.names import SERIALIZED
from embedq.config.settings import MilvusSettings
from embedq.stack.lite_server import serialize_writes
from embedq.stack.services import Service, free_port, milvus_lite_command, wait_for_port
from embedq.worker.batch import row_key
from embedq.worker.encoder import ModelInfo
from embedq.worker.milvus import MilvusStore, _chunks
from embedq.worker.speedups.upsert import row_dicts, upsert_request
from embedq.worker.store import Rows
from tests.support.environment import unique

pytestmark = pytest.mark.integration

MODEL = ModelInfo(name="m", source="test", dim=4, revision="r1")


def rows(n: int, start: int = 0, dim: int = 4, chunks: int = 1, seq: int = 1) -> Rows:
    """``n`` rows: documents id<start>... of ``chunks`` chunks each, written by operation
    ``seq`` (version = seq)."""
    vectors = np.random.default_rng(start).standard_normal((n, dim)).astype(np.float32)
    docs = [f"id{start + i // chunks}" for i in range(n)]
    numbers = [i % chunks for i in range(n)]
    return Rows(
        ids=docs,
        texts=[f"text {start + i} é" for i in range(n)],
        metadata=[{"n": start + i} for i in range(n)],
        vectors=vectors,
        pks=[row_key(d, seq, c) for d, c in zip(docs, numbers, strict=True)],
        chunks=numbers,
        starts=[c * 10 for c in numbers],
        ends=[c * 10 + 9 for c in numbers],
        versions=[float(seq)] * n,
        seqs=[seq] * n,
    )


def texts_layout_collection(store: MilvusStore, name: str) -> None:
    """A collection as embedq created them before documents: a row per text, keyed by id."""
    from pymilvus import DataType, MilvusClient

    client = store._connect()
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=MODEL.dim)
    schema.add_field("text", DataType.VARCHAR, max_length=65_535)
    schema.add_field("metadata", DataType.JSON)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(
        name,
        schema=schema,
        index_params=index,
        properties={
            "embedq.model": MODEL.name,
            "embedq.source": MODEL.source,
            "embedq.dim": str(MODEL.dim),
            "embedq.revision": MODEL.revision,
        },
    )


@pytest.fixture
def store(milvus_server: str) -> MilvusStore:
    return MilvusStore(MilvusSettings(uri=milvus_server))


def test_collection_is_created_bound_to_the_model_and_upsert_is_idempotent(
    store: MilvusStore,
) -> None:
    name = unique("c")
    store.prepare(name, MODEL)
    assert store.upsert(name, rows(50)) == 50
    assert store.upsert(name, rows(50)) == 50
    assert store.count(name) == 50
    props = store._connect().describe_collection(name)["properties"]
    assert props["embedq.model"] == "m" and props["embedq.dim"] == "4"


def test_search_returns_text_metadata_and_score(store: MilvusStore) -> None:
    name = unique("c")
    store.prepare(name, MODEL)
    data = rows(20)
    store.upsert(name, data)
    hits = store.search(name, data.vectors[7], 3, MODEL)
    assert hits[0].id == "id7"
    assert hits[0].text == "text 7 é" and hits[0].metadata == {"n": 7}
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    filtered = store.search(name, data.vectors[7], 3, MODEL, filter='metadata["n"] >= 10')
    assert all(hit.metadata["n"] >= 10 for hit in filtered)


def test_a_second_process_sees_the_binding(milvus_server: str) -> None:
    name = unique("c")
    first = MilvusStore(MilvusSettings(uri=milvus_server))
    first.prepare(name, MODEL)
    other = MilvusStore(MilvusSettings(uri=milvus_server))
    with pytest.raises(ModelMismatchError, match=r"'m'.*'other'"):
        other.prepare(name, ModelInfo(name="other", source="x", dim=4, revision="r9"))
    with pytest.raises(ModelMismatchError, match=r"dim 4.*dim 8"):
        other.prepare(name, ModelInfo(name="m", source="x", dim=8, revision="r1"))


def test_search_of_missing_collection_is_a_clear_error(store: MilvusStore) -> None:
    with pytest.raises(SearchError, match="does not exist"):
        store.search(unique("missing"), np.ones(4, dtype=np.float32), 3, MODEL)


def test_unreachable_milvus_is_a_transient_error() -> None:
    from embedq.stack.services import free_port

    store = MilvusStore(MilvusSettings(uri=f"http://127.0.0.1:{free_port()}", timeout=2))
    with pytest.raises(StoreUnavailableError, match=r"Milvus at http://127\.0\.0\.1"):
        store.prepare("c", MODEL)


def test_upserts_are_split_by_bytes() -> None:
    data = rows(100)
    chunks = list(_chunks(data, max_bytes=2_000))
    assert len(chunks) > 1
    assert sum(len(c) for c in chunks) == 100
    assert [i for c in chunks for i in c.ids] == list(data.ids)


def test_embedqs_lite_server_keeps_concurrent_unflushed_writes_through_a_kill(
    tmp_path: Path,
) -> None:
    """Plain Milvus Lite interleaves concurrent writes in its log, which then fails to replay:
    a kill lost every row since the last flush. embedq's Lite server serializes writes, so the
    workers need no flush there and every acknowledged row survives a SIGKILL."""
    port = free_port()

    def start() -> Service:
        service = Service("lite", milvus_lite_command(port, tmp_path / "data"), tmp_path / "log")
        service.wait_ready(lambda: wait_for_port("127.0.0.1", port), timeout=60)
        return service

    server, uri, name = start(), f"http://127.0.0.1:{port}", unique("kill")
    stores = [MilvusStore(MilvusSettings(uri=uri)) for _ in range(4)]
    stores[0].prepare(name, MODEL)
    assert not stores[0]._should_flush()  # the version says writes are serialized

    def write(n: int) -> int:
        stores[n].prepare(name, MODEL)
        return sum(stores[n].upsert(name, rows(100, start=n * 10_000 + b * 100)) for b in range(15))

    with ThreadPoolExecutor(4) as pool:
        acknowledged = sum(pool.map(write, range(4)))
    assert acknowledged == 4 * 15 * 100
    server.send_signal(signal.SIGKILL)
    server.stop()
    server = start()
    try:
        assert b"WAL recovery stopped" not in server.output()
        assert MilvusStore(MilvusSettings(uri=uri)).count(name) == acknowledged
    finally:
        server.stop()


def test_embedqs_lite_server_opens_a_collection_once_when_clients_arrive_together(
    tmp_path: Path,
) -> None:
    """Milvus Lite opens a collection on first use, without a lock: after a restart, calls
    arriving together (every worker reconnects at once) each opened their own instance of the
    same collection directory, each with its own log, manifest and background compaction."""
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from milvus_lite.db import MilvusLite
    from pymilvus import MilvusClient

    # Subclasses, so that the patch stays out of the classes other tests use.
    database_class = type("Database", (MilvusLite,), {})
    serialize_writes(type("Servicer", (MilvusServicer,), {}), database_class, SERIALIZED)
    port = free_port()
    server = Service("lite", milvus_lite_command(port, tmp_path / "data"), tmp_path / "log")
    server.wait_ready(lambda: wait_for_port("127.0.0.1", port), timeout=60)
    client = MilvusClient(uri=f"http://127.0.0.1:{port}")
    client.create_collection("docs", dimension=4)
    client.insert("docs", [{"id": i, "vector": [0.5] * 4} for i in range(10)])
    client.close()
    server.stop()

    database = database_class(str(tmp_path / "data"))
    barrier = threading.Barrier(8)

    def arrive(_: int) -> int:
        barrier.wait()
        return id(database.get_collection("docs"))

    try:
        with ThreadPoolExecutor(8) as pool:
            assert len(set(pool.map(arrive, range(8)))) == 1
    finally:
        database.close()


@pytest.mark.parametrize("layout", ["documents", "texts"])
def test_the_upsert_request_is_the_one_pymilvus_builds_from_rows(layout: str) -> None:
    from pymilvus import DataType, MilvusClient
    from pymilvus.client.prepare import Prepare

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    if layout == "documents":
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("id", DataType.VARCHAR, max_length=512)
        for name in ("chunk", "start", "end"):
            schema.add_field(name, DataType.INT64)
        schema.add_field("version", DataType.DOUBLE)
        schema.add_field("seq", DataType.INT64)
    else:
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("text", DataType.VARCHAR, max_length=65_535)
    schema.add_field("metadata", DataType.JSON)
    data = rows(50, dim=8, chunks=3, seq=1_764_547_200_123_456)
    if layout == "texts":
        data = Rows(ids=data.pks, texts=data.texts, metadata=data.metadata, vectors=data.vectors)
    data.metadata[3].update({"nested": {"list": [1, "two", None, True, 0.5]}, "é": "ü ✓"})
    data.metadata[4].clear()
    entities = row_dicts(data)
    theirs = Prepare.row_upsert_param(
        "docs", entities, "", schema.to_dict()["fields"], enable_dynamic=False
    )
    ours = upsert_request("docs", data)
    assert ours == theirs
    assert ours.SerializeToString() == theirs.SerializeToString()
    vectors = next(f for f in ours.fields_data if f.field_name == "vector")
    assert np.array_equal(
        np.asarray(vectors.vectors.float_vector.data, dtype=np.float32).reshape(50, 8),
        data.vectors,
    )


def test_the_plain_upsert_stores_what_the_column_upsert_stores(milvus_server: str) -> None:
    # EMBEDQ_MILVUS__COLUMN_UPSERT=false: pymilvus's own MilvusClient.upsert of row dicts.
    data = rows(40, chunks=3, seq=7)
    data.metadata[2].update({"nested": {"list": [1, "two", None]}, "é": "ü ✓"})
    stored = []
    for column in (True, False):
        store = MilvusStore(MilvusSettings(uri=milvus_server, column_upsert=column))
        collection = unique("plain" if not column else "column")
        try:
            store.prepare(collection, MODEL)
            assert store.upsert(collection, data) == 40
            found = store._connect().query(
                collection, filter="chunk >= 0", output_fields=["*"], consistency_level="Strong"
            )
            stored.append(sorted(found, key=lambda row: row["pk"]))
        finally:
            store.close()
    column_rows, plain_rows = stored
    assert len(column_rows) == len(plain_rows) == 40
    for ours, theirs in zip(column_rows, plain_rows, strict=True):
        assert np.array_equal(np.asarray(ours.pop("vector")), np.asarray(theirs.pop("vector")))
        assert ours == theirs


def test_a_documents_rows_are_found_by_document_and_deleted_by_key(store: MilvusStore) -> None:
    name = unique("c")
    assert store.prepare(name, MODEL) == "documents"
    store.upsert(name, rows(30, chunks=3, seq=5))  # documents id0..id9, three chunks each
    found = store.rows_of(name, ["id1", "id7", 'no "such" \\ doc'])
    assert list(zip(found.ids, found.chunks, found.versions, strict=True)) == [
        (doc, c, 5.0) for doc in ("id1", "id7") for c in range(3)
    ]
    store.delete(name, [row_key("id1", 5, c) for c in range(3)] + ["absent"])
    assert store.count(name) == 27
    assert set(store.rows_of(name, ["id1", "id7"]).ids) == {"id7"}
    assert store.document_ids(name) == sorted(f"id{i}" for i in range(10) if i != 1)


def test_a_document_of_more_rows_than_one_query_returns_is_read_whole(
    store: MilvusStore,
) -> None:
    name = unique("c")
    store.prepare(name, MODEL)
    store.upsert(name, rows(17_000, chunks=17_000))
    assert len(store.rows_of(name, ["id0"])) == 17_000


def test_search_returns_each_chunk_with_its_document_and_offsets(store: MilvusStore) -> None:
    name = unique("c")
    store.prepare(name, MODEL)
    data = rows(12, chunks=4, seq=3)
    store.upsert(name, data)
    hits = store.search(name, data.vectors[6], 3, MODEL)
    assert (hits[0].id, hits[0].chunk, hits[0].start, hits[0].end) == ("id1", 2, 20, 29)
    assert hits[0].version == 3.0
    best = store.search(name, data.vectors[6], 3, MODEL, per_document=True)
    assert len({hit.id for hit in best}) == len(best) == 3


def test_a_texts_layout_collection_keeps_taking_texts_and_answering_searches(
    store: MilvusStore,
) -> None:
    name = unique("old")
    texts_layout_collection(store, name)
    assert store.prepare(name, MODEL) == "texts"
    data = rows(5)
    store.upsert(
        name, Rows(ids=data.ids, texts=data.texts, metadata=data.metadata, vectors=data.vectors)
    )
    hits = store.search(name, data.vectors[2], 1, MODEL, per_document=True)
    assert (hits[0].id, hits[0].chunk, hits[0].version) == ("id2", 0, None)
    store.delete(name, ["id2"])
    assert store.count(name) == 4
