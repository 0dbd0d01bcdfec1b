"""Flower from embedq's settings: basic auth on, the password never in its output."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from config.settings import Settings
from producer import EmbeddingProducer
from tests.conftest import ROOT, Servers, free_port, unique
from tests.stack import wait_until
from worker.services import Service, wait_for_port

pytestmark = pytest.mark.integration


def fetch(url: str, auth: tuple[str, str]) -> str:
    request = urllib.request.Request(url)  # noqa: S310 - a loopback test URL
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return str(response.read().decode())


def get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)  # noqa: S310 - a loopback test URL
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def start_flower(servers: Servers, folder: Path, auth: tuple[str, str]) -> tuple[Service, int]:
    """`embedq flower` with basic auth, on a free port (the caller waits and stops it)."""
    port = free_port()
    flower = Service(
        "flower",
        [sys.executable, "-m", "producer.cli", "flower"],
        folder / "flower.log",
        env=servers.env(
            EMBEDQ_FLOWER__PORT=str(port),
            EMBEDQ_FLOWER__USER=auth[0],
            EMBEDQ_FLOWER__PASSWORD=auth[1],
        ),
        cwd=ROOT,
    )
    return flower, port


def test_flower_requires_the_configured_basic_auth(
    servers: Servers, worker: Service, tmp_path: Path
) -> None:
    password = "fl-" + secrets.token_hex(10)
    flower, port = start_flower(servers, tmp_path, ("ops", password))
    try:
        flower.wait_ready(lambda: wait_for_port("127.0.0.1", port), timeout=60)
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/api/workers") == 401
        assert get(f"{base}/api/workers", ("ops", "wrong")) == 401
        assert get(f"{base}/api/workers", ("ops", password)) == 200
        assert get(f"{base}/", ("ops", password)) == 200
    finally:
        flower.stop(timeout=20)
    assert password not in flower.log_path.read_text()


def test_flower_beyond_loopback_without_auth_is_refused(servers: Servers) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "flower"],
        env=servers.env(EMBEDQ_FLOWER__ADDRESS="0.0.0.0"),
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "EMBEDQ_FLOWER__USER" in result.stderr and "Traceback" not in result.stderr


def test_flower_shows_the_worker_and_the_tasks_of_a_real_ingest(
    servers: Servers, worker: Service, settings: Settings, tmp_path: Path
) -> None:
    # Given Flower watching the shared worker
    auth = ("ops", "pw-" + secrets.token_hex(6))
    flower, port = start_flower(servers, tmp_path, auth)
    base = f"http://127.0.0.1:{port}"
    try:
        flower.wait_ready(lambda: wait_for_port("127.0.0.1", port), timeout=60)
        # Flower knows the worker once it has its events: only then can it see the tasks.
        wait_until(
            lambda: "shared@" in fetch(f"{base}/api/workers?refresh=1", auth), 60, "the worker"
        )
        # When texts are ingested
        with EmbeddingProducer(settings) as producer:
            producer.submit(
                [f"watched text {i}" for i in range(600)], collection=unique("fl")
            ).wait(120)

        # Then its API lists the worker and the completed embed tasks by name
        def tasks() -> dict[str, dict[str, object]]:
            body = fetch(f"{base}/api/tasks?taskname=embedq.embed_batch&state=SUCCESS", auth)
            found: dict[str, dict[str, object]] = json.loads(body)
            return found

        wait_until(lambda: len(tasks()) >= 3, 60, "Flower to see the 3 batches")
        assert all(t["name"] == "embedq.embed_batch" for t in tasks().values())
        workers = json.loads(fetch(f"{base}/api/workers?refresh=1", auth))
        assert any(name.startswith("shared@") for name in workers)
        # and its Prometheus metrics count them
        metrics = fetch(f"{base}/metrics", auth)
        assert 'task="embedq.embed_batch"' in metrics and 'type="task-succeeded"' in metrics
        assert "flower_worker_online" in metrics
    finally:
        flower.stop(timeout=20)
