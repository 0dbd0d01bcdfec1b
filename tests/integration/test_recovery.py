"""Back to work in seconds after a crash: a node records each message it takes in the same step
that takes it, keeps a lease, and the messages of a node whose lease ran out go back to the
queue at once, however the node died. Real Redis, Milvus Lite and worker processes; each test
prints how long recovery took (the figures in docs/reliability.md)."""

from __future__ import annotations

import functools
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from embedq.config.keys import HOLDER
from embedq.producer import EmbeddingProducer
from embedq.stack.services import Service, free_port, port_is_free
from tests.support.environment import ROOT, process_env, unique
from tests.support.metrics import scrape, total
from tests.support.stack import Stack, kill_node, running, wait_until
from tests.support.workload import N, assert_clean, mid_run, submit, verify

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

RECOVERED = re.compile(rb"recovered (\d+) message\(s\) held by (\S+), which is gone")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(Stack(tmp_path))


def recovered(*nodes: Service) -> list[tuple[int, str]]:
    """The restores the nodes logged: (messages, the dead holder)."""
    out = b"".join(node.output() for node in nodes)
    return [(int(n), holder.decode()) for n, holder in RECOVERED.findall(out)]


def stored(stack: Stack, collection: str) -> dict[str, str]:
    """Every row of a collection, id -> text; fails on a doubled id."""
    client = stack.milvus_client()
    try:
        client.load_collection(collection)
        rows = client.query(
            collection, filter='id != ""', output_fields=["id", "text"], limit=16_384
        )
    finally:
        client.close()
    found = {row["id"]: row["text"] for row in rows}
    assert len(found) == len(rows), "an id is stored twice"
    return found


def test_a_node_killed_right_after_taking_a_batch_loses_nothing(stack: Stack) -> None:
    # Given a node that stops right after it takes a message from the queue (a fault point:
    # with kombu's own BRPOP, the message would then exist only in this process's memory)
    paused = stack.start_worker(
        "paused", concurrency=1, env={"EMBEDQ_WORKER__PAUSE_AFTER_TAKE": "3600"}
    )
    collection = unique("taken")
    texts = [f"taken and killed {i}" for i in range(600)]
    ids = [f"k-{i}" for i in range(600)]
    with EmbeddingProducer(stack.settings()) as producer:
        job = producer.submit(texts, ids=ids, collection=collection)
    wait_until(lambda: b"fault point: paused after taking" in paused.output(), 60, "the take")
    client = redis.Redis(port=stack.redis_port)
    assert client.hlen(HOLDER) == 1  # recorded as held, in the step that took it
    # When the node is SIGKILLed there, and another node starts
    kill_node(paused)
    killed = time.monotonic()
    port = free_port()
    rescuer = stack.start_worker("rescuer", concurrency=1, env={"EMBEDQ_METRICS__PORT": str(port)})
    # Then the message comes back and every batch is stored, once
    state = job.wait(timeout=120)
    seconds = time.monotonic() - killed
    print(f"\nkilled right after a take: job finished {seconds:.1f}s after the kill")
    assert state.ok and state.texts_stored == 600 and state.batches_done == 3
    assert stored(stack, collection) == dict(zip(ids, texts, strict=True))
    assert [n for n, holder in recovered(rescuer) if holder.startswith("paused@")] == [1]
    assert total(scrape(port), "embedq_recovered_messages_total") == 1
    assert client.hlen("unacked") == 0 and client.hlen(HOLDER) == 0
    client.close()


@pytest.mark.slow
def test_the_batches_of_one_of_two_nodes_killed_are_taken_by_the_other(stack: Stack) -> None:
    # Given two nodes sharing an ingest
    doomed = stack.start_worker("doomed", concurrency=1)
    survivor = stack.start_worker("survivor", concurrency=1)
    collection, tag = unique("two"), unique("t")
    jobs = submit(stack, collection, tag)
    mid_run(stack, jobs)
    # When one node (main process and pool) is SIGKILLed mid-batch
    kill_node(doomed)
    killed = time.monotonic()
    # Then the other gives its batches back within seconds, and everything is stored once
    wait_until(lambda: bool(recovered(survivor)), 30, "the survivor to recover the batches")
    seconds = time.monotonic() - killed
    assert_clean(stack, jobs)
    finished = time.monotonic() - killed
    print(f"\none of two nodes killed: recovered after {seconds:.1f}s, done after {finished:.1f}s")
    assert all(holder.startswith("doomed@") for _, holder in recovered(survivor))
    verify(stack, collection, tag)


def test_a_long_batch_on_a_live_node_is_never_taken_by_another(stack: Stack) -> None:
    # Given two live nodes with a 3 s lease, and a store that stops answering (a batch that
    # takes far longer than the lease, but less than its time limit)
    slow = {
        "EMBEDQ_WORKER__LEASE": "3",
        "EMBEDQ_WORKER__RECOVERY_INTERVAL": "1",
        "EMBEDQ_MILVUS__TIMEOUT": "60",
        "EMBEDQ_WORKER__TIME_LIMIT": "60",
        "EMBEDQ_WORKER__SOFT_TIME_LIMIT": "50",
        "EMBEDQ_WORKER__VISIBILITY_TIMEOUT": "200",
    }
    nodes = [stack.start_worker(name, concurrency=1, env=slow) for name in ("one", "two")]
    collection = unique("long")
    client = redis.Redis(port=stack.redis_port)
    with EmbeddingProducer(stack.settings()) as producer:
        # a first batch creates the collection, so that the next one waits on its upsert
        producer.submit(["warm up"], collection=collection).wait(timeout=60)
        assert stack.store is not None
        os.kill(stack.store.pid, signal.SIGSTOP)
        try:
            job = producer.submit([f"long batch {i}" for i in range(200)], collection=collection)
            wait_until(lambda: client.hlen(HOLDER) == 1, 30, "a node to take the batch")
            holder = client.hvals(HOLDER)
            # When the batch runs for 4 leases
            for _ in range(12):
                time.sleep(1)
                assert client.hvals(HOLDER) == holder  # held by the same node throughout
        finally:
            os.kill(stack.store.pid, signal.SIGCONT)
        state = job.wait(timeout=120)
    # Then it was never restored nor run by the other node: one run, counted once
    assert state.ok and state.texts_stored == 200
    assert recovered(*nodes) == []

    def runs() -> int:
        return b"".join(node.output() for node in nodes).count(f"job_id={job.id}".encode())

    # (a node logs a batch just after recording it, so just after wait() returns)
    wait_until(lambda: runs() >= 1, 30, "the batch's log line")
    time.sleep(2)
    assert runs() == 1
    assert stack.count(collection) == 201
    client.close()


@pytest.mark.slow
def test_twenty_node_kills_during_an_ingest_lose_nothing(stack: Stack) -> None:
    """A node is SIGKILLed at a random moment 20 times, each time replaced by a new one."""
    collection, tag = unique("stress"), unique("s")
    rng = random.Random(os.environ.get("PYTEST_XDIST_WORKER", "") + tag)
    node = stack.start_worker("node-0", concurrency=1)
    jobs = submit(stack, collection, tag)
    started = time.monotonic()
    for n in range(1, 21):
        time.sleep(rng.uniform(0.0, 1.5))
        kill_node(node)
        node = stack.start_worker(f"node-{n}", concurrency=1)
    assert_clean(stack, jobs)
    print(f"\n20 node kills: {N} texts stored once, {time.monotonic() - started:.0f}s in all")
    verify(stack, collection, tag)
    restored = recovered(*stack.workers)
    assert restored, "no restore happened: the kills never caught a batch in flight"


# -- the whole stack ---------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the services run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Standalone:
    """``embedq standalone`` on one data directory, started and SIGKILLed as a whole."""

    def __init__(self, root: Path) -> None:
        self.data, self.log = root / "data", root / "standalone.log"
        self.redis_port, self.milvus_port = free_port(), free_port()
        self.env = process_env(
            f"redis://127.0.0.1:{self.redis_port}/0", f"http://127.0.0.1:{self.milvus_port}", {}
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        handle = self.log.open("ab")
        offset = handle.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "embedq", "standalone", "--data-dir", str(self.data),
             "--workers", "2"],
            env=self.env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        handle.close()
        wait_until(lambda: b"ready: queue texts" in self.log.read_bytes()[offset:], 180, "ready")

    def kill_everything(self) -> None:
        """SIGKILL every process of the stack at once, as a power cut would."""
        assert self.process is not None
        pids = [self.process.pid, *descendants(self.process.pid)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # nobody reacts to the others' deaths first
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        for port in (self.redis_port, self.milvus_port):
            wait_until(functools.partial(port_is_free, "127.0.0.1", port), 30, f"port {port}")

    def stop(self) -> None:
        # Its graceful stop is tested in test_standalone.
        if self.process is not None and self.process.poll() is None:
            self.kill_everything()


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Standalone]:
    made = Standalone(tmp_path)
    try:
        yield made
    finally:
        made.stop()


@pytest.mark.slow
def test_whole_stack_killed_mid_job_finishes_by_itself_after_a_restart(
    standalone: Standalone, tmp_path: Path
) -> None:
    # A view of the standalone stack's servers, for the workload's submit and checks
    view = Stack(tmp_path / "view")
    view.redis_port, view.milvus_port = standalone.redis_port, standalone.milvus_port
    standalone.start()
    done: list[tuple[str, str]] = []
    for round_ in (1, 2):
        # Given a job half stored (more work after the first crash)
        collection, tag = unique(f"crash{round_}"), unique("c")
        jobs = submit(view, collection, tag)
        mid_run(view, jobs)
        # When every process of the stack is SIGKILLed at once, and the stack started again
        standalone.kill_everything()
        killed = time.monotonic()
        standalone.start()
        restarted = time.monotonic()
        # Then the job finishes by itself within 60 s: every row once, nothing lost
        assert_clean(view, jobs)
        seconds = time.monotonic() - restarted
        print(
            f"\nwhole stack killed (round {round_}): ready again after {restarted - killed:.1f}s,"
            f" the job finished {seconds:.1f}s later"
        )
        assert seconds < 60
        done.append((collection, tag))
        for earlier, earlier_tag in done:
            verify(view, earlier, earlier_tag)
