"""Per-process resources of a worker: the model, the store client and the Redis client.

Opened once per worker process by the ``worker_process_init`` hook (in each prefork child, never
in the parent) and closed by ``worker_process_shutdown``. Pools without child processes (solo,
threads) open them on first use instead.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from embedq.config.connections import redis_client
from embedq.config.errors import ModelMismatchError
from embedq.config.settings import Settings
from embedq.state.deadletters import DeadLetters, Kind
from embedq.state.jobs import JobTracker
from embedq.state.registry import CollectionRegistry
from embedq.state.versions import VersionRegister
from embedq.worker import metrics
from embedq.worker.batch import Embedder
from embedq.worker.chunker import Chunker, token_counter
from embedq.worker.coalescer import Coalescer
from embedq.worker.encoder import Encoder, Model2VecEncoder
from embedq.worker.locks import Ledger, host_lock
from embedq.worker.milvus import MilvusStore
from embedq.worker.store import VectorStore

__all__ = [
    "Runtime",
    "close",
    "coalescer",
    "current",
    "dead_letters",
    "open_runtime",
    "registry",
    "tracker",
]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    #: What applies the messages of each model this worker serves, by name; no other model
    #: is ever loaded.
    embedders: dict[str, Embedder]
    store: VectorStore
    #: Collections this process has announced in the Redis registry.
    announced: set[str] = field(default_factory=set)

    def embedder_for(self, model: str) -> Embedder:
        found = self.embedders.get(model)
        if found is None:
            raise ModelMismatchError(
                f"message asks for model {model!r} but this worker serves "
                f"{', '.join(self.embedders)}; route it to the queue of {model!r}"
            )
        return found

    def encoder_for(self, model: str) -> Encoder:
        return self.embedder_for(model).encoder


_lock = threading.RLock()
_runtime: Runtime | None = None
_redis: redis.Redis | None = None
_coalescer: Coalescer | None = None


def open_runtime(settings: Settings) -> Runtime:
    """Load the served models and create the store client for this process (idempotent)."""
    global _runtime
    with _lock:
        if _runtime is None:
            store = _store(settings)
            register = VersionRegister(_client(settings))
            embedders: dict[str, Embedder] = {}
            for model in settings.served_models():
                started = time.perf_counter()
                encoder = Model2VecEncoder.from_settings(model)
                chunker = Chunker(
                    token_counter(encoder.tokenizer, model.word_cache),
                    settings.chunks.tokens,
                    settings.chunks.overlap,
                )
                embedders[model.name] = Embedder(
                    encoder,
                    chunker,
                    store,
                    register,
                    settings.batch,
                    model.max_length,
                    settings.worker.pause_before_write,
                    (settings.worker.time_limit - settings.worker.soft_time_limit) / 2,
                )
                log.info(
                    "loaded model %s (dim %d) in %.2fs",
                    model.name,
                    encoder.info.dim,
                    time.perf_counter() - started,
                )
            _runtime = Runtime(settings, embedders, store)
        return _runtime


def _store(settings: Settings) -> MilvusStore:
    milvus = settings.milvus

    def write_lock(collection: str) -> AbstractContextManager[Ledger]:
        # Flushes of one collection on one server take turns (see MilvusStore.upsert); a
        # Milvus Lite server only serves its own host, so a host lock covers all of them.
        return host_lock(f"{milvus.uri}|{milvus.db_name}|{collection}", wait=milvus.timeout)

    return MilvusStore(milvus, write_lock=write_lock)


def current(settings: Settings) -> Runtime:
    return _runtime if _runtime is not None else open_runtime(settings)


def _client(settings: Settings) -> redis.Redis:
    """This process's Redis client for progress and dead letters. It rides out a short Redis
    restart (about 30 s of retries) so that a batch already stored is not failed for it."""
    global _redis
    with _lock:
        if _redis is None:
            _redis = redis_client(settings.redis, patient=True)
        return _redis


def tracker(settings: Settings) -> JobTracker:
    """The job-progress writer; needs only Redis, so the pool parent may use it too."""
    return JobTracker(_client(settings), settings.jobs.ttl_seconds)


def registry(settings: Settings) -> CollectionRegistry:
    return CollectionRegistry(_client(settings))


def dead_letters(settings: Settings) -> DeadLetters:
    return DeadLetters(_client(settings), settings.jobs.max_dead_letters)


def keep_dead_letter(
    settings: Settings, kind: Kind, reason: str, *, fails_batch: bool = True, **letter: Any
) -> None:
    """Record a dead letter and count it; unless ``fails_batch`` is false (rejected items of a
    stored batch), its batch is also marked failed in its job's progress, with the reason."""
    dead_letters(settings).add(kind, reason, **letter)
    metrics.record_dead_letter(kind)
    job_id, batch = letter.get("job_id"), letter.get("batch")
    if fails_batch and job_id and isinstance(batch, int):
        tracker(settings).batch_failed(job_id[:64], batch, f"{kind}: {reason}")


def coalescer(app: Celery, settings: Settings) -> Coalescer:
    """This process's broker channel for taking waiting batches (see worker.coalescer)."""
    global _coalescer
    with _lock:
        if _coalescer is None:
            _coalescer = Coalescer(app, settings.worker.max_message_bytes)
        return _coalescer


def close() -> None:
    global _runtime, _redis, _coalescer
    with _lock:
        if _coalescer is not None:
            _coalescer.close()
        if _runtime is not None:
            _runtime.store.close()
        if _redis is not None:
            _redis.close()
        _runtime = None
        _redis = None
        _coalescer = None
