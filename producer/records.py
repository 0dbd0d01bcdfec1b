"""Items to embed, checked and cut into batches on the producer side."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from embedq.config.contract import Document, check_id, check_metadata, check_text, check_version
from embedq.config.errors import InvalidInputError
from embedq.config.settings import BatchSettings

__all__ = [
    "Record",
    "batches",
    "check_documents",
    "check_ids",
    "check_items",
    "check_one",
    "check_weight",
    "cut",
]


T = TypeVar("T")


class Record(NamedTuple):
    """One item to embed, checked: its text, id (None: derived from the text), metadata and
    version (None: the order it is queued in)."""

    text: str
    id: str | None
    metadata: dict[str, Any] | None
    version: float | None = None


_MAX_REPORTED = 10


def check_items(
    texts: Sequence[str],
    ids: Sequence[str | int] | None,
    metadata: Sequence[dict[str, Any] | None] | None,
    limits: BatchSettings,
    versions: Sequence[Any] | None = None,
) -> list[Record]:
    """Every item checked, or one :class:`InvalidInputError` that lists every problem."""
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise InvalidInputError(
            f"texts must be a list of str, got {type(texts).__name__}; wrap a single text in a list"
        )
    if not texts:
        raise InvalidInputError("texts is empty; pass at least one text")
    for name, items in (("ids", ids), ("metadata", metadata), ("versions", versions)):
        if items is None:
            continue
        if isinstance(items, str | bytes | dict) or not isinstance(items, Sequence):
            raise InvalidInputError(f"{name} must be a list, got {type(items).__name__}")
        if len(items) != len(texts):
            raise InvalidInputError(
                f"got {len(items)} {name} for {len(texts)} texts; pass one per text "
                f"(or {name}=None)"
            )
    problems: list[str] = []
    records: list[Record] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(texts):
        try:
            text = check_text(raw, limits)
            key = None
            if ids is not None:
                key = check_id(ids[i], limits)
                if key in seen:
                    raise InvalidInputError(f"duplicate id {key!r} (also at {seen[key]})")
                seen[key] = i
            meta = check_metadata(None if metadata is None else metadata[i], limits)
            version = None
            if versions is not None and versions[i] is not None:
                if ids is None:
                    raise InvalidInputError(
                        "a version needs an id: versions order the writes of one id"
                    )
                version = check_version(versions[i])
        except InvalidInputError as exc:
            problems.append(f"item {i}: {exc}")
            continue
        records.append(Record(text, key, meta or None, version))
    _raise_problems(problems, len(texts))
    return records


def _raise_problems(problems: list[str], total: int) -> None:
    if not problems:
        return
    shown = "\n  ".join(problems[:_MAX_REPORTED])
    more = (
        f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
    )
    raise InvalidInputError(
        f"{len(problems)} of {total} items are invalid; nothing was queued:\n  {shown}{more}"
    )


_DOCUMENT_KEYS = frozenset({"id", "text", "metadata", "version"})


def check_documents(
    documents: Iterable[Document | Mapping[str, Any]], limits: BatchSettings
) -> list[Record]:
    """Every document checked (a :class:`Document`, or a mapping with ``id``, ``text`` and
    optionally ``metadata`` and ``version``), or one error listing every problem."""
    if isinstance(documents, str | bytes | Mapping | Document):
        raise InvalidInputError(
            "documents must be a list of documents; wrap a single document in a list"
        )
    problems: list[str] = []
    records: list[Record] = []
    seen: dict[str, int] = {}
    count = 0
    for i, raw in enumerate(documents):
        count += 1
        try:
            if isinstance(raw, Document):
                fields: Mapping[str, Any] = raw.__dict__
            elif isinstance(raw, Mapping):
                fields = raw
                unknown = sorted(set(map(str, fields)) - _DOCUMENT_KEYS)
                if unknown:
                    raise InvalidInputError(
                        f"unknown field(s) {', '.join(unknown)}; a document has id, text, "
                        "metadata and version"
                    )
            else:
                raise InvalidInputError(
                    f"a document must be a Document or a dict, got {type(raw).__name__}"
                )
            if fields.get("id") is None:
                raise InvalidInputError("a document needs an id (its key in your source)")
            key = check_id(fields["id"], limits)
            if key in seen:
                raise InvalidInputError(f"duplicate id {key!r} (also at {seen[key]})")
            seen[key] = i
            text = check_text(fields.get("text"), limits)
            meta = check_metadata(fields.get("metadata"), limits)
            version = fields.get("version")
            records.append(
                Record(text, key, meta or None, None if version is None else check_version(version))
            )
        except InvalidInputError as exc:
            problems.append(f"document {i}: {exc}")
    if not count:
        raise InvalidInputError("no documents to submit; pass at least one")
    _raise_problems(problems, count)
    return records


def check_ids(
    ids: Sequence[str | int], limits: BatchSettings, versions: Sequence[Any] | None = None
) -> list[tuple[str, float | None]]:
    """Ids to delete, checked, each with its version (None: the order it is queued in)."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise InvalidInputError(
            f"ids must be a list, got {type(ids).__name__}; wrap a single id in a list"
        )
    if not ids:
        raise InvalidInputError("ids is empty; pass at least one id to delete")
    if versions is not None and len(versions) != len(ids):
        raise InvalidInputError(f"got {len(versions)} versions for {len(ids)} ids")
    problems: list[str] = []
    checked: list[tuple[str, float | None]] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(ids):
        try:
            key = check_id(raw, limits)
            if key in seen:
                raise InvalidInputError(f"duplicate id {key!r} (also at {seen[key]})")
            seen[key] = i
            version = None if versions is None or versions[i] is None else versions[i]
            checked.append((key, None if version is None else check_version(version)))
        except InvalidInputError as exc:
            problems.append(f"item {i}: {exc}")
    _raise_problems(problems, len(ids))
    return checked


def check_one(
    text: object, key: object, metadata: object, limits: BatchSettings, version: object = None
) -> Record:
    """One checked record (id, metadata and version optional), or :class:`InvalidInputError`."""
    checked_key = None if key is None else check_id(key, limits)
    if version is not None and checked_key is None:
        raise InvalidInputError("a version needs an id: versions order the writes of one id")
    return Record(
        check_text(text, limits),
        checked_key,
        check_metadata(metadata, limits) or None,
        None if version is None else check_version(version),
    )


def queued_bytes(record: Record) -> int:
    """What a record weighs in a queue message (JSON, ASCII-escaped)."""
    text, key, meta, _ = record
    return len(json.dumps(text)) + len(json.dumps(key)) + len(json.dumps(meta)) + 32


def check_weight(record: Record, max_bytes: int) -> int:
    """A record's queued weight, or an error when no queue message can carry it."""
    weight = queued_bytes(record)
    if weight > max_bytes:
        raise InvalidInputError(
            f"item {record.id or record.text[:40]!r} is {weight} bytes as queued (JSON escapes "
            f"every non-ASCII character), more than one queue message may carry ({max_bytes}); "
            "raise EMBEDQ_WORKER__MAX_MESSAGE_BYTES, or split it at its source"
        )
    return weight


def batches(
    records: Iterable[Record], size: int, max_bytes: int, most: int | None = None
) -> Iterator[list[Record]]:
    """Cut records into batches of at most ``size`` items and ``max_bytes`` of JSON, measured
    as the queue serialises it (ASCII-escaped: an emoji weighs 12 bytes, not 4). A record
    heavier than ``max_bytes`` goes alone, if it is at most ``most`` (one message's limit)."""
    limit = max_bytes if most is None else max(most, max_bytes)
    return cut(records, size, max_bytes, lambda record: check_weight(record, limit))


def cut(
    items: Iterable[T], size: int, max_bytes: int, weigh: Callable[[T], int]
) -> Iterator[list[T]]:
    """Consecutive batches of at most ``size`` items and about ``max_bytes`` (by ``weigh``);
    an item heavier than ``max_bytes`` goes alone. Streams: one batch in memory at a time."""
    chunk: list[T] = []
    used = 0
    for item in items:
        weight = weigh(item)
        if chunk and (len(chunk) >= size or used + weight > max_bytes):
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += weight
    if chunk:
        yield chunk
