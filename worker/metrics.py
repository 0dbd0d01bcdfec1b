"""embedq's Prometheus metrics: what the pipeline did, and how deep its queues are.

Each worker node serves ``http://ADDRESS:PORT/metrics`` (``EMBEDQ_METRICS__*``) from its main
process. Pool processes record into files under one folder (prometheus_client's multiprocess
mode), which the main process sums at each scrape; queue depths are read from Redis then too.
Flower has task counts but no queue depth, hence both.

prometheus_client's multiprocess mode follows ``PROMETHEUS_MULTIPROC_DIR``:
:meth:`Exporter.serve` sets it in the main process before the pool forks and before the first
metric is made, so every pool process inherits it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from embedq.config.connections import redis_client
from embedq.config.keys import UNACKED, queue_lists
from embedq.config.settings import Settings
from embedq.state.deadletters import DeadLetters

if TYPE_CHECKING:
    from embedq.worker.batch import BatchOutcome

__all__ = [
    "Exporter",
    "record_batches",
    "record_dead_letter",
    "record_failure",
    "record_recovered",
    "record_retry",
]

log = logging.getLogger(__name__)

# Seconds: a batch is encoded in milliseconds to seconds; an upsert includes Milvus's flush.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Pipeline:
    """The counters and histograms pool processes update."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.texts_stored = Counter(
            "embedq_texts_stored", "Texts encoded and written to Milvus", ["model"]
        )
        self.texts_rejected = Counter(
            "embedq_texts_rejected", "Texts refused one by one inside a batch", ["model"]
        )
        self.batches = Counter(
            "embedq_batches", "Batches finished, by outcome (ok, partial, failed)", ["outcome"]
        )
        self.retries = Counter("embedq_batch_retries", "Batch attempts that will be retried")
        self.dead_letters = Counter(
            "embedq_dead_letters_written", "Dead letters written, by kind", ["kind"]
        )
        self.recovered = Counter(
            "embedq_recovered_messages",
            "Messages given back to their queue because the node or process holding them died",
        )
        self.encode = Histogram(
            "embedq_encode_seconds", "Encoding one batch", ["model"], buckets=_BUCKETS
        )
        self.upsert = Histogram(
            "embedq_upsert_seconds", "Writing one batch to Milvus", ["model"], buckets=_BUCKETS
        )
        self.batch = Histogram(
            "embedq_batch_seconds", "One batch task from start to end", ["model"], buckets=_BUCKETS
        )


_pipeline: _Pipeline | None = None


def record_batches(model: str, outcomes: Sequence[BatchOutcome], seconds: float) -> None:
    """Batches embedded together (one encode, one upsert): counters move once by their sums."""
    if _pipeline is None:
        return
    p = _pipeline
    p.texts_stored.labels(model).inc(sum(o.stored for o in outcomes))
    p.texts_rejected.labels(model).inc(sum(len(o.rejected) for o in outcomes))
    partial = sum(1 for o in outcomes if o.rejected)
    if partial:
        p.batches.labels("partial").inc(partial)
    if len(outcomes) > partial:
        p.batches.labels("ok").inc(len(outcomes) - partial)
    for outcome in outcomes:
        if outcome.encode_seconds:
            p.encode.labels(model).observe(outcome.encode_seconds)
        if outcome.upsert_seconds:
            p.upsert.labels(model).observe(outcome.upsert_seconds)
    batch = p.batch.labels(model)
    for _ in outcomes:
        batch.observe(seconds)


def record_retry() -> None:
    if _pipeline is not None:
        _pipeline.retries.inc()


def record_failure() -> None:
    if _pipeline is not None:
        _pipeline.batches.labels("failed").inc()


def record_recovered(count: int) -> None:
    if _pipeline is not None and count:
        _pipeline.recovered.inc(count)


def record_dead_letter(kind: str) -> None:
    if _pipeline is not None:
        _pipeline.dead_letters.labels(kind).inc()


class _QueueCollector:
    """Reads queue depths from Redis at scrape time; a Redis that does not answer shows as
    ``embedq_redis_up 0`` rather than failing the scrape."""

    def __init__(self, client: redis.Redis, queues: Callable[[], Iterable[str]]) -> None:
        self._client = client
        self._queues = queues

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("embedq_redis_up", "1 if Redis answered this scrape")
        depth = GaugeMetricFamily(
            "embedq_queue_depth", "Messages waiting in a queue", labels=["queue"]
        )
        unacked = GaugeMetricFamily(
            "embedq_unacked_messages", "Messages delivered to a worker and not yet acknowledged"
        )
        dead = GaugeMetricFamily("embedq_dead_letters", "Dead letters kept in Redis")
        try:
            queues = sorted(set(self._queues()))
            pipe = self._client.pipeline(transaction=False)
            lists = [queue_lists(queue) for queue in queues]
            for each in lists:
                for name in each:
                    pipe.llen(name)
            pipe.hlen(UNACKED)
            replies = pipe.execute()
            letters = DeadLetters(self._client).count()
        except redis.RedisError as exc:
            log.warning("metrics: Redis did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        at = 0
        for queue, each in zip(queues, lists, strict=True):
            depth.add_metric([queue], sum(replies[at : at + len(each)]))
            at += len(each)
        unacked.add_metric([], replies[-1])
        dead.add_metric([], letters)
        up.add_metric([], 1)
        yield from (up, depth, unacked, dead)


@dataclass
class Exporter:
    """The HTTP endpoint of one worker node; :meth:`close` stops it and removes its files."""

    #: None when the port was taken: pool processes still record, nothing serves.
    server: Any
    folder: Path
    owns_folder: bool
    client: redis.Redis

    @classmethod
    def serve(cls, settings: Settings, queues: Callable[[], Iterable[str]]) -> Exporter | None:
        """Start recording and serving, in the node's main process before the pool starts.
        Returns None when metrics are off (port 0)."""
        global _pipeline
        config = settings.metrics
        if config.port == 0:
            return None
        if config.dir is None:
            folder, owns = Path(tempfile.mkdtemp(prefix="embedq-metrics-")), True
        else:
            folder, owns = config.dir, False
            folder.mkdir(parents=True, exist_ok=True)
            # Samples of a previous run of this node would be added to this run's.
            for stale in folder.glob("*.db"):
                stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        from prometheus_client import CollectorRegistry, start_http_server, values
        from prometheus_client.multiprocess import MultiProcessCollector

        # The celery command imports prometheus_client (through Flower's plugin) before this
        # runs; the value class only has to be chosen before the first metric is made.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        _pipeline = _Pipeline()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
        client = redis_client(settings.redis)
        registry.register(_QueueCollector(client, queues))
        server = None
        try:
            server, _ = start_http_server(config.port, addr=config.address, registry=registry)
            log.info("metrics on http://%s:%d/metrics", config.address, config.port)
        except OSError as exc:
            # Not worth stopping a worker for: its batches matter more than its metrics.
            log.warning(
                "metrics: cannot listen on %s:%d (%s); set EMBEDQ_METRICS__PORT to a free port, "
                "or 0 to turn metrics off",
                config.address,
                config.port,
                exc,
            )
        return cls(server, folder, owns, client)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.client.close()
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
