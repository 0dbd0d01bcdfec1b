"""Horizontal scale on one machine: three worker nodes started as separate hosts would be
(separate -n names, separate processes), one Redis, one real Milvus server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from embedq.config.contract import derive_id
from embedq.producer import EmbeddingProducer
from tests.support.environment import unique
from tests.support.stack import REAL_MILVUS, Stack, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), REAL_MILVUS]

N = 30_000


@pytest.fixture
def server_stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(Stack(tmp_path, store="server"))


def test_three_nodes_share_30k_texts_and_store_each_exactly_once(server_stack: Stack) -> None:
    stack = server_stack
    nodes = [stack.start_worker(f"node{i}", concurrency=1) for i in range(1, 4)]
    settings = stack.settings()
    collection = unique("scale")
    texts = [f"scale-out sentence {i} about the {('sea', 'sky', 'stone')[i % 3]}" for i in range(N)]
    with EmbeddingProducer(settings) as producer:
        job = producer.submit(texts, collection=collection)
    (state,) = stack.wait_finished([job.id], timeout=600)
    assert state.ok and state.texts_stored == N and state.batches_done == state.total_batches

    # Every text exactly once
    client = stack.milvus_client()
    client.load_collection(collection)
    seen: list[str] = []
    iterator = client.query_iterator(
        collection, batch_size=10_000, output_fields=["id"], filter='id != ""'
    )
    while batch := iterator.next():
        seen.extend(row["id"] for row in batch)
    iterator.close()
    client.close()
    assert len(seen) == len(set(seen)) == N
    assert set(seen) == {derive_id(settings.model.name, t) for t in texts}

    # Each node did a share
    shares = [node.output().count(f"job_id={job.id}".encode()) for node in nodes]
    assert sum(shares) >= state.total_batches  # a batch may have run twice, never lost
    assert all(share > 0 for share in shares), shares
