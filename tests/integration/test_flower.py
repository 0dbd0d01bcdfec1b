"""Flower from embedq's settings: basic auth on, the password never in its output."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from embedq.config.settings import Settings
from embedq.producer import EmbeddingProducer
from embedq.stack.services import Service, free_port, wait_for_port
from tests.support.environment import ROOT, unique
from tests.support.servers import Servers
from tests.support.stack import wait_until

pytestmark = pytest.mark.integration

#: Also copy the dashboard screenshot here (docs/flower-dashboard.png is made this way). Read at
#: import: the autouse ``_clean_env`` fixture removes every EMBEDQ_* variable before a test runs.
SCREENSHOT_TO = os.environ.get("EMBEDQ_SCREENSHOT_TO")

#: Headless Chromium as a user's browser: a fixed window, nothing but the page on the network.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
    "--window-size=1400,800",
    # Virtual time: wait for the page's scripts and its XHRs (the workers table), then dump.
    "--virtual-time-budget=10000",
]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
        [sys.executable, "-m", "embedq", "flower"],
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
    leaked = password in flower.log_path.read_text()
    assert not leaked, "the Flower password is in its log"


def test_flower_beyond_loopback_without_auth_is_refused(servers: Servers) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embedq", "flower"],
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


class TableRows(HTMLParser):
    """The text of each cell of each body row of the table with the given id."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.rows: list[list[str]] = []
        self._depth = 0  # <table> nesting inside the wanted table, 0 outside it
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and (self._depth or ("id", self.table_id) in attrs):
            self._depth += 1
        elif self._depth and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append([])
        elif self._in_body and tag == "td" and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == "table":
            self._depth -= 1
        elif tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join(" ".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which must come first)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR"), "a PNG starts with its IHDR chunk"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def browse(url: str, screenshot: Path, secret: str) -> str:
    """Open ``url`` in headless Chromium: the DOM after its scripts ran, and a screenshot.
    ``secret`` (in the URL, for basic auth) is kept out of every error message."""
    chromium = shutil.which("chromium")
    assert chromium is not None
    with tempfile.TemporaryDirectory(prefix="embedq-chromium-") as profile:
        argv = [
            chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--screenshot={screenshot}", "--dump-dom", url,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=120, check=False, cwd=profile
            )
        except subprocess.TimeoutExpired:
            # The exception's message holds the command line, and so the URL: not raised as is.
            pytest.fail("headless Chromium did not finish within 120 s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"headless Chromium exited with {result.returncode}:\n"
            + result.stderr.replace(secret, "***")[-3000:],
            pytrace=False,
        )
    return result.stdout


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="needs a headless browser: apt-get install chromium (.ci/run installs it)",
)
def test_flower_dashboard_in_a_headless_browser_shows_the_worker_online(
    servers: Servers, worker: Service, settings: Settings, tmp_path: Path
) -> None:
    # Given Flower with basic auth, watching the shared worker, after a small real ingest
    user, password = "ops", "pw-" + secrets.token_hex(8)
    flower, port = start_flower(servers, tmp_path, (user, password))
    base = f"http://127.0.0.1:{port}"
    try:
        flower.wait_ready(lambda: wait_for_port("127.0.0.1", port), timeout=60)
        wait_until(
            lambda: "shared@" in fetch(f"{base}/api/workers?refresh=1", (user, password)),
            60,
            "Flower to know the worker",
        )
        with EmbeddingProducer(settings) as producer:
            producer.submit(
                [f"dashboard text {i}" for i in range(600)], collection=unique("fl")
            ).wait(120)
        wait_until(
            lambda: (
                len(json.loads(fetch(f"{base}/api/tasks?state=SUCCESS", (user, password)))) >= 3
            ),
            60,
            "Flower to see the 3 batches",
        )

        # When a user opens the dashboard in a browser, logging in with basic auth (credentials
        # in the URL: Chromium answers the 401 challenges of the page and of its XHRs with them)
        screenshot = tmp_path / "flower-dashboard.png"
        credentials = f"{user}:{urllib.parse.quote(password, safe='')}"
        started = time.monotonic()
        dom = browse(f"http://{credentials}@127.0.0.1:{port}/", screenshot, password)
        took = time.monotonic() - started
    finally:
        flower.stop(timeout=20)

    # Then the rendered page (its JavaScript filled the table from Flower's JSON) lists the worker
    # with an "Online" status badge
    # (a bool: pytest's explanation of `password not in dom` would print the password)
    shown = password in dom
    assert not shown, "the page shows the password"
    rows = TableRows("workers-table")
    rows.feed(dom)
    shared = [row for row in rows.rows if row and row[0].startswith("shared@")]
    assert shared, f"no shared@ worker in {len(dom)} chars of DOM ({took:.1f}s): {rows.rows}"
    assert shared[0][1] == "Online", f"the shared worker's row: {shared[0]}"
    assert 'class="badge bg-success">Online</span>' in dom
    # and the screenshot is a PNG of the browser window
    image = screenshot.read_bytes()
    assert png_size(image) == (1400, 800)
    leaked = password in flower.log_path.read_text()
    assert not leaked, "Flower's log holds the password"
    if SCREENSHOT_TO:
        shutil.copyfile(screenshot, SCREENSHOT_TO)
