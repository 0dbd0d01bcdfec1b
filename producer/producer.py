"""What application code uses: :class:`EmbeddingProducer` queues texts and asks for searches.

Light on purpose: it talks to Redis only (through Celery's client), never loads a model and
never connects to Milvus.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import redis
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from embedq.config.celeryconfig import make_celery
from embedq.config.connections import redis_client
from embedq.config.contract import (
    TASK_EMBED,
    TASK_SEARCH,
    Document,
    Hit,
    check_collection,
    embed_queue,
    search_queue,
)
from embedq.config.errors import (
    BrokerUnavailableError,
    InvalidInputError,
    JobNotFoundError,
    JobTimeoutError,
    ModelMismatchError,
    SearchError,
)
from embedq.config.settings import Settings, load_settings
from embedq.producer.job import Job
from embedq.producer.records import (
    Record,
    batches,
    check_documents,
    check_ids,
    check_items,
    check_weight,
    cut,
)
from embedq.state.deadletters import DeadLetters
from embedq.state.jobs import JobTracker
from embedq.state.registry import CollectionRegistry
from embedq.state.versions import VersionRegister

__all__ = ["Document", "EmbeddingProducer", "Record"]


def _with_id(record: Record) -> Record:
    if record.id is None:
        raise InvalidInputError(
            f"document {record.text[:40]!r}... has no id; a document needs one (its key in "
            "your source)"
        )
    return record


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
        self._register = VersionRegister(self._redis)

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
        versions: Sequence[Any] | None = None,
    ) -> Job:
        """Check every item, then queue them in batches of ``EMBEDQ_BATCH__SIZE``.

        Nothing is queued when any item is invalid: the :class:`InvalidInputError` lists
        which items and why. Without ``ids``, each text's id is a hash of (model, text), so
        submitting the same texts again overwrites instead of duplicating. A text with an id
        replaces whatever that id held; ``versions`` (numbers, e.g. the source's updated_at)
        order the writes of one id: the greatest wins, whatever order workers take them in.

        A text longer than the model reads is split into chunks, refused or cut, as
        ``EMBEDQ_BATCH__OVERLONG`` says. ``model`` names the model to embed with; by default
        the collection's own model (the one it was built with), or the default model for a new
        collection. The batches go to that model's queue, where only workers serving it take
        them.
        """
        records = self.validate(texts, ids, metadata, versions)
        return self.submit_records(records, collection=collection, model=model)

    def submit_documents(
        self,
        documents: Iterable[Document | Mapping[str, Any]],
        collection: str | None = None,
        model: str | None = None,
        delete: Sequence[str | int] = (),
    ) -> Job:
        """Queue documents (:class:`Document`, or dicts with ``id``, ``text``, optional
        ``metadata`` and ``version``); workers split each into chunks of at most
        ``EMBEDQ_CHUNKS__TOKENS`` tokens, a row per chunk.

        A document submitted again replaces the old one whole: once the job has finished, no
        chunk of the old version remains. The greatest version of an id wins; without
        versions, the one queued last. ``delete`` names documents to delete in the same job.
        Nothing is queued when any document is invalid."""
        records = check_documents(documents, self.settings.batch)
        deleted = check_ids(delete, self.settings.batch) if delete else []
        both = sorted({key for key, _ in deleted} & {r.id for r in records if r.id is not None})
        if both:
            raise InvalidInputError(
                f"id(s) {', '.join(map(repr, both[:5]))} are both written and deleted in this "
                "call; nothing was queued. Send the write or the delete, or send them in two "
                "calls (the later one wins)"
            )
        self._check_weights(records)
        return self._queue(records, collection, model, documents=True, deletes=deleted)

    def delete(
        self,
        ids: Sequence[str | int],
        collection: str | None = None,
        versions: Sequence[Any] | None = None,
    ) -> Job:
        """Delete documents (or texts) by id, through the queues, as a job. Deleting an id
        that is not stored is no error. With ``versions``, a delete older than a write of the
        same id changes nothing; without, it wins over every write queued before it."""
        deleted = check_ids(ids, self.settings.batch, versions)
        return self._queue([], collection, None, deletes=deleted)

    def validate(
        self,
        texts: Sequence[str],
        ids: Sequence[str | int] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        versions: Sequence[Any] | None = None,
    ) -> list[Record]:
        """The checked records of a :meth:`submit` call, or one error naming every problem."""
        records = check_items(texts, ids, metadata, self.settings.batch, versions)
        self._check_weights(records)
        return records

    def _max_bytes(self) -> int:
        """The most one queue message may carry: the worker refuses bodies over its limit
        (room left for the envelope)."""
        limit = self.settings.worker.max_message_bytes
        return limit - min(64 * 1024, limit // 8)

    def _check_weights(self, records: list[Record]) -> None:
        for record in records:
            self.check_weight(record)

    def check_weight(self, record: Record) -> None:
        """Raise :class:`InvalidInputError` when no queue message can carry ``record`` (a
        file reader checks each record with this before anything is queued)."""
        check_weight(record, self._max_bytes())

    def submit_records(
        self,
        records: Iterable[Record],
        collection: str | None = None,
        model: str | None = None,
        documents: bool = False,
    ) -> Job:
        """Queue already-checked records (from :meth:`validate` or a file reader), streaming:
        memory stays flat however many records there are. With ``documents``, each is a
        document (it needs an id) and is split into chunks."""
        if documents:
            records = (_with_id(record) for record in records)
        return self._queue(records, collection, model, documents=documents)

    def _queue(
        self,
        records: Iterable[Record],
        collection: str | None,
        model: str | None,
        *,
        documents: bool = False,
        deletes: Sequence[tuple[str, float | None]] = (),
    ) -> Job:
        name, model_name = self.target(collection, model)
        size = self.settings.batch.size
        most = min(self.settings.batch.max_bytes, self._max_bytes())
        writes = (("write", chunk) for chunk in batches(records, size, most, self._max_bytes()))
        removals = (
            ("delete", chunk)
            for chunk in cut(deletes, size, most, lambda item: len(json.dumps(item[0])) + 32)
        )
        chunks: Iterator[tuple[str, list[Any]]] = itertools.chain(writes, removals)
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
                for index, (kind, chunk) in enumerate(itertools.chain(head, chunks)):
                    message = self._message(job.id, index, name, model_name, kind, chunk)
                    message["documents"] = documents
                    self._send(publisher, message, len(chunk))
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

    def _message(
        self,
        job_id: str,
        index: int,
        collection: str,
        model: str,
        kind: str,
        chunk: list[Any],
    ) -> dict[str, Any]:
        """The body of one batch: its items, and the sequence number of the first (each item
        is one operation, ordered by the numbers Redis hands out)."""
        message: dict[str, Any] = {
            "v": 2,
            "job_id": job_id,
            "batch": index,
            "collection": collection,
            "model": model,
            "seq": self._register.next_seqs(len(chunk)),
        }
        if kind == "delete":
            message["delete"] = True
            message["ids"] = [key for key, _ in chunk]
            if any(version is not None for _, version in chunk):
                message["versions"] = [version for _, version in chunk]
            return message
        records: list[Record] = chunk
        message["texts"] = [r.text for r in records]
        message["overlong"] = self.settings.batch.overlong
        if any(r.id is not None for r in records):
            message["ids"] = [r.id for r in records]
        if any(r.metadata for r in records):
            message["metadata"] = [r.metadata or {} for r in records]
        if any(r.version is not None for r in records):
            message["versions"] = [r.version for r in records]
        return message

    def _send(self, publisher: Any, message: dict[str, Any], items: int) -> None:
        job_id, index = message["job_id"], message["batch"]
        self._app.send_task(
            TASK_EMBED,
            kwargs={"batch": message},
            queue=embed_queue(message["model"]),
            producer=publisher,
            ignore_result=True,
            # Read by the worker's consumer to mark the batch failed if it must refuse the
            # message unread (too large), and by dynamic batching to size what it takes.
            headers={"embedq_job": job_id, "embedq_batch": index, "embedq_texts": items},
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
        if not isinstance(source, dict) or not isinstance(source.get("texts", []), list):
            raise InvalidInputError(
                f"dead letter {letter_id} holds no batch to requeue ({letter.kind}: "
                f"{letter.reason[:200]}); a message that was not JSON cannot be requeued, fix it "
                "at its source"
            )
        collection = source.get("collection") or None
        texts, ids = source.get("texts") or [], source.get("ids")
        metadata, versions = source.get("metadata"), source.get("versions")
        if source.get("delete"):
            job = self.delete(ids or [], collection=collection, versions=versions)
        elif source.get("documents"):
            documents = [
                {
                    "id": None if ids is None else ids[i],
                    "text": text,
                    "metadata": None if metadata is None else metadata[i],
                    "version": None if versions is None else versions[i],
                }
                for i, text in enumerate(texts)
            ]
            job = self.submit_documents(documents, collection=collection)
        else:
            records = self.validate(texts, ids, metadata, versions)
            job = self.submit_records(records, collection=collection)
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
        per_document: bool = False,
    ) -> list[Hit]:
        """The ``k`` stored chunks nearest to ``query``, best first, each with its document's
        id, its text, offsets in the document, metadata and score; with ``per_document``, the
        best chunk of each of the ``k`` best documents. The query is encoded on a worker with
        the collection's own model. ``filter`` is a Milvus filter expression on the stored
        fields, e.g. ``metadata["lang"] == "en"`` or ``id in ["a", "b"]``."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query must be a non-empty str")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 16_384:
            raise InvalidInputError(f"k must be an int from 1 to 16384, got {k!r}")
        if not isinstance(filter, str):
            raise InvalidInputError(f"filter must be a str (a Milvus expression), got {filter!r}")
        name, model = self.target(collection)
        message = {
            "v": 2,
            "query": query,
            "k": k,
            "collection": name,
            "model": model,
            "filter": filter,
            "per_document": bool(per_document),
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
