"""Dead letters: messages (or items of messages) that could not be stored, kept in Redis with
why and when, so that nothing is dropped silently.

Written by workers; read, shown and requeued with ``embedq dead-letters``. A record keeps the
message body as JSON when it was valid JSON, else at most ``MAX_RAW_BYTES`` of the raw bytes
(base64): a body that was not JSON (a pickle, say) is stored as inert bytes and never decoded.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Literal

import redis
from redis.typing import EncodableT, FieldT

from embedq.config.keys import DEAD_LETTERS, dead_letter_key

__all__ = ["MAX_BODY_BYTES", "MAX_RAW_BYTES", "DeadLetter", "DeadLetters", "Kind"]

Kind = Literal["undecodable", "unknown-task", "invalid-message", "oversized", "failed", "rejected"]

MAX_RAW_BYTES = 64 * 1024
#: Bodies larger than this are kept as their first MAX_RAW_BYTES only.
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, or the rejected items of one."""

    id: str
    kind: Kind
    reason: str
    when: float
    task: str = ""
    #: The Celery task id of the message (its ``id`` header), when it had one.
    message_id: str = ""
    queue: str = ""
    job_id: str = ""
    batch: int | None = None
    size: int = 0
    #: The message body (``kwargs["batch"]`` for embed tasks) when it was JSON.
    body: Any = None
    #: Base64 of the first bytes of a body that was not JSON; never decoded.
    raw: str = ""

    @property
    def requeueable(self) -> bool:
        return isinstance(self.body, dict) and isinstance(self.body.get("texts"), list)

    def when_iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.when))


class DeadLetters:
    """The dead-letter store: a hash per record and a sorted index by time."""

    def __init__(self, client: redis.Redis, max_records: int = 100_000) -> None:
        self._redis = client
        self._max = max_records

    @staticmethod
    def _key(letter_id: str) -> str:
        return dead_letter_key(letter_id)

    def add(
        self,
        kind: Kind,
        reason: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        task: str = "",
        message_id: str = "",
        queue: str = "",
        job_id: str = "",
        batch: int | None = None,
        size: int = 0,
        letter_id: str | None = None,
    ) -> str:
        """Record a dead letter; with ``letter_id``, at most once (a redelivered batch must not
        leave two records)."""
        letter = DeadLetter(
            id=letter_id or uuid.uuid4().hex,
            kind=kind,
            reason=reason[:4000],
            when=time.time(),
            task=task[:200],
            message_id=message_id[:200],
            queue=queue[:200],
            job_id=job_id[:64],
            batch=batch,
            size=size,
            body=body,
            raw=base64.b64encode(raw[:MAX_RAW_BYTES]).decode() if raw else "",
        )
        record: dict[FieldT, EncodableT] = {
            key: value
            for key, value in asdict(letter).items()
            if isinstance(value, str | int | float)
        }
        record["body"] = json.dumps(body, ensure_ascii=False, default=repr)
        record["batch"] = "" if batch is None else str(batch)
        if letter_id is not None and self._redis.exists(self._key(letter.id)):
            return letter.id
        pipe = self._redis.pipeline()
        pipe.hset(self._key(letter.id), mapping=record)
        pipe.zadd(DEAD_LETTERS, {letter.id: letter.when})
        pipe.execute()
        self._trim()
        return letter.id

    def _trim(self) -> None:
        excess = int(self._redis.zcard(DEAD_LETTERS)) - self._max
        if excess > 0:
            oldest = [_text(i) for i in self._redis.zrange(DEAD_LETTERS, 0, excess - 1)]
            pipe = self._redis.pipeline()
            for letter_id in oldest:
                pipe.delete(self._key(letter_id))
            pipe.zrem(DEAD_LETTERS, *oldest)
            pipe.execute()

    def list(self, limit: int = 50) -> list[DeadLetter]:
        """Newest first."""
        ids = [_text(i) for i in self._redis.zrevrange(DEAD_LETTERS, 0, limit - 1)]
        letters = [self.get(i) for i in ids]
        return [letter for letter in letters if letter is not None]

    def count(self) -> int:
        return int(self._redis.zcard(DEAD_LETTERS))

    def get(self, letter_id: str) -> DeadLetter | None:
        raw = self._redis.hgetall(self._key(letter_id))
        if not raw:
            return None
        record = {_text(k): _text(v) for k, v in raw.items()}
        return DeadLetter(
            id=record["id"],
            kind=record["kind"],  # type: ignore[arg-type]
            reason=record["reason"],
            when=float(record["when"]),
            task=record.get("task", ""),
            message_id=record.get("message_id", ""),
            queue=record.get("queue", ""),
            job_id=record.get("job_id", ""),
            batch=int(record["batch"]) if record.get("batch") else None,
            size=int(record.get("size", 0) or 0),
            body=json.loads(record.get("body") or "null"),
            raw=record.get("raw", ""),
        )

    def remove(self, letter_id: str) -> bool:
        pipe = self._redis.pipeline()
        pipe.delete(self._key(letter_id))
        pipe.zrem(DEAD_LETTERS, letter_id)
        deleted, _ = pipe.execute()
        return bool(deleted)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
