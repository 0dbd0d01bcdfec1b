"""Dynamic batching: a small batch picks up the small batches waiting behind it in its queue.

A stream of one-text jobs would otherwise cost one encode call, one upsert and (on Milvus Lite)
one flush per text. The task Celery handed over takes more messages straight from its queue,
through its own broker channel, up to a number of texts, and they are embedded together.

Each message taken this way stays in the broker's unacknowledged set until its rows are stored
and its progress recorded, then it is acknowledged; on any failure it is given back to the
queue at once. A process killed meanwhile leaves them unacknowledged: Redis redelivers them
after the visibility timeout, like the messages of a lost host. Anything that is not a plain
small embed batch (a retry waiting for its time, an oversized, pickled or malformed message) is
given back untouched, for the guarded consumer to deal with as usual.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from celery import Celery
from pydantic import ValidationError

from config.contract import TASK_EMBED, BatchMessage

__all__ = ["Coalescer", "Taken"]

log = logging.getLogger(__name__)


@dataclass
class Taken:
    """A message taken from the queue and its batch, to be acknowledged or given back."""

    message: Any
    batch: BatchMessage

    def ack(self) -> None:
        self.message.ack()

    def give_back(self) -> None:
        self.message.reject(requeue=True)


class Coalescer:
    """Takes waiting small batches from a queue; one per worker process, opened on first use."""

    def __init__(self, app: Celery, max_message_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_message_bytes
        self._connection: Any = None

    def _channel(self) -> Any:
        if self._connection is None:
            self._connection = self._app.connection_for_read()
        return self._connection.default_channel

    def take(self, queue: str, model: str, room: int) -> list[Taken]:
        """Up to ``room`` texts' worth of batches for ``model`` waiting in ``queue``."""
        taken: list[Taken] = []
        channel = self._channel()
        while room > 0:
            message = channel.basic_get(queue, no_ack=False)
            if message is None:
                break
            batch = self._small_batch(message, model)
            if batch is None or len(batch.texts) > room:
                # Not ours to run here: back to the queue, and stop (it would come round again).
                message.reject(requeue=True)
                break
            taken.append(Taken(message, batch))
            room -= len(batch.texts)
        return taken

    def _small_batch(self, message: Any, model: str) -> BatchMessage | None:
        headers = message.headers or {}
        # Checked before anything is decoded; the body is never unpickled: JSON or nothing.
        if (
            headers.get("task") != TASK_EMBED
            or headers.get("eta")
            or message.content_type != "application/json"
            or len(message.body) > self._max_bytes
        ):
            return None
        try:
            args, kwargs, _ = json.loads(message.body)
            batch = BatchMessage.model_validate(kwargs["batch"])
        except (ValueError, TypeError, KeyError, ValidationError):
            return None
        if args or set(kwargs) != {"batch"} or batch.model != model:
            return None
        return batch

    def close(self) -> None:
        if self._connection is not None:
            # Closing the channel gives back anything still unacknowledged.
            self._connection.release()
            self._connection = None
