"""Which Model2Vec models exist: built in (the bundled one and the potion aliases) or named in
settings, each loaded from the bundled copy, a local folder or a hub id."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from embedq.config.names import model_name

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_MODEL",
    "DEFAULT_WORD_CACHE",
    "KNOWN_MODELS",
    "ModelOptions",
    "ModelSettings",
    "builtin_models",
    "model_name_for",
]

#: The model shipped inside the ``worker`` package (distilled from all-MiniLM-L6-v2).
BUNDLED_MODEL = "bundled"
#: The name of the bundled model, and the default model.
DEFAULT_MODEL = "minilm-l6-distilled"

#: Short aliases of the Model2Vec models pymilvus's ``Model2VecEmbeddingFunction`` knows by name.
KNOWN_MODELS: dict[str, str] = {
    "potion-base-8M": "minishlab/potion-base-8M",
    "potion-base-4M": "minishlab/potion-base-4M",
    "potion-base-2M": "minishlab/potion-base-2M",
    "potion-base-32M": "minishlab/potion-base-32M",
    "potion-retrieval-32M": "minishlab/potion-retrieval-32M",
}
_ALIASES = {alias.lower(): hub for alias, hub in KNOWN_MODELS.items()}

#: Distinct chunks (words with any punctuation attached) whose token ids a worker keeps.
DEFAULT_WORD_CACHE = 65_536

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelOptions(BaseModel):
    """One model: where it comes from and how it is loaded."""

    source: str = Field(
        BUNDLED_MODEL,
        description="`bundled`, a local folder, a hub id or a potion alias (potion-base-8M, ...)",
    )
    normalize: bool | None = Field(None, description="L2-normalise vectors; unset = model default")
    quantize_to: Literal["float16", "float32", "int8"] | None = Field(
        None, description="quantise weights at load; unset = as stored"
    )
    max_length: int | None = Field(512, gt=0, description="tokens per text seen by the model")
    word_cache: int = Field(
        DEFAULT_WORD_CACHE,
        ge=0,
        description="distinct words whose token ids a worker keeps (BERT WordPiece tokenizers; "
        "same ids, ~5x faster); 0 = tokenize every text whole",
    )

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        value = value.strip()
        if value == BUNDLED_MODEL or value.lower() in _ALIASES or _looks_like_path(value):
            return value
        if _HUB_ID.match(value):
            return value
        known = ", ".join([BUNDLED_MODEL, *KNOWN_MODELS])
        raise ValueError(
            f"unknown model {value!r}; use one of {known}, a hub id such as "
            "minishlab/potion-base-8M, or a local folder path (./my-model or /abs/path)"
        )

    @property
    def hub_id(self) -> str | None:
        """The hub repository the source refers to, or None for bundled and local models."""
        if self.source.lower() in _ALIASES:
            return _ALIASES[self.source.lower()]
        if self.source == BUNDLED_MODEL or _looks_like_path(self.source):
            return None
        return self.source


class ModelSettings(ModelOptions):
    """A model and its name. The name is part of queue names, derived ids and the collection
    binding; names are case-insensitive (kept in lower case).

    Give a source (the name defaults to one derived from it), a name the settings know (the
    built-in ones, or one defined under ``EMBEDQ_MODELS__<NAME>__*``), or both."""

    name: str = Field(
        DEFAULT_MODEL,
        description="the default model: a built-in name (minilm-l6-distilled, potion-base-8m, "
        "...), one of EMBEDQ_MODELS, or any name for EMBEDQ_MODEL__SOURCE",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_in(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name, source = data.get("name"), data.get("source")
        if name is None and source is None:
            data["name"], data["source"] = DEFAULT_MODEL, BUNDLED_MODEL
        elif source is None:
            try:
                checked = model_name(name)
            except ValueError as exc:
                raise ValueError(f"EMBEDQ_MODEL__NAME: {exc}") from None
            known = builtin_models().get(checked)
            if known is None:
                raise ValueError(
                    f"EMBEDQ_MODEL__NAME names an unknown model {checked!r}: define it with "
                    f"EMBEDQ_MODELS__{checked.upper()}__SOURCE, set EMBEDQ_MODEL__SOURCE, or use "
                    f"one of {', '.join(builtin_models())}"
                )
            data["source"] = known
        elif name is None and isinstance(source, str):
            data["name"] = model_name_for(source)
        return data

    _check_name = field_validator("name")(model_name)


def builtin_models() -> dict[str, str]:
    """Model names every embedq knows, with their sources."""
    return {DEFAULT_MODEL: BUNDLED_MODEL, **{alias: alias for alias in _ALIASES}}


def model_name_for(source: str) -> str:
    """A model name from its source: the alias, or the last part of the hub id or folder."""
    source = source.strip()
    if source == BUNDLED_MODEL:
        return DEFAULT_MODEL
    if source.lower() in _ALIASES:
        return source.lower()
    last = Path(source).expanduser().name or Path(source).expanduser().resolve().name
    return (re.sub(r"[^A-Za-z0-9_-]", "_", last)[:64] or "model").lower()


def _looks_like_path(value: str) -> bool:
    """A hub id is "org/name"; a value anchored like a path, one that exists on disk, or one
    whose parent folder exists here ("models/mine" next to a models/ folder) is a folder, so
    that a mistyped folder is reported missing instead of being asked of the hub."""
    path = Path(value).expanduser()
    anchored = value.startswith(("/", "./", "../", "~"))
    return anchored or path.is_dir() or (len(path.parts) > 1 and path.parent.is_dir())
