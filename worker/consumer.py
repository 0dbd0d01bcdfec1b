"""The worker's message consumer, guarded: whatever arrives on the queue, the worker keeps
running and the message ends as a dead letter that says what was wrong.

Celery's own consumer logs and drops undecodable, unknown or malformed messages; this one
records each as a dead letter first, and also refuses bodies over the size limit before they
are decoded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from embedq.state.deadletters import MAX_BODY_BYTES, Kind
from embedq.worker.context import WorkerContext

__all__ = ["guarded_consumer"]

log = logging.getLogger("embedq.worker")


def guarded_consumer(ctx: WorkerContext) -> type[Consumer]:
    """A Celery consumer class that dead-letters every message it cannot run."""
    limit = ctx.settings.worker.max_message_bytes

    def dead_letter(kind: Kind, reason: str, message: Any) -> None:
        raw = _raw_body(message)
        # An oversized body is never decoded (that is what the limit protects), nor is a body
        # too large to keep whole: both are kept as their first bytes only.
        fits = kind != "oversized" and len(raw) <= MAX_BODY_BYTES
        body = _json_body(message, raw) if fits else None
        headers = getattr(message, "headers", None) or {}
        headers = headers if isinstance(headers, dict) else {}
        info = getattr(message, "delivery_info", None) or {}
        job_id = body.get("job_id") if isinstance(body, dict) else headers.get("embedq_job")
        batch = body.get("batch") if isinstance(body, dict) else headers.get("embedq_batch")
        job_id = job_id if isinstance(job_id, str) else ""
        batch = batch if isinstance(batch, int) and not isinstance(batch, bool) else None
        log.error("dead letter (%s) task=%r: %s", kind, headers.get("task", ""), reason)
        try:
            ctx.keep_dead_letter(
                kind,
                reason,
                body=body,
                raw=None if body is not None else raw,
                task=str(headers.get("task", "")),
                message_id=str(headers.get("id", "")),
                queue=str(info.get("routing_key", "")),
                job_id=job_id,
                batch=batch,
                size=len(raw),
            )
        except Exception:
            log.exception("could not record a dead letter (%s): %s", kind, reason)

    class GuardedConsumer(Consumer):  # type: ignore[misc]
        def create_task_handler(self, promise: Any = None) -> Callable[[Any], Any]:
            handle = super().create_task_handler(*(() if promise is None else (promise,)))

            def on_task_received(message: Any) -> Any:
                size = len(_raw_body(message))
                if size > limit:
                    dead_letter(
                        "oversized",
                        f"message body of {size} bytes is over EMBEDQ_WORKER__MAX_MESSAGE_BYTES "
                        f"({limit}); split it into smaller batches",
                        message,
                    )
                    message.reject(requeue=False)
                    return None
                try:
                    return handle(message)
                except self.connection_errors:
                    raise  # the broker went away: not the message's fault
                except Exception as exc:
                    # A body that passes Celery's checks but not its unpacking (a JSON
                    # object where a list belongs, say) would otherwise loop or stop us.
                    dead_letter("invalid-message", f"not a valid task message: {exc}", message)
                    message.reject(requeue=False)
                    return None

            return on_task_received

        def on_decode_error(self, message: Any, exc: Exception) -> None:
            dead_letter("undecodable", f"body could not be decoded: {exc}", message)
            super().on_decode_error(message, exc)

        def on_unknown_message(self, body: Any, message: Any) -> None:
            dead_letter("invalid-message", "not a Celery task message (no task header)", message)
            super().on_unknown_message(body, message)

        def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
            dead_letter("unknown-task", f"no task of that name here: {exc}", message)
            super().on_unknown_task(body, message, exc)

        def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
            if isinstance(exc, ContentDisallowed):
                kind: Kind = "undecodable"
                reason = (
                    f"content type {getattr(message, 'content_type', '?')!r} refused: only JSON "
                    "is accepted (the body was not decoded)"
                )
            else:
                kind, reason = "invalid-message", f"invalid task message: {exc}"
            dead_letter(kind, reason, message)
            super().on_invalid_task(body, message, exc)

    return GuardedConsumer


def _raw_body(message: Any) -> bytes:
    body = getattr(message, "body", b"")
    if isinstance(body, str):
        return body.encode("utf-8", errors="replace")
    return body if isinstance(body, bytes) else b""


def _json_body(message: Any, raw: bytes) -> Any:
    """The body as JSON when it was declared and parses as JSON; never any other decoder."""
    if getattr(message, "content_type", "") != "application/json":
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    # Celery protocol 2: [args, kwargs, embed]; keep the batch itself when it is there.
    if isinstance(body, list) and len(body) == 3 and isinstance(body[1], dict):
        kwargs = body[1]
        return kwargs.get("batch", kwargs)
    return body
