"""What one worker process holds: its Redis client and the records kept on it, the served
models' embedders and the store client.

One :class:`WorkerContext` per Celery app, handed to the tasks and the consumer (as arq hands
``ctx`` to its jobs). ``worker_process_init`` loads the models in each prefork child (never in
the parent, which only needs Redis) and ``worker_process_shutdown`` closes everything. Pools
without child processes (solo, threads) load on first use instead.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

import redis
from celery import Celery

from embedq.config.connections import redis_client
from embedq.config.errors import ModelLoadError, ModelMismatchError, WorkerNotReadyError
from embedq.config.settings import Settings
from embedq.state.deadletters import DeadLetters, Kind
from embedq.state.jobs import JobTracker
from embedq.state.registry import CollectionRegistry
from embedq.state.versions import VersionRegister
from embedq.worker import metrics
from embedq.worker.batch import Embedder
from embedq.worker.chunker import Chunker, token_counter
from embedq.worker.encoder import Model2VecEncoder
from embedq.worker.locks import Ledger, host_lock
from embedq.worker.milvus import MilvusStore
from embedq.worker.speedups.coalescer import Coalescer
from embedq.worker.store import VectorStore

__all__ = ["WorkerContext"]

log = logging.getLogger(__name__)


class WorkerContext:
    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        #: Collections this process has announced in the Redis registry.
        self.announced: set[str] = set()
        self._lock = threading.RLock()
        self._redis: redis.Redis | None = None
        self._embedders: dict[str, Embedder] | None = None
        self._store: VectorStore | None = None
        self._coalescer: Coalescer | None = None

    # -- Redis and its records (the pool parent uses these too) -----------------------------

    @property
    def redis(self) -> redis.Redis:
        """This process's Redis client for progress and dead letters. It rides out a short
        Redis restart (about 30 s of retries) so that a batch already stored is not failed
        for it."""
        with self._lock:
            if self._redis is None:
                self._redis = redis_client(self.settings.redis, patient=True)
            return self._redis

    @property
    def tracker(self) -> JobTracker:
        return JobTracker(self.redis, self.settings.jobs.ttl_seconds)

    @property
    def registry(self) -> CollectionRegistry:
        return CollectionRegistry(self.redis)

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis, self.settings.jobs.max_dead_letters)

    def keep_dead_letter(
        self, kind: Kind, reason: str, *, fails_batch: bool = True, **letter: Any
    ) -> None:
        """Record a dead letter and count it; unless ``fails_batch`` is false (rejected items
        of a stored batch), its batch is also marked failed in its job's progress."""
        self.dead_letters.add(kind, reason, **letter)
        metrics.record_dead_letter(kind)
        job_id, batch = letter.get("job_id"), letter.get("batch")
        if fails_batch and job_id and isinstance(batch, int):
            self.tracker.batch_failed(job_id[:64], batch, f"{kind}: {reason}")

    @property
    def coalescer(self) -> Coalescer:
        """This process's broker channel for taking waiting batches (see
        embedq.worker.speedups.coalescer)."""
        with self._lock:
            if self._coalescer is None:
                self._coalescer = Coalescer(self.app, self.settings.worker.max_message_bytes)
            return self._coalescer

    # -- the models and the store (pool processes only) --------------------------------------

    @property
    def loaded(self) -> bool:
        return self._embedders is not None

    def load(self) -> None:
        """Load the served models and create the store client (idempotent)."""
        with self._lock:
            if self._embedders is not None:
                return
            settings = self.settings
            store = self._store or _store(settings)
            self._store = store
            register = VersionRegister(self.redis)
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
            self._embedders = embedders

    def embedder_for(self, model: str) -> Embedder:
        """What applies the messages of ``model``; no model but the served ones is loaded."""
        try:
            self.load()
        except ModelLoadError as exc:
            # The parent checked the model at start-up, so this process failing to load it
            # (out of memory, say) may pass: retry rather than fail the batch.
            raise WorkerNotReadyError(
                f"this worker process could not load its model: {exc}"
            ) from exc
        assert self._embedders is not None
        found = self._embedders.get(model)
        if found is None:
            raise ModelMismatchError(
                f"message asks for model {model!r} but this worker serves "
                f"{', '.join(self._embedders)}; route it to the queue of {model!r}"
            )
        return found

    def close(self) -> None:
        with self._lock:
            if self._coalescer is not None:
                self._coalescer.close()
            if self._store is not None:
                self._store.close()
            if self._redis is not None:
                self._redis.close()
            self._coalescer = self._store = self._redis = None
            self._embedders = None


def _store(settings: Settings) -> MilvusStore:
    milvus = settings.milvus

    def write_lock(collection: str) -> AbstractContextManager[Ledger]:
        # Flushes of one collection on one server take turns (see MilvusStore.upsert); a
        # Milvus Lite server only serves its own host, so a host lock covers all of them.
        return host_lock(f"{milvus.uri}|{milvus.db_name}|{collection}", wait=milvus.timeout)

    return MilvusStore(milvus, write_lock=write_lock)
