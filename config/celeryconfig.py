"""The Celery configuration both sides share, built from
:class:`~embedq.config.settings.Settings`."""

from __future__ import annotations

from typing import Any

from celery import Celery

from embedq.config.connections import tls_options
from embedq.config.contract import TASK_EMBED, TASK_SEARCH, embed_queue, search_queue
from embedq.config.settings import Settings

__all__ = ["celery_config", "make_celery"]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings as the careful deployments set them.

    At-least-once delivery: a task is acknowledged only after it returns (``acks_late``), a
    worker killed mid-task gives its message back (``reject_on_worker_lost``), and each process
    reserves one message at a time so a crash strands nothing else. Writes are idempotent
    upserts, so a redelivered batch overwrites instead of duplicating.
    """
    url = settings.redis.connection_url()
    worker = settings.worker
    config: dict[str, Any] = {
        "broker_url": url,
        "result_backend": url,
        # JSON only: a pickle on the queue would run code on the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Bounded redelivery after a lost worker: a batch that always kills its process
        # fails after max_retries instead of looping forever.
        "task_retry_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": worker.time_limit,
        "task_soft_time_limit": worker.soft_time_limit,
        # embedq's Redis transport (embedq/state/broker.py): atomic takes, node leases.
        "broker_transport": "embedq.state.broker:Transport",
        "broker_transport_options": {
            "embedq_atomic_fetch": worker.atomic_fetch,
            "embedq_lease": worker.lease,
            "embedq_recovery_interval": worker.recovery_interval,
            "embedq_pause_after_take": worker.pause_after_take,
            "visibility_timeout": worker.visibility_timeout,
            # Sweep for messages of dead workers several times per visibility timeout (kombu's
            # default sweep is every 100 s, whatever the timeout).
            "unacked_restore_interval": max(1, min(10, worker.visibility_timeout // 5)),
            "unacked_restore_throttle": 1,
            # A broker that vanishes without closing the socket must not hang a publish.
            "socket_timeout": 30,
            # Each queue polled in turn, so a search is never stuck behind an ingest backlog.
            "queue_order_strategy": "round_robin",
        },
        "result_backend_transport_options": {"visibility_timeout": worker.visibility_timeout},
        # Only searches keep results (batches report through job progress), read at once.
        "result_expires": 3600,
        "broker_connection_retry_on_startup": True,
        # The producer gets a clear error quickly instead of hanging while Redis is down.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        "broker_connection_timeout": 4.0,
        "redis_socket_connect_timeout": 4.0,
        "redis_socket_timeout": 30.0,
        "task_routes": {
            TASK_EMBED: {"queue": embed_queue(settings.model.name)},
            TASK_SEARCH: {"queue": search_queue(settings.model.name)},
        },
        "task_default_queue": embed_queue(settings.model.name),
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        # Workers' events are enough for Flower; the producer's own would add a publish per batch.
        "task_send_sent_event": settings.flower.sent_events,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_pool_limit": 10,
        "timezone": "UTC",
        "enable_utc": True,
    }
    tls = tls_options(settings.redis)
    if tls:
        config["broker_use_ssl"] = tls
        config["redis_backend_use_ssl"] = tls
    return config


def make_celery(settings: Settings, main: str = "embedq") -> Celery:
    """A Celery app configured from ``settings``; the worker registers tasks on it, the
    producer only sends tasks by name."""
    app = Celery(main)
    app.conf.update(celery_config(settings))
    return app
