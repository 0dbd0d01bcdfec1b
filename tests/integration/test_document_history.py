"""A history checker for documents, as databases are tested: random operations from several
producers, faults injected, and the final store compared with a model of what it must hold.

2,000 documents, 20,000 operations (create, update to a text of another chunk count, delete,
re-create) from 4 producer threads, on 2 worker processes; mid-run a worker process is
SIGKILLed and the Milvus server is killed and restarted. Half the documents carry versions
drawn from one counter (a thread may queue a later version before an earlier one); the other
half carry none, each written by one thread only, so the one it queued last must win. At the
end every document must hold exactly the chunks of its last operation (by version): no
missing, stale, orphan or doubled chunk.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from embedq.config.keys import HELD_PREFIX
from embedq.producer import EmbeddingProducer
from embedq.stack.services import child_pids
from tests.support.environment import unique
from tests.support.stack import REAL_MILVUS, Stack, kill, running, wait_until

pytestmark = pytest.mark.integration

DOCUMENTS, OPERATIONS, THREADS, PER_CALL = 2_000, 20_000, 4, 16
#: Small chunks, so that texts of 5 to 120 words make 1 to 4 chunks.
CHUNKS = {"EMBEDQ_CHUNKS__TOKENS": "32", "EMBEDQ_CHUNKS__OVERLAP": "0"}
WORDS = (
    "river",
    "stone",
    "garden",
    "window",
    "lamp",
    "harbor",
    "violin",
    "cedar",
    "meadow",
    "lantern",
    "orchard",
    "bridge",
    "candle",
    "valley",
    "engine",
    "pocket",
    "mirror",
    "ladder",
    "island",
    "feather",
    "compass",
    "thunder",
    "basket",
    "marble",
    "copper",
    "planet",
    "saddle",
    "anchor",
    "ribbon",
    "kettle",
    "tunnel",
    "falcon",
    "desert",
    "glacier",
    "quarry",
    "pepper",
)


@dataclass
class Model:
    """What each document must hold: its last operation's text (None: deleted)."""

    last: dict[str, tuple[float, str | None]]
    lock: threading.Lock

    def apply(self, doc: str, version: float, text: str | None) -> None:
        with self.lock:
            held = self.last.get(doc)
            if held is None or version >= held[0]:
                self.last[doc] = (version, text)


def text_for(rng: random.Random, tag: str) -> str:
    return " ".join([tag, *rng.choices(WORDS, k=rng.randint(5, 120))])


def produce(
    stack: Stack,
    collection: str,
    thread: int,
    model: Model,
    versions: Iterator[int],
    calls: Iterator[int],
) -> list[str]:
    """One producer thread: ``OPERATIONS / THREADS`` operations, in calls of ``PER_CALL``."""
    rng = random.Random(thread)
    jobs: list[str] = []
    owned = [f"u{d}" for d in range(DOCUMENTS // 2) if d % THREADS == thread]
    shared = [f"v{d}" for d in range(DOCUMENTS // 2)]
    sequence = itertools.count()  # the order this thread queues its unversioned operations
    with EmbeddingProducer(stack.settings()) as producer:
        for call in range(OPERATIONS // THREADS // PER_CALL):
            docs = rng.sample(owned, PER_CALL // 2) + rng.sample(shared, PER_CALL // 2)
            deleting = rng.random() < 0.25
            drawn = [next(versions) for _ in range(PER_CALL // 2)]
            # A later version may be queued before an earlier one by another thread.
            time.sleep(rng.random() * 0.01)
            texts = [
                None if deleting else text_for(rng, f"t{thread}c{call}n{n}")
                for n in range(PER_CALL)
            ]
            given: list[int | None] = [None] * (PER_CALL // 2) + drawn
            if deleting:
                job = producer.delete(docs, collection=collection, versions=given)
            else:
                job = producer.submit_documents(
                    [
                        {"id": doc, "text": text, "version": version}
                        for doc, text, version in zip(docs, texts, given, strict=True)
                    ],
                    collection=collection,
                )
            for doc, text, version in zip(docs, texts, given, strict=True):
                model.apply(doc, next(sequence) if version is None else version, text)
            jobs.append(job.id)
            next(calls)
    return jobs


def stored_rows(stack: Stack, collection: str) -> list[dict[str, Any]]:
    client = stack.milvus_client()
    try:
        client.load_collection(collection)
        iterator = client.query_iterator(
            collection,
            batch_size=5000,
            filter="",
            output_fields=["id", "chunk", "start", "end", "version", "seq", "text"],
            consistency_level="Strong",
        )
        rows: list[dict[str, Any]] = []
        while page := iterator.next():
            rows += page
        iterator.close()
        return rows
    finally:
        client.close()


def check(stack: Stack, collection: str, model: Model) -> dict[str, int]:
    """Compare the store with the model, chunk for chunk; returns the counts of each fault."""
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for row in stored_rows(stack, collection):
        by_doc.setdefault(row["id"], []).append(row)
    counts = {"documents": 0, "deleted": 0, "chunks": 0, "missing": 0, "stale": 0,
              "orphan": 0, "doubled": 0}  # fmt: skip
    for doc, (version, text) in model.last.items():
        rows = sorted(by_doc.pop(doc, []), key=lambda r: r["chunk"])
        if text is None:
            counts["deleted"] += 1
            counts["orphan"] += len(rows)
            continue
        counts["documents"] += 1
        counts["chunks"] += len(rows)
        numbers = [r["chunk"] for r in rows]
        counts["doubled"] += len(numbers) - len(set(numbers))
        counts["stale"] += sum(1 for r in rows if text[r["start"] : r["end"]] != r["text"])
        if doc.startswith("v"):
            counts["stale"] += sum(1 for r in rows if r["version"] != version)
        counts["stale"] += len({r["seq"] for r in rows}) - 1 if rows else 0
        covered = set().union(*(range(r["start"], r["end"]) for r in rows)) if rows else set()
        missing = any(i not in covered for i in range(len(text)) if not text[i].isspace())
        counts["missing"] += int(missing or sorted(set(numbers)) != list(range(len(set(numbers)))))
    counts["orphan"] += sum(len(rows) for rows in by_doc.values())
    return counts


def held_pids(stack: Stack) -> set[int]:
    """The processes holding a message now, from the broker's held records."""
    client = redis.Redis.from_url(stack.redis_url)
    try:
        return {
            int(record.split(b" ", 1)[0])
            for key in client.scan_iter(HELD_PREFIX + "*")
            for record in cast("list[bytes]", client.hvals(key))
        }
    finally:
        client.close()


def run_history(stack: Stack) -> None:
    node = stack.start_worker("history", concurrency=2, env=CHUNKS)
    collection = unique("history")
    model = Model({}, threading.Lock())
    lock = threading.Lock()
    versions, calls = itertools.count(1), itertools.count(1)
    submitted = 0

    def locked(counter: Iterator[int], count_calls: bool = False) -> Iterator[int]:
        nonlocal submitted
        while True:
            with lock:
                value = next(counter)
                if count_calls:
                    submitted = value
            yield value

    total = THREADS * (OPERATIONS // THREADS // PER_CALL)
    results: list[list[str]] = [[] for _ in range(THREADS)]

    def thread(n: int) -> None:
        results[n] = produce(
            stack, collection, n, model, locked(versions), locked(calls, count_calls=True)
        )

    producers = [threading.Thread(target=thread, args=(n,)) for n in range(THREADS)]
    started = time.monotonic()
    for t in producers:
        t.start()
    # A third of the way: a worker process dies mid-batch.
    wait_until(lambda: submitted >= total // 3, 600, "a third of the operations")
    # The victim is a pool process holding a message, so that there is a batch to recover.
    victim: list[int] = []

    def busy_process() -> bool:
        victim[:] = sorted(set(child_pids(node.pid)) & held_pids(stack))[:1]
        return bool(victim)

    wait_until(busy_process, 120, "a pool process holding a message")
    os.kill(victim[0], signal.SIGKILL)
    # Two thirds: the Milvus server is killed and started again.
    wait_until(lambda: submitted >= 2 * total // 3, 600, "two thirds of the operations")
    assert stack.store is not None
    kill(stack.store, signal.SIGKILL)
    time.sleep(2)
    stack.start_store()
    for t in producers:
        t.join(timeout=900)
    jobs = [job for part in results for job in part]
    assert len(jobs) == total
    states = stack.wait_finished(jobs, timeout=900)
    assert all(s.ok for s in states), [s.summary() for s in states if not s.ok][:3]
    counts = check(stack, collection, model)
    seconds = time.monotonic() - started
    print(f"history on {stack.store_kind}: {len(model.last)} documents, {OPERATIONS} operations "
          f"in {seconds:.0f}s: {counts}")  # fmt: skip
    assert counts["missing"] == counts["stale"] == counts["orphan"] == counts["doubled"] == 0
    assert counts["documents"] > 0 and counts["deleted"] > 0
    assert b"recovered" in node.output()  # the killed process's batch went back
    # One hit per document, whether the server groups (Lite, Milvus >= 2.4) or not (2.3)
    with EmbeddingProducer(stack.settings()) as producer:
        best = producer.search("river stone garden", k=20, collection=collection, per_document=True)
    assert len(best) == 20 and len({hit.id for hit in best}) == 20


@pytest.fixture
def lite_stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(Stack(tmp_path))


@pytest.fixture
def server_stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(Stack(tmp_path, store="server"))


@pytest.mark.slow
def test_history_of_random_operations_with_faults_on_milvus_lite(lite_stack: Stack) -> None:
    run_history(lite_stack)


@REAL_MILVUS
def test_history_of_random_operations_with_faults_on_a_milvus_server(
    server_stack: Stack,
) -> None:
    run_history(server_stack)


def test_a_write_overtaken_between_its_claim_and_its_write_removes_its_own_rows(
    lite_stack: Stack,
) -> None:
    """The race the history rarely hits, made certain: a slow worker claims version 1 and
    writes it only after a second worker has claimed version 2, written it and deleted what
    version 1 had (nothing, yet). Version 1's rows must not survive."""
    stack = lite_stack
    slow = stack.start_worker(
        "slow", concurrency=1, env={"EMBEDQ_WORKER__PAUSE_BEFORE_WRITE": "6", **CHUNKS}
    )
    collection = unique("race")
    with EmbeddingProducer(stack.settings()) as producer:
        first = producer.submit_documents(
            [{"id": "d", "text": text_for(random.Random(1), "one"), "version": 1}],
            collection=collection,
        )
        wait_until(lambda: b"job_id" not in slow.output() and _holds(stack), 30, "the claim")
        time.sleep(1)  # the slow worker has claimed and is paused before writing
        stack.start_worker("fast", concurrency=1, env=CHUNKS)
        second = producer.submit_documents(
            [{"id": "d", "text": "version two", "version": 2}], collection=collection
        )
        states = stack.wait_finished([first.id, second.id], timeout=120)
    assert all(s.ok for s in states)
    rows = stored_rows(stack, collection)
    assert [(r["id"], r["text"]) for r in rows] == [("d", "version two")]


def _holds(stack: Stack) -> bool:
    import redis

    client = redis.Redis(port=stack.redis_port)
    try:
        return bool(client.hlen("unacked"))
    finally:
        client.close()
