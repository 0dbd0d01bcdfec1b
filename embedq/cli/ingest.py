"""``embedq ingest``: check a whole file, queue it, and follow the job with progress bars."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Never

from embedq.cli.exits import EXIT_FAILED, fail
from embedq.config.errors import (
    InvalidInputError,
    JobTimeoutError,
)
from embedq.producer.job import Job
from embedq.producer.producer import EmbeddingProducer, Record
from embedq.producer.readers import Format, check_record, detect_format, read_records

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["delete_ids", "ingest"]


def ingest(producer: EmbeddingProducer, args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file")
    fmt: Format = detect_format(path) if args.format == "auto" else args.format
    limits = producer.settings.batch

    def raw() -> Iterator[Record | InvalidInputError]:
        fields = (args.text_field, args.id_field, args.metadata_field, args.version_field)
        for record in read_records(path, fmt, *fields):
            try:
                checked = check_record(record, limits)
                if args.documents and checked.id is None:
                    raise InvalidInputError(
                        f"line {record.line}: a document needs an id (field {args.id_field!r})"
                    )
                try:
                    producer.check_weight(checked)
                except InvalidInputError as exc:
                    raise InvalidInputError(f"line {record.line}: {exc}") from None
                yield checked
            except InvalidInputError as exc:
                yield exc

    # First pass: check everything (constant memory) so that a bad line queues nothing.
    total, problems = 0, []
    for item in raw():
        if isinstance(item, InvalidInputError):
            problems.append(str(item))
        else:
            total += 1
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        if not args.skip_invalid:
            raise InvalidInputError(
                f"{path}: {len(problems)} invalid records; nothing was queued (fix them, or "
                f"pass --skip-invalid to queue the {total} valid ones):\n  {shown}{more}"
            )
        print(f"skipping {len(problems)} invalid records:\n  {shown}{more}", file=sys.stderr)
    if total == 0:
        raise InvalidInputError(f"{path}: no texts to ingest")

    bar = _bar(total, "queued", args.quiet)

    def records() -> Iterator[Record]:
        for item in raw():
            if not isinstance(item, InvalidInputError):
                bar.update(1)
                yield item

    job = producer.submit_records(
        records(), collection=args.collection, model=args.model, documents=args.documents
    )
    bar.close()
    print(f"job {job.id}: {total} texts queued", file=sys.stderr)
    print(job.id)
    if args.wait:
        return _wait(job, total, args.timeout, args.quiet)
    return 0


def delete_ids(producer: EmbeddingProducer, args: argparse.Namespace) -> int:
    """``embedq delete``: the ids given, and those of ``--file`` (one per line)."""
    ids: list[str] = list(args.ids)
    if args.file is not None:
        if not args.file.is_file():
            raise InvalidInputError(f"{args.file} is not a file")
        with args.file.open(encoding="utf-8") as handle:
            ids += [line.rstrip("\r\n") for line in handle if line.strip()]
    if not ids:
        raise InvalidInputError("no ids to delete; name them, or pass --file FILE")
    job = producer.delete(ids, collection=args.collection)
    print(f"job {job.id}: {len(ids)} ids queued for deletion", file=sys.stderr)
    print(job.id)
    if args.wait:
        return _wait(job, len(ids), args.timeout, args.quiet, unit="deleted")
    return 0


def _wait(job: Job, total: int, timeout: float | None, quiet: bool, unit: str = "stored") -> int:
    bar = _bar(total, unit, quiet)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = job.status()
        bar.n = status.texts_stored + status.texts_rejected
        bar.refresh()
        if status.finished:
            break
        if deadline is not None and time.monotonic() > deadline:
            bar.close()
            raise JobTimeoutError(
                f"{status.summary()} after {timeout}s; check later: embedq status {job.id}"
            )
        time.sleep(0.2)
    bar.close()
    failure = status.failure()
    if failure is not None:
        return fail(failure, EXIT_FAILED)
    print(status.summary(), file=sys.stderr)
    return 0


def _bar(total: int, unit: str, quiet: bool) -> tqdm[Never]:
    from tqdm import tqdm

    return tqdm(total=total, unit=" texts", desc=unit, disable=quiet, file=sys.stderr)
