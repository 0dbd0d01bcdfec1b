"""The worker's Celery application and its process lifecycle hooks."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from celery import Celery, signals

from embedq.config.celeryconfig import make_celery
from embedq.config.contract import served_queues
from embedq.config.errors import ConfigError, ModelLoadError
from embedq.config.settings import Settings
from embedq.state.broker import messages_restored, new_node_id
from embedq.worker import logs, metrics
from embedq.worker.consumer import guarded_consumer
from embedq.worker.context import WorkerContext
from embedq.worker.encoder import check_source
from embedq.worker.speedups import lazypandas
from embedq.worker.tasks import record_failure, register_tasks

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Celery:
    """The Celery app of a worker: shared configuration, embedq's tasks, lifecycle hooks."""
    app = make_celery(settings, main="embedq.worker")
    #: Each process's resources, opened by the hooks below; tasks and the consumer get it.
    ctx = WorkerContext(settings, app)
    app.worker_context = ctx
    app.conf.worker_concurrency = settings.worker.concurrency
    app.conf.worker_consumer = guarded_consumer(ctx)
    # A child loading a large model must not be taken for a hung one (the default is 4 s).
    app.conf.worker_proc_alive_timeout = 120.0
    register_tasks(app, ctx)
    logs.install(settings)

    exporters: list[metrics.Exporter] = []

    def consumed_queues() -> list[str]:
        selected = app.amqp.queues.consume_from or app.amqp.queues
        return [*served_queues(settings), *selected]

    def start_node(sender: Any = None, **_: Any) -> None:
        # A pool of several processes is one process per core: tokenizers' own threads in
        # each would only fight the other processes for the cores (measured: no faster, less
        # even). A single process may use them. An explicit TOKENIZERS_PARALLELISM wins.
        if (getattr(sender, "concurrency", None) or os.cpu_count() or 1) > 1:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # Before forking: a model that cannot load must stop the worker at start-up, not
        # fail every batch. SystemExit, because Celery logs and ignores signal exceptions.
        try:
            for model in settings.served_models():
                check_source(model)
        except (ConfigError, ModelLoadError) as exc:
            log.critical("%s", exc)
            raise SystemExit(f"embedq worker: {exc}") from None
        # pymilvus imports pandas (34 MB), and pandas imports pyarrow whenever it is installed
        # (Milvus Lite needs it, ~40 MB): memory in every worker process, which uses neither.
        # pyarrow is blocked; pandas is left to load if anything ever uses it. Worker only.
        if settings.worker.lazy_pandas:
            sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]
            lazypandas.install()
        # Imported once before the pool forks: the pool processes share these pages and
        # their first batch does not wait for them.
        import model2vec  # noqa: F401
        import pymilvus  # noqa: F401

        # This run's identity in Redis, before the consumer connects and the pool forks: the
        # consumer's takes, the pool's coalesced takes and the lease all name it.
        pool = getattr(getattr(sender, "pool_cls", None), "__module__", "")
        if pool.endswith(".prefork"):
            node = new_node_id(str(getattr(sender, "hostname", "") or socket.gethostname()))
            options = dict(app.conf.broker_transport_options or {})
            app.conf.broker_transport_options = {**options, "embedq_node": node}
            log.info("node %s: lease %.0fs", node, settings.worker.lease)
        else:
            # The lease is renewed by the node's event loop, which a solo pool blocks for a
            # whole batch, and a threads pool's batches share a process with it: no leases.
            log.warning(
                "pool %s: no node lease; batches of a dead node return after "
                "EMBEDQ_WORKER__VISIBILITY_TIMEOUT (use the prefork pool)",
                pool or "?",
            )
        # Also before forking, so that every pool process records into the same folder.
        exporter = metrics.Exporter.serve(settings, consumed_queues)
        if exporter is not None:
            exporters.append(exporter)

    def stop_node(**_: Any) -> None:
        ctx.close()
        while exporters:
            exporters.pop().close()

    def open_resources(**_: Any) -> None:
        # Each prefork child loads its own copy of the model, after the fork.
        ctx.load()

    def close_resources(**_: Any) -> None:
        ctx.close()

    def on_failure(
        sender: Any = None,
        task_id: str | None = None,
        exception: object = None,
        kwargs: Any = None,
        **_: Any,
    ) -> None:
        name = getattr(sender, "name", "")
        record_failure(ctx, str(name), dict(kwargs or {}), exception, task_id or "")

    def on_restored(sender: Any = None, count: int = 0, **_: Any) -> None:
        metrics.record_recovered(count)

    # weak=False: the receivers are closures and must live as long as the app.
    messages_restored.connect(on_restored, weak=False)
    signals.worker_init.connect(start_node, weak=False)
    signals.worker_process_init.connect(open_resources, weak=False)
    signals.worker_process_shutdown.connect(close_resources, weak=False)
    signals.worker_shutdown.connect(stop_node, weak=False)
    signals.task_failure.connect(on_failure, weak=False)
    signals.task_postrun.connect(_give_back_freed_memory(), weak=False)
    signals.task_retry.connect(lambda **_: metrics.record_retry(), weak=False)
    return app


def _give_back_freed_memory() -> Callable[..., None]:
    """A task_postrun receiver that returns the heap a batch freed to the system (glibc's
    ``malloc_trim``): a batch of long texts allocates tens of MB of token lists and request
    buffers, which glibc would otherwise keep in the process (measured: 19 MB less RSS after a
    run of passages). A no-op where the C library has no ``malloc_trim``."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda **_: None

    def release(**_: Any) -> None:
        trim(0)

    return release
