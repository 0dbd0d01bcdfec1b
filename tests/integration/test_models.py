"""Two models side by side: workers serve only the models they list, batches reach the worker of
their collection's model, searches use it, and `embedq reindex` moves a collection to another
model through the same queues (resumable after a kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from embedq.config.errors import ModelMismatchError
from embedq.config.settings import ModelOptions, Settings
from embedq.producer import EmbeddingProducer
from embedq.worker.encoder import BUNDLED_MODEL_PATH
from tests.support.environment import ROOT, unique
from tests.support.stack import Stack, running, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SMALL = "small"


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second real Model2Vec model: the bundled one cut to 64 dimensions."""
    from model2vec import StaticModel

    bundled = StaticModel.from_pretrained(BUNDLED_MODEL_PATH)
    vectors = np.asarray(bundled.embedding, dtype=np.float32)[:, :64].copy()
    folder = tmp_path_factory.mktemp("models") / SMALL
    StaticModel(vectors=vectors, tokenizer=bundled.tokenizer, normalize=True).save_pretrained(
        folder
    )
    return folder


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(Stack(tmp_path))


def with_small(settings: Settings, folder: Path) -> Settings:
    return settings.model_copy(update={"models": {SMALL: ModelOptions(source=str(folder))}})


def dims(stack: Stack, collection: str) -> int:
    client = stack.milvus_client()
    try:
        fields = client.describe_collection(collection)["fields"]
    finally:
        client.close()
    return next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector")


def rows(stack: Stack, collection: str) -> dict[str, tuple[str, dict[str, Any]]]:
    client = stack.milvus_client()
    try:
        client.load_collection(collection)
        found = client.query(
            collection, filter='id != ""', output_fields=["id", "text", "metadata"], limit=16384
        )
    finally:
        client.close()
    return {row["id"]: (row["text"], row["metadata"] or {}) for row in found}


def start_fleet(stack: Stack, folder: Path) -> tuple[Any, Any]:
    """A node serving the default model and a node serving only the small one."""
    default_node = stack.start_worker("default-node", concurrency=1)
    small_node = stack.start_worker(
        "small-node",
        concurrency=1,
        models=[SMALL],
        env={"EMBEDQ_MODELS__SMALL__SOURCE": str(folder)},
    )
    return default_node, small_node


def test_each_batch_is_encoded_by_a_worker_of_its_collections_model(
    stack: Stack, small_model: Path
) -> None:
    # Given a mixed fleet: one node per model
    default_node, small_node = start_fleet(stack, small_model)
    settings = with_small(stack.settings(), small_model)
    big, small = unique("big"), unique("small")
    texts = [f"a harbor lamp number {i}" for i in range(600)]

    # When texts go to a collection of each model
    with EmbeddingProducer(settings) as producer:
        big_job = producer.submit(texts, collection=big)
        small_job = producer.submit(texts, collection=small, model=SMALL)
        assert big_job.wait(timeout=120).texts_stored == 600
        assert small_job.wait(timeout=120).texts_stored == 600
        # later batches need no model: the collection's own is used
        again = producer.submit(["one more harbor"], collection=small)
        assert again.wait(timeout=60).texts_stored == 1
        # and a search of each collection is encoded with its model: the text itself is a
        # best hit, at cosine 1 (the 64-dimension model ties "number 7" with "number 8", so
        # which of the two comes first depends on Milvus's segments)
        for collection in (small, big):
            hits = producer.search("a harbor lamp number 7", k=5, collection=collection)
            assert hits[0].score == pytest.approx(1.0, abs=1e-5)
            best = [hit.text for hit in hits if hit.score >= hits[0].score - 1e-5]
            assert "a harbor lamp number 7" in best
        # asking for the wrong model is refused, naming both
        with pytest.raises(ModelMismatchError, match=r"'small'.*'minilm-l6-distilled'"):
            producer.submit(["x"], collection=small, model="minilm-l6-distilled")

    # Then each collection has its model's dimension, filled by that model's node only
    assert (dims(stack, big), dims(stack, small)) == (256, 64)
    default_log, small_log = default_node.output(), small_node.output()
    assert f"job_id={big_job.id}".encode() in default_log
    assert f"job_id={small_job.id}".encode() not in default_log
    assert f"job_id={small_job.id}".encode() in small_log
    assert f"job_id={big_job.id}".encode() not in small_log
    # and no node loaded a model it does not serve
    assert b"loaded model minilm-l6-distilled" in default_log
    assert b"loaded model small" not in default_log
    assert b"loaded model small" in small_log
    assert b"loaded model minilm-l6-distilled" not in small_log


def reindex_command(source: str, target: str) -> list[str]:
    return [
        sys.executable, "-m", "embedq", "reindex", "--from", source, "--to", target,
        "--model", SMALL, "--page-size", "100", "--quiet",
    ]  # fmt: skip


def test_reindex_moves_a_collection_to_another_model_and_resumes_after_a_kill(
    stack: Stack, small_model: Path
) -> None:
    # Given 1,000 texts with ids and metadata stored with the default model
    start_fleet(stack, small_model)
    settings = with_small(stack.settings(), small_model)
    source, target = unique("old"), unique("new")
    ids = [f"doc-{i:04d}" for i in range(1000)]
    texts = [f"document {i} about a cedar violin" for i in range(1000)]
    metadata = [{"i": i, "lang": "en" if i % 2 else "fr"} for i in range(1000)]
    with EmbeddingProducer(settings) as producer:
        producer.submit(texts, ids=ids, metadata=metadata, collection=source).wait(timeout=120)
    env = stack.env(EMBEDQ_MODELS__SMALL__SOURCE=str(small_model))
    command = reindex_command(source, target)

    # When a reindex is killed after it queued its first pages, then run again
    first = subprocess.Popen(command, env=env, cwd=ROOT)
    client = redis.Redis(port=stack.redis_port, decode_responses=True)
    state = f"embedq:reindex:{source}:{target}"
    try:
        wait_until(lambda: bool(client.hget(state, "cursor")), 60, "the first pages")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        cursor = client.hget(state, "cursor")
        assert isinstance(cursor, str) and cursor < ids[-1], "killed too late"
    finally:
        if first.poll() is None:
            first.kill()
    second = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )

    # Then it continues where it stopped and the new collection holds every text once,
    # same ids and metadata, embedded by the new model
    assert second.returncode == 0, second.stderr
    assert "resumed after id" in second.stdout and "1000 of 1000 texts stored" in second.stdout
    assert rows(stack, target) == rows(stack, source)
    assert len(rows(stack, target)) == 1000
    assert dims(stack, target) == 64
    assert client.exists(state) == 0
    client.close()
    # and searches of it use its model, with filters on metadata
    with EmbeddingProducer(settings) as producer:
        hits = producer.search(
            "document 12 about a cedar violin",
            k=3,
            collection=target,
            filter='metadata["lang"] == "fr"',
        )
    assert hits[0].id == "doc-0012" and all(hit.metadata["lang"] == "fr" for hit in hits)
    assert hits[0].text == texts[12] and hits[0].score > hits[-1].score


def test_reindex_refuses_what_would_mix_models(stack: Stack, small_model: Path) -> None:
    start_fleet(stack, small_model)
    settings = with_small(stack.settings(), small_model)
    source, other = unique("src"), unique("other")
    with EmbeddingProducer(settings) as producer:
        producer.submit(["a text"], collection=source).wait(timeout=60)
        producer.submit(["another text"], collection=other).wait(timeout=60)
    env = stack.env(EMBEDQ_MODELS__SMALL__SOURCE=str(small_model))
    cases = [
        (["--from", source, "--to", source, "--model", SMALL], 2, "same collection"),
        (["--from", unique("nothing"), "--to", unique("x"), "--model", SMALL], 2,
         "does not exist"),
        (["--from", source, "--to", unique("x"), "--model", "nope"], 2, "unknown model"),
        # a collection of the default model cannot take the small model's vectors
        (["--from", source, "--to", other, "--model", SMALL], 1,
         "built with model 'minilm-l6-distilled'"),
    ]  # fmt: skip
    for args, code, fragment in cases:
        result = subprocess.run(
            [sys.executable, "-m", "embedq", "reindex", *args, "--quiet"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == code, (args, result.stderr)
        assert fragment in result.stderr and "Traceback" not in result.stderr
    assert len(rows(stack, other)) == 1  # untouched


def test_a_row_these_settings_refuse_does_not_stop_the_reindex(
    stack: Stack, small_model: Path
) -> None:
    # Given a collection with one text longer than the reindexing side allows
    start_fleet(stack, small_model)
    settings = with_small(stack.settings(), small_model)
    source, target = unique("mixed"), unique("mixed_new")
    texts = ["a short text", "another short text", "a text longer than the other side allows " * 30]
    with EmbeddingProducer(settings) as producer:
        producer.submit(texts, ids=["a", "b", "long"], collection=source).wait(timeout=60)
    env = stack.env(
        EMBEDQ_MODELS__SMALL__SOURCE=str(small_model), EMBEDQ_BATCH__MAX_DOCUMENT_BYTES="1024"
    )
    result = subprocess.run(
        reindex_command(source, target), env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    # Then the others are re-embedded, and the refused one is named with the reason
    assert result.returncode == 1, result.stderr
    assert "2 of 3 texts stored, 1 rejected" in result.stdout
    assert "not queued: long:" in result.stderr and "1024" in result.stderr
    assert sorted(rows(stack, target)) == ["a", "b"]
