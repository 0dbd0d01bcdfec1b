"""The workload of the fault tests: N = 20,000 texts (12,000 with ids and metadata, 8,000
without) submitted as two jobs, and the checks that follow a fault: every batch counted once,
no dead letter, and in Milvus exactly the expected rows, each id once, text and metadata intact.
"""

from __future__ import annotations

from typing import Any

import redis

from embedq.config.contract import derive_id
from embedq.producer import EmbeddingProducer, Job
from tests.support.stack import Stack, wait_until

WITH_IDS, WITHOUT_IDS = 12_000, 8_000
N = WITH_IDS + WITHOUT_IDS


def texts(tag: str) -> tuple[list[str], list[str], list[dict[str, Any]], list[str]]:
    words = ["river", "stone", "lamp", "orbit", "violin", "harbor", "cedar", "prism"]
    with_ids = [
        f"{tag} record {i}: the {words[i % 8]} near {words[(i * 7) % 8]}" for i in range(WITH_IDS)
    ]
    ids = [f"{tag}-{i}" for i in range(WITH_IDS)]
    metadata = [{"i": i, "tag": tag, "w": words[i % 8]} for i in range(WITH_IDS)]
    without = [f"{tag} anonymous {i} of the {words[i % 8]}" for i in range(WITHOUT_IDS)]
    return with_ids, ids, metadata, without


def submit(stack: Stack, collection: str, tag: str) -> list[Job]:
    with_ids, ids, metadata, without = texts(tag)
    with EmbeddingProducer(stack.settings()) as producer:
        return [
            producer.submit(with_ids, ids=ids, metadata=metadata, collection=collection),
            producer.submit(without, collection=collection),
        ]


def expected(stack: Stack, tag: str) -> dict[str, tuple[str, dict[str, Any]]]:
    with_ids, ids, metadata, without = texts(tag)
    model = stack.settings().model.name
    rows = {key: (text, meta) for key, text, meta in zip(ids, with_ids, metadata, strict=True)}
    rows.update({derive_id(model, text): (text, {}) for text in without})
    return rows


def verify(stack: Stack, collection: str, tag: str) -> None:
    """Exactly the expected rows: count, every id once, text and metadata intact."""
    want = expected(stack, tag)
    client = stack.milvus_client()
    try:
        client.load_collection(collection)  # released after a store restart
        count = client.query(collection, output_fields=["count(*)"], consistency_level="Strong")
        seen: dict[str, tuple[str, dict[str, Any]]] = {}
        duplicates = 0
        iterator = client.query_iterator(
            collection, batch_size=5000, output_fields=["id", "text", "metadata"], filter='id != ""'
        )
        while batch := iterator.next():
            for row in batch:
                duplicates += row["id"] in seen
                seen[row["id"]] = (row["text"], row["metadata"] or {})
        iterator.close()
    finally:
        client.close()
    missing, extra = sorted(set(want) - set(seen)), sorted(set(seen) - set(want))
    assert (count[0]["count(*)"], len(missing), len(extra)) == (N, 0, 0), (
        f"missing {missing[:3]}..{missing[-3:]}, unexpected {extra[:3]}"
    )
    assert duplicates == 0
    assert seen == want


def mid_run(stack: Stack, jobs: list[Job], batches: int = 10) -> None:
    """Wait until some batches are stored but most are not."""

    def progressed() -> bool:
        state = stack.status(jobs[0].id)
        return state is not None and state.batches_done >= batches

    wait_until(progressed, 120, f"{batches} batches to be stored")
    wait_until(lambda: stack.status(jobs[1].id) is not None, 30, "the second job's record")
    state = stack.status(jobs[1].id)
    assert state is not None and not state.finished, "too late: the run was already over"


def assert_clean(stack: Stack, jobs: list[Job]) -> None:
    """Every batch of every job stored once and counted once; no dead letter anywhere."""
    for state in stack.wait_finished([job.id for job in jobs]):
        assert state.ok, state
        assert state.batches_failed == 0
        assert state.batches_done == state.total_batches
        assert state.texts_stored == state.texts_total
    client = redis.Redis(port=stack.redis_port)
    assert client.zcard("embedq:dead") == 0, "dead letters were written"
    client.close()
