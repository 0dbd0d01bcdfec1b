"""The Milvus store against a real Milvus Lite server."""

from __future__ import annotations

import numpy as np
import pytest

from config.errors import ModelMismatchError, SearchError, StoreUnavailableError
from config.settings import MilvusSettings
from tests.conftest import unique
from worker.encoder import ModelInfo
from worker.milvus import MilvusStore, _chunks
from worker.store import Rows

pytestmark = pytest.mark.integration

MODEL = ModelInfo(name="m", source="test", dim=4, revision="r1")


def rows(n: int, start: int = 0, dim: int = 4) -> Rows:
    vectors = np.random.default_rng(start).standard_normal((n, dim)).astype(np.float32)
    return Rows(
        ids=[f"id{start + i}" for i in range(n)],
        texts=[f"text {start + i} é" for i in range(n)],
        metadata=[{"n": start + i} for i in range(n)],
        vectors=vectors,
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
    from worker.services import free_port

    store = MilvusStore(MilvusSettings(uri=f"http://127.0.0.1:{free_port()}", timeout=2))
    with pytest.raises(StoreUnavailableError, match=r"Milvus at http://127\.0\.0\.1"):
        store.prepare("c", MODEL)


def test_upserts_are_split_by_bytes() -> None:
    data = rows(100)
    chunks = list(_chunks(data, max_bytes=2_000))
    assert len(chunks) > 1
    assert sum(len(c) for c in chunks) == 100
    assert [i for c in chunks for i in c.ids] == list(data.ids)
