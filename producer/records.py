"""Items to embed, checked and cut into batches on the producer side."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from config.contract import check_id, check_metadata, check_text
from config.errors import InvalidInputError
from config.settings import BatchSettings

__all__ = ["Record", "batches", "check_items", "check_one"]

#: One item to embed: ``(text, id or None, metadata or None)``.
Record = tuple[str, str | None, dict[str, Any] | None]

_MAX_REPORTED = 10


def check_items(
    texts: Sequence[str],
    ids: Sequence[str | int] | None,
    metadata: Sequence[dict[str, Any] | None] | None,
    limits: BatchSettings,
) -> list[Record]:
    """Every item checked, or one :class:`InvalidInputError` that lists every problem."""
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise InvalidInputError(
            f"texts must be a list of str, got {type(texts).__name__}; wrap a single text in a list"
        )
    if not texts:
        raise InvalidInputError("texts is empty; pass at least one text")
    for name, items in (("ids", ids), ("metadata", metadata)):
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
        except InvalidInputError as exc:
            problems.append(f"item {i}: {exc}")
            continue
        records.append((text, key, meta or None))
    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = (
            f"\n  ... and {len(problems) - _MAX_REPORTED} more"
            if len(problems) > _MAX_REPORTED
            else ""
        )
        raise InvalidInputError(
            f"{len(problems)} of {len(texts)} items are invalid; nothing was queued:\n  "
            f"{shown}{more}"
        )
    return records


def check_one(text: object, key: object, metadata: object, limits: BatchSettings) -> Record:
    """One checked record (id and metadata optional), or :class:`InvalidInputError`."""
    checked_key = None if key is None else check_id(key, limits)
    return check_text(text, limits), checked_key, check_metadata(metadata, limits) or None


def batches(records: Iterable[Record], size: int, max_bytes: int) -> Iterator[list[Record]]:
    """Cut records into batches of at most ``size`` items and ``max_bytes`` of JSON, measured
    as the queue serialises it (ASCII-escaped: an emoji weighs 12 bytes, not 4)."""
    chunk: list[Record] = []
    used = 0
    for record in records:
        text, key, meta = record
        weight = len(json.dumps(text)) + len(json.dumps(key)) + len(json.dumps(meta)) + 8
        if chunk and (len(chunk) >= size or used + weight > max_bytes):
            yield chunk
            chunk, used = [], 0
        chunk.append(record)
        used += weight
    if chunk:
        yield chunk
