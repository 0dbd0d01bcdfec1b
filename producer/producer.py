"""What application code uses: :class:`EmbeddingProducer` queues texts and asks for searches.

Light on purpose: it talks to Redis only (through Celery's client), never loads a model and
never connects to Milvus.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import redis
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from config.celeryconfig import make_celery
from config.connections import redis_client
from config.contract import (
    TASK_EMBED,
    TASK_SEARCH,
    Hit,
    check_collection,
    embed_queue,
    search_queue,
)
from config.deadletters import DeadLetters
from config.errors import (
    BrokerUnavailableError,
    InvalidInputError,
    JobNotFoundError,
    JobTimeoutError,
    ModelMismatchError,
    SearchError,
)
from config.jobs import JobTracker
from config.registry import CollectionRegistry
from config.settings import Settings, load_settings
from producer.job import Job
from producer.records import Record, batches, check_items

__all__ = ["EmbeddingProducer", "Record"]


class EmbeddingProducer:
    """Splits texts into batches, queues them for the workers, and tracks the job.

    >>> job = EmbeddingProducer().submit(["first text", "second text"])
    >>> job.wait(timeout=60)
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self._app = make_celery(self.settings, main="embedq-producer")
        self._redis = redis_client(self.settings.redis)
        self._tracker = JobTracker(self._redis, self.settings.jobs.ttl_seconds)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._redis.close()
        self._app.close()

    def __enter__(self) -> EmbeddingProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- ingest -----------------------------------------------------------------------------

    def submit(
        self,
        texts: Sequence[str],
        ids: Sequence[str | int] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        collection: str | None = None,
        model: str | None = None,
    ) -> Job:
        """Check every item, then queue them in batches of ``EMBEDQ_BATCH__SIZE``.

        Nothing is queued when any item is invalid: the :class:`InvalidInputError` lists
        which items and why. Without ``ids``, each text's id is a hash of (model, text), so
        submitting the same texts again overwrites instead of duplicating.

        ``model`` names the model to embed with; by default the collection's own model (the
        one it was built with), or the default model for a new collection. The batches go to
        that model's queue, where only workers serving it take them.
        """
        records = self.validate(texts, ids, metadata)
        return self.submit_records(records, collection=collection, model=model)

    def validate(
        self,
        texts: Sequence[str],
        ids: Sequence[str | int] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[Record]:
        """The checked records of a :meth:`submit` call, or one error naming every problem."""
        return check_items(texts, ids, metadata, self.settings.batch)

    def submit_records(
        self, records: Iterable[Record], collection: str | None = None, model: str | None = None
    ) -> Job:
        """Queue already-checked records (from :meth:`validate` or a file reader), streaming:
        memory stays flat however many records there are."""
        name, model_name = self.target(collection, model)
        # The worker refuses bodies over its limit: leave room for the envelope.
        limit = self.settings.worker.max_message_bytes
        max_bytes = limit - min(64 * 1024, limit // 8)
        chunks = batches(records, self.settings.batch.size, max_bytes)
        first = next(chunks, None)
        if first is None:
            raise InvalidInputError("no records to submit; pass at least one text")
        second = next(chunks, None)
        # A job of one batch (the common small job) is recorded and sealed in one round trip
        # after its message is queued; a longer one is recorded first, so that its progress
        # can be read while the rest is still being queued.
        job = (
            Job(uuid.uuid4().hex, self._tracker)
            if second is None
            else self.start_job(name, model_name)
        )
        sent = texts = 0
        try:
            with self._app.producer_or_acquire() as publisher:
                head = [first] if second is None else [first, second]
                for index, chunk in enumerate(itertools.chain(head, chunks)):
                    self._send(publisher, job.id, index, name, model_name, chunk)
                    sent, texts = sent + 1, texts + len(chunk)
            if second is None:
                self._tracker.create(job.id, name, model_name, sealed=(sent, texts))
            else:
                self._tracker.seal(job.id, sent, texts)
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise BrokerUnavailableError(
                f"Redis at {self.settings.redis.url} failed after {sent} batches of job {job.id} "
                f"were queued ({exc}); those batches will still be stored, the rest were not "
                "queued. Submit the same texts again once Redis is back: ids make it idempotent"
            ) from exc
        return job

    def target(self, collection: str | None, model: str | None = None) -> tuple[str, str]:
        """The checked collection name and the name of the model that embeds for it.

        A collection keeps the model it was built with: asking for another one is refused
        with both names, before anything is queued (workers check it again)."""
        name = check_collection(
            self.settings.milvus.collection if collection is None else collection
        )
        try:
            recorded = CollectionRegistry(self._redis).get(name)
        except redis.RedisError as exc:
            raise BrokerUnavailableError(
                f"Redis at {self.settings.redis.url} is unreachable ({exc}); nothing was queued"
            ) from exc
        if recorded is not None and model is None:
            return name, str(recorded.get("name")).lower()
        wanted = self.settings.model_named(model)
        if recorded is not None and (
            str(recorded.get("name")).lower() != wanted.name
            or recorded.get("source", wanted.source) != wanted.source
        ):
            raise ModelMismatchError(
                f"collection {name!r} was built with model {recorded.get('name')!r} (source "
                f"{recorded.get('source')!r}, dim {recorded.get('dim')}) but model "
                f"{wanted.name!r} (source {wanted.source!r}) was asked for; nothing was queued. "
                f"Use another collection, or `embedq reindex --from {name} --to NEW --model "
                f"{wanted.name}` to move it to that model"
            )
        return name, wanted.name

    def start_job(self, collection: str, model: str | None = None) -> Job:
        job = Job(uuid.uuid4().hex, self._tracker)
        try:
            self._tracker.create(job.id, collection, model or self.settings.model.name)
        except redis.RedisError as exc:
            raise BrokerUnavailableError(
                f"Redis at {self.settings.redis.url} is unreachable ({exc}); nothing was queued"
            ) from exc
        return job

    def _send(
        self,
        publisher: Any,
        job_id: str,
        index: int,
        collection: str,
        model: str,
        chunk: list[Record],
    ) -> None:
        with_ids = any(key is not None for _, key, _ in chunk)
        with_meta = any(meta for _, _, meta in chunk)
        message: dict[str, Any] = {
            "v": 1,
            "job_id": job_id,
            "batch": index,
            "collection": collection,
            "model": model,
            "texts": [text for text, _, _ in chunk],
        }
        if with_ids:
            message["ids"] = [key for _, key, _ in chunk]
        if with_meta:
            message["metadata"] = [meta or {} for _, _, meta in chunk]
        self._app.send_task(
            TASK_EMBED,
            kwargs={"batch": message},
            queue=embed_queue(model),
            producer=publisher,
            ignore_result=True,
            # Read by the worker's consumer to mark the batch failed if it must refuse the
            # message unread (too large), and by dynamic batching to size what it takes.
            headers={"embedq_job": job_id, "embedq_batch": index, "embedq_texts": len(chunk)},
        )

    # -- dead letters -----------------------------------------------------------------------

    @property
    def dead_letters(self) -> DeadLetters:
        """The dead-letter store (list, get, remove)."""
        return DeadLetters(self._redis, self.settings.jobs.max_dead_letters)

    def requeue(self, letter_id: str, body: dict[str, Any] | None = None) -> Job:
        """Queue a dead letter's items again as a new job, after fixing them.

        ``body`` replaces the stored batch (``texts``, optional ``ids`` and ``metadata``, and
        ``collection``); without it the stored one is sent as it is (right after an outage, say).
        Every item is checked first; the dead letter is removed once the new job is queued.
        """
        letter = self.dead_letters.get(letter_id)
        if letter is None:
            raise JobNotFoundError(f"no dead letter {letter_id!r} (see `embedq dead-letters list`)")
        source = body if body is not None else letter.body
        if not isinstance(source, dict) or not isinstance(source.get("texts"), list):
            raise InvalidInputError(
                f"dead letter {letter_id} holds no batch to requeue ({letter.kind}: "
                f"{letter.reason[:200]}); a message that was not JSON cannot be requeued, fix it "
                "at its source"
            )
        records = self.validate(source["texts"], source.get("ids"), source.get("metadata"))
        collection = source.get("collection")
        job = self.submit_records(records, collection=collection if collection else None)
        self.dead_letters.remove(letter_id)
        return job

    def job(self, job_id: str) -> Job:
        """The handle of an earlier job, by id."""
        return Job(job_id, self._tracker)

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 5,
        collection: str | None = None,
        filter: str = "",
        timeout: float | None = None,
    ) -> list[Hit]:
        """The ``k`` stored texts nearest to ``query``, best first, each with its id, text,
        metadata and score. The query is encoded on a worker with the collection's own model.
        ``filter`` is a Milvus filter expression on the stored fields, e.g.
        ``metadata["lang"] == "en"`` or ``id in ["a", "b"]``."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query must be a non-empty str")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 16_384:
            raise InvalidInputError(f"k must be an int from 1 to 16384, got {k!r}")
        if not isinstance(filter, str):
            raise InvalidInputError(f"filter must be a str (a Milvus expression), got {filter!r}")
        name, model = self.target(collection)
        message = {
            "v": 1,
            "query": query,
            "k": k,
            "collection": name,
            "model": model,
            "filter": filter,
        }
        wait = timeout if timeout is not None else self.settings.jobs.search_timeout
        result = None
        try:
            # A query nobody picks up in time expires instead of being answered to no one.
            result = self._app.send_task(
                TASK_SEARCH,
                kwargs={"query": message},
                queue=search_queue(model),
                expires=wait,
            )
            payload = result.get(timeout=wait)
        except CeleryTimeoutError:
            raise JobTimeoutError(
                f"no worker answered the search within {wait}s; is a worker serving model "
                f"{model!r} running (`embedq worker`)?"
            ) from None
        except (OperationalError, redis.RedisError, OSError, RuntimeError) as exc:
            # RuntimeError: Celery's result backend gives up reconnecting with one.
            raise BrokerUnavailableError(
                f"Redis at {self.settings.redis.url} is unreachable ({exc})"
            ) from exc
        finally:
            if result is not None:
                with contextlib.suppress(Exception):
                    result.forget()
        if not isinstance(payload, dict) or "error" in payload:
            reason = payload.get("error") if isinstance(payload, dict) else repr(payload)
            raise SearchError(f"search failed: {reason}")
        try:
            return [Hit.model_validate(hit) for hit in payload["hits"]]
        except (KeyError, TypeError, ValidationError) as exc:
            raise SearchError(f"search answer does not follow the contract: {exc}") from None
