"""The servers a benchmark run measures against: the local stack of ``embedq standalone``
(embedq.stack.local), one Redis, one Milvus Lite server, and Celery worker pools started and
stopped per worker count. Free loopback ports, a temporary directory, everything stopped in
``close``."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.corpus import ROOT
from embedq.config.celeryconfig import make_celery
from embedq.config.contract import embed_queue
from embedq.config.settings import Settings
from embedq.stack.local import LocalStack
from embedq.stack.services import Service, child_pids
from embedq.worker.encoder import ModelInfo
from embedq.worker.milvus import MilvusStore

__all__ = ["Stack", "cpu_seconds"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stack(LocalStack):
    """Redis + Milvus Lite server now; worker pools on demand."""

    def __init__(self, root: Path, model_source: str, model_name: str) -> None:
        # Workers run in the run's folder, not the repository: a developer's .env there must
        # not reach them.
        super().__init__(root, cwd=root)
        self.model_source = model_source
        self.model_name = model_name
        self.pool: Service | None = None
        self._node = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        self.start_redis(timeout=20)
        self.start_milvus(timeout=60)

    def close(self) -> None:
        # Workers first (they may still write), then Milvus (SIGINT: it closes its files), then
        # Redis; each stop waits and kills what does not stop, so nothing outlives the run.
        self.stop(worker_grace=60)
        self.pool = None

    # -- settings and environment ------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment: the caller's EMBEDQ_* variables dropped, ours set."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
        env.update(
            EMBEDQ_REDIS__URL=self.redis_url,
            EMBEDQ_MILVUS__URI=self.milvus_uri,
            EMBEDQ_MODEL__SOURCE=self.model_source,
            EMBEDQ_MODEL__NAME=self.model_name,
            PYTHONPATH=str(ROOT),
            HF_HUB_OFFLINE="1",
        )
        env.update(extra)
        return env

    def settings(self, **overrides: object) -> Settings:
        """Settings of this stack and model; ``batch={"size": n}`` and the like override."""
        model = {"source": self.model_source, "name": self.model_name}
        return super().settings(**({"model": model} | overrides))

    # -- workers -----------------------------------------------------------------------------

    def start_workers(self, concurrency: int, **env: str) -> Service:
        """A prefork pool of ``concurrency`` processes, returned once every process has loaded
        its model (so load time is never counted as ingest time); ``env``: more settings."""
        self.stop_workers()
        self._node = f"bench{concurrency}_{os.getpid()}"
        pool = self.start_worker(self._node, concurrency, models=(), env=env)
        self.pool = pool
        loaded = re.compile(rb"loaded model")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # Each prefork child logs one "loaded model" line from its init hook; when the log
            # wording changes, the deadline still bounds the wait.
            ready = len(loaded.findall(pool.output())) >= concurrency
            if ready and len(child_pids(pool.pid)) >= concurrency:
                break
            time.sleep(0.1)
        return pool

    def processes(self) -> dict[str, list[int]]:
        """The pids of each part of the stack, for CPU accounting: this process (the producer),
        the worker pool (parent and children), Milvus Lite and Redis."""
        found: dict[str, list[int]] = {"producer": [os.getpid()]}
        if self.pool is not None:
            found["workers"] = [self.pool.pid, *child_pids(self.pool.pid)]
        for service in (self.redis, self.milvus):
            if service is not None:
                found[service.name] = [service.pid]
        return found

    def consume(self, on: bool) -> None:
        """Stop (``on=False``) or resume the pool's consumption of its embed queue (Celery's
        remote control), so that a backlog can be queued before the workers see any of it."""
        queue = embed_queue(self.model_name)
        control = make_celery(self.settings())
        destination = [f"{self._node}@{socket.gethostname()}"]
        try:
            change = control.control.add_consumer if on else control.control.cancel_consumer
            replies = change(queue, destination=destination, reply=True, timeout=10)
        finally:
            control.close()
        if not replies:
            raise RuntimeError(f"worker {self._node} did not answer to consume={on}")

    def warm_up(self, collection: str, model: ModelInfo, batches: int) -> None:
        """One-text batches until every pool process has stored one: a process opens its
        Milvus connection (and imports pymilvus) on its first batch, about a second that the
        in-process path, whose client is connected before its clock starts, never pays either."""
        from embedq.producer import EmbeddingProducer

        self.create_collection(collection, model)
        with EmbeddingProducer(self.settings(batch={"size": 1})) as producer:
            texts = [f"warm-up text {i}" for i in range(batches)]
            producer.submit(texts, collection=collection).wait(timeout=120, poll=0.01)

    def batch_seconds(self, job_id: str) -> list[float]:
        """Seconds each batch of ``job_id`` took in a worker, from the per-batch log lines
        (``... job_id=J ... seconds=S``); empty when the log format does not match."""
        if self.pool is None:
            return []
        pattern = re.compile(rb"job_id=" + job_id.encode() + rb"\b.*?\bseconds=([0-9.]+)")
        return [float(m.group(1)) for m in pattern.finditer(self.pool.output())]

    def first_batch_started(self, since: int) -> float | None:
        """When (epoch seconds) the first batch logged after byte ``since`` of the pool's
        output began: its line's time minus its ``seconds``. Celery stamps lines in local time
        to the millisecond."""
        if self.pool is None:
            return None
        line = re.compile(
            rb"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}).*?\bseconds=([0-9.]+)", re.M
        )
        starts = [
            time.mktime(time.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S"))
            + int(m.group(2)) / 1000
            - float(m.group(3))
            for m in line.finditer(self.pool.output()[since:])
        ]
        return min(starts, default=None)

    def stop_workers(self) -> None:
        if self.pool is not None:
            self.pool.stop(timeout=60)
            self.workers.remove(self.pool)
            self.pool = None

    # -- Milvus ------------------------------------------------------------------------------

    def client(self) -> Any:
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.milvus_uri, timeout=60)

    def create_collection(self, collection: str, model: ModelInfo) -> None:
        """A fresh collection with embedq's schema, index and model binding, created the way a
        worker creates it (so every path writes into the same kind of collection), on a
        quiet stack: the collections of earlier measurements are dropped first, and the
        background work they left (Milvus Lite compacts and indexes after large writes) is
        waited out, so that no path pays for the one before it."""
        client = self.client()
        try:
            for old in client.list_collections():
                client.drop_collection(old)
        finally:
            client.close()
        store = MilvusStore(self.settings().milvus)
        try:
            store.prepare(collection, model)
        finally:
            store.close()
        self.settle()

    def settle(self, quiet: float = 0.1, window: float = 0.5, timeout: float = 60.0) -> float:
        """Wait until the stack's servers and workers together use under ``quiet`` of a core
        over ``window`` seconds (at most ``timeout``); returns the seconds waited."""
        pids = [
            pid for name, group in self.processes().items() if name != "producer" for pid in group
        ]
        started = time.monotonic()
        before = sum(cpu_seconds(pid) for pid in pids)
        while time.monotonic() - started < timeout:
            time.sleep(window)
            now = sum(cpu_seconds(pid) for pid in pids)
            if (now - before) / window < quiet:
                break
            before = now
        return time.monotonic() - started

    def count(self, collection: str) -> int:
        """Rows in ``collection``, read with Strong consistency (every acknowledged write)."""
        client = self.client()
        try:
            result = client.query(
                collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
            )
            return int(result[0]["count(*)"])
        finally:
            client.close()

    def flush_redis(self) -> None:
        """Drop everything queued (the producer-memory run queues texts no worker reads)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushall()
        finally:
            client.close()
