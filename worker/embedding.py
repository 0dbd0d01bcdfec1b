"""A drop-in for pymilvus's ``Model2VecEmbeddingFunction`` that loads through embedq's loader.

pymilvus-model 0.3.4's class cannot load a local folder on current model2vec (it calls the
removed ``StaticModel.load_local``) and pip-installs model2vec at run time when it is missing.
This one keeps its interface (``model_source``, ``dim``, ``encode_documents``, ``encode_queries``,
``__call__``, each returning a list of 1-D float32 arrays) and loads with
:func:`embedq.worker.encoder.load_static_model`, so a vector equals ``StaticModel.encode`` of the
same model and equals what the workers store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from embedq.config.errors import ConfigError, ModelLoadError
from embedq.config.models import model_name_for
from embedq.config.settings import BUNDLED_MODEL, ModelSettings
from embedq.worker.encoder import (
    BUNDLED_MODEL_PATH,
    Model2VecEncoder,
    ModelInfo,
    check_source,
    hub_offline,
    load_static_model,
)

if TYPE_CHECKING:
    from model2vec import StaticModel

__all__ = ["DEFAULT_MODEL_SOURCE", "Model2VecEmbeddingFunction", "Vector"]

Vector = npt.NDArray[np.float32]

#: pymilvus's default; it needs the hub or a Hugging Face cache that already holds it.
DEFAULT_MODEL_SOURCE = "minishlab/potion-base-8M"

#: The keyword arguments that map onto :class:`ModelSettings`; anything else is refused.
_OPTIONS = frozenset({"normalize", "quantize_to", "max_length"})

#: What model2vec truncates to when a model's config.json sets no max_length.
_MODEL2VEC_MAX_LENGTH = 512


class Model2VecEmbeddingFunction:
    """Encode documents and queries with a Model2Vec static model, as pymilvus's class does.

    ``model_source`` is a hub id (``minishlab/potion-base-8M``), one of the potion aliases
    (``potion-base-8M``, ...), ``"bundled"`` (the model shipped with embedq) or a local folder
    (a ``str`` or a ``Path``). Hub models come from the Hugging Face cache first and from the
    hub only when they are not cached and ``HF_HUB_OFFLINE`` is not set.

    Keyword arguments: ``normalize``, ``quantize_to`` and ``max_length``, as in
    :class:`embedq.config.settings.ModelSettings`; left out, the model's own config decides.
    """

    def __init__(self, model_source: str | Path = DEFAULT_MODEL_SOURCE, **kwargs: Any) -> None:
        _check_options(kwargs)
        self.model_source = model_source
        settings = _settings(model_source, kwargs)
        self.model: StaticModel = _load(settings, model_source)
        # The workers' encoder: one code path, so these vectors equal the stored ones.
        self._encoder = Model2VecEncoder(self.model, settings)

    @property
    def dim(self) -> int:
        return self._encoder.info.dim

    @property
    def info(self) -> ModelInfo:
        """Name, source, dimension and weights revision, as a collection records them."""
        return self._encoder.info

    def encode_queries(self, queries: Sequence[str]) -> list[Vector]:
        return self._encode(queries)

    def encode_documents(self, documents: Sequence[str]) -> list[Vector]:
        return self._encode(documents)

    def __call__(self, texts: Sequence[str]) -> list[Vector]:
        return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> list[Vector]:
        if isinstance(texts, str):
            # A str is a Sequence[str]: it would be encoded one character at a time.
            raise TypeError("pass a list of strings, e.g. [text], not a single string")
        if len(texts) == 0:
            return []  # model2vec raises on an empty batch
        return list(self._encoder.encode(texts))


def _check_options(kwargs: Mapping[str, object]) -> None:
    unknown = sorted(set(kwargs) - _OPTIONS)
    if not unknown:
        return
    hint = ""
    if "token" in unknown:
        hint = "; for a private hub model set the HF_TOKEN environment variable instead of token="
    raise TypeError(
        f"Model2VecEmbeddingFunction got unexpected keyword argument(s) {', '.join(unknown)}; "
        f"it accepts model_source, {', '.join(sorted(_OPTIONS))}{hint}"
    )


def _settings(model_source: str | Path, options: Mapping[str, object]) -> ModelSettings:
    if isinstance(model_source, Path):
        # A Path always names a folder: never let a relative one be read as a hub id.
        source = str(model_source.expanduser().absolute())
    elif isinstance(model_source, str):
        source = model_source.strip()
    else:
        raise TypeError(f"model_source must be a str or a Path, not {type(model_source).__name__}")
    fields: dict[str, object] = {"name": model_name_for(source), "source": source, **options}
    try:
        settings = ModelSettings.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_argument(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"Model2VecEmbeddingFunction: {problems}") from None
    if "max_length" not in options:
        # embedq's settings default to 512; pymilvus lets the model's config decide.
        settings = settings.model_copy(update={"max_length": _stored_max_length(settings)})
    return settings


def _argument(loc: tuple[int | str, ...]) -> str:
    """The caller's name for a ModelSettings field."""
    field = str(loc[0]) if loc else "source"
    return "model_source" if field == "source" else field


def _stored_max_length(settings: ModelSettings) -> int | None:
    """The max_length in the model's config.json, read from disk only (the folder, or the
    Hugging Face cache for a hub model); model2vec's default when there is none to read."""
    folder: Path | None
    if settings.hub_id is not None:
        from model2vec.persistence.hf import maybe_get_cached_model_path

        folder = maybe_get_cached_model_path(settings.hub_id)
    elif settings.source == BUNDLED_MODEL:
        folder = BUNDLED_MODEL_PATH
    else:
        folder = Path(settings.source).expanduser()
    try:
        config = json.loads((folder / "config.json").read_text()) if folder else {}
    except (OSError, ValueError):
        return _MODEL2VEC_MAX_LENGTH  # missing or bad files are reported by the load itself
    if not isinstance(config, dict):
        return _MODEL2VEC_MAX_LENGTH
    value = config.get("max_length", _MODEL2VEC_MAX_LENGTH)
    if value is None or (isinstance(value, int) and value > 0):
        return value
    return _MODEL2VEC_MAX_LENGTH


def _load(settings: ModelSettings, shown: str | Path) -> StaticModel:
    """Load through embedq's loader; its errors name EMBEDQ_MODEL__SOURCE, so say the fix in
    terms of model_source here."""
    hub_id = settings.hub_id
    try:
        check_source(settings)  # reads HF_HUB_OFFLINE now, before anything asks the hub
        return load_static_model(settings)
    except ConfigError as exc:
        folder = Path(settings.source).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"model_source {str(shown)!r}: no folder at {folder.absolute()}. Pass the folder "
                "of a Model2Vec model (one saved with StaticModel.save_pretrained), a hub id such "
                f"as {DEFAULT_MODEL_SOURCE}, or 'bundled' for the model shipped with embedq"
            ) from exc
        raise ConfigError(
            f"model_source {str(shown)!r}: {folder.resolve()} is not a Model2Vec model "
            "folder (it needs model.safetensors, tokenizer.json and config.json); save one with "
            "StaticModel.save_pretrained(folder)"
        ) from exc
    except ModelLoadError as exc:
        if hub_id is None:
            raise  # bundled or folder: the loader's message already names the fix
        raise ModelLoadError(_hub_failure(hub_id, shown, exc)) from exc


def _hub_failure(hub_id: str, shown: str | Path, exc: ModelLoadError) -> str:
    from model2vec.persistence.hf import maybe_get_cached_model_path

    offline = hub_offline()  # as check_source reads it, so the reason matches its decision
    cause = " ".join(str(exc.__cause__ or exc).split())[:300]
    if maybe_get_cached_model_path(hub_id) is not None:
        why = f"its copy in the Hugging Face cache did not load ({cause})"
    elif offline:
        why = "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    else:
        why = f"it is not in the Hugging Face cache and the hub failed ({cause})"
    return (
        f"model_source {str(shown)!r}: could not load {hub_id}: {why}. Fix: on a host that can "
        f"reach huggingface.co run `hf download {hub_id} --local-dir DIR`, copy DIR here and pass "
        "model_source=DIR (or copy a Hugging Face cache holding it to this host's HF_HOME); "
        "or pass model_source='bundled' to use the model shipped with embedq"
    )
