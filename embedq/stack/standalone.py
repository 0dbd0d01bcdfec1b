"""``embedq standalone``: everything one machine needs, in the foreground.

Starts a Redis server (AOF on), a Milvus Lite server on a local data directory and a pool of
Celery worker processes, wired through the same settings the producer reads. Ctrl-C or SIGTERM
stops them in dependency order: workers first (a warm shutdown finishes running batches; the
unacknowledged rest stay queued), then Milvus, then Redis (which syncs its AOF on the way out).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from embedq.config.connections import redis_client
from embedq.config.contract import served_queues
from embedq.config.errors import ConfigError
from embedq.config.settings import Settings
from embedq.stack.local import LocalStack
from embedq.stack.services import Service, ServiceError, port_is_free
from embedq.state.broker import restore_dead_nodes

__all__ = ["run_standalone"]

_LOCAL = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def _say(message: str) -> None:
    print(f"[embedq standalone] {message}", file=sys.stderr, flush=True)


def _local_endpoint(url: str, variable: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in _LOCAL:
        raise ConfigError(
            f"{variable}={url} is not on this machine; `embedq standalone` starts its own "
            "servers on loopback: point it at 127.0.0.1, or run `embedq worker` instead"
        )
    port = parts.port or default_port
    if not port_is_free("127.0.0.1", port):
        raise ConfigError(
            f"port {port} ({variable}) is already in use: stop what runs there, or choose "
            f"another port in {variable}"
        )
    return "127.0.0.1", port


def run_standalone(
    settings: Settings,
    data_dir: Path | None = None,
    workers: int | None = None,
    flower: bool = False,
) -> int:
    """Run the stack until a signal arrives; returns the exit code."""
    data = (data_dir or settings.standalone.data_dir).expanduser().resolve()
    count = workers or settings.standalone.workers
    redis_host, redis_port = _local_endpoint(settings.redis.url, "EMBEDQ_REDIS__URL", 6379)
    milvus_host, milvus_port = _local_endpoint(settings.milvus.uri, "EMBEDQ_MILVUS__URI", 19530)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _say(f"got {signal.Signals(signum).name}, stopping")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    password = settings.redis.password.get_secret_value() if settings.redis.password else None
    stack = LocalStack(
        data,
        host=redis_host,
        redis_port=redis_port,
        milvus_port=milvus_port,
        redis_password=password,
        cancelled=stop.is_set,
        settings=settings,
    )
    try:
        stack.start_redis(timeout=20)
        _say(f"redis ready on {redis_host}:{redis_port} (AOF in {data / 'redis'})")
        # Batches the previous run's workers held when it died go back to the queue now, if
        # their lease has run out (the new workers look again every few seconds).
        client = redis_client(settings.redis)
        for found in restore_dead_nodes(client):
            _say(f"recovered {found.count} batch(es) held by {found.holder}, which is gone")
        client.close()

        stack.start_milvus(timeout=60)
        _say(f"milvus lite ready on {milvus_host}:{milvus_port} (data in {data / 'milvus'})")

        stack.start_worker(
            f"standalone-{os.getpid()}",
            count,
            queues=served_queues(settings),
            log_level=settings.worker.log_level,
            name="worker",
        )
        served = ", ".join(model.name for model in settings.served_models())
        _say(f"{count} worker processes ready (model {served}); logs in {stack.logs}")
        if flower:
            stack.start_flower(settings)
            _say(f"flower ready on http://{settings.flower.address}:{settings.flower.port}")
        _say("ready: queue texts with `embedq ingest FILE --wait`; Ctrl-C stops everything")

        while not stop.is_set():
            for service in stack.services():
                if not service.alive():
                    _say(f"{service.name} exited unexpectedly:\n{service.tail()}")
                    return 1
            stop.wait(0.5)
        return 0
    except InterruptedError:
        return 0
    except ServiceError as exc:
        _say(f"could not start: {exc}")
        return 1
    finally:
        # Workers finish (or give back) their batches while Redis and Milvus are still up
        # to take the results.
        stack.stop(worker_grace=settings.worker.time_limit + 10, report=_stopped)


def _stopped(service: Service, code: int, seconds: float) -> None:
    _say(f"{service.name} stopped (exit {code}, {seconds:.1f}s)")
