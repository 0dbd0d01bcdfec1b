"""The message contract: item checks shared by producer and worker, ids, message shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from embedq.config.contract import (
    BatchMessage,
    SearchMessage,
    check_collection,
    check_id,
    check_metadata,
    check_text,
    check_version,
    derive_id,
    embed_queue,
    search_queue,
)
from embedq.config.errors import InvalidInputError
from embedq.config.settings import BatchSettings

LIMITS = BatchSettings(max_document_bytes=1024, max_metadata_bytes=64, max_id_length=16)


def test_derived_id_depends_on_model_and_text_only() -> None:
    assert derive_id("m", "hello") == derive_id("m", "hello")
    assert derive_id("m", "hello") != derive_id("m", "hello!")
    assert derive_id("m", "hello") != derive_id("other", "hello")
    assert len(derive_id("m", "hello")) == 32


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "must be a str"),
        (42, "must be a str"),
        (b"bytes", "must be a str"),
        ("", "empty"),
        ("  \n\t", "empty"),
        ("bad \ud800 surrogate", "lone surrogate"),
        ("nul\x00inside", "NUL"),
        ("x" * 1025, "1025 bytes as UTF-8, over the limit of 1024"),
        ("é" * 513, "1026 bytes"),
    ],
)
def test_bad_texts_are_rejected_with_the_reason(text: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        check_text(text, LIMITS)


def test_a_text_up_to_the_document_limit_passes_whole() -> None:
    # How many tokens it holds is the worker's to judge: the producer only bounds its size.
    assert check_text("x" * 1024, LIMITS) == "x" * 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (2.5, 2.5), (0, 0.0), (datetime(2026, 1, 1, tzinfo=UTC), 1767225600.0)],
)
def test_versions_are_numbers_or_aware_datetimes(value: Any, expected: float) -> None:
    assert check_version(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("3", "must be a number"),
        (True, "must be a number"),
        (None, "must be a number"),
        (float("nan"), "out of range"),
        (-1, "out of range"),
        (2**60, "out of range"),
        (datetime(2026, 1, 1), "without a timezone"),
    ],
)
def test_bad_versions_are_refused_with_what_a_version_may_be(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        check_version(value)


def test_unicode_text_passes_untouched() -> None:
    assert check_text("Dvořák in São Paulo, 37 °C", LIMITS) == "Dvořák in São Paulo, 37 °C"


@pytest.mark.parametrize(("value", "expected"), [("abc", "abc"), (7, "7"), ("ü-1", "ü-1")])
def test_ids_are_strings_or_ints(value: Any, expected: str) -> None:
    assert check_id(value, LIMITS) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (1.5, "str or an int"),
        (None, "str or an int"),
        (True, "str or an int"),
        ("", "1 to 16"),
        ("x" * 17, "1 to 16"),
        (["a"], "str or an int"),
    ],
)
def test_bad_ids_are_rejected(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        check_id(value, LIMITS)


def test_id_is_limited_in_bytes_as_the_primary_key_is() -> None:
    limits = BatchSettings(max_id_length=512)
    assert check_id("é" * 256, limits) == "é" * 256  # 512 bytes
    with pytest.raises(InvalidInputError, match="513 bytes"):
        check_id("é" * 256 + "x", limits)


def test_metadata_must_be_a_small_json_object() -> None:
    assert check_metadata({"a": [1, 2.5, None, True]}, LIMITS) == {"a": [1, 2.5, None, True]}
    assert check_metadata(None, LIMITS) == {}
    with pytest.raises(InvalidInputError, match="must be a dict"):
        check_metadata([1, 2], LIMITS)
    with pytest.raises(InvalidInputError, match="JSON-serialisable"):
        check_metadata({"when": object()}, LIMITS)
    with pytest.raises(InvalidInputError, match="JSON-serialisable"):
        check_metadata({"x": float("nan")}, LIMITS)
    with pytest.raises(InvalidInputError, match="over the limit of 64"):
        check_metadata({"blob": "x" * 100}, LIMITS)


@pytest.mark.parametrize("name", ["docs", "_x", "A1_b"])
def test_valid_collection_names(name: str) -> None:
    assert check_collection(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "has space", "x" * 256, None])
def test_invalid_collection_names(name: Any) -> None:
    with pytest.raises(InvalidInputError, match="letter or _"):
        check_collection(name)


def test_batch_message_checks_shape_not_items() -> None:
    message = BatchMessage.model_validate(
        {"job_id": "j", "batch": 0, "collection": "c", "model": "m", "texts": ["ok", ""]}
    )
    assert message.texts == ["ok", ""]  # items are judged one by one by the worker
    for bad in (
        {"job_id": "j", "batch": 0, "collection": "c", "model": "m", "texts": []},
        {"job_id": "j", "batch": -1, "collection": "c", "model": "m", "texts": ["a"]},
        {"job_id": "j", "batch": 0, "collection": "bad-name", "model": "m", "texts": ["a"]},
        {"job_id": "j", "batch": 0, "collection": "c", "model": "m", "texts": ["a"], "ids": []},
        {"job_id": "j", "batch": 0, "collection": "c", "model": "m", "texts": ["a"], "x": 1},
        {"v": 3, "job_id": "j", "batch": 0, "collection": "c", "model": "m", "texts": ["a"]},
        # a delete carries ids only
        {"job_id": "j", "batch": 0, "collection": "c", "model": "m", "delete": True},
        {
            "job_id": "j",
            "batch": 0,
            "collection": "c",
            "model": "m",
            "delete": True,
            "ids": ["a"],
            "texts": ["a"],
        },
        {
            "job_id": "j",
            "batch": 0,
            "collection": "c",
            "model": "m",
            "texts": ["a"],
            "versions": [1, 2],
        },
        {"job_id": "j", "batch": 0, "collection": "c", "model": "m", "texts": ["a"], "seq": 0},
    ):
        with pytest.raises(ValidationError):
            BatchMessage.model_validate(bad)


def test_search_message_rejects_blank_query_and_bad_k() -> None:
    with pytest.raises(ValidationError):
        SearchMessage.model_validate({"query": " ", "collection": "c", "model": "m"})
    with pytest.raises(ValidationError):
        SearchMessage.model_validate({"query": "q", "k": 0, "collection": "c", "model": "m"})


def test_queues_are_per_model_and_separate_for_search() -> None:
    assert embed_queue("a") != embed_queue("b")
    assert embed_queue("a") != search_queue("a")
