"""End to end on real parts: producer -> real Redis -> real Celery worker processes (bundled
Model2Vec model) -> real Milvus Lite server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from embedq.config.contract import embed_queue
from embedq.config.errors import InvalidInputError, JobFailedError, SearchError
from embedq.config.settings import Settings
from embedq.producer import EmbeddingProducer
from embedq.stack.services import Service, child_pids
from tests.support.environment import CORPUS, ROOT, unique
from tests.support.servers import Servers, WorkerFactory, milvus_client, queue_raw_batch

pytestmark = pytest.mark.integration


def corpus() -> list[dict[str, object]]:
    return [json.loads(line) for line in (CORPUS / "sentences.jsonl").read_text().splitlines()]


def stored_rows(servers: Servers, collection: str) -> dict[str, dict[str, object]]:
    client = milvus_client(servers.milvus_uri)
    try:
        rows = client.query(
            collection,
            filter='id != ""',
            output_fields=["id", "text", "metadata"],
            limit=16_384,
            consistency_level="Strong",
        )
        return {row["id"]: row for row in rows}
    finally:
        client.close()


def test_thousand_texts_with_ids_and_metadata_are_stored_exactly_once(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    # Given 1,000 texts with ids and metadata
    collection = unique("e2e")
    texts = [f"document number {i} about topic {i % 7}" for i in range(1000)]
    ids = [f"doc-{i}" for i in range(1000)]
    metadata = [{"i": i, "topic": i % 7, "tags": ["a", "ü"]} for i in range(1000)]
    with EmbeddingProducer(settings) as producer:
        # When they are submitted and the job is waited for
        job = producer.submit(texts, ids=ids, metadata=metadata, collection=collection)
        status = job.wait(timeout=120)
        # Then every batch is done and Milvus holds exactly those rows
        assert status.ok and status.texts_stored == 1000
        assert status.total_batches == 4  # 256 per batch
        rows = stored_rows(servers, collection)
        assert len(rows) == 1000
        assert rows["doc-123"]["text"] == texts[123]
        assert rows["doc-123"]["metadata"] == metadata[123]
        assert all(rows[ids[i]]["text"] == texts[i] for i in range(1000))

        # When the same batch is submitted again, it overwrites instead of duplicating
        producer.submit(texts, ids=ids, metadata=metadata, collection=collection).wait(120)
        assert len(stored_rows(servers, collection)) == 1000


def test_texts_without_ids_are_idempotent_too(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    collection = unique("noid")
    texts = [f"sentence {i} without an id" for i in range(300)]
    with EmbeddingProducer(settings) as producer:
        producer.submit(texts, collection=collection).wait(timeout=120)
        producer.submit(texts, collection=collection).wait(timeout=120)
    assert len(stored_rows(servers, collection)) == 300


def test_search_for_a_paraphrase_returns_the_sentence_first(
    worker: Service, settings: Settings
) -> None:
    collection = unique("para")
    rows = corpus()
    with EmbeddingProducer(settings) as producer:
        producer.submit(
            [str(r["text"]) for r in rows],
            ids=[str(r["id"]) for r in rows],
            metadata=[r["metadata"] for r in rows],  # type: ignore[misc]
            collection=collection,
        ).wait(timeout=120)
        by_id = {r["id"]: r for r in rows}
        hits = producer.search(
            "What is the explosive death of a massive star called?", k=3, collection=collection
        )
        assert hits[0].id == "s0026"
        assert hits[0].text == by_id["s0026"]["text"]
        assert hits[0].metadata == by_id["s0026"]["metadata"]
        assert hits[0].score > hits[1].score
        # the same holds for most paraphrases of the corpus (the model's measured recall@1)
        queries = [json.loads(x) for x in (CORPUS / "paraphrases.jsonl").read_text().splitlines()][
            :20
        ]
        first = [producer.search(q["query"], k=1, collection=collection)[0].id for q in queries]
        assert sum(f == q["expected_id"] for f, q in zip(first, queries, strict=True)) >= 12
        filtered = producer.search(
            "a star", k=5, collection=collection, filter='metadata["topic"] == "cooking"'
        )
        assert filtered and all(hit.metadata["topic"] == "cooking" for hit in filtered)


def test_invalid_input_queues_nothing(redis_server: str, settings: Settings) -> None:
    client = redis.Redis.from_url(redis_server)
    queue = embed_queue(settings.model.name)
    before = client.llen(queue)
    with EmbeddingProducer(settings) as producer, pytest.raises(InvalidInputError) as info:
        producer.submit(["good", "", "also good", 7], collection=unique("bad"))  # type: ignore[list-item]
    assert "2 of 4 items are invalid" in str(info.value)
    assert "item 1" in str(info.value) and "item 3" in str(info.value)
    assert client.llen(queue) == before


def test_search_of_unknown_collection_is_a_clear_error(worker: Service, settings: Settings) -> None:
    with (
        EmbeddingProducer(settings) as producer,
        pytest.raises(SearchError, match="does not exist"),
    ):
        producer.search("anything", collection=unique("missing"))


def test_message_with_one_bad_text_stores_the_rest_and_reports_it(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    # Given a message put on the queue by another client, with one invalid text of 1,000
    collection = unique("mixed")
    texts: list[object] = [f"valid text {i}" for i in range(1000)]
    texts[417] = ""
    job = queue_raw_batch(settings, {"collection": collection, "texts": texts})
    # Then the job reports the one rejected text, and the 999 others are stored
    with pytest.raises(JobFailedError, match="item 417"):
        job.wait(timeout=120)
    assert job.status().texts_stored == 999
    assert len(stored_rows(servers, collection)) == 999


def test_message_breaking_the_contract_fails_its_batch_and_the_worker_goes_on(
    worker: Service, settings: Settings
) -> None:
    job = queue_raw_batch(settings, {"collection": "c", "texts": ["a"], "ids": [1, 2]})
    with EmbeddingProducer(settings) as producer:
        with pytest.raises(JobFailedError, match="InvalidMessageError"):
            job.wait(timeout=60)
        # the worker is still serving
        producer.submit(["still alive"], collection=unique("alive")).wait(timeout=60)
    assert worker.alive()


def test_worker_loads_the_model_once_per_process_at_start(
    start_worker: WorkerFactory, servers: Servers
) -> None:
    # Given a fresh worker with three processes, to which no task is ever sent
    fresh = start_worker(
        concurrency=3,
        node=unique("eager"),
        EMBEDQ_MODEL__NAME=unique("m"),
        EMBEDQ_MODEL__SOURCE="bundled",
    )
    deadline = time.monotonic() + 60
    while fresh.output().count(b"loaded model") < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    # Then each process has loaded the model exactly once, before any task (not lazily)
    output = fresh.output().decode()
    assert output.count("loaded model") == 3
    assert "job_id=" not in output


def test_worker_with_a_model_that_cannot_load_refuses_to_start(
    servers: Servers, tmp_path: Path
) -> None:
    (tmp_path / "not-a-model").mkdir()
    for source, fragment in (
        (str(tmp_path / "missing"), "does not exist"),
        (str(tmp_path / "not-a-model"), "is not a Model2Vec model folder"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "embedq.worker", "worker", "--loglevel", "INFO"],
            env=servers.env(EMBEDQ_MODEL__SOURCE=source),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "EMBEDQ_MODEL__SOURCE" in result.stderr and fragment in result.stderr


def test_worker_processes_load_neither_pyarrow_nor_pandas(
    worker: Service, settings: Settings
) -> None:
    # pymilvus imports pandas (34 MB), which would load pyarrow (~40 MB), in every process;
    # the worker uses neither. A batch stored and a search answered prove the processes still
    # do their work without them.
    collection = unique("mem")
    with EmbeddingProducer(settings) as producer:
        job = producer.submit(["memory check"], collection=collection)
        assert job.wait(timeout=60).texts_stored == 1
        hits = producer.search("memory check", k=1, collection=collection)
    assert [hit.text for hit in hits] == ["memory check"]
    processes = [worker.pid, *child_pids(worker.pid)]
    assert len(processes) == 3
    for pid in processes:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libarrow" not in maps and "pyarrow" not in maps, pid
        assert "pandas/_libs" not in maps, pid


def test_a_worker_that_imports_pandas_as_usual_stores_and_finds_the_same(
    start_worker: WorkerFactory, worker: Service, servers: Servers
) -> None:
    # EMBEDQ_WORKER__LAZY_PANDAS=false: no stand-ins, pyarrow allowed. A node on a model of its
    # own (same bundled vectors) stores the corpus; its answers equal the default node's.
    model = unique("plainpd")
    plain = start_worker(
        concurrency=1,
        node=unique("plainpd"),
        EMBEDQ_MODEL__NAME=model,
        EMBEDQ_MODEL__SOURCE="bundled",
        EMBEDQ_WORKER__LAZY_PANDAS="false",
    )
    settings = servers.settings(models={model: {"source": "bundled"}})
    rows = corpus()[:60]
    answers = []
    for name in (settings.model.name, model):
        collection = unique("pd")
        with EmbeddingProducer(settings) as producer:
            producer.submit(
                [str(r["text"]) for r in rows],
                ids=[str(r["id"]) for r in rows],
                collection=collection,
                model=name,
            ).wait(timeout=120)
            hits = producer.search("a star explodes", k=5, collection=collection)
        answers.append([(hit.id, round(hit.score, 5), hit.text) for hit in hits])
    assert answers[0] == answers[1] and len(answers[0]) == 5
    assert "pandas/_libs" in Path(f"/proc/{child_pids(plain.pid)[0]}/maps").read_text()
