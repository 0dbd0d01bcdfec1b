"""The word cache gives the tokenizer's own ids, so the vectors are model2vec's bit for bit:
on the sample and benchmark corpora, and on random text built to hit every rule the cache
relies on (case, punctuation, control characters, accents, CJK, added tokens, truncation)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from model2vec import StaticModel
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from bench.corpus import load_sentences, passages, short_sentences
from embedq.config.settings import ModelSettings
from embedq.worker.encoder import BUNDLED_MODEL_PATH, Model2VecEncoder, load_static_model
from embedq.worker.speedups.wordcache import CachedStaticModel, WordCache

# Pieces of text chosen for the rules: ASCII words and punctuation, every kind of whitespace
# (some of which BERT's clean_text removes instead of splitting at), accents precomposed and
# combining, CJK (spaced out by the normalizer), cases Python and Rust lowercase differently,
# the tokenizer's added tokens in and out of case, out-of-vocabulary symbols, a word over
# WordPiece's 100 characters.
_PIECES = [
    "the",
    "The",
    "QUICK",
    "fox's",
    "e-mail",
    "U.S.A.",
    "3.14",
    "42",
    "(see",
    "below)",
    "end.",
    "!",
    "?!",
    "#tag",
    "@user",
    "a_b",
    "x^2",
    "~",
    "`code`",
    "\\",
    "'",
    '"',
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1f",
    "\x00",
    "\x7f",
    "\x85",
    "\xa0",
    "\u2003",
    "\u200b",
    "\ufeff",
    "\ufffd",
    "café",
    "cafe\u0301",
    "naïve",
    "Ångström",
    "\u0301",
    "中文",
    "日本語テキスト",
    "한국어",
    "ΣΊΣΥΦΟΣ",
    "İstanbul",
    "straße",
    "ǅ",
    "—",
    "…",
    "«quote»",
    "☃",
    "🙂",
    "Ⅻ",
    "½",
    "[UNK]",
    "[unk]",
    "[PAD]",
    "[pad",
    "UNK]",
    "x" * 120,
    "ab" * 40,
]


def _random_texts(count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        pieces = rng.choices(_PIECES, k=rng.randrange(0, 30))
        yield "".join(p if rng.random() < 0.5 else p + " " for p in pieces)


@pytest.fixture(scope="module")
def reference() -> StaticModel:
    return StaticModel.from_pretrained(BUNDLED_MODEL_PATH)


@pytest.fixture(scope="module")
def cached() -> CachedStaticModel:
    model = CachedStaticModel.from_pretrained(BUNDLED_MODEL_PATH)
    model.word_cache = WordCache.for_tokenizer(model.tokenizer)
    assert model.word_cache is not None
    return model


def _corpora() -> dict[str, list[str]]:
    return {
        "sample": load_sentences(),
        "short": short_sentences(2000).texts,
        "passages": passages(200).texts,
        "random": list(_random_texts(3000, seed=5)),
        "edge": ["", " ", "\n\t", "[UNK]", "a [UNK] b", "\x1c", "x\x1cy", "A\x0bB", "x" * 5000],
    }


@pytest.mark.parametrize("name", list(_corpora()))
def test_ids_and_vectors_equal_model2vecs(
    name: str, reference: StaticModel, cached: CachedStaticModel
) -> None:
    texts = _corpora()[name]
    # Twice: the first call fills the cache, the second reads it.
    for _ in range(2):
        assert cached.tokenize(texts) == reference.tokenize(texts)
        assert np.array_equal(cached.encode(texts), reference.encode(texts))
    assert cached.word_cache is not None and cached.word_cache._known  # it was used


@pytest.mark.parametrize("max_length", [None, 1, 7, 40])
def test_truncation_is_the_tokenizers(
    max_length: int | None, reference: StaticModel, cached: CachedStaticModel
) -> None:
    texts = [*passages(20).texts, *_random_texts(300, seed=max_length or 0)]
    expected = reference.encode(texts, max_length=max_length)
    assert np.array_equal(cached.encode(texts, max_length=max_length), expected)


def test_left_truncation_is_left_to_the_tokenizer() -> None:
    reference = StaticModel.from_pretrained(BUNDLED_MODEL_PATH)
    model = CachedStaticModel.from_pretrained(BUNDLED_MODEL_PATH)
    model.word_cache = WordCache.for_tokenizer(model.tokenizer)
    texts = passages(5).texts
    for tokenizer in (model.tokenizer, reference.tokenizer):
        tokenizer.enable_truncation(10, direction="left")
    assert model.tokenize(texts) == reference.tokenize(texts)
    assert all(len(ids) == 10 for ids in model.tokenize(texts))


def test_the_cache_stays_within_its_size(reference: StaticModel) -> None:
    model = CachedStaticModel.from_pretrained(BUNDLED_MODEL_PATH)
    model.word_cache = cache = WordCache.for_tokenizer(model.tokenizer, size=50)
    assert cache is not None
    texts = short_sentences(300).texts  # far more than 50 distinct words
    for start in range(0, 300, 100):
        batch = texts[start : start + 100]
        assert model.tokenize(batch) == reference.tokenize(batch)
        assert 0 < len(cache._known) <= 50


def test_other_tokenizers_and_size_zero_get_no_cache() -> None:
    bert = Tokenizer.from_file(str(BUNDLED_MODEL_PATH / "tokenizer.json"))
    assert WordCache.for_tokenizer(bert, size=0) is None
    word_level = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))  # noqa: S106
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    assert WordCache.for_tokenizer(word_level) is None
    # An added token spanning a space matches across chunks ("new\tyork" too): no cache.
    spanning = Tokenizer.from_file(str(BUNDLED_MODEL_PATH / "tokenizer.json"))
    spanning.add_tokens([AddedToken("new york", normalized=True)])
    assert WordCache.for_tokenizer(spanning) is None


def test_the_workers_encoder_uses_the_cache_unless_it_is_turned_off() -> None:
    texts = passages(30).texts
    on = load_static_model(ModelSettings())
    off = load_static_model(ModelSettings(word_cache=0))
    assert isinstance(on, CachedStaticModel) and on.word_cache is not None
    assert isinstance(off, CachedStaticModel) and off.word_cache is None
    settings = ModelSettings()
    vectors = Model2VecEncoder(on, settings).encode(texts)
    assert np.array_equal(vectors, Model2VecEncoder(off, settings).encode(texts))


def test_a_chunk_longer_than_the_limit_still_truncates_with_its_text(
    reference: StaticModel, cached: CachedStaticModel
) -> None:
    # One chunk of ~600 tokens (no spaces): learnt untruncated, then cut with its text.
    texts = ["-".join(["word"] * 300) + " tail", "short one"]
    for max_length in (512, 10, None):
        assert cached.encode(texts, max_length=max_length).tolist() == (
            reference.encode(texts, max_length=max_length).tolist()
        )
        assert cached.tokenizer.truncation == reference.tokenizer.truncation


def test_padding_is_left_to_the_tokenizer() -> None:
    reference = StaticModel.from_pretrained(BUNDLED_MODEL_PATH)
    model = CachedStaticModel.from_pretrained(BUNDLED_MODEL_PATH)
    model.word_cache = WordCache.for_tokenizer(model.tokenizer)
    for tokenizer in (model.tokenizer, reference.tokenizer):
        tokenizer.enable_padding(length=40)
    texts = ["a few words", "and a few more words here"]
    assert model.tokenize(texts) == reference.tokenize(texts)


def test_threads_sharing_one_model_get_the_same_vectors(reference: StaticModel) -> None:
    # A small cache starts over again and again while other threads read it.
    model = CachedStaticModel.from_pretrained(BUNDLED_MODEL_PATH)
    model.word_cache = WordCache.for_tokenizer(model.tokenizer, size=64)
    batches = [short_sentences(400, seed=s).texts for s in range(8)]
    expected = [reference.encode(b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(model.encode, batches))
    assert all(np.array_equal(f, e) for f, e in zip(found, expected, strict=True))
