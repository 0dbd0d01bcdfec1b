"""The Model2Vec encoder: a tiny model built in the test, the bundled model, and model sources
that must fail clearly instead of reaching for the hub."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model2vec import StaticModel
from tokenizers import Tokenizer

from embedq.config.errors import ConfigError, ModelLoadError
from embedq.config.settings import ModelSettings
from embedq.worker.encoder import (
    BUNDLED_MODEL_PATH,
    Model2VecEncoder,
    load_static_model,
    resolve_source,
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Model2Vec model on disk: the bundled tokenizer and random 8-d vectors."""
    tokenizer = Tokenizer.from_file(str(BUNDLED_MODEL_PATH / "tokenizer.json"))
    vectors = np.random.default_rng(0).standard_normal((tokenizer.get_vocab_size(), 8))
    folder = tmp_path_factory.mktemp("tiny")
    StaticModel(
        vectors=vectors.astype(np.float32), tokenizer=tokenizer, normalize=True
    ).save_pretrained(folder)
    return folder


def test_tiny_model_encodes_to_contiguous_float32(tiny_model_dir: Path) -> None:
    settings = ModelSettings(name="tiny", source=str(tiny_model_dir))
    encoder = Model2VecEncoder.from_settings(settings)
    vectors = encoder.encode(["hello world", "a second text", "hello world"])
    assert vectors.dtype == np.float32 and vectors.flags["C_CONTIGUOUS"]
    assert vectors.shape == (3, 8)
    assert np.allclose(vectors[0], vectors[2])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.info.name == "tiny" and encoder.info.dim == 8


def test_vectors_equal_static_model_encode(tiny_model_dir: Path) -> None:
    encoder = Model2VecEncoder.from_settings(ModelSettings(source=str(tiny_model_dir)))
    reference = StaticModel.from_pretrained(tiny_model_dir).encode(["some words"])
    assert np.allclose(encoder.encode(["some words"]), reference, atol=1e-6)


def test_revision_changes_with_the_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = StaticModel.from_pretrained(tiny_model_dir)
    other.embedding[0] += 1.0
    other.save_pretrained(tmp_path / "changed")
    first = Model2VecEncoder.from_settings(ModelSettings(source=str(tiny_model_dir)))
    second = Model2VecEncoder.from_settings(ModelSettings(source=str(tmp_path / "changed")))
    assert first.info.revision != second.info.revision


def test_bundled_model_is_the_default_and_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = Model2VecEncoder.from_settings(ModelSettings())
    assert encoder.info.dim == 256
    close, far = (
        encoder.encode(["The cat sat on the mat.", "A kitten rested on the rug."]),
        encoder.encode(["Quarterly tax filing deadline"]),
    )
    assert float(close[0] @ close[1]) > float(close[0] @ far[0])


def test_bundled_model_files_are_sanitised() -> None:
    for path in BUNDLED_MODEL_PATH.iterdir():
        assert path.stat().st_mode & 0o444 == 0o444, f"{path} not readable by all"
    config = (BUNDLED_MODEL_PATH / "config.json").read_text()
    assert "/tmp" not in config and "/root" not in config and "/home" not in config
    size = sum(p.stat().st_size for p in BUNDLED_MODEL_PATH.iterdir())
    assert size <= 16_000_000


def test_missing_local_folder_is_a_config_error_not_a_download(tmp_path: Path) -> None:
    settings = ModelSettings(source=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"EMBEDQ_MODEL__SOURCE.*does not exist"):
        resolve_source(settings)


def test_folder_without_model_files_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="could not load model"):
        load_static_model(ModelSettings(source=str(tmp_path)))


def test_hub_model_not_cached_offline_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="EMBEDQ_MODEL__SOURCE=DIR"):
        load_static_model(ModelSettings(source="potion-base-8M"))
