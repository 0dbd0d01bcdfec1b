"""What a worker does with one message, independent of Celery: check each item, encode the
good ones, upsert them. Unit-tested with fakes of the encoder and the store."""

from __future__ import annotations

import time
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
from config.errors import InvalidInputError, ModelMismatchError
from config.settings import BatchSettings
from worker.encoder import Encoder
from worker.store import Rows, VectorStore

__all__ = ["BatchOutcome", "embed_batch", "search"]


@dataclass
class BatchOutcome:
    """``stored`` rows were written; ``rejected`` maps item positions to the reason."""

    stored: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
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


def embed_batch(
    message: BatchMessage, encoder: Encoder, store: VectorStore, limits: BatchSettings
) -> BatchOutcome:
    """Store every valid item of ``message``; an invalid item is rejected on its own."""
    _check_model(message.model, encoder)
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
    if not rows:
        return outcome
    store.prepare(message.collection, encoder.info)
    ids = list(rows)
    texts = [rows[key][0] for key in ids]
    started = time.perf_counter()
    vectors = encoder.encode(texts)
    outcome.encode_seconds = time.perf_counter() - started
    # A text made only of tokens the model does not know encodes to zeros, which no cosine
    # search can rank: reject it rather than store a vector that matches nothing.
    known = np.any(vectors != 0, axis=1)
    if not known.all():
        for j in np.flatnonzero(~known):
            outcome.rejected[position[ids[j]]] = (
                "the model knows none of this text's tokens (it would embed to a zero vector)"
            )
        keep = np.flatnonzero(known)
        ids = [ids[j] for j in keep]
        texts = [texts[j] for j in keep]
        vectors = np.ascontiguousarray(vectors[keep])
        if not ids:
            return outcome
    started = time.perf_counter()
    outcome.stored = store.upsert(
        message.collection,
        Rows(ids=ids, texts=texts, metadata=[rows[key][1] for key in ids], vectors=vectors),
    )
    outcome.upsert_seconds = time.perf_counter() - started
    return outcome


def search(message: SearchMessage, encoder: Encoder, store: VectorStore) -> list[Hit]:
    """Encode the query with the collection's model and return its nearest rows."""
    _check_model(message.model, encoder)
    vector = encoder.encode([message.query])[0]
    return store.search(message.collection, vector, message.k, encoder.info, message.filter)
