"""Fixtures: a clean environment, settings, and the shared real servers (Redis, Milvus Lite,
Celery workers) started on free loopback ports and always stopped. Helpers live in
:mod:`tests.support`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedq.config.settings import Settings
from embedq.stack.services import Service
from tests.support.environment import ROOT, unique
from tests.support.servers import Servers, WorkerFactory

INTEGRATION = Path(__file__).parent / "integration"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No EMBEDQ_* variable or .env file of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith("EMBEDQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The slow tests first (a stable sort), so that no xdist worker starts one at the end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    for item in items:
        # The folder says what a test needs: `-m integration` and `-m "not integration"`
        # select the same tests as tests/integration and tests/unit.
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)
        # A plain `pytest -n 2` must still never run two real Milvus servers at once.
        if item.get_closest_marker("real_milvus"):
            item.add_marker(pytest.mark.xdist_group("real-milvus"))


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    stack = Servers(tmp_path_factory.mktemp("servers"), cwd=ROOT)
    try:
        yield stack
    finally:
        # Killed, not stopped: the data goes with the session, and a graceful stop of Milvus
        # Lite after a heavy session can take half a minute.
        stack.stop(kill=True)


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
