"""Which waiting messages a small batch takes with it, and which it leaves for the consumer;
against a real Redis, with messages published by Celery itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from embedq.config.celeryconfig import make_celery
from embedq.config.contract import TASK_EMBED, TASK_SEARCH
from embedq.config.settings import Settings
from embedq.worker.speedups.coalescer import Coalescer
from tests.support.environment import unique
from tests.support.servers import Servers

pytestmark = pytest.mark.integration


@pytest.fixture
def queue() -> str:
    return unique("coalesce-q")


@pytest.fixture
def client(servers: Servers) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(servers.redis_url)
    yield found
    found.close()


@pytest.fixture
def app(settings: Settings) -> Iterator[Any]:
    made = make_celery(settings)
    yield made
    made.close()


def batch(texts: list[str], model: str = "m", **fields: Any) -> dict[str, Any]:
    return {"job_id": "j", "batch": 0, "collection": "c", "model": model, "texts": texts} | fields


def send(app: Any, queue: str, kwargs: dict[str, Any], **options: Any) -> None:
    name = options.pop("name", TASK_EMBED)
    app.send_task(name, kwargs=kwargs, queue=queue, **options)


def coalescer(app: Any, max_bytes: int = 1 << 20) -> Coalescer:
    return Coalescer(app, max_message_bytes=max_bytes)


def test_small_batches_are_taken_up_to_the_room_left_and_held_unacknowledged(
    app: Any, client: redis.Redis, queue: str
) -> None:
    for i in range(5):
        send(app, queue, {"batch": batch([f"t{i}", f"u{i}"])})
    taker = coalescer(app)
    taken = taker.take(queue, "m", room=5)
    # 2 + 2 texts fit; the third batch does not: it is back at the head, untouched
    assert [t.batch.texts for t in taken] == [["t0", "u0"], ["t1", "u1"]]
    assert client.llen(queue) == 3
    assert json.loads(client.lindex(queue, -1) or b"")["headers"]["task"] == TASK_EMBED
    # the taken ones are in the broker's unacknowledged set, where a crash leaves them
    assert client.hlen("unacked") >= 2
    held = {t.tag.encode() for t in taken}
    assert held <= set(client.hkeys("unacked"))
    taken[0].ack()
    taken[1].give_back()
    assert taken[0].tag.encode() not in client.hkeys("unacked")
    assert taken[1].tag.encode() not in client.hkeys("unacked")
    assert client.llen(queue) == 4  # the given-back one is waiting again
    again = taker.take(queue, "m", room=2)
    assert [t.batch.texts for t in again] == [["t1", "u1"]]
    again[0].ack()
    taker.close()


@pytest.mark.parametrize(
    ("kwargs", "options"),
    [
        ({"batch": batch(["a"])}, {"countdown": 60}),  # a retry, not yet due
        ({"query": {"q": 1}}, {"name": TASK_SEARCH}),
        ({"batch": batch(["a"], model="other")}, {}),
        ({"batch": batch(["a"]), "extra": 1}, {}),
        ({"batch": {"texts": "not a list"}}, {}),
        ({"batch": batch(["x" * 4000])}, {}),  # over the size limit below
        ({"batch": batch(["a"])}, {"serializer": "pickle"}),
    ],
    ids=["eta", "other-task", "other-model", "extra-kwargs", "schema", "oversized", "pickle"],
)
def test_anything_but_a_plain_small_batch_is_left_for_the_consumer(
    app: Any, client: redis.Redis, queue: str, kwargs: dict[str, Any], options: dict[str, Any]
) -> None:
    send(app, queue, kwargs, **options)
    send(app, queue, {"batch": batch(["behind"])})
    first = client.lindex(queue, -1)
    assert coalescer(app, max_bytes=2048).take(queue, "m", room=100) == []
    # it is back at the head of the queue, as it was, and the one behind it waits its turn
    assert client.lindex(queue, -1) == first
    assert client.llen(queue) == 2
    assert first is not None
    tag = json.loads(first)["properties"]["delivery_tag"]
    assert tag.encode() not in client.hkeys("unacked")


def test_an_unreadable_message_stays_where_it_was(
    app: Any, client: redis.Redis, queue: str
) -> None:
    client.rpush(queue, b"{not json")
    assert coalescer(app).take(queue, "m", room=10) == []
    assert client.lrange(queue, 0, -1) == [b"{not json"]


def test_an_empty_queue_gives_nothing(app: Any, queue: str) -> None:
    assert coalescer(app).take(queue, "m", room=10) == []


def test_the_producers_text_counts_size_what_one_step_takes(
    app: Any, client: redis.Redis, queue: str
) -> None:
    for i, n in enumerate([1, 3, 1, 1]):
        send(app, queue, {"batch": batch([f"t{i}"] * n)}, headers={"embedq_texts": n})
    taker = coalescer(app)
    taken = taker.take(queue, "m", room=3)
    # the 3-text batch does not fit after the first: taking stops before it, in the queue
    assert [len(t.batch.texts) for t in taken] == [1]
    assert client.llen(queue) == 3
    taker.ack(*taken)
    again = taker.take(queue, "m", room=10)
    assert [t.batch.texts[0] for t in again] == ["t1", "t2", "t3"]
    taker.ack(*again)
    assert not {t.tag.encode() for t in [*taken, *again]} & set(client.hkeys("unacked"))
    taker.close()


def test_batches_given_back_keep_their_order_in_the_queue(
    app: Any, client: redis.Redis, queue: str
) -> None:
    # Without the header each message counts as one text until read: the step takes more
    # than fits, and what does not fit goes back in order.
    for i in range(4):
        send(app, queue, {"batch": batch([f"t{i}", f"u{i}"])})
    taker = coalescer(app)
    taken = taker.take(queue, "m", room=3)
    assert [t.batch.texts[0] for t in taken] == ["t0"]
    assert client.llen(queue) == 3
    again = taker.take(queue, "m", room=100)
    assert [t.batch.texts[0] for t in again] == ["t1", "t2", "t3"]
    taker.ack(*taken, *again)
    taker.close()


def test_a_full_batch_is_left_to_run_as_its_own_task(
    app: Any, client: redis.Redis, queue: str
) -> None:
    for i, n in enumerate([1, 2, 4, 1]):
        send(app, queue, {"batch": batch([f"t{i}"] * n)}, headers={"embedq_texts": n})
    taker = coalescer(app)
    # batches of 4 texts are full here: taking stops before the first, which stays queued
    taken = taker.take(queue, "m", room=100, full=4)
    assert [len(t.batch.texts) for t in taken] == [1, 2]
    assert client.llen(queue) == 2
    taker.ack(*taken)
    taker.close()
