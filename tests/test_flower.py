"""Flower from embedq's settings: basic auth on, the password never in its output."""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, Servers, free_port
from worker.services import Service, wait_for_port

pytestmark = pytest.mark.integration


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


def test_flower_requires_the_configured_basic_auth(
    servers: Servers, worker: Service, tmp_path: Path
) -> None:
    password = "fl-" + secrets.token_hex(10)
    port = free_port()
    flower = Service(
        "flower",
        [sys.executable, "-m", "producer.cli", "flower"],
        tmp_path / "flower.log",
        env=servers.env(
            EMBEDQ_FLOWER__PORT=str(port),
            EMBEDQ_FLOWER__USER="ops",
            EMBEDQ_FLOWER__PASSWORD=password,
        ),
        cwd=ROOT,
    )
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
