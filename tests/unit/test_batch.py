"""The worker's per-message logic, against an in-memory store and a fake encoder."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from embedq.config.contract import BatchMessage, SearchMessage, derive_id
from embedq.config.errors import ModelMismatchError, StoreUnavailableError
from embedq.worker.batch import BatchOutcome
from embedq.worker.encoder import Encoder, ModelInfo
from embedq.worker.store import InMemoryStore, VectorStore
from tests.support.fakes import HashEncoder, make_embedder


def message(**fields: Any) -> BatchMessage:
    base: dict[str, Any] = {"job_id": "j", "batch": 0, "collection": "c", "model": "fake"}
    base.update(fields)
    return BatchMessage.model_validate(base)


def embed_batches(
    messages: list[BatchMessage], encoder: Encoder, store: VectorStore
) -> list[BatchOutcome]:
    return make_embedder(encoder, store).run(messages)


def embed_batch(msg: BatchMessage, encoder: Encoder, store: VectorStore) -> BatchOutcome:
    return embed_batches([msg], encoder, store)[0]


def texts_of(store: InMemoryStore, collection: str = "c") -> dict[str, tuple[str, Any]]:
    """Each stored document's text and metadata (documents of one chunk)."""
    return {
        doc: (rows[0].text, rows[0].metadata) for doc, rows in store.documents(collection).items()
    }


def test_valid_batch_is_encoded_once_and_stored_with_text_and_metadata() -> None:
    # Given a batch with ids and metadata
    encoder, store = HashEncoder(), InMemoryStore()
    msg = message(texts=["a", "b"], ids=["1", "2"], metadata=[{"k": 1}, {"k": 2}])
    # When the worker handles it
    outcome = embed_batch(msg, encoder, store)
    # Then both rows are stored under the caller's ids, in one encode call
    assert outcome.stored == 2 and not outcome.rejected
    assert len(encoder.calls) == 1
    assert texts_of(store) == {"1": ("a", {"k": 1}), "2": ("b", {"k": 2})}


def test_one_bad_text_does_not_take_the_good_ones_down() -> None:
    encoder, store = HashEncoder(), InMemoryStore()
    texts: list[Any] = [f"text {i}" for i in range(1000)]
    texts[500] = ""
    texts[501] = 12
    outcome = embed_batch(message(texts=texts), encoder, store)
    assert outcome.stored == 998
    assert set(outcome.rejected) == {500, 501}
    assert "empty" in outcome.rejected[500]
    assert store.count("c") == 998


def test_without_ids_the_same_text_gets_the_same_row() -> None:
    encoder, store = HashEncoder(), InMemoryStore()
    embed_batch(message(texts=["same", "other"]), encoder, store)
    embed_batch(message(texts=["same"], batch=1), encoder, store)
    assert store.count("c") == 2
    assert derive_id("fake", "same") in texts_of(store)


def test_redelivered_batch_overwrites_instead_of_duplicating() -> None:
    encoder, store = HashEncoder(), InMemoryStore()
    msg = message(texts=["a", "b", "c"], ids=[1, 2, 3])
    embed_batch(msg, encoder, store)
    embed_batch(msg, encoder, store)
    assert store.count("c") == 3


def test_duplicate_ids_in_one_batch_keep_the_last_and_report_the_first() -> None:
    encoder, store = HashEncoder(), InMemoryStore()
    outcome = embed_batch(message(texts=["a", "b"], ids=["x", "x"]), encoder, store)
    assert outcome.stored == 1
    assert "duplicate id" in outcome.rejected[0]
    assert texts_of(store)["x"][0] == "b"


def test_bad_metadata_and_ids_are_rejected_per_item() -> None:
    encoder, store = HashEncoder(), InMemoryStore()
    outcome = embed_batch(
        message(texts=["a", "b", "c"], ids=["1", 2.5, "3"], metadata=[{}, {}, "not a dict"]),
        encoder,
        store,
    )
    assert outcome.stored == 1
    assert set(outcome.rejected) == {1, 2}


def test_all_items_bad_stores_nothing_and_touches_no_collection() -> None:
    encoder, store = HashEncoder(), InMemoryStore()
    outcome = embed_batch(message(texts=["", " "]), encoder, store)
    assert outcome.stored == 0 and len(outcome.rejected) == 2
    assert "c" not in store.collections and not encoder.calls


def test_message_for_another_model_is_refused() -> None:
    with pytest.raises(ModelMismatchError, match="route it to the queue"):
        embed_batch(message(model="other", texts=["a"]), HashEncoder(), InMemoryStore())


def test_collection_of_another_model_is_refused_with_both_names() -> None:
    store = InMemoryStore()
    embed_batch(message(texts=["a"]), HashEncoder(), store)
    bigger = HashEncoder(dim=16)
    with pytest.raises(ModelMismatchError, match=r"dim 8.*dim 16"):
        embed_batch(message(texts=["b"]), bigger, store)
    assert store.count("c") == 1


def test_search_returns_the_stored_text_first() -> None:
    encoder, store = HashEncoder(), InMemoryStore()
    embedder = make_embedder(encoder, store)
    embedder.run([message(texts=["alpha", "beta", "gamma"], ids=["a", "b", "g"])])
    query = SearchMessage(query="beta", k=2, collection="c", model="fake")
    hits = embedder.search(query)
    assert next(hit.id for hit in hits) == "b"
    assert hits[0].text == "beta" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 2


def test_store_binding_compares_revision_too() -> None:
    store = InMemoryStore()
    store.prepare("c", ModelInfo("m", "s", 8, "r1"))
    with pytest.raises(ModelMismatchError):
        store.prepare("c", ModelInfo("m", "s", 8, "r2"))


def test_text_the_model_cannot_represent_is_rejected_not_stored_as_zeros() -> None:
    class ZeroForUnknown(HashEncoder):
        def encode(self, texts: Any) -> Any:
            vectors = super().encode(texts)
            vectors[[i for i, t in enumerate(texts) if t == "🙂"]] = 0
            return vectors

    store = InMemoryStore()
    outcome = embed_batch(message(texts=["ok", "🙂"], ids=["a", "b"]), ZeroForUnknown(), store)
    assert outcome.stored == 1 and "zero vector" in outcome.rejected[1]
    assert list(texts_of(store)) == ["a"]


def test_coalesced_batches_share_one_encode_and_one_upsert_per_collection() -> None:
    class CountingStore(InMemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.upserts: list[str] = []

        def upsert(self, collection: str, rows: Any) -> int:
            self.upserts.append(collection)
            return super().upsert(collection, rows)

    encoder, store = HashEncoder(), CountingStore()
    messages = [
        message(job_id="j1", texts=["a"], ids=["1"], metadata=[{"n": 1}]),
        message(job_id="j2", texts=["b", ""], collection="d"),
        message(job_id="j3", texts=["c"], ids=["1"]),  # same id as j1's: the later one wins
        message(job_id="j4", texts=["", " "]),
    ]
    outcomes = embed_batches(messages, encoder, store)
    assert len(encoder.calls) == 1 and sorted(encoder.calls[0]) == ["a", "b", "c"]
    assert sorted(store.upserts) == ["c", "d"]
    # each message gets its own outcome, in order
    assert [o.stored for o in outcomes] == [1, 1, 1, 0]
    assert [sorted(o.rejected) for o in outcomes] == [[], [1], [], [0, 1]]
    assert texts_of(store)["1"] == ("c", {})
    assert store.count("d") == 1


def test_a_coalesced_group_for_another_model_is_refused_before_anything_is_stored() -> None:
    store = InMemoryStore()
    with pytest.raises(ModelMismatchError):
        embed_batches(
            [message(texts=["a"]), message(texts=["b"], model="other")], HashEncoder(), store
        )
    assert store.count("c") == 0


def test_a_large_group_is_written_in_order_while_the_next_chunk_encodes() -> None:
    events: list[str] = []

    class LoggingEncoder(HashEncoder):
        def encode(self, texts: Any) -> Any:
            events.append(f"encode {len(texts)}")
            return super().encode(texts)

    class SlowStore(InMemoryStore):
        def upsert(self, collection: str, rows: Any) -> int:
            events.append(f"write start {rows.ids[0]}")  # document ids
            time.sleep(0.05)  # the network and the server
            events.append("write end")
            return super().upsert(collection, rows)

    store = SlowStore()
    first = message(texts=[f"text {i}" for i in range(150)], ids=[str(i) for i in range(150)])
    # a later message of the group writes id 0 again: it must win, as it would in turn
    later = message(
        texts=[f"text {i}" for i in range(150, 300)], ids=[str(i) for i in range(150, 299)] + ["0"]
    )
    outcomes = embed_batches([first, later], LoggingEncoder(), store)
    assert [o.stored for o in outcomes] == [150, 150] and store.count("c") == 299
    assert texts_of(store)["0"][0] == "text 299"
    assert [e for e in events if e.startswith("encode")] == ["encode 75"] * 4
    starts = [e for e in events if e.startswith("write start")]
    assert starts == ["write start 0", "write start 75", "write start 150", "write start 225"]
    # the second chunk was encoded while the first was being written
    assert events.index("encode 75", 1) < events.index("write end")


def test_a_failed_chunk_write_fails_the_group_and_nothing_after_it_is_written() -> None:
    class FailingStore(InMemoryStore):
        writes = 0

        def upsert(self, collection: str, rows: Any) -> int:
            self.writes += 1
            if self.writes == 2:
                raise StoreUnavailableError("Milvus went away")
            return super().upsert(collection, rows)

    store = FailingStore()
    texts = [f"text {i}" for i in range(300)]
    with pytest.raises(StoreUnavailableError):
        embed_batch(message(texts=texts), HashEncoder(), store)
    assert store.writes == 2 and store.count("c") == 75  # retried whole: upserts are idempotent


def test_a_time_limit_while_a_write_still_runs_is_a_transient_store_error() -> None:
    # Celery's soft time limit is a signal whose handler raises in the task's thread; here the
    # task's thread is waiting for a write that Milvus is slow to finish.
    class SoftTimeLimitExceeded(Exception):
        pass

    class SlowStore(InMemoryStore):
        def upsert(self, collection: str, rows: Any) -> int:
            time.sleep(0.5)
            return super().upsert(collection, rows)

    def limit(signum: int, frame: object) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, limit)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(StoreUnavailableError, match="had not finished") as info:
            embed_batch(message(texts=[f"t{i}" for i in range(300)]), HashEncoder(), SlowStore())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert isinstance(info.value.__cause__, SoftTimeLimitExceeded)
