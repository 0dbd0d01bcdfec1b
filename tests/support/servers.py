"""The servers the tests share, and talking to them as another client would."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from embedq.config.celeryconfig import make_celery
from embedq.config.contract import TASK_EMBED, embed_queue
from embedq.config.settings import Settings
from embedq.producer import Job
from embedq.stack.local import LocalStack
from embedq.stack.services import Service
from embedq.state.jobs import JobTracker
from tests.support.environment import process_env

#: Starts a worker node on the shared servers: ``start(concurrency, node, **env)``.
WorkerFactory = Callable[..., Service]


def milvus_client(uri: str, token: str = "") -> Any:
    """A client of a test's Milvus, connecting with retries: a busy Milvus Lite server
    sometimes turns a fresh connection away ("too many pings")."""
    from pymilvus import MilvusClient

    deadline = time.monotonic() + 60
    while True:
        try:
            return MilvusClient(uri=uri, token=token, timeout=60)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def queue_raw_batch(settings: Settings, body: dict[str, Any], copies: int = 1) -> Job:
    """Put a batch straight on the queue as another client would (no producer checks), under a
    fresh job of one batch; ``body`` gets the job id, batch 0 and the model filled in."""
    client = redis.Redis.from_url(settings.redis.url)
    tracker = JobTracker(client, 3600)
    job = Job(uuid.uuid4().hex, tracker)
    tracker.create(job.id, str(body.get("collection", "")), settings.model.name)
    tracker.seal(job.id, 1, len(body.get("texts", [])))
    message = {"job_id": job.id, "batch": 0, "model": settings.model.name} | body
    app = make_celery(settings)
    for _ in range(copies):
        app.send_task(TASK_EMBED, kwargs={"batch": message}, queue=embed_queue(settings.model.name))
    app.close()
    return job


class Servers(LocalStack):
    """The session's Redis and Milvus Lite server, shared by the tests that need no faults,
    and worker nodes started on them."""

    def env(self, **extra: str) -> dict[str, str]:
        return process_env(self.redis_url, self.milvus_uri, extra)
