"""The benchmark's arithmetic: the scaling ratio, the ceiling the machine puts on it, and the
verdict printed beside the target. Runs on the committed results with the scaling runs
replaced by made-up ones whose answers are known."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bench.report import add_findings, table
from tests.conftest import ROOT

COMMITTED = json.loads((ROOT / "docs" / "benchmark.json").read_text())


def _run(workers: int, texts_per_s: float, cpu: dict[str, float], cache: bool) -> dict[str, Any]:
    seconds = 10_000 / texts_per_s
    return {
        "corpus": "passages", "workers": workers, "batch_size": 1024, "texts": 10_000,
        "stored": 10_000, "verified": True, "seconds": seconds, "texts_per_s": texts_per_s,
        "cpu_seconds": cpu, **({} if cache else {"word_cache": 0}),
    }  # fmt: skip


def _results(cpus: int, cached_two: float, uncached_two: float) -> dict[str, Any]:
    results = copy.deepcopy(COMMITTED)
    results["machine"]["cpus_usable"] = cpus
    embedq = results["embedq"]
    embedq["runs"] = [r for r in embedq["runs"] if r["corpus"] != "passages"] + [
        _run(1, 2000.0, {}, cache=True),
        _run(2, cached_two, {}, cache=True),
    ]
    # One worker alone: 5 s of wall clock, 6.5 CPU-seconds in all = 1.3 cores busy.
    embedq["one_thread"] = [
        _run(1, 2000.0, {"workers": 4.0, "milvus-lite": 1.75, "producer": 0.75}, cache=True)
    ]
    # Without the word cache: 10 s, 12.5 CPU-seconds = 1.25 cores busy.
    embedq["encode_bound"] = [
        _run(1, 1000.0, {"workers": 10.0, "milvus-lite": 2.0, "producer": 0.5}, cache=False),
        _run(2, uncached_two, {"workers": 10.0, "milvus-lite": 2.0}, cache=False),
    ]
    return add_findings(results)


def test_scaling_is_judged_on_the_smaller_ratio_beside_the_ceiling_of_its_machine() -> None:
    # Given 2 cpus, one worker keeping 1.3 of them busy, two workers 1.4x faster (with the
    # word cache) and 1.5x faster (without it)
    results = _results(cpus=2, cached_two=2800.0, uncached_two=1500.0)

    # Then each pair reports its ratio, the cores one worker kept busy and the most 2 cpus allow
    scaling = results["ratios"]["scaling"]
    cached, uncached = scaling["passages"], scaling["passages_no_word_cache"]
    assert cached["ratio"] == 1.4 and cached["cores_busy_at_one"] == 1.3
    assert cached["ceiling"] == pytest.approx(2 / 1.3, abs=0.001)
    assert cached["of_ceiling"] == pytest.approx(1.4 / (2 / 1.3), abs=0.002)
    assert uncached["ratio"] == 1.5 and uncached["ceiling"] == 1.6

    # ... the target takes the smaller ratio, with its pair's ceiling, and is missed
    target = next(t for t in results["targets"] if t["name"] == "workers_scaling_passages")
    assert target["measured"] == 1.4 and target["met"] is False
    assert target["ceiling"] == pytest.approx(1.538, abs=0.001)
    # ... and the table says what this machine allows
    assert "MISSED (this machine allows at most 1.54)" in table(results)


def test_on_enough_cpus_the_ceiling_is_the_process_count_and_the_target_can_be_met() -> None:
    # Given 8 cpus: one worker's 1.3 cores leave room for two, so only the process count bounds;
    # two workers 1.65x faster with the word cache, 1.9x without it
    results = _results(cpus=8, cached_two=3300.0, uncached_two=1900.0)

    scaling = results["ratios"]["scaling"]
    assert scaling["passages"]["ceiling"] == 2.0
    uncached = scaling["passages_no_word_cache"]
    assert (uncached["ratio"], uncached["ceiling"], uncached["of_ceiling"]) == (1.9, 2.0, 0.95)
    # ... the judged ratio is the smaller one, 1.65: met, with no ceiling note
    target = next(t for t in results["targets"] if t["name"] == "workers_scaling_passages")
    assert target["measured"] == 1.65 and target["met"] is True and target["ceiling"] == 2.0
    line = next(x for x in table(results).splitlines() if x.startswith("workers_scaling"))
    assert line.endswith("  met")
