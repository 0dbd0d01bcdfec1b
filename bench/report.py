"""What a run found, three ways: ratios and targets (added to the results), a printed table, the
JSON file and a PNG plot."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "add_findings", "plot", "table", "write_json"]

CORPORA = ("short", "passages")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _best(runs: list[dict[str, Any]], corpus: str, workers: int | None = None) -> dict[str, Any]:
    """The fastest verified run on ``corpus`` (with ``workers`` processes, if given)."""
    chosen = [
        r
        for r in runs
        if r["corpus"] == corpus and r["verified"] and (workers is None or r["workers"] == workers)
    ]
    return max(chosen, key=lambda r: r["texts_per_s"], default={})


def _cpu_ms_per_text(run: dict[str, Any]) -> float | None:
    cpu = sum(run.get("cpu_seconds", {}).values())
    return cpu * 1000 / run["texts"] if cpu > 0 and run.get("texts") else None


def _scaling(lo: dict[str, Any], hi: dict[str, Any], cpus: int) -> dict[str, Any]:
    """``hi``'s throughput over ``lo``'s (runs with more and fewer worker processes), beside an
    estimate of the most this machine allows: the whole stack (workers, Milvus, Redis,
    producer) spends some CPU per text, so with all ``cpus`` busy no pool stores more than
    ``cpus`` divided by that per second. Taken at the cheaper of the two runs' costs (two
    processes may spend more or less per text than one), and never above the ratio of process
    counts."""
    if not lo or not hi or hi["workers"] <= lo["workers"]:
        return {}
    ratio = _ratio(hi["texts_per_s"], lo["texts_per_s"])
    costs = [_cpu_ms_per_text(lo), _cpu_ms_per_text(hi)]
    known = [c for c in costs if c is not None]
    ceiling = None
    if known:
        most = cpus * 1000 / min(known)  # texts/s with every CPU busy
        ceiling = round(min(hi["workers"] / lo["workers"], most / lo["texts_per_s"]), 3)
    return {
        "workers": [lo["workers"], hi["workers"]],
        "batch_size": [lo["batch_size"], hi["batch_size"]],
        "texts_per_s": [lo["texts_per_s"], hi["texts_per_s"]],
        "ratio": ratio,
        "cpu_ms_per_text": [None if c is None else round(c, 4) for c in costs],
        "cores_busy": [
            round(sum(r.get("cpu_seconds", {}).values()) / r["seconds"], 3) for r in (lo, hi)
        ],
        "ceiling": ceiling,
        "of_ceiling": _ratio(ratio, ceiling),
    }


def _ratios(results: dict[str, Any]) -> dict[str, Any]:
    runs = results["embedq"]["runs"]
    workers = sorted({r["workers"] for r in runs})
    ratios: dict[str, Any] = {}
    for corpus in CORPORA:
        best = _best(runs, corpus)
        seed = results["in_process"][corpus]["texts_per_s"]
        limit = results["limit"][corpus]["texts_per_s"]
        limit_cached = results["limit"][corpus]["texts_per_s_word_cache"]
        per_run = {
            f"w{r['workers']}_b{r['batch_size']}": {
                "vs_in_process": _ratio(r["texts_per_s"], seed),
                "vs_limit": _ratio(r["texts_per_s"], limit),
            }
            for r in runs
            if r["corpus"] == corpus
        }
        scaling: dict[str, Any] = {}
        if len(workers) >= 2:
            lo, hi = workers[0], workers[-1]
            for batch in sorted({r["batch_size"] for r in runs}):
                pair = {
                    r["workers"]: r["texts_per_s"]
                    for r in runs
                    if r["corpus"] == corpus and r["batch_size"] == batch
                }
                scaling[f"b{batch}"] = _ratio(pair.get(hi), pair.get(lo))
            scaling["best"] = _ratio(
                _best(runs, corpus, hi).get("texts_per_s"),
                _best(runs, corpus, lo).get("texts_per_s"),
            )
            scaling["workers"] = [lo, hi]
        ratios[corpus] = {
            "best_run": {k: best.get(k) for k in ("workers", "batch_size", "texts_per_s")},
            "embedq_vs_in_process": _ratio(best.get("texts_per_s"), seed),
            "embedq_vs_limit": _ratio(best.get("texts_per_s"), limit),
            "embedq_vs_limit_word_cache": _ratio(best.get("texts_per_s"), limit_cached),
            "per_run": per_run,
            "workers_scaling": scaling,
        }
    # Process scaling on passages, one tokenizer thread per process on both sides: with the
    # word cache (embedq's default), and without it, where encoding is most of the work.
    cpus = results["machine"]["cpus_usable"]
    embedq = results["embedq"]
    uncached = embedq.get("encode_bound", [])
    ratios["scaling"] = {
        "passages": _scaling(
            _best(embedq.get("one_thread", []), "passages"),
            _best(runs, "passages", workers[-1] if workers else None),
            cpus,
        ),
        "passages_no_word_cache": _scaling(
            _best(uncached, "passages", min((r["workers"] for r in uncached), default=None)),
            _best(uncached, "passages", max((r["workers"] for r in uncached), default=None)),
            cpus,
        ),
    }
    jobs = results.get("small_jobs")
    if jobs:
        large = _best(runs, "short", jobs["workers"])
        queued = jobs.get("queued", {}).get("texts_per_s")
        ratios["small_stream_vs_large_batch"] = {
            "stream_texts_per_s": jobs["stream"]["texts_per_s"],
            "queued_texts_per_s": queued,
            "large_batch_texts_per_s": large.get("texts_per_s"),
            "large_batch_run": {k: large.get(k) for k in ("workers", "batch_size")},
            # The workers' side (what dynamic batching decides): a backlog of one-text jobs.
            "ratio": _ratio(queued, large.get("texts_per_s")),
            # One producer thread submitting back to back (bound by that thread).
            "one_producer_ratio": _ratio(jobs["stream"]["texts_per_s"], large.get("texts_per_s")),
        }
    return ratios


def _target(
    name: str, description: str, target: str, measured: float | None, unit: str, met: bool | None
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "target": target,
        "measured": measured,
        "unit": unit,
        "met": met,
    }


def _at_least(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    ratios = results["ratios"]
    found: list[dict[str, Any]] = []
    for corpus in CORPORA:
        r = ratios[corpus]
        found.append(
            _target(
                f"ingest_vs_in_process_{corpus}",
                f"end-to-end ingest (best embedq run) / in-process path, {corpus} corpus",
                ">= 1.3x",
                r["embedq_vs_in_process"],
                "x",
                _at_least(r["embedq_vs_in_process"], 1.3),
            )
        )
        # Judged against the stricter limit: raw encode by the faster of StaticModel.encode
        # and embedq's encoder (the word cache makes the same vectors faster).
        vs_limit = min(
            (v for v in (r["embedq_vs_limit"], r["embedq_vs_limit_word_cache"]) if v is not None),
            default=None,
        )
        found.append(
            _target(
                f"ingest_vs_limit_{corpus}",
                f"end-to-end ingest / min(raw encode, raw upsert), {corpus} corpus; raw encode "
                "= the faster of StaticModel.encode and embedq's encoder",
                ">= 0.6x",
                vs_limit,
                "x",
                _at_least(vs_limit, 0.6),
            )
        )
    jobs = results.get("small_jobs") or {}
    p50 = jobs.get("latency_ms", {}).get("p50")
    found.append(
        _target(
            "small_job_p50_latency",
            "one-text job, submit -> stored, median",
            "<= 30 ms",
            p50,
            "ms",
            None if p50 is None else p50 <= 30,
        )
    )
    stream = ratios.get("small_stream_vs_large_batch", {}).get("ratio")
    found.append(
        _target(
            "small_stream_vs_large_batch",
            "workers' throughput on a backlog of one-text jobs / large-batch throughput",
            ">= 0.5x",
            stream,
            "x",
            _at_least(stream, 0.5),
        )
    )
    memory = results["memory"]
    model_mb = memory["model_size_on_disk_mb"]
    rss = max(
        (
            pool[when]["child_rss_max_mb"]
            for pool in memory["worker_pools"].values()
            for when in ("after_load", "after_first_batch", "after_run")
        ),
        default=None,
    )
    found.append(
        _target(
            "worker_rss",
            "RSS of one worker pool process (largest seen: after load, first batch or run)",
            f"<= model size + 150 MB ({None if model_mb is None else round(model_mb + 150, 1)} MB)",
            rss,
            "MB",
            None if rss is None or model_mb is None else rss <= model_mb + 150,
        )
    )
    small, large = memory["producer_ingest"]["small"], memory["producer_ingest"]["large"]
    a, b = small["peak_rss_mb"], large["peak_rss_mb"]
    found.append(
        _target(
            "producer_rss_flat",
            f"peak RSS of `embedq ingest`, {large['texts']} texts / {small['texts']} texts "
            f"({a} MB -> {b} MB)",
            "<= 1.2x or <= +30 MB",
            _ratio(b, a),
            "x",
            b <= max(1.2 * a, a + 30),
        )
    )
    # Judged on the smaller of the two ratios; the ceiling beside it is that pair's.
    pairs = [p for p in ratios["scaling"].values() if p.get("ratio") is not None]
    judged: dict[str, Any] = min(pairs, key=lambda p: p["ratio"], default={})
    pair = judged.get("workers", [1, 2])
    found.append(
        _target(
            "workers_scaling_passages",
            f"{pair[-1]} worker processes / {pair[0]} on the passages corpus, with and without "
            "the word cache (encode-bound), one tokenizer thread per process; the smaller ratio",
            ">= 1.6x",
            judged.get("ratio"),
            "x",
            _at_least(judged.get("ratio"), 1.6),
        )
        | {"ceiling": judged.get("ceiling")}
    )
    return found


#: Target names, in the order they are reported.
TARGETS = (
    "ingest_vs_in_process_short",
    "ingest_vs_limit_short",
    "ingest_vs_in_process_passages",
    "ingest_vs_limit_passages",
    "small_job_p50_latency",
    "small_stream_vs_large_batch",
    "worker_rss",
    "producer_rss_flat",
    "workers_scaling_passages",
)


def add_findings(results: dict[str, Any]) -> dict[str, Any]:
    """Add ``ratios`` and ``targets`` (each with its measured value and met/missed)."""
    results["ratios"] = _ratios(results)
    results["targets"] = _targets(results)
    return results


# -- printing --------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec or ",.1f")
    return format(value, spec) if spec else str(value)


def _row(corpus: str, path: str, t: dict[str, Any], seed: float, limit: float) -> str:
    ok = "" if t.get("stored") is None else ("yes" if t["verified"] else "NO")
    batch = t.get("worker_batch_seconds") or {}
    in_worker = f"{batch['p50'] * 1000:.0f} / {batch['p95'] * 1000:.0f}" if batch else ""
    cpu = t.get("cpu_ms_per_text")
    return (
        f"{corpus:<9} {path:<26} {t['texts']:>7} {t['seconds']:>9.3f} "
        f"{t['texts_per_s']:>10,.1f} {_fmt(_ratio(t['texts_per_s'], seed), '.2f'):>7} "
        f"{_fmt(_ratio(t['texts_per_s'], limit), '.2f'):>8} {ok:>3} {in_worker:>16} "
        f"{'' if cpu is None else format(cpu, '.3f'):>11}"
    )


def _take_line(mode: str, found: dict[str, Any]) -> str:
    ingest, lat = found["ingest"], found["small_jobs"]["latency_ms"]
    return (
        f"{mode} short w{ingest['workers']} b{ingest['batch_size']} "
        f"{ingest['texts_per_s']:,.1f} texts/s, one-text p50 {lat['p50']:.1f} ms"
    )


def table(results: dict[str, Any]) -> str:
    """Every throughput side by side, then small jobs, memory, ratios and targets."""
    lines: list[str] = []
    m, model = results["machine"], results["model"]
    lines.append(
        f"embedq benchmark {results['date']}{'  (QUICK: tiny inputs)' if results['quick'] else ''}"
    )
    lines.append(
        f"machine: {m['cpus_usable']} cpus ({m['cpu_model']}), load at start "
        f"{m['load_average_at_start']}; model {model['name']} dim {model['dim']}, "
        f"{model['size_on_disk_mb']} MB on disk"
    )
    for name, c in results["corpora"].items():
        lines.append(
            f"corpus {name}: {c['texts']} texts, {c['mean_chars']} chars, "
            f"{c.get('mean_tokens')} tokens on average"
        )
    head = f"{'corpus':<9} {'path':<26} {'texts':>7} {'seconds':>9} {'texts/s':>10} "
    head += f"{'x inproc':>8} {'x limit':>8} {'ok':>3} {'batch p50/p95 ms':>16} {'cpu ms/text':>11}"
    lines += ["", head, "-" * len(head)]
    for corpus in CORPORA:
        lim, seed = results["limit"][corpus], results["in_process"][corpus]
        base_seed, base_limit = seed["texts_per_s"], lim["texts_per_s"]

        row = functools.partial(_row, corpus, seed=base_seed, limit=base_limit)
        lines.append(row("limit: raw encode (1 proc)", lim["encode"]))
        lines.append(row("  same, embedq's encoder", lim["encode_word_cache"]))
        lines.append(row(f"limit: raw upsert (b{lim['upsert']['batch']})", lim["upsert"]))
        lines.append(row(f"in-process path (b{seed['batch']})", seed))
        for r in results["embedq"]["runs"]:
            if r["corpus"] == corpus:
                lines.append(row(f"embedq w{r['workers']} b{r['batch_size']}", r))
        for r in results["embedq"].get("one_thread", []):
            if r["corpus"] == corpus:
                lines.append(row(f"(1 thread: w{r['workers']} b{r['batch_size']})", r))
        for r in results["embedq"].get("encode_bound", []):
            if r["corpus"] == corpus:
                lines.append(row(f"(no word cache: w{r['workers']} b{r['batch_size']})", r))
        flushed = results["embedq"].get("with_flush")
        if flushed and flushed["corpus"] == corpus:
            label = f"(flush each: w{flushed['workers']} b{flushed['batch_size']})"
            lines.append(row(label, flushed))
        lines.append("")
    jobs = results.get("small_jobs")
    if jobs:
        lat = jobs["latency_ms"]
        lines.append(
            f"one-text jobs ({jobs['workers']} workers, {jobs['jobs']} one at a time): submit -> "
            f"stored p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms; "
            f"stream of {jobs['stream']['texts']} from one producer: "
            f"{jobs['stream']['texts_per_s']:,.1f} texts/s "
            f"(rows verified: {'yes' if jobs['verified'] else 'NO'})"
        )
        queued = jobs.get("queued")
        if queued:
            lines.append(
                f"backlog of {queued['texts']} one-text jobs drained at "
                f"{queued['texts_per_s']:,.1f} texts/s "
                f"(rows verified: {'yes' if queued['verified'] else 'NO'})"
            )
    take = results["embedq"].get("take")
    if take:
        lines.append("take (in turns): " + "; ".join(_take_line(m, t) for m, t in take.items()))
    memory = results["memory"]
    for workers, pool in memory["worker_pools"].items():
        load, first, after = pool["after_load"], pool["after_first_batch"], pool["after_run"]
        lines.append(
            f"worker pool of {workers}: children RSS after load {load['children_rss_mb']} MB, "
            f"after a first batch {first['children_rss_mb']} MB, after the run "
            f"{after['children_rss_mb']} MB (PSS {after['children_pss_mb']}); parent "
            f"{after['parent_rss_mb']} MB"
        )
    for label, p in memory["producer_ingest"].items():
        lines.append(
            f"embedq ingest of {p['texts']:,} texts ({p['file_mb']} MB): peak RSS "
            f"{p['peak_rss_mb']} MB, {p['seconds']} s ({label})"
        )
    ratios = results["ratios"]
    lines.append("")
    for corpus in CORPORA:
        r = ratios[corpus]
        scaling = r["workers_scaling"]
        lines.append(
            f"ratios {corpus}: best embedq (w{r['best_run']['workers']} "
            f"b{r['best_run']['batch_size']}) / in-process path "
            f"{_fmt(r['embedq_vs_in_process'], '.2f')}, "
            f"/ limit {_fmt(r['embedq_vs_limit'], '.2f')} (limit with embedq's encoder "
            f"{_fmt(r['embedq_vs_limit_word_cache'], '.2f')}); workers "
            f"{scaling.get('workers')} scaling {_fmt(scaling.get('best'), '.2f')}"
        )
    for name, pair in ratios["scaling"].items():
        if pair:
            lines.append(
                f"scaling {name} (one tokenizer thread per process): workers {pair['workers']} "
                f"{pair['texts_per_s'][0]:,.1f} -> {pair['texts_per_s'][1]:,.1f} texts/s = "
                f"{_fmt(pair['ratio'], '.2f')}x; cores busy {pair['cores_busy']} of "
                f"{results['machine']['cpus_usable']}, cpu ms/text {pair['cpu_ms_per_text']}: "
                f"at most {_fmt(pair['ceiling'], '.2f')}x here "
                f"({_fmt(pair['of_ceiling'], '.0%')} of that)"
            )
    stream = ratios.get("small_stream_vs_large_batch")
    if stream:
        lines.append(
            f"ratios small jobs / large batch ({stream['large_batch_texts_per_s']} texts/s): "
            f"backlog {_fmt(stream['ratio'], '.3f')} ({stream['queued_texts_per_s']} texts/s), "
            f"one producer's stream {_fmt(stream['one_producer_ratio'], '.3f')} "
            f"({stream['stream_texts_per_s']} texts/s)"
        )
    lines += ["", f"{'target':<30} {'wanted':<36} {'measured':>10}  result"]
    for t in results["targets"]:
        met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        if t.get("ceiling") is not None and not t["met"]:
            met += f" (this machine allows at most {t['ceiling']:.2f})"
        measured = f"{_fmt(t['measured'], '.2f')} {t['unit']}"
        lines.append(f"{t['name']:<30} {t['target']:<36} {measured:>10}  {met}")
    if results["quick"]:
        lines.append("(quick run: tiny inputs, start-up costs dominate; the figures say little)")
    lines.append(f"took {results.get('duration_s')} s")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput by batch size, one bar per worker count, one panel per corpus; the in-process path
    and the limit drawn across as reference lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    runs = results["embedq"]["runs"]
    batches = sorted({r["batch_size"] for r in runs})
    workers = sorted({r["workers"] for r in runs})
    fig, axes = plt.subplots(1, len(CORPORA), figsize=(12, 5.4))
    width = 0.8 / max(1, len(workers))
    for ax, corpus in zip(axes, CORPORA, strict=True):
        for k, w in enumerate(workers):
            values = [
                next(
                    (
                        r["texts_per_s"]
                        for r in runs
                        if r["corpus"] == corpus and r["workers"] == w and r["batch_size"] == b
                    ),
                    0.0,
                )
                for b in batches
            ]
            xs = [i + (k - (len(workers) - 1) / 2) * width for i in range(len(batches))]
            bars = ax.bar(xs, values, width, label=f"embedq, {w} worker{'s' * (w > 1)}")
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        lim, seed = results["limit"][corpus], results["in_process"][corpus]
        lines: list[tuple[str, float, str, str]] = [
            ("limit: min(raw encode, raw upsert)", lim["texts_per_s"], "red", "-"),
            ("raw encode, 1 process", lim["encode"]["texts_per_s"], "red", ":"),
            ("limit with embedq's encoder", lim["texts_per_s_word_cache"], "darkorange", "-."),
            ("raw upsert", lim["upsert"]["texts_per_s"], "purple", ":"),
            ("in-process path (encode + insert, serial)", seed["texts_per_s"], "black", "--"),
        ]
        jobs = results.get("small_jobs")
        if jobs and corpus == "short":
            if jobs.get("queued"):
                backlog = jobs["queued"]["texts_per_s"]
                lines.append(("backlog of one-text jobs", backlog, "green", "-."))
            lines.append(
                (
                    "one producer's stream of one-text jobs",
                    jobs["stream"]["texts_per_s"],
                    "gray",
                    "-.",
                )
            )
        for label, value, color, style in lines:
            ax.axhline(value, color=color, linestyle=style, linewidth=1.2, label=label)
        info = results["corpora"][corpus]
        ax.set_title(f"{corpus}: {info['texts']} texts, ~{info.get('mean_tokens')} tokens each")
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel("batch size (EMBEDQ_BATCH__SIZE)")
        ax.set_ylabel("texts / s (stored in Milvus)")
        ax.set_ylim(bottom=0)
    # One legend for both panels (same series), below them, clear of the bars.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    quick = " (quick: tiny inputs)" if results["quick"] else ""
    model = results["model"]
    fig.suptitle(
        f"embedq ingest throughput, model {model['name']} (dim {model['dim']}), "
        f"{results['machine']['cpus_usable']} cpus, {results['date'][:10]}{quick}"
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
