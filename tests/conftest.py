"""Fixtures: settings, a tiny model, and real servers (Redis, Milvus Lite, Celery workers)
started on free loopback ports and always stopped."""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from embedq.config.celeryconfig import make_celery
from embedq.config.contract import TASK_EMBED, embed_queue, search_queue
from embedq.config.settings import Settings, load_settings
from embedq.producer import Job
from embedq.stack.services import (
    MILVUS_LITE_STOP_SIGNAL,
    Service,
    free_port,
    milvus_lite_command,
    redis_command,
    wait_for_port,
    worker_command,
)
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


class Servers:
    """Addresses of the running test servers and the environment that points at them."""

    def __init__(self, redis_url: str, milvus_uri: str, logs: Path) -> None:
        self.redis_url = redis_url
        self.milvus_uri = milvus_uri
        self.logs = logs

    def env(self, **extra: str) -> dict[str, str]:
        return process_env(self.redis_url, self.milvus_uri, extra)

    def settings(self, **overrides: object) -> Settings:
        base: dict[str, object] = {
            "redis": {"url": self.redis_url},
            "milvus": {"uri": self.milvus_uri},
        }
        base.update(overrides)
        return load_settings(**base)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("redis")
    port = free_port()
    service = Service("redis", redis_command(port, data), data / "redis.log")
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        service.wait_ready(lambda: bool(client.ping()), timeout=20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        service.stop(timeout=10)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("milvus")
    port = free_port()
    service = Service(
        "milvus-lite",
        milvus_lite_command(port, data / "data"),
        data / "milvus.log",
        stop_signal=MILVUS_LITE_STOP_SIGNAL,
    )
    try:
        service.wait_ready(lambda: wait_for_port("127.0.0.1", port), timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop(timeout=20)


@pytest.fixture(scope="session")
def servers(
    redis_server: str, milvus_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Servers:
    return Servers(redis_server, milvus_server, tmp_path_factory.mktemp("logs"))


WorkerFactory = Callable[..., Service]


@pytest.fixture(scope="session")
def start_worker(servers: Servers) -> Iterator[WorkerFactory]:
    """Start real ``celery worker`` processes; each is stopped at the end of the session."""
    started: list[Service] = []

    def start(concurrency: int = 2, node: str | None = None, **env: str) -> Service:
        name = node or unique("w")
        model = env.get("EMBEDQ_MODEL__NAME", servers.settings().model.name)
        queues = [embed_queue(model), search_queue(model)]
        log = servers.logs / f"{name}.log"
        service = Service(
            name,
            worker_command(queues, concurrency, node=f"{name}@%h"),
            log,
            env=servers.env(**env),
            cwd=ROOT,
        )
        started.append(service)
        control = make_celery(
            servers.settings(redis={"url": env.get("EMBEDQ_REDIS__URL", servers.redis_url)})
        )
        destination = [f"{name}@{socket.gethostname()}"]
        service.wait_ready(
            lambda: bool(control.control.ping(destination, timeout=0.5)), timeout=120
        )
        control.close()
        return service

    yield start
    for service in started:
        service.stop(timeout=30)


@pytest.fixture(scope="session")
def worker(start_worker: WorkerFactory) -> Service:
    """One shared worker node with two processes."""
    return start_worker(concurrency=2, node="shared")


@pytest.fixture
def settings(servers: Servers) -> Settings:
    return servers.settings()


def python() -> str:
    return sys.executable
