"""Long documents through embedq, beside what the same work costs without it.
``python -m bench.documents [--documents 2000]`` prints a table and writes
bench/results/documents.json.

The documents are 2,000 (by default) texts of 2,000 to 20,000 characters made of paragraphs of
Python's own help (``pydoc_data.topics``), drawn with a seeded generator. Every figure is in
tokens per second over the same chunks (the tokens the model reads):

- **chunking**: ``embedq.worker.chunker.Chunker.split`` over every document, one process;
- **raw encode**: ``StaticModel.encode`` of those chunks, one process: the model's own speed;
- **in-process path**: chunk, encode and ``MilvusClient.insert`` each document's chunks, one
  process, one document after another (what an application without embedq would write);
- **raw upsert**: the same chunk rows with their vectors computed beforehand, upserted 1,024
  at a time, one process: the store's own limit for these rows;
- **embedq**: ``submit_documents`` of every document to 2 worker processes, until the job
  reports every chunk stored; the rows found in Milvus are counted, and the CPU seconds each
  part of the stack spent (producer, workers, Milvus Lite, Redis).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

from bench.stack import Stack, cpu_seconds
from embedq.config.settings import load_settings
from embedq.producer import EmbeddingProducer
from embedq.worker.batch import row_key
from embedq.worker.chunker import Chunker, Span, token_counter
from embedq.worker.encoder import Model2VecEncoder, Vectors
from embedq.worker.speedups.upsert import send_upsert, upsert_request
from embedq.worker.store import Rows

__all__ = ["corpus", "main"]


def corpus(count: int, seed: int = 7) -> list[tuple[str, str]]:
    """``count`` documents ``(id, text)`` of 2,000 to 20,000 characters."""
    paragraphs = [p.strip() for text in topics.values() for p in text.split("\n\n") if p.strip()]
    rng = random.Random(seed)
    docs = []
    for n in range(count):
        target, parts, size = rng.randint(2_000, 20_000), [], 0
        while size < target:
            part = rng.choice(paragraphs)
            parts.append(part)
            size += len(part) + 2
        docs.append((f"doc-{n:05d}", "\n\n".join(parts)[:target]))
    return docs


def _rows(docs: list[tuple[str, str]], spans: list[list[Span]], vectors: Vectors) -> Rows:
    """The chunk rows embedq writes for these documents (operation 1 of each)."""
    ids, texts, pks, chunks, starts, ends = [], [], [], [], [], []
    for (doc, _), pieces in zip(docs, spans, strict=True):
        for c, piece in enumerate(pieces):
            ids.append(doc)
            texts.append(piece.text)
            pks.append(row_key(doc, 1, c))
            chunks.append(c)
            starts.append(piece.start)
            ends.append(piece.end)
    return Rows(
        ids=ids,
        texts=texts,
        metadata=[{}] * len(ids),
        vectors=vectors,
        pks=pks,
        chunks=chunks,
        starts=starts,
        ends=ends,
        versions=[1.0] * len(ids),
        seqs=[1] * len(ids),
    )


def _rate(tokens: int, seconds: float) -> dict[str, Any]:
    return {"seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds)}


def measure(count: int, root: Path) -> dict[str, Any]:
    settings = load_settings()
    encoder = Model2VecEncoder.from_settings(settings.model)
    count_tokens = token_counter(encoder.tokenizer)
    docs = corpus(count)
    chunker = Chunker(count_tokens, settings.chunks.tokens, settings.chunks.overlap)

    started = time.perf_counter()
    spans = [chunker.split(text) for _, text in docs]
    chunk_seconds = time.perf_counter() - started
    chunks = [s.text for doc in spans for s in doc]
    tokens = sum(count_tokens(text) for text in chunks)
    out: dict[str, Any] = {
        "documents": count,
        "characters": sum(len(text) for _, text in docs),
        "chunks": len(chunks),
        "tokens": tokens,
        "chunk_tokens": settings.chunks.tokens,
        "chunking": _rate(tokens, chunk_seconds),
    }
    encoder.encode(chunks[:1000])  # warm: the word cache fills as in a worker that has run a while
    started = time.perf_counter()
    vectors = encoder.encode(chunks)
    out["raw_encode"] = _rate(tokens, time.perf_counter() - started)

    with Stack(root, settings.model.source, settings.model.name) as stack:
        info = encoder.info
        collection = "in_process"
        stack.create_collection(collection, info)
        client = stack.client()
        fresh = Chunker(token_counter(encoder.tokenizer), settings.chunks.tokens)
        started = time.perf_counter()
        for doc, text in docs:
            pieces = fresh.split(text)
            block = encoder.encode([p.text for p in pieces])
            client.insert(
                collection,
                [
                    {
                        "pk": f"{doc}:{c}", "id": doc, "chunk": c, "start": p.start,
                        "end": p.end, "version": 0.0, "seq": 0, "vector": v, "text": p.text,
                        "metadata": {},
                    }
                    for c, (p, v) in enumerate(zip(pieces, block, strict=True))
                ],
            )  # fmt: skip
        out["in_process"] = _rate(tokens, time.perf_counter() - started)
        client.close()
        out["in_process"]["rows"] = stack.count(collection)

        collection = "raw_upsert"
        stack.create_collection(collection, info)
        rows = _rows(docs, spans, vectors)
        requests = [
            upsert_request(collection, rows.slice(i, i + 1024)) for i in range(0, len(rows), 1024)
        ]
        client = stack.client()
        started = time.perf_counter()
        for request in requests:
            send_upsert(client, request, None)
        out["raw_upsert"] = _rate(tokens, time.perf_counter() - started)
        client.close()
        out["raw_upsert"]["rows"] = stack.count(collection)

        stack.start_workers(2)
        collection = "embedq_documents"
        stack.create_collection(collection, info)
        parts = stack.processes()
        with EmbeddingProducer(stack.settings()) as producer:
            before = {name: sum(map(cpu_seconds, pids)) for name, pids in parts.items()}
            started = time.perf_counter()
            job = producer.submit_documents(
                [{"id": doc, "text": text} for doc, text in docs], collection=collection
            )
            status = job.wait(timeout=3600, poll=0.05)
            seconds = time.perf_counter() - started
            after = {name: sum(map(cpu_seconds, pids)) for name, pids in parts.items()}
        out["embedq"] = _rate(tokens, seconds) | {
            "workers": 2,
            "chunks_stored": status.chunks_stored,
            "rows": stack.count(collection),
            "cpu_seconds": {name: round(after[name] - before[name], 2) for name in parts},
        }
    out["embedq_vs_raw_encode"] = round(
        out["embedq"]["tokens_per_s"] / out["raw_encode"]["tokens_per_s"], 2
    )
    out["raw_upsert_vs_raw_encode"] = round(
        out["raw_upsert"]["tokens_per_s"] / out["raw_encode"]["tokens_per_s"], 2
    )
    out["embedq_vs_in_process"] = round(
        out["embedq"]["tokens_per_s"] / out["in_process"]["tokens_per_s"], 2
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.documents", description=__doc__)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/documents.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="embedq-bench-docs-") as root:
        result = measure(args.documents, Path(root))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
