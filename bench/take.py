"""How a worker takes messages: embedq's atomic take (one Lua script, idle consumers woken by
the queue's bell) beside kombu's own BRPOP (``EMBEDQ_WORKER__ATOMIC_FETCH=false``), which a
node killed mid-take can lose a batch to. Measured in turns at the same point of one run, since
this VM's speed drifts between the phases of a longer one.

``python -m bench.take`` runs this comparison alone (a few minutes) and writes
``bench/results/take.json``; ``make bench`` runs it too."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import corpus as corpora
from bench.corpus import Corpus
from bench.measure import embedq_ingest, small_jobs
from bench.plan import DEFAULT_OUT, FULL
from bench.stack import Stack
from embedq.config.settings import BUNDLED_MODEL, ModelSettings
from embedq.worker.encoder import Model2VecEncoder, ModelInfo, load_static_model

__all__ = ["compare"]

MODES: dict[str, dict[str, str]] = {
    "atomic": {},
    "kombu_brpop": {"EMBEDQ_WORKER__ATOMIC_FETCH": "false"},
}


def compare(
    stack: Stack,
    info: ModelInfo,
    short: Corpus,
    singles: Corpus,
    workers: int,
    batch: int,
    jobs: int,
    repeats: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Per mode, the fastest ingest of ``short`` and the lowest one-text p50 of ``repeats``
    turns, the modes alternating."""
    found: dict[str, dict[str, Any]] = {}
    for turn in range(repeats):
        for mode, env in MODES.items():
            say(f"take: {mode}, turn {turn + 1} of {repeats}")
            stack.start_workers(workers, **env)
            stack.warm_up(f"warmup_take_{mode}_{turn}", info, batches=2 * workers)
            one = small_jobs(stack, f"take_jobs_{mode}_{turn}", info, singles, workers, jobs)
            run = embedq_ingest(stack, f"take_short_{mode}_{turn}", info, short, workers, batch)
            stack.stop_workers()
            best = found.setdefault(mode, {})
            if "ingest" not in best or run.result.per_s > best["ingest"]["texts_per_s"]:
                best["ingest"] = run.to_json()
            p50 = one.to_json()
            if "small_jobs" not in best or (
                p50["latency_ms"]["p50"] < best["small_jobs"]["latency_ms"]["p50"]
            ):
                best["small_jobs"] = p50
    return found


def main() -> int:
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[take {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    settings = ModelSettings(source=BUNDLED_MODEL)
    info = Model2VecEncoder(load_static_model(settings), settings).info
    short = corpora.short_sentences(int(FULL["short"]))
    singles = corpora.short_sentences(2 * int(FULL["small_jobs"]), seed=4)
    singles = Corpus("small", singles.texts, [f"j{i:08d}" for i in range(len(singles))])
    with (
        tempfile.TemporaryDirectory(prefix="embedq-take-") as tmp,
        Stack(Path(tmp), BUNDLED_MODEL, info.name) as stack,
    ):
        found = compare(stack, info, short, singles, 2, 256, int(FULL["small_jobs"]), 2, say)
    out = DEFAULT_OUT / "take.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(found, indent=2) + "\n")
    for mode, best in found.items():
        ingest, lat = best["ingest"], best["small_jobs"]["latency_ms"]
        print(
            f"{mode:12} short w{ingest['workers']} b{ingest['batch_size']}: "
            f"{ingest['texts_per_s']:,.1f} texts/s, {ingest['cpu_ms_per_text']} cpu ms/text; "
            f"one-text p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
