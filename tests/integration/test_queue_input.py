"""Messages put straight onto the queue, without the producer (another client, or an
attacker): each ends as a dead letter saying which message, why and when; the worker keeps
running; nothing is ever unpickled."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection

from embedq.config.contract import TASK_EMBED, embed_queue
from embedq.config.settings import Settings
from embedq.producer import EmbeddingProducer
from embedq.stack.services import Service
from embedq.state.deadletters import MAX_RAW_BYTES, DeadLetter, DeadLetters
from tests.support.environment import ROOT, unique
from tests.support.servers import Servers, WorkerFactory
from tests.support.stack import wait_until

pytestmark = pytest.mark.integration

MODEL = "guarded"  # own queues, so that only this module's worker sees these messages
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def db1(servers: Servers) -> str:
    return servers.redis_url.rsplit("/", 1)[0] + "/1"


@pytest.fixture(scope="module")
def guarded_worker(start_worker: WorkerFactory, db1: str) -> Service:
    return start_worker(
        concurrency=1,
        node="guarded",
        EMBEDQ_REDIS__URL=db1,
        EMBEDQ_MODEL__NAME=MODEL,
        EMBEDQ_MODEL__SOURCE="bundled",
        EMBEDQ_WORKER__MAX_MESSAGE_BYTES=str(LIMIT),
    )


@pytest.fixture
def guarded_settings(servers: Servers, db1: str) -> Settings:
    return servers.settings(redis={"url": db1}, model={"name": MODEL, "source": "bundled"})


@pytest.fixture
def letters(guarded_settings: Settings) -> Iterator[DeadLetters]:
    with EmbeddingProducer(guarded_settings) as producer:
        yield producer.dead_letters


class Evil:
    """Unpickling this would create a file: the proof that nothing was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (Path.touch, (str(self.marker),))


def publish(url: str, body: bytes | str | object, **options: Any) -> str:
    task_id = uuid.uuid4().hex
    headers = options.pop("headers", {"task": TASK_EMBED, "id": task_id, "lang": "py"})
    with Connection(url) as connection:  # type: ignore[no-untyped-call]
        connection.Producer().publish(
            body, routing_key=embed_queue(MODEL), headers=headers, retry=True, **options
        )
    return task_id


def next_letter(store: DeadLetters, before: int, timeout: float = 60) -> DeadLetter:
    deadline = time.monotonic() + timeout
    while store.count() <= before:
        assert time.monotonic() < deadline, "no dead letter recorded"
        time.sleep(0.1)
    return store.list(1)[0]


def batch(**fields: Any) -> dict[str, Any]:
    base = {"job_id": uuid.uuid4().hex, "batch": 0, "collection": unique("q"), "model": MODEL}
    base.update(fields)
    return base


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "malformed JSON",
        {"body": b'{"not": json', "content_type": "application/json", "content_encoding": "utf-8"},
        "undecodable",
        "could not be decoded",
    ),
    (
        "JSON object where Celery expects [args, kwargs, embed]",
        {"body": {"texts": ["a"]}, "serializer": "json"},
        "invalid-message",
        "not a valid task message",
    ),
    (
        "valid envelope, batch of the wrong schema",
        {"body": [[], {"batch": {"texts": "not a list"}}, {}], "serializer": "json"},
        "invalid-message",
        "does not follow the contract",
    ),
    (
        "valid envelope, no batch at all",
        {"body": [[], {}, {}], "serializer": "json"},
        "invalid-message",
        "does not follow the contract",
    ),
    (
        "valid envelope, a string where the batch belongs",
        {"body": [["positional"], {}, {}], "serializer": "json"},
        "invalid-message",
        "does not follow the contract",
    ),
    (
        "valid envelope, unexpected arguments",
        {"body": [[], {"batch": {}, "run": "rm -rf /"}, {}], "serializer": "json"},
        "invalid-message",
        "unexpected task arguments ['run']",
    ),
    (
        "ids and texts of different lengths",
        {"body": [[], {"batch": batch(texts=["a", "b"], ids=["1"])}, {}], "serializer": "json"},
        "invalid-message",
        "1 ids for 2 items",
    ),
    (
        "more texts than one message may carry",
        {"body": [[], {"batch": batch(texts=["x"] * 10_001)}, {}], "serializer": "json"},
        "invalid-message",
        "at most 10000",
    ),
    (
        "unknown task name",
        {
            "body": [[], {}, {}],
            "serializer": "json",
            "headers": {"task": "evil.run_anything", "id": "x1", "lang": "py"},
        },
        "unknown-task",
        "evil.run_anything",
    ),
    (
        "no task header",
        {"body": {"hello": "world"}, "serializer": "json", "headers": {}},
        "invalid-message",
        "not a Celery task message",
    ),
    (
        "oversized body",
        {"body": [[], {"batch": batch(texts=["y" * 1000] * 100)}, {}], "serializer": "json"},
        "oversized",
        "EMBEDQ_WORKER__MAX_MESSAGE_BYTES",
    ),
]


@pytest.mark.parametrize(("case", "message", "kind", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bad_message_becomes_a_dead_letter_and_the_worker_goes_on(
    guarded_worker: Service,
    letters: DeadLetters,
    db1: str,
    case: str,
    message: dict[str, Any],
    kind: str,
    reason: str,
) -> None:
    before = letters.count()
    publish(db1, message.pop("body"), **message)
    letter = next_letter(letters, before)
    assert letter.kind == kind, letter
    assert reason in letter.reason, letter.reason
    assert abs(letter.when - time.time()) < 120
    if kind == "oversized":  # never decoded, kept as its first bytes only
        assert letter.body is None
        assert 0 < len(base64.b64decode(letter.raw)) <= MAX_RAW_BYTES < letter.size
    if "id" in message.get("headers", {"id": 1}):
        assert letter.message_id  # which message: its task id
    assert guarded_worker.alive()


def test_pickled_message_is_never_unpickled(
    guarded_worker: Service, letters: DeadLetters, db1: str, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    before = letters.count()
    publish(db1, [[], {"batch": Evil(marker)}, {}], serializer="pickle")
    letter = next_letter(letters, before)
    assert letter.kind == "undecodable"
    assert "only JSON is accepted" in letter.reason
    assert letter.body is None and letter.raw  # kept as inert bytes
    assert not letter.requeueable
    time.sleep(1)
    assert not marker.exists()
    assert guarded_worker.alive()
    assert pickle.dumps(1)  # (pickle itself works here; the worker just never used it)


def test_mixed_batch_stores_the_good_texts_and_dead_letters_the_bad_one(
    guarded_worker: Service, guarded_settings: Settings, letters: DeadLetters, db1: str
) -> None:
    # Given one message of 1,000 texts, one of them invalid
    collection = unique("mixed")
    texts: list[Any] = [f"mixed batch text {i}" for i in range(1000)]
    texts[321] = "   "
    ids = [f"m{i}" for i in range(1000)]
    with EmbeddingProducer(guarded_settings) as producer:
        job = producer.start_job(collection)
        producer._tracker.seal(job.id, 1, 1000)
        before = letters.count()
        body = batch(job_id=job.id, collection=collection, texts=texts, ids=ids)
        publish(db1, [[], {"batch": body}, {}], serializer="json")
        # Then the 999 good texts are stored and one dead letter names the bad one
        letter = next_letter(letters, before)
        assert letter.kind == "rejected"
        assert "item 321" in letter.reason and "empty" in letter.reason
        assert letter.body["texts"] == ["   "] and letter.body["ids"] == ["m321"]
        assert letter.job_id == job.id and letter.requeueable
        # (the worker keeps the rejected items before it records the batch's progress)
        wait_until(lambda: job.status().batches_done == 1, 60, "the batch's progress")
        status = job.status()
        assert status.texts_stored == 999 and status.texts_rejected == 1

        # When the user fixes it and requeues it, it is stored and the record is gone
        fixed = dict(letter.body, texts=["mixed batch text 321"])
        requeued = producer.requeue(letter.id, fixed)
        requeued.wait(timeout=60)
        assert letters.get(letter.id) is None
        hits = producer.search("mixed batch text 321", k=1, collection=collection)
        assert hits[0].id == "m321"
    assert guarded_worker.alive()


def test_dead_letters_cli_lists_shows_and_requeues(
    guarded_worker: Service, guarded_settings: Settings, letters: DeadLetters, db1: str,
    servers: Servers, tmp_path: Path,
) -> None:  # fmt: skip
    collection = unique("cli")
    before = letters.count()
    publish(db1, [[], {"batch": batch(collection=collection, texts=["ok text", ""])}, {}],
            serializer="json")  # fmt: skip
    letter = next_letter(letters, before)
    env = servers.env(
        EMBEDQ_REDIS__URL=db1, EMBEDQ_MODEL__NAME=MODEL, EMBEDQ_MODEL__SOURCE="bundled"
    )

    def embedq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "embedq", "dead-letters", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    listed = embedq("list")
    assert listed.returncode == 0 and letter.id in listed.stdout and "rejected" in listed.stdout
    shown = json.loads(embedq("show", letter.id).stdout)
    assert shown["kind"] == "rejected" and shown["when"].endswith("Z")
    assert shown["body"]["texts"] == [""]
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(dict(shown["body"], texts=["now a real text"])))
    requeued = embedq("requeue", letter.id, "--body", str(fixed), "--wait")
    assert requeued.returncode == 0, requeued.stderr
    assert "1 texts stored" in requeued.stderr
    assert embedq("show", letter.id).returncode == 2


def test_requeue_refuses_what_cannot_be_requeued(
    guarded_worker: Service, guarded_settings: Settings, letters: DeadLetters, db1: str
) -> None:
    from embedq.config.errors import InvalidInputError

    before = letters.count()
    publish(db1, b"\x80\x04garbage", content_type="application/x-python-serialize",
            content_encoding="binary")  # fmt: skip
    letter = next_letter(letters, before)
    with (
        EmbeddingProducer(guarded_settings) as producer,
        pytest.raises(InvalidInputError, match="cannot be requeued"),
    ):
        producer.requeue(letter.id)
    still_bad = {"texts": ["fine", ""], "collection": "c"}
    with (
        EmbeddingProducer(guarded_settings) as producer,
        pytest.raises(InvalidInputError, match="item 1"),
    ):
        producer.requeue(letter.id, still_bad)
    assert letters.get(letter.id) is not None  # a refused requeue keeps the record
