"""The texts every path embeds: short sentences and ~300-token passages, generated
deterministically from docs/corpus/sentences.jsonl and the words it uses.

The sample corpus holds only 400 sentences; a benchmark of 50k needs more distinct texts (ids
default to a hash of the text, and a model could in principle cache), so each text is a sample
sentence with a few words swapped for others of the same corpus, drawn from a seeded generator.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ROOT",
    "SENTENCES",
    "Corpus",
    "load_sentences",
    "passages",
    "short_sentences",
    "word_list",
    "write_jsonl",
]

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "docs" / "corpus" / "sentences.jsonl"

#: Sample sentences joined per passage: 12 of them make ~300 tokens with the bundled tokenizer.
SENTENCES_PER_PASSAGE = 12
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


@dataclass(frozen=True)
class Corpus:
    """A named list of texts with one id each (ids are what both paths store as primary key)."""

    name: str
    texts: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def describe(self, token_counts: Sequence[int] | None = None) -> dict[str, Any]:
        chars = [len(t) for t in self.texts]
        info: dict[str, Any] = {
            "texts": len(self.texts),
            "mean_chars": round(sum(chars) / max(1, len(chars)), 1),
            "distinct_texts": len(set(self.texts)),
        }
        if token_counts:
            info["mean_tokens"] = round(sum(token_counts) / len(token_counts), 1)
            info["max_tokens"] = max(token_counts)
        return info


def load_sentences(path: Path = SENTENCES) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def word_list(sentences: Sequence[str]) -> list[str]:
    """The distinct words of the sample corpus, sorted (so the list is the same every run)."""
    return sorted({m.group(0).lower() for s in sentences for m in _WORD.finditer(s)})


def _vary(sentence: str, words: Sequence[str], rng: random.Random, swaps: int = 2) -> str:
    tokens = sentence.split()
    for _ in range(swaps):
        tokens[rng.randrange(len(tokens))] = rng.choice(words)
    return " ".join(tokens)


def _sentences(count: int, seed: int) -> Iterator[str]:
    base = load_sentences()
    words = word_list(base)
    rng = random.Random(seed)
    for _ in range(count):
        yield _vary(rng.choice(base), words, rng)


def short_sentences(count: int, seed: int = 1) -> Corpus:
    texts = list(_sentences(count, seed))
    return Corpus("short", texts, [f"s{i:08d}" for i in range(count)])


def passages(count: int, seed: int = 2) -> Corpus:
    parts = _sentences(count * SENTENCES_PER_PASSAGE, seed)
    texts = [" ".join(next(parts) for _ in range(SENTENCES_PER_PASSAGE)) for _ in range(count)]
    return Corpus("passages", texts, [f"p{i:08d}" for i in range(count)])


def write_jsonl(path: Path, count: int, seed: int = 3) -> int:
    """Write ``count`` short-sentence records (``id``, ``text``) streaming; returns bytes."""
    with path.open("w", encoding="utf-8") as handle:
        for i, text in enumerate(_sentences(count, seed)):
            handle.write(json.dumps({"id": f"m{i:08d}", "text": text}) + "\n")
    return path.stat().st_size
