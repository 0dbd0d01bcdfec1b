"""Documents end to end on real parts: producer -> Redis -> Celery worker processes -> Milvus
Lite, read back with pymilvus."""

from __future__ import annotations

import subprocess
from pydoc_data.topics import topics
from typing import Any

import pytest

from embedq.config.contract import Document
from embedq.config.settings import Settings
from embedq.producer import EmbeddingProducer
from embedq.stack.services import Service
from tests.support.environment import python, unique
from tests.support.servers import Servers, milvus_client

pytestmark = pytest.mark.integration


def rows_of(servers: Servers, collection: str, doc: str) -> list[dict[str, Any]]:
    """A document's rows as pymilvus reads them, in chunk order."""
    client = milvus_client(servers.milvus_uri)
    try:
        literal = doc.replace("\\", "\\\\").replace('"', '\\"')
        iterator = client.query_iterator(
            collection,
            batch_size=5000,
            filter=f'id == "{literal}"',
            output_fields=["id", "chunk", "start", "end", "version", "seq", "text", "metadata"],
            consistency_level="Strong",
        )
        rows: list[dict[str, Any]] = []
        while page := iterator.next():
            rows += page
        iterator.close()
    finally:
        client.close()
    return sorted(rows, key=lambda row: row["chunk"])


def long_topic() -> str:
    """Python's own help text on assignment: about 14,000 characters of real prose and code."""
    return topics["assignment"]


def test_a_long_document_is_chunked_whole_and_its_last_sentence_is_found(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    text = long_topic()
    assert len(text) > 10_000
    collection = unique("docs")
    with EmbeddingProducer(settings) as producer:
        status = producer.submit_documents(
            [Document("assignment", text, {"source": "pydoc"}, version=3)], collection=collection
        ).wait(timeout=120)
        rows = rows_of(servers, collection, "assignment")
        assert status.ok and status.texts_stored == 1 and status.chunks_stored == len(rows) > 5
        for n, row in enumerate(rows):
            assert row["chunk"] == n and text[row["start"] : row["end"]] == row["text"]
            assert row["metadata"] == {"source": "pydoc"} and row["version"] == 3.0
        # every part of the document is in some chunk: nothing was cut off
        covered = set().union(*(range(row["start"], row["end"]) for row in rows))
        assert all(i in covered or text[i].isspace() for i in range(len(text)))
        last = text.strip().rsplit("\n", 1)[-1].strip()
        hits = producer.search(last, k=3, collection=collection)
        assert hits[0].id == "assignment" and last in hits[0].text
        assert text[hits[0].start : hits[0].end] == hits[0].text


def test_a_document_sent_again_replaces_every_chunk_and_delete_removes_it(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    collection = unique("docs")
    long_text, short_text = long_topic(), topics["pass"]
    with EmbeddingProducer(settings) as producer:
        producer.submit_documents(
            [{"id": "d", "text": long_text}, {"id": "keep", "text": "stays"}], collection=collection
        ).wait(timeout=120)
        assert len(rows_of(servers, collection, "d")) > 5
        producer.submit_documents([{"id": "d", "text": short_text}], collection=collection).wait(
            timeout=120
        )
        rows = rows_of(servers, collection, "d")
        assert rows and all(short_text[r["start"] : r["end"]] == r["text"] for r in rows)
        assert len({row["seq"] for row in rows}) == 1  # one version only, chunks 0..n-1
        assert [row["chunk"] for row in rows] == list(range(len(rows)))
        every = producer.search("the pass statement", k=50, collection=collection)
        assert all(hit.text in short_text for hit in every if hit.id == "d")

        status = producer.delete(["d", "was-never-there"], collection=collection).wait(timeout=60)
        assert status.ok and status.deleted == 2
        assert rows_of(servers, collection, "d") == []
        assert [row["text"] for row in rows_of(servers, collection, "keep")] == ["stays"]


def test_an_older_version_queued_after_a_newer_one_changes_nothing(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    collection = unique("docs")
    with EmbeddingProducer(settings) as producer:
        producer.submit_documents(
            [{"id": "d", "text": "version five", "version": 5}], collection=collection
        ).wait(timeout=60)
        status = producer.submit_documents(
            [{"id": "d", "text": "version four, late", "version": 4}], collection=collection
        ).wait(timeout=60)
        assert status.superseded == 1
        assert [row["text"] for row in rows_of(servers, collection, "d")] == ["version five"]
        producer.delete(["d"], collection=collection, versions=[3]).wait(timeout=60)
        assert [row["text"] for row in rows_of(servers, collection, "d")] == ["version five"]


def test_an_overlong_plain_text_is_chunked_not_cut_and_truncation_is_counted(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    text = long_topic()
    with EmbeddingProducer(settings) as producer:
        collection = unique("texts")
        status = producer.submit([text], ids=["t"], collection=collection).wait(timeout=120)
        assert status.chunks_stored == len(rows_of(servers, collection, "t")) > 1
        assert status.texts_truncated == 0
    truncating = settings.model_copy(
        update={"batch": settings.batch.model_copy(update={"overlong": "truncate"})}
    )
    with EmbeddingProducer(truncating) as producer:
        collection = unique("texts")
        status = producer.submit([text], ids=["t"], collection=collection).wait(timeout=120)
        rows = rows_of(servers, collection, "t")
        assert status.texts_truncated == 1 and len(rows) == 1
        assert text.startswith(rows[0]["text"]) and len(rows[0]["text"]) < len(text)
        assert "1 truncated" in status.summary()


def test_search_per_document_gives_each_document_once(worker: Service, settings: Settings) -> None:
    collection = unique("docs")
    with EmbeddingProducer(settings) as producer:
        producer.submit_documents(
            [
                {"id": "assignment", "text": long_topic()},
                {"id": "augassign", "text": topics["augassign"]},
                {"id": "pass", "text": topics["pass"]},
            ],
            collection=collection,
        ).wait(timeout=120)
        every = producer.search("assignment statements and targets", k=6, collection=collection)
        best = producer.search(
            "assignment statements and targets", k=3, collection=collection, per_document=True
        )
    assert len({hit.id for hit in every}) < len(every)  # the long one fills several hits
    assert sorted(hit.id for hit in best) == ["assignment", "augassign", "pass"]


def test_embedq_delete_on_the_command_line(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    collection = unique("docs")
    with EmbeddingProducer(settings) as producer:
        producer.submit_documents(
            [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}], collection=collection
        ).wait(timeout=60)
    env = servers.env()
    done = subprocess.run(
        [python(), "-m", "embedq", "delete", "a", "--collection", collection, "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "1 texts stored (0 chunks), 0 rejected, 1 deleted" in done.stderr
    assert rows_of(servers, collection, "a") == []
    assert len(rows_of(servers, collection, "b")) == 1
    refused = subprocess.run(
        [python(), "-m", "embedq", "delete", "--collection", collection],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "no ids to delete" in refused.stderr


def test_a_document_at_the_size_limit_is_stored_whole(
    servers: Servers, worker: Service, settings: Settings
) -> None:
    # Python's help, repeated to just under EMBEDQ_BATCH__MAX_DOCUMENT_BYTES (10 MB)
    unit = "\n\n".join(topics.values())
    limit = settings.batch.max_document_bytes
    text = (unit * (limit // len(unit.encode()) + 1)).encode()[:limit].decode(errors="ignore")
    collection = unique("big")
    with EmbeddingProducer(settings) as producer:
        status = producer.submit_documents([{"id": "big", "text": text}], collection=collection)
        done = status.wait(timeout=600)
    rows = rows_of(servers, collection, "big")
    assert done.ok and done.chunks_stored == len(rows) > 1000
    assert rows[-1]["end"] >= len(text.rstrip())  # nothing cut off at the end
    assert all(text[r["start"] : r["end"]] == r["text"] for r in rows[:: len(rows) // 50])
