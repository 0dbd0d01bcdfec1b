"""Which operation on each document is the latest: sequence numbers and the version register.

Every operation on a document (a write or a delete) carries an *order key*, ``(version, seq)``:
the caller's version (or, without one, the sequence number), then the sequence number the
producer drew from Redis when it queued the operation, which breaks ties in submission order.
Workers apply operations in whatever order they take them; the register keeps, per collection
and document, the greatest order key any worker has *claimed*, so that an operation older than
one already claimed writes nothing, and a newer one knows to remove what older ones wrote
(``worker/documents.py`` holds the whole protocol and why it converges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import redis

__all__ = ["Claim", "OrderKey", "VersionRegister", "register_key"]

_SEQ_KEY = "embedq:seq"

# KEYS: the sequence counter; ARGV: how many numbers. Returns the first of ``n`` consecutive
# numbers, each above every number handed out before and at least the server's clock in
# microseconds: a Redis that lost its data starts again above everything it handed out.
_NEXT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = math.max(now, last + 1)
redis.call('SET', KEYS[1], string.format('%.0f', first + tonumber(ARGV[1]) - 1))
return string.format('%.0f', first)
"""

# KEYS: the collection's register; ARGV: per operation its document id, version and seq.
# Returns per operation 0 (first operation seen on the document), 1 (newer than the one
# claimed before), 2 (the same operation, claimed before: a redelivery) or 3 (older).
_CLAIM = """
local out = {}
for a = 1, #ARGV, 3 do
  local doc, version, seq = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local held = redis.call('HGET', KEYS[1], doc)
  local status = 0
  if held then
    local space = string.find(held, ' ', 1, true)
    local hv, hs = tonumber(string.sub(held, 1, space - 1)), tonumber(string.sub(held, space + 1))
    if version > hv or (version == hv and seq > hs) then status = 1
    elseif version == hv and seq == hs then status = 2
    else status = 3 end
  end
  if status <= 1 then
    redis.call('HSET', KEYS[1], doc, ARGV[a + 1] .. ' ' .. ARGV[a + 2])
  end
  out[#out + 1] = status
end
return out
"""


@dataclass(frozen=True, order=True)
class OrderKey:
    """Where an operation stands among the operations on its document; greater = later."""

    version: float
    seq: int

    def encode(self) -> str:
        return f"{_number(self.version)} {self.seq}"

    @classmethod
    def decode(cls, raw: bytes | str) -> OrderKey:
        text = raw.decode() if isinstance(raw, bytes) else raw
        version, seq = text.split(" ")
        return cls(float(version), int(seq))


class Claim(IntEnum):
    """What the register said when an operation claimed its document."""

    FIRST = 0  # no operation on this document had been claimed: nothing older is stored
    NEWER = 1  # it replaces an older operation, whose rows must go
    AGAIN = 2  # it had claimed before (a redelivery or a retry): finish what it started
    STALE = 3  # a newer operation has claimed the document: this one must write nothing

    @property
    def live(self) -> bool:
        return self is not Claim.STALE


def register_key(collection: str) -> str:
    return f"embedq:versions:{collection}"


class VersionRegister:
    """Sequence numbers for producers, claims and the latest claims for workers."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._next = client.register_script(_NEXT)
        self._claim = client.register_script(_CLAIM)

    def next_seqs(self, count: int) -> int:
        """The first of ``count`` fresh sequence numbers, greater than every one before."""
        return int(self._next(keys=[_SEQ_KEY], args=[count]))

    def claim(self, collection: str, ops: Sequence[tuple[str, OrderKey]]) -> list[Claim]:
        """Claim each ``(document id, order key)``, atomically and in order."""
        if not ops:
            return []
        args: list[str | int] = []
        for doc, key in ops:
            args += [doc, _number(key.version), key.seq]
        return [Claim(int(s)) for s in self._claim(keys=[register_key(collection)], args=args)]

    def latest(self, collection: str, docs: Sequence[str]) -> list[OrderKey | None]:
        """The greatest order key claimed for each document (None: never claimed)."""
        if not docs:
            return []
        raw = self._redis.hmget(register_key(collection), list(docs))
        return [None if value is None else OrderKey.decode(value) for value in raw]

    def forget(self, collection: str) -> None:
        """Drop a collection's register (when the collection itself is dropped)."""
        self._redis.delete(register_key(collection))


def _number(value: float) -> str:
    """A version as Lua reads it back exactly: integers without a fraction, others by repr."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
