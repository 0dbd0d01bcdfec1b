"""A whole embedq stack per test, for fault injection: its own Redis, its own vector store
(Milvus Lite server or a real Milvus server) and its own worker nodes, each a real process
that a test may kill, stop and restart."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from embedq.config.settings import Settings
from embedq.stack.local import LocalStack, merge_sections
from embedq.stack.services import Service, wait_for_port
from embedq.state.jobs import JobStatus, JobTracker
from tests.support.environment import ROOT, process_env
from tests.support.servers import milvus_client

#: Short timeouts so that recovery happens within a test: redelivery after 25 s, retries at
#: most 3 s apart and many of them, so that a store outage of a few seconds is ridden out.
FAULT_WORKER = {
    "time_limit": 10,
    "soft_time_limit": 8,
    "retry_backoff_max": 3,
    "max_retries": 60,
    "visibility_timeout": 25,
}
FAULT_SETTINGS = {
    "EMBEDQ_WORKER__TIME_LIMIT": "10",
    "EMBEDQ_WORKER__SOFT_TIME_LIMIT": "8",
    "EMBEDQ_WORKER__RETRY_BACKOFF_MAX": "3",
    "EMBEDQ_WORKER__MAX_RETRIES": "60",
    "EMBEDQ_WORKER__VISIBILITY_TIMEOUT": "25",
    "EMBEDQ_MILVUS__TIMEOUT": "5",
}


#: Tests that start a real Milvus server. Only one can run on a machine at a time (its embedded
#: etcd and internal ports are fixed), and it is heavy: `make test` runs these after the others,
#: one at a time (conftest also keeps them in one xdist group for a plain `pytest`).
REAL_MILVUS = pytest.mark.real_milvus


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


class Stack(LocalStack):
    """A local stack (Redis, a store, worker nodes) for one test, with short fault timeouts;
    its store is embedq's Milvus Lite server or (``store="server"``) a real Milvus server."""

    def __init__(self, root: Path, store: str = "lite", milvus_auth: bool = False) -> None:
        super().__init__(root, logs=root, cwd=ROOT)
        self.store_kind = store
        self.milvus_auth = milvus_auth

    @property
    def store(self) -> Service | None:
        return self.milvus

    # -- settings ---------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        return process_env(self.redis_url, self.milvus_uri, FAULT_SETTINGS | extra)

    def settings(self, **overrides: object) -> Settings:
        faults: dict[str, object] = {"milvus": {"timeout": 5}, "worker": FAULT_WORKER}
        return super().settings(**merge_sections(faults, overrides))

    # -- the vector store -------------------------------------------------------------------

    def start_store(self) -> Service:
        if self.store_kind == "lite":
            return self.start_milvus()
        # A genuine `milvus run standalone` from the PyPI `milvus` package, on the same port at
        # every restart (see tests/support/milvus_server.py).
        script = str(ROOT / "tests" / "support" / "milvus_server.py")
        self.milvus = Service(
            "milvus",
            [sys.executable, script, str(self.root / "milvus-server"), str(self.milvus_port),
             *(["--auth"] if self.milvus_auth else [])],
            self.root / "milvus-server.log",
            group=True,
        )  # fmt: skip
        self.milvus.wait_ready(self._server_answers, 180.0)
        return self.milvus

    def _server_answers(self) -> bool:
        """Ready when a client call succeeds: an open port alone is not a serving Milvus."""
        if not wait_for_port("127.0.0.1", self.milvus_port):
            return False
        from pymilvus import MilvusClient

        token = "root:Milvus" if self.milvus_auth else ""
        client = MilvusClient(uri=self.milvus_uri, timeout=3, token=token)
        try:
            client.list_collections()
        finally:
            client.close()
        return True

    def milvus_client(self) -> Any:
        return milvus_client(self.milvus_uri)

    def count(self, collection: str) -> int:
        client = self.milvus_client()
        try:
            client.load_collection(collection)
            rows = client.query(collection, output_fields=["count(*)"], consistency_level="Strong")
            return int(rows[0]["count(*)"])
        finally:
            client.close()

    # -- progress ---------------------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus | None:
        """The job's progress, or None while Redis is away."""
        client = redis.Redis(port=self.redis_port, socket_timeout=10, socket_connect_timeout=5)
        try:
            return JobTracker(client, 3600).status(job_id)
        except Exception:
            return None
        finally:
            client.close()

    def wait_finished(self, job_ids: list[str], timeout: float = 240) -> list[JobStatus]:
        def finished() -> bool:
            states = [self.status(j) for j in job_ids]
            return all(s is not None and s.finished for s in states)

        wait_until(finished, timeout, f"jobs {job_ids} to finish")
        return [s for s in (self.status(j) for j in job_ids) if s is not None]

    def close(self) -> None:
        # Workers and the store are killed: warm shutdown and Milvus Lite's graceful stop are
        # tested where they matter; here they would only wait on data nobody reads again.
        self.stop(kill=True)


def running(stack: Stack) -> Iterator[Stack]:
    """Start the stack's Redis and store for a fixture; stop everything afterwards."""
    stack.start_redis()
    stack.start_store()
    try:
        yield stack
    finally:
        stack.close()


def kill_node(node: Service, sig: int = signal.SIGKILL) -> None:
    """Signal a worker node as a whole (its main process and its pool: one process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, sig)
    if sig == signal.SIGKILL:
        node.wait_exit(timeout=60)


def kill(service: Service, sig: int = signal.SIGKILL) -> None:
    """Signal a service (its whole process group for group services) and wait for it."""
    service.send_signal(sig)
    service.wait_exit(timeout=120)
