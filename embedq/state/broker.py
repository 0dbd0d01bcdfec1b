"""embedq's Redis transport for kombu: a message is recorded as held by its node in the same
atomic step that takes it, every worker node keeps a lease, and the messages of a node whose
lease has run out go back to their queues within seconds.

kombu's Redis transport takes a message with BRPOP and records it as unacknowledged in a second
round trip (kombu #305, #1836; celery #4354, #7950): a node killed between the two loses the
message for good, and a message that was recorded waits for the visibility timeout (an hour by
default) before anyone else may run it. Here:

- **Taking** is one Lua script over the consumer's queues (in kombu's order: priority, then
  round robin): the first message found is moved into kombu's ``unacked`` hash and index, in
  kombu's own layout, and recorded under the node that takes it. Scripts cannot block, so when
  every queue is empty the channel waits on a small stream per queue (its *bell*), which
  publishers through this transport ring after each push; a message pushed by any other client
  is still seen within ``brpop_timeout`` (1 s), when the wait ends.
- **Leases**: a worker node's main process renews its lease every ``embedq_recovery_interval``
  seconds from its event loop (Redis's clock, so hosts' clocks do not matter) and, on the same
  tick, returns to their queues (one Lua script, so each comes back once) the messages of every
  node whose lease has expired, and those its own pool processes held when they died.
- Acknowledging removes the record with the message, as kombu's acknowledgement does. The
  visibility timeout stays as the last resort, for messages of a client without a node.

This reaches into kombu's Redis transport (its channel, QoS, poller and key layout), so it lives
here and nowhere else; ``pyproject.toml`` bounds kombu, and ``EMBEDQ_WORKER__ATOMIC_FETCH=false``
gives kombu's own BRPOP path back (leases then cover only the dynamic batcher's messages).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any

import redis
from celery.utils.dispatch import Signal
from kombu.utils.encoding import bytes_to_str as _bytes_to_str
from kombu.utils.json import dumps as _dumps
from kombu.utils.json import loads as _loads

from embedq.config.keys import (
    BELL_PREFIX,
    HELD_PREFIX,
    HOLDER,
    NODES,
    UNACKED,
    UNACKED_INDEX,
    bell_key,
    held_key,
    hold_key,
)
from embedq.state.deadletters import DeadLetters

__all__ = [
    "Channel",
    "Restored",
    "Transport",
    "messages_restored",
    "new_node_id",
    "renew_lease",
    "restore_dead_nodes",
    "restore_orphans",
]

log = logging.getLogger("embedq.broker")

# kombu's transport internals are partly annotated, and not as a public API: typed as Any here.
kombu_redis: Any = importlib.import_module("kombu.transport.redis")
virtual: Any = importlib.import_module("kombu.transport.virtual")
bytes_to_str: Callable[[Any], str] = _bytes_to_str
dumps: Callable[[Any], str] = _dumps
loads: Callable[[str], Any] = _loads

#: Entries a bell keeps (approximately): it is a wake-up call, not a log.
BELL_LENGTH = 64

#: Sent (``sender`` = node id) after messages were given back: ``count`` of them, held by
#: ``holder`` (a dead node, or "<node> pid <pid>" for a dead pool process).
messages_restored = Signal(name="embedq_messages_restored", providing_args={"holder", "count"})


def new_node_id(hostname: str) -> str:
    """A node's identity for one run: a restarted node is a new node, so that the messages
    its previous run held are restored instead of looking held by a live lease."""
    return f"{hostname}/{os.getpid()}/{os.urandom(4).hex()}"


#: Seconds a bell outlives its last ring (a reply queue's bell must not stay for ever).
BELL_TTL = 3600
#: A node's entry stays this long after its lease ran out, so that a take that reached Redis
#: just after the node was found dead (a script queued behind the restore) is still restored.
DEAD_NODE_GRACE_MS = 3_600_000

# Shared Lua. give_back(entries, holder, unacked, index, bell_prefix, sep), entries a list of
# {tag, node, held hash}: of these, the messages still held by their node go back to the head
# of the lists they came from, the earliest taken at the very head (a queue keeps its order),
# and their bells ring; every record of them goes. The unacked entry was written by a take
# ("[" item "," exchange "," key "]"), the held record ("<pid> <bytes> <list>") gives the
# item's length. Returns {node = count}.
_GIVE_BACK_LUA = """
local function give_back(entries, holder, unacked, index, bell_prefix, sep)
  local found, counts = {}, {}
  for _, e in ipairs(entries) do
    local tag, node, held = e[1], e[2], e[3]
    local record = redis.call('HGET', held, tag)
    redis.call('HDEL', held, tag)
    if record and redis.call('HGET', holder, tag) == node then
      local _, length, list = string.match(record, '^(%d+) (%d+) (.*)$')
      local entry = redis.call('HGET', unacked, tag)
      local score = tonumber(redis.call('ZSCORE', index, tag)) or 0
      redis.call('HDEL', holder, tag)
      redis.call('HDEL', unacked, tag)
      redis.call('ZREM', index, tag)
      if entry and list then
        found[#found + 1] = {score, entry, tonumber(length), list}
        counts[node] = (counts[node] or 0) + 1
      end
    end
  end
  table.sort(found, function(a, b) return a[1] > b[1] end)
  for _, f in ipairs(found) do
    local entry, length, list = f[2], f[3], f[4]
    local item
    if length > 0 and string.sub(entry, 1, 1) == '[' then
      item = string.sub(entry, 2, 1 + length)
    else
      item = cjson.encode(cjson.decode(entry)[1])
    end
    redis.call('RPUSH', list, item)
    local cut = string.find(list, sep, 1, true)
    local bell = bell_prefix .. (cut and string.sub(list, 1, cut - 1) or list)
    redis.call('XADD', bell, 'MAXLEN', '~', BELL_LENGTH, '*', 'r', '1')
    redis.call('EXPIRE', bell, BELL_TTL)
  end
  return counts
end
""".replace("BELL_LENGTH", str(BELL_LENGTH)).replace("BELL_TTL", str(BELL_TTL))

# Shared Lua: kombu's unacknowledged entry of a queued item, and its tag; errors on anything
# that is not a kombu message with a delivery tag (the caller runs it under pcall).
_ENTRY_LUA = """
local function properties(item)
  -- From the last '"properties": {' to the end is '"properties": {...}' and maybe more keys,
  -- so that with a '{' before it, it is a small JSON object: kombu writes the properties last,
  -- after the body, and decoding only them spares Redis the whole message. Else: all of it.
  local at, from = nil, 1
  while true do
    local found = string.find(item, '"properties": {', from, true)
    if not found then break end
    at, from = found, found + 1
  end
  if at then
    local ok, tail = pcall(cjson.decode, '{' .. string.sub(item, at))
    if ok and type(tail) == 'table' and type(tail['properties']) == 'table' then
      return tail['properties']
    end
  end
  return cjson.decode(item)['properties']
end

local function unacked_entry(item)
  local props = properties(item)
  local tag, delivery = props['delivery_tag'], props['delivery_info']
  if type(tag) ~= 'string' then error('no delivery tag') end
  return '[' .. item .. ',' .. cjson.encode(delivery['exchange']) .. ','
    .. cjson.encode(delivery['routing_key']) .. ']', tag
end
"""

# KEYS: the lists to try in order, unacked, unacked_index, holder, held, then the bells.
# ARGV: now, node ('' = record nothing beyond kombu's entry), pid, number of lists, a '0' or
# '1' per list ('1': its consumer acknowledges nothing, so nothing is recorded).
# Returns {list, item, tag} for the first message found (tag false: not recorded, as for a
# no-ack consumer or an item that is not a kombu message), else {false, last id of each bell}.
_TAKE = (
    _ENTRY_LUA
    + """
local nlists = tonumber(ARGV[4])
local unacked, index = KEYS[nlists + 1], KEYS[nlists + 2]
local holder, held = KEYS[nlists + 3], KEYS[nlists + 4]
for i = 1, nlists do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    if string.sub(ARGV[5], i, i) == '1' then return {KEYS[i], item, false} end
    local ok, entry, tag = pcall(unacked_entry, item)
    if not ok then return {KEYS[i], item, false} end
    redis.call('ZADD', index, ARGV[1], tag)
    redis.call('HSET', unacked, tag, entry)
    if ARGV[2] ~= '' then
      redis.call('HSET', holder, tag, ARGV[2])
      redis.call('HSET', held, tag, ARGV[3] .. ' ' .. #item .. ' ' .. KEYS[i])
    end
    return {KEYS[i], item, tag}
  end
end
local ids = {}
for i = nlists + 5, #KEYS do
  local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  ids[#ids + 1] = last[1] and last[1][1] or '0-0'
end
return {false, ids}
"""
)

# KEYS: nodes, the node's hold-off key. ARGV: node, lease (ms). A node whose own lease had run
# out while it lived (Redis away, or the node paused) holds off restoring others for a lease:
# they missed their renewals for the same reason and are about to renew.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if old and tonumber(old) < now then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now + tonumber(ARGV[2])
"""

# KEYS: nodes, holder, unacked, unacked_index, the caller's hold-off key (it restores nothing
# while that exists; see _RENEW). ARGV: the caller's node, held prefix, bell
# prefix, kombu's priority separator, grace (ms). Every node whose lease has run out (by
# Redis's clock): each message it still holds goes back (give_back above). A dead node's entry
# goes once its records are empty and its grace has passed. Returns {node, count, ...}.
_RESTORE_DEAD = (
    _GIVE_BACK_LUA
    + """
if redis.call('EXISTS', KEYS[5]) == 1 then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES')
local entries, nodes = {}, {}
for i = 1, #dead, 2 do
  local node = dead[i]
  if node ~= ARGV[1] then
    local held = ARGV[2] .. node
    nodes[#nodes + 1] = {node, held, tonumber(dead[i + 1])}
    for _, tag in ipairs(redis.call('HKEYS', held)) do
      entries[#entries + 1] = {tag, node, held}
    end
  end
end
local counts = give_back(entries, KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4])
local out = {}
for _, n in ipairs(nodes) do
  local node, held, expired = n[1], n[2], n[3]
  if counts[node] then
    out[#out + 1] = node
    out[#out + 1] = counts[node]
  end
  if now - expired > tonumber(ARGV[5]) and redis.call('HLEN', held) == 0 then
    redis.call('ZREM', KEYS[1], node)
  end
end
return out
"""
)

# KEYS: holder, unacked, unacked_index, the node's held hash. ARGV: node, bell prefix, sep,
# then tags. Gives back the messages of those tags the node still holds; forgets the rest of
# them (acknowledged, or taken over by another node). Returns how many went back.
_GIVE_BACK = (
    _GIVE_BACK_LUA
    + """
local entries = {}
for i = 4, #ARGV do entries[#entries + 1] = {ARGV[i], ARGV[1], KEYS[4]} end
return give_back(entries, KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[3])[ARGV[1]] or 0
"""
)

# KEYS: holder, the node's held hash. ARGV: node. Forgets the held records of messages the node
# no longer holds (acknowledged, or taken over by another node after its lease ran out);
# returns {tag, record, ...} of those it does.
_OWN = """
local out = {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  if redis.call('HGET', KEYS[1], entries[i]) == ARGV[1] then
    out[#out + 1] = entries[i]
    out[#out + 1] = entries[i + 1]
  else
    redis.call('HDEL', KEYS[2], entries[i])
  end
end
return out
"""


@dataclass(frozen=True)
class Restored:
    """Messages given back to their queues, and who held them."""

    holder: str
    count: int


def renew_lease(client: redis.Redis, node: str, lease_seconds: float) -> None:
    client.eval(_RENEW, 2, NODES, hold_key(node), node, int(lease_seconds * 1000))


def restore_dead_nodes(
    client: redis.Redis, own: str = "", unacked: str = UNACKED, index: str = UNACKED_INDEX
) -> list[Restored]:
    """Give back the messages of every node whose lease has run out (``own`` excepted)."""
    sep = kombu_redis.Channel.sep
    keys = [NODES, HOLDER, unacked, index, hold_key(own)]
    args = [own, HELD_PREFIX, BELL_PREFIX, sep, DEAD_NODE_GRACE_MS]
    found = client.eval(_RESTORE_DEAD, len(keys), *keys, *args)
    pairs = [(bytes_to_str(found[i]), int(found[i + 1])) for i in range(0, len(found), 2)]
    return [Restored(node, count) for node, count in pairs]


def held_by(client: redis.Redis, node: str) -> dict[str, int]:
    """The messages ``node`` holds: tag -> the pid of the process that took it."""
    entries = client.eval(_OWN, 2, HOLDER, held_key(node), node)
    return {
        bytes_to_str(entries[i]): int(bytes_to_str(entries[i + 1]).split(" ", 1)[0])
        for i in range(0, len(entries), 2)
    }


def restore_orphans(
    client: redis.Redis,
    node: str,
    main_pid: int,
    alive: Callable[[int], bool],
    known: Callable[[], set[str]] | None = None,
    unacked: str = UNACKED,
    index: str = UNACKED_INDEX,
) -> list[Restored]:
    """Give back what this node holds but nobody will finish: messages its dead pool processes
    took (the node lives, so its lease would keep them held) and, with ``known`` (the tags the
    main process has, asked only while no take is on its way), messages the main process took
    whose reply never reached it (the connection dropped after the script ran)."""
    held = held_by(client, node)
    mine = known() if known is not None else None
    lost = [
        tag
        for tag, pid in held.items()
        if (pid == main_pid and mine is not None and tag not in mine)
        or (pid != main_pid and not alive(pid))
    ]
    if not lost:
        return []
    pids = sorted({held[tag] for tag in lost})
    count = give_back(client, node, lost, unacked, index)
    return [Restored(f"{node} (process {', '.join(map(str, pids))})", count)]


def give_back(
    client: redis.Redis,
    node: str,
    tags: Sequence[str],
    unacked: str = UNACKED,
    index: str = UNACKED_INDEX,
) -> int:
    """Give back messages this node holds, to the head of their lists, in the order taken."""
    if not tags:
        return 0
    keys = [HOLDER, unacked, index, held_key(node)]
    sep = kombu_redis.Channel.sep
    return int(client.eval(_GIVE_BACK, len(keys), *keys, node, BELL_PREFIX, sep, *tags))


def forget(pipe: Any, node: str, tags: Iterable[str]) -> Any:
    """Add to ``pipe`` the removal of the holder records of acknowledged messages."""
    tags = list(tags)
    if tags:
        pipe.hdel(HOLDER, *tags)
        if node:
            pipe.hdel(held_key(node), *tags)
    return pipe


def ring(pipe: Any, queue: str) -> Any:
    """Add to ``pipe`` the ring of a queue's bell (after its push)."""
    bell = bell_key(queue)
    return pipe.xadd(bell, {"m": 1}, maxlen=BELL_LENGTH, approximate=True).expire(bell, BELL_TTL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's acknowledgement emulation, for messages the take script already recorded."""

    channel: Channel

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.recorded_tags.pop(delivery_tag, False):
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        return forget(pipe, self.channel.embedq_node, [delivery_tag])

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        """kombu gives unacknowledged messages back when a channel closes. After a lost broker
        connection, Celery may close the channel once the transport has already dropped its
        connection (``client`` None): kombu then fails building a Redis pool, and the worker
        dies of it ("Unrecoverable error: AttributeError ... 'hostname'"). Those messages stay
        recorded as held by this node, and the node's lease tick gives back any its processes
        no longer know (``restore_orphans``), so here they are left to it."""
        try:
            return super().restore_unacked_once(stderr)
        except AttributeError:
            if getattr(self.channel.connection, "client", None) is not None:
                raise
            log.warning(
                "broker connection already closed: unacknowledged messages stay held by this "
                "node and are given back by its lease tick"
            )
            return None


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel with an atomic take (see the module's docstring)."""

    QoS = QoS

    #: Transport options (``broker_transport_options``), set by kombu on each channel.
    embedq_node = ""
    embedq_atomic_fetch = True
    embedq_lease = 10.0
    embedq_recovery_interval = 2.0
    #: Test-only fault point: after taking a message, sleep this long before handing it on.
    embedq_pause_after_take = 0.0

    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "embedq_node",
        "embedq_atomic_fetch",
        "embedq_lease",
        "embedq_recovery_interval",
        "embedq_pause_after_take",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("embedq's Redis transport does not support global_keyprefix")
        #: Tags the take script recorded, not yet through QoS.append.
        self.recorded_tags: dict[str, bool] = {}
        #: While waiting on the bells: the queues' names (the reply is a bell, not a message).
        self._bell_wait: list[str] | None = None
        self._queues_asked: list[str] = []
        #: Queues whose consumer acknowledges nothing (Celery's control replies, say).
        self._no_ack_queues: set[str] = set()

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _take_args(self, queues: Sequence[str], no_ack: set[str]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the take script over ``queues``, in kombu's order (priority, then
        queue): their lists, the records, then their bells."""
        pairs = dict.fromkeys(
            (self._q_for_pri(q, pri), q) for pri in self.priority_steps for q in queues
        )
        lists = [key for key, _ in pairs]
        flags = "".join("1" if q in no_ack else "0" for _, q in pairs)
        node = self.embedq_node
        keys = [
            *lists,
            self.unacked_key,
            self.unacked_index_key,
            HOLDER,
            held_key(node),
            *(bell_key(q) for q in queues),
        ]
        return keys, [time.time(), node, os.getpid(), len(lists), flags]

    # -- publishing: push, then ring the queue's bell ----------------------------------------

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        publish_batch = kwargs.get("_publish_batch")
        if publish_batch is not None:
            super()._put(queue, message, **kwargs)
            bell = bell_key(queue)
            publish_batch.add("xadd", bell, {"m": 1}, "*", BELL_LENGTH, True)
            publish_batch.add("expire", bell, BELL_TTL)
            return
        # kombu's push and the bell in one round trip, the bell after the push.
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, dumps(message))
            if self._expires and queue in self._expires:
                for pri in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, pri), self._expires[queue])
            ring(pipe, queue).execute()

    # -- consuming: take atomically, wait on the bells ---------------------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self.embedq_atomic_fetch:
            super()._brpop_start(timeout)
            return None
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        keys, args = self._take_args(queues, self._no_ack_queues)
        self._queues_asked = list(queues)
        self._bell_wait = None
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command("EVAL", _TAKE, len(keys), *keys, *args)
        return None

    def taking(self) -> bool:
        """Whether a take's reply is on its way (its message is held but not yet known here)."""
        return (bool(self._in_poll) and self._bell_wait is None) or bool(
            self.connection.cycle._paused_brpop
        )

    def _on_connection_disconnect(self, connection: Any) -> None:
        # A wait's reply will not come; the next reply read is a take's.
        if self._in_poll is connection:
            self._bell_wait = None
        super()._on_connection_disconnect(connection)

    def _wait_for_bells(self, queues: list[str], ids: list[Any]) -> None:
        timeout = self.brpop_timeout or 1
        bells = [bell_key(q) for q in queues]
        self._bell_wait = queues
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(
            "XREAD", "BLOCK", int(timeout * 1000), "STREAMS", *bells, *ids
        )

    def _brpop_read(self, **options: Any) -> bool:
        if not self.embedq_atomic_fetch:
            return bool(super()._brpop_read(**options))
        waiting, self._bell_wait = self._bell_wait, None
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EMBEDQ_TAKE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if waiting is not None:
                raise virtual.Empty()  # a bell rang, or the wait ended: take again
            where, item, tag = [*reply, None][:3]
            if not where:  # Lua's false: nil in RESP2, a boolean in RESP3
                self._wait_for_bells(self._queues_asked, list(item))
                raise virtual.Empty()
            queue = bytes_to_str(where).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            payload = self._parse(item, tag, queue)
            if payload is None:
                raise virtual.Empty()
            if tag:
                self.recorded_tags[bytes_to_str(tag)] = True
            if self.embedq_pause_after_take:
                log.warning("fault point: paused after taking %s", bytes_to_str(tag or b""))
                time.sleep(self.embedq_pause_after_take)
            self.connection._deliver(payload, queue)
            return True
        finally:
            if self._bell_wait is None:
                self._in_poll = None
                self._flush_brpop_reauth()

    def _parse(self, item: bytes, tag: Any, queue: str) -> Any:
        """The taken item as kombu's message, or None when it is not one: then it is kept as a
        dead letter and its records go (a consumer would fail on it; it must not block the
        queue, nor come back)."""
        try:
            payload = loads(bytes_to_str(item))
            if tag or queue in self._no_ack_queues:
                return payload
            reason = "it has no delivery tag"
        except Exception as exc:
            reason = f"it is not JSON kombu can read ({exc})"
        log.error("dead letter (undecodable) on %s: %s", queue, reason)
        with self.conn_or_acquire() as client:
            DeadLetters(client).add(
                "undecodable",
                f"queue item is not a kombu message: {reason}",
                raw=item,
                queue=queue,
                size=len(item),
            )
            if tag:
                self.qos._remove_from_indices(bytes_to_str(tag), client.pipeline()).execute()
        return None

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        # The same atomic take, without waiting.
        if not self.embedq_atomic_fetch:
            return super().basic_get(queue, no_ack, **kwargs)
        keys, args = self._take_args([queue], {queue} if no_ack else set())
        with self.conn_or_acquire() as client:
            where, item, tag = [*client.eval(_TAKE, len(keys), *keys, *args), None][:3]
        if not where:
            return None
        payload = self._parse(item, tag, queue)
        if payload is None:
            return None
        message = self.Message(payload, channel=self)
        if not no_ack:
            if tag:
                self.recorded_tags[message.delivery_tag] = True
            self.qos.append(message, message.delivery_tag)
        return message


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with embedq's channel and, in a worker node's main process,
    its lease and the recovery of dead nodes' messages."""

    Channel = Channel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        options = connection.client.transport_options
        node = str(options.get("embedq_node") or "")
        old = getattr(self.cycle, "_embedq_lease_tref", None)
        if old is not None:
            old.cancel()
        if not node:
            return
        lease = float(options.get("embedq_lease", Channel.embedq_lease))
        interval = float(options.get("embedq_recovery_interval", Channel.embedq_recovery_interval))
        tick = self._lease_tick(node, lease)
        tick()  # at once: a node starting up returns what dead nodes held before it consumes
        self.cycle._embedq_lease_tref = loop.call_repeatedly(interval, tick)

    def _lease_tick(self, node: str, lease: float) -> Callable[[], None]:
        cycle = self.cycle
        main_pid = os.getpid()

        def known() -> set[str]:
            tags: set[str] = set()
            for channel in cycle._channels:
                tags.update(channel.qos._delivered)
                tags.update(channel.recorded_tags)
            return tags

        def tick() -> None:
            channel = next(iter(cycle._channels), None)
            if channel is None:
                return
            try:
                with channel.conn_or_acquire() as client:
                    renew_lease(client, node, lease)
                    restored = restore_dead_nodes(
                        client, node, channel.unacked_key, channel.unacked_index_key
                    )
                    restored += restore_orphans(
                        client,
                        node,
                        main_pid,
                        _pid_alive,
                        None if any(c.taking() for c in cycle._channels) else known,
                        channel.unacked_key,
                        channel.unacked_index_key,
                    )
            except channel.connection_errors:
                log.debug("lease: Redis did not answer; trying again", exc_info=True)
                return
            except channel.ResponseError as exc:
                # A full Redis (noeviction) refuses the renewal; batches still run.
                log.warning("lease: Redis refused the renewal (%s); trying again", exc)
                return
            for found in restored:
                if found.count:
                    log.warning(
                        "recovered %d message(s) held by %s, which is gone",
                        found.count,
                        found.holder,
                    )
                messages_restored.send(sender=node, holder=found.holder, count=found.count)

        return tick
