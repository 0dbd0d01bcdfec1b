"""The ``embedq`` command line.

``ingest``, ``search``, ``status`` and ``models`` need only Redis (or nothing); ``worker``,
``standalone`` and ``reindex`` hand over to the worker side (imported only when asked for, so
the producer stays light).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from embedq.cli.deadletters import dead_letters
from embedq.cli.exits import EXIT_FAILED, EXIT_INPUT, EXIT_TIMEOUT, EXIT_UNAVAILABLE, fail
from embedq.cli.extras import require
from embedq.cli.ingest import delete_ids, ingest
from embedq.cli.lookup import search, status
from embedq.cli.models import list_models
from embedq.cli.processes import run_flower, run_worker
from embedq.cli.reindex import run_reindex
from embedq.config.errors import (
    BrokerUnavailableError,
    ConfigError,
    EmbedqError,
    InvalidInputError,
    JobNotFoundError,
    JobTimeoutError,
)
from embedq.config.settings import load_settings
from embedq.producer.producer import EmbeddingProducer

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="queue the texts of a JSONL, CSV or text file")
    ingest.add_argument("file", type=Path)
    ingest.add_argument("--format", choices=["auto", "jsonl", "csv", "text"], default="auto")
    ingest.add_argument(
        "--collection", help="Milvus collection (default EMBEDQ_MILVUS__COLLECTION)"
    )
    ingest.add_argument(
        "--model", help="model name for a new collection (default: the collection's own)"
    )
    ingest.add_argument("--text-field", default="text", help="JSONL/CSV field holding the text")
    ingest.add_argument("--id-field", default="id", help="field holding the id (optional)")
    ingest.add_argument("--metadata-field", default="metadata", help="field holding metadata")
    ingest.add_argument(
        "--documents",
        action="store_true",
        help="each record is a document (an id is required): split into chunks, replacing "
        "the document's earlier version",
    )
    ingest.add_argument(
        "--version-field",
        help="field holding each record's version (a number: the greatest one wins)",
    )
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
    search.add_argument(
        "--per-document", action="store_true", help="the best chunk of each document only"
    )
    search.add_argument("--json", action="store_true", help="print JSON for scripts")

    delete = sub.add_parser("delete", help="delete documents (or texts) by id, as a job")
    delete.add_argument("ids", nargs="*", help="ids to delete")
    delete.add_argument("--file", type=Path, help="a file of ids to delete, one per line")
    delete.add_argument("--collection", help="default EMBEDQ_MILVUS__COLLECTION")
    delete.add_argument("--wait", action="store_true", help="wait until every id is deleted")
    delete.add_argument("--timeout", type=float, default=None, help="seconds --wait waits")
    delete.add_argument("--quiet", action="store_true", help="no progress bar")

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

    reindex = sub.add_parser(
        "reindex",
        help="re-embed every text of a collection with another model, into a new collection",
    )
    reindex.add_argument("--from", dest="source", required=True, help="collection to read")
    reindex.add_argument("--to", dest="target", required=True, help="collection to fill")
    reindex.add_argument("--model", required=True, help="model name (see `embedq models`)")
    reindex.add_argument("--page-size", type=int, default=1000, help="texts read per page")
    reindex.add_argument(
        "--restart", action="store_true", help="forget an interrupted run and start over"
    )
    reindex.add_argument("--quiet", action="store_true", help="no progress bar")

    models = sub.add_parser("models", help="the models these settings know, by name")
    models.add_argument("--json", action="store_true")

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
    standalone.add_argument(
        "--flower", action="store_true", help="also run Flower (EMBEDQ_FLOWER__* settings)"
    )
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
            require("worker", "worker")
            return run_worker(settings, argv[1:])
        command = args.command
        if command == "flower":
            require(command, "worker", "monitor")
            return run_flower(settings)
        if command == "models":
            return list_models(settings, args)
        if command == "reindex":
            require(command, "worker")
            return run_reindex(settings, args)
        if command == "standalone":
            require(command, "worker", "local")
            from embedq.stack.standalone import run_standalone

            return run_standalone(
                settings, data_dir=args.data_dir, workers=args.workers, flower=args.flower
            )
        with EmbeddingProducer(settings) as producer:
            if command == "ingest":
                return ingest(producer, args)
            if command == "delete":
                return delete_ids(producer, args)
            if command == "search":
                return search(producer, args)
            if command == "dead-letters":
                return dead_letters(producer, args)
            return status(producer, args)
    except (InvalidInputError, ConfigError, JobNotFoundError) as exc:
        return fail(exc, EXIT_INPUT)
    except BrokerUnavailableError as exc:
        return fail(exc, EXIT_UNAVAILABLE)
    except JobTimeoutError as exc:
        return fail(exc, EXIT_TIMEOUT)
    except EmbedqError as exc:
        return fail(exc, EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
