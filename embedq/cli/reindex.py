"""``embedq reindex``: move a collection to another model (runs where the worker side is
installed: it reads the source collection from Milvus)."""

from __future__ import annotations

import argparse
import sys

from embedq.cli.exits import EXIT_FAILED
from embedq.config.errors import ConfigError
from embedq.config.settings import Settings

__all__ = ["run_reindex"]


def run_reindex(settings: Settings, args: argparse.Namespace) -> int:
    try:
        from embedq.reindex import reindex
    except ImportError as exc:
        raise ConfigError(
            f"embedq reindex reads Milvus and needs the worker extras ({exc}); "
            "pip install 'embedq[worker]'"
        ) from None
    from tqdm import tqdm

    with tqdm(
        desc=f"re-embedded with {args.model}", unit=" texts", disable=args.quiet, file=sys.stderr
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = reindex(
            settings,
            args.source,
            args.target,
            args.model,
            page_size=args.page_size,
            progress=progress,
            restart=args.restart,
        )
    resumed = f" (resumed after id {result.resumed_after!r})" if result.resumed_after else ""
    print(
        f"reindexed {result.source} -> {result.target} with model {result.model}{resumed}: "
        f"{result.stored} of {result.total} texts stored, {result.rejected} rejected, "
        f"{result.failed_batches} batches failed"
    )
    for line in result.refused:
        print(f"  not queued: {line}", file=sys.stderr)
    if result.rejected or result.failed_batches:
        print("see `embedq dead-letters list` for what was not stored", file=sys.stderr)
        return EXIT_FAILED
    return 0
