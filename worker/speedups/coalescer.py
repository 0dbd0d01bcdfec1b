"""Dynamic batching: a small batch picks up the small batches waiting behind it in its queue.

A stream of one-text jobs would otherwise cost a task, an encode call and an upsert per text.
The task Celery handed over takes more messages straight from its queue, up to a number of
texts, and they are embedded together.

Taking a message moves it, in one atomic step (a Lua script), from the queue into the broker's
set of unacknowledged messages, in the layout of embedq's transport (embedq/state/broker.py),
recorded as held by this node and process: a process killed at any moment leaves each message
either in the queue or held, never nowhere. A taken message is acknowledged once its rows are
stored and its progress recorded, and given back to the head of its queue on any failure; one
whose process died goes back when its node notices (the node's next lease tick), one whose node
died when the node's lease runs out. Anything that is not a plain small embed batch (a retry
waiting for its time, an oversized, pickled or malformed message) is given back untouched, for
the guarded consumer.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from pydantic import ValidationError

from embedq.config.contract import TASK_EMBED, BatchMessage
from embedq.config.keys import HOLDER, held_key
from embedq.state.broker import forget, give_back, held_by

__all__ = ["Coalescer", "Taken"]

log = logging.getLogger(__name__)

# KEYS: the queue's lists (by priority, first served first), the unacked hash, its index, the
# holder hash, this node's held hash. ARGV: now, room (texts), the embed task's name, the size
# of a full batch (0: none), the node ('' = none), this process's pid. Takes,
# oldest first, the messages of that task that fit in the room and are not full batches (by the
# producer's embedq_texts header; 1 when absent), and stops at the first that does not fit or
# is not such a message (it stays in the queue, untouched).
# Returns {item, list, tag, item, list, tag, ...}.
_TAKE = """
local unacked, index, holder, held = KEYS[#KEYS - 3], KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
local room, full = tonumber(ARGV[2]), tonumber(ARGV[4])
local out = {}
for i = 1, #KEYS - 4 do
  while room > 0 do
    local item = redis.call('LINDEX', KEYS[i], -1)
    if not item then break end
    local ok, message = pcall(cjson.decode, item)
    if not ok or type(message) ~= 'table' then return out end
    local headers, props = message['headers'], message['properties']
    if type(headers) ~= 'table' or type(props) ~= 'table' then return out end
    local delivery, tag = props['delivery_info'], props['delivery_tag']
    local eta = headers['eta']
    if headers['task'] ~= ARGV[3] or (eta ~= nil and eta ~= cjson.null)
        or type(delivery) ~= 'table' or type(tag) ~= 'string' then
      return out
    end
    local texts = math.max(1, tonumber(headers['embedq_texts']) or 1)
    if texts > room or (full > 0 and texts >= full) then return out end
    -- kombu's unacknowledged entry, built before anything is written (cjson refuses NaN)
    local built, entry = pcall(function()
      return '[' .. item .. ',' .. cjson.encode(delivery['exchange']) .. ','
        .. cjson.encode(delivery['routing_key']) .. ']'
    end)
    if not built then return out end
    redis.call('RPOP', KEYS[i])
    -- 10 us apart, so that given back together they keep their order (embedq/state/broker.py)
    redis.call('ZADD', index, tonumber(ARGV[1]) + #out * 0.0000033, tag)
    redis.call('HSET', unacked, tag, entry)
    if ARGV[5] ~= '' then
      redis.call('HSET', holder, tag, ARGV[5])
      redis.call('HSET', held, tag, ARGV[6] .. ' ' .. #item .. ' ' .. KEYS[i])
    end
    out[#out + 1] = item
    out[#out + 1] = KEYS[i]
    out[#out + 1] = tag
    room = room - texts
  end
end
return out
"""

# KEYS: unacked hash, its index, the list the message came from. ARGV: tag, item.
# Back to the head of its list, unless the consumers already restored it (then it is there).
_GIVE_BACK = """
local held = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if held == 1 then redis.call('RPUSH', KEYS[3], ARGV[2]) end
return held
"""


@dataclass
class Taken:
    """A message taken from the queue and its batch, to be acknowledged or given back."""

    batch: BatchMessage
    tag: str
    item: bytes
    source: str
    _coalescer: Coalescer

    def ack(self) -> None:
        self._coalescer.ack(self)

    def give_back(self) -> None:
        self._coalescer.give_back(self)


class Coalescer:
    """Takes waiting small batches from a queue; one per worker process, opened on first use."""

    def __init__(self, app: Celery, max_message_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_message_bytes
        self._connection: Any = None
        self._take: Any = None
        self._give_back_script: Any = None

    def _channel(self) -> Any:
        """kombu's Redis channel: its client, and the names of its keys."""
        if self._connection is None:
            self._connection = self._app.connection_for_read()
            client = self._connection.default_channel.client
            # Sent to Redis once, then run by their hash.
            self._take = client.register_script(_TAKE)
            self._give_back_script = client.register_script(_GIVE_BACK)
        return self._connection.default_channel

    def take(self, queue: str, model: str, room: int, full: int = 0) -> list[Taken]:
        """Up to ``room`` texts' worth of batches for ``model`` waiting in ``queue``, stopping
        at a batch of ``full`` texts or more (0: no such stop), which runs as its own task."""
        channel = self._channel()
        client: redis.Redis = channel.client
        # kombu keeps a queue's messages of each priority step in a list of its own.
        lists = list(dict.fromkeys(channel._q_for_pri(queue, p) for p in channel.priority_steps))
        node = channel.embedq_node
        keys = [
            *lists,
            channel.unacked_key,
            channel.unacked_index_key,
            HOLDER,
            held_key(node),
        ]
        # One round trip takes them all; each is then read in full here.
        args = [time.time(), room, TASK_EMBED, full, node, os.getpid()]
        try:
            found = self._take(keys=keys, args=args, client=client)
        except redis.ConnectionError:
            # The script may have run and its reply been lost: what it took is held by this
            # process, which will not run it. Nothing else is (one task at a time).
            self._release_held(channel)
            raise
        triples = [
            (found[n], _text(found[n + 1]), _text(found[n + 2])) for n in range(0, len(found), 3)
        ]
        taken: list[Taken] = []
        for n, (item, source, tag) in enumerate(triples):
            batch = self._small_batch(item, model)
            texts = 0 if batch is None else len(batch.texts)
            if batch is None or texts > room or 0 < full <= texts:
                # Not ours to run here: this one and the rest go back to the head of the
                # queue, last first, so that the queue keeps its order.
                for back, back_source, back_tag in reversed(triples[n:]):
                    self._give_back(channel, back_tag, back, back_source)
                break
            taken.append(Taken(batch, tag, item, source, self))
            room -= len(batch.texts)
        return taken

    def _release_held(self, channel: Any) -> None:
        node = channel.embedq_node
        if not node:
            return
        try:
            with channel.conn_or_acquire() as client:
                mine = [t for t, pid in held_by(client, node).items() if pid == os.getpid()]
                give_back(client, node, mine, channel.unacked_key, channel.unacked_index_key)
        except redis.RedisError:
            log.warning("could not give back batches after a failed take", exc_info=True)

    def _small_batch(self, item: bytes, model: str) -> BatchMessage | None:
        try:
            envelope = json.loads(item)
            headers = envelope.get("headers") or {}
            properties = envelope["properties"]
            # Checked before the body is decoded; the body is never unpickled: JSON or nothing.
            if (
                headers.get("task") != TASK_EMBED
                or headers.get("eta")
                or envelope.get("content-type") != "application/json"
                or len(envelope.get("body", "")) > self._max_bytes * 4 // 3 + 4
            ):
                return None
            body = envelope["body"]
            raw = base64.b64decode(body) if properties.get("body_encoding") == "base64" else body
            if len(raw) > self._max_bytes:
                return None
            args, kwargs, _ = json.loads(raw)
            batch = BatchMessage.model_validate(kwargs["batch"])
        except (ValueError, TypeError, KeyError, AttributeError, ValidationError):
            return None
        if args or set(kwargs) != {"batch"} or batch.model != model:
            return None
        return batch

    def ack(self, *taken: Taken) -> None:
        """Acknowledge taken messages, in one round trip."""
        if not taken:
            return
        channel = self._channel()
        tags = [t.tag for t in taken]
        pipe = channel.client.pipeline()
        pipe.zrem(channel.unacked_index_key, *tags)
        pipe.hdel(channel.unacked_key, *tags)
        forget(pipe, channel.embedq_node, tags)
        pipe.execute()

    def give_back(self, taken: Taken) -> None:
        channel = self._channel()
        self._give_back(channel, taken.tag, taken.item, taken.source)

    def _give_back(self, channel: Any, tag: str, item: bytes, source: str) -> None:
        if channel.embedq_node:
            give_back(
                channel.client,
                channel.embedq_node,
                [tag],
                channel.unacked_key,
                channel.unacked_index_key,
            )
            return
        keys = [channel.unacked_key, channel.unacked_index_key, source]
        self._give_back_script(keys=keys, args=[tag, item], client=channel.client)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
