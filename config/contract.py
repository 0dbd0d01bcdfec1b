"""The message contract between producer and worker: task names, queues, message schemas and
the per-item rules both sides enforce.

The producer checks every item before anything is queued (all or nothing); the worker checks the
same rules again per item, because anyone who can reach Redis can put a message on the queue.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedq.config.errors import InvalidInputError
from embedq.config.keys import embed_queue, search_queue
from embedq.config.names import COLLECTION_NAME, COLLECTION_RULE
from embedq.config.settings import BatchSettings, Settings

__all__ = [
    "CONTRACT_VERSION",
    "MAX_CHUNK_BYTES",
    "MAX_VERSION",
    "TASK_EMBED",
    "TASK_SEARCH",
    "BatchMessage",
    "Document",
    "Hit",
    "Overlong",
    "SearchMessage",
    "check_collection",
    "check_id",
    "check_metadata",
    "check_text",
    "check_version",
    "derive_id",
    "embed_queue",
    "search_queue",
    "served_queues",
]

CONTRACT_VERSION: Literal[2] = 2
TASK_EMBED = "embedq.embed_batch"
TASK_SEARCH = "embedq.search"

#: Milvus stores each chunk's text in a VARCHAR field whose limit is counted in UTF-8 bytes.
MAX_CHUNK_BYTES = 65_535

#: Versions are compared as IEEE doubles (in Redis's Lua and in Milvus): integers stay exact
#: below this.
MAX_VERSION = 2**53

#: What a worker does with a plain text longer than its model reads.
Overlong = Literal["chunk", "reject", "truncate"]

#: Milvus's VARCHAR primary key holds at most this many UTF-8 bytes.
MAX_ID_BYTES = 512

#: The most items one queue message may carry (EMBEDQ_BATCH__SIZE is capped at this too).
MAX_BATCH_TEXTS = 10_000


def served_queues(settings: Settings) -> list[str]:
    """The queues of the models a worker with these settings serves."""
    return [
        queue
        for model in settings.served_models()
        for queue in (embed_queue(model.name), search_queue(model.name))
    ]


def derive_id(model: str, text: str) -> str:
    """Primary key of a text given without an id: the same text under the same model always
    gets the same id, so a re-sent or retried batch overwrites instead of duplicating."""
    digest = hashlib.blake2b(f"{model}\x00{text}".encode(), digest_size=16)
    return digest.hexdigest()


def check_text(text: object, limits: BatchSettings) -> str:
    """Return ``text`` ready to queue, or raise :class:`InvalidInputError` saying why not.

    Only its size is bounded here: how many tokens it holds is for the worker's tokenizer to
    say (it chunks, refuses or truncates a text longer than its model reads)."""
    if not isinstance(text, str):
        raise InvalidInputError(
            f"text must be a str, got {type(text).__name__}; convert it with str() or drop it"
        )
    if not text.strip():
        raise InvalidInputError("text is empty or whitespace only; drop it before submitting")
    if "\x00" in text:
        raise InvalidInputError("text contains a NUL character; strip it before submitting")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(
            "text is not valid Unicode (it has a lone surrogate); decode your input with "
            "errors='replace' or fix its encoding"
        ) from None
    if size > limits.max_document_bytes:
        raise InvalidInputError(
            f"text is {size} bytes as UTF-8, over the limit of {limits.max_document_bytes} "
            "(EMBEDQ_BATCH__MAX_DOCUMENT_BYTES); split the document at its source, or raise "
            "the limit"
        )
    return text


def check_version(value: object) -> float:
    """Return a document version as a number, or raise saying what a version may be.

    Versions order the operations on one document: a greater one wins. ints and floats are
    taken as they are, a timezone-aware datetime as its POSIX timestamp."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInputError(
                f"version {value.isoformat()} is a datetime without a timezone; give it one "
                "(datetime.now(timezone.utc)) so that every producer orders it the same way"
            )
        value = value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(
            f"version must be a number (an int, a float or an aware datetime), got "
            f"{type(value).__name__} {str(value)[:40]!r}; use, e.g., the source's updated_at"
        )
    if not math.isfinite(value) or not 0 <= value < MAX_VERSION:
        raise InvalidInputError(
            f"version {value!r} is out of range; use a number from 0 to 2**53 (a timestamp, "
            "a revision counter)"
        )
    return float(value)


def check_id(value: object, limits: BatchSettings) -> str:
    """Return the primary key for a caller's id (ints become their decimal string)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInputError(
            f"id must be a str or an int, got {type(value).__name__}; convert it with str()"
        )
    key = str(value)
    if not key or len(key) > limits.max_id_length:
        raise InvalidInputError(
            f"id must have 1 to {limits.max_id_length} characters, got {len(key)}; use a "
            "shorter key (a hash of a long one, for instance)"
        )
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError("id is not valid Unicode (it has a lone surrogate)") from None
    if size > MAX_ID_BYTES:
        raise InvalidInputError(
            f"id is {size} bytes as UTF-8, over the primary key's {MAX_ID_BYTES}; use a shorter "
            "key (a hash of a long one, for instance)"
        )
    return key


def check_metadata(value: object, limits: BatchSettings) -> dict[str, Any]:
    """Return metadata that Milvus's JSON field will take, or raise saying why not."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"metadata must be a dict (a JSON object), got {type(value).__name__}"
        )
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        encoded.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise InvalidInputError(
            f"metadata is not JSON-serialisable ({exc}); use str, int, float, bool, None, "
            "lists and dicts with str keys only"
        ) from None
    size = len(encoded.encode("utf-8"))
    if size > limits.max_metadata_bytes:
        raise InvalidInputError(
            f"metadata is {size} bytes as JSON, over the limit of {limits.max_metadata_bytes}; "
            "store large payloads elsewhere and keep a reference here"
        )
    parsed: dict[str, Any] = json.loads(encoded)
    return parsed


def check_collection(name: object) -> str:
    """Return a collection name Milvus accepts, or raise saying what a valid one looks like."""
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise InvalidInputError(f"collection name {name!r} is not valid; {COLLECTION_RULE}")
    return name


@dataclass(frozen=True)
class Document:
    """One document to embed: split into chunks by the worker, each chunk a row.

    ``version`` orders the operations on one document (the greatest wins, whatever order
    workers take them in); without one, the producer gives each operation a fresh sequence
    number, so the one submitted last wins."""

    id: str | int
    text: str
    metadata: dict[str, Any] | None = None
    version: int | float | datetime | None = None


class BatchMessage(BaseModel):
    """Keyword argument ``batch`` of the ``embedq.embed_batch`` task.

    Items (texts, ids, metadata, versions) are checked one by one by the worker, so one bad
    text is rejected without taking the rest of the batch with it; only the shape is checked
    here. Item ``i`` is operation number ``seq + i`` (see :mod:`embedq.state.versions`). A
    ``delete`` batch carries ids and no texts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1, 2] = CONTRACT_VERSION
    job_id: str = Field(min_length=1, max_length=64)
    batch: int = Field(ge=0)
    collection: str
    model: str = Field(min_length=1, max_length=64)
    texts: list[Any] = Field(default_factory=list, max_length=MAX_BATCH_TEXTS)
    ids: list[Any] | None = Field(None, max_length=MAX_BATCH_TEXTS)
    metadata: list[Any] | None = None
    versions: list[Any] | None = None
    #: Sequence number of the first item; messages of contract 1 have none (the worker draws
    #: them when it takes the batch).
    seq: int | None = Field(None, ge=1, lt=MAX_VERSION)
    overlong: Overlong = "chunk"
    #: Documents are always chunked; plain texts only when longer than the model reads.
    documents: bool = False
    delete: bool = False

    @model_validator(mode="after")
    def _check_shape(self) -> BatchMessage:
        check_collection(self.collection)
        if self.delete:
            if self.texts or self.metadata is not None or not self.ids:
                raise ValueError("a delete batch carries ids only (no texts, no metadata)")
        elif not self.texts:
            raise ValueError("a batch needs at least one text")
        for field in ("ids", "metadata", "versions"):
            items = getattr(self, field)
            if items is not None and len(items) != self.size:
                raise ValueError(f"{len(items)} {field} for {self.size} items")
        return self

    @property
    def size(self) -> int:
        """How many items (texts, or ids to delete) it carries."""
        return len(self.ids or ()) if self.delete else len(self.texts)


class SearchMessage(BaseModel):
    """Keyword argument ``query`` of the ``embedq.search`` task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1, 2] = CONTRACT_VERSION
    query: str = Field(min_length=1, max_length=65_535)
    k: int = Field(5, ge=1, le=16_384)
    collection: str
    model: str = Field(min_length=1, max_length=64)
    filter: str = Field("", max_length=65_535)
    #: At most one hit (its best chunk) per document.
    per_document: bool = False

    @model_validator(mode="after")
    def _check_collection(self) -> SearchMessage:
        check_collection(self.collection)
        if not self.query.strip():
            raise ValueError("query is empty")
        return self


class Hit(BaseModel):
    """One search result, as the worker returns it: a chunk of a document (a plain text is a
    document of one chunk). ``text[start:end]`` of the document is the chunk's ``text``."""

    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    chunk: int = 0
    start: int = 0
    end: int | None = None
    version: float | None = None

    @model_validator(mode="after")
    def _finite(self) -> Hit:
        if not math.isfinite(self.score):
            raise ValueError("score is not finite")
        return self
