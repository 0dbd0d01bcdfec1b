"""embedq's Redis transport against a real Redis: a message is recorded as held in the same
step that takes it, acknowledging forgets it, idle consumers wake on the queue's bell, and the
messages of a node whose lease ran out (or of a dead pool process) come back once, in order."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from embedq.config.keys import HOLDER, NODES, held_key
from embedq.state.broker import renew_lease, restore_dead_nodes, restore_orphans
from embedq.state.deadletters import DeadLetters
from tests.support.broker import Connection, Consumer, Producer, Queue, connect, publish, take
from tests.support.environment import ROOT, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def url(redis_server: str) -> str:
    """A database of its own, emptied: leases and holders are global to a database."""
    found = redis_server.rsplit("/", 1)[0] + "/3"
    client = redis.Redis.from_url(found)
    client.flushdb()
    client.close()
    return found


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(url, decode_responses=True)
    yield made
    made.close()


def waiting(client: redis.Redis, queue: str) -> list[Any]:
    """The bodies waiting in a queue, next to be taken first."""
    items = client.lrange(queue, 0, -1)
    return [json.loads(_body(json.loads(item))) for item in reversed(items)]


def _body(envelope: dict[str, Any]) -> bytes:
    return base64.b64decode(envelope["body"])


def test_a_taken_message_is_held_by_its_node_until_acknowledged(
    url: str, client: redis.Redis
) -> None:
    queue = unique("q")
    publish(url, queue, [{"n": 1}, {"n": 2}])
    with connect(url, node="alpha") as connection:
        # When a consumer takes both messages
        taken = take(connection, queue, 2)
        tags = [m.delivery_tag for m in taken]
        # Then each is unacknowledged and held by the node, nothing is left in the queue
        assert [m.payload for m in taken] == [{"n": 1}, {"n": 2}]
        assert client.llen(queue) == 0
        assert sorted(k for k in client.hkeys("unacked")) == sorted(tags)
        assert {k: v for k, v in client.hgetall(HOLDER).items()} == {tag: "alpha" for tag in tags}
        assert client.hlen(held_key("alpha")) == 2
        # And acknowledging one forgets it everywhere
        taken[0].ack()
        assert client.hexists("unacked", tags[0]) is False
        assert client.hexists(HOLDER, tags[0]) is False
        assert client.hexists(held_key("alpha"), tags[0]) is False
        assert client.zscore("unacked_index", tags[0]) is None
        assert client.hexists(HOLDER, tags[1])


def test_messages_of_a_node_whose_lease_ran_out_come_back_once_in_order(
    url: str, client: redis.Redis
) -> None:
    queue = unique("q")
    publish(url, queue, [{"n": i} for i in range(5)])
    dead = connect(url, node="dead")
    live = connect(url, node="live")
    try:
        # Given a node holding three messages whose lease ran out, and a live node holding two
        renew_lease(client, "dead", 0.05)
        renew_lease(client, "live", 60)
        assert [m.payload["n"] for m in take(dead, queue, 3)] == [0, 1, 2]
        assert [m.payload["n"] for m in take(live, queue, 2)] == [3, 4]
        time.sleep(0.1)
        # When two nodes look for dead nodes' messages at the same time
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(restore_dead_nodes(client, "x")))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Then the dead node's three are back at the head of the queue, once each, in order
        restored = [r for found in results for r in found]
        assert [(r.holder, r.count) for r in restored] == [("dead", 3)]
        assert waiting(client, queue) == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert client.hlen("unacked") == 2
        assert client.exists(held_key("dead")) == 0
        # (the dead node stays listed for a while: a take that reached Redis just after this
        # restore would still be found by the next)
        assert client.zscore(NODES, "dead") is not None
        # And the live node's are untouched, however long it holds them
        assert client.hlen(held_key("live")) == 2
        assert restore_dead_nodes(client, "x") == []
    finally:
        dead.release()
        live.release()


def test_a_paused_node_that_wakes_up_acknowledges_without_harm(
    url: str, client: redis.Redis
) -> None:
    queue = unique("q")
    publish(url, queue, [{"n": 1}])
    with connect(url, node="sleepy") as sleepy, connect(url, node="other") as other:
        renew_lease(client, "sleepy", 0.05)
        (first,) = take(sleepy, queue, 1)
        time.sleep(0.1)
        assert [r.count for r in restore_dead_nodes(client, "other")] == [1]
        # The message went back; another node takes it; the first wakes and acknowledges
        renew_lease(client, "sleepy", 60)
        (second,) = take(other, queue, 1)
        assert second.delivery_tag == first.delivery_tag
        first.ack()
        second.ack()
        # Nothing is left held, queued or unacknowledged, and nothing comes back later
        assert client.hlen("unacked") == 0 and client.hlen(HOLDER) == 0
        assert client.llen(queue) == 0
        assert restore_dead_nodes(client, "other") == []


def test_messages_held_by_a_dead_pool_process_come_back(url: str, client: redis.Redis) -> None:
    queue = unique("q")
    publish(url, queue, [{"n": 1}, {"n": 2}])
    # A pool process takes a message and is killed; the node lives on
    code = (
        "import sys; from tests.support.broker import connect, take; "
        "c = connect(sys.argv[1], node='node'); take(c, sys.argv[2], 1); "
        "print('took', flush=True); "
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, url, queue],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert "took" in done.stdout, done.stderr
    with connect(url, node="node") as connection:
        (mine,) = take(connection, queue, 1)  # held by this process, which lives
        renew_lease(client, "node", 60)
        # When the node looks at what its processes hold (only this one is alive)
        restored = restore_orphans(
            client, "node", main_pid=-1, alive=lambda pid: pid == os.getpid()
        )
        # Then the dead process's message is back; this process's is still held
        assert [r.count for r in restored] == [1]
        assert waiting(client, queue) == [{"n": 1}]
        assert {k for k in client.hkeys(HOLDER)} == {mine.delivery_tag}


def test_an_idle_consumer_wakes_on_the_bell_not_after_its_wait(url: str) -> None:
    queue = unique("q")
    # brpop_timeout 30 s: without the bell, a message would wait that long
    with connect(url, node="n", brpop_timeout=30) as connection:
        connection.transport.brpop_timeout = 30
        got: list[Any] = []
        with Consumer(connection.default_channel, [Queue(queue)], callbacks=[]) as consumer:
            consumer.register_callback(lambda body, message: got.append(body))
            threading.Timer(0.5, publish, args=(url, queue, [{"n": 1}])).start()
            connection.drain_events(timeout=10)
        assert got == [{"n": 1}]


def test_a_message_pushed_by_another_client_is_taken_too(url: str) -> None:
    queue = unique("q")
    with connect(url, node="n") as connection:
        got: list[Any] = []
        with Consumer(connection.default_channel, [Queue(queue)], callbacks=[]) as consumer:
            consumer.register_callback(lambda body, message: got.append(body))
            # kombu's own transport: no bell is rung
            with Connection(url) as plain:
                Producer(plain.default_channel).publish(
                    {"n": 1}, routing_key=queue, declare=[Queue(queue)]
                )
            connection.drain_events(timeout=10)
        assert got == [{"n": 1}]


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "kombu"])
def test_priorities_and_order_are_kombus(url: str, atomic: bool) -> None:
    # The atomic take serves messages in the order kombu's BRPOP does
    queue = unique("q")
    publish(url, queue, [{"n": 1}, {"n": 2}])
    publish(url, queue, [{"n": 3}], priority=9)
    publish(url, queue, [{"n": 4}], priority=0)
    with connect(url, node="n", atomic=atomic) as connection:
        order = [m.payload["n"] for m in take(connection, queue, 4, ack=True)]
    assert order == [1, 2, 4, 3]


def test_a_consumer_without_acknowledgements_leaves_no_record(
    url: str, client: redis.Redis
) -> None:
    queue = unique("q")
    publish(url, queue, [{"n": 1}])
    with connect(url, node="n") as connection:
        got: list[Any] = []
        with Consumer(
            connection.default_channel, [Queue(queue)], callbacks=[], no_ack=True
        ) as consumer:
            consumer.register_callback(lambda body, message: got.append(body))
            connection.drain_events(timeout=10)
    assert got == [{"n": 1}]
    assert client.hlen("unacked") == 0 and client.hlen(HOLDER) == 0


@pytest.mark.parametrize(
    "item",
    [b"\xff not json", b'{"body": "x", "properties": {}}', b'{"__type__": "x", "__value__": 1}'],
    ids=["not-json", "no-tag", "kombu-refuses"],
)
def test_a_queue_item_that_is_not_a_message_is_a_dead_letter_and_the_next_is_taken(
    url: str, client: redis.Redis, item: bytes
) -> None:
    queue = unique("q")
    client.lpush(queue, item)
    publish(url, queue, [{"n": 1}])
    with connect(url, node="n") as connection:
        assert [m.payload for m in take(connection, queue, 1, ack=True)] == [{"n": 1}]
    # Kept as a dead letter, not left held or queued to come back
    assert client.llen(queue) == 0 and client.hlen("unacked") == 0
    assert client.hlen(HOLDER) == 0
    (letter,) = DeadLetters(client).list()
    assert letter.kind == "undecodable" and letter.queue == queue
    assert "not a kombu message" in letter.reason


def test_a_take_whose_reply_never_arrived_comes_back_the_others_stay(
    url: str, client: redis.Redis
) -> None:
    queue = unique("q")
    publish(url, queue, [{"n": 1}, {"n": 2}])
    with connect(url, node="node") as connection:
        # Given two messages the main process took, of which it knows only the first (the
        # second's reply was lost with its connection, after the script had run)
        first, second = take(connection, queue, 2)
        renew_lease(client, "node", 60)
        known = {first.delivery_tag}

        def everything_alive(pid: int) -> bool:
            return True

        # When the node looks at what it holds, no take being on its way
        restored = restore_orphans(
            client, "node", main_pid=os.getpid(), alive=everything_alive, known=lambda: known
        )
        # Then the unknown one is back in the queue and the known one still held
        assert [r.count for r in restored] == [1]
        assert waiting(client, queue) == [{"n": 2}]
        assert set(client.hkeys(HOLDER)) == known
        # And without ``known`` (a take on its way) nothing of the main process is touched
        assert restore_orphans(client, "node", os.getpid(), everything_alive) == []
        assert second.delivery_tag not in known


def test_a_take_recorded_after_its_node_was_found_dead_is_restored_next_time(
    url: str, client: redis.Redis
) -> None:
    queue = unique("q")
    publish(url, queue, [{"n": 1}, {"n": 2}])
    with connect(url, node="late") as late:
        renew_lease(client, "late", 0.05)
        take(late, queue, 1)
        time.sleep(0.1)
        assert [r.count for r in restore_dead_nodes(client, "x")] == [1]
        # A take of the dead node's that Redis ran after the restore (by another of its
        # processes: this one's prefetch is spent)
        with connect(url, node="late") as again:
            take(again, queue, 1)
            assert [r.count for r in restore_dead_nodes(client, "x")] == [1]
    assert client.hlen("unacked") == 0 and client.llen(queue) == 2


def test_a_node_back_after_its_own_lease_ran_out_restores_nobody_for_a_lease(
    url: str, client: redis.Redis
) -> None:
    # Given two nodes whose leases both ran out (Redis was away, say), one holding a message
    queue = unique("q")
    publish(url, queue, [{"n": 1}])
    with connect(url, node="other") as other:
        renew_lease(client, "other", 0.05)
        renew_lease(client, "first", 0.05)
        take(other, queue, 1)
        time.sleep(0.1)
        # When the first comes back, it renews and holds off: the other is about to renew too
        renew_lease(client, "first", 0.3)
        assert restore_dead_nodes(client, "first") == []
        renew_lease(client, "other", 60)
        time.sleep(0.4)
        # Then after a lease it restores again, and the other, renewed, kept its message
        assert restore_dead_nodes(client, "first") == []
        assert client.hlen(held_key("other")) == 1


def test_the_queue_lists_in_the_keys_module_are_kombus(url: str) -> None:
    # Metrics read queue depths from these names; kombu's channel is the authority.
    from embedq.config.keys import UNACKED, UNACKED_INDEX, queue_lists

    with connect(url) as connection:
        channel = connection.default_channel
        lists = [channel._q_for_pri("q", step) for step in channel.priority_steps]
        assert queue_lists("q") == lists
        assert (channel.unacked_key, channel.unacked_index_key) == (UNACKED, UNACKED_INDEX)
