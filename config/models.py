"""Which Model2Vec model the workers load: the bundled one, a local folder or a hub id."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from config.names import MODEL_NAME

__all__ = ["BUNDLED_MODEL", "KNOWN_MODELS", "ModelSettings"]

#: The model shipped inside the ``worker`` package (distilled from all-MiniLM-L6-v2).
BUNDLED_MODEL = "bundled"

#: Short aliases of the Model2Vec models pymilvus's ``Model2VecEmbeddingFunction`` knows by name.
KNOWN_MODELS: dict[str, str] = {
    "potion-base-8M": "minishlab/potion-base-8M",
    "potion-base-4M": "minishlab/potion-base-4M",
    "potion-base-2M": "minishlab/potion-base-2M",
    "potion-base-32M": "minishlab/potion-base-32M",
    "potion-retrieval-32M": "minishlab/potion-retrieval-32M",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSettings(BaseModel):
    """Which Model2Vec model the workers load."""

    name: str = Field(
        "minilm-l6-distilled",
        description="short name: part of queue names, derived ids and the collection binding",
    )
    source: str = Field(
        BUNDLED_MODEL,
        description="`bundled`, a local folder, a hub id or a potion alias (potion-base-8M, ...)",
    )
    normalize: bool | None = Field(None, description="L2-normalise vectors; None = model default")
    quantize_to: Literal["float16", "float32", "int8"] | None = Field(
        None, description="quantise weights at load; None = as stored"
    )
    max_length: int | None = Field(512, gt=0, description="tokens per text seen by the model")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not MODEL_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid model name; use 1-64 letters, digits, - or _"
            )
        return value

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        value = value.strip()
        if value == BUNDLED_MODEL or value in KNOWN_MODELS or _looks_like_path(value):
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
        if self.source in KNOWN_MODELS:
            return KNOWN_MODELS[self.source]
        if self.source == BUNDLED_MODEL or _looks_like_path(self.source):
            return None
        return self.source


def _looks_like_path(value: str) -> bool:
    """A hub id is "org/name"; a value anchored like a path, one that exists on disk, or one
    whose parent folder exists here ("models/mine" next to a models/ folder) is a folder, so
    that a mistyped folder is reported missing instead of being asked of the hub."""
    path = Path(value).expanduser()
    anchored = value.startswith(("/", "./", "../", "~"))
    return anchored or path.is_dir() or (len(path.parts) > 1 and path.parent.is_dir())
