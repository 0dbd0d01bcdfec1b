"""What one benchmark run measures: corpus sizes, worker counts, batch sizes and the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.corpus import ROOT

__all__ = ["DEFAULT_OUT", "FULL", "QUICK", "Plan"]

DEFAULT_OUT = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Plan:
    quick: bool
    out: Path
    model_source: str
    model_name: str
    #: Texts in the short-sentence and the ~300-token passage corpora.
    short: int
    passages: int
    #: One-text jobs in each phase (one at a time, then back to back).
    small_jobs: int
    #: One-text jobs queued while the workers are paused, then drained.
    queued_jobs: int
    #: Producer batch sizes (EMBEDQ_BATCH__SIZE) and worker processes (celery --concurrency).
    batch_sizes: tuple[int, ...]
    workers: tuple[int, ...]
    #: Records in the two files `embedq ingest` streams for the producer-memory comparison.
    memory_sizes: tuple[int, int]
    #: Rows per encode/insert call of the in-process path and per upsert of the raw-upsert limit.
    client_batch: int
    #: Each throughput (limits, in-process path, embedq runs, the backlog) is measured this many
    #: times and the fastest kept, the same for every path: noise on a shared machine only
    #: ever adds time.
    repeats: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


#: About 15 minutes on 2 cores. Pass --batch-sizes 64,256,1024 to see smaller batches too.
FULL: dict[str, Any] = {
    "short": 50_000,
    "passages": 20_000,
    "small_jobs": 500,
    "queued_jobs": 15_000,
    "batch_sizes": (256, 1024),
    "workers": (1, 2),
    "memory_sizes": (10_000, 1_000_000),
    "client_batch": 1_000,
    "repeats": 2,
}

#: Tiny: checks that every part runs (its figures say little).
QUICK: dict[str, Any] = {
    "short": 2_000,
    "passages": 200,
    "small_jobs": 20,
    "queued_jobs": 50,
    "batch_sizes": (64, 256),
    "workers": (1, 2),
    "memory_sizes": (1_000, 10_000),
    "client_batch": 500,
    "repeats": 1,
}
