"""The worker side: the Celery app, the encoder, the Milvus store and the tasks.

``celery -A embedq.worker worker`` finds :data:`app` here. Settings are read once, at this edge,
when ``app`` is first asked for: importing the encoder or the embedding function alone reads
none.
"""

from typing import Any

from embedq.worker.application import create_app
from embedq.worker.embedding import Model2VecEmbeddingFunction
from embedq.worker.encoder import Encoder, Model2VecEncoder, ModelInfo
from embedq.worker.milvus import MilvusStore
from embedq.worker.store import InMemoryStore, Rows, VectorStore

__all__ = [
    "Encoder",
    "InMemoryStore",
    "MilvusStore",
    "Model2VecEmbeddingFunction",
    "Model2VecEncoder",
    "ModelInfo",
    "Rows",
    "VectorStore",
    "app",
    "create_app",
]


def __getattr__(name: str) -> Any:
    if name == "app":
        from embedq.config.settings import load_settings

        app = create_app(load_settings())
        globals()["app"] = app  # built once; later lookups no longer come here
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
