"""The timed paths: the limit (raw encode, raw upsert), the in-process path (encode then insert,
serially, as a user of pymilvus's Model2VecEmbeddingFunction writes it), embedq end to end, and
a stream of one-text jobs.

Every path writes into a fresh collection created with embedq's schema before the clock starts,
and every stored count is checked with a Strong ``count(*)`` query after it stops.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.corpus import Corpus
from bench.stack import Stack, cpu_seconds
from embedq.producer import EmbeddingProducer
from embedq.worker.encoder import ModelInfo, Vectors
from embedq.worker.speedups.upsert import send_upsert, upsert_request
from embedq.worker.store import Rows

__all__ = [
    "EmbedqRun",
    "SmallJobs",
    "Throughput",
    "embedq_ingest",
    "in_process",
    "queued_small_jobs",
    "raw_encode",
    "raw_upsert",
    "small_jobs",
]


@dataclass(frozen=True)
class Throughput:
    """``texts`` handled in ``seconds``; ``stored`` is the verified row count (None when the
    path stores nothing)."""

    texts: int
    seconds: float
    stored: int | None = None

    @property
    def per_s(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0

    @property
    def verified(self) -> bool:
        return self.stored is None or self.stored == self.texts

    def to_json(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "seconds": round(self.seconds, 4),
            "texts_per_s": round(self.per_s, 1),
            "stored": self.stored,
            "verified": self.verified,
        }


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "batches_logged": len(ordered),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
        "sum": round(sum(ordered), 3),
    }


def _chunks(count: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def _rows(ids: Sequence[str], texts: Sequence[str], vectors: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of embedq's collection layout, each text a document of one chunk (the row key is
    the id: this path writes each text once)."""
    return [
        {
            "pk": i,
            "id": i,
            "chunk": 0,
            "start": 0,
            "end": len(t),
            "version": 0.0,
            "seq": 0,
            "vector": v,
            "text": t,
            "metadata": {},
        }
        for i, t, v in zip(ids, texts, vectors, strict=True)
    ]


def _document_rows(ids: Sequence[str], texts: Sequence[str], vectors: Vectors) -> Rows:
    count = len(ids)
    return Rows(
        ids=ids,
        texts=texts,
        metadata=[{}] * count,
        vectors=vectors,
        pks=ids,
        chunks=[0] * count,
        starts=[0] * count,
        ends=[len(t) for t in texts],
        versions=[0.0] * count,
        seqs=[0] * count,
    )


def raw_encode(model: Any, corpus: Corpus, max_length: int | None) -> tuple[Throughput, Vectors]:
    """``StaticModel.encode`` over the whole corpus in this one process (its own batching, no
    multiprocessing): the fastest one process turns these texts into vectors."""
    started = time.perf_counter()
    vectors = model.encode(corpus.texts, use_multiprocessing=False, max_length=max_length)
    seconds = time.perf_counter() - started
    return Throughput(len(corpus), seconds), np.ascontiguousarray(vectors, dtype=np.float32)


def raw_upsert(
    stack: Stack, collection: str, info: ModelInfo, corpus: Corpus, vectors: Vectors, batch: int
) -> tuple[Throughput, float]:
    """Upserts of precomputed vectors in batches: the fastest this Milvus takes the rows.
    Returns the throughput and, apart, the seconds of one flush at the end."""
    stack.create_collection(collection, info)
    client = stack.client()
    try:
        # The requests are built before the clock starts (as embedq's workers build them, by
        # column): only sending them and Milvus's share are measured.
        requests = [
            upsert_request(
                collection,
                _document_rows(corpus.ids[part], corpus.texts[part], vectors[part]),
            )
            for part in _chunks(len(corpus), batch)
        ]
        started = time.perf_counter()
        for request in requests:
            send_upsert(client, request, None)
        seconds = time.perf_counter() - started
        flushed = time.perf_counter()
        client.flush(collection)
        flush_seconds = time.perf_counter() - flushed
    finally:
        client.close()
    return Throughput(len(corpus), seconds, stack.count(collection)), flush_seconds


def in_process(
    stack: Stack, collection: str, info: ModelInfo, model: Any, corpus: Corpus, batch: int
) -> Throughput:
    """Encode a batch, insert it, next batch: one process, nothing overlapped. This is what
    ``Model2VecEmbeddingFunction.encode_documents`` (a ``StaticModel.encode`` call) followed by
    ``MilvusClient.insert`` amounts to."""
    stack.create_collection(collection, info)
    client = stack.client()
    try:
        started = time.perf_counter()
        for part in _chunks(len(corpus), batch):
            texts = corpus.texts[part]
            vectors = list(model.encode(texts))
            client.insert(collection, _rows(corpus.ids[part], texts, vectors))
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return Throughput(len(corpus), seconds, stack.count(collection))


def _cpu(parts: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in parts.items()}


@dataclass(frozen=True)
class EmbedqRun:
    corpus: str
    workers: int
    batch_size: int
    result: Throughput
    #: Seconds ``submit`` took to check and queue everything (part of ``result.seconds``).
    submit_seconds: float
    batches: int
    #: Seconds per batch inside the workers (from their log), for finding where time goes.
    worker_batch_seconds: list[float]
    #: CPU seconds each part of the stack spent during the run (producer, workers, Milvus
    #: Lite, Redis): what the run costs the machine, whatever the wall clock says.
    cpu_seconds: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "batches": self.batches,
            "submit_seconds": round(self.submit_seconds, 4),
            **self.result.to_json(),
            "worker_batch_seconds": _summary(self.worker_batch_seconds),
            "cpu_seconds": {k: round(v, 2) for k, v in self.cpu_seconds.items()},
            "cpu_ms_per_text": round(sum(self.cpu_seconds.values()) * 1000 / self.result.texts, 3),
        }


def embedq_ingest(
    stack: Stack, collection: str, info: ModelInfo, corpus: Corpus, workers: int, batch_size: int
) -> EmbedqRun:
    """``producer.submit`` of the whole corpus, timed until the job reports every batch stored
    (workers record a batch only after its rows are upserted, and flushed on Milvus Lite)."""
    stack.create_collection(collection, info)
    timeout = max(300.0, len(corpus) / 20)
    parts = stack.processes()
    with EmbeddingProducer(stack.settings(batch={"size": batch_size})) as producer:
        before = _cpu(parts)
        started = time.perf_counter()
        job = producer.submit(corpus.texts, ids=corpus.ids, collection=collection)
        submitted = time.perf_counter()
        status = job.wait(timeout=timeout, poll=0.02)
        seconds = time.perf_counter() - started
        after = _cpu(parts)
    return EmbedqRun(
        corpus=corpus.name,
        workers=workers,
        batch_size=batch_size,
        result=Throughput(len(corpus), seconds, stack.count(collection)),
        submit_seconds=submitted - started,
        batches=status.total_batches or 0,
        worker_batch_seconds=stack.batch_seconds(job.id),
        cpu_seconds={name: after[name] - before[name] for name in parts},
    )


@dataclass(frozen=True)
class SmallJobs:
    """One-text jobs: latency one at a time, then throughput of a back-to-back stream."""

    workers: int
    latencies_ms: list[float]
    stream: Throughput
    #: Rows expected in the collection (both phases) and rows found there.
    rows_expected: int
    rows_stored: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def to_json(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "workers": self.workers,
            "jobs": len(lat),
            "latency_ms": {
                "p50": round(self.percentile(50), 2),
                "p95": round(self.percentile(95), 2),
                "p99": round(self.percentile(99), 2),
                "mean": round(statistics.fmean(lat), 2) if lat else 0.0,
                "min": round(min(lat), 2) if lat else 0.0,
                "max": round(max(lat), 2) if lat else 0.0,
            },
            "stream": self.stream.to_json(),
            "rows_expected": self.rows_expected,
            "rows_stored": self.rows_stored,
            "verified": self.rows_expected == self.rows_stored,
        }


def small_jobs(
    stack: Stack, collection: str, info: ModelInfo, corpus: Corpus, workers: int, count: int
) -> SmallJobs:
    """``count`` jobs of one text each, submitted and waited for one at a time (latency
    submit -> stored, without a queue in front of them), then ``count`` more submitted back to
    back and waited for (the throughput such a stream reaches)."""
    stack.create_collection(collection, info)
    texts, ids = corpus.texts, corpus.ids
    latencies: list[float] = []
    with EmbeddingProducer(stack.settings()) as producer:
        # Warm-up: a worker process's first use of a collection (describe, load state) and the
        # producer's first connections are not what a steady stream of jobs pays.
        for i in range(workers * 2):
            producer.submit([f"warm-up text {i}"], ids=[f"warm{i}"], collection=collection).wait(
                timeout=60
            )
        for i in range(count):
            started = time.perf_counter()
            job = producer.submit([texts[i]], ids=[ids[i]], collection=collection)
            # A worker marks the batch done right after its rows are stored and publishes it;
            # Job.wait wakes on that, as an application waiting for its job would.
            job.wait(timeout=60)
            latencies.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        jobs = [
            producer.submit([texts[i]], ids=[ids[i]], collection=collection)
            for i in range(count, 2 * count)
        ]
        for job in jobs:
            job.wait(timeout=max(120.0, count / 5))
        seconds = time.perf_counter() - started
    expected = 2 * count + workers * 2
    stored = stack.count(collection)
    # The one-at-a-time phase waited for each of its jobs: the rest are the stream's rows.
    stream = Throughput(count, seconds, stored - (expected - count))
    return SmallJobs(workers, latencies, stream, expected, stored)


def queued_small_jobs(
    stack: Stack, collection: str, info: ModelInfo, corpus: Corpus, count: int
) -> Throughput:
    """``count`` one-text jobs queued while the workers take nothing, then timed from the moment
    the first worker takes one until the last is stored: what the workers sustain on a backlog
    of small jobs, apart from how fast one producer thread submits them (the stream above).

    The clock starts at the first batch, not at the resume: a worker adds a queue to its next
    poll of Redis, up to a second later (kombu's BRPOP timeout), a delay the runs above, whose
    workers already poll their queue, do not have."""
    stack.create_collection(collection, info)
    assert stack.pool is not None
    stack.consume(False)
    try:
        with EmbeddingProducer(stack.settings()) as producer:
            jobs = [
                producer.submit([text], ids=[key], collection=collection)
                for text, key in zip(corpus.texts[:count], corpus.ids[:count], strict=True)
            ]
            since = len(stack.pool.output())
            resumed = time.time()
            stack.consume(True)
            # The backlog drains oldest first: the clock stops when the last job is stored
            # (its progress wakes the waiter, as in the runs above), unless another is still
            # running then; the others are checked after the clock, not by polling Milvus.
            timeout = max(120.0, count / 5)
            jobs[-1].wait(timeout=timeout, poll=0.02)
            ended = time.time()
            late = [job for job in jobs if not job.status().finished]
            for job in late:
                job.wait(timeout=timeout, poll=0.02)
            if late:
                ended = time.time()
    finally:
        stack.consume(True)
    began = stack.first_batch_started(since)
    started = resumed if began is None else max(resumed, began)
    return Throughput(count, ended - started, stack.count(collection))
