"""The ``embedq`` command line.

``ingest``, ``search`` and ``status`` need only Redis; ``worker`` and ``standalone`` hand over to
the worker side (imported only when asked for, so the producer stays light).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Never

from config.contract import embed_queue, search_queue
from config.deadletters import DeadLetter
from config.errors import (
    BrokerUnavailableError,
    ConfigError,
    EmbedqError,
    InvalidInputError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
)
from config.settings import Settings, load_settings
from producer.job import Job
from producer.producer import EmbeddingProducer, Record
from producer.readers import Format, check_record, detect_format, read_records

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["main"]

EXIT_FAILED, EXIT_INPUT, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="queue the texts of a JSONL, CSV or text file")
    ingest.add_argument("file", type=Path)
    ingest.add_argument("--format", choices=["auto", "jsonl", "csv", "text"], default="auto")
    ingest.add_argument(
        "--collection", help="Milvus collection (default EMBEDQ_MILVUS__COLLECTION)"
    )
    ingest.add_argument("--text-field", default="text", help="JSONL/CSV field holding the text")
    ingest.add_argument("--id-field", default="id", help="field holding the id (optional)")
    ingest.add_argument("--metadata-field", default="metadata", help="field holding metadata")
    ingest.add_argument(
        "--skip-invalid", action="store_true", help="report bad lines, queue the rest"
    )
    ingest.add_argument("--wait", action="store_true", help="wait until every text is stored")
    ingest.add_argument("--timeout", type=float, default=None, help="seconds --wait waits")
    ingest.add_argument("--quiet", action="store_true", help="no progress bars")

    search = sub.add_parser("search", help="the stored texts nearest to a query")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--collection")
    search.add_argument("--filter", default="", help='Milvus filter, e.g. metadata["topic"] == "x"')
    search.add_argument("--json", action="store_true", help="print JSON for scripts")

    status = sub.add_parser("status", help="progress of a job")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true")

    dead = sub.add_parser(
        "dead-letters", help="messages that could not be stored: list, show, requeue"
    )
    dead_sub = dead.add_subparsers(dest="action", required=True)
    listing = dead_sub.add_parser("list", help="newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    show = dead_sub.add_parser("show", help="one record: why, when, and the message")
    show.add_argument("letter_id")
    show.add_argument(
        "--body", action="store_true", help="print only the body, to edit and requeue"
    )
    requeue = dead_sub.add_parser("requeue", help="queue the items again (after fixing them)")
    requeue.add_argument("letter_id")
    requeue.add_argument(
        "--body", type=Path, help="JSON file with the fixed body (from show --body)"
    )
    requeue.add_argument("--wait", action="store_true")
    requeue.add_argument("--timeout", type=float, default=None)
    drop = dead_sub.add_parser("drop", help="delete a record")
    drop.add_argument("letter_id")

    sub.add_parser("flower", help="run Flower, the Celery dashboard (EMBEDQ_FLOWER__* settings)")

    worker = sub.add_parser(
        "worker", help="run a Celery worker (extra arguments go to `celery worker`)"
    )
    worker.add_argument("celery_args", nargs="*", help="e.g. --concurrency 4 -n node1@%%h")

    standalone = sub.add_parser(
        "standalone", help="run Redis, a Milvus Lite server and workers on this machine"
    )
    standalone.add_argument("--data-dir", type=Path, help="default EMBEDQ_STANDALONE__DATA_DIR")
    standalone.add_argument("--workers", type=int, help="default EMBEDQ_STANDALONE__WORKERS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `embedq worker ...` passes every later argument to Celery untouched (argparse would try
    # to read options such as --concurrency itself).
    is_worker = bool(argv) and argv[0] == "worker" and not {"-h", "--help"} & set(argv[1:2])
    args = None if is_worker else _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args is None:
            return run_worker(settings, argv[1:])
        command = args.command
        if command == "flower":
            return run_flower(settings)
        if command == "standalone":
            from worker.standalone import run_standalone

            return run_standalone(settings, data_dir=args.data_dir, workers=args.workers)
        with EmbeddingProducer(settings) as producer:
            if command == "ingest":
                return ingest(producer, args)
            if command == "search":
                return search(producer, args)
            if command == "dead-letters":
                return dead_letters(producer, args)
            return status(producer, args)
    except (InvalidInputError, ConfigError, JobNotFoundError) as exc:
        return _fail(exc, EXIT_INPUT)
    except BrokerUnavailableError as exc:
        return _fail(exc, EXIT_UNAVAILABLE)
    except JobTimeoutError as exc:
        return _fail(exc, EXIT_TIMEOUT)
    except EmbedqError as exc:
        return _fail(exc, EXIT_FAILED)
    except KeyboardInterrupt:
        return 130


def _fail(exc: Exception, code: int) -> int:
    print(f"embedq: error: {exc}", file=sys.stderr)
    return code


def ingest(producer: EmbeddingProducer, args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file")
    fmt: Format = detect_format(path) if args.format == "auto" else args.format
    limits = producer.settings.batch

    def raw() -> Iterator[Record | InvalidInputError]:
        fields = (args.text_field, args.id_field, args.metadata_field)
        for record in read_records(path, fmt, *fields):
            try:
                yield check_record(record, limits)
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

    job = producer.submit_records(records(), collection=args.collection)
    bar.close()
    print(f"job {job.id}: {total} texts queued", file=sys.stderr)
    print(job.id)
    if args.wait:
        return _wait(job, total, args.timeout, args.quiet)
    return 0


def _wait(job: Job, total: int, timeout: float | None, quiet: bool) -> int:
    bar = _bar(total, "stored", quiet)
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
    try:
        job.wait(timeout=0)
    except JobFailedError as exc:
        return _fail(exc, EXIT_FAILED)
    print(status.summary(), file=sys.stderr)
    return 0


def _bar(total: int, unit: str, quiet: bool) -> tqdm[Never]:
    from tqdm import tqdm

    return tqdm(total=total, unit=" texts", desc=unit, disable=quiet, file=sys.stderr)


def search(producer: EmbeddingProducer, args: argparse.Namespace) -> int:
    hits = producer.search(args.query, k=args.k, collection=args.collection, filter=args.filter)
    if args.json:
        print(json.dumps([hit.model_dump() for hit in hits], ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        meta = json.dumps(hit.metadata, ensure_ascii=False) if hit.metadata else ""
        print(f"{rank}. [{hit.score:.3f}] {hit.text}  (id {hit.id}) {meta}".rstrip())
    return 0


def status(producer: EmbeddingProducer, args: argparse.Namespace) -> int:
    state = producer.job(args.job_id).status()
    if args.json:
        fields = {
            "job_id": state.job_id,
            "collection": state.collection,
            "total_batches": state.total_batches,
            "batches_done": state.batches_done,
            "batches_failed": state.batches_failed,
            "texts_total": state.texts_total,
            "texts_stored": state.texts_stored,
            "texts_rejected": state.texts_rejected,
            "finished": state.finished,
            "ok": state.ok,
            "failures": {str(k): v for k, v in state.failures.items()},
            "errors": state.errors,
        }
        print(json.dumps(fields, ensure_ascii=False))
    else:
        print(state.summary() + (" (finished)" if state.finished else " (running)"))
        for batch, why in sorted(state.failures.items()):
            print(f"  batch {batch} failed: {why}")
        for line in state.errors:
            print(f"  {line}")
    return 0 if not state.finished or state.ok else EXIT_FAILED


def dead_letters(producer: EmbeddingProducer, args: argparse.Namespace) -> int:
    store = producer.dead_letters
    if args.action == "list":
        letters = store.list(args.limit)
        if args.json:
            print(json.dumps([_letter_summary(letter) for letter in letters], ensure_ascii=False))
            return 0
        print(f"{store.count()} dead letters" + (f", newest {len(letters)}:" if letters else ""))
        for letter in letters:
            where = f" job {letter.job_id} batch {letter.batch}" if letter.job_id else ""
            print(
                f"{letter.id}  {letter.when_iso()}  {letter.kind:<15}{where}  {letter.reason[:120]}"
            )
        return 0
    if args.action == "requeue":
        body = None
        if args.body is not None:
            try:
                body = json.loads(args.body.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InvalidInputError(f"{args.body}: not a readable JSON file ({exc})") from None
        job = producer.requeue(args.letter_id, body)
        print(f"requeued as job {job.id}", file=sys.stderr)
        print(job.id)
        if args.wait:
            job.wait(timeout=args.timeout)
            print(job.status().summary(), file=sys.stderr)
        return 0
    found = store.get(args.letter_id)
    if found is None:
        raise JobNotFoundError(
            f"no dead letter {args.letter_id!r} (see `embedq dead-letters list`)"
        )
    if args.action == "drop":
        store.remove(found.id)
        print(f"dropped {found.id}")
        return 0
    if args.body:
        print(json.dumps(found.body, ensure_ascii=False, indent=2))
        return 0
    record = _letter_summary(found) | {"body": found.body, "raw_base64": found.raw}
    print(json.dumps(record, ensure_ascii=False, indent=2))
    return 0


def _letter_summary(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "kind": letter.kind,
        "when": letter.when_iso(),
        "reason": letter.reason,
        "task": letter.task,
        "queue": letter.queue,
        "job_id": letter.job_id,
        "batch": letter.batch,
        "size": letter.size,
        "requeueable": letter.requeueable,
    }


def run_flower(settings: Settings) -> int:
    """``celery -A worker flower`` on the configured address, with basic auth passed through
    the environment (a command-line argument would show the password in `ps`)."""
    flower = settings.flower
    env = dict(os.environ)
    if flower.user is not None and flower.password is not None:
        env["FLOWER_BASIC_AUTH"] = f"{flower.user}:{flower.password.get_secret_value()}"
    elif flower.address not in {"127.0.0.1", "localhost", "::1"}:
        raise ConfigError(
            f"EMBEDQ_FLOWER__ADDRESS={flower.address} exposes Flower beyond this machine: set "
            "EMBEDQ_FLOWER__USER and EMBEDQ_FLOWER__PASSWORD for basic auth"
        )
    argv = [sys.executable, "-m", "celery", "-A", "worker", "flower",
            f"--address={flower.address}", f"--port={flower.port}"]  # fmt: skip
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - fixed argv, no shell
    return 0  # pragma: no cover - execve does not return


def run_worker(settings: Settings, celery_args: Sequence[str]) -> int:
    """``embedq worker`` = ``celery -A worker worker`` with embedq's queues and concurrency."""
    argv = ["celery", "-A", "worker", "worker", "--loglevel", settings.worker.log_level]
    extra = list(celery_args)
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in extra):
        name = settings.model.name
        argv += ["-Q", f"{embed_queue(name)},{search_queue(name)}"]
    if settings.worker.concurrency and not any(
        a.startswith(("-c", "--concurrency")) for a in extra
    ):
        argv += ["--concurrency", str(settings.worker.concurrency)]
    argv += extra
    sys.stdout.flush()
    os.execvp(sys.executable, [sys.executable, "-m", *argv])  # noqa: S606 - fixed argv, no shell
    return 0  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main())
