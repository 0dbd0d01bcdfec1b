"""The shared Celery configuration and the task options: at-least-once, JSON only, bounded
retries, visibility timeout above the longest task."""

from __future__ import annotations

import importlib

from embedq.config.celeryconfig import celery_config
from embedq.config.contract import TASK_EMBED, TASK_SEARCH, embed_queue, search_queue
from embedq.config.errors import InvalidMessageError, StoreUnavailableError
from embedq.config.settings import load_settings
from embedq.worker.application import create_app


def test_delivery_is_at_least_once_and_json_only() -> None:
    config = celery_config(load_settings())
    assert config["task_serializer"] == "json"
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    timeout = config["broker_transport_options"]["visibility_timeout"]
    assert timeout > config["task_time_limit"] > config["task_soft_time_limit"]


def test_tasks_route_to_per_model_queues() -> None:
    settings = load_settings(model={"name": "m1", "source": "bundled"})
    routes = celery_config(settings)["task_routes"]
    assert routes[TASK_EMBED] == {"queue": embed_queue("m1")}
    assert routes[TASK_SEARCH] == {"queue": search_queue("m1")}


def test_credentials_reach_the_broker_url_but_not_the_settings_repr() -> None:
    settings = load_settings(redis={"url": "redis://h:6379/0", "password": "pw123"})
    assert celery_config(settings)["broker_url"] == "redis://:pw123@h:6379/0"
    assert "pw123" not in repr(settings)


def test_tls_urls_get_certificate_options() -> None:
    settings = load_settings(redis={"url": "rediss://h:6380/0", "ssl_ca_certs": "/etc/ca.pem"})
    config = celery_config(settings)
    assert config["broker_use_ssl"]["ssl_ca_certs"] == "/etc/ca.pem"
    assert config["redis_backend_use_ssl"] == config["broker_use_ssl"]


def test_embed_task_retries_transient_errors_only_with_backoff_and_jitter() -> None:
    settings = load_settings(worker={"max_retries": 5, "retry_backoff_max": 60})
    task = create_app(settings).tasks[TASK_EMBED]
    assert issubclass(StoreUnavailableError, task.autoretry_for)
    assert InvalidMessageError in task.dont_autoretry_for
    assert task.max_retries == 5
    assert task.retry_backoff is True
    assert task.retry_backoff_max == 60
    assert task.retry_jitter is True
    assert task.ignore_result is True


def test_the_transport_celery_loads_is_the_module_the_worker_listens_to() -> None:
    # Named by a string, the transport must resolve inside the embedq namespace: a module
    # loaded a second time under another name has signals nobody is connected to.
    from embedq.state import broker

    module, name = celery_config(load_settings())["broker_transport"].split(":")
    assert getattr(importlib.import_module(module), name) is broker.Transport
