"""What a worker does with one message, independent of Celery: check each item, encode the
good ones, upsert them. Unit-tested with fakes of the encoder and the store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config.contract import (
    BatchMessage,
    Hit,
    SearchMessage,
    check_id,
    check_metadata,
    check_text,
    derive_id,
)
from config.errors import InvalidInputError, ModelMismatchError, StoreUnavailableError
from config.settings import BatchSettings
from worker.encoder import Encoder
from worker.store import Rows, VectorStore

__all__ = ["BatchOutcome", "embed_batch", "embed_batches", "search"]


@dataclass
class BatchOutcome:
    """``stored`` rows were written; ``rejected`` maps item positions to the reason."""

    stored: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    #: Time spent encoding and writing, on the first outcome of a coalesced group only.
    encode_seconds: float = 0.0
    upsert_seconds: float = 0.0

    def error_lines(self, job_id: str, batch: int) -> list[str]:
        return [f"job {job_id} batch {batch} item {i}: {why}" for i, why in self.rejected.items()]

    def rejected_message(self, message: BatchMessage) -> dict[str, Any]:
        """A batch message of the rejected items only, as they arrived: what a dead letter
        keeps so that they can be fixed and requeued."""
        picks = sorted(self.rejected)
        body: dict[str, Any] = message.model_dump(exclude={"ids", "metadata"})
        body["texts"] = [message.texts[i] for i in picks]
        if message.ids is not None:
            body["ids"] = [message.ids[i] for i in picks]
        if message.metadata is not None:
            body["metadata"] = [message.metadata[i] for i in picks]
        return body


def _check_model(message_model: str, encoder: Encoder) -> None:
    if message_model != encoder.info.name:
        raise ModelMismatchError(
            f"message asks for model {message_model!r} but this worker serves "
            f"{encoder.info.name!r}; route it to the queue of {message_model!r}"
        )


@dataclass
class _Checked:
    """The valid items of one message, by id, and where each came from."""

    message: BatchMessage
    outcome: BatchOutcome
    rows: dict[str, tuple[str, dict[str, Any]]]
    position: dict[str, int]


def _check(message: BatchMessage, limits: BatchSettings) -> _Checked:
    outcome = BatchOutcome()
    # id -> (text, metadata); a later duplicate id replaces an earlier one, as upsert would.
    rows: dict[str, tuple[str, dict[str, Any]]] = {}
    position: dict[str, int] = {}
    for i, raw in enumerate(message.texts):
        try:
            text = check_text(raw, limits)
            if message.ids is None:
                key = derive_id(message.model, text)
            else:
                key = check_id(message.ids[i], limits)
            meta = check_metadata(None if message.metadata is None else message.metadata[i], limits)
        except InvalidInputError as exc:
            outcome.rejected[i] = str(exc)
            continue
        if key in rows and message.ids is not None:
            outcome.rejected[position[key]] = f"duplicate id {key!r} in the same batch"
        rows[key] = (text, meta)
        position[key] = i
    return _Checked(message, outcome, rows, position)


def embed_batch(
    message: BatchMessage, encoder: Encoder, store: VectorStore, limits: BatchSettings
) -> BatchOutcome:
    """Store every valid item of ``message``; an invalid item is rejected on its own."""
    return embed_batches([message], encoder, store, limits)[0]


def embed_batches(
    messages: Sequence[BatchMessage], encoder: Encoder, store: VectorStore, limits: BatchSettings
) -> list[BatchOutcome]:
    """Store every valid item of several messages (small batches coalesced by the worker) with
    few encode and upsert calls; one outcome per message, in order. An invalid item is
    rejected on its own; a store error fails them all (nothing is acknowledged, so every
    message is retried).

    The texts go in chunks: while one chunk is written to Milvus (on a thread, waiting on the
    network and the server), the next is encoded. Writes stay in order, one at a time, so a
    later row of an id still wins as it would in turn."""
    for message in messages:
        _check_model(message.model, encoder)
    checked = [_check(message, limits) for message in messages]
    # (message index, id) of every row to write, in message order.
    keys = [(m, key) for m, c in enumerate(checked) for key in c.rows]
    if not keys:
        return [c.outcome for c in checked]
    size = max(_MIN_CHUNK, -(-len(keys) // _CHUNKS))
    parts = [keys[i : i + size] for i in range(0, len(keys), size)]
    encode_seconds = upsert_seconds = 0.0
    writing: Future[tuple[float, list[int]]] | None = None
    for n, part in enumerate(parts):
        started = time.perf_counter()
        vectors = encoder.encode([checked[m].rows[key][0] for m, key in part])
        encode_seconds += time.perf_counter() - started
        write = _prepare_write(part, vectors, checked, store, encoder)
        if writing is not None:
            upsert_seconds += _count_stored(_finished(writing), checked)
            writing = None
        # The last chunk is written here; the others on a thread while the next encodes. One
        # write at a time, in order: each is waited for before the next starts.
        if n < len(parts) - 1:
            writing = _in_background(write)
        else:
            upsert_seconds += _count_stored(write(), checked)
    first = checked[0].outcome
    first.encode_seconds, first.upsert_seconds = encode_seconds, upsert_seconds
    return [c.outcome for c in checked]


#: Texts are encoded and written in up to this many chunks, of at least _MIN_CHUNK texts.
_CHUNKS, _MIN_CHUNK = 4, 64


def _prepare_write(
    part: list[tuple[int, str]],
    vectors: np.ndarray[Any, Any],
    checked: list[_Checked],
    store: VectorStore,
    encoder: Encoder,
) -> Callable[[], tuple[float, list[int]]]:
    """Reject the texts of ``part`` that encoded to nothing, and return the write of the rest:
    it returns its seconds and the messages (by index) of the rows it stored, one per row."""
    # A text made only of tokens the model does not know encodes to zeros, which no cosine
    # search can rank: reject it rather than store a vector that matches nothing.
    known = np.any(vectors != 0, axis=1)
    for unknown in np.flatnonzero(~known).tolist():
        m, key = part[unknown]
        checked[m].outcome.rejected[checked[m].position[key]] = (
            "the model knows none of this text's tokens (it would embed to a zero vector)"
        )
    by_collection: dict[str, list[int]] = {}
    for good in np.flatnonzero(known).tolist():
        by_collection.setdefault(checked[part[good][0]].message.collection, []).append(good)
    for collection in by_collection:
        store.prepare(collection, encoder.info)

    def write() -> tuple[float, list[int]]:
        started = time.perf_counter()
        stored: list[int] = []
        for collection, picks in by_collection.items():
            # Rows of one collection from different messages may share an id (the same text
            # without ids): upsert each id once, the last one winning as it would in turn.
            last = {part[j][1]: j for j in picks}
            chosen = list(last.values())
            rows = [checked[part[j][0]].rows[part[j][1]] for j in chosen]
            store.upsert(
                collection,
                Rows(
                    ids=[part[j][1] for j in chosen],
                    texts=[text for text, _ in rows],
                    metadata=[meta for _, meta in rows],
                    vectors=np.ascontiguousarray(vectors[chosen]),
                ),
            )
            stored += [part[j][0] for j in picks]
        return time.perf_counter() - started, stored

    return write


def _finished(writing: Future[tuple[float, list[int]]]) -> tuple[float, list[int]]:
    """The result of a write, waited for. Interrupted while the write still runs (Celery's
    soft time limit arrives as an exception in the waiting thread), it is Milvus being slow,
    as when the upsert ran on the task's own thread: a transient error, retried."""
    try:
        return writing.result()
    except Exception as exc:
        if writing.done():
            raise  # the write's own error
        raise StoreUnavailableError(
            f"a write to Milvus had not finished when the task was interrupted ({exc!r})"
        ) from exc


def _in_background(
    write: Callable[[], tuple[float, list[int]]],
) -> Future[tuple[float, list[int]]]:
    """Run ``write`` on a daemon thread: a task that fails while it runs (a time limit) does not
    wait for it, and a worker process exiting is never held up by it; the retry rewrites the
    same rows."""
    future: Future[tuple[float, list[int]]] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(write())
        except BaseException as exc:  # handed to the waiting task, which raises it
            future.set_exception(exc)

    threading.Thread(target=run, name="embedq-write", daemon=True).start()
    return future


def _count_stored(result: tuple[float, list[int]], checked: list[_Checked]) -> float:
    """Count a finished write's rows in their messages' outcomes; returns its seconds."""
    seconds, stored = result
    for m in stored:
        checked[m].outcome.stored += 1
    return seconds


def search(message: SearchMessage, encoder: Encoder, store: VectorStore) -> list[Hit]:
    """Encode the query with the collection's model and return its nearest rows."""
    _check_model(message.model, encoder)
    vector = encoder.encode([message.query])[0]
    return store.search(message.collection, vector, message.k, encoder.info, message.filter)
