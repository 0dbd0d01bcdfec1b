"""Documents on the worker side: chunking, replace, delete and the last version winning,
against an in-memory store, register and a word-counting chunker."""

from __future__ import annotations

import random
from typing import Any

import pytest

from embedq.config.contract import BatchMessage, SearchMessage
from embedq.config.errors import StoreRejectedError, StoreUnavailableError
from embedq.state.versions import Claim, Claimed, OrderKey
from embedq.worker.store import InMemoryStore, Rows
from tests.support.fakes import HashEncoder, MemoryRegister, make_embedder


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def docs(
    texts: dict[str, str], seq: int | None, versions: list[Any] | None = None, **fields: Any
) -> BatchMessage:
    body: dict[str, Any] = {
        "job_id": "j",
        "batch": 0,
        "collection": "c",
        "model": "fake",
        "documents": True,
        "texts": list(texts.values()),
        "ids": list(texts),
        "seq": seq,
        "versions": versions,
    }
    body.update(fields)
    return BatchMessage.model_validate(body)


def deletes(ids: list[str], seq: int, versions: list[Any] | None = None) -> BatchMessage:
    return BatchMessage.model_validate(
        {
            "job_id": "j",
            "batch": 1,
            "collection": "c",
            "model": "fake",
            "delete": True,
            "ids": ids,
            "seq": seq,
            "versions": versions,
        }
    )


def chunk_texts(store: InMemoryStore, doc: str) -> list[str]:
    return [row.text for row in store.documents("c").get(doc, [])]


def test_a_long_document_becomes_chunks_with_exact_offsets_metadata_and_version() -> None:
    store = InMemoryStore()
    text = "\n\n".join(words(6, f"p{p}-") for p in range(5))  # five paragraphs of six words
    outcome = make_embedder(store=store).run(
        [docs({"d": text}, seq=10, versions=[7], metadata=[{"k": 1}])]
    )[0]
    rows = store.documents("c")["d"]
    assert outcome.stored == 1 and outcome.chunks == len(rows) > 1
    for n, row in enumerate(rows):
        assert row.chunk == n and text[row.start : row.end] == row.text
        assert len(row.text.split()) <= 8
        assert row.metadata == {"k": 1} and row.version == 7.0 and row.seq == 10
    # boundaries at paragraphs: no chunk holds half of one
    assert all(row.text.count("-") % 6 == 0 for row in rows)


def test_a_document_sent_again_shorter_keeps_no_chunk_of_the_old_version() -> None:
    store = InMemoryStore()
    embedder = make_embedder(store=store)
    embedder.run([docs({"d": words(24)}, seq=1)])
    assert len(chunk_texts(store, "d")) == 3
    outcome = embedder.run([docs({"d": words(16, "v")}, seq=2)])[0]
    assert chunk_texts(store, "d") == [words(8, "v"), " ".join(f"v{i}" for i in range(8, 16))]
    assert outcome.chunks == 2 and store.count("c") == 2


def test_delete_removes_every_chunk_and_deleting_what_is_absent_is_no_error() -> None:
    store = InMemoryStore()
    embedder = make_embedder(store=store)
    embedder.run([docs({"d": words(24), "e": "other"}, seq=1)])
    outcome = embedder.run([deletes(["d", "never-stored"], seq=5)])[0]
    assert outcome.stored == 2 and outcome.deleted == 2 and not outcome.rejected
    assert list(store.documents("c")) == ["e"]


@pytest.mark.parametrize("newer_first", [True, False])
def test_the_greatest_version_wins_whatever_order_the_worker_takes_them(newer_first: bool) -> None:
    store = InMemoryStore()
    embedder = make_embedder(store=store)
    old, new = (
        docs({"d": words(24, "old")}, seq=1, versions=[1]),
        docs({"d": "new"}, seq=2, versions=[2]),
    )
    outcomes = (
        embedder.run([new]) + embedder.run([old])
        if newer_first
        else embedder.run([old]) + embedder.run([new])
    )
    assert chunk_texts(store, "d") == ["new"]
    assert sum(o.superseded for o in outcomes) == (1 if newer_first else 0)


def test_an_older_write_after_a_delete_changes_nothing() -> None:
    store = InMemoryStore()
    embedder = make_embedder(store=store)
    embedder.run([deletes(["d"], seq=2)])
    outcome = embedder.run([docs({"d": "written before the delete"}, seq=1)])[0]
    assert outcome.superseded == 1 and store.count("c") == 0


def test_equal_versions_are_ordered_by_when_they_were_queued() -> None:
    store = InMemoryStore()
    embedder = make_embedder(store=store)
    embedder.run([docs({"d": "queued second"}, seq=9, versions=[5])])
    embedder.run([docs({"d": "queued first"}, seq=3, versions=[5])])
    assert chunk_texts(store, "d") == ["queued second"]


def test_a_redelivered_batch_rewrites_the_same_rows() -> None:
    store, register = InMemoryStore(), MemoryRegister()
    embedder = make_embedder(store=store, register=register)
    message = docs({"d": words(20), "e": "short"}, seq=4)
    embedder.run([message])
    before = dict(store.collections["c"].rows)
    outcome = embedder.run([message])[0]
    assert register.claim("c", [("d", OrderKey(4, 4), 3)])[0].claim is Claim.AGAIN
    assert outcome.stored == 2 and store.collections["c"].rows.keys() == before.keys()


def test_a_write_overtaken_while_it_was_writing_removes_its_own_rows() -> None:
    # A newer operation claims the document between this one's claim and its recheck (it runs
    # on another worker): this one's rows must not survive, even if the newer one's clean-up
    # read the store before they were written.
    store = InMemoryStore()

    class Overtaken(MemoryRegister):
        def claim(self, collection: str, ops: Any) -> list[Claimed]:
            claims = super().claim(collection, ops)
            if ops[0][1].seq != 99:
                self.overtake(collection, "d", OrderKey(99, 99))  # the other worker's claim
            return claims

    outcome = make_embedder(store=store, register=Overtaken()).run([docs({"d": words(20)}, seq=1)])[
        0
    ]
    assert outcome.stored == 1 and store.count("c") == 0


def test_a_stale_operation_removes_rows_an_earlier_attempt_of_its_own_wrote() -> None:
    store, register = InMemoryStore(), MemoryRegister()
    embedder = make_embedder(store=store, register=register)
    message = docs({"d": words(20)}, seq=1)
    embedder.run([message])  # the first attempt wrote, then "crashed" before acknowledging
    # a newer operation claims, and its clean-up ran before the first attempt's rows landed
    register.overtake("c", "d", OrderKey(50, 50))
    register.settle("c", [("d", [1])])
    outcome = embedder.run([message])[0]  # the redelivery finds itself stale
    assert outcome.superseded == 1 and store.count("c") == 0


def test_a_rejected_later_operation_does_not_hide_a_valid_earlier_one_in_its_group() -> None:
    class ZeroForGibberish(HashEncoder):
        def encode(self, texts: Any) -> Any:
            vectors = super().encode(texts)
            vectors[[i for i, t in enumerate(texts) if t == "qqq"]] = 0
            return vectors

    store = InMemoryStore()
    embedder = make_embedder(ZeroForGibberish(), store)
    embedder.run([docs({"d": "old"}, seq=1)])
    outcomes = embedder.run([docs({"d": "new text"}, seq=5), docs({"d": "qqq"}, seq=6)])
    assert chunk_texts(store, "d") == ["new text"]
    assert outcomes[0].stored == 1 and "zero vector" in outcomes[1].rejected[0]


def test_one_message_delivered_twice_into_one_group_is_applied_once() -> None:
    store = InMemoryStore()
    embedder = make_embedder(store=store)
    message = docs({"d": words(20), "e": "short"}, seq=3)
    outcomes = embedder.run([message, message])
    assert [o.stored for o in outcomes] == [2, 2] and [o.superseded for o in outcomes] == [0, 0]
    assert len(chunk_texts(store, "d")) == 3 and chunk_texts(store, "e") == ["short"]


def test_a_message_without_sequence_numbers_gets_the_same_ones_on_every_attempt() -> None:
    # Contract 1 messages carry no seq: a redelivery must not look like a new operation.
    store, register = InMemoryStore(), MemoryRegister()
    embedder = make_embedder(store=store, register=register)
    message = docs({"d": words(20)}, seq=None)
    embedder.run([message])
    register.overtake("c", "d", OrderKey(10_000, 10_000))  # a newer write, rows still coming
    register.settle("c", [("d", [1])])
    embedder.run([message])  # the redelivery is stale and removes what it wrote
    assert store.count("c") == 0


def test_a_failed_part_still_removes_what_the_written_parts_replaced() -> None:
    class RefusesSecondWrite(InMemoryStore):
        writes = 0

        def upsert(self, collection: str, rows: Rows) -> int:
            self.writes += 1
            if self.writes == 4:  # the second part of the second message
                raise StoreRejectedError("Milvus refused it")
            return super().upsert(collection, rows)

    store = RefusesSecondWrite()
    embedder = make_embedder(store=store)
    embedder.run([docs({"a": words(600), "b": "old b"}, seq=1)])
    with pytest.raises(StoreRejectedError):
        embedder.run([docs({"a": words(600, "n"), "b": words(600, "m")}, seq=10)])
    # a's new version landed: its old chunks are gone, not kept beside the new ones
    assert {row.seq for row in store.documents("c")["a"]} == {10}


def test_a_store_failure_after_the_claim_is_finished_by_the_retry() -> None:
    class FailsOnce(InMemoryStore):
        failed = False

        def delete(self, collection: str, pks: Any) -> None:
            if not self.failed:
                self.failed = True
                raise StoreUnavailableError("Milvus went away")
            super().delete(collection, pks)

    store = FailsOnce()
    embedder = make_embedder(store=store)
    embedder.run([docs({"d": words(24)}, seq=1)])
    replace = docs({"d": "short now"}, seq=2)
    with pytest.raises(StoreUnavailableError):
        embedder.run([replace])
    assert len(chunk_texts(store, "d")) == 4  # new chunk written, old ones not yet removed
    embedder.run([replace])
    assert chunk_texts(store, "d") == ["short now"]


def test_an_overlong_plain_text_is_chunked_by_default_and_nothing_is_lost() -> None:
    store = InMemoryStore()
    text = words(40)
    outcome = make_embedder(store=store, max_length=16).run(
        [
            BatchMessage(
                job_id="j", batch=0, collection="c", model="fake", texts=[text], ids=["t"], seq=1
            )
        ]
    )[0]
    rows = store.documents("c")["t"]
    assert outcome.chunks == len(rows) == 5 and outcome.truncated == 0
    assert " ".join(row.text for row in rows) == text


def test_a_plain_text_the_model_reads_whole_is_one_row_even_above_the_chunk_size() -> None:
    store = InMemoryStore()
    make_embedder(store=store, max_length=16).run(
        [BatchMessage(job_id="j", batch=0, collection="c", model="fake", texts=[words(12)], seq=1)]
    )
    assert store.count("c") == 1


def test_an_overlong_text_is_rejected_or_truncated_as_the_setting_says() -> None:
    store = InMemoryStore()
    embedder = make_embedder(store=store, max_length=16)
    common: dict[str, Any] = {"job_id": "j", "batch": 0, "collection": "c", "model": "fake"}
    rejected = embedder.run(
        [
            BatchMessage(
                **common, texts=[words(40), "fine"], ids=["a", "b"], overlong="reject", seq=1
            )
        ]
    )[0]
    assert (
        list(rejected.rejected) == [0]
        and "40 tokens, more than model 'fake' reads (16)" in rejected.rejected[0]
    )
    assert rejected.stored == 1
    cut = embedder.run(
        [BatchMessage(**common, texts=[words(40)], ids=["t"], overlong="truncate", seq=5)]
    )[0]
    assert cut.truncated == 1 and chunk_texts(store, "t") == [words(16)]


def test_a_document_in_a_texts_layout_collection_is_refused_plain_texts_and_deletes_work() -> None:
    store = InMemoryStore()
    store.add_texts_collection("c", HashEncoder().info)
    embedder = make_embedder(store=store)
    outcome = embedder.run([docs({"long": words(30), "short": "one chunk"}, seq=1)])[0]
    assert "reindex" in outcome.rejected[0] and outcome.stored == 1
    assert list(store.collections["c"].rows) == ["short"]  # keyed by id, as before
    embedder.run([deletes(["short"], seq=9)])
    assert store.count("c") == 0


def test_search_per_document_returns_each_document_once() -> None:
    store = InMemoryStore()
    embedder = make_embedder(store=store)
    embedder.run([docs({"long": words(40), "other": "w1 w2 w3"}, seq=1)])
    query = {"query": "w1 w2 w3", "k": 5, "collection": "c", "model": "fake"}
    every = embedder.search(SearchMessage(**query))
    best = embedder.search(SearchMessage(**query, per_document=True))
    assert len(every) == 5
    assert sorted(hit.id for hit in best) == ["long", "other"]
    assert best[0].id == "other" and best[0].score == pytest.approx(1.0, abs=1e-5)


# -- a history checker on the fakes: random operations, random order, crashes --------------


class Flaky(InMemoryStore):
    """Fails a random share of writes, reads and deletes, before or after doing them."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def _maybe_fail(self) -> None:
        if self.rng.random() < 0.08:
            raise StoreUnavailableError("injected")

    def upsert(self, collection: str, rows: Rows) -> int:
        self._maybe_fail()
        written = super().upsert(collection, rows)
        self._maybe_fail()
        return written

    def delete(self, collection: str, pks: Any) -> None:
        self._maybe_fail()
        super().delete(collection, pks)
        self._maybe_fail()


@pytest.mark.parametrize("seed", range(6))
def test_history_with_random_order_duplicates_and_failures_ends_at_the_last_operation(
    seed: int,
) -> None:
    rng = random.Random(seed)
    store = Flaky(rng)
    embedder = make_embedder(store=store)
    # 300 operations on 20 documents: writes of 1 to 5 chunks and deletes.
    model: dict[str, str | None] = {}
    queue: list[BatchMessage] = []
    for seq in range(1, 301):
        doc = f"d{rng.randrange(20)}"
        if rng.random() < 0.25:
            queue.append(deletes([doc], seq=seq))
            model[doc] = None
        else:
            text = words(rng.randint(1, 40), f"s{seq}-")
            queue.append(docs({doc: text}, seq=seq))
            model[doc] = text
    # Delivered in any order, some twice, each retried until it goes through (acks late).
    deliveries = queue + rng.sample(queue, 60)
    rng.shuffle(deliveries)
    for message in deliveries:
        group = [message]
        while True:
            try:
                embedder.run(group)
                break
            except StoreUnavailableError:
                continue
    stored = store.documents("c")
    for doc, last in model.items():
        if last is None:
            assert doc not in stored, f"{doc} was deleted last but has rows"
        else:
            rows = stored[doc]
            assert " ".join(row.text for row in rows) == last, f"{doc} is not its last version"
            assert [row.chunk for row in rows] == list(range(len(rows)))
    assert set(stored) <= set(model)
