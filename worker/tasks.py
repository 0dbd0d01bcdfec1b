"""The Celery tasks: thin wrappers that parse the message, call :mod:`embedq.worker.batch` and
record the outcome in the job's progress record."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from embedq.config.contract import TASK_EMBED, TASK_SEARCH, BatchMessage, SearchMessage, embed_queue
from embedq.config.errors import (
    BrokerUnavailableError,
    EmbedqError,
    InvalidMessageError,
    StoreRejectedError,
    TransientError,
)
from embedq.state.deadletters import Kind
from embedq.worker import metrics
from embedq.worker.batch import BatchOutcome
from embedq.worker.context import WorkerContext
from embedq.worker.speedups.coalescer import Taken

__all__ = ["register_tasks"]

log = logging.getLogger("embedq.worker")


def _parse_batch(raw: Any) -> BatchMessage:
    try:
        return BatchMessage.model_validate(raw)
    except ValidationError as exc:
        raise InvalidMessageError(f"batch message does not follow the contract: {exc}") from None


def register_tasks(app: Celery, ctx: WorkerContext) -> None:
    """Define embedq's tasks on ``app``, running on the resources of ``ctx`` with the retry
    policy of its settings."""
    settings = ctx.settings
    worker = settings.worker
    coalesce = settings.coalesce_texts()

    def record(done: list[tuple[BatchMessage, BatchOutcome]]) -> None:
        """Keep the rejected items and count the batches in their jobs' progress."""
        try:
            for message, outcome in done:
                # The rejected items are recorded first, under an id of their own: a
                # redelivery after a crash between the two writes records them in the same
                # place, not twice.
                if outcome.rejected:
                    reasons = "; ".join(
                        f"item {i}: {why}" for i, why in sorted(outcome.rejected.items())
                    )
                    ctx.keep_dead_letter(
                        "rejected",
                        f"{len(outcome.rejected)} of {len(message.texts)} items rejected: "
                        f"{reasons}",
                        fails_batch=False,
                        body=outcome.rejected_message(message),
                        task=TASK_EMBED,
                        job_id=message.job_id,
                        batch=message.batch,
                        letter_id=f"{message.job_id}-{message.batch}-rejected",
                    )
                if outcome.chunks and message.collection not in ctx.announced:
                    info = ctx.embedder_for(message.model).encoder.info
                    ctx.registry.record(
                        message.collection,
                        {"name": info.name, "source": info.source, "dim": info.dim},
                    )
                    ctx.announced.add(message.collection)
            ctx.tracker.batches_done(
                [
                    (m.job_id, m.batch, o.counters(), o.error_lines(m.job_id, m.batch))
                    for m, o in done
                ]
            )
        except redis.RedisError as exc:
            # The rows are stored; a retry rewrites them (idempotent) and counts the batches.
            raise BrokerUnavailableError(f"could not record progress: {exc}") from exc

    def report(messages: list[BatchMessage], outcomes: list[BatchOutcome], seconds: float) -> None:
        """Metrics for every batch, and a log line for the task's own batch (with the size
        of its group); the batches taken with it are logged at DEBUG: a stream of one-text
        jobs would otherwise write a line per text."""
        metrics.record_batches(messages[0].model, outcomes, seconds)
        for n, (message, outcome) in enumerate(zip(messages, outcomes, strict=True)):
            level = logging.INFO if n == 0 else logging.DEBUG
            if not log.isEnabledFor(level):
                continue
            fields = {
                "job_id": message.job_id,
                "batch": message.batch,
                "texts": message.size,
                "stored": outcome.stored,
                "rejected": len(outcome.rejected),
                "seconds": round(seconds, 3),
                "outcome": "partial" if outcome.rejected else "ok",
                "coalesced": len(messages),
            }
            log.log(level, " ".join(f"{k}={v}" for k, v in fields.items()), extra=fields)

    def take_more(message: BatchMessage) -> list[Taken]:
        # Only a small batch takes others, and only small ones: a full batch always runs as a
        # task of its own, so that Flower's task counts follow a bulk ingest batch by batch.
        full = settings.batch.size
        room = coalesce - message.size
        if room <= 0 or message.size >= full:
            return []
        try:
            return ctx.coalescer.take(embed_queue(message.model), message.model, room, full)
        except Exception:
            # Coalescing is an optimisation: without it the batch runs alone, as it came.
            log.warning("could not take more batches from the queue", exc_info=True)
            return []

    def embed_batch_task(batch: Any = None, *extra: Any, **unknown: Any) -> None:
        # Anyone can queue a message: odd arguments are a bad message, not a TypeError.
        if extra or unknown:
            raise InvalidMessageError(
                f"unexpected task arguments {list(unknown) or len(extra)}; pass batch= only"
            )
        started = time.perf_counter()
        message = _parse_batch(batch)
        embedder = ctx.embedder_for(message.model)
        taken = take_more(message)
        pending = list(taken)
        try:
            try:
                outcomes = embedder.run([message, *(t.batch for t in taken)])
            except SoftTimeLimitExceeded as exc:
                # A batch past its soft limit was slowed (a paused or starved process, a slow
                # store), not refused: nothing is acknowledged, and it is tried again.
                raise TransientError(f"the batch ran past its soft time limit: {exc!r}") from exc
            except StoreRejectedError:
                if not taken:
                    raise
                # One of the taken batches may be what Milvus refuses: this one runs alone,
                # the others go back and run alone too.
                for t in taken:
                    t.give_back()
                pending, taken = [], []
                outcomes = embedder.run([message])
            seconds = time.perf_counter() - started
            messages = [message, *(t.batch for t in taken)]
            # Progress first, then the acknowledgements: a crash in between redelivers batches
            # that are counted once. This task's own message is acknowledged by Celery.
            record(list(zip(messages, outcomes, strict=True)))
            if taken:
                ctx.coalescer.ack(*taken)
            pending = []
            report(messages, outcomes, seconds)
        finally:
            # Failed before their progress was recorded: another attempt will store them.
            for t in pending:
                t.give_back()

    def search_task(query: Any = None, *extra: Any, **unknown: Any) -> dict[str, Any]:
        # Errors travel back as data: the producer never has to unpickle or import them.
        try:
            message = SearchMessage.model_validate(query)
        except ValidationError as exc:
            return {"error": f"search message does not follow the contract: {exc}"}
        try:
            hits = ctx.embedder_for(message.model).search(message)
        except EmbedqError as exc:
            return {"error": str(exc)}
        return {"hits": [hit.model_dump() for hit in hits]}

    app.task(
        name=TASK_EMBED,
        shared=False,
        ignore_result=True,
        # Only failures that may pass are retried: a bad message fails the same way each time.
        autoretry_for=(TransientError,),
        dont_autoretry_for=(InvalidMessageError,),
        max_retries=worker.max_retries,
        # The delay of a retry after a lost worker process (Celery's default is 180 s).
        default_retry_delay=1,
        retry_backoff=True,
        retry_backoff_max=worker.retry_backoff_max,
        retry_jitter=True,
    )(embed_batch_task)
    # A search is answered now or not at all: no late ack, no redelivery to a second worker.
    app.task(name=TASK_SEARCH, acks_late=False, shared=False)(search_task)


def record_failure(
    ctx: WorkerContext, task_name: str, kwargs: dict[str, Any], exc: object, task_id: str = ""
) -> None:
    """A batch failed for good: keep it as a dead letter and mark it in its job's progress."""
    if task_name != TASK_EMBED:
        return
    raw = kwargs.get("batch")
    job_id = raw.get("job_id") if isinstance(raw, dict) else None
    index = raw.get("batch") if isinstance(raw, dict) else None
    reason = f"{type(exc).__name__}: {exc}"
    fields = {"job_id": job_id, "batch": index, "outcome": "failed", "reason": reason}
    log.error(" ".join(f"{k}={v}" for k, v in fields.items()), extra=fields)
    metrics.record_failure()
    try:
        kind: Kind = "invalid-message" if isinstance(exc, InvalidMessageError) else "failed"
        ctx.keep_dead_letter(
            kind,
            reason,
            body=raw if raw is not None else kwargs,
            task=task_name,
            message_id=task_id,
            job_id=job_id if isinstance(job_id, str) else "",
            batch=index if isinstance(index, int) else None,
        )
    except redis.RedisError:
        log.exception("could not record the failure of job %s batch %s", job_id, index)
