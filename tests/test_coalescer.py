"""Which waiting messages a small batch takes with it, and which it leaves for the consumer."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from config.contract import TASK_EMBED
from worker.coalescer import Coalescer


class Message:
    """A broker message as kombu's Redis channel returns it from ``basic_get``."""

    def __init__(self, body: bytes, headers: dict[str, Any], content_type: str) -> None:
        self.body, self.headers, self.content_type = body, headers, content_type
        self.state = "taken"

    def ack(self) -> None:
        self.state = "acked"

    def reject(self, requeue: bool = False) -> None:
        self.state = "given back" if requeue else "dropped"


class Channel:
    def __init__(self, messages: list[Message]) -> None:
        self.waiting = list(messages)

    def basic_get(self, queue: str, no_ack: bool = False) -> Message | None:
        assert not no_ack  # taken messages stay unacknowledged until their rows are stored
        return self.waiting.pop(0) if self.waiting else None


def batch(texts: list[str], model: str = "m", **fields: Any) -> dict[str, Any]:
    return {"job_id": "j", "batch": 0, "collection": "c", "model": model, "texts": texts} | fields


def celery_message(
    kwargs: dict[str, Any], task: str = TASK_EMBED, args: list[Any] | None = None, **headers: Any
) -> Message:
    body = json.dumps([args or [], kwargs, {}]).encode()
    return Message(body, {"task": task, "id": "t", **headers}, "application/json")


def coalescer(channel: Channel, max_bytes: int = 1 << 20) -> Coalescer:
    made = Coalescer(app=None, max_message_bytes=max_bytes)
    made._connection = type("Connection", (), {"default_channel": channel})()
    return made


def test_small_batches_are_taken_up_to_the_room_left() -> None:
    waiting = [celery_message({"batch": batch([f"t{i}"] * 2)}) for i in range(5)]
    taken = coalescer(Channel(waiting)).take("q", "m", room=5)
    # 2 + 2 texts fit; the third batch (2 more) does not and goes back, untouched
    assert [len(t.batch.texts) for t in taken] == [2, 2]
    assert [m.state for m in waiting] == ["taken", "taken", "given back", "taken", "taken"]


@pytest.mark.parametrize(
    "message",
    [
        celery_message({"batch": batch(["a"])}, eta="2030-01-01T00:00:00"),  # a retry, not due
        celery_message({"batch": batch(["a"])}, task="embedq.search"),
        celery_message({"batch": batch(["a"], model="other")}),
        celery_message({"batch": batch(["a"]), "extra": 1}),
        celery_message({"batch": batch(["a"])}, args=[1]),
        celery_message({"batch": {"texts": "not a list"}}),
        celery_message({"batch": batch(["x" * 2000])}),  # over the size limit below
        Message(b"{not json", {"task": TASK_EMBED}, "application/json"),
        Message(pickle.dumps(([], {"batch": batch(["a"])}, {})), {"task": TASK_EMBED},
                "application/x-python-serialize"),
    ],
    ids=["eta", "other-task", "other-model", "extra-kwargs", "args", "schema", "oversized",
         "malformed", "pickle"],
)  # fmt: skip
def test_anything_but_a_plain_small_batch_is_given_back_for_the_consumer(message: Message) -> None:
    behind = celery_message({"batch": batch(["b"])})
    channel = Channel([message, behind])
    taken = coalescer(channel, max_bytes=1024).take("q", "m", room=100)
    assert taken == []
    assert message.state == "given back"
    assert channel.waiting == [behind]  # and it stops there: the rest waits its turn


def test_an_empty_queue_gives_nothing() -> None:
    assert coalescer(Channel([])).take("q", "m", room=10) == []
