"""embedq's Prometheus metrics, scraped from a real worker node while it works."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedq.config.contract import embed_queue
from embedq.producer import EmbeddingProducer
from embedq.stack.services import free_port
from tests.support.environment import unique
from tests.support.metrics import scrape, total
from tests.support.servers import queue_raw_batch
from tests.support.stack import Stack, kill, running, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(Stack(tmp_path))


def test_the_metrics_of_a_worker_node_move_with_its_work(stack: Stack) -> None:
    port = free_port()
    stack.start_worker("metered", concurrency=2, env={"EMBEDQ_METRICS__PORT": str(port)})
    settings = stack.settings()
    queue = embed_queue(settings.model.name)

    # Before any work: Redis answers, the queue is empty, nothing counted.
    before = scrape(port)
    assert total(before, "embedq_redis_up") == 1
    assert total(before, "embedq_queue_depth", queue=queue) == 0
    assert total(before, "embedq_texts_stored_total") == 0

    # While a job of 40 batches drains, its queue depth is seen rising then falling.
    depths: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            depths.append(total(scrape(port), "embedq_queue_depth", queue=queue))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with EmbeddingProducer(settings) as producer:
            job = producer.submit(
                [f"metered text {i} about rivers" for i in range(10_000)],
                collection=unique("metrics"),
            )
        status = job.wait(timeout=180)
    finally:
        done.set()
        watcher.join()
    assert max(depths) >= 10, depths
    # (the last scrape may have begun before the job finished: the one below is after it)

    after = scrape(port)
    batches = status.total_batches
    assert total(after, "embedq_texts_stored_total", model=settings.model.name) == 10_000
    assert total(after, "embedq_batches_total", outcome="ok") == batches
    # Histograms observed once per batch, summed over the node's pool processes.
    assert total(after, "embedq_encode_seconds_count") == batches
    assert total(after, "embedq_upsert_seconds_count") == batches
    assert total(after, "embedq_batch_seconds_count") == batches
    assert total(after, "embedq_upsert_seconds_sum") > 0
    assert total(after, "embedq_queue_depth", queue=queue) == 0

    # A batch with one bad text: the others are stored, the bad one is counted and kept.
    queue_raw_batch(settings, {"collection": unique("mixed"), "texts": ["fine", "", "also fine"]})
    wait_until(
        lambda: total(scrape(port), "embedq_batches_total", outcome="partial") == 1, 60, "batch"
    )
    mixed = scrape(port)
    assert total(mixed, "embedq_texts_rejected_total") == 1
    assert total(mixed, "embedq_texts_stored_total") == 10_002
    assert total(mixed, "embedq_dead_letters_written_total", kind="rejected") == 1
    assert total(mixed, "embedq_dead_letters") == 1

    # A store that is down: the batch is retried, and the retries are counted.
    assert stack.store is not None
    kill(stack.store)
    with EmbeddingProducer(settings) as producer:
        waiting = producer.submit(["stored after a retry"], collection=unique("retry"))
    wait_until(lambda: total(scrape(port), "embedq_batch_retries_total") >= 1, 60, "a retry")
    stack.start_store()
    assert waiting.wait(timeout=120).texts_stored == 1
