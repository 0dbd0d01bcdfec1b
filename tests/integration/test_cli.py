"""The ``embedq`` command line, run as a user runs it (a subprocess), against real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedq.stack.services import Service
from tests.support.environment import CORPUS, ROOT, unique
from tests.support.servers import Servers

pytestmark = pytest.mark.integration


def embedq(servers: Servers, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedq", *args],
        env=servers.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_ingest_jsonl_then_search(servers: Servers, worker: Service) -> None:
    collection = unique("cli")
    done = embedq(
        servers, "ingest", str(CORPUS / "sentences.jsonl"), "--collection", collection, "--wait"
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert "400/400" in done.stderr or "400 texts stored" in done.stderr  # progress bar / summary

    found = embedq(
        servers, "search", "Spanish rice cooked in a broad flat pan", "-k", "3",
        "--collection", collection, "--json",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 3 and {"id", "text", "metadata", "score"} <= set(hits[0])
    assert hits[0]["id"] == "s0071" and "paella" in hits[0]["text"].lower()

    human = embedq(servers, "search", "saffron", "-k", "1", "--collection", collection)
    assert human.returncode == 0 and human.stdout.startswith("1. [")

    status = embedq(servers, "status", job_id, "--json")
    assert status.returncode == 0
    state = json.loads(status.stdout)
    assert state["finished"] and state["ok"] and state["texts_stored"] == 400


def test_ingest_csv_and_text_files(servers: Servers, worker: Service, tmp_path: Path) -> None:
    csv_file = tmp_path / "docs.csv"
    csv_file.write_text(
        'id,text,source\n1,"Rivers carry sediment to the sea",atlas\n2,Owls hunt at night,zoo\n'
    )
    text_file = tmp_path / "lines.txt"
    text_file.write_text("first line of text\n\nsecond line of text\n")
    for path, expected in ((csv_file, 2), (text_file, 2)):
        collection = unique("fmt")
        done = embedq(servers, "ingest", str(path), "--collection", collection, "--wait", "--quiet")
        assert done.returncode == 0, done.stderr
        status = json.loads(embedq(servers, "status", done.stdout.strip(), "--json").stdout)
        assert status["texts_stored"] == expected
    found = embedq(
        servers, "search", "line of text", "-k", "5", "--collection", collection, "--json"
    )
    assert {hit["text"] for hit in json.loads(found.stdout)} == {
        "first line of text",
        "second line of text",
    }


def test_bad_lines_queue_nothing_unless_skipped(
    servers: Servers, worker: Service, tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": ""}\nnot json\n{"id": 3}\n')
    refused = embedq(servers, "ingest", str(path), "--collection", unique("bad"))
    assert refused.returncode == 2
    assert "3 invalid records; nothing was queued" in refused.stderr
    assert "line 2" in refused.stderr and "line 3" in refused.stderr and "line 4" in refused.stderr

    skipped = embedq(
        servers, "ingest", str(path), "--collection", unique("bad"), "--skip-invalid", "--wait"
    )
    assert skipped.returncode == 0, skipped.stderr
    assert "skipping 3 invalid records" in skipped.stderr


def test_unknown_job_and_unreachable_redis_are_clear_errors(
    servers: Servers, tmp_path: Path
) -> None:
    missing = embedq(servers, "status", "no-such-job")
    assert missing.returncode == 2 and "no job 'no-such-job'" in missing.stderr
    path = tmp_path / "t.txt"
    path.write_text("hello\n")
    env = servers.env(EMBEDQ_REDIS__URL="redis://127.0.0.1:1/0")
    down = subprocess.run(
        [sys.executable, "-m", "embedq", "ingest", str(path)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert down.returncode == 3
    assert "unreachable" in down.stderr and "nothing was queued" in down.stderr
    assert "Traceback" not in down.stderr


def test_bad_setting_is_reported_with_its_variable(servers: Servers) -> None:
    env = servers.env(EMBEDQ_BATCH__SIZE="0")
    result = subprocess.run(
        [sys.executable, "-m", "embedq", "search", "x"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "EMBEDQ_BATCH__SIZE" in result.stderr and "Traceback" not in result.stderr


def test_embedq_worker_is_the_celery_worker_with_embedq_queues(
    servers: Servers, tmp_path: Path
) -> None:
    from celery import Celery

    from embedq.stack.services import Service

    node = unique("alias")
    service = Service(
        "alias-worker",
        [sys.executable, "-m", "embedq", "worker", "--concurrency", "1", "-n", f"{node}@%h"],
        tmp_path / "alias.log",
        env=servers.env(),
        cwd=ROOT,
    )
    try:
        service.wait_ready(lambda: b"ready." in service.output(), timeout=120)
        log = service.log_path.read_text()
        assert (
            "embedq.embed.minilm-l6-distilled" in log and "embedq.search.minilm-l6-distilled" in log
        )
        app = Celery(broker=servers.redis_url)
        replies = app.control.ping(
            destination=[f"{node}@{__import__('socket').gethostname()}"], timeout=5
        )
        app.close()
        assert replies, log
    finally:
        assert service.stop(timeout=60) == 0


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "embedq"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for command in ("ingest", "search", "status", "worker", "standalone"):
        assert command in result.stdout


def test_worker_logs_one_json_line_per_batch(servers: Servers, tmp_path: Path) -> None:
    from embedq.config.settings import load_settings
    from embedq.producer import EmbeddingProducer

    model = unique("jsonlog")
    service = Service(
        "json-worker",
        [sys.executable, "-m", "embedq", "worker", "--log-format", "json",
         "--concurrency", "1", "-n", f"{model}@%h"],
        tmp_path / "json.log",
        env=servers.env(EMBEDQ_MODEL__NAME=model, EMBEDQ_MODEL__SOURCE="bundled"),
        cwd=ROOT,
    )  # fmt: skip
    try:
        service.wait_ready(lambda: b"ready." in service.output(), timeout=120)
        settings = load_settings(
            redis={"url": servers.redis_url}, milvus={"uri": servers.milvus_uri},
            model={"name": model, "source": "bundled"},
        )  # fmt: skip
        with EmbeddingProducer(settings) as producer:
            job = producer.submit([f"logged {i}" for i in range(600)], collection=unique("lg"))
            job.wait(timeout=120)
    finally:
        service.stop(timeout=60)
    lines = [
        json.loads(line) for line in service.output().decode().splitlines() if line.startswith("{")
    ]
    batches = [line for line in lines if line.get("job_id") == job.id]
    assert sorted(line["batch"] for line in batches) == [0, 1, 2]
    for line in batches:
        assert line["outcome"] == "ok" and line["texts"] == line["stored"] > 0
        assert isinstance(line["seconds"], float) and line["level"] == "INFO"
