"""Dynamic batching on real processes: small batches waiting in the queue are embedded together,
bad messages among them still end as dead letters, and a crash loses none of those taken."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from embedq.producer import EmbeddingProducer, Job
from embedq.stack.services import child_pids
from embedq.state.deadletters import DeadLetters
from tests.support.environment import unique
from tests.support.servers import queue_raw_batch
from tests.support.stack import Stack, running, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(Stack(tmp_path))


def one_text_jobs(stack: Stack, collection: str, n: int) -> list[Job]:
    with EmbeddingProducer(stack.settings()) as producer:
        return [
            producer.submit(
                [f"one text job {i} about a harbor"],
                ids=[f"job-{i}"] if i % 2 else None,
                metadata=[{"i": i}] if i % 2 else None,
                collection=collection,
            )
            for i in range(n)
        ]


def task_runs(output: bytes) -> int:
    """Celery task executions of embed batches the worker logged (succeeded or not)."""
    return len(re.findall(rb"Task embedq\.embed_batch\[[^\]]+\] (?:succeeded|raised)", output))


def test_waiting_one_text_jobs_are_embedded_together_and_bad_ones_still_dead_letter(
    stack: Stack,
) -> None:
    # Given 300 one-text jobs, a malformed batch and a batch with an empty text, all waiting
    settings = stack.settings()
    collection = unique("coalesce")
    jobs = one_text_jobs(stack, collection, 300)
    malformed = queue_raw_batch(settings, {"collection": collection, "texts": ["a"], "ids": 5})
    partial = queue_raw_batch(settings, {"collection": collection, "texts": ["fine text", ""]})

    # When one worker process starts on them
    worker = stack.start_worker("coalescer", concurrency=1)

    # Then every job is stored, in far fewer task runs than jobs
    for job in jobs:
        assert job.wait(timeout=120).texts_stored == 1
    wait_until(lambda: malformed.status().finished and partial.status().finished, 60, "bad ones")
    assert partial.status().texts_stored == 1 and partial.status().texts_rejected == 1
    assert malformed.status().batches_failed == 1
    assert stack.count(collection) == 301
    output = worker.output()
    groups = [int(n) for n in re.findall(rb"coalesced=(\d+)", output)]
    assert max(groups) > 10, "no batch was embedded with others"
    assert task_runs(output) <= 60, f"{task_runs(output)} task runs for 302 messages"
    # and the bad messages are dead letters that say why, as without coalescing
    client = redis.Redis(port=stack.redis_port)
    letters = {letter.kind: letter for letter in DeadLetters(client).list()}
    client.close()
    assert set(letters) == {"invalid-message", "rejected"}
    assert "ids" in letters["invalid-message"].reason
    assert "empty" in letters["rejected"].reason


def test_batches_taken_by_a_process_that_dies_are_delivered_again(stack: Stack) -> None:
    # Given 200 one-text jobs waiting and a store that does not answer (frozen)
    collection = unique("taken")
    jobs = one_text_jobs(stack, collection, 200)
    assert stack.store is not None
    os.kill(stack.store.pid, signal.SIGSTOP)
    client = redis.Redis(port=stack.redis_port)
    try:
        worker = stack.start_worker("doomed", concurrency=1)
        # When its process has taken batches from the queue (unacknowledged) and is killed
        wait_until(lambda: client.hlen("unacked") > 1, 60, "batches to be taken")
        taken = client.hlen("unacked")
        os.kill(child_pids(worker.pid)[0], signal.SIGKILL)
    finally:
        os.kill(stack.store.pid, signal.SIGCONT)
    # Then, the store back, every job is stored once: the batch Celery handed over is retried,
    # the taken ones go back as soon as the node sees its process gone (its next lease tick),
    # not after the visibility timeout (25 s here)
    started = time.monotonic()
    for job in jobs:
        assert job.wait(timeout=180).texts_stored == 1
    assert taken > 1 and time.monotonic() - started < 20
    assert stack.count(collection) == 200
    assert client.hlen("unacked") == 0
    client.close()
