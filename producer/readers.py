"""Reading input files for ``embedq ingest``: JSONL, CSV, or plain text (one text per line).

Readers stream: they yield one raw record at a time, so a file of any size is read in constant
memory. Checking the values is left to :func:`check_record`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from embedq.config.errors import InvalidInputError
from embedq.config.settings import BatchSettings
from embedq.producer.records import Record, check_one

__all__ = ["Format", "RawRecord", "check_record", "detect_format", "read_records"]

Format = Literal["jsonl", "csv", "text"]


@dataclass(frozen=True)
class RawRecord:
    """One record as read, with where it came from (1-based line, row or array position)."""

    line: int
    text: Any
    id: Any = None
    metadata: Any = None
    version: Any = None


def detect_format(path: Path) -> Format:
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix in {".csv", ".tsv"}:
        return "csv"
    return "text"


def read_records(
    path: Path,
    fmt: Format,
    text_field: str = "text",
    id_field: str = "id",
    metadata_field: str = "metadata",
    version_field: str | None = None,
) -> Iterator[RawRecord]:
    """Yield the records of ``path``. Fields other than text, id and version become metadata
    when the record has no ``metadata_field`` of its own."""
    if fmt == "text":
        with path.open(encoding="utf-8", errors="surrogateescape") as handle:
            for number, line in enumerate(handle, 1):
                text = line.rstrip("\r\n")
                if text.strip():
                    yield RawRecord(number, text)
        return
    if fmt == "jsonl" and _is_json_array(path):
        # A .json file holding one array of records (read whole: such files are small).
        try:
            items = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        for number, obj in enumerate(items, 1):
            yield _from_mapping(number, obj, text_field, id_field, metadata_field, version_field)
        return
    if fmt == "jsonl":
        with path.open(encoding="utf-8", errors="surrogateescape") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield RawRecord(number, InvalidInputError(f"not valid JSON ({exc.msg})"))
                    continue
                yield _from_mapping(
                    number, obj, text_field, id_field, metadata_field, version_field
                )
        return
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
        reader = csv.DictReader(handle, dialect=dialect)
        if reader.fieldnames is None or text_field not in reader.fieldnames:
            raise InvalidInputError(
                f"{path}: the CSV header has no {text_field!r} column (columns: "
                f"{reader.fieldnames}); name the text column with --text-field"
            )
        for row in reader:
            yield _from_mapping(
                reader.line_num, row, text_field, id_field, metadata_field, version_field
            )


def _is_json_array(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    return head.startswith(b"[")


def _from_mapping(
    number: int,
    obj: Any,
    text_field: str,
    id_field: str,
    metadata_field: str,
    version_field: str | None = None,
) -> RawRecord:
    if not isinstance(obj, dict):
        return RawRecord(number, InvalidInputError("a record must be a JSON object"))
    if text_field not in obj:
        return RawRecord(
            number, InvalidInputError(f"no {text_field!r} field; name it with --text-field")
        )
    rest = {k: v for k, v in obj.items() if k not in {text_field, id_field, version_field}}
    metadata = rest.pop(metadata_field) if metadata_field in rest else (rest or None)
    key = obj.get(id_field)
    version = None if version_field is None else obj.get(version_field)
    if version_field is not None and isinstance(version, str):
        # CSV has no numbers: a version column is read as one.
        version = _number(version)
    return RawRecord(number, obj[text_field], None if key in (None, "") else key, metadata, version)


def _number(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value  # refused by the check, with the value named


def check_record(raw: RawRecord, limits: BatchSettings) -> Record:
    """The checked record, or :class:`InvalidInputError` naming the line and the problem."""
    try:
        if isinstance(raw.text, InvalidInputError):
            raise raw.text
        return check_one(raw.text, raw.id, raw.metadata, limits, raw.version)
    except InvalidInputError as exc:
        raise InvalidInputError(f"line {raw.line}: {exc}") from None
