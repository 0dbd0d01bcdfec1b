"""``embedq reindex``: re-embed every document of a collection with another model, into
another collection, through the same queues as any ingest.

The source's document ids are read first, then the documents a page at a time, in id order;
each page is queued as jobs for the target model's workers, with ids, metadata and versions, so
the target ends up with the same documents. A document of several chunks is put back together
from its chunks' offsets (the whitespace between chunks, which chunking drops, becomes spaces)
and chunked again by the target model's tokenizer; a one-chunk document goes as a plain text.
The last id queued and the jobs still running are kept in Redis: an interrupted reindex started
again continues after that id (a page queued twice is harmless: a document replaces itself). At
most a few pages are in flight at once, so a large collection never floods the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from embedq.config.connections import redis_client
from embedq.config.contract import check_collection
from embedq.config.errors import (
    BrokerUnavailableError,
    InvalidInputError,
    ModelMismatchError,
)
from embedq.config.keys import reindex_jobs_key, reindex_key
from embedq.config.settings import Settings
from embedq.producer.job import Job
from embedq.producer.producer import EmbeddingProducer
from embedq.producer.records import Record, check_one
from embedq.worker.milvus import MilvusStore
from embedq.worker.store import Rows

__all__ = ["ReindexResult", "reindex"]

_MAX_REFUSED = 20

#: Reports (texts stored so far, texts to go through in all).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ReindexResult:
    source: str
    target: str
    model: str
    #: Rows in the source collection.
    total: int
    stored: int
    #: Texts refused: by this producer's checks (``refused``) or by the workers (see
    #: ``embedq dead-letters``).
    rejected: int
    #: Batches that failed for good (also dead letters).
    failed_batches: int
    #: The id after which this run started ("" for a fresh start).
    resumed_after: str
    #: Why rows were refused before queueing ("id: reason"), the first few of this run.
    refused: tuple[str, ...] = ()


def reindex(
    settings: Settings,
    source: str,
    target: str,
    model: str,
    page_size: int = 1000,
    in_flight: int = 4,
    progress: Progress | None = None,
    restart: bool = False,
) -> ReindexResult:
    """Re-embed every row of ``source`` with ``model`` into ``target``; resumable."""
    if page_size < 1 or in_flight < 1:
        raise InvalidInputError("page size and pages in flight must be at least 1")
    store = MilvusStore(settings.milvus)
    client = redis_client(settings.redis)
    try:
        with EmbeddingProducer(settings) as producer:
            return _run(
                client, store, producer, source, target, model, page_size, in_flight,
                progress, restart,
            )  # fmt: skip
    except redis.RedisError as exc:
        raise BrokerUnavailableError(
            f"Redis is unreachable ({exc}); run the same reindex again to continue"
        ) from exc
    finally:
        store.close()
        client.close()


def _run(
    client: redis.Redis,
    store: MilvusStore,
    producer: EmbeddingProducer,
    source: str,
    target: str,
    model: str,
    page_size: int,
    in_flight: int,
    progress: Progress | None,
    restart: bool,
) -> ReindexResult:
    source_name, _ = producer.target(source)
    if check_collection(target) == source_name:
        raise InvalidInputError(
            "--from and --to name the same collection; reindex into a new one, then point "
            "your application at it"
        )
    target_name, model_name = producer.target(target, model)
    if store.binding(source_name) is None:
        raise InvalidInputError(f"collection {source_name!r} does not exist")
    built_with = store.binding(target_name)
    if built_with is not None and built_with.name != model_name:
        raise ModelMismatchError(
            f"collection {target_name!r} was built with model {built_with.name!r}, not "
            f"{model_name!r}; reindex into a new collection"
        )
    key = reindex_key(source_name, target_name)
    queued = reindex_jobs_key(source_name, target_name)
    if restart:
        client.delete(key, queued)
    state = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
    if state and state.get("model") != model_name:
        raise InvalidInputError(
            f"a reindex of {source_name!r} into {target_name!r} with model {state.get('model')!r} "
            "was interrupted; finish it with that model, or pass --restart"
        )
    cursor = state.get("cursor", "")
    client.hset(key, mapping={"model": model_name, "cursor": cursor})
    total = store.count(source_name)
    # Jobs an interrupted run queued: their batches are in the queue, they finish anyway.
    pending = [producer.job(_text(j)) for j in client.lrange(queued, 0, -1)]
    # Counts carry over from an interrupted run, with the cursor.
    stored, rejected, failed = (int(state.get(k, 0)) for k in ("stored", "rejected", "failed"))

    def settle(job: Job) -> None:
        nonlocal stored, rejected, failed
        # Rejected texts and failed batches are dead letters: count them, go on.
        status = job.wait_finished()
        stored += status.texts_stored
        rejected += status.texts_rejected
        failed += status.batches_failed
        pipe = client.pipeline()
        pipe.hset(key, mapping={"stored": stored, "rejected": rejected, "failed": failed})
        pipe.lrem(queued, 1, job.id)
        pipe.execute()
        if progress is not None:
            progress(stored, total)

    refused: list[str] = []
    limits = producer.settings.batch
    ids = [doc for doc in store.document_ids(source_name) if doc > cursor]
    for start in range(0, len(ids), page_size):
        while len(pending) >= in_flight:
            settle(pending.pop(0))
        page = ids[start : start + page_size]
        # Each document on its own: one these settings refuse (larger than this producer
        # allows, say) is reported, and the rest of its page still goes.
        texts: list[Record] = []
        documents: list[Record] = []
        for doc, (text, meta, version, chunks) in _documents(store.rows_of(source_name, page)):
            try:
                record = check_one(text, doc, meta, limits, version)
            except InvalidInputError as exc:
                rejected += 1
                if len(refused) < _MAX_REFUSED:
                    refused.append(f"{doc}: {exc}")
                continue
            (documents if chunks > 1 else texts).append(record)
        pipe = client.pipeline()
        for records, as_documents in ((texts, False), (documents, True)):
            if records:
                job = producer.submit_records(
                    records, collection=target_name, model=model_name, documents=as_documents
                )
                pipe.rpush(queued, job.id)
                pending.append(job)
        pipe.hset(key, mapping={"cursor": page[-1], "rejected": rejected})
        pipe.execute()
    while pending:
        settle(pending.pop(0))
    client.delete(key, queued)
    return ReindexResult(
        source=source_name,
        target=target_name,
        model=model_name,
        total=total,
        stored=stored,
        rejected=rejected,
        failed_batches=failed,
        resumed_after=cursor,
        refused=tuple(refused),
    )


def _documents(rows: Rows) -> Iterator[tuple[str, tuple[str, dict[str, Any], float | None, int]]]:
    """Each document of ``rows`` (sorted by id, then chunk): its text put back together from
    its chunks' offsets, its metadata, version (None in the texts layout) and chunk count."""
    start = 0
    while start < len(rows):
        doc = rows.ids[start]
        stop = start
        while stop < len(rows) and rows.ids[stop] == doc:
            stop += 1
        text: list[str] = []
        at = 0
        for i in range(start, stop):
            begin, piece = rows.starts[i], rows.texts[i]
            if begin > at:
                text.append(" " * (begin - at))  # whitespace dropped between chunks
            # chunks may overlap: keep only what is past the text so far
            text.append(piece[max(0, at - begin) :])
            at = max(at, begin + len(piece))
        version = rows.versions[start] if rows.versions else None
        yield doc, ("".join(text), rows.metadata[start], version, stop - start)
        start = stop


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
