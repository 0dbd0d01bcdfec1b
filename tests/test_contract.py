"""The message contract: item checks shared by producer and worker, ids, message shapes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from config.contract import (
    MAX_TEXT_BYTES,
    BatchMessage,
    SearchMessage,
    check_collection,
    check_id,
    check_metadata,
    check_text,
    derive_id,
    embed_queue,
    search_queue,
)
from config.errors import InvalidInputError
from config.settings import BatchSettings

LIMITS = BatchSettings(max_text_chars=100, max_metadata_bytes=64, max_id_length=16)


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
        ("x" * 101, "over the limit"),
    ],
)
def test_bad_texts_are_rejected_with_the_reason(text: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        check_text(text, LIMITS)


def test_overlong_text_is_truncated_when_set_to() -> None:
    limits = LIMITS.model_copy(update={"overlong": "truncate"})
    assert check_text("x" * 150, limits) == "x" * 100


def test_text_over_milvus_byte_limit_is_caught_even_under_char_limit() -> None:
    limits = BatchSettings(max_text_chars=65_535)
    with pytest.raises(InvalidInputError, match="bytes"):
        check_text("é" * 40_000, limits)  # 40k chars, 80k bytes
    truncated = check_text("é" * 40_000, limits.model_copy(update={"overlong": "truncate"}))
    assert len(truncated.encode()) <= MAX_TEXT_BYTES


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
        {"v": 2, "job_id": "j", "batch": 0, "collection": "c", "model": "m", "texts": ["a"]},
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
