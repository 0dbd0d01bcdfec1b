"""Talking to embedq's transport as a worker's consumer and a producer do."""

from __future__ import annotations

import contextlib
import importlib
import time
from typing import Any

# kombu's API is partly annotated: used untyped here.
_kombu: Any = importlib.import_module("kombu")
Connection, Consumer, Producer, Queue = (
    _kombu.Connection,
    _kombu.Consumer,
    _kombu.Producer,
    _kombu.Queue,
)


def connect(url: str, node: str = "", atomic: bool = True, **options: Any) -> Any:
    transport_options = {"embedq_node": node, "embedq_atomic_fetch": atomic, **options}
    return Connection(
        url, transport="embedq.state.broker:Transport", transport_options=transport_options
    )


def publish(url: str, queue: str, bodies: list[Any], priority: int = 0) -> None:
    with connect(url) as connection:
        producer = Producer(connection.default_channel)
        for body in bodies:
            producer.publish(body, routing_key=queue, declare=[Queue(queue)], priority=priority)


def take(connection: Any, queue: str, count: int, ack: bool = False) -> list[Any]:
    """Take ``count`` messages through a consumer, as a worker's consumer does."""
    got: list[Any] = []
    with Consumer(connection.default_channel, [Queue(queue)], callbacks=[]) as consumer:
        consumer.register_callback(lambda body, message: got.append(message))
        consumer.qos(prefetch_count=count)
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=1)
    if ack:
        for message in got:
            message.ack()
    return got
