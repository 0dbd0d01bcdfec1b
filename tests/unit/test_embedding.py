"""The pymilvus-compatible Model2VecEmbeddingFunction: the vectors of StaticModel.encode as lists of
float32 rows, every kind of model_source, failures that name the fix, and the example of
pymilvus's page."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import huggingface_hub
import numpy as np
import pytest
from model2vec import StaticModel

from embedq.config.errors import ConfigError, ModelLoadError
from embedq.worker.embedding import DEFAULT_MODEL_SOURCE, Model2VecEmbeddingFunction
from embedq.worker.encoder import BUNDLED_MODEL_PATH
from tests.support.environment import ROOT

DOCS = [
    "Artificial intelligence was founded as an academic discipline in 1956.",
    "Alan Turing was the first person to conduct substantial research in AI.",
    "Born in Maida Vale, London, Turing was raised in southern England.",
]
QUERIES = ["When was artificial intelligence founded", "Where was Alan Turing born?"]


@pytest.fixture(scope="module")
def ef() -> Model2VecEmbeddingFunction:
    return Model2VecEmbeddingFunction(model_source="bundled")


@pytest.fixture(scope="module")
def reference() -> StaticModel:
    return StaticModel.from_pretrained(BUNDLED_MODEL_PATH)


@pytest.fixture
def empty_hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub model is cached, whatever the developer's own cache holds."""
    monkeypatch.setattr("model2vec.persistence.hf.HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_vectors_equal_static_model_encode(
    ef: Model2VecEmbeddingFunction, reference: StaticModel
) -> None:
    docs, queries = ef.encode_documents(DOCS), ef.encode_queries(QUERIES)
    np.testing.assert_array_equal(np.stack(docs), reference.encode(DOCS))
    np.testing.assert_array_equal(np.stack(queries), reference.encode(QUERIES))


def test_returns_a_list_of_float32_rows_like_pymilvus(ef: Model2VecEmbeddingFunction) -> None:
    vectors = ef.encode_documents(DOCS)
    assert isinstance(vectors, list) and len(vectors) == len(DOCS)
    for vector in vectors:
        assert isinstance(vector, np.ndarray)
        assert vector.dtype == np.float32 and vector.shape == (256,)
    assert ef.dim == 256 and ef.model_source == "bundled"
    assert ef.info.name == "minilm-l6-distilled"


def test_call_is_encode_documents(ef: Model2VecEmbeddingFunction) -> None:
    np.testing.assert_array_equal(np.stack(ef(DOCS)), np.stack(ef.encode_documents(DOCS)))


def test_empty_list_gives_empty_list_and_a_bare_string_is_refused(
    ef: Model2VecEmbeddingFunction,
) -> None:
    assert ef.encode_queries([]) == []
    with pytest.raises(TypeError, match=r"list of strings"):
        ef.encode_queries("one query")


@pytest.mark.parametrize("source", [str(BUNDLED_MODEL_PATH), BUNDLED_MODEL_PATH])
def test_local_folder_as_str_or_path(source: str | Path, reference: StaticModel) -> None:
    ef = Model2VecEmbeddingFunction(source)
    assert ef.dim == 256 and ef.model_source == source
    np.testing.assert_array_equal(np.stack(ef.encode_documents(DOCS)), reference.encode(DOCS))


def test_folder_name_becomes_a_valid_model_name(tmp_path: Path) -> None:
    folder = tmp_path / "my.model v2"
    shutil.copytree(BUNDLED_MODEL_PATH, folder)
    assert Model2VecEmbeddingFunction(folder).info.name == "my_model_v2"


def test_options_reach_the_model(reference: StaticModel) -> None:
    raw = Model2VecEmbeddingFunction("bundled", normalize=False, max_length=4)
    expected = StaticModel.from_pretrained(BUNDLED_MODEL_PATH, normalize=False).encode(
        DOCS, max_length=4
    )
    np.testing.assert_array_equal(np.stack(raw.encode_documents(DOCS)), expected)
    half = Model2VecEmbeddingFunction("bundled", quantize_to="float16")
    assert half.encode_documents(DOCS)[0].dtype == np.float32


def test_unknown_keyword_is_a_type_error_and_token_points_at_hf_token() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) device"):
        Model2VecEmbeddingFunction("bundled", device="cpu")
    with pytest.raises(TypeError, match=r"HF_TOKEN"):
        Model2VecEmbeddingFunction("bundled", token=None)


def test_bad_option_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"max_length: .*greater than 0"):
        Model2VecEmbeddingFunction("bundled", max_length=0)
    with pytest.raises(ConfigError, match=r"model_source: unknown model 'not a model'"):
        Model2VecEmbeddingFunction("not a model")


@pytest.mark.usefixtures("empty_hf_cache")
@pytest.mark.parametrize(
    ("args", "hub_id"),
    [((), DEFAULT_MODEL_SOURCE), (("potion-retrieval-32M",), "minishlab/potion-retrieval-32M")],
)
def test_uncached_hub_model_offline_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], hub_id: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as caught:
        Model2VecEmbeddingFunction(*args)
    message = str(caught.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert f"hf download {hub_id} --local-dir DIR" in message
    assert "model_source=DIR" in message and "model_source='bundled'" in message


def test_cached_hub_model_loads_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference: StaticModel
) -> None:
    cache = tmp_path / "hf-cache"
    shutil.copytree(
        BUNDLED_MODEL_PATH, cache / "models--minishlab--potion-base-8M/snapshots/c0ffee"
    )
    monkeypatch.setattr("model2vec.persistence.hf.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ef = Model2VecEmbeddingFunction()  # pymilvus's default source, found in the cache
    assert ef.info.name == "potion-base-8m" and ef.info.source == DEFAULT_MODEL_SOURCE
    np.testing.assert_array_equal(np.stack(ef.encode_queries(QUERIES)), reference.encode(QUERIES))


@pytest.mark.usefixtures("empty_hf_cache")
def test_unreachable_hub_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> NoReturn:
        raise huggingface_hub.errors.LocalEntryNotFoundError("ConnectError: no route to host")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelLoadError, match=r"hub failed \(ConnectError: no route.*model_source="):
        Model2VecEmbeddingFunction(DEFAULT_MODEL_SOURCE)


def test_missing_folder_is_named_and_never_asked_of_the_hub(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model_source .*: no folder at .*nope.*'bundled'"):
        Model2VecEmbeddingFunction(tmp_path / "nope")
    # A relative Path would look like a hub id "models/mine"; a Path is always a folder.
    with pytest.raises(ConfigError, match=r"no folder at"):
        Model2VecEmbeddingFunction(Path("models/mine"))


def test_folder_without_model_files_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not a Model2Vec model folder.*save_pretrained"):
        Model2VecEmbeddingFunction(str(tmp_path))


def test_nothing_is_installed_or_spawned_while_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_processes(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"a process was started: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", no_processes)
    assert Model2VecEmbeddingFunction("bundled").encode_queries(QUERIES)[0].shape == (256,)


def test_pymilvus_example_runs_as_documented(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "pymilvus_example.py")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("Dim:")] == ["Dim: 256 (256,)"] * 2
    assert sum(line.startswith("Embeddings: [array([") for line in lines) == 2
    assert result.stdout.count("dtype=float32)") == len(DOCS) + len(QUERIES)
