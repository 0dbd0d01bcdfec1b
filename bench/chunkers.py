"""Two chunking libraries on the same documents, with the same token counter: speed and where
they cut. ``python -m bench.chunkers`` prints a table and writes bench/results/chunkers.json.

The documents are Python's own help texts (``pydoc_data.topics``, shipped with every Python),
the counter is the bundled model's tokenizer through embedq's word cache (what a worker uses),
and each library is asked for chunks of at most 256 tokens. Measured per library:

- speed: characters per second, on a fresh chunker and counter (nothing cached from a run
  before), and again on a warm one;
- fit: the largest chunk in tokens (must be at most 256) and the mean share of 256 used;
- boundaries: the share of chunks that end at a paragraph break, at a sentence end, or inside a
  word; and whether every chunk is an exact slice of its document at the offsets given.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any, cast

__all__ = ["main", "measure"]

TOKENS = 256
_SENTENCE_END = re.compile(r"[.!?:;][\"')\]]*\s*$")

#: A chunker: text -> (chunk texts, (start, end) offsets).
Split = Callable[[str], tuple[list[str], list[tuple[int, int]]]]


def documents() -> list[str]:
    return [text for _, text in sorted(topics.items()) if len(text) >= 2_000]


def counter() -> Callable[[str], int]:
    from embedq.config.settings import load_settings
    from embedq.worker.chunker import token_counter
    from embedq.worker.encoder import load_static_model

    return token_counter(load_static_model(load_settings().model).tokenizer)


def semchunk_split(count: Callable[[str], int]) -> Split:
    from semchunk.semchunk import chunkerify

    chunker = chunkerify(count, TOKENS)

    def split(text: str) -> tuple[list[str], list[tuple[int, int]]]:
        return cast("tuple[list[str], list[tuple[int, int]]]", chunker(text, offsets=True))

    return split


def chonkie_split(count: Callable[[str], int]) -> Split:
    from chonkie import RecursiveChunker

    # chonkie counts with any callable, as semchunk does (its type hints name tokenizers only)
    chunker = RecursiveChunker(tokenizer=cast("Any", count), chunk_size=TOKENS)

    def split(text: str) -> tuple[list[str], list[tuple[int, int]]]:
        chunks = chunker.chunk(text)
        return [c.text for c in chunks], [(c.start_index, c.end_index) for c in chunks]

    return split


LIBRARIES: dict[str, Callable[[Callable[[str], int]], Split]] = {
    "semchunk": semchunk_split,
    "chonkie (RecursiveChunker)": chonkie_split,
}


def measure(name: str, docs: list[str]) -> dict[str, Any]:
    count = counter()
    split = LIBRARIES[name](count)
    chars = sum(map(len, docs))
    started = time.perf_counter()
    results = [split(doc) for doc in docs]
    cold = time.perf_counter() - started
    started = time.perf_counter()
    for doc in docs:
        split(doc)
    warm = time.perf_counter() - started
    sizes, paragraph, sentence, mid_word, exact, total = [], 0, 0, 0, 0, 0
    for doc, (pieces, offsets) in zip(docs, results, strict=True):
        for piece, (start, end) in zip(pieces, offsets, strict=True):
            total += 1
            sizes.append(count(piece))
            exact += doc[start:end] == piece
            after = doc[end : end + 2]
            if end >= len(doc.rstrip()) or after.startswith("\n\n") or doc[:end].endswith("\n\n"):
                paragraph += 1
            if end >= len(doc.rstrip()) or _SENTENCE_END.search(doc[max(0, end - 4) : end]):
                sentence += 1
            elif end < len(doc) and doc[end - 1 : end].isalnum() and doc[end].isalnum():
                mid_word += 1
    return {
        "library": name,
        "documents": len(docs),
        "characters": chars,
        "chunks": total,
        "cold_chars_per_s": round(chars / cold),
        "warm_chars_per_s": round(chars / warm),
        "max_tokens": max(sizes),
        "mean_fill": round(sum(sizes) / len(sizes) / TOKENS, 3),
        "ends_at_paragraph": round(paragraph / total, 3),
        "ends_at_sentence": round(sentence / total, 3),
        "ends_inside_a_word": round(mid_word / total, 3),
        "exact_offsets": round(exact / total, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chunkers", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/chunkers.json"))
    args = parser.parse_args(argv)
    docs = documents()
    rows = [measure(name, docs) for name in LIBRARIES]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))


if __name__ == "__main__":
    main()
