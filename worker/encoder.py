"""Turning texts into vectors: the :class:`Encoder` protocol and its Model2Vec implementation."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from embedq.config.errors import ConfigError, ModelLoadError
from embedq.config.settings import BUNDLED_MODEL, ModelSettings

if TYPE_CHECKING:
    from model2vec import StaticModel
    from tokenizers import Tokenizer

__all__ = [
    "BUNDLED_MODEL_PATH",
    "Encoder",
    "Model2VecEncoder",
    "ModelInfo",
    "Vectors",
    "check_source",
    "hub_offline",
    "load_static_model",
    "resolve_source",
]

Vectors = npt.NDArray[np.float32]

#: The default model, distilled from all-MiniLM-L6-v2 by scripts/build_default_model.py.
BUNDLED_MODEL_PATH = Path(__file__).parent / "models" / "minilm-l6-distilled"


@dataclass(frozen=True)
class ModelInfo:
    """What a collection records about the model that filled it."""

    name: str
    source: str
    dim: int
    revision: str


class Encoder(Protocol):
    """Anything that maps texts to float32 vectors of a fixed dimension."""

    @property
    def info(self) -> ModelInfo: ...

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Return a C-contiguous float32 array of shape ``(len(texts), dim)``."""
        ...


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids asking the Hugging Face hub (read at each call)."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in {"", "0", "false"}


def resolve_source(model: ModelSettings) -> str:
    """The folder or hub id to load, checked so that a missing folder never becomes a hub
    download."""
    source = model.source
    if source == BUNDLED_MODEL:
        folder = BUNDLED_MODEL_PATH
        if not (folder / "model.safetensors").is_file():
            raise ModelLoadError(
                f"the bundled model is missing from {folder}; reinstall embedq, or rebuild it "
                "with `make model`"
            )
        return str(folder)
    if model.hub_id is not None:
        return model.hub_id
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"EMBEDQ_MODEL__SOURCE: model folder {source!r} does not exist; point it at a folder "
            "holding model.safetensors, tokenizer.json and config.json (a model saved with "
            "StaticModel.save_pretrained)"
        )
    return str(folder.resolve())


def check_source(model: ModelSettings) -> None:
    """Fail fast, before any worker process forks, when the model cannot be loaded: a folder
    without model files, or a hub model that is not cached while the hub is off limits."""
    source = resolve_source(model)
    if model.hub_id is None:
        missing = [f for f in ("tokenizer.json", "config.json") if not (Path(source) / f).is_file()]
        weights = (
            any(Path(source).glob("*.safetensors")) or (Path(source) / "0_StaticEmbedding").is_dir()
        )
        if missing or not weights:
            raise ConfigError(
                f"EMBEDQ_MODEL__SOURCE: {source} is not a Model2Vec model folder (missing "
                f"{', '.join(missing) or 'the .safetensors weights'}); save one with "
                "StaticModel.save_pretrained(folder)"
            )
        return
    from model2vec.persistence.hf import maybe_get_cached_model_path

    if hub_offline() and maybe_get_cached_model_path(source) is None:
        raise ModelLoadError(
            f"model {source!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. "
            f"Download it elsewhere (hf download {source} --local-dir DIR), copy DIR "
            "here and set EMBEDQ_MODEL__SOURCE=DIR"
        )


def load_static_model(model: ModelSettings) -> StaticModel:
    """Load a Model2Vec model from the bundled copy, a folder, or the hub (cache first)."""
    from embedq.worker.speedups.wordcache import CachedStaticModel, WordCache

    source = resolve_source(model)
    is_hub = model.hub_id is not None
    try:
        loaded = CachedStaticModel.from_pretrained(
            source,
            normalize=model.normalize,
            quantize_to=model.quantize_to,
            max_length=model.max_length,
            # Hub models: use the local cache when present instead of asking the hub again.
            force_download=False,
        )
    except Exception as exc:
        if is_hub:
            why = "HF_HUB_OFFLINE is set and it is not cached" if hub_offline() else str(exc)
            raise ModelLoadError(
                f"could not load model {source!r} from the Hugging Face cache or hub ({why}). "
                "On an air-gapped host, download it elsewhere (hf download "
                f"{source} --local-dir DIR), copy DIR here and set EMBEDQ_MODEL__SOURCE=DIR"
            ) from exc
        raise ModelLoadError(f"could not load model from {source!r}: {exc}") from exc
    loaded.word_cache = WordCache.for_tokenizer(loaded.tokenizer, model.word_cache)
    return loaded


class Model2VecEncoder:
    """A loaded Model2Vec static model. Built once per worker process."""

    def __init__(self, model: StaticModel, settings: ModelSettings) -> None:
        self._model = model
        vectors = np.asarray(model.embedding)
        revision = hashlib.sha256(np.ascontiguousarray(vectors).tobytes()).hexdigest()[:16]
        self._info = ModelInfo(
            name=settings.name, source=settings.source, dim=int(model.dim), revision=revision
        )
        self._max_length = settings.max_length

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> Model2VecEncoder:
        return cls(load_static_model(settings), settings)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's own tokenizer (configured to truncate as the model reads)."""
        return self._model.tokenizer

    def encode(self, texts: Sequence[str]) -> Vectors:
        # Worker processes are already one per core: model2vec's own pool would oversubscribe.
        vectors = self._model.encode(
            list(texts), use_multiprocessing=False, max_length=self._max_length
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
