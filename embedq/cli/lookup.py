"""``embedq search`` and ``embedq status``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from embedq.cli.exits import EXIT_FAILED
from embedq.producer.producer import EmbeddingProducer

if TYPE_CHECKING:
    pass

__all__ = ["search", "status"]


def search(producer: EmbeddingProducer, args: argparse.Namespace) -> int:
    hits = producer.search(
        args.query,
        k=args.k,
        collection=args.collection,
        filter=args.filter,
        per_document=args.per_document,
    )
    if args.json:
        print(json.dumps([hit.model_dump() for hit in hits], ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        meta = json.dumps(hit.metadata, ensure_ascii=False) if hit.metadata else ""
        where = f"id {hit.id}" + (
            f", chunk {hit.chunk} [{hit.start}:{hit.end}]"
            if hit.chunk or hit.version is not None
            else ""
        )
        print(f"{rank}. [{hit.score:.3f}] {hit.text}  ({where}) {meta}".rstrip())
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
            "chunks_stored": state.chunks_stored,
            "texts_truncated": state.texts_truncated,
            "superseded": state.superseded,
            "deleted": state.deleted,
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
