"""Shared by producer and worker: settings, model definitions, the message contract, Celery
configuration, the error tree and the Redis key names (:mod:`embedq.config.keys`).

Light on purpose: nothing here imports model2vec or pymilvus.
"""

from embedq.config.celeryconfig import celery_config, make_celery
from embedq.config.contract import (
    TASK_EMBED,
    TASK_SEARCH,
    BatchMessage,
    Hit,
    SearchMessage,
    derive_id,
    embed_queue,
    search_queue,
)
from embedq.config.errors import (
    BrokerUnavailableError,
    ConfigError,
    EmbedqError,
    InvalidInputError,
    InvalidMessageError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    ModelLoadError,
    ModelMismatchError,
    SearchError,
    StoreUnavailableError,
    TransientError,
)
from embedq.config.settings import KNOWN_MODELS, Settings, load_settings

__all__ = [
    "KNOWN_MODELS",
    "TASK_EMBED",
    "TASK_SEARCH",
    "BatchMessage",
    "BrokerUnavailableError",
    "ConfigError",
    "EmbedqError",
    "Hit",
    "InvalidInputError",
    "InvalidMessageError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTimeoutError",
    "ModelLoadError",
    "ModelMismatchError",
    "SearchError",
    "SearchMessage",
    "Settings",
    "StoreUnavailableError",
    "TransientError",
    "celery_config",
    "derive_id",
    "embed_queue",
    "load_settings",
    "make_celery",
    "search_queue",
]
