"""Fixtures: settings, a tiny model, and real servers (Redis, Milvus Lite, Celery workers)
started on free loopback ports and always stopped."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from embedq.config.celeryconfig import make_celery
from embedq.config.contract import TASK_EMBED, embed_queue
from embedq.config.settings import Settings
from embedq.producer import Job
from embedq.stack.local import LocalStack
from embedq.stack.services import Service
from embedq.state.jobs import JobTracker

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "docs" / "corpus"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No EMBEDQ_* variable or .env file of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith("EMBEDQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A plain `pytest -n 2` must still never run two real Milvus servers at once.
    for item in items:
        if item.get_closest_marker("real_milvus"):
            item.add_marker(pytest.mark.xdist_group("real-milvus"))


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


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def process_env(redis_url: str, milvus_uri: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child process (worker, CLI) pointed at the test servers: the
    developer's EMBEDQ_* variables removed, the hub off limits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
    env.update(
        EMBEDQ_REDIS__URL=redis_url,
        EMBEDQ_MILVUS__URI=milvus_uri,
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        # Off unless a test asks: nodes of one host would compete for the default port.
        EMBEDQ_METRICS__PORT="0",
    )
    env.update(extra)
    return env


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


# -- servers ---------------------------------------------------------------------------------


class Servers(LocalStack):
    """The session's Redis and Milvus Lite server, shared by the tests that need no faults,
    and worker nodes started on them."""

    def env(self, **extra: str) -> dict[str, str]:
        return process_env(self.redis_url, self.milvus_uri, extra)


@pytest.fixture(scope="session")
def local_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    stack = Servers(tmp_path_factory.mktemp("servers"), cwd=ROOT)
    try:
        yield stack
    finally:
        stack.stop(worker_grace=30)


@pytest.fixture(scope="session")
def redis_server(local_servers: Servers) -> str:
    local_servers.start_redis()
    return local_servers.redis_url


@pytest.fixture(scope="session")
def milvus_server(local_servers: Servers) -> str:
    local_servers.start_milvus()
    return local_servers.milvus_uri


@pytest.fixture(scope="session")
def servers(redis_server: str, milvus_server: str, local_servers: Servers) -> Servers:
    return local_servers


WorkerFactory = Callable[..., Service]


@pytest.fixture(scope="session")
def start_worker(servers: Servers) -> WorkerFactory:
    """Start real ``celery worker`` processes (``env``: their settings); each is stopped at
    the end of the session."""

    def start(concurrency: int = 2, node: str | None = None, **env: str) -> Service:
        return servers.start_worker(node or unique("w"), concurrency, env=env)

    return start


@pytest.fixture(scope="session")
def worker(start_worker: WorkerFactory) -> Service:
    """One shared worker node with two processes."""
    return start_worker(concurrency=2, node="shared")


@pytest.fixture
def settings(servers: Servers) -> Settings:
    return servers.settings()


def python() -> str:
    return sys.executable
