"""Bad input at the producer: rejected before anything is queued, with a message that says
what is wrong and how to fix it. (Queue-side cases: test_queue_input.py; settings:
test_settings.py.)"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from embedq.config.contract import embed_queue
from embedq.config.errors import EmbedqError, InvalidInputError, ModelMismatchError
from embedq.config.settings import Settings
from embedq.producer import EmbeddingProducer
from embedq.state.registry import CollectionRegistry
from tests.support.environment import unique

pytestmark = pytest.mark.integration

OK = ["a fine text", "another fine text"]
BIG = 10 * 1024 * 1024  # EMBEDQ_BATCH__MAX_DOCUMENT_BYTES

# (case, submit keyword arguments, error fragment that says what is wrong / what to do)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("empty list", {"texts": []}, "texts is empty; pass at least one text"),
    ("a str, not a list", {"texts": "one text"}, "wrap a single text in a list"),
    ("bytes, not a list", {"texts": b"one text"}, "must be a list of str"),
    ("None for texts", {"texts": None}, "must be a list of str"),
    ("a dict for texts", {"texts": {"a": 1}}, "must be a list of str"),
    ("a generator for texts", {"texts": (t for t in OK)}, "must be a list of str"),
    ("empty text", {"texts": ["ok", ""]}, "item 1: text is empty"),
    ("whitespace-only text", {"texts": [" \t\n", "ok"]}, "item 0: text is empty"),
    ("None text", {"texts": ["ok", None]}, "item 1: text must be a str, got NoneType"),
    ("int text", {"texts": [3]}, "text must be a str, got int; convert it with str()"),
    ("bytes text", {"texts": [b"raw"]}, "text must be a str, got bytes"),
    ("list text", {"texts": [["nested"]]}, "text must be a str, got list"),
    ("lone surrogate", {"texts": ["bad \udcff byte"]}, "lone surrogate"),
    ("NUL character", {"texts": ["a\x00b"]}, "NUL character"),
    ("text over the limit", {"texts": ["x" * (BIG + 1)]}, "EMBEDQ_BATCH__MAX_DOCUMENT_BYTES"),
    ("text over the limit, multi-byte", {"texts": ["€" * (BIG // 3 + 1)]}, "10485762 bytes"),
    ("version not a number", {"texts": OK, "ids": ["a", "b"], "versions": ["v1", 2]}, "number"),
    ("version without an id", {"texts": OK, "versions": [1, 2]}, "a version needs an id"),
    ("fewer versions than texts", {"texts": OK, "ids": ["a", "b"], "versions": [1]}, "1 versions"),
    ("fewer ids than texts", {"texts": OK, "ids": ["1"]}, "got 1 ids for 2 texts"),
    ("more ids than texts", {"texts": OK, "ids": ["1", "2", "3"]}, "got 3 ids for 2 texts"),
    ("ids as a str", {"texts": OK, "ids": "12"}, "ids must be a list"),
    ("duplicate ids", {"texts": OK, "ids": ["x", "x"]}, "duplicate id 'x' (also at 0)"),
    ("int and str id colliding", {"texts": OK, "ids": [1, "1"]}, "duplicate id '1'"),
    ("float id", {"texts": OK, "ids": ["a", 1.5]}, "id must be a str or an int, got float"),
    ("None id", {"texts": OK, "ids": ["a", None]}, "id must be a str or an int, got NoneType"),
    ("bool id", {"texts": OK, "ids": [True, "b"]}, "got bool"),
    ("empty id", {"texts": OK, "ids": ["", "b"]}, "id must have 1 to 256 characters"),
    ("id too long", {"texts": OK, "ids": ["k" * 257, "b"]}, "use a shorter key"),
    ("id with a lone surrogate", {"texts": OK, "ids": ["\ud800", "b"]}, "lone surrogate"),
    ("fewer metadata than texts", {"texts": OK, "metadata": [{}]}, "got 1 metadata for 2"),
    ("metadata as a dict", {"texts": OK, "metadata": {"a": 1}}, "metadata must be a list"),
    ("metadata item a list", {"texts": OK, "metadata": [{}, [1]]}, "must be a dict"),
    ("metadata item a str", {"texts": OK, "metadata": ["x", {}]}, "must be a dict"),
    (
        "metadata not JSON-serialisable",
        {"texts": OK, "metadata": [{"at": datetime.datetime(2026, 1, 1)}, {}]},
        "not JSON-serialisable",
    ),
    ("metadata with NaN", {"texts": OK, "metadata": [{"x": float("nan")}, {}]}, "JSON"),
    ("metadata with tuple keys", {"texts": OK, "metadata": [{(1, 2): "v"}, {}]}, "JSON"),
    ("metadata too large", {"texts": OK, "metadata": [{"b": "z" * 20_000}, {}]}, "over the limit"),
    ("collection with a dash", {"texts": OK, "collection": "my-docs"}, "letter or _"),
    ("collection starting with a digit", {"texts": OK, "collection": "1docs"}, "letter or _"),
    ("collection name too long", {"texts": OK, "collection": "c" * 256}, "at most 255"),
    ("empty collection name", {"texts": OK, "collection": ""}, "letter or _"),
    ("collection not a str", {"texts": OK, "collection": 7}, "letter or _"),
]


@pytest.fixture
def queue_length(redis_server: str, settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server)
    yield client
    client.close()


def idle(settings: Settings) -> Settings:
    """Settings for a model no worker serves: whatever is queued stays there to be counted."""
    return settings.model_copy(update={"model": settings.model.model_copy(update={"name": "idle"})})


@pytest.mark.parametrize(("case", "kwargs", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_anything_is_queued(
    settings: Settings, queue_length: redis.Redis, case: str, kwargs: dict[str, Any], fragment: str
) -> None:
    queue = embed_queue("idle")
    before = queue_length.llen(queue)
    jobs_before = set(queue_length.scan_iter("embedq:job:*"))
    with EmbeddingProducer(idle(settings)) as producer, pytest.raises(InvalidInputError) as info:
        producer.submit(**kwargs)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, EmbedqError)
    assert queue_length.llen(queue) == before  # nothing queued
    assert set(queue_length.scan_iter("embedq:job:*")) == jobs_before  # not even a job record


def test_every_problem_is_listed_at_once(settings: Settings) -> None:
    with EmbeddingProducer(settings) as producer, pytest.raises(InvalidInputError) as info:
        producer.submit(["", "ok", None, "x" * (BIG + 1)] + [""] * 20)  # type: ignore[arg-type]
    message = str(info.value)
    assert "23 of 24 items are invalid; nothing was queued" in message
    assert "item 0" in message and "item 2" in message and "item 3" in message
    assert "... and 13 more" in message


DOC = {"id": "d1", "text": "a document"}

# (case, submit_documents keyword arguments, error fragment)
DOCUMENT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no documents", {"documents": []}, "no documents to submit"),
    ("one document, not a list", {"documents": DOC}, "wrap a single document in a list"),
    ("a str", {"documents": ["text"]}, "must be a Document or a dict, got str"),
    ("no id", {"documents": [{"text": "x"}]}, "document 0: a document needs an id"),
    ("empty document", {"documents": [DOC, {"id": "e", "text": " "}]}, "document 1: text is empty"),
    ("over the limit", {"documents": [{"id": "b", "text": "x" * (BIG + 1)}]}, "10485761 bytes"),
    ("id too long", {"documents": [{"id": "k" * 257, "text": "x"}]}, "1 to 256 characters"),
    ("version a str", {"documents": [{**DOC, "version": "2024"}]}, "version must be a number"),
    (
        "naive datetime",
        {"documents": [{**DOC, "version": datetime.datetime(2024, 1, 1)}]},
        "timezone",
    ),
    ("unknown field", {"documents": [{**DOC, "body": "x"}]}, "unknown field(s) body"),
    ("duplicate id", {"documents": [DOC, DOC]}, "duplicate id 'd1' (also at 0)"),
    ("write and delete one id", {"documents": [DOC], "delete": ["d1"]}, "both written and deleted"),
    ("bad id to delete", {"documents": [DOC], "delete": [1.5]}, "id must be a str or an int"),
]


@pytest.mark.parametrize(
    ("case", "kwargs", "fragment"), DOCUMENT_CASES, ids=[c[0] for c in DOCUMENT_CASES]
)
def test_bad_documents_are_refused_before_anything_is_queued(
    settings: Settings, queue_length: redis.Redis, case: str, kwargs: dict[str, Any], fragment: str
) -> None:
    queue = embed_queue("idle")
    before = queue_length.llen(queue)
    with EmbeddingProducer(idle(settings)) as producer, pytest.raises(InvalidInputError) as info:
        producer.submit_documents(**kwargs)
    assert fragment in str(info.value)
    assert queue_length.llen(queue) == before


@pytest.mark.parametrize(
    ("ids", "fragment"),
    [
        ([], "ids is empty"),
        ("abc", "wrap a single id in a list"),
        (["a", "a"], "duplicate id 'a'"),
        (["a", None], "item 1: id must be a str or an int"),
    ],
)
def test_bad_deletes_are_refused_before_anything_is_queued(
    settings: Settings, queue_length: redis.Redis, ids: Any, fragment: str
) -> None:
    queue = embed_queue("idle")
    before = queue_length.llen(queue)
    with EmbeddingProducer(idle(settings)) as producer, pytest.raises(InvalidInputError) as info:
        producer.delete(ids)
    assert fragment in str(info.value)
    assert queue_length.llen(queue) == before


def test_more_texts_than_the_batch_size_are_split_not_refused(
    settings: Settings, queue_length: redis.Redis
) -> None:
    # Given no worker for this model, the batches stay in its queue where we can count them
    queue = embed_queue("idle")
    before = queue_length.llen(queue)
    with EmbeddingProducer(idle(settings)) as producer:
        job = producer.submit([f"t{i}" for i in range(1000)], collection=unique("split"))
        assert job.status().total_batches == 4
    assert queue_length.llen(queue) - before == 4


def test_batches_are_also_cut_by_size_in_bytes(
    settings: Settings, queue_length: redis.Redis
) -> None:
    small = settings.model_copy(
        update={
            "model": settings.model.model_copy(update={"name": "idle"}),
            "worker": settings.worker.model_copy(update={"max_message_bytes": 64 * 1024}),
        }
    )
    with EmbeddingProducer(small) as producer:
        job = producer.submit(["w" * 1000] * 100, collection=unique("bytes"))  # 100 kB in all
        assert job.status().total_batches == 2  # under 64 kB each, not one of 100 texts
    bodies = [json.loads(raw)["body"] for raw in queue_length.lrange(embed_queue("idle"), 0, 1)]
    assert all(len(base64.b64decode(body)) < 64 * 1024 for body in bodies)


def test_a_collection_keeps_its_model(settings: Settings, queue_length: redis.Redis) -> None:
    # Given a collection built with another model than the producer's default
    collection = unique("bound")
    CollectionRegistry(queue_length).record(
        collection, {"name": "potion-base-8m", "source": "potion-base-8M", "dim": 256}
    )
    default_queue, bound_queue = embed_queue(settings.model.name), embed_queue("potion-base-8m")
    before = queue_length.llen(default_queue), queue_length.llen(bound_queue)
    with EmbeddingProducer(settings) as producer:
        # asking for another model is refused, naming both, before anything is queued
        with pytest.raises(ModelMismatchError) as info:
            producer.submit(OK, collection=collection, model=settings.model.name)
        message = str(info.value)
        assert "'potion-base-8m'" in message and f"'{settings.model.name}'" in message
        assert "embedq reindex" in message
        assert (queue_length.llen(default_queue), queue_length.llen(bound_queue)) == before
        # without a model, its batches go to the queue of the collection's own model
        producer.submit(OK, collection=collection)
    assert queue_length.llen(default_queue) == before[0]
    assert queue_length.llen(bound_queue) == before[1] + 1
    queue_length.delete(bound_queue)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"query": ""}, "non-empty str"),
        ({"query": "   "}, "non-empty str"),
        ({"query": None}, "non-empty str"),
        ({"query": "q", "k": 0}, "k must be an int from 1 to 16384"),
        ({"query": "q", "k": 20_000}, "k must be an int from 1 to 16384"),
        ({"query": "q", "k": True}, "k must be an int"),
        ({"query": "q", "collection": "bad name"}, "letter or _"),
    ],
)
def test_bad_search_arguments_are_refused(
    settings: Settings, kwargs: dict[str, Any], fragment: str
) -> None:
    with EmbeddingProducer(settings) as producer, pytest.raises(InvalidInputError, match=fragment):
        producer.search(**kwargs)
