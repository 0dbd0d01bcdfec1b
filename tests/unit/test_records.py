"""Producer-side items and batches, without any server."""

from __future__ import annotations

import pytest

from embedq.config.errors import InvalidInputError
from embedq.config.settings import BatchSettings
from embedq.producer.records import Record, batches, check_items

LIMITS = BatchSettings()


def test_checked_items_keep_order_ids_as_str_and_empty_metadata_as_none() -> None:
    records = check_items(["a", "b"], [1, "two"], [{"k": 1}, None], LIMITS)
    assert records == [Record("a", "1", {"k": 1}), Record("b", "two", None)]


def test_every_problem_is_reported_and_nothing_returned() -> None:
    with pytest.raises(InvalidInputError) as info:
        check_items(["", "ok", " "], None, None, LIMITS)
    assert "2 of 3 items are invalid" in str(info.value)


def test_batches_respect_count_and_keep_every_record_in_order() -> None:
    records: list[Record] = [Record(f"t{i}", None, None) for i in range(1000)]
    chunks = list(batches(records, 256, 10**9))
    assert [len(c) for c in chunks] == [256, 256, 256, 232]
    assert [r for c in chunks for r in c] == records


def test_batches_are_cut_by_bytes_too() -> None:
    records: list[Record] = [Record("x" * 1000, None, None)] * 10
    chunks = list(batches(records, 256, 2_500))
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2]


def test_a_record_no_message_can_carry_is_refused_naming_the_setting() -> None:
    records: list[Record] = [Record("x" * 5000, None, None), Record("y", None, None)]
    with pytest.raises(InvalidInputError, match="EMBEDQ_WORKER__MAX_MESSAGE_BYTES"):
        list(batches(records, 256, 1000))


def test_batches_stream_without_reading_ahead() -> None:
    consumed = 0

    def source() -> object:
        nonlocal consumed
        for i in range(10_000):
            consumed += 1
            yield Record(f"t{i}", None, None)

    first = next(batches(source(), 100, 10**9))  # type: ignore[arg-type]
    assert len(first) == 100 and consumed == 101
