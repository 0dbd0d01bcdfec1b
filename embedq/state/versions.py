"""Which operation on each document is the latest: sequence numbers and the version register.

Every operation on a document (a write or a delete) carries an *order key*, ``(version, seq)``:
the caller's version (or, without one, the sequence number), then the sequence number the
producer drew from Redis when it queued the operation, which breaks ties in submission order.
Workers apply operations in whatever order they take them. The register keeps, per collection
and document, the greatest order key any worker has *claimed*, with how many chunks that
operation writes, and the operations it replaced whose rows may still be stored (*pending*).
Row keys derive from (document, seq, chunk number), so the rows of any of them are known
without reading the store; ``worker/batch.py`` holds the whole protocol and why it converges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import redis

from embedq.config.keys import SEQ, seqs_key, versions_key

__all__ = ["Claim", "Claimed", "OrderKey", "VersionRegister", "Written", "register_key"]


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

# KEYS: the sequence counter, the batch's record; ARGV: how many numbers, the record's TTL.
# The numbers of a batch that came without any (contract 1): drawn once, then the same.
_FOR = """
local held = redis.call('GET', KEYS[2])
if held then return held end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = math.max(now, last + 1)
redis.call('SET', KEYS[1], string.format('%.0f', first + tonumber(ARGV[1]) - 1))
redis.call('SET', KEYS[2], string.format('%.0f', first), 'EX', ARGV[2])
return string.format('%.0f', first)
"""

#: How long a batch's numbers are kept (a week, as job records by default).
_FOR_TTL = 7 * 24 * 3600

# A document's entry: "<version> <seq> <chunks>", then ";<seq> <chunks>" per pending operation.
_PARSE = """
local function parse(held)
  local parts = {}
  for part in string.gmatch(held, '[^;]+') do parts[#parts + 1] = part end
  local v, s, n = string.match(parts[1], '^(%S+) (%S+) (%S+)$')
  local pending = {}
  for i = 2, #parts do pending[#pending + 1] = parts[i] end
  return tonumber(v), tonumber(s), tonumber(n), v, s, pending
end
"""

# KEYS: the collection's register; ARGV: per operation its document id, version, seq and chunk
# count. Returns per operation its claim (0 first, 1 newer, 2 again, 3 stale), the number of
# pending operations, then each as "<seq> <chunks>" (all of them for a live claim: its worker
# deletes their rows; none for a stale one).
_CLAIM = (
    _PARSE
    + """
local out = {}
for a = 1, #ARGV, 4 do
  local doc, chunks = ARGV[a], ARGV[a + 3]
  local version, seq = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local held = redis.call('HGET', KEYS[1], doc)
  local status, pending = 0, {}
  local entry = ARGV[a + 1] .. ' ' .. ARGV[a + 2] .. ' ' .. chunks
  if held then
    local hv, hs, hn, rv, rs, rest = parse(held)
    pending = rest
    if version > hv or (version == hv and seq > hs) then
      status = 1
      pending[#pending + 1] = rs .. ' ' .. string.format('%d', hn)
    elseif version == hv and seq == hs then
      status = 2
      entry = rv .. ' ' .. rs .. ' ' .. string.format('%d', math.max(hn, tonumber(chunks)))
    else
      status = 3
    end
  end
  if status <= 2 then
    local value = entry
    for _, p in ipairs(pending) do value = value .. ';' .. p end
    redis.call('HSET', KEYS[1], doc, value)
  else
    pending = {}
  end
  out[#out + 1] = status
  out[#out + 1] = #pending
  for _, p in ipairs(pending) do out[#out + 1] = p end
end
return out
"""
)

# KEYS: the collection's register; ARGV: per document its id, how many seqs follow, the seqs
# of the pending operations whose rows are now deleted. Drops them from the pending list.
_SETTLE = (
    _PARSE
    + """
local a = 1
while a <= #ARGV do
  local doc, count = ARGV[a], tonumber(ARGV[a + 1])
  local gone = {}
  for i = 1, count do gone[ARGV[a + 1 + i]] = true end
  local held = redis.call('HGET', KEYS[1], doc)
  if held then
    local hv, hs, hn, rv, rs, pending = parse(held)
    local value = rv .. ' ' .. rs .. ' ' .. string.format('%d', hn)
    for _, p in ipairs(pending) do
      if not gone[string.match(p, '^(%S+)')] then value = value .. ';' .. p end
    end
    redis.call('HSET', KEYS[1], doc, value)
  end
  a = a + 2 + count
end
return 1
"""
)


@dataclass(frozen=True, order=True)
class OrderKey:
    """Where an operation stands among the operations on its document; greater = later."""

    version: float
    seq: int


class Claim(IntEnum):
    """What the register said when an operation claimed its document."""

    FIRST = 0  # no operation on this document had been claimed: nothing older is stored
    NEWER = 1  # it replaces an older operation, whose rows must go
    AGAIN = 2  # it had claimed before (a redelivery or a retry): finish what it started
    STALE = 3  # a newer operation has claimed the document: this one must write nothing

    @property
    def live(self) -> bool:
        return self is not Claim.STALE


@dataclass(frozen=True)
class Written:
    """An operation whose rows may be stored: row keys are (document, seq, 0..chunks-1)."""

    seq: int
    chunks: int


@dataclass(frozen=True)
class Claimed:
    """The register's answer to one claim: the claim, and the replaced operations whose rows
    the claimant deletes (then reports with :meth:`VersionRegister.settle`)."""

    claim: Claim
    pending: tuple[Written, ...] = field(default=())


def register_key(collection: str) -> str:
    return versions_key(collection)


class VersionRegister:
    """Sequence numbers for producers; claims, settlements and latest keys for workers."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._next = client.register_script(_NEXT)
        self._for = client.register_script(_FOR)
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)

    def next_seqs(self, count: int) -> int:
        """The first of ``count`` fresh sequence numbers, greater than every one before."""
        return int(self._next(keys=[SEQ], args=[count]))

    def seqs_for(self, name: str, count: int) -> int:
        """:meth:`next_seqs` for the batch called ``name``, the same numbers on every call."""
        return int(self._for(keys=[SEQ, seqs_key(name)], args=[count, _FOR_TTL]))

    def claim(self, collection: str, ops: Sequence[tuple[str, OrderKey, int]]) -> list[Claimed]:
        """Claim each ``(document id, order key, chunk count)``, atomically and in order."""
        if not ops:
            return []
        args: list[str | int] = []
        for doc, key, chunks in ops:
            args += [doc, _number(key.version), key.seq, chunks]
        raw = self._claim(keys=[register_key(collection)], args=args)
        out: list[Claimed] = []
        at = 0
        for _ in ops:
            status, count = int(raw[at]), int(raw[at + 1])
            entries = [_text(e).split(" ") for e in raw[at + 2 : at + 2 + count]]
            out.append(Claimed(Claim(status), tuple(Written(int(s), int(n)) for s, n in entries)))
            at += 2 + count
        return out

    def settle(self, collection: str, done: Sequence[tuple[str, Sequence[int]]]) -> None:
        """Drop pending operations whose rows are deleted: ``(document id, their seqs)``."""
        args: list[str | int] = []
        for doc, seqs in done:
            if seqs:
                args += [doc, len(seqs), *seqs]
        if args:
            self._settle(keys=[register_key(collection)], args=args)

    def latest(self, collection: str, docs: Sequence[str]) -> list[OrderKey | None]:
        """The greatest order key claimed for each document (None: never claimed)."""
        if not docs:
            return []
        raw = self._redis.hmget(register_key(collection), list(docs))
        return [None if value is None else _key(_text(value)) for value in raw]

    def forget(self, collection: str) -> None:
        """Drop a collection's register (when the collection itself is dropped)."""
        self._redis.delete(register_key(collection))


def _key(value: str) -> OrderKey:
    version, seq, _ = value.split(";", 1)[0].split(" ")
    return OrderKey(float(version), int(seq))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _number(value: float) -> str:
    """A version as Lua reads it back exactly: integers without a fraction, others by repr."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
