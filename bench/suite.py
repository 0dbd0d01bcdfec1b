"""One benchmark run, in order: the limit and the in-process path (no workers running, so they
have the machine to themselves), then embedq with each worker count over every corpus and batch
size, the one-text jobs on the largest pool, and last the producer's memory (workers stopped, so
the queued texts stay queued and only the producer runs)."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import corpus as corpora
from bench.corpus import Corpus
from bench.machine import machine, versions
from bench.measure import (
    EmbedqRun,
    embedq_ingest,
    in_process,
    queued_small_jobs,
    raw_encode,
    raw_upsert,
    small_jobs,
)
from bench.memory import dir_size, ingest_peak_rss, pool_memory
from bench.plan import Plan
from bench.stack import Stack
from bench.take import compare as compare_takes
from embedq.config.settings import ModelSettings
from embedq.worker.encoder import Model2VecEncoder, ModelInfo, load_static_model, resolve_source

__all__ = ["SCHEMA", "run"]

SCHEMA = "embedq-bench/1"
_MB = 1024 * 1024

Say = Callable[[str], None]


def _model_size(settings: ModelSettings) -> tuple[str, int | None]:
    """Where the model lives and its bytes on disk (None for a hub model not in the cache)."""
    source = resolve_source(settings)
    folder = Path(source)
    if settings.hub_id is not None:
        from model2vec.persistence.hf import maybe_get_cached_model_path

        cached = maybe_get_cached_model_path(source)
        if cached is None:
            return source, None
        folder = Path(cached)
    return str(folder), dir_size(folder)


def _token_counts(model: Any, texts: list[str], sample: int = 2000) -> list[int]:
    encoded = model.tokenizer.encode_batch(texts[:sample], add_special_tokens=False)
    return [len(e.ids) for e in encoded]


def run(plan: Plan, say: Say, keep: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": plan.quick,
        "plan": plan.to_json(),
        "machine": machine(),
        "versions": versions(),
    }

    settings = ModelSettings(source=plan.model_source, name=plan.model_name)
    say(f"loading model {plan.model_name} ({plan.model_source})")
    static = load_static_model(settings)  # as workers load it: with the word cache
    # What model2vec alone does (the in-process path's model, and the limit as defined).
    plain = load_static_model(settings.model_copy(update={"word_cache": 0}))
    info = Model2VecEncoder(static, settings).info
    path, size = _model_size(settings)
    results["model"] = {
        "name": info.name,
        "source": info.source,
        "path": path,
        "dim": info.dim,
        "revision": info.revision,
        "size_on_disk_mb": None if size is None else round(size / _MB, 2),
    }

    say(f"generating corpora ({plan.short} short, {plan.passages} passages)")
    short = corpora.short_sentences(plan.short)
    long = corpora.passages(plan.passages)
    singles = corpora.short_sentences(2 * plan.small_jobs + plan.queued_jobs, seed=4)
    singles = Corpus("small", singles.texts, [f"j{i:08d}" for i in range(len(singles))])
    backlog = Corpus(
        "small", singles.texts[2 * plan.small_jobs :], singles.ids[2 * plan.small_jobs :]
    )
    results["corpora"] = {
        c.name: c.describe(_token_counts(static, c.texts)) for c in (short, long, singles)
    }
    texts = (short, long)

    tmp = Path(tempfile.mkdtemp(prefix="embedq-bench-"))
    try:
        with Stack(tmp, plan.model_source, plan.model_name) as stack:
            say(f"stack up: redis {stack.redis_url}, milvus lite {stack.milvus_uri}")
            limit: dict[str, Any] = {}
            seed: dict[str, Any] = {}
            for c in texts:
                say(f"limit: raw encode + raw upsert, {c.name}")
                n = plan.repeats
                stack.settle()
                encoded, vectors = max(
                    (raw_encode(plain, c, settings.max_length) for _ in range(n)),
                    key=lambda r: r[0].per_s,
                )
                cached, _ = max(
                    (raw_encode(static, c, settings.max_length) for _ in range(n)),
                    key=lambda r: r[0].per_s,
                )
                upserted, flush_s = max(
                    (
                        raw_upsert(
                            stack, f"limit_{c.name}_{i}", info, c, vectors, plan.client_batch
                        )
                        for i in range(n)
                    ),
                    key=lambda r: r[0].per_s,
                )
                bound = min(encoded.per_s, upserted.per_s)
                limit[c.name] = {
                    "encode": encoded.to_json(),
                    # The same vectors from embedq's encoder: the bound its workers face.
                    "encode_word_cache": cached.to_json(),
                    "texts_per_s_word_cache": round(min(cached.per_s, upserted.per_s), 1),
                    "upsert": upserted.to_json() | {"batch": plan.client_batch},
                    "upsert_final_flush_seconds": round(flush_s, 4),
                    "texts_per_s": round(bound, 1),
                    "bound_by": "encode" if encoded.per_s <= upserted.per_s else "upsert",
                }
                say(f"in-process path: encode + insert serially, {c.name}")
                seeded = max(
                    (
                        in_process(stack, f"inproc_{c.name}_{i}", info, plain, c, plan.client_batch)
                        for i in range(n)
                    ),
                    key=lambda r: r.per_s,
                )
                seed[c.name] = seeded.to_json() | {"batch": plan.client_batch}
            results["limit"], results["in_process"] = limit, seed

            runs: list[dict[str, Any]] = []
            pools: dict[str, Any] = {}
            for workers in plan.workers:
                say(f"starting {workers} worker process(es)")
                pool = stack.start_workers(workers)
                after_load = pool_memory(pool.pid)
                stack.warm_up(f"warmup_w{workers}", info, batches=4 * workers)
                after_warm_up = pool_memory(pool.pid)
                for c in texts:
                    for batch in plan.batch_sizes:
                        name = f"embedq_{c.name}_w{workers}_b{batch}"
                        say(f"embedq: {c.name}, {workers} worker(s), batch {batch}")
                        run = _fastest_ingest(plan, stack, name, info, c, workers, batch)
                        runs.append(run.to_json())
                        say(f"  {runs[-1]['texts_per_s']} texts/s")
                if workers == max(plan.workers):
                    say(f"small jobs: {plan.small_jobs} one at a time, then {plan.small_jobs}")
                    jobs = small_jobs(stack, "small_jobs", info, singles, workers, plan.small_jobs)
                    say(f"small jobs: a backlog of {plan.queued_jobs}, drained")
                    queued = max(
                        (
                            queued_small_jobs(
                                stack, f"queued_jobs_{i}", info, backlog, plan.queued_jobs
                            )
                            for i in range(plan.repeats)
                        ),
                        key=lambda r: r.per_s,
                    )
                    results["small_jobs"] = jobs.to_json() | {"queued": queued.to_json()}
                pools[str(workers)] = {
                    "after_load": after_load.to_json(),
                    "after_first_batch": after_warm_up.to_json(),
                    "after_run": pool_memory(pool.pid).to_json(),
                }
                stack.stop_workers()
            # For the scaling target: one process tokenizing on one thread, as each process
            # of a larger pool does (worker/application.py), on the encode-bound corpus.
            lone = min(plan.workers)
            say(f"scaling: passages, {lone} worker process(es) tokenizing on one thread")
            stack.start_workers(lone, TOKENIZERS_PARALLELISM="false")
            stack.warm_up("warmup_one_thread", info, batches=2 * lone)
            one_thread = [
                _fastest_ingest(
                    plan, stack, f"embedq_one_thread_b{b}", info, long, lone, b
                ).to_json()
                for b in plan.batch_sizes
            ]
            stack.stop_workers()
            # Scaling where encoding is most of the work: the passages without the word cache,
            # what every tokenizer other than BERT WordPiece gets (worker/speedups/wordcache.py).
            biggest = max(plan.batch_sizes)
            encode_bound: list[dict[str, Any]] = []
            for workers in sorted({lone, max(plan.workers)}):
                say(f"scaling: passages without the word cache, {workers} worker process(es)")
                stack.start_workers(
                    workers, EMBEDQ_MODEL__WORD_CACHE="0", TOKENIZERS_PARALLELISM="false"
                )
                stack.warm_up(f"warmup_encode_bound_w{workers}", info, batches=2 * workers)
                best = _fastest_ingest(
                    plan, stack, f"embedq_no_cache_w{workers}", info, long, workers, biggest
                )
                encode_bound.append(best.to_json() | {"word_cache": 0})
                stack.stop_workers()
            # How a worker takes messages: the atomic take beside kombu's BRPOP, in turns.
            most = max(plan.workers)
            take = compare_takes(
                stack,
                info,
                short,
                singles,
                most,
                min(plan.batch_sizes),
                plan.small_jobs,
                plan.repeats,
                say,
            )
            # Diagnostic, not embedq's result: the same ingest with a flush after each batch,
            # what workers do against a plain Milvus Lite server (EMBEDQ_MILVUS__FLUSH=auto
            # there), whose unflushed writes a crash can lose; embedq's own Lite server needs
            # none (embedq/stack/lite_server.py).
            say(f"diagnostic: short, {most} worker(s), batch {biggest}, flush after each batch")
            stack.start_workers(most, EMBEDQ_MILVUS__FLUSH="always")
            stack.warm_up("warmup_flush", info, batches=2 * most)
            flushed = embedq_ingest(stack, "embedq_flush", info, short, most, biggest)
            stack.stop_workers()
            results["embedq"] = {
                "runs": runs,
                "one_thread": one_thread,
                "encode_bound": encode_bound,
                "with_flush": flushed.to_json(),
                "take": take,
            }

            producer: dict[str, Any] = {}
            for label, count in zip(("small", "large"), plan.memory_sizes, strict=True):
                say(f"producer memory: embedq ingest of {count} texts")
                file = tmp / f"ingest-{count}.jsonl"
                corpora.write_jsonl(file, count)
                producer[label] = ingest_peak_rss(stack, file, count, f"memory_{label}").to_json()
                file.unlink()
                stack.flush_redis()
            results["memory"] = {
                "model_size_on_disk_mb": results["model"]["size_on_disk_mb"],
                "worker_pools": pools,
                "producer_ingest": producer,
            }
    except BaseException:
        for log in sorted((tmp / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- {log.name} (last lines)\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        if keep:
            say(f"kept {tmp}")
        else:
            _remove(tmp)
    results["duration_s"] = round(time.perf_counter() - started, 1)
    return results


def _fastest_ingest(
    plan: Plan,
    stack: Stack,
    name: str,
    info: ModelInfo,
    corpus: Corpus,
    workers: int,
    batch: int,
) -> EmbedqRun:
    """The fastest of ``plan.repeats`` ingests of ``corpus``, each into its own collection."""
    return max(
        (
            embedq_ingest(stack, f"{name}_{i}", info, corpus, workers, batch)
            for i in range(plan.repeats)
        ),
        key=lambda r: r.result.per_s,
    )


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
