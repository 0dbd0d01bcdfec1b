"""``python -m bench [--quick] [--out DIR] [--model SOURCE] [sizes...]``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.plan import DEFAULT_OUT, FULL, QUICK, Plan
from bench.report import add_findings, plot, table, write_json
from bench.suite import run
from embedq.config.models import model_name_for
from embedq.config.settings import BUNDLED_MODEL


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny inputs (well under 2 minutes)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for latest.json and latest.png"
    )
    parser.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help="model source: bundled (default), a local Model2Vec folder or a cached hub id",
    )
    parser.add_argument("--model-name", help="embedq's short name for it (default: derived)")
    sizes = parser.add_argument_group("sizes (defaults: full run; --quick: tiny)")
    sizes.add_argument("--short", type=int, help=f"short sentences ({FULL['short']})")
    sizes.add_argument("--passages", type=int, help=f"~300-token passages ({FULL['passages']})")
    sizes.add_argument("--small-jobs", type=int, help=f"one-text jobs ({FULL['small_jobs']})")
    sizes.add_argument(
        "--queued-jobs", type=int, help=f"one-text jobs in the backlog ({FULL['queued_jobs']})"
    )
    sizes.add_argument("--batch-sizes", type=_ints, help="EMBEDQ_BATCH__SIZE values (256,1024)")
    sizes.add_argument("--workers", type=_ints, help="worker process counts (1,2)")
    sizes.add_argument(
        "--memory-sizes", type=_ints, help="texts of the two producer-memory files (10000,1000000)"
    )
    sizes.add_argument(
        "--client-batch",
        type=int,
        help="rows per call of the in-process path and raw upsert (1000)",
    )
    sizes.add_argument(
        "--repeats", type=int, help="measurements of each throughput, fastest kept (2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data and logs")
    return parser


def _plan(args: argparse.Namespace) -> Plan:
    base = QUICK if args.quick else FULL
    source = args.model
    if source != BUNDLED_MODEL and Path(source).expanduser().is_dir():
        # Workers run in a temporary folder: hand them an absolute path.
        source = str(Path(source).expanduser().resolve())

    def size(name: str) -> int:
        value = getattr(args, name)
        return int(base[name] if value is None else value)

    def sizes(name: str) -> tuple[int, ...]:
        value = getattr(args, name)
        return tuple(base[name] if value is None else value)

    memory = sizes("memory_sizes")
    if len(memory) != 2:
        raise SystemExit("--memory-sizes takes two sizes, e.g. 10000,1000000")
    return Plan(
        quick=args.quick,
        out=args.out,
        model_source=source,
        model_name=args.model_name or model_name_for(source),
        short=size("short"),
        passages=size("passages"),
        small_jobs=size("small_jobs"),
        queued_jobs=size("queued_jobs"),
        batch_sizes=sizes("batch_sizes"),
        workers=sizes("workers"),
        memory_sizes=(memory[0], memory[1]),
        client_batch=size("client_batch"),
        repeats=max(1, size("repeats")),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = _plan(args)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[bench {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    results = add_findings(run(plan, say, keep=args.keep))
    json_path, png_path = plan.out / "latest.json", plan.out / "latest.png"
    write_json(results, json_path)
    plot(results, png_path)
    print(table(results))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
