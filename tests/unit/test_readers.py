"""Input files for `embedq ingest`: JSONL, JSON arrays, CSV, plain text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedq.config.errors import InvalidInputError
from embedq.config.settings import BatchSettings
from embedq.producer.readers import check_record, detect_format, read_records
from embedq.producer.records import Record

LIMITS = BatchSettings()


def test_formats_are_detected_by_suffix(tmp_path: Path) -> None:
    assert detect_format(tmp_path / "a.jsonl") == "jsonl"
    assert detect_format(tmp_path / "a.json") == "jsonl"
    assert detect_format(tmp_path / "a.csv") == "csv"
    assert detect_format(tmp_path / "a.txt") == "text"


def test_jsonl_other_fields_become_metadata(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": 7, "text": "hello", "topic": "x"}\n\n{"text": "bye", "metadata": {"a": 1}}\n'
    )
    records = [check_record(r, LIMITS) for r in read_records(path, "jsonl")]
    assert records == [Record("hello", "7", {"topic": "x"}), Record("bye", None, {"a": 1})]


def test_json_array_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "one"}, {"text": "two", "id": "b"}]))
    assert [check_record(r, LIMITS) for r in read_records(path, "jsonl")] == [
        Record("one", None, None),
        Record("two", "b", None),
    ]


def test_bad_lines_are_reported_with_their_line_number(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n[1, 2]\n{"body": "no text"}\n{"text": ""}\n')
    errors = []
    for raw in read_records(path, "jsonl"):
        try:
            check_record(raw, LIMITS)
        except InvalidInputError as exc:
            errors.append(str(exc))
    assert [e.split(":")[0] for e in errors] == ["line 2", "line 3", "line 4", "line 5"]
    assert "--text-field" in errors[2]


def test_csv_needs_its_text_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,body\n1,hello\n")
    with pytest.raises(InvalidInputError, match="--text-field"):
        list(read_records(path, "csv"))
    records = [check_record(r, LIMITS) for r in read_records(path, "csv", text_field="body")]
    assert records == [Record("hello", "1", None)]


def test_invalid_utf8_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_bytes(b"fine line\nbad \xff byte\n")
    outcomes = []
    for raw in read_records(path, "text"):
        try:
            outcomes.append(check_record(raw, LIMITS)[0])
        except InvalidInputError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == "fine line"
    assert outcomes[1].startswith("line 2") and "lone surrogate" in outcomes[1]
