"""The benchmark runs end to end on tiny input and writes every figure it promises: each
section, each target with its measured value and met/missed, and a PNG plot. No timing is
asserted: the figures depend on the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.environment import ROOT

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SECTIONS = {
    "schema", "date", "quick", "plan", "machine", "versions", "model", "corpora", "limit",
    "in_process", "embedq", "small_jobs", "memory", "ratios", "targets", "duration_s",
}  # fmt: skip

TARGETS = {
    "ingest_vs_in_process_short", "ingest_vs_limit_short", "ingest_vs_in_process_passages",
    "ingest_vs_limit_passages", "small_job_p50_latency", "small_stream_vs_large_batch",
    "worker_rss", "producer_rss_flat", "workers_scaling_passages",
}  # fmt: skip


@pytest.mark.slow
def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    # Given the quick benchmark, when it runs against its own throwaway stack
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    # Then the JSON holds every section, and the table was printed
    results = json.loads((out / "latest.json").read_text())
    assert results.keys() >= SECTIONS, SECTIONS - results.keys()
    assert results["quick"] is True
    assert "target" in run.stdout and "embedq w2" in run.stdout

    machine, model = results["machine"], results["model"]
    assert machine["cpu_count"] >= 1 and results["versions"]["python"]
    assert model["dim"] > 0 and model["size_on_disk_mb"] > 0 and model["name"]
    for name in ("short", "passages", "small"):
        assert results["corpora"][name]["texts"] > 0 and results["corpora"][name]["mean_tokens"]

    # ... the limit and the in-process path on both corpora, every count verified
    for corpus in ("short", "passages"):
        limit = results["limit"][corpus]
        assert limit["encode"]["texts_per_s"] > 0 and limit["upsert"]["verified"]
        assert limit["encode_word_cache"]["texts_per_s"] > 0
        assert limit["texts_per_s_word_cache"] > 0
        assert limit["texts_per_s"] > 0 and limit["bound_by"] in {"encode", "upsert"}
        assert results["in_process"][corpus]["verified"]

    # ... embedq for each corpus, worker count and batch size, every count verified
    runs = results["embedq"]["runs"]
    grid = {(r["corpus"], r["workers"], r["batch_size"]) for r in runs}
    plan = results["plan"]
    assert grid == {
        (c, w, b)
        for c in ("short", "passages")
        for w in plan["workers"]
        for b in plan["batch_sizes"]
    }
    assert len(plan["batch_sizes"]) >= 2 and {1, 2} <= set(plan["workers"])
    one_thread = results["embedq"]["one_thread"]
    assert {(r["corpus"], r["workers"]) for r in one_thread} == {("passages", 1)}
    encode_bound = results["embedq"]["encode_bound"]
    assert [(r["corpus"], r["workers"], r["word_cache"]) for r in encode_bound] == [
        ("passages", min(plan["workers"]), 0),
        ("passages", max(plan["workers"]), 0),
    ]
    take = results["embedq"]["take"]
    assert take.keys() == {"atomic", "kombu_brpop"}
    for found in take.values():
        assert found["small_jobs"]["verified"]
        assert found["small_jobs"]["jobs"] == plan["small_jobs"]
    checked = [*runs, *one_thread, *encode_bound, results["embedq"]["with_flush"]]
    for r in [*checked, *(found["ingest"] for found in take.values())]:
        assert r["cpu_ms_per_text"] > 0 and r["cpu_seconds"]["workers"] > 0
        assert r["verified"] and r["stored"] == r["texts"] and r["texts_per_s"] > 0

    # ... one-text jobs, memory and ratios
    jobs = results["small_jobs"]
    assert jobs["verified"] and jobs["jobs"] == plan["small_jobs"]
    assert {"p50", "p95"} <= jobs["latency_ms"].keys() and jobs["stream"]["texts_per_s"] > 0
    queued = jobs["queued"]
    assert queued["verified"] and queued["texts"] == plan["queued_jobs"] > 0
    memory = results["memory"]
    for workers in plan["workers"]:
        pool = memory["worker_pools"][str(workers)]
        for when in ("after_load", "after_first_batch", "after_run"):
            assert len(pool[when]["children_rss_mb"]) == workers
            assert min(pool[when]["children_rss_mb"]) > 0
    for label in ("small", "large"):
        assert memory["producer_ingest"][label]["peak_rss_mb"] > 0
    ratios = results["ratios"]
    for corpus in ("short", "passages"):
        assert ratios[corpus]["embedq_vs_in_process"] is not None
        assert ratios[corpus]["embedq_vs_limit"] is not None
        assert ratios[corpus]["embedq_vs_limit_word_cache"] is not None
        assert ratios[corpus]["workers_scaling"]["best"] is not None
    assert ratios["small_stream_vs_large_batch"]["ratio"] is not None
    for pair in ratios["scaling"].values():
        assert pair["ratio"] > 0 and min(pair["cores_busy"]) > 0 and pair["ceiling"] > 0
        assert all(cost > 0 for cost in pair["cpu_ms_per_text"])

    # ... each target with its wanted value, its measured value and met or missed
    targets = {t["name"]: t for t in results["targets"]}
    assert targets.keys() == TARGETS
    for target in targets.values():
        assert target["target"] and target["description"]
        assert isinstance(target["measured"], int | float)
        assert isinstance(target["met"], bool)
    assert targets["workers_scaling_passages"]["ceiling"] > 0

    # ... and the plot is a PNG
    png = out / "latest.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 10_000
