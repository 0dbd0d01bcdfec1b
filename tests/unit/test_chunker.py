"""Chunking with the bundled model's tokenizer: limits in tokens and bytes, exact offsets."""

from __future__ import annotations

import itertools
import random
from functools import cache
from pydoc_data.topics import topics

import pytest
from tokenizers import Tokenizer

from embedq.config.contract import MAX_CHUNK_BYTES
from embedq.config.settings import load_settings
from embedq.worker.chunker import Chunker, token_counter
from embedq.worker.encoder import load_static_model


@cache
def chunker(tokens: int = 64, overlap: int = 0) -> Chunker:
    model = load_static_model(load_settings().model)
    return Chunker(token_counter(model.tokenizer), tokens, overlap)


@cache
def tokenizer() -> Tokenizer:
    counting = Tokenizer.from_str(load_static_model(load_settings().model).tokenizer.to_str())
    counting.no_truncation()
    return counting


def exact_count(text: str) -> int:
    """The tokenizer's own count, without the word cache."""
    return len(tokenizer().encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize("overlap", [0, 16])
def test_chunks_are_exact_slices_within_the_limit(overlap: int) -> None:
    rng = random.Random(overlap)
    texts = rng.sample(sorted(topics.values()), 12)
    texts.append("自然语言处理是人工智能的一个分支。" * 80)  # no spaces at all
    for text in texts:
        spans = chunker(64, overlap).split(text)
        assert [s.text for s in spans] == [text[s.start : s.end] for s in spans]
        assert max(exact_count(s.text) for s in spans) <= 64
        if overlap == 0:  # consecutive, in order, nothing but whitespace between
            for a, b in itertools.pairwise(spans):
                assert a.end <= b.start and not text[a.end : b.start].strip()


def test_a_chunk_of_few_tokens_but_many_bytes_is_cut_to_fit_the_text_column() -> None:
    # Long runs of emoji are one unknown token each: few tokens, far over 65,535 bytes.
    text = "the cat sat on the mat " + " ".join(["🙂" * 120] * 200)
    spans = chunker().split(text)
    assert all(len(s.text.encode()) <= MAX_CHUNK_BYTES for s in spans)
    assert all(text[s.start : s.end] == s.text for s in spans)
    assert "".join(s.text for s in spans).replace(" ", "") == text.replace(" ", "")


def test_the_cut_skips_leading_whitespace_and_ends_at_a_word() -> None:
    text = " " * 10_000 + "one two three four " * 100
    cut = chunker().cut(text, 10)
    assert cut.text == text[cut.start : cut.end]
    assert cut.text.split() == ["one", "two", "three", "four"] * 2 + ["one", "two"]
    assert chunker().cut("   ", 10).text == ""
