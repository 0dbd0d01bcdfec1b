"""The worker side: the Celery app, the encoder, the Milvus store and the tasks.

``celery -A worker worker`` finds :data:`app` here. Settings are read once, at this edge.
"""

from config.settings import load_settings
from worker.app import create_app
from worker.encoder import Encoder, Model2VecEncoder, ModelInfo
from worker.milvus import MilvusStore
from worker.store import InMemoryStore, Rows, VectorStore

app = create_app(load_settings())

__all__ = [
    "Encoder",
    "InMemoryStore",
    "MilvusStore",
    "Model2VecEncoder",
    "ModelInfo",
    "Rows",
    "VectorStore",
    "app",
    "create_app",
]
