"""The local stack: Redis, a Milvus Lite server and Celery worker nodes on this machine.

One class starts them for ``embedq standalone``, the tests' fixtures and the benchmark: each
server is a :class:`~embedq.stack.services.Service` (its own session, its log in a file), is
ready when a client call succeeds rather than when its port opens, and everything stops in
reverse order of start (workers before the servers they write to).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import redis

from embedq.config.celeryconfig import make_celery
from embedq.config.contract import embed_queue, search_queue
from embedq.config.settings import Settings, load_settings
from embedq.stack.services import (
    MILVUS_LITE_STOP_SIGNAL,
    Service,
    flower_command,
    free_port,
    milvus_lite_command,
    redis_command,
    wait_for_port,
    worker_command,
)

__all__ = ["LocalStack", "merge_sections"]


def merge_sections(base: dict[str, object], overrides: dict[str, object]) -> dict[str, object]:
    """Settings sections of ``base`` with ``overrides`` laid over them, key by key."""
    merged = dict(base)
    for section, values in overrides.items():
        known = merged.get(section)
        if isinstance(known, dict) and isinstance(values, dict):
            merged[section] = known | values
        else:
            merged[section] = values
    return merged


class LocalStack:
    """Servers started on demand under ``root`` (data in ``root/redis`` and ``root/milvus``,
    logs in ``logs``, default ``root/logs``), on the given loopback ports or free ones.

    ``env`` is the environment of every child process (default: this process's), to which
    the stack adds the Redis URL and Milvus URI; ``cancelled`` lets a caller (a signal
    handler) abandon a start that is still waiting for readiness; ``settings``, when given,
    are the ones the stack's own clients use (else they are built from its addresses).
    """

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        redis_port: int | None = None,
        milvus_port: int | None = None,
        redis_password: str | None = None,
        logs: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        settings: Settings | None = None,
    ) -> None:
        self.root = root
        self.given = settings
        self.host = host
        self.redis_port = redis_port or free_port()
        self.milvus_port = milvus_port or free_port()
        self.redis_password = redis_password
        self.logs = logs or root / "logs"
        self.base_env = dict(env) if env is not None else None
        self.cwd = cwd
        self.cancelled = cancelled
        self.redis: Service | None = None
        self.milvus: Service | None = None
        self.workers: list[Service] = []
        self.others: list[Service] = []

    # -- addresses and settings ---------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    @property
    def milvus_uri(self) -> str:
        return f"http://{self.host}:{self.milvus_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment: the base, then ``extra``. Without settings given, the base
        is pointed at this stack's servers; with them, it is left as it is (the children read
        the same variables and .env file as the caller, database number and all)."""
        base = self.base_env if self.base_env is not None else dict(os.environ)
        if self.given is None:
            base |= {"EMBEDQ_REDIS__URL": self.redis_url, "EMBEDQ_MILVUS__URI": self.milvus_uri}
        return base | extra

    def settings(self, **overrides: object) -> Settings:
        """Settings pointed at this stack, with ``overrides`` (sections as dicts); the
        settings given to the stack when there are none."""
        if self.given is not None and not overrides:
            return self.given
        redis_section: dict[str, object] = {"url": self.redis_url}
        if self.redis_password is not None:
            redis_section["password"] = self.redis_password
        base: dict[str, object] = {"redis": redis_section, "milvus": {"uri": self.milvus_uri}}
        return load_settings(**merge_sections(base, overrides))

    # -- servers ------------------------------------------------------------------------------

    def redis_client(self) -> redis.Redis:
        return redis.Redis(
            host=self.host, port=self.redis_port, password=self.redis_password, socket_timeout=1
        )

    def start_redis(self, timeout: float = 30) -> Service:
        """A Redis with AOF on (``services.redis_command``), ready when it answers PING."""
        self.redis = Service(
            "redis",
            redis_command(self.redis_port, self.root / "redis", self.host, self.redis_password),
            self.logs / "redis.log",
        )
        client = self.redis_client()
        try:
            self.redis.wait_ready(lambda: bool(client.ping()), timeout, self.cancelled)
        finally:
            client.close()
        return self.redis

    def start_milvus(self, timeout: float = 60) -> Service:
        """embedq's Milvus Lite server (``embedq.stack.lite_server``) on ``root/milvus``."""
        self.milvus = Service(
            "milvus-lite",
            milvus_lite_command(self.milvus_port, self.root / "milvus", self.host),
            self.logs / "milvus.log",
            env=self.env(),
            cwd=self.cwd,
            stop_signal=MILVUS_LITE_STOP_SIGNAL,
        )
        self.milvus.wait_ready(self._milvus_answers, timeout, self.cancelled)
        return self.milvus

    def _milvus_answers(self) -> bool:
        """An open port is not yet a serving Milvus: ready when a client call succeeds."""
        if not wait_for_port(self.host, self.milvus_port):
            return False
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.milvus_uri, timeout=3)
        try:
            client.list_collections()
        finally:
            client.close()
        return True

    # -- workers ------------------------------------------------------------------------------

    def start_worker(
        self,
        node: str,
        concurrency: int = 2,
        *,
        models: Sequence[str] = (),
        queues: Sequence[str] = (),
        log_level: str = "INFO",
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        name: str = "",
    ) -> Service:
        """A worker node ``node@<host>`` of ``concurrency`` prefork processes, returned once
        it answers a Celery ping. It serves ``models`` (names; default: the model of its
        settings) on their embed and search queues, or exactly ``queues``; ``env``: more
        settings for it (an ``EMBEDQ_REDIS__URL`` there is the broker it is pinged on);
        ``name``: of the service and its log file (default: the node)."""
        extra = dict(env or {})
        if models:
            extra.setdefault("EMBEDQ_WORKER__MODELS", ",".join(models))
        if not queues:
            names = list(models) or [extra.get("EMBEDQ_MODEL__NAME", self.settings().model.name)]
            queues = [q for name in names for q in (embed_queue(name), search_queue(name))]
        service = Service(
            name or node,
            worker_command(queues, concurrency, node=f"{node}@%h", log_level=log_level),
            self.logs / f"{name or node}.log",
            env=self.env(**extra),
            cwd=self.cwd,
        )
        self.workers.append(service)
        broker = extra.get("EMBEDQ_REDIS__URL")
        control = self.settings(redis={"url": broker}) if broker else self.settings()
        self.wait_worker(node, service, control, timeout)
        return service

    def wait_worker(
        self, node: str, service: Service, settings: Settings, timeout: float = 120
    ) -> None:
        """Wait until the node ``node`` (run by ``service``) answers a Celery ping on the
        broker of ``settings``."""
        control = make_celery(settings)
        destination = [f"{node}@{socket.gethostname()}"]
        try:
            service.wait_ready(
                lambda: bool(control.control.ping(destination, timeout=0.5)),
                timeout,
                self.cancelled,
            )
        finally:
            control.close()

    def start_flower(self, settings: Settings, timeout: float = 60) -> Service:
        """Flower on ``settings.flower``'s address, with its basic auth."""
        argv, auth = flower_command(settings)
        service = Service("flower", argv, self.logs / "flower.log", env=self.env(**auth))
        self.others.append(service)
        address, port = settings.flower.address, settings.flower.port
        service.wait_ready(lambda: wait_for_port(address, port), timeout, self.cancelled)
        return service

    # -- the whole ----------------------------------------------------------------------------

    def services(self) -> list[Service]:
        """Every service started, in start order of dependency: servers, workers, the rest."""
        servers = [s for s in (self.redis, self.milvus) if s is not None]
        return [*servers, *self.workers, *self.others]

    def stop(
        self,
        worker_grace: float = 30,
        kill: bool = False,
        report: Callable[[Service, int, float], None] | None = None,
    ) -> None:
        """Stop everything in reverse dependency order: the dashboard, the workers (a warm
        shutdown finishes running batches within ``worker_grace``), Milvus (it closes its
        files), Redis (it syncs its AOF). ``kill``: SIGKILL workers and Milvus instead, for
        throwaway stacks whose data nobody reads again."""
        ordered = [*self.others, *reversed(self.workers)]
        ordered += [s for s in (self.milvus, self.redis) if s is not None]
        for service in ordered:
            started = time.monotonic()
            if kill and service is not self.redis and service.alive():
                service.kill()
                code = service.process.returncode
            else:
                # Redis syncs its append-only file on the way out.
                grace = worker_grace if service in self.workers else 60.0
                code = service.stop(timeout=grace if service.alive() else 1)
            if report is not None:
                report(service, code, time.monotonic() - started)
        self.workers.clear()
        self.others.clear()
        self.redis = self.milvus = None

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
